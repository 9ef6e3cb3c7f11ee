//! Workspaces and files against a real clawdspaced: the `/workspace`
//! volume's life, the upstream JSON file API (SPEC 12), the streaming file
//! API, archives both ways, hostile archives and symlinks, paused and
//! stopped spaces, and a 1 GiB round trip with the daemon's memory flat.
//! Needs root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Daemon, KEY};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// An authenticated request with a raw body; status, headers and bytes.
async fn raw(
    d: &Daemon,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut rb = d
        .http
        .request(method, d.url(path))
        .header("Authorization", format!("Bearer {KEY}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.expect("request");
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.bytes().await.expect("body").to_vec())
}

/// The text of a raw response.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sh -c cmd` in the space as `user`; stdout as the API gives it
/// (trimmed), asserting exit 0.
async fn sh_as(d: &Daemon, name: &str, user: &str, cmd: &str) -> String {
    let (s, v) = d
        .post(
            &format!("/api/spaces/{name}/exec"),
            json!({ "command": cmd, "user": user }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["exitCode"], 0, "{cmd}: {v}");
    v["stdout"].as_str().unwrap_or_default().to_string()
}

async fn sh(d: &Daemon, name: &str, cmd: &str) -> String {
    sh_as(d, name, "sandbox", cmd).await
}

#[tokio::test]
#[ignore = "needs root"]
async fn the_upstream_json_file_api_answers_as_spec_12() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let space = d.create("ws").await;
    assert_eq!(
        space["volume"],
        json!({"name": "ws", "mountpoint": "/workspace"})
    );
    // The working directory stays SPEC 7's.
    assert_eq!(sh(&d, "ws", "pwd").await, "/home/sandbox");
    let put = |p: &str, b: Value| {
        let p = p.to_string();
        let d = &d;
        async move {
            let (s, _, b) = raw(
                d,
                Method::PUT,
                &p,
                Some(serde_json::to_vec(&b).expect("json")),
                &[("content-type", "application/json")],
            )
            .await;
            (s, text(&b))
        }
    };
    assert_eq!(
        put(
            "/api/spaces/ws/file?path=hello.txt",
            json!({"contentBase64": "aGVsbG8="})
        )
        .await,
        (StatusCode::OK, r#"{"message":"OK"}"#.to_string())
    );
    assert_eq!(sh(&d, "ws", "cat /workspace/hello.txt").await, "hello");
    assert_eq!(
        sh(
            &d,
            "ws",
            "stat -c '%u:%g %a' /workspace/hello.txt /workspace"
        )
        .await,
        "1000:1000 644\n1000:1000 755"
    );
    let get = |p: &str| {
        let p = p.to_string();
        let d = &d;
        async move {
            let (s, _, b) = raw(d, Method::GET, &p, None, &[]).await;
            (s, text(&b))
        }
    };
    assert_eq!(
        get("/api/spaces/ws/file?path=hello.txt").await,
        (
            StatusCode::OK,
            r#"{"path":"hello.txt","contentBase64":"aGVsbG8=","truncated":false}"#.to_string()
        )
    );
    assert_eq!(
        get("/api/spaces/ws/file?path=/hello.txt&maxBytes=2").await,
        (
            StatusCode::OK,
            r#"{"path":"/hello.txt","contentBase64":"aGU=","truncated":true}"#.to_string()
        )
    );
    // `..` is clamped at /workspace: nothing lands outside it.
    assert_eq!(
        put(
            "/api/spaces/ws/file?path=../../etc/clawdspace-up",
            json!({"contentBase64": "eA=="})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        sh(
            &d,
            "ws",
            "cat /workspace/etc/clawdspace-up; ls /etc/clawdspace-up 2>&1 || true"
        )
        .await,
        "xls: /etc/clawdspace-up: No such file or directory"
    );
    assert!(!Path::new("/etc/clawdspace-up").exists());
    // The listing.
    let (s, body) = get("/api/spaces/ws/files?path=/").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/");
    let e = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == "hello.txt")
        .expect("hello.txt listed")
        .clone();
    assert_eq!(e["path"], "/hello.txt");
    assert_eq!(e["type"], "file");
    assert_eq!(e["size"], 5);
    assert!(e["mtimeMs"].as_i64().expect("mtimeMs") > 1_600_000_000_000);
    let keys: Vec<&String> = e.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 5, "{e}");
    let etc = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == "etc")
        .expect("etc listed");
    assert_eq!(etc["type"], "dir");
    // Errors, worded as upstream words them.
    let err = |m: &str| format!(r#"{{"error":"{m}"}}"#);
    assert_eq!(
        get("/api/spaces/ws/file").await,
        (StatusCode::BAD_REQUEST, err("path required"))
    );
    assert_eq!(
        get("/api/spaces/ws/file?path=").await,
        (StatusCode::BAD_REQUEST, err("path required"))
    );
    assert_eq!(
        put("/api/spaces/ws/file", json!({"contentBase64": "eA=="})).await,
        (StatusCode::BAD_REQUEST, err("path required"))
    );
    assert_eq!(
        put("/api/spaces/ws/file?path=x", json!({})).await,
        (StatusCode::BAD_REQUEST, err("contentBase64 required"))
    );
    assert_eq!(
        put("/api/spaces/ws/file?path=x", json!({"contentBase64": 5})).await,
        (StatusCode::BAD_REQUEST, err("contentBase64 required"))
    );
    // A missing space is a 404 (upstream: 500), a missing file too.
    for p in [
        "/api/spaces/nope/files?path=/",
        "/api/spaces/nope/file?path=x",
        "/api/spaces/nope/fs?path=/x",
        "/api/spaces/ws/file?path=missing",
        "/api/spaces/ws/files?path=missing",
    ] {
        assert_eq!(get(p).await.0, StatusCode::NOT_FOUND, "{p}");
    }
    assert_eq!(
        put(
            "/api/spaces/nope/file?path=x",
            json!({"contentBase64": "eA=="})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_volume_is_kept_reattached_and_removed_on_request() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("keep").await;
    sh(&d, "keep", "echo kept > /workspace/note").await;
    let vol = d.state().join("volumes/keep");
    let (s, _) = d.call(Method::DELETE, "/api/spaces/keep", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(vol.join("note").is_file(), "the volume is kept");
    let (s, v) = d.get("/api/volumes").await;
    assert_eq!(s, StatusCode::OK);
    let listed = v["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|x| x["name"] == "keep")
        .expect("listed")
        .clone();
    assert_eq!(listed["inUseBy"], Value::Null);
    assert!(listed["sizeBytes"].as_u64().expect("size") > 0);
    // Reattached by a new space of the same name.
    d.create("keep").await;
    assert_eq!(sh(&d, "keep", "cat /workspace/note").await, "kept");
    let (_, v) = d.get("/api/volumes").await;
    assert!(v["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|x| x["name"] == "keep" && x["inUseBy"] == "keep"));
    let (s, v) = d.call(Method::DELETE, "/api/volumes/keep", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().expect("error").contains("in use"),
        "{v}"
    );
    for name in ["nope", "..", "a%2Fb"] {
        let (s, _) = d
            .call(Method::DELETE, &format!("/api/volumes/{name}"), None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{name}");
    }
    let (s, _) = d
        .call(Method::DELETE, "/api/spaces/keep?removeVolume=true", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!vol.exists(), "removed with the space");
    let (_, v) = d.get("/api/volumes").await;
    assert_eq!(v["volumes"], json!([]));
    // A kept volume can be removed on its own.
    d.create("other").await;
    sh(&d, "other", "echo x > /workspace/x").await;
    d.call(Method::DELETE, "/api/spaces/other", None).await;
    let (s, v) = d.call(Method::DELETE, "/api/volumes/other", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!d.state().join("volumes/other").exists());
    // A new space starts with an empty volume then.
    d.create("other").await;
    assert_eq!(sh(&d, "other", "ls -A /workspace").await, "");
}

/// `n` bytes of a cheap pseudo-random pattern.
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn files_stream_in_and_out_with_ranges_etags_stat_and_delete() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("fs").await;
    // Bigger than the JSON body limit: the body is streamed.
    let data = pattern(3 << 20, 7);
    let p = "/api/spaces/fs/fs?path=/home/sandbox/a/b%20c.bin&mkdirs=true&mode=0600";
    let (s, _, b) = raw(&d, Method::PUT, p, Some(data.clone()), &[]).await;
    assert_eq!(s, StatusCode::OK, "{}", text(&b));
    let st: Value = serde_json::from_slice(&b).expect("json");
    assert_eq!(st["type"], "file");
    assert_eq!(st["size"], data.len());
    assert_eq!(st["mode"], 0o600);
    assert_eq!(st["uid"], 1000);
    assert_eq!(
        sh(
            &d,
            "fs",
            "stat -c '%u %a %s' '/home/sandbox/a/b c.bin'; stat -c %u /home/sandbox/a"
        )
        .await,
        format!("1000 600 {}\n1000", data.len())
    );
    let get = "/api/spaces/fs/fs?path=/home/sandbox/a/b%20c.bin";
    let (s, h, b) = raw(&d, Method::GET, get, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, data);
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    let etag = h["etag"].to_str().expect("etag").to_string();
    let (s, _, _) = raw(&d, Method::GET, get, None, &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, h, b) = raw(&d, Method::GET, get, None, &[("range", "bytes=10-19")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b, &data[10..20]);
    assert_eq!(
        h["content-range"],
        format!("bytes 10-19/{}", data.len()).as_str()
    );
    let (_, _, b) = raw(&d, Method::GET, get, None, &[("range", "bytes=-5")]).await;
    assert_eq!(b, &data[data.len() - 5..]);
    let (s, h, _) = raw(&d, Method::GET, get, None, &[("range", "bytes=99999999-")]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        h["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
    // Replaced whole, never torn: a new ETag.
    let (s, _, _) = raw(&d, Method::PUT, get, Some(b"new".to_vec()), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (_, h, b) = raw(&d, Method::GET, get, None, &[]).await;
    assert_eq!(b, b"new");
    assert_ne!(h["etag"].to_str().expect("etag"), etag);
    assert_eq!(sh(&d, "fs", "ls -A /home/sandbox/a").await, "b c.bin");
    // stat: symlinks are not followed.
    sh(&d, "fs", "ln -s '/home/sandbox/a/b c.bin' /home/sandbox/l").await;
    let (s, v) = d.get("/api/spaces/fs/fs/stat?path=/home/sandbox/l").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["type"], "symlink");
    assert_eq!(v["linkTarget"], "/home/sandbox/a/b c.bin");
    let (_, v) = d.get("/api/spaces/fs/fs/stat?path=/home/sandbox/a").await;
    assert_eq!(v["type"], "dir");
    // …but reads follow them, inside the space.
    let (_, _, b) = raw(
        &d,
        Method::GET,
        "/api/spaces/fs/fs?path=/home/sandbox/l",
        None,
        &[],
    )
    .await;
    assert_eq!(b, b"new");
    // Bad requests.
    for (m, p, want) in [
        (Method::GET, "/api/spaces/fs/fs?path=relative", 400),
        (Method::GET, "/api/spaces/fs/fs", 400),
        (Method::GET, "/api/spaces/fs/fs?path=/home/sandbox", 400),
        (Method::GET, "/api/spaces/fs/fs?path=/nope", 404),
        (Method::PUT, "/api/spaces/fs/fs?path=/no/such/dir/f", 404),
        (Method::PUT, "/api/spaces/fs/fs?path=/home/sandbox/a", 400),
        (
            Method::PUT,
            "/api/spaces/fs/fs?path=/home/sandbox/f&mode=999",
            400,
        ),
        (
            Method::PUT,
            "/api/spaces/fs/fs?path=/home/sandbox/f&mkdirs=maybe",
            400,
        ),
        (Method::DELETE, "/api/spaces/fs/fs?path=/", 400),
        (Method::DELETE, "/api/spaces/fs/fs?path=/nope", 404),
    ] {
        let (s, _, b) = raw(&d, m.clone(), p, Some(b"x".to_vec()), &[]).await;
        assert_eq!(s.as_u16(), want, "{m} {p}: {}", text(&b));
        let v: Value = serde_json::from_slice(&b).expect("json error");
        assert!(v["error"].is_string(), "{v}");
    }
    assert_eq!(sh(&d, "fs", "ls -A /home/sandbox/a").await, "b c.bin");
    // DELETE: a symlink itself, then a directory with its contents.
    let (s, _, _) = raw(
        &d,
        Method::DELETE,
        "/api/spaces/fs/fs?path=/home/sandbox/l",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sh(&d, "fs", "cat /home/sandbox/a/*").await, "new");
    let (s, _, _) = raw(
        &d,
        Method::DELETE,
        "/api/spaces/fs/fs?path=/home/sandbox/a",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sh(&d, "fs", "ls -A /home/sandbox").await, "");
}

/// The space's view of a tree: names, types, modes, link counts, targets
/// and contents.
const DESCRIBE: &str = "cd \"$1\" && find . | sort | while read -r f; do \
    printf '%s %s %s' \"$f\" \"$(stat -c '%F %a %h %u' \"$f\")\"; \
    if [ -L \"$f\" ]; then printf ' -> %s' \"$(readlink \"$f\")\"; \
    elif [ -f \"$f\" ]; then printf ' %s' \"$(md5sum < \"$f\" | cut -c1-8)\"; fi; echo; done";

#[tokio::test]
#[ignore = "needs root"]
async fn a_tree_round_trips_through_archives() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("tar").await;
    sh(
        &d,
        "tar",
        "mkdir -p /workspace/t/sub/deeper && cd /workspace/t && \
         echo one > 'a file with spaces' && chmod 0751 'a file with spaces' && \
         echo two > sub/deeper/x && chmod 0700 sub && ln sub/deeper/x hard && \
         ln -s 'a file with spaces' rel-link && ln -s /etc/passwd abs-link && \
         mkfifo sub/pipe && head -c 300000 /dev/urandom > big && : > empty",
    )
    .await;
    let (s, h, tarball) = raw(
        &d,
        Method::GET,
        "/api/spaces/tar/archive?path=/workspace/t",
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", text(&tarball));
    assert_eq!(h["content-type"], "application/x-tar");
    // The host's tar reads it.
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("t.tar"), &tarball).expect("write");
    let listing = Command::new("tar")
        .arg("tvf")
        .arg(dir.path().join("t.tar"))
        .output()
        .expect("tar");
    let listing = text(&listing.stdout);
    assert!(listing.contains("a file with spaces"), "{listing}");
    assert!(
        listing.contains("rel-link -> a file with spaces"),
        "{listing}"
    );
    assert!(listing.contains("link to"), "a hardlink: {listing}");
    // Into another space, at a new place.
    d.create("tar2").await;
    let (s, _, b) = raw(
        &d,
        Method::PUT,
        "/api/spaces/tar2/archive?path=/home/sandbox/copy",
        Some(tarball),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", text(&b));
    let describe = |name: &'static str, at: &'static str| {
        let d = &d;
        async move { sh(d, name, &format!("set -- {at}; {DESCRIBE}")).await }
    };
    let before = describe("tar", "/workspace/t").await;
    let after = describe("tar2", "/home/sandbox/copy").await;
    assert!(before.contains("regular file 751 1 1000"), "{before}");
    assert!(before.contains("hard regular file 644 2"), "{before}");
    assert!(before.contains("fifo"), "{before}");
    assert_eq!(before, after);
}

/// An entry of a hand-made tar: name bytes, type, link target, data.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// A tar of `entries`, names written raw (no checks of the `tar` crate's).
fn hostile_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

#[tokio::test]
#[ignore = "needs root"]
async fn hostile_archives_are_refused_and_write_nothing_outside() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("h").await;
    let decoy = d.dir.join("decoy");
    fs::create_dir_all(&decoy).expect("decoy");
    let decoy_b = decoy.to_string_lossy().into_owned();
    let climb = format!("{}{}", "../".repeat(12), decoy_b.trim_start_matches('/'));
    use tar::EntryType as T;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", hostile_tar(&[(b"../x", T::Regular, b"", b"x")])),
        (
            "deep dotdot",
            hostile_tar(&[(format!("{climb}/x").as_bytes(), T::Regular, b"", b"x")]),
        ),
        (
            "absolute",
            hostile_tar(&[(b"/etc/x", T::Regular, b"", b"x")]),
        ),
        (
            "symlink then write through it",
            hostile_tar(&[
                (b"l", T::Symlink, decoy_b.as_bytes(), b""),
                (b"l/x", T::Regular, b"", b"x"),
            ]),
        ),
        (
            "relative symlink then write through it",
            hostile_tar(&[
                (b"r", T::Symlink, climb.as_bytes(), b""),
                (b"r/x", T::Regular, b"", b"x"),
            ]),
        ),
        (
            "hardlink out",
            hostile_tar(&[(b"hl", T::Link, b"../../../../../../etc/passwd", b"")]),
        ),
        (
            "hardlink absolute",
            hostile_tar(&[(b"ha", T::Link, b"/etc/passwd", b"")]),
        ),
    ];
    for (what, tarball) in cases {
        let (s, _, b) = raw(
            &d,
            Method::PUT,
            "/api/spaces/h/archive?path=/workspace/in",
            Some(tarball),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {}", text(&b));
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .starts_with("archive entry"),
            "{what}: {v}"
        );
        assert_eq!(fs::read_dir(&decoy).expect("decoy").count(), 0, "{what}");
    }
    assert!(!Path::new("/etc/x").exists());
    assert!(!d.state().join("volumes/x").exists());
    assert!(!d.state().join("x").exists());
    // Nothing but the symlinks the hostile entries planted inside.
    assert_eq!(sh(&d, "h", "ls -A /workspace/in").await, "l\nr");
    // And a symlink already in the space leads nowhere outside either.
    sh(&d, "h", &format!("ln -s {decoy_b} /workspace/in/out")).await;
    let good = hostile_tar(&[(b"out/x", T::Regular, b"", b"x")]);
    let (s, _, _) = raw(
        &d,
        Method::PUT,
        "/api/spaces/h/archive?path=/workspace/in",
        Some(good.clone()),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // As the destination it leads nowhere inside the space: refused,
    // nothing made on the host.
    let (s, _, b) = raw(
        &d,
        Method::PUT,
        "/api/spaces/h/archive?path=/workspace/in/out",
        Some(hostile_tar(&[(b"y", T::Regular, b"", b"y")])),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{}", text(&b));
    assert_eq!(fs::read_dir(&decoy).expect("decoy").count(), 0);
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_symlink_to_the_hosts_shadow_reads_the_spaces_own_file_or_fails() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("sh").await;
    sh_as(&d, "sh", "root", "echo space-shadow > /etc/shadow").await;
    sh(
        &d,
        "sh",
        "ln -s /etc/shadow /home/sandbox/abs && \
         ln -s ../../../../../../../etc/shadow /home/sandbox/rel && \
         ln -s /etc/shadow /workspace/abs && ln -s /proc/1/root/etc/shadow /home/sandbox/proc",
    )
    .await;
    let host = fs::read("/etc/shadow").unwrap_or_default();
    for p in [
        "/api/spaces/sh/fs?path=/home/sandbox/abs",
        "/api/spaces/sh/fs?path=/home/sandbox/rel",
        "/api/spaces/sh/fs?path=/home/sandbox/abs/../abs",
        "/api/spaces/sh/fs?path=/workspace/abs",
        "/api/spaces/sh/fs?path=/home/sandbox/proc",
        "/api/spaces/sh/file?path=abs",
    ] {
        let (s, _, b) = raw(&d, Method::GET, p, None, &[]).await;
        assert!(
            !host.is_empty()
                && !b
                    .windows(host.len().min(16))
                    .any(|w| w == &host[..host.len().min(16)]),
            "{p} answered the host's file"
        );
        if s == StatusCode::OK && !p.contains("file?") {
            assert_eq!(b, b"space-shadow\n", "{p}");
        } else if s != StatusCode::OK {
            assert!(s.is_client_error(), "{p}: {s}");
        }
    }
    // Writes through a symlink land inside the space too.
    let (s, _, _) = raw(
        &d,
        Method::PUT,
        "/api/spaces/sh/fs?path=/home/sandbox/abs",
        Some(b"rewritten".to_vec()),
        &[],
    )
    .await;
    assert!(s.is_client_error() || s == StatusCode::OK);
    assert_eq!(fs::read("/etc/shadow").unwrap_or_default(), host);
}

/// The record of space `name` in the daemon's state dir.
fn record(d: &Daemon, name: &str) -> (PathBuf, Value) {
    for e in fs::read_dir(d.state().join("spaces"))
        .expect("spaces")
        .flatten()
    {
        if let Ok(b) = fs::read(e.path().join("space.json")) {
            let v: Value = serde_json::from_slice(&b).expect("record");
            if v["name"] == name {
                return (e.path(), v);
            }
        }
    }
    panic!("no record of {name}");
}

#[tokio::test]
#[ignore = "needs root"]
async fn files_of_paused_and_stopped_spaces_are_reachable() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("p").await;
    sh(&d, "p", "echo home > ~/h && echo ws > /workspace/w").await;
    let (s, _) = d.post("/api/spaces/p/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d.get("/api/spaces/p").await.1["space"]["status"], "paused");
    let read = |p: &str| {
        let p = format!("/api/spaces/p/fs?path={p}");
        let d = &d;
        async move { raw(d, Method::GET, &p, None, &[]).await }
    };
    assert_eq!(read("/home/sandbox/h").await.2, b"home\n");
    assert_eq!(read("/workspace/w").await.2, b"ws\n");
    let (s, _, _) = raw(
        &d,
        Method::PUT,
        "/api/spaces/p/fs?path=/workspace/while-paused",
        Some(b"z".to_vec()),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d.get("/api/spaces/p").await.1["space"]["status"], "paused");
    d.post("/api/spaces/p/start", json!({})).await;
    // Stopped: a restart that fails (its home leads nowhere) after the
    // init is killed.
    sh(&d, "p", "rm -f ~/h").await;
    sh_as(&d, "p", "root", "rm -rf /home && ln -s /nowhere /home").await;
    let (dir, rec) = record(&d, "p");
    let pid = rec["initPid"].as_i64().expect("init pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill init");
    let mut stopped = false;
    for _ in 0..100 {
        if d.get("/api/spaces/p").await.1["space"]["status"] == "stopped" {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "the space should be stopped");
    assert_eq!(read("/workspace/w").await.2, b"ws\n");
    let (s, _, b) = read("/etc/passwd").await;
    assert_eq!(s, StatusCode::OK);
    assert!(text(&b).contains("sandbox"), "{}", text(&b));
    // Its overlay gone too (as after a reboot): mounted again to be read.
    let rootfs = dir.join("rootfs");
    let status = Command::new("umount")
        .arg("-l")
        .arg(&rootfs)
        .status()
        .expect("umount");
    assert!(status.success());
    let (s, _, b) = read("/etc/passwd").await;
    assert_eq!(s, StatusCode::OK, "{}", text(&b));
    assert!(text(&b).contains("sandbox"));
    let (s, _) = d.call(Method::DELETE, "/api/spaces/p", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!rootfs.exists(), "destroy unmounted and removed it");
}

/// The resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// sha256 of a file, by the host's `sha256sum`.
fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    text(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
#[ignore = "needs root"]
async fn one_gib_goes_in_and_out_intact_with_the_daemon_memory_flat() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("big").await;
    let src = d.dir.join("big.in");
    {
        use std::io::Write;
        let mut f = fs::File::create(&src).expect("create");
        let chunk = pattern(8 << 20, 11);
        for i in 0..128u8 {
            let mut c = chunk.clone();
            c[0] = i; // no two chunks alike
            f.write_all(&c).expect("write");
        }
    }
    let want = sha256(&src);
    let pid = d.pid().expect("daemon pid");
    let base = rss(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let url = d.url("/api/spaces/big/fs?path=/workspace/big.bin");
    let auth = format!("Authorization: Bearer {KEY}");
    let up = Command::new("curl")
        .args(["-sS", "-f", "-T"])
        .arg(&src)
        .args(["-H", &auth, &url])
        .output()
        .expect("curl upload");
    assert!(up.status.success(), "{}", text(&up.stderr));
    fs::remove_file(&src).expect("rm source");
    let dst = d.dir.join("big.out");
    let down = Command::new("curl")
        .args(["-sS", "-f", "-o"])
        .arg(&dst)
        .args(["-H", &auth, &url])
        .output()
        .expect("curl download");
    assert!(down.status.success(), "{}", text(&down.stderr));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert_eq!(fs::metadata(&dst).expect("out").len(), 1 << 30);
    assert_eq!(sha256(&dst), want);
    assert_eq!(
        sha256(&d.state().join("volumes/big/big.bin")),
        want,
        "on disk"
    );
    fs::remove_file(&dst).expect("rm");
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(base);
    eprintln!(
        "daemon RSS {} MiB, grew by {} MiB",
        base >> 20,
        growth >> 20
    );
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
}

/// Unmounts its directory when dropped (after the daemon using it).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_full_disk_gives_507_and_leaves_no_partial_file() {
    // The daemon's state dir moves onto a 48 MiB tmpfs. (A full disk
    // quota takes the same path: runtime/tests/disk_quota.rs.)
    let _unmount;
    let Some(mut d) = Daemon::start(&[]).await else {
        return;
    };
    d.terminate();
    let state = d.state();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs"])
        .arg(&state)
        .status()
        .expect("mount")
        .success();
    assert!(ok, "mount a tmpfs");
    _unmount = Unmount(state.clone());
    clawdspace_runtime::image::ImageStore::open(&state)
        .and_then(|s| s.import_rootfs(common::IMAGE, &d.dir.join("rootfs"), Default::default()))
        .expect("import image");
    d.spawn().await;
    d.create("full").await;
    for dir in ["/workspace", "/home/sandbox"] {
        let (s, _, b) = raw(
            &d,
            Method::PUT,
            &format!("/api/spaces/full/fs?path={dir}/big"),
            Some(pattern(64 << 20, 3)),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "{}", text(&b));
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .contains("no space left"),
            "{v}"
        );
        assert_eq!(
            sh(&d, "full", &format!("ls -A {dir} | grep big || true")).await,
            ""
        );
    }
    // The upstream API says the same.
    let (s, v) = d
        .call(
            Method::PUT,
            "/api/spaces/full/file?path=f",
            Some(json!({"contentBase64": base64_of(&pattern(1_500_000, 5))})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Freed space is usable again.
    let (s, _, _) = raw(
        &d,
        Method::PUT,
        "/api/spaces/full/fs?path=/workspace/small",
        Some(pattern(1 << 20, 4)),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = d
        .call(Method::DELETE, "/api/spaces/full?removeVolume=true", None)
        .await;
    assert_eq!(s, StatusCode::OK);
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_upload_cut_off_by_its_client_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("cut").await;
    let (s, _, _) = raw(
        &d,
        Method::PUT,
        "/api/spaces/cut/fs?path=/workspace/f",
        Some(b"old".to_vec()),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for chunked in [false, true] {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", d.port))
            .await
            .expect("connect");
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", 64 << 20)
        };
        let head = format!(
            "PUT /api/spaces/cut/fs?path=/workspace/f HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {KEY}\r\n{framing}\r\n\r\n"
        );
        c.write_all(head.as_bytes()).await.expect("head");
        let part = pattern(4 << 20, 9);
        if chunked {
            c.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await
                .expect("chunk");
        }
        c.write_all(&part).await.expect("part");
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(c); // hang up half-way
                 // The old file stays whole, and no temporary file is left.
        let mut left = String::new();
        for _ in 0..50 {
            left = sh(&d, "cut", "ls -A /workspace").await;
            if left == "f" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, "f", "chunked={chunked}");
        assert_eq!(sh(&d, "cut", "cat /workspace/f").await, "old");
    }
    let (_, v) = d.get("/api/system").await;
    assert_eq!(v["workers"]["operations"], 0, "{v}");
}
