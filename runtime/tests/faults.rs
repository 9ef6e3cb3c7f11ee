//! Faults at the worst moment leave nothing behind and lose nothing: a
//! create that runs out of memory is the request's problem (and rolls back),
//! an exec whose worker dies before telling its pid leaves no process, and a
//! container state file torn by a crash is written anew when the runtime
//! starts. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use clawdspace_runtime::testing::WORKER_FAULT_ENV;
use clawdspace_runtime::{
    CgroupMode, CgroupPaths, Command, ErrorKind, ExecRequest, Runtime, SpaceStatus,
};
use common::{cgroup_goes, request, wait_until, TestEnv};

/// The pids in a cgroup (its memory hierarchy on v1).
fn procs(cg: &CgroupPaths) -> Vec<i32> {
    fs::read_to_string(cg.dir("memory").join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_create_that_runs_out_of_memory_is_a_bad_request_and_leaves_nothing() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    // The cgroup the spaces are made in allows too little for any init to
    // start (a space's own limit cannot be set that low).
    let mode = CgroupMode::detect();
    let parent = CgroupPaths::new(mode, &env.cgroup_parent).dir("memory");
    fs::create_dir_all(&parent).expect("parent cgroup");
    let limit = parent.join(match mode {
        CgroupMode::Unified => "memory.max",
        _ => "memory.limit_in_bytes",
    });
    fs::write(&limit, "4096").expect("set the parent's memory limit");

    let err = env
        .rt()
        .create(request("tight"))
        .await
        .expect_err("no init starts in one page");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("out of memory"), "{err}");
    // All or nothing: no record, directory or cgroup is left.
    assert!(env.rt().list().is_empty());
    assert!(env.rt().get("tight").is_err());
    let spaces = env.dir.join("state/spaces");
    let left: Vec<_> = fs::read_dir(&spaces)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.len() == 64),
        "space dirs left: {left:?}"
    );
    let cgroups: Vec<_> = fs::read_dir(&parent)
        .expect("parent")
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");

    // With room, the same request works.
    let unlimited = if mode == CgroupMode::Unified {
        "max"
    } else {
        "-1"
    };
    fs::write(&limit, unlimited).expect("lift the limit");
    env.create(request("tight")).await;
    assert_eq!(env.out("tight", "echo up").await, "up");
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_exec_whose_worker_dies_before_replying_leaves_no_process() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    // Workers that exit right after starting an exec'd process, before
    // telling its pid, while the fault file exists (once per file).
    env.close().await;
    let fault = env.dir.join("worker-fault");
    let wrapper = env.dir.join("faulty-worker.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport {WORKER_FAULT_ENV}={}\nexec {} \"$@\"\n",
            fault.display(),
            env!("CARGO_BIN_EXE_clawdspace-runtime")
        ),
    )
    .expect("wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut config = env.config();
    config.worker_exe = wrapper;
    env.rt = Some(Runtime::open(config).await.expect("open"));

    let s = env.create(request("victim")).await;
    let init = s.init_pid.expect("init pid");
    let cg = env.rt().cgroup(&s);
    assert_eq!(procs(&cg), vec![init]);

    fs::write(&fault, "").expect("fault file");
    let err = env
        .rt()
        .exec(
            "victim",
            ExecRequest::new(Command::Argv(vec!["sleep".into(), "1000".into()])),
        )
        .await
        .expect_err("the worker died before replying");
    assert!(err.to_string().contains("worker process died"), "{err}");
    assert!(!fault.exists(), "the worker started the process, then died");
    // The process it started is gone with it: only the init is left.
    assert!(
        wait_until(Duration::from_secs(5), || procs(&cg) == vec![init]).await,
        "left in the space: {:?}",
        procs(&cg)
    );
    // A new worker serves the next exec; the space is unharmed.
    assert_eq!(env.out("victim", "echo still here").await, "still here");
    assert_eq!(env.rt().get("victim").expect("victim").init_pid, Some(init));
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_torn_container_state_is_written_anew_when_the_runtime_starts() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let running = env.space("running").await;
    let paused = env.space("paused").await;
    env.rt().pause("paused").await.expect("pause");
    env.sh("running", "echo kept > /home/sandbox/f").await;
    let files: Vec<_> = [&running, &paused]
        .iter()
        .map(|s| env.rt().container_state_dir(s).join("state.json"))
        .collect();
    // A crash while libcontainer rewrote them in place (truncate, write).
    env.close().await;
    for f in &files {
        let whole = fs::read(f).expect("state.json");
        fs::write(f, &whole[..whole.len() / 2]).expect("tear");
    }

    env.rt = Some(env.open().await);
    for f in &files {
        let data = fs::read(f).expect("state.json");
        serde_json::from_slice::<serde_json::Value>(&data).expect("written anew");
    }
    let r = env.rt().get("running").expect("running kept");
    assert_eq!(
        (r.status, r.init_pid),
        (SpaceStatus::Running, running.init_pid)
    );
    let p = env.rt().get("paused").expect("paused kept");
    assert_eq!(
        (p.status, p.init_pid),
        (SpaceStatus::Paused, paused.init_pid)
    );
    // Every operation that reads the state works again.
    assert_eq!(env.out("running", "cat /home/sandbox/f").await, "kept");
    env.rt().pause("running").await.expect("pause");
    env.rt().resume("running").await.expect("resume");
    assert_eq!(env.out("paused", "echo thawed").await, "thawed");
    assert_eq!(
        env.rt().get("paused").expect("paused").status,
        SpaceStatus::Running
    );
    for name in ["running", "paused"] {
        let s = env.rt().get(name).expect(name);
        let cg = env.rt().cgroup(&s);
        env.rt().destroy(name).await.expect("destroy");
        assert!(cgroup_goes(&cg).await, "{name}: cgroup left");
    }
}
