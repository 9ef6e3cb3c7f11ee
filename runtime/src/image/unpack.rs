//! Unpacking a layer tarball into a directory usable as an overlayfs lower
//! layer: ownership, modes (set-uid included), `user.*` and
//! `security.capability` xattrs, links and FIFOs preserved; OCI whiteouts
//! converted to overlayfs whiteouts.
//!
//! A layer is hostile input unpacked by root, so nothing here takes a path
//! through the host's view of the directory: every entry's parent is
//! resolved inside the layer with [`Resolve::NoSymlinks`] (missing parents
//! created), and the last component is acted on with `*at` calls that never
//! follow it. An entry whose path goes through a symlink, a name with `..`,
//! or a hardlink to anything outside the layer fails the whole layer with an
//! error naming the entry. Device nodes are skipped (a space gets its `/dev`
//! from the runtime); `trusted.*` and other xattrs are dropped.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mknodat, utimensat, FchmodatFlags, Mode as NixMode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::layer::{CappedReader, SizeCap};
use crate::error::{Error, Result};
use crate::inroot::{open_beneath, Resolve, Root};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Unpacks `tar` into `dest` (an empty private directory), writing at most
/// `max_bytes` of file content (sparse files included).
pub fn unpack_layer<R: Read>(tar: R, dest: &Path, max_bytes: u64) -> Result<()> {
    let root = Root::open(dest).map_err(|e| Error::io(format!("open {}", dest.display()), e))?;
    unpack(tar, root, Mode::Layer, SizeCap::new("layer", max_bytes))
}

/// Extracts `tar` into the directory `dest` of a space (a tar a client
/// sent), with the protections layers get: no entry is reached through a
/// symlink or `..`, hardlinks stay inside `dest`. Unlike a layer, every
/// entry is owned by `owner`, set-uid/set-gid bits and xattrs are dropped,
/// and `.wh.` names are ordinary files. A write that runs out of disk or
/// quota is [`Error::DiskFull`].
pub fn unpack_into_space<R: Read>(tar: R, dest: Root, owner: (u32, u32)) -> Result<()> {
    unpack(
        tar,
        dest,
        Mode::Space(Uid::from_raw(owner.0), Gid::from_raw(owner.1)),
        SizeCap::new("archive", u64::MAX),
    )
}

fn unpack<R: Read>(tar: R, root: Root, mode: Mode, cap: std::sync::Arc<SizeCap>) -> Result<()> {
    let mut u = Unpacker {
        root,
        mode,
        written: cap,
        dir_times: Vec::new(),
        disk_full: false,
    };
    let what = u.mode.what();
    let mut archive = tar::Archive::new(tar);
    for entry in archive
        .entries()
        .map_err(|e| Error::InvalidInput(format!("read {what}: {e}")))?
    {
        let mut entry = entry.map_err(|e| Error::InvalidInput(format!("read {what}: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        if let Err(why) = u.entry(&raw, &mut entry) {
            let msg = format!("{what} entry {}: {why}", show(&raw));
            return Err(if u.disk_full {
                Error::DiskFull(msg)
            } else {
                Error::InvalidInput(msg)
            });
        }
    }
    // Directory times last: unpacking into a directory changes its mtime.
    for (path, mtime) in std::mem::take(&mut u.dir_times) {
        let set = u
            .root
            .open_at(
                &path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                NixMode::empty(),
                Resolve::NoSymlinks,
            )
            .and_then(|fd| set_mtime(fd.as_fd(), mtime));
        if let Err(e) = set {
            tracing::debug!(path = %path.display(), "{what} directory time not set: {e}");
        }
    }
    Ok(())
}

/// What is being unpacked, and so which rules apply.
#[derive(Clone, Copy)]
enum Mode {
    /// An image layer: owners, modes and kept xattrs from the tar, OCI
    /// whiteouts converted.
    Layer,
    /// A client's archive into a space: everything owned by this user.
    Space(Uid, Gid),
}

impl Mode {
    fn what(self) -> &'static str {
        match self {
            Mode::Layer => "layer",
            Mode::Space(..) => "archive",
        }
    }
}

/// A layer path for messages (never lossy about what it was).
fn show(raw: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(raw))
}

/// Why an entry is refused, for the user.
type Why = String;

struct Unpacker {
    root: Root,
    mode: Mode,
    written: std::sync::Arc<SizeCap>,
    dir_times: Vec<(PathBuf, u64)>,
    /// A write failed for want of disk or quota.
    disk_full: bool,
}

