//! The REST contract (SPEC sections 1-8) against a real clawdspaced with
//! real spaces. Needs root; skipped otherwise.

mod common;

use std::time::Duration;

use common::{Daemon, KEY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
#[ignore = "needs root"]
async fn auth_cors_and_unknown_paths_follow_the_contract() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let h = &d.http;
    // Health never needs a key, even a wrong one.
    let r = h
        .get(d.url("/api/health"))
        .header("Authorization", "Bearer nope")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"status":"ok","version":"1.6.0"}"#
    );
    // Every method under /api/spaces and /api/system needs the key.
    for (m, p) in [
        (Method::GET, "/api/spaces"),
        (Method::GET, "/api/system"),
        (Method::GET, "/api/system/capabilities"),
        (Method::DELETE, "/api/spaces/x"),
    ] {
        let r = h.request(m, d.url(p)).send().await.expect("req");
        assert_eq!(r.status(), 401, "{p}");
        assert_eq!(r.text().await.expect("body"), r#"{"error":"Unauthorized"}"#);
    }
    // Auth comes before validation.
    let r = h
        .post(d.url("/api/spaces"))
        .header("content-type", "application/json")
        .body("{bad")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 401);
    // The key in the query wins over a wrong header; a repeated key and a
    // lower-case scheme are refused.
    for (query, header, status) in [
        (format!("?key={KEY}"), None, 200),
        (format!("?key={KEY}"), Some("Bearer wrong".to_string()), 200),
        (format!("?key={KEY}&key={KEY}"), None, 401),
        (String::new(), Some(format!("bearer {KEY}")), 401),
    ] {
        let mut req = h.get(d.url(&format!("/api/spaces{query}")));
        if let Some(v) = &header {
            req = req.header("Authorization", v);
        }
        let r = req.send().await.expect("req");
        assert_eq!(r.status(), status, "{query} {header:?}");
    }
    // Trailing slash, unknown API paths, preflight.
    let (s, v) = d.get("/api/spaces/").await;
    assert_eq!((s, v), (StatusCode::OK, json!({"spaces": []})));
    assert_eq!(
        d.get("/api/nope").await,
        (StatusCode::NOT_FOUND, json!({"error": "Not found"}))
    );
    let r = h
        .request(Method::OPTIONS, d.url("/api/spaces"))
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-methods"],
        "GET,HEAD,PUT,PATCH,POST,DELETE"
    );
    assert_eq!(
        r.headers()["access-control-allow-headers"],
        "authorization,content-type"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn create_validates_input_in_the_contract_order() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let bad = |msg: &str| (StatusCode::BAD_REQUEST, json!({ "error": msg }));
    let name_err = "Invalid name (alphanumeric, _, - only)";
    for body in [
        json!({}),
        json!({"name": "a b"}),
        json!({"name": 123}),
        json!({"name": "x".repeat(64)}),
    ] {
        assert_eq!(d.post("/api/spaces", body).await, bad(name_err));
    }
    assert_eq!(
        d.post("/api/spaces", json!({"name": "ok", "memory": 512}))
            .await,
        bad("Invalid memory")
    );
    assert_eq!(
        d.post("/api/spaces", json!({"name": "ok", "cpus": 0}))
            .await,
        bad("Invalid cpus")
    );
    assert_eq!(
        d.post("/api/spaces", json!({"name": "ok", "cpus": 1000}))
            .await,
        bad("Invalid cpus")
    );
    assert_eq!(
        d.post("/api/spaces", json!({"name": "ok", "gpu": "false"}))
            .await,
        bad("Invalid gpu")
    );
    for disk in [json!("lots"), json!(5), json!("1.5g")] {
        let body = json!({"name": "ok", "disk": disk});
        assert_eq!(d.post("/api/spaces", body).await, bad("Invalid disk"));
    }
    // A disk limit needs project quotas on the state dir (this host: none).
    let (s, v) = d
        .post("/api/spaces", json!({"name": "ok", "disk": "1g"}))
        .await;
    if s == StatusCode::BAD_REQUEST {
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.starts_with("disk quotas are not available"), "{v}");
    } else {
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["space"]["disk"], 1u64 << 30);
        d.call(Method::DELETE, "/api/spaces/ok", None).await;
    }
    assert_eq!(
        d.post("/api/spaces", json!({"name": "ok", "gpu": true}))
            .await,
        bad("GPU not available on this server")
    );
    let (s, v) = d
        .post("/api/spaces", json!({"name": "ok", "image": "../etc"}))
        .await;
    assert_eq!(s, 400, "{v}");
    // Not stored locally: pulled from its registry, which is unreachable here.
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "ok", "image": "missing-local-image:1"}),
        )
        .await;
    assert_eq!(s, 502, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing-local-image")),
        "{v}"
    );
    // A body not sent as JSON is `{}`; malformed JSON and huge bodies are refused.
    let h = &d.http;
    let auth = format!("Bearer {KEY}");
    let r = h
        .post(d.url("/api/spaces"))
        .header("Authorization", &auth)
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"error": name_err})
    );
    let r = h
        .post(d.url("/api/spaces"))
        .header("Authorization", &auth)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("req");
    assert_eq!(
        (r.status(), r.json::<Value>().await.expect("json")),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid JSON body"})
        )
    );
    let big = format!(r#"{{"name":"x","pad":"{}"}}"#, "a".repeat(3 << 20));
    let r = h
        .post(d.url("/api/spaces"))
        .header("Authorization", &auth)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("req");
    assert_eq!(
        (r.status(), r.json::<Value>().await.expect("json")),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "Request body too large"})
        )
    );
    // A client still writing an oversized body gets its 413 (it is read
    // and dropped first, not cut off by a reset), and a body declared far
    // too large is refused before any of it is read.
    let answer = raw_post(&d, 3 << 20, Some(vec![b' '; 3 << 20])).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = raw_post(&d, 1 << 30, None).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("Request body too large"), "{answer}");
    // One declared oversized that never comes is not waited for.
    let answer = raw_post(&d, 3 << 20, None).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Nothing was created by any of this.
    assert_eq!(d.get("/api/spaces").await.1, json!({"spaces": []}));
}

