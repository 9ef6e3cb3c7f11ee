//! Crash-safe persistence of space records: one JSON file per space,
//! replaced atomically (write, fsync, rename). See docs/ARCHITECTURE.md.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{remove_dir_all_if_exists, sync_dir, write_atomic};
use crate::space_id::is_space_id;

/// Lifecycle state of a space as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceStatus {
    /// Being created; rolled back if found at startup.
    Creating,
    /// Init alive, not frozen.
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    /// Init not running; files kept.
    Stopped,
    /// Being destroyed; finished if found at startup.
    Destroying,
}

impl SpaceStatus {
    /// The name clients see (`running`, `paused`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpaceStatus::Running => "running",
            SpaceStatus::Paused => "paused",
            SpaceStatus::Stopped | SpaceStatus::Creating | SpaceStatus::Destroying => "stopped",
        }
    }
}

/// Who processes of a space run as, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceUser {
    /// User name (`sandbox` or `root`).
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// HOME of the user.
    pub home: String,
    /// Working directory of init and execs.
    pub workdir: String,
}

/// Everything the runtime keeps about one space.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    /// User-chosen name, unique on this server.
    pub name: String,
    /// 64 lowercase hex characters, new for every create.
    pub id: String,
    /// Image reference as requested.
    pub image: String,
    /// Memory limit in bytes.
    pub memory: u64,
    /// CPU limit in nano-CPUs (1e9 = one core).
    pub nano_cpus: u64,
    /// Maximum number of processes.
    pub pids_limit: i64,
    /// Whether the space has GPUs.
    pub gpu: bool,
    /// The GPUs passed into it and how (none for older GPU records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<crate::gpu::GpuAssignment>,
    /// When the space was created.
    pub created: DateTime<Utc>,
    /// When its init last started.
    pub started: DateTime<Utc>,
    /// Last recorded activity.
    pub last_activity: DateTime<Utc>,
    /// Lifecycle state.
    pub status: SpaceStatus,
    /// Host pid of the init, when running.
    #[serde(default)]
    pub init_pid: Option<i32>,
    /// Start time (clock ticks since boot) of the init, to detect pid reuse.
    #[serde(default)]
    pub init_start_time: Option<u64>,
    /// The user processes run as.
    pub user: SpaceUser,
    /// Environment of init and execs (`KEY=value`).
    pub env: Vec<String>,
    /// Read-only image layers, topmost first (overlay lowerdir order).
    pub layers: Vec<PathBuf>,
    /// Network mode and address (records without it: mode `none`).
    #[serde(default)]
    pub network: crate::network::SpaceNetwork,
    /// Disk limit of the space's writable layer in bytes (project quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// The persistent volume mounted at `/workspace` (spaces created
    /// before volumes existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Whether the root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly_rootfs: bool,
}

impl Space {
    /// The 12-character id clients see.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// CPU limit in cores.
    pub fn cpus(&self) -> f64 {
        self.nano_cpus as f64 / 1e9
    }
}

/// Format version of the records this runtime writes (`"version"` in
/// `space.json`). Records without the field are version 1. A record of a
/// newer version is quarantined, never misread. Version 3 added the
/// network policy (mode `lan`, `blockCidrs`, `allowDomains`, `allowPorts`
/// in `network`): a daemon before it would have given such a space more
/// access than it was created with.
pub const RECORD_VERSION: u64 = 3;

/// The directory of records and per-space files, and the quarantine of
/// spaces whose record cannot be read.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    quarantine: PathBuf,
    /// Where space directories go to be deleted (`<state_dir>/trash`).
    trash: PathBuf,
}

const RECORD: &str = "space.json";
/// Written first into a new space directory and removed once its first
/// record is durable: a directory holding it never held a record.
const CREATING: &str = "creating";
/// A space directory being deleted by an older runtime was renamed to
/// `.trash-<id>` first (this one moves it to `<state_dir>/trash`).
const TRASH_PREFIX: &str = ".trash-";
/// A new space directory before its marker is in it.
const STAGING_PREFIX: &str = ".new-";
/// The reason file next to each quarantined directory.
const REASON_EXT: &str = "json";
/// Largest reason file read back.
const MAX_REASON: u64 = 64 * 1024;

