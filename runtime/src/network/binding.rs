//! Each port of our bridge bound to its space's MAC and IPv4 address, so
//! that a space with CAP_NET_RAW (a root space, a GPU space) can neither
//! move the host's neighbour entry of another space's address to itself nor
//! send from an address or MAC that is not its own.
//!
//! A table of family `bridge`, named after the bridge like the `inet` one
//! and written in the same nf_tables transaction, has the set of our ports
//! and the set of (port, MAC, IPv4) bindings. A frame that enters the bridge
//! from one of our ports passes only as IPv4 from the port's own MAC and
//! address, or as ARP whose frame source, sender MAC and sender address are
//! the port's own. Everything else a space sends (another source MAC, ARP
//! claiming another address, IPv4 from another address, IPv6, VLAN tags,
//! other ethertypes) is dropped at `prerouting`, before the bridge learns
//! the source or delivers it. Ports of other bridges (other runtimes,
//! Docker's) are not in the set and are left alone (the kernel may lack
//! `meta ibrname`, so the port name is what tells ours apart).
//!
//! A space's MAC derives from its address ([`mac_of`]) and is set on its
//! `eth0` at setup, so it is the same after a daemon restart or a reboot.

use std::net::Ipv4Addr;

use super::netns::host_link;
use super::nfnl::{self, Batch, Hook, Rule, BRIDGE};

/// A space's port and address, as bound.
pub type Port<'a> = (&'a str, Ipv4Addr);

/// The MAC of the space holding `addr`: locally administered, unicast,
/// `02:63` then the four bytes of the address.
pub fn mac_of(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x63, a, b, c, d]
}

/// `mac` as `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(mac: [u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

/// A set element: its key bytes and its `nft` text.
type Element = (Vec<u8>, String);

/// The `ports` and `bindings` elements of space `id` holding `addr`.
fn elements(id: &str, addr: Ipv4Addr) -> (Element, Element) {
    let name = host_link(id);
    let mac = mac_of(addr);
    let port = (nfnl::ifname_key(&name), format!("\"{name}\""));
    // ifname (16 bytes) . ether_addr (6, padded to 8) . ipv4_addr (4).
    let mut key = nfnl::ifname_key(&name);
    key.extend_from_slice(&mac);
    key.extend_from_slice(&[0, 0]);
    key.extend_from_slice(&addr.octets());
    let binding = (key, format!("\"{name}\" . {} . {addr}", mac_str(mac)));
    (port, binding)
}

fn all(ports: &[Port]) -> (Vec<Element>, Vec<Element>) {
    ports.iter().map(|(id, a)| elements(id, *a)).unzip()
}

/// Adds the bridge-family table `t` with `ports` bound to `b` (the caller
/// deletes the old table in the same transaction).
pub fn table(b: &mut Batch, t: &str, ports: &[Port]) {
    b.add_table(BRIDGE, t);
    b.add_set(BRIDGE, t, "ports", nfnl::TYPE_IFNAME, true);
    b.add_set(BRIDGE, t, "bindings", nfnl::TYPE_PORT_MAC_IPV4, false);
    let (names, bindings) = all(ports);
    b.add_elements(BRIDGE, t, "ports", &names);
    b.add_elements(BRIDGE, t, "bindings", &bindings);
    let hook = Hook {
        num: libc::NF_BR_PRE_ROUTING as u32,
        priority: libc::NF_BR_PRI_FILTER_BRIDGED,
        kind: "filter",
    };
    b.add_chain(BRIDGE, t, "prerouting", hook);
    let rules = [
        Rule::new().iifname_not_in("ports").accept(),
        Rule::new()
            .ether_type(libc::ETH_P_IP as u16)
            .port_bound(
                "bindings",
                nfnl::ETHER_SADDR,
                nfnl::IP_SADDR,
                "ether saddr . ip saddr",
            )
            .accept(),
        Rule::new()
            .ether_type(libc::ETH_P_ARP as u16)
            .port_bound(
                "bindings",
                nfnl::ETHER_SADDR,
                nfnl::ARP_SPA,
                "ether saddr . arp saddr ip",
            )
            .port_bound(
                "bindings",
                nfnl::ARP_SHA,
                nfnl::ARP_SPA,
                "arp saddr ether . arp saddr ip",
            )
            .accept(),
        Rule::new().drop(),
    ];
    for r in rules {
        b.add_rule(BRIDGE, t, "prerouting", r);
    }
}

/// One transaction on table `t`: unbinds `gone` (spaces destroyed since
/// the last call; whether or not their elements are still there), then
/// binds `new`.
pub fn update(t: &str, gone: &[Port], new: &[Port]) -> Batch {
    let mut b = Batch::new();
    let (names, bindings) = all(gone);
    b.delete_elements(BRIDGE, t, "bindings", &bindings);
    b.delete_elements(BRIDGE, t, "ports", &names);
    let (names, bindings) = all(new);
    b.add_elements(BRIDGE, t, "ports", &names);
    b.add_elements(BRIDGE, t, "bindings", &bindings);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123";

    #[test]
    fn the_mac_derives_from_the_address() {
        let mac = mac_of(Ipv4Addr::new(10, 88, 1, 2));
        assert_eq!(mac_str(mac), "02:63:0a:58:01:02");
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered unicast");
    }

    #[test]
    fn the_table_binds_ports_to_their_mac_and_address() {
        let a = Ipv4Addr::new(10, 88, 0, 2);
        let mut b = Batch::new();
        table(&mut b, "clawdspace0", &[(ID, a)]);
        let t = b.lines().join("\n");
        assert!(t.starts_with("add table bridge clawdspace0\n"));
        assert!(t.contains("add element bridge clawdspace0 ports { \"cs0123456789ab\" }"));
        assert!(t.contains("bindings { \"cs0123456789ab\" . 02:63:0a:58:00:02 . 10.88.0.2 }"));
        // Other bridges' ports pass; ours only with their own addresses.
        let chain = &t[t.find("add rule").expect("rules")..];
        assert!(chain.find("!= @ports accept") < chain.find("@bindings"));
        assert!(chain.ends_with("prerouting drop"));
        let (_, binding) = elements(ID, a);
        assert_eq!(binding.0.len(), 28, "ifname . ether_addr . ipv4_addr");
        let mut empty = Batch::new();
        table(&mut empty, "b", &[]);
        assert!(!empty.lines().join("\n").contains("element"));
    }

    #[test]
    fn updates_unbind_first_and_tolerate_missing_elements() {
        let (a, b) = (Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3));
        let lines = update("br", &[(ID, a)], &[("fedcba9876543210", b)]).lines();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines[0].starts_with("add element bridge br bindings"));
        assert!(lines[1].starts_with("delete element bridge br bindings"));
        assert!(lines[5].contains("\"csfedcba987654\" . 02:63:0a:58:00:03 . 10.88.0.3"));
        assert!(update("br", &[], &[]).is_empty());
    }
}
