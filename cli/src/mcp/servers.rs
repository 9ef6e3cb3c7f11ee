//! Which server a tool call goes to: the servers the CLI discovers, or a
//! daemon and the other nodes of its fleet (through its relay).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::rest::{encode, CallError, Endpoint, Rest, Target};
use crate::fleet::{self, NodeLoad};

/// The servers the CLI knows: `(name, base URL)` pairs, asked before each
/// call (discovery caches them).
pub type Discover =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<(String, String)>> + Send>> + Send + Sync>;

/// Where the servers come from.
#[derive(Clone)]
pub enum Source {
    /// `clawdspace mcp`: the servers the CLI discovers.
    Discovered(Discover),
    /// A daemon's `/mcp`: the daemon at `base` (loopback) and the nodes of
    /// its fleet (`GET /api/nodes`), the others reached through its relay.
    Daemon {
        /// `http://127.0.0.1:<port>`.
        base: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Discovered(_) => f.write_str("Discovered"),
            Source::Daemon { base } => write!(f, "Daemon({base})"),
        }
    }
}

/// One server as `list_servers` shows it.
#[derive(Debug, Clone)]
pub struct Known {
    /// Where its requests go.
    pub target: Target,
    /// Its URL, as its fleet or the CLI knows it.
    pub url: String,
    /// Whether it answered last time (always true for discovered servers).
    pub online: bool,
    /// What its fleet knows of it (daemon mode).
    pub info: Option<Value>,
}

/// The servers of one tool call, with the caller's key.
pub struct Servers<'a> {
    /// The REST client with the key.
    pub rest: &'a Rest,
    /// Where the servers come from.
    pub source: &'a Source,
}

