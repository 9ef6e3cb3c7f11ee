//! The fleet relay: `ANY /api/nodes/{node}/{*path}` forwards a request to
//! `/{path}` of another node of `/api/nodes`, with this server's key, and
//! streams the answer back; WebSocket upgrades (exec, terminal) are relayed
//! frame by frame. It lets the dashboard served by any node work with every
//! node from one origin, and the key only ever goes to nodes in the list
//! (docs/API.md, "Nodes").
//!
//! Nothing is buffered: bodies stream both ways, and a client that goes
//! away drops the upstream request (which ends an exec there, as a direct
//! client's hang-up would).

use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

use crate::error::{ApiError, ApiResult};
use crate::model::{ErrorJson, NodeJson};
use crate::AppState;

/// Request headers passed on (everything else, `Authorization` and cookies
/// included, stays here).
const REQUEST_HEADERS: &[HeaderName] = &[
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_RANGE,
    header::IF_MODIFIED_SINCE,
];

/// Response headers passed back.
const RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_DISPOSITION,
];

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The node called `name` in `/api/nodes` (this server included).
fn node(st: &AppState, name: &str) -> ApiResult<NodeJson> {
    let (me, url) = st.nodes.me();
    if name == me {
        return Ok(NodeJson {
            name: me.into(),
            url: url.into(),
            status: "online".into(),
            latency_ms: None,
            capabilities: None,
            memory_free: None,
            spaces_running: None,
            gpus_available: None,
            source: "self".into(),
            error: None,
            last_seen_at: None,
        });
    }
    st.nodes
        .others()
        .0
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Node not found: {name}")))
}

/// The path and query to ask the node for: `/{path}` under `/api/` only
/// (never `/api/nodes/...`: no relay through a relay), no `..` or empty
/// segments, and the query without `key`.
fn target(path: &str, query: Option<&str>) -> ApiResult<String> {
    let ok_segments = path
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != ".." && !s.eq_ignore_ascii_case("%2e%2e"));
    if !path.starts_with("api/") || !ok_segments {
        return Err(ApiError::bad_request(format!(
            "Invalid relay path: /{path} (an /api/ path of the node)"
        )));
    }
    if path == "api/nodes" || path.starts_with("api/nodes/") {
        return Err(ApiError::bad_request(
            "Invalid relay path: /api/nodes is asked of a node directly, not through another",
        ));
    }
    Ok(super::ports::without_key(path, query))
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        for v in from.get_all(name) {
            to.append(name.clone(), v.clone());
        }
    }
}

/// Forwards one request to `/{path}` of a node of `/api/nodes` with this
/// server's key (`path` starts with `api/`; WebSocket upgrades relayed).
#[utoipa::path(method(get, post, put, delete), path = "/api/nodes/{node}/{path}", tag = "nodes",
    params(
        ("node" = String, Path, description = "A node's name in /api/nodes"),
        ("path" = String, Path, description = "The node's own path without the leading slash, e.g. api/spaces (may contain slashes)"),
    ),
    responses(
        (status = 200, description = "The node's answer, streamed (any status of the node's is passed on)"),
        (status = 400, body = ErrorJson), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson), (status = 502, body = ErrorJson)))]
pub async fn relay(
    State(st): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let node = node(&st, &name)?;
    let target = target(&path, req.uri().query())?;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let (mut parts, _) = req.into_parts();
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &st)
            .await
            .map_err(|e| ApiError::bad_request(format!("WebSocket upgrade: {e}")))?;
        return ws_relay(&st, &node, &target, ws).await;
    }
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (parts, body) = req.into_parts();
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers, REQUEST_HEADERS);
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut request = client
        .request(parts.method, format!("{}{target}", node.url))
        .headers(headers)
        .bearer_auth(&*st.key);
    if has_body {
        request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let resp = request.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Node {name} ({}) did not answer: {e}", node.url),
        )
    })?;
    let mut out = Response::builder().status(resp.status().as_u16());
    if let Some(h) = out.headers_mut() {
        copy_headers(resp.headers(), h, RESPONSE_HEADERS);
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Connects to the node's WebSocket first (so its refusal is this
/// request's answer), then upgrades the client and pumps frames both ways
/// until either side closes.
async fn ws_relay(
    st: &AppState,
    node: &NodeJson,
    target: &str,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let url = format!(
        "{}{target}",
        node.url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
        .map_err(|e| ApiError::bad_request(format!("relay URL {url}: {e}")))?;
    let auth = format!("Bearer {}", st.key)
        .parse()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "key is not a header"))?;
    request.headers_mut().insert(header::AUTHORIZATION, auth);
    let connect = tokio_tungstenite::connect_async(request);
    let (upstream, _) = match tokio::time::timeout(CONNECT_TIMEOUT * 5, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| format!("node {} answered HTTP {}", node.name, status.as_u16()));
            return Err(ApiError::new(status, message));
        }
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("Node {} ({}) did not answer: {e}", node.name, node.url),
            ))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("Node {} ({}) did not answer in time", node.name, node.url),
            ))
        }
    };
    Ok(ws
        .on_upgrade(move |socket| pump(socket, upstream))
        .into_response())
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn pump(client: WebSocket, upstream: Upstream) {
    let (mut ctx, mut crx) = client.split();
    let (mut utx, mut urx) = upstream.split();
    let down = async {
        while let Some(Ok(m)) = urx.next().await {
            let m = match m {
                tungstenite::Message::Text(t) => Message::Text(t.as_str().into()),
                tungstenite::Message::Binary(b) => Message::Binary(b),
                tungstenite::Message::Ping(b) => Message::Ping(b),
                tungstenite::Message::Pong(b) => Message::Pong(b),
                tungstenite::Message::Close(f) => Message::Close(f.map(|f| CloseFrame {
                    code: f.code.into(),
                    reason: f.reason.as_str().into(),
                })),
                tungstenite::Message::Frame(_) => continue,
            };
            if ctx.send(m).await.is_err() {
                break;
            }
        }
        let _ = ctx.close().await;
    };
    let up = async {
        while let Some(Ok(m)) = crx.next().await {
            let m = match m {
                Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
                Message::Binary(b) => tungstenite::Message::Binary(b),
                Message::Ping(b) => tungstenite::Message::Ping(b),
                Message::Pong(b) => tungstenite::Message::Pong(b),
                Message::Close(f) => {
                    tungstenite::Message::Close(f.map(|f| tungstenite::protocol::CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    }))
                }
            };
            if utx.send(m).await.is_err() {
                break;
            }
        }
        let _ = utx.close().await;
    };
    // Either side ending ends both: the other half is dropped, which
    // closes its connection.
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_paths_stay_in_the_api_of_the_node() {
        assert_eq!(
            target("api/spaces", None).ok().as_deref(),
            Some("/api/spaces")
        );
        assert_eq!(
            target("api/spaces/a/fs", Some("path=/x&key=k&mode=0644"))
                .ok()
                .as_deref(),
            Some("/api/spaces/a/fs?path=/x&mode=0644")
        );
        assert_eq!(
            target("api/system", Some("key")).ok().as_deref(),
            Some("/api/system")
        );
        for bad in [
            "",
            "x",
            "assets/app.mjs",
            "api/../x",
            "api//spaces",
            "api/./x",
            "api/%2E%2E/x",
            "api/nodes",
            "api/nodes/b/api/spaces",
        ] {
            assert!(target(bad, None).is_err(), "{bad}");
        }
    }
}
