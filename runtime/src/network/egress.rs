//! Each networked space's egress policy, enforced before the runtime's
//! shared table and never instead of it. All spaces' policies live in one
//! table, `inet <table>-spaces` ([`table_of`]), whose two base chains run
//! at a priority before the shared table's and look only at IPv4 from the
//! bridge: `forward` and `input` each hand a packet, by its source address
//! (bound to its space's port by the bridge table, so a space cannot pose
//! as another), through a verdict map to the sending space's own chain. So
//! a packet costs one lookup however many spaces there are (one base chain
//! per space made every forwarded packet walk all of them). The space's
//! chain can only drop: an `accept` there ends this table's base chain,
//! and the shared table still decides. The one thing the shared table lets
//! through for a policy is a `lan` space's private ranges (its `lan` set
//! of addresses).
//!
//! A space's pieces are named after its host link (`cs<12 hex of its
//! id>`): chain `cs…` (map `spaces`), with `allowDomains` chain `cs…_in`
//! (map `spaces_in`: everything the space sends to the host is dropped)
//! and set `cs…_allowed` (addresses its DNS answerer handed out, each
//! expiring with its answer); counter `cs…_dropped` counts every drop of
//! its rules ([`read_drops`]).
//!
//! A space's pieces and its map elements are written in one transaction
//! and removed in one, so nothing of a destroyed space's policy can apply
//! to the next space given its address. Removal works from what the
//! kernel holds ([`Current`]): the map elements jumping to the space's
//! chains, whatever their keys.

use std::net::Ipv4Addr;

use super::config::{Ipv4Net, NetworkConfig};
use super::netns::host_link;
use super::nfnl::{self, Batch, Hook, Rule, SetElement, INET};
use super::nft::BLOCKED;
use super::{NetworkMode, SpaceNetwork};

/// Most addresses in a space's allowed set (a full set refuses further
/// answers' addresses until some expire).
pub const MAX_ALLOWED: u32 = 4096;
/// The verdict map from a source address to its space's forward chain.
const SPACES: &str = "spaces";
/// The verdict map from a source address to its space's input chain
/// (spaces with `allowDomains`).
const SPACES_IN: &str = "spaces_in";
/// `ipv4_addr`, 4 bytes.
const IPV4: (u32, u32) = (7, 4);
/// Most map elements read back (one per networked space and hook).
const MAX_SPACES: usize = 1 << 20;
/// Ranges a `lan` space does not reach either (not routable from it).
const LAN_BLOCKED: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The table of the spaces' policies, beside our table `t`.
pub fn table_of(t: &str) -> String {
    format!("{t}-spaces")
}

/// The names of space `id`'s pieces.
struct Names {
    forward: String,
    input: String,
    dropped: String,
    allowed: String,
}

fn names(id: &str) -> Names {
    link_names(host_link(id))
}

fn link_names(h: String) -> Names {
    Names {
        input: format!("{h}_in"),
        dropped: format!("{h}_dropped"),
        allowed: format!("{h}_allowed"),
        forward: h,
    }
}

/// Adds to `b` the table of policies of our table `cfg.table()`, made if
/// absent and kept with the spaces' pieces if present: its maps and its
/// base chains (their rules replaced). Part of the transaction that
/// brings the bridge up.
pub fn shared(b: &mut Batch, cfg: &NetworkConfig) {
    let t = table_of(cfg.table());
    b.add_table(INET, &t);
    for (chain, num, map) in [
        ("forward", libc::NF_INET_FORWARD, SPACES),
        ("input", libc::NF_INET_LOCAL_IN, SPACES_IN),
    ] {
        b.add_verdict_map(INET, &t, map, IPV4);
        let hook = Hook {
            num: num as u32,
            priority: -10,
            kind: "filter",
        };
        b.add_chain(INET, &t, chain, hook);
        b.flush_chain(INET, &t, chain);
        for r in [
            Rule::new().iifname(&cfg.bridge, false).accept(),
            Rule::new().not_ipv4().accept(),
            Rule::new().established().accept(),
            Rule::new().ip_saddr_vmap(map),
        ] {
            b.add_rule(INET, &t, chain, r);
        }
    }
}

