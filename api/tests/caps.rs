//! An exec gets the same capabilities whichever way it starts: `POST
//! …/exec`, a piped WebSocket session or a WebSocket terminal. The space
//! decides them, not the path. Needs root.

mod common;

use std::time::Duration;

use common::{Daemon, KEY};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Every capability line of the process's status.
const CAPS: &str = "grep ^Cap /proc/self/status";

/// Runs `command` as `user` through `POST /exec`; its stdout.
async fn over_post(d: &Daemon, space: &str, user: &str, command: &str) -> String {
    let (s, v) = d
        .post(
            &format!("/api/spaces/{space}/exec"),
            json!({ "command": command, "user": user }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["exitCode"], 0, "{v}");
    v["stdout"].as_str().expect("stdout").to_string()
}

/// Runs `command` as `user` in a WebSocket session (on a terminal with
/// `tty`); its stdout, with a terminal's `\r\n` made `\n`.
async fn over_ws(d: &Daemon, space: &str, user: &str, command: &str, tty: bool) -> String {
    let url = format!(
        "ws://127.0.0.1:{}/api/spaces/{space}/exec/ws?key={KEY}",
        d.port
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let first = json!({ "command": command, "user": user, "tty": tty });
    ws.send(Message::Text(first.to_string().into()))
        .await
        .expect("send the command");
    ws.send(Message::Text(json!({"type": "eof"}).to_string().into()))
        .await
        .expect("send eof");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the session ends in time");
        match frame {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => out.extend_from_slice(&b[1..]),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                assert_ne!(v["type"], "error", "{v}");
                if v["type"] == "exit" {
                    assert_eq!(v["exitCode"], 0, "{v}");
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("session ended without an exit frame: {other:?}"),
        }
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

/// The capability lines of an exec as `user` in `space` by each path,
/// asserted equal; returned once.
async fn same_on_every_path(d: &Daemon, space: &str, user: &str) -> String {
    // POST's stdout is trimmed (API.md); the sessions' is not.
    let post = over_post(d, space, user, CAPS).await;
    let piped = over_ws(d, space, user, CAPS, false)
        .await
        .trim_end()
        .to_string();
    let tty = over_ws(d, space, user, CAPS, true)
        .await
        .trim_end()
        .to_string();
    assert!(post.contains("CapEff:"), "{post}");
    assert_eq!(piped, post, "{space} as {user}: WebSocket vs POST");
    assert_eq!(tty, post, "{space} as {user}: terminal vs POST");
    post
}

fn line<'a>(caps: &'a str, name: &str) -> &'a str {
    caps.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {caps}"))
}

#[tokio::test]
#[ignore = "needs root"]
async fn root_gets_the_spaces_capabilities_on_every_exec_path() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    // A space whose user is root (as a GPU space's is; this host has no GPU):
    // the test image with its `sandbox` user made uid 0.
    let rootfs = d.dir.join("root-rootfs");
    clawdspace_runtime::image::busybox_rootfs(&rootfs).expect("busybox rootfs");
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsandbox:x:0:0:root:/home/sandbox:/bin/sh\n",
    )
    .expect("passwd");
    clawdspace_runtime::image::ImageStore::open(&d.state())
        .and_then(|s| s.import_rootfs("rootuser-test:latest", &rootfs, Default::default()))
        .expect("import image");
    d.create("plain").await;
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "rooty", "image": "rootuser-test:latest", "memory": "256m"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // root in a sandbox space: nothing, however the exec starts.
    let caps = same_on_every_path(&d, "plain", "root").await;
    for name in ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(line(&caps, name), format!("{name}\t0000000000000000"));
    }
    // root in a root space: what its init has, on every path.
    let caps = same_on_every_path(&d, "rooty", "root").await;
    let init = over_post(&d, "rooty", "root", "grep ^Cap /proc/1/status").await;
    assert_ne!(line(&caps, "CapEff:"), "CapEff:\t0000000000000000");
    for name in ["CapPrm:", "CapEff:", "CapBnd:"] {
        assert_eq!(line(&caps, name), line(&init, name), "as its init");
    }
    // Another user there holds none, bounded by the same set.
    let caps = same_on_every_path(&d, "rooty", "1000").await;
    assert_eq!(line(&caps, "CapEff:"), "CapEff:\t0000000000000000");
    assert_eq!(line(&caps, "CapBnd:"), line(&init, "CapBnd:"));
}
