//! Upstream's terminal protocol (`GET /api/spaces/{name}/terminal`) driven
//! by a WebSocket client: typing, `input`, resize, ping/pong, waking a
//! paused space, the end of the session; and authentication switched off
//! on loopback only. Needs root.

mod common;

use std::time::Duration;

use common::{Daemon, KEY};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(d: &Daemon, name: &str) -> Ws {
    let url = format!(
        "ws://127.0.0.1:{}/api/spaces/{name}/terminal?key={KEY}",
        d.port
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0
}

/// Reads output frames until `pred` holds for all output so far; text
/// frames are collected in `texts`. Returns whether the socket closed.
async fn read_until(
    ws: &mut Ws,
    out: &mut String,
    texts: &mut Vec<String>,
    pred: impl Fn(&str, &[String]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pred(out, texts) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; output so far: {out:?}"));
        match msg {
            Some(Ok(Message::Binary(b))) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
            Some(Ok(_)) => {}
        }
    }
    false
}

async fn text(ws: &mut Ws, v: &str) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send text");
}

#[tokio::test]
#[ignore = "needs root"]
async fn typing_input_resize_and_ping_then_the_shell_exits() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("term").await;
    let mut ws = connect(&d, "term").await;
    let (mut out, mut texts) = (String::new(), Vec::new());
    // Binary frames are keystrokes; a login shell in /workspace as the
    // space's user, on a terminal of 80 × 24.
    ws.send(Message::Binary(
        b"echo $((6*7)); pwd; id -un; stty size\r".to_vec().into(),
    ))
    .await
    .expect("send");
    read_until(&mut ws, &mut out, &mut texts, |o, _| {
        o.contains("42\r\n/workspace\r\nsandbox\r\n24 80")
    })
    .await;
    // `input` messages are keystrokes too; `resize` is clamped.
    text(&mut ws, r#"{"type":"resize","cols":100,"rows":40}"#).await;
    text(&mut ws, r#"{"type":"input","data":"stty size\r"}"#).await;
    read_until(&mut ws, &mut out, &mut texts, |o, _| o.contains("40 100")).await;
    // (busybox's stty shows a height of 1 as 24: the low end is checked
    // by the unit tests.)
    text(&mut ws, r#"{"type":"resize","cols":9999,"rows":1000}"#).await;
    text(&mut ws, r#"{"type":"input","data":"stty size\r"}"#).await;
    read_until(&mut ws, &mut out, &mut texts, |o, _| o.contains("200 500")).await;
    // ping → pong (text).
    text(&mut ws, r#"{"type":"ping"}"#).await;
    read_until(&mut ws, &mut out, &mut texts, |_, t| {
        t.iter().any(|t| t == r#"{"type":"pong"}"#)
    })
    .await;
    // Other text is raw input.
    text(&mut ws, "echo raw-$((1+1))\r").await;
    read_until(&mut ws, &mut out, &mut texts, |o, _| o.contains("raw-2")).await;
    // The shell exits: the socket closes.
    text(&mut ws, "exit\r").await;
    assert!(read_until(&mut ws, &mut out, &mut texts, |_, _| false).await);
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_paused_space_wakes_and_closing_ends_the_shell() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("sleepy").await;
    let (s, v) = d.post("/api/spaces/sleepy/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        d.get("/api/spaces/sleepy").await.1["space"]["status"],
        "paused"
    );
    // Auth by header works as well as by `?key=`.
    let mut req = format!("ws://127.0.0.1:{}/api/spaces/sleepy/terminal", d.port)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("header"),
    );
    let mut ws = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket")
        .0;
    assert_eq!(
        d.get("/api/spaces/sleepy").await.1["space"]["status"],
        "running"
    );
    let (mut out, mut texts) = (String::new(), Vec::new());
    text(&mut ws, "echo awake-$((2*3)); sleep 777\r").await;
    read_until(&mut ws, &mut out, &mut texts, |o, _| o.contains("awake-6")).await;
    // Closing the socket ends the shell and what it runs.
    ws.close(None).await.expect("close");
    drop(ws);
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ps = d
            .exec("sleepy", json!("ps -o args | grep -c '^sleep 777'"))
            .await;
        if ps["stdout"] == "0" {
            gone = true;
            break;
        }
    }
    assert!(gone, "the terminal's processes were killed");
    // No key: refused before the upgrade; a missing space: 404.
    let url = format!("ws://127.0.0.1:{}/api/spaces/sleepy/terminal", d.port);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    let url = format!(
        "ws://127.0.0.1:{}/api/spaces/ghost/terminal?key={KEY}",
        d.port
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    let r = d
        .http
        .get(d.url("/api/spaces/ghost/terminal"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs root"]
async fn auth_can_be_disabled_on_loopback_only_and_health_has_the_version() {
    let Some(mut d) = Daemon::start(&[("CLAWDSPACE_AUTH_DISABLED", "true")]).await else {
        return;
    };
    let health: Value = d
        .http
        .get(d.url("/api/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health, json!({"status": "ok", "version": "1.6.0"}));
    // Listening on every address: refused, the key stays required.
    let r = d.http.get(d.url("/api/spaces")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // On loopback only: no key needed...
    d.terminate();
    d.set_env("CLAWDSPACE_LISTEN", &format!("127.0.0.1:{}", d.port));
    d.spawn().await;
    let r = d.http.get(d.url("/api/spaces")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    d.create("open").await;
    let url = format!("ws://127.0.0.1:{}/api/spaces/open/terminal", d.port);
    let mut ws = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket without a key")
        .0;
    let (mut out, mut texts) = (String::new(), Vec::new());
    text(&mut ws, "echo keyless-$((3*3))\r").await;
    read_until(&mut ws, &mut out, &mut texts, |o, _| {
        o.contains("keyless-9")
    })
    .await;
    drop(ws);
    // ...but not for other sites' pages or other host names.
    let r = d
        .http
        .get(d.url("/api/spaces"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = d
        .http
        .get(d.url("/api/spaces"))
        .header("host", "rebound.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut req = format!("ws://127.0.0.1:{}/api/spaces/open/terminal", d.port)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().expect("header"));
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}
