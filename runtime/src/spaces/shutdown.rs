//! Ending a runtime: its background tasks (init watchers, the activity
//! flusher) stop, its operations finish, activity is saved and its workers
//! exit, so that the state directory is free for the next runtime as soon as
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

impl Runtime {
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
