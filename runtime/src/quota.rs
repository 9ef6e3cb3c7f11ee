//! Per-space disk limits with project quotas (ext4 with the `quota` and
//! `project` features mounted `prjquota`, or XFS mounted `pquota`).
//!
//! A space with a limit gets a project id of its own: its `upper` and `work`
//! directories carry it with the inherit flag (so everything the space
//! writes is charged to it, and overlayfs' rename from `work` into `upper`
//! stays inside one project), and the project gets a hard block limit. The
//! id lives on the directories themselves, so nothing else is recorded and a
//! restart or reboot finds it again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// `struct fsxattr` of `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

nix::ioctl_read!(fs_get_xattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, FsXattr);

/// New files and directories take the directory's project id.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
/// Quota type of projects.
const PRJQUOTA: i32 = 2;
/// `Q_XGETQSTATV`: quota state, version 1 (`struct fs_quota_statv`).
const Q_XGETQSTATV: i32 = (b'X' as i32) << 8 | 8;
/// Project quota limits are enforced (`qs_flags`).
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
/// Project ids used for spaces start here (below: left to the operator).
const FIRST_PROJECT: u32 = 0x0C1A_0000;

fn qcmd(cmd: i32, kind: i32) -> i32 {
    (cmd << 8) | (kind & 0xff)
}

/// quotactl_fd(2) on the filesystem holding `f` (Linux ≥ 5.14).
fn quotactl(f: &File, cmd: i32, id: u32, addr: *mut u8) -> std::io::Result<()> {
    // SAFETY: `addr` points to a buffer of the size `cmd` expects; the fd
    // is open for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            f.as_raw_fd(),
            qcmd(cmd, PRJQUOTA) as libc::c_uint,
            id as libc::c_int,
            addr,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_dir(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))
}

/// Ok when the filesystem holding `dir` enforces project quotas; otherwise
/// the 400-style error a create asking for a disk limit gets.
pub fn check_available(dir: &Path) -> Result<()> {
    let f = open_dir(dir)?;
    // struct fs_quota_statv: qs_version (s8) first, qs_flags (u16) at 2.
    let mut statv = [0u8; 160];
    statv[0] = 1;
    let enforced = quotactl(&f, Q_XGETQSTATV, 0, statv.as_mut_ptr()).is_ok()
        && u16::from_ne_bytes([statv[2], statv[3]]) & FS_QUOTA_PDQ_ENFD != 0;
    if enforced {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "disk quotas are not available: the state directory's filesystem ({}) does not \
             enforce project quotas; use ext4 (features quota,project) mounted with prjquota, \
             or XFS mounted with pquota",
            dir.display()
        )))
    }
}

fn get_xattr(f: &File) -> Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: the ioctl fills one `FsXattr` through a valid pointer.
    unsafe { fs_get_xattr(f.as_raw_fd(), &mut x) }
        .map_err(|e| Error::io("read project id", e.into()))?;
    Ok(x)
}

fn set_project(dir: &Path, id: u32) -> Result<()> {
    let f = open_dir(dir)?;
    let mut x = get_xattr(&f)?;
    x.projid = id;
    x.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: the ioctl reads one `FsXattr` through a valid pointer.
    unsafe { fs_set_xattr(f.as_raw_fd(), &x) }
        .map_err(|e| Error::io(format!("set project of {}", dir.display()), e.into()))?;
    Ok(())
}

/// The quota record of project `id`.
fn get_quota(f: &File, id: u32) -> std::io::Result<libc::dqblk> {
    // SAFETY: dqblk is plain integers; all-zero is a valid value.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    quotactl(f, libc::Q_GETQUOTA, id, (&mut q as *mut libc::dqblk).cast())?;
    Ok(q)
}

fn set_limit(f: &File, id: u32, bytes: u64) -> Result<()> {
    // SAFETY: as in get_quota.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    // Limits are in 1 KiB quota blocks.
    q.dqb_bhardlimit = bytes.div_ceil(1024);
    q.dqb_bsoftlimit = q.dqb_bhardlimit;
    q.dqb_valid = libc::QIF_BLIMITS;
    quotactl(f, libc::Q_SETQUOTA, id, (&mut q as *mut libc::dqblk).cast())
        .map_err(|e| Error::io("set disk limit", e))
}

/// A project id no one uses on the filesystem of `f`, derived from the
/// space id so that it is usually found at the first try.
fn free_project(f: &File, space_id: &str) -> Result<u32> {
    let seed = u32::from_str_radix(space_id.get(..4).unwrap_or("0"), 16).unwrap_or(0);
    for i in 0..1024u32 {
        let id = FIRST_PROJECT + ((seed + i) & 0xffff);
        let q = get_quota(f, id).map_err(|e| Error::io("read project quota", e))?;
        if q.dqb_curspace == 0 && q.dqb_curinodes == 0 && q.dqb_bhardlimit == 0 {
            return Ok(id);
        }
    }
    Err(Error::Container(
        "no free project id for a disk limit".into(),
    ))
}

