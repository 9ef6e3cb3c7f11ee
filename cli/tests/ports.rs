//! `clawdspace port` and `clawdspace forward` against a real daemon: busybox
//! httpd in a space serving 100 MiB of random bytes, fetched through the
//! authenticated proxy URL, a public link without the key, and a local
//! forward (sha256 equal to the space's own). Root only.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{serial, Cluster};

/// GET `path` from `127.0.0.1:port` (HTTP/1.0, optional bearer key) into
/// `out`; the status line.
fn fetch(port: u16, path: &str, key: Option<&str>, out: &std::path::Path) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").expect("request");
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).expect("status");
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut f = std::fs::File::create(out).expect("out");
    std::io::copy(&mut r, &mut f).expect("body");
    status.trim().to_string()
}

fn sha256(path: &std::path::Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn port_urls_and_a_forward_carry_100_mib_intact() {
    let _serial = serial();
    let Some(c) = Cluster::start(1) else {
        return;
    };
    c.run(&["create", "web", "-m", "512m"]).expect_code(0);
    let r = c.run(&[
        "exec",
        "web",
        "mkdir -p $HOME/www && dd if=/dev/urandom of=$HOME/www/big bs=1M count=100 2>/dev/null && httpd -p 127.0.0.1:8000 -h $HOME/www && sha256sum $HOME/www/big",
    ]);
    r.expect_code(0);
    let want = r.stdout.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(want.len(), 64, "{}", r.stdout);
    let dir = tempfile::tempdir().expect("dir");
    let got = dir.path().join("got");
    let port = c.daemons[0].port;

    // The authenticated URL.
    let r = c.run(&["port", "web", "8000"]);
    r.expect_code(0);
    let url = r.stdout.trim();
    assert!(url.ends_with("/api/spaces/web/ports/8000/"), "{url}");
    let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap_or(""));
    assert!(fetch(port, &format!("{path}big"), None, &got).contains(" 401"));
    assert!(fetch(port, &format!("{path}big"), Some(&c.key), &got).contains(" 200"));
    assert_eq!(sha256(&got), want);

    // A public link: no key.
    let r = c.run(&["port", "web", "8000", "--public", "--ttl", "60"]);
    r.expect_code(0);
    let link = r.stdout.trim();
    assert!(link.contains("/p/"), "{link}");
    assert!(r.stderr.contains("Anyone with this link"), "{}", r.stderr);
    let path = format!("/{}", link.splitn(4, '/').nth(3).unwrap_or(""));
    assert!(fetch(port, &format!("{path}big"), None, &got).contains(" 200"));
    assert_eq!(sha256(&got), want);
    let r = c.run(&["port", "web", "0"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Invalid port"), "{}", r.stderr);

    // A forward on a free local port, until killed.
    let local = common::free_port();
    let mut fwd = c
        .home
        .cmd(&["forward", "web", "8000", &local.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("forward");
    let mut first = String::new();
    let mut out = BufReader::new(fwd.stdout.take().expect("stdout"));
    out.read_line(&mut first).expect("banner");
    assert!(
        first.starts_with(&format!("Forwarding 127.0.0.1:{local} -> web:8000")),
        "{first}"
    );
    let status = fetch(local, "/big", None, &got);
    let status2 = fetch(local, "/nope", None, &dir.path().join("nope"));
    let _ = fwd.kill();
    let _ = fwd.wait();
    let mut err = String::new();
    if let Some(mut e) = fwd.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.contains(" 200"), "{status} {err}");
    assert_eq!(sha256(&got), want, "{err}");
    assert!(status2.contains(" 404"), "{status2}");
}
