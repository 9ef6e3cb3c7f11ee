//! Each networked space's egress policy, enforced before the runtime's
//! shared table and never instead of it. All spaces' policies are data in
//! one table, `inet <table>-spaces` ([`table_of`]): its two base chains run
//! at a priority before the shared table's, look only at IPv4 from the
//! bridge, and hold a fixed list of rules that look the source address
//! (bound to its space's port by the bridge table, so a space cannot pose
//! as another) up in sets: which mode its space has (`internet`, `lan`,
//! `domains`, `domains_internet`), its `blockCidrs` (`blocks`, ranges of
//! `source . destination`), its allowed ports (`ports`) and the addresses
//! its DNS answers allowed (`allowed`, `source . destination`, each
//! expiring with its answer). So a packet costs a few hash lookups however
//! many spaces there are (one base chain per space made every forwarded
//! packet walk all of them), and a space's policy is only set elements
//! and a counter: adding one adds no rule, so the kernel has no rules to
//! check again either. The rules can only drop: an `accept` ends this
//! table's base chain, and the shared table still decides. The one thing
//! the shared table lets through for a policy is a `lan` space's private
//! ranges (its `lan` set of addresses).
//!
//! Every drop of a space's rules goes through its counter `cs<12 hex of
//! its id>_dropped` (named after its host link; map `counters` names it for
//! the address; [`read_drops`]). A space's elements and counter are added
//! in one transaction and removed in one, so nothing of a destroyed space's
//! policy can apply to the next space given its address. Removal works
//! from what the kernel holds ([`Current`]): the space's address is the one
//! `counters` maps to its counter, and every element keyed by it goes.

use std::net::Ipv4Addr;

use super::config::{Ipv4Net, NetworkConfig};
use super::netns::host_link;
use super::nfnl::{self, Batch, Element, Hook, Rule, SetElement, SetSpec, INET};
use super::nft::BLOCKED;
use super::{NetworkMode, SpaceNetwork};

/// Most addresses a space's DNS answers may have allowed at once (more
/// are refused until some expire).
pub const MAX_ALLOWED: u32 = 4096;
/// The map from a space's address to its counter.
const COUNTERS: &str = "counters";
/// Addresses of spaces in mode `internet` without `allowDomains`.
const INTERNET: &str = "internet";
/// Addresses of spaces in mode `lan` without `allowDomains`.
const LAN: &str = "lan";
/// Addresses of spaces with `allowDomains`.
const DOMAINS: &str = "domains";
/// Addresses of spaces with `allowDomains` in mode `internet`.
const DOMAINS_INTERNET: &str = "domains_internet";
/// `source . destination` ranges dropped (`blockCidrs`).
const BLOCKS: &str = "blocks";
/// `source . TCP port` allowed (`allowPorts`).
const PORTS: &str = "ports";
/// `source . destination` allowed by DNS answers.
const ALLOWED: &str = "allowed";
/// The sets of spaces by mode.
const MODES: [&str; 4] = [INTERNET, LAN, DOMAINS, DOMAINS_INTERNET];
/// `ipv4_addr`, 4 bytes.
const IPV4: (u32, u32) = (7, 4);
/// `ipv4_addr . ipv4_addr`.
const IPV4_IPV4: (u32, u32) = ((7 << 6) | 7, 8);
/// `ipv4_addr . inet_service` (the port padded to 4 bytes).
const IPV4_PORT: (u32, u32) = ((7 << 6) | 13, 8);
/// Most elements read back from one set.
const MAX_READ: usize = 1 << 22;
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

/// The name of the counter of the space whose host link is `link`.
fn counter_of(link: &str) -> String {
    format!("{link}_dropped")
}

