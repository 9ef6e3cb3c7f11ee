//! Streaming exec and interactive shells over the daemon's WebSocket
//! (`GET /api/spaces/<name>/exec/ws`): the first text frame is the JSON
//! request; binary frames we send are stdin; binary frames we get are
//! `[1|2] + bytes` (stdout/stderr); text frames are control messages
//! (`resize`, `eof` from us; `exit`, `error` from the server).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use futures_util::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::api::{encode_segment, Api};
use crate::discovery::Server;
use crate::Fail;

/// How a WebSocket session ended.
#[derive(Debug)]
pub enum Outcome {
    /// The remote command exited with this code.
    Exited(i32),
    /// The server has no WebSocket exec (or it is not reachable over `ws://`):
    /// nothing was run; use the plain endpoint.
    Unsupported,
}

/// What to do with our stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// Close the remote stdin at once (like the plain exec endpoint).
    Closed,
    /// Forward our stdin, then close the remote one at end of file.
    Forward,
    /// Forward our stdin (a terminal in raw mode) and window size changes.
    Terminal,
}

/// The command a `shell` runs: a login bash when the image has one.
pub const SHELL_COMMAND: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

/// Reads our stdin on a thread (so nothing blocks the runtime and nothing
/// waits for it at exit); `None` marks end of file.
fn spawn_stdin_reader() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(None);
                    break;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    let _ = tx.blocking_send(None);
                    break;
                }
            }
        }
    });
    rx
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) {
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Runs one command over the WebSocket; `first` is the request frame.
pub async fn run(
    api: &Api,
    server: &Server,
    name: &str,
    first: Value,
    stdin: Stdin,
) -> Result<Outcome, Fail> {
    let ws_base = if let Some(rest) = server.url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Ok(Outcome::Unsupported);
    };
    let url = format!("{ws_base}/api/spaces/{}/exec/ws", encode_segment(name));
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Fail::error(format!("Invalid server URL {}: {e}", server.url)))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", api.key()))
        .map_err(|_| Fail::error("The API key contains characters not allowed in a header"))?;
    req.headers_mut().insert(header::AUTHORIZATION, bearer);
    let connect = tokio_tungstenite::connect_async(req);
    let ws = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Err(_) => {
            return Err(crate::api::ApiError::Unreachable("timed out".into()).fail(api, server))
        }
        Ok(Ok((ws, _))) => ws,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body: Option<Value> = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok());
            let msg = body
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(String::from);
            return match status {
                401 => Err(api.unauthorized(server)),
                // No such route (an older server) or no such space: the
                // plain endpoint runs it or says what is wrong.
                404 | 405 => Ok(Outcome::Unsupported),
                _ => Err(Fail::error(msg.unwrap_or_else(|| {
                    format!("WebSocket upgrade refused (HTTP {status})")
                }))),
            };
        }
        Ok(Err(e)) => {
            return Err(crate::api::ApiError::Unreachable(e.to_string()).fail(api, server))
        }
    };
    let (mut sink, mut stream) = ws.split();
    let lost = |e: &dyn std::fmt::Display| {
        Fail::error(format!(
            "Lost the connection to server '{}' at {}: {e}",
            server.name, server.url
        ))
    };
    sink.send(text(first)).await.map_err(|e| lost(&e))?;
    let mut input = match stdin {
        Stdin::Closed => {
            sink.send(text(json!({"type": "eof"})))
                .await
                .map_err(|e| lost(&e))?;
            None
        }
        Stdin::Forward | Stdin::Terminal => Some(spawn_stdin_reader()),
    };
    let mut winch = if stdin == Stdin::Terminal {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => match b.first() {
                    Some(1) => write_out(&mut stdout, &b[1..]),
                    Some(2) => write_out(&mut stderr, &b[1..]),
                    _ => {}
                },
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v.get("type").and_then(Value::as_str) {
                        Some("exit") => {
                            let code = v.get("exitCode").and_then(Value::as_i64).unwrap_or(1);
                            let _ = sink.close().await;
                            return Ok(Outcome::Exited(i32::try_from(code).unwrap_or(1)));
                        }
                        Some("error") => {
                            let e = v.get("error").and_then(Value::as_str).unwrap_or("Unknown error");
                            return Err(Fail::error(e.to_string()));
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Fail::error(format!(
                        "Server '{}' closed the connection before the command finished",
                        server.name
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(lost(&e)),
            },
            data = async {
                match input.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match data.flatten() {
                Some(bytes) => {
                    sink.send(Message::Binary(bytes.into())).await.map_err(|e| lost(&e))?;
                }
                None => {
                    input = None;
                    if stdin != Stdin::Terminal {
                        sink.send(text(json!({"type": "eof"}))).await.map_err(|e| lost(&e))?;
                    }
                }
            },
            _ = async {
                match winch.as_mut() {
                    Some(w) => { w.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Some((cols, rows)) = window_size() {
                    let msg = json!({"type": "resize", "cols": cols, "rows": rows});
                    sink.send(text(msg)).await.map_err(|e| lost(&e))?;
                }
            }
        }
    }
}

/// The terminal's size (columns, rows), from stdout or stdin.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ only writes a `winsize` into `ws`, which is
        // valid for the duration of the call; `fd` is one of our std streams.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// Puts the terminal on stdin in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode, or `None` when stdin is not a terminal.
    pub fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
