//! Spaces as a user sees them: limits, exec, freezer, init, destroy.
//! Needs root; skipped otherwise.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use clawdspace_runtime::{Command, CreateSpace, Error, ExecRequest, SpaceStatus};
use common::{cgroup_goes, wait_until, TestEnv, IMAGE};

#[tokio::test]
#[ignore = "needs root"]
async fn limits_are_written_to_the_cgroup_and_visible_inside() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space_with("limits", 64 << 20, Some(100)).await;
    let st = env.rt().cgroup(&s).stats();
    assert_eq!(st.memory_limit_bytes, Some(64 << 20));
    assert_eq!(st.cpu_quota, Some((100_000, 100_000)));
    assert_eq!(st.pids_limit, Some(100));
    assert!(st.pids >= 1, "init counted: {st:?}");
    let live = env.rt().stats("limits").expect("stats");
    assert!(live.memory_bytes > 0);
    // Inside, the space sees its own cgroup with the same limit.
    let inside = env
        .out("limits", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max")
        .await;
    assert_eq!(inside, (64u64 << 20).to_string());
    // v1: a space that pins no CPUs shares its parent's cpuset group (no
    // group of its own), with every CPU its parent has.
    let init = s.init_pid.expect("init");
    let groups = fs::read_to_string(format!("/proc/{init}/cgroup")).expect("cgroup");
    if let Some(line) = groups
        .lines()
        .find(|l| l.split(':').nth(1) == Some("cpuset"))
    {
        assert_eq!(
            line.rsplit(':').next(),
            Some(env.cgroup_parent.as_str()),
            "{groups}"
        );
        let parent = format!("/sys/fs/cgroup/cpuset{}", env.cgroup_parent);
        assert_eq!(
            fs::read_to_string(format!("{parent}/cpuset.cpus")).expect("cpus"),
            fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.cpus").expect("root cpus")
        );
        assert!(!std::path::Path::new(&format!("{parent}/{}", s.id)).exists());
    }
    assert_eq!(env.out("limits", "hostname").await, "limits");
    assert_eq!(
        env.out("limits", "id -u; pwd; echo $HOME").await,
        "1000\n/home/sandbox\n/home/sandbox"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn memory_hog_is_oom_killed_inside_its_space_only() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space_with("hog", 32 << 20, None).await;
    // `tail` of an endless line buffers it all in memory.
    let o = env.sh("hog", "tail /dev/zero").await;
    assert_eq!(o.exit_code, 137, "killed by the OOM killer: {o:?}");
    assert!(env.rt().cgroup(&s).oom_kills() >= 1 || o.exit_code == 137);
    // The space and the runtime live on.
    assert_eq!(
        env.rt().get("hog").expect("get").status,
        SpaceStatus::Running
    );
    assert_eq!(env.out("hog", "echo alive").await, "alive");
}

#[tokio::test]
#[ignore = "needs root"]
async fn fork_bomb_stops_at_the_pids_limit() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space_with("bomb", 128 << 20, Some(32)).await;
    env.space("calm").await;
    let mut req = ExecRequest::new(Command::Shell(
        "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait".into(),
    ));
    req.timeout = Some(Duration::from_secs(3));
    // While the bomb runs, the host and other spaces stay responsive.
    let responsive = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let ok = std::process::Command::new("true")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && t.elapsed() < Duration::from_secs(1), "host forks");
        let t = Instant::now();
        assert_eq!(env.out("calm", "echo calm").await, "calm");
        assert!(t.elapsed() < Duration::from_secs(2), "other space execs");
    };
    let (o, ()) = tokio::join!(env.rt().exec("bomb", req), responsive);
    let o = o.expect("exec");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fork") || err.contains("Resource"),
        "forks refused: {err}"
    );
    let pids = env.rt().cgroup(&s).stats().pids;
    assert!(pids <= 32, "pids {pids} within limit");
    // After the group is killed the space works again.
    assert!(
        wait_until(Duration::from_secs(5), || env.rt().cgroup(&s).stats().pids
            <= 2)
        .await
    );
    assert_eq!(env.out("bomb", "echo ok").await, "ok");
}

