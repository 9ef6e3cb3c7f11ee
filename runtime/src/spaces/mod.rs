//! The runtime: the life of every space, from the daemon's point of view.
//!
//! Async and thread-safe; libcontainer itself runs in worker processes
//! ([`crate::worker`]). Operations on one space are serialised by a per-space
//! lock; operations on different spaces run in parallel across workers.
//!
//! One home per operation: [`registry`] (entries, locks, activity),
//! [`create`] (validation, create and rollback), [`bundle`] (bundle and init
//! start), [`lifecycle`] (destroy, pause, resume, start), [`exec`] (piped and
//! TTY exec), [`extras`] (env, env file and clone at create; git push),
//! [`recovery`] (init watcher, restore, quarantine), [`shutdown`]
//! (background tasks, `close`), [`images`] (image wrappers), [`cpu`] (CPU%
//! samples). This module holds the handle, `open` and accessors.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::cgroups::{CgroupMode, CgroupPaths};
use crate::config::RuntimeConfig;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;
use crate::gpu::Passthrough;
use crate::image::{ImageStore, Puller};
use crate::network::Network;
use crate::overlay_view::OverlayView;
use crate::proto::RootfsPlan;
use crate::quota;
use crate::seccomp;
use crate::spec::capabilities_for;
use crate::store::{Space, Store};
use crate::worker::{PoolStats, WorkerPool};

mod archive;
mod bundle;
mod cpu;
mod create;
mod exec;
mod extras;
mod files;
mod history;
mod images;
mod lifecycle;
mod name;
mod observe;
mod ports;
mod recovery;
mod registry;
mod retired;
mod shutdown;
mod volumes;

pub use create::{CreateSpace, MIN_DISK, MIN_MEMORY, MIN_NANO_CPUS};
pub use exec::ExecActivity;
pub use extras::{
    check_env_var, EnvFile, GitPush, RepoClone, DEFAULT_ENV_FILE_PATH, DEFAULT_REPO_DEST,
    MAX_ENV_FILE,
};
pub use files::{normalize_path, workspace_path, DirEntry, FileInfo, FileKind, PutOptions};
pub use history::{HistoryLines, HistoryMark};
pub use name::{SpaceName, INVALID_NAME};
pub use observe::{Observation, ProcessInfo, WorkspaceDisk, WorkspaceSize};
use registry::Entry;
use shutdown::Tracker;
pub use volumes::{VolumeInfo, WORKSPACE};

/// The static init binary bind-mounted into every space.
static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/clawdspace-init"));

/// Mode of the state directory: root only.
pub const STATE_DIR_MODE: u32 = 0o700;

pub(super) struct Inner {
    config: RuntimeConfig,
    store: Store,
    images: ImageStore,
    puller: Puller,
    pool: WorkerPool,
    gpu: Passthrough,
    net: Network,
    cgroup_mode: CgroupMode,
    init_path: PathBuf,
    state_root: PathBuf,
    spaces: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Detached operations running now.
    ops: Arc<Tracker>,
    /// Background tasks (init watchers, the flusher) running now.
    background: Arc<Tracker>,
    /// Set when the runtime closes: background tasks stop.
    stop: tokio::sync::watch::Sender<bool>,
    /// Previous CPU samples of each space (for CPU%).
    cpu: cpu::CpuSamples,
    /// Serialises the check-and-remove of a volume against creates that
    /// reattach it.
    volumes_lock: tokio::sync::Mutex<()>,
    /// Destroyed spaces' directories moved to the trash since its emptying
    /// last began (see [`Runtime::empty_trash`]).
    discarded: std::sync::atomic::AtomicUsize,
    /// A space was destroyed since the housekeeping last gave freed
    /// memory back (see [`Runtime::give_back_memory`]).
    shrunk: std::sync::atomic::AtomicBool,
    /// Destroyed spaces' cgroups, removed off the request path.
    retired: retired::Retired,
    /// The state dir's second path that overlays name their layers by.
    view: OverlayView,
    /// Exclusive lock on the state dir: one runtime per state dir.
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Handle to the runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// Runs `op` on a task of its own and awaits its result. The operation
    /// runs to completion (or rolls back) whatever the caller does:
    /// dropping the returned future (an HTTP client that hung up, a
    /// timeout) cancels nothing.
    async fn detached<T, F>(&self, op: impl FnOnce(Runtime) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let guard = self.inner.ops.track();
        let task = op(self.clone());
        tokio::spawn(async move {
            let _guard = guard;
            task.await
        })
        .await
        .map_err(|e| Error::Container(format!("runtime operation failed: {e}")))?
    }

    /// Mutating operations (create, destroy, pause, resume, start, exec
    /// start, pull) running now.
    pub fn operations_in_flight(&self) -> usize {
        self.inner.ops.running()
    }

    /// Waits until no operation runs, at most `limit`; returns whether
    /// none does (for a clean shutdown).
    pub async fn wait_operations(&self, limit: std::time::Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        self.inner.ops.idle(Some(end)).await
    }

