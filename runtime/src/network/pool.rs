//! The address pool: which addresses of the subnet spaces hold. Built from
//! the records at startup; an address is taken on create and released on
//! destroy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::config::Ipv4Net;

/// Addresses in use, by the space id holding them.
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    held: BTreeMap<Ipv4Addr, String>,
    /// Held addresses of spaces in mode `lan`.
    lan: BTreeSet<Ipv4Addr>,
    /// Ids holding an address for a namespace made ahead of a create
    /// (see [`super::Network::fill_spares`]), ready, oldest first.
    spares: Vec<String>,
    /// Spare ids whose namespace is being made, each with the id of the
    /// thread making it (a create that waits for one raises its priority).
    pending: Vec<(String, i32)>,
}

impl Pool {
    /// An empty pool over `subnet` (its first address is the gateway's).
    pub fn new(subnet: Ipv4Net) -> Self {
        Pool {
            subnet,
            held: BTreeMap::new(),
            lan: BTreeSet::new(),
            spares: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Records that `id` holds `addr` (a restored space).
    pub fn hold(&mut self, addr: Ipv4Addr, id: &str) {
        self.held.insert(addr, id.to_string());
    }

    /// The lowest free address for `id` (the same one if it holds one);
    /// None when the subnet is full.
    pub fn allocate(&mut self, id: &str) -> Option<Ipv4Addr> {
        if let Some(a) = self.address_of(id) {
            return Some(a);
        }
        // Skip the network, gateway (.1) and broadcast addresses.
        let last = u32::try_from(self.subnet.size() - 2).unwrap_or(u32::MAX);
        let addr = (2..=last)
            .map(|n| self.subnet.nth(n))
            .find(|a| !self.held.contains_key(a))?;
        self.held.insert(addr, id.to_string());
        Some(addr)
    }

    /// The address `id` holds.
    pub fn address_of(&self, id: &str) -> Option<Ipv4Addr> {
        self.held.iter().find(|(_, i)| *i == id).map(|(a, _)| *a)
    }

    /// Takes the lowest free address for spare `id`, whose namespace
    /// thread `maker` then makes ([`Pool::ready`] once it is); None when
    /// the subnet is full.
    pub fn add_spare(&mut self, id: &str, maker: i32) -> Option<Ipv4Addr> {
        let a = self.allocate(id)?;
        self.pending.push((id.to_string(), maker));
        Some(a)
    }

    /// Spare `id` is made: it can be taken. False when it no longer holds
    /// its address (released meanwhile).
    pub fn ready(&mut self, id: &str) -> bool {
        let Some(i) = self.pending.iter().position(|(p, _)| p == id) else {
            return false;
        };
        self.pending.remove(i);
        self.spares.push(id.to_string());
        true
    }

    /// Hands the oldest spare (its id and address) to a space.
    pub fn take_spare(&mut self) -> Option<(String, Ipv4Addr)> {
        if self.spares.is_empty() {
            return None;
        }
        let id = self.spares.remove(0);
        let a = self.address_of(&id)?;
        Some((id, a))
    }

    /// Ids of the spares ready to be taken.
    pub fn spares(&self) -> &[String] {
        &self.spares
    }

    /// The spares whose namespace is being made: ids and maker threads.
    pub fn pending_spares(&self) -> &[(String, i32)] {
        &self.pending
    }

    /// Whether spare `id`'s namespace is being made.
    pub fn is_pending(&self, id: &str) -> bool {
        self.pending.iter().any(|(p, _)| p == id)
    }

    /// Ids of every spare, ready or being made.
    pub fn spare_ids(&self) -> Vec<String> {
        let pending = self.pending.iter().map(|(id, _)| id);
        self.spares.iter().chain(pending).cloned().collect()
    }

    /// How many spaces (spares left out) hold an address.
    pub fn spaces(&self) -> usize {
        self.held
            .len()
            .saturating_sub(self.spares.len() + self.pending.len())
    }

    /// Frees whatever `id` holds; returns whether it held something.
    pub fn release(&mut self, id: &str) -> bool {
        self.spares.retain(|s| s != id);
        self.pending.retain(|(s, _)| s != id);
        let before = self.held.len();
        let lan = &mut self.lan;
        self.held.retain(|a, i| {
            let keep = i != id;
            if !keep {
                lan.remove(a);
            }
            keep
        });
        self.held.len() != before
    }

    /// Marks held address `addr` as one of a `lan` space (or not).
    pub fn set_lan(&mut self, addr: Ipv4Addr, lan: bool) {
        if lan && self.held.contains_key(&addr) {
            self.lan.insert(addr);
        } else {
            self.lan.remove(&addr);
        }
    }

    /// Whether `addr` is held by a `lan` space.
    pub fn is_lan(&self, addr: Ipv4Addr) -> bool {
        self.lan.contains(&addr)
    }

    /// The addresses of `lan` spaces.
    pub fn lan(&self) -> Vec<Ipv4Addr> {
        self.lan.iter().copied().collect()
    }

    /// Whether no space holds an address (spares may).
    pub fn is_empty(&self) -> bool {
        self.spaces() == 0
    }

    /// Every held address and its space (or spare) id.
    pub fn held(&self) -> &BTreeMap<Ipv4Addr, String> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_address_skipping_gateway_and_broadcast() {
        let mut p = Pool::new("10.9.0.0/29".parse().expect("net"));
        let got: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| p.allocate(id).expect("free"))
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(got[4], Ipv4Addr::new(10, 9, 0, 6));
        assert_eq!(p.allocate("f"), None, ".7 is the broadcast address");
        assert_eq!(p.allocate("c"), Some(got[2]), "same id, same address");
        assert!(p.release("b"));
        assert!(!p.release("b"));
        assert_eq!(p.allocate("g"), Some(Ipv4Addr::new(10, 9, 0, 3)));
        p.hold(Ipv4Addr::new(10, 9, 0, 9), "x");
        assert_eq!(p.address_of("x"), Some(Ipv4Addr::new(10, 9, 0, 9)));
        p.set_lan(Ipv4Addr::new(10, 9, 0, 9), true);
        p.set_lan(Ipv4Addr::new(10, 9, 0, 99), true);
        assert_eq!(p.lan(), [Ipv4Addr::new(10, 9, 0, 9)], "held addresses only");
        assert!(p.release("x"));
        assert!(p.lan().is_empty());
    }

    #[test]
    fn spares_hold_addresses_but_not_the_network_up() {
        let mut p = Pool::new("10.9.0.0/29".parse().expect("net"));
        assert_eq!(p.add_spare("s1", 7), Some(Ipv4Addr::new(10, 9, 0, 2)));
        assert!(p.is_empty(), "a spare is not a space");
        assert_eq!(p.take_spare(), None, "not made yet");
        assert!(p.ready("s1"));
        assert_eq!(p.allocate("a"), Some(Ipv4Addr::new(10, 9, 0, 3)));
        assert_eq!(p.add_spare("s2", 7), Some(Ipv4Addr::new(10, 9, 0, 4)));
        assert_eq!(p.spare_ids(), ["s1", "s2"]);
        assert!(p.ready("s2"));
        assert_eq!((p.spaces(), p.spares().len()), (1, 2));
        // Oldest first; a taken spare is a space holding its address.
        assert_eq!(
            p.take_spare(),
            Some(("s1".into(), Ipv4Addr::new(10, 9, 0, 2)))
        );
        assert_eq!(p.allocate("s1"), Some(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!((p.spaces(), p.spares().len()), (2, 1));
        assert!(p.release("s2"));
        assert_eq!(p.take_spare(), None);
        p.add_spare("s4", 7).expect("free");
        assert!(p.release("s4"));
        assert!(!p.ready("s4"), "released while being made");
        assert!(p.spare_ids().is_empty());
        for id in ["b", "c", "d"] {
            p.allocate(id).expect("free");
        }
        assert_eq!(p.add_spare("s3", 7), None, "full");
        assert!(p.spares().is_empty(), "a spare that got no address is none");
    }
}
