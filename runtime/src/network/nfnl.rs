//! nftables over netlink, in-process: no `nft` program and no libnftnl.
//! A [`Batch`] of nf_tables messages (tables, chains, sets, elements,
//! rules) goes to the kernel as one transaction (`NFNL_MSG_BATCH_BEGIN` …
//! `END`): all of it applies, or none. Rules are built with [`Rule`], which
//! writes the kernel's expressions and, beside them, the rule in `nft`
//! syntax for logs, errors and tests.
//!
//! The messages are encoded here (a few dozen attributes of
//! `linux/netfilter/nf_tables.h`): the pure-Rust nftables crates are
//! GPL-licensed (this project is Apache-2.0), the others bind libnftnl and
//! libmnl, C libraries a host may lack.

use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use crate::error::{Error, Result};

/// nf_tables address families.
pub const INET: u8 = libc::NFPROTO_INET as u8;
/// The `bridge` family.
pub const BRIDGE: u8 = libc::NFPROTO_BRIDGE as u8;
/// The `ip` family (IPv4).
pub const IP: u8 = libc::NFPROTO_IPV4 as u8;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NEWTABLE: u16 = 0;
const GETTABLE: u16 = 1;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const NEWRULE: u16 = 6;
const DELRULE: u16 = 8;
const NEWSET: u16 = 9;
const NEWSETELEM: u16 = 12;
const GETSETELEM: u16 = 13;
const DELSETELEM: u16 = 14;
const NEWOBJ: u16 = 18;
const GETOBJ: u16 = 19;
const DELOBJ: u16 = 20;
/// `NFT_OBJECT_COUNTER`.
const OBJECT_COUNTER: u32 = 1;
/// `NFT_SET_TIMEOUT`: elements expire.
pub const SET_TIMEOUT: u32 = 0x10;
/// `NFT_SET_INTERVAL`: elements are ranges (with `NFT_SET_CONCAT`, of
/// each field of a concatenation).
pub const SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_OBJECT`: a map from keys to named objects (counters here).
const SET_OBJECT: u32 = 0x40;
/// `NFT_SET_CONCAT`: the key is a concatenation of fields.
pub const SET_CONCAT: u32 = 0x80;
const NLA_F_NESTED: u16 = 0x8000;
const LIST_ELEM: u16 = 1;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;

/// Registers: the verdict, a 16-byte one, and the first 4-byte one
/// (concatenations are loaded into consecutive 4-byte registers).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_00: u32 = 8;

/// A netlink attribute: bytes, or nested attributes.
#[derive(Debug, Clone)]
enum Attr {
    Bytes(u16, Vec<u8>),
    Nest(u16, Vec<Attr>),
}

fn string(t: u16, s: &str) -> Attr {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    Attr::Bytes(t, b)
}

fn be32(t: u16, v: u32) -> Attr {
    Attr::Bytes(t, v.to_be_bytes().to_vec())
}

fn be64(t: u16, v: u64) -> Attr {
    Attr::Bytes(t, v.to_be_bytes().to_vec())
}

fn value(t: u16, data: &[u8]) -> Attr {
    Attr::Nest(t, vec![Attr::Bytes(DATA_VALUE, data.to_vec())])
}

fn emit(attrs: &[Attr], out: &mut Vec<u8>) {
    for a in attrs {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let t = match a {
            Attr::Bytes(t, b) => {
                out.extend_from_slice(b);
                *t
            }
            Attr::Nest(t, inner) => {
                emit(inner, out);
                t | NLA_F_NESTED
            }
        };
        let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&t.to_ne_bytes());
        out.resize(out.len().next_multiple_of(4), 0);
    }
}

/// One expression of a rule: `name` with its attributes.
fn expr(name: &str, data: Vec<Attr>) -> Attr {
    Attr::Nest(
        LIST_ELEM,
        vec![string(1, name), Attr::Nest(2, data)], // NFTA_EXPR_NAME, _DATA
    )
}

fn meta(key: u32, dreg: u32) -> Attr {
    expr("meta", vec![be32(2, key), be32(1, dreg)]) // NFTA_META_KEY, _DREG
}

/// Payload bases.
const LL: u32 = 0;
const NETWORK: u32 = 1;
const TRANSPORT: u32 = 2;

fn payload(base: u32, offset: u32, len: u32, dreg: u32) -> Attr {
    // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
    expr(
        "payload",
        vec![be32(1, dreg), be32(2, base), be32(3, offset), be32(4, len)],
    )
}

fn cmp(equal: bool, sreg: u32, data: &[u8]) -> Attr {
    // NFTA_CMP_SREG, _OP (NFT_CMP_EQ 0, NFT_CMP_NEQ 1), _DATA
    expr(
        "cmp",
        vec![be32(1, sreg), be32(2, u32::from(!equal)), value(3, data)],
    )
}

/// `meta nfproto ipv4`: the expressions that stop a rule on anything but
/// IPv4 (an `inet` table sees both).
fn ipv4_only() -> [Attr; 2] {
    [
        meta(META_NFPROTO, REG_1),
        cmp(true, REG_1, &[libc::NFPROTO_IPV4 as u8]),
    ]
}

fn bitwise(reg: u32, mask: &[u8]) -> Attr {
    // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
    expr(
        "bitwise",
        vec![
            be32(1, reg),
            be32(2, reg),
            be32(3, mask.len() as u32),
            value(4, mask),
            value(5, &vec![0; mask.len()]),
        ],
    )
}

fn lookup(set: &str, sreg: u32, invert: bool) -> Attr {
    // NFTA_LOOKUP_SET, _SREG, _FLAGS (NFT_LOOKUP_F_INV 1)
    expr(
        "lookup",
        vec![string(1, set), be32(2, sreg), be32(5, u32::from(invert))],
    )
}

/// `name` as the kernel holds an interface name: padded to IFNAMSIZ.
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.resize(libc::IFNAMSIZ, 0);
    b
}

/// `name` as a match on an interface name: exact, NUL included.
fn ifname_match(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.push(0);
    b
}

const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;

/// An IPv4 network to match (address and prefix length).
pub type Net = (std::net::Ipv4Addr, u8);

/// A rule being built: the kernel's expressions and its `nft` text.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    exprs: Vec<Attr>,
    text: Vec<String>,
}

impl Rule {
    /// An empty rule.
    pub fn new() -> Rule {
        Rule::default()
    }

    fn with(mut self, text: String, exprs: impl IntoIterator<Item = Attr>) -> Rule {
        self.exprs.extend(exprs);
        self.text.push(text);
        self
    }

    /// The rule in `nft` syntax.
    pub fn text(&self) -> String {
        self.text.join(" ")
    }

    /// This rule's matches followed by all of `next`.
    pub fn then(mut self, next: Rule) -> Rule {
        self.exprs.extend(next.exprs);
        self.text.extend(next.text);
        self
    }

    /// `iifname "name"` (`==`) or `iifname != "name"`.
    pub fn iifname(self, name: &str, equal: bool) -> Rule {
        let op = if equal { "" } else { "!= " };
        self.with(
            format!("iifname {op}\"{name}\""),
            [
                meta(META_IIFNAME, REG_1),
                cmp(equal, REG_1, &ifname_match(name)),
            ],
        )
    }

    /// `oifname "name"` (`==`) or `oifname != "name"`.
    pub fn oifname(self, name: &str, equal: bool) -> Rule {
        let op = if equal { "" } else { "!= " };
        self.with(
            format!("oifname {op}\"{name}\""),
            [
                meta(META_OIFNAME, REG_1),
                cmp(equal, REG_1, &ifname_match(name)),
            ],
        )
    }

    /// `iifname != @set`: the input port is not in `set` (of ifnames).
    pub fn iifname_not_in(self, set: &str) -> Rule {
        self.with(
            format!("iifname != @{set}"),
            [meta(META_IIFNAME, REG_1), lookup(set, REG_1, true)],
        )
    }

    /// `ct state established,related`.
    pub fn established(self) -> Rule {
        // NFTA_CT_KEY (NFT_CT_STATE 0), _DREG; state bits in host order:
        // established 1 << 1, related 1 << 2.
        let ct = expr("ct", vec![be32(2, 0), be32(1, REG_1)]);
        self.with(
            "ct state established,related".into(),
            [
                ct,
                bitwise(REG_1, &6u32.to_ne_bytes()),
                cmp(false, REG_1, &[0; 4]),
            ],
        )
    }

    /// `ct status dnat`: a connection whose destination was rewritten
    /// (a published port's), in either direction.
    pub fn dnatted(self) -> Rule {
        // NFTA_CT_KEY (NFT_CT_STATUS 2), _DREG; IPS_DST_NAT = 1 << 5 in
        // host order.
        let ct = expr("ct", vec![be32(2, 2), be32(1, REG_1)]);
        self.with(
            "ct status dnat".into(),
            [
                ct,
                bitwise(REG_1, &0x20u32.to_ne_bytes()),
                cmp(false, REG_1, &[0; 4]),
            ],
        )
    }

    /// `meta nfproto != ipv4`.
    pub fn not_ipv4(self) -> Rule {
        self.with(
            "meta nfproto != ipv4".into(),
            [
                meta(META_NFPROTO, REG_1),
                cmp(false, REG_1, &[libc::NFPROTO_IPV4 as u8]),
            ],
        )
    }

    /// `fib daddr type local`: to one of the host's own addresses.
    pub fn daddr_local(self) -> Rule {
        // NFTA_FIB_DREG, _RESULT (NFT_FIB_RESULT_ADDRTYPE 3), _FLAGS
        // (NFTA_FIB_F_DADDR 2); the result is RTN_LOCAL (2), host order.
        let fib = expr("fib", vec![be32(1, REG_1), be32(2, 3), be32(3, 2)]);
        self.with(
            "fib daddr type local".into(),
            [fib, cmp(true, REG_1, &2u32.to_ne_bytes())],
        )
    }

    /// `dnat ip to addr:port`.
    pub fn dnat(self, addr: std::net::Ipv4Addr, port: u16) -> Rule {
        // NFTA_IMMEDIATE_DREG, _DATA { NFTA_DATA_VALUE }
        let load = |reg: u32, data: &[u8]| expr("immediate", vec![be32(1, reg), value(2, data)]);
        // NFTA_NAT_TYPE (NFT_NAT_DNAT 1), _FAMILY, _REG_ADDR_MIN,
        // _REG_PROTO_MIN, _FLAGS (NF_NAT_RANGE_PROTO_SPECIFIED 2)
        let nat = expr(
            "nat",
            vec![
                be32(1, 1),
                be32(2, libc::NFPROTO_IPV4 as u32),
                be32(3, REG_1),
                be32(5, REG_2),
                be32(7, 2),
            ],
        );
        self.with(
            format!("dnat ip to {addr}:{port}"),
            [
                load(REG_1, &addr.octets()),
                load(REG_2, &port.to_be_bytes()),
                nat,
            ],
        )
    }

    /// `ip saddr != addr` (IPv4 packets only).
    pub fn ip_saddr_not(self, addr: std::net::Ipv4Addr) -> Rule {
        self.with(
            format!("ip saddr != {addr}"),
            ipv4_only().into_iter().chain([
                payload(NETWORK, 12, 4, REG_1),
                cmp(false, REG_1, &addr.octets()),
            ]),
        )
    }

    fn ip_addr_in(self, field: &str, offset: u32, set: &str) -> Rule {
        self.with(
            format!("ip {field} @{set}"),
            ipv4_only().into_iter().chain([
                payload(NETWORK, offset, 4, REG_1),
                lookup(set, REG_1, false),
            ]),
        )
    }

    /// `ip saddr @set` (a set of `ipv4_addr`).
    pub fn ip_saddr_in(self, set: &str) -> Rule {
        self.ip_addr_in("saddr", 12, set)
    }

    /// `ip daddr @set` (a set of `ipv4_addr`).
    pub fn ip_daddr_in(self, set: &str) -> Rule {
        self.ip_addr_in("daddr", 16, set)
    }

    /// `ip saddr . ip daddr @set` (a set of `ipv4_addr . ipv4_addr`).
    pub fn ip_saddr_daddr_in(self, set: &str) -> Rule {
        self.with(
            format!("ip saddr . ip daddr @{set}"),
            ipv4_only().into_iter().chain([
                payload(NETWORK, 12, 4, REG32_00),
                payload(NETWORK, 16, 4, REG32_00 + 1),
                lookup(set, REG32_00, false),
            ]),
        )
    }

    /// `ip saddr . tcp dport @set` (a set of `ipv4_addr . inet_service`).
    pub fn ip_saddr_tcp_dport_in(self, set: &str) -> Rule {
        self.with(
            format!("ip saddr . tcp dport @{set}"),
            ipv4_only().into_iter().chain([
                meta(META_L4PROTO, REG_1),
                cmp(true, REG_1, &[libc::IPPROTO_TCP as u8]),
                payload(NETWORK, 12, 4, REG32_00),
                payload(TRANSPORT, 2, 2, REG32_00 + 1),
                lookup(set, REG32_00, false),
            ]),
        )
    }

    /// `counter name ip saddr map @map`: counts into the named counter
    /// that object map `map` (of `ipv4_addr`) names for the source address
    /// (IPv4 only; the rule stops on a miss).
    pub fn counter_by_saddr(self, map: &str) -> Rule {
        // NFTA_OBJREF_SET_SREG, _SET_NAME
        self.with(
            format!("counter name ip saddr map @{map}"),
            ipv4_only().into_iter().chain([
                payload(NETWORK, 12, 4, REG_1),
                expr("objref", vec![be32(3, REG_1), string(4, map)]),
            ]),
        )
    }

    /// `counter name "<name>"`: counts into the table's named counter.
    pub fn counter(self, name: &str) -> Rule {
        // NFTA_OBJREF_IMM_TYPE, _IMM_NAME
        self.with(
            format!("counter name \"{name}\""),
            [expr(
                "objref",
                vec![be32(1, OBJECT_COUNTER), string(2, name)],
            )],
        )
    }

    /// `meta nfproto ipv6`.
    pub fn ipv6(self) -> Rule {
        self.with(
            "meta nfproto ipv6".into(),
            [
                meta(META_NFPROTO, REG_1),
                cmp(true, REG_1, &[libc::NFPROTO_IPV6 as u8]),
            ],
        )
    }

    fn ip_addr(self, field: &str, offset: u32, net: Net) -> Rule {
        let (addr, prefix) = net;
        let mut e = ipv4_only().to_vec();
        e.push(payload(NETWORK, offset, 4, REG_1));
        let text = if prefix >= 32 {
            format!("ip {field} {addr}")
        } else {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            e.push(bitwise(REG_1, &mask.to_be_bytes()));
            format!("ip {field} {addr}/{prefix}")
        };
        e.push(cmp(true, REG_1, &addr.octets()));
        self.with(text, e)
    }

    /// `ip daddr net` (IPv4 only).
    pub fn ip_daddr(self, net: Net) -> Rule {
        self.ip_addr("daddr", 16, net)
    }

    /// `ip saddr net` (IPv4 only).
    pub fn ip_saddr(self, net: Net) -> Rule {
        self.ip_addr("saddr", 12, net)
    }

    /// `meta l4proto tcp|udp th dport port`.
    pub fn dport(self, proto: u8, port: u16) -> Rule {
        let name = if i32::from(proto) == libc::IPPROTO_TCP {
            "tcp"
        } else {
            "udp"
        };
        self.with(
            format!("meta l4proto {name} th dport {port}"),
            [
                meta(META_L4PROTO, REG_1),
                cmp(true, REG_1, &[proto]),
                payload(TRANSPORT, 2, 2, REG_1),
                cmp(true, REG_1, &port.to_be_bytes()),
            ],
        )
    }

    /// `ether type <t>` (bridge family).
    pub fn ether_type(self, t: u16) -> Rule {
        let name = match i32::from(t) {
            libc::ETH_P_IP => "ip".to_string(),
            libc::ETH_P_ARP => "arp".to_string(),
            _ => format!("{t:#06x}"),
        };
        self.with(
            format!("ether type {name}"),
            [
                payload(LL, 12, 2, REG_1),
                cmp(true, REG_1, &t.to_be_bytes()),
            ],
        )
    }

    /// `iifname . <mac> . <ipv4> @set`, the MAC and the address read at
    /// `(base, offset)` (6 and 4 bytes); `text` names them.
    pub fn port_bound(self, set: &str, mac: (u32, u32), ip: (u32, u32), text: &str) -> Rule {
        // A concatenation: 16 bytes of name, 6 (+2) of MAC, 4 of address
        // in consecutive 4-byte registers.
        self.with(
            format!("iifname . {text} @{set}"),
            [
                meta(META_IIFNAME, REG32_00),
                payload(mac.0, mac.1, 6, REG32_00 + 4),
                payload(ip.0, ip.1, 4, REG32_00 + 6),
                lookup(set, REG32_00, false),
            ],
        )
    }

    fn verdict(self, text: &str, code: i32) -> Rule {
        // NFTA_IMMEDIATE_DREG, _DATA { NFTA_DATA_VERDICT { _CODE } }
        let v = Attr::Nest(
            2,
            vec![Attr::Nest(DATA_VERDICT, vec![be32(1, code as u32)])],
        );
        self.with(
            text.into(),
            [expr("immediate", vec![be32(1, REG_VERDICT), v])],
        )
    }

    /// `accept`.
    pub fn accept(self) -> Rule {
        self.verdict("accept", libc::NF_ACCEPT)
    }

    /// `drop`.
    pub fn drop(self) -> Rule {
        self.verdict("drop", libc::NF_DROP)
    }

    /// `masquerade`.
    pub fn masquerade(self) -> Rule {
        self.with("masquerade".into(), [expr("masq", vec![])])
    }
}

/// The kernel's view of the MAC and address fields used by
/// [`Rule::port_bound`]: Ethernet source, IPv4 source, ARP sender MAC and
/// sender address.
pub const ETHER_SADDR: (u32, u32) = (LL, 6);
/// IPv4 source address.
pub const IP_SADDR: (u32, u32) = (NETWORK, 12);
/// ARP sender hardware address (Ethernet/IPv4 ARP).
pub const ARP_SHA: (u32, u32) = (NETWORK, 8);
/// ARP sender protocol address.
pub const ARP_SPA: (u32, u32) = (NETWORK, 14);

/// A base chain's hook.
pub struct Hook {
    /// `NF_INET_*` / `NF_BR_*` hook number.
    pub num: u32,
    /// Its priority.
    pub priority: i32,
    /// `filter` or `nat`.
    pub kind: &'static str,
}

/// Set key types as `nft` numbers them (for `nft list`; the kernel only
/// checks lengths), with their lengths: `ifname`.
pub const TYPE_IFNAME: (u32, u32) = (41, 16);
/// `ifname . ether_addr . ipv4_addr`: 16 bytes, 6 padded to 8, 4.
pub const TYPE_PORT_MAC_IPV4: (u32, u32) = ((41 << 12) | (9 << 6) | 7, 28);

struct Msg {
    kind: u16,
    flags: u16,
    family: u8,
    attrs: Vec<Attr>,
    what: String,
}

/// nf_tables messages applied as one transaction by [`Batch::commit`].
#[derive(Default)]
pub struct Batch {
    msgs: Vec<Msg>,
    next_set_id: u32,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// What each message does, in `nft` syntax (one line each).
    pub fn lines(&self) -> Vec<String> {
        self.msgs.iter().map(|m| m.what.clone()).collect()
    }

    fn push(&mut self, kind: u16, flags: u16, family: u8, attrs: Vec<Attr>, what: String) {
        self.msgs.push(Msg {
            kind,
            flags,
            family,
            attrs,
            what,
        });
    }

    /// `add table <family> <t>` (nothing if it exists).
    pub fn add_table(&mut self, family: u8, t: &str) {
        let what = format!("add table {} {t}", family_name(family));
        self.push(
            NEWTABLE,
            libc::NLM_F_CREATE as u16,
            family,
            vec![string(1, t)],
            what,
        );
    }

    /// Removes table `t` and all in it, whether or not it exists.
    pub fn delete_table(&mut self, family: u8, t: &str) {
        self.add_table(family, t);
        let what = format!("delete table {} {t}", family_name(family));
        self.push(DELTABLE, 0, family, vec![string(1, t)], what);
    }

    /// `add chain <family> <t> <name> { type … hook … priority …; policy
    /// accept; }`.
    pub fn add_chain(&mut self, family: u8, t: &str, name: &str, hook: Hook) {
        let what = format!(
            "add chain {} {t} {name} {{ type {} hook {} priority {}; policy accept; }}",
            family_name(family),
            hook.kind,
            hook.num,
            hook.priority
        );
        let attrs = vec![
            string(1, t),    // NFTA_CHAIN_TABLE
            string(3, name), // NFTA_CHAIN_NAME
            // NFTA_CHAIN_HOOK { NFTA_HOOK_HOOKNUM, _PRIORITY }
            Attr::Nest(4, vec![be32(1, hook.num), be32(2, hook.priority as u32)]),
            be32(5, libc::NF_ACCEPT as u32), // NFTA_CHAIN_POLICY
            string(7, hook.kind),            // NFTA_CHAIN_TYPE
        ];
        self.push(NEWCHAIN, libc::NLM_F_CREATE as u16, family, attrs, what);
    }

    /// `add rule <family> <t> <chain> <rule>`.
    pub fn add_rule(&mut self, family: u8, t: &str, chain: &str, rule: Rule) {
        let what = format!(
            "add rule {} {t} {chain} {}",
            family_name(family),
            rule.text()
        );
        let attrs = vec![
            string(1, t),              // NFTA_RULE_TABLE
            string(2, chain),          // NFTA_RULE_CHAIN
            Attr::Nest(4, rule.exprs), // NFTA_RULE_EXPRESSIONS
        ];
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16;
        self.push(NEWRULE, flags, family, attrs, what);
    }

    /// `add set <family> <t> <name> { type …; }` with keys of `key_len`
    /// bytes; `host_order` keys (interface names) are marked so for `nft
    /// list`, which otherwise shows them byte-swapped.
    pub fn add_set(&mut self, family: u8, t: &str, name: &str, key: (u32, u32), host_order: bool) {
        let spec = SetSpec {
            key,
            host_order,
            ..SetSpec::default()
        };
        self.add_set_spec(family, t, name, &spec);
    }

    /// `add set` (or `map`) as `spec` says (nothing if it exists).
    pub fn add_set_spec(&mut self, family: u8, t: &str, name: &str, spec: &SetSpec) {
        self.next_set_id += 1;
        let (key_type, key_len) = spec.key;
        let what = format!(
            "add set {} {t} {name} {{ type {key_type} ({key_len} bytes); flags {:#x}; size {}; }}",
            family_name(family),
            spec.flags,
            spec.size.unwrap_or(0)
        );
        let mut flags = spec.flags;
        if spec.counters {
            flags |= SET_OBJECT;
        }
        if !spec.fields.is_empty() {
            flags |= SET_CONCAT;
        }
        let mut attrs = vec![
            string(1, t),               // NFTA_SET_TABLE
            string(2, name),            // NFTA_SET_NAME
            be32(3, flags),             // NFTA_SET_FLAGS
            be32(4, key_type),          // NFTA_SET_KEY_TYPE
            be32(5, key_len),           // NFTA_SET_KEY_LEN
            be32(10, self.next_set_id), // NFTA_SET_ID
        ];
        // NFTA_SET_DESC { NFTA_SET_DESC_SIZE, _CONCAT { { NFTA_SET_FIELD_LEN } … } }
        let mut desc = Vec::new();
        if let Some(n) = spec.size {
            desc.push(be32(1, n));
        }
        if !spec.fields.is_empty() {
            let fields = spec
                .fields
                .iter()
                .map(|len| Attr::Nest(LIST_ELEM, vec![be32(1, *len)]))
                .collect();
            desc.push(Attr::Nest(2, fields));
        }
        if !desc.is_empty() {
            attrs.push(Attr::Nest(9, desc));
        }
        if spec.counters {
            attrs.push(be32(15, OBJECT_COUNTER)); // NFTA_SET_OBJ_TYPE
        }
        if spec.host_order {
            // NFTA_SET_USERDATA: libnftnl's NFTNL_UDATA_SET_KEYBYTEORDER
            // (type 0, length 4) = BYTEORDER_HOST_ENDIAN (1).
            let mut ud = vec![0, 4];
            ud.extend_from_slice(&1u32.to_ne_bytes());
            attrs.push(Attr::Bytes(13, ud));
        }
        self.push(NEWSET, libc::NLM_F_CREATE as u16, family, attrs, what);
    }

    fn elements(&mut self, add: bool, family: u8, t: &str, set: &str, keys: &[(Vec<u8>, String)]) {
        self.elements_timeout(add, family, t, set, keys, None);
    }

    fn elements_timeout(
        &mut self,
        add: bool,
        family: u8,
        t: &str,
        set: &str,
        keys: &[(Vec<u8>, String)],
        timeout_ms: Option<u64>,
    ) {
        let elems: Vec<Element> = keys
            .iter()
            .map(|(key, text)| Element {
                key: key.clone(),
                timeout_ms,
                text: text.clone(),
                ..Element::default()
            })
            .collect();
        self.element_list(add, family, t, set, &elems);
    }

    /// Adds `elems` to `set` (those present stay, if with the same data).
    pub fn add_element_list(&mut self, family: u8, t: &str, set: &str, elems: &[Element]) {
        self.element_list(true, family, t, set, elems);
    }

    /// Removes `elems` (by key, and key end in an interval set) from
    /// `set`; each must be there.
    pub fn remove_element_list(&mut self, family: u8, t: &str, set: &str, elems: &[Element]) {
        self.element_list(false, family, t, set, elems);
    }

    /// The messages adding (`add`) or removing `elems` of `set`.
    fn element_list(&mut self, add: bool, family: u8, t: &str, set: &str, elems: &[Element]) {
        // An attribute's length is 16 bits: at most this many elements
        // (≤ 64 bytes each here) per message.
        const PER_MESSAGE: usize = 512;
        let verb = if add { "add" } else { "delete" };
        for chunk in elems.chunks(PER_MESSAGE) {
            let mut names = Vec::new();
            let mut list = Vec::new();
            for e in chunk {
                let mut a = vec![value(1, &e.key)]; // NFTA_SET_ELEM_KEY
                let mut text = e.text.clone();
                if let Some(end) = &e.key_end {
                    a.push(value(10, end)); // NFTA_SET_ELEM_KEY_END
                }
                if let (true, Some(ms)) = (add, e.timeout_ms) {
                    a.push(be64(4, ms)); // NFTA_SET_ELEM_TIMEOUT
                    text.push_str(&format!(" timeout {ms}ms"));
                }
                if let (true, Some(obj)) = (add, &e.objref) {
                    a.push(string(9, obj)); // NFTA_SET_ELEM_OBJREF
                    text.push_str(&format!(" : \"{obj}\""));
                }
                if names.len() < 3 {
                    names.push(text);
                }
                list.push(Attr::Nest(LIST_ELEM, a));
            }
            if chunk.len() > names.len() {
                names.push(format!("… ({} elements)", chunk.len()));
            }
            let what = format!(
                "{verb} element {} {t} {set} {{ {} }}",
                family_name(family),
                names.join(", ")
            );
            let attrs = vec![
                string(1, t),        // NFTA_SET_ELEM_LIST_TABLE
                string(2, set),      // NFTA_SET_ELEM_LIST_SET
                Attr::Nest(3, list), // NFTA_SET_ELEM_LIST_ELEMENTS
            ];
            let (kind, flags) = if add {
                (NEWSETELEM, libc::NLM_F_CREATE as u16)
            } else {
                (DELSETELEM, 0)
            };
            self.push(kind, flags, family, attrs, what);
        }
    }

    /// `flush chain <family> <t> <name>`: removes its rules.
    pub fn flush_chain(&mut self, family: u8, t: &str, name: &str) {
        let what = format!("flush chain {} {t} {name}", family_name(family));
        let attrs = vec![string(1, t), string(2, name)]; // NFTA_RULE_TABLE, _CHAIN
        self.push(DELRULE, 0, family, attrs, what);
    }

    /// `delete counter <family> <t> <name>`: it must exist, and no rule
    /// may use it any more.
    pub fn remove_counter(&mut self, family: u8, t: &str, name: &str) {
        let what = format!("delete counter {} {t} {name}", family_name(family));
        let attrs = vec![string(1, t), string(2, name), be32(3, OBJECT_COUNTER)];
        self.push(DELOBJ, 0, family, attrs, what);
    }

    /// Adds `keys` (bytes, and their `nft` text) to `set` (those present
    /// stay).
    pub fn add_elements(&mut self, family: u8, t: &str, set: &str, keys: &[(Vec<u8>, String)]) {
        self.elements(true, family, t, set, keys);
    }

    /// Removes `keys` from `set`, whether or not they are in it.
    pub fn delete_elements(&mut self, family: u8, t: &str, set: &str, keys: &[(Vec<u8>, String)]) {
        self.elements(true, family, t, set, keys);
        self.elements(false, family, t, set, keys);
    }

    /// Adds `keys` to `set` (of a [`SET_TIMEOUT`] set) to expire after
    /// `timeout_ms`; keys present get that timeout anew (removed and added
    /// again in this batch).
    pub fn refresh_elements(
        &mut self,
        family: u8,
        t: &str,
        set: &str,
        keys: &[(Vec<u8>, String)],
        timeout_ms: u64,
    ) {
        self.elements(true, family, t, set, keys);
        self.elements(false, family, t, set, keys);
        self.elements_timeout(true, family, t, set, keys, Some(timeout_ms));
    }

    /// `add counter <family> <t> <name>` (a named counter, starting at 0).
    pub fn add_counter(&mut self, family: u8, t: &str, name: &str) {
        let what = format!("add counter {} {t} {name}", family_name(family));
        let attrs = vec![
            string(1, t),                                // NFTA_OBJ_TABLE
            string(2, name),                             // NFTA_OBJ_NAME
            be32(3, OBJECT_COUNTER),                     // NFTA_OBJ_TYPE
            Attr::Nest(4, vec![be64(1, 0), be64(2, 0)]), // NFTA_OBJ_DATA { BYTES, PACKETS }
        ];
        self.push(NEWOBJ, libc::NLM_F_CREATE as u16, family, attrs, what);
    }

    /// Applies the whole batch as one transaction; fails with the first
    /// message the kernel refused (then none applies).
    pub fn commit(self) -> Result<()> {
        if self.msgs.is_empty() {
            return Ok(());
        }
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| fail("netlink socket", e))?;
        sock.bind_auto().map_err(|e| fail("netlink bind", e))?;
        set_timeout(&sock)?;
        // Refusals carry the refused message's header only.
        sock.set_cap_ack(true)
            .map_err(|e| fail("netlink ack option", e))?;
        let mut out = Vec::new();
        let batch = (libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES);
        header(&mut out, NFNL_MSG_BATCH_BEGIN, 0, 0, batch);
        for (i, m) in self.msgs.iter().enumerate() {
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | m.kind;
            let flags = m.flags | libc::NLM_F_ACK as u16;
            let start = header(&mut out, kind, flags, i as u32 + 1, (m.family, 0));
            emit(&m.attrs, &mut out);
            finish(&mut out, start);
        }
        header(&mut out, NFNL_MSG_BATCH_END, 0, 0, batch);
        // The kernel takes a batch no larger than the send buffer: the
        // tables of thousands of spaces outgrow the default.
        set_int_opt(&sock, libc::SO_SNDBUFFORCE, out.len().saturating_mul(2))?;
        sock.send(&out, 0)
            .map_err(|e| fail("nftables transaction", e))?;
        self.acks(&sock)
    }

    /// Reads one answer per message; the first error wins.
    fn acks(&self, sock: &Socket) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = self.msgs.len();
        let mut first: Option<Error> = None;
        while left > 0 {
            let n = sock
                .recv(&mut &mut buf[..], 0)
                .map_err(|e| fail("nftables transaction: waiting for the kernel", e))?;
            let mut at = 0;
            while at + 16 <= n {
                let word = |o: usize| {
                    u32::from_ne_bytes([
                        buf[at + o],
                        buf[at + o + 1],
                        buf[at + o + 2],
                        buf[at + o + 3],
                    ])
                };
                let len = word(0) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let seq = word(8) as usize;
                if len < 16 {
                    break;
                }
                if kind == libc::NLMSG_ERROR as u16 && at + 20 <= n {
                    left = left.saturating_sub(1);
                    let code = word(16) as i32;
                    if code != 0 && first.is_none() {
                        let what = seq
                            .checked_sub(1)
                            .and_then(|i| self.msgs.get(i))
                            .map_or("nftables transaction", |m| m.what.as_str());
                        first = Some(fail(what, std::io::Error::from_raw_os_error(-code)));
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The (packets, bytes) of the named counter `name` in table `t`, or
/// None when the table or counter does not exist. Blocking.
pub fn read_counter(family: u8, t: &str, name: &str) -> Result<Option<(u64, u64)>> {
    let attrs = [string(1, t), string(2, name), be32(3, OBJECT_COUNTER)];
    Ok(
        get_one(GETOBJ, NEWOBJ, family, &attrs, "reading a counter")?
            .and_then(|payload| counter_values(&payload)),
    )
}

/// A set element read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetElement {
    /// Its key's bytes.
    pub key: Vec<u8>,
    /// In an interval set, the end of the range.
    pub key_end: Option<Vec<u8>>,
    /// In a set with timeouts, the milliseconds it has left.
    pub left_ms: Option<u64>,
    /// In an object map, the object's name.
    pub objref: Option<String>,
}

/// A set element to add or remove.
#[derive(Debug, Clone, Default)]
pub struct Element {
    /// Its key's bytes.
    pub key: Vec<u8>,
    /// In an interval set, the end of the range (inclusive).
    pub key_end: Option<Vec<u8>>,
    /// In a set with timeouts, when it expires (adds only).
    pub timeout_ms: Option<u64>,
    /// In an object map, the object it names (adds only).
    pub objref: Option<String>,
    /// The key in `nft` syntax, for logs and errors.
    pub text: String,
}

/// How a set is made ([`Batch::add_set_spec`]).
#[derive(Debug, Clone, Default)]
pub struct SetSpec {
    /// Key type (as `nft` numbers it) and length in bytes.
    pub key: (u32, u32),
    /// Keys in host byte order (interface names), for `nft list`.
    pub host_order: bool,
    /// `NFT_SET_*` flags ([`SET_TIMEOUT`], [`SET_INTERVAL`]).
    pub flags: u32,
    /// Most elements.
    pub size: Option<u32>,
    /// The lengths of a concatenation's fields (an interval set of
    /// concatenations needs them).
    pub fields: Vec<u32>,
    /// A map to named counters.
    pub counters: bool,
}

/// The elements of set `set` in table `t` (at most `cap` of them), or None
/// when the table or set does not exist. Blocking.
pub fn read_set_elements(
    family: u8,
    t: &str,
    set: &str,
    cap: usize,
) -> Result<Option<Vec<SetElement>>> {
    read_set_elements_where(family, t, set, cap, |_| true)
}

/// [`read_set_elements`], keeping only the elements `keep` wants (the
/// others are not held, nor counted in `cap`).
pub fn read_set_elements_where(
    family: u8,
    t: &str,
    set: &str,
    cap: usize,
    keep: impl Fn(&SetElement) -> bool,
) -> Result<Option<Vec<SetElement>>> {
    let mut elems = Vec::new();
    let attrs = [string(1, t), string(2, set)];
    let flags = libc::NLM_F_DUMP as u16;
    let exists = ask(
        (GETSETELEM, NEWSETELEM),
        flags,
        family,
        &attrs,
        "reading a set",
        |p| set_elements(p, &mut elems, cap, &keep),
    )?;
    Ok(exists.then_some(elems))
}

/// Appends to `out` (up to `cap`) the elements of an `NFTA_SET_ELEM_LIST_*`
/// attribute list that `keep` wants; an element without a key is skipped.
fn set_elements(
    msg: &[u8],
    out: &mut Vec<SetElement>,
    cap: usize,
    keep: &impl Fn(&SetElement) -> bool,
) {
    let lists = attrs(msg).filter(|(t, _)| *t == 3); // NFTA_SET_ELEM_LIST_ELEMENTS
    for (_, list) in lists {
        for (_, elem) in attrs(list).filter(|(t, _)| *t == LIST_ELEM) {
            let mut el = SetElement::default();
            let mut has_key = false;
            for (t, d) in attrs(elem) {
                match t {
                    // NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }
                    1 | 10 => {
                        let v = attrs(d)
                            .find(|(v, _)| *v == DATA_VALUE)
                            .map(|(_, v)| v.to_vec());
                        if t == 1 {
                            has_key = v.is_some();
                            el.key = v.unwrap_or_default();
                        } else {
                            el.key_end = v;
                        }
                    }
                    // NFTA_SET_ELEM_EXPIRATION (ms, big-endian)
                    5 => el.left_ms = <[u8; 8]>::try_from(d).ok().map(u64::from_be_bytes),
                    // NFTA_SET_ELEM_OBJREF
                    9 => {
                        let name = d.strip_suffix(&[0]).unwrap_or(d);
                        el.objref = String::from_utf8(name.to_vec()).ok();
                    }
                    _ => {}
                }
            }
            if has_key && out.len() < cap && keep(&el) {
                out.push(el);
            }
        }
    }
}

/// Whether table `t` of `family` exists (a lookup: no transaction, so no
/// wait for the kernel's RCU grace period as a deletion has).
pub fn table_exists(family: u8, t: &str) -> Result<bool> {
    Ok(get_one(
        GETTABLE,
        NEWTABLE,
        family,
        &[string(1, t)],
        "looking up a table",
    )?
    .is_some())
}

/// Asks the kernel for one object (`get` with `attrs`); the payload after
/// the nfgen header of its `answer` message, or None when it does not
/// exist.
fn get_one(
    get: u16,
    answer: u16,
    family: u8,
    attrs: &[Attr],
    what: &str,
) -> Result<Option<Vec<u8>>> {
    let mut found = None;
    let flags = libc::NLM_F_ACK as u16;
    let exists = ask((get, answer), flags, family, attrs, what, |p| {
        found = Some(p.to_vec())
    })?;
    Ok(found.filter(|_| exists))
}

/// Sends one request (`kinds.0` with `flags` and `attrs`) and hands the
/// payload (after the nfgen header) of each answer of kind `kinds.1` to
/// `each`, until the kernel acknowledges or ends the dump; false when what
/// was asked for does not exist.
fn ask(
    (get, answer): (u16, u16),
    flags: u16,
    family: u8,
    attrs: &[Attr],
    what: &str,
    mut each: impl FnMut(&[u8]),
) -> Result<bool> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| fail("netlink socket", e))?;
    sock.bind_auto().map_err(|e| fail("netlink bind", e))?;
    set_timeout(&sock)?;
    let mut out = Vec::new();
    let start = header(
        &mut out,
        (NFNL_SUBSYS_NFTABLES << 8) | get,
        flags,
        1,
        (family, 0),
    );
    emit(attrs, &mut out);
    finish(&mut out, start);
    sock.send(&out, 0).map_err(|e| fail(what, e))?;
    let answer = (NFNL_SUBSYS_NFTABLES << 8) | answer;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0).map_err(|e| fail(what, e))?;
        if n == 0 {
            return Err(fail(what, "the kernel closed the socket"));
        }
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if len < 16 || at + len > n {
                return Err(fail(what, "truncated answer"));
            }
            let msg = &buf[at..at + len];
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(true);
            }
            if kind == libc::NLMSG_ERROR as u16 && len >= 20 {
                let code = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
                return match code {
                    0 => Ok(true),
                    c if -c == libc::ENOENT => Ok(false),
                    c => Err(fail(what, std::io::Error::from_raw_os_error(-c))),
                };
            }
            if kind == answer && len > 20 {
                each(&msg[20..]);
            }
            at += len.next_multiple_of(4);
        }
    }
}