impl Servers<'_> {
    /// Every server, in order (the first is the default).
    pub async fn all(&self) -> Result<Vec<Known>, CallError> {
        match self.source {
            Source::Discovered(discover) => Ok(discover()
                .await
                .into_iter()
                .map(|(name, url)| Known {
                    target: Target {
                        server: name,
                        prefix: url.trim_end_matches('/').to_string(),
                    },
                    url,
                    online: true,
                    info: None,
                })
                .collect()),
            Source::Daemon { base } => {
                let me = Target {
                    server: "this server".into(),
                    prefix: base.clone(),
                };
                let v = self.rest.json(&me, Endpoint::Nodes, "", &[], None).await?;
                let nodes = v.get("nodes").and_then(Value::as_array).cloned();
                let mut out = Vec::new();
                for n in nodes.unwrap_or_default() {
                    let Some(name) = n.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let own = n.get("source").and_then(Value::as_str) == Some("self");
                    let prefix = if own {
                        base.clone()
                    } else {
                        format!("{base}/api/nodes/{}", encode(name))
                    };
                    let url = n.get("url").and_then(Value::as_str).unwrap_or_default();
                    out.push(Known {
                        target: Target {
                            server: name.to_string(),
                            prefix,
                        },
                        url: url.to_string(),
                        online: own || n.get("status").and_then(Value::as_str) == Some("online"),
                        info: Some(n.clone()),
                    });
                }
                // This server first: the default.
                out.sort_by_key(|k| k.target.prefix != *base);
                if out.is_empty() {
                    out.push(Known {
                        target: me,
                        url: base.clone(),
                        online: true,
                        info: None,
                    });
                }
                Ok(out)
            }
        }
    }

    fn none_found(&self) -> CallError {
        CallError(match self.source {
            Source::Discovered(_) => {
                "No Clawdspace server found: set CLAWDSPACE_HOSTS (and CLAWDSPACE_KEY) \
                 in the environment of `clawdspace mcp` or in ~/.clawdspace, then check with \
                 `clawdspace servers --refresh`"
                    .into()
            }
            Source::Daemon { .. } => "This server did not list itself in /api/nodes".into(),
        })
    }

    /// The server named `name` among `all`.
    fn pick(&self, all: &[Known], name: &str) -> Result<Target, CallError> {
        let lower = name.to_lowercase();
        all.iter()
            .find(|k| k.target.server == name || k.target.server == lower)
            .map(|k| k.target.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|k| k.target.server.as_str()).collect();
                CallError(format!(
                    "Unknown server '{name}' (known: {}; see list_servers)",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })
    }

    /// `server`, or the default server.
    pub async fn one(&self, server: Option<&str>) -> Result<Target, CallError> {
        let all = self.all().await?;
        match server {
            Some(s) => self.pick(&all, s),
            None => all
                .into_iter()
                .next()
                .map(|k| k.target)
                .ok_or_else(|| self.none_found()),
        }
    }

    /// `server`, or the one server that has space `name`.
    pub async fn with_space(&self, name: &str, server: Option<&str>) -> Result<Target, CallError> {
        let all = self.all().await?;
        if let Some(s) = server {
            return self.pick(&all, s);
        }
        let online: Vec<Target> = all
            .into_iter()
            .filter(|k| k.online)
            .map(|k| k.target)
            .collect();
        match online.len() {
            0 => return Err(self.none_found()),
            // One server: its own answer (404 and all) is the best error.
            1 => return Ok(online[0].clone()),
            _ => {}
        }
        let answers = join_all(
            online
                .iter()
                .map(|t| self.rest.json(t, Endpoint::GetSpace, name, &[], None)),
        )
        .await;
        let mut problems = Vec::new();
        for (t, a) in online.iter().zip(answers) {
            match a {
                Ok(_) => return Ok(t.clone()),
                Err(e) if e.0.contains("HTTP 404") => {}
                Err(e) => problems.push(format!("{}: {e}", t.server)),
            }
        }
        let searched: Vec<&str> = online.iter().map(|t| t.server.as_str()).collect();
        let mut msg = format!(
            "Space '{name}' not found on any server (searched: {})",
            searched.join(", ")
        );
        if !problems.is_empty() {
            msg.push_str(&format!("; errors: {}", problems.join("; ")));
        }
        Err(CallError(msg))
    }

    /// `server`, or where a new space with `gpus` GPUs goes (the fleet's
    /// placement rule). With a template, only servers that have it are
    /// candidates, and one whose resources ask for a GPU places as a GPU
    /// request (on the daemon's fleet: its own template decides).
    pub async fn for_create(
        &self,
        server: Option<&str>,
        gpus: usize,
        template: Option<&str>,
    ) -> Result<Target, CallError> {
        let all = self.all().await?;
        if let Some(s) = server {
            return self.pick(&all, s);
        }
        if all.len() == 1 {
            return Ok(all[0].target.clone());
        }
        let template = template.filter(|t| fleet::is_template_name(t));
        let chosen = match self.source {
            Source::Daemon { .. } => {
                let me = &all.first().ok_or_else(|| self.none_found())?.target;
                let wants = matches!(self.template_on(me, template).await, Some(Ok(v)) if fleet::template_wants_gpu(&v));
                let g = gpus.max(usize::from(wants)).to_string();
                let v = self
                    .rest
                    .json(me, Endpoint::Placement, "", &[("gpus", &g)], None)
                    .await?;
                v.get("node")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| CallError("placement answered without a node".into()))?
            }
            Source::Discovered(_) => {
                let answers = join_all(all.iter().map(|k| async {
                    let caps = self
                        .rest
                        .json(&k.target, Endpoint::Capabilities, "", &[], None);
                    tokio::join!(caps, self.template_on(&k.target, template))
                }))
                .await;
                let mut wants = false;
                let loads: Vec<NodeLoad> = all
                    .iter()
                    .zip(&answers)
                    .map(|(k, (c, t))| {
                        let mut l = load(&k.target.server, c.as_ref().ok());
                        match t {
                            Some(Ok(v)) => wants |= fleet::template_wants_gpu(v),
                            // Without the template: not a candidate.
                            Some(Err(_)) => l.online = false,
                            None => {}
                        }
                        l
                    })
                    .collect();
                if let Some(name) = template {
                    if answers.iter().all(|(_, t)| !matches!(t, Some(Ok(_)))) {
                        return Err(CallError(format!(
                            "Template '{name}' not found on any server"
                        )));
                    }
                }
                let gpus = gpus.max(usize::from(wants));
                let req = fleet::Request { server: None, gpus };
                fleet::place(&loads, &req)
                    .map_err(|e| CallError(e.to_string()))?
                    .node
            }
        };
        self.pick(&all, &chosen)
    }

    /// `GET /api/templates/{name}` on `t`, when there is a template.
    async fn template_on(
        &self,
        t: &Target,
        template: Option<&str>,
    ) -> Option<Result<Value, CallError>> {
        match template {
            Some(name) => Some(
                self.rest
                    .json(t, Endpoint::GetTemplate, name, &[], None)
                    .await,
            ),
            None => None,
        }
    }

    /// `list_servers`: every server with its status and capabilities.
    pub async fn describe(&self) -> Result<Value, CallError> {
        let all = self.all().await?;
        let list: Vec<Value> = match self.source {
            Source::Daemon { .. } => all
                .iter()
                .map(|k| {
                    let mut v = k.info.clone().unwrap_or_else(|| json!({}));
                    v["name"] = json!(k.target.server);
                    v["online"] = json!(k.online);
                    v
                })
                .collect(),
            Source::Discovered(_) => {
                let caps = join_all(all.iter().map(|k| {
                    self.rest
                        .json(&k.target, Endpoint::Capabilities, "", &[], None)
                }))
                .await;
                all.iter()
                    .zip(caps)
                    .map(|(k, c)| match c {
                        Ok(c) => json!({"name": k.target.server, "url": k.url, "status": "online", "capabilities": c}),
                        Err(e) => json!({"name": k.target.server, "url": k.url, "status": "offline", "error": e.0}),
                    })
                    .collect()
            }
        };
        Ok(json!({ "servers": list }))
    }
}

/// What placement needs of a server, from its `/api/system/capabilities`.
fn load(name: &str, caps: Option<&Value>) -> NodeLoad {
    let n = |k: &str| caps.and_then(|c| c.get(k)).and_then(Value::as_u64);
    NodeLoad {
        name: name.to_string(),
        online: caps.is_some(),
        gpus: n("gpusAvailable").map_or(0, |g| usize::try_from(g).unwrap_or(0)),
        memory_free: n("memoryFree").unwrap_or(0),
        spaces_running: n("spacesRunning").map_or(0, |r| usize::try_from(r).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_come_from_capabilities() {
        let c = json!({"gpusAvailable": 2, "memoryFree": 1000, "spacesRunning": 3});
        let l = load("a", Some(&c));
        assert_eq!(
            (l.gpus, l.memory_free, l.spaces_running, l.online),
            (2, 1000, 3, true)
        );
        assert!(!load("b", None).online);
    }
}
