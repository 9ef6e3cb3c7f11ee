//! Keeping spaces alive across crashes: the init watcher, restore at
//! startup and the quarantine of unreadable records.

use std::fs;
use std::sync::Arc;

use chrono::Utc;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::fsutil::{remove_dir_all_if_exists, write_atomic};
use crate::sandbox::proc;
use crate::store::{Quarantined, Space, SpaceStatus, SpaceUser};

use super::bundle::write_filter;
use super::registry::Entry;
use super::{blocking, Runtime};

impl Runtime {
    /// Watches the init of a running space; when it dies unexpectedly the
    /// space is started again (restart policy `unless-stopped`).
    pub(super) fn watch_init(&self, space: &Space) {
        let Some(pid) = space.init_pid else { return };
        let Ok(pidfd) = proc::pidfd_open(pid) else {
            return;
        };
        // SAFETY: `pidfd` is owned by the AsyncFd for its whole life.
        let Ok(afd) =
            (unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) })
        else {
            return;
        };
        // Weak: a watcher must not keep the runtime (and its workers) alive.
        let name = space.name.clone();
        let id = space.id.clone();
        self.background(move |weak, mut stop| async move {
            tokio::select! {
                () = stop.stopped() => return,
                _ = afd.readable() => {}
            }
            drop(afd);
            if stop.is_stopped() {
                return;
            }
            // Boxed: the restart's state is only allocated when needed, so
            // each space's idle watcher stays small (it was ~9 KiB).
            if let Some(inner) = weak.upgrade() {
                Box::pin(Runtime { inner }.on_init_exit(&name, &id, pid)).await;
            }
        });
    }

    async fn on_init_exit(&self, name: &str, id: &str, pid: i32) {
        let Ok(entry) = self.entry(name) else { return };
        let _op = entry.op.write().await;
        let s = entry.snapshot();
        // Destroyed, re-created, or restarted meanwhile: not ours to handle.
        if s.id != id
            || s.init_pid != Some(pid)
            || !matches!(s.status, SpaceStatus::Running | SpaceStatus::Paused)
        {
            return;
        }
        tracing::warn!(space = %name, "init exited; starting it again");
        // A failure is logged (error level) and recorded as stopped by
        // restart_locked.
        let _ = self.restart_locked(&entry).await;
    }

    /// Brings recorded spaces back at startup. A space whose record cannot
    /// be read is quarantined, never deleted; only directories that provably
    /// never held a record (and interrupted deletions) are removed.
    pub(super) async fn restore(&self) -> Result<()> {
        let rt = self.clone();
        blocking("reading retired cgroups", move || {
            rt.load_retired_cgroups();
            Ok(())
        })
        .await?;
        let store = self.inner.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_all())
            .await
            .map_err(|e| Error::State(format!("loading records: {e}")))??;
        for (id, reason) in loaded.unreadable {
            self.quarantine(&id, &reason).await;
        }
        let (spaces, unrecorded, trash) = (loaded.spaces, loaded.unrecorded, loaded.trash);
        let kept: Vec<_> = spaces
            .iter()
            .filter(|s| !matches!(s.status, SpaceStatus::Creating | SpaceStatus::Destroying))
            .map(|s| (s.id.clone(), s.network.clone()))
            .collect();
        if let Err(e) = self.net(move |n| n.restore(&kept)).await {
            // Spaces still come back; networked ones fail to start until
            // the network can be set up.
            tracing::error!("restoring the network: {e}");
        }
        for dir in trash {
            tracing::info!(dir = %dir.display(), "finishing an interrupted deletion");
            let removed = tokio::task::spawn_blocking(move || remove_dir_all_if_exists(&dir)).await;
            if let Ok(Err(e)) = removed {
                tracing::error!("finishing an interrupted deletion: {e}");
            }
        }
        for id in unrecorded {
            tracing::warn!(id = %id, "removing what a create that crashed before its first record left");
            let stub = Space {
                id,
                ..placeholder()
            };
            if let Err(e) = self.teardown(&stub).await {
                tracing::error!("cleanup failed: {e}");
            }
        }
        let (interrupted, spaces): (Vec<_>, Vec<_>) = spaces
            .into_iter()
            .partition(|s| matches!(s.status, SpaceStatus::Creating | SpaceStatus::Destroying));
        for s in &interrupted {
            tracing::info!(space = %s.name, "finishing interrupted create/destroy");
            if let Err(e) = self.teardown(s).await {
                tracing::error!(space = %s.name, "cleanup failed: {e}");
            }
        }
        // What an earlier run retired and these teardowns did: all removed
        // before any space comes back.
        let rt = self.clone();
        blocking("removing retired cgroups", move || {
            rt.remove_retired_cgroups(true);
            Ok(())
        })
        .await?;
        for s in spaces {
            // Reads /proc, the freezer and the bundle: off the async threads.
            let adopted = {
                let (rt, s) = (self.clone(), s.clone());
                blocking("adopting a space", move || Ok(rt.adopt(&s))).await?
            };
            let alive = adopted.is_some();
            let mut s = s;
            if let Some(status) = adopted {
                s.status = status;
            }
            let entry = Arc::new(Entry::new(s.clone()));
            self.inner
                .spaces
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s.name.clone(), entry.clone());
            if alive {
                tracing::info!(space = %s.name, status = s.status.as_str(), "adopted running space");
                self.watch_init(&s);
            } else {
                tracing::info!(space = %s.name, "init gone (crash or reboot); starting it again");
                let _op = entry.op.write().await;
                // A failure is logged (error level) and recorded as stopped
                // by restart_locked; the space stays listed.
                let _ = self.restart_locked(&entry).await;
            }
        }
        Ok(())
    }

    /// Whether the init of `s` still runs; if so, its status (running or
    /// paused, as the freezer says), after making its bundle and mount what
    /// this daemon expects: execs need the filter in the bundle and the
    /// rootfs mount nosuid,nodev (a space started by an older daemon may
    /// lack either). Blocking.
    fn adopt(&self, s: &Space) -> Option<SpaceStatus> {
        let alive = matches!((s.init_pid, s.init_start_time), (Some(p), Some(t)) if proc::is_same_process(p, t));
        if !alive {
            return None;
        }
        let dir = self.inner.store.space_dir(&s.id);
        if let Err(e) = write_filter(&dir, s) {
            tracing::error!(space = %s.name, "writing its seccomp filter: {e}");
        }
        let rootfs = self.rootfs_dir(s);
        if crate::sandbox::rootfs::is_mounted(&rootfs) {
            if let Err(e) = crate::sandbox::rootfs::harden(&rootfs) {
                tracing::error!(space = %s.name, "{e}");
            }
        }
        let status = if self.cgroup(s).is_frozen() {
            SpaceStatus::Paused
        } else {
            SpaceStatus::Running
        };
        self.repair_container_state(s, status);
        Some(status)
    }

    /// Writes libcontainer's state file of a live space anew when it cannot
    /// be read: libcontainer rewrites it in place (truncate, then write) on
    /// pause and resume, so a worker killed in between (with the daemon, or
    /// alone) leaves it torn, and every later exec, pause or resume of the
    /// space would fail. Derived from the record (init pid, start) and the
    /// freezer (`status`). Blocking.
    fn repair_container_state(&self, s: &Space, status: SpaceStatus) {
        use libcontainer::container::{ContainerStatus, State};
        let dir = self.container_state_dir(s);
        let path = dir.join("state.json");
        let readable = fs::read(&path)
            .ok()
            .is_some_and(|d| serde_json::from_slice::<State>(&d).is_ok());
        // No state dir at all: not a torn write, nothing to derive it from.
        if readable || !dir.is_dir() {
            return;
        }
        let mut state = State::new(
            &s.id,
            match status {
                SpaceStatus::Paused => ContainerStatus::Paused,
                _ => ContainerStatus::Running,
            },
            s.init_pid,
            self.space_dir(s),
        );
        state.created = Some(s.started);
        state.creator = Some(0);
        let written = serde_json::to_vec(&state)
            .map_err(|e| Error::Container(e.to_string()))
            .and_then(|data| write_atomic(&path, &data, true));
        match written {
            Ok(()) => tracing::warn!(space = %s.name, status = status.as_str(),
                "its container state file was unreadable (torn by a crash); written anew from its record"),
            Err(e) => tracing::error!(space = %s.name,
                "its container state file is unreadable and could not be written anew: {e}"),
        }
    }

    /// Moves the directory of space `id`, whose record cannot be read, into
    /// the quarantine. Its processes keep running and its files and mounts
    /// are left as they are (they move with the directory); only its network
    /// link goes, since its address, unknown without the record, may be
    /// given to a new space.
    async fn quarantine(&self, id: &str, reason: &str) {
        tracing::error!(id = %id, reason = %reason,
            "SPACE RECORD UNREADABLE: quarantining the space (nothing is deleted; see GET /api/system and docs/OPERATIONS.md)");
        let cut = id.to_string();
        if let Err(e) = self.net(move |n| n.cut(&cut)).await {
            tracing::error!(id = %id, "cutting the quarantined space's network: {e}");
        }
        let (store, i, r) = (self.inner.store.clone(), id.to_string(), reason.to_string());
        match tokio::task::spawn_blocking(move || store.quarantine(&i, &r)).await {
            Ok(Ok(q)) => tracing::error!(id = %id, dir = %q.dir.display(), "space quarantined"),
            Ok(Err(e)) => {
                tracing::error!(id = %id, "quarantining failed (the space is left where it is): {e}")
            }
            Err(e) => tracing::error!(id = %id, "quarantine task: {e}"),
        }
    }

    /// Spaces moved aside because their record could not be read (see
    /// docs/OPERATIONS.md for how to recover one).
    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.inner.store.quarantined()
    }
}

fn placeholder() -> Space {
    let now = Utc::now();
    Space {
        name: String::new(),
        id: String::new(),
        image: String::new(),
        memory: 0,
        nano_cpus: 0,
        pids_limit: 0,
        gpu: false,
        gpus: None,
        created: now,
        started: now,
        last_activity: now,
        status: SpaceStatus::Destroying,
        init_pid: None,
        init_start_time: None,
        user: SpaceUser {
            name: String::new(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: String::new(),
            workdir: String::new(),
        },
        env: Vec::new(),
        layers: Vec::new(),
        network: Default::default(),
        disk: None,
        volume: None,
        readonly_rootfs: false,
    }
}
