//! Helpers of the CLI's integration tests: a private HOME per test, running
//! the built `clawdspace` binary, a small HTTP test double of `clawdspaced`,
//! and (as root) real daemons with a busybox image, cleaned up even when a
//! test fails.
//!
//! The daemon binary is built by the tests themselves (`cargo build -p
//! clawdspace-api --bin clawdspaced`, once per test binary) into the same
//! target directory as the test, because a test of this package cannot use
//! `CARGO_BIN_EXE_*` of another package.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The CLI under test.
pub const CLI: &str = env!("CARGO_BIN_EXE_clawdspace");
/// Image every test space uses.
pub const IMAGE: &str = "busybox-cli:latest";

/// Tests that start daemons run one at a time (2-core machines).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn unique() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A port of 127.0.0.1 where nothing answers (a connection is refused) and
/// that no other socket takes while this lives (a port only picked free
/// could be another test's server by the time it is dialled): a TCP socket
/// bound to it, never listening.
pub struct DeadPort {
    _socket: std::os::fd::OwnedFd,
    pub port: u16,
}

pub fn dead_port() -> DeadPort {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is checked, then owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor no one else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in of `len` bytes for both calls.
    let bound = unsafe {
        libc::bind(socket.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) == 0
            && libc::getsockname(
                socket.as_raw_fd(),
                std::ptr::from_mut(&mut addr).cast(),
                &mut len,
            ) == 0
    };
    assert!(bound, "bind: {}", std::io::Error::last_os_error());
    DeadPort {
        _socket: socket,
        port: u16::from_be(addr.sin_port),
    }
}

/// Removes ANSI colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a CLI run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: strip_ansi(&String::from_utf8_lossy(&o.stdout)),
            stderr: strip_ansi(&String::from_utf8_lossy(&o.stderr)),
        }
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A private HOME with the settings the CLI reads.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub hosts: String,
    pub key: Option<String>,
    /// Extra environment of the CLI.
    pub env: Vec<(String, String)>,
}

impl Home {
    pub fn new(hosts: &str, key: Option<&str>) -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp HOME"),
            hosts: hosts.to_string(),
            key: key.map(String::from),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache_file(&self) -> PathBuf {
        self.path().join(".clawdspace-servers")
    }

    pub fn cache(&self) -> String {
        fs::read_to_string(self.cache_file()).unwrap_or_default()
    }

    /// The CLI with this HOME; no inherited Clawdspace settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(CLI);
        c.args(args)
            .env("HOME", self.path())
            .env_remove("CLAWDSPACE_KEY")
            .env_remove("CLAWDSPACE_HOSTS")
            .env_remove("NO_COLOR")
            // No local daemon key file is found by accident.
            .env("CLAWDSPACE_STATE_DIR", self.path().join("no-daemon-here"));
        if !self.hosts.is_empty() {
            c.env("CLAWDSPACE_HOSTS", &self.hosts);
        }
        if let Some(k) = &self.key {
            c.env("CLAWDSPACE_KEY", k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs the CLI with stdin at end of file.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run clawdspace");
        Run::from(out)
    }

    /// Runs the CLI with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn clawdspace");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        Run::from(child.wait_with_output().expect("wait clawdspace"))
    }
}

/// One HTTP request: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    http_at("127.0.0.1", port, method, path, key, body)
}

/// One HTTP request to `ip:port`: (status, body).
pub fn http_at(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Some((status, body.to_string()))
}

// ---------------------------------------------------------------------------
// HTTP test double
// ---------------------------------------------------------------------------

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// How a test double presents itself.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    pub hostname: String,
    pub key: String,
    pub gpu: bool,
    /// `memory.free` as formatBytes prints it, e.g. "12.5 GB".
    pub free: String,
    /// Templates it has: name and YAML (`GET /api/templates/{name}`).
    pub templates: Vec<(String, String)>,
}

