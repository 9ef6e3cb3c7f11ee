//! The OpenAPI document is generated from the code; docs/openapi.json must
//! match it (regenerate: `target/debug/clawdspaced --openapi > docs/openapi.json`).

#[test]
fn checked_in_openapi_matches_the_code() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawdspaced"))
        .arg("--openapi")
        .output()
        .expect("run clawdspaced --openapi");
    assert!(out.status.success());
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let checked_in: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json exists"))
            .expect("json");
    assert!(
        generated == checked_in,
        "docs/openapi.json is stale: run `target/debug/clawdspaced --openapi > docs/openapi.json`"
    );
    for p in [
        "/api/health",
        "/api/spaces",
        "/api/spaces/{name}",
        "/api/spaces/{name}/exec",
        "/api/system",
        "/api/spaces/{name}/files",
        "/api/spaces/{name}/file",
        "/api/spaces/{name}/fs",
        "/api/spaces/{name}/fs/stat",
        "/api/spaces/{name}/archive",
        "/api/volumes",
        "/api/volumes/{name}",
        "/api/templates",
        "/api/templates/{name}",
    ] {
        assert!(generated["paths"].get(p).is_some(), "{p} documented");
    }
}
