//! The router: every endpoint of SPEC section 5, plus streaming exec, space
//! stats, the OpenAPI document and the web dashboard.

pub mod dashboard;
pub mod files;
pub mod git;
pub mod spaces;
pub mod stats;
pub mod system;
pub mod ws;

use std::time::Instant;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::body::{json_response, Json};
use crate::error::ApiError;
use crate::model::Health;
use crate::AppState;

/// `GET /api/health`: liveness, no key needed.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: "1.0.0".into(),
    })
}

async fn openapi_json() -> Response {
    json_response(StatusCode::OK, &crate::openapi::document())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// Logs method, path (never the query: it may hold the key), status, time.
async fn log_requests(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "clawdspace_api::request",
        %method,
        %path,
        status = resp.status().as_u16(),
        ms = t.elapsed().as_secs_f64() * 1000.0,
    );
    resp
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
        .route("/api/spaces/{name}/git/push", post(git::push))
        .route("/api/spaces/{name}/stats", get(stats::stats))
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
        .route("/api/system", get(system::system))
        .route("/api/system/capabilities", get(system::capabilities))
        .route("/", get(dashboard::index))
        .route("/assets/{*path}", get(dashboard::asset))
        .fallback(dashboard::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::body::BODY_LIMIT,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::middleware,
        ))
        .layer(middleware::from_fn(log_requests))
        .with_state(state)
}
