//! The REST client: every request carries `Authorization: Bearer <key>`;
//! bodies are real JSON; failures become [`ApiError`]s that know how to
//! explain themselves.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::config::Settings;
use crate::discovery::Server;
use crate::Fail;

/// How long to wait for a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// 0.5 s: discovery health probes.
    Probe,
    /// 1 s: discovery's `/api/system`.
    Quick,
    /// 2 s: everything else.
    Normal,
}

/// Timeouts and authentication of one request.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub connect: Connect,
    /// Cap on the whole request; `None` waits as long as it takes.
    pub total: Option<Duration>,
    /// Whether to send the key.
    pub auth: bool,
}

impl Opts {
    /// Authenticated, with the given connect timeout and cap.
    pub fn new(connect: Connect, total: Option<Duration>) -> Opts {
        Opts {
            connect,
            total,
            auth: true,
        }
    }
}

/// A failed API call.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// No connection, a timeout, or a broken transfer.
    Unreachable(String),
    /// 401: the key was refused.
    Unauthorized,
    /// Any other non-success status, with the server's `error` text.
    Status(u16, String),
    /// A success status whose body is not the expected JSON.
    Invalid(String),
}

impl ApiError {
    /// Short description (for warnings and lists).
    pub fn short(&self) -> String {
        match self {
            ApiError::Unreachable(d) => format!("unreachable ({d})"),
            ApiError::Unauthorized => "unauthorized (401: the API key was refused)".into(),
            ApiError::Status(s, m) => format!("{m} (HTTP {s})"),
            ApiError::Invalid(d) => format!("unexpected answer ({d})"),
        }
    }

    /// The full error for a command that failed talking to `server`.
    pub fn fail(&self, api: &Api, server: &Server) -> Fail {
        match self {
            ApiError::Unreachable(d) => Fail::error(format!(
                "Could not reach server '{}' at {} ({d})",
                server.name, server.url
            ))
            .hint(
                "Is clawdspaced running there? Run 'clawdspace servers --refresh' to probe the configured hosts again."
                    .to_string(),
            ),
            ApiError::Unauthorized => api.unauthorized(server),
            ApiError::Status(_, m) => Fail::error(m.clone()),
            ApiError::Invalid(d) => Fail::error(format!(
                "Unexpected answer from server '{}' at {}: {d}",
                server.name, server.url
            )),
        }
    }

    /// Whether the server said 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status(404, _))
    }
}

/// The HTTP client with the key.
#[derive(Debug, Clone)]
pub struct Api {
    probe: Client,
    quick: Client,
    normal: Client,
    key: String,
    key_source: String,
}

fn client(connect: Duration) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .connect_timeout(connect)
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("clawdspace-cli/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The innermost cause of an error, for messages.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        let cause = root_cause(e);
        if cause.to_ascii_lowercase().contains("timed out") {
            "connection timed out".into()
        } else {
            format!("connection failed: {cause}")
        }
    } else {
        root_cause(e)
    }
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
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

/// The server's `error` text of a failed answer, else its short body, else
/// the status.
fn error_text(status: StatusCode, bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(bytes).trim().to_string();
            if text.is_empty() || text.len() > 200 {
                format!("HTTP {}", status.as_u16())
            } else {
                text
            }
        })
}

impl Api {
    /// A client using the configured key.
    pub fn new(settings: &Settings) -> anyhow::Result<Api> {
        Ok(Api {
            probe: client(Duration::from_millis(500))?,
            quick: client(Duration::from_secs(1))?,
            normal: client(Duration::from_secs(2))?,
            key: settings.key.clone(),
            key_source: settings.key_source.clone(),
        })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The error for a 401 from `server`: names where the key came from.
    pub fn unauthorized(&self, server: &Server) -> Fail {
        Fail::error(format!(
            "Unauthorized: server '{}' at {} refused the API key",
            server.name, server.url
        ))
        .hint(format!("The key in use came from {}.", self.key_source))
        .hint(
            "Set CLAWDSPACE_KEY (environment or ~/.clawdspace) to the server's key; \
             on the server it is in /var/lib/clawdspace/api-key (or API_KEY of clawdspaced)."
                .to_string(),
        )
    }

    fn pick(&self, c: Connect) -> &Client {
        match c {
            Connect::Probe => &self.probe,
            Connect::Quick => &self.quick,
            Connect::Normal => &self.normal,
        }
    }

    /// Sends a request to `<base>/api<path>`; returns the status and the
    /// raw body.
    pub async fn raw(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        opts: Opts,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let url = format!("{base}/api{path}");
        let mut req = self.pick(opts.connect).request(method, &url);
        if opts.auth {
            req = req.bearer_auth(&self.key);
        }
        if let Some(t) = opts.total {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(describe(&e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Unreachable(describe(&e)))?;
        Ok((status, bytes.to_vec()))
    }

    /// An authenticated request whose bodies are streams (no cap on its
    /// time: a transfer takes what it takes); a non-2xx answer becomes the
    /// same error as [`Api::call`]'s.
    pub async fn stream(
        &self,
        server: &Server,
        method: Method,
        path: &str,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}/api{path}", server.url);
        let mut req = self.normal.request(method, &url).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(ApiError::Status(
            status.as_u16(),
            error_text(status, &bytes),
        ))
    }

    /// An authenticated JSON call; non-2xx statuses become errors carrying
    /// the server's `error` text.
    pub async fn call(
        &self,
        server: &Server,
        method: Method,
        path: &str,
        body: Option<&Value>,
        opts: Opts,
    ) -> Result<Value, ApiError> {
        let (status, bytes) = self.raw(&server.url, method, path, body, opts).await?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized);
        }
        if !status.is_success() {
            return Err(ApiError::Status(
                status.as_u16(),
                error_text(status, &bytes),
            ));
        }
        match json {
            Some(v) if v.get("error").is_some() && !v.is_array() => Err(ApiError::Status(
                status.as_u16(),
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown")
                    .to_string(),
            )),
            Some(v) => Ok(v),
            None => Err(ApiError::Invalid(format!(
                "HTTP {} with a body that is not JSON",
                status.as_u16()
            ))),
        }
    }

    /// `GET` with the normal connect timeout (2 s) and a cap of `total`.
    async fn get_within(
        &self,
        server: &Server,
        path: &str,
        total: Duration,
    ) -> Result<Value, ApiError> {
        self.call(
            server,
            Method::GET,
            path,
            None,
            Opts::new(Connect::Normal, Some(total)),
        )
        .await
    }

    /// `GET` with the normal connect timeout and a 15 s cap.
    pub async fn get(&self, server: &Server, path: &str) -> Result<Value, ApiError> {
        self.get_within(server, path, Duration::from_secs(15)).await
    }

    /// `GET /api/system` as `servers` and placement do (2 s connect, 5 s cap).
    pub async fn system(&self, server: &Server) -> Result<Value, ApiError> {
        self.get_within(server, "/system", Duration::from_secs(5))
            .await
    }

    /// `GET /api/system/capabilities` for GPU placement (2 s connect, 5 s cap).
    pub async fn capabilities(&self, server: &Server) -> Result<Value, ApiError> {
        self.get_within(server, "/system/capabilities", Duration::from_secs(5))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("my-space_1"), "my-space_1");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
