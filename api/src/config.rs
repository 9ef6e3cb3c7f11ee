//! Daemon configuration from the environment (SPEC section 2 plus ours).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;
use clawdspace_runtime::network::{config::parse_list, Ipv4Net};

/// A comma-separated list option.
#[derive(Debug, Clone, Default)]
pub struct List<T>(pub Vec<T>);

fn bridge(s: &str) -> Result<String, String> {
    let c = clawdspace_runtime::NetworkConfig {
        bridge: s.to_string(),
        ..Default::default()
    };
    c.validate().map(|()| c.bridge)
}

/// A disk size; none when written empty.
#[derive(Debug, Clone, Copy)]
pub struct OptionalDisk(pub Option<u64>);

fn default_disk(s: &str) -> Result<OptionalDisk, String> {
    if s.trim().is_empty() {
        return Ok(OptionalDisk(None));
    }
    crate::input::disk_size(s)
        .map(|b| OptionalDisk(Some(b)))
        .map_err(|e| format!("{e} (e.g. \"10g\", \"512m\"; empty: none)"))
}

fn nodes(s: &str) -> Result<List<(String, String)>, String> {
    crate::nodes::parse_nodes(s).map(List)
}

fn list<T: FromStr>(s: &str) -> Result<List<T>, String>
where
    T::Err: std::fmt::Display,
{
    parse_list(s).map(List)
}

