//! Our nftables tables, named after the bridge: `inet` (NAT for the subnet
//! and the isolation rules) and `bridge` (each port bound to its space's
//! MAC and address, see [`super::binding`]). Built as one nf_tables
//! transaction that replaces both tables ([`super::nfnl`]) and makes sure
//! the table of the spaces' policies is there ([`super::egress`]; kept with
//! what it holds).

use std::net::Ipv4Addr;

use super::binding::{self, Port};
use super::config::{Ipv4Net, NetworkConfig};
use super::egress;
use super::nfnl::{Batch, Hook, Rule, BRIDGE, INET, IP};
use super::PublishedPort;

/// A published port and the address of its space.
pub type Published = (Ipv4Addr, PublishedPort);

/// Destinations spaces cannot reach unless allowed: "this" network,
/// private (RFC 1918), shared/CGNAT, loopback, link-local (incl. the cloud
/// metadata address 169.254.169.254), multicast and reserved ranges.
/// Spaces have no IPv6 at all, so fc00::/7 and fe80::/10 are covered by
/// dropping every IPv6 packet from the bridge.
pub const BLOCKED: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The chains of the `inet` table: name, hook number, priority, type.
const CHAINS: [(&str, u32, i32, &str); 3] = [
    ("input", libc::NF_INET_LOCAL_IN as u32, 0, "filter"),
    ("forward", libc::NF_INET_FORWARD as u32, 0, "filter"),
    ("postrouting", libc::NF_INET_POST_ROUTING as u32, 100, "nat"),
];

/// The exceptions to the isolation, for traffic from bridge `br`: DNS
/// (tcp, udp 53) to `resolvers`, then the operator's `allow`ed networks.
fn exceptions(br: &str, resolvers: &[Ipv4Addr], allow: &[Ipv4Net]) -> Vec<Rule> {
    let from = || Rule::new().iifname(br, true);
    let mut v = Vec::new();
    for r in resolvers {
        for proto in [libc::IPPROTO_TCP, libc::IPPROTO_UDP] {
            v.push(from().ip_daddr((*r, 32)).dport(proto as u8, 53).accept());
        }
    }
    for n in allow {
        v.push(from().ip_daddr((n.addr, n.prefix)).accept());
    }
    v
}

/// The whole transaction: removes our tables and makes them again.
/// `resolvers` are the DNS servers written into the spaces' resolv.conf:
/// port 53 on them stays reachable even in a blocked range or on the host.
/// `ports` are the spaces bound to their addresses, `lan` the addresses of
/// spaces in mode `lan` (which reach the blocked ranges but the host),
/// `published` their ports published on the host.
pub fn ruleset(
    cfg: &NetworkConfig,
    resolvers: &[Ipv4Addr],
    ports: &[Port],
    lan: &[Ipv4Addr],
    published: &[Published],
) -> Batch {
    let t = cfg.table();
    let br = cfg.bridge.as_str();
    let mut b = Batch::new();
    delete_shared(&mut b, t);
    b.add_table(INET, t);
    b.add_set(INET, t, LAN, (7, 4), false); // ipv4_addr
    b.add_elements(INET, t, LAN, &lan_keys(lan));
    for (name, num, priority, kind) in CHAINS {
        b.add_chain(
            INET,
            t,
            name,
            Hook {
                num,
                priority,
                kind,
            },
        );
    }
    let from = || Rule::new().iifname(br, true);
    let to = || Rule::new().oifname(br, true);
    let allowed = exceptions(br, resolvers, &cfg.allow);
    let mut input = vec![from().established().accept()];
    input.extend(allowed.iter().cloned());
    input.push(from().drop());
    let mut forward = vec![
        from().oifname(br, true).drop(),
        // Connections to published ports, and their answers (to clients
        // in any range).
        to().dnatted().accept(),
        to().established().accept(),
        to().drop(),
        from().established().dnatted().accept(),
        from().ipv6().drop(),
    ];
    forward.extend(allowed);
    forward.push(from().ip_saddr_in(LAN).accept());
    for net in BLOCKED {
        forward.push(from().ip_daddr(*net).drop());
    }
    forward.push(from().accept());
    let nat = Rule::new()
        .ip_saddr((cfg.subnet.addr, cfg.subnet.prefix))
        .oifname(br, false)
        .masquerade();
    for (chain, rules) in [
        ("input", input),
        ("forward", forward),
        ("postrouting", vec![nat]),
    ] {
        for r in rules {
            b.add_rule(INET, t, chain, r);
        }
    }
    binding::table(&mut b, t, ports);
    publish(&mut b, t, published);
    egress::shared(&mut b, cfg, resolvers);
    b
}