/// What [`Store::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Readable records.
    pub spaces: Vec<Space>,
    /// Space ids whose directory provably never held a record (a create
    /// that crashed before its first record): safe to remove.
    pub unrecorded: Vec<String>,
    /// Space ids whose record cannot be read, and why: to quarantine.
    pub unreadable: Vec<(String, String)>,
    /// Space directories whose deletion (or making) a crash interrupted.
    pub trash: Vec<PathBuf>,
}

/// A space directory moved aside because its record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Where it is now (`<state>/quarantine/<id>-<time>`).
    pub dir: PathBuf,
    /// The space id (its directory name under `spaces/`).
    pub id: String,
    /// Why its record could not be read.
    pub reason: String,
    /// When it was quarantined.
    pub at: DateTime<Utc>,
}

impl Store {
    /// A store under `<state_dir>/spaces`, quarantining into
    /// `<state_dir>/quarantine`, deleting through `<state_dir>/trash`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("spaces");
        let trash = state_dir.join("trash");
        for d in [&root, &trash] {
            fs::create_dir_all(d).ctx(|| format!("create {}", d.display()))?;
        }
        Ok(Store {
            root,
            quarantine: state_dir.join("quarantine"),
            trash,
        })
    }

    /// The directory of all spaces (`<state_dir>/spaces`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The directory holding everything of space `id`.
    pub fn space_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the directory of a new space, marked as never having held a
    /// record; call before anything else of the space exists. Made under a
    /// staging name and renamed, so it never exists without its marker.
    pub fn begin(&self, id: &str) -> Result<()> {
        let staging = self.root.join(format!("{STAGING_PREFIX}{id}"));
        fs::create_dir(&staging).ctx(|| format!("create {}", staging.display()))?;
        let marker = staging.join(CREATING);
        fs::File::create(&marker).ctx(|| format!("create {}", marker.display()))?;
        let dir = self.space_dir(id);
        fs::rename(&staging, &dir).ctx(|| format!("rename to {}", dir.display()))
    }

    /// Persists a record; `durable` fsyncs (lifecycle changes), otherwise
    /// the write is atomic but may be lost on power failure (activity).
    pub fn save(&self, space: &Space, durable: bool) -> Result<()> {
        let dir = self.space_dir(&space.id);
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let data = serde_json::to_vec(&Versioned {
            version: RECORD_VERSION,
            space,
        })
        .map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&dir.join(RECORD), &data, durable)?;
        if durable {
            // The record is on disk: the directory is no longer one that
            // "never held a record". A marker left by a failed unlink is
            // harmless (a record always wins over it).
            match fs::remove_file(dir.join(CREATING)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(id = %space.id, "removing the create marker: {e}")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sorts every directory under `spaces/` by what its record says.
    pub fn load_all(&self) -> Result<Loaded> {
        let mut found = Loaded {
            trash: self.in_trash(),
            ..Default::default()
        };
        for entry in fs::read_dir(&self.root).ctx(|| format!("read {}", self.root.display()))? {
            let entry = entry.ctx(|| format!("read {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TRASH_PREFIX) || name.starts_with(STAGING_PREFIX) {
                found.trash.push(entry.path());
                continue;
            }
            if !is_space_id(&name) {
                continue;
            }
            let dir = entry.path();
            match fs::read(dir.join(RECORD)) {
                Ok(data) => match parse_record(&data, &name) {
                    Ok(s) => found.spaces.push(s),
                    Err(why) => found.unreadable.push((name, why)),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if dir.join(CREATING).exists() {
                        found.unrecorded.push(name);
                    } else {
                        found
                            .unreadable
                            .push((name, "no record (space.json is missing)".into()));
                    }
                }
                Err(e) => found
                    .unreadable
                    .push((name, format!("space.json cannot be read: {e}"))),
            }
        }
        Ok(found)
    }

    /// Deletes everything of space `id` on disk ([`Store::discard`], then
    /// its removal).
    pub fn remove(&self, id: &str) -> Result<()> {
        self.discard(id)?;
        remove_dir_all_if_exists(&self.trash.join(id))
    }

    /// Moves the directory of space `id` (gone already: fine) to the
    /// trash, where [`Store::empty_trash`] deletes it: a crash before that
    /// leaves a directory [`Store::load_all`] reports as trash, never a
    /// space without its record.
    pub fn discard(&self, id: &str) -> Result<()> {
        let dir = self.space_dir(id);
        let dest = self.trash.join(id);
        let mut moved = fs::rename(&dir, &dest);
        if moved
            .as_ref()
            .is_err_and(|e| matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)))
        {
            // What an earlier discard of this id left there (a directory
            // made again by a retried create): that goes first.
            remove_dir_all_if_exists(&dest)?;
            moved = fs::rename(&dir, &dest);
        }
        match moved {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("rename {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// What is in the trash.
    fn in_trash(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.trash)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// Deletes what is in the trash; returns whether anything was there.
    /// Blocking (a space's files can be many).
    pub fn empty_trash(&self) -> bool {
        let found = self.in_trash();
        for dir in &found {
            if let Err(e) = remove_dir_all_if_exists(dir) {
                tracing::error!("deleting a destroyed space's files: {e}");
            }
        }
        !found.is_empty()
    }

    /// Moves the directory of space `id` into the quarantine with `reason`;
    /// nothing in it is changed or deleted.
    pub fn quarantine(&self, id: &str, reason: &str) -> Result<Quarantined> {
        fs::create_dir_all(&self.quarantine)
            .ctx(|| format!("create {}", self.quarantine.display()))?;
        let at = Utc::now();
        let stamp = at.format("%Y%m%dT%H%M%SZ");
        let mut dest = self.quarantine.join(format!("{id}-{stamp}"));
        for n in 2.. {
            if !dest.exists() && !reason_file(&dest).exists() {
                break;
            }
            dest = self.quarantine.join(format!("{id}-{stamp}-{n}"));
        }
        let src = self.space_dir(id);
        fs::rename(&src, &dest).ctx(|| format!("move {} to {}", src.display(), dest.display()))?;
        sync_dir(&self.root)?;
        let q = Quarantined {
            dir: dest,
            id: id.to_string(),
            reason: reason.to_string(),
            at,
        };
        let data = serde_json::to_vec_pretty(&q).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&reason_file(&q.dir), &data, true)?;
        Ok(q)
    }

    /// Every quarantined space directory, oldest first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>> {
        let rd = match fs::read_dir(&self.quarantine) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("read {}", self.quarantine.display()), e)),
        };
        let mut all = Vec::new();
        for entry in rd {
            let entry = entry.ctx(|| format!("read {}", self.quarantine.display()))?;
            let dir = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.split('-').next().unwrap_or_default().to_string();
            let recorded = read_capped(&reason_file(&dir))
                .and_then(|d| serde_json::from_slice::<Quarantined>(&d).ok());
            all.push(match recorded {
                Some(q) => Quarantined { dir, ..q },
                None => Quarantined {
                    at: entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(DateTime::<Utc>::from)
                        .unwrap_or_else(|_| Utc::now()),
                    dir,
                    id,
                    reason: "reason not recorded".into(),
                },
            });
        }
        all.sort_by_key(|q| q.at);
        Ok(all)
    }
}

