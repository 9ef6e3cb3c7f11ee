//! Creating a space: validation of the request, then all or nothing (a
//! failed create is rolled back completely).

use std::sync::Arc;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::gpu::GpuRequest;
use crate::image::resolve_user;
use crate::network::{Egress, NetworkMode, PublishedPort, SpaceNetwork};
use crate::quota;
use crate::space_id::new_space_id;
use crate::spec::space_env;
use crate::store::{Space, SpaceStatus, SpaceUser};

use super::extras::{self, merge_env, EnvFile, RepoClone};
use super::name::SpaceName;
use super::registry::{lock, Entry};
use super::{blocking, Runtime};
use crate::timing::Phases;

/// Smallest memory limit a space may have.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Smallest disk limit in bytes (1 MiB).
pub const MIN_DISK: u64 = 1 << 20;

/// Smallest CPU limit, in nano-CPUs (0.01 core).
pub const MIN_NANO_CPUS: u64 = 10_000_000;

/// What a new space should be.
#[derive(Debug, Clone)]
pub struct CreateSpace {
    /// Unique name, validated where it was made.
    pub name: SpaceName,
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
    /// TCP ports published on the host's addresses (needs
    /// `CLAWDSPACE_PUBLISH_PORTS=1` and network `internet`).
    pub publish: Vec<PublishedPort>,
    /// Egress policy beyond the mode (checked at create; needs a
    /// networked mode).
    pub egress: Egress,
    /// Disk limit in bytes (needs project quotas on the state dir).
    pub disk: Option<u64>,
    /// Environment added to the image's, for the init and every exec
    /// (checked by [`crate::check_env_var`]).
    pub env: Vec<(String, String)>,
    /// A file written into the space as its user once it runs.
    pub env_file: Option<EnvFile>,
    /// A repository cloned into `/workspace` as the space's user once it
    /// runs (after `env_file`).
    pub repo: Option<RepoClone>,
    /// Mount the root filesystem read-only (`/workspace`, `/tmp` and
    /// `/run` stay writable).
    pub readonly_rootfs: bool,
}

impl CreateSpace {
    /// A request for space `name` with every other field at its default
    /// (no image, no limits: set them, e.g. with `..CreateSpace::named(n)`).
    pub fn named(name: SpaceName) -> CreateSpace {
        CreateSpace {
            name,
            image: String::new(),
            memory: 0,
            nano_cpus: 0,
            pids_limit: None,
            gpu: false,
            gpus: None,
            network: NetworkMode::default(),
            publish: Vec::new(),
            egress: Egress::default(),
            disk: None,
            env: Vec::new(),
            env_file: None,
            repo: None,
            readonly_rootfs: false,
        }
    }
}

impl Runtime {
    /// Creates and starts a space, then writes its environment file and
    /// clones its repository when asked. All or nothing: on any failure
    /// nothing of it remains (no record, mount, cgroup, process or
    /// directory). Runs to the end even if the caller goes away.
    pub async fn create(&self, req: CreateSpace) -> Result<Space> {
        self.detached(move |rt| async move { rt.create_now(req).await })
            .await
    }

