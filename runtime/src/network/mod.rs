//! Networking of spaces. A space in mode `none` keeps the empty network
//! namespace libcontainer gives it (loopback only). A space in mode
//! `internet` joins a named namespace with a veth to our bridge, an address
//! from the configured subnet, a default route, and its own
//! `/etc/resolv.conf` and `/etc/hosts`; egress is NATed by our nftables
//! table, which also keeps it from other spaces, the host and private
//! ranges; a `bridge` table binds each space's port to its MAC and address.
//! Links and namespaces are made in-process over rtnetlink, rules over
//! nf_tables netlink (no `ip` or `nft` program); all of it on blocking threads (see docs/ARCHITECTURE.md,
//! "Network").

pub mod answer;
mod binding;
mod bridge;
pub mod config;
pub mod dns;
pub mod egress;
mod forward;
mod host;
mod inside;
pub mod netns;
mod nfnl;
pub mod nft;
pub mod policy;
pub mod pool;
mod rtnl;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::fsutil::{read_ids, write_atomic, write_ids};

pub use config::{Ipv4Net, NetworkConfig};
pub use policy::Egress;
use pool::Pool;

/// How a space is connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only (also what records written before networking load as).
    #[default]
    None,
    /// Outbound access through NAT; isolated from other spaces, the host
    /// and private ranges.
    Internet,
    /// `internet` plus the private ranges it blocks (the LAN); still
    /// isolated from other spaces and the host.
    Lan,
}

impl NetworkMode {
    /// `none`, `internet` or `lan`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Internet => "internet",
            NetworkMode::Lan => "lan",
        }
    }

    /// Whether the space has an address on the bridge (not `none`).
    pub fn is_networked(self) -> bool {
        self != NetworkMode::None
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NetworkMode::None),
            "internet" => Ok(NetworkMode::Internet),
            "lan" => Ok(NetworkMode::Lan),
            _ => Err(format!(
                "Invalid network '{}' (expected \"internet\", \"lan\" or \"none\")",
                s.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// The network part of a space's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceNetwork {
    /// The mode chosen at create.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Its address (modes `internet` and `lan`), held until destroy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Its ports published on the host's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedPort>,
    /// Its egress policy beyond the mode (`blockCidrs`, `allowDomains`,
    /// `allowPorts`; records before policies have none).
    #[serde(flatten)]
    pub egress: Egress,
}

/// A TCP port of a space published on the host: connections to `host` on
/// any of the host's addresses (not loopback) go to `container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The port inside the space.
    pub container: u16,
    /// The port on the host.
    pub host: u16,
}

/// At most this many published ports per space.
pub const MAX_PUBLISHED: usize = 16;

/// What the OCI spec of a networked space needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceNet {
    /// The namespace to join.
    pub netns: PathBuf,
    /// Host file bind-mounted at `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Host file bind-mounted at `/etc/hosts`.
    pub hosts: PathBuf,
}

impl SpaceNet {
    /// Points the spec's network namespace at ours and adds the two file
    /// mounts (writable, as Docker's are; rewritten at every start).
    pub fn apply(&self, spec: &mut Spec) -> Result<()> {
        let nss = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.namespaces_mut().as_mut());
        for ns in nss.into_iter().flatten() {
            if ns.typ() == LinuxNamespaceType::Network {
                ns.set_path(Some(self.netns.clone()));
            }
        }
        let file = |dest: &str, src: &Path| {
            json!({ "destination": dest, "type": "bind", "source": src,
                    "options": ["bind", "nosuid", "nodev", "noexec"] })
        };
        let mounts: Vec<Mount> = serde_json::from_value(json!([
            file("/etc/resolv.conf", &self.resolv_conf),
            file("/etc/hosts", &self.hosts)
        ]))
        .map_err(|e| Error::Container(format!("network mounts: {e}")))?;
        spec.mounts_mut()
            .get_or_insert_with(Vec::new)
            .extend(mounts);
        Ok(())
    }
}

/// The runtime's network: configuration, DNS servers and the address pool.
/// Operations are blocking (netlink round trips): call them off the async
/// threads.
pub struct Network {
    cfg: NetworkConfig,
    resolvers: dns::Resolvers,
    state_dir: PathBuf,
    /// Held while the pool changes and while the bridge goes up or down:
    /// the bridge is up while the pool is not empty, and for
    /// [`NetworkConfig::linger`] after it empties.
    pool: Mutex<Pool>,
    /// Bridge state; changed only with `pool` held.
    bridge: Mutex<BridgeState>,
    /// Published ports by space id (with its address); changed only with
    /// `pool` held.
    published: Mutex<BTreeMap<String, (Ipv4Addr, Vec<PublishedPort>)>>,
    /// The DNS answerers of spaces with `allowDomains`, by space id.
    answerers: Mutex<std::collections::HashMap<String, answer::Answerer>>,
    /// Destroyed spaces (id, address) whose policies [`Network::tidy`]
    /// removes, all in one transaction, off the destroy path. Their
    /// addresses stay held until then, so no new space gets an address a
    /// dead space's rules still name. Changed only with `pool` held; kept
    /// in [`RETIRING_FILE`] too, so a daemon killed meanwhile removes the
    /// policies at its next start.
    retiring: Mutex<Vec<(String, Ipv4Addr)>>,
    /// Notified, with `pool` held, when a spare's making ends.
    spare_made: Condvar,
    /// Creates waiting for a spare being made; changed with `pool` held.
    spare_waiters: AtomicUsize,
}

