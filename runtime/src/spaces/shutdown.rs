//! Background work and the end of a runtime. Work done for later (spare
//! network namespaces, the trash, the housekeeping) runs on threads of its
//! own at a lower CPU priority ([`Runtime::in_background`]). Ending a
//! runtime: its background tasks (init watchers, the activity flusher)
//! stop, its operations finish, activity is saved and its workers exit, so
//! that the state directory is free for the next runtime as soon as
//! [`Runtime::close`] returns. Background tasks never keep the runtime alive
//! while they wait: they hold it weakly, and strongly only while they work.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{watch, Notify};

use super::{Inner, Runtime};

/// Counts running tasks of one kind and wakes whoever waits for none.
#[derive(Default)]
pub(super) struct Tracker {
    running: AtomicUsize,
    done: Notify,
}

/// Counts a task as running while it lives.
pub(super) struct Tracked(Arc<Tracker>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.done.notify_waiters();
    }
}

impl Tracker {
    /// Counts a task from now until the returned guard drops.
    pub(super) fn track(self: &Arc<Self>) -> Tracked {
        self.running.fetch_add(1, Ordering::AcqRel);
        Tracked(self.clone())
    }

    /// Tasks running now.
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until none runs, at most until `end`; returns whether none does.
    pub(super) async fn idle(&self, end: Option<tokio::time::Instant>) -> bool {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.running() == 0 {
                return true;
            }
            match end {
                Some(end) => {
                    if tokio::time::timeout_at(end, done).await.is_err() {
                        return self.running() == 0;
                    }
                }
                None => done.await,
            }
        }
    }
}

/// Sets this thread's nice value to [`BACKGROUND_NICE`] (a failure is
/// logged: the work still runs, at the usual priority).
fn lower_priority() {
    let tid = crate::process::thread_id();
    if let Err(e) = crate::process::set_thread_nice(tid, BACKGROUND_NICE) {
        tracing::debug!("lowering a background thread's priority: {e}");
    }
}

/// Tells background tasks that their runtime is closing.
pub(super) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the runtime closes.
    pub(super) async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the runtime is closing.
    pub(super) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Nice value of the threads that do work for later: a space's first exec,
/// right after its create, ran 0.5 ms (none) to 1.1 ms (500 idle spaces)
/// slower while the spare namespace that replaces the one it took was made
/// at the same priority on the same 2 cores. 10 (a tenth of the weight)
/// rather than 19: a kernel lock such a thread holds (rtnl for a veth) is
/// still let go of soon when the host is busy.
const BACKGROUND_NICE: libc::c_int = 10;

impl Runtime {
    /// Runs blocking `work` on a thread of its own at nice
    /// [`BACKGROUND_NICE`] (inherited by the threads it starts), counted
    /// until it ends ([`close`] waits for it): work for later must not take
    /// the CPU from the requests being served. False when no thread could
    /// be started (logged; `work` is dropped: its callers retry later).
    ///
    /// [`close`]: Runtime::close
    pub(super) fn in_background(
        &self,
        what: &str,
        work: impl FnOnce(&Runtime) + Send + 'static,
    ) -> bool {
        let (rt, tracked) = (self.clone(), self.inner.background.track());
        // The runtime may be dropped there: with tokio's context, as on
        // its blocking pool (every caller runs in it).
        let handle = tokio::runtime::Handle::try_current().ok();
        let spawned = std::thread::Builder::new()
            .name("clawdspace-bg".into())
            .spawn(move || {
                let _tracked = tracked;
                let _tokio = handle.as_ref().map(|h| h.enter());
                lower_priority();
                work(&rt);
            });
        if let Err(e) = &spawned {
            tracing::warn!("cannot start a thread for {what}: {e}");
        }
        spawned.is_ok()
    }

    /// Runs blocking `work` done for later (housekeeping, periodic
    /// readings of every space) as [`Runtime::in_background`] does, and
    /// returns what it returned; None when it could not start.
    pub async fn later<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        if !self.in_background(what, move |rt| {
            let _ = done.send(work(rt));
        }) {
            return None;
        }
        result.await.ok()
    }

    /// Runs `task` in the background, counted until it ends ([`close`]
    /// waits for it). The task gets the runtime weakly (upgrade it only
    /// while working) and the signal to stop.
    ///
    /// [`close`]: Runtime::close
    pub(super) fn background<F>(&self, task: impl FnOnce(Weak<Inner>, Stop) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let tracked = self.inner.background.track();
        let task = task(
            Arc::downgrade(&self.inner),
            Stop(self.inner.stop.subscribe()),
        );
        tokio::spawn(async move {
            let _tracked = tracked;
            task.await
        });
    }

    /// Shuts this runtime down; spaces keep running (the next runtime on
    /// the state directory adopts them). Stops the background tasks, waits
    /// for running operations and those tasks (a restart of a crashed init
    /// finishes), saves activity and ends the worker processes. When it
    /// returns, the state directory is free unless other handles of this
    /// runtime (clones, exec handles) are still held: the last one to go
    /// frees it.
    pub async fn close(self) {
        self.inner.stop.send_replace(true);
        self.inner.ops.idle(None).await;
        self.inner.background.idle(None).await;
        let rt = self.clone();
        let last = move || {
            rt.flush();
            rt.remove_retired_cgroups(true);
        };
        if let Err(e) = tokio::task::spawn_blocking(last).await {
            tracing::error!("saving activity while closing: {e}");
        }
        self.inner.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> libc::c_int {
        let tid = crate::process::thread_id();
        // SAFETY: getpriority of this thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
    }

    #[test]
    fn background_threads_and_theirs_run_at_the_lower_priority() {
        let before = own_nice();
        if before > BACKGROUND_NICE {
            return; // a test run niced further than background work
        }
        let (own, inherited) = std::thread::spawn(|| {
            lower_priority();
            // A thread it starts (the namespace thread of a spare) too.
            let inner = std::thread::spawn(own_nice).join().expect("inner thread");
            (own_nice(), inner)
        })
        .join()
        .expect("thread");
        assert_eq!((own, inherited), (BACKGROUND_NICE, BACKGROUND_NICE));
        assert_eq!(own_nice(), before, "the calling thread keeps its priority");
    }
}
