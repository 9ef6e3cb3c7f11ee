//! Kernel operations on spaces (with libcontainer's state files). Everything here forks (clone3) or
//! changes process-global state, so it runs only inside worker processes
//! (see [`crate::worker`]), never on a thread of the daemon.

pub(crate) mod boot;
pub(crate) mod cgroup;
pub(crate) mod executor;
pub(crate) mod join;
pub(crate) mod layout;
pub(crate) mod lifecycle;
pub(crate) mod mountapi;
pub(crate) mod mountns;
pub mod proc;
pub mod rootfs;
