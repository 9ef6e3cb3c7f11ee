//! Cgroups of destroyed spaces, removed off the request path.
//!
//! Removing a memory cgroup makes the kernel move its per-superblock lists
//! to the parent while it holds the global cgroup mutex; that walks every
//! superblock on the host (each space has several: overlay, proc, sysfs,
//! tmpfs, devpts, mqueue). Measured with 500 idle spaces: a create right
//! after a destroy waited for it (19.4 -> 26.5 ms, create then delete in
//! turn), while creates that did not follow a destroy took what they took
//! with none. So a destroy empties its cgroup and leaves the directories;
//! the housekeeping removes them once no create started for [`QUIET`], or
//! when the oldest waited [`OLDEST`]. Their ids are listed in
//! `<state>/cgroups-retiring` first, so that a crash leaves none behind.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fsutil::{read_ids, write_ids};

use super::registry::lock;
use super::Runtime;

/// The state file listing the ids of retired cgroups.
pub(super) const RETIRING_FILE: &str = "cgroups-retiring";

/// Retired cgroups are removed once no create started for this long...
const QUIET: Duration = Duration::from_millis(500);
/// ...or when the oldest waited this long.
const OLDEST: Duration = Duration::from_secs(5);

/// Cgroups waiting for removal, and when a create last started.
pub(super) struct Retired {
    file: PathBuf,
    ids: Mutex<Vec<(String, Instant)>>,
    last_create: Mutex<Option<Instant>>,
}

impl Retired {
    pub(super) fn new(state_dir: &std::path::Path) -> Retired {
        Retired {
            file: state_dir.join(RETIRING_FILE),
            ids: Mutex::default(),
            last_create: Mutex::default(),
        }
    }

    fn save(&self, ids: &[(String, Instant)]) {
        let list: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
        if let Err(e) = write_ids(&self.file, &list) {
            tracing::warn!("listing retired cgroups: {e}");
        }
    }
}

impl Runtime {
    /// Notes that a create starts: retired cgroups wait until creates pause.
    pub(super) fn creating(&self) {
        *lock(&self.inner.retired.last_create) = Some(Instant::now());
    }

    /// Leaves the emptied cgroup of space `id` for later removal. Blocking
    /// (writes the list).
    pub(super) fn retire_cgroup(&self, id: &str) {
        let r = &self.inner.retired;
        let mut ids = lock(&r.ids);
        if !ids.iter().any(|(i, _)| i == id) {
            ids.push((id.to_string(), Instant::now()));
        }
        r.save(&ids);
    }

    /// Removes the retired cgroups when creates pause (or every one, with
    /// `now`: at start and close); one that cannot be removed yet stays
    /// listed. Blocking.
    pub(super) fn remove_retired_cgroups(&self, now: bool) {
        let r = &self.inner.retired;
        let due = {
            let ids = lock(&r.ids);
            let quiet = lock(&r.last_create).is_none_or(|t| t.elapsed() >= QUIET);
            let old = ids.first().is_some_and(|(_, t)| t.elapsed() >= OLDEST);
            if ids.is_empty() || !(now || quiet || old) {
                return;
            }
            ids.clone()
        };
        let mut failed = Vec::new();
        for (id, _) in &due {
            if let Err(e) = super::lifecycle::remove_cgroup(&self.cgroups_path(id)) {
                tracing::warn!(id = %id, "removing a retired cgroup: {e}");
                failed.push(id.clone());
            }
        }
        let mut ids = lock(&r.ids);
        ids.retain(|(id, _)| failed.contains(id) || !due.iter().any(|(d, _)| d == id));
        r.save(&ids);
    }

    /// At start, before anything is retired: takes over the cgroups an
    /// earlier run retired and did not remove. Blocking.
    pub(super) fn load_retired_cgroups(&self) {
        let r = &self.inner.retired;
        let listed = read_ids(&r.file).unwrap_or_default();
        *lock(&r.ids) = listed.into_iter().map(|id| (id, Instant::now())).collect();
    }
}
