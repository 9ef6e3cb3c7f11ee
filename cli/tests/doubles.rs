//! CLI tests against HTTP test doubles of `clawdspaced` (no root needed):
//! discovery and the cache file, TTL, placement (most free memory, GPU,
//! --server), configuration sources, 401 hints, usage and exit codes.

mod common;

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use common::{dead_port, Double, DoubleConfig, Home};
use serde_json::{json, Value};

fn double(hostname: &str) -> Double {
    Double::start(DoubleConfig::new(hostname))
}

/// A HOME probing `hosts` (in this order) with the key the doubles accept.
fn home_for(hosts: &[String]) -> Home {
    Home::new(&hosts.join(" "), Some("double-key"))
}

fn set_mtime_ago(path: &std::path::Path, secs: u64) {
    let f = fs::File::options()
        .write(true)
        .open(path)
        .expect("open cache");
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .expect("set mtime");
}

#[test]
fn discovery_writes_the_original_cache_format() {
    let a = double("Alpha-Box");
    let b = double("beta");
    let dead_port = dead_port();
    let dead = dead_port.port;
    // Listed out of order, with a dead host: the cache is sorted by name.
    let home = home_for(&[b.host(), format!("127.0.0.1:{dead}"), a.host()]);
    let r = home.run(&["servers", "--refresh"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .starts_with("Scanning known hosts...\nClawdspace Servers:\n\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(
        "NAME         URL                       STATUS   RESOURCES              CAPABILITIES"
    ));
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("alpha-box"))
        .expect("alpha-box row");
    assert_eq!(
        row.trim_end(),
        format!(
            "{:<12} {:<25} online   16cpu, 25.0%, x64",
            "alpha-box",
            a.url()
        )
    );
    assert!(r
        .stdout
        .contains("Tip: Use --gpu flag to auto-select a GPU server"));
    assert_eq!(
        home.cache(),
        format!("alpha-box={} beta={} ", a.url(), b.url()),
        "exact cache format: sorted entries, each followed by a space, no newline"
    );
    // The order of every listing is the cache order.
    let r = home.run(&["config"]);
    r.expect_code(0);
    let listed: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Discovered servers:"))
        .skip(1)
        .collect();
    assert_eq!(
        listed,
        vec![
            format!("  alpha-box: {}", a.url()),
            format!("  beta: {}", b.url())
        ]
    );
    let r = home.run(&["servers", "--json"]);
    r.expect_code(0);
    let v: Value = serde_json::from_str(&r.stdout).expect("servers --json");
    assert_eq!(v["servers"][0]["name"], "alpha-box");
    assert_eq!(v["servers"][1]["status"], "online");
}

#[test]
fn cache_ttl_is_300_seconds() {
    let a = double("alpha");
    let home = home_for(&[a.host()]);
    home.run(&["config"]).expect_code(0);
    assert_eq!(a.count("GET", "/api/health"), 1);
    assert_eq!(home.cache(), format!("alpha={} ", a.url()));
    // Fresh cache: no probing.
    home.run(&["config"]).expect_code(0);
    home.run(&["list"]).expect_code(0);
    assert_eq!(a.count("GET", "/api/health"), 1);
    // A cache younger than 300 s is used even when it names other servers.
    fs::write(home.cache_file(), format!("cached={} ", a.url())).expect("write cache");
    set_mtime_ago(&home.cache_file(), 290);
    let r = home.run(&["config"]);
    assert!(
        r.stdout.contains(&format!("  cached: {}", a.url())),
        "{}",
        r.stdout
    );
    assert_eq!(a.count("GET", "/api/health"), 1);
    // Older than 300 s: probed again and rewritten.
    set_mtime_ago(&home.cache_file(), 301);
    let r = home.run(&["config"]);
    assert!(
        r.stdout.contains(&format!("  alpha: {}", a.url())),
        "{}",
        r.stdout
    );
    assert_eq!(a.count("GET", "/api/health"), 2);
    assert_eq!(home.cache(), format!("alpha={} ", a.url()));
    // An empty cache counts as stale.
    fs::write(home.cache_file(), "").expect("write cache");
    home.run(&["config"]).expect_code(0);
    assert_eq!(a.count("GET", "/api/health"), 3);
    // --refresh always probes.
    home.run(&["servers", "-r"]).expect_code(0);
    assert_eq!(a.count("GET", "/api/health"), 4);
}

