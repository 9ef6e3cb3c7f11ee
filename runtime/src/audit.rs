//! The audit log: one JSON object per line (`{"ts","space"?,"type","meta"?}`,
//! SPEC 12), appended to a file in the state directory and rotated at a
//! size cap (`audit.jsonl` → `audit.jsonl.1`, the older `.1` goes).
//!
//! A thread of the log's own owns the file; events and queries reach it
//! through one queue, so a query sees every event recorded before it, in
//! order. [`AuditLog::record`] waits (asynchronously) until its event is
//! written, so an answered request's event survives a `kill -9` of the
//! daemon; [`AuditLog::record_nowait`] only queues (for code that cannot
//! await). Neither blocks a thread. Meta values are the caller's business:
//! names and numbers, never environment values or file contents (see
//! docs/API.md).
//!
//! ```text
//! st.audit.record(Some("dev"), AuditType::SpacePause, None).await;
//! st.audit.record(None, AuditType::TemplateUpsert, Some(json!({"template": "gpu"}))).await;
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// Default cap of the live file, bytes (the rotated one holds as much).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// The smallest cap accepted.
pub const MIN_MAX_BYTES: u64 = 4096;
/// Events waiting for the writer at most; more are dropped (and counted).
/// Counted, not preallocated: a channel of that capacity would keep 2 MiB
/// resident for nothing.
const QUEUE: u64 = 16_384;
/// Longest string kept in a meta value (characters); longer ones are cut
/// and the event gets `"truncated": true` in its meta.
pub const MAX_META_STRING: usize = 4096;
/// Reads go back in chunks of this size.
const CHUNK: u64 = 64 << 10;

/// What happened. The SPEC 12 types come first; the rest are ours
/// (extensions, documented in docs/API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditType {
    /// A space was created (meta: memory, cpus, gpu, image, network).
    SpaceCreate,
    /// A space was started or resumed.
    SpaceStart,
    /// A space was paused (meta `reason: "idle"` for auto-sleep).
    SpacePause,
    /// A space was destroyed (meta: removeVolume).
    SpaceDestroy,
    /// A command ran (meta: command, user, exitCode, durationMs).
    SpaceExec,
    /// A shell command from the space's history.
    SpaceShell,
    /// A file was written (meta: path, bytes).
    SpaceFileWrite,
    /// A terminal session opened.
    TerminalOpen,
    /// A terminal session closed.
    TerminalClose,
    /// A template was created or replaced (meta: template).
    TemplateUpsert,
    /// A template was deleted (meta: template).
    TemplateDelete,
    /// *Extension*: a file or directory was deleted (meta: path).
    SpaceFileDelete,
    /// *Extension*: a tar archive was extracted (meta: path).
    SpaceArchiveExtract,
    /// *Extension*: a git push ran (meta: repoPath, remote, branch, exitCode).
    SpaceGitPush,
    /// *Extension*: a public link to a port was made (meta: port, id, ttlSeconds).
    PortPublish,
    /// *Extension*: public links to a port were revoked (meta: port, count).
    PortRevoke,
    /// *Extension*: a kept volume was deleted.
    VolumeDelete,
    /// *Extension*: a space's connection was refused by its egress policy.
    NetworkDrop,
}

impl AuditType {
    /// The `type` string of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditType::SpaceCreate => "space.create",
            AuditType::SpaceStart => "space.start",
            AuditType::SpacePause => "space.pause",
            AuditType::SpaceDestroy => "space.destroy",
            AuditType::SpaceExec => "space.exec",
            AuditType::SpaceShell => "space.shell",
            AuditType::SpaceFileWrite => "space.file.write",
            AuditType::TerminalOpen => "terminal.open",
            AuditType::TerminalClose => "terminal.close",
            AuditType::TemplateUpsert => "template.upsert",
            AuditType::TemplateDelete => "template.delete",
            AuditType::SpaceFileDelete => "space.file.delete",
            AuditType::SpaceArchiveExtract => "space.archive.extract",
            AuditType::SpaceGitPush => "space.git.push",
            AuditType::PortPublish => "port.publish",
            AuditType::PortRevoke => "port.revoke",
            AuditType::VolumeDelete => "volume.delete",
            AuditType::NetworkDrop => "network.drop",
        }
    }
}

/// One event, as stored and as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, ISO 8601 UTC with milliseconds (`2026-01-02T03:04:05.678Z`).
    pub ts: String,
    /// The space it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// What happened (`space.exec`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// Counters of the log, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditCounts {
    /// Events queued for writing since start.
    pub recorded: u64,
    /// Events lost (queue full, log closed, or a failed write).
    pub dropped: u64,
    /// Rotations since start.
    pub rotations: u64,
}

