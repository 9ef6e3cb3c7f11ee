//! Streaming exec over WebSocket: `GET /api/spaces/{name}/exec/ws`.
//!
//! Protocol (docs/API.md): the client's first message is a JSON text frame
//! `{"command": string | [string], "tty"?: bool, "cols"?: n, "rows"?: n,
//! "env"?: {..}, "cwd"?: "/..", "user"?: ".."}`. Then binary frames are
//! stdin; text frames are control messages: `{"type":"stdin","data":".."}`,
//! `{"type":"resize","cols":n,"rows":n}`, `{"type":"eof"}` (close stdin),
//! `{"type":"ping"}` (answered `{"type":"pong"}`). The server sends binary
//! frames whose first byte is the stream (1 = stdout, 2 = stderr) followed
//! by the bytes, then a text frame `{"type":"exit","exitCode":n}` and closes.
//! Errors arrive as `{"type":"error","error":".."}`. Closing the socket kills
//! the process group.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use clawdspace_runtime::exec::set_winsize;
use clawdspace_runtime::ExecHandle;

use crate::error::{ApiError, ApiResult};
use crate::input;
use crate::model::{ExecStart, Field};
use crate::AppState;

/// Stream ids of output frames.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

/// Upgrades to a WebSocket exec session (404 first if the space is missing,
/// 400 when the request is not a WebSocket upgrade).
pub async fn exec_ws(
    State(st): State<AppState>,
    Path(name): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    st.rt.get(&name)?;
    let ws = ws.map_err(|e| ApiError::bad_request(format!("WebSocket upgrade required: {e}")))?;
    Ok(ws
        .on_upgrade(move |socket| session(st, name, socket))
        .into_response())
}

fn clamp(v: Option<u64>, default: u16, max: u16) -> u16 {
    v.map_or(default, |v| v.clamp(1, u64::from(max)) as u16)
}

async fn session(st: AppState, name: String, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let error = |e: String| Message::Text(json!({"type": "error", "error": e}).to_string().into());
    // Refuses the session: an error event, then a proper close (1008).
    let refuse = |e: String| {
        [
            error(e.clone()),
            Message::Close(Some(CloseFrame {
                code: 1008,
                // A close frame's reason has at most 123 bytes.
                reason: e[..e.floor_char_boundary(123)].into(),
            })),
        ]
    };
    // The first message describes the command.
    let first = loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) => break t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return,
        }
    };
    let body: Value = match serde_json::from_str(&first) {
        Ok(v) => v,
        Err(_) => {
            for m in refuse("first message must be JSON {\"command\": ...}".into()) {
                let _ = tx.send(m).await;
            }
            return;
        }
    };
    let start: ExecStart = match crate::body::fields(body) {
        Ok(s) => s,
        Err(e) => {
            for m in refuse(e.message) {
                let _ = tx.send(m).await;
            }
            return;
        }
    };
    let mut req = match input::exec_request(&start.exec) {
        Ok(r) => r,
        Err(e) => {
            for m in refuse(e.message) {
                let _ = tx.send(m).await;
            }
            return;
        }
    };
    if start.tty == Some(Field::Typed(true)) {
        let cols = clamp(start.cols.and_then(Field::typed), 80, 500);
        let rows = clamp(start.rows.and_then(Field::typed), 24, 200);
        req.tty = Some((cols, rows));
    }
    // A session always has a stdin pipe: the client streams into it.
    let initial_stdin = req.stdin.replace(Vec::new()).unwrap_or_default();
    let started = std::time::Instant::now();
    let (handle, activity) = match st.rt.exec_spawn(&name, &req).await {
        Ok(h) => h,
        Err(e) => {
            for m in refuse(e.to_string()) {
                let _ = tx.send(m).await;
            }
            return;
        }
    };
    // One writer task owns the socket's sending half.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if tx.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let pump = |mut r: tokio::net::unix::pipe::Receiver, id: u8, out: mpsc::Sender<Message>| async move {
        let mut buf = vec![0u8; 32 * 1024];
        buf[0] = id;
        loop {
            match r.read(&mut buf[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(buf[..=n].to_vec().into());
                    if out.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let ExecHandle {
        pid,
        mut stdin,
        stdout,
        stderr,
        mut exit,
        pty,
    } = handle;
    if let Some(w) = stdin.as_mut() {
        let _ = w.write_all(&initial_stdin).await;
    }
    let stdout = tokio::spawn(pump(stdout, STDOUT, out_tx.clone()));
    let stderr = tokio::spawn(pump(stderr, STDERR, out_tx.clone()));
    let exit = &mut exit;
    // `timeoutMs` kills the process group, as for the plain endpoint.
    let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer);
    let mut timed_out = false;
    let code = loop {
        tokio::select! {
            code = &mut *exit => break code.unwrap_or(255),
            () = &mut timer, if !timed_out => {
                timed_out = true;
                clawdspace_runtime::exec::kill_group(pid);
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(w) = stdin.as_mut() {
                        let _ = w.write_all(&b).await;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v.get("type").and_then(Value::as_str) {
                        Some("stdin") => {
                            if let (Some(w), Some(d)) = (stdin.as_mut(), v.get("data").and_then(Value::as_str)) {
                                let _ = w.write_all(d.as_bytes()).await;
                            }
                        }
                        Some("resize") => {
                            if let Some(pty) = &pty {
                                set_winsize(
                                    pty,
                                    clamp(v.get("cols").and_then(Value::as_u64), 80, 500),
                                    clamp(v.get("rows").and_then(Value::as_u64), 24, 200),
                                );
                            }
                        }
                        Some("eof") => stdin = None,
                        Some("ping") => {
                            let _ = out_tx.send(Message::Text(json!({"type": "pong"}).to_string().into())).await;
                        }
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                // The client went away: end the whole process group.
                Some(Err(_)) | None => {
                    clawdspace_runtime::exec::kill_group(pid);
                    break (&mut *exit).await.unwrap_or(137);
                }
            }
        }
    };
    drop(stdin);
    // Output written before the exit is delivered before the exit frame;
    // a TTY whose background jobs keep it open is not waited for long.
    let drain = async {
        let _ = stdout.await;
        let _ = stderr.await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    let mut exit_frame = json!({"type": "exit", "exitCode": code});
    if timed_out {
        exit_frame["timedOut"] = json!(true);
    }
    let _ = out_tx
        .send(Message::Text(exit_frame.to_string().into()))
        .await;
    let _ = out_tx.send(Message::Close(None)).await;
    drop(out_tx);
    let _ = writer.await;
    drop(activity);
    let mut meta = crate::routes::audit::exec_meta(&st.rt, &name, &req, code, started, timed_out);
    meta["stream"] = json!("ws");
    st.audit
        .record(
            Some(&name),
            clawdspace_runtime::audit::AuditType::SpaceExec,
            Some(meta),
        )
        .await;
    // Finish the close handshake: read what the client still sends until
    // its close frame, so unread data never turns into a TCP reset that
    // could swallow the exit frame.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
