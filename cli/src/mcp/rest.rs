//! The REST calls the MCP tools make: only the endpoints of [`Endpoint`]
//! (each a path of the OpenAPI document; `clawdspaced` checks that in a
//! unit test), against a [`Target`]: a server's base URL, or a daemon's
//! relay to another node of its fleet.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// Every endpoint the MCP tools call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/spaces`.
    ListSpaces,
    /// `POST /api/spaces`.
    CreateSpace,
    /// `GET /api/spaces/{name}`.
    GetSpace,
    /// `DELETE /api/spaces/{name}`.
    DestroySpace,
    /// `POST /api/spaces/{name}/stop`.
    StopSpace,
    /// `POST /api/spaces/{name}/start`.
    StartSpace,
    /// `POST /api/spaces/{name}/exec`.
    Exec,
    /// `GET /api/spaces/{name}/exec/ws` (WebSocket; named in the document's description).
    ExecWs,
    /// `GET /api/spaces/{name}/files`.
    ListFiles,
    /// `GET /api/spaces/{name}/fs`.
    ReadFile,
    /// `PUT /api/spaces/{name}/fs`.
    WriteFile,
    /// `DELETE /api/spaces/{name}/fs`.
    DeleteFile,
    /// `GET /api/system`.
    System,
    /// `GET /api/system/capabilities`.
    Capabilities,
    /// `GET /api/templates`.
    ListTemplates,
    /// `GET /api/templates/{name}`.
    GetTemplate,
    /// `PUT /api/templates`.
    PutTemplate,
    /// `GET /api/nodes`.
    Nodes,
    /// `GET /api/nodes/placement`.
    Placement,
}

/// The relay path every request to another node goes through (all methods).
pub const RELAY: &str = "/api/nodes/{node}/{path}";

