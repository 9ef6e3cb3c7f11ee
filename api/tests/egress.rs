//! The network policy of `POST /api/spaces` over HTTP: `network` as a mode
//! string (old clients) or an object with `blockCidrs`, `allowDomains`,
//! `allowPorts`; every malformed policy a 400 that says what is wrong; the
//! policy shown in the space JSON and its drops in the stats. Needs root
//! (a real daemon; what the rules do is tested in runtime/tests/network.rs).

mod common;

use common::Daemon;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn create(d: &Daemon, name: &str, network: Value) -> (StatusCode, Value) {
    d.post(
        "/api/spaces",
        json!({"name": name, "memory": "64m", "network": network}),
    )
    .await
}

#[tokio::test]
#[ignore = "needs root"]
async fn malformed_policies_are_400s_that_say_why() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let many_domains: Vec<String> = (0..65).map(|i| format!("d{i}.example.org")).collect();
    let many_cidrs: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    let cases = [
        (
            json!("wan"),
            "Invalid network 'wan' (expected \"internet\", \"lan\" or \"none\")",
        ),
        (
            json!(5),
            "Invalid network (expected \"internet\", \"lan\" or \"none\", or an object \
             {mode, blockCidrs, allowDomains, allowPorts})",
        ),
        (
            json!({"mode": 1}),
            "Invalid network: mode must be \"internet\", \"lan\" or \"none\"",
        ),
        (
            json!({"allowDomain": ["pypi.org"]}),
            "Invalid network: unknown field 'allowDomain' (expected mode, blockCidrs, \
             allowDomains, allowPorts)",
        ),
        (
            json!({"blockCidrs": "10.0.0.0/8"}),
            "Invalid blockCidrs: expected a list of strings",
        ),
        (
            json!({"blockCidrs": ["10.0.0.1/8"]}),
            "Invalid blockCidrs: invalid IPv4 network '10.0.0.1/8': host bits are set",
        ),
        (
            json!({"blockCidrs": ["fc00::/7"]}),
            "Invalid blockCidrs: 'fc00::/7' is IPv6; spaces have no IPv6 (all of it is dropped)",
        ),
        (
            json!({"blockCidrs": many_cidrs}),
            "Invalid blockCidrs: at most 64 entries",
        ),
        (
            json!({"allowDomains": ["PyPI.org"]}),
            "Invalid allowDomains: 'PyPI.org' may hold only lowercase letters, digits, '-' \
             and '.' (and a leading '*.')",
        ),
        (
            json!({"allowDomains": ["a..b"]}),
            "Invalid allowDomains: 'a..b' has an empty label or one longer than 63 characters",
        ),
        (
            json!({"allowDomains": many_domains}),
            "Invalid allowDomains: at most 64 entries",
        ),
        (
            json!({"allowDomains": ["pypi.org"], "allowPorts": [0]}),
            "Invalid allowPorts: ports are 1-65535",
        ),
        (
            json!({"allowDomains": ["pypi.org"], "allowPorts": ["443"]}),
            "Invalid allowPorts: ports are 1-65535",
        ),
        (
            json!({"allowPorts": [443]}),
            "Invalid allowPorts: it applies to allowDomains, which is empty",
        ),
        (
            json!({"mode": "none", "allowDomains": ["pypi.org"]}),
            "Invalid network: blockCidrs, allowDomains and allowPorts need mode \"internet\" \
             or \"lan\"",
        ),
    ];
    for (network, want) in cases {
        let (s, v) = create(&d, "bad", network.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{network}: {v}");
        assert_eq!(v, json!({ "error": want }), "{network}");
    }
    let (_, list) = d.get("/api/spaces").await;
    assert_eq!(list["spaces"], json!([]), "nothing was created");
}

#[tokio::test]
#[ignore = "needs root"]
async fn policies_show_in_the_space_and_its_stats() {
    let Some(d) = Daemon::start(&[("CLAWDSPACE_DROP_AUDIT_MS", "300")]).await else {
        return;
    };
    // The string form still works.
    for (name, mode) in [("s-none", "none"), ("s-inet", "internet"), ("s-lan", "lan")] {
        let (s, v) = create(&d, name, json!(mode)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["space"]["network"], mode);
        assert!(v["space"].get("blockCidrs").is_none(), "{v}");
    }
    let (s, v) = create(
        &d,
        "pol",
        json!({"mode": "lan", "blockCidrs": ["10.0.0.0/8", "192.168.1.7", "10.0.0.0/8"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["space"]["network"], "lan");
    assert_eq!(
        v["space"]["blockCidrs"],
        json!(["10.0.0.0/8", "192.168.1.7/32"])
    );
    let (s, v) = create(
        &d,
        "dom",
        json!({"allowDomains": ["pypi.org", "*.github.com"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, got) = d.get("/api/spaces/dom").await;
    let sp = &got["space"];
    assert_eq!(sp["network"], "internet", "{sp}");
    assert_eq!(sp["allowDomains"], json!(["pypi.org", "*.github.com"]));
    assert_eq!(sp["allowPorts"], json!([80, 443]), "default ports");
    assert!(sp.get("blockCidrs").is_none(), "{sp}");

    // A refused connection shows in the audit log as network.drop.
    let r = d
        .exec("pol", json!("nc -w 1 192.168.1.7 80 </dev/null; true"))
        .await;
    assert_eq!(r["exitCode"], 0, "{r}");
    let mut seen = Value::Null;
    for _ in 0..50 {
        let (_, a) = d.get("/api/audit?space=pol").await;
        if let Some(e) = a["events"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["type"] == "network.drop"))
        {
            seen = e.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(seen["meta"]["packets"].as_u64() >= Some(1), "{seen}");
    assert!(seen["meta"]["bytes"].as_u64() >= Some(20), "{seen}");

    let (_, st) = d.get("/api/spaces/dom/stats").await;
    assert!(st["stats"]["egressDroppedPackets"].is_u64(), "{st}");
    assert!(st["stats"]["egressDroppedBytes"].is_u64(), "{st}");
    let (_, st) = d.get("/api/spaces/s-none/stats").await;
    assert!(st["stats"].get("egressDroppedPackets").is_none(), "{st}");
    for name in ["s-none", "s-inet", "s-lan", "pol", "dom"] {
        let (s, v) = d
            .call(
                reqwest::Method::DELETE,
                &format!("/api/spaces/{name}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}