/// POSTs to /api/spaces over a raw connection a request declaring
/// `length` bytes of body, then (a moment later, as a slow client would)
/// `body`; returns what the daemon answered.
async fn raw_post(d: &Daemon, length: usize, body: Option<Vec<u8>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{}", d.port);
    let mut c = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/spaces HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.expect("send the head");
    if let Some(body) = body {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.write_all(&body).await.expect("send the body");
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut answer))
        .await
        .expect("an answer")
        .expect("read the answer");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_space_lives_through_the_whole_api() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let (s, v) = d
        .post("/api/spaces", json!({"name": "dev", "cpus": 1}))
        .await;
    assert_eq!(s, 201, "{v}");
    let sp = &v["space"];
    assert_eq!(sp["status"], "running");
    assert_eq!(sp["memory"], 2147483648u64);
    assert!(sp["id"]
        .as_str()
        .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    assert_eq!(sp["image"], common::IMAGE);
    assert!(sp["lastActivity"]
        .as_str()
        .is_some_and(|t| t.len() == 24 && t.ends_with('Z')));
    // cpus is written as an integer when integral.
    let raw = d
        .http
        .get(d.url("/api/spaces/dev"))
        .header("Authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("text");
    assert!(raw.contains(r#""cpus":1,"#), "{raw}");
    assert_eq!(
        d.post("/api/spaces", json!({"name": "dev"})).await,
        (
            StatusCode::CONFLICT,
            json!({"error": "Space already exists"})
        )
    );
    let (s, l) = d.get("/api/spaces").await;
    assert_eq!(
        (s, l["spaces"][0]["name"].clone()),
        (StatusCode::OK, json!("dev"))
    );

    // Exec: strings run under sh -c, arrays are argv, output trimmed, codes kept.
    let r = d
        .exec("dev", json!("echo '  hi  '; echo oops >&2; exit 3"))
        .await;
    assert_eq!(r, json!({"stdout": "hi", "stderr": "oops", "exitCode": 3}));
    assert_eq!(
        d.exec("dev", json!(["echo", "$HOME"])).await["stdout"],
        "$HOME"
    );
    assert_eq!(d.exec("dev", json!("kill -9 $$")).await["exitCode"], 137);
    let missing = d.exec("dev", json!(["no-such-cmd"])).await;
    assert_eq!(missing["exitCode"], 127);
    assert!(missing["stderr"]
        .as_str()
        .is_some_and(|e| e.contains("no-such-cmd")));
    assert_eq!(
        d.exec("dev", json!("read x; echo eof:$?")).await["stdout"],
        "eof:1"
    );
    let big = d
        .exec(
            "dev",
            json!(
                "head -c 600000 /dev/zero | tr '\\0' a; head -c 500000 /dev/zero | tr '\\0' b >&2"
            ),
        )
        .await;
    assert_eq!(
        (
            big["stdout"].as_str().map(str::len),
            big["stderr"].as_str().map(str::len)
        ),
        (Some(600000), Some(500000))
    );
    assert_eq!(
        d.exec("dev", json!("printf 'caf\\303\\251 \\377'")).await["stdout"],
        "café \u{fffd}"
    );
    for bad in [
        json!(null),
        json!(""),
        json!([]),
        json!([1]),
        json!(7),
        json!({}),
    ] {
        let (s, v) = d
            .post("/api/spaces/dev/exec", json!({ "command": bad }))
            .await;
        assert_eq!(
            (s, v),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "Command required"})
            )
        );
    }
    assert_eq!(
        d.post("/api/spaces/ghost/exec", json!({})).await.0,
        400,
        "command checked before lookup"
    );

    // Stop = pause (idempotent); exec wakes it; start is fine on running.
    assert_eq!(
        d.post("/api/spaces/dev/stop", json!({})).await,
        (StatusCode::OK, json!({"message": "Space paused"}))
    );
    assert_eq!(
        d.get("/api/spaces/dev").await.1["space"]["status"],
        "paused"
    );
    assert_eq!(d.post("/api/spaces/dev/stop", json!({})).await.0, 200);
    assert_eq!(d.exec("dev", json!("echo awake")).await["stdout"], "awake");
    assert_eq!(
        d.get("/api/spaces/dev").await.1["space"]["status"],
        "running"
    );
    d.post("/api/spaces/dev/stop", json!({})).await;
    assert_eq!(
        d.post("/api/spaces/dev/start", json!({})).await,
        (StatusCode::OK, json!({"message": "Space started"}))
    );
    assert_eq!(d.post("/api/spaces/dev/start", json!({})).await.0, 200);
    assert_eq!(
        d.get("/api/spaces/dev").await.1["space"]["status"],
        "running"
    );

    // Missing spaces are 404 everywhere.
    let nf = (StatusCode::NOT_FOUND, json!({"error": "Space not found"}));
    assert_eq!(d.get("/api/spaces/ghost").await, nf);
    assert_eq!(d.call(Method::DELETE, "/api/spaces/ghost", None).await, nf);
    assert_eq!(d.post("/api/spaces/ghost/stop", json!({})).await, nf);
    assert_eq!(d.post("/api/spaces/ghost/start", json!({})).await, nf);
    assert_eq!(
        d.post("/api/spaces/ghost/exec", json!({"command": "true"}))
            .await,
        nf
    );

    assert_eq!(
        d.call(Method::DELETE, "/api/spaces/dev", None).await,
        (StatusCode::OK, json!({"message": "Space destroyed"}))
    );
    assert_eq!(d.call(Method::DELETE, "/api/spaces/dev", None).await.0, 404);
    let again = d.create("dev").await;
    assert_ne!(again["id"], sp["id"], "a new space gets a new id");
}

