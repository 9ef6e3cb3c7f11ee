//! Messages between the runtime (in the daemon) and its worker processes.
//! One JSON message per SOCK_SEQPACKET datagram; file descriptors travel
//! alongside with SCM_RIGHTS. Every request carries an id that its reply
//! repeats, so a reply is only ever matched to the request it answers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod error;

pub use error::SandboxError;

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Mount plan for a space's root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsPlan {
    /// Read-only layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Writable upper directory.
    pub upper: PathBuf,
    /// overlayfs work directory.
    pub work: PathBuf,
    /// Mount point (the bundle's `rootfs`).
    pub target: PathBuf,
}

/// Start a space's init in a prepared bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    /// libcontainer container id.
    pub id: String,
    /// libcontainer state root.
    pub state_root: PathBuf,
    /// Bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// Root filesystem to mount first.
    pub rootfs: RootfsPlan,
    /// Working directory to create if missing, with its owner.
    pub workdir: String,
    /// Owner of a created working directory.
    pub uid: u32,
    /// Group of a created working directory.
    pub gid: u32,
}

/// Run a process in a running space (stdio fds accompany the message).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// libcontainer container id.
    pub id: String,
    /// libcontainer state root.
    pub state_root: PathBuf,
    /// The space's bundle directory, holding its seccomp filter.
    pub bundle: PathBuf,
    /// argv.
    pub args: Vec<String>,
    /// The whole environment (`KEY=value`; a later entry of a name wins).
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// The uid of the space's init: the space's capability set follows it
    /// (see [`crate::spec::exec_capabilities`]).
    pub space_uid: u32,
    /// The host pid of the space's init, whose namespaces and cgroups the
    /// process joins.
    pub init_pid: i32,
    /// The init's start time (clock ticks after boot): the pid is used only
    /// while it still names that process.
    pub init_start_time: u64,
    /// Run on a new pseudo-terminal instead of the passed stdio.
    #[serde(default)]
    pub tty: Option<TtyRequest>,
}

/// Where a TTY exec's PTY master goes, and the terminal's size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TtyRequest {
    /// Listening unix socket that receives the PTY master.
    pub console_socket: PathBuf,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Kill a space and remove its container, mounts and cgroup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestroyRequest {
    /// libcontainer container id.
    pub id: String,
    /// libcontainer state root.
    pub state_root: PathBuf,
    /// Mounted root filesystem to unmount.
    pub rootfs: PathBuf,
    /// The space's cgroup (absolute cgroup path): emptied and removed even
    /// when libcontainer has no state of the space.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Empty the cgroup but leave its directories: the runtime removes
    /// them later, off the request path.
    #[serde(default)]
    pub keep_cgroup: bool,
}

/// What the runtime asks a worker to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Mount the rootfs and start the init.
    Create(CreateRequest),
    /// Start a process in the space; fds: stdin, stdout, stderr.
    Exec(ExecRequest),
    /// Freeze every process of the space.
    Pause {
        /// libcontainer container id.
        id: String,
        /// libcontainer state root.
        state_root: PathBuf,
    },
    /// Thaw the space.
    Resume {
        /// libcontainer container id.
        id: String,
        /// libcontainer state root.
        state_root: PathBuf,
    },
    /// Kill the space's processes and clean up everything but its files.
    Destroy(DestroyRequest),
}

/// A request and the id its reply carries (unique per pool).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    /// Request id.
    pub id: u64,
    /// What to do.
    pub request: Request,
}

/// The id of a [`Call`] whose request could not be parsed.
#[derive(Debug, Deserialize)]
pub struct CallId {
    /// Request id.
    pub id: u64,
}

/// A worker's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to report.
    Done,
    /// Init started.
    Created {
        /// Host pid of the init.
        pid: i32,
        /// Its start time, clock ticks since boot.
        start_time: u64,
    },
    /// Exec'd process started; an [`Message::Exited`] follows.
    Spawned {
        /// Host pid.
        pid: i32,
    },
    /// The request failed.
    Failed {
        /// What went wrong, and of which kind.
        error: SandboxError,
    },
}

/// Everything a worker sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Message {
    /// Answer to the request with this id.
    Reply {
        /// Id of the [`Call`] answered.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// A process started by `Exec` ended (128+N when killed by signal N).
    Exited {
        /// Host pid.
        pid: i32,
        /// Exit code.
        code: i32,
    },
}
