//! Our nftables tables, named after the bridge: `inet` (NAT for the subnet
//! and the isolation rules) and `bridge` (each port bound to its space's
//! MAC and address, see [`super::binding`]). Built as text, applied with one
//! `nft -f` (one transaction that replaces both tables).

use std::net::Ipv4Addr;

use super::binding::{self, Port};
use super::config::NetworkConfig;

/// Destinations spaces cannot reach unless allowed: "this" network,
/// private (RFC 1918), shared/CGNAT, loopback, link-local (incl. the cloud
/// metadata address 169.254.169.254), multicast and reserved ranges.
/// Spaces have no IPv6 at all, so fc00::/7 and fe80::/10 are covered by
/// dropping every IPv6 packet from the bridge.
pub const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

fn set(name: &str, flags: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!(
        "  set {name} {{ type ipv4_addr;{flags} elements = {{ {} }} }}\n",
        items.join(", ")
    )
}

/// The full script: creates (or atomically replaces) our tables.
/// `resolvers` are the DNS servers written into the spaces' resolv.conf:
/// port 53 on them stays reachable even in a blocked range or on the host.
/// `ports` are the spaces bound to their addresses.
pub fn ruleset(cfg: &NetworkConfig, resolvers: &[Ipv4Addr], ports: &[Port]) -> String {
    let t = cfg.table();
    let br = &cfg.bridge;
    let dns: Vec<String> = resolvers.iter().map(|r| r.to_string()).collect();
    let allow: Vec<String> = cfg.allow.iter().map(|n| n.to_string()).collect();
    let dns_rule = if dns.is_empty() {
        String::new()
    } else {
        format!(
            "    iifname \"{br}\" ip daddr @dns meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        )
    };
    let allow_rule = if allow.is_empty() {
        String::new()
    } else {
        format!("    iifname \"{br}\" ip daddr @allowed accept\n")
    };
    format!(
        "{delete}\
         table inet {t} {{\n\
         {dns_set}{allow_set}\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{br}\" ct state established,related accept\n\
         {dns_rule}{allow_rule}\
         \x20   iifname \"{br}\" drop\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{br}\" oifname \"{br}\" drop\n\
         \x20   oifname \"{br}\" ct state established,related accept\n\
         \x20   oifname \"{br}\" drop\n\
         \x20   iifname \"{br}\" meta nfproto ipv6 drop\n\
         {dns_rule}{allow_rule}\
         \x20   iifname \"{br}\" ip daddr {{ {blocked} }} drop\n\
         \x20   iifname \"{br}\" accept\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {subnet} oifname != \"{br}\" masquerade\n\
         \x20 }}\n\
         }}\n\
         {bridge}",
        delete = delete(t),
        bridge = binding::table(t, ports),
        dns_set = set("dns", "", &dns),
        allow_set = set("allowed", " flags interval;", &allow),
        blocked = BLOCKED.join(", "),
        subnet = cfg.subnet,
    )
}

/// The script that removes our tables `t` (and succeeds when they are
/// absent).
pub fn delete(t: &str) -> String {
    format!(
        "table inet {t} {{}}\ndelete table inet {t}\n{}",
        binding::delete(t)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_our_bridge_subnet_and_exceptions() {
        let mut cfg = NetworkConfig::default();
        let r = ruleset(&cfg, &[], &[]);
        assert!(r.contains("table inet clawdspace0 {\n"));
        assert!(r.contains("ip saddr 10.88.0.0/16 oifname != \"clawdspace0\" masquerade"));
        assert!(r.contains("iifname \"clawdspace0\" oifname \"clawdspace0\" drop"));
        assert!(!r.contains("@dns") && !r.contains("@allowed"));
        cfg.allow = vec!["192.168.1.0/24".parse().expect("net")];
        let r = ruleset(&cfg, &[Ipv4Addr::new(10, 255, 255, 53)], &[]);
        assert!(r.contains("set dns { type ipv4_addr; elements = { 10.255.255.53 } }"));
        assert!(r.contains("flags interval; elements = { 192.168.1.0/24 }"));
        // Exceptions come before the drop of blocked ranges.
        let fwd = &r[r.find("chain forward").expect("forward")..];
        assert!(fwd.find("@allowed").expect("allow") < fwd.find("10.0.0.0/8").expect("blocked"));
        assert!(!r.contains(" fwd "), "fwd is reserved in nft");
        // Both tables are replaced in the same transaction.
        assert!(r.starts_with(&delete("clawdspace0")));
        assert!(r.contains("delete table bridge clawdspace0\n"));
        assert!(r.contains("table bridge clawdspace0 {\n"));
    }
}
