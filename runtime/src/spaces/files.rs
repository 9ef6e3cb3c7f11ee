//! A space's files from the host: stat, read, write, delete, list, and tar
//! archives in and out, on absolute paths as the space's user sees them.
//!
//! Nothing here goes into the space (no exec): paths are resolved by the
//! kernel on host directories the daemon owns, with `openat2`
//! `RESOLVE_IN_ROOT` ([`crate::inroot`]): the space's overlay mount
//! (`<space>/rootfs`) for every path, except those under `/workspace`,
//! which resolve in the volume directory with `/workspace` as their root.
//! So no symlink a tenant plants ever reaches a host file, and the files
//! are there while the space is paused or stopped (a stopped space whose
//! overlay is not mounted, after a reboot, gets it mounted again).
//!
//! `..` in a request's path is resolved lexically first (clamped at `/`);
//! a symlink in the volume whose absolute target starts with `/workspace`
//! resolves inside the volume as `/workspace/…`, i.e. not found.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use crate::error::{Error, Result};
use crate::inroot::{open_beneath, Resolve, Root};
use crate::store::SpaceStatus;

use super::volumes::WORKSPACE;
use super::Runtime;

/// Read size of uploads and archive copies.
const CHUNK: usize = 1 << 20;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed by stat).
    Symlink,
    /// A FIFO, socket or device node.
    Other,
}

impl FileKind {
    /// `file`, `dir`, `symlink` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }

    fn of(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

/// Metadata of a file in a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`0o7777` part of the mode).
    pub mode: u32,
    /// Owner uid and gid as the space sees them.
    pub uid: u32,
    /// Owner group.
    pub gid: u32,
    /// Last modification, milliseconds since the epoch.
    pub mtime_ms: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: i64,
    /// Inode number (with size and mtime, an ETag).
    pub ino: u64,
    /// The target of a symlink.
    pub link_target: Option<String>,
}

impl FileInfo {
    fn from_stat(st: &FileStat) -> FileInfo {
        FileInfo {
            kind: FileKind::of(st.st_mode),
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime_ms: st.st_mtime * 1000 + st.st_mtime_nsec / 1_000_000,
            mtime_nsec: st.st_mtime_nsec,
            ino: st.st_ino,
            link_target: None,
        }
    }

    /// A strong validator of the file's content as it is now.
    pub fn etag(&self) -> String {
        format!(
            "\"{:x}-{:x}-{:x}.{:x}\"",
            self.ino,
            self.size,
            self.mtime_ms / 1000,
            self.mtime_nsec
        )
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name in the directory.
    pub name: String,
    /// Its metadata (symlinks not followed).
    pub info: FileInfo,
}

/// How [`Runtime::put_file`] writes.
#[derive(Debug, Clone, Copy)]
pub struct PutOptions {
    /// Permission bits of the file (default 0644).
    pub mode: u32,
    /// Create missing parent directories (owned by the space's user).
    pub mkdirs: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            mode: 0o644,
            mkdirs: false,
        }
    }
}

