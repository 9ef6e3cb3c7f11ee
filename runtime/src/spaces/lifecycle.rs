//! Lifecycle operations on an existing space: destroy (teardown), pause,
//! resume, start and restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::proto::{DestroyRequest, Reply, Request};
use crate::quota;
use crate::store::{Space, SpaceStatus};

use super::registry::{lock, Entry};
use super::Runtime;

impl Runtime {
    /// Kills and unmounts a space, removes its network and deletes all its
    /// files.
    pub(super) async fn teardown(&self, space: &Space) -> Result<()> {
        let mut t = crate::timing::Phases::new("teardown");
        let dir = self.inner.store.space_dir(&space.id);
        let space_id = space.id.clone();
        let req = Request::Destroy(DestroyRequest {
            id: space.id.clone(),
            state_root: self.inner.state_root.clone(),
            rootfs: dir.join("rootfs"),
            cgroup: Some(PathBuf::from(self.cgroups_path(&space.id))),
            keep_cgroup: true,
        });
        self.simple(req).await?;
        t.mark("worker");
        // The worker emptied the cgroup (by path too: a worker killed
        // half-way through the create leaves no container state); its
        // removal waits until creates pause (see `retired`).
        let (rt, id) = (self.clone(), space.id.clone());
        tokio::task::spawn_blocking(move || rt.retire_cgroup(&id))
            .await
            .map_err(|e| Error::Container(format!("retiring the cgroup: {e}")))?;
        t.mark("cgroup");
        // By id: also what a create that crashed half-way left. A space
        // without a network never had any (and a netfilter transaction for
        // nothing costs milliseconds: the kernel waits for an RCU grace
        // period).
        if space.network.mode.is_networked() {
            let id = space.id.clone();
            self.net(move |n| n.release(&id)).await?;
            t.mark("net");
        }
        // An upper dir can hold gigabytes: moved to the trash here, deleted
        // in the background.
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            quota::release(&dir.join("upper"));
            store.discard(&space_id)
        })
        .await
        .map_err(|e| Error::Container(format!("removing space files: {e}")))??;
        self.empty_trash();
        t.mark("files");
        Ok(())
    }

    /// Destroys a space whatever its state. Nothing of it remains but its
    /// workspace volume, which a new space of the same name gets back. Runs
    /// to the end even if the caller goes away.
    pub async fn destroy(&self, name: &str) -> Result<()> {
        self.destroy_space(name, false).await
    }

    /// [`Runtime::destroy`], deleting the space's volume too when
    /// `remove_volume` is set.
    pub async fn destroy_space(&self, name: &str, remove_volume: bool) -> Result<()> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.destroy_now(&name, remove_volume).await })
            .await
    }

    async fn destroy_now(&self, name: &str, remove_volume: bool) -> Result<()> {
        let entry = self.entry(name)?;
        let _op = entry.op.write().await;
        let snap = {
            let mut r = lock(&entry.rec);
            if r.status == SpaceStatus::Destroying && !self.is_current(name, &entry) {
                return Err(Error::SpaceNotFound);
            }
            r.status = SpaceStatus::Destroying;
            r.clone()
        };
        self.save(snap.clone(), true).await?;
        self.teardown(&snap).await?;
        if remove_volume {
            self.drop_volume(&snap).await?;
        }
        let mut map = self.inner.spaces.write().unwrap_or_else(|p| p.into_inner());
        if map.get(name).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            map.remove(name);
        }
        self.inner
            .shrunk
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(space = %name, "destroyed");
        Ok(())
    }

    /// Runs an idempotent request (destroy, pause, resume) that answers
    /// `Done`. A worker that dies on it is replaced and asked again, so a
    /// rollback or destroy does not leave leftovers behind.
    async fn simple(&self, req: Request) -> Result<()> {
        // libcontainer rewrites its state file in place (truncate, write)
        // on pause and resume: a worker killed in between leaves it torn.
        // Keep the old one to put back before asking again.
        let state_file = match &req {
            Request::Pause { id, state_root } | Request::Resume { id, state_root } => {
                Some(state_root.join(id).join("state.json"))
            }
            _ => None,
        };
        let saved = match &state_file {
            Some(f) => tokio::fs::read(f).await.ok(),
            None => None,
        };
        let mut attempt = 0;
        let answer = loop {
            match self.inner.pool.call(&req, &[]).await {
                Err(e) if crate::worker::is_worker_death(&e) && attempt < 10 => {
                    attempt += 1;
                    tracing::warn!("worker died during {req:?}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                    if let (Some(f), Some(old)) = (&state_file, &saved) {
                        restore_if_torn(f, old).await?;
                    }
                }
                r => break r?,
            }
        };
        match answer.0 {
            Reply::Done => Ok(()),
            Reply::Failed { error } => Err(error.into()),
            other => Err(Error::Container(format!(
                "unexpected worker reply {other:?}"
            ))),
        }
    }

    /// Records a status, `durable`ly (fsynced) or not (running/paused:
    /// after a crash the runtime reads the real state from the freezer
    /// anyway); the caller holds the space's lock.
    pub(super) async fn set_status(
        &self,
        entry: &Entry,
        status: SpaceStatus,
        durable: bool,
    ) -> Result<Space> {
        let snap = {
            let mut r = lock(&entry.rec);
            r.status = status;
            r.clone()
        };
        entry.dirty.store(false, Ordering::Release);
        self.save(snap.clone(), durable).await?;
        Ok(snap)
    }

    /// Freezes every process of a running space. Paused: no-op. Stopped:
    /// [`Error::NotRunning`].
    pub async fn pause(&self, name: &str) -> Result<Space> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.pause_now(&name).await })
            .await
    }

    async fn pause_now(&self, name: &str) -> Result<Space> {
        let mut t = crate::timing::Phases::new("pause");
        let entry = self.entry(name)?;
        let _op = entry.op.write().await;
        let s = entry.snapshot();
        t.mark("lock");
        match s.status {
            SpaceStatus::Paused => Ok(s),
            SpaceStatus::Running => {
                self.simple(Request::Pause {
                    id: s.id.clone(),
                    state_root: self.inner.state_root.clone(),
                })
                .await?;
                t.mark("worker");
                let r = self.set_status(&entry, SpaceStatus::Paused, false).await;
                t.mark("save");
                r
            }
            _ => Err(Error::NotRunning),
        }
    }

    /// Pauses a running space if nothing ran in it for longer than `idle`
    /// and no exec is in flight (the auto-sleep rule); returns whether it
    /// paused it.
    pub async fn pause_if_idle(&self, name: &str, idle: std::time::Duration) -> Result<bool> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.pause_if_idle_now(&name, idle).await })
            .await
    }

    async fn pause_if_idle_now(&self, name: &str, idle: std::time::Duration) -> Result<bool> {
        let entry = self.entry(name)?;
        let _op = entry.op.write().await;
        let s = entry.snapshot();
        let idle_for = (Utc::now() - s.last_activity).to_std().unwrap_or_default();
        if s.status != SpaceStatus::Running
            || entry.execs.load(Ordering::Acquire) > 0
            || idle_for <= idle
        {
            return Ok(false);
        }
        self.simple(Request::Pause {
            id: s.id.clone(),
            state_root: self.inner.state_root.clone(),
        })
        .await?;
        self.set_status(&entry, SpaceStatus::Paused, false).await?;
        Ok(true)
    }

    /// Thaws a paused space. Running: no-op. Stopped: [`Error::NotRunning`].
    pub async fn resume(&self, name: &str) -> Result<Space> {
        let name = name.to_string();
        self.detached(move |rt| async move {
            let entry = rt.entry(&name)?;
            let _op = entry.op.write().await;
            rt.resume_locked(&entry).await
        })
        .await
    }

    pub(super) async fn resume_locked(&self, entry: &Arc<Entry>) -> Result<Space> {
        let s = entry.snapshot();
        match s.status {
            SpaceStatus::Running => Ok(s),
            SpaceStatus::Paused => {
                self.simple(Request::Resume {
                    id: s.id.clone(),
                    state_root: self.inner.state_root.clone(),
                })
                .await?;
                self.set_status(entry, SpaceStatus::Running, false).await
            }
            SpaceStatus::Stopped => Err(Error::NotRunning),
            // Destroyed (or not made yet) while the caller waited for the
            // lock, as an exec that found its space paused.
            SpaceStatus::Creating | SpaceStatus::Destroying => Err(Error::SpaceNotFound),
        }
    }

    /// Makes a space run: thaws a paused one, starts the init of a stopped
    /// one again (files kept), does nothing to a running one. Counts as
    /// activity.
    pub async fn start(&self, name: &str) -> Result<Space> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.start_now(&name).await })
            .await
    }

    async fn start_now(&self, name: &str) -> Result<Space> {
        let entry = self.entry(name)?;
        let _op = entry.op.write().await;
        let s = entry.snapshot();
        let s = match s.status {
            SpaceStatus::Stopped => self.restart_locked(&entry).await?,
            SpaceStatus::Paused => self.resume_locked(&entry).await?,
            SpaceStatus::Running => s,
            _ => return Err(Error::SpaceNotFound),
        };
        self.touch(name)?;
        Ok(s)
    }

    /// Starts the init of a space whose init is gone, on its kept files.
    pub(super) async fn restart_locked(&self, entry: &Arc<Entry>) -> Result<Space> {
        let s = entry.snapshot();
        match self.start_init(entry, SpaceStatus::Running).await {
            Ok(s) => {
                tracing::info!(space = %s.name, "init started again");
                Ok(s)
            }
            Err(e) => {
                let snap = {
                    let mut r = lock(&entry.rec);
                    r.status = SpaceStatus::Stopped;
                    r.init_pid = None;
                    r.clone()
                };
                tracing::error!(space = %s.name, "could not start init: {e}");
                if let Err(se) = self.save(snap, true).await {
                    tracing::error!(space = %s.name,
                        "recording it as stopped failed too (its record still says {}): {se}",
                        s.status.as_str());
                }
                Err(e)
            }
        }
    }
}

