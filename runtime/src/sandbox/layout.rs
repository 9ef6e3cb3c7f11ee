//! The file system a space's init sees, made by the init itself in its new
//! mount namespace before it runs its program (see [`super::boot`]).
//!
//! Every mount lands on a descriptor resolved inside the space's root with
//! `RESOLVE_IN_ROOT` ([`crate::inroot`]): a symlink the image or the space
//! planted (`/etc/resolv.conf -> /etc/shadow`, `/dev -> /`) is followed as
//! the space's own processes would follow it, never to a host path. Bind
//! mounts are detached copies (`open_tree`) given their flags before they
//! are attached (`mount_setattr`, `move_mount`); file systems are mounted
//! on `/proc/self/fd/N` of the resolved destination, as runc does.
//! Everything here runs in the forked child only: errors are strings.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use libcontainer::oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use libcontainer::rootfs::utils::{default_devices, parse_mount};
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use super::join::errno;
use super::mountapi::{self, attrs, cpath, AT_RECURSIVE, MOUNT_ATTR_RDONLY, OPEN_TREE_CLONE};
use crate::cgroups::CgroupMode;
use crate::inroot::{Resolve, Root};

type Res<T> = Result<T, String>;

/// Symlinks every space's `/dev` has (name, target).
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// `/proc/self/fd/N` of `fd`: a path that is exactly that descriptor.
fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

fn mount_at(
    source: &str,
    target: BorrowedFd<'_>,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Res<()> {
    nix::mount::mount(
        Some(source),
        fd_path(target).as_c_str(),
        Some(fstype),
        flags,
        (!data.is_empty()).then_some(data),
    )
    .map_err(|e| format!("mount {fstype}: {e}"))
}

/// Makes the space's mounts (in the spec's order), its device nodes and
/// `/dev` links inside the root at `rootfs`; returns that root.
pub(super) fn mount_all(spec: &Spec, rootfs: &Path) -> Res<Root> {
    // Nothing mounted below may reach the namespace this one was copied
    // from.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    let root = Root::open(rootfs).map_err(|e| format!("open the space's root: {e}"))?;
    for m in spec.mounts().iter().flatten() {
        mount_one(&root, m).map_err(|e| format!("{}: {e}", m.destination().display()))?;
    }
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in default_devices().iter().chain(&devices) {
        make_device(&root, d).map_err(|e| format!("device {}: {e}", d.path().display()))?;
    }
    let dev = root
        .dir(Path::new("/dev"), Resolve::InRoot)
        .map_err(|e| format!("open /dev: {e}"))?;
    for (name, target) in DEV_LINKS {
        link_in(dev.as_fd(), name, target)?;
    }
    Ok(root)
}

/// The symlink `name -> target` in `dir` (one already there is kept).
fn link_in(dir: BorrowedFd<'_>, name: &str, target: &str) -> Res<()> {
    let (n, t) = (
        CString::new(name).map_err(|_| "NUL in a name".to_string())?,
        CString::new(target).map_err(|_| "NUL in a link".to_string())?,
    );
    // SAFETY: NUL-terminated strings and a descriptor we own.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) } < 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
    {
        return Err(errno(&format!("link {name}")));
    }
    Ok(())
}

/// An `O_PATH` descriptor of the mount destination `dest` inside `root`,
/// created when missing: a directory, or (`file`) an empty file whose
/// parents are made. An existing last component that is a symlink is
/// followed inside the root; one that leads nowhere is an error.
fn destination(root: &Root, dest: &Path, file: bool) -> Res<OwnedFd> {
    let fail = |e: std::io::Error| format!("mount destination: {e}");
    if !file {
        return root
            .create_dir_all(dest, 0o755, None, Resolve::InRoot)
            .map_err(fail);
    }
    match root.open_at(dest, OFlag::O_PATH, Mode::empty(), Resolve::InRoot) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(fail(e)),
        Err(_) => {}
    }
    if let Some(parent) = dest.parent() {
        root.create_dir_all(parent, 0o755, None, Resolve::InRoot)
            .map_err(fail)?;
    }
    // O_EXCL: a dangling symlink there is an error, not followed to make
    // a file elsewhere.
    root.open_at(
        dest,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
        Resolve::InRoot,
    )
    .map_err(fail)
}

/// Flags that say how to mount, not what the mount is.
const HOW: MsFlags = MsFlags::MS_BIND
    .union(MsFlags::MS_REC)
    .union(MsFlags::MS_REMOUNT)
    .union(MsFlags::MS_PRIVATE)
    .union(MsFlags::MS_SLAVE)
    .union(MsFlags::MS_SHARED)
    .union(MsFlags::MS_UNBINDABLE);

