//! Each port of our bridge bound to its space's MAC and IPv4 address, so
//! that a space with CAP_NET_RAW (a root space, a GPU space) can neither
//! move the host's neighbour entry of another space's address to itself nor
//! send from an address or MAC that is not its own.
//!
//! A table of family `bridge`, named after the bridge like the `inet` one
//! and written in the same `nft -f` transaction, has the set of our ports
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

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::netns::host_link;

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

/// The `ports` and `bindings` elements of space `id` holding `addr`.
fn elements(id: &str, addr: Ipv4Addr) -> (String, String) {
    let port = format!("\"{}\"", host_link(id));
    let binding = format!("{port} . {} . {addr}", mac_str(mac_of(addr)));
    (port, binding)
}

/// The bridge-family table `t` with `ports` bound (for a whole-table
/// script; the caller deletes the old table in the same transaction).
pub fn table(t: &str, ports: &[Port]) -> String {
    let (names, bindings): (Vec<String>, Vec<String>) =
        ports.iter().map(|(id, a)| elements(id, *a)).unzip();
    let elems = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", v.join(", "))
        }
    };
    format!(
        "table bridge {t} {{\n\
         \x20 set ports {{ type ifname;{names} }}\n\
         \x20 set bindings {{ type ifname . ether_addr . ipv4_addr;{bindings} }}\n\
         \x20 chain prerouting {{\n\
         \x20   type filter hook prerouting priority filter; policy accept;\n\
         \x20   iifname != @ports accept\n\
         \x20   iifname . ether saddr . ip saddr @bindings accept\n\
         \x20   iifname . ether saddr . arp saddr ip @bindings \
         iifname . arp saddr ether . arp saddr ip @bindings accept\n\
         \x20   drop\n\
         \x20 }}\n\
         }}\n",
        names = elems(&names),
        bindings = elems(&bindings),
    )
}

/// The script that removes table `t` (and succeeds when it is absent).
pub fn delete(t: &str) -> String {
    format!("table bridge {t} {{}}\ndelete table bridge {t}\n")
}

/// One transaction on table `t`: unbinds `gone` (spaces destroyed since
/// the last call; adding first makes the delete succeed whether or not the
/// elements are still there), then binds `new`.
pub fn update(t: &str, gone: &[Port], new: &[Port]) -> String {
    let mut s = String::new();
    for (id, addr) in gone {
        let (port, binding) = elements(id, *addr);
        for verb in ["add", "delete"] {
            let _ = writeln!(s, "{verb} element bridge {t} bindings {{ {binding} }}");
            let _ = writeln!(s, "{verb} element bridge {t} ports {{ {port} }}");
        }
    }
    for (id, addr) in new {
        let (port, binding) = elements(id, *addr);
        let _ = writeln!(s, "add element bridge {t} ports {{ {port} }}");
        let _ = writeln!(s, "add element bridge {t} bindings {{ {binding} }}");
    }
    s
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
        let t = table("clawdspace0", &[(ID, a)]);
        assert!(t.starts_with("table bridge clawdspace0 {\n"));
        assert!(t.contains("elements = { \"cs0123456789ab\" };"));
        assert!(t.contains("elements = { \"cs0123456789ab\" . 02:63:0a:58:00:02 . 10.88.0.2 };"));
        // Other bridges' ports pass; ours only with their own addresses.
        let chain = &t[t.find("chain prerouting").expect("chain")..];
        assert!(chain.find("!= @ports accept") < chain.find("@bindings"));
        assert!(chain.trim_end().ends_with("drop\n  }\n}"));
        let empty = table("b", &[]);
        assert!(!empty.contains("elements"), "{empty}");
    }

    #[test]
    fn updates_unbind_first_and_tolerate_missing_elements() {
        let (a, b) = (Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3));
        let u = update("br", &[(ID, a)], &[("fedcba9876543210", b)]);
        let lines: Vec<&str> = u.lines().collect();
        assert_eq!(lines.len(), 6, "{u}");
        assert!(lines[0].starts_with("add element bridge br bindings"));
        assert!(lines[2].starts_with("delete element bridge br bindings"));
        assert!(lines[5].contains("\"csfedcba987654\" . 02:63:0a:58:00:03 . 10.88.0.3"));
        assert!(update("br", &[], &[]).is_empty());
    }
}