/// The longest a networked create waits for a spare being made (see
/// [`Network::take_spare`]) before it makes its own namespace: the rest of
/// the maker's work takes a few milliseconds; this is for one held up.
const SPARE_WAIT: Duration = Duration::from_millis(250);

/// The file, in the state dir, of the ids whose policies are still to go.
const RETIRING_FILE: &str = "network-retiring";

/// What the allowed set of space `id` (with network `net`) holds now, each
/// address with the time it has left, for a rewrite of its policy to keep:
/// a daemon restart keeps what the space's DNS lookups allowed, so its
/// programs reach the addresses they resolved before it. Empty without
/// `allowDomains`, or when it cannot be read (logged).
fn kept_allowed(t: &str, id: &str, net: &SpaceNetwork) -> Vec<(Ipv4Addr, u64)> {
    let (false, Some(addr)) = (net.egress.allow_domains.is_empty(), net.address) else {
        return Vec::new();
    };
    egress::allowed_left(t, id, addr).unwrap_or_else(|e| {
        tracing::warn!(id = %id, "reading the addresses a space's DNS answers allowed: {e}");
        Vec::new()
    })
}

/// The file, in the state dir, of the ids of spares (namespaces made ahead
/// of a create), written before each is made: those no space took are
/// removed at the next start, or by purge.
const SPARES_FILE: &str = "network-spares";

/// Whether our bridge and tables are up, since when nobody uses them, and
/// which ports are still bound though their spaces are gone.
#[derive(Debug, Default)]
struct BridgeState {
    up: bool,
    idle_since: Option<std::time::Instant>,
    /// Destroyed spaces (id, address) whose bindings [`Network::tidy`]
    /// removes, all in one nf_tables transaction, off the create and destroy
    /// paths: a transaction that deletes set elements took ≈12 ms
    /// longer than one that only adds them (kernel side, on a loaded 2-core
    /// host). Their ports are gone with their namespaces; the tables'
    /// removal takes them too.
    unbound: Vec<(String, Ipv4Addr)>,
}

impl Network {
    /// Checks the configuration and reads the host's DNS servers. Nothing
    /// is changed on the host until a networked space needs it.
    pub fn new(cfg: NetworkConfig, state_dir: &Path) -> Result<Network> {
        cfg.validate().map_err(Error::InvalidInput)?;
        Ok(Network {
            resolvers: dns::host_resolvers(&cfg.dns),
            pool: Mutex::new(Pool::new(cfg.subnet)),
            bridge: Mutex::new(BridgeState::default()),
            published: Mutex::default(),
            answerers: Mutex::new(Default::default()),
            retiring: Mutex::default(),
            spare_made: Condvar::new(),
            spare_waiters: AtomicUsize::new(0),
            cfg,
            state_dir: state_dir.to_path_buf(),
        })
    }

    fn retiring(&self) -> std::sync::MutexGuard<'_, Vec<(String, Ipv4Addr)>> {
        self.retiring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the ids of `list` to [`RETIRING_FILE`] (removes it when empty).
    fn save_retiring(&self, list: &[(String, Ipv4Addr)]) -> Result<()> {
        let ids: Vec<&str> = list.iter().map(|(id, _)| id.as_str()).collect();
        write_ids(&self.state_dir.join(RETIRING_FILE), &ids)
    }