/// What the kernel holds of the spaces' policies of a table: read before
/// a space's are replaced or removed.
#[derive(Debug, Default)]
pub struct Current {
    /// Whether the table exists (it goes with the bridge).
    exists: bool,
    /// The elements of its maps, `(map, element)`.
    jumps: Vec<(&'static str, SetElement)>,
    /// Spaces' tables from before one table held all policies (`inet
    /// cs…`, named like their host links) still there.
    legacy: Vec<String>,
}

impl Current {
    /// Reads it for our table `t` and spaces `ids`. Blocking.
    pub fn read(t: &str, ids: &[&str]) -> crate::error::Result<Current> {
        let pt = table_of(t);
        let mut cur = Current::default();
        for map in [SPACES, SPACES_IN] {
            if let Some(elems) = nfnl::read_set_elements(INET, &pt, map, MAX_SPACES)? {
                cur.exists = true;
                cur.jumps.extend(elems.into_iter().map(|e| (map, e)));
            }
        }
        for id in ids {
            let link = host_link(id);
            if nfnl::table_exists(INET, &link)? {
                cur.legacy.push(link);
            }
        }
        Ok(cur)
    }

    /// The host link names of spaces whose chains the maps jump to, but
    /// which are not among `known` (left by a daemon that died before it
    /// removed them).
    fn orphans(&self, known: &[&str]) -> Vec<String> {
        let known: std::collections::HashSet<String> =
            known.iter().map(|id| host_link(id)).collect();
        let mut out: Vec<String> = self
            .jumps
            .iter()
            .filter_map(|(_, e)| e.jump.as_deref())
            .map(|c| c.strip_suffix("_in").unwrap_or(c).to_string())
            .filter(|l| !known.contains(l))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Adds to `b` the removal of every policy in our table `t` (`cur` read
/// beforehand) that belongs to none of the spaces `known`.
pub fn forget_orphans(b: &mut Batch, t: &str, known: &[&str], cur: &Current) {
    for link in cur.orphans(known) {
        forget_link(b, t, link, cur);
    }
}

/// Whether space `id` has a policy in our table `t` now (a leftover, for
/// a new space).
pub fn exists(t: &str, id: &str) -> crate::error::Result<bool> {
    nfnl::chain_exists(INET, &table_of(t), &names(id).forward)
}

/// Adds to `b` the transaction that replaces space `id`'s policy (`cur`
/// read beforehand): that of `net` for its address `addr`. `resolvers` and
/// `cfg.allow` are the shared table's exceptions (DNS, allowed networks),
/// kept for modes without `allowDomains`.
pub fn write(
    b: &mut Batch,
    cfg: &NetworkConfig,
    resolvers: &[Ipv4Addr],
    (id, addr): (&str, Ipv4Addr),
    net: &SpaceNetwork,
    cur: &Current,
) {
    forget(b, cfg.table(), id, cur);
    add(b, cfg, resolvers, (id, addr), net);
}

/// Adds to `b` the removal of space `id`'s policy from our table `t`
/// (`cur` read beforehand; nothing when it has none).
pub fn forget(b: &mut Batch, t: &str, id: &str, cur: &Current) {
    let link = host_link(id);
    if cur.legacy.contains(&link) {
        b.delete_table(INET, &link);
    }
    forget_link(b, t, link, cur);
}

/// [`forget`] by the space's host link name.
fn forget_link(b: &mut Batch, t: &str, link: String, cur: &Current) {
    if !cur.exists {
        return;
    }
    let pt = table_of(t);
    let n = link_names(link);
    for map in [SPACES, SPACES_IN] {
        let keys: Vec<(Vec<u8>, String)> = cur
            .jumps
            .iter()
            .filter(|(m, e)| {
                *m == map && matches!(&e.jump, Some(c) if *c == n.forward || *c == n.input)
            })
            .map(|(_, e)| (e.key.clone(), key_text(&e.key)))
            .collect();
        if !keys.is_empty() {
            b.remove_elements(INET, &pt, map, &keys);
        }
    }
    // Made first where absent, so that the removal holds either way.
    for chain in [&n.forward, &n.input] {
        b.add_regular_chain(INET, &pt, chain);
        b.remove_chain(INET, &pt, chain);
    }
    allowed_set(b, &pt, &n.allowed);
    b.remove_set(INET, &pt, &n.allowed);
    b.add_counter(INET, &pt, &n.dropped);
    b.remove_counter(INET, &pt, &n.dropped);
}

/// A map key (an address) as `nft` writes it.
fn key_text(key: &[u8]) -> String {
    <[u8; 4]>::try_from(key)
        .map_or_else(|_| format!("{key:02x?}"), |o| Ipv4Addr::from(o).to_string())
}

fn allowed_set(b: &mut Batch, pt: &str, name: &str) {
    b.add_set_with(
        INET,
        pt,
        name,
        IPV4,
        false,
        nfnl::SET_TIMEOUT,
        Some(MAX_ALLOWED),
    );
}

/// [`write`] for a space that has no policy yet: only additions, so the
/// commit waits for nothing.
pub fn add(
    b: &mut Batch,
    cfg: &NetworkConfig,
    resolvers: &[Ipv4Addr],
    (id, addr): (&str, Ipv4Addr),
    net: &SpaceNetwork,
) {
    let pt = table_of(cfg.table());
    let n = names(id);
    b.add_counter(INET, &pt, &n.dropped);
    let domains = !net.egress.allow_domains.is_empty();
    if domains {
        allowed_set(b, &pt, &n.allowed);
    }
    let drop = |net: (Ipv4Addr, u8)| Rule::new().ip_daddr(net).counter(&n.dropped).drop();
    let mut forward: Vec<Rule> = net
        .egress
        .block_cidrs
        .iter()
        .map(|c| drop((c.addr, c.prefix)))
        .collect();
    match (domains, net.mode) {
        (true, mode) => {
            if mode != NetworkMode::Lan {
                forward.extend(BLOCKED.iter().map(|c| drop(*c)));
            }
            for p in &net.egress.allow_ports {
                forward.push(
                    Rule::new()
                        .dport(libc::IPPROTO_TCP as u8, *p)
                        .ip_daddr_in(&n.allowed)
                        .accept(),
                );
            }
            forward.push(Rule::new().counter(&n.dropped).drop());
        }
        (false, NetworkMode::Lan) => forward.extend(LAN_BLOCKED.iter().map(|c| drop(*c))),
        (false, _) => {
            forward.extend(exceptions(resolvers, &cfg.allow));
            forward.extend(BLOCKED.iter().map(|c| drop(*c)));
        }
    }
    let mut chains = vec![(&n.forward, SPACES, forward)];
    if domains {
        chains.push((
            &n.input,
            SPACES_IN,
            vec![Rule::new().counter(&n.dropped).drop()],
        ));
    }
    let key = (addr.octets().to_vec(), addr.to_string());
    for (chain, map, rules) in chains {
        b.add_regular_chain(INET, &pt, chain);
        for r in rules {
            b.add_rule(INET, &pt, chain, r);
        }
        b.add_jumps(
            INET,
            &pt,
            map,
            &[(key.0.clone(), key.1.clone(), chain.clone())],
        );
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

/// Packets and bytes the rules of space `id` dropped since its policy was
/// written (None without one), in our table `t`. Blocking.
pub fn read_drops(t: &str, id: &str) -> crate::error::Result<Option<(u64, u64)>> {
    nfnl::read_counter(INET, &table_of(t), &names(id).dropped)
}

/// Adds to `b` the addresses `addrs` to space `id`'s allowed set (in our
/// table `t`), each expiring after `timeout_ms`.
pub fn allow(b: &mut Batch, t: &str, id: &str, addrs: &[Ipv4Addr], timeout_ms: u64) {
    let keys: Vec<(Vec<u8>, String)> = addrs
        .iter()
        .map(|a| (a.octets().to_vec(), a.to_string()))
        .collect();
    b.refresh_elements(INET, &table_of(t), &names(id).allowed, &keys, timeout_ms);
}

/// The addresses in space `id`'s allowed set (in our table `t`, or in the
/// space's table of an earlier version), each with the milliseconds it has
/// left (empty without the set). Blocking.
pub fn allowed_left(t: &str, id: &str) -> crate::error::Result<Vec<(Ipv4Addr, u64)>> {
    let set = names(id).allowed;
    let cap = MAX_ALLOWED as usize;
    let mut elems = nfnl::read_set_elements(INET, &table_of(t), &set, cap)?;
    if elems.is_none() {
        // Kept in the space's own table by an earlier version.
        elems = nfnl::read_set_elements(INET, &host_link(id), "allowed", cap)?;
    }
    Ok(elems
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let octets: [u8; 4] = e.key.try_into().ok()?;
            Some((Ipv4Addr::from(octets), e.left_ms.filter(|ms| *ms > 0)?))
        })
        .collect())
}

/// Adds to `b` the addresses `kept` to space `id`'s allowed set (in our
/// table `t`), each for the time it had left (at least a second): what a
/// rewrite of the policy keeps of the old one.
pub fn keep_allowed(b: &mut Batch, t: &str, id: &str, kept: &[(Ipv4Addr, u64)]) {
    for (addr, left) in kept {
        allow(b, t, id, &[*addr], (*left).max(1000));
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
        let a = Ipv4Addr::new(10, 88, 0, 2);
        let cfg = NetworkConfig::default();
        write(&mut b, &cfg, &dns, (ID, a), &net, &Current::default());
        b.lines().join("\n")
    }

    #[test]
    fn one_table_dispatches_to_each_spaces_chain() {
        let mut b = Batch::new();
        shared(&mut b, &NetworkConfig::default());
        let r = b.lines().join("\n");
        assert!(r.starts_with("add table inet clawdspace0-spaces\n"), "{r}");
        let fwd = "add rule inet clawdspace0-spaces forward";
        for want in [
            format!("{fwd} iifname != \"clawdspace0\" accept"),
            format!("{fwd} meta nfproto != ipv4 accept"),
            format!("{fwd} ct state established,related accept"),
            format!("{fwd} ip saddr vmap @spaces"),
            "add rule inet clawdspace0-spaces input ip saddr vmap @spaces_in".into(),
        ] {
            assert!(r.contains(&want), "{want} missing from:\n{r}");
        }
        // Kept with the spaces' pieces: the table is never deleted here,
        // the base chains' rules are replaced.
        assert!(!r.contains("delete"), "{r}");
        assert!(r.contains("flush chain inet clawdspace0-spaces forward"));
    }

    #[test]
    fn each_mode_gets_its_rules() {
        let blocks = Egress {
            block_cidrs: vec!["198.18.0.0/15".parse().expect("net")],
            ..Default::default()
        };
        let r = rules(NetworkMode::Internet, blocks.clone());
        assert!(!r.contains("delete"), "nothing to remove: {r}");
        assert!(r.contains("add counter inet clawdspace0-spaces cs0123456789ab_dropped"));
        assert!(r.contains(
            "add element inet clawdspace0-spaces spaces { 10.88.0.2 : jump cs0123456789ab }"
        ));
        let fwd = &r[r.find("add rule").expect("rules")..];
        assert!(fwd.starts_with("add rule inet clawdspace0-spaces cs0123456789ab "));
        let block = "ip daddr 198.18.0.0/15 counter name \"cs0123456789ab_dropped\" drop";
        let dns = "ip daddr 10.0.0.53 meta l4proto udp th dport 53 accept";
        let private = "ip daddr 10.0.0.0/8 counter name \"cs0123456789ab_dropped\" drop";
        assert!(fwd.find(block) < fwd.find(dns) && fwd.find(dns) < fwd.find(private));
        assert!(!r.contains("_in"), "{r}");
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
        assert!(r.contains("add set inet clawdspace0-spaces cs0123456789ab_allowed"));
        assert!(r.contains(
            "cs0123456789ab meta l4proto tcp th dport 443 ip daddr @cs0123456789ab_allowed accept"
        ));
        assert!(r.ends_with(
            "add element inet clawdspace0-spaces spaces_in { 10.88.0.2 : jump cs0123456789ab_in }"
        ));
        assert!(r.contains("cs0123456789ab_in counter name \"cs0123456789ab_dropped\" drop"));
        assert!(!r.contains("th dport 53"), "no DNS but the answerer's");
        assert!(
            r.contains("169.254.0.0/16 counter"),
            "no rebinding to private addresses"
        );
    }

    #[test]
    fn the_kernel_takes_the_policies_and_they_go_whole() {
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
            let t = cfg.table();
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
            // A table of an earlier version, per space: what its DNS
            // answers allowed is kept, and the table goes.
            nft("add table inet cs0123456789ab");
            nft("add set inet cs0123456789ab allowed { type ipv4_addr; flags timeout; }");
            nft("add element inet cs0123456789ab allowed { 151.101.0.1 timeout 1h }");
            let kept = allowed_left(t, ID).expect("left");
            assert_eq!(kept.len(), 1, "{kept:?}");
            crate::network::nft::ruleset(&cfg, &[], &[(ID, a)], &[a], &[])
                .commit()
                .expect("shared tables");
            assert_eq!(read_drops(t, ID).expect("read"), None, "no policy yet");
            assert!(!exists(t, ID).expect("exists"));
            for _ in 0..2 {
                let cur = Current::read(t, &[ID]).expect("read");
                let mut b = Batch::new();
                write(&mut b, &cfg, &[], (ID, a), &net, &cur);
                keep_allowed(&mut b, t, ID, &kept);
                b.commit().expect("space policy");
            }
            let set = nft("list set inet clawdspace0-spaces cs0123456789ab_allowed");
            assert!(set.contains("151.101.0.1 timeout 59m"), "{set}");
            assert!(exists(t, ID).expect("exists"));
            assert!(!nft("list tables").contains("inet cs0123456789ab"));
            let all = nft("list table inet clawdspace0-spaces");
            for want in [
                "counter cs0123456789ab_dropped",
                "set cs0123456789ab_allowed",
                "type ipv4_addr",
                "flags timeout",
                "size 4096",
                "type filter hook forward priority filter - 10; policy accept;",
                "type filter hook input priority filter - 10; policy accept;",
                "ip saddr vmap @spaces",
                "10.88.0.2 : jump cs0123456789ab ",
                "10.88.0.2 : jump cs0123456789ab_in ",
                "ip daddr 192.168.7.0/24 counter name \"cs0123456789ab_dropped\" drop",
                "tcp dport 8080 ip daddr @cs0123456789ab_allowed accept",
            ] {
                assert!(all.contains(want), "{want} missing from:\n{all}");
            }
            assert_eq!(
                all.matches("chain cs0123456789ab {").count(),
                1,
                "replaced, not doubled"
            );
            assert_eq!(read_drops(t, ID).expect("read"), Some((0, 0)));
            // Bringing the bridge up again keeps the policies.
            crate::network::nft::ruleset(&cfg, &[], &[(ID, a)], &[a], &[])
                .commit()
                .expect("again");
            assert_eq!(nft("list table inet clawdspace0-spaces"), all);
            // Allowed addresses expire; a second answer refreshes them.
            let addrs = [
                Ipv4Addr::new(151, 101, 0, 223),
                Ipv4Addr::new(151, 101, 64, 223),
            ];
            for ms in [60_000, 120_000] {
                let mut b = Batch::new();
                allow(&mut b, t, ID, &addrs, ms);
                b.commit().expect("allow");
            }
            let set = nft("list set inet clawdspace0-spaces cs0123456789ab_allowed");
            assert!(set.contains("151.101.0.223 timeout 2m"), "{set}");
            assert!(set.contains("151.101.64.223 timeout 2m"), "{set}");
            let left = allowed_left(t, ID).expect("left");
            assert_eq!(left.len(), 2);
            assert!(left.iter().all(|(_, ms)| *ms > 100_000), "{left:?}");
            // Another space, unknown to the runtime (a daemon died before
            // removing it): swept, and the known one stays.
            let other = "fedcba98765432100000";
            let b_addr = Ipv4Addr::new(10, 88, 0, 3);
            let mut b = Batch::new();
            add(&mut b, &cfg, &[], (other, b_addr), &net);
            b.commit().expect("other");
            let cur = Current::read(t, &[]).expect("read");
            let mut b = Batch::new();
            forget_orphans(&mut b, t, &[ID], &cur);
            b.commit().expect("sweep");
            let all = nft("list table inet clawdspace0-spaces");
            assert!(!all.contains("fedcba987654"), "{all}");
            assert!(all.contains("cs0123456789ab_in"), "{all}");
            // Removed whole, twice (the second finds nothing).
            for _ in 0..2 {
                let cur = Current::read(t, &[ID]).expect("read");
                let mut b = Batch::new();
                forget(&mut b, t, ID, &cur);
                b.commit().expect("forget");
            }
            let all = nft("list table inet clawdspace0-spaces");
            assert!(!all.contains("cs0123456789ab"), "{all}");
            assert!(!all.contains("10.88.0.2"), "{all}");
            assert_eq!(read_drops(t, ID).expect("read"), None);
            // The address is free for another space's policy.
            let mut b = Batch::new();
            add(&mut b, &cfg, &[], (other, a), &net);
            b.commit().expect("next holder");
            // The bridge's removal takes the table with what it holds.
            crate::network::nft::delete(t).commit().expect("delete");
            assert_eq!(nft("list ruleset").trim(), "");
            let cur = Current::read(t, &[ID]).expect("read");
            let mut b = Batch::new();
            forget(&mut b, t, ID, &cur);
            assert!(b.is_empty(), "nothing to remove without the table");
        });
    }
}
