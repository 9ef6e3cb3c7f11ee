//! The registry of spaces in memory: one entry per space with its lock,
//! record and exec count; listing, lookup and activity (touch, flush).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use crate::error::{Error, Result};
use crate::store::{Space, SpaceStatus};

use super::Runtime;

pub(super) struct Entry {
    /// Serialises lifecycle operations on this space (held for writing).
    /// Exec starts share it (held for reading): a destroy, stop or pause
    /// never runs while a process is being started in the space, which
    /// would put it in a cgroup being removed or frozen.
    pub(super) op: tokio::sync::RwLock<()>,
    pub(super) rec: Mutex<Space>,
    /// Execs in flight (the auto-sleep worker never pauses such a space).
    pub(super) execs: AtomicUsize,
    /// `last_activity` changed since the record was last written.
    pub(super) dirty: std::sync::atomic::AtomicBool,
}

impl Entry {
    /// A new entry holding record `space`, unlocked, with no exec.
    pub(super) fn new(space: Space) -> Self {
        Entry {
            op: tokio::sync::RwLock::new(()),
            rec: Mutex::new(space),
            execs: AtomicUsize::new(0),
            dirty: Default::default(),
        }
    }

    pub(super) fn snapshot(&self) -> Space {
        lock(&self.rec).clone()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runtime {
    pub(super) fn entry(&self, name: &str) -> Result<Arc<Entry>> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(e) if !matches!(lock(&e.rec).status, SpaceStatus::Creating) => Ok(e.clone()),
            _ => Err(Error::SpaceNotFound),
        }
    }

    /// Every space (not those still being created), newest first.
    pub fn list(&self) -> Vec<Space> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Space> = map
            .values()
            .map(|e| e.snapshot())
            .filter(|s| !matches!(s.status, SpaceStatus::Creating | SpaceStatus::Destroying))
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.created));
        v
    }

    /// One space by name.
    pub fn get(&self, name: &str) -> Result<Space> {
        let s = self.entry(name)?.snapshot();
        if s.status == SpaceStatus::Destroying {
            return Err(Error::SpaceNotFound);
        }
        Ok(s)
    }

    /// Number of execs running in a space now.
    pub fn execs_in_flight(&self, name: &str) -> usize {
        self.entry(name)
            .map(|e| e.execs.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Records activity on a space now. Kept in memory and written to the
    /// record within a second (see [`Runtime::flush`]), so an exec costs no
    /// disk write.
    pub fn touch(&self, name: &str) -> Result<()> {
        let e = self.entry(name)?;
        lock(&e.rec).last_activity = Utc::now();
        e.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes every record whose activity changed since it was last written.
    pub fn flush(&self) {
        let entries: Vec<Arc<Entry>> = {
            let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for e in entries {
            if !e.dirty.load(Ordering::Acquire) {
                continue;
            }
            // A lifecycle operation in flight writes the record itself; a
            // write from here could land between two of its writes (a
            // start's "stopped" over the "running" it has just made
            // durable). Left dirty for the next tick.
            let Ok(_op) = e.op.try_read() else {
                continue;
            };
            if e.dirty.swap(false, Ordering::AcqRel) {
                let snap = e.snapshot();
                if matches!(snap.status, SpaceStatus::Creating | SpaceStatus::Destroying) {
                    continue;
                }
                if let Err(err) = self.inner.store.save(&snap, false) {
                    tracing::warn!(space = %snap.name, "saving activity: {err}");
                    e.dirty.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Flushes activity to disk every second until the runtime closes.
    pub(super) fn start_flusher(&self) {
        self.background(|weak, mut stop| async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.stopped() => return,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                let rt = Runtime { inner };
                rt.later("the housekeeping", |rt| {
                    rt.flush();
                    if let Err(e) = rt.inner.net.tidy() {
                        tracing::warn!("network housekeeping: {e}");
                    }
                    rt.give_back_memory();
                    rt.remove_retired_cgroups(false);
                })
                .await;
            }
        });
    }

    pub(super) fn is_current(&self, name: &str, entry: &Arc<Entry>) -> bool {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).is_some_and(|e| Arc::ptr_eq(e, entry))
    }
}
