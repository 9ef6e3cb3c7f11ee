//! The overlayfs root filesystem of a space: image layers as read-only
//! lowers, the space's own upper and work directories.

use std::fs;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::proto::RootfsPlan;
use crate::proto::SandboxError;

/// The overlayfs mount options for `plan`.
pub fn overlay_options(plan: &RootfsPlan) -> String {
    let lowers: Vec<String> = plan
        .lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        plan.upper.display(),
        plan.work.display()
    )
}

/// Whether something is mounted exactly at `target`: `statx` says whether
/// it is the root of a mount (`STATX_ATTR_MOUNT_ROOT`). Constant time,
/// unlike a scan of `/proc/self/mountinfo`, which grows with every space.
pub fn is_mounted(target: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(target.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero `statx` is a valid value of the plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stx` is a valid out-pointer.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            0,
            &mut stx,
        )
    };
    let flag = libc::STATX_ATTR_MOUNT_ROOT as u64;
    rc == 0 && stx.stx_attributes_mask & flag != 0 && stx.stx_attributes & flag != 0
}

/// Flags of every space's overlay mount: a set-uid file or a device node
/// in an image or written by a space is inert through the mount the host
/// sees. Inside the space nothing changes: its processes already run with
/// `no_new_privs`, its devices live on its own `/dev` tmpfs, and overlayfs
/// makes whiteouts on the upper dir's own filesystem.
pub const MOUNT_FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Mounts the overlay described by `plan` (`nosuid,nodev`), creating its
/// directories.
pub fn mount_overlay(plan: &RootfsPlan) -> Result<(), SandboxError> {
    for d in [&plan.upper, &plan.work, &plan.target] {
        fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    if plan.lowers.is_empty() {
        return Err(SandboxError::Image("it has no layers".into()));
    }
    let opts = overlay_options(plan);
    mount(
        Some("overlay"),
        &plan.target,
        Some("overlay"),
        MOUNT_FLAGS,
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount overlay at {}: {e}", plan.target.display()).into())
}

/// Gives the mount at `target` exactly the per-mount flags [`MOUNT_FLAGS`]
/// (a bind remount: the overlay itself is untouched), for rootfs mounts an
/// older daemon made without them. The host's view only: spaces keep the
/// copy in their own mount namespace.
pub fn harden(target: &Path) -> Result<(), String> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MOUNT_FLAGS,
        None::<&str>,
    )
    .map_err(|e| format!("remount {} nosuid,nodev: {e}", target.display()))
}

/// Unmounts `target` if mounted (lazily when busy).
pub fn unmount(target: &Path) -> Result<(), SandboxError> {
    while is_mounted(target) {
        if let Err(e) = umount2(target, MntFlags::empty()) {
            umount2(target, MntFlags::MNT_DETACH)
                .map_err(|e2| format!("unmount {}: {e}; lazily: {e2}", target.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn topmost_layer_comes_first() {
        let plan = RootfsPlan {
            lowers: vec![PathBuf::from("/l/top"), PathBuf::from("/l/base")],
            upper: PathBuf::from("/s/upper"),
            work: PathBuf::from("/s/work"),
            target: PathBuf::from("/s/rootfs"),
        };
        assert_eq!(
            overlay_options(&plan),
            "lowerdir=/l/top:/l/base,upperdir=/s/upper,workdir=/s/work"
        );
    }

    #[test]
    fn mount_roots_are_told_apart() {
        assert!(is_mounted(Path::new("/")));
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/proc/self")));
        assert!(!is_mounted(Path::new("/nonexistent/clawdspace")));
    }
}
