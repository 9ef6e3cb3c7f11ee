//! A decoy host tree that hostile images and spaces aim at, and a snapshot
//! of everything an attack could change in a tree.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// A host directory tree the evil layers aim at; removed on drop.
pub struct Decoy {
    /// Its host path.
    pub dir: PathBuf,
}

impl Decoy {
    /// A fresh decoy under /var/tmp with a few files where attacks aim.
    pub fn new() -> Decoy {
        let dir = PathBuf::from(format!(
            "/var/tmp/clawdspace-decoy-{:08x}",
            rand::random::<u32>()
        ));
        fs::create_dir_all(dir.join("sub/deeper")).expect("decoy");
        fs::write(dir.join("victim"), "host file").expect("decoy");
        fs::write(dir.join("sub/secret"), "host secret").expect("decoy");
        fs::write(dir.join("sub/deeper/x"), "x").expect("decoy");
        for d in ["etc", "dev"] {
            fs::create_dir_all(dir.join(d)).expect("decoy");
        }
        fs::write(dir.join("etc/resolv.conf"), "host resolv").expect("decoy");
        fs::write(dir.join("etc/hosts"), "host hosts").expect("decoy");
        fs::write(dir.join("dev/init"), "host init").expect("decoy");
        Decoy { dir }
    }

    /// The decoy's path without its leading `/`, for `../../..` targets.
    pub fn relative(&self) -> String {
        let ups = "../".repeat(12);
        format!(
            "{ups}{}",
            self.dir.display().to_string().trim_start_matches('/')
        )
    }

    /// Mount points at or under the decoy (there must be none).
    pub fn mounts(&self) -> Vec<String> {
        let table = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let prefix = self.dir.to_string_lossy().to_string();
        table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Everything about a tree that an attack could change: each entry's type,
/// mode, owner, content hash or link target, and xattr names.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = md.file_type();
        let what = if ft.is_symlink() {
            format!("link {:?}", fs::read_link(&p).ok())
        } else if ft.is_file() {
            let data = fs::read(&p).unwrap_or_default();
            format!("file {}", hex::encode(sha2::Sha256::digest(&data)))
        } else if ft.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir").flatten() {
                stack.push(e.path());
            }
            "dir".into()
        } else {
            format!("special {:?} rdev {}", ft, md.rdev())
        };
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        out.insert(
            rel,
            format!(
                "{what} mode {:o} owner {}:{} xattrs {:?}",
                md.mode(),
                md.uid(),
                md.gid(),
                xattr_names(&p)
            ),
        );
    }
    out
}

/// The names of `p`'s extended attributes (raw `llistxattr` output).
pub fn xattr_names(p: &Path) -> Vec<u8> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut buf = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the given size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf
}
