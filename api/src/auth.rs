//! Authentication (SPEC section 3): `Authorization: Bearer <key>` or exactly
//! one `?key=<key>`, compared in constant time, for `/api` and the MCP
//! endpoint `/mcp`; CORS on every response.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Paths under /api served without a key.
const OPEN: &[&str] = &["/api/health", "/api/openapi.json"];

/// Constant-time equality (length leaks, content does not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-decodes a query value (`+` is a space).
fn decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether a request carries the key.
pub fn authorized(req: &Request, key: &str) -> bool {
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| ct_eq(k.as_bytes(), key.as_bytes()));
    if header_ok {
        return true;
    }
    let keys: Vec<Option<String>> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == "key").then(|| decode(v))
        })
        .collect();
    matches!(keys.as_slice(), [Some(k)] if ct_eq(k.as_bytes(), key.as_bytes()))
}

/// CORS preflight, authentication of `/api` paths, and the CORS header.
pub async fn middleware(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(v) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        r
    } else {
        let path = req.uri().path();
        let needs_key = ((path == "/api" || path.starts_with("/api/")) && !OPEN.contains(&path))
            || path == "/metrics"
            || path == "/mcp";
        if st.auth_disabled {
            match local_same_origin(&req) {
                Ok(()) => next.run(req).await,
                Err(e) => ApiError::new(StatusCode::FORBIDDEN, e).into_response(),
            }
        } else if needs_key && !authorized(&req, &st.key) {
            ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response()
        } else {
            next.run(req).await
        }
    };
    // Without a key, no other site's page may read or drive the API.
    if !st.auth_disabled {
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    resp
}

/// With authentication disabled (loopback only), the guard that takes the
/// key's place against web pages: the request must name a loopback host
/// (no DNS rebinding) and, when a browser says where it comes from
/// (`Origin`), come from this very server (no cross-site requests or
/// WebSockets).
pub fn local_same_origin(req: &Request) -> Result<(), &'static str> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return Err("Forbidden: authentication is disabled, and only a loopback host is served");
    }
    match req.headers().get(header::ORIGIN).map(HeaderValue::to_str) {
        None => Ok(()),
        Some(Ok(o))
            if o.split_once("://")
                .is_some_and(|(_, a)| a.eq_ignore_ascii_case(host)) =>
        {
            Ok(())
        }
        Some(_) => {
            Err("Forbidden: authentication is disabled, and cross-origin requests are refused")
        }
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or("", |(a, _)| a)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The key to use: `API_KEY` when set and non-empty, else the one in
/// `<state>/api-key`, generated (random, 0600) on first start.
pub fn resolve_key(explicit: Option<&str>, state_dir: &Path) -> anyhow::Result<String> {
    if let Some(k) = explicit.filter(|k| !k.is_empty()) {
        return Ok(k.to_string());
    }
    let path = state_dir.join("api-key");
    if let Ok(k) = fs::read_to_string(&path) {
        let k = k.trim().to_string();
        if !k.is_empty() {
            tracing::info!(file = %path.display(), "using the API key stored in the key file");
            return Ok(k);
        }
    }
    fs::create_dir_all(state_dir)?;
    use rand::Rng;
    let key: String = format!(
        "cs_{}",
        rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>()
    );
    let tmp = state_dir.join(".api-key.tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    tracing::info!(file = %path.display(), "generated a new API key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, auth: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn without_auth_only_local_same_origin_requests_pass() {
        let r = |host: &str, origin: Option<&str>| {
            let mut b = axum::http::Request::builder()
                .uri("/api/spaces")
                .header("host", host);
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            local_same_origin(&b.body(axum::body::Body::empty()).expect("request"))
        };
        assert!(r("127.0.0.1:7777", None).is_ok());
        assert!(r("localhost:7777", Some("http://localhost:7777")).is_ok());
        assert!(r("[::1]:7777", None).is_ok());
        assert!(r("evil.example:7777", None).is_err());
        assert!(r("127.0.0.1:7777", Some("http://evil.example")).is_err());
        assert!(r("127.0.0.1:7777", Some("null")).is_err());
        assert!(r("127.0.0.1:7777", Some("http://127.0.0.1:7778")).is_err());
    }

    #[test]
    fn header_or_single_query_key() {
        let k = "s3cret";
        assert!(authorized(&req("/api/spaces", Some("Bearer s3cret")), k));
        assert!(!authorized(&req("/api/spaces", Some("bearer s3cret")), k));
        assert!(!authorized(&req("/api/spaces", Some("Bearer s3cret ")), k));
        assert!(authorized(&req("/api/spaces?key=s3cret", None), k));
        assert!(authorized(
            &req("/api/spaces?key=s3cret", Some("Bearer wrong")),
            k
        ));
        assert!(!authorized(
            &req("/api/spaces?key=s3cret&key=s3cret", None),
            k
        ));
        assert!(!authorized(&req("/api/spaces?key=wrong", None), k));
        assert!(authorized(&req("/api/spaces?key=a%2Bb", None), "a+b"));
    }
}
