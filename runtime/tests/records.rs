//! Nothing is lost to a record the runtime cannot read: corrupt and
//! future-format records quarantine their space (files, processes and
//! mounts kept), old records load, and only directories that provably never
//! held a record are removed. Errors from the worker keep their kind. Needs
//! root; skipped otherwise.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use clawdspace_runtime::testing::SandboxError;
use clawdspace_runtime::testing::WorkerPool;
use clawdspace_runtime::testing::RECORD_VERSION;
use clawdspace_runtime::testing::{proto, Reply, Request};
use clawdspace_runtime::{CreateSpace, Error, ErrorKind, Space};
use common::{request, TestEnv, IMAGE};

fn alive(pid: Option<i32>) -> bool {
    pid.and_then(clawdspace_runtime::testing::start_time)
        .is_some()
}

/// `spaces/<id>/space.json` (also while no runtime is open).
fn record_path(env: &TestEnv, s: &Space) -> std::path::PathBuf {
    env.dir.join("state/spaces").join(&s.id).join("space.json")
}

#[tokio::test]
#[ignore = "needs root"]
async fn corrupt_and_future_records_quarantine_the_space_with_its_files() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    // Name, how its record is spoiled, what the quarantine reason says.
    type Corrupt = fn(&str) -> String;
    let cases: [(&str, Corrupt, &str); 3] = [
        (
            "truncated",
            |r| r[..r.len() / 3].to_string(),
            "not valid JSON",
        ),
        ("garbage", |_| "\u{0}\u{7f}garbage".into(), "not valid JSON"),
        (
            "future",
            |r| {
                r.replacen(
                    &format!("\"version\":{RECORD_VERSION}"),
                    "\"version\":999",
                    1,
                )
            },
            "format version 999",
        ),
    ];
    let mut made = Vec::new();
    for (name, _, _) in &cases {
        let s = env.space(name).await;
        env.sh(name, &format!("echo {name}-data > /home/sandbox/precious"))
            .await;
        made.push(s);
    }
    let keep = env.space("healthy").await;
    env.close().await; // the daemon stops; spaces keep running
    let mut originals = Vec::new();
    for ((_, corrupt, _), s) in cases.iter().zip(&made) {
        let path = record_path(&env, s);
        let original = fs::read_to_string(&path).expect("record");
        assert!(
            original.contains(&format!("\"version\":{RECORD_VERSION}")),
            "{original}"
        );
        fs::write(&path, corrupt(&original)).expect("corrupt");
        originals.push(original);
    }
    env.rt = Some(env.open().await);
    let rt = env.rt().clone();

    assert_eq!(rt.get("healthy").expect("healthy").id, keep.id);
    let quarantined = rt.quarantined().expect("quarantined");
    assert_eq!(quarantined.len(), cases.len(), "{quarantined:?}");
    for ((name, _, why), s) in cases.iter().zip(&made) {
        assert!(
            matches!(rt.get(name), Err(Error::SpaceNotFound)),
            "{name} not listed"
        );
        let q = quarantined.iter().find(|q| q.id == s.id).expect("reported");
        assert!(q.reason.contains(why), "{name}: {}", q.reason);
        assert!(q.dir.starts_with(env.dir.join("state/quarantine")));
        assert!(!rt.space_dir(s).exists(), "moved aside");
        // The user's files are all there, and its processes were not killed.
        assert_eq!(
            fs::read_to_string(q.dir.join("upper/home/sandbox/precious")).expect("kept"),
            format!("{name}-data\n")
        );
        assert!(alive(s.init_pid), "{name}: init left running");
    }
    // The name is free again.
    env.space("truncated-2").await;
    drop(rt);

    // Recovery as docs/OPERATIONS.md says: stop, fix the record, move the
    // directory back, start: the space is adopted with its processes.
    env.close().await;
    let (s, original) = (&made[0], &originals[0]);
    let q = quarantined.iter().find(|q| q.id == s.id).expect("q");
    fs::write(q.dir.join("space.json"), original).expect("fix");
    fs::rename(&q.dir, env.dir.join("state/spaces").join(&s.id)).expect("move back");
    env.rt = Some(env.open().await);
    let back = env.rt().get("truncated").expect("recovered");
    assert_eq!(
        (back.id.as_str(), back.init_pid),
        (s.id.as_str(), s.init_pid)
    );
    assert_eq!(
        env.out("truncated", "cat /home/sandbox/precious").await,
        "truncated-data"
    );
    assert_eq!(env.rt().quarantined().expect("q").len(), cases.len() - 1);
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_record_without_a_format_version_loads() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("old").await;
    env.sh("old", "echo old > /home/sandbox/f").await;
    env.close().await;
    let path = record_path(&env, &s);
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("record")).expect("json");
    v.as_object_mut().expect("object").remove("version");
    fs::write(&path, v.to_string()).expect("write v1 record");
    env.rt = Some(env.open().await);
    let back = env.rt().get("old").expect("loaded");
    assert_eq!(
        (back.id.as_str(), back.init_pid),
        (s.id.as_str(), s.init_pid)
    );
    assert_eq!(env.out("old", "cat /home/sandbox/f").await, "old");
    assert!(env.rt().quarantined().expect("q").is_empty());
    // The next write brings it to the current format.
    env.rt().pause("old").await.expect("pause");
    let now: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("record")).expect("json");
    assert_eq!(now["version"], RECORD_VERSION);
}