/// Puts `old` back into libcontainer's state file `path` if what is there
/// now is not JSON.
async fn restore_if_torn(path: &Path, old: &[u8]) -> Result<()> {
    let now = tokio::fs::read(path).await.unwrap_or_default();
    if serde_json::from_slice::<serde_json::Value>(&now).is_ok() {
        return Ok(());
    }
    tracing::warn!(path = %path.display(), "restoring a torn container state file");
    let (path, old) = (path.to_path_buf(), old.to_vec());
    tokio::task::spawn_blocking(move || write_atomic(&path, &old, true))
        .await
        .map_err(|e| Error::Container(format!("restoring the container state: {e}")))?
}

/// Kills what is left in cgroup `path` (e.g. processes libcontainer cloned
/// for a create whose worker died), uncharges its memory (so that the
/// kernel frees the memory cgroup at once) and removes its directory in
/// every hierarchy. Blocking.
pub(super) fn remove_cgroup(path: &str) -> Result<()> {
    let dirs = crate::purge::parent_dirs(path);
    for _ in 0..100 {
        // Killed again each time: a process may have joined since.
        for d in &dirs {
            crate::purge::thaw_and_kill(d);
        }
        let gone = dirs
            .iter()
            .all(|d| match crate::purge::remove_cgroup_dir(d) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            });
        if gone {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(Error::Container(format!(
        "cgroup {path} still has processes after SIGKILL"
    )))
}
