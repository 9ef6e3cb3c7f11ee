//! The runtime: the life of every space, from the daemon's point of view.
//!
//! Async and thread-safe; libcontainer itself runs in worker processes
//! ([`crate::worker`]). Operations on one space are serialised by a per-space
//! lock; operations on different spaces run in parallel across workers.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use nix::fcntl::OFlag;
use tokio::io::unix::AsyncFd;

use crate::cgroups::{CgroupMode, CgroupPaths, SpaceStats};
use crate::config::RuntimeConfig;
use crate::error::{Error, IoContext, Result};
use crate::exec::{self, ExecHandle, ExecOutput, ExecRequest};
use crate::fsutil::{remove_dir_all_if_exists, write_atomic};
use crate::gpu::{GpuRequest, Passthrough};
use crate::image::{resolve_user, Image, ImageStore, ProgressFn, Puller};
use crate::network::{Network, NetworkMode, SpaceNetwork};
use crate::quota;
use crate::sandbox::proc;
use crate::seccomp;
use crate::spec::{build_spec, capabilities_for, space_env};
use crate::store::{new_space_id, Quarantined, Space, SpaceStatus, SpaceUser, Store};
use crate::worker::proto::{CreateRequest, DestroyRequest, Reply, Request, RootfsPlan};
use crate::worker::{PoolStats, WorkerPool};

/// The static init binary bind-mounted into every space.
static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/clawdspace-init"));

/// Smallest memory limit a space may have.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Smallest disk limit in bytes (1 MiB).
pub const MIN_DISK: u64 = 1 << 20;
/// Mode of the state directory: root only.
pub const STATE_DIR_MODE: u32 = 0o700;
/// Smallest CPU limit, in nano-CPUs (0.01 core).
pub const MIN_NANO_CPUS: u64 = 10_000_000;

/// What a new space should be.
#[derive(Debug, Clone, Default)]
pub struct CreateSpace {
    /// Unique name (`^[a-zA-Z0-9_-]{1,63}$`).
    pub name: String,
    /// Image reference in the local store.
    pub image: String,
    /// Memory limit in bytes.
    pub memory: u64,
    /// CPU limit in nano-CPUs.
    pub nano_cpus: u64,
    /// pids limit (default from the config).
    pub pids_limit: Option<i64>,
    /// GPU space: runs as root in `/workspace`, with GPUs.
    pub gpu: bool,
    /// Which GPUs a GPU space gets (default: all).
    pub gpus: Option<GpuRequest>,
    /// How the space is connected (default here: `none`; the API's
    /// default is `internet`).
    pub network: NetworkMode,
    /// Disk limit in bytes (needs project quotas on the state dir).
    pub disk: Option<u64>,
}

/// Whether `name` is a valid space name (SPEC 6.1).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Entry {
    /// Serialises lifecycle operations on this space.
    op: tokio::sync::Mutex<()>,
    rec: Mutex<Space>,
    /// Execs in flight (the auto-sleep worker never pauses such a space).
    execs: AtomicUsize,
    /// `last_activity` changed since the record was last written.
    dirty: std::sync::atomic::AtomicBool,
}

