//! The port proxy and preview links against a real daemon: busybox httpd
//! (with a CGI echo) and a raw upgrade echo started inside spaces, reached
//! with the key, without it, through preview links that expire, are
//! revoked and die with their space; a paused space wakes; `network:
//! none` spaces are served over their loopback; nothing listening is a
//! 502 and `..` a 400. Needs root.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, KEY};
use reqwest::StatusCode;
use serde_json::json;

/// Starts httpd on 127.0.0.1:8000 (with /cgi-bin/echo) and an upgrade
/// echo on port 9000 inside `name`.
async fn serve(d: &Daemon, name: &str) {
    let script = r#"
mkdir -p /tmp/www/cgi-bin
echo "hello from $(hostname)" > /tmp/www/index.html
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "method=$REQUEST_METHOD query=$QUERY_STRING fwd=$HTTP_X_FORWARDED_PREFIX auth=$HTTP_AUTHORIZATION"\ncat\n' > /tmp/www/cgi-bin/echo
chmod +x /tmp/www/cgi-bin/echo
httpd -p 127.0.0.1:8000 -h /tmp/www
printf '#!/bin/sh\nwhile read -r l; do l=$(printf %%s "$l" | tr -d "\\r"); [ -z "$l" ] && break; done\nprintf "HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: echo\\r\\n\\r\\n"\nexec cat\n' > /tmp/up.sh
setsid nc -ll -p 9000 -e /bin/sh /tmp/up.sh </dev/null >/dev/null 2>&1 &
# Both listening (state 0A in /proc/net/tcp; 8000 = 1F40, 9000 = 2328).
# (nc listens on IPv6, dual-stack: /proc/net/tcp6.)
for i in $(seq 50); do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null > /tmp/socks; grep -q ':1F40 0.*:0000 0A' /tmp/socks && grep -q ':2328 0.*:0000 0A' /tmp/socks && exit 0; sleep 0.1; done
exit 1
"#;
    let r = d.exec(name, json!(script)).await;
    assert_eq!(r["exitCode"], 0, "{r}");
}

/// Starts on port 8100 of `name` a server that answers every request on a
/// connection (HTTP/1.1 keep-alive) with its shell's pid and the request's
/// number on that connection, and closes it after the third.
async fn serve_keep_alive(d: &Daemon, name: &str) {
    let script = r#"
cat > /tmp/ka.sh <<'X'
n=0
while read -r line; do
  while read -r h; do h=$(printf %s "$h" | tr -d '\r'); [ -z "$h" ] && break; done
  n=$((n+1))
  body="conn=$$ req=$n"
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s' ${#body} "$body"
  [ $n -ge 3 ] && exit 0
done
X
setsid nc -ll -p 8100 -e /bin/sh /tmp/ka.sh </dev/null >/dev/null 2>&1 &
for i in $(seq 50); do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null > /tmp/socks; grep -q ':1FA4 0.*:0000 0A' /tmp/socks && exit 0; sleep 0.1; done
exit 1
"#;
    let r = d.exec(name, json!(script)).await;
    assert_eq!(r["exitCode"], 0, "{r}");
}

async fn get_text(d: &Daemon, path: &str, key: bool) -> (StatusCode, String) {
    let mut rb = d.http.get(d.url(path));
    if key {
        rb = rb.header("Authorization", format!("Bearer {KEY}"));
    }
    let r = rb.send().await.expect("request");
    (r.status(), r.text().await.expect("body"))
}

