//! Placement: which server a new space goes to. One pure function used by
//! the CLI's `create` and by the daemon for its dashboard.
//!
//! Rules, in order: a server named by the caller wins (unless it is
//! offline or unknown); a GPU request goes to an online server whose
//! runtime can give it enough GPUs; otherwise (and among those) the online
//! server with the most available memory, then the fewest running spaces,
//! then the first by name. An offline server is never chosen.

use std::fmt;

/// What placement knows of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    /// Server name (as `servers` and `/api/nodes` show it).
    pub name: String,
    /// Whether it answered its last probe.
    pub online: bool,
    /// GPUs its runtime can give to spaces.
    pub gpus: usize,
    /// Available memory, bytes.
    pub memory_free: u64,
    /// Spaces running there.
    pub spaces_running: usize,
}

/// What a new space asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// The server the caller named (`--server`).
    pub server: Option<&'a str>,
    /// GPUs wanted (0: none).
    pub gpus: usize,
}

/// The chosen server and why, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub reason: String,
}

/// Why no server could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlacement {
    /// No server of that name is known.
    UnknownServer(String),
    /// The named server did not answer.
    Offline(String),
    /// No online server has that many GPUs (each server checked, with why).
    NoGpu { wanted: usize, checked: Vec<String> },
    /// No server answered at all.
    NoneOnline,
}

impl fmt::Display for NoPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPlacement::UnknownServer(s) => write!(f, "Unknown server: {s}"),
            NoPlacement::Offline(s) => write!(f, "Server '{s}' is offline"),
            NoPlacement::NoGpu { wanted, checked } => {
                let what = if *wanted == 1 {
                    "No server with GPU found".to_string()
                } else {
                    format!("No server with {wanted} GPUs found")
                };
                if checked.is_empty() {
                    write!(f, "{what}")
                } else {
                    write!(f, "{what} ({})", checked.join("; "))
                }
            }
            NoPlacement::NoneOnline => write!(f, "No Clawdspace server answered"),
        }
    }
}

impl std::error::Error for NoPlacement {}

/// `n` bytes as `12.3 GB` (powers of 1024, one decimal).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// Whether `name` can be a template's name (`^[a-z0-9][a-z0-9._-]*$`, case
/// aside, at most 64): only such a name goes into a URL path.
pub fn is_template_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Whether a template (`GET /api/templates/{name}`: `{"name", "yaml"}`)
/// asks for a GPU: `resources.gpu: true` in its YAML.
pub fn template_wants_gpu(answer: &serde_json::Value) -> bool {
    answer
        .get("yaml")
        .and_then(serde_json::Value::as_str)
        .and_then(|y| serde_yaml::from_str::<serde_yaml::Value>(y).ok())
        .and_then(|t| t.get("resources")?.get("gpu")?.as_bool())
        .unwrap_or(false)
}

