//! Create extras and git push (SPEC 12) against a real daemon: `env` seen by
//! the init, piped and TTY execs; the environment file's owner, mode and
//! bytes; a clone from a git server the test runs (smart HTTP over TLS,
//! `git http-backend` behind a small Python server that wants a token) in
//! a network namespace standing for the internet, so the space reaches it
//! through its own network; the token never in `.git/config`; a push back
//! to it; and failures that are 400s leaving nothing behind. Needs root.
//!
//! The test image is busybox plus the host's own `git` (`/usr/bin/git`,
//! the remote helpers and the libraries `ldd` names, copied at their
//! paths) and the server's certificate as the CA bundle.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, KEY};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The image with git.
const GIT_IMAGE: &str = "git-test:latest";
/// The token the git server wants.
const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn run(cmd: &str, args: &[&str]) {
    let st = Proc::new(cmd).args(args).status().expect(cmd);
    assert!(st.success(), "{cmd} {args:?}");
}

fn git(dir: &Path, args: &[&str]) {
    let st = Proc::new("/usr/bin/git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("git");
    assert!(st.success(), "git {args:?}");
}

/// Copies host file `p` to the same path under `root` (its content, not a
/// link), with its mode.
fn copy_in(root: &Path, p: &Path) {
    let dst = root.join(p.strip_prefix("/").expect("absolute"));
    fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    fs::copy(p, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", p.display()));
}

/// Busybox plus the host's git, its https helper and their libraries,
/// `ca` as the CA bundle.
fn git_rootfs(root: &Path, ca: &Path) {
    clawdspace_runtime::image::busybox_rootfs(root).expect("busybox rootfs");
    let bins = [
        "/usr/bin/git",
        "/usr/lib/git-core/git",
        "/usr/lib/git-core/git-remote-http",
        "/usr/lib/git-core/git-remote-https",
    ];
    for b in bins {
        assert!(
            Path::new(b).exists(),
            "{b} missing: install the git package"
        );
        copy_in(root, Path::new(b));
        let out = Proc::new("ldd").arg(b).output().expect("ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)".
            let lib = match line.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                copy_in(root, Path::new(lib));
            }
        }
    }
    let certs = root.join("etc/ssl/certs");
    fs::create_dir_all(&certs).expect("certs dir");
    fs::copy(ca, certs.join("ca-certificates.crt")).expect("ca");
}

/// "The internet": a network namespace joined to the host by a veth, with
/// benchmark-range addresses (198.18.0.0/15, not blocked for spaces).
struct World {
    ns: String,
    link: String,
    ip: Ipv4Addr,
}

impl World {
    fn new() -> World {
        let tag: u32 = rand::random();
        let b = tag.to_be_bytes();
        let low = b[2] & 0xfc;
        let w = World {
            ns: format!("csx-{tag:08x}"),
            link: format!("csx{tag:08x}"),
            ip: Ipv4Addr::new(198, 19, b[1], low + 2),
        };
        let host = Ipv4Addr::new(198, 19, b[1], low + 1);
        run("ip", &["netns", "add", &w.ns]);
        run(
            "ip",
            &[
                "link", "add", &w.link, "type", "veth", "peer", "name", "eth0", "netns", &w.ns,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host}/30"), "dev", &w.link],
        );
        run("ip", &["link", "set", &w.link, "up"]);
        let n = |args: &[&str]| {
            let mut a = vec!["-n", w.ns.as_str()];
            a.extend_from_slice(args);
            run("ip", &a);
        };
        n(&["addr", "add", &format!("{}/30", w.ip), "dev", "eth0"]);
        n(&["link", "set", "eth0", "up"]);
        n(&["link", "set", "lo", "up"]);
        n(&["route", "add", "default", "via", &host.to_string()]);
        w
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Proc::new("ip").args(["link", "del", &self.link]).status();
        let _ = Proc::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Smart HTTP over TLS: `git http-backend` as CGI, only for requests that
/// carry the token (as GitHub takes it: Basic, any user, token as
/// password). Logs one line per request: method, path, authorized or not.
const SERVER: &str = r#"
import base64, http.server, os, ssl, subprocess, sys
ip, port, root, cert, key, token = sys.argv[1:7]
want = "Basic " + base64.b64encode(("x-access-token:" + token).encode()).decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def serve(self):
        ok = self.headers.get("Authorization") == want
        print(self.command, self.path, "auth" if ok else "anon", flush=True)
        if not ok:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=self.command,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER="x-access-token",
                   REMOTE_ADDR=self.client_address[0],
                   HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
                   HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        out = subprocess.run(["/usr/bin/git", "http-backend"], input=body, env=env,
                             capture_output=True).stdout
        head, _, data = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = serve
    do_POST = serve
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s = http.server.HTTPServer((ip, int(port)), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"#;

/// The git server: a process in the world's namespace, killed on drop.
struct GitServer {
    child: Child,
    /// The request lines logged so far.
    log: Arc<Mutex<Vec<String>>>,
    /// `https://<ip>:8443`.
    base: String,
    /// The bare repositories.
    root: PathBuf,
}

impl GitServer {
    /// Serves `root` on the world's address; `cert`/`key` are its TLS pair.
    fn start(w: &World, dir: &Path, cert: &Path, key: &Path) -> GitServer {
        let script = dir.join("server.py");
        fs::write(&script, SERVER).expect("server script");
        let root = dir.join("repos");
        fs::create_dir_all(&root).expect("repos");
        let mut child = Proc::new("ip")
            .args(["netns", "exec", &w.ns, "python3"])
            .arg(&script)
            .arg(w.ip.to_string())
            .arg("8443")
            .arg(&root)
            .arg(cert)
            .arg(key)
            .arg(TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the git server");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("server output");
        assert_eq!(line.trim(), "ready", "git server did not start");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        // Ends when the server does (its stdout closes).
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                lines.lock().expect("log").push(l);
            }
        });
        GitServer {
            child,
            log,
            base: format!("https://{}:8443", w.ip),
            root,
        }
    }

    /// The request lines logged so far.
    fn requests(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `ip` (it is its own CA).
fn certificate(dir: &Path, ip: Ipv4Addr) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Proc::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=git-test"])
        .args(["-addext", &format!("subjectAltName=IP:{ip}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl req");
    (cert, key)
}

/// A daemon, the world, the git server with a repository `r.git` (branch
/// `main`: README "hello"; branch `dev`: README "dev"), and the git image.
struct Setup {
    server: GitServer,
    d: Daemon,
    _world: World,
}

async fn setup() -> Setup {
    let d = Daemon::start(&[]).await.expect("daemon");
    let world = World::new();
    let dir = d.dir.join("git");
    fs::create_dir_all(&dir).expect("git dir");
    let (cert, key) = certificate(&dir, world.ip);
    let server = GitServer::start(&world, &dir, &cert, &key);
    // The repository: a work tree pushed to a bare one.
    let work = dir.join("work");
    fs::create_dir_all(&work).expect("work");
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "hello\n").expect("readme");
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-qm", "one"]);
    git(&work, &["checkout", "-qb", "dev"]);
    fs::write(work.join("README"), "dev\n").expect("readme");
    git(&work, &["commit", "-qam", "two"]);
    let bare = server.root.join("r.git");
    run(
        "/usr/bin/git",
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8"),
            bare.to_str().expect("utf-8"),
        ],
    );
    let rootfs = dir.join("rootfs");
    git_rootfs(&rootfs, &cert);
    clawdspace_runtime::image::ImageStore::open(&d.state())
        .and_then(|s| s.import_rootfs(GIT_IMAGE, &rootfs, Default::default()))
        .expect("import the git image");
    Setup {
        server,
        d,
        _world: world,
    }
}

/// `sh -c cmd` in `name`: (stdout, exit code).
async fn sh(d: &Daemon, name: &str, cmd: &str) -> (String, i64) {
    let v = d.exec(name, json!(cmd)).await;
    (
        v["stdout"].as_str().unwrap_or_default().to_string(),
        v["exitCode"].as_i64().unwrap_or(-1),
    )
}

/// What the host holds of the daemon's spaces: space dirs, volumes and
/// cgroups (each hierarchy).
fn leftovers(d: &Daemon) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["spaces", "volumes"] {
        if let Ok(rd) = fs::read_dir(d.state().join(sub)) {
            out.extend(rd.flatten().map(|e| format!("{sub}/{:?}", e.file_name())));
        }
    }
    let rel = d.cgroup_parent.trim_start_matches('/');
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for c in rd.flatten() {
            if let Ok(rd) = fs::read_dir(c.path().join(rel)) {
                out.extend(
                    rd.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| format!("cgroup {:?}", e.path())),
                );
            }
        }
    }
    out
}