fn mount_one(root: &Root, m: &Mount) -> Res<()> {
    let cfg = parse_mount(m).map_err(|e| format!("options: {e}"))?;
    let fstype = m.typ().as_deref().unwrap_or("");
    let data = cfg.data.join(",");
    if fstype == "cgroup" {
        return mount_cgroups(root, m.destination(), cfg.flags);
    }
    if !cfg.flags.contains(MsFlags::MS_BIND) {
        let target = destination(root, m.destination(), false)?;
        let source = m
            .source()
            .as_ref()
            .map_or(fstype.to_string(), |s| s.display().to_string());
        return mount_at(&source, target.as_fd(), fstype, cfg.flags - HOW, &data);
    }
    // A bind: the source is the host's (the daemon's own files, a volume,
    // a driver library), named by the daemon; the destination the space's.
    let source = m.source().as_ref().ok_or("a bind mount without a source")?;
    let meta = std::fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let target = destination(root, m.destination(), !meta.is_dir())?;
    let recursive = cfg.flags.contains(MsFlags::MS_REC);
    let tree = mountapi::open_tree(
        None,
        &cpath(source)?,
        OPEN_TREE_CLONE | if recursive { AT_RECURSIVE } else { 0 },
    )
    .map_err(|e| format!("copy {}: {e}", source.display()))?;
    let (set, clr) = attrs(cfg.flags);
    if set | clr != 0 {
        mountapi::set_attr(tree.as_fd(), set, clr, recursive)
            .map_err(|e| format!("set flags: {e}"))?;
    }
    if let Some(rec) = &cfg.rec_attr {
        mountapi::set_attr(tree.as_fd(), rec.attr_set, rec.attr_clr, true)
            .map_err(|e| format!("set recursive flags: {e}"))?;
    }
    mountapi::move_mount_onto(&tree, target.as_fd()).map_err(|e| format!("attach: {e}"))
}

