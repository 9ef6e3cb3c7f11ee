//! Host-based preview routing: with `CLAWDSPACE_PREVIEW_DOMAIN` set (a
//! wildcard DNS name pointing at the daemon), a request for
//! `<port>-<name>.<domain>` goes to `port` of space `name`, its path
//! unchanged (apps that use absolute paths work). It needs the key (header
//! or `?key=`) or a preview link's token: `?clawdspace_token=<token>` once,
//! answered with a redirect that sets a cookie for that host only, and the
//! cookie afterwards. Neither the key, the token nor the cookie reaches the
//! space.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};
use crate::routes::ports;
use crate::AppState;

/// The query parameter that carries a preview token once.
pub const TOKEN_PARAM: &str = "clawdspace_token";
/// The cookie that carries it afterwards.
const COOKIE: &str = "clawdspace_preview";

/// Where previews are served by host: `https://` or `http://`, and the
/// domain under which `<port>-<name>.` names point at the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewDomain {
    scheme: &'static str,
    domain: String,
}

impl PreviewDomain {
    /// `preview.example.com` (http) or `https://preview.example.com`.
    pub fn parse(s: &str) -> Result<PreviewDomain, String> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = s.strip_prefix("http://") {
            ("http", r)
        } else {
            ("http", s)
        };
        let domain = rest.trim_end_matches('/').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if domain.is_empty() || domain.len() > 200 || !domain.split('.').all(label_ok) {
            return Err(format!(
                "'{s}' is not a domain (e.g. preview.example.com or https://preview.example.com)"
            ));
        }
        Ok(PreviewDomain { scheme, domain })
    }

    /// The base URL of `port` of `name`, if the name can be a host label.
    pub fn url(&self, name: &str, port: u16) -> Option<String> {
        let label = format!("{port}-{name}");
        let ok = label.len() <= 63
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| format!("{}://{label}.{}", self.scheme, self.domain))
    }

    /// The port and space a `Host` names, if it is one of ours.
    fn target(&self, host: &str) -> Option<(u16, String)> {
        let host = host.to_ascii_lowercase();
        // Without a `:port`; IPv6 literals are never ours.
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => host,
        };
        let label = host.strip_suffix(&self.domain)?.strip_suffix('.')?;
        let (port, name) = label.split_once('-')?;
        if label.contains('.') || name.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((ports::parse_port(port).ok()?, name.to_string()))
    }
}

/// Answers requests for `<port>-<name>.<domain>` hosts; passes the rest on.
pub async fn route(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let target = st.preview_domain.as_ref().and_then(|d| {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))?;
        d.target(&host)
    });
    let Some((port, name)) = target else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t = std::time::Instant::now();
    let resp = serve(&st, port, &name, req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    tracing::info!(
        target: "clawdspace_api::request",
        %method,
        %path,
        host = %format!("{port}-{name}"),
        status = resp.status().as_u16(),
        ms = t.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}

/// The value of query parameter `name` (not decoded: tokens are hex).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The preview token in the request's cookie, if any.
fn cookie_token(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

/// Whether `token` is a live link to `port` of `name`.
fn token_opens(st: &AppState, token: &str, name: &str, port: u16) -> bool {
    ports::preview_of(st, token).is_ok_and(|p| p.space == name && p.port == port)
}

/// The request's cookies without ours (or none left).
fn other_cookies(req: &Request) -> Option<HeaderValue> {
    let kept: Vec<String> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with(&format!("{COOKIE}=")))
        .map(str::to_string)
        .collect();
    (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten()
}

async fn serve(st: &AppState, port: u16, name: &str, mut req: Request) -> ApiResult<Response> {
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(token) = query_param(&query, TOKEN_PARAM) {
        if !token_opens(st, token, name, port) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "Preview link not found or expired",
            ));
        }
        // The token moves into a cookie for this host; the URL loses it.
        let rest: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.is_empty() && query_param(kv, TOKEN_PARAM).is_none())
            .collect();
        let mut location = req.uri().path().to_string();
        if !rest.is_empty() {
            location = format!("{location}?{}", rest.join("&"));
        }
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
        let mut r = StatusCode::FOUND.into_response();
        let h = r.headers_mut();
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
        h.insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(r);
    }
    let by_key = crate::auth::authorized(&req, &st.key);
    let by_cookie = cookie_token(&req).is_some_and(|t| token_opens(st, &t, name, port));
    if !by_key && !by_cookie {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("Unauthorized: port {port} of space '{name}' needs the key or a preview link"),
        ));
    }
    match other_cookies(&req) {
        Some(v) => req.headers_mut().insert(header::COOKIE, v),
        None => req.headers_mut().remove(header::COOKIE),
    };
    let path = req.uri().path().trim_start_matches('/').to_string();
    let target = ports::inner_target(&path, req.uri().query())?;
    ports::forward(st, name, port, target, String::new(), req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_port_and_a_space_under_the_domain_only() {
        let d = PreviewDomain::parse("https://Preview.Example.com/").expect("domain");
        assert_eq!(
            d.target("8000-web.preview.example.com"),
            Some((8000, "web".into()))
        );
        assert_eq!(
            d.target("8000-my-app.PREVIEW.example.com:443"),
            Some((8000, "my-app".into()))
        );
        for other in [
            "preview.example.com",
            "8000-web.example.com",
            "8000-web.evilpreview.example.com",
            "x.8000-web.preview.example.com",
            "web.preview.example.com",
            "0-web.preview.example.com",
            "70000-web.preview.example.com",
            "8000-.preview.example.com",
            "[::1]:8000",
        ] {
            assert_eq!(d.target(other), None, "{other}");
        }
        assert_eq!(
            d.url("web", 8000).as_deref(),
            Some("https://8000-web.preview.example.com")
        );
        // Names that cannot be a host label have no host URL.
        assert_eq!(d.url("Web_1", 8000), None);
        for bad in ["", "a..b", "-a.b", "a b", "a/b"] {
            assert!(PreviewDomain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_params_and_cookies() {
        assert_eq!(
            query_param("a=1&clawdspace_token=ab&b", TOKEN_PARAM),
            Some("ab")
        );
        assert_eq!(query_param("a=1", TOKEN_PARAM), None);
        let req = Request::builder()
            .header(header::COOKIE, "x=1; clawdspace_preview=tok; y=2")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(cookie_token(&req).as_deref(), Some("tok"));
        assert_eq!(
            other_cookies(&req).and_then(|v| v.to_str().ok().map(str::to_string)),
            Some("x=1; y=2".into())
        );
    }
}