#[tokio::test]
#[ignore = "needs root"]
async fn only_a_directory_that_never_held_a_record_is_removed_at_startup() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    env.close().await;
    let spaces = env.dir.join("state/spaces");
    let id = |c: char| c.to_string().repeat(64);
    // A create that crashed before its first record: marker, no record.
    let crashed = spaces.join(id('a'));
    fs::create_dir_all(crashed.join("upper")).expect("dir");
    fs::write(crashed.join("creating"), "").expect("marker");
    // A space whose record vanished: no marker, so it may have held one.
    let lost = spaces.join(id('b'));
    fs::create_dir_all(lost.join("upper/home/sandbox")).expect("dir");
    fs::write(lost.join("upper/home/sandbox/f"), "mine").expect("file");
    env.rt = Some(env.open().await);
    assert!(!crashed.exists(), "never held a record: removed");
    assert!(!lost.exists());
    let q = env.rt().quarantined().expect("q");
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].id, id('b'));
    assert!(q[0].reason.contains("missing"), "{}", q[0].reason);
    assert_eq!(
        fs::read_to_string(q[0].dir.join("upper/home/sandbox/f")).expect("kept"),
        "mine"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_image_that_blocks_the_working_directory_is_a_bad_request() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let bad = env.dir.join("bad-rootfs");
    common::busybox_rootfs(&bad);
    fs::remove_dir_all(bad.join("home")).expect("rm home");
    fs::write(bad.join("home"), "a file").expect("home file");
    env.rt()
        .images()
        .import_rootfs("homeless:1", &bad, Default::default())
        .expect("import");
    let err = env
        .rt()
        .create(CreateSpace {
            image: "homeless:1".into(),
            ..request("homeless")
        })
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(
        matches!(&err, Error::Sandbox(SandboxError::Image(m)) if m.contains("/home/sandbox")),
        "{err:?}"
    );
    assert_eq!(
        fs::read_dir(env.dir.join("state/spaces"))
            .expect("spaces")
            .count(),
        0,
        "nothing left"
    );
    env.rt()
        .create(CreateSpace {
            image: IMAGE.into(),
            ..request("homeless")
        })
        .await
        .expect("the name is free");
}

/// Sends an exec straight to a worker (the runtime checks the working
/// directory first; a worker sees one that went away since).
async fn worker_exec(pool: &WorkerPool, env: &TestEnv, s: &Space, cwd: &str) -> Reply {
    worker_exec_in(
        pool,
        env,
        s,
        cwd,
        s.init_start_time.expect("init start time"),
    )
    .await
}

/// [`worker_exec`], naming the space's init by its pid and `start` time.
async fn worker_exec_in(
    pool: &WorkerPool,
    env: &TestEnv,
    s: &Space,
    cwd: &str,
    start: u64,
) -> Reply {
    let null = fs::File::open("/dev/null").expect("null");
    let state_root = env
        .rt()
        .container_state_dir(s)
        .parent()
        .map(Path::to_path_buf)
        .expect("state root");
    let req = Request::Exec(proto::ExecRequest {
        id: s.id.clone(),
        state_root,
        bundle: env.rt().space_dir(s),
        args: vec!["true".into()],
        env: s.env.clone(),
        cwd: cwd.into(),
        uid: s.user.uid,
        gid: s.user.gid,
        space_uid: s.user.uid,
        additional_gids: Vec::new(),
        init_pid: s.init_pid.expect("init pid"),
        init_start_time: start,
        tty: None,
    });
    let fd = null.as_raw_fd();
    pool.call(&req, &[fd, fd, fd]).await.expect("call").0
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_bad_working_directory_keeps_its_kind_across_the_worker_boundary() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("cwd").await;
    env.sh("cwd", "echo x > /home/sandbox/file").await;
    let pool = WorkerPool::start(Path::new(env!("CARGO_BIN_EXE_clawdspace-runtime")), 1)
        .await
        .expect("worker");
    for (cwd, why) in [
        ("/gone", "no such directory"),
        ("/home/sandbox/file", "not a directory"),
    ] {
        match worker_exec(&pool, &env, &s, cwd).await {
            Reply::Failed { error } => {
                assert!(
                    matches!(&error, SandboxError::WorkingDir { path, why: w } if path == cwd && w.contains(why)),
                    "{error:?}"
                );
                let e = Error::from(error);
                assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
            }
            other => panic!("{cwd}: {other:?}"),
        }
    }
    assert!(matches!(
        worker_exec(&pool, &env, &s, "/home/sandbox").await,
        Reply::Spawned { .. }
    ));
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_exec_naming_another_process_as_the_init_starts_nothing() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("reused").await;
    let pool = WorkerPool::start(Path::new(env!("CARGO_BIN_EXE_clawdspace-runtime")), 1)
        .await
        .expect("worker");
    // The pid with another start time: what a pid reused after the init
    // died looks like. The worker must not join whatever has it now.
    // Processes of the space but this shell's pipeline (which may or may
    // not have started all its parts when `ps` looks; busybox's shell runs
    // an applet through /proc/self/exe, so one may show as `exe`). A
    // process the worker cloned is named after the worker's binary.
    let others = "ps -o comm= | grep -cv -e '^ps$' -e '^sh$' -e '^grep$' -e '^wc$' -e '^exe$'";
    let before = env.out("reused", others).await;
    let start = s.init_start_time.expect("start") + 1;
    match worker_exec_in(&pool, &env, &s, "/home/sandbox", start).await {
        Reply::Failed { error } => {
            assert!(
                matches!(&error, SandboxError::State(m) if m.contains("init is gone")),
                "{error:?}"
            );
            assert_eq!(Error::from(error).kind(), ErrorKind::Conflict);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(env.out("reused", others).await, before);
}
