//! Slow and idle clients cannot hold the server: connections that never
//! finish their request head are closed at the header timeout, idle
//! keep-alive connections at the keep-alive timeout, the connection cap
//! holds, and none of it cuts a long exec or a WebSocket session. Needs
//! root.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, KEY};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const HEADER_MS: u64 = 1500;
const KEEPALIVE_MS: u64 = 1000;

/// Waits until the server closes `s` (EOF or reset), at most `limit`;
/// returns when, or None if it stayed open.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            // A response (keep-alive case): keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn connect(d: &Daemon) -> TcpStream {
    TcpStream::connect(("127.0.0.1", d.port))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn slow_and_idle_connections_are_closed_but_long_work_is_not() {
    let header = HEADER_MS.to_string();
    let keepalive = KEEPALIVE_MS.to_string();
    let Some(d) = Daemon::start(&[
        ("CLAWDSPACE_HEADER_TIMEOUT_MS", &header),
        ("CLAWDSPACE_KEEPALIVE_TIMEOUT_MS", &keepalive),
    ])
    .await
    else {
        return;
    };
    d.create("slow").await;
    let timeout = Duration::from_millis(HEADER_MS);

    // 300 half-open connections: silent, or a request head never finished.
    let opened = Instant::now();
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = connect(&d).await;
        if i % 3 != 0 {
            s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write a partial head");
        }
        idle.push(s);
    }
    // One that dribbles a header byte now and then.
    let mut dribbler = connect(&d).await;
    dribbler
        .write_all(b"GET /api/health HTTP/1.1\r\n")
        .await
        .expect("write");
    let dribble = tokio::spawn(async move {
        let started = Instant::now();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if dribbler.write_all(b"X").await.is_err() {
                return Some(started.elapsed());
            }
        }
        None
    });

    // Normal requests keep answering meanwhile.
    for _ in 0..10 {
        let t = Instant::now();
        let (s, _) = d.get("/api/spaces").await;
        assert_eq!(s, StatusCode::OK);
        assert!(t.elapsed() < timeout, "answered in {:?}", t.elapsed());
    }
    assert_eq!(d.exec("slow", json!("echo hi")).await["stdout"], "hi");

    // Every half-open connection is closed at the header timeout (with
    // some slack for a loaded 2-core machine), none long before it.
    let mut latest = Duration::ZERO;
    for (i, s) in idle.iter_mut().enumerate() {
        let at = closed_within(s, timeout + Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("connection {i} still open"));
        latest = latest.max(at - opened);
    }
    assert!(
        latest < timeout + Duration::from_millis(1500),
        "last half-open connection closed after {latest:?}"
    );
    let cut = dribble.await.expect("dribbler");
    assert!(
        cut.is_some_and(|c| c < timeout + Duration::from_secs(2)),
        "a dribbling client was cut after {cut:?}"
    );

    // A kept-alive connection: answered, then closed when idle.
    let mut s = connect(&d).await;
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answered = Instant::now();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let at = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("idle keep-alive connection closed");
    let idle_for = at - answered;
    assert!(
        idle_for >= Duration::from_millis(KEEPALIVE_MS - 200)
            && idle_for < Duration::from_millis(KEEPALIVE_MS + 1500),
        "idle connection closed after {idle_for:?}"
    );

    // An exec longer than both timeouts completes.
    let t = Instant::now();
    let v = d.exec("slow", json!("sleep 3; echo done")).await;
    assert_eq!(
        (v["stdout"].clone(), v["exitCode"].clone()),
        (json!("done"), json!(0))
    );
    assert!(t.elapsed() >= Duration::from_secs(3));

    // So does a quiet WebSocket session.
    let url = format!(
        "ws://127.0.0.1:{}/api/spaces/slow/exec/ws?key={KEY}",
        d.port
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    ws.send(Message::Text(
        json!({"command": "sleep 3; echo done"}).to_string().into(),
    ))
    .await
    .expect("send");
    let (mut out, mut code) = (String::new(), None);
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("frame in time")
    {
        match m.expect("frame") {
            Message::Binary(b) if b.first() == Some(&1) => {
                out.push_str(&String::from_utf8_lossy(&b[1..]))
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "exit" {
                    code = v["exitCode"].as_i64();
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!((out.as_str(), code), ("done\n", Some(0)));
}

#[tokio::test]
#[ignore = "needs root"]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let header = HEADER_MS.to_string();
    let Some(d) = Daemon::start(&[
        ("CLAWDSPACE_HEADER_TIMEOUT_MS", &header),
        ("CLAWDSPACE_MAX_CONNECTIONS", "4"),
    ])
    .await
    else {
        return;
    };
    // The health check of `start` has closed its connection: wait until
    // the server has seen it go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(&d).await);
    }
    // A fifth client waits in the backlog (not refused) until the silent
    // ones are cut at the header timeout, then is served.
    let client = reqwest::Client::new();
    let r = client
        .get(d.url("/api/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("served once a slot is free");
    assert_eq!(r.status(), StatusCode::OK);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(HEADER_MS - 200),
        "served after {waited:?}: the cap did not hold"
    );
}
