//! Each networked space's own nftables table (`inet cs<12 hex of its id>`,
//! like its host link): the space's egress policy, enforced before the
//! runtime's shared table and never instead of it. Its chains run at a
//! priority before the shared table's, see only packets from the bridge
//! whose source is the space's address (bound to its port by the bridge
//! table, so a space cannot pose as another), and can only drop: an
//! `accept` here ends this table's chain, and the shared table still
//! decides. The one thing the shared table lets through for a policy is a
//! `lan` space's private ranges (its `lan` set of addresses).
//!
//! Every drop of the space's own rules goes through the table's counter
//! `dropped` ([`read_drops`]). With `allowDomains`, the table also holds
//! set `allowed` (addresses the space's DNS answerer handed out, each
//! expiring with its answer) and an `input` chain dropping everything the
//! space sends to the host (its answerer lives inside its namespace).
//!
//! The whole table is written (replaced) in one transaction and removed in
//! one, so nothing of a destroyed space's policy can apply to the next
//! space given its address.

use std::net::Ipv4Addr;

use super::config::{Ipv4Net, NetworkConfig};
use super::netns::host_link;
use super::nfnl::{self, Batch, Hook, Rule, INET};
use super::nft::BLOCKED;
use super::{NetworkMode, SpaceNetwork};

/// The counter of the drops of a space's own rules.
pub const DROPPED: &str = "dropped";
/// The set of addresses a space with `allowDomains` may reach.
pub const ALLOWED: &str = "allowed";
/// Most addresses in [`ALLOWED`] (a full set refuses further answers'
/// addresses until some expire).
pub const MAX_ALLOWED: u32 = 4096;
/// Ranges a `lan` space does not reach either (not routable from it).
const LAN_BLOCKED: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The name of space `id`'s table.
pub fn table(id: &str) -> String {
    host_link(id)
}

/// Adds to `b` the transaction that replaces space `id`'s table: the
/// policy of `net` for its address `addr`. `resolvers` and `cfg.allow` are
/// the shared table's exceptions (DNS, allowed networks), kept for modes
/// without `allowDomains`.
pub fn write(
    b: &mut Batch,
    cfg: &NetworkConfig,
    resolvers: &[Ipv4Addr],
    id: &str,
    addr: Ipv4Addr,
    net: &SpaceNetwork,
) {
    delete(b, id);
    add(b, cfg, resolvers, id, addr, net);
}

/// Whether space `id` has a table now (a leftover, for a new space).
pub fn exists(id: &str) -> crate::error::Result<bool> {
    nfnl::table_exists(INET, &table(id))
}

/// [`write`] for a space that has no table yet: only additions, so the
/// commit does not wait for an RCU grace period as a deletion does (about
/// 10 ms of every networked create).
pub fn add(
    b: &mut Batch,
    cfg: &NetworkConfig,
    resolvers: &[Ipv4Addr],
    id: &str,
    addr: Ipv4Addr,
    net: &SpaceNetwork,
) {
    let t = table(id);
    b.add_table(INET, &t);
    b.add_counter(INET, &t, DROPPED);
    let domains = !net.egress.allow_domains.is_empty();
    if domains {
        b.add_set_with(
            INET,
            &t,
            ALLOWED,
            (7, 4), // ipv4_addr
            false,
            nfnl::SET_TIMEOUT,
            Some(MAX_ALLOWED),
        );
    }
    let ours = || {
        [
            Rule::new().iifname(&cfg.bridge, false).accept(),
            Rule::new().not_ipv4().accept(),
            Rule::new().ip_saddr_not(addr).accept(),
            Rule::new().established().accept(),
        ]
    };
    let drop = |net: (Ipv4Addr, u8)| Rule::new().ip_daddr(net).counter(DROPPED).drop();
    let mut forward: Vec<Rule> = ours().into();
    forward.extend(
        net.egress
            .block_cidrs
            .iter()
            .map(|n| drop((n.addr, n.prefix))),
    );
    match (domains, net.mode) {
        (true, mode) => {
            if mode != NetworkMode::Lan {
                forward.extend(BLOCKED.iter().map(|n| drop(*n)));
            }
            for p in &net.egress.allow_ports {
                forward.push(
                    Rule::new()
                        .dport(libc::IPPROTO_TCP as u8, *p)
                        .ip_daddr_in(ALLOWED)
                        .accept(),
                );
            }
            forward.push(Rule::new().counter(DROPPED).drop());
        }
        (false, NetworkMode::Lan) => forward.extend(LAN_BLOCKED.iter().map(|n| drop(*n))),
        (false, _) => {
            forward.extend(exceptions(resolvers, &cfg.allow));
            forward.extend(BLOCKED.iter().map(|n| drop(*n)));
        }
    }
    let mut chains = vec![("forward", libc::NF_INET_FORWARD, forward)];
    if domains {
        let mut input: Vec<Rule> = ours().into();
        input.push(Rule::new().counter(DROPPED).drop());
        chains.push(("input", libc::NF_INET_LOCAL_IN, input));
    }
    for (name, num, rules) in chains {
        let hook = Hook {
            num: num as u32,
            priority: -10,
            kind: "filter",
        };
        b.add_chain(INET, &t, name, hook);
        for r in rules {
            b.add_rule(INET, &t, name, r);
        }
    }
}

