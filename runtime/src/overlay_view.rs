//! A second way to the state directory, for overlayfs' `lowerdir`,
//! `upperdir` and `workdir` options.
//!
//! Mounting an overlay makes a private clone of each layer's mount (the
//! kernel's `clone_private_mount`), which first checks every mount directly
//! below that mount (`has_locked_children`: a walk up from each mount
//! point). Every space's root filesystem is mounted below the state
//! directory, on the mount that holds the image layers and the upper dirs,
//! so every create walked every other space's mount point: about 0.3 ms
//! more per create with 500 spaces (their dentries cold), growing with each.
//!
//! The view is a non-recursive, private bind of the state directory at
//! `/run/clawdspace/overlay-view-<hash>`: nothing is mounted below it, and
//! nothing mounted later below the state directory appears in it (private:
//! no propagation). Layers and upper dirs named through it give the kernel
//! a mount with no mounts below. It outlives the daemon as the spaces do,
//! is made again after a reboot, and [`remove`] (a purge) takes it away. A
//! part of the state directory on a file system of its own (`spaces` or
//! `images` mounted separately) is named as before: the view would show the
//! directory under that mount.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sha2::{Digest, Sha256};

/// Where views are mounted.
const VIEWS_DIR: &str = "/run/clawdspace";

/// The parts of the state directory the overlay options name.
const PARTS: [&str; 2] = ["spaces", "images"];

/// The state directory's view, when there is one.
#[derive(Debug, Clone)]
pub(crate) struct OverlayView {
    /// The state directory as configured, and canonical.
    state: [PathBuf; 2],
    /// The view, and the parts of the state dir reachable through it.
    view: Option<(PathBuf, Vec<&'static str>)>,
}

/// The view's mount point for state directory `state` (canonical).
fn view_dir(state: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let hash = Sha256::digest(state.as_os_str().as_bytes());
    Path::new(VIEWS_DIR).join(format!("overlay-view-{}", hex::encode(&hash[..8])))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether something is mounted strictly below `dir`.
fn mounts_below(dir: &Path) -> bool {
    crate::sandbox::mountns::mount_points_under(dir)
        .iter()
        .any(|p| p != dir)
}

/// Makes (or finds) the view of `state` (canonical) at `dir`.
fn make(state: &Path, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let usable = |dir: &Path| {
        crate::sandbox::rootfs::is_mounted(dir) && same_file(dir, state) && !mounts_below(dir)
    };
    if crate::sandbox::rootfs::is_mounted(dir) {
        if usable(dir) {
            return Ok(());
        }
        // A view of an earlier start that is no longer one (something
        // came to be mounted in it): made again.
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    mount(
        Some(state),
        dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} at {}: {e}", state.display(), dir.display()))?;
    // Out of the peer group it joined: later mounts below the state dir
    // must not appear in it. One that did in between is found below.
    let private = mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    if let Err(e) = private.map_err(|e| format!("make {} private: {e}", dir.display())) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        return Err(e);
    }
    if !usable(dir) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        return Err(format!(
            "{} is not a view of the state dir alone",
            dir.display()
        ));
    }
    Ok(())
}

impl OverlayView {
    /// The view of state directory `state`, made if needed. Without one
    /// (no `/run`, a mount refused) overlays name the state dir itself.
    /// Blocking (mounts; reads the mount table).
    pub(crate) fn open(state: &Path) -> OverlayView {
        let canonical = fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
        let dir = view_dir(&canonical);
        let view = match make(&canonical, &dir) {
            Ok(()) => {
                let parts: Vec<&str> = PARTS
                    .into_iter()
                    .filter(|p| same_file(&dir.join(p), &canonical.join(p)))
                    .collect();
                tracing::debug!(view = %dir.display(), ?parts, "overlay view");
                Some((dir, parts))
            }
            Err(e) => {
                tracing::warn!("no overlay view of the state dir ({e}): overlays name it directly");
                None
            }
        };
        OverlayView {
            state: [state.to_path_buf(), canonical],
            view,
        }
    }

