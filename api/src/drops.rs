//! Egress drops in the audit log: every `CLAWDSPACE_DROP_AUDIT_MS` the
//! daemon reads each networked space's drop counter (packets and bytes its
//! policy refused) and the names its DNS answerer refused, and records a
//! `network.drop` event for each space whose figures grew, with what is
//! new since the last look. Counters start again from zero when a space's
//! rules are rewritten (its start, a daemon start): a smaller reading is
//! all new.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clawdspace_runtime::audit::{AuditLog, AuditType};
use clawdspace_runtime::{Runtime, SpaceStatus};
use serde_json::json;

/// A space's last readings: dropped packets, bytes, refused queries.
type Seen = (u64, u64, u64);

/// What is new in `now` since `before` (all of it after a reset).
fn delta(before: Option<Seen>, now: Seen) -> Seen {
    let grown = |b: u64, n: u64| if n >= b { n - b } else { n };
    match before {
        None => now,
        Some(b) => (grown(b.0, now.0), grown(b.1, now.1), grown(b.2, now.2)),
    }
}

/// Reads every live networked space's figures (blocking: netlink).
fn readings(rt: &Runtime) -> HashMap<String, Seen> {
    let mut out = HashMap::new();
    for s in rt.list() {
        let live = matches!(s.status, SpaceStatus::Running | SpaceStatus::Paused);
        if !live || !s.network.mode.is_networked() {
            continue;
        }
        let (packets, bytes) = match rt.egress_drops(&s.name) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(space = %s.name, "egress drop counter: {e}");
                continue;
            }
        };
        let refused = rt.network().refused_queries(&s.id).unwrap_or(0);
        out.insert(s.name.clone(), (packets, bytes, refused));
    }
    out
}

/// Samples forever (the daemon's lifetime).
pub async fn run(rt: Runtime, audit: Arc<AuditLog>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        tokio::time::sleep(every).await;
        // Work for later: at the background's lower priority.
        let Some(now) = rt.later("egress drop readings", readings).await else {
            continue;
        };
        for (name, figures) in &now {
            let (packets, bytes, refused) = delta(seen.get(name).copied(), *figures);
            if packets == 0 && refused == 0 {
                continue;
            }
            audit
                .record(
                    Some(name),
                    AuditType::NetworkDrop,
                    Some(json!({"packets": packets, "bytes": bytes, "refusedQueries": refused})),
                )
                .await;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_since_the_last_look_and_resets_count_whole() {
        assert_eq!(delta(None, (3, 300, 1)), (3, 300, 1));
        assert_eq!(delta(Some((3, 300, 1)), (5, 500, 1)), (2, 200, 0));
        // The rules were rewritten: the counter began again.
        assert_eq!(delta(Some((9, 900, 4)), (2, 120, 1)), (2, 120, 1));
    }
}
