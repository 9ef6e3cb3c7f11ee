//! Runtime configuration: where state lives and the defaults for new spaces.

use std::path::PathBuf;

use crate::gpu::GpuConfig;
use crate::image::RegistryConfig;

/// Default state directory (`CLAWDSPACE_STATE_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clawdspace";
/// Default pids limit per space.
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;
/// Default cap on captured output, per stream, of one exec.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// How a [`crate::Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of all persistent state: records, layers, upper dirs.
    pub state_dir: PathBuf,
    /// Executable started as a worker process; it must call
    /// [`crate::worker::run_if_worker`] first thing in `main`.
    pub worker_exe: PathBuf,
    /// Number of single-threaded worker processes running libcontainer.
    pub workers: usize,
    /// Parent cgroup of all spaces (absolute cgroup path).
    pub cgroup_parent: String,
    /// pids limit for spaces that do not ask for one.
    pub pids_limit: i64,
    /// How to reach image registries.
    pub registries: RegistryConfig,
    /// How GPUs are passed to GPU spaces.
    pub gpu: GpuConfig,
    /// Bridge, subnet and destinations of networked spaces.
    pub network: crate::network::NetworkConfig,
    /// Disk limit (bytes) of spaces created without one; none when the
    /// state dir's filesystem has no project quotas (checked at open).
    pub default_disk: Option<u64>,
}

impl RuntimeConfig {
    /// A configuration with defaults, state in `state_dir`, workers run from
    /// the current executable.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        RuntimeConfig {
            registries: RegistryConfig {
                auth_files: crate::image::Credentials::default_files(&state_dir),
                ..Default::default()
            },
            state_dir,
            worker_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            workers: 4,
            cgroup_parent: "/clawdspace".into(),
            pids_limit: DEFAULT_PIDS_LIMIT,
            gpu: GpuConfig::default(),
            network: Default::default(),
            default_disk: None,
        }
    }

    /// Reads `CLAWDSPACE_STATE_DIR` (default `/var/lib/clawdspace`),
    /// `CLAWDSPACE_CGROUP_PARENT`, the registry variables and the network
    /// variables (an invalid network setting is logged and the default
    /// kept; the daemon refuses it at startup instead).
    pub fn from_env() -> Self {
        let dir = std::env::var_os("CLAWDSPACE_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let mut c = Self::new(dir);
        c.registries = RegistryConfig::from_env(&c.state_dir);
        c.gpu = GpuConfig::from_env();
        if let Some(p) = std::env::var("CLAWDSPACE_CGROUP_PARENT")
            .ok()
            .filter(|p| p.starts_with('/'))
        {
            c.cgroup_parent = p;
        }
        match crate::network::NetworkConfig::from_env() {
            Ok(n) => c.network = n,
            Err(e) => tracing::warn!("network settings ignored: {e}"),
        }
        c
    }
}