impl DoubleConfig {
    pub fn new(hostname: &str) -> DoubleConfig {
        DoubleConfig {
            hostname: hostname.into(),
            key: "double-key".into(),
            gpu: false,
            free: "8.0 GB".into(),
            // Two of a real server's defaults.
            templates: vec![
                (
                    "default".into(),
                    "name: default\nresources:\n  memory: 2g\n  cpus: 1\n".into(),
                ),
                (
                    "gpu".into(),
                    "name: gpu\nmanaged: true\nresources:\n  memory: 8g\n  cpus: 4\n  gpu: true\n"
                        .into(),
                ),
            ],
        }
    }
}

/// A small HTTP server speaking enough of the API for discovery and
/// placement tests.
pub struct Double {
    pub port: u16,
    pub config: DoubleConfig,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

/// Reads one request; returns it and its `Authorization` header.
fn read_request(stream: &mut TcpStream) -> Option<(Recorded, String)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    let rec = Recorded {
        method,
        path,
        body: String::from_utf8_lossy(&body).to_string(),
    };
    Some((rec, auth))
}

impl Double {
    pub fn start(config: DoubleConfig) -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind double");
        let port = listener.local_addr().expect("addr").port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let spaces: Arc<Mutex<Vec<Value>>> = Arc::default();
        {
            let (requests, stop, config) = (requests.clone(), stop.clone(), config.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let (requests, config, spaces) =
                        (requests.clone(), config.clone(), spaces.clone());
                    std::thread::spawn(move || {
                        let Some((rec, auth)) = read_request(&mut conn) else {
                            return;
                        };
                        requests
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(rec.clone());
                        let (status, body) = Double::answer(
                            &config,
                            &spaces,
                            &rec.method,
                            &rec.path,
                            &auth,
                            &rec.body,
                        );
                        let reason = match status {
                            200 => "OK",
                            201 => "Created",
                            401 => "Unauthorized",
                            _ => "Not Found",
                        };
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    });
                }
            });
        }
        Double {
            port,
            config,
            requests,
            stop,
        }
    }

    fn answer(
        c: &DoubleConfig,
        spaces: &Mutex<Vec<Value>>,
        method: &str,
        path: &str,
        auth: &str,
        body: &str,
    ) -> (u16, String) {
        if path == "/api/health" {
            return (200, r#"{"status":"ok","version":"1.0.0"}"#.into());
        }
        if auth != format!("Bearer {}", c.key) {
            return (401, r#"{"error":"Unauthorized"}"#.into());
        }
        let mut caps = json!({"gpu": c.gpu, "arch": "x64", "platform": "linux"});
        if c.gpu {
            caps["gpuName"] = json!("NVIDIA GeForce RTX 3090");
            caps["gpuMemory"] = json!("24576 MiB");
        }
        let mut spaces = spaces.lock().unwrap_or_else(|e| e.into_inner());
        match (method, path) {
            ("GET", "/api/system") => (
                200,
                json!({
                    "hostname": c.hostname, "platform": "linux", "arch": "x64", "cpus": 16,
                    "loadAverage": [0.5, 0.25, 0.1],
                    "memory": {"total": "31.2 GB", "free": c.free, "used": "1.0 GB", "percentage": "25.0%"},
                    "disk": null, "uptime": "1d 2h 3m",
                    "docker": {"version": "double", "containers": spaces.len(), "containersRunning": spaces.len(), "containersPaused": 0, "images": 1},
                    "capabilities": caps,
                })
                .to_string(),
            ),
            ("GET", "/api/system/capabilities") => {
                let mut caps = caps;
                caps["cpus"] = json!(16);
                caps["memory"] = json!(33_500_000_000u64);
                (200, caps.to_string())
            }
            ("GET", "/api/spaces") => (200, json!({ "spaces": *spaces }).to_string()),
            ("GET", p) if p.starts_with("/api/templates/") => {
                let name = &p["/api/templates/".len()..];
                match c.templates.iter().find(|(n, _)| n == name) {
                    Some((n, y)) => (200, json!({"name": n, "yaml": y}).to_string()),
                    None => (404, r#"{"error":"Template not found"}"#.into()),
                }
            }
            ("POST", "/api/spaces") => {
                let req: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let space = json!({
                    "name": req["name"], "id": "0123456789ab", "status": "running",
                    "created": "2024-01-10T10:00:00.000Z", "started": "2024-01-10T10:00:00.000Z",
                    "image": "double", "memory": 2147483648u64,
                    // A template's cores when none are asked for.
                    "cpus": if req["cpus"].is_null() { json!(4) } else { req["cpus"].clone() },
                    "lastActivity": "2024-01-10T10:00:00.000Z",
                });
                spaces.push(space.clone());
                (201, json!({ "space": space }).to_string())
            }
            // No WebSocket exec here: the CLI falls back to the plain endpoint.
            ("POST", p) if p.starts_with("/api/spaces/") && p.ends_with("/exec") => {
                let req: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let cmd = req["command"].as_str().unwrap_or("");
                (
                    200,
                    json!({"stdout": format!("ran: {cmd}"), "stderr": "  warn  ", "exitCode": 5})
                        .to_string(),
                )
            }
            ("GET", p) if p.starts_with("/api/spaces/") => {
                let name = &p["/api/spaces/".len()..];
                match spaces.iter().find(|s| s["name"] == name) {
                    Some(s) => (200, json!({ "space": s }).to_string()),
                    None => (404, r#"{"error":"Space not found"}"#.into()),
                }
            }
            _ => (404, r#"{"error":"Not found"}"#.into()),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests hit `method path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

// ---------------------------------------------------------------------------
// Real daemons (root)
// ---------------------------------------------------------------------------

/// Builds `clawdspaced` (once) next to the test binary and returns its path.
pub fn daemon_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        // <target>/<profile>/deps/<test> -> <target>/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("profile dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "clawdspace-api", "--bin", "clawdspaced"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p clawdspace-api failed");
        let bin = profile_dir.join("clawdspaced");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// One `clawdspaced` on a loopback port with its own state dir and cgroup.
pub struct Daemon {
    /// Loopback address it listens on (`CLAWDSPACE_LISTEN`).
    pub ip: String,
    pub port: u16,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    pub key: String,
    pub state: PathBuf,
    pub cgroup_parent: String,
    /// A bridge, subnet and nftables table of this daemon's own.
    pub network: clawdspace_runtime::NetworkConfig,
    child: Option<Child>,
}

impl Daemon {
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// One request to this daemon with its key: (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        http_at(&self.ip, self.port, method, path, &self.key, body)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn log(&self) -> PathBuf {
        self.state.join("daemon.log")
    }

    /// Starts it and waits until `/api/health` answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("daemon log");
        let child = Command::new(daemon_bin())
            .env("PORT", self.port.to_string())
            .env("CLAWDSPACE_LISTEN", self.host())
            // No Tailscale discovery unless a test asks for it.
            .env("CLAWDSPACE_TAILSCALE", "")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("API_KEY", &self.key)
            .env("CLAWDSPACE_STATE_DIR", &self.state)
            .env("CLAWDSPACE_CGROUP_PARENT", &self.cgroup_parent)
            .env("CLAWDSPACE_IMAGE", IMAGE)
            .env("CLAWDSPACE_WORKERS", "2")
            .env("CLAWDSPACE_LOG", "info")
            .env("CLAWDSPACE_BRIDGE", &self.network.bridge)
            .env("CLAWDSPACE_NETWORK_LINGER_MS", "0")
            .env("CLAWDSPACE_SUBNET", self.network.subnet.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn clawdspaced");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Some((200, body)) = self.call("GET", "/api/health", None) {
                if body.contains("\"ok\"") {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    panic!(
                        "clawdspaced exited ({st}):\n{}",
                        fs::read_to_string(self.log()).unwrap_or_default()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "clawdspaced did not answer on port {}:\n{}",
            self.port,
            fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Stops it (SIGTERM, then SIGKILL); its spaces keep running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Names of its spaces, through the API.
    pub fn spaces(&self) -> Vec<String> {
        let Some((200, body)) = self.call("GET", "/api/spaces", None) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["spaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A space's status, through the API.
    pub fn status(&self, name: &str) -> Option<String> {
        let (code, body) = self.call("GET", &format!("/api/spaces/{name}"), None)?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["space"]["status"].as_str().map(String::from)
    }

    /// Destroys every space through the API.
    fn destroy_all(&self) {
        for name in self.spaces() {
            let _ = self.call("DELETE", &format!("/api/spaces/{name}"), None);
        }
    }

    /// Last resort: kill whatever is left in our cgroups, unmount, remove.
    fn force_cleanup(&self) {
        clawdspace_runtime::purge::purge(&self.state, &self.cgroup_parent, None);
    }
}

/// Two (or more) daemons on loopback ports plus a HOME pointing at them.
pub struct Cluster {
    pub base: PathBuf,
    pub daemons: Vec<Daemon>,
    pub key: String,
    pub home: Home,
}

impl Cluster {
    /// `None` (test skipped) unless running as root.
    pub fn start(n: usize) -> Option<Cluster> {
        Cluster::start_with(n, |_, _| {})
    }

    /// Like [`Cluster::start`], with each daemon set up by `configure`
    /// (its index, the daemon) before it starts.
    pub fn start_with(n: usize, configure: impl Fn(usize, &mut Daemon)) -> Option<Cluster> {
        // These tests are `#[ignore = "needs root"]`: they run only when
        // asked for (`--include-ignored`), and then they must really run.
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root and real containers: run as root"
        );
        let tag = unique();
        let base = PathBuf::from(format!("/var/tmp/clawdspace-clitest-{tag}"));
        fs::create_dir_all(&base).expect("base dir");
        let key = format!("clitest-key-{tag}");
        let mut cluster = Cluster {
            base: base.clone(),
            daemons: Vec::new(),
            key: key.clone(),
            home: Home::new("", Some(&key)),
        };
        let rootfs = base.join("rootfs");
        clawdspace_runtime::image::busybox_rootfs(&rootfs).expect("busybox rootfs");
        for i in 0..n {
            let state = base.join(format!("d{i}"));
            fs::create_dir_all(&state).expect("state dir");
            clawdspace_runtime::image::ImageStore::open(&state)
                .expect("image store")
                .import_rootfs(IMAGE, &rootfs, Default::default())
                .expect("import busybox image");
            let mut d = Daemon {
                ip: "127.0.0.1".into(),
                port: free_port(),
                env: Vec::new(),
                key: key.clone(),
                state,
                cgroup_parent: format!("/clawdspace-clitest-{tag}-{i}"),
                network: clawdspace_runtime::NetworkConfig::private_for(rand::random()),
                child: None,
            };
            configure(i, &mut d);
            cluster.daemons.push(d);
        }
        for d in &mut cluster.daemons {
            d.start();
        }
        cluster.home.hosts = cluster
            .daemons
            .iter()
            .map(Daemon::host)
            .collect::<Vec<_>>()
            .join(" ");
        Some(cluster)
    }

    /// Daemon names as the CLI shows them: both daemons report this
    /// machine's hostname, so each is named by its host entry.
    pub fn name(&self, i: usize) -> String {
        self.daemons[i].host()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.home.run(args)
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        self.home.run_stdin(args, input)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            // Spaces are destroyed through the API, so a stopped daemon is
            // started again first.
            if !d.running() && d.state.exists() {
                let restarted =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.start()));
                if restarted.is_err() {
                    d.child = None;
                }
            }
            d.destroy_all();
            d.stop();
            d.force_cleanup();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
