//! Templates against a real daemon: the endpoints' success and error
//! shapes, creates with each default template and with request fields that
//! win over it, a read-only root, and templates surviving a restart.
//! Needs root.

mod common;

use common::Daemon;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

async fn put(d: &Daemon, yaml: &str) -> (StatusCode, Value) {
    d.call(Method::PUT, "/api/templates", Some(json!({ "yaml": yaml })))
        .await
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs root"]
async fn endpoints_answer_upstreams_shapes_and_messages() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    // The four defaults, by name, each with a description.
    let (s, v) = d.get("/api/templates").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["default", "gpu", "lan", "offline"]);
    assert!(v["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .all(|t| t["description"].as_str().is_some_and(|d| !d.is_empty())));
    let (s, v) = d.get("/api/templates/offline").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "offline");
    assert!(
        v["yaml"].as_str().expect("yaml").contains("mode: none"),
        "{v}"
    );
    // Unknown and hostile names are not found (never a path elsewhere).
    for path in [
        "/api/templates/nope",
        "/api/templates/..%2Fapi-key",
        "/api/templates/%2E%2E%2Fvictim",
        "/api/templates/.hidden",
    ] {
        let (s, v) = d.get(path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert_eq!(v, json!({"error": "Template not found"}));
    }
    // PUT: required, YAML, schema and limits.
    let (s, v) = d.call(Method::PUT, "/api/templates", Some(json!({}))).await;
    assert_eq!((s, error(&v)), (StatusCode::BAD_REQUEST, "yaml required"));
    let (s, v) = put(&d, "   \n").await;
    assert_eq!((s, error(&v)), (StatusCode::BAD_REQUEST, "yaml required"));
    let (s, v) = put(&d, "name: [unclosed").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error(&v).starts_with("Invalid YAML: "), "{v}");
    let bad = [
        ("name: a\nresources: {cpus: 65}", "resources.cpus: Number must be less than or equal to 64"),
        ("name: a\nresources: {cpus: 0}", "resources.cpus: Number must be greater than 0"),
        ("name: a\nresources: {memory: lots}", "resources.memory: memory must look like 2g / 512m / 1024"),
        ("name: a\nnetwork: {mode: wan}", "network.mode: Invalid enum value. Expected 'none' | 'internet' | 'lan', received 'wan'"),
        ("name: ../x", "name: name must be alphanumeric and may include . _ -"),
        ("description: x", "name: Required"),
        ("name: a\nextra: 1", "Unrecognized key(s) in object: 'extra'"),
        ("name: a\nresources: {memroy: 1g}", "resources: Unrecognized key(s) in object: 'memroy'"),
    ];
    for (yaml, msg) in bad {
        let (s, v) = put(&d, yaml).await;
        assert_eq!((s, error(&v)), (StatusCode::BAD_REQUEST, msg), "{yaml}");
    }
    let (s, v) = put(
        &d,
        &format!("name: big\ndescription: {}", "x".repeat(70_000)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // A good one: the parsed template comes back; it is listed and read.
    let (s, v) = put(
        &d,
        "name: small\ndescription: tiny\nresources:\n  memory: 300\n  cpus: 0.5\nnetwork:\n  mode: none\n",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"template": {"name": "small", "description": "tiny",
            "resources": {"memory": 300, "cpus": 0.5}, "network": {"mode": "none"}}})
    );
    let (_, v) = d.get("/api/templates").await;
    assert!(v["templates"]
        .as_array()
        .expect("list")
        .contains(&json!({"name": "small", "description": "tiny"})));
    let (s, v) = d.get("/api/templates/small").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["yaml"].as_str().expect("yaml").contains("cpus: 0.5"),
        "{v}"
    );
    // DELETE: OK, then not found.
    let (s, v) = d.call(Method::DELETE, "/api/templates/small", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"message": "OK"})));
    let (s, v) = d.call(Method::DELETE, "/api/templates/small", None).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "Template not found"})
        )
    );
    // `<state>/templates/../victim.yaml` is out of reach.
    let victim = d.state().join("victim.yaml");
    std::fs::write(&victim, "name: victim\n").expect("victim");
    for m in [Method::GET, Method::DELETE] {
        let (s, _) = d.call(m, "/api/templates/..%2Fvictim", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    assert!(victim.exists());
    // Without the key: 401 like the rest of the API.
    let r = d
        .http
        .get(d.url("/api/templates"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

async fn create(d: &Daemon, body: Value) -> (StatusCode, Value) {
    d.post("/api/spaces", body).await
}

#[tokio::test]
#[ignore = "needs root"]
async fn creates_take_the_templates_resources_and_network_and_requests_win() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    // default: 2g, 1 cpu, internet.
    let (s, v) = create(&d, json!({"name": "t-default", "template": "default"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sp = &v["space"];
    assert_eq!(
        (&sp["memory"], &sp["cpus"], &sp["network"]),
        (&json!(2u64 << 30), &json!(1), &json!("internet"))
    );
    assert!(sp.get("writableRootfs").is_none());
    // Its blocked ranges are the space's policy.
    assert_eq!(sp["blockCidrs"].as_array().map(Vec::len), Some(5), "{v}");
    // offline: 2g, 1 cpu, no network.
    let (s, v) = create(&d, json!({"name": "t-offline", "template": "offline"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            &v["space"]["memory"],
            &v["space"]["cpus"],
            &v["space"]["network"]
        ),
        (&json!(2u64 << 30), &json!(1), &json!("none"))
    );
    // lan: network mode `lan` (internet and LAN, no blocks).
    let (s, v) = create(&d, json!({"name": "t-lan", "template": "lan"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["space"]["network"], "lan", "{v}");
    assert_eq!(v["space"]["memory"], json!(2u64 << 30));
    assert!(v["space"].get("blockCidrs").is_none(), "{v}");
    // gpu: a GPU space; this server has none.
    let (s, v) = create(&d, json!({"name": "t-gpu", "template": "gpu"})).await;
    assert_eq!(
        (s, error(&v)),
        (StatusCode::BAD_REQUEST, "GPU not available on this server")
    );
    // Request fields win over the template's.
    let (s, v) = create(
        &d,
        json!({"name": "t-mine", "template": "default", "memory": "256m", "cpus": 0.5, "network": "none"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            &v["space"]["memory"],
            &v["space"]["cpus"],
            &v["space"]["network"]
        ),
        (&json!(256 * MIB), &json!(0.5), &json!("none"))
    );
    // gpu: false in the request wins over the gpu template's GPU.
    let (s, v) = create(
        &d,
        json!({"name": "t-nogpu", "template": "gpu", "gpu": false, "memory": "256m", "network": "none"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["space"]["cpus"], json!(num_cpus_cap(4)));
    // Unknown template, wrong type, bad limits of a template.
    let (s, v) = create(&d, json!({"name": "t-x", "template": "nope"})).await;
    assert_eq!(
        (s, error(&v)),
        (
            StatusCode::BAD_REQUEST,
            "Invalid template: Template not found"
        )
    );
    let (s, v) = create(&d, json!({"name": "t-x", "template": 5})).await;
    assert_eq!(
        (s, error(&v)),
        (
            StatusCode::BAD_REQUEST,
            "Invalid template: template must be a string"
        )
    );
    let (s, v) = put(&d, "name: tiny\nresources: {memory: 1}").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = create(&d, json!({"name": "t-x", "template": "tiny"})).await;
    assert_eq!(
        (s, error(&v)),
        (StatusCode::BAD_REQUEST, "Invalid memory: at least 6 MiB")
    );
    assert_eq!(d.get("/api/spaces/t-x").await.0, StatusCode::NOT_FOUND);
    for n in ["t-default", "t-offline", "t-lan", "t-mine", "t-nogpu"] {
        let _ = d
            .call(Method::DELETE, &format!("/api/spaces/{n}"), None)
            .await;
    }
}

/// The gpu template's 4 cores, on a server with fewer.
fn num_cpus_cap(n: u32) -> u32 {
    let online = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    n.min(online)
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_custom_template_sets_limits_a_read_only_root_and_the_repo_dest() {
    let Some(d) = Daemon::start(&[]).await else {
        return;
    };
    let (s, v) = put(
        &d,
        "name: locked\nresources: {memory: 300, cpus: 0.25}\nsecurity: {writableRootfs: false}\nnetwork: {mode: none}\n",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = create(&d, json!({"name": "ro", "template": "locked"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sp = &v["space"];
    assert_eq!(
        (
            &sp["memory"],
            &sp["cpus"],
            &sp["network"],
            &sp["writableRootfs"]
        ),
        (
            &json!(300 * MIB),
            &json!(0.25),
            &json!("none"),
            &json!(false)
        )
    );
    let out = d
        .exec(
            "ro",
            json!("touch $HOME/x 2>/dev/null && echo rw || echo ro; touch /workspace/w /tmp/t && echo ok"),
        )
        .await;
    assert_eq!(out["stdout"], "ro\nok", "{out}");
    // The request may say otherwise.
    let (s, v) = create(
        &d,
        json!({"name": "rw", "template": "locked", "writableRootfs": true}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let out = d.exec("rw", json!("touch $HOME/x && echo rw")).await;
    assert_eq!(out["stdout"], "rw", "{out}");
    let (s, v) = create(&d, json!({"name": "bad", "writableRootfs": "no"})).await;
    assert_eq!(
        (s, error(&v)),
        (StatusCode::BAD_REQUEST, "Invalid writableRootfs")
    );
    for n in ["ro", "rw"] {
        let _ = d
            .call(Method::DELETE, &format!("/api/spaces/{n}"), None)
            .await;
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn templates_survive_a_restart_and_the_managed_one_is_rewritten() {
    let Some(mut d) = Daemon::start(&[("CLAWDSPACE_GPU_IMAGE", "gpu-one:1")]).await else {
        return;
    };
    let (s, _) = put(&d, "name: kept\ndescription: mine\n").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = put(&d, "name: default\ndescription: edited\n").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = put(&d, "name: gpu\ndescription: edited\n").await;
    assert_eq!(s, StatusCode::OK);
    let (_, before) = d.get("/api/templates/kept").await;
    d.kill9();
    d.set_env("CLAWDSPACE_GPU_IMAGE", "gpu-two:2");
    d.spawn().await;
    let (s, after) = d.get("/api/templates/kept").await;
    assert_eq!((s, &after), (StatusCode::OK, &before));
    let (_, list) = d.get("/api/templates").await;
    let list = list["templates"].as_array().expect("list").clone();
    assert!(list.contains(&json!({"name": "default", "description": "edited"})));
    assert!(!list.contains(&json!({"name": "gpu", "description": "edited"})));
    let (_, gpu) = d.get("/api/templates/gpu").await;
    let yaml = gpu["yaml"].as_str().expect("yaml");
    assert!(
        yaml.contains("image: gpu-two:2") && yaml.contains("managed: true"),
        "{yaml}"
    );
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(d.state().join("templates"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".yaml") || n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
