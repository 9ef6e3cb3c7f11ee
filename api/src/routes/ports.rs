//! Ports of spaces: the authenticated proxy
//! (`ANY /api/spaces/{name}/ports/{port}/{*path}`), preview links that
//! open one port without the key (`/p/{token}/…`), and their management
//! (`POST/GET/DELETE /api/spaces/{name}/ports`).
//!
//! The daemon connects inside the space's own network namespace, to the
//! port on its loopback (`Runtime::connect_port`): nothing else of the
//! space's namespace or the host is reachable this way, and `network:
//! none` spaces work the same. HTTP/1.1 goes through hyper's client on that
//! connection, streaming both ways; an `Upgrade` (WebSocket) is answered
//! with the space's `101` and the two connections are then joined. A
//! paused space is resumed first (and the request counts as activity); a
//! stopped one answers 409.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use clawdspace_runtime::previews::{Preview, DEFAULT_TTL};
use clawdspace_runtime::{Space, SpaceStatus};

use crate::bandwidth::{Bandwidth, Caps, Throttled};
use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::model::{ErrorJson, Message};
use crate::AppState;

/// Open proxied connections per space at most (`CLAWDSPACE_PORT_CONNECTIONS`)
/// and their shared bandwidth (`CLAWDSPACE_PORT_BANDWIDTH`).
#[derive(Default)]
pub struct PortLimits {
    per_space: usize,
    open: Mutex<HashMap<String, Arc<Semaphore>>>,
    bandwidth: Bandwidth,
    /// Connections kept open after a response, by (space id, port).
    idle: Mutex<HashMap<(String, u16), Vec<Idle>>>,
}

/// A proxied connection kept open between requests, with its slot.
struct Idle {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

impl Idle {
    /// Not yet expired, and its server has not closed it.
    fn usable(&self) -> bool {
        self.since.elapsed() < IDLE_FOR && !self.sender.is_closed()
    }
}

/// Connections kept per port of a space at most.
const IDLE_PER_PORT: usize = 4;
/// How long a kept connection waits for its next request: under the 5 s
/// after which Node's servers (most dev servers) close an idle one.
const IDLE_FOR: Duration = Duration::from_secs(4);

/// One proxied connection's place in its space's limits.
struct Slot {
    permit: OwnedSemaphorePermit,
    caps: Option<Caps>,
}

impl PortLimits {
    /// At most `per_space` proxied connections per space, moving at most
    /// `rate` bytes per second each way together (0: no cap).
    pub fn new(per_space: usize, rate: u64) -> PortLimits {
        PortLimits {
            per_space: per_space.max(1),
            open: Mutex::default(),
            bandwidth: Bandwidth::new(rate),
            idle: Mutex::default(),
        }
    }

    /// A kept connection to `key` (space id, port) not yet closed or
    /// expired, newest first.
    fn checkout(&self, key: &(String, u16)) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let found = std::iter::from_fn(|| list.pop()).find(Idle::usable);
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps a connection whose response has ended for the next request to
    /// `key` (at most [`IDLE_PER_PORT`]; others close).
    fn keep(
        &self,
        key: (String, u16),
        sender: hyper::client::conn::http1::SendRequest<Body>,
        permit: OwnedSemaphorePermit,
    ) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(Idle::usable);
        if list.len() < IDLE_PER_PORT {
            list.push(Idle {
                sender,
                permit,
                since: Instant::now(),
            });
        }
    }

    /// Closes the kept connections that waited [`IDLE_FOR`] (or whose
    /// server closed them).
    fn expire_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(Idle::usable);
            !list.is_empty()
        });
    }

    /// Closes expired kept connections every second, even when no request
    /// comes; for as long as the daemon runs.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let limits = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                limits.expire_idle();
            }
        });
    }

    /// A slot for a new connection to space `space` (id `id`); when all are
    /// taken, its kept idle connections close to make room first.
    fn take(&self, space: &str, id: &str) -> ApiResult<Slot> {
        let permit = self.permit(space).or_else(|e| {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let before = idle.len();
            idle.retain(|(of, _), _| of != id);
            let freed = idle.len() < before;
            drop(idle);
            if freed {
                self.permit(space)
            } else {
                Err(e)
            }
        })?;
        Ok(Slot {
            permit,
            caps: self.bandwidth.caps(space),
        })
    }

    fn permit(&self, space: &str) -> ApiResult<OwnedSemaphorePermit> {
        let sem = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|_, s| s.available_permits() < self.per_space);
            open.entry(space.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_space)))
                .clone()
        };
        sem.try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Space '{space}' has {} proxied connections open already (CLAWDSPACE_PORT_CONNECTIONS)",
                    self.per_space
                ),
            )
        })
    }
}