/// [`leftovers`] once there are none, or after 10 s: a destroyed space's
/// cgroup is removed once creates pause.
async fn settled_leftovers(d: &Daemon) -> Vec<String> {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(d);
        if left.is_empty() || std::time::Instant::now() > end {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts a 400 whose message contains `what`, and that nothing of the
/// space is left: not listed, no directory, volume or cgroup.
async fn refused(d: &Daemon, body: Value, what: &str) {
    let (s, v) = d.post("/api/spaces", body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(what), "{body}: {msg}");
    assert!(!msg.contains(TOKEN), "the token is never echoed: {msg}");
    let (_, list) = d.get("/api/spaces").await;
    assert_eq!(list["spaces"], json!([]), "{body}");
    assert_eq!(settled_leftovers(d).await, Vec::<String>::new(), "{body}");
}

#[tokio::test]
#[ignore = "needs root"]
async fn env_reaches_the_init_and_piped_and_tty_execs() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "e", "memory": "256m", "network": "none",
                   "env": {"FOO": "bar baz", "HOME": "/tmp", "EMPTY": ""}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (out, _) = sh(&d, "e", "echo \"$FOO|$HOME|${EMPTY-unset}\"").await;
    assert_eq!(
        out, "bar baz|/tmp|",
        "piped exec, an image variable replaced"
    );
    // A working directory in the workspace volume is found there.
    let (s, v) = d
        .post(
            "/api/spaces/e/exec",
            json!({"command": "pwd; echo $FOO", "cwd": "/workspace"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "/workspace\nbar baz");
    let (init, _) = sh(&d, "e", "tr '\\0' '\\n' < /proc/1/environ | grep ^FOO=").await;
    assert_eq!(init, "FOO=bar baz", "the init's environment");
    // Over the WebSocket, on a terminal.
    let url = format!("ws://127.0.0.1:{}/api/spaces/e/exec/ws?key={KEY}", d.port);
    let mut ws = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0;
    let start = json!({"command": ["sh", "-c", "echo \"tty:$FOO\""], "tty": true});
    ws.send(Message::Text(start.to_string().into()))
        .await
        .expect("send");
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !out.contains("tty:bar baz") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if !b.is_empty() => {
                out.push_str(&String::from_utf8_lossy(&b[1..]))
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no tty output with the variable ({out:?}): {other:?}"),
        }
    }
    // Bad variables are refused before anything is made.
    for (env, what) in [
        (json!({"1A": "x"}), "Invalid env name"),
        (json!({"A=B": "x"}), "Invalid env name"),
        (json!({"A": 1}), "env must be an object of strings"),
        (json!({"A": "x\u{0}y"}), "NUL"),
        (json!({"A": "x".repeat(40 << 10)}), "longer than"),
    ] {
        let (s, v) = d
            .post("/api/spaces", json!({"name": "bad", "env": env}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{env}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains(what),
            "{v}"
        );
    }
    assert_eq!(d.get("/api/spaces/bad").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs root"]
async fn env_files_clones_and_pushes_go_through_the_space() {
    let t = setup().await;
    let d = &t.d;
    let url = format!("{}/r.git", t.server.base);
    // An env file (default path, text) and a private clone of branch dev.
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "g", "memory": "256m", "image": GIT_IMAGE,
                   "env": {"GITHUB_TOKEN": TOKEN},
                   "envFileText": "A=1\nB=two words\n",
                   "repoUrl": url, "repoBranch": "dev", "repoDest": "src/r"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let reqs = t.server.requests();
    assert!(
        reqs.iter().any(|r| r.ends_with(" auth")),
        "the clone sent the token: {reqs:?}"
    );
    let (out, _) = sh(
        d,
        "g",
        "stat -c '%u:%g %a' /workspace/.env; cat /workspace/.env",
    )
    .await;
    assert_eq!(out, "1000:1000 600\nA=1\nB=two words");
    let (out, _) = sh(
        d,
        "g",
        "cat /workspace/src/r/README; stat -c %u /workspace/src/r/README",
    )
    .await;
    assert_eq!(out, "dev\n1000", "branch dev, cloned as the space's user");
    let (config, _) = sh(d, "g", "cat /workspace/src/r/.git/config").await;
    assert!(config.contains(&url), "{config}");
    assert!(
        !config.contains(TOKEN),
        "token stored in .git/config: {config}"
    );
    assert!(!config.contains("credential"), "{config}");
    // A push back: the token comes with the request, not the space.
    let (_, code) = sh(
        d,
        "g",
        "cd /workspace/src/r && echo more >> README && git -c user.email=s@x -c user.name=s commit -qam three",
    )
    .await;
    assert_eq!(code, 0);
    let push = |body: Value| async move { d.post("/api/spaces/g/git/push", body).await };
    let (s, v) = push(json!({"repoPath": "/workspace/src/r", "remote": "origin",
                             "branch": "dev", "token": TOKEN}))
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["exitCode"], 0);
    assert!(v["stderr"].is_string() && v["stdout"].is_string(), "{v}");
    let log = Proc::new("/usr/bin/git")
        .arg("--git-dir")
        .arg(t.server.root.join("r.git"))
        .args(["log", "-1", "--format=%s", "dev"])
        .output()
        .expect("git log");
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "three");
    // Refusals: no token, relative or outside paths, option-like names, a
    // wrong token (a failing push).
    for (body, what) in [
        (json!({"repoPath": "/workspace/src/r"}), "token required"),
        (
            json!({"repoPath": "/workspace/src/r", "token": ""}),
            "token required",
        ),
        (json!({"repoPath": "src/r", "token": "x"}), "repoPath"),
        (
            json!({"repoPath": "/workspace/../etc", "token": "x"}),
            "repoPath",
        ),
        (json!({"repoPath": "/etc", "token": "x"}), "repoPath"),
        (
            json!({"repoPath": "/workspace/src/r", "token": "x", "remote": "--receive-pack=touch /tmp/p"}),
            "remote",
        ),
        (
            json!({"repoPath": "/workspace/src/r", "token": "x", "branch": "-f"}),
            "branch",
        ),
        (
            json!({"repoPath": "/workspace/src/r", "token": "x", "branch": "+dev"}),
            "branch",
        ),
        (
            json!({"repoPath": "/workspace/src/r", "token": "x", "branch": "dev;touch /tmp/p"}),
            "branch",
        ),
        (
            json!({"repoPath": "/workspace/src/r", "token": "wrong", "branch": "dev"}),
            "git push failed",
        ),
        (
            json!({"repoPath": "/workspace/nope", "token": "x"}),
            "working directory",
        ),
    ] {
        let (s, v) = push(body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(what), "{body}: {msg}");
        assert!(!msg.contains(TOKEN), "{msg}");
    }
    let (_, code) = sh(d, "g", "test -e /tmp/p").await;
    assert_eq!(code, 1, "nothing ran from a name");
    assert_eq!(
        d.post(
            "/api/spaces/none/git/push",
            json!({"repoPath": "/workspace", "token": "x"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // An env file from base64 at a path whose parents do not exist yet.
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "b", "memory": "256m", "image": GIT_IMAGE, "network": "none",
                   "envFileBase64": "AAEC/w==", "envFilePath": "/workspace/a/b/.env"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (out, _) = sh(
        d,
        "b",
        "od -An -tx1 /workspace/a/b/.env; stat -c '%u %a' /workspace/a/b/.env",
    )
    .await;
    assert_eq!(out, "00 01 02 ff\n1000 600");
}

#[tokio::test]
#[ignore = "needs root"]
async fn failed_extras_are_400s_that_leave_nothing() {
    let t = setup().await;
    let d = &t.d;
    let base = &t.server.base;
    let with = |extra: Value| {
        let mut b = json!({"name": "x", "memory": "256m", "image": GIT_IMAGE});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    };
    // Refused before anything is made.
    for (extra, what) in [
        (
            json!({"repoUrl": "http://example.com/r.git"}),
            "only https://",
        ),
        (json!({"repoUrl": "file:///etc"}), "only https://"),
        (
            json!({"repoUrl": "--upload-pack=touch /tmp/p"}),
            "Invalid repoUrl",
        ),
        (
            json!({"repoUrl": "ext::sh -c touch% /tmp/p"}),
            "Invalid repoUrl",
        ),
        (
            json!({"repoUrl": format!("https://u:{TOKEN}@x/r.git")}),
            "credentials",
        ),
        (json!({"repoUrl": "git@-oProxyCommand=x:r"}), "repoUrl"),
        (
            json!({"repoUrl": format!("{base}/r.git"), "repoDest": "../etc"}),
            "repoDest",
        ),
        (
            json!({"repoUrl": format!("{base}/r.git"), "repoDest": "/abs"}),
            "repoDest",
        ),
        (
            json!({"repoUrl": format!("{base}/r.git"), "repoBranch": "--orphan"}),
            "repoBranch",
        ),
        (
            json!({"envFileText": "x", "envFilePath": "rel/.env"}),
            "envFilePath",
        ),
        (json!({"envFileBase64": "not base64!"}), "envFileBase64"),
    ] {
        refused(d, with(extra), what).await;
    }
    // Failing inside the new space, which is then removed whole.
    for (extra, what) in [
        // Nothing listens there.
        (
            json!({"repoUrl": format!("https://{}:1/r.git", t._world.ip)}),
            "repo: cloning",
        ),
        // No such repository; no token for a private one.
        (
            json!({"repoUrl": format!("{base}/none.git"), "env": {"GITHUB_TOKEN": TOKEN}}),
            "repo: cloning",
        ),
        (json!({"repoUrl": format!("{base}/r.git")}), "repo: cloning"),
        (
            json!({"repoUrl": format!("{base}/r.git"), "repoBranch": "nope", "env": {"GITHUB_TOKEN": TOKEN}}),
            "nope",
        ),
        // The space's user cannot write there.
        (
            json!({"envFileText": "x", "envFilePath": "/etc/x/.env"}),
            "envFile: could not write /etc/x/.env",
        ),
        // No network: the clone cannot leave the space.
        (
            json!({"network": "none", "repoUrl": format!("{base}/r.git")}),
            "repo: cloning",
        ),
    ] {
        refused(d, with(extra), what).await;
    }
    // An image without git.
    refused(
        d,
        json!({"name": "x", "memory": "256m", "repoUrl": format!("{base}/r.git")}),
        "git is not installed in the image",
    )
    .await;
    // And a good create of the same name still works afterwards.
    d.create("x").await;
}

/// Host pids of `comm` in the daemon's cgroups.
fn processes_named(d: &Daemon, comm: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").expect("proc").flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let ours =
            fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(&d.cgroup_parent));
        let name = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if ours && name.trim() == comm {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_daemon_killed_during_a_clone_leaves_nothing_after_restart() {
    let mut t = setup().await;
    // A server that accepts and never answers: the clone hangs.
    let hang = Proc::new("ip")
        .args(["netns", "exec", &t._world.ns, "python3", "-c"])
        .arg(
            "import socket, sys, time\n\
             s = socket.socket(); s.bind((sys.argv[1], 9443)); s.listen()\n\
             print('ready', flush=True); c = s.accept(); time.sleep(600)",
        )
        .arg(t._world.ip.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hanging server");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut hang = Kill(hang);
    let mut line = String::new();
    BufReader::new(hang.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    let (http, url) = (t.d.http.clone(), t.d.url("/api/spaces"));
    let body = json!({"name": "h", "memory": "256m", "image": GIT_IMAGE,
                      "repoUrl": format!("https://{}:9443/r.git", t._world.ip)});
    tokio::spawn(async move {
        let _ = http.post(url).bearer_auth(KEY).json(&body).send().await;
    });
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while processes_named(&t.d, "git-remote-http").is_empty() {
        assert!(std::time::Instant::now() < end, "the clone never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.d.kill9();
    t.d.spawn().await;
    let (_, list) = t.d.get("/api/spaces").await;
    assert_eq!(list["spaces"], json!([]));
    let left: Vec<String> = leftovers(&t.d)
        .into_iter()
        .filter(|l| !l.starts_with("volumes/"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert!(processes_named(&t.d, "git-remote-http").is_empty());
    // The name is free again.
    t.d.create("h").await;
}