/// `path` (absolute) with `.` and `..` resolved lexically, `..` clamped at
/// the root. Relative paths and NUL bytes are refused.
pub fn normalize_path(path: &str) -> Result<PathBuf> {
    if !path.starts_with('/') {
        return Err(Error::InvalidInput(format!(
            "path must be absolute (start with /): {path:?}"
        )));
    }
    if path.contains('\0') {
        return Err(Error::InvalidInput("path may not contain NUL".into()));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The absolute path of `path` taken relative to `/workspace`, `..`
/// clamped there (the upstream files API's paths).
pub fn workspace_path(path: &str) -> Result<PathBuf> {
    let inner = normalize_path(&format!("/{path}"))?;
    let rel = inner.strip_prefix("/").unwrap_or(&inner);
    if rel.as_os_str().is_empty() {
        return Ok(PathBuf::from(WORKSPACE));
    }
    Ok(Path::new(WORKSPACE).join(rel))
}

/// A path resolved to a root the daemon owns and a path inside it.
struct Located {
    root: Root,
    rel: PathBuf,
    uid: u32,
    gid: u32,
}

impl Located {
    /// The parent directory (followed in the root) and the last name.
    fn parent(&self) -> Result<(OwnedFd, CString)> {
        self.root
            .parent_of(&self.rel, Resolve::InRoot)
            .map_err(|e| not_found_or(e, &self.rel, "open parent of"))
    }
}

impl Runtime {
    /// Resolves `path` of space `name` to the directory it lives under.
    /// Mounts the overlay of a stopped space that has none (blocking work
    /// runs on the blocking pool).
    async fn locate(&self, name: &str, path: &str) -> Result<Located> {
        let space = self.get(name)?;
        let abs = normalize_path(path)?;
        let volume = self.space_volume(&space);
        let in_volume = volume.is_some() && abs.starts_with(WORKSPACE);
        if !in_volume && !self.is_rootfs_mounted(&space) {
            self.mount_stopped(name).await?;
        }
        let rootfs = self.rootfs_dir(&space);
        let (uid, gid) = (space.user.uid, space.user.gid);
        tokio::task::spawn_blocking(move || {
            let (dir, rel) = match volume {
                Some(v) if in_volume => {
                    (v, abs.strip_prefix(WORKSPACE).unwrap_or(&abs).to_path_buf())
                }
                _ => (rootfs, abs),
            };
            let root =
                Root::open(&dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))?;
            Ok(Located {
                root,
                rel,
                uid,
                gid,
            })
        })
        .await
        .map_err(|e| Error::Container(format!("file task: {e}")))?
    }

    /// Mounts the overlay of space `name` when it is stopped and has none
    /// (a host reboot): its files stay reachable. Under the space's lock,
    /// so a destroy never races it.
    async fn mount_stopped(&self, name: &str) -> Result<()> {
        let entry = self.entry(name)?;
        let _op = entry.op.write().await;
        let space = entry.snapshot();
        if space.status == SpaceStatus::Destroying {
            return Err(Error::SpaceNotFound);
        }
        if self.is_rootfs_mounted(&space) {
            return Ok(());
        }
        let plan = self.rootfs_plan(&space);
        tokio::task::spawn_blocking(move || crate::sandbox::rootfs::mount_overlay(&plan))
            .await
            .map_err(|e| Error::Container(format!("mount task: {e}")))?
            .map_err(Error::from)
    }

    /// Metadata of `path` in space `name`; a symlink is not followed (its
    /// target is given).
    pub async fn file_stat(&self, name: &str, path: &str) -> Result<FileInfo> {
        let loc = self.locate(name, path).await?;
        run(move || stat_nofollow(&loc)).await
    }

    /// Opens the regular file `path` of space `name` for reading
    /// (symlinks followed inside the space), with its metadata.
    pub async fn open_file(&self, name: &str, path: &str) -> Result<(File, FileInfo)> {
        let loc = self.locate(name, path).await?;
        run(move || {
            let fd = loc
                .root
                .open_at(
                    &loc.rel,
                    OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                    Mode::empty(),
                    Resolve::InRoot,
                )
                .map_err(|e| not_found_or(e, &loc.rel, "open"))?;
            let info = FileInfo::from_stat(&fstat(fd.as_raw_fd()).map_err(io_err("stat"))?);
            match info.kind {
                FileKind::File => Ok((File::from(fd), info)),
                FileKind::Dir => Err(Error::InvalidInput(format!(
                    "{} is a directory (use the archive endpoint)",
                    shown(&loc.rel)
                ))),
                _ => Err(Error::InvalidInput(format!(
                    "{} is not a regular file",
                    shown(&loc.rel)
                ))),
            }
        })
        .await
    }

    /// Writes `body` to `path` in space `name`: streamed into a temporary
    /// file in the same directory, fsynced, renamed over `path`; owned by
    /// the space's user. A failure (the body breaking off, the disk or
    /// quota full: [`Error::DiskFull`]) leaves no partial file. Runs to the
    /// end even if the caller goes away.
    pub async fn put_file<R: Read + Send + 'static>(
        &self,
        name: &str,
        path: &str,
        opts: PutOptions,
        body: R,
    ) -> Result<FileInfo> {
        let loc = self.locate(name, path).await?;
        self.detached(move |_| async move { run(move || put(&loc, opts, body)).await })
            .await
    }

    /// Deletes `path` in space `name` (a directory with everything in it);
    /// the last component is never followed.
    pub async fn delete_path(&self, name: &str, path: &str) -> Result<()> {
        let loc = self.locate(name, path).await?;
        self.detached(move |_| async move {
            run(move || {
                let (dir, last) = loc.parent()?;
                let last = OsStr::from_bytes(last.as_bytes());
                fstatat(
                    Some(dir.as_raw_fd()),
                    last,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| not_found_or(e.into(), &loc.rel, "stat"))?;
                crate::image::unpack::remove(dir.as_fd(), last).map_err(io_err("delete"))
            })
            .await
        })
        .await
    }

    /// The entries of directory `path` in space `name`, by name.
    pub async fn list_dir(&self, name: &str, path: &str) -> Result<Vec<DirEntry>> {
        let loc = self.locate(name, path).await?;
        run(move || {
            let dir = open_dir(&loc)?;
            let mut out = Vec::new();
            for n in dir_names(dir.as_fd())? {
                let Ok(st) = fstatat(
                    Some(dir.as_raw_fd()),
                    n.as_os_str(),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                ) else {
                    continue; // removed meanwhile
                };
                out.push(DirEntry {
                    name: n.to_string_lossy().into_owned(),
                    info: FileInfo::from_stat(&st),
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// Writes directory `path` of space `name` as a tar stream to `out`:
    /// files, directories, symlinks (not followed), hardlinks, FIFOs, with
    /// modes, owners and times; sockets and devices are left out.
    pub async fn write_archive<W: Write + Send + 'static>(
        &self,
        name: &str,
        path: &str,
        out: W,
    ) -> Result<()> {
        let loc = self.locate(name, path).await?;
        run(move || {
            let dir = open_dir(&loc)?;
            super::archive::write_tar(dir, out)
        })
        .await
    }

    /// Extracts the tar stream `tar` into directory `path` of space `name`
    /// (created if missing), with the protections image layers get (see
    /// [`crate::image::unpack::unpack_into_space`]); everything is owned by
    /// the space's user. Runs to the end even if the caller goes away.
    pub async fn extract_archive<R: Read + Send + 'static>(
        &self,
        name: &str,
        path: &str,
        tar: R,
    ) -> Result<()> {
        let loc = self.locate(name, path).await?;
        self.detached(move |_| async move {
            run(move || {
                loc.root
                    .create_dir_all(&loc.rel, 0o755, Some((loc.uid, loc.gid)), Resolve::InRoot)
                    .map_err(|e| not_found_or(e, &loc.rel, "create directory"))?;
                let dir = open_dir(&loc)?;
                crate::image::unpack::unpack_into_space(tar, Root::from_fd(dir), (loc.uid, loc.gid))
            })
            .await
        })
        .await
    }
}

/// Runs blocking file work on the blocking pool.
async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Container(format!("file task: {e}")))?
}

fn shown(rel: &Path) -> String {
    let s = rel.display().to_string();
    if s.starts_with('/') {
        s
    } else {
        format!("/{s}")
    }
}

fn io_err<E: Into<io::Error>>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| disk_full_or(e.into(), what)
}

/// ENOSPC/EDQUOT as [`Error::DiskFull`], anything else as an I/O error.
fn disk_full_or(e: io::Error, what: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::EDQUOT) => Error::DiskFull(format!("{what}: the space's disk quota is full")),
        Some(libc::ENOSPC) => Error::DiskFull(format!("{what}: no space left on the disk")),
        _ => Error::io(what.to_string(), e),
    }
}