/// Chooses the server for `request` among `nodes`.
pub fn place(nodes: &[NodeLoad], request: &Request) -> Result<Placement, NoPlacement> {
    if let Some(s) = request.server {
        let node = nodes
            .iter()
            .find(|n| n.name == s)
            .ok_or_else(|| NoPlacement::UnknownServer(s.to_string()))?;
        if !node.online {
            return Err(NoPlacement::Offline(node.name.clone()));
        }
        return Ok(Placement {
            node: node.name.clone(),
            reason: format!("Using server {}: named with --server", node.name),
        });
    }
    let online: Vec<&NodeLoad> = nodes.iter().filter(|n| n.online).collect();
    if online.is_empty() {
        return Err(NoPlacement::NoneOnline);
    }
    let candidates: Vec<&NodeLoad> = if request.gpus > 0 {
        let fit: Vec<&NodeLoad> = online
            .iter()
            .copied()
            .filter(|n| n.gpus >= request.gpus)
            .collect();
        if fit.is_empty() {
            let checked = nodes
                .iter()
                .map(|n| match (n.online, n.gpus) {
                    (false, _) => format!("{}: offline", n.name),
                    (true, 0) => format!("{}: no GPU", n.name),
                    (true, g) => format!("{}: {g} GPU(s)", n.name),
                })
                .collect();
            return Err(NoPlacement::NoGpu {
                wanted: request.gpus,
                checked,
            });
        }
        fit
    } else {
        online
    };
    let best = candidates
        .iter()
        .copied()
        .min_by(|a, b| {
            b.memory_free
                .cmp(&a.memory_free)
                .then(a.spaces_running.cmp(&b.spaces_running))
                .then(a.name.cmp(&b.name))
        })
        .ok_or(NoPlacement::NoneOnline)?;
    let mut reason = if candidates.len() == 1 {
        let only = if request.gpus > 0 {
            "the only online server with enough GPUs"
        } else {
            "the only server online"
        };
        format!(
            "Auto-selected server {}: {only} ({} free)",
            best.name,
            human_bytes(best.memory_free)
        )
    } else {
        let others: Vec<String> = candidates
            .iter()
            .filter(|n| n.name != best.name)
            .map(|n| {
                format!(
                    "{} {}, {} running",
                    n.name,
                    human_bytes(n.memory_free),
                    n.spaces_running
                )
            })
            .collect();
        let tie = candidates
            .iter()
            .any(|n| n.name != best.name && n.memory_free == best.memory_free);
        let rule = if tie {
            "most free memory, then fewest running spaces"
        } else {
            "most free memory"
        };
        format!(
            "Auto-selected server {}: {rule} ({} free, {} running; {})",
            best.name,
            human_bytes(best.memory_free),
            best.spaces_running,
            others.join(", ")
        )
    };
    let offline: Vec<&str> = nodes
        .iter()
        .filter(|n| !n.online)
        .map(|n| n.name.as_str())
        .collect();
    if !offline.is_empty() {
        reason.push_str(&format!("; not answering: {}", offline.join(", ")));
    }
    Ok(Placement {
        node: best.name.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn n(name: &str, online: bool, gpus: usize, free_gb: u64, running: usize) -> NodeLoad {
        NodeLoad {
            name: name.into(),
            online,
            gpus,
            memory_free: free_gb * GB,
            spaces_running: running,
        }
    }

    fn pick(nodes: &[NodeLoad], server: Option<&str>, gpus: usize) -> Result<String, NoPlacement> {
        place(nodes, &Request { server, gpus }).map(|p| p.node)
    }

    #[test]
    fn most_free_memory_wins_then_fewest_running_then_name() {
        let nodes = [
            n("a", true, 0, 8, 0),
            n("b", true, 0, 16, 9),
            n("c", true, 0, 4, 0),
        ];
        assert_eq!(pick(&nodes, None, 0), Ok("b".into()));
        let nodes = [
            n("a", true, 0, 16, 3),
            n("b", true, 0, 16, 1),
            n("c", true, 0, 16, 2),
        ];
        assert_eq!(pick(&nodes, None, 0), Ok("b".into()));
        let nodes = [n("b", true, 0, 16, 1), n("a", true, 0, 16, 1)];
        assert_eq!(pick(&nodes, None, 0), Ok("a".into()));
    }

    #[test]
    fn an_offline_node_is_never_chosen() {
        let nodes = [n("big", false, 8, 512, 0), n("small", true, 0, 1, 5)];
        assert_eq!(pick(&nodes, None, 0), Ok("small".into()));
        assert_eq!(
            pick(&nodes, Some("big"), 0),
            Err(NoPlacement::Offline("big".into()))
        );
        assert!(matches!(
            pick(&nodes, None, 1),
            Err(NoPlacement::NoGpu { wanted: 1, .. })
        ));
        let dead = [n("a", false, 0, 8, 0), n("b", false, 0, 8, 0)];
        assert_eq!(pick(&dead, None, 0), Err(NoPlacement::NoneOnline));
        assert_eq!(pick(&[], None, 0), Err(NoPlacement::NoneOnline));
    }

    #[test]
    fn gpu_requests_go_where_enough_gpus_are() {
        let nodes = [
            n("cpu", true, 0, 256, 0),
            n("one", true, 1, 8, 0),
            n("eight", true, 8, 4, 3),
        ];
        assert_eq!(pick(&nodes, None, 1), Ok("one".into()));
        assert_eq!(pick(&nodes, None, 2), Ok("eight".into()));
        assert_eq!(pick(&nodes, None, 0), Ok("cpu".into()));
        let e = pick(&nodes, None, 9).expect_err("nine GPUs");
        assert_eq!(
            e.to_string(),
            "No server with 9 GPUs found (cpu: no GPU; one: 1 GPU(s); eight: 8 GPU(s))"
        );
        let e = pick(&[n("cpu", true, 0, 1, 0)], None, 1).expect_err("no GPU");
        assert_eq!(e.to_string(), "No server with GPU found (cpu: no GPU)");
    }

    #[test]
    fn the_named_server_wins_and_must_exist() {
        let nodes = [n("a", true, 0, 64, 0), n("b", true, 0, 1, 9)];
        assert_eq!(pick(&nodes, Some("b"), 0), Ok("b".into()));
        // Named wins even over the GPU rule: the server says no if it must.
        assert_eq!(pick(&nodes, Some("b"), 1), Ok("b".into()));
        assert_eq!(
            pick(&nodes, Some("zz"), 0),
            Err(NoPlacement::UnknownServer("zz".into()))
        );
    }

    #[test]
    fn the_reason_names_the_rule_and_the_others() {
        let nodes = [
            n("a", true, 0, 8, 0),
            n("b", true, 0, 16, 2),
            n("c", false, 0, 0, 0),
        ];
        let p = place(&nodes, &Request::default()).expect("placed");
        assert_eq!(
            p.reason,
            "Auto-selected server b: most free memory (16.0 GB free, 2 running; a 8.0 GB, 0 running); not answering: c"
        );
        let p = place(&[n("a", true, 0, 1, 0)], &Request::default()).expect("placed");
        assert_eq!(
            p.reason,
            "Auto-selected server a: the only server online (1.0 GB free)"
        );
        let tie = [n("a", true, 0, 2, 3), n("b", true, 0, 2, 1)];
        let p = place(&tie, &Request::default()).expect("placed");
        assert!(
            p.reason.contains("then fewest running spaces"),
            "{}",
            p.reason
        );
        assert_eq!(human_bytes(1023), "1023.0 B");
    }

    #[test]
    fn templates_say_whether_they_want_a_gpu_and_only_plain_names_are_asked() {
        let t = |y: &str| serde_json::json!({"name": "t", "yaml": y});
        assert!(template_wants_gpu(&t("resources:\n  gpu: true\n")));
        assert!(!template_wants_gpu(&t("resources:\n  gpu: false\n")));
        assert!(!template_wants_gpu(&t("resources:\n  memory: 2g\n")));
        assert!(!template_wants_gpu(&t("resources: [")), "bad YAML: no");
        assert!(!template_wants_gpu(&serde_json::json!({"name": "t"})));
        for ok in ["gpu", "Big-1.x_y", "a"] {
            assert!(is_template_name(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a%2Fb", "a b", &"x".repeat(65)] {
            assert!(!is_template_name(bad), "{bad}");
        }
    }
}