/// Limits what the space writes into `upper` (and overlayfs' `work`, on
/// the same filesystem) and into its workspace volume `volume`, when it has
/// one, to `bytes` together. Idempotent: a space that already has a project
/// keeps it, and a reattached volume brings its project along (its files
/// are already charged to it). Fails unless the filesystem enforces the
/// limit.
pub fn apply(
    upper: &Path,
    work: &Path,
    volume: Option<&Path>,
    space_id: &str,
    bytes: u64,
) -> Result<()> {
    check_available(upper)?;
    let f = open_dir(upper)?;
    let dirs: Vec<&Path> = volume.into_iter().chain([upper, work]).collect();
    let mut current = 0;
    for d in &dirs {
        let id = get_xattr(&open_dir(d)?)?.projid;
        if id >= FIRST_PROJECT {
            current = id;
            break;
        }
    }
    let id = if current >= FIRST_PROJECT {
        current
    } else {
        free_project(&f, space_id)?
    };
    for d in &dirs {
        set_project(d, id)?;
    }
    set_limit(&f, id, bytes)
}

/// The error of a space (`name`, limit `bytes`) that is not started because
/// its disk limit could not be applied (`e`).
pub fn not_applied(name: &str, bytes: u64, e: Error) -> Error {
    let e = match e {
        Error::InvalidInput(m) => m,
        e => e.to_string(),
    };
    Error::DiskLimit(format!(
        "space {name} has a disk limit of {} MiB that cannot be applied, so it is not \
         started without it: {e}",
        bytes.div_ceil(1 << 20)
    ))
}

/// The server's default disk limit (`CLAWDSPACE_DEFAULT_DISK`) as it
/// applies to spaces in `dir`: `default` when its filesystem enforces
/// project quotas; otherwise none, with a warning saying so.
pub fn usable_default(default: Option<u64>, dir: &Path) -> Option<u64> {
    let bytes = default?;
    match check_available(dir) {
        Ok(()) => {
            tracing::info!(bytes, "default disk limit of new spaces");
            Some(bytes)
        }
        Err(e) => {
            tracing::warn!(
                "CLAWDSPACE_DEFAULT_DISK ignored: new spaces get no disk limit unless they ask \
                 for one: {e}"
            );
            None
        }
    }
}

/// Drops the limit of the project of `upper`, if it has one (destroy).
pub fn release(upper: &Path) {
    let Ok(f) = File::open(upper) else { return };
    let Ok(x) = get_xattr(&f) else { return };
    if x.projid >= FIRST_PROJECT {
        if let Err(e) = set_limit(&f, x.projid, 0) {
            tracing::warn!("releasing disk limit of project {}: {e}", x.projid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_structs_match_the_kernel_abi() {
        assert_eq!(qcmd(libc::Q_SETQUOTA, PRJQUOTA), 0x8000_0802_u32 as i32);
        assert_eq!(Q_XGETQSTATV, 0x5808);
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<libc::dqblk>(), 72);
        // FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR of <linux/fs.h>.
        let size = std::mem::size_of::<FsXattr>();
        assert_eq!(nix::request_code_read!(b'X', 31, size) as u64, 0x801c_581f);
        assert_eq!(nix::request_code_write!(b'X', 32, size) as u64, 0x401c_5820);
    }

    #[test]
    fn project_ids_are_read_from_a_real_directory() {
        // ext4 (most state dirs and this repo's CI) answers FS_IOC_FSGETXATTR
        // with or without the project feature: a fresh directory is in
        // project 0, and releasing it does nothing.
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let st = nix::sys::statfs::statfs(dir.path()).expect("statfs");
        if st.filesystem_type() != nix::sys::statfs::EXT4_SUPER_MAGIC {
            return;
        }
        let f = File::open(dir.path()).expect("open");
        assert_eq!(get_xattr(&f).expect("FS_IOC_FSGETXATTR").projid, 0);
        release(dir.path());
    }

    #[test]
    fn the_default_limit_applies_only_where_quotas_are_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let enforced = check_available(dir.path()).is_ok();
        assert_eq!(usable_default(None, dir.path()), None);
        assert_eq!(
            usable_default(Some(1 << 30), dir.path()),
            enforced.then_some(1 << 30)
        );
        if !enforced {
            // And a limit is never "applied" where it would not hold.
            let e = apply(dir.path(), dir.path(), None, &"a".repeat(64), 1 << 30)
                .expect_err("no enforcement");
            let e = not_applied("dev", 10 << 20, e).to_string();
            assert!(e.contains("space dev has a disk limit of 10 MiB"), "{e}");
            assert!(e.contains("disk quotas are not available"), "{e}");
        }
    }

    #[test]
    fn a_filesystem_without_project_quotas_is_refused_clearly() {
        // tmpfs (without quota support) and most test hosts' /tmp.
        let dir = tempfile::tempdir().expect("tempdir");
        if check_available(dir.path()).is_ok() {
            return;
        }
        let e = check_available(dir.path()).expect_err("no project quotas");
        let msg = e.to_string();
        assert!(msg.contains("disk quotas are not available"), "{msg}");
        assert!(msg.contains("prjquota"), "{msg}");
    }
}
