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

    /// Adds the phase `name`, timed elsewhere (`ms`), without ending one.
    pub(crate) fn part(&mut self, name: &str, ms: f64) {
        if !tracing::enabled!(target: "clawdspace::timing", tracing::Level::DEBUG) {
            return;
        }
        let _ = write!(self.parts, " {name}={ms:.2}");
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        let total = self.start.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(target: "clawdspace::timing", "{} total={total:.2}ms:{}", self.op, self.parts);
    }
}

/// The most steps a forked child can time.
const CHILD_SLOTS: usize = 24;

thread_local! {
    /// This thread's page shared with the children it forks (made on first
    /// use, when timing is on).
    static CHILD_PAGE: std::cell::Cell<*mut u64> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// `CLOCK_MONOTONIC` in nanoseconds (the vDSO: safe in a forked child).
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The steps of a child forked by a worker (an exec's or an init's way to
/// its program), timed in the child and reported by the parent: the child
/// writes each step's end into a page shared with the parent. Off (every
/// call does nothing) unless timing is logged.
pub(crate) struct ChildSteps {
    page: *mut u64,
    forked: u64,
    /// The child's next slot (its own copy after the fork).
    next: std::cell::Cell<usize>,
}

impl ChildSteps {
    /// Made in the parent right before the fork.
    pub(crate) fn begin() -> ChildSteps {
        let off = ChildSteps {
            page: std::ptr::null_mut(),
            forked: 0,
            next: std::cell::Cell::new(1),
        };
        if !tracing::enabled!(target: "clawdspace::timing", tracing::Level::DEBUG) {
            return off;
        }
        let page = CHILD_PAGE.with(|p| {
            if p.get().is_null() {
                // SAFETY: an anonymous shared mapping of one page.
                let m = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if m != libc::MAP_FAILED {
                    p.set(m.cast());
                }
            }
            p.get()
        });
        if page.is_null() {
            return off;
        }
        for i in 0..CHILD_SLOTS {
            // SAFETY: within the page mapped above; no child runs yet.
            unsafe { page.add(i).write_volatile(0) };
        }
        ChildSteps {
            page,
            forked: now_ns(),
            next: std::cell::Cell::new(1),
        }
    }

    /// In the child, first thing: the fork is done.
    pub(crate) fn forked(&self) {
        self.write(0);
    }

    /// In the child: its next step (in the order of the names given to
    /// [`ChildSteps::report`]) ends now.
    pub(crate) fn mark(&self) {
        let slot = self.next.get();
        self.next.set(slot + 1);
        self.write(slot);
    }

    fn write(&self, slot: usize) {
        if !self.page.is_null() && slot < CHILD_SLOTS {
            // SAFETY: within the shared page; only this child writes it now.
            unsafe { self.page.add(slot).write_volatile(now_ns()) };
        }
    }

    /// In the parent, once the child ran its program: each step's time as a
    /// part of `t` named `c_<name>`, after `c_fork` (up to the child's first
    /// instruction) and before `c_exec` (from the last step until now).
    /// Nothing when a step was not reached.
    pub(crate) fn report<'a>(&self, t: &mut Phases, names: impl IntoIterator<Item = &'a str>) {
        if self.page.is_null() {
            return;
        }
        let end = now_ns();
        let mut last = self.forked;
        let mut parts = Vec::with_capacity(CHILD_SLOTS);
        for (slot, name) in std::iter::once("fork").chain(names).enumerate() {
            if slot >= CHILD_SLOTS {
                return;
            }
            // SAFETY: within the shared page; the child has finished.
            let at = unsafe { self.page.add(slot).read_volatile() };
            if at < last {
                return;
            }
            parts.push((name, at - last));
            last = at;
        }
        parts.push(("exec", end.saturating_sub(last)));
        for (name, ns) in parts {
            t.part(&format!("c_{name}"), ns as f64 / 1e6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timing(f: impl FnOnce()) {
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(sub, f);
    }

    fn part(t: &Phases, name: &str) -> Option<f64> {
        let key = format!(" {name}=");
        let rest = &t.parts[t.parts.find(&key)? + key.len()..];
        rest.split(' ').next()?.parse().ok()
    }

    /// Forks a child that sleeps `ms` between its marks, `marks` times.
    fn child_steps(steps: &ChildSteps, marks: usize, ms: i64) {
        // SAFETY: the child only reads the clock, writes the shared page,
        // sleeps and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            steps.forked();
            for _ in 0..marks {
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: ms * 1_000_000,
                };
                // SAFETY: nanosleep with a valid timespec, then _exit.
                unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
                steps.mark();
            }
            // SAFETY: the end of the forked child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }

    #[test]
    fn a_forked_childs_steps_are_reported_by_the_parent() {
        with_timing(|| {
            let mut t = Phases::new("test");
            let steps = ChildSteps::begin();
            child_steps(&steps, 2, 5);
            steps.report(&mut t, ["first", "second"]);
            for name in ["c_fork", "c_first", "c_second", "c_exec"] {
                assert!(part(&t, name).is_some(), "{name} in {:?}", t.parts);
            }
            assert!(part(&t, "c_first").unwrap_or(0.0) >= 4.5, "{:?}", t.parts);
            assert!(part(&t, "c_second").unwrap_or(0.0) >= 4.5, "{:?}", t.parts);
            // A child that stopped before its last step reports nothing.
            let mut t = Phases::new("test");
            let steps = ChildSteps::begin();
            child_steps(&steps, 1, 0);
            steps.report(&mut t, ["first", "second"]);
            assert!(t.parts.is_empty(), "{:?}", t.parts);
        });
    }

    #[test]
    fn without_timing_nothing_is_mapped_or_reported() {
        let steps = ChildSteps::begin();
        assert!(steps.page.is_null());
        let mut t = Phases::new("test");
        steps.report(&mut t, ["first"]);
        assert!(t.parts.is_empty());
    }
}