impl Entry {
    fn snapshot(&self) -> Space {
        lock(&self.rec).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
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
    /// Detached operations running now, and a wake-up when one ends.
    ops: AtomicUsize,
    ops_done: tokio::sync::Notify,
    /// Exclusive lock on the state dir: one runtime per state dir.
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Handle to the runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// Decrements an exec counter when dropped.
struct ExecGuard(Arc<Entry>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.0.execs.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a detached operation while it runs.
struct OpGuard(Arc<Inner>);

impl OpGuard {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.ops.fetch_add(1, Ordering::AcqRel);
        OpGuard(inner.clone())
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        self.0.ops.fetch_sub(1, Ordering::AcqRel);
        self.0.ops_done.notify_waiters();
    }
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
        let guard = OpGuard::new(&self.inner);
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
        self.inner.ops.load(Ordering::Acquire)
    }

    /// Waits until no operation runs, at most `limit`; returns whether
    /// none does (for a clean shutdown).
    pub async fn wait_operations(&self, limit: std::time::Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let done = self.inner.ops_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.operations_in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(end, done).await.is_err() {
                return self.operations_in_flight() == 0;
            }
        }
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
        let state = &config.state_dir.clone();
        fs::create_dir_all(state).ctx(|| format!("create state dir {}", state.display()))?;
        // Root only, and made so at every start (an upgrade fixes older
        // installs): layers and upper dirs hold whatever images and spaces
        // put there, set-uid binaries included.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(state, fs::Permissions::from_mode(STATE_DIR_MODE))
                .ctx(|| format!("chmod {}", state.display()))?;
        }
        let bin = state.join("bin");
        fs::create_dir_all(&bin).ctx(|| format!("create {}", bin.display()))?;
        let init_path = bin.join("clawdspace-init");
        if fs::read(&init_path).ok().as_deref() != Some(INIT_BINARY) {
            write_atomic(&init_path, INIT_BINARY, true)?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))
                .ctx(|| format!("chmod {}", init_path.display()))?;
        }
        let lock = lock_state_dir(state)?;
        let cgroup_mode = CgroupMode::detect();
        tracing::info!(mode = cgroup_mode.describe(), "cgroups");
        let images = ImageStore::open(state)?.with_limits(config.registries.limits);
        let store = Store::open(state)?;
        config.default_disk = quota::usable_default(config.default_disk, store.dir());
        let rt = Runtime {
            inner: Arc::new(Inner {
                store,
                puller: Puller::new(images.clone(), config.registries.clone()),
                images,
                pool: WorkerPool::start(&config.worker_exe, config.workers)?,
                gpu: Passthrough::new(config.gpu.clone()),
                net: Network::new(config.network.clone(), state)?,
                cgroup_mode,
                init_path,
                state_root: state.join("run"),
                spaces: RwLock::new(BTreeMap::new()),
                ops: AtomicUsize::new(0),
                ops_done: tokio::sync::Notify::new(),
                config,
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

    /// GPU passthrough of this runtime.
    pub fn gpu(&self) -> &Passthrough {
        &self.inner.gpu
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// Pulls an image from its registry into the store (always asks the
    /// registry; layers already stored are not downloaded again).
    pub async fn pull(&self, reference: &str, progress: Option<ProgressFn>) -> Result<Image> {
        let reference = reference.to_string();
        self.detached(move |rt| async move { rt.inner.puller.pull(&reference, progress).await })
            .await
    }

    /// The stored image `reference`, pulled first if it is not stored.
    pub async fn ensure_image(&self, reference: &str) -> Result<Image> {
        match self.inner.images.get(reference)? {
            Some(img) => Ok(img),
            None => self.pull(reference, None).await,
        }
    }

    /// The puller (download counters for tests and metrics).
    pub fn puller(&self) -> &Puller {
        &self.inner.puller
    }

    /// Removes an image unless a space uses it.
    pub fn remove_image(&self, reference: &str) -> Result<()> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.values().find(|e| lock(&e.rec).image == reference) {
            return Err(Error::ImageInUse(
                reference.to_string(),
                lock(&e.rec).name.clone(),
            ));
        }
        self.inner.images.remove(reference)
    }

    /// Deletes stored layers that no image and no space uses; returns how many.
    pub fn gc_images(&self) -> Result<usize> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        let in_use: Vec<PathBuf> = map
            .values()
            .flat_map(|e| lock(&e.rec).layers.clone())
            .collect();
        self.inner.images.gc(&in_use)
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

    fn entry(&self, name: &str) -> Result<Arc<Entry>> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(e) if !matches!(lock(&e.rec).status, SpaceStatus::Creating) => Ok(e.clone()),
            _ => Err(Error::SpaceNotFound),
        }
    }

    /// Every space (not those still being created), newest first.
    pub fn list(&self) -> Vec<Space> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Space> = map
            .values()
            .map(|e| e.snapshot())
            .filter(|s| !matches!(s.status, SpaceStatus::Creating | SpaceStatus::Destroying))
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.created));
        v
    }

    /// One space by name.
    pub fn get(&self, name: &str) -> Result<Space> {
        let s = self.entry(name)?.snapshot();
        if s.status == SpaceStatus::Destroying {
            return Err(Error::SpaceNotFound);
        }
        Ok(s)
    }

    /// Number of execs running in a space now.
    pub fn execs_in_flight(&self, name: &str) -> usize {
        self.entry(name)
            .map(|e| e.execs.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Records activity on a space now. Kept in memory and written to the
    /// record within a second (see [`Runtime::flush`]), so an exec costs no
    /// disk write.
    pub fn touch(&self, name: &str) -> Result<()> {
        let e = self.entry(name)?;
        lock(&e.rec).last_activity = Utc::now();
        e.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes every record whose activity changed since it was last written.
    pub fn flush(&self) {
        let entries: Vec<Arc<Entry>> = {
            let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for e in entries {
            if e.dirty.swap(false, Ordering::AcqRel) {
                let snap = e.snapshot();
                if matches!(snap.status, SpaceStatus::Creating | SpaceStatus::Destroying) {
                    continue;
                }
                if let Err(err) = self.inner.store.save(&snap, false) {
                    tracing::warn!(space = %snap.name, "saving activity: {err}");
                    e.dirty.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Flushes activity to disk every second while the runtime lives.
    fn start_flusher(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let rt = Runtime { inner };
                let _ = tokio::task::spawn_blocking(move || {
                    rt.flush();
                    if let Err(e) = rt.inner.net.tidy() {
                        tracing::warn!("network housekeeping: {e}");
                    }
                })
                .await;
            }
        });
    }

    /// Creates and starts a space. All or nothing: on any failure nothing of
    /// it remains (no record, mount, cgroup, process or directory). Runs to
    /// the end even if the caller goes away.
    pub async fn create(&self, req: CreateSpace) -> Result<Space> {
        self.detached(move |rt| async move { rt.create_now(req).await })
            .await
    }

    async fn create_now(&self, req: CreateSpace) -> Result<Space> {
        if !is_valid_name(&req.name) {
            return Err(Error::InvalidInput(
                "Invalid name (alphanumeric, _, - only)".into(),
            ));
        }
        if req.memory < MIN_MEMORY {
            return Err(Error::InvalidInput(format!(
                "Invalid memory: at least {} MiB",
                MIN_MEMORY >> 20
            )));
        }
        if req.nano_cpus < MIN_NANO_CPUS {
            return Err(Error::InvalidInput("Invalid cpus: at least 0.01".into()));
        }
        let pids_limit = req.pids_limit.unwrap_or(self.inner.config.pids_limit);
        if pids_limit < 1 {
            return Err(Error::InvalidInput("Invalid pids limit: at least 1".into()));
        }
        if let Some(d) = req.disk {
            if d < MIN_DISK {
                return Err(Error::InvalidInput("Invalid disk: at least 1 MiB".into()));
            }
            quota::check_available(self.inner.store.dir())?;
        }
        // No limit asked for: the server's default, if quotas allow one.
        let disk = req.disk.or(self.inner.config.default_disk);
        if self.entry(&req.name).is_ok() {
            return Err(Error::SpaceExists);
        }
        let gpus = match (req.gpu, &req.gpus) {
            (true, r) => {
                let r = r.clone().unwrap_or(GpuRequest::All);
                // Reads CDI specs or the driver's files: off the async threads.
                let rt = self.clone();
                let assignment = tokio::task::spawn_blocking(move || rt.inner.gpu.assign(&r))
                    .await
                    .map_err(|e| Error::Gpu(format!("GPU task: {e}")))??;
                tracing::info!(space = %req.name, backend = assignment.backend.as_str(),
                    devices = ?assignment.devices, "GPUs assigned");
                Some(assignment)
            }
            (false, Some(_)) => {
                return Err(Error::InvalidInput(
                    "Invalid gpus: only GPU spaces get GPUs".into(),
                ))
            }
            (false, None) => None,
        };
        self.ensure_image(&req.image).await?;
        let image = self.inner.images.resolve(&req.image)?;
        let user = if req.gpu {
            SpaceUser {
                name: "root".into(),
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
                home: "/root".into(),
                workdir: "/workspace".into(),
            }
        } else {
            // An image without a `sandbox` user still works: uid/gid 1000,
            // as `docker run --user 1000:1000` would.
            let layers = image.layer_dirs.clone();
            let pw = tokio::task::spawn_blocking(move || resolve_user(&layers, "sandbox"))
                .await
                .map_err(|e| Error::Container(format!("user lookup task: {e}")))?
                .map_err(|e| Error::InvalidInput(format!("image {}: {e}", req.image)))?;
            SpaceUser {
                name: "sandbox".into(),
                uid: pw.as_ref().map_or(1000, |p| p.uid),
                gid: pw.as_ref().map_or(1000, |p| p.gid),
                additional_gids: pw.as_ref().map(|p| p.groups.clone()).unwrap_or_default(),
                home: "/home/sandbox".into(),
                workdir: "/home/sandbox".into(),
            }
        };
        let now = Utc::now();
        let space = Space {
            name: req.name.clone(),
            id: new_space_id(),
            image: req.image.clone(),
            memory: req.memory,
            nano_cpus: req.nano_cpus,
            pids_limit,
            gpu: req.gpu,
            gpus,
            created: now,
            started: now,
            last_activity: now,
            status: SpaceStatus::Creating,
            init_pid: None,
            init_start_time: None,
            env: space_env(&image.image.config.env, &req.name, &user.home),
            user,
            layers: image.layer_dirs,
            network: SpaceNetwork {
                mode: req.network,
                address: None,
            },
            disk,
        };
        // Reserve the name: a concurrent create of the same name sees it.
        let entry = Arc::new(Entry {
            op: tokio::sync::Mutex::new(()),
            rec: Mutex::new(space.clone()),
            execs: AtomicUsize::new(0),
            dirty: Default::default(),
        });
        let _op = entry.op.lock().await;
        {
            let mut map = self.inner.spaces.write().unwrap_or_else(|p| p.into_inner());
            if map.contains_key(&req.name) {
                return Err(Error::SpaceExists);
            }
            map.insert(req.name.clone(), entry.clone());
        }
        let started = async {
            // First of all, so that a crash from here on leaves a directory
            // known never to have held a record (removed at startup).
            self.inner.store.begin(&space.id)?;
            if req.network == NetworkMode::Internet {
                let id = space.id.clone();
                let addr = self.net(move |n| n.allocate(&id)).await?;
                lock(&entry.rec).network.address = Some(addr);
            }
            self.start_init(&entry).await
        };
        match started.await {
            Ok(s) => {
                tracing::info!(space = %s.name, id = %s.short_id(), "created");
                Ok(s)
            }
            Err(e) => {
                tracing::warn!(space = %req.name, "create failed, rolling back: {e}");
                let rollback = self.teardown(&space).await;
                if let Err(e2) = &rollback {
                    tracing::error!(space = %req.name, "rollback failed: {e2}");
                }
                let e = e.rolled_back(rollback);
                self.inner
                    .spaces
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&req.name);
                Err(e)
            }
        }
    }

    /// Writes the bundle, mounts the rootfs and starts the init of the space
    /// in `entry`; records it as running. Caller holds the op lock.
    async fn start_init(&self, entry: &Arc<Entry>) -> Result<Space> {
        let space = entry.snapshot();
        let dir = self.inner.store.space_dir(&space.id);
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        if let Some(bytes) = space.disk {
            // Never without its limit: a space whose limit cannot be applied
            // (say a reboot lost `prjquota`) stays stopped until it can.
            let (upper, work) = (dir.join("upper"), dir.join("work"));
            [&upper, &work]
                .iter()
                .try_for_each(|d| fs::create_dir_all(d).ctx(|| format!("create {}", d.display())))
                .and_then(|()| quota::apply(&upper, &work, &space.id, bytes))
                .map_err(|e| quota::not_applied(&space.name, bytes, e))?;
        }
        write_filter(&dir, &space).await?;
        let mut spec = build_spec(&space, &self.cgroups_path(&space.id), &self.inner.init_path)?;
        if let Some(a) = space.gpus.clone() {
            // Reading CDI specs takes milliseconds: off the async threads.
            let rt = self.clone();
            spec = tokio::task::spawn_blocking(move || {
                rt.inner.gpu.apply(&mut spec, &a).map(|()| spec)
            })
            .await
            .map_err(|e| Error::Gpu(format!("GPU task: {e}")))??;
            // Execs get the environment the GPU runtime gave the init.
            if let Some(env) = spec.process().as_ref().and_then(|p| p.env().clone()) {
                lock(&entry.rec).env = env;
            }
        }
        if space.network.mode == NetworkMode::Internet {
            let (s, d) = (space.clone(), dir.clone());
            self.net(move |n| n.prepare(&s, &d))
                .await?
                .apply(&mut spec)?;
        }
        let config = serde_json::to_vec(&spec).map_err(|e| Error::Container(e.to_string()))?;
        write_atomic(&dir.join("config.json"), &config, false)?;
        let req = Request::Create(CreateRequest {
            id: space.id.clone(),
            state_root: self.inner.state_root.clone(),
            bundle: dir.clone(),
            rootfs: RootfsPlan {
                lowers: space.layers.clone(),
                upper: dir.join("upper"),
                work: dir.join("work"),
                target: dir.join("rootfs"),
            },
            workdir: space.user.workdir.clone(),
            uid: space.user.uid,
            gid: space.user.gid,
        });
        let (pid, start_time) = match self.inner.pool.call(&req, &[]).await?.0 {
            Reply::Created { pid, start_time } => (pid, start_time),
            Reply::Failed { error } => return Err(error.into()),
            other => {
                return Err(Error::Container(format!(
                    "unexpected worker reply {other:?}"
                )))
            }
        };
        let now = Utc::now();
        let snap = {
            let mut r = lock(&entry.rec);
            r.status = SpaceStatus::Running;
            r.init_pid = Some(pid);
            r.init_start_time = Some(start_time);
            r.started = now;
            r.last_activity = now;
            r.clone()
        };
        self.inner.store.save(&snap, true)?;
        self.watch_init(&snap);
        Ok(snap)
    }

    /// Kills and unmounts a space, removes its network and deletes all its
    /// files.
    async fn teardown(&self, space: &Space) -> Result<()> {
        let dir = self.inner.store.space_dir(&space.id);
        let space_id = space.id.clone();
        let req = Request::Destroy(DestroyRequest {
            id: space.id.clone(),
            state_root: self.inner.state_root.clone(),
            rootfs: dir.join("rootfs"),
            cgroup: Some(PathBuf::from(self.cgroups_path(&space.id))),
        });
        self.simple(req).await?;
        // Without container state (a worker killed half-way through the
        // create) the worker cannot find the cgroup: remove it by path.
        let cgroup = self.cgroups_path(&space.id);
        tokio::task::spawn_blocking(move || remove_cgroup(&cgroup))
            .await
            .map_err(|e| Error::Container(format!("removing the cgroup: {e}")))??;
        // By id: also what a create that crashed half-way left.
        let id = space.id.clone();
        self.net(move |n| n.release(&id)).await?;
        // An upper dir can hold gigabytes: delete it off the async threads.
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            quota::release(&dir.join("upper"));
            store.remove(&space_id)
        })
        .await
        .map_err(|e| Error::Container(format!("removing space files: {e}")))?
    }

    /// Destroys a space whatever its state. Nothing of it remains. Runs to
    /// the end even if the caller goes away.
    pub async fn destroy(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.destroy_now(&name).await })
            .await
    }

    async fn destroy_now(&self, name: &str) -> Result<()> {
        let entry = self.entry(name)?;
        let _op = entry.op.lock().await;
        let snap = {
            let mut r = lock(&entry.rec);
            if r.status == SpaceStatus::Destroying && !self.is_current(name, &entry) {
                return Err(Error::SpaceNotFound);
            }
            r.status = SpaceStatus::Destroying;
            r.clone()
        };
        self.inner.store.save(&snap, true)?;
        self.teardown(&snap).await?;
        let mut map = self.inner.spaces.write().unwrap_or_else(|p| p.into_inner());
        if map.get(name).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            map.remove(name);
        }
        tracing::info!(space = %name, "destroyed");
        Ok(())
    }

    fn is_current(&self, name: &str, entry: &Arc<Entry>) -> bool {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).is_some_and(|e| Arc::ptr_eq(e, entry))
    }

    /// Runs an idempotent request (destroy, pause, resume) that answers
    /// `Done`. A worker that dies on it is replaced and asked again, so a
    /// rollback or destroy does not leave leftovers behind.
    async fn simple(&self, req: Request) -> Result<()> {
        // libcontainer rewrites its state file in place (truncate, write)
        // on pause and resume: a worker killed in between leaves it torn.
        // Keep the old one to put back before asking again.
        let state_file = match &req {
            Request::Pause { id, state_root } | Request::Resume { id, state_root } => {
                Some(state_root.join(id).join("state.json"))
            }
            _ => None,
        };
        let saved = match &state_file {
            Some(f) => tokio::fs::read(f).await.ok(),
            None => None,
        };
        let mut attempt = 0;
        let answer = loop {
            match self.inner.pool.call(&req, &[]).await {
                Err(e) if crate::worker::is_worker_death(&e) && attempt < 10 => {
                    attempt += 1;
                    tracing::warn!("worker died during {req:?}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                    if let (Some(f), Some(old)) = (&state_file, &saved) {
                        restore_if_torn(f, old).await?;
                    }
                }
                r => break r?,
            }
        };
        match answer.0 {
            Reply::Done => Ok(()),
            Reply::Failed { error } => Err(error.into()),
            other => Err(Error::Container(format!(
                "unexpected worker reply {other:?}"
            ))),
        }
    }

    /// Records running/paused. Not fsynced: after a crash the runtime reads
    /// the real state from the freezer anyway.
    fn set_status(&self, entry: &Entry, status: SpaceStatus) -> Result<Space> {
        let snap = {
            let mut r = lock(&entry.rec);
            r.status = status;
            r.clone()
        };
        entry.dirty.store(false, Ordering::Release);
        self.inner.store.save(&snap, false)?;
        Ok(snap)
    }

    /// Freezes every process of a running space. Paused: no-op. Stopped:
    /// [`Error::NotRunning`].
    pub async fn pause(&self, name: &str) -> Result<Space> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.pause_now(&name).await })
            .await
    }

    async fn pause_now(&self, name: &str) -> Result<Space> {
        let entry = self.entry(name)?;
        let _op = entry.op.lock().await;
        let s = entry.snapshot();
        match s.status {
            SpaceStatus::Paused => Ok(s),
            SpaceStatus::Running => {
                self.simple(Request::Pause {
                    id: s.id.clone(),
                    state_root: self.inner.state_root.clone(),
                })
                .await?;
                self.set_status(&entry, SpaceStatus::Paused)
            }
            _ => Err(Error::NotRunning),
        }
    }

    /// Pauses a running space if nothing ran in it for longer than `idle`
    /// and no exec is in flight (the auto-sleep rule); returns whether it
    /// paused it.
    pub async fn pause_if_idle(&self, name: &str, idle: std::time::Duration) -> Result<bool> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.pause_if_idle_now(&name, idle).await })
            .await
    }

    async fn pause_if_idle_now(&self, name: &str, idle: std::time::Duration) -> Result<bool> {
        let entry = self.entry(name)?;
        let _op = entry.op.lock().await;
        let s = entry.snapshot();
        let idle_for = (Utc::now() - s.last_activity).to_std().unwrap_or_default();
        if s.status != SpaceStatus::Running
            || entry.execs.load(Ordering::Acquire) > 0
            || idle_for <= idle
        {
            return Ok(false);
        }
        self.simple(Request::Pause {
            id: s.id.clone(),
            state_root: self.inner.state_root.clone(),
        })
        .await?;
        self.set_status(&entry, SpaceStatus::Paused)?;
        Ok(true)
    }

    /// Thaws a paused space. Running: no-op. Stopped: [`Error::NotRunning`].
    pub async fn resume(&self, name: &str) -> Result<Space> {
        let name = name.to_string();
        self.detached(move |rt| async move {
            let entry = rt.entry(&name)?;
            let _op = entry.op.lock().await;
            rt.resume_locked(&entry).await
        })
        .await
    }

    async fn resume_locked(&self, entry: &Arc<Entry>) -> Result<Space> {
        let s = entry.snapshot();
        match s.status {
            SpaceStatus::Running => Ok(s),
            SpaceStatus::Paused => {
                self.simple(Request::Resume {
                    id: s.id.clone(),
                    state_root: self.inner.state_root.clone(),
                })
                .await?;
                self.set_status(entry, SpaceStatus::Running)
            }
            _ => Err(Error::NotRunning),
        }
    }

    /// Makes a space run: thaws a paused one, starts the init of a stopped
    /// one again (files kept), does nothing to a running one. Counts as
    /// activity.
    pub async fn start(&self, name: &str) -> Result<Space> {
        let name = name.to_string();
        self.detached(move |rt| async move { rt.start_now(&name).await })
            .await
    }

    async fn start_now(&self, name: &str) -> Result<Space> {
        let entry = self.entry(name)?;
        let _op = entry.op.lock().await;
        let s = entry.snapshot();
        let s = match s.status {
            SpaceStatus::Stopped => self.restart_locked(&entry).await?,
            SpaceStatus::Paused => self.resume_locked(&entry).await?,
            SpaceStatus::Running => s,
            _ => return Err(Error::SpaceNotFound),
        };
        self.touch(name)?;
        Ok(s)
    }

    /// Starts the init of a space whose init is gone, on its kept files.
    async fn restart_locked(&self, entry: &Arc<Entry>) -> Result<Space> {
        let s = entry.snapshot();
        match self.start_init(entry).await {
            Ok(s) => {
                tracing::info!(space = %s.name, "init started again");
                Ok(s)
            }
            Err(e) => {
                let mut r = lock(&entry.rec);
                r.status = SpaceStatus::Stopped;
                r.init_pid = None;
                let snap = r.clone();
                drop(r);
                tracing::error!(space = %s.name, "could not start init: {e}");
                if let Err(se) = self.inner.store.save(&snap, true) {
                    tracing::error!(space = %s.name,
                        "recording it as stopped failed too (its record still says {}): {se}",
                        s.status.as_str());
                }
                Err(e)
            }
        }
    }

    /// Starts a command in a space and returns its pipes. A paused space is
    /// thawed first; a stopped one gives [`Error::NotRunning`]. The start
    /// runs to the end even if the caller goes away; the process is then
    /// killed with its dropped handle (see [`crate::worker::ExitReceiver`]).
    pub async fn exec_spawn(
        &self,
        name: &str,
        req: &ExecRequest,
    ) -> Result<(ExecHandle, ExecActivity)> {
        let name = name.to_string();
        // What the start needs: stdin's bytes stay with the caller.
        let req = ExecRequest {
            command: req.command.clone(),
            cwd: req.cwd.clone(),
            env: req.env.clone(),
            user: req.user.clone(),
            timeout: req.timeout,
            stdin: req.stdin.as_ref().map(|_| Vec::new()),
            output_limit: req.output_limit,
            tty: req.tty,
        };
        self.detached(move |rt| async move { rt.exec_spawn_now(&name, &req).await })
            .await
    }

    async fn exec_spawn_now(
        &self,
        name: &str,
        req: &ExecRequest,
    ) -> Result<(ExecHandle, ExecActivity)> {
        let entry = self.entry(name)?;
        entry.execs.fetch_add(1, Ordering::AcqRel);
        let guard = ExecActivity {
            rt: self.clone(),
            name: name.to_string(),
            _g: ExecGuard(entry.clone()),
        };
        // Under the op lock, so the auto-sleep check (which sees this exec
        // counted) and this status check cannot interleave.
        let s = {
            let _op = entry.op.lock().await;
            match entry.snapshot().status {
                SpaceStatus::Running => entry.snapshot(),
                SpaceStatus::Paused => self.resume_locked(&entry).await?,
                SpaceStatus::Stopped => return Err(Error::NotRunning),
                _ => return Err(Error::SpaceNotFound),
            }
        };
        let _ = self.touch(name);
        let (uid, gid, gids) = if req.cwd.is_none() && req.user.is_none() {
            let u = &s.user;
            (u.uid, u.gid, u.additional_gids.clone())
        } else {
            // Both read the space's files: off the async threads.
            let (rootfs, space, cwd, user) = (
                self.rootfs_dir(&s),
                s.clone(),
                req.cwd.clone(),
                req.user.clone(),
            );
            tokio::task::spawn_blocking(move || {
                if let Some(cwd) = &cwd {
                    check_dir_in_space(&rootfs, cwd)?;
                }
                exec_user(&rootfs, &space, user.as_deref())
            })
            .await
            .map_err(|e| Error::Container(format!("exec user lookup task: {e}")))??
        };
        let mut env = s.env.clone();
        env.extend(req.env.iter().cloned());
        let wreq = crate::worker::proto::ExecRequest {
            id: s.id.clone(),
            state_root: self.inner.state_root.clone(),
            bundle: self.inner.store.space_dir(&s.id),
            args: req.command.argv(),
            env,
            cwd: req.cwd.clone().unwrap_or_else(|| s.user.workdir.clone()),
            uid,
            gid,
            additional_gids: gids,
            space_uid: s.user.uid,
            tty: None,
        };
        let handle = match req.tty {
            Some((cols, rows)) => self.spawn_tty(wreq, cols, rows).await?,
            None => self.spawn_piped(wreq, req.stdin.is_some()).await?,
        };
        Ok((handle, guard))
    }

    async fn spawn_piped(
        &self,
        wreq: crate::worker::proto::ExecRequest,
        with_stdin: bool,
    ) -> Result<ExecHandle> {
        let (stdin_child, stdin_ours) = if with_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = fs::File::open("/dev/null").ctx(|| "open /dev/null".into())?;
            (OwnedFd::from(null), None)
        };
        let (stdout_ours, stdout_child) = pipe()?;
        let (stderr_ours, stderr_child) = pipe()?;
        let fds = [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ];
        let (reply, exit) = self.inner.pool.call(&Request::Exec(wreq), &fds).await?;
        drop((stdin_child, stdout_child, stderr_child));
        let (pid, exit) = spawned(reply, exit)?;
        Ok(ExecHandle {
            pid,
            stdin: stdin_ours.map(exec::sender).transpose()?,
            stdout: exec::receiver(stdout_ours)?,
            stderr: exec::receiver(stderr_ours)?,
            exit,
            pty: None,
        })
    }

    /// Starts a process on a PTY: libcontainer sends the master to a unix
    /// socket we listen on. The process itself is the one a piped exec
    /// would start ([`crate::spec::exec_process`]), on a terminal.
    async fn spawn_tty(
        &self,
        mut wreq: crate::worker::proto::ExecRequest,
        cols: u16,
        rows: u16,
    ) -> Result<ExecHandle> {
        let dir = self.inner.config.state_dir.join("tty");
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let tag = &new_space_id()[..16];
        let sock_path = dir.join(format!("{tag}.sock"));
        let listener = tokio::net::UnixListener::bind(&sock_path)
            .ctx(|| format!("bind {}", sock_path.display()))?;
        wreq.tty = Some(crate::worker::proto::TtyRequest {
            console_socket: sock_path.clone(),
            cols,
            rows,
        });
        let accept = async {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(|e| Error::io("accept console socket", e))?;
            crate::worker::recv_fd(&stream).await
        };
        let req = Request::Exec(wreq);
        let result = async {
            let (reply, exit) = self.inner.pool.call(&req, &[]).await?;
            let (pid, exit) = spawned(reply, exit)?;
            let master = tokio::time::timeout(std::time::Duration::from_secs(10), accept)
                .await
                .map_err(|_| Error::Container("no PTY from the exec'd process".into()))??;
            Ok::<_, Error>((pid, exit, master))
        }
        .await;
        let _ = fs::remove_file(&sock_path);
        let (pid, exit, master) = result?;
        exec::set_winsize(&master, cols, rows);
        let (stdout, stdin) = exec::pty_ends(&master)?;
        // A TTY merges stderr into the terminal: stderr is an empty pipe.
        let (stderr_ours, stderr_w) = pipe()?;
        drop(stderr_w);
        Ok(ExecHandle {
            pid,
            stdin: Some(stdin),
            stdout,
            stderr: exec::receiver(stderr_ours)?,
            exit,
            pty: Some(Arc::new(master)),
        })
    }

    /// Runs a command to completion and returns its captured output.
    pub async fn exec(&self, name: &str, req: ExecRequest) -> Result<ExecOutput> {
        let (handle, activity) = self.exec_spawn(name, &req).await?;
        let out = exec::collect(handle, req.stdin, req.output_limit, req.timeout).await;
        drop(activity);
        Ok(out)
    }

    /// Resource use of a space.
    pub fn stats(&self, name: &str) -> Result<SpaceStats> {
        let s = self.get(name)?;
        Ok(self.cgroup(&s).stats())
    }

    /// Watches the init of a running space; when it dies unexpectedly the
    /// space is started again (restart policy `unless-stopped`).
    fn watch_init(&self, space: &Space) {
        let Some(pid) = space.init_pid else { return };
        let Ok(pidfd) = proc::pidfd_open(pid) else {
            return;
        };
        // SAFETY: `pidfd` is owned by the AsyncFd for its whole life.
        let Ok(afd) =
            (unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) })
        else {
            return;
        };
        // Weak: a watcher must not keep the runtime (and its workers) alive.
        let weak = Arc::downgrade(&self.inner);
        let name = space.name.clone();
        let id = space.id.clone();
        tokio::spawn(async move {
            let _ = afd.readable().await;
            drop(afd);
            if let Some(inner) = weak.upgrade() {
                Runtime { inner }.on_init_exit(&name, &id, pid).await;
            }
        });
    }

    async fn on_init_exit(&self, name: &str, id: &str, pid: i32) {
        let Ok(entry) = self.entry(name) else { return };
        let _op = entry.op.lock().await;
        let s = entry.snapshot();
        // Destroyed, re-created, or restarted meanwhile: not ours to handle.
        if s.id != id
            || s.init_pid != Some(pid)
            || !matches!(s.status, SpaceStatus::Running | SpaceStatus::Paused)
        {
            return;
        }
        tracing::warn!(space = %name, "init exited; starting it again");
        // A failure is logged (error level) and recorded as stopped by
        // restart_locked.
        let _ = self.restart_locked(&entry).await;
    }

    /// Brings recorded spaces back at startup. A space whose record cannot
    /// be read is quarantined, never deleted; only directories that provably
    /// never held a record (and interrupted deletions) are removed.
    async fn restore(&self) -> Result<()> {
        let store = self.inner.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_all())
            .await
            .map_err(|e| Error::State(format!("loading records: {e}")))??;
        for (id, reason) in loaded.unreadable {
            self.quarantine(&id, &reason).await;
        }
        let (spaces, unrecorded, trash) = (loaded.spaces, loaded.unrecorded, loaded.trash);
        let kept: Vec<Space> = spaces
            .iter()
            .filter(|s| !matches!(s.status, SpaceStatus::Creating | SpaceStatus::Destroying))
            .cloned()
            .collect();
        if let Err(e) = self.net(move |n| n.restore(&kept)).await {
            // Spaces still come back; networked ones fail to start until
            // the network can be set up.
            tracing::error!("restoring the network: {e}");
        }
        for dir in trash {
            tracing::info!(dir = %dir.display(), "finishing an interrupted deletion");
            let removed = tokio::task::spawn_blocking(move || remove_dir_all_if_exists(&dir)).await;
            if let Ok(Err(e)) = removed {
                tracing::error!("finishing an interrupted deletion: {e}");
            }
        }
        for id in unrecorded {
            tracing::warn!(id = %id, "removing what a create that crashed before its first record left");
            let stub = Space {
                id,
                ..placeholder()
            };
            if let Err(e) = self.teardown(&stub).await {
                tracing::error!("cleanup failed: {e}");
            }
        }
        for s in spaces {
            match s.status {
                SpaceStatus::Creating | SpaceStatus::Destroying => {
                    tracing::info!(space = %s.name, "finishing interrupted create/destroy");
                    if let Err(e) = self.teardown(&s).await {
                        tracing::error!(space = %s.name, "cleanup failed: {e}");
                    }
                    continue;
                }
                _ => {}
            }
            let alive = matches!((s.init_pid, s.init_start_time), (Some(p), Some(t)) if proc::is_same_process(p, t));
            let mut s = s;
            if alive {
                s.status = if self.cgroup(&s).is_frozen() {
                    SpaceStatus::Paused
                } else {
                    SpaceStatus::Running
                };
            }
            let entry = Arc::new(Entry {
                op: tokio::sync::Mutex::new(()),
                rec: Mutex::new(s.clone()),
                execs: AtomicUsize::new(0),
                dirty: Default::default(),
            });
            self.inner
                .spaces
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s.name.clone(), entry.clone());
            if alive {
                // Execs need the filter in the bundle (a space started by
                // an older daemon may lack it).
                let dir = self.inner.store.space_dir(&s.id);
                if let Err(e) = write_filter(&dir, &s).await {
                    tracing::error!(space = %s.name, "writing its seccomp filter: {e}");
                }
                // So may its rootfs mount lack nosuid,nodev.
                let rootfs = self.rootfs_dir(&s);
                let hardened = tokio::task::spawn_blocking(move || {
                    use crate::sandbox::rootfs::{harden, is_mounted};
                    if is_mounted(&rootfs) {
                        harden(&rootfs)
                    } else {
                        Ok(())
                    }
                })
                .await;
                if let Ok(Err(e)) = hardened {
                    tracing::error!(space = %s.name, "{e}");
                }
                tracing::info!(space = %s.name, status = s.status.as_str(), "adopted running space");
                self.watch_init(&s);
            } else {
                tracing::info!(space = %s.name, "init gone (crash or reboot); starting it again");
                let _op = entry.op.lock().await;
                // A failure is logged (error level) and recorded as stopped
                // by restart_locked; the space stays listed.
                let _ = self.restart_locked(&entry).await;
            }
        }
        Ok(())
    }

    /// Moves the directory of space `id`, whose record cannot be read, into
    /// the quarantine. Its processes keep running and its files and mounts
    /// are left as they are (they move with the directory); only its network
    /// link goes, since its address, unknown without the record, may be
    /// given to a new space.
    async fn quarantine(&self, id: &str, reason: &str) {
        tracing::error!(id = %id, reason = %reason,
            "SPACE RECORD UNREADABLE: quarantining the space (nothing is deleted; see GET /api/system and docs/OPERATIONS.md)");
        let cut = id.to_string();
        if let Err(e) = self.net(move |n| n.cut(&cut)).await {
            tracing::error!(id = %id, "cutting the quarantined space's network: {e}");
        }
        let (store, i, r) = (self.inner.store.clone(), id.to_string(), reason.to_string());
        match tokio::task::spawn_blocking(move || store.quarantine(&i, &r)).await {
            Ok(Ok(q)) => tracing::error!(id = %id, dir = %q.dir.display(), "space quarantined"),
            Ok(Err(e)) => {
                tracing::error!(id = %id, "quarantining failed (the space is left where it is): {e}")
            }
            Err(e) => tracing::error!(id = %id, "quarantine task: {e}"),
        }
    }

    /// Spaces moved aside because their record could not be read (see
    /// docs/OPERATIONS.md for how to recover one).
    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.inner.store.quarantined()
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

