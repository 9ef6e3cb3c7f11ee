//! The class of a failure, shared by the runtime's errors and the worker
//! protocol's (a leaf: it imports nothing of the crate).

/// Broad class of an error (the runtime's [`crate::Error`] or a worker's
/// [`crate::proto::SandboxError`]), for mapping to a protocol status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad request.
    Invalid,
    /// Missing resource.
    NotFound,
    /// State conflict.
    Conflict,
    /// Server-side failure.
    Internal,
    /// An upstream service (a registry, a space's server) failed.
    Upstream,
    /// Out of disk quota or disk space.
    InsufficientStorage,
}
