//! Workspace volumes: one persistent directory per space name under
//! `<state>/volumes/<name>`, bind-mounted at `/workspace`. A volume outlives
//! its space unless the destroy asks for it to go; a new space of the same
//! name gets it back.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{MountBuilder, Spec};

use crate::error::{Error, IoContext, Result};
use crate::store::Space;

use super::name::SpaceName;
use super::{blocking, Runtime};

/// Where a space's volume appears inside it.
pub const WORKSPACE: &str = "/workspace";

/// A kept or mounted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name (the name of the space it belongs to).
    pub name: String,
    /// Bytes its files take on disk (allocated blocks).
    pub size_bytes: u64,
    /// The space that mounts it now, if any.
    pub in_use_by: Option<String>,
}

impl Runtime {
    /// The directory holding every volume.
    pub(super) fn volumes_root(&self) -> PathBuf {
        self.inner.config.state_dir.join("volumes")
    }

    /// The host directory of volume `name`.
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_root().join(name)
    }

    /// The host directory of the volume of `space`, if it has one.
    pub(super) fn space_volume(&self, space: &Space) -> Option<PathBuf> {
        space.volume.as_deref().map(|v| self.volume_dir(v))
    }

    /// Whether volume `name` exists now (a create reattaches it).
    pub(super) async fn volume_exists(&self, name: &str) -> bool {
        tokio::fs::symlink_metadata(self.volume_dir(name))
            .await
            .is_ok_and(|m| m.is_dir())
    }

    /// [`Runtime::volume_exists`], blocking, for any name (one that is not
    /// a valid space name has none).
    pub fn has_volume(&self, name: &str) -> bool {
        SpaceName::new(name).is_ok()
            && std::fs::symlink_metadata(self.volume_dir(name)).is_ok_and(|m| m.is_dir())
    }

    /// The space mounting volume `name`, if any (being created included).
    fn volume_user(&self, name: &str) -> Option<String> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .map(|e| e.snapshot())
            .find(|s| s.volume.as_deref() == Some(name))
            .map(|s| s.name)
    }

    /// Every volume on this server, by name.
    pub async fn volumes(&self) -> Result<Vec<VolumeInfo>> {
        let root = self.volumes_root();
        let sizes = blocking("listing volumes", move || {
            let mut out = Vec::new();
            let dir = match fs::read_dir(&root) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(Error::io(format!("read {}", root.display()), e)),
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if SpaceName::new(name.as_str()).is_err() {
                    continue; // `.trash-*` and strays
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push((name, disk_usage(&e.path())));
                }
            }
            out.sort();
            Ok(out)
        })
        .await?;
        Ok(sizes
            .into_iter()
            .map(|(name, size_bytes)| VolumeInfo {
                in_use_by: self.volume_user(&name),
                name,
                size_bytes,
            })
            .collect())
    }

    /// Deletes the kept volume `name` and its files. A volume a space
    /// mounts is [`Error::VolumeInUse`]; an unknown one
    /// [`Error::VolumeNotFound`].
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.detached(move |rt| async move {
            if SpaceName::new(name.as_str()).is_err() {
                return Err(Error::VolumeNotFound);
            }
            let _guard = rt.inner.volumes_lock.lock().await;
            if let Some(space) = rt.volume_user(&name) {
                return Err(Error::VolumeInUse(name, space));
            }
            if !rt.volume_exists(&name).await {
                return Err(Error::VolumeNotFound);
            }
            let (root, dir) = (rt.volumes_root(), rt.volume_dir(&name));
            blocking("removing a volume", move || remove_volume_dir(&root, &dir)).await
        })
        .await
    }

    /// Removes the volume of `space` (a destroy with `removeVolume`, or the
    /// rollback of a create that made it). Caller holds the volumes lock or
    /// knows no create of this name runs.
    pub(super) async fn drop_volume(&self, space: &Space) -> Result<()> {
        let Some(dir) = self.space_volume(space) else {
            return Ok(());
        };
        let root = self.volumes_root();
        blocking("removing a volume", move || remove_volume_dir(&root, &dir)).await
    }
}

/// Makes the volume directory `dir` if missing: mode 0755, owned by
/// `uid:gid`. An existing one is left as it is. Blocking.
pub(super) fn ensure_volume(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
        fs::set_permissions(parent, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("chmod {}", parent.display()))?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .ctx(|| format!("chmod {}", dir.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = fs::symlink_metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
            if m.is_dir() {
                Ok(())
            } else {
                Err(Error::State(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
        }
        Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
    }
}

/// Adds the bind mount of the volume `source` at [`WORKSPACE`] to `spec`.
pub(super) fn mount_volume(spec: &mut Spec, source: &Path) -> Result<()> {
    let m = MountBuilder::default()
        .destination(WORKSPACE)
        .typ("bind")
        .source(source)
        .options(vec![
            "rbind".to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
        ])
        .build()
        .map_err(|e| Error::Container(format!("volume mount: {e}")))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(m);
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Renames `dir` aside inside `root` (so a half-deleted volume is never
/// found under its name), then deletes it. Blocking.
fn remove_volume_dir(root: &Path, dir: &Path) -> Result<()> {
    let trash = root.join(format!(
        ".trash-{}-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    match fs::rename(dir, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("rename {}", dir.display()), e)),
    }
    // std's remove_dir_all never follows symlinks.
    crate::fsutil::remove_dir_all_if_exists(&trash)
}

/// Finishes removals of volumes that a crash interrupted (`.trash-*`
/// under `root`). Blocking.
pub(super) fn clean_trash(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(".trash-") {
            if let Err(err) = crate::fsutil::remove_dir_all_if_exists(&e.path()) {
                tracing::warn!("removing {}: {err}", e.path().display());
            }
        }
    }
}

/// Bytes allocated to the files under `dir`, never following symlinks.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}
