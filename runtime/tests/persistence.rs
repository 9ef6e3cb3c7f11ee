//! Spaces outlive the daemon: kill -9, clean restarts, a simulated host
//! reboot, and an init that dies. Needs root; skipped otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command as Proc, Stdio};
use std::time::Duration;

use clawdspace_runtime::{Space, SpaceStatus};
use common::{wait_until, TestEnv, IMAGE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Alive and not a zombie (an orphaned init's reaper is the host's PID 1).
fn alive(pid: i32) -> bool {
    clawdspace_runtime::testing::start_time(pid).is_some()
}

#[tokio::test]
#[ignore = "needs root"]
async fn spaces_survive_kill_9_of_the_daemon() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    // The "daemon" is a separate process holding the runtime.
    env.close().await;
    let cfg = env.config();
    let mut daemon = Proc::new(env!("CARGO_BIN_EXE_clawdspace-runtime"))
        .args(["hold", "survivor", IMAGE])
        .env("CLAWDSPACE_STATE_DIR", &cfg.state_dir)
        .env("CLAWDSPACE_CGROUP_PARENT", &cfg.cgroup_parent)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let mut line = String::new();
    BufReader::new(daemon.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("daemon output");
    let before: Space = serde_json::from_str(&line).expect("space json");
    kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL).expect("kill -9");
    daemon.wait().expect("reap daemon");
    let init = before.init_pid.expect("pid");
    assert!(alive(init), "space init survives its daemon");

    env.rt = Some(env.open().await);
    let after = env.rt().get("survivor").expect("still known");
    assert_eq!(
        (after.id.as_str(), after.status),
        (before.id.as_str(), SpaceStatus::Running)
    );
    assert_eq!(after.started, before.started, "not restarted");
    assert_eq!(env.out("survivor", "echo hi").await, "hi");
    env.rt().pause("survivor").await.expect("pause");
    env.rt().resume("survivor").await.expect("resume");
    env.rt().destroy("survivor").await.expect("destroy");
    assert!(!alive(init));
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_clean_restart_adopts_running_and_paused_spaces() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let a = env.space("a").await;
    env.space("b").await;
    env.rt().pause("b").await.expect("pause");
    env.close().await; // daemon stops; workers exit
    assert!(alive(a.init_pid.expect("pid")));
    env.rt = Some(env.open().await);
    let a2 = env.rt().get("a").expect("a");
    assert_eq!((a2.status, a2.init_pid), (SpaceStatus::Running, a.init_pid));
    assert_eq!(env.rt().get("b").expect("b").status, SpaceStatus::Paused);
    assert_eq!(env.out("b", "echo woke").await, "woke");
}

#[tokio::test]
#[ignore = "needs root"]
async fn after_a_simulated_reboot_spaces_come_back_with_their_files() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("phoenix").await;
    env.sh(
        "phoenix",
        "echo precious > /home/sandbox/data.txt; mkdir -p /tmp/d && echo x > /tmp/d/y",
    )
    .await;
    env.rt().pause("phoenix").await.expect("pause");
    let rootfs = env.rt().rootfs_dir(&s);
    let cg = env.rt().cgroup(&s);
    env.close().await;
    // The "reboot": every process of the space dies, mounts vanish, cgroups go.
    for d in cg.all_dirs() {
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
    }
    kill(Pid::from_raw(s.init_pid.expect("pid")), Signal::SIGKILL).expect("kill init");
    assert!(wait_until(Duration::from_secs(5), || !alive(s.init_pid.unwrap_or(0))).await);
    nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).expect("umount");
    for d in cg.all_dirs() {
        let _ = std::fs::remove_dir(d);
    }

    env.rt = Some(env.open().await);
    let back = env.rt().get("phoenix").expect("remembered");
    assert_eq!(back.id, s.id);
    assert_eq!(back.created, s.created);
    assert_eq!(back.status, SpaceStatus::Running);
    assert!(back.started > s.started, "new started");
    assert_ne!(back.init_pid, s.init_pid);
    assert_eq!(
        env.out("phoenix", "cat /home/sandbox/data.txt /tmp/d/y")
            .await,
        "precious\nx"
    );
}

/// A create records its space while its init starts: a daemon that dies
/// in between leaves a running record without the init's pid (simulated
/// here by taking the pid out of the record). The next daemon brings the
/// space up with one init: the one the cut-short create left is killed.
#[tokio::test]
#[ignore = "needs root"]
async fn a_create_cut_short_after_its_record_comes_back_with_one_init() {
    cut_short(false).await;
}

/// As above, cut before libcontainer's state file was written too: the
/// init is found by its cgroup.
#[tokio::test]
#[ignore = "needs root"]
async fn a_create_cut_short_before_its_container_state_comes_back_with_one_init() {
    cut_short(true).await;
}

/// A live space whose record lost its init's pid (and, with `lose_state`,
/// whose libcontainer state is gone): what a crash in the middle of a
/// create leaves. The next runtime brings it up with exactly one init.
async fn cut_short(lose_state: bool) {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("cut").await;
    env.sh("cut", "echo kept > /home/sandbox/f").await;
    let record = env.rt().space_dir(&s).join("space.json");
    env.close().await;
    if lose_state {
        let state = env.dir.join("state/run").join(&s.id);
        std::fs::remove_dir_all(&state).expect("remove the container state");
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("record")).expect("json");
    let o = v.as_object_mut().expect("record object");
    assert!(o.remove("initPid").is_some(), "{o:?}");
    o.remove("initStartTime");
    std::fs::write(&record, serde_json::to_vec(&v).expect("json")).expect("write record");
    let old = s.init_pid.expect("pid");
    assert!(alive(old));

    env.rt = Some(env.open().await);
    let back = env.rt().get("cut").expect("remembered");
    assert_eq!(
        (back.id.as_str(), back.status),
        (s.id.as_str(), SpaceStatus::Running)
    );
    assert!(
        back.init_pid.is_some_and(|p| p != old),
        "{:?}",
        back.init_pid
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(old)).await,
        "the init of the cut-short create is gone"
    );
    assert_eq!(env.out("cut", "cat /home/sandbox/f").await, "kept");
    assert_eq!(env.out("cut", "ps -o comm= | grep -c '^init$'").await, "1");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_dead_init_is_started_again_with_files_intact() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("lazarus").await;
    env.sh("lazarus", "echo kept > /home/sandbox/f").await;
    kill(Pid::from_raw(s.init_pid.expect("pid")), Signal::SIGKILL).expect("kill init");
    let rt = env.rt().clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.get("lazarus")
                .is_ok_and(|n| n.init_pid != s.init_pid && n.status == SpaceStatus::Running)
        })
        .await,
        "restarted"
    );
    assert_eq!(env.out("lazarus", "cat /home/sandbox/f").await, "kept");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_second_runtime_on_the_same_state_dir_is_refused() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let err = clawdspace_runtime::Runtime::open(env.config())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("in use"), "{err}");
}