/// Walks attributes: `(type without flags, payload)`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let t = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((t, data))
    })
}

/// (packets, bytes) of an `NFTA_OBJ_*` attribute list.
fn counter_values(msg: &[u8]) -> Option<(u64, u64)> {
    let (_, data) = attrs(msg).find(|(t, _)| *t == 4)?; // NFTA_OBJ_DATA
    let be = |d: &[u8]| <[u8; 8]>::try_from(d).ok().map(u64::from_be_bytes);
    let (mut packets, mut bytes) = (None, None);
    for (t, d) in attrs(data) {
        match t {
            1 => bytes = be(d),   // NFTA_COUNTER_BYTES
            2 => packets = be(d), // NFTA_COUNTER_PACKETS
            _ => {}
        }
    }
    Some((packets?, bytes?))
}

fn fail(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Network(format!("{what}: {e}"))
}

fn family_name(f: u8) -> &'static str {
    match f {
        IP => "ip",
        INET => "inet",
        BRIDGE => "bridge",
        _ => "?",
    }
}

/// Appends a netlink header and `nfgenmsg` (`family`, `res_id`); returns
/// where the message starts (see [`finish`]).
fn header(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, (family, res): (u8, u16)) -> usize {
    let start = out.len();
    out.extend_from_slice(&20u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]); // NFNETLINK_V0
    out.extend_from_slice(&res.to_be_bytes());
    start
}

