//! Where an operation's time goes: named phases, logged as one debug line
//! (target `clawdspace::timing`) when the operation ends, e.g.
//! `CLAWDSPACE_LOG=clawdspace::timing=debug`.

use std::fmt::Write as _;
use std::time::Instant;

/// The phases of one operation, timed back to back.
pub(crate) struct Phases {
    op: &'static str,
    start: Instant,
    last: Instant,
    parts: String,
}

impl Phases {
    /// Starts timing `op`.
    pub(crate) fn new(op: &'static str) -> Phases {
        let now = Instant::now();
        Phases {
            op,
            start: now,
            last: now,
            parts: String::new(),
        }
    }

    /// Ends the phase `name` (begun at the previous mark).
    pub(crate) fn mark(&mut self, name: &str) {
        if !tracing::enabled!(target: "clawdspace::timing", tracing::Level::DEBUG) {
            return;
        }
        let now = Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1e3;
        let _ = write!(self.parts, " {name}={ms:.2}");
        self.last = now;
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        let total = self.start.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(target: "clawdspace::timing", "{} total={total:.2}ms:{}", self.op, self.parts);
    }
}
