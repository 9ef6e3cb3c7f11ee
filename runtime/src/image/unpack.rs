//! Unpacking a layer tarball into a directory usable as an overlayfs lower
//! layer: ownership, modes, xattrs, links and device nodes preserved; OCI
//! whiteouts converted to overlayfs whiteouts; paths that would escape the
//! directory rejected.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks `tar` into `dest` (an empty directory).
pub fn unpack_layer<R: Read>(tar: R, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().ctx(|| "read layer".into())? {
        let mut entry = entry.ctx(|| "read layer entry".into())?;
        let path = entry.path().ctx(|| "layer entry path".into())?.into_owned();
        let rel = safe_relative(&path)?;
        let Some(file_name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root directory itself
        };
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if file_name == OPAQUE {
            fs::create_dir_all(&parent).ctx(|| format!("create {}", parent.display()))?;
            set_opaque(&parent)?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            fs::create_dir_all(&parent).ctx(|| format!("create {}", parent.display()))?;
            make_whiteout(&parent.join(hidden))?;
            continue;
        }
        entry
            .unpack_in(dest)
            .ctx(|| format!("unpack {}", path.display()))?;
    }
    Ok(())
}

/// `path` as a relative path without `..`, or an error.
fn safe_relative(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidInput(format!(
                    "layer entry {} escapes the layer directory",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidInput(format!("path with NUL: {}", p.display())))
}

/// An overlayfs whiteout: a 0/0 character device.
fn make_whiteout(p: &Path) -> Result<()> {
    let _ = fs::remove_file(p);
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| Error::io(format!("whiteout {}", p.display()), e.into()))
}

/// Marks a directory opaque for overlayfs.
fn set_opaque(dir: &Path) -> Result<()> {
    let p = cpath(dir)?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if r != 0 {
        return Err(Error::io(
            format!("mark {} opaque", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_segments_are_rejected() {
        assert!(safe_relative(Path::new("../etc/passwd")).is_err());
        assert!(safe_relative(Path::new("a/../../b")).is_err());
        assert_eq!(
            safe_relative(Path::new("/./a/b")).ok(),
            Some(PathBuf::from("a/b"))
        );
    }
}
