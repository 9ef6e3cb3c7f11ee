//! Crash-safe persistence of space records: one JSON file per space,
//! replaced atomically (write, fsync, rename). See docs/ARCHITECTURE.md.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;

/// Lifecycle state of a space as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceStatus {
    /// Being created; rolled back if found at startup.
    Creating,
    /// Init alive, not frozen.
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    /// Init not running; files kept.
    Stopped,
    /// Being destroyed; finished if found at startup.
    Destroying,
}

impl SpaceStatus {
    /// The name clients see (`running`, `paused`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpaceStatus::Running => "running",
            SpaceStatus::Paused => "paused",
            SpaceStatus::Stopped | SpaceStatus::Creating | SpaceStatus::Destroying => "stopped",
        }
    }
}

/// Who processes of a space run as, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceUser {
    /// User name (`sandbox` or `root`).
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// HOME of the user.
    pub home: String,
    /// Working directory of init and execs.
    pub workdir: String,
}

/// Everything the runtime keeps about one space.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    /// User-chosen name, unique on this server.
    pub name: String,
    /// 64 lowercase hex characters, new for every create.
    pub id: String,
    /// Image reference as requested.
    pub image: String,
    /// Memory limit in bytes.
    pub memory: u64,
    /// CPU limit in nano-CPUs (1e9 = one core).
    pub nano_cpus: u64,
    /// Maximum number of processes.
    pub pids_limit: i64,
    /// Whether the space has GPUs.
    pub gpu: bool,
    /// The GPUs passed into it and how (none for older GPU records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<crate::gpu::GpuAssignment>,
    /// When the space was created.
    pub created: DateTime<Utc>,
    /// When its init last started.
    pub started: DateTime<Utc>,
    /// Last recorded activity.
    pub last_activity: DateTime<Utc>,
    /// Lifecycle state.
    pub status: SpaceStatus,
    /// Host pid of the init, when running.
    #[serde(default)]
    pub init_pid: Option<i32>,
    /// Start time (clock ticks since boot) of the init, to detect pid reuse.
    #[serde(default)]
    pub init_start_time: Option<u64>,
    /// The user processes run as.
    pub user: SpaceUser,
    /// Environment of init and execs (`KEY=value`).
    pub env: Vec<String>,
    /// Read-only image layers, topmost first (overlay lowerdir order).
    pub layers: Vec<PathBuf>,
    /// Network mode and address (records without it: mode `none`).
    #[serde(default)]
    pub network: crate::network::SpaceNetwork,
    /// Disk limit of the space's writable layer in bytes (project quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

impl Space {
    /// The 12-character id clients see.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// CPU limit in cores.
    pub fn cpus(&self) -> f64 {
        self.nano_cpus as f64 / 1e9
    }
}

/// The directory of records and per-space files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

const RECORD: &str = "space.json";

impl Store {
    /// A store under `<state_dir>/spaces`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("spaces");
        fs::create_dir_all(&root).ctx(|| format!("create {}", root.display()))?;
        Ok(Store { root })
    }

    /// The directory of all spaces (`<state_dir>/spaces`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The directory holding everything of space `id`.
    pub fn space_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Persists a record; `durable` fsyncs (lifecycle changes), otherwise
    /// the write is atomic but may be lost on power failure (activity).
    pub fn save(&self, space: &Space, durable: bool) -> Result<()> {
        let dir = self.space_dir(&space.id);
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let data = serde_json::to_vec(space).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&dir.join(RECORD), &data, durable)
    }

    /// Loads every record. Directories without a readable record are
    /// returned as orphans (their ids), for cleanup.
    pub fn load_all(&self) -> Result<(Vec<Space>, Vec<String>)> {
        let mut spaces = Vec::new();
        let mut orphans = Vec::new();
        for entry in fs::read_dir(&self.root).ctx(|| format!("read {}", self.root.display()))? {
            let entry = entry.ctx(|| format!("read {}", self.root.display()))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !is_space_id(&id) {
                continue;
            }
            let path = entry.path().join(RECORD);
            match fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice::<Space>(&d).ok())
            {
                Some(s) if s.id == id => spaces.push(s),
                _ => orphans.push(id),
            }
        }
        Ok((spaces, orphans))
    }
}

/// Whether `s` is a 64-character lowercase hex id.
pub fn is_space_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random 64-hex id.
pub fn new_space_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_space_id();
        let b = new_space_id();
        assert!(is_space_id(&a));
        assert_ne!(a, b);
        assert!(!is_space_id("../etc"));
    }
}
