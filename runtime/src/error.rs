//! The runtime's error type: one enum whose variants map onto HTTP statuses.

use std::io;

pub use crate::error_kind::ErrorKind;

/// Everything a runtime operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something malformed (maps to 400).
    #[error("{0}")]
    InvalidInput(String),
    /// No space with this name (maps to 404).
    #[error("Space not found")]
    SpaceNotFound,
    /// A space with this name already exists (maps to 409).
    #[error("Space already exists")]
    SpaceExists,
    /// The space is stopped; the operation needs it running (maps to 409).
    #[error("Space is not running")]
    NotRunning,
    /// The image is not in the store (maps to 400).
    #[error("Image not found: {0}")]
    ImageNotFound(String),
    /// A registry could not be reached or served bad data (maps to 502).
    #[error("registry: {0}")]
    Registry(String),
    /// The image is used by a space and cannot be removed (maps to 409).
    #[error("image {0} is in use by space {1}")]
    ImageInUse(String, String),
    /// A filesystem or system call failed (maps to 500).
    #[error("{context}: {source}")]
    Io {
        /// What the runtime was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// libcontainer or a worker process failed (maps to 500).
    #[error("container runtime: {0}")]
    Container(String),
    /// A stored record could not be read or written (maps to 500).
    #[error("state store: {0}")]
    State(String),
    /// GPU passthrough failed on the server's side (maps to 500).
    #[error("GPU: {0}")]
    Gpu(String),
    /// Setting up or removing a space's network failed (maps to 500).
    #[error("network: {0}")]
    Network(String),
    /// A worker operation failed; its kind crossed the worker boundary.
    #[error(transparent)]
    Sandbox(#[from] crate::proto::SandboxError),
    /// An operation failed and undoing it failed too (maps to 500).
    #[error("{error}; rolling back also failed: {rollback}")]
    RolledBack {
        /// Why the operation failed.
        error: Box<Error>,
        /// Why undoing it failed.
        rollback: Box<Error>,
    },
    /// A space's disk limit cannot be applied, so it is not started
    /// (maps to 500).
    #[error("disk limit: {0}")]
    DiskLimit(String),
    /// No volume with this name (maps to 404).
    #[error("Volume not found")]
    VolumeNotFound,
    /// The volume is mounted by a space (maps to 409).
    #[error("volume {0} is in use by space {1}")]
    VolumeInUse(String, String),
    /// A file or directory asked for does not exist in the space (maps to 404).
    #[error("{0}")]
    FileNotFound(String),
    /// A write ran out of the space's disk quota or the disk (maps to 507).
    #[error("{0}")]
    DiskFull(String),
    /// No template with this name (maps to 404).
    #[error("Template not found")]
    TemplateNotFound,
    /// Nothing listens on a port inside a space (maps to 502).
    #[error("{0}")]
    PortClosed(String),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) | Error::ImageNotFound(_) => ErrorKind::Invalid,
            Error::SpaceNotFound
            | Error::VolumeNotFound
            | Error::FileNotFound(_)
            | Error::TemplateNotFound => ErrorKind::NotFound,
            Error::SpaceExists
            | Error::NotRunning
            | Error::ImageInUse(..)
            | Error::VolumeInUse(..) => ErrorKind::Conflict,
            Error::DiskFull(_) => ErrorKind::InsufficientStorage,
            Error::Io { .. }
            | Error::Container(_)
            | Error::State(_)
            | Error::Network(_)
            | Error::DiskLimit(_)
            | Error::Gpu(_) => ErrorKind::Internal,
            Error::Registry(_) | Error::PortClosed(_) => ErrorKind::Upstream,
            Error::Sandbox(e) => e.kind(),
            Error::RolledBack { .. } => ErrorKind::Internal,
        }
    }

    /// `self`, or both errors when the rollback that followed it failed.
    pub fn rolled_back(self, rollback: Result<()>) -> Error {
        match rollback {
            Ok(()) => self,
            Err(r) => Error::RolledBack {
                error: Box::new(self),
                rollback: Box::new(r),
            },
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
