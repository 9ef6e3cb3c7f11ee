//! Small filesystem helpers: crash-safe writes, the state dir's id lists.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};

/// Writes `data` to `path` atomically: a temporary file in the same
/// directory, optionally fsynced, then renamed over `path`. A crash leaves
/// either the old or the new content, never a torn file.
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A name of this call's own: two writers of the same file (a pause and
    // the activity flusher, say) must not share one temporary file, or one
    // renames the other's half-written content into place.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("write {}", tmp.display()))?;
    if durable {
        f.sync_all().ctx(|| format!("fsync {}", tmp.display()))?;
    }
    drop(f);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(crate::Error::io(format!("rename to {}", path.display()), e));
    }
    if durable {
        // The rename is durable only once the directory is.
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs the directory `dir`, making renames and new entries in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir_all_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::io(format!("remove {}", path.display()), e)),
    }
}

/// Writes `ids`, one per line, to the state file `path` (removed when
/// there are none); atomic, not fsynced (what it lists is gone with a
/// reboot anyway).
pub(crate) fn write_ids(path: &Path, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::State(format!("remove {}: {e}", path.display())))
            }
            _ => Ok(()),
        };
    }
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    write_atomic(path, text.as_bytes(), false)
}

/// The space ids [`write_ids`] wrote to `path` (other lines skipped);
/// None when there is no such file.
pub(crate) fn read_ids(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| crate::space_id::is_space_id(l))
            .map(String::from)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_file_never_tear_or_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("space.json");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 64 << 10]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, c, false).expect("write");
                    }
                });
            }
        });
        let got = fs::read(&path).expect("read");
        assert!(contents.contains(&got), "a torn file");
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }
}
