//! Paths inside a root the tenant controls (a space's root filesystem, its
//! upper dir, an image layer being unpacked), resolved by the kernel without
//! ever leaving that root.
//!
//! The daemon runs as root, so a path like `<rootfs>/home/u` must never be
//! handed to a plain `open`/`mkdir`: any component may be a symlink the tenant
//! or the image planted (`home -> /etc`). Every lookup here goes through
//! `openat2(2)` relative to a descriptor of the root:
//! - [`Resolve::InRoot`] (`RESOLVE_IN_ROOT`): symlinks are followed as a
//!   process chrooted at the root would follow them; absolute targets and
//!   `..` stay inside. This is how the space's own user sees its files.
//! - [`Resolve::NoSymlinks`] (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): any
//!   symlink in the path is an error (`ELOOP`). For unpacking layers, where a
//!   symlink in the middle of an entry's path is itself a sign of an attack.
//!
//! Both also refuse magic links (`/proc/self/root`-style) and crossing into
//! other mounts is allowed only where the root has them.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// How symlinks inside the root are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// Follow symlinks, but as if the root were `/` (`RESOLVE_IN_ROOT`).
    InRoot,
    /// Refuse any symlink in the path (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
    NoSymlinks,
}

impl Resolve {
    fn flags(self) -> ResolveFlag {
        let base = ResolveFlag::RESOLVE_NO_MAGICLINKS;
        match self {
            Resolve::InRoot => base | ResolveFlag::RESOLVE_IN_ROOT,
            Resolve::NoSymlinks => {
                base | ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS
            }
        }
    }
}

