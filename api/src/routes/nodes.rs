//! The fleet: `GET /api/nodes` and where a new space would go.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use clawdspace_cli::fleet::{place, NoPlacement, Request};

use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::model::{ErrorJson, NodeCapabilities, NodeJson, NodesJson, PlacementJson};
use crate::AppState;

/// This server's own entry, from its capabilities now.
async fn me(st: &AppState) -> ApiResult<NodeJson> {
    let st2 = st.clone();
    let caps = tokio::task::spawn_blocking(move || super::system::capabilities_now(&st2))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("capabilities task failed: {e}"),
            )
        })?;
    let (name, url) = st.nodes.me();
    Ok(NodeJson {
        name: name.into(),
        url: url.into(),
        status: "online".into(),
        latency_ms: Some(0),
        capabilities: Some(NodeCapabilities {
            gpu: caps.base.gpu,
            gpu_name: caps.base.gpu_name.clone(),
            gpu_memory: caps.base.gpu_memory.clone(),
            arch: caps.base.arch.clone(),
            platform: caps.base.platform.clone(),
        }),
        memory_free: Some(caps.memory_free),
        spaces_running: Some(caps.spaces_running),
        gpus_available: Some(caps.gpus_available),
        source: "self".into(),
        error: None,
        last_seen_at: Some(chrono::Utc::now().timestamp_millis()),
    })
}

async fn all(st: &AppState) -> ApiResult<NodesJson> {
    let mut nodes = vec![me(st).await?];
    let (others, last_updated_at) = st.nodes.others();
    nodes.extend(others);
    Ok(NodesJson {
        nodes,
        last_updated_at,
    })
}

/// This server and the other nodes it knows (`CLAWDSPACE_NODES`, Tailscale
/// peers), as last probed.
#[utoipa::path(get, path = "/api/nodes", tag = "nodes",
    responses((status = 200, body = NodesJson), (status = 401, body = ErrorJson)))]
pub async fn list(State(st): State<AppState>) -> ApiResult<Json<NodesJson>> {
    all(&st).await.map(Json)
}

/// Where a new space would be created: `server` wins when online; a GPU
/// request (`gpus` > 0) goes to a node with enough GPUs; otherwise the
/// most free memory, then the fewest running spaces.
#[utoipa::path(get, path = "/api/nodes/placement", tag = "nodes",
    params(
        ("gpus" = Option<u32>, Query, description = "GPUs the space needs (default 0)"),
        ("server" = Option<String>, Query, description = "A node the caller chose"),
    ),
    responses((status = 200, body = PlacementJson), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson),
        (status = 409, body = ErrorJson)))]
pub async fn placement(
    State(st): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<PlacementJson>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let gpus = match q.get("gpus").map(|g| g.trim()) {
        None | Some("") => 0,
        Some(g) => g
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 1024)
            .ok_or_else(|| {
                ApiError::bad_request(format!("Invalid gpus: {g} (a count from 0 to 1024)"))
            })?,
    };
    let server = q.get("server").map(|s| s.trim()).filter(|s| !s.is_empty());
    let nodes = all(&st).await?.nodes;
    let loads: Vec<_> = nodes.iter().map(crate::nodes::load_of).collect();
    let p = place(&loads, &Request { server, gpus }).map_err(|e| {
        let status = match e {
            NoPlacement::UnknownServer(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    })?;
    let url = nodes
        .iter()
        .find(|n| n.name == p.node)
        .map(|n| n.url.clone())
        .unwrap_or_default();
    Ok(Json(PlacementJson {
        node: p.node,
        url,
        reason: p.reason,
    }))
}