/// Replaces the `ip` table `t` of published ports: TCP to `host` on any
/// of the host's own addresses (from outside, `prerouting`, or from the
/// host itself, `output`; not loopback) goes to `container` of the space.
/// No table at all when nothing is published.
pub fn publish(b: &mut Batch, t: &str, published: &[Published]) {
    b.delete_table(IP, t);
    if published.is_empty() {
        return;
    }
    b.add_table(IP, t);
    let chains = [
        ("prerouting", libc::NF_INET_PRE_ROUTING as u32),
        ("output", libc::NF_INET_LOCAL_OUT as u32),
    ];
    for (name, num) in chains {
        b.add_chain(
            IP,
            t,
            name,
            Hook {
                num,
                priority: -100,
                kind: "nat",
            },
        );
        for (addr, p) in published {
            let rule = Rule::new()
                .daddr_local()
                .dport(libc::IPPROTO_TCP as u8, p.host)
                .dnat(*addr, p.container);
            b.add_rule(IP, t, name, rule);
        }
    }
}

/// The set of the addresses of `lan` spaces.
pub const LAN: &str = "lan";

fn lan_keys(addrs: &[Ipv4Addr]) -> Vec<(Vec<u8>, String)> {
    addrs
        .iter()
        .map(|a| (a.octets().to_vec(), a.to_string()))
        .collect()
}

/// Adds to `b` `addr` to (`add`) or removes it from the `lan` set of
/// table `t` (whether or not it is there).
pub fn lan_member(b: &mut Batch, t: &str, addr: Ipv4Addr, add: bool) {
    if add {
        b.add_elements(INET, t, LAN, &lan_keys(&[addr]));
    } else {
        b.delete_elements(INET, t, LAN, &lan_keys(&[addr]));
    }
}

/// The transaction that removes our tables `t`, the spaces' policies
/// included (and succeeds when they are absent).
pub fn delete(t: &str) -> Batch {
    let mut b = Batch::new();
    delete_shared(&mut b, t);
    b.delete_table(INET, &egress::table_of(t));
    b
}