/// The sets of the table, as made.
fn sets() -> [(&'static str, SetSpec); 8] {
    let plain = |key| SetSpec {
        key,
        ..SetSpec::default()
    };
    [
        (
            COUNTERS,
            SetSpec {
                key: IPV4,
                counters: true,
                ..SetSpec::default()
            },
        ),
        (INTERNET, plain(IPV4)),
        (LAN, plain(IPV4)),
        (DOMAINS, plain(IPV4)),
        (DOMAINS_INTERNET, plain(IPV4)),
        (
            BLOCKS,
            SetSpec {
                key: IPV4_IPV4,
                flags: nfnl::SET_INTERVAL,
                fields: vec![4, 4],
                ..SetSpec::default()
            },
        ),
        (PORTS, plain(IPV4_PORT)),
        (
            ALLOWED,
            SetSpec {
                key: IPV4_IPV4,
                flags: nfnl::SET_TIMEOUT,
                ..SetSpec::default()
            },
        ),
    ]
}

/// Adds to `b` the table of policies of our table `cfg.table()`, made if
/// absent and kept with the spaces' elements if present, with its base
/// chains' rules replaced (`resolvers` and `cfg.allow` are the shared
/// table's exceptions, kept for mode `internet`). Part of the transaction
/// that brings the bridge up.
pub fn shared(b: &mut Batch, cfg: &NetworkConfig, resolvers: &[Ipv4Addr]) {
    let t = table_of(cfg.table());
    b.add_table(INET, &t);
    for (name, spec) in sets() {
        b.add_set_spec(INET, &t, name, &spec);
    }
    let counted_drop = |r: Rule| r.counter_by_saddr(COUNTERS).drop();
    let mut forward = vec![counted_drop(Rule::new().ip_saddr_daddr_in(BLOCKS))];
    for r in exceptions(resolvers, &cfg.allow) {
        forward.push(Rule::new().ip_saddr_in(INTERNET).then(r));
    }
    for (set, ranges) in [
        (INTERNET, BLOCKED),
        (LAN, &LAN_BLOCKED[..]),
        (DOMAINS_INTERNET, BLOCKED),
    ] {
        for n in ranges {
            forward.push(counted_drop(Rule::new().ip_saddr_in(set).ip_daddr(*n)));
        }
    }
    forward.push(
        Rule::new()
            .ip_saddr_tcp_dport_in(PORTS)
            .ip_saddr_daddr_in(ALLOWED)
            .accept(),
    );
    forward.push(counted_drop(Rule::new().ip_saddr_in(DOMAINS)));
    let input = vec![counted_drop(Rule::new().ip_saddr_in(DOMAINS))];
    for (chain, num, rules) in [
        ("forward", libc::NF_INET_FORWARD, forward),
        ("input", libc::NF_INET_LOCAL_IN, input),
    ] {
        let hook = Hook {
            num: num as u32,
            priority: -10,
            kind: "filter",
        };
        b.add_chain(INET, &t, chain, hook);
        b.flush_chain(INET, &t, chain);
        let head = [
            Rule::new().iifname(&cfg.bridge, false).accept(),
            Rule::new().not_ipv4().accept(),
            Rule::new().established().accept(),
        ];
        for r in head.into_iter().chain(rules) {
            b.add_rule(INET, &t, chain, r);
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

/// What the kernel holds of the spaces' policies of a table: read before
/// a space's are replaced or removed.
#[derive(Debug, Default)]
pub struct Current {
    /// Whether the table exists (it goes with the bridge).
    exists: bool,
    /// The elements of its sets keyed by a space's address, `(set,
    /// element)`, and of `counters`.
    elems: Vec<(&'static str, SetElement)>,
    /// Spaces' tables from before one table held all policies (`inet
    /// cs…`, named like their host links) still there.
    legacy: Vec<String>,
}

impl Current {
    /// Reads it for our table `t`, for replacing or removing the policies
    /// of spaces `ids` and, with `sweep` (every space the runtime knows),
    /// those of spaces it does not know. Of what DNS answers allowed, only
    /// these spaces' elements are read (all spaces' may be millions).
    /// Blocking.
    pub fn read(t: &str, ids: &[&str], sweep: Option<&[&str]>) -> crate::error::Result<Current> {
        let pt = table_of(t);
        let mut cur = Current::default();
        for set in [COUNTERS, BLOCKS, PORTS] {
            if let Some(elems) = nfnl::read_set_elements(INET, &pt, set, MAX_READ)? {
                cur.exists = true;
                cur.elems.extend(elems.into_iter().map(|e| (set, e)));
            }
        }
        let counters = |ids: &[&str]| -> std::collections::HashSet<String> {
            ids.iter().map(|id| counter_of(&host_link(id))).collect()
        };
        let (mine, known) = (counters(ids), sweep.map(counters));
        let wanted: Vec<Vec<u8>> = cur
            .elems
            .iter()
            .filter(|(set, _)| *set == COUNTERS)
            .filter(|(_, e)| {
                e.objref.as_ref().is_some_and(|c| {
                    mine.contains(c) || known.as_ref().is_some_and(|k| !k.contains(c))
                })
            })
            .map(|(_, e)| e.key.clone())
            .collect();
        if cur.exists && !wanted.is_empty() {
            let theirs = |e: &SetElement| wanted.iter().any(|a| e.key.starts_with(a));
            let allowed = nfnl::read_set_elements_where(INET, &pt, ALLOWED, MAX_READ, theirs)?;
            let allowed = allowed
                .unwrap_or_default()
                .into_iter()
                .map(|e| (ALLOWED, e));
            cur.elems.extend(allowed);
        }
        for id in ids {
            let link = host_link(id);
            if nfnl::table_exists(INET, &link)? {
                cur.legacy.push(link);
            }
        }
        Ok(cur)
    }

    /// [`allowed_left`] from what was read (the table of an earlier
    /// version is read now, if there is one). Blocking.
    pub fn allowed_left(
        &self,
        id: &str,
        addr: Ipv4Addr,
    ) -> crate::error::Result<Vec<(Ipv4Addr, u64)>> {
        let dest = |k: &[u8]| <[u8; 4]>::try_from(k).ok().map(Ipv4Addr::from);
        let mut out: Vec<(Ipv4Addr, u64)> = self
            .elems
            .iter()
            .filter(|(set, e)| {
                *set == ALLOWED && e.key.len() == 8 && e.key.starts_with(&addr.octets())
            })
            .filter_map(|(_, e)| Some((dest(&e.key[4..])?, e.left_ms?)))
            .collect();
        let link = host_link(id);
        if self.legacy.contains(&link) {
            // Kept in the space's own table by an earlier version.
            let cap = MAX_ALLOWED as usize;
            let old = nfnl::read_set_elements(INET, &link, "allowed", cap)?.unwrap_or_default();
            out.extend(
                old.into_iter()
                    .filter_map(|e| Some((dest(&e.key)?, e.left_ms?))),
            );
        }
        out.retain(|(_, ms)| *ms > 0);
        Ok(out)
    }

    /// The addresses `counters` maps to counter `counter`.
    fn addresses_of(&self, counter: &str) -> Vec<Vec<u8>> {
        self.elems
            .iter()
            .filter(|(set, e)| *set == COUNTERS && e.objref.as_deref() == Some(counter))
            .map(|(_, e)| e.key.clone())
            .collect()
    }

    /// The host link names of spaces whose counters `counters` names, but
    /// which are not among `known` (left by a daemon that died before it
    /// removed them).
    fn orphans(&self, known: &[&str]) -> Vec<String> {
        let known: std::collections::HashSet<String> =
            known.iter().map(|id| counter_of(&host_link(id))).collect();
        let mut out: Vec<String> = self
            .elems
            .iter()
            .filter(|(set, _)| *set == COUNTERS)
            .filter_map(|(_, e)| e.objref.clone())
            .filter(|c| !known.contains(c))
            .filter_map(|c| c.strip_suffix("_dropped").map(String::from))
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
        forget_link(b, t, &link, cur);
    }
}

/// Whether space `id` has a policy in our table `t` now (a leftover, for
/// a new space).
pub fn exists(t: &str, id: &str) -> crate::error::Result<bool> {
    Ok(read_drops(t, id)?.is_some())
}

/// Adds to `b` the transaction that replaces space `id`'s policy (`cur`
/// read beforehand): that of `net` for its address `addr`.
pub fn write(
    b: &mut Batch,
    t: &str,
    (id, addr): (&str, Ipv4Addr),
    net: &SpaceNetwork,
    cur: &Current,
) {
    forget(b, t, id, cur);
    add(b, t, (id, addr), net);
}

/// Adds to `b` the removal of space `id`'s policy from our table `t`
/// (`cur` read beforehand; nothing when it has none).
pub fn forget(b: &mut Batch, t: &str, id: &str, cur: &Current) {
    let link = host_link(id);
    if cur.legacy.contains(&link) {
        b.delete_table(INET, &link);
    }
    forget_link(b, t, &link, cur);
}

/// [`forget`] by the space's host link name.
fn forget_link(b: &mut Batch, t: &str, link: &str, cur: &Current) {
    if !cur.exists {
        return;
    }
    let pt = table_of(t);
    let counter = counter_of(link);
    for addr in cur.addresses_of(&counter) {
        let key = Element {
            text: key_text(&addr),
            key: addr.clone(),
            ..Element::default()
        };
        b.remove_element_list(INET, &pt, COUNTERS, std::slice::from_ref(&key));
        // In whichever mode set it is: added first, so the removal holds.
        for set in MODES {
            b.add_element_list(INET, &pt, set, std::slice::from_ref(&key));
            b.remove_element_list(INET, &pt, set, std::slice::from_ref(&key));
        }
        for set in [BLOCKS, PORTS, ALLOWED] {
            let mine: Vec<Element> = cur
                .elems
                .iter()
                .filter(|(s, e)| *s == set && e.key.starts_with(&addr))
                .map(|(_, e)| Element {
                    key: e.key.clone(),
                    key_end: e.key_end.clone(),
                    text: key_text(&e.key),
                    ..Element::default()
                })
                .collect();
            if !mine.is_empty() {
                b.remove_element_list(INET, &pt, set, &mine);
            }
        }
    }
    // Made first where absent, so that the removal holds either way.
    b.add_counter(INET, &pt, &counter);
    b.remove_counter(INET, &pt, &counter);
}

/// A key (addresses, a port) as `nft` writes it.
fn key_text(key: &[u8]) -> String {
    let addr = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
    match key.len() {
        4 => addr(key).map_or_else(String::new, |a| a.to_string()),
        8 => match (addr(&key[..4]), addr(&key[4..])) {
            (Some(a), Some(b)) => format!("{a} . {b}"),
            _ => format!("{key:02x?}"),
        },
        _ => format!("{key:02x?}"),
    }
}

/// `source . x` as a key, `x` 4 bytes.
fn pair(addr: Ipv4Addr, x: [u8; 4]) -> Vec<u8> {
    let mut k = addr.octets().to_vec();
    k.extend_from_slice(&x);
    k
}

/// [`write`] for a space that has no policy yet: only additions, so the
/// commit waits for nothing.
pub fn add(b: &mut Batch, t: &str, (id, addr): (&str, Ipv4Addr), net: &SpaceNetwork) {
    let pt = table_of(t);
    let counter = counter_of(&host_link(id));
    b.add_counter(INET, &pt, &counter);
    let me = Element {
        key: addr.octets().to_vec(),
        text: addr.to_string(),
        ..Element::default()
    };
    let named = Element {
        objref: Some(counter),
        ..me.clone()
    };
    b.add_element_list(INET, &pt, COUNTERS, &[named]);
    let domains = !net.egress.allow_domains.is_empty();
    let modes: &[&str] = match (domains, net.mode) {
        (true, NetworkMode::Lan) => &[DOMAINS],
        (true, _) => &[DOMAINS, DOMAINS_INTERNET],
        (false, NetworkMode::Lan) => &[LAN],
        (false, _) => &[INTERNET],
    };
    for set in modes {
        b.add_element_list(INET, &pt, set, std::slice::from_ref(&me));
    }
    let blocks: Vec<Element> = outermost(&net.egress.block_cidrs)
        .into_iter()
        .map(|c| {
            let first = u32::from(c.addr) & c.mask();
            let last = first | !c.mask();
            Element {
                key: pair(addr, first.to_be_bytes()),
                key_end: Some(pair(addr, last.to_be_bytes())),
                text: format!("{addr} . {c}"),
                ..Element::default()
            }
        })
        .collect();
    if !blocks.is_empty() {
        b.add_element_list(INET, &pt, BLOCKS, &blocks);
    }
    if domains {
        let ports: Vec<Element> = net
            .egress
            .allow_ports
            .iter()
            .map(|p| {
                let b = p.to_be_bytes();
                Element {
                    key: pair(addr, [b[0], b[1], 0, 0]),
                    text: format!("{addr} . {p}"),
                    ..Element::default()
                }
            })
            .collect();
        if !ports.is_empty() {
            b.add_element_list(INET, &pt, PORTS, &ports);
        }
    }
}

/// The networks of `nets` that are in no other one of them (an interval
/// set refuses overlapping ranges; two networks either nest or are apart).
fn outermost(nets: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let inside = |a: &Ipv4Net, b: &Ipv4Net| b.prefix <= a.prefix && b.contains(a.addr);
    let mut out: Vec<Ipv4Net> = Vec::new();
    for n in nets {
        if out.iter().any(|o| inside(n, o)) {
            continue;
        }
        out.retain(|o| !inside(o, n));
        out.push(*n);
    }
    out
}

/// Packets and bytes the rules of space `id` dropped since its policy was
/// written (None without one), in our table `t`. Blocking.
pub fn read_drops(t: &str, id: &str) -> crate::error::Result<Option<(u64, u64)>> {
    nfnl::read_counter(INET, &table_of(t), &counter_of(&host_link(id)))
}

/// Adds to `b` the addresses `addrs` to those space `addr` may reach (its
/// DNS answers', in our table `t`), each expiring after `timeout_ms`;
/// those there get that timeout anew.
pub fn allow(b: &mut Batch, t: &str, addr: Ipv4Addr, addrs: &[Ipv4Addr], timeout_ms: u64) {
    let keys: Vec<(Vec<u8>, String)> = addrs
        .iter()
        .map(|a| (pair(addr, a.octets()), format!("{addr} . {a}")))
        .collect();
    b.refresh_elements(INET, &table_of(t), ALLOWED, &keys, timeout_ms);
}

/// The addresses space `id` (address `addr`) may reach by its DNS answers
/// (in our table `t`, or in the space's table of an earlier version), each
/// with the milliseconds it has left. Blocking.
pub fn allowed_left(
    t: &str,
    id: &str,
    addr: Ipv4Addr,
) -> crate::error::Result<Vec<(Ipv4Addr, u64)>> {
    Current::read(t, &[id], None)?.allowed_left(id, addr)
}

/// Adds to `b` the addresses `kept` to those space `addr` may reach (in
/// our table `t`), each for the time it had left (at least a second): what
/// a rewrite of the policy keeps of the old one.
pub fn keep_allowed(b: &mut Batch, t: &str, addr: Ipv4Addr, kept: &[(Ipv4Addr, u64)]) {
    for (a, left) in kept {
        allow(b, t, addr, &[*a], (*left).max(1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::policy::Egress;

    const ID: &str = "0123456789abcdef0123";

    fn lines(mode: NetworkMode, egress: Egress) -> String {
        let a = Ipv4Addr::new(10, 88, 0, 2);
        let net = SpaceNetwork {
            mode,
            address: Some(a),
            published: Vec::new(),
            egress,
        };
        let mut b = Batch::new();
        write(&mut b, "clawdspace0", (ID, a), &net, &Current::default());
        b.lines().join("\n")
    }

    #[test]
    fn one_list_of_rules_looks_every_space_up() {
        let mut b = Batch::new();
        let dns = [Ipv4Addr::new(10, 0, 0, 53)];
        shared(&mut b, &NetworkConfig::default(), &dns);
        let r = b.lines().join("\n");
        assert!(r.starts_with("add table inet clawdspace0-spaces\n"), "{r}");
        let fwd = "add rule inet clawdspace0-spaces forward";
        let drop = "counter name ip saddr map @counters drop";
        let want = [
            format!("{fwd} iifname != \"clawdspace0\" accept"),
            format!("{fwd} meta nfproto != ipv4 accept"),
            format!("{fwd} ct state established,related accept"),
            format!("{fwd} ip saddr . ip daddr @blocks {drop}"),
            format!(
                "{fwd} ip saddr @internet ip daddr 10.0.0.53 meta l4proto udp th dport 53 accept"
            ),
            format!("{fwd} ip saddr @internet ip daddr 10.0.0.0/8 {drop}"),
            format!("{fwd} ip saddr @lan ip daddr 224.0.0.0/4 {drop}"),
            format!("{fwd} ip saddr @domains_internet ip daddr 169.254.0.0/16 {drop}"),
            format!("{fwd} ip saddr . tcp dport @ports ip saddr . ip daddr @allowed accept"),
            format!("{fwd} ip saddr @domains {drop}"),
            format!("add rule inet clawdspace0-spaces input ip saddr @domains {drop}"),
        ];
        let mut at = 0;
        for w in &want[..want.len() - 1] {
            let found = r[at..].find(w.as_str());
            assert!(found.is_some(), "{w} missing (or out of order) in:\n{r}");
            at += found.unwrap_or(0);
        }
        assert!(r.contains(&want[want.len() - 1]), "{r}");
        // Kept with the spaces' elements: never deleted here, the base
        // chains' rules replaced.
        assert!(!r.contains("delete"), "{r}");
        assert!(r.contains("flush chain inet clawdspace0-spaces forward"));
    }

    #[test]
    fn nested_networks_are_blocked_once_by_the_outermost() {
        let nets: Vec<Ipv4Net> = [
            "10.1.0.0/16",
            "10.0.0.0/8",
            "10.1.2.3/32",
            "192.0.2.0/24",
            "10.0.0.0/8",
        ]
        .iter()
        .map(|n| n.parse().expect("net"))
        .collect();
        let out: Vec<String> = outermost(&nets).iter().map(|n| n.to_string()).collect();
        assert_eq!(out, ["10.0.0.0/8", "192.0.2.0/24"]);
    }

    #[test]
    fn each_mode_is_a_few_elements() {
        let blocks = Egress {
            block_cidrs: vec!["198.18.0.0/15".parse().expect("net")],
            ..Default::default()
        };
        let r = lines(NetworkMode::Internet, blocks.clone());
        assert!(!r.contains("delete") && !r.contains("rule"), "{r}");
        for want in [
            "add counter inet clawdspace0-spaces cs0123456789ab_dropped",
            "add element inet clawdspace0-spaces counters { 10.88.0.2 : \"cs0123456789ab_dropped\" }",
            "add element inet clawdspace0-spaces internet { 10.88.0.2 }",
            "add element inet clawdspace0-spaces blocks { 10.88.0.2 . 198.18.0.0/15 }",
        ] {
            assert!(r.contains(want), "{want} missing from:\n{r}");
        }
        let r = lines(NetworkMode::Lan, blocks);
        assert!(
            r.contains("lan { 10.88.0.2 }") && !r.contains("internet"),
            "{r}"
        );
        let domains = Egress {
            allow_domains: vec!["pypi.org".into()],
            allow_ports: vec![443],
            ..Default::default()
        }
        .normalize(NetworkMode::Internet)
        .expect("ok");
        let r = lines(NetworkMode::Internet, domains);
        assert!(r.contains("domains { 10.88.0.2 }"), "{r}");
        assert!(r.contains("domains_internet { 10.88.0.2 }"), "{r}");
        assert!(r.contains("ports { 10.88.0.2 . 443 }"), "{r}");
        assert!(!r.contains(" internet {"), "{r}");
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
                    // Nested ranges too (an interval set refuses overlaps).
                    block_cidrs: ["192.168.7.0/24", "203.0.113.9/32", "192.168.7.128/25"]
                        .iter()
                        .map(|n| n.parse().expect("net"))
                        .collect(),
                    allow_domains: vec!["pypi.org".into()],
                    allow_ports: vec![443, 8080],
                },
            };
            // A table of an earlier version, per space: what its DNS
            // answers allowed is kept, and the table goes.
            nft("add table inet cs0123456789ab");
            nft("add set inet cs0123456789ab allowed { type ipv4_addr; flags timeout; }");
            nft("add element inet cs0123456789ab allowed { 151.101.0.1 timeout 1h }");
            let kept = allowed_left(t, ID, a).expect("left");
            assert_eq!(kept.len(), 1, "{kept:?}");
            crate::network::nft::ruleset(&cfg, &[], &[(ID, a)], &[a], &[])
                .commit()
                .expect("shared tables");
            assert_eq!(read_drops(t, ID).expect("read"), None, "no policy yet");
            assert!(!exists(t, ID).expect("exists"));
            for _ in 0..2 {
                let cur = Current::read(t, &[ID], None).expect("read");
                let mut b = Batch::new();
                write(&mut b, t, (ID, a), &net, &cur);
                keep_allowed(&mut b, t, a, &kept);
                b.commit().expect("space policy");
            }
            assert!(exists(t, ID).expect("exists"));
            assert!(!nft("list tables").contains("inet cs0123456789ab"));
            let all = nft("list table inet clawdspace0-spaces");
            for want in [
                "counter cs0123456789ab_dropped",
                "10.88.0.2 : \"cs0123456789ab_dropped\"",
                "10.88.0.2 . 192.168.7.0/24",
                "10.88.0.2 . 203.0.113.9",
                "10.88.0.2 . 8080",
                "10.88.0.2 . 151.101.0.1 timeout",
                "type filter hook forward priority filter - 10; policy accept;",
                "type filter hook input priority filter - 10; policy accept;",
                "ip saddr . ip daddr @blocks counter name ip saddr map @counters drop",
            ] {
                assert!(all.contains(want), "{want} missing from:\n{all}");
            }
            assert_eq!(all.matches("10.88.0.2 . 8080").count(), 1, "not doubled");
            let domains = nft("list set inet clawdspace0-spaces domains");
            assert!(domains.contains("10.88.0.2"), "{domains}");
            assert_eq!(read_drops(t, ID).expect("read"), Some((0, 0)));
            // Bringing the bridge up again keeps the policies.
            crate::network::nft::ruleset(&cfg, &[], &[(ID, a)], &[a], &[])
                .commit()
                .expect("again");
            let again = nft("list table inet clawdspace0-spaces");
            assert!(again.contains("10.88.0.2 . 8080"), "{again}");
            // What DNS answers allow expires; a second answer refreshes it.
            let addrs = [
                Ipv4Addr::new(151, 101, 0, 223),
                Ipv4Addr::new(151, 101, 64, 223),
            ];
            for ms in [60_000, 120_000] {
                let mut b = Batch::new();
                allow(&mut b, t, a, &addrs, ms);
                b.commit().expect("allow");
            }
            let set = nft("list set inet clawdspace0-spaces allowed");
            assert!(
                set.contains("10.88.0.2 . 151.101.0.223 timeout 2m"),
                "{set}"
            );
            assert!(
                set.contains("10.88.0.2 . 151.101.64.223 timeout 2m"),
                "{set}"
            );
            let left = allowed_left(t, ID, a).expect("left");
            assert_eq!(left.len(), 3, "{left:?}");
            // Another space, unknown to the runtime (a daemon died before
            // removing it): swept, and the known one stays.
            let other = "fedcba98765432100000";
            let b_addr = Ipv4Addr::new(10, 88, 0, 3);
            let mut b = Batch::new();
            add(&mut b, t, (other, b_addr), &net);
            allow(&mut b, t, b_addr, &addrs, 60_000);
            b.commit().expect("other");
            let cur = Current::read(t, &[], Some(&[ID])).expect("read");
            let mut b = Batch::new();
            forget_orphans(&mut b, t, &[ID], &cur);
            b.commit().expect("sweep");
            let all = nft("list table inet clawdspace0-spaces");
            assert!(!all.contains("fedcba987654"), "{all}");
            assert!(!all.contains("10.88.0.3"), "{all}");
            assert!(all.contains("10.88.0.2 . 8080"), "{all}");
            assert!(all.contains("10.88.0.2 . 151.101.0.223"), "{all}");
            // Removed whole, twice (the second finds nothing).
            for _ in 0..2 {
                let cur = Current::read(t, &[ID], None).expect("read");
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
            add(&mut b, t, (other, a), &net);
            b.commit().expect("next holder");
            // The bridge's removal takes the table with what it holds.
            crate::network::nft::delete(t).commit().expect("delete");
            assert_eq!(nft("list ruleset").trim(), "");
            let cur = Current::read(t, &[ID], None).expect("read");
            let mut b = Batch::new();
            forget(&mut b, t, ID, &cur);
            assert!(b.is_empty(), "nothing to remove without the table");
        });
    }
}