#[tokio::test]
#[ignore = "needs root"]
async fn concurrent_requests_are_served_and_one_name_wins_once() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let body = json!({"name": "race", "memory": "64m"});
    let (a, b) = tokio::join!(
        d.post("/api/spaces", body.clone()),
        d.post("/api/spaces", body)
    );
    let mut codes = [a.0.as_u16(), b.0.as_u16()];
    codes.sort();
    assert_eq!(codes, [201, 409]);
    // Different names in parallel, and execs that overlap.
    let names = ["p1", "p2", "p3"];
    let creates = names.map(|n| d.post("/api/spaces", json!({"name": n, "memory": "64m"})));
    let results = futures_util::future::join_all(creates).await;
    assert!(results.iter().all(|r| r.0 == 201), "{results:?}");
    let t = std::time::Instant::now();
    let execs = (0..6).map(|i| d.exec("race", json!(format!("sleep 1; echo {i}"))));
    let outs = futures_util::future::join_all(execs).await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "execs overlap: {:?}",
        t.elapsed()
    );
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o["stdout"], i.to_string());
    }
    // Other requests are served while an exec runs.
    let slow = d.exec("race", json!("sleep 2"));
    let fast = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = std::time::Instant::now();
        let (s, _) = d.get("/api/spaces").await;
        (s, t.elapsed())
    };
    let (_, (s, dt)) = tokio::join!(slow, fast);
    assert!(s == 200 && dt < Duration::from_millis(500), "{dt:?}");
}

