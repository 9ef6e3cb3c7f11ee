//! A directory of a space as a tar stream, walked through descriptors only:
//! every entry is opened relative to its parent with `O_NOFOLLOW`, so a
//! symlink is archived as a symlink and never followed, whatever the tenant
//! changes while the archive is written.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use crate::error::{Error, Result};
use crate::inroot::{open_beneath, Resolve};

/// Writes the tree under `dir` as a tar stream (paths relative to `dir`)
/// into `out`. Blocking.
pub(super) fn write_tar<W: Write>(dir: OwnedFd, out: W) -> Result<()> {
    let mut w = TarWriter {
        builder: tar::Builder::new(io::BufWriter::with_capacity(1 << 20, out)),
        links: HashMap::new(),
    };
    w.dir(dir.as_fd(), Path::new(""))?;
    let inner = w
        .builder
        .into_inner()
        .map_err(|e| Error::io("finish the archive", e))?;
    inner
        .into_inner()
        .map_err(|e| Error::io("write the archive", e.into_error()))?;
    Ok(())
}

struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    /// First path of each multiply-linked file, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
}

fn header(st: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

fn write_err(e: io::Error) -> Error {
    Error::io("write the archive", e)
}

impl<W: Write> TarWriter<W> {
    fn dir(&mut self, dir: BorrowedFd<'_>, prefix: &Path) -> Result<()> {
        let mut names = super::files::dir_names(dir)?;
        names.sort();
        for name in names {
            let path = prefix.join(&name);
            let Ok(st) = fstatat(
                Some(dir.as_raw_fd()),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue; // removed meanwhile
            };
            self.entry(dir, &name, &path, &st)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
    ) -> Result<()> {
        use tar::EntryType as T;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = match open_beneath(
                    dir,
                    Path::new(name),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                    Resolve::NoSymlinks,
                ) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
                };
                let mut h = header(st, T::Directory);
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(write_err)?;
                self.dir(sub.as_fd(), path)
            }
            libc::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        let mut h = header(st, T::Link);
                        let first = first.clone();
                        return self
                            .builder
                            .append_link(&mut h, path, &first)
                            .map_err(write_err);
                    }
                    self.links.insert(key, path.to_path_buf());
                }
                let fd = match open_beneath(
                    dir,
                    Path::new(name),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                    Mode::empty(),
                    Resolve::NoSymlinks,
                ) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
                };
                let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", e.into()))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Ok(()); // replaced meanwhile
                }
                let size = st.st_size as u64;
                let mut h = header(&st, T::Regular);
                h.set_size(size);
                // Exactly `size` bytes, whatever happens to the file meanwhile.
                let data = File::from(fd).take(size).chain(io::repeat(0)).take(size);
                self.builder
                    .append_data(&mut h, path, data)
                    .map_err(write_err)
            }
            libc::S_IFLNK => {
                let Ok(target) = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name) else {
                    return Ok(());
                };
                let mut h = header(st, T::Symlink);
                self.builder
                    .append_link(&mut h, path, Path::new(&target))
                    .map_err(write_err)
            }
            libc::S_IFIFO => {
                let mut h = header(st, T::Fifo);
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(write_err)
            }
            _ => Ok(()), // sockets and devices are not archived
        }
    }
}
