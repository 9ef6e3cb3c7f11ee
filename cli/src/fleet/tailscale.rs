//! Tailscale discovery: the peers `tailscale status --json` lists are the
//! candidate servers, probed on the Clawdspace port. No `tailscale` binary,
//! or one that fails, simply means no peers.
//!
//! The document comes from the local tailscaled, but peers' host names are
//! chosen by whoever runs them: names are reduced to `[a-z0-9._-]`, and the
//! output read is capped.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

/// Largest `tailscale status --json` output read (a tailnet of thousands
/// of peers is a few MiB).
const MAX_STATUS_BYTES: u64 = 16 << 20;
/// How long `tailscale status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How to discover servers on the tailnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleConfig {
    /// The `tailscale` program (found on `PATH` when a bare name).
    pub program: String,
    /// Port the servers listen on (`CLAWDSPACE_TAILSCALE_PORT`, 7777).
    pub port: u16,
    /// Only peers with this tag (`CLAWDSPACE_TAILSCALE_TAG`, e.g.
    /// `tag:clawdspace`); none: every peer.
    pub tag: Option<String>,
}

impl TailscaleConfig {
    /// From `CLAWDSPACE_TAILSCALE` (the program; empty: no discovery),
    /// `CLAWDSPACE_TAILSCALE_PORT` and `CLAWDSPACE_TAILSCALE_TAG` (bad or
    /// empty values: the defaults), as the daemon reads them.
    pub fn from_env() -> Option<TailscaleConfig> {
        let program = std::env::var("CLAWDSPACE_TAILSCALE").unwrap_or_else(|_| "tailscale".into());
        let program = program.trim();
        if program.is_empty() {
            return None;
        }
        let port = std::env::var("CLAWDSPACE_TAILSCALE_PORT")
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .filter(|p| *p != 0)
            .unwrap_or(7777);
        let tag = std::env::var("CLAWDSPACE_TAILSCALE_TAG")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Some(TailscaleConfig {
            program: program.to_string(),
            port,
            tag,
        })
    }
}

/// One peer of the tailnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Host name, lower-cased, only `[a-z0-9._-]`.
    pub name: String,
    /// Its Tailscale addresses.
    pub ips: Vec<IpAddr>,
    /// Whether tailscaled sees it online.
    pub online: bool,
    /// ACL tags (`tag:…`).
    pub tags: Vec<String>,
}

impl Peer {
    /// The URL a Clawdspace server on this peer would answer at (its
    /// first IPv4 address, else its first IPv6 one).
    pub fn url(&self, port: u16) -> Option<String> {
        let ip = self
            .ips
            .iter()
            .find(|i| i.is_ipv4())
            .or_else(|| self.ips.first())?;
        Some(match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{port}"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        })
    }
}

#[derive(Deserialize)]
struct Status {
    #[serde(rename = "Peer", default)]
    peer: Option<std::collections::BTreeMap<String, RawPeer>>,
}

#[derive(Deserialize)]
struct RawPeer {
    #[serde(rename = "HostName", default)]
    host_name: Option<String>,
    #[serde(rename = "DNSName", default)]
    dns_name: Option<String>,
    #[serde(rename = "TailscaleIPs", default)]
    ips: Option<Vec<String>>,
    #[serde(rename = "Online", default)]
    online: Option<bool>,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
}

/// A peer's name: `HostName`, else the first label of `DNSName`,
/// lower-cased and reduced to `[a-z0-9._-]` (at most 63 characters).
fn clean_name(raw: &RawPeer) -> Option<String> {
    let dns_label = raw
        .dns_name
        .as_deref()
        .and_then(|d| d.split('.').next())
        .unwrap_or("");
    [raw.host_name.as_deref().unwrap_or(""), dns_label]
        .into_iter()
        .map(|n| {
            n.to_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '-'
                    }
                })
                .take(63)
                .collect::<String>()
                .trim_matches(|c| matches!(c, '-' | '.'))
                .to_string()
        })
        .find(|n| !n.is_empty())
}