    /// Size and idle slots of the worker pool.
    pub fn workers(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Opens the state directory, starts the worker processes and brings
    /// every recorded space back: running spaces are adopted, spaces whose
    /// init is gone (daemon crash, host reboot) are started again on their
    /// preserved files, half-created ones are rolled back. Must run inside
    /// a tokio runtime.
    pub async fn open(mut config: RuntimeConfig) -> Result<Runtime> {
        // Directories, the init binary, the lock, the stores, the quota
        // probe and the host's DNS servers: one step off the async threads.
        let (config, prepared) = blocking("opening the state directory", move || {
            let prepared = prepare_state(&mut config)?;
            Ok((config, prepared))
        })
        .await?;
        let Prepared {
            init_path,
            lock,
            cgroup_mode,
            images,
            store,
            net,
            view,
        } = prepared;
        let state = config.state_dir.clone();
        let rt = Runtime {
            inner: Arc::new(Inner {
                store,
                puller: Puller::new(images.clone(), config.registries.clone()),
                images,
                pool: WorkerPool::start(&config.worker_exe, config.workers).await?,
                gpu: Passthrough::new(config.gpu.clone()),
                net,
                cgroup_mode,
                init_path,
                state_root: state.join("run"),
                spaces: RwLock::new(BTreeMap::new()),
                ops: Default::default(),
                background: Default::default(),
                stop: tokio::sync::watch::Sender::new(false),
                cpu: Default::default(),
                volumes_lock: tokio::sync::Mutex::new(()),
                discarded: Default::default(),
                shrunk: Default::default(),
                retired: retired::Retired::new(&state),
                config,
                view,
                _lock: lock,
            }),
        };
        rt.inner.gpu.log();
        // Compile the seccomp filters (~10 ms each) off the async threads
        // before the first create needs one.
        tokio::task::spawn_blocking(|| {
            for uid in [1000, 0] {
                if let Err(e) = seccomp::filter(&capabilities_for(uid)) {
                    tracing::error!("compiling the seccomp filter: {e}");
                }
            }
        });
        rt.restore().await?;
        rt.start_flusher();
        Ok(rt)
    }

    /// The network of this runtime (configuration, address pool).
    pub fn network(&self) -> &Network {
        &self.inner.net
    }

    /// Runs a network operation on a blocking thread (it runs `ip`/`nft`).
    async fn net<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Network) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let rt = self.clone();
        tokio::task::spawn_blocking(move || f(&rt.inner.net))
            .await
            .map_err(|e| Error::Network(format!("network task: {e}")))?
    }

    /// Deletes the trash (destroyed spaces' files) in the background, off
    /// the destroy that filled it: one task at a time, which goes on while
    /// more is discarded. A daemon stopped meanwhile finishes it at start.
    fn empty_trash(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.discarded.fetch_add(1, Ordering::AcqRel) > 0 {
            return; // the running task sees it
        }
        // Tracked: closing waits for it (and so frees the state dir).
        let started = self.in_background("emptying the trash", |rt| loop {
            let seen = rt.inner.discarded.load(Ordering::Acquire);
            rt.inner.store.empty_trash();
            let done =
                rt.inner
                    .discarded
                    .compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire);
            if done.is_ok() {
                return;
            }
        });
        if !started {
            // The next destroy tries again.
            self.inner.discarded.store(0, Ordering::Release);
        }
    }

    /// Hands the heap's free memory back to the system once spaces were
    /// destroyed since the last call (blocking; the housekeeping calls it):
    /// glibc keeps what a burst of creates and destroys freed (8–9 MiB
    /// after 500 spaces, measured) until told.
    pub(super) fn give_back_memory(&self) {
        if !self
            .inner
            .shrunk
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only walks and trims the allocator's own
        // arenas; it is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Makes spare network namespaces in the background, off the request
    /// that took one (see [`Network::fill_spares`]); the housekeeping
    /// retries if it cannot start.
    fn refill_spares(&self) {
        self.in_background("a spare network namespace", |rt| {
            if let Err(e) = rt.inner.net.fill_spares() {
                tracing::warn!("making a spare network namespace: {e}");
            }
        });
    }

    /// Writes the record of a space (fsynced when `durable`) on a blocking
    /// thread.
    async fn save(&self, space: Space, durable: bool) -> Result<()> {
        let store = self.inner.store.clone();
        blocking("saving a space record", move || store.save(&space, durable)).await
    }

    /// GPU passthrough of this runtime.
    pub fn gpu(&self) -> &Passthrough {
        &self.inner.gpu
    }

    /// The configuration in use.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The host's cgroup layout.
    pub fn cgroup_mode(&self) -> CgroupMode {
        self.inner.cgroup_mode
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!(
            "{}/{}",
            self.inner.config.cgroup_parent.trim_end_matches('/'),
            id
        )
    }

    /// The cgroup of a space (to read its files).
    pub fn cgroup(&self, space: &Space) -> CgroupPaths {
        CgroupPaths::new(self.inner.cgroup_mode, &self.cgroups_path(&space.id))
    }

    /// Where a space's writable layer lives on the host.
    pub fn upper_dir(&self, space: &Space) -> PathBuf {
        self.inner.store.space_dir(&space.id).join("upper")
    }

    /// Where a space's root filesystem is mounted on the host.
    pub fn rootfs_dir(&self, space: &Space) -> PathBuf {
        self.inner.store.space_dir(&space.id).join("rootfs")
    }

    /// The overlay of a space: its image's layers and its own upper and
    /// work dirs, named through the state dir's view, mounted at its
    /// rootfs dir.
    fn rootfs_plan(&self, space: &Space) -> RootfsPlan {
        let dir = self.space_dir(space);
        let view = &self.inner.view;
        RootfsPlan {
            lowers: space.layers.iter().map(|l| view.path(l)).collect(),
            upper: view.path(&dir.join("upper")),
            work: view.path(&dir.join("work")),
            target: dir.join("rootfs"),
        }
    }

    /// Packets and bytes a space's egress rules dropped (its blocked
    /// networks, and with `allowDomains` everything not allowed; counted
    /// since its policy was last written, i.e. its start or the daemon's).
    /// None for mode `none`. Blocking (a netlink round trip).
    pub fn egress_drops(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let s = self.get(name)?;
        if !s.network.mode.is_networked() {
            return Ok(None);
        }
        self.inner.net.drops(&s.id)
    }

    /// Whether a space's rootfs is mounted (for tests and diagnostics).
    pub fn is_rootfs_mounted(&self, space: &Space) -> bool {
        crate::sandbox::rootfs::is_mounted(&self.rootfs_dir(space))
    }

    /// The libcontainer state directory of a space.
    pub fn container_state_dir(&self, space: &Space) -> PathBuf {
        self.inner.state_root.join(&space.id)
    }

    /// The directory holding everything of a space on the host.
    pub fn space_dir(&self, space: &Space) -> PathBuf {
        self.inner.store.space_dir(&space.id)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.config.state_dir
    }
}