/// One raw HTTP/1.1 request (the path exactly as written); the whole answer.
fn raw(d: &Daemon, head: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
#[ignore = "needs root"]
async fn proxied_connections_are_kept_between_requests() {
    // One connection per space at most: a kept one makes room for a new.
    let Some(d) = Daemon::start(&[("CLAWDSPACE_PORT_CONNECTIONS", "1")]).await else {
        return;
    };
    d.create("ka").await;
    serve_keep_alive(&d, "ka").await;
    let path = "/api/spaces/ka/ports/8100/x";
    let (s, first) = get_text(&d, path, true).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert!(first.ends_with(" req=1"), "{first}");
    let conn = first.split(' ').next().expect("conn").to_string();
    // The next requests go over the same connection into the space.
    for n in [2, 3] {
        let (s, body) = get_text(&d, path, true).await;
        assert_eq!((s, body), (StatusCode::OK, format!("{conn} req={n}")));
    }
    // The server closed it after its third answer: the next request is
    // answered over a new one.
    let (s, body) = get_text(&d, path, true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.ends_with(" req=1") && !body.starts_with(&conn),
        "{body}"
    );
    // A POST never goes over a kept connection (it could not be sent again
    // if that one had closed): it gets a new one, the kept one closing to
    // leave it the space's only slot.
    let r = d
        .http
        .post(d.url(path))
        .header("Authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("body").ends_with(" req=1"));
    // A kept connection closes after its idle time (4 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (s, body) = get_text(&d, path, true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.ends_with(" req=1"), "{body}");
}

#[tokio::test]
#[ignore = "needs root"]
async fn ports_are_proxied_with_the_key_and_previews_without_it() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("web").await;
    serve(&d, "web").await;

    // With the key (header or ?key=, neither reaching the space).
    let (s, body) = get_text(&d, "/api/spaces/web/ports/8000/index.html", true).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello from web\n"));
    let (s, body) = get_text(&d, "/api/spaces/web/ports/8000/", true).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello from web\n"));
    let (s, _) = get_text(&d, "/api/spaces/web/ports/8000/index.html", false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = get_text(
        &d,
        &format!("/api/spaces/web/ports/8000/cgi-bin/echo?x=1&key={KEY}&y=2"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "method=GET query=x=1&y=2 fwd=/api/spaces/web/ports/8000 auth=\n"
    );
    // POST streams the body through.
    let r = d
        .http
        .post(d.url("/api/spaces/web/ports/8000/cgi-bin/echo"))
        .header("Authorization", format!("Bearer {KEY}"))
        .body("a".repeat(100_000))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("body");
    assert!(
        text.starts_with("method=POST"),
        "{}",
        &text[..80.min(text.len())]
    );
    let (head, sent) = text.split_once('\n').expect("two parts");
    assert!(head.starts_with("method=POST"), "{head}");
    assert_eq!(sent, "a".repeat(100_000));

    // Nothing listening, bad ports, dot segments, unknown spaces.
    let (s, v) = d.get("/api/spaces/web/ports/22/").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("Nothing answers on port 22"),
        "{v}"
    );
    let (s, _) = d.get("/api/spaces/web/ports/0/").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = d.get("/api/spaces/web/ports/99999/").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = d.get("/api/spaces/nope/ports/8000/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for path in [
        "/api/spaces/web/ports/8000/../../etc/passwd",
        "/api/spaces/web/ports/8000/a/%2e%2e/b",
    ] {
        let answer = raw(
            &d,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }

    // An upgraded connection is joined to the space's server.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(
        format!("GET /api/spaces/web/ports/9000/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").as_bytes(),
    )
    .expect("upgrade request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).expect("read head"),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping through the tunnel\n").expect("write");
    let mut echo = [0u8; 24];
    s.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"ping through the tunnel\n");
    drop(s);

    // A paused space wakes on the first request and serves it.
    let (s, v) = d.post("/api/spaces/web/stop", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = d.get("/api/spaces/web").await;
    assert_eq!(v["space"]["status"], "paused");
    let (s, body) = get_text(&d, "/api/spaces/web/ports/8000/index.html", true).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello from web\n"));
    let (_, v) = d.get("/api/spaces/web").await;
    assert_eq!(v["space"]["status"], "running");

    // Preview links: no key, listed, revoked.
    let (s, v) = d
        .post(
            "/api/spaces/web/ports",
            json!({"port": 8000, "public": true, "ttlSeconds": 600}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let url = v["url"].as_str().expect("url").to_string();
    let path = url
        .split_once("127.0.0.1")
        .map(|(_, p)| p.split_once('/').map_or("", |x| x.1))
        .unwrap_or("");
    let path = format!("/{path}");
    assert!(path.starts_with("/p/") && path.ends_with('/'), "{url}");
    let (s, body) = get_text(&d, &format!("{path}index.html"), false).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello from web\n"));
    let (_, list) = d.get("/api/spaces/web/ports").await;
    assert_eq!(list["previews"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["previews"][0]["port"], 8000);
    assert!(
        !list.to_string().contains(&path[3..]),
        "the token is never listed"
    );
    let (s, v) = d.post("/api/spaces/web/ports", json!({"port": 8000})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        v["url"]
            .as_str()
            .unwrap_or("")
            .ends_with("/api/spaces/web/ports/8000/"),
        "{v}"
    );
    let (s, _) = d
        .post("/api/spaces/web/ports", json!({"port": 70000}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = d.post("/api/spaces/web/ports", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = d
        .call(
            reqwest::Method::DELETE,
            "/api/spaces/web/ports?port=8000",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = get_text(&d, &format!("{path}index.html"), false).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get_text(&d, &format!("/p/{}/", "0".repeat(48)), false).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Expired.
    let (_, v) = d
        .post(
            "/api/spaces/web/ports",
            json!({"port": 8000, "public": true, "ttlSeconds": 1}),
        )
        .await;
    let short = v["url"].as_str().expect("url").to_string();
    let short = format!("/p/{}", short.split("/p/").nth(1).unwrap_or(""));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, _) = get_text(&d, &short, false).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A network-none space, served over its own loopback; its link dies
    // with it (and is not inherited by a new space of the same name).
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "alone", "memory": "128m", "network": "none"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    serve(&d, "alone").await;
    // Its own loopback works for its own programs too.
    let r = d
        .exec("alone", json!("wget -qO- http://127.0.0.1:8000/index.html"))
        .await;
    assert_eq!(r["stdout"], "hello from alone", "{r}");
    let (_, v) = d
        .post(
            "/api/spaces/alone/ports",
            json!({"port": 8000, "public": true}),
        )
        .await;
    let link = format!(
        "/p/{}",
        v["url"]
            .as_str()
            .unwrap_or("")
            .split("/p/")
            .nth(1)
            .unwrap_or("")
    );
    let (s, body) = get_text(&d, &link, false).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello from alone\n"));
    let (s, _) = d
        .call(reqwest::Method::DELETE, "/api/spaces/alone", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = d
        .post(
            "/api/spaces",
            json!({"name": "alone", "memory": "128m", "network": "none"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    serve(&d, "alone").await;
    let (s, _) = get_text(&d, &link, false).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// One raw request for `host` (a preview host) with extra header lines;
/// the whole answer.
fn raw_host(d: &Daemon, host: &str, path: &str, extra: &str) -> String {
    raw(
        d,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

#[tokio::test]
#[ignore = "needs root"]
async fn preview_hosts_and_bandwidth_caps() {
    let Some(d) = Daemon::start(&[
        ("CLAWDSPACE_PREVIEW_DOMAIN", "preview.test"),
        ("CLAWDSPACE_PORT_BANDWIDTH", "256k"),
    ])
    .await
    else {
        return;
    };
    d.create("web").await;
    serve(&d, "web").await;
    let r = d
        .exec(
            "web",
            json!("printf '#!/bin/sh\\necho \"Content-Type: text/plain\"\\necho\\necho \"cookie=$HTTP_COOKIE path=$REQUEST_URI\"\\n' > /tmp/www/cgi-bin/cookie && chmod +x /tmp/www/cgi-bin/cookie && head -c 1048576 /dev/zero > /tmp/www/big"),
        )
        .await;
    assert_eq!(r["exitCode"], 0, "{r}");
    let host = "8000-web.preview.test";

    // Publishing on the host is off here: refused, saying how to turn it
    // on, and nothing is left.
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "pub", "memory": "128m", "ports": [{"container": 8000, "host": 18000}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("CLAWDSPACE_PUBLISH_PORTS=1"),
        "{v}"
    );
    let (s, _) = d.get("/api/spaces/pub").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // By host: the path is the space's own; the key or a link is needed.
    let a = raw_host(&d, host, "/index.html", "");
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let a = raw_host(
        &d,
        host,
        "/index.html",
        &format!("Authorization: Bearer {KEY}\r\n"),
    );
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.ends_with("hello from web\n"), "{a}");
    // The API itself is not served under a preview host.
    let a = raw_host(
        &d,
        host,
        "/api/spaces",
        &format!("Authorization: Bearer {KEY}\r\n"),
    );
    assert!(a.starts_with("HTTP/1.1 404"), "{a}");

    // A public link's host URL: the token once, then a cookie for the host.
    let (s, v) = d
        .post(
            "/api/spaces/web/ports",
            json!({"port": 8000, "public": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let host_url = v["hostUrl"].as_str().expect("hostUrl").to_string();
    let token = host_url
        .strip_prefix("http://8000-web.preview.test/?clawdspace_token=")
        .expect("host url form")
        .to_string();
    let a = raw_host(
        &d,
        host,
        &format!("/cgi-bin/cookie?x=1&clawdspace_token={token}"),
        "",
    );
    assert!(a.starts_with("HTTP/1.1 302"), "{a}");
    assert!(a.contains("location: /cgi-bin/cookie?x=1\r\n"), "{a}");
    assert!(
        a.contains(&format!(
            "set-cookie: clawdspace_preview={token}; Path=/; HttpOnly"
        )),
        "{a}"
    );
    let cookie = format!("Cookie: theirs=1; clawdspace_preview={token}\r\n");
    let a = raw_host(&d, host, "/cgi-bin/cookie?x=1", &cookie);
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    // The space sees its own cookies, never the link's.
    assert!(
        a.contains("cookie=theirs=1 path=/cgi-bin/cookie?x=1\n"),
        "{a}"
    );
    // The cookie opens only its own port and space.
    let a = raw_host(&d, "9000-web.preview.test", "/", &cookie);
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    let a = raw_host(
        &d,
        host,
        &format!("/?clawdspace_token={}", "0".repeat(48)),
        "",
    );
    assert!(a.starts_with("HTTP/1.1 404"), "{a}");
    // Revoked: the cookie is worth nothing.
    let (s, _) = d
        .call(
            reqwest::Method::DELETE,
            "/api/spaces/web/ports?port=8000",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let a = raw_host(&d, host, "/index.html", &cookie);
    assert!(a.starts_with("HTTP/1.1 401"), "{a}");
    // Other hosts still reach the API.
    let (s, _) = d.get("/api/spaces/web").await;
    assert_eq!(s, StatusCode::OK);

    // Bandwidth: 1 MiB at 256 KiB/s (a second's burst) takes about 3 s,
    // and two downloads at once share the space's rate.
    let fetch = |d: &Daemon| {
        d.http
            .get(d.url("/api/spaces/web/ports/8000/big"))
            .header("Authorization", format!("Bearer {KEY}"))
            .send()
    };
    let t = std::time::Instant::now();
    let r = fetch(&d).await.expect("download");
    assert_eq!(r.bytes().await.expect("body").len(), 1 << 20);
    let one = t.elapsed();
    assert!(
        one >= Duration::from_millis(2500) && one < Duration::from_secs(8),
        "{one:?}"
    );
    let t = std::time::Instant::now();
    let (a, b) = tokio::join!(fetch(&d), fetch(&d));
    let (a, b) = (a.expect("a"), b.expect("b"));
    let (a, b) = tokio::join!(a.bytes(), b.bytes());
    assert_eq!(a.expect("a").len() + b.expect("b").len(), 2 << 20);
    let two = t.elapsed();
    assert!(two >= Duration::from_millis(6500), "{two:?}");
}

/// GET / over plain HTTP/1.0 to `addr:port`; the body, or None when the
/// connection is refused.
fn get_root(addr: std::net::Ipv4Addr, port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
#[ignore = "needs root"]
async fn published_ports_reach_the_space_from_the_hosts_addresses() {
    let Some(mut d) = Daemon::start(&[("CLAWDSPACE_PUBLISH_PORTS", "1")]).await else {
        return;
    };
    let host_port = free_tcp_port();
    let ports = json!([{"container": 8000, "host": host_port}]);
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "pub", "memory": "128m", "ports": ports}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["space"]["ports"], ports, "{v}");
    let r = d
        .exec(
            "pub",
            json!(
                "mkdir -p /tmp/w && echo published > /tmp/w/index.html && httpd -p 8000 -h /tmp/w"
            ),
        )
        .await;
    assert_eq!(r["exitCode"], 0, "{r}");
    // One of the host's own addresses (the bridge's), as a client on the
    // host reaches it.
    let gw = d.network.gateway();
    assert_eq!(get_root(gw, host_port).as_deref(), Some("published\n"));

    // Refused: the same host port again, a port a host service uses,
    // network none, bad values; nothing is left of any of them.
    let busy = std::net::TcpListener::bind("0.0.0.0:0").expect("listener");
    let busy_port = busy.local_addr().expect("addr").port();
    for (body, want) in [
        (
            json!({"name": "p2", "memory": "128m", "ports": [{"container": 80, "host": host_port}]}),
            "is published by another space",
        ),
        (
            json!({"name": "p2", "memory": "128m", "ports": [{"container": 80, "host": busy_port}]}),
            "is in use on this server",
        ),
        (
            json!({"name": "p2", "memory": "128m", "network": "none", "ports": [{"container": 80, "host": 18001}]}),
            "needs network",
        ),
        (
            json!({"name": "p2", "memory": "128m", "ports": [{"container": 0, "host": 18001}]}),
            "ports are 1-65535",
        ),
        (
            json!({"name": "p2", "memory": "128m", "ports": [{"container": 80, "hostPort": 18001}]}),
            "Invalid ports",
        ),
        (
            json!({"name": "p2", "memory": "128m", "ports": [{"container": 80, "host": 18001}, {"container": 81, "host": 18001}]}),
            "given twice",
        ),
    ] {
        let (s, v) = d.post("/api/spaces", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(want),
            "{body}: {v}"
        );
        let (s, _) = d.get("/api/spaces/p2").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    drop(busy);

    // A restarted daemon keeps the space and its published port.
    d.terminate();
    d.spawn().await;
    assert_eq!(get_root(gw, host_port).as_deref(), Some("published\n"));

    // Destroyed: the port is free again.
    let (s, _) = d
        .call(reqwest::Method::DELETE, "/api/spaces/pub", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get_root(gw, host_port), None);
    std::net::TcpListener::bind(("0.0.0.0", host_port)).expect("host port free again");
}