enum Msg {
    /// An event, and who waits for it to be written.
    Event(AuditEvent, Option<tokio::sync::oneshot::Sender<()>>),
    Query {
        space: Option<String>,
        limit: usize,
        reply: tokio::sync::oneshot::Sender<Result<Vec<AuditEvent>>>,
    },
    Close,
}

#[derive(Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    rotations: AtomicU64,
    /// When the last "dropped" warning was logged (ms since start).
    warned_ms: AtomicU64,
    /// Events sent to the writer and not yet taken by it.
    queued: AtomicU64,
}

/// The audit log of a daemon; share it behind an `Arc`.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    tx: Sender<Msg>,
    counters: std::sync::Arc<Counters>,
    started: Instant,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens (creating it and its directory) the log at `path`, rotated
    /// when it would pass `max_bytes` (at least [`MIN_MAX_BYTES`]), and
    /// starts its writer thread. Blocking.
    pub fn open(path: &Path, max_bytes: u64) -> Result<AuditLog> {
        let max_bytes = max_bytes.max(MIN_MAX_BYTES);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        }
        let writer = Writer::open(path.to_path_buf(), max_bytes)?;
        let (tx, rx) = mpsc::channel();
        let counters = std::sync::Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer.run(rx, &c))
            .ctx(|| "start the audit thread".to_string())?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            max_bytes,
            tx,
            counters,
            started: Instant::now(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotation cap, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Records an event now (`ts` is the current time) and waits until
    /// the log's thread has written it to the file (not synced). Never
    /// blocks a thread; an event that cannot be queued is counted in
    /// [`AuditCounts::dropped`] and logged. Strings in `meta` longer than
    /// [`MAX_META_STRING`] are cut.
    pub async fn record(&self, space: Option<&str>, kind: AuditType, meta: Option<Value>) {
        self.record_raw(space, kind.as_str(), meta).await
    }

    /// [`AuditLog::record`] with a `type` string of the caller's.
    pub async fn record_raw(&self, space: Option<&str>, kind: &str, meta: Option<Value>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.enqueue(space, kind, meta, Some(tx)) {
            // Dropped unanswered only when the write failed (counted).
            let _ = rx.await;
        }
    }

    /// Queues an event without waiting for it to be written (it is, in
    /// order, unless the daemon dies first).
    pub fn record_nowait(&self, space: Option<&str>, kind: AuditType, meta: Option<Value>) {
        self.enqueue(space, kind.as_str(), meta, None);
    }

    fn enqueue(
        &self,
        space: Option<&str>,
        kind: &str,
        meta: Option<Value>,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        let meta = meta.map(|mut m| {
            if cap_strings(&mut m) {
                if let Value::Object(o) = &mut m {
                    o.insert("truncated".into(), Value::Bool(true));
                }
            }
            m
        });
        let event = AuditEvent {
            ts: now_iso(),
            space: space.map(str::to_string),
            kind: kind.to_string(),
            meta,
        };
        let queued = &self.counters.queued;
        let sent = if queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            Err("queue full")
        } else {
            self.tx
                .send(Msg::Event(event, ack))
                .map_err(|_| "log closed")
        };
        match sent {
            Ok(()) => {
                self.counters.recorded.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(why) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                // One warning per second at most.
                let now = self.started.elapsed().as_millis() as u64;
                let last = self.counters.warned_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 1000 || last == 0 {
                    self.counters.warned_ms.store(now.max(1), Ordering::Relaxed);
                    tracing::warn!(kind, why, "audit event dropped");
                }
                false
            }
        }
    }

    /// The last `limit` events (of `space` when given), oldest first, read
    /// from the rotated file and the live one; unreadable lines are
    /// skipped.
    pub async fn query(&self, space: Option<String>, limit: usize) -> Result<Vec<AuditEvent>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Query {
                space,
                limit,
                reply,
            })
            .map_err(|_| Error::State("the audit log is closed".into()))?;
        rx.await
            .map_err(|_| Error::State("the audit log is closed".into()))?
    }

    /// Counters since start.
    pub fn counts(&self) -> AuditCounts {
        AuditCounts {
            recorded: self.counters.recorded.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            rotations: self.counters.rotations.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, syncs the file and stops the writer; later
    /// events are dropped. Blocking; idempotent.
    pub fn close(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if self.tx.send(Msg::Close).is_ok() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The current time as the log writes it.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Cuts every string in `v` to [`MAX_META_STRING`] characters; returns
/// whether one was cut.
fn cap_strings(v: &mut Value) -> bool {
    match v {
        Value::String(s) => match s.char_indices().nth(MAX_META_STRING) {
            Some((i, _)) => {
                s.truncate(i);
                s.push('…');
                true
            }
            None => false,
        },
        Value::Array(a) => a.iter_mut().fold(false, |cut, x| cap_strings(x) | cut),
        Value::Object(o) => o.values_mut().fold(false, |cut, x| cap_strings(x) | cut),
        _ => false,
    }
}

/// The owner of the files, on the log's thread.
struct Writer {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    size: u64,
    dirty: bool,
    last_sync: Instant,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .ctx(|| format!("open {}", path.display()))
}

impl Writer {
    fn open(path: PathBuf, max_bytes: u64) -> Result<Writer> {
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        let mut w = Writer {
            rotated: rotated.into(),
            path,
            max_bytes,
            file: None,
            size: 0,
            dirty: false,
            last_sync: Instant::now(),
        };
        let mut f = open_append(&w.path)?;
        w.size = f
            .metadata()
            .ctx(|| format!("stat {}", w.path.display()))?
            .len();
        // A line cut short by a crash: end it, so the next event starts on
        // a line of its own (the torn one is skipped by readers).
        if w.size > 0 {
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(w.size - 1))
                .and_then(|_| f.read_exact(&mut last))
                .ctx(|| format!("read {}", w.path.display()))?;
            if last[0] != b'\n' {
                f.write_all(b"\n")
                    .ctx(|| format!("write {}", w.path.display()))?;
                w.size += 1;
            }
        }
        w.file = Some(f);
        Ok(w)
    }

    fn run(mut self, rx: Receiver<Msg>, counters: &Counters) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Event(e, ack)) => {
                    counters.queued.fetch_sub(1, Ordering::Relaxed);
                    match self.append(&e, counters) {
                        Ok(()) => {
                            if let Some(ack) = ack {
                                let _ = ack.send(());
                            }
                        }
                        Err(err) => {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::error!("audit log: {err}");
                        }
                    }
                    // Under a steady stream, still sync every few seconds.
                    if self.last_sync.elapsed() > Duration::from_secs(5) {
                        self.sync();
                    }
                }
                Ok(Msg::Query {
                    space,
                    limit,
                    reply,
                }) => {
                    let _ = reply.send(self.read(space.as_deref(), limit));
                }
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => {
                    self.sync();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => self.sync(),
            }
        }
    }

    fn sync(&mut self) {
        if self.dirty {
            if let Some(f) = &self.file {
                if let Err(e) = f.sync_data() {
                    tracing::warn!("audit log: fsync: {e}");
                }
            }
            self.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    fn append(&mut self, e: &AuditEvent, counters: &Counters) -> Result<()> {
        let mut line = serde_json::to_vec(e)
            .map_err(|err| Error::State(format!("audit event to JSON: {err}")))?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
            counters.rotations.fetch_add(1, Ordering::Relaxed);
        }
        if self.file.is_none() {
            // A failed rotation left no file: try again.
            self.file = Some(open_append(&self.path)?);
            self.size = 0;
        }
        let f = self.file.as_mut().ok_or_else(|| {
            Error::State("audit log: no file".into()) // unreachable: set above
        })?;
        f.write_all(&line)
            .ctx(|| format!("write {}", self.path.display()))?;
        self.size += len;
        self.dirty = true;
        Ok(())
    }

    /// `audit.jsonl` becomes `audit.jsonl.1` (replacing it); a new live
    /// file starts.
    fn rotate(&mut self) -> Result<()> {
        self.sync();
        self.file = None;
        fs::rename(&self.path, &self.rotated).ctx(|| {
            format!(
                "rename {} to {}",
                self.path.display(),
                self.rotated.display()
            )
        })?;
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    fn read(&self, space: Option<&str>, limit: usize) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::new();
        for p in [&self.path, &self.rotated] {
            if out.len() >= limit {
                break;
            }
            let f = match File::open(p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("open {}", p.display()), e)),
            };
            read_back(f, &mut |line| {
                let Ok(e) = serde_json::from_slice::<AuditEvent>(line) else {
                    return true;
                };
                if space.is_none_or(|s| e.space.as_deref() == Some(s)) {
                    out.push(e);
                }
                out.len() < limit
            })
            .ctx(|| format!("read {}", p.display()))?;
        }
        out.reverse();
        Ok(out)
    }
}

