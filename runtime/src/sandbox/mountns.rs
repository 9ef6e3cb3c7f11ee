//! A lean mount namespace for the worker's libcontainer calls.
//!
//! libcgroups 0.7 (v1 manager, used on legacy and hybrid hosts) reads the
//! caller's `/proc/self/mountinfo` once per controller whenever libcontainer
//! builds a cgroup manager, e.g. in the intermediate process of every create.
//! Every space adds its rootfs overlay (and a networked one its netns) to the
//! host's mount table, so that cost grew with the number of spaces. A worker
//! therefore makes, once, a private copy of its mount namespace without the
//! spaces' mounts and runs such calls in it; it returns to the host's
//! namespace right after. A create carries its new rootfs (and netns)
//! into it for the call. Only mount copies in that private namespace are
//! detached: the host's mounts are never touched.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// The host's and the lean namespace of this worker, for one spaces dir.
struct Lean {
    host: OwnedFd,
    lean: OwnedFd,
    spaces_dir: PathBuf,
}

thread_local! {
    static LEAN: RefCell<Option<Option<Lean>>> = const { RefCell::new(None) };
}

fn ns_fd() -> std::io::Result<OwnedFd> {
    File::open("/proc/thread-self/ns/mnt").map(OwnedFd::from)
}

/// Back to the host's namespace; a worker that cannot return would make
/// mounts the host never sees, so it exits (the pool starts another).
fn back(host: &OwnedFd) {
    if let Err(e) = setns(host, CloneFlags::CLONE_NEWNS) {
        tracing::error!("worker cannot return to the host's mount namespace: {e}");
        std::process::exit(1);
    }
}

fn make(spaces_dir: &Path) -> Result<Lean, String> {
    let host = ns_fd().map_err(|e| format!("open mount namespace: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    let lean = (|| {
        // Private first: nothing done below may propagate to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make mounts private: {e}"))?;
        detach_space_mounts(spaces_dir);
        ns_fd().map_err(|e| format!("open lean mount namespace: {e}"))
    })();
    back(&host);
    Ok(Lean {
        host,
        lean: lean?,
        spaces_dir: spaces_dir.to_path_buf(),
    })
}

/// A mount point of a `/proc/self/mountinfo` line, unescaped (`\040`…).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points in this process's mount table at or below `dir`
/// (whole components: `/s` is not below `/s2`), deepest first.
pub(crate) fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Mounts in `mountinfo` to detach: everything strictly below `spaces_dir`
/// (rootfs overlays) and every `nsfs` mount (network namespaces), deepest
/// first.
fn space_mounts(mountinfo: &str, spaces_dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| {
            let point = PathBuf::from(unescape(l.split(' ').nth(4)?));
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            let below = point.starts_with(spaces_dir) && point != spaces_dir;
            (below || fstype == "nsfs").then_some(point)
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

fn detach_space_mounts(spaces_dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for p in space_mounts(&info, spaces_dir) {
        let _ = umount2(&p, MntFlags::MNT_DETACH);
    }
}

/// Runs `f` in this worker's lean mount namespace for spaces under
/// `spaces_dir` (made on first use), or in the host's when there is none.
/// The mounts at `carry` (a new space's rootfs, its netns file) are cloned
/// from the host's namespace into the lean one for the call and detached
/// there after it; when that fails, `f` runs in the host's namespace. `f`
/// must not mount anything the host should see.
pub fn in_lean<T>(spaces_dir: &Path, carry: &[PathBuf], f: impl FnOnce() -> T) -> T {
    LEAN.with(|cell| {
        let mut cell = cell.borrow_mut();
        let lean = cell.get_or_insert_with(|| {
            make(spaces_dir)
                .map_err(|e| tracing::warn!("no lean mount namespace: {e}"))
                .ok()
        });
        match lean.as_ref().filter(|l| l.spaces_dir == spaces_dir) {
            Some(l) => match enter(l, carry) {
                Ok(attached) => {
                    let mut t = crate::timing::Phases::new("lean ns");
                    let out = f();
                    t.mark("call");
                    leave(l, &attached);
                    t.mark("leave");
                    out
                }
                Err(e) => {
                    tracing::warn!("{e}; in the host's mount namespace");
                    f()
                }
            },
            None => f(),
        }
    })
}

/// Enters the lean namespace with copies of the mounts at `carry`; returns
/// the ones attached. On failure the worker is back in the host's.
fn enter<'a>(l: &Lean, carry: &'a [PathBuf]) -> Result<Vec<&'a Path>, String> {
    let clones = carry
        .iter()
        .map(|p| clone_mount(p).map(|fd| (fd, p.as_path())))
        .collect::<Result<Vec<_>, String>>()?;
    setns(&l.lean, CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("enter the lean mount namespace: {e}"))?;
    let mut attached = Vec::with_capacity(clones.len());
    for (fd, p) in &clones {
        if let Err(e) = attach(fd, p) {
            leave(l, &attached);
            return Err(e);
        }
        attached.push(*p);
    }
    Ok(attached)
}

/// Detaches the carried copies and returns to the host's namespace.
fn leave(l: &Lean, attached: &[&Path]) {
    for p in attached.iter().rev() {
        let _ = umount2(*p, MntFlags::MNT_DETACH);
    }
    back(&l.host);
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`).
fn clone_mount(path: &Path) -> Result<OwnedFd, String> {
    let c = super::mountapi::cpath(path)?;
    super::mountapi::open_tree(None, &c, super::mountapi::OPEN_TREE_CLONE)
        .map_err(|e| format!("clone the mount at {}: {e}", path.display()))
}

/// Attaches the detached mount `fd` at `path` (`move_mount`).
fn attach(fd: &OwnedFd, path: &Path) -> Result<(), String> {
    super::mountapi::move_mount_to(fd, &super::mountapi::cpath(path)?)
        .map_err(|e| format!("attach a copy at {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_space_mounts_and_netns_deepest_first() {
        let info = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
30 22 0:40 / /s/spaces rw - tmpfs tmpfs rw
31 30 0:41 / /s/spaces/a/rootfs rw - overlay overlay rw,lowerdir=/x
32 31 0:42 / /s/spaces/a/rootfs/proc rw - proc proc rw
33 22 0:4 net:[4026532] /run/netns/cs-a rw - nsfs nsfs rw
34 22 0:43 / /s/spaces\\040b/rootfs rw - overlay overlay rw
35 22 0:44 / /s/spacesx/rootfs rw - overlay overlay rw";
        let got = space_mounts(info, Path::new("/s/spaces"));
        let want: Vec<PathBuf> = [
            "/s/spaces/a/rootfs/proc",
            "/s/spaces/a/rootfs",
            "/run/netns/cs-a",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
    }
}
