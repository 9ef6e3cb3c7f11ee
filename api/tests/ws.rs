//! Streaming exec over WebSocket, with and without a PTY. Needs root.

mod common;

use std::time::Duration;

use common::{Daemon, KEY};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(d: &Daemon, name: &str) -> Ws {
    let url = format!(
        "ws://127.0.0.1:{}/api/spaces/{name}/exec/ws?key={KEY}",
        d.port
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0
}

/// Sends one JSON text frame (a command, `eof`, `resize`, `stdin`).
async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send a text frame");
}

/// Sends bytes to the command's stdin (a binary frame).
async fn send_bytes(ws: &mut Ws, b: &[u8]) {
    ws.send(Message::Binary(b.to_vec().into()))
        .await
        .expect("send a binary frame");
}

/// Reads frames until `pred` holds for the collected stdout text; returns
/// (stdout, stderr, exit code if seen).
async fn read_until(
    ws: &mut Ws,
    out: &mut String,
    err: &mut String,
    pred: impl Fn(&str) -> bool,
) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pred(out) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("frame in time");
        match msg {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                let text = String::from_utf8_lossy(&b[1..]).to_string();
                if b[0] == 1 {
                    out.push_str(&text)
                } else {
                    err.push_str(&text)
                }
            }
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                if v["type"] == "exit" {
                    return v["exitCode"].as_i64();
                }
                assert_ne!(v["type"], "error", "{v}");
            }
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
    None
}

#[tokio::test]
#[ignore = "needs root"]
async fn streams_stdout_and_stderr_separately_then_the_exit_code() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("w").await;
    let mut ws = connect(&d, "w").await;
    send_json(
        &mut ws,
        json!({"command": "echo out; echo err >&2; cat; exit 7"}),
    )
    .await;
    send_bytes(&mut ws, b"from stdin\n").await;
    send_json(&mut ws, json!({"type": "eof"})).await;
    let (mut out, mut err) = (String::new(), String::new());
    let code = read_until(&mut ws, &mut out, &mut err, |_| false).await;
    assert_eq!(code, Some(7));
    assert_eq!(out, "out\nfrom stdin\n");
    assert_eq!(err, "err\n");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_tty_session_echoes_typing_and_resizes() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("t").await;
    let mut ws = connect(&d, "t").await;
    send_json(
        &mut ws,
        json!({"command": ["sh"], "tty": true, "cols": 80, "rows": 24}),
    )
    .await;
    let (mut out, mut err) = (String::new(), String::new());
    send_bytes(&mut ws, b"stty size\n").await;
    read_until(&mut ws, &mut out, &mut err, |o| o.contains("24 80")).await;
    send_json(&mut ws, json!({"type": "resize", "cols": 100, "rows": 40})).await;
    send_bytes(&mut ws, b"stty size; echo hi\n").await;
    read_until(&mut ws, &mut out, &mut err, |o| {
        o.contains("40 100") && o.contains("\nhi")
    })
    .await;
    send_json(&mut ws, json!({"type": "stdin", "data": "exit 3\n"})).await;
    let code = read_until(&mut ws, &mut out, &mut err, |_| false).await;
    assert_eq!(code, Some(3));
}

#[tokio::test]
#[ignore = "needs root"]
async fn closing_the_socket_kills_the_process_and_auth_is_required() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("c").await;
    let mut ws = connect(&d, "c").await;
    send_json(&mut ws, json!({"command": "sleep 300 & sleep 301"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ws);
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ps = d.exec("c", json!("ps -o comm | grep -c sleep")).await;
        if ps["stdout"] == "0" {
            gone = true;
            break;
        }
    }
    assert!(gone, "the process group was killed");
    // No key: refused before the upgrade; missing space: 404.
    let url = format!("ws://127.0.0.1:{}/api/spaces/c/exec/ws", d.port);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    let url = format!(
        "ws://127.0.0.1:{}/api/spaces/ghost/exec/ws?key={KEY}",
        d.port
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_session_timeout_kills_the_command_and_bad_requests_are_refused_cleanly() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("to").await;
    let mut ws = connect(&d, "to").await;
    send_json(
        &mut ws,
        json!({"command": "sleep 30; echo never", "timeoutMs": 300}),
    )
    .await;
    let (mut out, mut err) = (String::new(), String::new());
    let t = std::time::Instant::now();
    assert_eq!(
        read_until(&mut ws, &mut out, &mut err, |_| false).await,
        Some(137)
    );
    assert!(t.elapsed() < Duration::from_secs(5) && out.is_empty());
    // An empty command gets an error event and a close frame (not a reset).
    let mut ws = connect(&d, "to").await;
    send_json(&mut ws, json!({"command": ""})).await;
    let mut saw_error = false;
    let mut saw_close = false;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) => saw_error |= t.contains("Command required"),
            Message::Close(Some(f)) => saw_close = u16::from(f.code) == 1008,
            _ => {}
        }
    }
    assert!(saw_error && saw_close);
    // Many quick sessions: the exit frame always arrives.
    for _ in 0..15 {
        let mut ws = connect(&d, "to").await;
        send_json(&mut ws, json!({"command": "echo hello; exit 3"})).await;
        send_json(&mut ws, json!({"type": "eof"})).await;
        let (mut out, mut err) = (String::new(), String::new());
        assert_eq!(
            read_until(&mut ws, &mut out, &mut err, |_| false).await,
            Some(3)
        );
        assert_eq!(out, "hello\n");
    }
}
