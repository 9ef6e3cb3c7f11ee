//! The bundle of a space: its directory, quota, seccomp filter and
//! `config.json`, and the start of its init.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;
use crate::network::NetworkMode;
use crate::quota;
use crate::seccomp;
use crate::spec::{build_spec, capabilities_for};
use crate::store::{Space, SpaceStatus};
use crate::worker::proto::{CreateRequest, Reply, Request, RootfsPlan};

use super::registry::{lock, Entry};
use super::Runtime;

impl Runtime {
    /// Writes the bundle, mounts the rootfs and starts the init of the space
    /// in `entry`; records it as running. Caller holds the op lock.
    pub(super) async fn start_init(&self, entry: &Arc<Entry>) -> Result<Space> {
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
}

/// Writes the compiled seccomp filter of `space` into its bundle `dir`, off
/// the async threads: the first use of a capability set compiles it (~10 ms,
/// or waits for the compile that [`Runtime::open`] started).
pub(super) async fn write_filter(dir: &Path, space: &Space) -> Result<()> {
    let path = dir.join(seccomp::FILTER_FILE);
    let uid = space.user.uid;
    tokio::task::spawn_blocking(move || {
        let filter = seccomp::filter(&capabilities_for(uid))?;
        write_atomic(&path, &filter, false)
    })
    .await
    .map_err(|e| Error::Container(format!("seccomp filter task: {e}")))?
}
