//! Shell history in the audit log, as upstream has it: every
//! `HISTORY_INGEST_MS` the daemon reads what each space added to its
//! `/workspace/.bash_history` and records one `space.shell` event per line
//! (`{"command", "source": "bash_history"}`). How far each file was read is
//! kept beside the audit log (`<audit path>.history`), so a restart neither
//! repeats lines nor skips the ones written meanwhile. A file replaced or
//! cut is read again from its start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clawdspace_runtime::audit::{AuditLog, AuditType};
use clawdspace_runtime::{HistoryMark, Runtime, SpaceStatus};
use serde_json::json;

/// Marks by space name (a space's volume, and so its history file, goes to
/// the next space of that name).
type Marks = HashMap<String, HistoryMark>;

/// Where the marks of the audit log at `audit` are kept.
pub fn marks_path(audit: &Path) -> PathBuf {
    let mut p = audit.as_os_str().to_owned();
    p.push(".history");
    PathBuf::from(p)
}

/// Marks saved earlier; none when missing or unreadable (then the files are
/// read from their start).
fn load(path: &Path) -> Marks {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "shell history marks unreadable: {e}");
            Marks::new()
        }),
        Err(_) => Marks::new(),
    }
}

/// Writes the marks whole (temporary file, then rename).
fn save(path: &Path, marks: &Marks) {
    let tmp = path.with_extension("history.tmp");
    let done = serde_json::to_vec(marks)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        tracing::warn!(path = %path.display(), "saving shell history marks: {e}");
    }
}

/// One look at every live space: the new lines by space, and the marks
/// after them (the marks of spaces that are gone but whose volume stays
/// are kept).
fn look(rt: &Runtime, mut marks: Marks) -> (Marks, Vec<(String, Vec<String>)>) {
    let mut out = Vec::new();
    let spaces = rt.list();
    for s in &spaces {
        if !matches!(s.status, SpaceStatus::Running | SpaceStatus::Paused) {
            continue;
        }
        match rt.shell_history_since(&s.name, marks.get(&s.name).copied()) {
            Ok(Some(h)) => {
                marks.insert(s.name.clone(), h.mark);
                if !h.lines.is_empty() {
                    out.push((s.name.clone(), h.lines));
                }
            }
            Ok(None) => {
                marks.remove(&s.name);
            }
            Err(e) => tracing::debug!(space = %s.name, "shell history: {e}"),
        }
    }
    marks.retain(|name, _| spaces.iter().any(|s| &s.name == name) || rt.has_volume(name));
    (marks, out)
}

/// Ingests forever (the daemon's lifetime); `every` zero: never.
pub async fn run(rt: Runtime, audit: Arc<AuditLog>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let path = marks_path(audit.path());
    let mut marks = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || load(&p))
            .await
            .unwrap_or_default()
    };
    loop {
        tokio::time::sleep(every).await;
        // Work for later: at the background's lower priority.
        let before = marks.clone();
        let Some((after, new)) = rt.later("shell history", move |r| look(r, before)).await else {
            continue;
        };
        for (name, lines) in new {
            for command in lines {
                audit
                    .record(
                        Some(&name),
                        AuditType::SpaceShell,
                        Some(json!({"command": command, "source": "bash_history"})),
                    )
                    .await;
            }
        }
        // Saved after the events are written: a crash in between repeats
        // lines rather than losing them.
        if after != marks {
            let (p, m) = (path.clone(), after.clone());
            let _ = tokio::task::spawn_blocking(move || save(&p, &m)).await;
            marks = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_live_beside_the_audit_log_and_survive_a_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = dir.path().join("audit.jsonl");
        let path = marks_path(&audit);
        assert_eq!(path, dir.path().join("audit.jsonl.history"));
        assert!(load(&path).is_empty());
        let mut m = Marks::new();
        m.insert(
            "dev".into(),
            HistoryMark {
                inode: 7,
                offset: 42,
            },
        );
        save(&path, &m);
        assert_eq!(load(&path), m);
        // A torn or foreign file reads as no marks, never an error.
        std::fs::write(&path, b"{not json").expect("write");
        assert!(load(&path).is_empty());
    }
}