/// A directory that untrusted paths are resolved inside.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `dir` (a trusted host path, e.g. a space's rootfs directory).
    pub fn open(dir: &Path) -> io::Result<Root> {
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(dir)?;
        Ok(Root { fd: f.into() })
    }

    /// A root of the directory `fd` is open on (say one resolved inside
    /// another root).
    pub fn from_fd(fd: OwnedFd) -> Root {
        Root { fd }
    }

    /// The root's own descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `path` (absolute or relative; both are taken from the root) with
    /// `flags` (`O_CLOEXEC` is always added) and `mode` for `O_CREAT`.
    pub fn open_at(
        &self,
        path: &Path,
        flags: OFlag,
        mode: Mode,
        resolve: Resolve,
    ) -> io::Result<OwnedFd> {
        open_beneath(self.fd.as_fd(), path, flags, mode, resolve)
    }

    /// An `O_PATH` descriptor of the directory `path`.
    pub fn dir(&self, path: &Path, resolve: Resolve) -> io::Result<OwnedFd> {
        self.open_at(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
            resolve,
        )
    }

    /// The directory `path`, created with its missing parents (each with
    /// `mode`, and owned by `owner` when given; existing ones are left as they
    /// are). Returns an `O_PATH` descriptor of it. A component that exists but
    /// is not a directory (or, with [`Resolve::NoSymlinks`], is a symlink) is
    /// an error.
    pub fn create_dir_all(
        &self,
        path: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
        resolve: Resolve,
    ) -> io::Result<OwnedFd> {
        let mut dir = self.dir(Path::new("."), Resolve::NoSymlinks)?;
        let mut sofar = PathBuf::new();
        for c in normal_components(path)? {
            sofar.push(c);
            match self.dir(&sofar, resolve) {
                Ok(fd) => dir = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = cstr(c)?;
                    // mkdirat never follows a symlink in its last component.
                    // SAFETY: valid descriptor and NUL-terminated name.
                    let r = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) };
                    let created = r == 0;
                    if !created {
                        let err = io::Error::last_os_error();
                        if err.raw_os_error() != Some(libc::EEXIST) {
                            return Err(err);
                        }
                    }
                    let fd = open_beneath(
                        dir.as_fd(),
                        Path::new(c),
                        OFlag::O_PATH | OFlag::O_DIRECTORY,
                        Mode::empty(),
                        Resolve::NoSymlinks,
                    )?;
                    if let (true, Some((uid, gid))) = (created, owner) {
                        chown_fd(fd.as_fd(), uid, gid)?;
                    }
                    dir = fd;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(dir)
    }

    /// The parent directory of `path` (resolved with `resolve`) and the last
    /// component's name, for `*at` calls that must not follow that name.
    /// `path` must have a last component that is a plain name.
    pub fn parent_of(&self, path: &Path, resolve: Resolve) -> io::Result<(OwnedFd, CString)> {
        let comps = normal_components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(invalid("the path names the root itself"));
        };
        let parent: PathBuf = parents.iter().collect();
        let fd = self.dir(
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &parent
            },
            resolve,
        )?;
        Ok((fd, cstr(last)?))
    }

    /// The first symlink on `path` (a prefix of it, relative to the root)
    /// and its target, without following any; None when the path has none
    /// up to the first missing component.
    pub fn first_symlink(&self, path: &Path) -> io::Result<Option<(PathBuf, PathBuf)>> {
        let mut sofar = PathBuf::new();
        for c in normal_components(path)? {
            sofar.push(c);
            let (dir, name) = self.parent_of(&sofar, Resolve::NoSymlinks)?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: valid descriptor, NUL-terminated name, buffer of buf.len() bytes.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(Some((sofar, PathBuf::from(OsStr::from_bytes(&buf)))));
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINVAL) => continue, // not a symlink
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => return Ok(None),
                _ => return Err(io::Error::last_os_error()),
            }
        }
        Ok(None)
    }

    /// Reads the regular file `path` whole, refusing anything else (FIFOs,
    /// devices, directories) and anything over `cap` bytes. Never blocks on a
    /// FIFO: it is opened non-blocking and refused by type.
    pub fn read_regular(&self, path: &Path, cap: u64, resolve: Resolve) -> io::Result<Vec<u8>> {
        let fd = self.open_at(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
            resolve,
        )?;
        let st = fstat(fd.as_raw_fd())?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(invalid("not a regular file"));
        }
        if st.st_size as u64 > cap {
            return Err(too_big(cap));
        }
        let mut out = Vec::with_capacity(st.st_size as usize);
        File::from(fd).take(cap + 1).read_to_end(&mut out)?;
        if out.len() as u64 > cap {
            return Err(too_big(cap));
        }
        Ok(out)
    }
}

