//! `GET /api/spaces/{name}/stats`: a space's live resource use, read from its
//! cgroup (SPEC section 12 shape, the fields we measure).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::body::Json;
use crate::error::ApiResult;
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
}

/// `{"stats": SpaceStats}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsEnvelope {
    /// The figures.
    pub stats: SpaceStatsJson,
}

/// The previous sample of each space (by id): when and how much CPU time.
static SAMPLES: Mutex<BTreeMap<String, (Instant, u64)>> = Mutex::new(BTreeMap::new());

/// Percent of one core used between the previous sample and now.
fn cpu_percent(id: &str, started: chrono::DateTime<chrono::Utc>, cpu_ns: u64) -> f64 {
    let now = Instant::now();
    let mut map = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let (wall_ns, used_ns) = match map.get(id) {
        Some(&(t, prev)) if cpu_ns >= prev => {
            (now.duration_since(t).as_nanos() as f64, cpu_ns - prev)
        }
        _ => {
            let since = (chrono::Utc::now() - started)
                .num_nanoseconds()
                .unwrap_or(0);
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

/// Live CPU, memory and process figures of a space.
#[utoipa::path(get, path = "/api/spaces/{name}/stats", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = StatsEnvelope), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn stats(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<StatsEnvelope>> {
    let space = st.rt.get(&name)?;
    let s = st.rt.stats(&name)?;
    Ok(Json(StatsEnvelope {
        stats: SpaceStatsJson {
            cpu_percent: number(cpu_percent(&space.id, space.started, s.cpu_usage_ns)),
            memory_usage_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes.unwrap_or(space.memory),
            pids: s.pids,
            cpu_usage_ns: s.cpu_usage_ns,
        },
    }))
}