    /// Removes the policies of the destroyed spaces waiting for it (one
    /// transaction), then frees their addresses; takes the bridge down
    /// after the last networked space when nothing lingers. `pool` is
    /// this network's, held.
    fn retire(&self, pool: &mut Pool) -> Result<()> {
        let list = std::mem::take(&mut *self.retiring());
        if list.is_empty() {
            return Ok(());
        }
        let up = self.bridge_state().up;
        let t = self.cfg.table();
        let ids: Vec<&str> = list.iter().map(|(id, _)| id.as_str()).collect();
        let committed = egress::Current::read(t, &ids, None).and_then(|cur| {
            let mut b = nfnl::Batch::new();
            for (id, a) in &list {
                egress::forget(&mut b, t, id, &cur);
                if up && pool.is_lan(*a) {
                    nft::lan_member(&mut b, t, *a, false);
                }
            }
            b.commit()
        });
        if let Err(e) = committed {
            self.retiring().extend(list);
            return Err(e);
        }
        for (id, _) in &list {
            pool.release(id);
        }
        self.save_retiring(&self.retiring())?;
        if pool.is_empty() && self.cfg.linger.is_zero() {
            return self.down(pool);
        }
        let mut b = self.bridge_state();
        if b.up {
            b.unbound.extend(list);
        }
        if pool.is_empty() {
            b.idle_since = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// At startup: removes the policies of spaces destroyed while a previous
    /// run still had them to remove (ids from [`RETIRING_FILE`]).
    fn restore_retiring(&self) {
        let path = self.state_dir.join(RETIRING_FILE);
        let Some(ids) = read_ids(&path) else {
            return;
        };
        match self.forget(&ids) {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => tracing::warn!("removing the policies of destroyed spaces: {e}"),
        }
    }

    /// Removes the policies of spaces `ids` (one transaction). Blocking.
    fn forget(&self, ids: &[String]) -> Result<()> {
        forget(self.cfg.table(), ids)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The DNS servers spaces get.
    pub fn resolvers(&self) -> &[Ipv4Addr] {
        &self.resolvers.servers
    }

    /// Held addresses and the ids of the spaces holding them (spares left
    /// out).
    pub fn addresses(&self) -> BTreeMap<Ipv4Addr, String> {
        let pool = self.pool();
        let mut held = pool.held().clone();
        let spares = pool.spare_ids();
        held.retain(|_, id| !spares.contains(id));
        held
    }

    fn bridge_state(&self) -> std::sync::MutexGuard<'_, BridgeState> {
        self.bridge.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn published_map(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (Ipv4Addr, Vec<PublishedPort>)>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn published_list(&self) -> Vec<nft::Published> {
        self.published_map()
            .values()
            .flat_map(|(a, ps)| ps.iter().map(move |p| (*a, *p)))
            .collect()
    }

    /// Checks ports that space `name` wants published: publishing on, a
    /// networked space, at most [`MAX_PUBLISHED`], no host port twice,
    /// none published by another space or in use on the host.
    pub fn check_publish(
        &self,
        name: &str,
        mode: NetworkMode,
        ports: &[PublishedPort],
    ) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let bad = |m: String| Err(Error::InvalidInput(format!("Invalid ports: {m}")));
        if !self.cfg.publish {
            return bad(format!(
                "publishing ports on the host is off on this server (its operator turns it on \
                 with CLAWDSPACE_PUBLISH_PORTS=1); reach a port through the API instead: \
                 POST /api/spaces/{name}/ports"
            ));
        }
        if !mode.is_networked() {
            return bad("publishing needs network \"internet\" or \"lan\"".into());
        }
        if ports.len() > MAX_PUBLISHED {
            return bad(format!("at most {MAX_PUBLISHED} per space"));
        }
        let taken = self.published_list();
        for (i, p) in ports.iter().enumerate() {
            if p.container == 0 || p.host == 0 {
                return bad("ports are 1-65535".into());
            }
            if ports[..i].iter().any(|q| q.host == p.host) {
                return bad(format!("host port {} is given twice", p.host));
            }
            if taken.iter().any(|(_, q)| q.host == p.host) {
                return bad(format!(
                    "host port {} is published by another space",
                    p.host
                ));
            }
            // A host service there would be hidden by the forward.
            if std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, p.host)).is_err() {
                return bad(format!("host port {} is in use on this server", p.host));
            }
        }
        Ok(())
    }

    /// Publishes `ports` of space `id` at `addr` (replacing what it had).
    fn publish(&self, id: &str, addr: Ipv4Addr, ports: &[PublishedPort]) -> Result<()> {
        {
            let mut map = self.published_map();
            if map.get(id).is_some_and(|(a, p)| *a == addr && p == ports) {
                return Ok(());
            }
            let clash = map.iter().find(|(other, (_, ps))| {
                other.as_str() != id && ps.iter().any(|p| ports.iter().any(|q| q.host == p.host))
            });
            if let Some((_, (_, ps))) = clash {
                let host = ps
                    .iter()
                    .find(|p| ports.iter().any(|q| q.host == p.host))
                    .map_or(0, |p| p.host);
                return Err(Error::InvalidInput(format!(
                    "Invalid ports: host port {host} is published by another space"
                )));
            }
            map.insert(id.to_string(), (addr, ports.to_vec()));
        }
        self.commit_published()
    }

    /// Writes the published ports' table anew.
    fn commit_published(&self) -> Result<()> {
        let mut b = nfnl::Batch::new();
        nft::publish(&mut b, self.cfg.table(), &self.published_list());
        b.commit()
    }

    /// Brings the bridge and tables up, with every port of `pool` bound
    /// (caller holds the pool lock).
    fn up(&self, pool: &Pool) -> Result<()> {
        let ports: Vec<binding::Port> = pool
            .held()
            .iter()
            .map(|(a, id)| (id.as_str(), *a))
            .collect();
        bridge::up(
            &self.cfg,
            &self.resolvers.servers,
            &ports,
            &pool.lan(),
            &self.published_list(),
            &self.state_dir,
        )?;
        *self.bridge_state() = BridgeState {
            up: true,
            ..Default::default()
        };
        Ok(())
    }

    /// Takes the bridge and table down, and the spares with them (`pool`
    /// is this network's, held).
    fn down(&self, pool: &mut Pool) -> Result<()> {
        self.drop_spares(pool);
        *self.bridge_state() = BridgeState::default();
        bridge::down(&self.state_dir)
    }

    /// Removes the spares' namespaces and frees their addresses (`pool`
    /// is this network's, held). Best effort: a namespace that cannot be
    /// removed now is removed at the next start.
    fn drop_spares(&self, pool: &mut Pool) {
        // Ready ones are removed here; those being made by their maker,
        // which finds their address gone.
        let ready = pool.spares().to_vec();
        for id in pool.spare_ids() {
            pool.release(&id);
        }
        let mut kept = false;
        for id in &ready {
            if let Err(e) = netns::remove(id) {
                tracing::warn!(id = %id, "removing a spare network namespace: {e}");
                kept = true;
            }
        }
        if !ready.is_empty() && !kept {
            let _ = self.save_spares(&[]);
        }
    }

    /// Writes `ids` to [`SPARES_FILE`] (removes it when empty).
    fn save_spares(&self, ids: &[String]) -> Result<()> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        write_ids(&self.state_dir.join(SPARES_FILE), &ids)
    }