/// Held while an exec runs: counts it as in flight and records activity at
/// its end.
pub struct ExecActivity {
    rt: Runtime,
    name: String,
    _g: ExecGuard,
}

impl Drop for ExecActivity {
    fn drop(&mut self) {
        let _ = self.rt.touch(&self.name);
    }
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

/// Refuses a working directory that is not a directory inside the space
/// whose root is `rootfs`, resolving it as the space would (symlinks stay
/// inside its root). Blocking.
fn check_dir_in_space(rootfs: &Path, dir: &str) -> Result<()> {
    use crate::inroot::{Resolve, Root};
    let bad = |why: &str| Error::InvalidInput(format!("working directory {dir}: {why}"));
    if !dir.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    let root = Root::open(rootfs).ctx(|| "open the space's root".into())?;
    match root.dir(Path::new(dir), Resolve::InRoot) {
        Ok(_) => Ok(()),
        Err(e) => match nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            nix::errno::Errno::ENOENT => Err(bad("no such directory in the space")),
            nix::errno::Errno::ENOTDIR => Err(bad("not a directory")),
            _ => Err(bad(&e.to_string())),
        },
    }
}

/// uid, gid and groups of an exec as `user` (a name from the space's own
/// `/etc/passwd`, `root`, or a number; none: the space's user) in `space`,
/// whose mounted root is `rootfs`. Blocking.
fn exec_user(rootfs: &Path, space: &Space, user: Option<&str>) -> Result<(u32, u32, Vec<u32>)> {
    let Some(u) = user.filter(|u| !u.is_empty()) else {
        let su = &space.user;
        return Ok((su.uid, su.gid, su.additional_gids.clone()));
    };
    if let Ok(uid) = u.parse::<u32>() {
        return Ok((uid, uid, Vec::new()));
    }
    if u == "root" {
        return Ok((0, 0, Vec::new()));
    }
    // The merged view, with users added inside the space; nothing else.
    let unknown = || Error::InvalidInput(format!("unknown user '{u}' in space {}", space.name));
    match resolve_user(&[rootfs.to_path_buf()], u) {
        Ok(Some(p)) => Ok((p.uid, p.gid, p.groups)),
        Ok(None) => Err(unknown()),
        Err(Error::InvalidInput(why)) => Err(Error::InvalidInput(format!(
            "user '{u}' in space {}: cannot read {why}",
            space.name
        ))),
        Err(e) => Err(e),
    }
}