#[tokio::test]
#[ignore = "needs root"]
async fn system_and_capabilities_report_the_host_and_the_spaces() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("one").await;
    d.create("two").await;
    d.post("/api/spaces/two/stop", json!({})).await;
    let (s, v) = d.get("/api/system").await;
    assert_eq!(s, 200);
    assert_eq!(v["platform"], "linux");
    assert!(["x64", "arm64"].contains(&v["arch"].as_str().unwrap_or("")));
    assert!(v["cpus"].as_u64().is_some_and(|c| c >= 1));
    assert_eq!(v["loadAverage"].as_array().map(Vec::len), Some(3));
    assert!(v["memory"]["percentage"]
        .as_str()
        .is_some_and(|p| p.ends_with('%') && p.contains('.')));
    assert!(v["memory"]["total"]
        .as_str()
        .is_some_and(|t| t.ends_with("GB") || t.ends_with("MB")));
    assert!(v["disk"]["percentage"]
        .as_str()
        .is_some_and(|p| p.ends_with('%')));
    assert!(v["uptime"]
        .as_str()
        .is_some_and(|u| u.contains("d ") && u.ends_with('m')));
    assert_eq!(v["docker"]["containers"], 2);
    assert_eq!(v["docker"]["containersRunning"], 1);
    assert_eq!(v["docker"]["containersPaused"], 1);
    assert_eq!(v["docker"]["images"], 1);
    assert!(v["docker"]["version"]
        .as_str()
        .is_some_and(|s| s.starts_with("clawdspace-libcontainer")));
    assert_eq!(v["capabilities"]["gpu"], false);
    assert!(v["capabilities"].get("cpus").is_none() && v["capabilities"].get("gpuName").is_none());
    let (s, c) = d.get("/api/system/capabilities").await;
    assert_eq!(s, 200);
    assert_eq!(c["gpu"], false);
    assert_eq!(c["cpus"], v["cpus"]);
    assert!(c["memory"].as_u64().is_some_and(|m| m > 1 << 20));
}

#[tokio::test]
#[ignore = "needs root"]
async fn idle_spaces_fall_asleep_but_not_during_an_exec() {
    let Some(d) = Daemon::start(&[
        ("IDLE_TIMEOUT_MS", "700"),
        ("CLAWDSPACE_SLEEP_INTERVAL_MS", "100"),
    ])
    .await
    else {
        return;
    };
    d.create("nap").await;
    d.create("busy").await;
    let status = |n: &'static str| {
        let d = &d;
        async move { d.get(&format!("/api/spaces/{n}")).await.1["space"]["status"].clone() }
    };
    // A 2.5 s exec keeps "busy" awake past the timeout.
    let long = d.exec("busy", json!("sleep 2.5; echo done"));
    let watch = async {
        tokio::time::sleep(Duration::from_millis(1800)).await;
        (status("nap").await, status("busy").await)
    };
    let (out, (nap, busy)) = tokio::join!(long, watch);
    assert_eq!(out["stdout"], "done", "the exec was never frozen");
    assert_eq!((nap, busy), (json!("paused"), json!("running")));
    // Exec wakes a sleeping space.
    assert_eq!(d.exec("nap", json!("echo up")).await["stdout"], "up");
    assert_eq!(status("nap").await, "running");
}

