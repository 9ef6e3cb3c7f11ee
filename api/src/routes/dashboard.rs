//! The web dashboard: static files embedded at build time (api/build.rs),
//! served without a key. `/` is the page, `/assets/<file>` its modules,
//! styles and (when the build had them) xterm.js under `/assets/vendor/`.
//! Every file has a content-hash ETag and `Cache-Control: no-cache`, so a
//! browser revalidates (304) and never runs a stale module after an upgrade.

use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// One embedded file.
pub struct Asset {
    /// Path under `/assets/` (`index.html` is also `/`).
    pub name: &'static str,
    /// Content type.
    pub mime: &'static str,
    /// Quoted content hash.
    pub etag: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.body.into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if a.mime.starts_with("text/html") {
        // The page loads only its own files and talks only to this server.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                 style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    r
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "Not found").into_response()
}

/// `GET /`: the dashboard page.
pub async fn index(headers: HeaderMap) -> Response {
    find("index.html").map_or_else(not_found, |a| serve(a, &headers))
}

/// `GET /assets/{*path}`: one embedded file, or a JSON 404.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    find(&path).map_or_else(not_found, |a| serve(a, &headers))
}

/// Everything the router does not know: JSON 404 under `/api` and for
/// files (a last path segment with a dot); other `GET`s get the page
/// (single-page-app fallback, SPEC 5.11).
pub async fn fallback(req: Request) -> Response {
    let path = req.uri().path();
    let api = path == "/api" || path.starts_with("/api/");
    let file = path.rsplit('/').next().is_some_and(|s| s.contains('.'));
    let page = matches!(*req.method(), Method::GET | Method::HEAD);
    if api || file || !page || path.starts_with("/assets/") {
        return not_found();
    }
    index(req.headers().clone()).await
}

/// Logs at startup whether the web terminal was built in.
pub fn log_build() {
    if HAS_XTERM {
        tracing::debug!(files = ASSETS.len(), "dashboard embedded with xterm.js");
    } else {
        tracing::info!(
            "dashboard embedded without xterm.js: its web terminal is off \
             (run `npm ci` in api/dashboard, or scripts/install, and rebuild)"
        );
    }
}