/// Writes the length of the message that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn set_int_opt(sock: &Socket, opt: libc::c_int, value: usize) -> Result<()> {
    let v = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with an int option and its size, on our socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(fail(
            "netlink socket option",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A kernel that never answers must not hang the caller.
pub(super) fn set_timeout(sock: &Socket) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: 10,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval option and its size, on our socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(fail("netlink timeout", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut out = Vec::new();
        emit(&[Attr::Nest(4, vec![string(1, "ab")])], &mut out);
        // Inner: 4 + "ab\0" = 7, padded to 8; outer: 4 + 8.
        assert_eq!(out.len(), 12);
        assert_eq!(u16::from_ne_bytes([out[0], out[1]]), 12);
        assert_eq!(u16::from_ne_bytes([out[2], out[3]]), 4 | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), 7);
        assert_eq!(&out[8..11], b"ab\0");
    }

    #[test]
    fn set_elements_are_read_with_their_time_left_ends_objects_and_capped() {
        let elem = |key: &[u8], left: Option<u64>| {
            let mut a = vec![Attr::Nest(1, vec![Attr::Bytes(DATA_VALUE, key.to_vec())])];
            match left {
                Some(ms) => a.push(be64(5, ms)),
                // An object map's element, and a range's end.
                None => {
                    a.push(string(9, "cs0123456789ab_dropped"));
                    a.push(Attr::Nest(
                        10,
                        vec![Attr::Bytes(DATA_VALUE, vec![10, 0, 0, 9])],
                    ));
                }
            }
            Attr::Nest(LIST_ELEM, a)
        };
        let mut msg = Vec::new();
        emit(
            &[
                string(1, "t"),
                string(2, "allowed"),
                Attr::Nest(
                    3,
                    vec![
                        elem(&[10, 0, 0, 1], Some(59_000)),
                        Attr::Nest(LIST_ELEM, vec![be64(5, 1)]), // no key
                        elem(&[10, 0, 0, 2], None),
                        elem(&[10, 0, 0, 3], Some(5)),
                    ],
                ),
            ],
            &mut msg,
        );
        let mut out = Vec::new();
        set_elements(&msg, &mut out, 2, &|_| true);
        assert_eq!(
            out,
            [
                SetElement {
                    key: vec![10, 0, 0, 1],
                    left_ms: Some(59_000),
                    ..SetElement::default()
                },
                SetElement {
                    key: vec![10, 0, 0, 2],
                    key_end: Some(vec![10, 0, 0, 9]),
                    objref: Some("cs0123456789ab_dropped".into()),
                    ..SetElement::default()
                }
            ]
        );
        // Garbage (a length past the end) reads as nothing.
        let mut out = Vec::new();
        set_elements(&[0xff, 0xff, 3, 0, 1, 2], &mut out, 10, &|_| true);
        assert!(out.is_empty());
        // Only what is wanted is kept (and counted).
        set_elements(&msg, &mut out, 1, &|e| e.key[3] == 3);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].left_ms, Some(5));
    }

    #[test]
    fn rules_read_as_nft_syntax() {
        let r = Rule::new()
            .iifname("br0", true)
            .ip_daddr((std::net::Ipv4Addr::new(10, 0, 0, 0), 8))
            .drop();
        assert_eq!(r.text(), "iifname \"br0\" ip daddr 10.0.0.0/8 drop");
        let mut b = Batch::new();
        b.delete_table(INET, "t");
        b.add_rule(INET, "t", "forward", r);
        assert_eq!(
            b.lines(),
            [
                "add table inet t",
                "delete table inet t",
                "add rule inet t forward iifname \"br0\" ip daddr 10.0.0.0/8 drop"
            ]
        );
        assert_eq!(ifname_key("cs1").len(), 16);
    }
}
