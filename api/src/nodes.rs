//! The fleet as this server sees it (`GET /api/nodes`): itself, the nodes
//! named in `CLAWDSPACE_NODES`, and the Clawdspace servers among its
//! Tailscale peers, probed in parallel in the background every
//! `NODES_REFRESH_MS`. Requests only read the last results, so a dead or
//! slow node never slows this one down.
//!
//! The API key goes only to nodes in that list: configured ones, and
//! Tailscale peers (with the configured tag, when one is set) that answered
//! `/api/health` as a Clawdspace server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use clawdspace_cli::fleet::{tailscale, NodeLoad, TailscaleConfig};

use crate::model::{NodeCapabilities, NodeJson};

/// Cap of a node's `/api/health` answer.
const MAX_HEALTH_BYTES: usize = 64 << 10;
/// Cap of a node's `/api/system/capabilities` answer.
const MAX_CAPABILITIES_BYTES: usize = 1 << 20;
/// Time a health probe may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Time the capabilities request may take.
const CAPABILITIES_TIMEOUT: Duration = Duration::from_secs(3);

/// How the fleet is found.
#[derive(Debug, Clone)]
pub struct NodesConfig {
    /// This server's name.
    pub name: String,
    /// This server's URL as the others reach it.
    pub url: String,
    /// `CLAWDSPACE_NODES`: `(name, url)`.
    pub configured: Vec<(String, String)>,
    /// Tailscale discovery (none: off).
    pub tailscale: Option<TailscaleConfig>,
    /// Time between probes.
    pub refresh: Duration,
}

/// Where a node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Config,
    Tailscale,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Tailscale => "tailscale",
        }
    }
}

/// What one probe found.
struct Probed {
    latency_ms: u64,
    capabilities: Option<NodeCapabilities>,
    memory_free: Option<u64>,
    spaces_running: Option<usize>,
    gpus_available: Option<usize>,
    error: Option<String>,
}

/// The other nodes, as last probed.
#[derive(Default)]
struct Known {
    nodes: BTreeMap<String, NodeJson>,
    last_updated_at: i64,
}

/// The fleet this server knows.
pub struct Nodes {
    config: NodesConfig,
    key: Arc<str>,
    client: reqwest::Client,
    known: Mutex<Known>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Reads at most `cap` bytes of a response body.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > cap {
            return Err(format!("answer larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Nodes {
    /// The fleet of `config`; probes start with [`Nodes::run`].
    pub fn new(config: NodesConfig, key: Arc<str>) -> Result<Nodes, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client for node probes: {e}"))?;
        Ok(Nodes {
            config,
            key,
            client,
            known: Mutex::new(Known::default()),
        })
    }

    /// This server's name and URL.
    pub fn me(&self) -> (&str, &str) {
        (&self.config.name, &self.config.url)
    }

    fn is_me(&self, name: &str, url: &str) -> bool {
        name == self.config.name || url.trim_end_matches('/') == self.config.url
    }

    /// Probes the fleet every refresh interval, forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.refresh().await;
            tokio::time::sleep(self.config.refresh).await;
        }
    }

    /// The other nodes, by name, and when they were last probed.
    pub fn others(&self) -> (Vec<NodeJson>, i64) {
        let k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        (k.nodes.values().cloned().collect(), k.last_updated_at)
    }

    /// Looks for nodes and probes them all once.
    pub async fn refresh(&self) {
        let mut candidates: Vec<(String, String, Source)> = Vec::new();
        let mut add = |name: String, url: String, source: Source| {
            if !self.is_me(&name, &url)
                && !candidates.iter().any(|(n, u, _)| *n == name || *u == url)
            {
                candidates.push((name, url, source));
            }
        };
        for (name, url) in &self.config.configured {
            add(name.clone(), url.clone(), Source::Config);
        }
        if let Some(ts) = &self.config.tailscale {
            match tailscale::peers(ts).await {
                Ok(peers) => {
                    for (name, url) in tailscale::candidates(&peers, ts) {
                        add(name, url, Source::Tailscale);
                    }
                }
                Err(e) => tracing::debug!("Tailscale discovery skipped: {e}"),
            }
        }
        // Tailscale servers seen before stay listed (offline) when they
        // drop off the tailnet.
        let before: Vec<NodeJson> = self.others().0;
        for n in &before {
            if n.source == Source::Tailscale.as_str() {
                add(n.name.clone(), n.url.clone(), Source::Tailscale);
            }
        }
        let results = join_all(candidates.iter().map(|(_, url, _)| self.probe(url))).await;
        let mut nodes = BTreeMap::new();
        for ((name, url, source), result) in candidates.into_iter().zip(results) {
            let last = before.iter().find(|n| n.name == name);
            let node = match result {
                Ok(p) => NodeJson {
                    name: name.clone(),
                    url,
                    status: "online".into(),
                    latency_ms: Some(p.latency_ms),
                    capabilities: p
                        .capabilities
                        .or_else(|| last.and_then(|l| l.capabilities.clone())),
                    memory_free: p.memory_free,
                    spaces_running: p.spaces_running,
                    gpus_available: p.gpus_available,
                    source: source.as_str().into(),
                    error: p.error,
                    last_seen_at: Some(now_ms()),
                },
                // A Tailscale peer that never answered is not a server.
                Err(_) if source == Source::Tailscale && last.is_none() => continue,
                Err(e) => NodeJson {
                    name: name.clone(),
                    url,
                    status: "offline".into(),
                    latency_ms: None,
                    capabilities: last.and_then(|l| l.capabilities.clone()),
                    memory_free: None,
                    spaces_running: None,
                    gpus_available: None,
                    source: source.as_str().into(),
                    error: Some(e),
                    last_seen_at: last.and_then(|l| l.last_seen_at),
                },
            };
            nodes.insert(name, node);
        }
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        k.nodes = nodes;
        k.last_updated_at = now_ms();
    }