#[tokio::test]
#[ignore = "needs root"]
async fn exec_separates_streams_and_reports_exit_codes() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("codes").await;
    let o = env.sh("codes", "echo out; echo err >&2").await;
    assert_eq!(
        (o.stdout.as_slice(), o.stderr.as_slice(), o.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 0)
    );
    for (cmd, code) in [
        ("true", 0),
        ("false", 1),
        ("exit 42", 42),
        ("kill -9 $$", 137),
    ] {
        assert_eq!(env.sh("codes", cmd).await.exit_code, code, "{cmd}");
    }
    let rt = env.rt();
    let missing = rt
        .exec(
            "codes",
            ExecRequest::new(Command::Argv(vec!["no-such-program".into()])),
        )
        .await
        .expect("exec");
    assert_eq!(missing.exit_code, 127);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-program"));
    let shell_missing = env.sh("codes", "no-such-program").await;
    assert_eq!(shell_missing.exit_code, 127);
    let not_exec = rt
        .exec(
            "codes",
            ExecRequest::new(Command::Argv(vec!["/etc/passwd".into()])),
        )
        .await
        .expect("exec");
    assert_eq!(not_exec.exit_code, 126);
    // argv is not run through a shell.
    let lit = rt
        .exec(
            "codes",
            ExecRequest::new(Command::Argv(vec!["echo".into(), "$HOME".into()])),
        )
        .await
        .expect("exec");
    assert_eq!(lit.stdout, b"$HOME\n");
}

#[tokio::test]
#[ignore = "needs root"]
async fn exec_captures_a_mebibyte_and_caps_noisy_output() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("big").await;
    let o = env
        .sh(
            "big",
            "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2",
        )
        .await;
    assert_eq!((o.stdout.len(), o.stderr.len()), (1 << 20, 1 << 20));
    assert!(!o.stdout_truncated);
    let mut req = ExecRequest::new(Command::Shell("head -c 100000 /dev/zero".into()));
    req.output_limit = 1000;
    let o = env.rt().exec("big", req).await.expect("exec");
    assert_eq!(o.stdout.len(), 1000);
    assert!(o.stdout_truncated && o.exit_code == 0);
}

#[tokio::test]
#[ignore = "needs root"]
async fn exec_timeout_kills_the_whole_process_group() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("slow").await;
    let mut req = ExecRequest::new(Command::Shell("sleep 60 & sleep 60; echo never".into()));
    req.timeout = Some(Duration::from_millis(500));
    let t = Instant::now();
    let o = env.rt().exec("slow", req).await.expect("exec");
    assert!(o.timed_out && o.exit_code == 137, "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Killed at once; the space's init reaps them a moment later (until
    // then `ps` lists them as zombies).
    let mut left = String::new();
    for _ in 0..20 {
        left = env.out("slow", "ps -o comm | grep -c sleep").await;
        if left == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "0", "sleeps still there 2 s after the timeout");
}

#[tokio::test]
#[ignore = "needs root"]
async fn exec_takes_stdin_cwd_env_and_user() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("opts").await;
    let rt = env.rt();
    let mut req = ExecRequest::new(Command::Shell("cat; pwd; echo $FOO; id -u".into()));
    req.stdin = Some(b"hello\n".to_vec());
    req.cwd = Some("/tmp".into());
    req.env = vec!["FOO=bar".into()];
    req.user = Some("root".into());
    let o = rt.exec("opts", req).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n/tmp\nbar\n0\n");
    // Without stdin, a read sees EOF at once.
    assert_eq!(env.out("opts", "read x; echo eof:$?").await, "eof:1");
}