/// What the header says about an entry's owner, mode and time.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: NixMode,
    mtime: u64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, raw: &[u8], entry: &mut tar::Entry<'_, R>) -> Result<(), Why> {
        if matches!(self.mode, Mode::Space(..)) && raw.starts_with(b"/") {
            return Err("absolute names are not allowed in an archive".into());
        }
        let comps = components(raw)?;
        let Some((&name, parents)) = comps.split_last() else {
            return Ok(()); // the layer's root directory itself
        };
        let parent_path: PathBuf = parents.iter().collect();
        let parent = self
            .root
            .create_dir_all(&parent_path, 0o755, None, Resolve::NoSymlinks)
            .map_err(resolve_error)?;
        let name_b = name.as_bytes();
        let layer = matches!(self.mode, Mode::Layer);
        if layer && name_b == OPAQUE {
            let dir = reopen_dir(parent.as_fd(), Path::new(".")).map_err(io_why)?;
            return set_xattr(dir.as_fd(), c"trusted.overlay.opaque", b"y").map_err(io_why);
        }
        if let Some(hidden) = name_b.strip_prefix(WHITEOUT_PREFIX).filter(|_| layer) {
            let hidden = OsStr::from_bytes(hidden);
            match hidden.as_bytes() {
                b"" | b"." | b".." => return Err("a whiteout may not name '.' or '..'".into()),
                h if h.starts_with(WHITEOUT_PREFIX) => {
                    tracing::debug!(entry = %show(raw), "skipping aufs metadata entry");
                    return Ok(());
                }
                _ => {}
            }
            remove(parent.as_fd(), hidden).map_err(io_why)?;
            return mknodat(
                Some(parent.as_raw_fd()),
                hidden,
                SFlag::S_IFCHR,
                NixMode::empty(),
                0,
            )
            .map_err(|e| io_why(e.into()));
        }
        let mut meta = meta(entry)?;
        if let Mode::Space(uid, gid) = self.mode {
            meta.uid = uid;
            meta.gid = gid;
            meta.mode &= NixMode::from_bits_truncate(0o1777);
            meta.xattrs.clear();
        }
        let dir = parent.as_fd();
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::GNUSparse => {
                remove(dir, name).map_err(io_why)?;
                let f = open_beneath(
                    dir,
                    Path::new(name),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                    NixMode::from_bits_truncate(0o600),
                    Resolve::NoSymlinks,
                )
                .map_err(|e| self.io_why(e))?;
                let mut file = File::from(f);
                let mut data = CappedReader::new(entry, vec![self.written.clone()]);
                let copied = io::copy(&mut data, &mut file).map_err(|e| {
                    if self.written.exceeded() {
                        self.written.message()
                    } else {
                        format!("write: {}", self.io_why(e))
                    }
                });
                if copied.is_err() && !layer {
                    // No partial file of a client's archive is left.
                    let _ = unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir);
                }
                copied?;
                apply_meta(file.as_fd(), &meta).map_err(|e| self.io_why(e))
            }
            T::Directory => {
                match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                    _ => {
                        remove(dir, name).map_err(io_why)?;
                        nix::sys::stat::mkdirat(
                            Some(dir.as_raw_fd()),
                            name,
                            NixMode::from_bits_truncate(0o700),
                        )
                        .map_err(|e| self.io_why(e.into()))?;
                    }
                }
                let d = reopen_dir(dir, Path::new(name)).map_err(io_why)?;
                apply_meta_no_time(d.as_fd(), &meta).map_err(io_why)?;
                self.dir_times.push((parent_path.join(name), meta.mtime));
                Ok(())
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or("a symlink without a target")?
                    .into_owned();
                remove(dir, name).map_err(io_why)?;
                symlinkat(OsStr::from_bytes(&target), Some(dir.as_raw_fd()), name)
                    .map_err(|e| io_why(e.into()))?;
                self.chown_nofollow(dir, name, &meta)?;
                let t = TimeSpec::new(meta.mtime as i64, 0);
                utimensat(
                    Some(dir.as_raw_fd()),
                    name,
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| io_why(e.into()))
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or("a hardlink without a target")?
                    .into_owned();
                if !layer && target.starts_with(b"/") {
                    return Err("a hardlink to an absolute path".into());
                }
                let (tdir, tname) = self
                    .existing_parent(&target)
                    .map_err(|why| format!("hardlink target {}: {why}", show(&target)))?;
                remove(dir, name).map_err(io_why)?;
                linkat(
                    Some(tdir.as_raw_fd()),
                    tname.as_c_str(),
                    Some(dir.as_raw_fd()),
                    &*CString::new(name.as_bytes()).map_err(|_| "a name with NUL")?,
                    AtFlags::empty(),
                )
                .map_err(|e| format!("hardlink to {}: {e}", show(&target)))
            }
            T::Fifo => {
                remove(dir, name).map_err(io_why)?;
                mknodat(Some(dir.as_raw_fd()), name, SFlag::S_IFIFO, meta.mode, 0)
                    .map_err(|e| io_why(e.into()))?;
                self.chown_nofollow(dir, name, &meta)?;
                // Just created in a private directory: not a symlink.
                fchmodat(
                    Some(dir.as_raw_fd()),
                    name,
                    meta.mode,
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| io_why(e.into()))
            }
            T::Char | T::Block => {
                tracing::debug!(entry = %show(raw), "skipping device node from a layer");
                Ok(())
            }
            other => {
                tracing::debug!(entry = %show(raw), "skipping tar entry of type {other:?}");
                Ok(())
            }
        }
    }

    /// An I/O error in the user's words, noting a full disk or quota.
    fn io_why(&mut self, e: io::Error) -> Why {
        if matches!(e.raw_os_error(), Some(libc::EDQUOT) | Some(libc::ENOSPC)) {
            self.disk_full = true;
        }
        e.to_string()
    }

    fn chown_nofollow(&self, dir: BorrowedFd<'_>, name: &OsStr, m: &Meta) -> Result<(), Why> {
        fchownat(
            Some(dir.as_raw_fd()),
            name,
            Some(m.uid),
            Some(m.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_why(e.into()))
    }

    /// The parent directory (which must exist, reached without symlinks) and
    /// the name of a hardlink target inside the layer.
    fn existing_parent(&self, target: &[u8]) -> Result<(OwnedFd, CString), Why> {
        let comps = components(target)?;
        let path: PathBuf = comps.iter().collect();
        self.root
            .parent_of(&path, Resolve::NoSymlinks)
            .map_err(resolve_error)
    }
}