/// A lookup error: missing → [`Error::FileNotFound`], a non-directory on
/// the way, a symlink loop or a name too long → 400, the rest as I/O
/// errors.
fn not_found_or(e: io::Error, rel: &Path, what: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::FileNotFound(format!("{}: no such file", shown(rel))),
        Some(libc::ENOTDIR) => Error::InvalidInput(format!(
            "{}: a part of the path is not a directory",
            shown(rel)
        )),
        Some(libc::ELOOP) => Error::InvalidInput(format!(
            "{}: a symlink on the path cannot be followed (a loop, or it leads nowhere in the \
             space)",
            shown(rel)
        )),
        Some(libc::ENAMETOOLONG) => Error::InvalidInput(format!(
            "{}: a name on the path is longer than 255 bytes, or the path than 4096",
            shown(rel)
        )),
        _ if e.kind() == io::ErrorKind::InvalidInput => {
            Error::InvalidInput(format!("{}: {e}", shown(rel)))
        }
        _ => disk_full_or(e, &format!("{what} {}", shown(rel))),
    }
}

fn stat_nofollow(loc: &Located) -> Result<FileInfo> {
    if loc
        .rel
        .components()
        .all(|c| !matches!(c, Component::Normal(_)))
    {
        let st = fstat(loc.root.fd().as_raw_fd()).map_err(io_err("stat"))?;
        return Ok(FileInfo::from_stat(&st));
    }
    let (dir, last) = loc.parent()?;
    let last = OsStr::from_bytes(last.as_bytes());
    let st = fstatat(
        Some(dir.as_raw_fd()),
        last,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| not_found_or(e.into(), &loc.rel, "stat"))?;
    let mut info = FileInfo::from_stat(&st);
    if info.kind == FileKind::Symlink {
        let t = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), last)
            .map_err(|e| not_found_or(e.into(), &loc.rel, "readlink"))?;
        info.link_target = Some(t.to_string_lossy().into_owned());
    }
    Ok(info)
}

/// A readable descriptor of directory `loc` (followed in the root).
fn open_dir(loc: &Located) -> Result<OwnedFd> {
    loc.root
        .open_at(
            &loc.rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
            Resolve::InRoot,
        )
        .map_err(|e| not_found_or(e, &loc.rel, "open directory"))
}