/// The space's view of its cgroups at `dest`: cgroup2 on a unified host;
/// otherwise a tmpfs with one mount per v1 hierarchy (as libcontainer lays
/// it out), read-only when `flags` say so. The init is in its own cgroup
/// namespace by now, so each shows the space's own group as its root.
fn mount_cgroups(root: &Root, dest: &Path, flags: MsFlags) -> Res<()> {
    let target = destination(root, dest, false)?;
    let flags = flags - HOW;
    if CgroupMode::detect() == CgroupMode::Unified {
        return mount_at("cgroup2", target.as_fd(), "cgroup2", flags, "");
    }
    mount_at(
        "tmpfs",
        target.as_fd(),
        "tmpfs",
        flags - MsFlags::MS_RDONLY,
        "mode=755",
    )?;
    let top = root
        .dir(dest, Resolve::InRoot)
        .map_err(|e| format!("open the cgroup tmpfs: {e}"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
    for ctrls in own
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .filter(|c| !c.is_empty())
    {
        let name = ctrls.strip_prefix("name=").unwrap_or(ctrls);
        if name.contains('/') || name.starts_with('.') {
            continue;
        }
        let dir = mkdir_in(top.as_fd(), name)?;
        mount_at("cgroup", dir.as_fd(), "cgroup", flags, ctrls)?;
        // Comounted controllers (`cpu,cpuacct`) are reachable by each name.
        if ctrls.contains(',') {
            for part in ctrls.split(',') {
                link_in(top.as_fd(), part, name)?;
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mountapi::set_attr(top.as_fd(), MOUNT_ATTR_RDONLY, 0, false)
            .map_err(|e| format!("make the cgroup tmpfs read-only: {e}"))?;
    }
    Ok(())
}

/// The directory `name` in `dir` (made, mode 755), as an `O_PATH` descriptor.
fn mkdir_in(dir: BorrowedFd<'_>, name: &str) -> Res<OwnedFd> {
    let n = CString::new(name).map_err(|_| "NUL in a name".to_string())?;
    // SAFETY: a descriptor we own and a NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), 0o755) } < 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
    {
        return Err(errno(&format!("mkdir {name}")));
    }
    crate::inroot::open_beneath(
        dir,
        Path::new(name),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
        Resolve::NoSymlinks,
    )
    .map_err(|e| format!("open {name}: {e}"))
}

/// Whether `path` names a node under `/dev` without `..` (a CDI spec, the
/// host administrator's, names them).
fn in_dev(path: &Path) -> bool {
    path.starts_with("/dev/")
        && path.components().count() > 2
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Makes the device node `d` (under the space's `/dev`).
fn make_device(root: &Root, d: &LinuxDevice) -> Res<()> {
    let path = d.path();
    if !in_dev(path) {
        return Err("a device node outside /dev".into());
    }
    if let Some(parent) = path.parent() {
        root.create_dir_all(parent, 0o755, None, Resolve::InRoot)
            .map_err(|e| format!("parent: {e}"))?;
    }
    let (dir, name) = root
        .parent_of(path, Resolve::InRoot)
        .map_err(|e| format!("parent: {e}"))?;
    let kind = match d.typ() {
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => return Err("a device node of type 'a'".into()),
    };
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    let dev = libc::makedev(d.major() as u32, d.minor() as u32);
    // SAFETY: a descriptor we own and a NUL-terminated name; the node is
    // new, on the space's fresh /dev tmpfs, so no link is followed.
    unsafe {
        if libc::mknodat(dir.as_raw_fd(), name.as_ptr(), kind | mode, dev) < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
                return Ok(());
            }
            return Err(errno("mknod"));
        }
        if libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) < 0 {
            return Err(errno("chmod"));
        }
        let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
        if libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        ) < 0
        {
            return Err(errno("chown"));
        }
    }
    Ok(())
}

/// Makes `root` the process's root directory (`pivot_root`) and lets go of
/// the old one.
pub(super) fn pivot(root: &Root) -> Res<()> {
    // SAFETY: system calls on a descriptor we own and literal paths.
    unsafe {
        if libc::fchdir(root.fd().as_raw_fd()) < 0 {
            return Err(errno("enter the space's root"));
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
            return Err(errno("pivot_root"));
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
            return Err(errno("detach the old root"));
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            return Err(errno("chdir /"));
        }
    }
    Ok(())
}

/// After [`pivot`]: the masked paths (a directory gets an empty read-only
/// tmpfs, a file `/dev/null`), the read-only paths, a read-only root when
/// asked, and the host name.
pub(super) fn finish(spec: &Spec) -> Res<()> {
    let linux = spec.linux().as_ref();
    let open = |p: &Path| -> Res<Option<(OwnedFd, bool)>> {
        // After pivot_root, inside the space; these are under /proc and
        // /sys, fresh mounts the space has not touched.
        use std::os::unix::fs::OpenOptionsExt;
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("open {}: {e}", p.display())),
        };
        let dir = f
            .metadata()
            .map_err(|e| format!("stat {}: {e}", p.display()))?
            .is_dir();
        Ok(Some((f.into(), dir)))
    };
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let Some((fd, dir)) = open(Path::new(p))? else {
            continue;
        };
        if dir {
            mount_at("tmpfs", fd.as_fd(), "tmpfs", MsFlags::MS_RDONLY, "")
        } else {
            mountapi::open_tree(None, c"/dev/null", OPEN_TREE_CLONE)
                .and_then(|null| mountapi::move_mount_onto(&null, fd.as_fd()))
                .map_err(|e| e.to_string())
        }
        .map_err(|e| format!("mask {p}: {e}"))?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let Some((fd, _)) = open(Path::new(p))? else {
            continue;
        };
        mountapi::open_tree(Some(fd.as_fd()), c"", OPEN_TREE_CLONE | AT_RECURSIVE)
            .and_then(|tree| {
                mountapi::set_attr(tree.as_fd(), MOUNT_ATTR_RDONLY, 0, true)?;
                mountapi::move_mount_onto(&tree, fd.as_fd())
            })
            .map_err(|e| format!("make {p} read-only: {e}"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let root = open(Path::new("/"))?.ok_or("no root")?.0;
        mountapi::set_attr(root.as_fd(), MOUNT_ATTR_RDONLY, 0, false)
            .map_err(|e| format!("make the root read-only: {e}"))?;
    }
    if let Some(name) = spec.hostname() {
        nix::unistd::sethostname(name).map_err(|e| format!("sethostname: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_nodes_stay_under_dev() {
        assert!(in_dev(Path::new("/dev/nvidia0")));
        assert!(in_dev(Path::new("/dev/dri/card0")));
        for bad in [
            "/dev/../etc/passwd",
            "/etc/x",
            "dev/null",
            "/dev",
            "/devx/y",
        ] {
            assert!(!in_dev(Path::new(bad)), "{bad}");
        }
    }
}
