//! A fleet of three real daemons on 127.0.0.1, .2 and .3 with one port
//! (`CLAWDSPACE_LISTEN`): `/api/nodes` fed by `CLAWDSPACE_NODES` and by a
//! stand-in `tailscale` (the one fake: this machine has no tailscaled; it
//! prints a recorded `status --json`, and the daemons' and the CLI's real
//! parsing and probing run on it), a node going offline and coming back,
//! the CLI finding every server from one, and GPU placement. Root only.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serial, wait_until, Cluster, Daemon, Home};
use serde_json::Value;

#[allow(dead_code)]
#[path = "../../runtime/tests/common/cdi.rs"]
mod cdi;

const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
/// A tagged, online Tailscale peer that answers HTTP but is no server.
const IMPOSTOR_IP: &str = "127.0.0.6";

/// A port free on all three addresses.
fn shared_port() -> u16 {
    for _ in 0..50 {
        let port = common::free_port();
        if IPS
            .iter()
            .chain([&IMPOSTOR_IP])
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

/// The recorded `tailscale status --json`: the three daemons, a peer that
/// is offline, one without the tag, and one that is not a server.
fn status_json() -> String {
    let peer = |key: &str, host: &str, ip: &str, online: bool, tagged: bool| {
        format!(
            r#""nodekey:{key}": {{"HostName": "{host}", "DNSName": "{host}.tail0000.ts.net.", "TailscaleIPs": ["{ip}", "fd7a:115c:a1e0::{key}"], "Online": {online}, "Tags": {tags}}}"#,
            tags = if tagged {
                r#"["tag:clawdspace"]"#
            } else {
                "null"
            }
        )
    };
    let peers = [
        peer("1", "Alpha", IPS[0], true, true),
        peer("2", "beta", IPS[1], true, true),
        peer("3", "gamma", IPS[2], true, true),
        peer("4", "sleepy", "127.0.0.4", false, true),
        peer("5", "laptop", "127.0.0.5", true, false),
        peer("6", "impostor", IMPOSTOR_IP, true, true),
    ];
    format!(
        r#"{{"Version": "1.76.1", "Self": {{"HostName": "me"}}, "Peer": {{{}}}}}"#,
        peers.join(",\n")
    )
}

/// Writes the stand-in `tailscale` into `dir` and returns `dir`.
fn stand_in(dir: &Path) -> String {
    fs::create_dir_all(dir).expect("bin dir");
    let json = dir.join("status.json");
    fs::write(&json, status_json()).expect("status.json");
    let bin = dir.join("tailscale");
    fs::write(
        &bin,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --json\" ] || exit 2\nexec cat {}\n",
            json.display()
        ),
    )
    .expect("stand-in");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir.display().to_string()
}

/// An HTTP server on the impostor's address that answers anything with
/// a 200 that is not Clawdspace's health.
struct Impostor {
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Impostor {
    fn start(port: u16) -> Impostor {
        let listener = TcpListener::bind((IMPOSTOR_IP, port)).expect("impostor bind");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut c) = conn {
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf);
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    );
                }
            }
        });
        Impostor { stop, port }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((IMPOSTOR_IP, self.port));
    }
}

fn nodes_of(d: &Daemon) -> Value {
    let (code, body) = d.call("GET", "/api/nodes", None).expect("GET /api/nodes");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("nodes JSON")
}

