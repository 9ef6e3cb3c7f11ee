//! clawdspace-runtime: spaces as libcontainer sandboxes.
//!
//! Everything that touches the kernel or images lives here: the image store,
//! overlayfs root filesystems, the OCI spec, the libcontainer lifecycle (in
//! worker processes), exec, the freezer, cgroup figures and the persistent
//! state of every space. The daemon and the CLI use only this public API.

pub mod audit;
mod cgroups;
mod config;
mod error;
mod error_kind;
pub mod exec;
mod fsutil;
mod git;
pub mod gpu;
pub mod host;
pub mod image;
mod inroot;
pub mod network;
mod overlay_view;
pub mod previews;
mod process;
mod proto;
pub mod purge;
mod quota;
mod sandbox;
mod seccomp;
mod space_id;
mod spaces;
mod spec;
mod store;
pub mod templates;
#[doc(hidden)]
pub mod testing;
mod timing;
mod worker;

pub use cgroups::{CgroupMode, CgroupPaths, SpaceStats};
pub use config::RuntimeConfig;
pub use error::{Error, ErrorKind, Result};
pub use exec::{Command, ExecHandle, ExecOutput, ExecRequest};
pub use network::{Egress, NetworkConfig, NetworkMode, PublishedPort};
pub use spaces::{
    check_env_var, normalize_path, workspace_path, CreateSpace, DirEntry, EnvFile, ExecActivity,
    FileInfo, FileKind, GitPush, HistoryLines, HistoryMark, Observation, ProcessInfo, PutOptions,
    RepoClone, Runtime, SpaceName, VolumeInfo, WorkspaceDisk, WorkspaceSize, DEFAULT_ENV_FILE_PATH,
    DEFAULT_REPO_DEST, INVALID_NAME, MAX_ENV_FILE, MIN_DISK, MIN_MEMORY, MIN_NANO_CPUS, WORKSPACE,
};
pub use store::{Quarantined, Space, SpaceStatus, SpaceUser};
pub use worker::{log_to_stderr, run_if_worker, PoolStats};