#[tokio::test]
#[ignore = "needs root"]
async fn many_execs_run_at_once_in_one_space() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("busy").await;
    let rt = env.rt();
    let t = Instant::now();
    let runs = (0..16).map(|i| {
        let rt = rt.clone();
        async move {
            rt.exec(
                "busy",
                ExecRequest::new(Command::Shell(format!("sleep 0.5; echo {i}"))),
            )
            .await
            .expect("exec")
        }
    });
    let outs = futures_join_all(runs).await;
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), i.to_string());
    }
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "ran concurrently: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn destroys_and_pauses_racing_exec_starts_all_succeed_and_leave_nothing() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let rt = env.rt();
    for round in 0..12u64 {
        let name = format!("race{round}");
        let s = env.space(&name).await;
        let execs: Vec<_> = (0..6)
            .map(|_| {
                let (rt, name) = (rt.clone(), name.clone());
                tokio::spawn(async move {
                    let req = ExecRequest::new(Command::Argv(vec!["true".into()]));
                    tokio::time::timeout(Duration::from_secs(20), rt.exec(&name, req)).await
                })
            })
            .collect();
        // Lands among the exec starts (each takes milliseconds).
        tokio::time::sleep(Duration::from_millis(round % 6 * 2)).await;
        if round % 2 == 0 {
            rt.destroy(&name).await.expect("destroy during exec starts");
            for e in execs {
                match e.await.expect("task").expect("an exec hung") {
                    // Finished first, or started and then killed with the
                    // space (SIGKILL: 137; slow machines get there).
                    Ok(o) => assert!(matches!(o.exit_code, 0 | 137), "{o:?}"),
                    Err(Error::SpaceNotFound | Error::NotRunning) => {}
                    Err(e) => panic!("exec beside a destroy: {e}"),
                }
            }
            let cg = rt.cgroup(&s);
            assert!(
                cgroup_goes(&cg).await,
                "a cgroup came back after the destroy: {:?}",
                cg.all_dirs()
            );
            assert!(!rt.space_dir(&s).exists(), "files left");
        } else {
            rt.pause(&name).await.expect("pause during exec starts");
            // An exec started before the pause is frozen with the space;
            // one after it wakes the space. Once it runs again, every exec
            // ends: none was left half-started.
            rt.resume(&name).await.expect("resume");
            for e in execs {
                let o = e.await.expect("task").expect("an exec hung");
                assert_eq!(o.expect("exec beside a pause").exit_code, 0);
            }
            rt.destroy(&name).await.expect("destroy");
        }
    }
}