/// The peers in a `tailscale status --json` document, sorted by name.
pub fn parse_status(json: &[u8]) -> Result<Vec<Peer>, String> {
    let status: Status = serde_json::from_slice(json)
        .map_err(|e| format!("tailscale status --json is not what was expected: {e}"))?;
    let mut peers: Vec<Peer> = status
        .peer
        .unwrap_or_default()
        .into_values()
        .filter_map(|raw| {
            let name = clean_name(&raw)?;
            let ips = raw
                .ips
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i.parse().ok())
                .collect();
            Some(Peer {
                name,
                ips,
                online: raw.online.unwrap_or(false),
                tags: raw.tags.unwrap_or_default(),
            })
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(peers)
}

/// The peers worth probing: online, with the tag when one is required,
/// with an address; as `(name, url)`.
pub fn candidates(peers: &[Peer], config: &TailscaleConfig) -> Vec<(String, String)> {
    peers
        .iter()
        .filter(|p| p.online)
        .filter(|p| config.tag.as_ref().is_none_or(|t| p.tags.contains(t)))
        .filter_map(|p| Some((p.name.clone(), p.url(config.port)?)))
        .collect()
}

/// Runs `tailscale status --json`. `None` when there is no `tailscale`
/// program, it fails or says something unparsable (the reason goes to
/// the caller's debug log through the error string).
pub async fn peers(config: &TailscaleConfig) -> Result<Vec<Peer>, String> {
    let mut child = tokio::process::Command::new(&config.program)
        .args(["status", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", config.program))?;
    let mut out = Vec::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let read = async {
        stdout
            .take(MAX_STATUS_BYTES)
            .read_to_end(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        child.wait().await.map_err(|e| e.to_string())
    };
    let status = tokio::time::timeout(STATUS_TIMEOUT, read)
        .await
        .map_err(|_| format!("{} status timed out", config.program))??;
    if !status.success() {
        return Err(format!("{} status --json: {status}", config.program));
    }
    parse_status(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
      "Version": "1.76.1",
      "Self": {"HostName": "me", "TailscaleIPs": ["100.64.0.1"], "Online": true},
      "Peer": {
        "nodekey:1": {"HostName": "GPU-Box", "DNSName": "gpu-box.tail1234.ts.net.",
                      "TailscaleIPs": ["100.64.0.2", "fd7a:115c:a1e0::2"], "Online": true,
                      "Tags": ["tag:clawdspace"]},
        "nodekey:2": {"HostName": "laptop", "TailscaleIPs": ["100.64.0.3"], "Online": true},
        "nodekey:3": {"HostName": "old", "TailscaleIPs": ["100.64.0.4"], "Online": false,
                      "Tags": ["tag:clawdspace"]},
        "nodekey:4": {"HostName": "", "DNSName": "v6only.tail1234.ts.net.",
                      "TailscaleIPs": ["fd7a:115c:a1e0::5"], "Online": true, "Tags": null},
        "nodekey:5": {"HostName": "x y/../z", "TailscaleIPs": [], "Online": true}
      }
    }"#;

    fn config(tag: Option<&str>) -> TailscaleConfig {
        TailscaleConfig {
            program: "tailscale".into(),
            port: 7777,
            tag: tag.map(String::from),
        }
    }

    #[test]
    fn peers_are_parsed_with_clean_names() {
        let peers = parse_status(DOC.as_bytes()).expect("parsed");
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["gpu-box", "laptop", "old", "v6only", "x-y-..-z"]);
        assert!(!peers[2].online);
        assert_eq!(peers[0].tags, ["tag:clawdspace"]);
        assert!(parse_status(b"[1]").is_err());
        assert_eq!(parse_status(b"{}").expect("no peers"), vec![]);
    }

    #[test]
    fn candidates_are_online_tagged_peers_with_an_address() {
        let peers = parse_status(DOC.as_bytes()).expect("parsed");
        assert_eq!(
            candidates(&peers, &config(None)),
            vec![
                ("gpu-box".to_string(), "http://100.64.0.2:7777".to_string()),
                ("laptop".to_string(), "http://100.64.0.3:7777".to_string()),
                (
                    "v6only".to_string(),
                    "http://[fd7a:115c:a1e0::5]:7777".to_string()
                ),
            ]
        );
        assert_eq!(
            candidates(&peers, &config(Some("tag:clawdspace"))),
            vec![("gpu-box".to_string(), "http://100.64.0.2:7777".to_string())]
        );
    }

    #[tokio::test]
    async fn no_tailscale_program_means_no_peers() {
        let mut c = config(None);
        c.program = "/nonexistent/tailscale".into();
        assert!(peers(&c).await.is_err());
    }
}
