//! Removing everything of a runtime without the runtime: every process in
//! its cgroups (thawed first), its network links, namespaces, bridge and
//! nftables table, every mount under its state dir, its cgroups.
//! For tests and benchmarks that must clean up even after a failure, and for
//! operators wiping a state dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The directories of cgroup `parent` (absolute cgroup path) on this host:
/// one per v1 controller, or the unified one.
pub(crate) fn parent_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|c| c.path().join(rel))
                .filter(|d| d.is_dir())
                .collect()
        })
        .unwrap_or_default();
    if root.join(rel).is_dir() {
        dirs.push(root.join(rel));
    }
    dirs
}

fn subdirs(d: &Path) -> Vec<PathBuf> {
    fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Thaws the cgroup directory `dir` (v1 freezer or v2) and SIGKILLs every
/// process in it. Best effort: a file `dir` lacks is skipped.
pub(crate) fn thaw_and_kill(dir: &Path) {
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Removes the emptied cgroup directory `dir`, its memory reclaimed first:
/// the page cache of files its processes read or wrote (v1
/// `memory.force_empty`, v2 `memory.reclaim`). A memory cgroup removed with
/// charges left lingers in the kernel as a dying cgroup until that memory
/// is reclaimed, and every one of them makes later cgroup work (creates
/// among it) slower; a server that creates and deletes spaces all day would
/// pile them up. A directory of another controller has neither file.
pub(crate) fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    // Only files the kernel made: nothing is created in a cgroup directory.
    let write = |name: &str, value: &str| {
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join(name))
            .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
    };
    if write("memory.force_empty", "0").is_err() {
        let current = fs::read_to_string(dir.join("memory.current")).unwrap_or_default();
        if current.trim().parse::<u64>().is_ok_and(|b| b > 0) {
            // EAGAIN when not all of it could go: what is left stays charged.
            let _ = write("memory.reclaim", current.trim());
        }
    }
    fs::remove_dir(dir)
}

/// Kills every process under cgroup `parent`, unmounts everything mounted
/// at or below `state_dir` and its overlay view, removes the cgroups, then
/// deletes `remove` (usually the state dir or its parent) if given. Best
/// effort; never panics.
pub fn purge(state_dir: &Path, cgroup_parent: &str, remove: Option<&Path>) {
    let dirs = parent_dirs(cgroup_parent);
    for d in &dirs {
        for sub in subdirs(d) {
            thaw_and_kill(&sub);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    crate::network::purge(state_dir);
    // The views first: one of a state dir that is a mount of its own is
    // found through that mount.
    crate::overlay_view::remove(state_dir);
    for m in crate::sandbox::mountns::mount_points_under(state_dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    for d in &dirs {
        for _ in 0..50 {
            let ok = subdirs(d).iter().all(|s| remove_cgroup_dir(s).is_ok());
            if ok && fs::remove_dir(d).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(r) = remove {
        let _ = fs::remove_dir_all(r);
    }
}
