//! Server discovery and the `~/.clawdspace-servers` cache (SPEC 11.3).
//!
//! Cache format (exact, as the original wrote it): one line of
//! `<name>=<url> ` entries (each followed by one space), unique and sorted
//! bytewise, no trailing newline; an empty file when no server answered.
//! The cache is used while it is younger than 300 s (by mtime), not empty,
//! and not older than `~/.clawdspace` itself.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::api::{Api, Connect, Opts};
use clawdspace_cli::fleet::{tailscale, TailscaleConfig};

use crate::config::{host_url, Settings};

/// How long a cache file is trusted.
pub const TTL: Duration = Duration::from_secs(300);

/// A discovered server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub name: String,
    pub url: String,
}

/// The cache file's content for `servers`.
pub fn format_cache(servers: &[Server]) -> String {
    let mut entries: Vec<String> = servers
        .iter()
        .map(|s| format!("{}={}", s.name, s.url))
        .collect();
    entries.sort();
    entries.dedup();
    entries.iter().map(|e| format!("{e} ")).collect()
}

/// Servers listed in a cache file's content, in file order.
pub fn parse_cache(text: &str) -> Vec<Server> {
    text.split_whitespace()
        .filter_map(|e| e.split_once('='))
        .filter(|(n, u)| !n.is_empty() && !u.is_empty())
        .map(|(n, u)| Server {
            name: n.to_string(),
            url: u.to_string(),
        })
        .collect()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The cached servers when the cache is fresh.
pub fn fresh_cache(settings: &Settings) -> Option<Vec<Server>> {
    let written = mtime(&settings.cache_file)?;
    let age = SystemTime::now()
        .duration_since(written)
        .unwrap_or(Duration::ZERO);
    if age >= TTL {
        return None;
    }
    if mtime(&settings.config_file).is_some_and(|c| c > written) {
        return None;
    }
    let servers = parse_cache(&fs::read_to_string(&settings.cache_file).ok()?);
    (!servers.is_empty()).then_some(servers)
}

/// Writes the cache file (atomically).
pub fn write_cache(path: &Path, servers: &[Server]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".clawdspace-servers.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(format_cache(servers).as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// What probing one host found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The host entry as configured, or the name a Tailscale peer or a
    /// server's `/api/nodes` gave it.
    pub host: String,
    pub url: String,
    /// `hostname` from `/api/system`, lower-cased.
    pub hostname: Option<String>,
}

/// Probes one server URL: `/api/health` (0.5 s connect, 3 s cap) must
/// contain `"ok"`; then `/api/system` (1 s connect, 5 s cap) names it.
async fn probe_one(api: &Api, host: &str, url: String) -> Option<Found> {
    let opts = Opts {
        connect: Connect::Probe,
        total: Some(Duration::from_secs(3)),
        auth: false,
    };
    let (_, body) = api
        .raw(&url, Method::GET, "/health", None, opts)
        .await
        .ok()?;
    if !String::from_utf8_lossy(&body).contains("\"ok\"") {
        return None;
    }
    let server = Server {
        name: host.to_string(),
        url: url.clone(),
    };
    let hostname = api
        .call(
            &server,
            Method::GET,
            "/system",
            None,
            Opts::new(Connect::Quick, Some(Duration::from_secs(5))),
        )
        .await
        .ok()
        .and_then(|v| {
            v.get("hostname")
                .and_then(Value::as_str)
                .map(str::to_lowercase)
        })
        .filter(|h| !h.trim().is_empty() && !h.contains(char::is_whitespace) && !h.contains('='));
    Some(Found {
        host: host.to_string(),
        url,
        hostname,
    })
}

/// The online nodes a server's `/api/nodes` lists, as `(name, url)`
/// (nothing when it has no such endpoint or does not answer). The server's
/// own entry (`"source": "self"`) is left out: it was found already, maybe
/// under another address (`localhost` against the address it announces),
/// and would be listed twice.
async fn nodes_of(api: &Api, found: &Found) -> Vec<(String, String)> {
    let server = Server {
        name: found.host.clone(),
        url: found.url.clone(),
    };
    let Ok(v) = api
        .call(
            &server,
            Method::GET,
            "/nodes",
            None,
            Opts::new(Connect::Quick, Some(Duration::from_secs(5))),
        )
        .await
    else {
        return Vec::new();
    };
    v.get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|n| n.get("status").and_then(Value::as_str) == Some("online"))
        .filter(|n| n.get("source").and_then(Value::as_str) != Some("self"))
        .filter_map(|n| {
            let name = n.get("name")?.as_str()?;
            let url = n.get("url")?.as_str()?;
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && !url.contains(char::is_whitespace)
                && !name.is_empty()
                && !name.contains(|c: char| c.is_whitespace() || c == '=');
            ok.then(|| (name.to_lowercase(), url.trim_end_matches('/').to_string()))
        })
        .collect()
}