    /// `path` through the view when it is in a part of the state dir the
    /// view shows; otherwise `path` itself.
    pub(crate) fn path(&self, path: &Path) -> PathBuf {
        let Some((dir, parts)) = &self.view else {
            return path.to_path_buf();
        };
        for state in &self.state {
            let Ok(rel) = path.strip_prefix(state) else {
                continue;
            };
            // Plain names only: a `..` would lead out of the view.
            let plain = rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            let shown = rel
                .components()
                .next()
                .is_some_and(|c| parts.iter().any(|p| c.as_os_str() == *p));
            if plain && shown {
                return dir.join(rel);
            }
        }
        path.to_path_buf()
    }
}

/// The views in mount table `mountinfo` (their mount points) of state
/// directories at or below `dir`: a view's source is its file system's
/// mount point joined with the view's root in that file system.
fn views_of(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let fields = |l: &str| -> Option<(String, String, PathBuf)> {
        let mut f = l.split(' ').skip(2);
        let dev = f.next()?.to_string();
        let root = crate::sandbox::mountns::unescape(f.next()?);
        let point = PathBuf::from(crate::sandbox::mountns::unescape(f.next()?));
        Some((dev, root, point))
    };
    let mounts: Vec<_> = mountinfo.lines().filter_map(fields).collect();
    mounts
        .iter()
        .filter(|(_, _, point)| {
            point.parent() == Some(Path::new(VIEWS_DIR))
                && point
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("overlay-view-"))
        })
        .filter(|(dev, root, _)| {
            mounts
                .iter()
                .filter(|(d, r, _)| d == dev && r == "/")
                .any(|(_, _, fs_point)| {
                    fs_point.join(root.trim_start_matches('/')).starts_with(dir)
                })
        })
        .map(|(_, _, point)| point.clone())
        .collect()
}

