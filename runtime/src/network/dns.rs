//! `/etc/resolv.conf` and `/etc/hosts` of a networked space.
//!
//! A space has its own network namespace, so the host's loopback stub
//! resolver (systemd-resolved's 127.0.0.53, a local dnsmasq) is not
//! reachable from it: such servers are replaced by the upstream servers the
//! stub uses (`/run/systemd/resolve/resolv.conf`), and, failing that, by
//! public resolvers as Docker does.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

/// systemd-resolved's list of the real upstream servers.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// Used when the host has no usable server (Docker's choice too).
const FALLBACK: [Ipv4Addr; 2] = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

/// What goes into a space's resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolvers {
    /// IPv4 servers reachable from a space.
    pub servers: Vec<Ipv4Addr>,
    /// `search` and `options` lines of the host's file.
    pub extra: Vec<String>,
}

/// Parses a resolv.conf: (nameservers, search/options lines).
fn parse(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers = Vec::new();
    let mut extra = Vec::new();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // `fe80::1%eth0` zones do not parse; such servers are unusable
                // from a space anyway.
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    servers.push(ip);
                }
            }
            Some("search" | "domain" | "options") => extra.push(line.to_string()),
            _ => {}
        }
    }
    (servers, extra)
}

/// The servers of `text` usable from a space: IPv4, not loopback.
fn usable(servers: &[IpAddr]) -> Vec<Ipv4Addr> {
    servers
        .iter()
        .filter_map(|s| match s {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(*v4),
            _ => None,
        })
        .collect()
}

/// Picks the servers for spaces from the host's resolv.conf text and the
/// stub's upstream file text (when the host points at a loopback stub).
pub fn choose(configured: &[Ipv4Addr], host: &str, upstream: Option<&str>) -> Resolvers {
    let (servers, extra) = parse(host);
    if !configured.is_empty() {
        return Resolvers {
            servers: configured.to_vec(),
            extra,
        };
    }
    let mut chosen = usable(&servers);
    if chosen.is_empty() {
        if let Some(up) = upstream {
            chosen = usable(&parse(up).0);
        }
    }
    if chosen.is_empty() {
        chosen = FALLBACK.to_vec();
    }
    Resolvers {
        servers: chosen,
        extra,
    }
}

/// The servers for spaces on this host (`configured` wins when not empty).
pub fn host_resolvers(configured: &[Ipv4Addr]) -> Resolvers {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = fs::read_to_string(RESOLVED_UPSTREAM).ok();
    choose(configured, &host, upstream.as_deref())
}

/// The text of a space's `/etc/resolv.conf`.
pub fn resolv_conf(r: &Resolvers) -> String {
    let mut s = String::from("# written by clawdspace\n");
    for ns in &r.servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    for line in &r.extra {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// The text of a space's `/etc/hosts`.
pub fn hosts(name: &str, addr: Ipv4Addr) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{addr}\t{name}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_stub_is_replaced_by_its_upstream() {
        let host = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n";
        let up = "nameserver 192.0.2.53\nnameserver 2001:db8::53\n";
        let r = choose(&[], host, Some(up));
        assert_eq!(r.servers, vec![Ipv4Addr::new(192, 0, 2, 53)]);
        assert_eq!(
            r.extra,
            vec!["options edns0 trust-ad", "search example.org"]
        );
        let text = resolv_conf(&r);
        assert!(text.contains("nameserver 192.0.2.53\n") && !text.contains("127.0.0.53"));
    }

    #[test]
    fn real_servers_are_kept_and_nothing_usable_falls_back() {
        let r = choose(&[], "nameserver 10.255.255.53\n", None);
        assert_eq!(r.servers, vec![Ipv4Addr::new(10, 255, 255, 53)]);
        let r = choose(&[], "nameserver 127.0.0.1\n", None);
        assert_eq!(r.servers, FALLBACK.to_vec());
        let r = choose(&[Ipv4Addr::new(9, 9, 9, 9)], "nameserver 1.1.1.1\n", None);
        assert_eq!(r.servers, vec![Ipv4Addr::new(9, 9, 9, 9)]);
        assert!(hosts("dev", Ipv4Addr::new(10, 88, 0, 2)).ends_with("10.88.0.2\tdev\n"));
    }
}