/// Calls `each` with every non-empty line of `f`, last line first, until
/// it returns false. Reads in chunks from the end.
fn read_back(mut f: File, each: &mut dyn FnMut(&[u8]) -> bool) -> std::io::Result<()> {
    let mut pos = f.metadata()?.len();
    // Bytes after the last newline seen so far (the start of a line whose
    // beginning is in an earlier chunk).
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; CHUNK as usize];
    while pos > 0 {
        let n = CHUNK.min(pos);
        pos -= n;
        f.seek(SeekFrom::Start(pos))?;
        let chunk = &mut buf[..n as usize];
        f.read_exact(chunk)?;
        let mut end = chunk.len();
        while let Some(i) = chunk[..end].iter().rposition(|&b| b == b'\n') {
            let line: Vec<u8> = if tail.is_empty() {
                chunk[i + 1..end].to_vec()
            } else {
                let mut l = chunk[i + 1..end].to_vec();
                l.append(&mut tail);
                l
            };
            if !line.is_empty() && !each(&line) {
                return Ok(());
            }
            end = i;
        }
        let mut l = chunk[..end].to_vec();
        l.append(&mut tail);
        tail = l;
    }
    if !tail.is_empty() {
        each(&tail);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[tokio::test]
    async fn records_in_order_and_queries_newest_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path, DEFAULT_MAX_BYTES).expect("open");
        for i in 0..10 {
            let space = if i % 2 == 0 { "a" } else { "b" };
            log.record_nowait(Some(space), AuditType::SpaceExec, Some(json!({"i": i})));
        }
        log.record(None, AuditType::TemplateUpsert, None).await;
        // Written when `record` returns.
        assert_eq!(lines(&path).len(), 11);
        let all = log.query(None, 1000).await.expect("query");
        assert_eq!(all.len(), 11);
        assert_eq!(all[0].meta, Some(json!({"i": 0})));
        assert_eq!(all[10].kind, "template.upsert");
        assert_eq!(all[10].space, None);
        let b = log.query(Some("b".into()), 2).await.expect("query");
        let is: Vec<_> = b
            .iter()
            .map(|e| e.meta.clone().expect("meta")["i"].clone())
            .collect();
        assert_eq!(is, vec![json!(7), json!(9)]);
        log.close();
        let stored = lines(&path);
        assert_eq!(stored.len(), 11);
        assert_eq!(stored[3]["type"], "space.exec");
        assert!(stored[10].get("space").is_none() && stored[10].get("meta").is_none());
        assert!(stored[0]["ts"].as_str().expect("ts").ends_with('Z'));
    }

    #[tokio::test]
    async fn rotates_at_the_cap_and_reads_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, MIN_MAX_BYTES).expect("open");
        let pad = "x".repeat(200);
        for i in 0..60 {
            log.record(
                Some("s"),
                AuditType::SpaceExec,
                Some(json!({"i": i, "pad": pad})),
            )
            .await;
        }
        let got = log.query(None, 1000).await.expect("query");
        log.close();
        let live = fs::metadata(&path).expect("live").len();
        let old = fs::metadata(dir.path().join("audit.jsonl.1"))
            .expect("rotated")
            .len();
        assert!(
            live <= MIN_MAX_BYTES && old <= MIN_MAX_BYTES,
            "{live} {old}"
        );
        assert!(log.counts().rotations >= 2);
        // What both files hold, in order, ending with the last event.
        assert!(got.len() > 15 && got.len() < 60, "{}", got.len());
        let is: Vec<u64> = got
            .iter()
            .map(|e| e.meta.as_ref().expect("meta")["i"].as_u64().expect("i"))
            .collect();
        assert!(is.windows(2).all(|w| w[1] == w[0] + 1), "{is:?}");
        assert_eq!(is.last(), Some(&59));
    }

    #[tokio::test]
    async fn survives_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        {
            let log = AuditLog::open(&path, DEFAULT_MAX_BYTES).expect("open");
            log.record(Some("a"), AuditType::SpaceCreate, None).await;
        }
        // A crash in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"ts\":\"2026").expect("write");
        drop(f);
        let log = AuditLog::open(&path, DEFAULT_MAX_BYTES).expect("reopen");
        log.record(Some("a"), AuditType::SpaceDestroy, None).await;
        let got = log.query(None, 10).await.expect("query");
        let kinds: Vec<_> = got.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["space.create", "space.destroy"]);
    }

    #[test]
    fn long_strings_are_cut() {
        let mut v = json!({"command": ["sh", "-c", "y".repeat(MAX_META_STRING + 10)], "n": 1});
        assert!(cap_strings(&mut v));
        let s = v["command"][2].as_str().expect("str");
        assert_eq!(s.chars().count(), MAX_META_STRING + 1);
        assert!(!cap_strings(&mut json!({"a": "short"})));
    }

    #[test]
    fn read_back_handles_lines_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let long = "z".repeat(CHUNK as usize + 100);
        fs::write(&p, format!("a\n{long}\nb\n\nc")).expect("write");
        let mut seen = Vec::new();
        read_back(File::open(&p).expect("open"), &mut |l| {
            seen.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .expect("read");
        assert_eq!(seen, vec!["c".to_string(), "b".into(), long, "a".into()]);
    }
}