/// Unmounts the views of the state directories at or below `dir`, and
/// removes their mount points (a purge). Best effort.
pub fn remove(dir: &Path) {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for view in views_of(&info, &dir) {
        let _ = umount2(&view, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(parts: Vec<&'static str>) -> OverlayView {
        OverlayView {
            state: [PathBuf::from("/s/../s"), PathBuf::from("/s")],
            view: Some((PathBuf::from("/run/v"), parts)),
        }
    }

    #[test]
    fn only_the_parts_the_view_shows_are_named_through_it() {
        let v = view(vec!["spaces", "images"]);
        for (given, want) in [
            ("/s/spaces/a/upper", "/run/v/spaces/a/upper"),
            (
                "/s/../s/images/layers/sha256/ab",
                "/run/v/images/layers/sha256/ab",
            ),
            ("/s/spacesx/a", "/s/spacesx/a"),
            ("/s/images/../../etc", "/s/images/../../etc"),
            ("/s/spaces/./a", "/run/v/spaces/a"),
            ("/s/bin/init", "/s/bin/init"),
            ("/other/layers/x", "/other/layers/x"),
            ("/s", "/s"),
        ] {
            assert_eq!(v.path(Path::new(given)), PathBuf::from(want), "{given}");
        }
        // `spaces` on a file system of its own: named as before.
        let v = view(vec!["images"]);
        assert_eq!(
            v.path(Path::new("/s/spaces/a/upper")),
            PathBuf::from("/s/spaces/a/upper")
        );
        assert_eq!(
            v.path(Path::new("/s/images/l")),
            PathBuf::from("/run/v/images/l")
        );
        let none = OverlayView {
            state: [PathBuf::from("/s"), PathBuf::from("/s")],
            view: None,
        };
        assert_eq!(
            none.path(Path::new("/s/spaces/a")),
            PathBuf::from("/s/spaces/a")
        );
    }

    #[test]
    fn a_purge_finds_the_views_of_state_dirs_below_it() {
        let info = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
40 30 0:5 / /run rw - tmpfs tmpfs rw
50 22 254:0 /var/tmp/t1/state /run/clawdspace/overlay-view-0a rw - ext4 /dev/vda rw
51 22 254:0 /var/tmp/t2/state /run/clawdspace/overlay-view-0b rw - ext4 /dev/vda rw
60 22 8:1 / /srv rw - xfs /dev/sdb rw
61 22 8:1 /cs/state /run/clawdspace/overlay-view-0c rw - xfs /dev/sdb rw
62 22 254:0 /var/tmp/t1/state /run/clawdspace/other rw - ext4 /dev/vda rw";
        assert_eq!(
            views_of(info, Path::new("/var/tmp/t1")),
            vec![PathBuf::from("/run/clawdspace/overlay-view-0a")]
        );
        assert_eq!(
            views_of(info, Path::new("/var/tmp/t2/state")),
            vec![PathBuf::from("/run/clawdspace/overlay-view-0b")]
        );
        assert_eq!(
            views_of(info, Path::new("/srv/cs")),
            vec![PathBuf::from("/run/clawdspace/overlay-view-0c")]
        );
        assert!(views_of(info, Path::new("/var/tmp/t3")).is_empty());
    }

    #[test]
    fn each_state_dir_has_its_own_view() {
        assert_ne!(view_dir(Path::new("/a")), view_dir(Path::new("/b")));
        assert!(view_dir(Path::new("/a")).starts_with(VIEWS_DIR));
    }

    /// Unmounts what a test mounted (last first, views included), even
    /// when it fails.
    struct Unmount(Vec<PathBuf>, PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            remove(&self.1);
            for p in self.0.iter().rev() {
                if crate::sandbox::rootfs::is_mounted(p) {
                    let _ = umount2(p, MntFlags::MNT_DETACH);
                }
                if p.starts_with(VIEWS_DIR) {
                    let _ = fs::remove_dir(p);
                }
            }
        }
    }

    fn tmpfs(at: &Path) {
        fs::create_dir_all(at).expect("dir");
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
    }

    fn mounted_at(dir: &Path) -> usize {
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        info.lines()
            .filter(|l| l.split(' ').nth(4) == dir.to_str())
            .count()
    }

    #[test]
    #[ignore = "needs root"]
    fn the_view_shows_the_state_dir_without_what_is_mounted_in_it() {
        let tmp = tempfile::tempdir_in("/var/tmp").expect("tmp");
        let state = tmp.path().join("state");
        fs::create_dir_all(state.join("images/layers")).expect("dirs");
        fs::write(state.join("images/layers/file"), "layer").expect("file");
        let (spaces, late) = (state.join("spaces"), state.join("images/late"));
        let mut guard = Unmount(vec![spaces.clone(), late.clone()], tmp.path().to_path_buf());
        // `spaces` on a file system of its own: not named through the view.
        tmpfs(&spaces);
        let v = OverlayView::open(&state);
        let (dir, parts) = v.view.clone().expect("a view");
        guard.0.push(dir.clone());
        assert_eq!(parts, vec!["images"]);
        let layer = v.path(&state.join("images/layers/file"));
        assert!(layer.starts_with(&dir), "{}", layer.display());
        assert_eq!(
            fs::read_to_string(&layer).expect("through the view"),
            "layer"
        );
        let upper = state.join("spaces/a/upper");
        assert_eq!(v.path(&upper), upper);
        assert!(!mounts_below(&dir));
        // A mount made below the state dir afterwards is not in the view.
        tmpfs(&late);
        assert!(crate::sandbox::rootfs::is_mounted(&late));
        assert!(!crate::sandbox::rootfs::is_mounted(
            &dir.join("images/late")
        ));
        assert!(!mounts_below(&dir));
        // Opened again (a restart): the same view, no second mount.
        let again = OverlayView::open(&state);
        assert_eq!(again.view.map(|(d, _)| d), Some(dir.clone()));
        assert_eq!(mounted_at(&dir), 1);
        // A purge of the directory above the state dir takes it away.
        remove(tmp.path());
        assert_eq!(mounted_at(&dir), 0);
        assert!(!dir.exists());
    }

    #[test]
    #[ignore = "needs root"]
    fn a_purge_removes_the_view_of_a_state_dir_that_is_a_mount() {
        let tmp = tempfile::tempdir_in("/var/tmp").expect("tmp");
        let state = tmp.path().join("state");
        let mut guard = Unmount(vec![state.clone()], tmp.path().to_path_buf());
        tmpfs(&state);
        fs::create_dir_all(state.join("spaces")).expect("spaces");
        let v = OverlayView::open(&state);
        let (dir, parts) = v.view.expect("a view");
        guard.0.push(dir.clone());
        assert_eq!(parts, vec!["spaces"]);
        // The purge unmounts the state dir's own mount too: the view must
        // go first, while it can still be told whose it is.
        crate::purge::purge(tmp.path(), "/clawdspace-test-no-such-parent", None);
        assert_eq!(mounted_at(&dir), 0);
        assert!(!dir.exists());
        assert!(!crate::sandbox::rootfs::is_mounted(&state));
    }
}
