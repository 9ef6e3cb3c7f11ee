//! What a libcontainer operation in a worker fails with. The kind crosses
//! the worker boundary (inside `Reply::Failed`), so the daemon answers a bad
//! image or a bad working directory with 400, not 500.

use std::io;

use serde::{Deserialize, Serialize};

use crate::error_kind::ErrorKind;

/// A failed worker operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SandboxError {
    /// The image cannot run as a space: a path the space needs is blocked
    /// by a file of the image, or it has no layers (maps to 400).
    #[error("the image cannot run as a space: {0}")]
    Image(String),
    /// A process's working directory is missing or not a directory inside
    /// the space (maps to 400).
    #[error("working directory {path}: {why}")]
    WorkingDir {
        /// The directory asked for, as the space sees it.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The space ran out of memory while starting: its memory limit is too
    /// small for what it runs (maps to 400).
    #[error("{0}")]
    OutOfMemory(String),
    /// The space's processes are not in a state that allows the operation
    /// (maps to 409).
    #[error("{0}")]
    State(String),
    /// libcontainer or the host failed (maps to 500).
    #[error("container runtime: {0}")]
    Runtime(String),
    /// An operation failed and undoing what it had done failed too: both
    /// errors, the original first (maps to 500: something may be left over).
    #[error("{error}; rolling back also failed: {rollback}")]
    RolledBack {
        /// Why the operation failed.
        error: Box<SandboxError>,
        /// Why undoing it failed.
        rollback: Box<SandboxError>,
    },
}

impl SandboxError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::Image(_)
            | SandboxError::WorkingDir { .. }
            | SandboxError::OutOfMemory(_) => ErrorKind::Invalid,
            SandboxError::State(_) => ErrorKind::Conflict,
            SandboxError::Runtime(_) | SandboxError::RolledBack { .. } => ErrorKind::Internal,
        }
    }

    /// `self`, or both errors when the rollback that followed it failed.
    pub fn rolled_back(self, rollback: Result<(), SandboxError>) -> SandboxError {
        match rollback {
            Ok(()) => self,
            Err(r) => SandboxError::RolledBack {
                error: Box::new(self),
                rollback: Box::new(r),
            },
        }
    }

    /// An I/O error on a path of the image's tree (`what` says which):
    /// an image problem when the tree is in the way (a file where a
    /// directory must be, a symlink loop), a host failure otherwise.
    pub fn image_io(what: &str, e: io::Error) -> SandboxError {
        if is_tree_error(&e) {
            SandboxError::Image(format!("{what}: {e}"))
        } else {
            SandboxError::Runtime(format!("{what}: {e}"))
        }
    }

    /// A working directory `path` that could not be opened with `e`.
    pub fn working_dir(path: &str, e: &io::Error) -> SandboxError {
        let why = match e.raw_os_error() {
            Some(libc::ENOENT) => "no such directory in the space".to_string(),
            Some(libc::ENOTDIR) => "not a directory".to_string(),
            _ => e.to_string(),
        };
        SandboxError::WorkingDir {
            path: path.to_string(),
            why,
        }
    }
}

/// Whether `e` says the file tree is in the way rather than the host failed.
pub fn is_tree_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTDIR | libc::EEXIST | libc::ELOOP | libc::ENAMETOOLONG | libc::EISDIR)
    )
}

impl From<String> for SandboxError {
    fn from(message: String) -> Self {
        SandboxError::Runtime(message)
    }
}

impl From<&str> for SandboxError {
    fn from(message: &str) -> Self {
        SandboxError::Runtime(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_wire_with_both_errors_of_a_failed_rollback() {
        let e = SandboxError::image_io(
            "create working directory /home/sandbox",
            io::Error::from_raw_os_error(libc::ENOTDIR),
        )
        .rolled_back(Err("unmount: busy".into()));
        let wire = serde_json::to_string(&e).expect("serialize");
        let back: SandboxError = serde_json::from_str(&wire).expect("parse");
        assert_eq!(back, e);
        let SandboxError::RolledBack { error, rollback } = &back else {
            panic!("{back:?}");
        };
        assert_eq!(error.kind(), ErrorKind::Invalid);
        assert_eq!(rollback.kind(), ErrorKind::Internal);
        assert_eq!(back.kind(), ErrorKind::Internal);
        let msg = back.to_string();
        assert!(
            msg.contains("Not a directory") && msg.contains("unmount: busy"),
            "{msg}"
        );
    }

    #[test]
    fn host_failures_stay_internal() {
        let e = SandboxError::image_io("mkdir", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.kind(), ErrorKind::Internal);
        let e = SandboxError::working_dir("/x", &io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(
            e.to_string(),
            "working directory /x: no such directory in the space"
        );
    }
}