/// DNS to the resolvers and the operator's allowed networks, accepted
/// before the blocked ranges (as in the shared table).
fn exceptions(resolvers: &[Ipv4Addr], allow: &[Ipv4Net]) -> Vec<Rule> {
    let mut v = Vec::new();
    for r in resolvers {
        for proto in [libc::IPPROTO_TCP, libc::IPPROTO_UDP] {
            v.push(
                Rule::new()
                    .ip_daddr((*r, 32))
                    .dport(proto as u8, 53)
                    .accept(),
            );
        }
    }
    v.extend(
        allow
            .iter()
            .map(|n| Rule::new().ip_daddr((n.addr, n.prefix)).accept()),
    );
    v
}

/// Adds to `b` the removal of space `id`'s table (whether or not it
/// exists).
pub fn delete(b: &mut Batch, id: &str) {
    b.delete_table(INET, &table(id));
}

/// Packets and bytes the rules of space `id` dropped since its table was
/// written (None without a table). Blocking.
pub fn read_drops(id: &str) -> crate::error::Result<Option<(u64, u64)>> {
    nfnl::read_counter(INET, &table(id), DROPPED)
}

/// Adds to `b` the addresses `addrs` to space `id`'s allowed set, each
/// expiring after `timeout_ms`.
pub fn allow(b: &mut Batch, id: &str, addrs: &[Ipv4Addr], timeout_ms: u64) {
    let keys: Vec<(Vec<u8>, String)> = addrs
        .iter()
        .map(|a| (a.octets().to_vec(), a.to_string()))
        .collect();
    b.refresh_elements(INET, &table(id), ALLOWED, &keys, timeout_ms);
}

/// The addresses in space `id`'s allowed set, each with the milliseconds it
/// has left (empty without the set). Blocking.
pub fn allowed_left(id: &str) -> crate::error::Result<Vec<(Ipv4Addr, u64)>> {
    let elems = nfnl::read_set_elements(INET, &table(id), ALLOWED, MAX_ALLOWED as usize)?;
    Ok(elems
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, left)| {
            let octets: [u8; 4] = key.try_into().ok()?;
            Some((Ipv4Addr::from(octets), left.filter(|ms| *ms > 0)?))
        })
        .collect())
}

