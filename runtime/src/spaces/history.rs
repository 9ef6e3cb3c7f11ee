//! Shell history for the audit log: the lines added to a space's
//! `/workspace/.bash_history` since the last look (upstream ingests that
//! file as `space.shell` events). Read from the host, inside the volume's
//! root (a symlink there never leads out), a bounded amount per look.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::observe::open_regular_in;
use super::Runtime;

/// Bytes read per look at most; the rest waits for the next one.
pub const INGEST_BYTES: u64 = 64 << 10;
/// Lines returned per look at most.
pub const INGEST_LINES: usize = 200;

/// How far a history file has been read: the file (its inode) and the
/// offset after the last line taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMark {
    /// Inode of the file read.
    pub inode: u64,
    /// Bytes taken.
    pub offset: u64,
}

/// Lines added to a history file, and where the next look goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLines {
    /// Complete, non-empty lines in order (bash's `#<epoch>` timestamp
    /// lines left out).
    pub lines: Vec<String>,
    /// Where this look stopped.
    pub mark: HistoryMark,
}

impl Runtime {
    /// The lines added to space `name`'s `/workspace/.bash_history` since
    /// `mark`; from the start without a mark or when the file was replaced
    /// (another inode) or cut (shorter than the mark). At most
    /// [`INGEST_LINES`] lines and [`INGEST_BYTES`] bytes per call: the
    /// returned mark is where the next call goes on. None when the space
    /// has no volume or no such regular file. Blocking.
    pub fn shell_history_since(
        &self,
        name: &str,
        mark: Option<HistoryMark>,
    ) -> Result<Option<HistoryLines>> {
        let space = self.get(name)?;
        Ok(self
            .space_volume(&space)
            .and_then(|v| read_since(&v, Path::new(".bash_history"), mark)))
    }
}

fn read_since(root: &Path, path: &Path, mark: Option<HistoryMark>) -> Option<HistoryLines> {
    let (mut f, st) = open_regular_in(root, path)?;
    let (inode, size) = (st.st_ino, st.st_size as u64);
    let start = match mark {
        Some(m) if m.inode == inode && m.offset <= size => m.offset,
        _ => 0,
    };
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.take(INGEST_BYTES).read_to_end(&mut buf).ok()?;
    let (lines, used) = complete_lines(&buf, INGEST_LINES);
    // A line longer than a whole read is skipped, not waited for forever.
    let used = if used == 0 && buf.len() as u64 == INGEST_BYTES {
        buf.len()
    } else {
        used
    };
    Some(HistoryLines {
        lines,
        mark: HistoryMark {
            inode,
            offset: start + used as u64,
        },
    })
}

/// The first `max` complete lines of `buf` worth keeping, and the bytes
/// they (and any skipped lines among them) take; a last line without its
/// newline is left for later.
fn complete_lines(buf: &[u8], max: usize) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut used = 0;
    while lines.len() < max {
        let Some(end) = buf[used..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let raw = &buf[used..used + end];
        used += end + 1;
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        let timestamp = line.len() > 1
            && line.starts_with('#')
            && line[1..].bytes().all(|b| b.is_ascii_digit());
        if !line.is_empty() && !timestamp {
            lines.push(line.to_string());
        }
    }
    (lines, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn lines_are_complete_trimmed_and_without_timestamps() {
        let (lines, used) = complete_lines(b"ls -la\n#1700000000\n\n  make \r\npartial", 10);
        assert_eq!(lines, ["ls -la", "make"]);
        assert_eq!(used, "ls -la\n#1700000000\n\n  make \r\n".len());
        let (lines, used) = complete_lines(b"a\nb\nc\n", 2);
        assert_eq!((lines, used), (vec!["a".to_string(), "b".to_string()], 4));
        // Not UTF-8: kept, lossily.
        let (lines, _) = complete_lines(b"echo \xff\n", 10);
        assert_eq!(lines, ["echo \u{fffd}"]);
    }

    #[test]
    fn a_file_is_read_on_from_its_mark_and_again_when_replaced_or_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(".bash_history");
        let read = |m| read_since(dir.path(), Path::new(".bash_history"), m);
        assert_eq!(read(None), None);
        fs::write(&file, "one\ntwo\nthr").expect("write");
        let first = read(None).expect("read");
        assert_eq!(first.lines, ["one", "two"]);
        assert_eq!(first.mark.offset, 8);
        // Nothing new until the line is complete.
        assert_eq!(
            read(Some(first.mark)).expect("read").lines,
            Vec::<String>::new()
        );
        fs::write(&file, "one\ntwo\nthree\nfour\n").expect("write");
        let next = read(Some(first.mark)).expect("read");
        assert_eq!(next.lines, ["three", "four"]);
        // Cut shorter than the mark: from the start again.
        fs::write(&file, "new\n").expect("write");
        assert_eq!(read(Some(next.mark)).expect("read").lines, ["new"]);
        // Replaced by another file (another inode): from the start.
        let other = dir.path().join("other");
        fs::write(&other, "a\nb\nc\nd\ne\nf\n").expect("write");
        let before = read(None).expect("read").mark;
        fs::rename(&other, &file).expect("rename");
        let again = read(Some(HistoryMark {
            offset: 2,
            ..before
        }))
        .expect("read");
        assert_eq!(again.lines, ["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn hostile_files_are_bounded_and_never_followed_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret");
        fs::write(&secret, "host-secret\n").expect("write");
        let file = dir.path().join(".bash_history");
        std::os::unix::fs::symlink(&secret, &file).expect("symlink");
        let read = |m| read_since(dir.path(), Path::new(".bash_history"), m);
        // The link is resolved inside the volume, where it leads nowhere.
        assert_eq!(read(None), None);
        fs::remove_file(&file).expect("rm");
        // A FIFO is not waited on.
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert_eq!(read(None), None);
        fs::remove_file(&file).expect("rm");
        // One huge line: skipped a read at a time, never stuck.
        let mut big = vec![b'x'; INGEST_BYTES as usize * 2];
        big.extend_from_slice(b"\nafter\n");
        fs::write(&file, &big).expect("write");
        let mut mark = None;
        let mut got = Vec::new();
        for _ in 0..4 {
            let r = read(mark).expect("read");
            got.extend(r.lines);
            mark = Some(r.mark);
        }
        assert!(got.ends_with(&["after".to_string()]), "{got:?}");
        assert!(got.iter().all(|l| l.len() < 200_000));
        // Many lines: at most INGEST_LINES per look.
        let many: String = (0..500).map(|i| format!("cmd {i}\n")).collect();
        fs::write(&file, many).expect("write");
        let r = read(None).expect("read");
        assert_eq!(r.lines.len(), INGEST_LINES);
        assert_eq!(r.lines[0], "cmd 0");
        let r2 = read(Some(r.mark)).expect("read");
        assert_eq!(r2.lines[0], format!("cmd {INGEST_LINES}"));
    }
}