/// `openat2(dir, path, …)` with `resolve`; the path may start with `/`
/// (taken from `dir` as well).
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    mode: Mode,
    resolve: Resolve,
) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(resolve.flags());
    // EAGAIN: a `..` was walked while something on the host renamed or
    // mounted (any create does), so the kernel could not vouch that it
    // stayed inside; nothing was opened or created, and it may be asked
    // again (openat2(2)). Bounded: a steady stream of renames is not an
    // endless loop.
    let mut tries = 0;
    let fd = loop {
        match openat2(dir.as_raw_fd(), rel, how) {
            Err(nix::errno::Errno::EAGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            r => break r.map_err(io::Error::from)?,
        }
    };
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How often [`open_beneath`] asks again after `EAGAIN`.
const OPENAT2_RETRIES: u32 = 1000;

/// `fchown` of an `O_PATH` descriptor (through `AT_EMPTY_PATH`).
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and an empty NUL-terminated path.
    let r = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `path` without its leading `/` (`.` for the root itself).
fn relative(path: &Path) -> &Path {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// The plain names of `path`; `.` and `/` are skipped and `..` refused (the
/// caller decides what a `..` means before it gets here).
pub fn normal_components(path: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid("'..' is not allowed in this path"))
            }
        }
    }
    Ok(out)
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| invalid("a path may not contain NUL"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn too_big(cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the {cap}-byte limit"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A `..` resolved while the host renames things (creates, writes of
    /// state files: all the time on a busy server) still opens its file.
    #[test]
    fn dot_dot_resolves_while_the_host_renames() {
        let t = tree();
        symlink("../../../../etc/passwd", t.path().join("root/etc/rel")).expect("symlink");
        let root = File::open(t.path().join("root")).expect("open root");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renamer = {
            let (stop, dir) = (stop.clone(), t.path().join("host"));
            std::thread::spawn(move || {
                let (a, b) = (dir.join("a"), dir.join("b"));
                std::fs::write(&a, "x").expect("write");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::rename(&a, &b).expect("rename");
                    std::fs::rename(&b, &a).expect("rename");
                }
            })
        };
        let mut failed = None;
        for _ in 0..20_000 {
            let r = open_beneath(
                root.as_fd(),
                Path::new("/etc/rel"),
                OFlag::O_RDONLY,
                Mode::empty(),
                Resolve::InRoot,
            );
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renamer.join().expect("renamer");
        assert!(failed.is_none(), "{failed:?}");
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("root/etc")).expect("mkdir");
        std::fs::write(
            t.path().join("root/etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .expect("write");
        std::fs::create_dir_all(t.path().join("host")).expect("mkdir");
        std::fs::write(t.path().join("host/secret"), "host secret").expect("write");
        t
    }

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let t = tree();
        let host = t.path().join("host");
        symlink(&host, t.path().join("root/escape")).expect("symlink");
        symlink("../../../host/secret", t.path().join("root/rel")).expect("symlink");
        let root = Root::open(&t.path().join("root")).expect("open");
        // In the root, "escape" points at <root><host path>, which is absent.
        let r = root.read_regular(
            &Path::new("/escape").join("secret"),
            1 << 20,
            Resolve::InRoot,
        );
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
        let r = root.read_regular(Path::new("/rel"), 1 << 20, Resolve::InRoot);
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
        let r = root.read_regular(Path::new("escape/secret"), 1 << 20, Resolve::NoSymlinks);
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ELOOP));
        let ok = root
            .read_regular(Path::new("/etc/passwd"), 1 << 20, Resolve::InRoot)
            .expect("read");
        assert!(ok.starts_with(b"root:"));
    }

    #[test]
    fn reads_are_capped_and_regular_only() {
        let t = tree();
        let root = Root::open(&t.path().join("root")).expect("open");
        let e = root
            .read_regular(Path::new("/etc/passwd"), 4, Resolve::InRoot)
            .expect_err("over the cap");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = root
            .read_regular(Path::new("/etc"), 1 << 20, Resolve::InRoot)
            .expect_err("a directory");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        nix::unistd::mkfifo(&t.path().join("root/fifo"), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let e = root
            .read_regular(Path::new("/fifo"), 1 << 20, Resolve::InRoot)
            .expect_err("a FIFO");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn directories_are_created_inside_through_symlinks() {
        let t = tree();
        // An absolute target resolves inside the root: <root>/etc.
        symlink("/etc", t.path().join("root/home")).expect("symlink");
        symlink(t.path().join("host"), t.path().join("root/dangling")).expect("symlink");
        let root = Root::open(&t.path().join("root")).expect("open");
        root.create_dir_all(
            Path::new("/home/clawdspace-test-u/work"),
            0o755,
            None,
            Resolve::InRoot,
        )
        .expect("mkdir in root");
        assert!(t.path().join("root/etc/clawdspace-test-u/work").is_dir());
        assert!(
            !Path::new("/etc/clawdspace-test-u").exists(),
            "a host directory was created"
        );
        // A symlink to a host directory is dangling inside the root: no host dir.
        assert!(root
            .create_dir_all(Path::new("/dangling/u"), 0o755, None, Resolve::InRoot)
            .is_err());
        assert!(
            !t.path().join("host/u").exists(),
            "a host directory was created"
        );
        let e = root
            .create_dir_all(Path::new("home/v"), 0o755, None, Resolve::NoSymlinks)
            .expect_err("symlink refused");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert!(normal_components(Path::new("a/../b")).is_err());
    }
}
