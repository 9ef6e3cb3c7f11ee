//! Clients that hang up mid-request never hurt the server: creates, execs,
//! destroys, pauses and starts whose clients disconnect at random points
//! leave no orphan (a container, mount, netns, cgroup or process the API
//! does not list), no ghost (a listed space without them), no lost worker,
//! and every later operation works. Needs root.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Daemon, KEY};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Sends one request on a fresh connection and closes it `delay` later,
/// answered or not (delay 0: right after the request is written).
async fn hang_up(port: u16, method: &str, path: &str, body: Option<Value>, delay: Duration) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(req.as_bytes()).await;
    tokio::time::sleep(delay).await;
    drop(s);
}

/// The 12-hex ids of a set of 64-hex names (directory names).
fn short_ids(names: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|n| n[..12].to_string())
        .collect()
}

fn dir_names(d: &Path) -> Vec<String> {
    fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Space ids per cgroup hierarchy holding the daemon's parent cgroup (but
/// v1 `cpuset`: spaces that pin no CPUs share their parent's group there).
fn cgroup_ids(parent: &str) -> Vec<(String, BTreeSet<String>)> {
    let rel = parent.trim_start_matches('/');
    let mut out = Vec::new();
    for ctrl in dir_names(Path::new("/sys/fs/cgroup")) {
        if ctrl == "cpuset" {
            continue;
        }
        let dir = Path::new("/sys/fs/cgroup").join(&ctrl).join(rel);
        if dir.is_dir() {
            out.push((ctrl, short_ids(dir_names(&dir))));
        }
    }
    out
}

/// Ids of the spaces whose overlay is mounted under `state`.
fn mounted_ids(state: &Path) -> BTreeSet<String> {
    let prefix = format!("{}/spaces/", state.display());
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    short_ids(info.lines().filter_map(|l| {
        let point = l.split(' ').nth(4)?;
        let rest = point.strip_prefix(&prefix)?;
        Some(rest.strip_suffix("/rootfs")?.to_string())
    }))
}

/// Ids of the spaces owning a host process (from `/proc/*/cgroup`), and
/// how many processes each has.
fn process_ids(parent: &str) -> std::collections::BTreeMap<String, usize> {
    let needle = format!(":{}/", parent);
    let mut out = std::collections::BTreeMap::new();
    for pid in dir_names(Path::new("/proc")) {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cg) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let id = cg.lines().find_map(|l| {
            let rest = &l[l.find(&needle)? + needle.len()..];
            Some(rest.split('/').next()?.to_string())
        });
        if let Some(id) = short_ids(id).into_iter().next() {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

/// Children of `pid` (all its threads).
fn children(pid: u32) -> Vec<u32> {
    dir_names(Path::new(&format!("/proc/{pid}/task")))
        .iter()
        .map(|t| fs::read_to_string(format!("/proc/{pid}/task/{t}/children")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

/// Names and 12-hex ids of the listed spaces, and the networked ones.
async fn listed(d: &Daemon) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (s, v) = d.get("/api/spaces").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let spaces = v["spaces"].as_array().expect("spaces").clone();
    let str_of = |s: &Value, k: &str| s[k].as_str().expect("string").to_string();
    (
        spaces.iter().map(|s| str_of(s, "name")).collect(),
        spaces.iter().map(|s| str_of(s, "id")).collect(),
        spaces
            .iter()
            .filter(|s| s["network"] == "internet")
            .map(|s| str_of(s, "id"))
            .collect(),
    )
}

/// Waits until no operation runs and every worker is idle.
async fn quiesce(d: &Daemon) -> Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    loop {
        let (s, v) = d.get("/api/system").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let w = v["workers"].clone();
        if w["operations"] == 0 && w["idle"] == w["size"] {
            quiet += 1;
            if quiet == 3 {
                return w;
            }
        } else {
            quiet = 0;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "runtime never went quiet: {w}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything on the host that belongs to a space of this daemon matches
/// the API's list exactly.
async fn assert_host_matches_api(d: &Daemon, netns_before: &BTreeSet<String>) {
    let w = quiesce(d).await;
    assert_eq!(w["idle"], w["size"], "a worker was lost: {w}");
    let (names, ids, networked) = listed(d).await;
    let state = d.state();
    let what = format!("listed: {names:?}");
    assert_eq!(
        short_ids(dir_names(&state.join("spaces"))),
        ids,
        "space dirs; {what}"
    );
    assert_eq!(
        short_ids(dir_names(&state.join("run"))),
        ids,
        "container state; {what}"
    );
    assert_eq!(mounted_ids(&state), ids, "overlay mounts; {what}");
    // A destroyed space's cgroup is removed once creates pause.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < end
        && cgroup_ids(&d.cgroup_parent)
            .iter()
            .any(|(_, set)| *set != ids)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (ctrl, set) in cgroup_ids(&d.cgroup_parent) {
        assert_eq!(set, ids, "cgroups ({ctrl}); {what}");
    }
    let procs = process_ids(&d.cgroup_parent);
    assert_eq!(
        procs.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "processes; {what}"
    );
    // Only the init is left in each space: every exec whose client hung
    // up was killed.
    for (id, n) in &procs {
        assert_eq!(*n, 1, "processes left in space {id}");
    }
    // Networked spaces: a netns and a port on the daemon's own bridge each;
    // no new namespace of ours without a listed space. The spare namespaces
    // the daemon keeps ready (listed in its state dir, each before it is
    // made) are no space's.
    let ports = short_ids(
        dir_names(
            &Path::new("/sys/class/net")
                .join(&d.network.bridge)
                .join("brif"),
        )
        .into_iter()
        .filter_map(|p| p.strip_prefix("cs").map(|s| format!("{s:0<64}"))),
    );
    let netns: BTreeSet<String> = dir_names(Path::new("/var/run/netns"))
        .into_iter()
        .filter_map(|n| n.strip_prefix("cs-").map(String::from))
        .collect();
    let spares = short_ids(
        fs::read_to_string(state.join("network-spares"))
            .unwrap_or_default()
            .lines()
            .map(String::from),
    );
    let ports: BTreeSet<String> = ports.difference(&spares).cloned().collect();
    let netns: BTreeSet<String> = netns.difference(&spares).cloned().collect();
    assert_eq!(ports, networked, "bridge ports; {what}");
    for id in &networked {
        assert!(netns.contains(id), "netns of {id}");
    }
    let seen: BTreeSet<String> = short_ids(dir_names(&state.join("spaces")));
    for n in netns.difference(netns_before) {
        let link = Path::new("/sys/class/net").join(format!("cs{n}"));
        let ours = fs::read_link(link.join("master")).is_ok_and(|m| m.ends_with(&d.network.bridge))
            || seen.contains(n);
        assert!(!ours || ids.contains(n), "orphan netns cs-{n}");
    }
    // Killed execs were reaped by their worker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let daemon = d.pid().expect("daemon runs");
    for w in children(daemon) {
        for c in children(w) {
            assert!(
                !is_zombie(c),
                "unreaped process {c} ({}) of worker {w}",
                fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn clients_that_hang_up_leave_no_orphan_ghost_or_lost_worker() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let netns_before: BTreeSet<String> = dir_names(Path::new("/var/run/netns"))
        .into_iter()
        .filter_map(|n| n.strip_prefix("cs-").map(String::from))
        .collect();
    // Spaces that are there from the start, to exec into and pause.
    for i in 0..4 {
        let net = if i == 0 { "internet" } else { "none" };
        let (s, v) = d
            .post(
                "/api/spaces",
                json!({"name": format!("keep{i}"), "memory": "64m", "network": net}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let started = std::time::Instant::now();
    const OPS: usize = 240;
    const AT_ONCE: usize = 6;
    let gate = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..OPS {
        let permit = gate.clone().acquire_owned().await.expect("gate");
        let (kind, target, delay, net, sleep) = {
            let mut r = rand::thread_rng();
            let target = if r.gen_bool(0.5) {
                format!("keep{}", r.gen_range(0..4))
            } else {
                format!("c{}", r.gen_range(0..=i))
            };
            (
                r.gen_range(0..100u32),
                target,
                Duration::from_millis(r.gen_range(0..=50)),
                if r.gen_range(0..8) == 0 {
                    "internet"
                } else {
                    "none"
                },
                r.gen_bool(0.5),
            )
        };
        let port = d.port;
        tasks.spawn(async move {
            let (method, path, body) = match kind {
                0..35 => (
                    "POST",
                    "/api/spaces".to_string(),
                    Some(json!({"name": format!("c{i}"), "memory": "64m", "network": net})),
                ),
                35..55 => ("DELETE", format!("/api/spaces/{target}"), None),
                55..80 => (
                    "POST",
                    format!("/api/spaces/{target}/exec"),
                    Some(json!({"command": if sleep { json!(["sleep", "30"]) } else { json!(["echo", "hi"]) }})),
                ),
                80..90 => ("POST", format!("/api/spaces/{target}/stop"), None),
                _ => ("POST", format!("/api/spaces/{target}/start"), None),
            };
            hang_up(port, method, &path, body, delay).await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let fired = started.elapsed();
    assert_host_matches_api(&d, &netns_before).await;
    eprintln!(
        "{OPS} hung-up operations fired in {fired:?}, quiet after {:?}",
        started.elapsed()
    );

    // Every later operation works, on old spaces and new ones.
    let (names, _, _) = listed(&d).await;
    assert!(names.len() >= 2, "some creates completed: {names:?}");
    for name in &names {
        let v = d.exec(name, json!(["echo", "ok"])).await;
        assert_eq!(v["stdout"], "ok", "{name}: {v}");
    }
    for net in ["none", "internet"] {
        let name = format!("after-{net}");
        let (s, v) = d
            .post(
                "/api/spaces",
                json!({"name": name, "memory": "64m", "network": net}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(d.exec(&name, json!("echo hi")).await["stdout"], "hi");
        let (s, v) = d.post(&format!("/api/spaces/{name}/stop"), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = d
            .post(&format!("/api/spaces/{name}/start"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    assert_host_matches_api(&d, &netns_before).await;
    // And everything goes with its space.
    let (names, _, _) = listed(&d).await;
    for name in &names {
        let (s, v) = d
            .call(
                reqwest::Method::DELETE,
                &format!("/api/spaces/{name}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{name}: {v}");
    }
    assert_host_matches_api(&d, &netns_before).await;
    assert!(listed(&d).await.0.is_empty());
}

/// The daemon's worker processes.
fn workers(daemon: u32) -> Vec<u32> {
    children(daemon)
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__clawdspace-worker"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn workers_killed_mid_call_are_replaced_and_their_calls_fail_cleanly() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let netns_before: BTreeSet<String> = dir_names(Path::new("/var/run/netns"))
        .into_iter()
        .filter_map(|n| n.strip_prefix("cs-").map(String::from))
        .collect();
    let daemon = d.pid().expect("daemon runs");
    let d = Arc::new(d);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // SIGKILL a random worker every 100 ms while spaces come and go.
    let killer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let w = workers(daemon);
                if w.is_empty() {
                    continue;
                }
                let pid = w[rand::thread_rng().gen_range(0..w.len())];
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                kills += 1;
            }
            kills
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..3 {
        let d = d.clone();
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..12 {
                let name = format!("w{t}-{i}");
                let net = if i % 6 == 0 { "internet" } else { "none" };
                let (s, v) = d
                    .post(
                        "/api/spaces",
                        json!({"name": name, "memory": "64m", "network": net}),
                    )
                    .await;
                assert!(
                    s == StatusCode::CREATED || s == StatusCode::INTERNAL_SERVER_ERROR,
                    "{s} {v}"
                );
                statuses.push(s);
                if s == StatusCode::CREATED {
                    let (s, v) = d.post(&format!("/api/spaces/{name}/stop"), json!({})).await;
                    assert!(s.is_success() || s.is_server_error(), "{s} {v}");
                    if i % 2 == 0 {
                        let (s, v) = d
                            .call(
                                reqwest::Method::DELETE,
                                &format!("/api/spaces/{name}"),
                                None,
                            )
                            .await;
                        assert!(s.is_success() || s.is_server_error(), "{s} {v}");
                    }
                }
            }
            statuses
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        statuses.extend(r.expect("client task"));
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let kills = killer.await.expect("killer");
    let failed = statuses
        .iter()
        .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
        .count();
    eprintln!(
        "{kills} workers killed; {} creates: {failed} failed",
        statuses.len()
    );
    assert!(kills > 5, "only {kills} kills");
    assert_host_matches_api(&d, &netns_before).await;
    // The pool is whole again and serves everything.
    let (names, _, _) = listed(&d).await;
    for name in &names {
        let v = d.exec(name, json!(["echo", "ok"])).await;
        assert_eq!(v["stdout"], "ok", "{name}: {v}");
        let (s, v) = d
            .call(
                reqwest::Method::DELETE,
                &format!("/api/spaces/{name}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{name}: {v}");
    }
    d.create("after").await;
    assert_eq!(d.exec("after", json!("echo hi")).await["stdout"], "hi");
    assert_host_matches_api(&d, &netns_before).await;
}