async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
#[ignore = "needs root"]
async fn paused_space_makes_no_progress_and_resumes_where_it_was() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("frozen").await;
    env.sh(
        "frozen",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; done > /dev/null 2>&1 &",
    )
    .await;
    let counter = env.rt().upper_dir(&s).join("tmp/c");
    let read = || {
        fs::read_to_string(&counter)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert!(wait_until(Duration::from_secs(5), || read().is_some_and(|v| v > 10)).await);
    let p = env.rt().pause("frozen").await.expect("pause");
    assert_eq!(p.status, SpaceStatus::Paused);
    assert!(env.rt().cgroup(&s).is_frozen());
    let a = read();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = read();
    assert_eq!(a, b, "no progress while paused");
    // Pausing again is a no-op.
    env.rt().pause("frozen").await.expect("pause again");
    env.rt().resume("frozen").await.expect("resume");
    assert!(
        wait_until(Duration::from_secs(5), || read() > b).await,
        "counter continues"
    );
    assert_eq!(
        env.rt().get("frozen").expect("get").status,
        SpaceStatus::Running
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn exec_wakes_a_paused_space() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("sleepy").await;
    env.rt().pause("sleepy").await.expect("pause");
    assert_eq!(env.out("sleepy", "echo awake").await, "awake");
    assert_eq!(
        env.rt().get("sleepy").expect("get").status,
        SpaceStatus::Running
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn init_reaps_orphans_so_no_zombies_remain() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("reaper").await;
    env.sh(
        "reaper",
        "sh -c 'sleep 100 &' > /dev/null 2>&1; for i in 1 2 3 4 5; do (sleep 0.1 &) ; done",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ps = env.out("reaper", "ps -o stat,comm").await;
    assert!(
        !ps.lines().any(|l| l.trim_start().starts_with('Z')),
        "zombies: {ps}"
    );
    assert!(ps.contains("sleep"), "background job still runs: {ps}");
    assert_eq!(
        env.out("reaper", "cat /proc/1/cmdline")
            .await
            .trim_end_matches('\0'),
        "/dev/init"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn destroy_leaves_nothing_behind_and_is_idempotent() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let s = env.space("gone").await;
    env.sh(
        "gone",
        "echo data > /home/sandbox/f; sleep 100 > /dev/null 2>&1 &",
    )
    .await;
    env.rt().pause("gone").await.expect("pause");
    let pid = s.init_pid.expect("pid");
    let (dir, cg, state) = (
        env.rt().space_dir(&s),
        env.rt().cgroup(&s),
        env.rt().container_state_dir(&s),
    );
    env.rt().destroy("gone").await.expect("destroy");
    assert!(!env.rt().is_rootfs_mounted(&s), "no mount");
    assert!(!dir.exists() && !state.exists(), "no directories");
    assert!(cgroup_goes(&cg).await, "no cgroup");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "no process"
    );
    assert!(matches!(
        env.rt().destroy("gone").await,
        Err(Error::SpaceNotFound)
    ));
    assert!(env.rt().list().is_empty());
    // The name is free again, with a new id.
    let again = env.space("gone").await;
    assert_ne!(again.id, s.id);
}

#[tokio::test]
#[ignore = "needs root"]
async fn destroying_a_space_with_running_execs_ends_them_at_once() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let rt = env.rt();
    // The destroy lands on the worker that started an exec now and then
    // (two workers, two execs, four rounds): that worker must reap its exec
    // for the space's init to finish dying.
    for round in 0..4 {
        let name = format!("busy{round}");
        let s = env.space(&name).await;
        let execs: Vec<_> = (0..2)
            .map(|_| {
                let (rt, name) = (rt.clone(), name.clone());
                tokio::spawn(async move {
                    rt.exec(&name, ExecRequest::new(Command::Shell("sleep 30".into())))
                        .await
                })
            })
            .collect();
        // The init and the two execs' shells or sleeps.
        let procs = rt.cgroup(&s).dir("pids").join("cgroup.procs");
        let running = || fs::read_to_string(&procs).is_ok_and(|p| p.lines().count() >= 3);
        assert!(wait_until(Duration::from_secs(10), running).await);
        let t = Instant::now();
        rt.destroy(&name).await.expect("destroy with execs running");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "round {round}: destroy took {:?}",
            t.elapsed()
        );
        for e in execs {
            let r = tokio::time::timeout(Duration::from_secs(10), e)
                .await
                .expect("the exec ended")
                .expect("task");
            if let Ok(o) = r {
                assert_ne!(o.exit_code, 0, "killed with its space");
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn destroyed_spaces_cgroups_go_once_creates_pause_or_at_a_clean_stop() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let state = env.config().state_dir;
    // While creates go on, removing a memory cgroup would make them wait
    // (see ARCHITECTURE.md): destroyed spaces' cgroups wait, listed.
    let a = env.space("a").await;
    let b = env.space("b").await;
    env.rt().destroy("a").await.expect("destroy a");
    let (cg_a, cg_b) = (env.rt().cgroup(&a), env.rt().cgroup(&b));
    assert!(
        cgroup_goes(&cg_a).await,
        "a's cgroup goes when creates pause"
    );
    // The list is rewritten right after the directories go.
    let list = state.join("cgroups-retiring");
    assert!(
        wait_until(Duration::from_secs(2), || !list.exists()).await,
        "the list empties with it"
    );
    // Retired right before a clean stop: gone when it returns.
    env.space("c").await;
    env.rt().destroy("b").await.expect("destroy b");
    env.close().await;
    assert!(
        cg_b.all_dirs().iter().all(|d| !d.exists()),
        "b's cgroup went with the stop: {:?}",
        cg_b.all_dirs()
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_destroyed_space_leaves_no_memory_charged_behind() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let rt = env.rt();
    let s = env.space("charged").await;
    // 16 MiB of page cache charged to the space: a file in its workspace
    // volume, which outlives the space.
    let out = rt
        .exec(
            "charged",
            ExecRequest::new(Command::Shell(
                "dd if=/dev/zero of=/workspace/big bs=1M count=16 2>/dev/null && sync && cat /workspace/big >/dev/null".into(),
            )),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{out:?}");
    let cg = rt.cgroup(&s);
    let parent = cg.dir("memory").parent().expect("parent").to_path_buf();
    let charged = || {
        ["memory.usage_in_bytes", "memory.current"]
            .iter()
            .find_map(|f| fs::read_to_string(parent.join(f)).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let Some(before) = charged() else {
        eprintln!("skipped: no memory controller at {}", parent.display());
        return;
    };
    assert!(before >= 16 << 20, "the file is charged: {before}");
    rt.destroy("charged").await.expect("destroy");
    assert!(cgroup_goes(&cg).await, "the cgroup goes");
    // Removed with the file's pages still charged, the memory cgroup would
    // linger in the kernel (dying), those pages counted in its parent.
    let after = charged().expect("parent usage");
    assert!(
        after < 8 << 20,
        "{after} bytes still charged under {} (was {before})",
        parent.display()
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn failed_create_leaves_nothing_and_the_name_stays_free() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let rt = env.rt();
    let req = |image: &str| CreateSpace {
        image: image.into(),
        memory: 64 << 20,
        nano_cpus: 1_000_000_000,
        pids_limit: None,
        ..CreateSpace::named(clawdspace_runtime::SpaceName::new("broken").expect("space name"))
    };
    // Not stored, so it is pulled; its registry is unreachable (502-class).
    assert!(matches!(
        rt.create(req("missing:1")).await,
        Err(Error::Registry(_))
    ));
    // An image whose /dev is a file: libcontainer fails after the rootfs is
    // mounted, so the rollback has real work to do.
    let bad = env.dir.join("bad-rootfs");
    common::busybox_rootfs(&bad);
    fs::remove_dir(bad.join("dev")).expect("rm dev");
    fs::write(bad.join("dev"), "not a directory").expect("dev file");
    rt.images()
        .import_rootfs("bad:1", &bad, Default::default())
        .expect("import");
    let err = rt.create(req("bad:1")).await.expect_err("create must fail");
    // The image's fault: a 400 that says what is wrong with it.
    assert_eq!(err.kind(), clawdspace_runtime::ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("/dev is not a directory"), "{err}");
    assert!(rt.list().is_empty());
    let spaces = env.dir.join("state/spaces");
    assert_eq!(
        fs::read_dir(&spaces).expect("spaces dir").count(),
        0,
        "no leftovers"
    );
    assert_eq!(mounts_below(&env.dir), Vec::<String>::new(), "no mounts");
    rt.create(req(IMAGE))
        .await
        .expect("retry with a good image");
}

#[tokio::test]
#[ignore = "needs root"]
async fn concurrent_creates_of_one_name_give_exactly_one_space() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let rt = env.rt().clone();
    let mk = || {
        let rt = rt.clone();
        tokio::spawn(async move {
            rt.create(CreateSpace {
                image: IMAGE.into(),
                memory: 64 << 20,
                nano_cpus: 500_000_000,
                pids_limit: None,
                ..CreateSpace::named(
                    clawdspace_runtime::SpaceName::new("twin").expect("space name"),
                )
            })
            .await
        })
    };
    let (a, b) = (mk(), mk());
    let results = [a.await.expect("task"), b.await.expect("task")];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflict = results
        .iter()
        .filter(|r| matches!(r, Err(Error::SpaceExists)))
        .count();
    assert_eq!((ok, conflict), (1, 1));
    assert_eq!(rt.list().len(), 1);
}

#[tokio::test]
#[ignore = "needs root"]
async fn invalid_requests_are_refused_before_anything_is_made() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let rt = env.rt();
    // A bad name cannot even be put into a request.
    assert!(matches!(
        clawdspace_runtime::SpaceName::new("bad name"),
        Err(Error::InvalidInput(_))
    ));
    for (memory, cpus) in [(1 << 20, 1.0), (64 << 20, 0.001)] {
        let r = rt
            .create(CreateSpace {
                image: IMAGE.into(),
                memory,
                nano_cpus: (cpus * 1e9) as u64,
                pids_limit: None,
                ..common::request("ok")
            })
            .await;
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{memory} {cpus}");
    }
    assert!(matches!(
        rt.images().resolve("../etc"),
        Err(Error::InvalidInput(_))
    ));
    assert!(rt.list().is_empty());
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_tty_exec_gets_a_terminal_that_resizes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("term").await;
    let mut req = ExecRequest::new(Command::Shell(
        "stty size; read line; echo got:$line; stty size".into(),
    ));
    req.tty = Some((80, 24));
    let (mut h, _activity) = env.rt().exec_spawn("term", &req).await.expect("tty exec");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    async fn until(
        h: &mut clawdspace_runtime::ExecHandle,
        seen: &mut String,
        buf: &mut [u8],
        want: &str,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains(want) {
            let n = tokio::time::timeout_at(deadline, h.stdout.read(buf))
                .await
                .unwrap_or_else(|_| panic!("no {want:?} in time: {seen:?}"))
                .unwrap_or(0);
            assert!(n > 0, "terminal closed before {want:?}: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    until(&mut h, &mut seen, &mut buf, "24 80").await;
    h.resize(100, 40);
    let stdin = h.stdin.as_mut().expect("tty input");
    stdin.write_all(b"hello\n").await.expect("type");
    until(&mut h, &mut seen, &mut buf, "40 100").await;
    assert!(seen.contains("got:hello"), "{seen:?}");
    let code = tokio::time::timeout(Duration::from_secs(5), &mut h.exit)
        .await
        .expect("exits")
        .expect("code");
    assert_eq!(code, 0);
}

/// The overlay options of the mount at `target` (the super options of its
/// `/proc/self/mountinfo` line) as name → value.
fn overlay_options(target: &std::path::Path) -> std::collections::HashMap<String, String> {
    let line = common::mountinfo_line(target);
    let supers = line.split(" - ").nth(1).and_then(|r| r.split(' ').nth(2));
    supers
        .expect("super options")
        .split(',')
        .filter_map(|o| o.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Mount points in this process's mount table below `dir`.
fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| std::path::Path::new(p).starts_with(dir) && std::path::Path::new(p) != dir)
        .map(String::from)
        .collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn overlays_name_their_layers_through_a_view_with_nothing_mounted_in_it() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let a = env.space("view-a").await;
    env.space("view-b").await;
    let opts = overlay_options(&env.rt().rootfs_dir(&a));
    let upper = std::path::PathBuf::from(&opts["upperdir"]);
    let view: std::path::PathBuf = upper.components().take(4).collect();
    assert!(
        view.to_string_lossy()
            .starts_with("/run/clawdspace/overlay-view-"),
        "{opts:?}"
    );
    assert!(std::path::Path::new(&opts["workdir"]).starts_with(&view));
    assert!(opts["lowerdir"]
        .split(':')
        .all(|l| std::path::Path::new(l).starts_with(&view)));
    // Two spaces are mounted below the state dir; none below the view.
    assert_eq!(mounts_below(&view), Vec::<String>::new());
    // What the space writes is in its upper dir, by either name.
    env.sh("view-a", "echo written > /tmp/marker").await;
    let real = env.rt().upper_dir(&a).join("tmp/marker");
    assert_eq!(fs::read_to_string(&real).expect("real"), "written\n");
    assert_eq!(
        fs::read_to_string(upper.join("tmp/marker")).expect("through the view"),
        "written\n"
    );
    // The space's own mount table has no view and no state dir.
    let inside = env.out("view-a", "cat /proc/self/mountinfo").await;
    assert!(
        !inside
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|p| p.starts_with("/run/clawdspace")),
        "{inside}"
    );
    // A restart finds the view: the spaces keep running, no second view.
    env.close().await;
    env.rt = Some(env.open().await);
    env.space("view-c").await;
    let c = env.rt().get("view-c").expect("view-c");
    assert_eq!(
        overlay_options(&env.rt().rootfs_dir(&c))["upperdir"],
        view.join("spaces")
            .join(&c.id)
            .join("upper")
            .to_string_lossy()
    );
    assert_eq!(env.out("view-a", "cat /tmp/marker").await, "written");
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let at_view = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == view.to_str())
        .count();
    assert_eq!(at_view, 1);
    // The test's purge (on drop) takes the view away.
    drop(env);
    assert!(!view.exists(), "{} left", view.display());
}