#[test]
fn same_hostname_twice_is_named_by_host_entry() {
    let a = double("samebox");
    let b = double("samebox");
    let home = home_for(&[a.host(), b.host()]);
    home.run(&["servers", "-r"]).expect_code(0);
    let mut expected = [
        format!("{}={}", a.host(), a.url()),
        format!("{}={}", b.host(), b.url()),
    ];
    expected.sort();
    assert_eq!(home.cache(), format!("{} {} ", expected[0], expected[1]));
}

#[test]
fn probing_a_silent_host_is_bounded() {
    let a = double("alpha");
    // Accepts connections (kernel backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let home = home_for(&[format!("127.0.0.1:{silent_port}"), a.host()]);
    let t = Instant::now();
    let r = home.run(&["servers", "--refresh"]);
    r.expect_code(0);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(home.cache(), format!("alpha={} ", a.url()));
    drop(silent);
}

#[test]
fn create_picks_the_server_with_most_free_memory() {
    let mut small = DoubleConfig::new("small");
    small.free = "2.0 GB".into();
    let mut big = DoubleConfig::new("big");
    big.free = "12.5 GB".into();
    let (small, big) = (Double::start(small), Double::start(big));
    let home = home_for(&[small.host(), big.host()]);
    let r = home.run(&["create", "sp"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains("Auto-selected server big: most free memory (12.5 GB free"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Creating space 'sp' on big...\n✓ Created space: sp\n  Server: big\n  Memory: 2g\n  CPUs: 1\n"), "{}", r.stdout);
    let posts: Vec<_> = big
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/api/spaces");
    assert_eq!(
        serde_json::from_str::<Value>(&posts[0].body).expect("json"),
        json!({"name": "sp", "memory": "2g", "cpus": 1, "gpu": false})
    );
    assert!(posts[0].body.contains(r#""cpus":1,"#) || posts[0].body.ends_with(r#""cpus":1}"#));
    assert_eq!(small.count("POST", "/api/spaces"), 0);

    // --server wins; flags after the name; fractional cpus; --image.
    let r = home.run(&[
        "create", "sp2", "--memory", "512m", "-c", "0.5", "-s", "small", "--image", "alpine:3",
    ]);
    r.expect_code(0);
    assert!(!r.stdout.contains("Auto-selected"));
    assert!(
        r.stdout.contains("  Memory: 512m\n  CPUs: 0.5\n"),
        "{}",
        r.stdout
    );
    let body = &small
        .requests()
        .into_iter()
        .rfind(|q| q.method == "POST")
        .expect("post")
        .body;
    let v: Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["cpus"], 0.5);
    assert_eq!(v["memory"], "512m");
    assert_eq!(v["image"], "alpine:3");
    assert!(v.get("network").is_none(), "the server's default");
    // --server accepts a URL and a configured host too; --network.
    let url = small.url();
    let sp3 = ["create", "sp3", "--server", &url, "--network", "none"];
    home.run(&sp3).expect_code(0);
    let posts = small.requests();
    let last = posts.iter().rfind(|q| q.method == "POST").expect("post");
    let v: Value = serde_json::from_str(&last.body).expect("json");
    assert_eq!(v["network"], "none");
    home.run(&["create", "-s", &small.host(), "sp4"])
        .expect_code(0);
    assert_eq!(small.count("POST", "/api/spaces"), 3);

    let r = home.run(&["create", "sp5", "--server", "nope"]);
    r.expect_code(1);
    assert!(r.stderr.contains("Unknown server: nope"), "{}", r.stderr);
    let r = home.run(&["create", "sp5", "--cpus", "lots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("Invalid cpus"), "{}", r.stderr);
    let sp6 = [
        "create",
        "sp6",
        "--server",
        &url,
        "--network",
        "lan",
        "--block-cidr",
        "10.0.0.0/8",
        "--allow-domain",
        "pypi.org",
        "--allow-domain",
        "*.github.com",
        "--allow-port",
        "443",
    ];
    home.run(&sp6).expect_code(0);
    let posts = small.requests();
    let last = posts.iter().rfind(|q| q.method == "POST").expect("post");
    let v: Value = serde_json::from_str(&last.body).expect("json");
    assert_eq!(
        v["network"],
        serde_json::json!({"mode": "lan", "blockCidrs": ["10.0.0.0/8"],
                           "allowDomains": ["pypi.org", "*.github.com"], "allowPorts": [443]})
    );
    let r = home.run(&["create", "sp5", "--network", "wan"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--network"), "{}", r.stderr);
    let r = home.run(&["create"]);
    r.expect_code(1);
    assert!(r.stderr.contains("Error: name required"));
    // A template decides what is not given: only given limits are sent.
    let r = home.run(&["create", "tp", "-s", "small", "-t", "gpu", "-m", "4g"]);
    r.expect_code(0);
    let last = small
        .requests()
        .into_iter()
        .rfind(|q| q.method == "POST")
        .expect("post");
    assert_eq!(
        serde_json::from_str::<Value>(&last.body).expect("json"),
        json!({"name": "tp", "memory": "4g", "template": "gpu"})
    );
    assert!(
        r.stdout
            .contains("  Template: gpu\n  Memory: 4g\n  CPUs: 4\n"),
        "{}",
        r.stdout
    );
    let r = home.run(&[
        "create",
        "tp2",
        "-s",
        "small",
        "--template",
        "offline",
        "-c",
        "2",
    ]);
    r.expect_code(0);
    let last = small
        .requests()
        .into_iter()
        .rfind(|q| q.method == "POST")
        .expect("post");
    assert_eq!(
        serde_json::from_str::<Value>(&last.body).expect("json"),
        json!({"name": "tp2", "cpus": 2, "template": "offline"})
    );
    assert!(
        r.stdout.contains("  Memory: 2g\n  CPUs: 2\n"),
        "{}",
        r.stdout
    );

    // list reads every server, in cache order.
    let r = home.run(&["ls"]);
    r.expect_code(0);
    let rows: Vec<&str> = r.stdout.lines().skip(4).collect();
    assert_eq!(rows.len(), 7, "{}", r.stdout);
    assert!(
        rows[0].starts_with("sp                   big          running      1cpu, 2.0GB"),
        "{}",
        r.stdout
    );
    assert!(
        rows[1].starts_with("sp2                  small        running      0.5cpu, 2.0GB"),
        "{}",
        r.stdout
    );
    // A server without WebSocket exec: the plain endpoint; trimmed output
    // gets a newline, stderr goes to stderr; flags after the name belong to
    // the command.
    let r = home.run(&["exec", "sp", "ls", "-la", "--color", "'a  b'"]);
    r.expect_code(5);
    assert_eq!(r.stdout, "ran: ls -la --color 'a  b'\n");
    assert_eq!(r.stderr, "  warn  \n");
    let r = home.run(&["list", "--json", "-s", "big"]);
    let v: Value = serde_json::from_str(&r.stdout).expect("list --json");
    assert_eq!(v["spaces"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["spaces"][0]["server"], "big");
}

#[test]
fn gpu_placement_uses_capabilities() {
    let mut plain = DoubleConfig::new("plain");
    plain.free = "30.0 GB".into();
    let mut gpu = DoubleConfig::new("rtx");
    gpu.gpu = true;
    gpu.free = "1.0 GB".into();
    let (plain, gpu) = (Double::start(plain), Double::start(gpu));
    let home = home_for(&[plain.host(), gpu.host()]);
    let r = home.run(&["create", "g1", "--gpu"]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("Looking for server with GPU...\nFound GPU server: rtx\nCreating space 'g1' on rtx...\n"), "{}", r.stdout);
    let body = &gpu
        .requests()
        .into_iter()
        .rfind(|q| q.method == "POST")
        .expect("post")
        .body;
    assert_eq!(
        serde_json::from_str::<Value>(body).expect("json"),
        json!({"name": "g1", "memory": "2g", "cpus": 1, "gpu": true})
    );
    assert_eq!(plain.count("POST", "/api/spaces"), 0);

    let r = home.run(&["servers"]);
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("rtx "))
        .expect("rtx row");
    assert!(row.trim_end().ends_with("🎮 3090"), "{row}");

    // A template that asks for a GPU places like --gpu; one only some
    // servers have goes to one of those.
    let r = home.run(&["create", "g3", "-t", "gpu"]);
    r.expect_code(0);
    assert!(
        r.stdout.starts_with("Template 'gpu' asks for a GPU: looking for server with GPU...\nFound GPU server: rtx\nCreating space 'g3' on rtx...\n"),
        "{}",
        r.stdout
    );
    let r = home.run(&["create", "g4", "-t", "default"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("Creating space 'g4' on plain..."),
        "{}",
        r.stdout
    );
    let mut only_rtx = DoubleConfig::new("rtx2");
    only_rtx.free = "1.0 GB".into();
    only_rtx
        .templates
        .push(("train".into(), "name: train\n".into()));
    let only_rtx = Double::start(only_rtx);
    let home2 = home_for(&[plain.host(), only_rtx.host()]);
    let r = home2.run(&["create", "g5", "-t", "train"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("Creating space 'g5' on rtx2..."),
        "{}",
        r.stdout
    );
    let r = home2.run(&["create", "g6", "-t", "nowhere"]);
    r.expect_code(1);
    assert!(
        r.stderr
            .contains("Error: Template 'nowhere' not found on any server"),
        "{}",
        r.stderr
    );
    assert_eq!(plain.count("POST", "/api/spaces"), 1, "only g4");

    // Without a GPU server.
    let home = home_for(&[plain.host()]);
    let r = home.run(&["create", "g2", "-g"]);
    r.expect_code(1);
    assert!(r.stdout.contains("Looking for server with GPU..."));
    assert!(
        r.stderr.contains("Error: No server with GPU found"),
        "{}",
        r.stderr
    );
    assert_eq!(plain.count("POST", "/api/spaces"), 1, "only g4");
}

#[test]
fn keys_and_hosts_come_from_env_then_file() {
    let a = double("alpha");
    // The file alone: CLAWDSPACE_KEY and CLAWDSPACE_HOSTS work there (D6).
    let home = Home::new("", None);
    fs::write(
        home.path().join(".clawdspace"),
        format!(
            "# settings\nexport CLAWDSPACE_KEY=\"double-key\"\nCLAWDSPACE_HOSTS='{}'\n",
            a.host()
        ),
    )
    .expect("config file");
    let r = home.run(&["config"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains(&format!("Known hosts:  {}", a.host())),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("API Key: do... (from CLAWDSPACE_KEY in ~/.clawdspace)"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("double-key"));
    assert!(
        r.stdout.contains(&format!("  alpha: {}", a.url())),
        "{}",
        r.stdout
    );
    home.run(&["list"]).expect_code(0);

    // Legacy spellings.
    let home = Home::new("", None);
    fs::write(
        home.path().join(".clawdspace"),
        format!("API_KEY=double-key\nKNOWN_HOSTS=\"{}\"\n", a.host()),
    )
    .expect("config file");
    let r = home.run(&["list"]);
    r.expect_code(0);
    assert!(r.stdout.contains("No spaces found."));

    // The environment wins over the file: a wrong key there gives a 401
    // that names where the key came from.
    let home = Home::new(&a.host(), Some("wrong-key"));
    fs::write(
        home.path().join(".clawdspace"),
        "CLAWDSPACE_KEY=double-key\n",
    )
    .expect("config file");
    let r = home.run(&["list"]);
    r.expect_code(1);
    assert!(r.stderr.contains("unauthorized"), "{}", r.stderr);
    assert!(
        r.stderr.contains("environment variable CLAWDSPACE_KEY"),
        "{}",
        r.stderr
    );
    let r = home.run(&["system", "-s", &a.host()]);
    r.expect_code(1);
    assert!(r.stderr.contains("refused the API key"), "{}", r.stderr);
    assert!(
        r.stderr.contains("environment variable CLAWDSPACE_KEY"),
        "{}",
        r.stderr
    );

    // Nothing configured: the built-in default key and localhost.
    let home = Home::new("", None);
    let r = home.run(&["config", "--json"]);
    r.expect_code(0);
    let v: Value = serde_json::from_str(&r.stdout).expect("config --json");
    assert_eq!(v["hosts"][0], "localhost");
    assert!(v["apiKeySource"]
        .as_str()
        .is_some_and(|s| s.contains("built-in default")));
}

#[test]
fn dead_servers_and_usage() {
    let a = double("alpha");
    let dead_port = dead_port();
    let dead = dead_port.port;
    let home = home_for(&[a.host()]);
    // A cached server that no longer answers.
    fs::write(
        home.cache_file(),
        format!("alpha={} ghost=http://127.0.0.1:{dead} ", a.url()),
    )
    .expect("cache");
    home.run(&["create", "one", "-s", "alpha"]).expect_code(0);
    let r = home.run(&["list"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains("one                  alpha        running"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!(
            "Warning: server 'ghost' (http://127.0.0.1:{dead}) did not answer"
        )),
        "{}",
        r.stderr
    );
    let r = home.run(&["servers"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains(&format!(
            "{:<12} {:<25} offline",
            "ghost",
            format!("http://127.0.0.1:{dead}")
        )),
        "{}",
        r.stdout
    );
    let r = home.run(&["exec", "missing", "true"]);
    r.expect_code(1);
    assert!(
        r.stderr
            .contains("Error: Space 'missing' not found on any server"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("alpha (http://127.0.0.1:"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("ghost could not be asked"),
        "{}",
        r.stderr
    );
    let r = home.run(&["stop", "missing"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("Error: Space 'missing' not found"),
        "{}",
        r.stderr
    );
    let r = home.run(&["system", "-s", "ghost"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("Error: Could not connect to ghost"),
        "{}",
        r.stderr
    );
    let r = home.run(&["system"]);
    r.expect_code(0);
    assert!(r.stdout.contains("System Status (alpha):\n\n  Hostname:   alpha\n  Platform:   linux (x64)\n  CPUs:       16\n  Load:       0.50\n  Memory:     25.0% (1.0 GB / 31.2 GB)\n  Uptime:     1d 2h 3m\n  Containers: 1 running\n"), "{}", r.stdout);

    // No server at all.
    let home = home_for(&[format!("127.0.0.1:{dead}")]);
    let r = home.run(&["create", "x"]);
    r.expect_code(1);
    assert!(
        r.stderr
            .contains("Error: No Clawdspace servers found. Run 'clawdspace servers --refresh'"),
        "{}",
        r.stderr
    );
    let r = home.run(&["list"]);
    r.expect_code(0);
    assert!(r.stdout.contains("  No spaces found."));
    let r = home.run(&["servers"]);
    r.expect_code(0);
    assert!(r.stdout.contains(
        "No Clawdspace servers found.\nAdd hosts to CLAWDSPACE_HOSTS in ~/.clawdspace\n"
    ));
    assert_eq!(home.cache(), "");

    // Usage and exit codes.
    let r = home.run(&[]);
    r.expect_code(0);
    assert!(r.stdout.contains("Usage: clawdspace"));
    let r = home.run(&["frobnicate"]);
    r.expect_code(1);
    assert!(r.stderr.contains("frobnicate"));
    home.run(&["exec", "onlyname"]).expect_code(1);
    for shell in ["bash", "zsh", "fish"] {
        let r = home.run(&["completions", shell]);
        r.expect_code(0);
        assert!(r.stdout.contains("clawdspace"), "{shell}");
    }
}
