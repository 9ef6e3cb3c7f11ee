//! Resolving a user name against an image's (or a space's) `/etc/passwd`
//! and `/etc/group`.
//!
//! Both files are tenant data: they are read inside their root (symlinks
//! resolve as in the space, never to host files), only when regular files,
//! and at most [`MAX_FILE`] bytes each (a FIFO or `/dev/zero` there is an
//! error, not a hang).

use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::error::{Error, Result};
use crate::inroot::{Resolve, Root};

/// Largest `/etc/passwd` or `/etc/group` read.
pub const MAX_FILE: u64 = 1 << 20;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Supplementary groups (from `/etc/group`).
    pub groups: Vec<u32>,
}

/// What one directory holds at a path.
enum Found {
    Text(String),
    Absent,
    /// A whiteout (character device 0/0 in a layer): deleted in this layer,
    /// so lower layers do not count either.
    Deleted,
}

/// Reads `rel` inside `dir` (see the module doc).
fn read_in(dir: &Path, rel: &str) -> Result<Found> {
    let bad = |e: std::io::Error| Error::InvalidInput(format!("/{rel}: {e}"));
    let root = Root::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))?;
    let path = Path::new(rel);
    let fd = match root.open_at(path, OFlag::O_PATH, Mode::empty(), Resolve::InRoot) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(Found::Absent)
        }
        Err(e) => return Err(bad(e)),
    };
    let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| bad(e.into()))?;
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => {}
        SFlag::S_IFCHR if st.st_rdev == 0 => return Ok(Found::Deleted),
        // Refused by type before any open that could block or fail on a
        // `nodev` mount.
        _ => return Err(Error::InvalidInput(format!("/{rel}: not a regular file"))),
    }
    let bytes = root
        .read_regular(path, MAX_FILE, Resolve::InRoot)
        .map_err(bad)?;
    Ok(Found::Text(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The file `rel` as the stack of `dirs` (topmost first) shows it: the
/// topmost one holding it wins; empty when none does.
fn read_merged(dirs: &[PathBuf], rel: &str) -> Result<String> {
    for d in dirs {
        match read_in(d, rel)? {
            Found::Text(t) => return Ok(t),
            Found::Deleted => break,
            Found::Absent => {}
        }
    }
    Ok(String::new())
}

/// Finds `name` in the image whose layers are `layers` (topmost first): the
/// topmost layer holding `etc/passwd` wins, as in the merged view. A space's
/// mounted root filesystem is one such "layer". `Ok(None)`: no such user.
/// An `/etc/passwd` or `/etc/group` that is not a regular file, or too
/// large, is an [`Error::InvalidInput`] naming it. Blocking: call it off
/// the async threads.
pub fn resolve_user(layers: &[PathBuf], name: &str) -> Result<Option<PasswdEntry>> {
    let Some(mut entry) = parse_passwd(&read_merged(layers, "etc/passwd")?, name) else {
        return Ok(None);
    };
    entry.groups = parse_groups(&read_merged(layers, "etc/group")?, name, entry.gid);
    Ok(Some(entry))
}

fn parse_passwd(text: &str, name: &str) -> Option<PasswdEntry> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(PasswdEntry {
            name: name.to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
            groups: Vec::new(),
        })
    })
}

fn parse_groups(text: &str, name: &str, primary: u32) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || !f[3].split(',').any(|m| m == name) {
                return None;
            }
            f[2].parse::<u32>().ok().filter(|g| *g != primary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nu:x:1001:1001::/home/u:/bin/sh\n";

    fn layer(root: &Path, name: &str, passwd: Option<&str>) -> PathBuf {
        let l = root.join(name);
        fs::create_dir_all(l.join("etc")).expect("mkdir");
        if let Some(p) = passwd {
            fs::write(l.join("etc/passwd"), p).expect("write");
        }
        l
    }

    #[test]
    fn the_topmost_layer_wins_and_a_whiteout_hides_lower_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        let (top, base) = (
            layer(t.path(), "top", None),
            layer(t.path(), "base", Some(PASSWD)),
        );
        let found = resolve_user(&[top.clone(), base.clone()], "u").expect("read");
        assert_eq!(found.map(|e| e.uid), Some(1001));
        fs::write(top.join("etc/passwd"), "u:x:7:7::/:/bin/sh\n").expect("write");
        let found = resolve_user(&[top.clone(), base.clone()], "u").expect("read");
        assert_eq!(found.map(|e| e.uid), Some(7));
        if nix::unistd::geteuid().is_root() {
            fs::remove_file(top.join("etc/passwd")).expect("rm");
            nix::sys::stat::mknod(
                &top.join("etc/passwd"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                0,
            )
            .expect("whiteout");
            assert_eq!(resolve_user(&[top, base], "u").expect("read"), None);
        }
    }

    #[test]
    fn hostile_files_are_refused_or_stay_inside_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let host = t.path().join("host-passwd");
        fs::write(&host, PASSWD).expect("write");
        let l = layer(t.path(), "l", None);
        // A symlink to a host file resolves inside the layer: nothing there.
        std::os::unix::fs::symlink(&host, l.join("etc/passwd")).expect("symlink");
        assert_eq!(
            resolve_user(std::slice::from_ref(&l), "u").expect("read"),
            None
        );
        fs::remove_file(l.join("etc/passwd")).expect("rm");
        nix::unistd::mkfifo(&l.join("etc/passwd"), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let e = resolve_user(std::slice::from_ref(&l), "u").expect_err("a FIFO");
        assert!(
            e.to_string().contains("/etc/passwd: not a regular file"),
            "{e}"
        );
        fs::remove_file(l.join("etc/passwd")).expect("rm");
        let big = format!("{}{PASSWD}", "#\n".repeat(MAX_FILE as usize));
        fs::write(l.join("etc/passwd"), big).expect("write");
        let e = resolve_user(&[l], "u").expect_err("too big");
        assert!(e.to_string().contains("/etc/passwd: larger than"), "{e}");
    }

    #[test]
    fn finds_user_and_groups() {
        let p = "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000::/home/sandbox:/bin/bash\n";
        let e = parse_passwd(p, "sandbox").expect("sandbox");
        assert_eq!(
            (e.uid, e.gid, e.home.as_str()),
            (1000, 1000, "/home/sandbox")
        );
        assert!(parse_passwd(p, "nobody").is_none());
        let g = "sandbox:x:1000:\nsudo:x:27:sandbox,other\nwheel:x:10:other\n";
        assert_eq!(parse_groups(g, "sandbox", 1000), vec![27]);
    }
}
