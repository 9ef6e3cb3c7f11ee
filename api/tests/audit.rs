//! The audit log, observability and `/metrics` against a real clawdspaced
//! (SPEC 12): a scripted session is audited once per action, in order,
//! without env values or file contents, across restarts; the log rotates
//! at its cap; the observability snapshot and stats carry upstream's
//! fields; `/metrics` parses with Python's `prometheus_client` and its
//! counters move when a space works. Needs root.

mod common;

use std::collections::HashMap;
use std::fs;
use std::process::Command;

use base64::Engine;
use common::{Daemon, KEY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Events of `space` from `GET /api/audit`, asserting 200.
async fn events(d: &Daemon, query: &str) -> Vec<Value> {
    let (s, v) = d.get(&format!("/api/audit?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["events"].as_array().expect("events").clone()
}

fn types(ev: &[Value]) -> Vec<&str> {
    ev.iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_scripted_session_is_audited_once_in_order_and_survives_restarts() {
    let Some(mut d) = Daemon::start(&[]).await else {
        return;
    };
    let secret = "s3cr3t-value-8d1f";
    let content = "file-contents-2b9c";
    let name = "aud";
    d.create(name).await;
    let (s, v) = d
        .post(
            &format!("/api/spaces/{name}/exec"),
            json!({"command": "echo \"$TOKEN\" | wc -c", "env": {"TOKEN": secret}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = d
        .post(
            &format!("/api/spaces/{name}/exec"),
            json!({"command": ["sh", "-c", "exit 3"], "user": "root"}),
        )
        .await;
    assert_eq!((s, v["exitCode"].as_i64()), (StatusCode::OK, Some(3)));
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    let (s, v) = d
        .call(
            Method::PUT,
            &format!("/api/spaces/{name}/file?path=/notes.txt"),
            Some(json!({ "contentBase64": b64 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A failed call is no action: not audited.
    let (s, _) = d
        .post("/api/spaces", json!({"name": name, "memory": "256m"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    for (path, want) in [("stop", "Space paused"), ("start", "Space started")] {
        let (s, v) = d
            .post(&format!("/api/spaces/{name}/{path}"), json!({}))
            .await;
        assert_eq!((s, v["message"].as_str()), (StatusCode::OK, Some(want)));
    }
    let (s, _) = d
        .call(Method::DELETE, &format!("/api/spaces/{name}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let want = [
        "space.create",
        "space.exec",
        "space.exec",
        "space.file.write",
        "space.pause",
        "space.start",
        "space.destroy",
    ];
    let ev = events(&d, &format!("space={name}")).await;
    assert_eq!(types(&ev), want, "{ev:#?}");
    // Timestamps in order; every event names the space.
    let ts: Vec<&str> = ev.iter().map(|e| e["ts"].as_str().expect("ts")).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    assert!(ev.iter().all(|e| e["space"] == name));
    // Upstream's meta, plus ours.
    assert_eq!(ev[0]["meta"]["memory"], 256 << 20);
    assert_eq!(ev[0]["meta"]["image"], common::IMAGE);
    let exec = &ev[1]["meta"];
    assert_eq!(exec["command"], "echo \"$TOKEN\" | wc -c");
    assert_eq!(exec["exitCode"], 0);
    assert_eq!(exec["envNames"], json!(["TOKEN"]));
    assert!(
        exec["durationMs"].is_u64() && exec["user"].is_string(),
        "{exec}"
    );
    assert_eq!(ev[2]["meta"]["command"], json!(["sh", "-c", "exit 3"]));
    assert_eq!(ev[2]["meta"]["exitCode"], 3);
    assert_eq!(ev[2]["meta"]["user"], "root");
    assert_eq!(
        ev[3]["meta"],
        json!({"path": "/notes.txt", "bytes": content.len()})
    );
    assert_eq!(ev[6]["meta"], json!({"removeVolume": false}));
    // Never an env value or file contents, in any form.
    let log = fs::read_to_string(d.state().join("audit.jsonl")).expect("audit.jsonl");
    for bad in [secret, content, b64.as_str()] {
        assert!(!log.contains(bad), "{bad} in the audit log:\n{log}");
    }
    assert_eq!(log.lines().count(), want.len(), "{log}");
    // limit keeps the newest, oldest first; another space's filter is empty.
    let last2 = events(&d, &format!("space={name}&limit=2")).await;
    assert_eq!(types(&last2), ["space.start", "space.destroy"]);
    assert!(events(&d, "space=other").await.is_empty());
    assert_eq!(events(&d, "limit=0").await.len(), 1);
    // The key is needed.
    let r = d
        .http
        .get(d.url("/api/audit"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A graceful restart, then a kill -9: the log is still there, and new
    // events follow the old ones.
    assert!(d.terminate().success());
    d.spawn().await;
    assert_eq!(types(&events(&d, &format!("space={name}")).await), want);
    d.create(name).await;
    d.kill9();
    d.spawn().await;
    let ev = events(&d, &format!("space={name}")).await;
    assert_eq!(ev.len(), want.len() + 1, "{ev:#?}");
    assert_eq!(ev[want.len()]["type"], "space.create");
}

#[tokio::test]
#[ignore = "needs root"]
async fn the_audit_log_rotates_at_its_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs/audit.jsonl");
    let p = path.to_string_lossy().into_owned();
    let Some(d) = Daemon::start(&[
        ("CLAWDSPACE_AUDIT_PATH", &p),
        ("CLAWDSPACE_AUDIT_MAX_BYTES", "4096"),
    ])
    .await
    else {
        return;
    };
    d.create("rot").await;
    let n = 60;
    for i in 0..n {
        d.exec("rot", json!(format!("echo {i:03} {}", "x".repeat(100))))
            .await;
    }
    let ev = events(&d, "space=rot&limit=1000").await;
    let rotated = dir.path().join("logs/audit.jsonl.1");
    let (live, old) = (
        fs::metadata(&path).expect("live file").len(),
        fs::metadata(&rotated).expect("rotated file").len(),
    );
    assert!(live <= 4096 && old <= 4096, "{live} {old}");
    assert!(!d.state().join("audit.jsonl").exists());
    // What the two files hold: the newest events, contiguous, in order.
    let idx: Vec<u64> = ev
        .iter()
        .filter(|e| e["type"] == "space.exec")
        .map(|e| {
            let c = e["meta"]["command"].as_str().expect("command");
            c[5..8].parse().expect("index")
        })
        .collect();
    assert!(idx.len() >= 10 && idx.len() < n as usize, "{}", idx.len());
    assert!(idx.windows(2).all(|w| w[1] == w[0] + 1), "{idx:?}");
    assert_eq!(idx.last(), Some(&(n - 1)));
}

/// The `space.shell` commands of `name` so far.
async fn shell_commands(d: &Daemon, name: &str) -> Vec<String> {
    events(d, &format!("space={name}&limit=1000"))
        .await
        .iter()
        .filter(|e| e["type"] == "space.shell")
        .map(|e| {
            assert_eq!(e["meta"]["source"], "bash_history", "{e}");
            e["meta"]["command"].as_str().expect("command").to_string()
        })
        .collect()
}

/// Waits (up to 10 s) until `name` has `n` shell events; returns them.
async fn wait_shell(d: &Daemon, name: &str, n: usize) -> Vec<String> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = shell_commands(d, name).await;
        if got.len() >= n || std::time::Instant::now() > end {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn shell_history_is_audited_once_per_line_across_restarts_and_never_from_the_host() {
    let Some(mut d) = Daemon::start(&[("HISTORY_INGEST_MS", "200")]).await else {
        return;
    };
    let name = "hist";
    d.create(name).await;
    d.exec(
        name,
        json!("printf 'ls -la\n#1700000000\nmake test\n' >> /workspace/.bash_history"),
    )
    .await;
    assert_eq!(wait_shell(&d, name, 2).await, ["ls -la", "make test"]);
    d.exec(name, json!("echo 'echo third' >> /workspace/.bash_history"))
        .await;
    assert_eq!(wait_shell(&d, name, 3).await.len(), 3);
    // Nothing twice while nothing is added.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        shell_commands(&d, name).await,
        ["ls -la", "make test", "echo third"]
    );
    // A restart goes on where it was: no line again, the new one once.
    assert!(d.terminate().success());
    d.spawn().await;
    d.exec(
        name,
        json!("echo 'after restart' >> /workspace/.bash_history"),
    )
    .await;
    let got = wait_shell(&d, name, 4).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(got, shell_commands(&d, name).await);
    assert_eq!(got, ["ls -la", "make test", "echo third", "after restart"]);
    // The history made a symlink to a host file: resolved inside the
    // volume, it leads nowhere; nothing of the host's file is read.
    d.exec(
        name,
        json!("rm /workspace/.bash_history && ln -s /etc/passwd /workspace/.bash_history"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(shell_commands(&d, name).await.len(), 4);
    let log = fs::read_to_string(d.state().join("audit.jsonl")).expect("audit.jsonl");
    assert!(!log.contains("root:x:0"), "{log}");
    // A replaced file is read from its start.
    d.exec(
        name,
        json!("rm /workspace/.bash_history && echo fresh > /workspace/.bash_history"),
    )
    .await;
    assert_eq!(
        wait_shell(&d, name, 5).await.last().map(String::as_str),
        Some("fresh")
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn observability_and_stats_have_upstreams_fields() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let name = "obs";
    d.create(name).await;
    d.exec(
        name,
        json!(
            "printf 'ls -la\\necho hello\\n' >> /workspace/.bash_history; \
               dd if=/dev/urandom of=/workspace/blob bs=1024 count=3072 2>/dev/null; \
               setsid sleep 300 </dev/null >/dev/null 2>&1 & true"
        ),
    )
    .await;
    let (s, v) = d.get(&format!("/api/spaces/{name}/stats")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for f in [
        "cpuPercent",
        "memoryUsageBytes",
        "memoryLimitBytes",
        "pids",
        "networkRxBytes",
        "networkTxBytes",
        "blockReadBytes",
        "blockWriteBytes",
    ] {
        assert!(v["stats"][f].is_number(), "{f}: {v}");
    }
    // The backgrounded `setsid` becomes `sleep` a moment after the exec
    // returned: wait for it.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let (s, v) = d.get(&format!("/api/spaces/{name}/observability")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let has_sleep = v["observability"]["top"]
            .as_array()
            .is_some_and(|t| t.iter().any(|p| p["command"] == "sleep"));
        if has_sleep || std::time::Instant::now() > end {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let o = &v["observability"];
    assert!(o["stats"]["pids"].as_u64().expect("pids") >= 2, "{o}");
    let disk = &o["workspaceDisk"];
    assert_eq!(disk["path"], "/workspace");
    let total = disk["totalBytes"].as_u64().expect("totalBytes");
    let used = disk["usedBytes"].as_u64().expect("usedBytes");
    assert!(
        total > 0 && used <= total && disk["availBytes"].is_u64(),
        "{disk}"
    );
    let pct = disk["usedPercent"].as_f64().expect("usedPercent");
    assert!(
        (pct - used as f64 / total as f64 * 100.0).abs() < 1.0,
        "{disk}"
    );
    let size = o["workspaceSizeBytes"].as_u64().expect("size");
    assert!((3 << 20..8 << 20).contains(&size), "{size}");
    assert!(o.get("workspaceSizeComplete").is_none());
    let top = o["top"].as_array().expect("top");
    assert!(!top.is_empty() && top.len() <= 8, "{top:?}");
    let sleep = top
        .iter()
        .find(|p| p["command"] == "sleep")
        .unwrap_or_else(|| panic!("sleep in {top:?}"));
    // Pids as the space sees them: small numbers in its own namespace.
    let pid = sleep["pid"].as_i64().expect("pid");
    assert!(pid > 1 && pid < 1000, "{sleep}");
    assert!(sleep["cpu"].is_number() && sleep["mem"].is_number());
    assert!(sleep["etime"].as_str().expect("etime").contains(':'));
    assert_eq!(o["bashHistoryTail"], "ls -la\necho hello");
    // A history that is a link out of the space reads nothing of the host.
    d.exec(
        name,
        json!("rm /workspace/.bash_history; ln -s /etc/shadow /workspace/.bash_history"),
    )
    .await;
    let (_, v) = d.get(&format!("/api/spaces/{name}/observability")).await;
    assert!(v["observability"].get("bashHistoryTail").is_none(), "{v}");
    let (s, _) = d.get("/api/spaces/nope/observability").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Sample name → list of (labels, value).
type Samples = HashMap<String, Vec<(HashMap<String, String>, f64)>>;

/// Parses `/metrics` text with Python's prometheus_client.
fn parse_metrics(text: &str) -> Samples {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("m.txt");
    fs::write(&f, text).expect("write");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&f)
        .output()
        .expect("python3 (scripts/install-deps installs prometheus_client)");
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn value(m: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.get(name)?.iter().find_map(|(l, v)| {
        labels
            .iter()
            .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want))
            .then_some(*v)
    })
}

async fn scrape(d: &Daemon) -> String {
    let r = d
        .http
        .get(d.url("/metrics"))
        .header("Authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.expect("text")
}

#[tokio::test]
#[ignore = "needs root"]
async fn metrics_parse_and_move_when_a_space_works() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let r = d.http.get(d.url("/metrics")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let name = "met";
    d.create(name).await;
    let before = parse_metrics(&scrape(&d).await);
    let sp = [("space", name)];
    let cpu0 = value(&before, "clawdspace_space_cpu_seconds_total", &sp).expect("cpu");
    let execs = |m: &Samples| {
        value(
            m,
            "clawdspace_http_request_duration_seconds_count",
            &[
                ("route", "/api/spaces/{name}/exec"),
                ("method", "POST"),
                ("status", "2xx"),
            ],
        )
        .unwrap_or(0.0)
    };
    let n0 = execs(&before);
    // Half a second or so of CPU, and some disk writes.
    d.exec(
        name,
        json!(
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
               dd if=/dev/zero of=/workspace/z bs=1M count=4 oflag=direct 2>/dev/null; echo $i"
        ),
    )
    .await;
    let after = parse_metrics(&scrape(&d).await);
    let cpu1 = value(&after, "clawdspace_space_cpu_seconds_total", &sp).expect("cpu");
    assert!(cpu1 > cpu0 + 0.05, "{cpu0} → {cpu1}");
    assert_eq!(execs(&after), n0 + 1.0);
    let mem = value(&after, "clawdspace_space_memory_bytes", &sp).expect("memory");
    assert!(mem > 0.0);
    assert_eq!(
        value(&after, "clawdspace_space_memory_limit_bytes", &sp),
        Some((256u64 << 20) as f64)
    );
    assert!(value(&after, "clawdspace_space_pids", &sp).expect("pids") >= 1.0);
    for f in [
        "clawdspace_space_network_receive_bytes_total",
        "clawdspace_space_network_transmit_bytes_total",
        "clawdspace_space_block_read_bytes_total",
        "clawdspace_space_block_write_bytes_total",
    ] {
        assert!(value(&after, f, &sp).is_some(), "{f}");
    }
    assert_eq!(
        value(&after, "clawdspace_spaces", &[("status", "running")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            "clawdspace_space_info",
            &[("space", name), ("status", "running")]
        ),
        Some(1.0)
    );
    let idle = value(&after, "clawdspace_workers", &[("state", "idle")]).expect("workers");
    let busy = value(&after, "clawdspace_workers", &[("state", "busy")]).expect("workers");
    assert_eq!(idle + busy, 2.0);
    assert!(value(&after, "clawdspace_audit_events_total", &[]).expect("audit") >= 2.0);
    // The histogram is cumulative and its +Inf bucket is the count.
    let inf = value(
        &after,
        "clawdspace_http_request_duration_seconds_bucket",
        &[
            ("route", "/api/spaces/{name}/exec"),
            ("method", "POST"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(inf, Some(execs(&after)));
    // Paths never become labels: an unknown path is "unmatched".
    let _ = d.get("/api/does-not-exist/12345").await;
    let m = scrape(&d).await;
    assert!(!m.contains("12345"), "{m}");
}
