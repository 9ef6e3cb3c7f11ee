//! The dashboard's static routes and the stats endpoint against a real
//! clawdspaced: the page and its files need no key, the API still does.
//! Needs root; skipped otherwise. (The page itself is tested in a browser
//! by scripts/test-dashboard.)

mod common;

use common::{Daemon, KEY};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
#[ignore = "needs root"]
async fn dashboard_is_served_without_a_key_and_the_api_still_needs_one() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let h = &d.http;
    let r = h.get(d.url("/")).send().await.expect("req");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert!(r.headers().contains_key("content-security-policy"));
    let etag = r.headers()["etag"].clone();
    let page = r.text().await.expect("body");
    assert!(page.contains("<title>Clawdspace</title>"), "{page}");
    // Revalidation answers 304 without a body.
    let r = h
        .get(d.url("/"))
        .header("If-None-Match", etag)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // Its files, with their types.
    for (path, mime) in [
        ("/assets/app.mjs", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/assets/build.mjs", "text/javascript; charset=utf-8"),
    ] {
        let r = h.get(d.url(path)).send().await.expect("req");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], mime, "{path}");
    }
    // Client-side routes get the page; missing files and API paths do not.
    let r = h.get(d.url("/spaces/dev")).send().await.expect("req");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), page);
    for path in ["/assets/nope.js", "/favicon.ico", "/api/nope"] {
        let r = h
            .get(d.url(path))
            .header("Authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .expect("req");
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.text().await.expect("body"), r#"{"error":"Not found"}"#);
    }
    // The page being open changes nothing for the API.
    let r = h.get(d.url("/api/spaces")).send().await.expect("req");
    assert_eq!(r.status(), 401);
    let r = h
        .get(d.url("/api/spaces/x/stats"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.expect("body"), r#"{"error":"Unauthorized"}"#);
    let r = h.post(d.url("/")).send().await.expect("req");
    assert_eq!(r.status(), 405);
}

#[tokio::test]
#[ignore = "needs root"]
async fn stats_report_a_busy_space_and_404_for_a_missing_one() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    d.create("busy").await;
    let (s, v) = d.get("/api/spaces/busy/stats").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let st = &v["stats"];
    assert_eq!(st["memoryLimitBytes"], json!(256u64 << 20));
    assert!(st["memoryUsageBytes"].as_u64().expect("memory") > 0, "{v}");
    assert!(st["pids"].as_u64().expect("pids") >= 1, "{v}");
    // A process spinning for a second shows up as CPU use since the last call.
    let (s, _) = d
        .post(
            "/api/spaces/busy/exec",
            json!({"command": "timeout 1 sh -c 'while :; do :; done'; true"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = d.get("/api/spaces/busy/stats").await;
    let pct = v["stats"]["cpuPercent"].as_f64().expect("cpuPercent");
    assert!(pct > 20.0 && pct <= 100.5, "cpuPercent {pct}: {v}");
    assert!(v["stats"]["cpuUsageNs"].as_u64().expect("ns") > 500_000_000);
    let (s, v) = d.get("/api/spaces/ghost/stats").await;
    assert_eq!(
        (s, v),
        (StatusCode::NOT_FOUND, json!({"error": "Space not found"}))
    );
}