    async fn create_now(&self, req: CreateSpace) -> Result<Space> {
        let mut t = Phases::new("create");
        self.creating();
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
            let dir = self.inner.store.dir().to_path_buf();
            blocking("checking disk quotas", move || quota::check_available(&dir)).await?;
        }
        extras::check(&req)?;
        let egress = req
            .egress
            .clone()
            .normalize(req.network)
            .map_err(Error::InvalidInput)?;
        if !req.publish.is_empty() {
            let (name, mode, ports) = (req.name.to_string(), req.network, req.publish.clone());
            self.net(move |n| n.check_publish(&name, mode, &ports))
                .await?;
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
        t.mark("check");
        self.ensure_image(&req.image).await?;
        // The image's config and its `sandbox` user (files of the store).
        let (images, reference, gpu) = (self.inner.images.clone(), req.image.clone(), req.gpu);
        let (image, pw) = blocking("reading the image", move || {
            let image = images.resolve(&reference)?;
            if gpu {
                return Ok((image, None));
            }
            let pw = resolve_user(&image.layer_dirs, "sandbox")
                .map_err(|e| Error::InvalidInput(format!("image {reference}: {e}")))?;
            Ok((image, pw))
        })
        .await?;
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
            SpaceUser {
                name: "sandbox".into(),
                uid: pw.as_ref().map_or(1000, |p| p.uid),
                gid: pw.as_ref().map_or(1000, |p| p.gid),
                additional_gids: pw.as_ref().map(|p| p.groups.clone()).unwrap_or_default(),
                home: "/home/sandbox".into(),
                workdir: "/home/sandbox".into(),
            }
        };
        t.mark("image");
        let now = Utc::now();
        let space = Space {
            name: req.name.to_string(),
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
            env: {
                let mut env = space_env(&image.image.config.env, &req.name, &user.home);
                merge_env(&mut env, &req.env);
                env
            },
            user,
            layers: image.layer_dirs,
            network: SpaceNetwork {
                mode: req.network,
                address: None,
                published: req.publish.clone(),
                egress,
            },
            disk,
            // The volume of an earlier space of this name is reattached.
            volume: Some(req.name.to_string()),
            readonly_rootfs: req.readonly_rootfs,
        };
        // Reserve the name: a concurrent create of the same name sees it,
        // and so does a removal of its volume.
        let entry = Arc::new(Entry::new(space.clone()));
        let _op = entry.op.write().await;
        let had_volume = {
            let _volumes = self.inner.volumes_lock.lock().await;
            let had = self.volume_exists(req.name.as_str()).await;
            let mut map = self.inner.spaces.write().unwrap_or_else(|p| p.into_inner());
            if map.contains_key(req.name.as_str()) {
                return Err(Error::SpaceExists);
            }
            map.insert(req.name.to_string(), entry.clone());
            had
        };
        t.mark("reserve");
        let mut space = space;
        let started = async {
            // A networked space takes a spare namespace, and its id, when
            // one is ready: then only its policy is left to add.
            if req.network.is_networked() {
                if let Some((id, _)) = self.net(|n| Ok(n.take_spare())).await? {
                    lock(&entry.rec).id.clone_from(&id);
                    space.id = id;
                    t.mark("spare");
                }
            }
            // First of all, so that a crash from here on leaves a directory
            // known never to have held a record (removed at startup).
            let (store, id) = (self.inner.store.clone(), space.id.clone());
            blocking("recording the new space", move || store.begin(&id)).await?;
            t.mark("begin");
            if req.network.is_networked() {
                let (id, mode) = (space.id.clone(), req.network);
                let addr = self.net(move |n| n.allocate(&id, mode)).await?;
                lock(&entry.rec).network.address = Some(addr);
                t.mark("address");
            }
            // Until its file and clone are made the space is still being
            // created (not listed, and removed at startup if the daemon
            // stops meanwhile: a clone can outlast a shutdown's grace).
            let extras = extras::wanted(&req);
            let status = if extras {
                SpaceStatus::Creating
            } else {
                SpaceStatus::Running
            };
            let s = self.start_init(&entry, status).await?;
            t.mark("init");
            if !extras {
                return Ok(s);
            }
            if let Err(e) = self.apply_extras(&s, &req).await {
                // Marked as being destroyed, so a crash during the rollback
                // finishes it instead of bringing the space back.
                if let Err(e2) = self.set_status(&entry, SpaceStatus::Destroying, true).await {
                    tracing::warn!(space = %req.name, "marking a failed create: {e2}");
                }
                return Err(e);
            }
            self.set_status(&entry, SpaceStatus::Running, true).await
        };
        match started.await {
            Ok(s) => {
                tracing::info!(space = %s.name, id = %s.short_id(), "created");
                if req.network.is_networked() {
                    self.refill_spares();
                }
                Ok(s)
            }
            Err(e) => {
                tracing::warn!(space = %req.name, "create failed, rolling back: {e}");
                // Its init's watcher, if it started one, must not restart it.
                lock(&entry.rec).status = SpaceStatus::Destroying;
                let mut rollback = self.teardown(&space).await;
                if rollback.is_ok() && !had_volume {
                    rollback = self.drop_volume(&space).await;
                }
                if let Err(e2) = &rollback {
                    tracing::error!(space = %req.name, "rollback failed: {e2}");
                }
                let e = e.rolled_back(rollback);
                self.inner
                    .spaces
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(req.name.as_str());
                Err(e)
            }
        }
    }
}