/// The plain names of a tar path; `..` refused, `.` and empty skipped.
fn components(raw: &[u8]) -> Result<Vec<&OsStr>, Why> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("'..' is not allowed in an entry's path".into()),
            p if p.contains(&0) => return Err("a path with NUL".into()),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok(out)
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, Why> {
    let h = entry.header();
    let id = |v: io::Result<u64>| -> Result<u32, Why> {
        v.ok()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| "a bad owner id".to_string())
    };
    let uid = Uid::from_raw(id(h.uid())?);
    let gid = Gid::from_raw(id(h.gid())?);
    let mode =
        NixMode::from_bits_truncate(h.mode().map_err(|e| format!("bad mode: {e}"))? & 0o7777);
    let mtime = h.mtime().unwrap_or(0);
    let mut xattrs = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| format!("bad PAX header: {e}"))?;
            let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
                continue;
            };
            if name.starts_with("user.") || name == "security.capability" {
                if let Ok(c) = CString::new(name) {
                    xattrs.push((c, ext.value_bytes().to_vec()));
                }
            } else {
                tracing::debug!(xattr = name, "dropping layer xattr");
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs,
    })
}

/// Owner, kept xattrs, mode (after chown, which clears set-uid) and time.
fn apply_meta(fd: BorrowedFd<'_>, m: &Meta) -> io::Result<()> {
    apply_meta_no_time(fd, m)?;
    set_mtime(fd, m.mtime)
}

fn apply_meta_no_time(fd: BorrowedFd<'_>, m: &Meta) -> io::Result<()> {
    fchown(fd.as_raw_fd(), Some(m.uid), Some(m.gid))?;
    for (name, value) in &m.xattrs {
        set_xattr(fd, name, value)?;
    }
    fchmod(fd.as_raw_fd(), m.mode)?;
    Ok(())
}

fn set_mtime(fd: BorrowedFd<'_>, mtime: u64) -> io::Result<()> {
    let t = TimeSpec::new(mtime as i64, 0);
    Ok(futimens(fd.as_raw_fd(), &t, &t)?)
}

/// A readable descriptor of the directory `name` under `dir`, never
/// through a symlink (fchown/fchmod/fsetxattr need one that is not O_PATH).
fn reopen_dir(dir: BorrowedFd<'_>, name: &Path) -> io::Result<OwnedFd> {
    open_beneath(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        NixMode::empty(),
        Resolve::NoSymlinks,
    )
}

fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: a valid descriptor, a NUL-terminated name and a value buffer
    // of the given length.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes whatever `name` in `dir` is (a directory with its contents),
/// never following a symlink; nothing there is fine.
pub(crate) fn remove(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            let sub = reopen_dir(dir, Path::new(name))?;
            // Listing through our own descriptor's /proc link reads exactly
            // the directory we hold.
            let names: Vec<_> = std::fs::read_dir(format!("/proc/self/fd/{}", sub.as_raw_fd()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            for n in names {
                remove(sub.as_fd(), &n)?;
            }
            Ok(unlinkat(
                Some(dir.as_raw_fd()),
                name,
                UnlinkatFlags::RemoveDir,
            )?)
        }
        Ok(_) => Ok(unlinkat(
            Some(dir.as_raw_fd()),
            name,
            UnlinkatFlags::NoRemoveDir,
        )?),
    }
}

fn io_why(e: io::Error) -> Why {
    e.to_string()
}

/// A parent that could not be reached, in the user's words.
fn resolve_error(e: io::Error) -> Why {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => "its path goes through a symlink".into(),
        Some(libc::ENOTDIR) => "its path goes through something that is not a directory".into(),
        Some(libc::ENOENT) => "its parent directory does not exist".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_segments_are_rejected() {
        assert!(components(b"../etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert!(components(b"a/b\0c").is_err());
        let ok = components(b"/./a//b/").expect("plain");
        assert_eq!(ok, vec![OsStr::new("a"), OsStr::new("b")]);
    }
}