    /// Asks one node whether it is a Clawdspace server (`/api/health`,
    /// no key) and then, with the key, for its capabilities and load.
    async fn probe(&self, url: &str) -> Result<Probed, String> {
        let t = Instant::now();
        let resp = self
            .client
            .get(format!("{url}/api/health"))
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let body = read_capped(resp, MAX_HEALTH_BYTES).await?;
        if !String::from_utf8_lossy(&body).contains("\"ok\"") {
            return Err("not a Clawdspace server (its /api/health does not say ok)".into());
        }
        let latency_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut probed = Probed {
            latency_ms,
            capabilities: None,
            memory_free: None,
            spaces_running: None,
            gpus_available: None,
            error: None,
        };
        match self.capabilities(url).await {
            Ok(v) => {
                probed.capabilities = serde_json::from_value(v.clone()).ok();
                probed.memory_free = v.get("memoryFree").and_then(Value::as_u64);
                probed.spaces_running = v
                    .get("spacesRunning")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok());
                probed.gpus_available = v
                    .get("gpusAvailable")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok());
            }
            Err(e) => probed.error = Some(format!("capabilities: {e}")),
        }
        Ok(probed)
    }

    async fn capabilities(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(format!("{url}/api/system/capabilities"))
            .bearer_auth(&*self.key)
            .timeout(CAPABILITIES_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err("HTTP 401: it has another API key".into());
        }
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let body = read_capped(resp, MAX_CAPABILITIES_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    }
}

/// What placement needs of a listed node.
pub fn load_of(n: &NodeJson) -> NodeLoad {
    NodeLoad {
        name: n.name.clone(),
        online: n.status == "online",
        gpus: n.gpus_available.unwrap_or(0),
        memory_free: n.memory_free.unwrap_or(0),
        spaces_running: n.spaces_running.unwrap_or(0),
    }
}

/// Parses `CLAWDSPACE_NODES`: `name=url` entries separated by commas (or
/// whitespace). A URL may be written `host[:port]` (http, port 7777).
pub fn parse_nodes(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in s.split(|c: char| c == ',' || c.is_whitespace()) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("node '{entry}' is not name=url"))?;
        let name = name.trim().to_lowercase();
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "node name '{name}' must be 1-63 letters, digits, '.', '_' or '-'"
            ));
        }
        let url = node_url(url.trim())?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("node '{name}' is named twice"));
        }
        out.push((name, url));
    }
    Ok(out)
}

/// A node's base URL: `http(s)://host[:port]` as given (without a trailing
/// slash), or `host[:port]` as `http://host:port` (port 7777).
pub fn node_url(u: &str) -> Result<String, String> {
    let full = if u.starts_with("http://") || u.starts_with("https://") {
        u.to_string()
    } else if u.contains(':') && !u.starts_with('[') {
        format!("http://{u}")
    } else {
        format!("http://{u}:7777")
    };
    let parsed = reqwest::Url::parse(&full).map_err(|e| format!("node URL '{u}': {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty)
        || parsed.query().is_some()
        || !matches!(parsed.path(), "" | "/")
        || !parsed.username().is_empty()
    {
        return Err(format!(
            "node URL '{u}' must be http(s)://host[:port] with nothing after it"
        ));
    }
    Ok(full.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_strictly() {
        assert_eq!(
            parse_nodes("a=http://127.0.0.1:7777, B=box:8000 c=gpu.example").ok(),
            Some(vec![
                ("a".into(), "http://127.0.0.1:7777".into()),
                ("b".into(), "http://box:8000".into()),
                ("c".into(), "http://gpu.example:7777".into()),
            ])
        );
        assert_eq!(parse_nodes("").ok(), Some(vec![]));
        assert_eq!(
            parse_nodes("https://x/").ok(),
            None,
            "an entry without a name"
        );
        for bad in [
            "a",
            "=http://x",
            "a b=http://x",
            "a=http://x/api",
            "a=http://u@x",
            "a=x,a=y",
        ] {
            assert!(parse_nodes(bad).is_err(), "{bad}");
        }
        assert_eq!(node_url("https://h:1/").ok(), Some("https://h:1".into()));
    }
}