/// A record as written: the format version, then the space.
#[derive(Serialize)]
struct Versioned<'a> {
    version: u64,
    #[serde(flatten)]
    space: &'a Space,
}

/// Reads a record of any version up to [`RECORD_VERSION`] stored in the
/// directory `id`; the error says why it cannot be used.
pub fn parse_record(data: &[u8], id: &str) -> Result<Space, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("space.json is not valid JSON: {e}"))?;
    let obj = value
        .as_object_mut()
        .ok_or("space.json is not a JSON object")?;
    let version = match obj.remove("version") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("space.json has a bad format version {v}"))?,
    };
    if version > RECORD_VERSION {
        return Err(format!(
            "space.json has format version {version}, newer than this daemon reads \
             (up to {RECORD_VERSION}): run a newer clawdspaced"
        ));
    }
    // Versions 1 (no field) and 2 hold a subset of 3's fields (3 added
    // the network policy, absent = none); a later format change converts
    // older values here, one version at a time.
    let space: Space = serde_json::from_value(value)
        .map_err(|e| format!("space.json does not hold a space record: {e}"))?;
    if space.id != id {
        return Err(format!(
            "space.json names id {} but lies in directory {id}",
            space.id
        ));
    }
    Ok(space)
}

/// `<quarantined dir>.json`.
fn reason_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(REASON_EXT);
    dir.with_file_name(name)
}