/// Runs `f`, blocking work (file writes, fsyncs, quota ioctls, reads of
/// the image store), on the blocking pool: one hop per operation step.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Container(format!("{what}: task failed: {e}")))?
}

/// What [`prepare_state`] opened.
struct Prepared {
    init_path: PathBuf,
    lock: nix::fcntl::Flock<fs::File>,
    cgroup_mode: CgroupMode,
    images: ImageStore,
    store: Store,
    net: Network,
    view: OverlayView,
}

/// Makes the state directory ready (root only, init binary, lock) and opens
/// what lives in it; sets the default disk limit the filesystem allows.
/// Blocking.
fn prepare_state(config: &mut RuntimeConfig) -> Result<Prepared> {
    use std::os::unix::fs::PermissionsExt;
    let state = &config.state_dir.clone();
    fs::create_dir_all(state).ctx(|| format!("create state dir {}", state.display()))?;
    // Root only, and made so at every start (an upgrade fixes older
    // installs): layers and upper dirs hold whatever images and spaces put
    // there, set-uid binaries included.
    fs::set_permissions(state, fs::Permissions::from_mode(STATE_DIR_MODE))
        .ctx(|| format!("chmod {}", state.display()))?;
    // Taken before anything in the state dir is written: a second runtime
    // must not replace the init binary under the first one's spaces.
    let lock = lock_state_dir(state)?;
    let bin = state.join("bin");
    fs::create_dir_all(&bin).ctx(|| format!("create {}", bin.display()))?;
    let init_path = bin.join("clawdspace-init");
    if fs::read(&init_path).ok().as_deref() != Some(INIT_BINARY) {
        write_atomic(&init_path, INIT_BINARY, true)?;
        fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", init_path.display()))?;
    }
    let tty = state.join("tty");
    fs::create_dir_all(&tty).ctx(|| format!("create {}", tty.display()))?;
    let cgroup_mode = CgroupMode::detect();
    tracing::info!(mode = cgroup_mode.describe(), "cgroups");
    let images = ImageStore::open(state)?.with_limits(config.registries.limits);
    let store = Store::open(state)?;
    volumes::clean_trash(&state.join("volumes"));
    config.default_disk = quota::usable_default(config.default_disk, store.dir());
    let net = Network::new(config.network.clone(), state)?;
    let view = OverlayView::open(state);
    Ok(Prepared {
        init_path,
        lock,
        cgroup_mode,
        images,
        store,
        net,
        view,
    })
}

/// Takes an exclusive lock on `<state>/lock`, so that two daemons never
/// manage the same spaces.
fn lock_state_dir(state: &Path) -> Result<nix::fcntl::Flock<fs::File>> {
    let path = state.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        Error::State(format!(
            "{} is in use by another clawdspace runtime ({e}); stop it first",
            state.display()
        ))
    })
}