/// clawdspaced: the Clawdspace REST daemon. Runs spaces (sandboxed Linux
/// environments) on this server and serves the REST API and dashboard.
/// Every option is read from the environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(name = "clawdspaced", version, about, long_about = None)]
pub struct Config {
    /// TCP port to listen on (0.0.0.0).
    #[arg(long, env = "PORT", default_value_t = 7777)]
    pub port: u16,
    /// The API key. Unset or empty: a random key kept in
    /// `<state dir>/api-key` (created on first start, root-only).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Auto-sleep threshold: pause spaces idle longer than this (ms).
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 600_000)]
    pub idle_timeout_ms: u64,
    /// How often the auto-sleep worker runs (ms).
    #[arg(long, env = "CLAWDSPACE_SLEEP_INTERVAL_MS", default_value_t = 60_000)]
    pub sleep_interval_ms: u64,
    /// Image for spaces created without one.
    #[arg(long, env = "CLAWDSPACE_IMAGE", default_value = "clawdspace:latest")]
    pub image: String,
    /// Image for GPU spaces created without one.
    #[arg(
        long,
        env = "CLAWDSPACE_GPU_IMAGE",
        default_value = "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime"
    )]
    pub gpu_image: String,
    /// Where spaces, images and the key live.
    #[arg(
        long,
        env = "CLAWDSPACE_STATE_DIR",
        default_value = "/var/lib/clawdspace"
    )]
    pub state_dir: PathBuf,
    /// Registries reached over plain HTTP (comma-separated host:port).
    #[arg(long, env = "CLAWDSPACE_INSECURE_REGISTRIES", default_value = "")]
    pub insecure_registries: String,
    /// Registry used instead of docker.io (host[:port]).
    #[arg(long, env = "CLAWDSPACE_DOCKER_MIRROR")]
    pub docker_mirror: Option<String>,
    /// Registry credentials file (Docker `config.json` format; default
    /// `<state dir>/auth.json`, then `~/.docker/config.json`).
    #[arg(long, env = "CLAWDSPACE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Parent cgroup of all spaces.
    #[arg(long, env = "CLAWDSPACE_CGROUP_PARENT", default_value = "/clawdspace")]
    pub cgroup_parent: String,
    /// Worker processes running libcontainer.
    #[arg(long, env = "CLAWDSPACE_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Directories with CDI specs (`:`-separated; empty: none)
    /// [default: /etc/cdi:/var/run/cdi].
    #[arg(long, env = "CLAWDSPACE_CDI_DIRS")]
    pub cdi_dirs: Option<String>,
    /// CDI kind of the GPUs given to GPU spaces [default: nvidia.com/gpu].
    #[arg(long, env = "CLAWDSPACE_GPU_CDI_KIND")]
    pub gpu_cdi_kind: Option<String>,
    /// nvidia-container-runtime-hook to use when there is no CDI spec
    /// (empty: never) [default: found on PATH or in /usr/bin].
    #[arg(long, env = "CLAWDSPACE_NVIDIA_HOOK")]
    pub nvidia_hook: Option<String>,
    /// NVIDIA_DRIVER_CAPABILITIES of hook GPU spaces [default: compute,utility].
    #[arg(long, env = "CLAWDSPACE_GPU_CAPABILITIES")]
    pub gpu_capabilities: Option<String>,
    /// Where the NVIDIA driver is looked for when there is neither a CDI
    /// spec nor the hook (empty: never) [default: /].
    #[arg(long, env = "CLAWDSPACE_NVIDIA_DRIVER_ROOT")]
    pub nvidia_driver_root: Option<String>,
    /// Bridge of networked spaces; also the name of our nftables table.
    #[arg(long, env = "CLAWDSPACE_BRIDGE", default_value = "clawdspace0", value_parser = bridge)]
    pub bridge: String,
    /// Subnet of networked spaces; its first address is the bridge's.
    #[arg(long, env = "CLAWDSPACE_SUBNET", default_value = "10.88.0.0/16")]
    pub subnet: Ipv4Net,
    /// Blocked destinations (private, link-local, metadata ranges) spaces
    /// may reach anyway: comma-separated IPv4 CIDRs.
    #[arg(long, env = "CLAWDSPACE_ALLOW_NETS", default_value = "", value_parser = list::<Ipv4Net>)]
    pub allow_nets: List<Ipv4Net>,
    /// DNS servers of spaces, comma-separated IPv4 addresses (default: the
    /// host's, or its stub resolver's upstream servers).
    #[arg(long, env = "CLAWDSPACE_DNS", default_value = "", value_parser = list::<Ipv4Addr>)]
    pub dns: List<Ipv4Addr>,
    /// How long (ms) the bridge and nftables table stay after the last
    /// networked space is destroyed; 0: removed at once.
    #[arg(long, env = "CLAWDSPACE_NETWORK_LINGER_MS", default_value_t = 60_000)]
    pub network_linger_ms: u64,
    /// Network namespaces kept ready while the bridge is up (each with its
    /// veth, address and port binding), so that a networked create does
    /// not wait for the kernel to make one; 0: made on each create.
    #[arg(long, env = "CLAWDSPACE_NETWORK_SPARES", default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=64))]
    pub network_spares: u8,
    /// Let spaces publish TCP ports on the host's addresses (`ports` at
    /// create; `1`/`true` or `0`/`false`).
    #[arg(long, env = "CLAWDSPACE_PUBLISH_PORTS", default_value = "0", value_parser = parse_switch,
        action = clap::ArgAction::Set)]
    pub publish_ports: bool,
    /// Disk limit of spaces created without `disk`, written like `disk`
    /// (`"10g"`); unset or empty: none. Ignored, with a warning at start,
    /// when the state directory's filesystem does not enforce project quotas.
    #[arg(long, env = "CLAWDSPACE_DEFAULT_DISK", value_parser = default_disk)]
    pub default_disk: Option<OptionalDisk>,
    /// Time a client has to send a complete request head (ms), counted
    /// from connecting, or from the first byte of a later request on a
    /// kept-alive connection. Slower or silent connections are closed.
    #[arg(long, env = "CLAWDSPACE_HEADER_TIMEOUT_MS", default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// How long a kept-alive HTTP connection may wait for its next request
    /// (ms). Requests being handled (long execs) and WebSocket sessions are
    /// never cut.
    #[arg(long, env = "CLAWDSPACE_KEEPALIVE_TIMEOUT_MS", default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_timeout_ms: u64,
    /// Open HTTP connections at most, WebSocket sessions included; further
    /// clients wait in the listen backlog until one closes.
    #[arg(long, env = "CLAWDSPACE_MAX_CONNECTIONS", default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Address to listen on, `ip:port` [default: 0.0.0.0:$PORT]. On
    /// Tailscale, the server's tailnet address keeps the API off other
    /// networks.
    #[arg(long, env = "CLAWDSPACE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// This server's name in `/api/nodes` [default: its host name].
    #[arg(long, env = "CLAWDSPACE_NODE_NAME")]
    pub node_name: Option<String>,
    /// This server's URL as other nodes reach it [default:
    /// http://<listen address, or host name>:<port>].
    #[arg(long, env = "CLAWDSPACE_NODE_URL", value_parser = crate::nodes::node_url)]
    pub node_url: Option<String>,
    /// Other servers of the fleet: `name=url,name=url` (`url` may be
    /// `host[:port]`).
    #[arg(long, env = "CLAWDSPACE_NODES", default_value = "", value_parser = nodes)]
    pub nodes: List<(String, String)>,
    /// How often the other nodes are probed (ms).
    #[arg(long, env = "NODES_REFRESH_MS", default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(100..))]
    pub nodes_refresh_ms: u64,
    /// The `tailscale` program whose peers are probed as nodes (empty: no
    /// Tailscale discovery; not installed: quietly none).
    #[arg(long, env = "CLAWDSPACE_TAILSCALE", default_value = "tailscale")]
    pub tailscale: String,
    /// Port Clawdspace servers listen on at Tailscale peers.
    #[arg(long, env = "CLAWDSPACE_TAILSCALE_PORT", default_value_t = 7777)]
    pub tailscale_port: u16,
    /// Only Tailscale peers with this tag are probed (e.g. `tag:clawdspace`).
    #[arg(long, env = "CLAWDSPACE_TAILSCALE_TAG")]
    pub tailscale_tag: Option<String>,
    /// Open connections of the port proxy per space at most.
    #[arg(long, env = "CLAWDSPACE_PORT_CONNECTIONS", default_value_t = 256,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub port_connections: u64,
    /// Bytes per second the port proxy moves for one space, each way, all
    /// its connections together (`0`: no cap; `10m` = 10 MiB/s).
    #[arg(long, env = "CLAWDSPACE_PORT_BANDWIDTH", default_value = "0",
        value_parser = parse_rate)]
    pub port_bandwidth: u64,
    /// Wildcard domain of host-based preview URLs: `<port>-<name>.<domain>`
    /// (`preview.example.com`, or `https://preview.example.com` behind a
    /// TLS proxy). Unset: links are `/p/<token>/` only.
    #[arg(long, env = "CLAWDSPACE_PREVIEW_DOMAIN")]
    pub preview_domain: Option<String>,
    /// `true`: no API key is asked for, as upstream has it; refused (with
    /// an error in the log, the key stays required) unless the API
    /// listens on a loopback address only (`CLAWDSPACE_LISTEN`).
    #[arg(long, env = "CLAWDSPACE_AUTH_DISABLED", default_value = "")]
    pub auth_disabled: String,
    /// Spaces the MCP endpoint (`/mcp`) may touch: glob patterns of names
    /// (`*`, `?`), comma-separated; empty: all.
    #[arg(long, env = "CLAWDSPACE_MCP_ALLOW", default_value = "")]
    pub mcp_allow: String,
    /// Spaces `/mcp` may never touch (wins over the allow list).
    #[arg(long, env = "CLAWDSPACE_MCP_DENY", default_value = "")]
    pub mcp_deny: String,
    /// The audit log (JSON lines) [default: `<state dir>/audit.jsonl`].
    #[arg(long, env = "CLAWDSPACE_AUDIT_PATH")]
    pub audit_path: Option<PathBuf>,
    /// Size at which the audit log is rotated to `<path>.1` (bytes; the
    /// previous `.1` is deleted). At least 4096.
    #[arg(long, env = "CLAWDSPACE_AUDIT_MAX_BYTES", default_value_t = clawdspace_runtime::audit::DEFAULT_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(4096..))]
    pub audit_max_bytes: u64,
    /// How often (ms) spaces' egress drops are looked at and written to the
    /// audit log as `network.drop` events (0: never).
    #[arg(long, env = "CLAWDSPACE_DROP_AUDIT_MS", default_value_t = 10_000)]
    pub drop_audit_ms: u64,
    /// How often (ms) what spaces added to `/workspace/.bash_history` is
    /// written to the audit log as `space.shell` events (0: never).
    #[arg(long, env = "HISTORY_INGEST_MS", default_value_t = 15_000)]
    pub history_ingest_ms: u64,
    /// Log filter (e.g. `info`, `clawdspace_api=debug`).
    #[arg(long, env = "CLAWDSPACE_LOG", default_value = "info")]
    pub log: String,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    pub openapi: bool,
}