/// Request headers never passed to the space: the key, and hop-by-hop
/// headers (hyper frames the body itself).
const DROP_REQUEST: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub(crate) fn parse_port(port: &str) -> ApiResult<u16> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid port: {port} (1-65535)")))
}

/// The path and query the space's server is asked for: `/{path}` with
/// no `.`/`..` segments (a client's `..` would only reach the same
/// server, but it is refused rather than guessed at), the query without
/// `key`.
pub(crate) fn inner_target(path: &str, query: Option<&str>) -> ApiResult<String> {
    if path.split('/').any(|s| {
        s == ".." || s == "." || s.eq_ignore_ascii_case("%2e%2e") || s.eq_ignore_ascii_case("%2e")
    }) {
        return Err(ApiError::bad_request(format!(
            "Invalid path: /{path} ('.' and '..' segments are refused)"
        )));
    }
    Ok(without_key(path, query))
}

/// `/{path}` with `query` minus its `key` parameters (the API key never
/// goes on to a space or another node).
pub(crate) fn without_key(path: &str, query: Option<&str>) -> String {
    let mut t = format!("/{path}");
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && *p != "key" && !p.starts_with("key="))
        .collect();
    if !kept.is_empty() {
        t.push('?');
        t.push_str(&kept.join("&"));
    }
    t
}

/// Resumes a paused space (a request is activity); a stopped one is 409.
async fn awake(st: &AppState, name: &str) -> ApiResult<Space> {
    let space = st.rt.get(name)?;
    match space.status {
        SpaceStatus::Running => {}
        SpaceStatus::Paused => {
            st.rt.resume(name).await?;
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                "Space '{name}' is {}: start it first (POST /api/spaces/{name}/start), then retry",
                space.status.as_str()
            ),
            ))
        }
    }
    st.rt.touch(name)?;
    Ok(space)
}

/// Forwards `req` to `port` of space `name` as `target`; `prefix` is the
/// path the client sees the server under (`X-Forwarded-Prefix`).
///
/// A `GET`, `HEAD` or `OPTIONS` without a body goes over a connection kept
/// from an earlier response when there is one (and again over a new one if
/// that connection turns out closed); after a response that ends, the
/// connection is kept ([`PortLimits::keep`]) unless the server closes it.
pub(crate) async fn forward(
    st: &AppState,
    name: &str,
    port: u16,
    target: String,
    prefix: String,
    mut req: Request,
) -> ApiResult<Response> {
    let space = awake(st, name).await?;
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let reuse = !upgrade && safe && http_body::Body::size_hint(req.body()).exact() == Some(0);
    let key = (space.id.clone(), port);
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let headers = proxied_headers(&parts.headers, upgrade, &prefix);
    let build = |body: Body| {
        let mut out = axum::http::Request::builder()
            .method(parts.method.clone())
            .uri(target.clone())
            .body(body)
            .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))?;
        *out.headers_mut() = headers.clone();
        Ok::<_, ApiError>(out)
    };
    if reuse {
        while let Some(mut kept) = st.port_limits.checkout(&key) {
            let ready = tokio::time::timeout(Duration::from_millis(100), kept.sender.ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                continue;
            }
            match kept.sender.send_request(build(Body::empty())?).await {
                Ok(resp) => {
                    return Ok(respond(st, Some(key), resp, kept.sender, kept.permit));
                }
                Err(e) => tracing::debug!("a kept connection to port {port} of {name}: {e}"),
            }
        }
    }
    let slot = st.port_limits.take(name, &space.id)?;
    let permit = slot.permit;
    let stream = Throttled::new(st.rt.connect_port(name, port).await?, slot.caps);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("port {port}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("proxied connection: {e}");
        }
    });
    let mut resp = sender.send_request(build(body)?).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("The server on port {port} in space '{name}' failed: {e}"),
        )
    })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_side), true) = (client_side, upgrade) else {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "The space's server switched protocols unasked",
            ));
        };
        let space_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _permit = permit;
            if let (Ok(c), Ok(s)) = tokio::join!(client_side, space_side) {
                let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            }
        });
        let mut r = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        if let Some(h) = r.headers_mut() {
            *h = resp.headers().clone();
        }
        return r
            .body(Body::empty())
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()));
    }
    Ok(respond(st, (!upgrade).then_some(key), resp, sender, permit))
}

