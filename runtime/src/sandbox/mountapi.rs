//! The kernel's descriptor-based mount calls (`open_tree`, `move_mount`,
//! `mount_setattr`): a mount made or changed through a descriptor never
//! resolves a path the tenant could have swapped underneath.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::MsFlags;

/// `open_tree`: a detached copy of the mount (not a reference to it).
pub const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `open_tree`/`mount_setattr`: the whole tree below too.
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// `mount_setattr` flags (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// `path` for a system call.
pub fn cpath(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: NUL in path", path.display()))
}

/// The `MOUNT_ATTR_*` flags to set and to clear for mount flags `f`.
pub fn attrs(f: MsFlags) -> (u64, u64) {
    let mut set = 0;
    let mut clr = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if f.contains(flag) {
            set |= attr;
        }
    }
    for (flag, attr) in [
        (MsFlags::MS_NOATIME, MOUNT_ATTR_NOATIME),
        (MsFlags::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME),
        (MsFlags::MS_RELATIME, 0),
    ] {
        if f.contains(flag) {
            set |= attr;
            clr |= MOUNT_ATTR_ATIME;
            break;
        }
    }
    (set, clr)
}

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn fd_or_err(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn rc(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `open_tree(dirfd, path, flags | O_CLOEXEC)`; `dirfd` `None` is the
/// current directory. An empty `path` names `dirfd` itself.
pub fn open_tree(
    dirfd: Option<BorrowedFd<'_>>,
    path: &CStr,
    flags: libc::c_uint,
) -> io::Result<OwnedFd> {
    let at = if path.is_empty() {
        libc::AT_EMPTY_PATH as libc::c_uint
    } else {
        0
    };
    // SAFETY: `path` is NUL-terminated; the descriptor is valid or AT_FDCWD.
    fd_or_err(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd.map_or(libc::AT_FDCWD, |d| d.as_raw_fd()),
            path.as_ptr(),
            flags | at | libc::O_CLOEXEC as libc::c_uint,
        )
    })
}

/// Attaches the detached mount `tree` on top of what `target` is open on.
pub fn move_mount_onto(tree: &OwnedFd, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: empty NUL-terminated paths and two valid descriptors.
    rc(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

/// Attaches the detached mount `tree` at the (trusted) path `target`.
pub fn move_mount_to(tree: &OwnedFd, target: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated paths and a valid descriptor.
    rc(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// Sets (`set`) and clears (`clr`) `MOUNT_ATTR_*` flags of the mount `fd`
/// is open on (and every mount below it when `recursive`).
pub fn set_attr(fd: BorrowedFd<'_>, set: u64, clr: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a valid descriptor, an empty path and one struct of the
    // kernel's layout with its size.
    rc(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags_become_attributes() {
        let (set, clr) = attrs(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(
            (set, clr),
            (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0)
        );
        let (set, clr) = attrs(MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
        assert_eq!((set, clr), (MOUNT_ATTR_NOEXEC, MOUNT_ATTR_ATIME));
        let (set, clr) = attrs(MsFlags::MS_STRICTATIME);
        assert_eq!((set, clr), (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME));
    }
}