impl Endpoint {
    /// Every endpoint.
    pub const ALL: &'static [Endpoint] = &[
        Endpoint::ListSpaces,
        Endpoint::CreateSpace,
        Endpoint::GetSpace,
        Endpoint::DestroySpace,
        Endpoint::StopSpace,
        Endpoint::StartSpace,
        Endpoint::Exec,
        Endpoint::ExecWs,
        Endpoint::ListFiles,
        Endpoint::ReadFile,
        Endpoint::WriteFile,
        Endpoint::DeleteFile,
        Endpoint::System,
        Endpoint::Capabilities,
        Endpoint::ListTemplates,
        Endpoint::GetTemplate,
        Endpoint::PutTemplate,
        Endpoint::Nodes,
        Endpoint::Placement,
    ];

    /// The method and the OpenAPI path template.
    pub fn route(self) -> (&'static str, &'static str) {
        match self {
            Endpoint::ListSpaces => ("GET", "/api/spaces"),
            Endpoint::CreateSpace => ("POST", "/api/spaces"),
            Endpoint::GetSpace => ("GET", "/api/spaces/{name}"),
            Endpoint::DestroySpace => ("DELETE", "/api/spaces/{name}"),
            Endpoint::StopSpace => ("POST", "/api/spaces/{name}/stop"),
            Endpoint::StartSpace => ("POST", "/api/spaces/{name}/start"),
            Endpoint::Exec => ("POST", "/api/spaces/{name}/exec"),
            Endpoint::ExecWs => ("GET", "/api/spaces/{name}/exec/ws"),
            Endpoint::ListFiles => ("GET", "/api/spaces/{name}/files"),
            Endpoint::ReadFile => ("GET", "/api/spaces/{name}/fs"),
            Endpoint::WriteFile => ("PUT", "/api/spaces/{name}/fs"),
            Endpoint::DeleteFile => ("DELETE", "/api/spaces/{name}/fs"),
            Endpoint::System => ("GET", "/api/system"),
            Endpoint::Capabilities => ("GET", "/api/system/capabilities"),
            Endpoint::ListTemplates => ("GET", "/api/templates"),
            Endpoint::GetTemplate => ("GET", "/api/templates/{name}"),
            Endpoint::PutTemplate => ("PUT", "/api/templates"),
            Endpoint::Nodes => ("GET", "/api/nodes"),
            Endpoint::Placement => ("GET", "/api/nodes/placement"),
        }
    }

    /// The path with `{name}` filled in (percent-encoded).
    fn path(self, name: &str) -> String {
        self.route().1.replace("{name}", &encode(name))
    }

    fn method(self) -> Method {
        match self.route().0 {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            _ => Method::GET,
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where requests go: `<prefix><endpoint path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server's name (as `list_servers` shows it).
    pub server: String,
    /// `http://host:port`, or `http://host:port/api/nodes/<node>` (the relay).
    pub prefix: String,
}

/// A failed call: the API's own message when it answered.
#[derive(Debug, Clone)]
pub struct CallError(pub String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

/// The HTTP client with the key.
#[derive(Debug, Clone)]
pub struct Rest {
    http: Client,
    key: String,
}

fn describe(e: &reqwest::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        cur.to_string()
    }
}

impl Rest {
    /// The HTTP client the tools share (no proxy, 5 s to connect, no cap
    /// on a request's time: an exec takes what it takes).
    pub fn client() -> Result<Client, CallError> {
        Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .user_agent(concat!("clawdspace-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError(format!("cannot set up the HTTP client: {e}")))
    }

    /// Requests through `http` sending `key` as a bearer token.
    pub fn new(http: Client, key: impl Into<String>) -> Rest {
        Rest {
            http,
            key: key.into(),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A request to `ep` of space `name` (ignored by endpoints without one)
    /// with `query` pairs (values encoded here).
    pub fn request(
        &self,
        t: &Target,
        ep: Endpoint,
        name: &str,
        query: &[(&str, &str)],
    ) -> RequestBuilder {
        let mut url = format!("{}{}", t.prefix, ep.path(name));
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
        }
        self.http.request(ep.method(), url).bearer_auth(&self.key)
    }

    /// The WebSocket URL of `ep` (`ws://…`).
    pub fn ws_url(t: &Target, ep: Endpoint, name: &str) -> String {
        let url = format!("{}{}", t.prefix, ep.path(name));
        if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url
        }
    }

    /// Sends `req`; any status is `Ok`.
    pub async fn send_raw(&self, t: &Target, req: RequestBuilder) -> Result<Response, CallError> {
        req.send().await.map_err(|e| {
            CallError(format!(
                "could not reach server '{}' ({}): {}",
                t.server,
                t.prefix,
                describe(&e)
            ))
        })
    }

    /// Sends `req`; a non-success status becomes the API's `error` text.
    pub async fn send(&self, t: &Target, req: RequestBuilder) -> Result<Response, CallError> {
        let resp = self.send_raw(t, req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
        Err(CallError(error_text(status, &body)))
    }

    /// A JSON call: the answer's JSON, or the API's error message.
    pub async fn json(
        &self,
        t: &Target,
        ep: Endpoint,
        name: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut req = self.request(t, ep, name, query);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = self.send(t, req).await?;
        let bytes = read_capped(resp, 64 * 1024 * 1024).await?;
        serde_json::from_slice(&bytes).map_err(|_| {
            CallError(format!(
                "server '{}' answered with something that is not JSON",
                t.server
            ))
        })
    }
}

/// The `error` field of an error answer, else the status.
pub fn error_text(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from));
    match from_json {
        Some(m) if status == StatusCode::UNAUTHORIZED => {
            format!("{m}: the server refused the API key (HTTP 401)")
        }
        Some(m) => format!("{m} (HTTP {})", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Reads at most `cap` bytes of a body (more is an error).
pub async fn read_capped(mut resp: Response, cap: usize) -> Result<Vec<u8>, CallError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError(format!("reading the answer: {}", describe(&e))))?
    {
        if out.len() + chunk.len() > cap {
            return Err(CallError(format!("the answer is larger than {cap} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_and_encoded() {
        assert_eq!(Endpoint::Exec.path("a b"), "/api/spaces/a%20b/exec");
        assert_eq!(Endpoint::ListSpaces.path("x"), "/api/spaces");
        let t = Target {
            server: "n".into(),
            prefix: "http://h:1/api/nodes/n".into(),
        };
        assert_eq!(
            Rest::ws_url(&t, Endpoint::ExecWs, "d"),
            "ws://h:1/api/nodes/n/api/spaces/d/exec/ws"
        );
    }

    #[test]
    fn error_messages_are_the_apis() {
        assert_eq!(
            error_text(StatusCode::NOT_FOUND, br#"{"error":"Space not found"}"#),
            "Space not found (HTTP 404)"
        );
        assert_eq!(error_text(StatusCode::BAD_GATEWAY, b"<html>"), "HTTP 502");
    }
}
