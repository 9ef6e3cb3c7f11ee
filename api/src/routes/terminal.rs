//! Upstream's terminal: `GET /api/spaces/{name}/terminal` (WebSocket).
//!
//! Runs a login shell (`bash -l`, or `sh -l` where there is no bash) on a
//! PTY in `/workspace` as the space's user; a paused space is resumed.
//! Client → server: binary frames are keystrokes; text frames are JSON
//! `{"type":"input","data":".."}`, `{"type":"resize","cols":n,"rows":n}`
//! (clamped to 1–500 × 1–200), `{"type":"ping"}` (answered with text
//! `{"type":"pong"}`); any other text is keystrokes too. Server → client:
//! the terminal's output as binary frames. The socket closes when the
//! shell exits; closing it ends the shell's whole process group.
//! (`…/exec/ws` is the richer protocol: any command, exit codes.)

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use clawdspace_runtime::audit::AuditType;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use clawdspace_runtime::exec::{kill_group, set_winsize};
use clawdspace_runtime::{Command, ExecHandle, ExecRequest, WORKSPACE};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Size of the terminal until the client sends one.
const INITIAL: (u16, u16) = (80, 24);
/// The shell: bash when the image has it.
const SHELL: &str = "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l";

/// Upgrades to a terminal session (404 first if the space is missing,
/// 400 when the request is not a WebSocket upgrade); a paused space is
/// resumed before the upgrade is answered.
pub async fn terminal(
    State(st): State<AppState>,
    Path(name): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let space = st.rt.get(&name)?;
    let ws = ws.map_err(|e| ApiError::bad_request(format!("WebSocket upgrade required: {e}")))?;
    if space.status == clawdspace_runtime::SpaceStatus::Paused {
        st.rt.resume(&name).await?;
    }
    Ok(ws
        .on_upgrade(move |socket| session(st, name, socket))
        .into_response())
}

/// A resize message's size, clamped as upstream does (`Math.floor`, then
/// 1–500 columns and 1–200 rows); `None` when a number is missing.
pub fn resize_of(v: &Value) -> Option<(u16, u16)> {
    let n = |k: &str, max: f64| {
        v.get(k)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite())
            .map(|x| x.floor().clamp(1.0, max) as u16)
    };
    Some((n("cols", 500.0)?, n("rows", 200.0)?))
}

/// What a client's text frame asks for.
#[derive(Debug, PartialEq)]
pub enum TextMessage {
    /// Bytes for the terminal.
    Input(Vec<u8>),
    /// New size (columns, rows).
    Resize(u16, u16),
    /// Answer with `{"type":"pong"}`.
    Ping,
    /// Nothing to do (a resize without numbers).
    Ignore,
}

/// Reads a text frame: a JSON message, or raw input.
pub fn text_message(text: &str) -> TextMessage {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match v.get("type").and_then(Value::as_str) {
        Some("input") => match v.get("data").and_then(Value::as_str) {
            Some(d) => TextMessage::Input(d.as_bytes().to_vec()),
            None => TextMessage::Ignore,
        },
        Some("resize") => match resize_of(&v) {
            Some((c, r)) => TextMessage::Resize(c, r),
            None => TextMessage::Ignore,
        },
        Some("ping") => TextMessage::Ping,
        _ => TextMessage::Input(text.as_bytes().to_vec()),
    }
}

/// Closes the socket with `code` and a reason (at most 123 bytes).
async fn close(tx: &mut futures_util::stream::SplitSink<WebSocket, Message>, code: u16, why: &str) {
    let reason = &why[..why.floor_char_boundary(123)];
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn session(st: AppState, name: String, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let mut req = ExecRequest::new(Command::Argv(vec!["sh".into(), "-c".into(), SHELL.into()]));
    req.tty = Some(INITIAL);
    req.stdin = Some(Vec::new());
    req.env.push("TERM=xterm-256color".into());
    // Spaces from before volumes have no /workspace: their own directory.
    if st.rt.get(&name).is_ok_and(|s| s.volume.is_some()) {
        req.cwd = Some(WORKSPACE.into());
    }
    let (handle, activity) = match st.rt.exec_spawn(&name, &req).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(space = %name, "terminal: {e}");
            close(&mut tx, 1011, &e.to_string()).await;
            return;
        }
    };
    tracing::info!(space = %name, "terminal opened");
    st.audit
        .record(Some(&name), AuditType::TerminalOpen, None)
        .await;
    let ExecHandle {
        pid,
        mut stdin,
        mut stdout,
        mut exit,
        pty,
        ..
    } = handle;
    let mut buf = vec![0u8; 32 * 1024];
    let mut output_open = true;
    let exited = loop {
        tokio::select! {
            r = stdout.read(&mut buf), if output_open => match r {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    if tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break false;
                    }
                }
            },
            _ = &mut exit => {
                // What the shell wrote last; background jobs that keep the
                // terminal open are not waited for.
                let drain = async {
                    while output_open {
                        match stdout.read(&mut buf).await {
                            Ok(0) | Err(_) => output_open = false,
                            Ok(n) => {
                                if tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                                    output_open = false;
                                }
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
                break true;
            }
            msg = rx.next() => {
                let input = match msg {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => match text_message(&t) {
                        TextMessage::Input(b) => b,
                        TextMessage::Resize(cols, rows) => {
                            if let Some(p) = &pty {
                                set_winsize(p, cols, rows);
                            }
                            continue;
                        }
                        TextMessage::Ping => {
                            let pong = Message::Text(r#"{"type":"pong"}"#.into());
                            if tx.send(pong).await.is_err() {
                                break false;
                            }
                            continue;
                        }
                        TextMessage::Ignore => continue,
                    },
                    Some(Ok(_)) => continue,
                    // Closed or broken: the session ends.
                    Some(Err(_)) | None => break false,
                };
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&input).await.is_err() {
                        stdin = None;
                    }
                }
            }
        }
    };
    if exited {
        close(&mut tx, 1000, "shell exited").await;
    } else {
        kill_group(pid);
        let _ = exit.await;
        let _ = tx.close().await;
    }
    drop(activity);
    tracing::info!(space = %name, "terminal closed");
    st.audit
        .record(Some(&name), AuditType::TerminalClose, None)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_follow_upstreams_protocol() {
        assert_eq!(
            text_message(r#"{"type":"input","data":"ls\r"}"#),
            TextMessage::Input(b"ls\r".to_vec())
        );
        assert_eq!(
            text_message(r#"{"type":"resize","cols":1000,"rows":0}"#),
            TextMessage::Resize(500, 1)
        );
        assert_eq!(
            text_message(r#"{"type":"resize","cols":99.7,"rows":30}"#),
            TextMessage::Resize(99, 30)
        );
        assert_eq!(
            text_message(r#"{"type":"resize","cols":"x"}"#),
            TextMessage::Ignore
        );
        assert_eq!(text_message(r#"{"type":"ping"}"#), TextMessage::Ping);
        assert_eq!(
            text_message("echo hi\r"),
            TextMessage::Input(b"echo hi\r".to_vec())
        );
        assert_eq!(
            text_message(r#"{"type":"other"}"#),
            TextMessage::Input(br#"{"type":"other"}"#.to_vec())
        );
    }
}
