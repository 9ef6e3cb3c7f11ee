//! CPU% of a space: the previous sample of each space, kept by the runtime
//! (not in a global) so that two runtimes in one process never share them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::store::Space;

use super::registry::lock;
use super::Runtime;

/// The previous sample of each space (by id): when and how much CPU time.
#[derive(Default)]
pub(super) struct CpuSamples(Mutex<BTreeMap<String, (Instant, u64)>>);

impl CpuSamples {
    /// Percent of one core used by space `id` (started at `started`) between
    /// its previous sample and now, given its CPU time `cpu_ns` now.
    fn percent(&self, id: &str, started: DateTime<Utc>, cpu_ns: u64, now: Instant) -> f64 {
        let mut map = lock(&self.0);
        let (wall_ns, used_ns) = match map.get(id) {
            Some(&(t, prev)) if cpu_ns >= prev => {
                (now.duration_since(t).as_nanos() as f64, cpu_ns - prev)
            }
            _ => {
                let since = (Utc::now() - started).num_nanoseconds().unwrap_or(0);
                (since.max(0) as f64, cpu_ns)
            }
        };
        // Callers polling faster than this share the previous window.
        if !matches!(map.get(id), Some(&(t, _)) if now.duration_since(t).as_millis() < 250) {
            map.insert(id.to_string(), (now, cpu_ns));
        }
        if map.len() > 4096 {
            map.retain(|_, (t, _)| now.duration_since(*t).as_secs() < 600);
        }
        if wall_ns <= 0.0 {
            return 0.0;
        }
        (used_ns as f64 / wall_ns * 1000.0).round() / 10.0
    }
}

impl Runtime {
    /// Percent of one core `space` used since the previous call for it (on
    /// the first call, the average since it started), given its CPU time
    /// now (`SpaceStats::cpu_usage_ns`). `200` = two cores busy.
    pub fn cpu_percent(&self, space: &Space, cpu_ns: u64) -> f64 {
        self.inner
            .cpu
            .percent(&space.id, space.started, cpu_ns, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percent_is_cpu_time_over_wall_time_since_the_previous_sample() {
        let samples = CpuSamples::default();
        let t0 = Instant::now();
        let started = Utc::now() - chrono::Duration::seconds(10);
        // First sample: average since the start (5 s of CPU in 10 s).
        let first = samples.percent("a", started, 5_000_000_000, t0);
        assert!((first - 50.0).abs() < 1.0, "{first}");
        // One second later, 2 s of CPU more: two cores busy.
        let second = samples.percent("a", started, 7_000_000_000, t0 + Duration::from_secs(1));
        assert_eq!(second, 200.0);
        // Another space has samples of its own.
        let other = samples.percent("b", Utc::now(), 0, t0);
        assert_eq!(other, 0.0);
    }
}