fn read_capped(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_REASON)
        .read_to_end(&mut data)
        .ok()?;
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space_id::new_space_id;

    /// A record as the first daemons wrote it: no format version.
    fn v1_record(id: &str) -> String {
        format!(
            r#"{{"name":"old","id":"{id}","image":"busybox:latest","memory":268435456,
            "nanoCpus":1000000000,"pidsLimit":1024,"gpu":false,
            "created":"2026-01-02T03:04:05Z","started":"2026-01-02T03:04:05Z",
            "lastActivity":"2026-01-02T03:04:05Z","status":"running","initPid":42,
            "initStartTime":7,"user":{{"name":"sandbox","uid":1000,"gid":1000,
            "home":"/home/sandbox","workdir":"/home/sandbox"}},
            "env":["HOME=/home/sandbox"],"layers":["/l/a"]}}"#
        )
    }

    #[test]
    fn every_older_format_loads_and_a_newer_one_is_refused() {
        let id = new_space_id();
        let old = parse_record(v1_record(&id).as_bytes(), &id).expect("v1 loads");
        assert_eq!((old.name.as_str(), old.init_pid), ("old", Some(42)));
        let written = serde_json::to_vec(&Versioned {
            version: RECORD_VERSION,
            space: &old,
        })
        .expect("json");
        let v: serde_json::Value = serde_json::from_slice(&written).expect("json");
        assert_eq!(v["version"], RECORD_VERSION);
        assert_eq!(parse_record(&written, &id).expect("current").id, id);

        let future = v1_record(&id).replacen('{', r#"{"version":99,"#, 1);
        let why = parse_record(future.as_bytes(), &id).expect_err("future");
        assert!(why.contains("version 99"), "{why}");
        let rec = v1_record(&id);
        for (bad, says) in [
            (&rec.as_bytes()[..rec.len() / 2], "not valid JSON"),
            (&b"\x00\xffgarbage"[..], "not valid JSON"),
            (&b"[1,2]"[..], "not a JSON object"),
            (&br#"{"version":"2"}"#[..], "bad format version"),
            (&br#"{"name":"x"}"#[..], "does not hold a space record"),
        ] {
            let why = parse_record(bad, &id).expect_err("refused");
            assert!(why.contains(says), "{why}");
        }
        let why = parse_record(rec.as_bytes(), &new_space_id()).expect_err("moved");
        assert!(why.contains("lies in directory"), "{why}");
    }

    #[test]
    fn only_directories_that_never_held_a_record_count_as_removable() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        // A create that crashed before its first record.
        let crashed = new_space_id();
        store.begin(&crashed).expect("begin");
        // A create that got its record written.
        let done = new_space_id();
        store.begin(&done).expect("begin");
        let space = parse_record(v1_record(&done).as_bytes(), &done).expect("record");
        store.save(&space, true).expect("save");
        assert!(!store.space_dir(&done).join(CREATING).exists());
        // A record that vanished (no marker): not provably never recorded.
        let lost = new_space_id();
        fs::create_dir_all(store.space_dir(&lost).join("upper")).expect("dir");
        // A corrupt record.
        let torn = new_space_id();
        fs::create_dir_all(store.space_dir(&torn)).expect("dir");
        fs::write(store.space_dir(&torn).join(RECORD), "{\"name\":").expect("write");
        // An interrupted deletion, and a create cut off before its marker.
        for prefix in [TRASH_PREFIX, STAGING_PREFIX] {
            fs::create_dir_all(store.dir().join(format!("{prefix}{}", new_space_id())))
                .expect("trash");
        }

        let found = store.load_all().expect("load");
        assert_eq!(found.spaces.len(), 1);
        assert_eq!(found.spaces[0].id, done);
        assert_eq!(found.unrecorded, vec![crashed]);
        let mut unreadable: Vec<&str> = found.unreadable.iter().map(|(i, _)| i.as_str()).collect();
        unreadable.sort();
        let mut want = vec![lost.as_str(), torn.as_str()];
        want.sort();
        assert_eq!(unreadable, want);
        assert_eq!(found.trash.len(), 2);

        store.remove(&done).expect("remove");
        assert!(!store.space_dir(&done).exists());
        assert!(
            store.load_all().expect("load").trash.len() == 2,
            "only the old trash"
        );
        // Discarded: out of the spaces at once, deleted with the trash; a
        // crash in between leaves it as trash.
        fs::create_dir_all(store.space_dir(&lost).join("upper/deep")).expect("dir");
        std::os::unix::fs::symlink("/etc", store.space_dir(&lost).join("upper/etc")).expect("link");
        store.discard(&lost).expect("discard");
        store.discard(&lost).expect("gone already: fine");
        assert!(!store.space_dir(&lost).exists());
        let found = store.load_all().expect("load");
        assert_eq!(found.trash.len(), 3);
        assert!(found.unreadable.iter().all(|(i, _)| *i != lost));
        fs::create_dir_all(store.space_dir(&lost).join("again")).expect("dir");
        store.discard(&lost).expect("over an earlier discard");
        assert!(store.trash.join(&lost).join("again").exists());
        assert!(!store.trash.join(&lost).join("upper").exists());
        assert!(store.empty_trash());
        assert!(!store.empty_trash(), "empty now");
        assert!(
            Path::new("/etc/passwd").exists(),
            "a link is removed, not followed"
        );
        assert_eq!(store.load_all().expect("load").trash.len(), 2);
    }

    #[test]
    fn quarantine_moves_everything_aside_and_remembers_why() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let id = new_space_id();
        let upper = store.space_dir(&id).join("upper");
        fs::create_dir_all(&upper).expect("dir");
        fs::write(upper.join("precious"), "data").expect("file");
        fs::write(store.space_dir(&id).join(RECORD), "garbage").expect("record");
        let q = store
            .quarantine(&id, "space.json is not valid JSON")
            .expect("quarantine");
        assert!(!store.space_dir(&id).exists());
        assert!(q.dir.starts_with(tmp.path().join("quarantine")));
        assert_eq!(
            fs::read_to_string(q.dir.join("upper/precious")).expect("kept"),
            "data"
        );
        assert_eq!(
            fs::read_to_string(q.dir.join(RECORD)).expect("kept"),
            "garbage"
        );
        let listed = store.quarantined().expect("list");
        assert_eq!(listed, vec![q.clone()]);
        // The same id quarantined again in the same second gets its own place.
        fs::create_dir_all(store.space_dir(&id)).expect("dir");
        let q2 = store.quarantine(&id, "again").expect("quarantine");
        assert_ne!(q2.dir, q.dir);
        assert_eq!(store.quarantined().expect("list").len(), 2);
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_space_id();
        let b = new_space_id();
        assert!(is_space_id(&a));
        assert_ne!(a, b);
        assert!(!is_space_id("../etc"));
    }
}
