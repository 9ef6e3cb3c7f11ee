//! A template applied to a create request: its values fill the fields the
//! request leaves out (absent or null); what the request says wins.
//!
//! The merge works on the request's JSON, before it becomes a
//! [`crate::model::CreateSpaceBody`], so every template value goes through
//! the same rules and messages as a value sent by the client. This is also
//! the seam for the network policy: `network.mode` becomes `network` and
//! `network.blockCidrs` becomes the request's `blockCidrs`, read by
//! whatever field of the create body carries it.

use serde_json::{Map, Value};

use clawdspace_runtime::templates::Template;

/// Whether the request says nothing about `key`.
fn unset(req: &Map<String, Value>, key: &str) -> bool {
    matches!(req.get(key), None | Some(Value::Null))
}

/// Sets `key` to `value` unless the request has it.
fn default(req: &mut Map<String, Value>, key: &str, value: Value) {
    if unset(req, key) {
        req.insert(key.to_string(), value);
    }
}

/// Fills `req` (a create body's JSON object) from template `t`.
///
/// * `resources.memory` → `memory` (a bare number is MiB; `t` sizes become
///   `g`), `resources.cpus` → `cpus` (at most `host_cpus`: a template is
///   shared by servers of different sizes), `resources.gpu` → `gpu`,
///   `resources.image` → `image`, except for managed templates, whose
///   space gets the server's image for its kind (as upstream's does);
/// * `network.mode` → `network`; `network.blockCidrs` (when not empty) →
///   `blockCidrs`, only when the request names neither a network nor
///   ranges of its own;
/// * `security.writableRootfs` → `writableRootfs`;
/// * `workspace.defaultRepoDest` → `repoDest` when `repoUrl` is given.
pub fn apply(req: &mut Map<String, Value>, t: &Template, host_cpus: u32) {
    if let Some(r) = &t.resources {
        if let Some(m) = &r.memory {
            default(req, "memory", Value::String(m.as_request()));
        }
        if let Some(c) = r.cpus {
            let c = c.min(f64::from(host_cpus.max(1)));
            if let Some(n) = serde_json::Number::from_f64(c) {
                default(req, "cpus", Value::Number(n));
            }
        }
        if let Some(g) = r.gpu {
            default(req, "gpu", Value::Bool(g));
        }
        if let (Some(i), false) = (&r.image, t.managed == Some(true)) {
            default(req, "image", Value::String(i.clone()));
        }
    }
    // The request's own network (a mode or a policy) wins whole; else the
    // template's mode, with its blocked ranges as the policy's.
    if let (Some(n), true) = (&t.network, unset(req, "network")) {
        let mode = n.mode.map_or("internet", |m| m.as_str());
        let network = match &n.block_cidrs {
            Some(c) if !c.is_empty() => serde_json::json!({"mode": mode, "blockCidrs": c}),
            _ if n.mode.is_some() => Value::String(mode.into()),
            _ => Value::Null,
        };
        if !network.is_null() {
            req.insert("network".into(), network);
        }
    }
    if let Some(w) = t.security.as_ref().and_then(|s| s.writable_rootfs) {
        default(req, "writableRootfs", Value::Bool(w));
    }
    let dest = t
        .workspace
        .as_ref()
        .and_then(|w| w.default_repo_dest.clone());
    let wants_clone = req
        .get("repoUrl")
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    let no_dest = req
        .get("repoDest")
        .is_none_or(|d| d.is_null() || d.as_str() == Some(""));
    if let (Some(d), true, true) = (dest, wants_clone, no_dest) {
        if !d.is_empty() {
            req.insert("repoDest".into(), Value::String(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(req: Value, yaml: &str) -> Value {
        let t = Template::from_yaml(yaml).expect("template");
        let Value::Object(mut m) = req else {
            panic!("not an object")
        };
        apply(&mut m, &t, 16);
        Value::Object(m)
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let all = Template::defaults("gpu:1");
        let gpu = all[1].to_yaml().expect("yaml");
        let v = merged(json!({"name": "g", "memory": null}), &gpu);
        assert_eq!(v["memory"], "8g");
        assert_eq!(v["cpus"], 4.0);
        assert_eq!(v["gpu"], true);
        // Managed: the server's image for a GPU space, not the template's.
        assert!(v.get("image").is_none());
        assert_eq!(v["network"]["mode"], "internet");
        assert_eq!(v["network"]["blockCidrs"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["writableRootfs"], true);
        let v = merged(
            json!({"name": "g", "memory": "1g", "cpus": 2, "network": "none", "gpu": false}),
            &gpu,
        );
        assert_eq!(
            (&v["memory"], &v["cpus"], &v["network"], &v["gpu"]),
            (&json!("1g"), &json!(2), &json!("none"), &json!(false))
        );
        // The request's network brings no template ranges with it.
        assert!(v.get("blockCidrs").is_none());
        let lan = all[3].to_yaml().expect("yaml");
        assert_eq!(merged(json!({"name": "l"}), &lan)["network"], "lan");
        let offline = all[2].to_yaml().expect("yaml");
        let v = merged(json!({"name": "o"}), &offline);
        assert_eq!(v["network"], "none");
        assert!(v.get("blockCidrs").is_none());
    }

    #[test]
    fn sizes_images_and_repo_dest() {
        let v = merged(
            json!({"name": "x", "repoUrl": "https://h/r"}),
            "name: t\nresources: {memory: 1t, cpus: 64, image: 'alpine:3'}\nworkspace: {defaultRepoDest: src}\n\
             security: {writableRootfs: false}",
        );
        assert_eq!(v["memory"], "1024g");
        assert_eq!(v["cpus"], 16.0);
        assert_eq!(v["image"], "alpine:3");
        assert_eq!(v["repoDest"], "src");
        assert_eq!(v["writableRootfs"], false);
        let v = merged(
            json!({"name": "x", "repoDest": "mine", "repoUrl": "https://h/r", "image": "b"}),
            "name: t\nresources: {memory: 300, image: 'alpine:3'}\nworkspace: {defaultRepoDest: src}",
        );
        assert_eq!(
            (&v["memory"], &v["repoDest"], &v["image"]),
            (&json!("300"), &json!("mine"), &json!("b"))
        );
        // No clone asked for: no destination added.
        let v = merged(
            json!({"name": "x"}),
            "name: t\nworkspace: {defaultRepoDest: src}",
        );
        assert!(v.get("repoDest").is_none());
    }
}