/// Adds to `b` the removal of our tables `t` but the spaces' policies.
fn delete_shared(b: &mut Batch, t: &str) {
    b.delete_table(INET, t);
    b.delete_table(BRIDGE, t);
    b.delete_table(IP, t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_our_bridge_subnet_and_exceptions() {
        let mut cfg = NetworkConfig::default();
        let r = ruleset(&cfg, &[], &[], &[], &[]).lines().join("\n");
        assert!(r.contains("add table inet clawdspace0\n"));
        assert!(
            r.contains("postrouting ip saddr 10.88.0.0/16 oifname != \"clawdspace0\" masquerade")
        );
        assert!(r.contains("forward iifname \"clawdspace0\" oifname \"clawdspace0\" drop"));
        assert!(!r.contains("th dport 53"));
        cfg.allow = vec!["192.168.1.0/24".parse().expect("net")];
        let r = ruleset(&cfg, &[Ipv4Addr::new(10, 255, 255, 53)], &[], &[], &[])
            .lines()
            .join("\n");
        assert!(r.contains(
            "input iifname \"clawdspace0\" ip daddr 10.255.255.53 meta l4proto udp th dport 53 accept"
        ));
        // Exceptions come before the drop of blocked ranges.
        let fwd = &r[r.find("forward").expect("forward")..];
        let allowed = "forward iifname \"clawdspace0\" ip daddr 192.168.1.0/24 accept";
        assert!(fwd.find(allowed).expect("allow") < fwd.find("10.0.0.0/8 drop").expect("blocked"));
        // Both tables are replaced in the same transaction; the spaces'
        // policies are kept (and removed only with the bridge).
        assert!(r.starts_with("add table inet clawdspace0\ndelete table inet clawdspace0\n"));
        assert!(!r.contains("delete table inet clawdspace0-spaces"));
        assert!(r.contains("add table inet clawdspace0-spaces"));
        let d = delete("clawdspace0").lines().join("\n");
        assert!(d.ends_with("delete table inet clawdspace0-spaces"), "{d}");
        assert!(r.contains("delete table bridge clawdspace0\n"));
        assert!(r.contains("add chain bridge clawdspace0 prerouting"));
    }

    #[test]
    fn the_kernel_takes_the_tables_and_nft_reads_them_back() {
        let nft = |args: &str| {
            let o = std::process::Command::new("nft")
                .args(args.split_whitespace())
                .output()
                .expect("nft");
            assert!(
                o.status.success(),
                "nft {args}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        super::super::rtnl::tests::in_private_netns(|| {
            let cfg = NetworkConfig {
                allow: vec!["192.168.1.0/24".parse().expect("net")],
                ..Default::default()
            };
            let id = "0123456789abcdef";
            let a = Ipv4Addr::new(10, 88, 0, 2);
            let dns = [Ipv4Addr::new(10, 255, 255, 53)];
            let published = [(
                a,
                PublishedPort {
                    container: 8000,
                    host: 18000,
                },
            )];
            ruleset(&cfg, &dns, &[(id, a)], &[a], &published)
                .commit()
                .expect("tables");
            let all = nft("list ruleset");
            for want in [
                "iifname \"clawdspace0\" ct state established,related accept",
                "iifname \"clawdspace0\" ip daddr 10.255.255.53 udp dport 53 accept",
                "iifname \"clawdspace0\" ip daddr 192.168.1.0/24 accept",
                "iifname \"clawdspace0\" ip daddr 169.254.0.0/16 drop",
                "iifname \"clawdspace0\" ip saddr @lan accept",
                "elements = { 10.88.0.2 }",
                "iifname \"clawdspace0\" meta nfproto ipv6 drop",
                "ip saddr 10.88.0.0/16 oifname != \"clawdspace0\" masquerade",
                "type filter hook prerouting priority filter; policy accept;",
                "iifname != @ports accept",
                "iifname . ether saddr . ip saddr @bindings accept",
                "\"cs0123456789ab\" . 02:63:0a:58:00:02 . 10.88.0.2",
                "oifname \"clawdspace0\" ct status dnat accept",
                "type nat hook output priority",
                "fib daddr type local tcp dport 18000 dnat to 10.88.0.2:8000",
            ] {
                assert!(all.contains(want), "{want} missing from:\n{all}");
            }
            // Again: replaced, not doubled.
            ruleset(&cfg, &dns, &[], &[], &[]).commit().expect("again");
            let all = nft("list ruleset");
            assert_eq!(all.matches("masquerade").count(), 1, "{all}");
            assert!(!all.contains("dnat to"), "{all}");
            // Published ports alone: their table comes and goes.
            let mut b = Batch::new();
            publish(&mut b, "clawdspace0", &published);
            b.commit().expect("publish");
            assert!(nft("list table ip clawdspace0").contains("tcp dport 18000 dnat"));
            let mut b = Batch::new();
            publish(&mut b, "clawdspace0", &[]);
            b.commit().expect("unpublish");
            assert!(!nft("list tables").contains("table ip clawdspace0"));
            assert!(!all.contains("cs0123456789ab"), "{all}");
            // Bind, unbind (twice: absent elements are fine).
            let b = Ipv4Addr::new(10, 88, 0, 3);
            binding::update("clawdspace0", &[], &[(id, b)])
                .commit()
                .expect("bind");
            assert!(nft("list set bridge clawdspace0 ports").contains("\"cs0123456789ab\""));
            for _ in 0..2 {
                binding::update("clawdspace0", &[(id, b)], &[])
                    .commit()
                    .expect("unbind");
            }
            assert!(!nft("list ruleset").contains("cs0123456789ab"));
            // Thousands of spaces: more elements than one message holds.
            let ids: Vec<String> = (0..3000).map(|i| format!("{i:012x}0000")).collect();
            let many: Vec<Port> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), Ipv4Addr::from(0x0a58_0000 + 2 + i as u32)))
                .collect();
            ruleset(&cfg, &dns, &many, &[], &[]).commit().expect("many");
            let set = nft("list set bridge clawdspace0 bindings");
            assert_eq!(set.matches(" . 02:63:").count(), 3000);
            assert!(set.contains("\"cs000000000bb7\" . 02:63:0a:58:0b:b9 . 10.88.11.185"));
            binding::update("clawdspace0", &many, &[])
                .commit()
                .expect("unbind many");
            assert!(!nft("list set bridge clawdspace0 ports").contains("\"cs"));
            // A refused message names itself; nothing of the batch applies.
            let mut bad = Batch::new();
            bad.add_table(INET, "partial");
            bad.add_rule(INET, "partial", "nochain", Rule::new().accept());
            let e = bad.commit().expect_err("no such chain").to_string();
            assert!(e.contains("add rule inet partial nochain accept"), "{e}");
            assert!(!nft("list tables").contains("partial"));
            delete("clawdspace0").commit().expect("delete");
            delete("clawdspace0").commit().expect("delete absent");
            assert_eq!(nft("list ruleset").trim(), "");
        });
    }
}