/// The names in the directory `dir` (read through the descriptor itself).
pub(super) fn dir_names(dir: BorrowedFd<'_>) -> Result<Vec<std::ffi::OsString>> {
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(io_err("list directory"))
}

/// The body of [`Runtime::put_file`]. Blocking.
fn put<R: Read>(loc: &Located, opts: PutOptions, mut body: R) -> Result<FileInfo> {
    let comps = crate::inroot::normal_components(&loc.rel).map_err(io_err("path"))?;
    let Some((last, parents)) = comps.split_last() else {
        return Err(Error::InvalidInput(
            "path names a directory, not a file".into(),
        ));
    };
    let parent_path: PathBuf = parents.iter().collect();
    let dir = if opts.mkdirs {
        loc.root
            .create_dir_all(
                &parent_path,
                0o755,
                Some((loc.uid, loc.gid)),
                Resolve::InRoot,
            )
            .map_err(|e| not_found_or(e, &parent_path, "create directory"))?
    } else {
        loc.root
            .dir(&parent_path, Resolve::InRoot)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => Error::FileNotFound(format!(
                    "{}: the directory does not exist (mkdirs=true creates it)",
                    shown(&parent_path)
                )),
                _ => not_found_or(e, &parent_path, "open directory"),
            })?
    };
    let tmp_name = format!(
        ".{}.upload-{:08x}",
        String::from_utf8_lossy(last.as_bytes())
            .chars()
            .take(40)
            .collect::<String>(),
        rand::random::<u32>()
    );
    let tmp = OsStr::new(&tmp_name);
    let fd = open_beneath(
        dir.as_fd(),
        Path::new(tmp),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
        Resolve::NoSymlinks,
    )
    .map_err(|e| not_found_or(e, &loc.rel, "create"))?;
    let unlink_tmp = || {
        let _ = nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            tmp,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    };
    let written = (|| -> Result<FileInfo> {
        let mut f = File::from(fd);
        nix::unistd::fchown(
            f.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(loc.uid)),
            Some(nix::unistd::Gid::from_raw(loc.gid)),
        )
        .map_err(io_err("chown"))?;
        nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(opts.mode & 0o1777))
            .map_err(io_err("chmod"))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match e.kind() {
                        io::ErrorKind::InvalidData => Error::InvalidInput(e.to_string()),
                        _ => Error::io("reading the request body", e),
                    })
                }
            };
            f.write_all(&buf[..n]).map_err(io_err("write"))?;
        }
        f.sync_all().map_err(io_err("fsync"))?;
        let st = fstat(f.as_raw_fd()).map_err(io_err("stat"))?;
        Ok(FileInfo::from_stat(&st))
    })();
    let info = match written {
        Ok(i) => i,
        Err(e) => {
            unlink_tmp();
            return Err(e);
        }
    };
    if let Err(e) = nix::fcntl::renameat(Some(dir.as_raw_fd()), tmp, Some(dir.as_raw_fd()), *last) {
        unlink_tmp();
        return Err(match e {
            nix::errno::Errno::EISDIR | nix::errno::Errno::ENOTEMPTY => {
                Error::InvalidInput(format!("{} is a directory", shown(&loc.rel)))
            }
            e => disk_full_or(e.into(), "rename"),
        });
    }
    // The rename is durable once the directory is.
    if let Ok(d) = open_beneath(
        dir.as_fd(),
        Path::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
        Resolve::NoSymlinks,
    ) {
        let _ = nix::unistd::fsync(d.as_raw_fd());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_is_resolved_by_name_and_clamped() {
        let n = |p: &str| normalize_path(p).map(|p| p.display().to_string());
        assert_eq!(n("/a/./b/../c").ok().as_deref(), Some("/a/c"));
        assert_eq!(n("/../../etc/x").ok().as_deref(), Some("/etc/x"));
        assert_eq!(n("/workspace/../etc").ok().as_deref(), Some("/etc"));
        assert_eq!(n("//x//").ok().as_deref(), Some("/x"));
        assert!(n("relative").is_err());
        assert!(normalize_path("/a\u{0}b").is_err());
        let w = |p: &str| workspace_path(p).map(|p| p.display().to_string());
        assert_eq!(w("x").ok().as_deref(), Some("/workspace/x"));
        assert_eq!(w("/x").ok().as_deref(), Some("/workspace/x"));
        assert_eq!(w("../../etc/x").ok().as_deref(), Some("/workspace/etc/x"));
        assert_eq!(w("/").ok().as_deref(), Some("/workspace"));
    }

    #[test]
    fn a_name_too_long_is_the_requests_fault() {
        let e = not_found_or(
            io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            Path::new("x"),
            "open",
        );
        assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{e}");
        assert!(e.to_string().contains("longer than 255 bytes"), "{e}");
    }
}
