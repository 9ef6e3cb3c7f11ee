//! `GET /api/spaces/{name}/stats`: a space's live resource use, read from its
//! cgroup (SPEC section 12 shape, the fields we measure).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::format::number;
use crate::model::ErrorJson;
use crate::AppState;

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
        stats: SpaceStatsJson {
            cpu_percent: number(st.rt.cpu_percent(&space, s.cpu_usage_ns)),
            memory_usage_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes.unwrap_or(space.memory),
            pids: s.pids,
            cpu_usage_ns: s.cpu_usage_ns,
            egress_dropped_packets: drops.map(|d| d.0),
            egress_dropped_bytes: drops.map(|d| d.1),
        },
    }))
}
