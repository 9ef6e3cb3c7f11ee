//! A real `clawdspaced` for HTTP tests: private state dir, cgroup parent
//! and port, a busybox image; stopped and cleaned up (spaces, mounts,
//! cgroups, files) on drop, also when a test fails.

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

/// The test image.
pub const IMAGE: &str = "busybox-test:latest";
/// The test key.
pub const KEY: &str = "test-key-0123";

/// A daemon under test.
pub struct Daemon {
    pub port: u16,
    pub dir: PathBuf,
    pub cgroup_parent: String,
    /// A bridge, subnet and nftables table of this daemon's own.
    pub network: clawdspace_runtime::NetworkConfig,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub http: Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Daemon {
    /// Starts a daemon with extra environment; None (skip) unless root.
    pub async fn start(env: &[(&str, &str)]) -> Option<Daemon> {
        // These tests are `#[ignore = "needs root"]`: they run only when
        // asked for (`--include-ignored`), and then they must really run.
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root and real containers: run as root"
        );
        let tag = format!("{:08x}", rand::random::<u32>());
        let dir = PathBuf::from(format!("/var/tmp/clawdspace-apitest-{tag}"));
        let state = dir.join("state");
        fs::create_dir_all(&state).expect("state dir");
        let rootfs = dir.join("rootfs");
        clawdspace_runtime::image::busybox_rootfs(&rootfs).expect("busybox rootfs");
        clawdspace_runtime::image::ImageStore::open(&state)
            .and_then(|s| s.import_rootfs(IMAGE, &rootfs, Default::default()))
            .expect("import image");
        let mut d = Daemon {
            port: free_port(),
            cgroup_parent: format!("/clawdspace-apitest-{tag}"),
            network: clawdspace_runtime::NetworkConfig::private_for(rand::random()),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            http: Client::new(),
        };
        d.spawn().await;
        Some(d)
    }

    /// Sets an environment variable for the next [`Daemon::spawn`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Starts the daemon process and waits for /api/health.
    pub async fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clawdspaced"));
        cmd.env("PORT", self.port.to_string())
            .env("API_KEY", KEY)
            .env("CLAWDSPACE_STATE_DIR", self.state())
            .env("CLAWDSPACE_CGROUP_PARENT", &self.cgroup_parent)
            .env("CLAWDSPACE_IMAGE", IMAGE)
            .env("CLAWDSPACE_WORKERS", "2")
            .env("CLAWDSPACE_LOG", "warn")
            .env("CLAWDSPACE_BRIDGE", &self.network.bridge)
            // Tests see the bridge go with the last space, not a minute later.
            .env("CLAWDSPACE_NETWORK_LINGER_MS", "0")
            .env("CLAWDSPACE_SUBNET", self.network.subnet.to_string())
            // Tests never reach the internet: Docker Hub names go to a dead
            // loopback port instead.
            .env("CLAWDSPACE_DOCKER_MIRROR", "127.0.0.1:1")
            // Nor the host's GPU runtime: tests that want one set these.
            .env("CLAWDSPACE_CDI_DIRS", "")
            .env("CLAWDSPACE_NVIDIA_HOOK", "")
            .env("CLAWDSPACE_NVIDIA_DRIVER_ROOT", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // CLAWDSPACE_TEST_DAEMON_LOG=<file>: the daemon's log (level
        // CLAWDSPACE_TEST_DAEMON_LOG_LEVEL, default `warn`) is appended there.
        if let Some(path) = std::env::var_os("CLAWDSPACE_TEST_DAEMON_LOG") {
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("daemon log file");
            let level =
                std::env::var("CLAWDSPACE_TEST_DAEMON_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
            cmd.env("CLAWDSPACE_LOG", level)
                .stdout(log.try_clone().expect("daemon log file"))
                .stderr(log);
        }
        // A name of its own, to tell it from another test's daemon that
        // took the same port first (ports are picked free, then bound by
        // the daemon: two tests may pick the same one).
        let name = self
            .env
            .iter()
            .find(|(k, _)| k == "CLAWDSPACE_NODE_NAME")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("apitest-{:08x}", rand::random::<u32>()));
        cmd.env("CLAWDSPACE_NODE_NAME", &name);
        self.child = Some(cmd.spawn().expect("start clawdspaced"));
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
                .is_some()
            {
                // It could not start (its port taken meanwhile): another one.
                self.child = None;
                self.port = free_port();
                return Box::pin(self.spawn()).await;
            }
            if let Ok(r) = self.http.get(self.url("/api/health")).send().await {
                if r.status() == StatusCode::OK {
                    let (_, v) = self.get("/api/nodes").await;
                    if v["nodes"][0]["name"] == name.as_str() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < end, "daemon did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9 of the daemon (spaces must survive).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running daemon");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().expect("daemon exit")
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// An authenticated JSON request; returns status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .header("Authorization", format!("Bearer {KEY}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET with the key.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// POST JSON with the key.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a space (256m, 1 cpu) and asserts 201.
    pub async fn create(&self, name: &str) -> Value {
        let (s, v) = self
            .post(
                "/api/spaces",
                serde_json::json!({"name": name, "memory": "256m"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["space"].clone()
    }

    /// Runs a command; returns the ExecResult.
    pub async fn exec(&self, name: &str, command: Value) -> Value {
        let (s, v) = self
            .post(
                &format!("/api/spaces/{name}/exec"),
                serde_json::json!({ "command": command }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    fn force_cleanup(&self) {
        clawdspace_runtime::purge::purge(&self.dir, &self.cgroup_parent, Some(&self.dir));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        self.force_cleanup();
    }
}
