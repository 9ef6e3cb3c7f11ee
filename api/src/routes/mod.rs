//! The router: every endpoint of SPEC section 5, plus streaming exec, space
//! stats, the OpenAPI document and the web dashboard.

pub mod audit;
pub mod dashboard;
pub mod files;
pub mod git;
pub mod mcp;
pub mod nodes;
pub mod ports;
pub mod preview_host;
pub mod relay;
pub mod spaces;
pub mod stats;
pub mod system;
pub mod templates;
pub mod terminal;
pub mod ws;

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::body::{json_response, Json};
use crate::error::ApiError;
use crate::model::{Health, Message};
use crate::AppState;

/// `{"message": m}`, the answer of an action that returns nothing else.
pub(crate) fn message(m: impl Into<String>) -> Json<Message> {
    Json(Message { message: m.into() })
}

/// `GET /api/health`: liveness, no key needed.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: "1.6.0".into(),
    })
}

async fn openapi_json() -> Response {
    json_response(StatusCode::OK, &crate::openapi::document())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// Logs method, path (never the query: it may hold the key), status, time,
/// and counts the request for `/metrics` by its route template.
async fn log_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // Set by the router for matched routes (our `layer`s run after it).
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let t = Instant::now();
    let in_flight = st.metrics.start();
    let resp = next.run(req).await;
    drop(in_flight);
    st.metrics.observe(
        &route,
        &method,
        resp.status().as_u16(),
        t.elapsed().as_secs_f64(),
    );
    tracing::info!(
        target: "clawdspace_api::request",
        %method,
        %path,
        status = resp.status().as_u16(),
        ms = t.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}

/// Trims a trailing slash from request paths (`/api/spaces/` is
/// `/api/spaces`), except where the path belongs to a space's own server
/// (the port proxy and preview links pass it on exactly: `/dir/` and
/// `/dir` differ there).
pub fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    let proxied = path.starts_with("/p/") || is_port_path(path);
    if proxied || path == "/" || !path.ends_with('/') {
        return req;
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let pq = match req.uri().query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// `/api/spaces/{name}/ports/{port}/…`.
fn is_port_path(path: &str) -> bool {
    let mut seg = path.trim_start_matches('/').splitn(6, '/');
    matches!(
        (seg.next(), seg.next(), seg.next(), seg.next(), seg.next()),
        (Some("api"), Some("spaces"), Some(_), Some("ports"), Some(p)) if !p.is_empty()
    )
}

/// All routes, with auth, CORS and request logs.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/spaces", get(spaces::list).post(spaces::create))
        .route(
            "/api/spaces/{name}",
            get(spaces::get).delete(spaces::destroy),
        )
        .route("/api/spaces/{name}/stop", post(spaces::stop))
        .route("/api/spaces/{name}/start", post(spaces::start))
        .route("/api/spaces/{name}/exec", post(spaces::exec))
        .route("/api/spaces/{name}/exec/ws", get(ws::exec_ws))
        .route("/api/spaces/{name}/terminal", get(terminal::terminal))
        .route("/api/templates", get(templates::list).put(templates::put))
        .route(
            "/api/templates/{name}",
            get(templates::get).delete(templates::delete),
        )
        .route("/api/spaces/{name}/git/push", post(git::push))
        .route("/api/spaces/{name}/stats", get(stats::stats))
        .route(
            "/api/spaces/{name}/observability",
            get(stats::observability),
        )
        .route("/api/audit", get(audit::list))
        .route("/metrics", get(audit::metrics))
        .route("/api/spaces/{name}/files", get(files::list))
        .route(
            "/api/spaces/{name}/file",
            get(files::read).put(files::write),
        )
        .route(
            "/api/spaces/{name}/fs",
            get(files::get).put(files::put).delete(files::delete),
        )
        .route("/api/spaces/{name}/fs/stat", get(files::stat))
        .route(
            "/api/spaces/{name}/archive",
            get(files::archive_get).put(files::archive_put),
        )
        .route("/api/volumes", get(files::volumes))
        .route(
            "/api/volumes/{name}",
            axum::routing::delete(files::remove_volume),
        )
        .route(
            "/api/spaces/{name}/ports",
            get(ports::list).post(ports::open).delete(ports::revoke),
        )
        .route(
            "/api/spaces/{name}/ports/{port}",
            axum::routing::any(ports::proxy_root),
        )
        .route(
            "/api/spaces/{name}/ports/{port}/",
            axum::routing::any(ports::proxy_root),
        )
        .route(
            "/api/spaces/{name}/ports/{port}/{*path}",
            axum::routing::any(ports::proxy),
        )
        .route("/api/spaces/{name}/tunnel/{port}", get(ports::tunnel))
        .route("/p/{token}", axum::routing::any(ports::preview_root))
        .route("/p/{token}/", axum::routing::any(ports::preview_root))
        .route("/p/{token}/{*path}", axum::routing::any(ports::preview))
        .route("/api/system", get(system::system))
        .route("/api/system/capabilities", get(system::capabilities))
        .route("/api/nodes", get(nodes::list))
        .route("/api/nodes/placement", get(nodes::placement))
        .route(
            "/api/nodes/{node}/{*path}",
            axum::routing::any(relay::relay),
        )
        .route_service("/mcp", mcp::service(&state))
        .route("/", get(dashboard::index))
        .route("/assets/{*path}", get(dashboard::asset))
        .fallback(dashboard::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::middleware,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), log_requests))
        .with_state(state)
}