#[tokio::test]
#[ignore = "needs root"]
async fn spaces_survive_daemon_restarts() {
    let Some(mut d) = Daemon::start(&[]).await else {
        return;
    };
    let before = d.create("keep").await;
    d.exec("keep", json!("echo data > /home/sandbox/f")).await;
    d.kill9();
    d.spawn().await;
    let (s, v) = d.get("/api/spaces/keep").await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["space"]["id"].clone(), v["space"]["status"].clone()),
        (before["id"].clone(), json!("running"))
    );
    assert_eq!(v["space"]["started"], before["started"], "not restarted");
    assert_eq!(
        d.exec("keep", json!("cat /home/sandbox/f")).await["stdout"],
        "data"
    );
    // Graceful shutdown (SIGTERM) also leaves the space running.
    assert!(d.terminate().success());
    d.spawn().await;
    assert_eq!(
        d.get("/api/spaces/keep").await.1["space"]["status"],
        "running"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn bad_configuration_stops_the_daemon_at_startup() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    for (k, v) in [
        ("PORT", "http"),
        ("IDLE_TIMEOUT_MS", "soon"),
        ("CLAWDSPACE_SUBNET", "10.88.0.1/16"),
        ("CLAWDSPACE_ALLOW_NETS", "10.0.0.0/8,nope"),
        ("CLAWDSPACE_BRIDGE", "no-dashes-allowed"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdspaced"))
            .env(k, v)
            .env("CLAWDSPACE_STATE_DIR", "/nonexistent-never-created")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{k}={v} must fail");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains(k.to_lowercase().replace('_', "-").as_str())
                || !out.stderr.is_empty()
        );
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_clawdspaced"))
        .arg("--help")
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&help.stdout);
    for var in [
        "PORT",
        "API_KEY",
        "IDLE_TIMEOUT_MS",
        "CLAWDSPACE_IMAGE",
        "CLAWDSPACE_GPU_IMAGE",
        "CLAWDSPACE_STATE_DIR",
        "CLAWDSPACE_INSECURE_REGISTRIES",
        "CLAWDSPACE_SLEEP_INTERVAL_MS",
        "CLAWDSPACE_BRIDGE",
        "CLAWDSPACE_SUBNET",
        "CLAWDSPACE_ALLOW_NETS",
        "CLAWDSPACE_DNS",
    ] {
        assert!(text.contains(var), "--help lists {var}");
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn the_network_is_chosen_on_create() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    for bad in [json!("wan"), json!(1), json!(true)] {
        let (s, v) = d
            .post("/api/spaces", json!({"name": "x", "network": bad}))
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("Invalid network")),
            "{v}"
        );
    }
    // Default: internet, with an address from the daemon's subnet.
    let web = d.create("web").await;
    assert_eq!(web["network"], "internet", "{web}");
    let ip: std::net::Ipv4Addr = web["ipAddress"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("ipAddress");
    assert!(d.network.subnet.contains(ip), "{ip}");
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "off", "memory": "256m", "network": "none"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["space"]["network"], "none");
    assert!(v["space"].get("ipAddress").is_none(), "{v}");
    for (name, want) in [("web", "eth0 lo"), ("off", "lo")] {
        let r = d
            .exec(name, json!("ls /sys/class/net | tr '\\n' ' '"))
            .await;
        assert_eq!(r["stdout"], want, "{name}");
    }
    let (_, list) = d.get("/api/spaces").await;
    assert_eq!(list["spaces"].as_array().map(Vec::len), Some(2));
    for name in ["web", "off"] {
        let (s, _) = d
            .call(Method::DELETE, &format!("/api/spaces/{name}"), None)
            .await;
        assert_eq!(s, 200);
    }
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&d.network.bridge)
        .exists());
}