/// `1`/`true` or `0`/`false`.
fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        _ => Err(format!("'{s}': 1 or 0")),
    }
}

/// `0`, `500k`, `10m`, `1g` (binary units) bytes per second.
fn parse_rate(s: &str) -> Result<u64, String> {
    clawdspace_runtime::image::parse_bytes(s)
        .ok_or_else(|| format!("'{s}' is not a rate in bytes per second (e.g. 0, 500k, 10m)"))
}

impl Config {
    /// Limits of the HTTP server.
    pub fn limits(&self) -> crate::server::Limits {
        crate::server::Limits {
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.keepalive_timeout_ms),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        }
    }

    /// Whether requests go without a key: `CLAWDSPACE_AUTH_DISABLED=true`
    /// and a loopback listen address; else why not (`None`: not asked).
    pub fn auth_disabled(&self) -> Option<Result<(), String>> {
        match self.auth_disabled.trim() {
            "true" => {}
            "" | "false" => return None,
            other => {
                return Some(Err(format!(
                "CLAWDSPACE_AUTH_DISABLED={other:?} ignored: only \"true\" disables authentication"
            )))
            }
        }
        let addr = self.listen_addr();
        if addr.ip().is_loopback() {
            Some(Ok(()))
        } else {
            Some(Err(format!(
                "CLAWDSPACE_AUTH_DISABLED=true refused: the API listens on {addr}, not on loopback only \
                 (set CLAWDSPACE_LISTEN=127.0.0.1:{}); the API key stays required",
                addr.port()
            )))
        }
    }

    /// Where the audit log lives.
    pub fn audit_path(&self) -> PathBuf {
        self.audit_path
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| self.state_dir.join("audit.jsonl"))
    }

    /// The address the API listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.port)))
    }

    /// How this daemon finds and names the fleet; `hostname` names it when
    /// `CLAWDSPACE_NODE_NAME` does not.
    pub fn nodes(&self, hostname: &str) -> crate::nodes::NodesConfig {
        let name = self
            .node_name
            .clone()
            .map(|n| n.trim().to_lowercase())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| hostname.to_lowercase());
        let addr = self.listen_addr();
        let url = self.node_url.clone().unwrap_or_else(|| {
            if addr.ip().is_unspecified() {
                format!("http://{}:{}", hostname.to_lowercase(), addr.port())
            } else {
                format!("http://{addr}")
            }
        });
        let tailscale =
            (!self.tailscale.trim().is_empty()).then(|| clawdspace_cli::fleet::TailscaleConfig {
                program: self.tailscale.trim().to_string(),
                port: self.tailscale_port,
                tag: self
                    .tailscale_tag
                    .clone()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty()),
            });
        crate::nodes::NodesConfig {
            name,
            url,
            configured: self.nodes.0.clone(),
            tailscale,
            refresh: std::time::Duration::from_millis(self.nodes_refresh_ms),
        }
    }

    /// The runtime configuration this daemon configuration implies.
    pub fn runtime(&self) -> clawdspace_runtime::RuntimeConfig {
        let mut c = clawdspace_runtime::RuntimeConfig::new(&self.state_dir);
        c.workers = self.workers.max(1);
        c.cgroup_parent = self.cgroup_parent.clone();
        c.registries.insecure = self
            .insecure_registries
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        c.registries.docker_mirror = self.docker_mirror.clone().filter(|m| !m.is_empty());
        if let Some(f) = &self.auth_file {
            c.registries.auth_files[0] = f.clone();
        }
        c.gpu = clawdspace_runtime::gpu::GpuConfig::from_settings(
            self.cdi_dirs.as_deref(),
            self.gpu_cdi_kind.as_deref(),
            self.nvidia_hook.as_deref(),
            self.gpu_capabilities.as_deref(),
            self.nvidia_driver_root.as_deref(),
        );
        c.network = clawdspace_runtime::NetworkConfig {
            bridge: self.bridge.clone(),
            subnet: self.subnet,
            allow: self.allow_nets.0.clone(),
            dns: self.dns.0.clone(),
            linger: std::time::Duration::from_millis(self.network_linger_ms),
            publish: self.publish_ports,
            spares: usize::from(self.network_spares),
        };
        c.default_disk = self.default_disk.and_then(|d| d.0);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_disk_of(arg: &str) -> Result<Option<u64>, clap::Error> {
        Config::try_parse_from(["clawdspaced", &format!("--default-disk={arg}")])
            .map(|c| c.runtime().default_disk)
    }

    #[test]
    fn publishing_is_off_unless_switched_on() {
        let of = |args: &[&str]| {
            let mut v = vec!["clawdspaced"];
            v.extend_from_slice(args);
            Config::try_parse_from(v).map(|c| c.runtime().network.publish)
        };
        assert_eq!(of(&[]).ok(), Some(false));
        assert_eq!(of(&["--publish-ports=1"]).ok(), Some(true));
        assert_eq!(of(&["--publish-ports=false"]).ok(), Some(false));
        assert!(of(&["--publish-ports=yes"]).is_err());
    }

    #[test]
    fn auth_is_disabled_only_on_loopback() {
        let of = |args: &[&str]| {
            let mut a = vec!["clawdspaced"];
            a.extend_from_slice(args);
            Config::try_parse_from(a).expect("config").auth_disabled()
        };
        assert_eq!(of(&[]), None);
        assert_eq!(of(&["--auth-disabled=false"]), None);
        assert_eq!(
            of(&["--auth-disabled=true", "--listen=127.0.0.1:7777"]),
            Some(Ok(()))
        );
        assert_eq!(
            of(&["--auth-disabled=true", "--listen=[::1]:7777"]),
            Some(Ok(()))
        );
        let e = of(&["--auth-disabled=true"]).and_then(Result::err);
        assert!(e.is_some_and(|e| e.contains("0.0.0.0:7777")));
        let e = of(&["--auth-disabled=1", "--listen=127.0.0.1:1"]).and_then(Result::err);
        assert!(e.is_some_and(|e| e.contains("ignored")));
    }

    #[test]
    fn the_default_disk_is_written_like_disk_and_empty_is_none() {
        assert_eq!(default_disk_of("10g").ok(), Some(Some(10 << 30)));
        assert_eq!(default_disk_of("512").ok(), Some(Some(512 << 20)));
        assert_eq!(default_disk_of("").ok(), Some(None));
        for bad in ["10x", "4k", "-1", "1.5g"] {
            let e = default_disk_of(bad).expect_err(bad).to_string();
            assert!(e.contains("Invalid disk"), "{bad}: {e}");
        }
    }
}
