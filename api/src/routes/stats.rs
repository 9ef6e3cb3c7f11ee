//! `GET /api/spaces/{name}/stats` and `…/observability` (SPEC section 12):
//! a space's live resource use, read from its cgroup and network
//! namespace, and a richer snapshot (its volume's disk and size, its
//! busiest processes, the tail of its shell history).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::format::number;
use crate::model::ErrorJson;
use crate::AppState;
use clawdspace_runtime::{Space, SpaceStats};

/// A space's resource use.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpaceStatsJson {
    /// CPU use since the previous stats call for this space (or, on the
    /// first call, the average since the space started), percent of one
    /// core (`200` = two cores busy).
    #[schema(value_type = f64)]
    pub cpu_percent: serde_json::Value,
    /// Memory charged to the space's cgroup, bytes.
    pub memory_usage_bytes: u64,
    /// Memory limit, bytes.
    pub memory_limit_bytes: u64,
    /// Processes in the space.
    pub pids: u64,
    /// Bytes received on the space's network interfaces (loopback not
    /// counted; 0 with network `none`).
    pub network_rx_bytes: u64,
    /// Bytes sent on the space's network interfaces.
    pub network_tx_bytes: u64,
    /// Bytes read from block devices (page-cache hits are not reads).
    pub block_read_bytes: u64,
    /// Bytes written to block devices (on cgroup v1 hosts only direct and
    /// synchronous writes are charged to the space).
    pub block_write_bytes: u64,
    /// *Extension*: CPU time used by the space's processes, nanoseconds.
    pub cpu_usage_ns: u64,
    /// *Extension*: packets the space's egress policy dropped (its
    /// blocked networks and ranges; with `allowDomains`, whatever is not
    /// allowed), counted since it or the daemon last started. Absent for
    /// network `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_dropped_packets: Option<u64>,
    /// *Extension*: the bytes of those packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_dropped_bytes: Option<u64>,
}

/// `{"stats": SpaceStats}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsEnvelope {
    /// The figures.
    pub stats: SpaceStatsJson,
}

/// Live CPU, memory and process figures of a space.
#[utoipa::path(get, path = "/api/spaces/{name}/stats", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = StatsEnvelope), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn stats(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<StatsEnvelope>> {
    let space = st.rt.get(&name)?;
    // cgroup files: off the async threads.
    let rt = st.rt.clone();
    let (s, drops) = tokio::task::spawn_blocking(move || {
        let s = rt.stats(&name)?;
        // A counter that cannot be read leaves the figures without it.
        let drops = rt.egress_drops(&name).unwrap_or_else(|e| {
            tracing::warn!(space = %name, "reading the egress drop counter: {e}");
            None
        });
        Ok::<_, clawdspace_runtime::Error>((s, drops))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stats task failed: {e}"),
        )
    })??;
    Ok(Json(StatsEnvelope {
        stats: stats_json(&st, &space, &s, drops),
    }))
}

/// The figures of `space` as served; `drops` from its egress counter.
fn stats_json(
    st: &AppState,
    space: &Space,
    s: &SpaceStats,
    drops: Option<(u64, u64)>,
) -> SpaceStatsJson {
    SpaceStatsJson {
        cpu_percent: number(st.rt.cpu_percent(space, s.cpu_usage_ns)),
        memory_usage_bytes: s.memory_bytes,
        memory_limit_bytes: s.memory_limit_bytes.unwrap_or(space.memory),
        pids: s.pids,
        network_rx_bytes: s.network_rx_bytes,
        network_tx_bytes: s.network_tx_bytes,
        block_read_bytes: s.block_read_bytes,
        block_write_bytes: s.block_write_bytes,
        cpu_usage_ns: s.cpu_usage_ns,
        egress_dropped_packets: drops.map(|d| d.0),
        egress_dropped_bytes: drops.map(|d| d.1),
    }
}

/// The filesystem of a space's `/workspace`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceDiskJson {
    /// Size, bytes (with a disk limit: the limit).
    pub total_bytes: u64,
    /// Used, bytes.
    pub used_bytes: u64,
    /// Available, bytes.
    pub avail_bytes: u64,
    /// `usedBytes / totalBytes × 100`.
    pub used_percent: f64,
    /// `/workspace`.
    pub path: String,
}

/// One process, as `ps -eo pid,%cpu,%mem,etime,comm` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopProcessJson {
    /// Pid inside the space.
    pub pid: i32,
    /// CPU time over its lifetime, percent of one core.
    pub cpu: f64,
    /// Resident memory, percent of the host's memory.
    pub mem: f64,
    /// Time since it started: `[[dd-]hh:]mm:ss`.
    pub etime: String,
    /// Command name (at most 15 bytes).
    pub command: String,
}

/// A snapshot of a space.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilityJson {
    /// As `GET …/stats`.
    pub stats: SpaceStatsJson,
    /// The filesystem of `/workspace` (absent for a space without a volume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_disk: Option<WorkspaceDiskJson>,
    /// Bytes the files under `/workspace` take (as `du`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_size_bytes: Option<u64>,
    /// *Extension*: present and `false` when the size walk stopped at its
    /// cap (200 000 entries or 2 s): `workspaceSizeBytes` is then a lower
    /// bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_size_complete: Option<bool>,
    /// The space's 8 busiest processes, by CPU.
    pub top: Vec<TopProcessJson>,
    /// The last 50 lines of `/workspace/.bash_history` (or of the user's
    /// `~/.bash_history`), absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bash_history_tail: Option<String>,
}

/// `{"observability": Observability}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObservabilityEnvelope {
    /// The snapshot.
    pub observability: ObservabilityJson,
}

/// Stats plus the disk and size of the space's volume, its busiest
/// processes and the tail of its shell history, read from the host
/// (nothing runs in the space).
#[utoipa::path(get, path = "/api/spaces/{name}/observability", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = ObservabilityEnvelope), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn observability(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ObservabilityEnvelope>> {
    let space = st.rt.get(&name)?;
    let o = st.rt.observe(&name).await?;
    Ok(Json(ObservabilityEnvelope {
        observability: ObservabilityJson {
            stats: stats_json(&st, &space, &o.stats, None),
            workspace_disk: o.workspace_disk.map(|d| WorkspaceDiskJson {
                total_bytes: d.total_bytes,
                used_bytes: d.used_bytes,
                avail_bytes: d.avail_bytes,
                used_percent: d.used_percent,
                path: d.path,
            }),
            workspace_size_bytes: o.workspace_size.map(|s| s.bytes),
            workspace_size_complete: o
                .workspace_size
                .and_then(|s| (!s.complete).then_some(false)),
            top: o
                .top
                .into_iter()
                .map(|p| TopProcessJson {
                    pid: p.pid,
                    cpu: p.cpu,
                    mem: p.mem,
                    etime: p.etime,
                    command: p.command,
                })
                .collect(),
            bash_history_tail: o.bash_history_tail,
        },
    }))
}
