//! The host side shared by all networked spaces of a runtime: the bridge
//! (with the gateway address), our nftables tables and IPv4 forwarding.
//! Brought up with the first networked space, removed with the last one.
//! What is up is recorded in `<state>/network.json`, so that a later start
//! or a purge removes exactly what we added.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

use super::binding::Port;
use super::config::{Ipv4Net, NetworkConfig};
use super::host::{link_exists, sysctl};
use super::rtnl::Rtnl;
use super::{forward, nft as rules};

/// What a runtime added to the host's network (`<state>/network.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    /// Our bridge.
    pub bridge: String,
    /// Our nftables tables (families `inet` and `bridge`).
    pub table: String,
    /// The subnet on the bridge.
    pub subnet: String,
}

/// The record file in a state dir.
pub fn record_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("network.json")
}

/// Reads the record, if any.
pub fn read_record(state_dir: &Path) -> Option<HostRecord> {
    let data = fs::read(record_path(state_dir)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// IPv4 routes of the main table that are not on `bridge` (`/proc/net/route`).
fn other_routes(bridge: &str) -> Vec<(String, Ipv4Net)> {
    let text = fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints the big-endian words as native integers.
            let net = Ipv4Net {
                addr: Ipv4Addr::from(u32::from_be(dest)),
                prefix: mask.count_ones() as u8,
            };
            (f[0] != bridge && net.prefix > 0).then(|| (f[0].to_string(), net))
        })
        .collect()
}

/// Brings the bridge, the tables and forwarding up (idempotent; the tables
/// are replaced atomically, so a changed configuration applies), with
/// `ports` bound to their addresses, `lan` the addresses of `lan`
/// spaces and `published` ports forwarded.
pub fn up(
    cfg: &NetworkConfig,
    resolvers: &[Ipv4Addr],
    ports: &[Port],
    lan: &[Ipv4Addr],
    published: &[rules::Published],
    state_dir: &Path,
) -> Result<()> {
    let br = &cfg.bridge;
    let ours = match read_record(state_dir) {
        Some(r) if &r.bridge != br => {
            // CLAWDSPACE_BRIDGE changed: the old bridge and table go first.
            down(state_dir)?;
            false
        }
        r => r.is_some(),
    };
    if link_exists(br) && !ours {
        return Err(Error::Network(format!(
            "interface {br} exists and was not created by this runtime; \
             choose another CLAWDSPACE_BRIDGE"
        )));
    }
    if let Some((dev, net)) = other_routes(br)
        .into_iter()
        .find(|(_, n)| n.overlaps(&cfg.subnet))
    {
        return Err(Error::Network(format!(
            "subnet {} overlaps route {net} on {dev}; choose another CLAWDSPACE_SUBNET",
            cfg.subnet
        )));
    }
    let rec = HostRecord {
        bridge: br.clone(),
        table: cfg.table().to_string(),
        subnet: cfg.subnet.to_string(),
    };
    let data = serde_json::to_vec(&rec).map_err(|e| Error::State(e.to_string()))?;
    write_atomic(&record_path(state_dir), &data, true)?;
    let mac = super::binding::mac_of(cfg.gateway());
    if !link_exists(br) {
        Rtnl::open()?.add_bridge(br, mac, cfg.gateway(), cfg.subnet.prefix)?;
        // Spaces are IPv4-only; no link-local IPv6 on our bridge either.
        sysctl(&format!("ipv6/conf/{br}/disable_ipv6"), "1")?;
    } else if !mac_is_set(br) {
        // Made by a runtime that let the kernel pick (and change) it.
        Rtnl::open()?.set_mac(br, mac)?;
    }
    rules::ruleset(cfg, resolvers, ports, lan, published).commit()?;
    forward::acquire(br)
}

/// Whether the MAC of link `name` was set by hand (`addr_assign_type`
/// `NET_ADDR_SET`), so the kernel keeps it.
fn mac_is_set(name: &str) -> bool {
    std::fs::read_to_string(super::host::link_dir(name).join("addr_assign_type"))
        .is_ok_and(|t| t.trim() == "3")
}

/// Removes what [`up`] added, as recorded in `state_dir` (nothing if no
/// record). Best effort: every step is tried; the first error is returned.
pub fn down(state_dir: &Path) -> Result<()> {
    let Some(rec) = read_record(state_dir) else {
        return Ok(());
    };
    let mut first = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!("removing network: {e}");
            first.get_or_insert(e);
        }
    };
    note(forward::release(&rec.bridge));
    note(rules::delete(&rec.table).commit());
    if link_exists(&rec.bridge) {
        note(Rtnl::open().and_then(|mut nl| nl.del_link(&rec.bridge)));
    }
    if first.is_none() {
        let _ = fs::remove_file(record_path(state_dir));
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_proc() {
        // No default route is reported, and routes read back as networks.
        let routes = other_routes("none");
        assert!(routes.iter().all(|(_, n)| n.prefix > 0));
        assert!(routes
            .iter()
            .all(|(_, n)| u32::from(n.addr) & !n.mask() == 0));
    }
}