/// Adds to `b` the addresses `kept` to space `id`'s allowed set, each for
/// the time it had left (at least a second): what a rewrite of the table
/// keeps of the old one.
pub fn keep_allowed(b: &mut Batch, id: &str, kept: &[(Ipv4Addr, u64)]) {
    for (addr, left) in kept {
        allow(b, id, &[*addr], (*left).max(1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::policy::Egress;

    const ID: &str = "0123456789abcdef0123";

    fn rules(mode: NetworkMode, egress: Egress) -> String {
        let net = SpaceNetwork {
            mode,
            address: Some(Ipv4Addr::new(10, 88, 0, 2)),
            published: Vec::new(),
            egress,
        };
        let mut b = Batch::new();
        let dns = [Ipv4Addr::new(10, 0, 0, 53)];
        write(
            &mut b,
            &NetworkConfig::default(),
            &dns,
            ID,
            Ipv4Addr::new(10, 88, 0, 2),
            &net,
        );
        b.lines().join("\n")
    }

    #[test]
    fn each_mode_gets_its_rules() {
        let blocks = Egress {
            block_cidrs: vec!["198.18.0.0/15".parse().expect("net")],
            ..Default::default()
        };
        let r = rules(NetworkMode::Internet, blocks.clone());
        assert!(r.starts_with("add table inet cs0123456789ab\ndelete table inet cs0123456789ab\n"));
        assert!(r.contains("forward iifname != \"clawdspace0\" accept"));
        assert!(r.contains("forward ip saddr != 10.88.0.2 accept"));
        let fwd = &r[r.find("add rule").expect("rules")..];
        let block = "ip daddr 198.18.0.0/15 counter name \"dropped\" drop";
        let dns = "ip daddr 10.0.0.53 meta l4proto udp th dport 53 accept";
        let private = "ip daddr 10.0.0.0/8 counter name \"dropped\" drop";
        assert!(fwd.find(block) < fwd.find(dns) && fwd.find(dns) < fwd.find(private));
        assert!(!r.contains("input"), "{r}");
        // lan: the private ranges are the shared table's business (its lan set).
        let r = rules(NetworkMode::Lan, blocks);
        assert!(r.contains("198.18.0.0/15 counter"));
        assert!(!r.contains("10.0.0.0/8"), "{r}");
        assert!(r.contains("224.0.0.0/4 counter"));
        // allowDomains: only the set on the given ports, the rest dropped.
        let domains = Egress {
            allow_domains: vec!["pypi.org".into()],
            allow_ports: vec![443],
            ..Default::default()
        }
        .normalize(NetworkMode::Internet)
        .expect("ok");
        let r = rules(NetworkMode::Internet, domains);
        assert!(r.contains("add set inet cs0123456789ab allowed"));
        assert!(r.contains("forward meta l4proto tcp th dport 443 ip daddr @allowed accept"));
        assert!(r.ends_with("input counter name \"dropped\" drop"), "{r}");
        assert!(!r.contains("th dport 53"), "no DNS but the answerer's");
        assert!(
            r.contains("169.254.0.0/16 counter"),
            "no rebinding to private addresses"
        );
    }

    #[test]
    fn the_kernel_takes_a_space_table_its_set_and_counter() {
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
        crate::network::rtnl::tests::in_private_netns(|| {
            let cfg = NetworkConfig::default();
            let a = Ipv4Addr::new(10, 88, 0, 2);
            let net = SpaceNetwork {
                mode: NetworkMode::Lan,
                address: Some(a),
                published: Vec::new(),
                egress: Egress {
                    block_cidrs: vec!["192.168.7.0/24".parse().expect("net")],
                    allow_domains: vec!["pypi.org".into()],
                    allow_ports: vec![443, 8080],
                },
            };
            crate::network::nft::ruleset(&cfg, &[], &[(ID, a)], &[a], &[])
                .commit()
                .expect("shared tables");
            assert_eq!(read_drops(ID).expect("read"), None, "no table yet");
            for _ in 0..2 {
                let mut b = Batch::new();
                write(&mut b, &cfg, &[], ID, a, &net);
                b.commit().expect("space table");
            }
            let t = nft("list table inet cs0123456789ab");
            for want in [
                "counter dropped",
                "type ipv4_addr",
                "flags timeout",
                "size 4096",
                "type filter hook forward priority filter - 10; policy accept;",
                "iifname != \"clawdspace0\" accept",
                "ip saddr != 10.88.0.2 accept",
                "ip daddr 192.168.7.0/24 counter name \"dropped\" drop",
                "tcp dport 8080 ip daddr @allowed accept",
                "type filter hook input priority filter - 10; policy accept;",
            ] {
                assert!(t.contains(want), "{want} missing from:\n{t}");
            }
            assert_eq!(
                t.matches("chain forward").count(),
                1,
                "replaced, not doubled"
            );
            assert_eq!(read_drops(ID).expect("read"), Some((0, 0)));
            // Allowed addresses expire; a second answer refreshes them.
            let addrs = [
                Ipv4Addr::new(151, 101, 0, 223),
                Ipv4Addr::new(151, 101, 64, 223),
            ];
            for ms in [60_000, 120_000] {
                let mut b = Batch::new();
                allow(&mut b, ID, &addrs, ms);
                b.commit().expect("allow");
            }
            let set = nft("list set inet cs0123456789ab allowed");
            assert!(set.contains("151.101.0.223 timeout 2m"), "{set}");
            assert!(set.contains("151.101.64.223 timeout 2m"), "{set}");
            let mut b = Batch::new();
            delete(&mut b, ID);
            delete(&mut b, ID);
            b.commit().expect("delete");
            assert!(!nft("list tables").contains("cs0123456789ab"));
            assert_eq!(read_drops(ID).expect("read"), None);
        });
    }
}
