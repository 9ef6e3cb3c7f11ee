//! The bundle of a space: its directory, quota, seccomp filter and
//! `config.json`, and the start of its init.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;
use crate::network::NetworkMode;
use crate::proto::{CreateRequest, Reply, Request};
use crate::quota;
use crate::seccomp;
use crate::spec::{build_spec, capabilities_for};
use crate::store::{Space, SpaceStatus};
use crate::timing::Phases;

use super::registry::{lock, Entry};
use super::volumes::{ensure_volume, mount_volume};
use super::{blocking, Runtime};

impl Runtime {
    /// Writes the bundle, mounts the rootfs and starts the init of the space
    /// in `entry`; records it as `status` (running, or still creating while
    /// a create's steps inside the space are left). Caller holds the op
    /// lock.
    pub(super) async fn start_init(
        &self,
        entry: &Arc<Entry>,
        status: SpaceStatus,
    ) -> Result<Space> {
        let mut t = Phases::new("start_init");
        let space = entry.snapshot();
        let dir = self.inner.store.space_dir(&space.id);
        // The bundle directory (made by the create already), its quota and
        // the seccomp filter, beside the network's policy and files.
        let volume = self.space_volume(&space);
        let bundle = {
            let (dir, space, volume) = (dir.clone(), space.clone(), volume.clone());
            blocking("preparing the bundle", move || {
                prepare_bundle(&dir, &space, volume.as_deref())
            })
        };
        let net = async {
            if !space.network.mode.is_networked() {
                return Ok(None);
            }
            let (s, d) = (space.clone(), dir.clone());
            self.net(move |n| n.prepare(&s.id, &s.name, &s.network, &d))
                .await
                .map(Some)
        };
        let (bundle, net) = tokio::join!(bundle, net);
        bundle?;
        let net = net?;
        t.mark("bundle+net");
        let mut spec = build_spec(&space, &self.cgroups_path(&space.id), &self.inner.init_path)?;
        if let Some(v) = &volume {
            mount_volume(&mut spec, v)?;
        }
        // GPU devices (CDI specs take milliseconds to read), the network
        // mounts and `config.json`.
        let (rt, gpus, config) = (self.clone(), space.gpus.clone(), dir.join("config.json"));
        let gpu_env = blocking("writing config.json", move || {
            if let Some(a) = &gpus {
                rt.inner.gpu.apply(&mut spec, a)?;
            }
            if let Some(n) = &net {
                n.apply(&mut spec)?;
            }
            let bytes = serde_json::to_vec(&spec).map_err(|e| Error::Container(e.to_string()))?;
            write_atomic(&config, &bytes, false)?;
            // Execs get the environment the GPU runtime gave the init.
            Ok(gpus
                .is_some()
                .then(|| spec.process().as_ref().and_then(|p| p.env().clone()))
                .flatten())
        })
        .await?;
        t.mark("config");
        if let Some(env) = gpu_env {
            lock(&entry.rec).env = env;
        }
        let req = Request::Create(CreateRequest {
            id: space.id.clone(),
            state_root: self.inner.state_root.clone(),
            bundle: dir.clone(),
            rootfs: self.rootfs_plan(&space),
            workdir: space.user.workdir.clone(),
            uid: space.user.uid,
            gid: space.user.gid,
        });
        // The record says `status` durably while the worker starts the
        // init: its fsyncs overlap the create instead of following it. A
        // crash in between leaves a running record without an init, which
        // the next start brings up (as after a reboot), or a creating one,
        // removed; a failed start is recorded over it (create: removed,
        // restart: stopped).
        let now = Utc::now();
        let pending = {
            let mut r = lock(&entry.rec).clone();
            r.status = status;
            r.init_pid = None;
            r.init_start_time = None;
            r.started = now;
            r.last_activity = now;
            r
        };
        let (reply, saved) =
            tokio::join!(self.inner.pool.call(&req, &[]), self.save(pending, true));
        let (pid, start_time) = match reply?.0 {
            Reply::Created { pid, start_time } => (pid, start_time),
            Reply::Failed { error } => return Err(error.into()),
            other => {
                return Err(Error::Container(format!(
                    "unexpected worker reply {other:?}"
                )))
            }
        };
        saved?;
        t.mark("worker");
        if space.network.mode == NetworkMode::None {
            blocking("bringing up the space's loopback", move || {
                crate::network::loopback_up_of(pid)
            })
            .await?;
        }
        let snap = {
            let mut r = lock(&entry.rec);
            r.status = status;
            r.init_pid = Some(pid);
            r.init_start_time = Some(start_time);
            r.started = now;
            r.last_activity = now;
            r.clone()
        };
        t.mark("loopback");
        // Only the init's pid is new since the durable write above, and a
        // pid outlives no reboot: no fsync for it.
        self.save(snap.clone(), false).await?;
        t.mark("save");
        self.watch_init(&snap);
        Ok(snap)
    }
}

/// Creates the bundle directory `dir` of `space` and its `volume`, applies
/// its disk limit and writes its seccomp filter. Blocking.
fn prepare_bundle(dir: &Path, space: &Space, volume: Option<&Path>) -> Result<()> {
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    if let Some(v) = volume {
        ensure_volume(v, space.user.uid, space.user.gid)?;
    }
    if let Some(bytes) = space.disk {
        // Never without its limit: a space whose limit cannot be applied
        // (say a reboot lost `prjquota`) stays stopped until it can.
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        [&upper, &work]
            .iter()
            .try_for_each(|d| fs::create_dir_all(d).ctx(|| format!("create {}", d.display())))
            .and_then(|()| quota::apply(&upper, &work, volume, &space.id, bytes))
            .map_err(|e| quota::not_applied(&space.name, bytes, e))?;
    }
    write_filter(dir, space)
}

/// Writes the compiled seccomp filter of `space` into its bundle `dir`. The
/// first use of a capability set compiles it (~10 ms, or waits for the
/// compile that [`Runtime::open`] started). Blocking.
pub(super) fn write_filter(dir: &Path, space: &Space) -> Result<()> {
    let filter = seccomp::filter(&capabilities_for(space.user.uid))?;
    write_atomic(&dir.join(seccomp::FILTER_FILE), &filter, false)
}