/// `name -> status` of a daemon's `/api/nodes`, in order.
fn statuses(d: &Daemon) -> Vec<(String, String)> {
    nodes_of(d)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_string(),
                n["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn all_online(d: &Daemon) -> bool {
    let s = statuses(d);
    s.len() == 3 && s.iter().all(|(_, st)| st == "online")
}

#[test]
#[ignore = "needs root"]
fn three_daemons_form_one_fleet() {
    let _serial = serial();
    let port = shared_port();
    let base = std::env::temp_dir().join(format!("clawdspace-fleet-{}", common::unique()));
    let bin = stand_in(&base.join("bin"));
    let gpu = cdi::write_test_vendor(&base.join("gpu"));
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let _impostor = Impostor::start(port);
    let Some(mut c) = Cluster::start_with(3, |i, d| {
        d.ip = IPS[i].into();
        d.port = port;
        let mut env = vec![
            ("CLAWDSPACE_NODE_NAME", NAMES[i].to_string()),
            ("NODES_REFRESH_MS", "500".into()),
            ("CLAWDSPACE_TAILSCALE", "tailscale".into()),
            ("CLAWDSPACE_TAILSCALE_PORT", port.to_string()),
            ("CLAWDSPACE_TAILSCALE_TAG", "tag:clawdspace".into()),
            ("PATH", path.clone()),
        ];
        // alpha also has beta configured by hand (found twice: one entry).
        if i == 0 {
            env.push(("CLAWDSPACE_NODES", format!("beta={}:{port}", IPS[1])));
        }
        // gamma alone has (test CDI) GPUs.
        if i == 2 {
            env.push(("CLAWDSPACE_CDI_DIRS", gpu.display().to_string()));
            env.push(("CLAWDSPACE_GPU_CDI_KIND", cdi::KIND.into()));
            env.push(("CLAWDSPACE_GPU_IMAGE", common::IMAGE.into()));
        }
        d.env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    }) else {
        return;
    };
    let _rm = RmDir(base.clone());

    // Every node lists all three, itself first, and nothing else (not the
    // offline peer, the untagged one or the impostor).
    for d in &c.daemons {
        assert!(
            wait_until(Duration::from_secs(10), || all_online(d)),
            "{}: {}",
            d.host(),
            nodes_of(d)
        );
    }
    let v = nodes_of(&c.daemons[0]);
    let names: Vec<&str> = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"], "{v}");
    let n = &v["nodes"];
    assert_eq!(n[0]["source"], "self");
    assert_eq!(n[0]["url"], format!("http://{}:{port}", IPS[0]));
    assert_eq!(n[1]["source"], "config", "configured wins over Tailscale");
    assert_eq!(n[2]["source"], "tailscale");
    assert_eq!(n[2]["url"], format!("http://{}:{port}", IPS[2]));
    assert_eq!(n[2]["gpusAvailable"], 2, "{v}");
    assert_eq!(n[1]["gpusAvailable"], 0, "{v}");
    assert_eq!(n[1]["capabilities"]["platform"], "linux");
    assert!(n[1]["latencyMs"].as_u64().is_some(), "{v}");
    assert!(n[1]["memoryFree"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["lastUpdatedAt"].as_i64().unwrap_or(0) > 1_600_000_000_000);

    // Placement from any node: GPUs go to gamma.
    let (code, body) = c.daemons[0]
        .call("GET", "/api/nodes/placement?gpus=1", None)
        .expect("placement");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""node":"gamma""#), "{body}");
    let (code, body) = c.daemons[0]
        .call("GET", "/api/nodes/placement?gpus=3", None)
        .expect("placement");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("No server with 3 GPUs found"), "{body}");
    let (code, _) = c.daemons[0]
        .call("GET", "/api/nodes/placement?gpus=lots", None)
        .expect("placement");
    assert_eq!(code, 400);

    // The CLI, knowing only alpha: beta and gamma come from its /api/nodes.
    let only_alpha = Home::new(&c.daemons[0].host(), Some(&c.key));
    let r = only_alpha.run(&["servers", "--refresh"]);
    r.expect_code(0);
    for d in &c.daemons {
        assert!(
            only_alpha.cache().contains(&format!("={} ", d.url())),
            "{}",
            only_alpha.cache()
        );
    }
    assert_eq!(r.stdout.matches(" online ").count(), 3, "{}", r.stdout);
    // Known by another address of it (`localhost`, while it announces
    // 127.0.0.1): still one server, not two.
    let by_localhost = Home::new(&format!("localhost:{port}"), Some(&c.key));
    let r = by_localhost.run(&["servers", "--refresh"]);
    r.expect_code(0);
    let cache = by_localhost.cache();
    assert_eq!(cache.matches('=').count(), 3, "{cache}");
    assert_eq!(r.stdout.matches(" online ").count(), 3, "{}", r.stdout);

    // The CLI, knowing no live host at all: Tailscale (the stand-in on
    // PATH) finds all three; the impostor and the others are not servers.
    let mut tailnet = Home::new("127.0.0.1:1", Some(&c.key));
    tailnet.env = vec![
        ("PATH".into(), path.clone()),
        ("CLAWDSPACE_TAILSCALE_PORT".into(), port.to_string()),
        ("CLAWDSPACE_TAILSCALE_TAG".into(), "tag:clawdspace".into()),
    ];
    tailnet.run(&["servers", "--refresh"]).expect_code(0);
    let cache = tailnet.cache();
    assert_eq!(cache.matches('=').count(), 3, "{cache}");
    for d in &c.daemons {
        assert!(cache.contains(&format!("={} ", d.url())), "{cache}");
    }
    assert!(!cache.contains(IMPOSTOR_IP), "{cache}");

    // A GPU space from a CLI that knows only alpha lands on gamma.
    let r = only_alpha.run(&["create", "g1", "--gpu", "-m", "128m"]);
    r.expect_code(0);
    assert!(r.stdout.contains("Found GPU server: "), "{}", r.stdout);
    assert_eq!(c.daemons[2].spaces(), vec!["g1"]);

    // The relay: gamma's spaces and an exec there, asked of alpha (the
    // dashboard's way to every node), HTTP and WebSocket.
    let alpha = &c.daemons[0];
    let (code, body) = alpha
        .call("GET", "/api/nodes/gamma/api/spaces", None)
        .expect("relay list");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""name":"g1""#), "{body}");
    let (code, body) = alpha
        .call(
            "POST",
            "/api/nodes/gamma/api/spaces/g1/exec",
            Some(r#"{"command":"echo relayed; echo err >&2; exit 3"}"#),
        )
        .expect("relay exec");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("exec JSON");
    assert_eq!(
        (v["stdout"].as_str(), v["exitCode"].as_i64()),
        (Some("relayed"), Some(3)),
        "{v}"
    );
    let (code, body) = alpha
        .call("GET", "/api/nodes/gamma/api/spaces/nope", None)
        .expect("relay 404");
    assert_eq!((code, body.contains("not found")), (404, true), "{body}");
    for (path, want) in [
        ("/api/nodes/zeta/api/spaces", 404),
        ("/api/nodes/gamma/api/nodes", 400),
        ("/api/nodes/gamma/api/nodes/alpha/api/spaces", 400),
        ("/api/nodes/gamma/assets/app.mjs", 400),
        ("/api/nodes/gamma/api/%2e%2e/x", 400),
    ] {
        let (code, body) = alpha.call("GET", path, None).expect("relay");
        assert_eq!(code, want, "{path}: {body}");
        assert!(body.contains("\"error\""), "{path}: {body}");
    }
    // Without the key, nothing is relayed.
    let (code, _) = common::http_at(
        IPS[0],
        port,
        "GET",
        "/api/nodes/gamma/api/spaces",
        "wrong",
        None,
    )
    .expect("relay 401");
    assert_eq!(code, 401);
    ws_exec_through(alpha, &c.key);

    // beta dies: offline within a refresh on the others, which keep
    // answering at normal speed; a create never goes to it.
    c.daemons[1].stop();
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    let offline = wait_until(Duration::from_secs(5), || {
        let t = Instant::now();
        let s = statuses(&c.daemons[0]);
        slowest = slowest.max(t.elapsed());
        s.iter().any(|(n, st)| n == "beta" && st == "offline")
    });
    assert!(offline, "{}", nodes_of(&c.daemons[0]));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a request took {slowest:?}"
    );
    let gamma = nodes_of(&c.daemons[2]);
    assert!(
        wait_until(Duration::from_secs(3), || statuses(&c.daemons[2])
            .contains(&("beta".into(), "offline".into()))),
        "{gamma}"
    );
    let beta = nodes_of(&c.daemons[0])["nodes"][1].clone();
    assert!(beta["error"].as_str().is_some(), "{beta}");
    assert!(beta.get("latencyMs").is_none(), "{beta}");
    for i in 0..3 {
        let name = format!("cpu{i}");
        let r = only_alpha.run(&["create", &name, "-m", "64m"]);
        r.expect_code(0);
        assert!(
            !r.stdout.contains(&format!("on {}...", c.name(1))),
            "{}",
            r.stdout
        );
    }
    let (code, body) = c.daemons[0]
        .call("GET", "/api/nodes/placement?server=beta", None)
        .expect("placement");
    assert_eq!(code, 409, "{body}");
    let (code, body) = c.daemons[0]
        .call("GET", "/api/nodes/beta/api/spaces", None)
        .expect("relay to a dead node");
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("did not answer"), "{body}");

    // beta comes back: online again.
    c.daemons[1].start();
    assert!(
        wait_until(Duration::from_secs(5), || all_online(&c.daemons[0])),
        "{}",
        nodes_of(&c.daemons[0])
    );
}

/// A streaming exec in gamma's space g1 over alpha's relay: stdin in,
/// both streams and the exit code out.
fn ws_exec_through(alpha: &Daemon, key: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!(
        "ws://{}/api/nodes/gamma/api/spaces/g1/exec/ws?key={key}",
        alpha.host()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("relayed WebSocket");
        ws.send(Message::Text(
            r#"{"command":"read x; echo got-$x; echo e >&2; exit 4"}"#.into(),
        ))
        .await
        .expect("send command");
        ws.send(Message::Binary(b"hello\n".to_vec().into()))
            .await
            .expect("stdin");
        let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
        while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("relayed frames in time")
        {
            match m {
                Message::Binary(b) if b.first() == Some(&1) => out.extend_from_slice(&b[1..]),
                Message::Binary(b) if b.first() == Some(&2) => err.extend_from_slice(&b[1..]),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("event");
                    if v["type"] == "exit" {
                        exit = v["exitCode"].as_i64();
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), "got-hello\n");
        assert_eq!(String::from_utf8_lossy(&err), "e\n");
        assert_eq!(exit, Some(4));
    });
}

struct RmDir(std::path::PathBuf);

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
