//! Internals for this crate's integration tests and `clawdspace-bench`,
//! which drive a worker or a record store directly. Not part of the API the
//! daemon and the CLI use (hidden from the docs, no stability promise).

/// The worker protocol's messages.
pub mod proto {
    pub use crate::proto::*;
}

pub use crate::proto::{Reply, Request, SandboxError};
pub use crate::sandbox::proc::start_time;
pub use crate::store::{Loaded, Store, RECORD_VERSION};
pub use crate::worker::{
    Answer, ExitReceiver, WorkerPool, FAULT_ENV as WORKER_FAULT_ENV, WORKER_ARG,
};
