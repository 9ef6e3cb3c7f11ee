//! One space's own links: a named network namespace
//! (`/var/run/netns/cs-<12 hex of its id>`) holding `eth0`, the peer of a
//! veth whose host end (`cs<12 hex>`) is an isolated port of our bridge.
//! Made in-process: no `ip` program is needed.
//! Names derive from the space id only, so leftovers of any space can be
//! found and removed from its id alone.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

use super::config::NetworkConfig;
use super::host::{link_dir, link_exists};
use super::rtnl::{Rtnl, Veth};

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

fn os_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Network(format!("{what}: {e}"))
}

/// Makes [`NETNS_DIR`] a shared mount point, as `ip netns add` does, so
/// that the namespaces mounted in it are unmounted in every mount
/// namespace that copied it when we remove them.
fn share_dir() -> Result<()> {
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| os_err(NETNS_DIR, e))?;
    let shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        // Not a mount point yet: bind it onto itself first.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| os_err(format!("bind {NETNS_DIR}"), e))?;
            shared()
        }
        r => r,
    }
    .map_err(|e| os_err(format!("share {NETNS_DIR}"), e))
}

/// Makes a new network namespace kept by the file `path` (as `ip netns
/// add` does, in-process: a short-lived thread unshares its network
/// namespace and bind-mounts it there) and opens it.
fn add(path: &Path) -> Result<File> {
    share_dir()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(path)
        .map_err(|e| os_err(format!("create {}", path.display()), e))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            // Only this thread changes namespace; it ends right after.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| os_err("new network namespace", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| os_err(format!("mount {}", path.display()), e))
        })
        .join()
        .map_err(|_| Error::Network("namespace thread panicked".into()))?
    });
    let opened = made
        .and_then(|()| File::open(path).map_err(|e| os_err(format!("open {}", path.display()), e)));
    if opened.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(path);
    }
    opened
}

/// Makes the namespace and veth of space `id` with address `addr`, the MAC
/// derived from it, and a default route via the gateway, all in-process:
/// the namespace ([`add`]), the veth over rtnetlink ([`super::rtnl`]), the
/// inside with interface ioctls ([`super::inside`]).
pub fn create(id: &str, cfg: &NetworkConfig, addr: Ipv4Addr) -> Result<()> {
    let mut t = crate::timing::Phases::new("netns create");
    let ns = add(&netns_path(id))?;
    t.mark("add");
    let mac = super::binding::mac_of(addr);
    Rtnl::open()?.add_veth(&Veth {
        host: &host_link(id),
        bridge: &cfg.bridge,
        peer: "eth0",
        peer_mac: mac,
        peer_netns: ns.as_fd(),
    })?;
    t.mark("veth");
    let inside = super::inside::setup(&netns_path(id), mac, addr, cfg.subnet, cfg.gateway());
    t.mark("inside");
    inside
}

/// Puts the host ends of `ids` back on `bridge` (after it was re-created).
pub fn attach(ids: &[&str], bridge: &str) -> Result<()> {
    let mut links = ids
        .iter()
        .map(|id| host_link(id))
        .filter(|l| link_exists(l));
    let Some(first) = links.next() else {
        return Ok(());
    };
    let mut nl = Rtnl::open()?;
    for l in std::iter::once(first).chain(links) {
        nl.attach(&l, bridge)?;
    }
    Ok(())
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
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        std::fs::remove_file(&path)
            .map_err(|e| Error::Network(format!("remove {}: {e}", path.display())))
    } else if link_exists(&host_link(id)) {
        Rtnl::open()?.del_link(&host_link(id))
    } else {
        Ok(())
    }
}

/// Deletes the veth of space `id` (which takes its inside end, and so the
/// network of processes still running in the namespace) and the
/// namespace's name.
pub fn cut(id: &str) -> Result<()> {
    if link_exists(&host_link(id)) {
        Rtnl::open()?.del_link(&host_link(id))?;
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