/// Names the found servers: the reported hostname, else the host entry
/// (lower-cased). When several different URLs report the same hostname
/// (e.g. two daemons on one machine), each of them is named by its host
/// entry instead, so every server keeps a distinct name. The result is in
/// cache order.
pub fn assign_names(found: Vec<Found>) -> Vec<Server> {
    let mut unique: Vec<Found> = Vec::new();
    for f in found {
        if !unique.iter().any(|u| u.url == f.url) {
            unique.push(f);
        }
    }
    let name_of = |f: &Found| f.hostname.clone().unwrap_or_else(|| f.host.to_lowercase());
    let servers: Vec<Server> = unique
        .iter()
        .map(|f| {
            let name = name_of(f);
            let shared = unique.iter().filter(|o| name_of(o) == name).count() > 1;
            Server {
                name: if shared { f.host.to_lowercase() } else { name },
                url: f.url.clone(),
            }
        })
        .collect();
    parse_cache(&format_cache(&servers))
}

/// Probes every configured host and the Tailscale peers in parallel, then
/// the servers that those servers' `/api/nodes` list.
pub async fn probe(api: &Api, hosts: &[String]) -> Vec<Server> {
    let mut targets: Vec<(String, String)> =
        hosts.iter().map(|h| (h.clone(), host_url(h))).collect();
    if let Some(ts) = TailscaleConfig::from_env() {
        if let Ok(peers) = tailscale::peers(&ts).await {
            targets.extend(tailscale::candidates(&peers, &ts));
        }
    }
    let mut found: Vec<Found> = join_all(targets.iter().map(|(h, u)| probe_one(api, h, u.clone())))
        .await
        .into_iter()
        .flatten()
        .collect();
    let listed = join_all(found.iter().map(|f| nodes_of(api, f))).await;
    let mut more: Vec<(String, String)> = Vec::new();
    for (name, url) in listed.into_iter().flatten() {
        if !targets.iter().any(|(_, u)| *u == url) && !more.iter().any(|(_, u)| *u == url) {
            more.push((name, url));
        }
    }
    found.extend(
        join_all(more.iter().map(|(h, u)| probe_one(api, h, u.clone())))
            .await
            .into_iter()
            .flatten(),
    );
    assign_names(found)
}

/// The known servers: the cache when fresh (and `refresh` is false), else a
/// new probe, written to the cache.
pub async fn servers(settings: &Settings, api: &Api, refresh: bool) -> Vec<Server> {
    if !refresh {
        if let Some(s) = fresh_cache(settings) {
            return s;
        }
    }
    let found = probe(api, &settings.hosts).await;
    if let Err(e) = write_cache(&settings.cache_file, &found) {
        eprintln!(
            "Warning: could not write {}: {e}",
            settings.cache_file.display()
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, url: &str) -> Server {
        Server {
            name: name.into(),
            url: url.into(),
        }
    }

    #[test]
    fn cache_format_is_the_original_one() {
        let servers = vec![
            s("rtx3090", "http://100.64.248.29:7777"),
            s("oracle", "http://100.67.131.19:7777"),
            s("oracle", "http://100.67.131.19:7777"),
        ];
        let text = format_cache(&servers);
        assert_eq!(
            text,
            "oracle=http://100.67.131.19:7777 rtx3090=http://100.64.248.29:7777 "
        );
        assert_eq!(format_cache(&[]), "");
        assert_eq!(
            parse_cache(&text),
            vec![
                s("oracle", "http://100.67.131.19:7777"),
                s("rtx3090", "http://100.64.248.29:7777")
            ]
        );
        assert_eq!(parse_cache(" junk a=b\n"), vec![s("a", "b")]);
    }

    #[test]
    fn colliding_hostnames_fall_back_to_host_entries() {
        let f = |host: &str, url: &str, hn: Option<&str>| Found {
            host: host.into(),
            url: url.into(),
            hostname: hn.map(String::from),
        };
        let servers = assign_names(vec![
            f("127.0.0.1:7002", "http://127.0.0.1:7002", Some("box")),
            f("127.0.0.1:7001", "http://127.0.0.1:7001", Some("box")),
            f("Other", "http://Other:7777", None),
            f("gpu", "http://gpu:7777", Some("rtx")),
            f("gpu-again", "http://gpu:7777", Some("rtx")),
        ]);
        assert_eq!(
            servers,
            vec![
                s("127.0.0.1:7001", "http://127.0.0.1:7001"),
                s("127.0.0.1:7002", "http://127.0.0.1:7002"),
                s("other", "http://Other:7777"),
                s("rtx", "http://gpu:7777"),
            ]
        );
    }
}