/// The pid and exit channel of a `Spawned` reply.
fn spawned(
    reply: Reply,
    exit: Option<crate::worker::ExitReceiver>,
) -> Result<(i32, crate::worker::ExitReceiver)> {
    match reply {
        Reply::Spawned { pid } => Ok((
            pid,
            exit.ok_or_else(|| Error::Container("no exit channel for exec".into()))?,
        )),
        Reply::Failed { error } => Err(error.into()),
        other => Err(Error::Container(format!(
            "unexpected worker reply {other:?}"
        ))),
    }
}

/// Puts `old` back into libcontainer's state file `path` if what is there
/// now is not JSON.
async fn restore_if_torn(path: &Path, old: &[u8]) -> Result<()> {
    let now = tokio::fs::read(path).await.unwrap_or_default();
    if serde_json::from_slice::<serde_json::Value>(&now).is_ok() {
        return Ok(());
    }
    tracing::warn!(path = %path.display(), "restoring a torn container state file");
    let (path, old) = (path.to_path_buf(), old.to_vec());
    tokio::task::spawn_blocking(move || write_atomic(&path, &old, true))
        .await
        .map_err(|e| Error::Container(format!("restoring the container state: {e}")))?
}

/// Kills what is left in cgroup `path` (e.g. processes libcontainer cloned
/// for a create whose worker died) and removes its directory in every
/// hierarchy. Blocking.
fn remove_cgroup(path: &str) -> Result<()> {
    let dirs = crate::purge::parent_dirs(path);
    for d in &dirs {
        crate::purge::thaw_and_kill(d);
    }
    for _ in 0..100 {
        let gone = dirs.iter().all(|d| match fs::remove_dir(d) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        });
        if gone {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(Error::Container(format!(
        "cgroup {path} still has processes after SIGKILL"
    )))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe", e.into()))?;
    Ok((r, w))
}

/// Writes the compiled seccomp filter of `space` into its bundle `dir`, off
/// the async threads: the first use of a capability set compiles it (~10 ms,
/// or waits for the compile that [`Runtime::open`] started).
async fn write_filter(dir: &Path, space: &Space) -> Result<()> {
    let path = dir.join(seccomp::FILTER_FILE);
    let uid = space.user.uid;
    tokio::task::spawn_blocking(move || {
        let filter = seccomp::filter(&capabilities_for(uid))?;
        write_atomic(&path, &filter, false)
    })
    .await
    .map_err(|e| Error::Container(format!("seccomp filter task: {e}")))?
}

fn placeholder() -> Space {
    let now = Utc::now();
    Space {
        name: String::new(),
        id: String::new(),
        image: String::new(),
        memory: 0,
        nano_cpus: 0,
        pids_limit: 0,
        gpu: false,
        gpus: None,
        created: now,
        started: now,
        last_activity: now,
        status: SpaceStatus::Destroying,
        init_pid: None,
        init_start_time: None,
        user: SpaceUser {
            name: String::new(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: String::new(),
            workdir: String::new(),
        },
        env: Vec::new(),
        layers: Vec::new(),
        network: Default::default(),
        disk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        for ok in [
            "my-space",
            "my_space",
            "MySpace123",
            "test-123_abc",
            &"a".repeat(63),
        ] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "invalid name!", "a.b", "a/b", "é", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