    /// At startup: removes the namespaces of spares a previous run left
    /// (those no space in `spaces` took).
    fn remove_old_spares(&self, spaces: &[(String, SpaceNetwork)]) {
        let path = self.state_dir.join(SPARES_FILE);
        let Some(ids) = read_ids(&path) else {
            return;
        };
        for id in &ids {
            if spaces.iter().all(|(s, _)| s != id) {
                if let Err(e) = netns::remove(id) {
                    tracing::warn!(id = %id, "removing a spare network namespace: {e}");
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Makes spares until [`NetworkConfig::spares`] are ready, while the
    /// bridge is up: each an id, an address, its port bound, its namespace
    /// and veth made, so that a networked create that takes one
    /// ([`Network::take_spare`]) only adds its policy. Blocking; runs
    /// after a create took one and at the housekeeping.
    pub fn fill_spares(&self) -> Result<()> {
        let tid = crate::process::thread_id();
        loop {
            let (id, addr) = {
                let mut pool = self.pool();
                if pool.spare_ids().len() >= self.cfg.spares || !self.bridge_state().up {
                    return Ok(());
                }
                let id = crate::space_id::new_space_id();
                let Some(addr) = pool.add_spare(&id, tid) else {
                    // Full: the addresses are for spaces.
                    pool.release(&id);
                    return Ok(());
                };
                // Recorded first: a daemon killed from here on leaves an id
                // its next start removes.
                if let Err(e) = self.save_spares(&pool.spare_ids()) {
                    pool.release(&id);
                    return Err(e);
                }
                (id, addr)
            };
            // Made without the pool's lock: creates and destroys go on.
            let mut t = crate::timing::Phases::new("spare");
            let made = binding::update(self.cfg.table(), &[], &[(&id, addr)])
                .commit()
                .and_then(|()| netns::create(&id, &self.cfg, addr));
            t.mark("made");
            let mut pool = self.pool();
            self.spare_made.notify_all();
            if made.is_ok() && pool.ready(&id) {
                continue;
            }
            // Failed, or the bridge went down meanwhile (its address was
            // released then).
            pool.release(&id);
            let _ = netns::remove(&id);
            let _ = self.save_spares(&pool.spare_ids());
            let mut b = self.bridge_state();
            if b.up {
                b.unbound.push((id, addr));
            }
            return made;
        }
    }

    /// Ids of the spares ready to be taken (oldest first).
    pub fn spares(&self) -> Vec<String> {
        self.pool().spares().to_vec()
    }

    /// Hands a spare (its id and address, its namespace ready) to a new
    /// networked space, which takes its id; None when there is none.
    /// Spares are made at a lower priority (in the background). When none
    /// is ready but one is being made that no other create waits for, its
    /// maker is brought back to the usual priority and waited for (at most
    /// [`SPARE_WAIT`]): what is left of its work is less than a namespace
    /// of the create's own, made beside it, which back-to-back creates
    /// would otherwise pay for. Blocking.
    pub fn take_spare(&self) -> Option<(String, Ipv4Addr)> {
        let mut pool = self.pool();
        if !pool.spares().is_empty() {
            return pool.take_spare();
        }
        let awaited = pool.pending_spares().to_vec();
        if awaited.len() <= self.spare_waiters.load(Ordering::Acquire) {
            return None;
        }
        self.spare_waiters.fetch_add(1, Ordering::AcqRel);
        for (_, maker) in &awaited {
            if let Err(e) = crate::process::set_thread_nice(*maker, 0) {
                tracing::debug!("raising a spare maker's priority: {e}");
            }
        }
        let making =
            |p: &mut Pool| p.spares().is_empty() && awaited.iter().any(|(id, _)| p.is_pending(id));
        pool = match self.spare_made.wait_timeout_while(pool, SPARE_WAIT, making) {
            Ok((p, _)) => p,
            Err(p) => p.into_inner().0,
        };
        self.spare_waiters.fetch_sub(1, Ordering::AcqRel);
        pool.take_spare()
    }

    /// Housekeeping (the runtime calls this every second): takes the
    /// bridge and tables down once no networked space has used them for
    /// [`NetworkConfig::linger`]; otherwise removes the bindings of spaces
    /// destroyed since the last call.
    pub fn tidy(&self) -> Result<()> {
        let mut pool = self.pool();
        self.retire(&mut pool)?;
        let (idle, gone) = {
            let mut b = self.bridge_state();
            let idle = b.up && b.idle_since.is_some_and(|t| t.elapsed() >= self.cfg.linger);
            (idle, std::mem::take(&mut b.unbound))
        };
        if idle && pool.is_empty() {
            tracing::debug!(bridge = %self.cfg.bridge, "network idle: bridge and tables removed");
            return self.down(&mut pool);
        }
        drop(pool);
        if let Err(e) = self.fill_spares() {
            tracing::warn!("making a spare network namespace: {e}");
        }
        if gone.is_empty() {
            return Ok(());
        }
        let ports: Vec<binding::Port> = gone.iter().map(|(i, a)| (i.as_str(), *a)).collect();
        let r = binding::update(self.cfg.table(), &ports, &[]).commit();
        let mut b = self.bridge_state();
        match r {
            // Gone with the tables meanwhile: nothing left to remove.
            Err(_) if !b.up => Ok(()),
            Err(e) => {
                b.unbound.extend(gone);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// At startup, from the records of existing spaces (id and network
    /// part of each): fills the pool,
    /// brings the bridge and rules up again (re-attaching surviving veths)
    /// or, with no networked space left, removes what a previous run left.
    pub fn restore(&self, spaces: &[(String, SpaceNetwork)]) -> Result<()> {
        self.restore_retiring();
        self.remove_old_spares(spaces);
        let mut pool = self.pool();
        let mut ids = Vec::new();
        let mut live = Vec::new();
        for (id, net) in spaces {
            if let (true, Some(a)) = (net.mode.is_networked(), net.address) {
                pool.hold(a, id);
                pool.set_lan(a, net.mode == NetworkMode::Lan);
                ids.push(id.as_str());
                if !net.published.is_empty() {
                    self.published_map()
                        .insert(id.clone(), (a, net.published.clone()));
                }
                if netns::exists(id) {
                    live.push((id.as_str(), a, net));
                }
            }
        }
        if pool.is_empty() {
            return self.down(&mut pool);
        }
        // Namespaces made before MACs derived from addresses take theirs
        // now; the host forgets the old ones.
        let mut changed = false;
        for (a, id) in pool.held() {
            if netns::exists(id) {
                match inside::set_mac(&netns::netns_path(id), binding::mac_of(*a)) {
                    Ok(c) => changed |= c,
                    Err(e) => tracing::warn!(id = %id, "setting the MAC of a space: {e}"),
                }
            }
        }
        self.up(&pool)?;
        netns::attach(&ids, &self.cfg.bridge)?;
        if changed {
            rtnl::Rtnl::open()?.flush_neighbours(&self.cfg.bridge)?;
        }
        drop(pool);
        self.restore_policies(&ids, &live);
        Ok(())
    }

    /// Writes the policies of the spaces whose namespaces survived (all in
    /// one transaction, with the removal of those of spaces not among
    /// `known`; one by one if that fails) and starts their DNS answerers.
    /// A space whose policy cannot be applied is cut off the network
    /// rather than left with more access than it was given.
    fn restore_policies(&self, known: &[&str], live: &[(&str, Ipv4Addr, &SpaceNetwork)]) {
        let t = self.cfg.table();
        let ids: Vec<&str> = live.iter().map(|(id, _, _)| *id).collect();
        let one_by_one = egress::Current::read(t, &ids, Some(known))
            .and_then(|cur| {
                let mut all = nfnl::Batch::new();
                egress::forget_orphans(&mut all, t, known, &cur);
                for (id, a, net) in live {
                    let kept = if net.egress.allow_domains.is_empty() {
                        Vec::new()
                    } else {
                        cur.allowed_left(id, *a)?
                    };
                    egress::write(&mut all, t, (id, *a), net, &cur);
                    egress::keep_allowed(&mut all, t, *a, &kept);
                }
                all.commit()
            })
            .inspect_err(|e| {
                tracing::warn!("restoring the spaces' network policies: {e}; one by one")
            })
            .is_err();
        if one_by_one {
            let swept = egress::Current::read(t, &[], Some(known)).and_then(|cur| {
                let mut b = nfnl::Batch::new();
                egress::forget_orphans(&mut b, t, known, &cur);
                b.commit()
            });
            if let Err(e) = swept {
                tracing::warn!("removing the network policies of spaces that are gone: {e}");
            }
        }
        for (id, a, net) in live {
            if one_by_one {
                if let Err(e) = self.write_policy(id, *a, net) {
                    tracing::error!(id = %id, "applying the network policy of a space: {e}; cutting it off");
                    if let Err(e) = netns::cut(id) {
                        tracing::error!(id = %id, "cutting a space off: {e}");
                    }
                    continue;
                }
            }
            // Without its answerer the space resolves nothing (and so
            // reaches nothing): no more access than its policy gives.
            if let Err(e) = self.start_answerer(id, net, true) {
                tracing::warn!(id = %id, "starting the DNS answerer of a space: {e}");
            }
        }
    }

    /// Replaces the policy of space `id` (address `addr`), keeping the
    /// addresses its DNS answers allowed until they expire.
    fn write_policy(&self, id: &str, addr: Ipv4Addr, net: &SpaceNetwork) -> Result<()> {
        let kept = kept_allowed(self.cfg.table(), id, net);
        let mut b = nfnl::Batch::new();
        self.policy(&mut b, id, addr, net)?;
        egress::keep_allowed(&mut b, self.cfg.table(), addr, &kept);
        b.commit()
    }

    /// Adds to `b` the policy of space `id` (address `addr`), replacing one
    /// left there (read back first: only when there is one), and its `lan`
    /// membership.
    fn policy(
        &self,
        b: &mut nfnl::Batch,
        id: &str,
        addr: Ipv4Addr,
        net: &SpaceNetwork,
    ) -> Result<()> {
        let t = self.cfg.table();
        if egress::exists(t, id)? {
            let cur = egress::Current::read(t, &[id], None)?;
            egress::write(b, t, (id, addr), net, &cur);
        } else {
            egress::add(b, t, (id, addr), net);
        }
        if net.mode == NetworkMode::Lan {
            nft::lan_member(b, self.cfg.table(), addr, true);
        }
        Ok(())
    }

    fn answerers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, answer::Answerer>> {
        self.answerers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the DNS answerer of space `id` when its policy has
    /// `allowDomains`, inside its namespace; one already running is kept
    /// unless `fresh` (a namespace made anew).
    fn start_answerer(&self, id: &str, net: &SpaceNetwork, fresh: bool) -> Result<()> {
        if net.egress.allow_domains.is_empty() {
            self.stop_answerer(id);
            return Ok(());
        }
        if !fresh && self.answerers().contains_key(id) {
            return Ok(());
        }
        let addr = net
            .address
            .ok_or_else(|| Error::Network(format!("space {id} has no address")))?;
        self.stop_answerer(id);
        let a = answer::start(
            (id, self.cfg.table(), addr),
            &netns::netns_path(id),
            net.egress.clone(),
            self.resolvers.servers.clone(),
        )?;
        self.answerers().insert(id.to_string(), a);
        Ok(())
    }

    /// Stops the DNS answerer of space `id`, if any.
    fn stop_answerer(&self, id: &str) {
        self.answerers().remove(id);
    }

    /// DNS queries of space `id` refused (names not allowed) since its
    /// answerer started (None: it has none).
    pub fn refused_queries(&self, id: &str) -> Option<u64> {
        self.answerers().get(id).map(answer::Answerer::refused)
    }

    /// The servers in the resolv.conf of a space with network `net`: its
    /// answerer with `allowDomains`, else the runtime's.
    fn space_resolvers(&self, net: &SpaceNetwork) -> dns::Resolvers {
        if net.egress.allow_domains.is_empty() {
            return self.resolvers.clone();
        }
        dns::Resolvers {
            servers: vec![answer::LISTEN],
            extra: self.resolvers.extra.clone(),
        }
    }

    /// Packets and bytes dropped by the rules of space `id` (None when it
    /// has no table: mode `none`, or not set up yet). Blocking.
    pub fn drops(&self, id: &str) -> Result<Option<(u64, u64)>> {
        egress::read_drops(self.cfg.table(), id)
    }

    /// Takes an address for space `id` in `mode`, bringing the bridge up
    /// for the first networked space.
    pub fn allocate(&self, id: &str, mode: NetworkMode) -> Result<Ipv4Addr> {
        let mut pool = self.pool();
        let mut addr = pool.allocate(id);
        if addr.is_none() && !self.retiring().is_empty() {
            // Full, but destroyed spaces' addresses wait to be freed.
            self.retire(&mut pool)?;
            addr = pool.allocate(id);
        }
        let addr = addr.ok_or_else(|| {
            Error::Network(format!(
                "no free address in {}: every one is held by a networked space; \
                     destroy one, or create this space with network \"none\" \
                     (CLAWDSPACE_SUBNET sets the size; change it only with no networked spaces)",
                self.cfg.subnet
            ))
        })?;
        pool.set_lan(addr, mode == NetworkMode::Lan);
        let mut b = self.bridge_state();
        if b.up {
            b.idle_since = None;
            return Ok(addr);
        }
        drop(b);
        if let Err(e) = self.up(&pool) {
            pool.release(id);
            if pool.is_empty() {
                let _ = self.down(&mut pool);
            }
            return Err(e);
        }
        Ok(addr)
    }

    /// Makes sure the namespace and veth of space `id` (named `name`, with
    /// network `net`) exist (creating them, and binding its port, on create
    /// and after a reboot) and writes its resolv.conf and hosts into `dir`.
    pub fn prepare(
        &self,
        id: &str,
        name: &str,
        net: &SpaceNetwork,
        dir: &Path,
    ) -> Result<SpaceNet> {
        let mut t = crate::timing::Phases::new("network prepare");
        let net_of = net;
        let addr = net
            .address
            .ok_or_else(|| Error::Network(format!("space {name} has no address")))?;
        let fresh = !netns::exists(id);
        if fresh {
            self.create_bound(id, addr, net)?;
        } else {
            if !netns::attached(id, &self.cfg.bridge) {
                netns::attach(&[id], &self.cfg.bridge)?;
            }
            self.write_policy(id, addr, net)?;
        }
        t.mark("netns");
        if !net.published.is_empty() {
            self.publish(id, addr, &net.published)?;
        }
        self.start_answerer(id, net, fresh)?;
        t.mark("answerer");
        let net = SpaceNet {
            netns: netns::netns_path(id),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
        };
        let resolvers = self.space_resolvers(net_of);
        write_atomic(
            &net.resolv_conf,
            dns::resolv_conf(&resolvers).as_bytes(),
            false,
        )?;
        write_atomic(&net.hosts, dns::hosts(name, addr).as_bytes(), false)?;
        Ok(net)
    }

    /// Cuts space `id` off the network without touching its processes:
    /// its veth (both ends) and its namespace's name go. For a space whose
    /// record, and so its address, cannot be read.
    pub fn cut(&self, id: &str) -> Result<()> {
        self.stop_answerer(id);
        self.forget(&[id.to_string()])?;
        netns::cut(id)
    }

    /// Binds the port of space `id` to `addr` and writes its policy (one
    /// transaction), then makes its namespace and veth.
    fn create_bound(&self, id: &str, addr: Ipv4Addr, net: &SpaceNetwork) -> Result<()> {
        let mut b = binding::update(self.cfg.table(), &[], &[(id, addr)]);
        self.policy(&mut b, id, addr, net)?;
        let mut t = crate::timing::Phases::new("network bind");
        b.commit()?;
        t.mark("commit");
        let made = netns::remove(id).and_then(|()| netns::create(id, &self.cfg, addr));
        t.mark("netns");
        made
    }

    /// Removes the namespace and veth of space `id` (if any), frees its
    /// address, and takes the bridge down after the last networked space.
    pub fn release(&self, id: &str) -> Result<()> {
        let mut t = crate::timing::Phases::new("network release");
        netns::remove(id)?;
        t.mark("netns");
        self.stop_answerer(id);
        t.mark("answerer");
        let mut pool = self.pool();
        if self.published_map().remove(id).is_some() && self.bridge_state().up {
            self.commit_published()?;
        }
        let Some(addr) = pool.address_of(id) else {
            // Holds no address (a create that failed early, a leftover):
            // its policy, if any, goes now.
            return self.forget(&[id.to_string()]);
        };
        // Its policy goes before its address can be given to another
        // space: both at the next housekeeping, or now for the last
        // networked space when the bridge is not to linger (it goes too).
        let mut retiring = self.retiring();
        if !retiring.iter().any(|(i, _)| i == id) {
            retiring.push((id.to_string(), addr));
        }
        let last = pool.spaces() <= retiring.len();
        let saved = self.save_retiring(&retiring);
        drop(retiring);
        if last && self.cfg.linger.is_zero() {
            self.retire(&mut pool)?;
            t.mark("commit");
        }
        saved
    }
}

impl Drop for Network {
    /// A runtime going away with no networked space left removes what a
    /// lingering bridge still holds.
    fn drop(&mut self) {
        let mut pool = self.pool();
        if let Err(e) = self.retire(&mut pool) {
            tracing::warn!("removing the policies of destroyed spaces: {e}");
        }
        self.drop_spares(&mut pool);
        if pool.is_empty() && self.bridge_state().up {
            if let Err(e) = self.down(&mut pool) {
                tracing::warn!("removing the idle bridge: {e}");
            }
        }
    }
}

/// Removes the policies of spaces `ids` from our table `t` (one
/// transaction; nothing for those that have none). Blocking.
fn forget(t: &str, ids: &[String]) -> Result<()> {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let cur = egress::Current::read(t, &refs, None)?;
    let mut b = nfnl::Batch::new();
    for id in ids {
        egress::forget(&mut b, t, id, &cur);
    }
    b.commit()
}

/// Brings up the loopback of the network namespace of process `pid` (a
/// `network: none` space's init, right after it started: libcontainer
/// makes the namespace with `lo` down, and "loopback only" must mean a
/// working loopback). Blocking.
pub fn loopback_up_of(pid: i32) -> crate::error::Result<()> {
    inside::loopback_up(Path::new(&format!("/proc/{pid}/ns/net")))
}

/// Removes, without a runtime, everything the runtime of `dir` (a state
/// dir, or a directory holding state dirs) added to the host's network:
/// the links and namespaces of its spaces, its bridge, its table, its share
/// of IPv4 forwarding. For tests, benchmarks and operators wiping a state
/// dir; best effort.
pub fn purge(dir: &Path) {
    let subdirs = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for state in std::iter::once(dir.to_path_buf()).chain(subdirs) {
        let spaces = std::fs::read_dir(state.join("spaces"));
        let mut ids = Vec::new();
        for e in spaces.into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if crate::space_id::is_space_id(&id) {
                let _ = netns::remove(&id);
                ids.push(id);
            }
        }
        // Spares no space took.
        let spares = state.join(SPARES_FILE);
        if let Some(ids) = read_ids(&spares) {
            for id in &ids {
                let _ = netns::remove(id);
            }
            let _ = std::fs::remove_file(&spares);
        }
        // Destroyed spaces whose tables were still to go.
        let retiring = state.join(RETIRING_FILE);
        if let Some(gone) = read_ids(&retiring) {
            ids.extend(gone);
            let _ = std::fs::remove_file(&retiring);
        }
        // (The bridge's removal takes the policies with their table; this
        // takes those of a record lost, and tables of earlier versions.)
        let table = bridge::read_record(&state).map(|r| r.table);
        let _ = forget(table.as_deref().unwrap_or_default(), &ids);
        let _ = bridge::down(&state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network whose pool has spare "s1" being made by this thread.
    fn making_one(dir: &Path) -> Network {
        let net = Network::new(NetworkConfig::default(), dir).expect("network");
        net.pool()
            .add_spare("s1", crate::process::thread_id())
            .expect("address");
        net
    }

    /// Marks spare `id` made after `ms`, as its maker does.
    fn made_after(net: &Network, id: &str, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
        let mut pool = net.pool();
        net.spare_made.notify_all();
        assert!(pool.ready(id));
    }

    #[test]
    fn a_create_waits_for_the_spare_being_made_and_a_second_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = making_one(dir.path());
        std::thread::scope(|s| {
            s.spawn(|| made_after(&net, "s1", 150));
            let first = s.spawn(|| net.take_spare());
            // The second create finds one spare being made, one create
            // waiting for it: it makes its own at once.
            let end = std::time::Instant::now() + Duration::from_secs(2);
            while net.spare_waiters.load(Ordering::Acquire) == 0 {
                assert!(std::time::Instant::now() < end, "the first never waited");
                std::thread::yield_now();
            }
            assert_eq!(net.take_spare(), None);
            let (id, addr) = first.join().expect("first").expect("waited for the spare");
            assert_eq!(id, "s1");
            assert!(net.cfg.subnet.contains(addr));
        });
        assert_eq!(net.spare_waiters.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_create_waits_at_most_spare_wait_for_a_spare() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = making_one(dir.path());
        let t = std::time::Instant::now();
        assert_eq!(net.take_spare(), None, "never made");
        let waited = t.elapsed();
        assert!(
            waited >= SPARE_WAIT && waited < SPARE_WAIT * 4,
            "{waited:?}"
        );
        // A spare whose making failed (released) ends the wait at once.
        let net = making_one(dir.path());
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                let mut pool = net.pool();
                pool.release("s1");
                net.spare_made.notify_all();
            });
            let t = std::time::Instant::now();
            assert_eq!(net.take_spare(), None);
            assert!(t.elapsed() < SPARE_WAIT, "{:?}", t.elapsed());
        });
    }

    #[test]
    fn id_files_round_trip_and_ignore_what_is_no_space_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ids");
        assert_eq!(read_ids(&path), None);
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        write_ids(&path, &[&a, &b]).expect("write");
        assert_eq!(read_ids(&path), Some(vec![a.clone(), b]));
        // Only ids become names: nothing else written there is used.
        std::fs::write(&path, format!("../../etc\n\n{a}/x\n{a}\nAB{}\n", &a[2..])).expect("write");
        assert_eq!(read_ids(&path), Some(vec![a]));
        write_ids(&path, &[]).expect("empty");
        assert!(!path.exists());
        write_ids(&path, &[]).expect("gone already");
    }

    #[test]
    fn modes_parse_and_old_records_have_none() {
        assert_eq!("internet".parse::<NetworkMode>(), Ok(NetworkMode::Internet));
        assert_eq!("none".parse::<NetworkMode>(), Ok(NetworkMode::None));
        assert_eq!("lan".parse::<NetworkMode>(), Ok(NetworkMode::Lan));
        assert!("bridge".parse::<NetworkMode>().is_err());
        let n: SpaceNetwork = serde_json::from_str("{}").expect("default");
        assert_eq!(n, SpaceNetwork::default());
        let mut n = SpaceNetwork {
            mode: NetworkMode::Internet,
            address: Some(Ipv4Addr::new(10, 88, 0, 2)),
            published: Vec::new(),
            egress: Egress::default(),
        };
        let v = serde_json::to_value(&n).expect("json");
        assert_eq!(v, json!({"mode": "internet", "address": "10.88.0.2"}));
        n.egress.block_cidrs = vec!["10.0.0.0/8".parse().expect("net")];
        n.egress.allow_domains = vec!["*.github.com".into()];
        n.egress.allow_ports = vec![443];
        let v = serde_json::to_value(&n).expect("json");
        assert_eq!(
            v,
            json!({"mode": "internet", "address": "10.88.0.2", "blockCidrs": ["10.0.0.0/8"],
                   "allowDomains": ["*.github.com"], "allowPorts": [443]})
        );
        assert_eq!(serde_json::from_value::<SpaceNetwork>(v).expect("back"), n);
        let n = SpaceNetwork {
            published: vec![PublishedPort {
                container: 80,
                host: 8080,
            }],
            ..n
        };
        let v = serde_json::to_value(&n).expect("json");
        assert_eq!(v["published"], json!([{"container": 80, "host": 8080}]));
    }

    #[test]
    fn the_spec_joins_our_namespace_and_mounts_the_files() {
        let mut spec = Spec::default();
        let net = SpaceNet {
            netns: "/var/run/netns/cs-x".into(),
            resolv_conf: "/s/resolv.conf".into(),
            hosts: "/s/hosts".into(),
        };
        net.apply(&mut spec).expect("apply");
        let v = serde_json::to_value(&spec).expect("json");
        let nss = v["linux"]["namespaces"].as_array().expect("namespaces");
        for ns in nss {
            let want = (ns["type"] == "network").then_some("/var/run/netns/cs-x");
            assert_eq!(ns.get("path").and_then(|p| p.as_str()), want, "{ns}");
        }
        let mounts = v["mounts"].as_array().expect("mounts");
        let hosts = mounts.iter().find(|m| m["destination"] == "/etc/hosts");
        assert_eq!(hosts.expect("hosts mount")["source"], "/s/hosts");
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/etc/resolv.conf"));
    }
}
