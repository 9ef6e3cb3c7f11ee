//! One space's own links: a named network namespace
//! (`/var/run/netns/cs-<12 hex of its id>`) holding `eth0`, the peer of a
//! veth whose host end (`cs<12 hex>`) is an isolated port of our bridge.
//! Names derive from the space id only, so leftovers of any space can be
//! found and removed from its id alone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::cmd::{ip_batch, link_dir, link_exists};
use super::config::NetworkConfig;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// The namespace name of space `id`.
pub fn netns_name(id: &str) -> String {
    format!("cs-{}", short(id))
}

/// The host end of the veth of space `id` (≤ 15 characters).
pub fn host_link(id: &str) -> String {
    format!("cs{}", short(id))
}

/// The namespace file the space's spec joins.
pub fn netns_path(id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns_name(id))
}

/// Whether the namespace and the host end of the veth both exist.
pub fn exists(id: &str) -> bool {
    netns_path(id).exists() && link_exists(&host_link(id))
}

/// Whether the host end is a port of `bridge`.
pub fn attached(id: &str, bridge: &str) -> bool {
    std::fs::read_link(link_dir(&host_link(id)).join("master"))
        .is_ok_and(|m| m.file_name().is_some_and(|n| n == bridge))
}

fn attach_lines(id: &str, bridge: &str) -> [String; 2] {
    let link = host_link(id);
    [
        format!("link set {link} master {bridge} up"),
        // Isolated ports reach the bridge (gateway) but not each other.
        format!("link set {link} type bridge_slave isolated on"),
    ]
}

/// Makes the namespace and veth of space `id` with address `addr`, the MAC
/// derived from it, and a default route via the gateway: one `ip -batch`
/// process for the host side, the inside in-process ([`super::inside`]).
pub fn create(id: &str, cfg: &NetworkConfig, addr: Ipv4Addr) -> Result<()> {
    let ns = netns_name(id);
    let mut host = vec![
        format!("netns add {ns}"),
        format!(
            "link add {} type veth peer name eth0 netns {ns}",
            host_link(id)
        ),
    ];
    host.extend(attach_lines(id, &cfg.bridge));
    ip_batch(&host)?;
    let mac = super::binding::mac_of(addr);
    super::inside::setup(&netns_path(id), mac, addr, cfg.subnet, cfg.gateway())
}

/// Puts the host ends of `ids` back on `bridge` (after it was re-created).
pub fn attach(ids: &[&str], bridge: &str) -> Result<()> {
    let lines: Vec<String> = ids
        .iter()
        .filter(|id| link_exists(&host_link(id)))
        .flat_map(|id| attach_lines(id, bridge))
        .collect();
    ip_batch(&lines)
}

/// Removes the namespace and the veth of space `id`, whichever exist.
/// The namespace goes as `ip netns del` does it, in-process: detach the
/// bind mount that keeps it, remove the file. The veth goes with it, in the
/// kernel's namespace cleanup, moments later: that spares destroy the
/// ~20 ms a synchronous `ip link del` of a veth waits.
pub fn remove(id: &str) -> Result<()> {
    let path = netns_path(id);
    if path.exists() {
        // Not mounted (a leftover file): only the unlink matters.
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_file(&path)
            .map_err(|e| Error::Network(format!("remove {}: {e}", path.display())))
    } else if link_exists(&host_link(id)) {
        ip_batch(&[format!("link del {}", host_link(id))])
    } else {
        Ok(())
    }
}

/// Deletes the veth of space `id` (which takes its inside end, and so the
/// network of processes still running in the namespace) and the
/// namespace's name.
pub fn cut(id: &str) -> Result<()> {
    if link_exists(&host_link(id)) {
        ip_batch(&[format!("link del {}", host_link(id))])?;
    }
    remove(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(host_link(&id), "cs0123456789ab");
        assert!(host_link(&id).len() <= 15);
        assert_eq!(
            netns_path(&id),
            PathBuf::from("/var/run/netns/cs-0123456789ab")
        );
    }
}
