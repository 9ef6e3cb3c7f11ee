//! Auto-sleep: every interval, pause running spaces idle longer than the
//! idle timeout, never one with an exec or terminal session in flight.

use std::time::Duration;

use std::sync::Arc;

use clawdspace_runtime::audit::{AuditLog, AuditType};
use clawdspace_runtime::{Runtime, SpaceStatus};

/// Runs forever; the first pass is one interval after start.
/// Each pause is audited as `space.pause` with `meta.reason: "idle"`.
pub async fn run(rt: Runtime, audit: Arc<AuditLog>, idle: Duration, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for s in rt
            .list()
            .into_iter()
            .filter(|s| s.status == SpaceStatus::Running)
        {
            match rt.pause_if_idle(&s.name, idle).await {
                Ok(true) => {
                    tracing::info!(space = %s.name, "auto-sleep: paused idle space");
                    audit
                        .record(
                            Some(&s.name),
                            AuditType::SpacePause,
                            Some(serde_json::json!({"reason": "idle"})),
                        )
                        .await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(space = %s.name, "auto-sleep: {e}"),
            }
        }
    }
}