/// The request headers the space gets: without the key and hop-by-hop
/// headers (those of an upgrade kept for one), with `X-Forwarded-*`.
fn proxied_headers(from: &HeaderMap, upgrade: bool, prefix: &str) -> HeaderMap {
    let mut headers = from.clone();
    for h in DROP_REQUEST {
        headers.remove(h);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    let host = from
        .get(header::HOST)
        .cloned()
        .unwrap_or(HeaderValue::from_static("localhost"));
    set(&mut headers, "x-forwarded-host", host);
    set(
        &mut headers,
        "x-forwarded-proto",
        HeaderValue::from_static("http"),
    );
    if let Ok(v) = HeaderValue::from_str(prefix) {
        if !prefix.is_empty() {
            set(&mut headers, "x-forwarded-prefix", v);
        }
    }
    headers
}

/// The response to hand back: its body holds the connection's slot while
/// it streams, and once it has ended the connection is kept for `key`
/// (None: not kept), unless the server said it closes it.
fn respond(
    st: &AppState,
    key: Option<(String, u16)>,
    resp: hyper::Response<hyper::body::Incoming>,
    sender: hyper::client::conn::http1::SendRequest<Body>,
    permit: OwnedSemaphorePermit,
) -> Response {
    let (parts, incoming) = resp.into_parts();
    let closes = parts
        .headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    let back = key
        .filter(|_| !closes)
        .map(|k| (st.port_limits.clone(), k, sender));
    let body = Body::new(Guarded {
        inner: incoming,
        permit: Some(permit),
        back,
        ended: false,
    });
    Response::from_parts(parts, body)
}

fn set(h: &mut HeaderMap, name: &'static str, v: HeaderValue) {
    h.insert(HeaderName::from_static(name), v);
}

/// The connection a response came over, to keep once the response ended.
type Back = (
    Arc<PortLimits>,
    (String, u16),
    hyper::client::conn::http1::SendRequest<Body>,
);

/// A response body that holds its connection slot while it streams; when
/// it has ended, the connection is kept for the next request ([`Back`]).
struct Guarded {
    inner: hyper::body::Incoming,
    permit: Option<OwnedSemaphorePermit>,
    back: Option<Back>,
    ended: bool,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // A response read to its end leaves the connection ready for the
        // next; one dropped half-way closes with it.
        if self.ended || http_body::Body::is_end_stream(&self.inner) {
            if let (Some((limits, key, sender)), Some(permit)) =
                (self.back.take(), self.permit.take())
            {
                limits.keep(key, sender, permit);
            }
        }
    }
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The path the client used up to the proxied part.
fn prefix_of(uri: &axum::http::Uri, inner: &str) -> String {
    let p = uri.path();
    p.strip_suffix(inner.split('?').next().unwrap_or(""))
        .unwrap_or(p)
        .to_string()
}

/// `ANY /api/spaces/{name}/ports/{port}/{*path}`: proxies to the space.
pub async fn proxy(
    State(st): State<AppState>,
    Path((name, port, path)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let port = parse_port(&port)?;
    let target = inner_target(&path, req.uri().query())?;
    let prefix = prefix_of(req.uri(), &format!("/{path}"));
    forward(&st, &name, port, target, prefix, req).await
}

/// `ANY /api/spaces/{name}/ports/{port}`: the root of the space's server.
pub async fn proxy_root(
    State(st): State<AppState>,
    Path((name, port)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let port = parse_port(&port)?;
    let target = inner_target("", req.uri().query())?;
    let prefix = req.uri().path().trim_end_matches('/').to_string();
    forward(&st, &name, port, target, prefix, req).await
}

/// The link a token opens, if its space still exists as it was.
pub(crate) fn preview_of(st: &AppState, token: &str) -> ApiResult<Preview> {
    let gone = || ApiError::new(StatusCode::NOT_FOUND, "Preview link not found or expired");
    let p = st.previews.resolve(token).ok_or_else(gone)?;
    match st.rt.get(&p.space) {
        Ok(s) if s.id == p.space_id => Ok(p),
        _ => Err(gone()),
    }
}

/// `ANY /p/{token}/{*path}`: a preview link (no key).
pub async fn preview(
    State(st): State<AppState>,
    Path((token, path)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let p = preview_of(&st, &token)?;
    let target = inner_target(&path, req.uri().query())?;
    forward(&st, &p.space, p.port, target, format!("/p/{token}"), req).await
}

/// `ANY /p/{token}`: the root of a preview link.
pub async fn preview_root(
    State(st): State<AppState>,
    Path(token): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let p = preview_of(&st, &token)?;
    let target = inner_target("", req.uri().query())?;
    forward(&st, &p.space, p.port, target, format!("/p/{token}"), req).await
}

/// `POST /api/spaces/{name}/ports` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortBody {
    /// The port inside the space (1-65535).
    pub port: Option<u32>,
    /// `true`: a preview link that needs no key; `false` (default): the
    /// authenticated proxy URL.
    #[serde(default)]
    pub public: bool,
    /// Lifetime of a public link, seconds (default 86400, at most 30 days).
    pub ttl_seconds: Option<u64>,
}

/// A port's URL.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortJson {
    pub port: u16,
    pub public: bool,
    /// Where to reach it (a public link's token is shown only here, once).
    pub url: String,
    /// Id of a public link (to tell links apart in the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When a public link expires (ISO 8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// With `CLAWDSPACE_PREVIEW_DOMAIN` set (and a space name that can be
    /// a host label): the same port at `<port>-<name>.<domain>`, paths
    /// unchanged; a public link's token is in it once, then in a cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_url: Option<String>,
}

/// `GET /api/spaces/{name}/ports`: the live public links.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortList {
    pub previews: Vec<PreviewJson>,
}

/// A live public link (its token is not kept, so not shown).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewJson {
    pub id: String,
    pub port: u16,
    pub created_at: String,
    pub expires_at: String,
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '\\']))
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `POST /api/spaces/{name}/ports`: a URL for a port of the space.
#[utoipa::path(post, path = "/api/spaces/{name}/ports", tag = "ports",
    params(("name" = String, Path, description = "Space name")),
    request_body = PortBody,
    responses((status = 201, body = PortJson), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn open(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: crate::body::JsonBody<PortBody>,
) -> ApiResult<Response> {
    let body = body.0;
    let port = body
        .port
        .ok_or_else(|| ApiError::bad_request("port required"))
        .and_then(|p| parse_port(&p.to_string()))?;
    let space = st.rt.get(&name)?;
    let base = base_url(&headers);
    let host_url = st.preview_domain.as_ref().and_then(|d| d.url(&name, port));
    let json = if body.public {
        let ttl = body.ttl_seconds.map_or(DEFAULT_TTL, Duration::from_secs);
        let previews = st.previews.clone();
        let (token, p) = tokio::task::spawn_blocking(move || previews.create(&space, port, ttl))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        // Never the token: it is the link's secret.
        st.audit
            .record(
                Some(&name),
                clawdspace_runtime::audit::AuditType::PortPublish,
                Some(serde_json::json!({"port": p.port, "id": p.id, "ttlSeconds": ttl.as_secs()})),
            )
            .await;
        PortJson {
            port: p.port,
            public: true,
            url: format!("{base}/p/{token}/"),
            id: Some(p.id),
            expires_at: Some(crate::format::iso_millis(&p.expires)),
            host_url: host_url
                .map(|u| format!("{u}/?{}={token}", crate::routes::preview_host::TOKEN_PARAM)),
        }
    } else {
        PortJson {
            port,
            public: false,
            url: format!("{base}/api/spaces/{name}/ports/{port}/"),
            id: None,
            expires_at: None,
            host_url: host_url.map(|u| format!("{u}/")),
        }
    };
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// `GET /api/spaces/{name}/ports`: the space's live public links.
#[utoipa::path(get, path = "/api/spaces/{name}/ports", tag = "ports",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = PortList), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson)))]
pub async fn list(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<PortList>> {
    let space = st.rt.get(&name)?;
    Ok(Json(PortList {
        previews: st
            .previews
            .list(&space)
            .into_iter()
            .map(|p| PreviewJson {
                id: p.id,
                port: p.port,
                created_at: crate::format::iso_millis(&p.created),
                expires_at: crate::format::iso_millis(&p.expires),
            })
            .collect(),
    }))
}

/// `DELETE /api/spaces/{name}/ports?port=N` query.
#[derive(Debug, Deserialize)]
pub struct RevokeQuery {
    port: Option<String>,
}

/// `DELETE /api/spaces/{name}/ports?port=N`: revokes the port's links.
#[utoipa::path(delete, path = "/api/spaces/{name}/ports", tag = "ports",
    params(("name" = String, Path, description = "Space name"),
        ("port" = u16, Query, description = "The port whose links are revoked")),
    responses((status = 200, body = Message), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn revoke(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<RevokeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Message>> {
    let port = q
        .ok()
        .and_then(|Query(q)| q.port)
        .ok_or_else(|| ApiError::bad_request("port required (?port=N)"))?;
    let port = parse_port(&port)?;
    let space = st.rt.get(&name)?;
    let previews = st.previews.clone();
    let n = tokio::task::spawn_blocking(move || previews.revoke(&space, port))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    st.audit
        .record(
            Some(&name),
            clawdspace_runtime::audit::AuditType::PortRevoke,
            Some(serde_json::json!({"port": port, "count": n})),
        )
        .await;
    Ok(super::message(format!(
        "Revoked {n} link(s) to port {port}"
    )))
}

/// `GET /api/spaces/{name}/tunnel/{port}` (WebSocket): a raw TCP
/// connection to `port` on the space's loopback, carried in binary frames
/// both ways (what `clawdspace forward` uses, like `kubectl
/// port-forward`). A text frame `eof` from the client half-closes (the
/// space's side sees end of file and may still answer); the space's side
/// ending closes the socket.
pub async fn tunnel(
    State(st): State<AppState>,
    Path((name, port)): Path<(String, String)>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> ApiResult<Response> {
    let port = parse_port(&port)?;
    let ws = ws.map_err(|e| ApiError::bad_request(format!("WebSocket upgrade required: {e}")))?;
    let space = awake(&st, &name).await?;
    let slot = st.port_limits.take(&name, &space.id)?;
    let stream = Throttled::new(st.rt.connect_port(&name, port).await?, slot.caps);
    let permit = slot.permit;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            pipe(socket, stream).await;
        })
        .into_response())
}

/// Joins a WebSocket (binary frames) and a TCP connection.
async fn pipe<S>(socket: axum::extract::ws::WebSocket, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use axum::extract::ws::Message;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut wtx, mut wrx) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        while let Some(Ok(m)) = wrx.next().await {
            let more = match m {
                Message::Binary(b) => wr.write_all(&b).await.is_ok(),
                // The client's half-close: its side has ended.
                Message::Text(t) if t.as_str() == "eof" => false,
                Message::Close(_) => false,
                _ => true,
            };
            if !more {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if wtx
                        .send(Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = wtx.close().await;
    };
    // The space's side ending (EOF) ends the session once its bytes are
    // sent; the client's side ending shuts the write half down first.
    tokio::select! {
        _ = down => {}
        _ = async {
            up.await;
            // Half-closed by the client: the space's answer may still come,
            // for a while.
            tokio::time::sleep(Duration::from_secs(60)).await;
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_paths_refuse_dot_segments_and_drop_the_key() {
        assert_eq!(inner_target("", None).ok().as_deref(), Some("/"));
        assert_eq!(
            inner_target("a/b/", Some("x=1&key=k&y")).ok().as_deref(),
            Some("/a/b/?x=1&y")
        );
        for bad in ["..", "a/../b", "%2e%2e/x", "./a", "a/%2E"] {
            assert!(inner_target(bad, None).is_err(), "{bad}");
        }
    }
}
