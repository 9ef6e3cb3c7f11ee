//! `exec` and `run_code`: `POST /api/spaces/{name}/exec`, or, when the
//! client asked for progress, the WebSocket exec (`GET …/exec/ws`) whose
//! output is sent as progress notifications while the command runs.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use rmcp::RoleServer;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::rest::{error_text, CallError, Endpoint, Rest, Target};

/// What of each output stream goes back to the client, bytes.
pub const OUTPUT_CAP: usize = 512 * 1024;

/// How often progress is reported at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Where progress notifications go.
pub struct Progress {
    /// The client.
    pub peer: Peer<RoleServer>,
    /// The token of its request.
    pub token: ProgressToken,
}

/// One command to run.
pub struct Request {
    /// `"sh -c" string` or argv array, as the API takes it.
    pub command: Value,
    /// Working directory, environment, user, stdin, as the API takes them.
    pub cwd: Option<String>,
    pub env: Option<Value>,
    pub user: Option<String>,
    pub stdin: Option<String>,
    /// Kill it after this long.
    pub timeout: Option<Duration>,
}

/// Text cut to at most `cap` bytes (on a character boundary) and whether
/// it was cut.
fn capped(mut s: String, cap: usize) -> (String, bool) {
    if s.len() <= cap {
        return (s, false);
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

/// The tool's result.
fn result(stdout: String, stderr: String, exit: i64, cut: (bool, bool), timed_out: bool) -> Value {
    let (stdout, so) = capped(stdout, OUTPUT_CAP);
    let (stderr, se) = capped(stderr, OUTPUT_CAP);
    json!({
        "exitCode": exit,
        "stdout": stdout,
        "stderr": stderr,
        "stdoutTruncated": so || cut.0,
        "stderrTruncated": se || cut.1,
        "timedOut": timed_out,
    })
}

/// Runs `req` in space `name`; a command that fails is still `Ok` (its
/// exit code says so).
pub async fn run(
    rest: &Rest,
    t: &Target,
    name: &str,
    req: Request,
    progress: Option<Progress>,
    ct: &CancellationToken,
) -> Result<Value, CallError> {
    let work = async {
        match progress {
            Some(p) if Rest::ws_url(t, Endpoint::ExecWs, name).starts_with("ws://") => {
                streamed(rest, t, name, req, p).await
            }
            _ => plain(rest, t, name, req).await,
        }
    };
    tokio::select! {
        r = work => r,
        // Dropping the request hangs up, which kills the command.
        () = ct.cancelled() => Err(CallError("cancelled by the client; the command was killed".into())),
    }
}

async fn plain(rest: &Rest, t: &Target, name: &str, req: Request) -> Result<Value, CallError> {
    let mut body = json!({ "command": req.command });
    if let Some(c) = req.cwd {
        body["cwd"] = json!(c);
    }
    if let Some(e) = req.env {
        body["env"] = e;
    }
    if let Some(u) = req.user {
        body["user"] = json!(u);
    }
    if let Some(s) = req.stdin {
        body["stdin"] = json!(s);
    }
    if let Some(d) = req.timeout {
        body["timeoutMs"] = json!(d.as_millis() as u64);
    }
    let v = rest.json(t, Endpoint::Exec, name, &[], Some(&body)).await?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let exit = v.get("exitCode").and_then(Value::as_i64).unwrap_or(-1);
    // The API caps each stream at 16 MiB: such a stream is also over ours.
    Ok(result(
        s("stdout"),
        s("stderr"),
        exit,
        (false, false),
        flag("timedOut"),
    ))
}

/// Output of one stream, capped, with its byte count.
#[derive(Default)]
struct Collected {
    bytes: Vec<u8>,
    total: u64,
}

impl Collected {
    fn push(&mut self, b: &[u8]) {
        self.total += b.len() as u64;
        let room = (OUTPUT_CAP + 4).saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&b[..b.len().min(room)]);
    }

    /// The text (trimmed, as the plain exec answers) and whether bytes were
    /// dropped.
    fn text(&self) -> (String, bool) {
        let s = String::from_utf8_lossy(&self.bytes).trim().to_string();
        (s, self.total > self.bytes.len() as u64)
    }
}

/// The last line of output, for a progress message.
fn last_line(b: &[u8]) -> String {
    let tail = &b[b.len().saturating_sub(400)..];
    let text = String::from_utf8_lossy(tail);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    capped(line.trim().to_string(), 200).0
}

async fn streamed(
    rest: &Rest,
    t: &Target,
    name: &str,
    req: Request,
    p: Progress,
) -> Result<Value, CallError> {
    let url = Rest::ws_url(t, Endpoint::ExecWs, name);
    let mut wsreq = url
        .as_str()
        .into_client_request()
        .map_err(|e| CallError(format!("invalid server URL {url}: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", rest.key()))
        .map_err(|_| CallError("the API key has characters a header cannot hold".into()))?;
    wsreq.headers_mut().insert(header::AUTHORIZATION, bearer);
    let connect = tokio_tungstenite::connect_async(wsreq);
    let ws = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Err(_) => {
            return Err(CallError(format!(
                "could not reach server '{}': timed out",
                t.server
            )))
        }
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            let body = resp.body().clone().unwrap_or_default();
            return Err(CallError(error_text(
                reqwest::StatusCode::from_u16(status.as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                &body,
            )));
        }
        Ok(Err(e)) => {
            return Err(CallError(format!(
                "could not reach server '{}': {e}",
                t.server
            )))
        }
    };
    let (mut sink, mut stream) = ws.split();
    let lost = |e: &dyn std::fmt::Display| {
        CallError(format!(
            "lost the connection to server '{}' during the command: {e}",
            t.server
        ))
    };
    let mut first = json!({ "command": req.command });
    for (k, v) in [("cwd", req.cwd.map(Value::from)), ("env", req.env)] {
        if let Some(v) = v {
            first[k] = v;
        }
    }
    if let Some(u) = req.user {
        first["user"] = json!(u);
    }
    if let Some(s) = req.stdin {
        first["stdin"] = json!(s);
    }
    sink.send(Message::text(first.to_string()))
        .await
        .map_err(|e| lost(&e))?;
    sink.send(Message::text(json!({"type": "eof"}).to_string()))
        .await
        .map_err(|e| lost(&e))?;
    let deadline = req.timeout.map(|d| tokio::time::Instant::now() + d);
    let (mut out, mut err) = (Collected::default(), Collected::default());
    let mut last_report: Option<Instant> = None;
    let mut recent: Vec<u8> = Vec::new();
    let exit = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            m = stream.next() => m,
            () = sleep => {
                // Closing the socket kills the command's process group.
                let _ = sink.close().await;
                let (so, co) = out.text();
                let (se, ce) = err.text();
                return Ok(result(so, se, 137, (co, ce), true));
            }
        };
        match msg {
            Some(Ok(Message::Binary(b))) => {
                let data = b.get(1..).unwrap_or_default();
                match b.first() {
                    Some(1) => out.push(data),
                    Some(2) => err.push(data),
                    _ => continue,
                }
                recent.extend_from_slice(data);
                if recent.len() > 4096 {
                    recent.drain(..recent.len() - 4096);
                }
                if last_report.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                    last_report = Some(Instant::now());
                    let done = (out.total + err.total) as f64;
                    let note = ProgressNotificationParam::new(p.token.clone(), done)
                        .with_message(last_line(&recent));
                    let _ = p.peer.notify_progress(note).await;
                }
            }
            Some(Ok(Message::Text(txt))) => {
                let v: Value = serde_json::from_str(txt.as_str()).unwrap_or(Value::Null);
                match v.get("type").and_then(Value::as_str) {
                    Some("exit") => break v.get("exitCode").and_then(Value::as_i64).unwrap_or(-1),
                    Some("error") => {
                        let e = v
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("Unknown error");
                        return Err(CallError(e.to_string()));
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(CallError(format!(
                    "server '{}' closed the connection before the command finished",
                    t.server
                )))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(lost(&e)),
        }
    };
    let _ = sink.close().await;
    let (so, co) = out.text();
    let (se, ce) = err.text();
    Ok(result(so, se, exit, (co, ce), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_on_a_character_boundary() {
        let (s, cut) = capped("aé".repeat(10), 4);
        assert_eq!((s.as_str(), cut), ("aéa", true));
        assert_eq!(capped("abc".into(), 3), ("abc".into(), false));
    }

    #[test]
    fn collected_output_counts_what_it_drops() {
        let mut c = Collected::default();
        c.push(&vec![b'x'; OUTPUT_CAP + 100]);
        let (text, dropped) = c.text();
        assert!(dropped);
        assert!(text.len() > OUTPUT_CAP);
        let v = result(text, String::new(), 0, (dropped, false), false);
        assert_eq!(v["stdoutTruncated"], true);
        assert_eq!(v["stdout"].as_str().map(str::len), Some(OUTPUT_CAP));
        assert_eq!(last_line(b"one\ntwo\n\n"), "two");
    }
}
