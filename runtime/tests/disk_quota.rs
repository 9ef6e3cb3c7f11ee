//! Per-space disk limits (project quotas). Needs root; skipped otherwise.
//! The enforcing test also needs a kernel that mounts ext4 with project
//! quotas (CONFIG_QUOTA and CONFIG_QFMT_V2); it says so when skipped.

mod common;

use std::fs;
use std::process::Command as HostCommand;

use clawdspace_runtime::{CreateSpace, Error, ErrorKind, PutOptions};
use common::{TestEnv, IMAGE};

/// The test image's default request (see [`common::request`]) with `disk`.
fn request(name: &str, disk: Option<u64>) -> CreateSpace {
    CreateSpace {
        disk,
        ..common::request(name)
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_disk_limit_without_project_quotas_is_refused_and_leaves_nothing() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    match env.rt().create(request("q", Some(64 << 20))).await {
        Err(Error::InvalidInput(msg)) => {
            assert!(msg.contains("disk quotas are not available"), "{msg}");
            assert!(msg.contains("prjquota"), "says what to do: {msg}");
        }
        Ok(_) => {
            eprintln!("skipped: this state dir enforces project quotas");
            return;
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    assert!(matches!(env.rt().get("q"), Err(Error::SpaceNotFound)));
    let left = fs::read_dir(env.dir.join("state/spaces"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "no space directory left");
    // Too small a limit is refused whatever the filesystem.
    assert!(matches!(
        env.rt().create(request("q", Some(4096))).await,
        Err(Error::InvalidInput(_))
    ));
}

/// Runs a host command; whether it succeeded.
fn run(cmd: &str, args: &[&str]) -> bool {
    HostCommand::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Moves the state dir of `env` onto a fresh 256 MiB ext4 with project
/// quotas and reopens the runtime there with the test image; false (the
/// test is skipped) when this kernel cannot mount one. The environment's
/// cleanup unmounts it (and so frees the loop device).
async fn on_quota_fs(env: &mut TestEnv) -> bool {
    let img = env.dir.join("disk.img");
    let state = env.dir.join("state");
    let img_s = img.to_string_lossy().to_string();
    let made = fs::File::create(&img)
        .and_then(|f| f.set_len(256 << 20))
        .is_ok()
        && run("mkfs.ext4", &["-q", "-O", "quota,project", &img_s]);
    assert!(made, "mkfs.ext4 with quota,project (e2fsprogs)");
    env.rt.take();
    if !run(
        "mount",
        &["-o", "loop,prjquota", &img_s, &state.to_string_lossy()],
    ) {
        eprintln!(
            "skipped: this kernel cannot mount ext4 with project quotas \
             (needs CONFIG_QUOTA and CONFIG_QFMT_V2)"
        );
        return false;
    }
    env.rt = Some(env.open().await);
    env.rt()
        .images()
        .import_rootfs(IMAGE, &env.dir.join("fixture-rootfs"), Default::default())
        .expect("import busybox image");
    true
}

#[tokio::test]
#[ignore = "needs root"]
async fn writes_past_the_disk_limit_fail_inside_the_space_only() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    if !on_quota_fs(&mut env).await {
        return;
    }

    let small = env
        .rt()
        .create(request("small", Some(8 << 20)))
        .await
        .expect("create with a disk limit");
    assert_eq!(small.disk, Some(8 << 20));
    env.rt()
        .create(request("big", None))
        .await
        .expect("create without a limit");

    let write = "dd if=/dev/zero of=$HOME/f bs=1M count=32 2>&1; sync";
    let o = env.sh("small", write).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Disk quota exceeded"), "limited: {out}");
    // Freed space can be used again.
    assert_eq!(
        env.out("small", "rm $HOME/f && echo ok > $HOME/g && cat $HOME/g")
            .await,
        "ok"
    );
    let o = env.sh("big", write).await;
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("quota"),
        "the other space is not limited: {o:?}"
    );
    assert_eq!(
        env.out("big", "wc -c < $HOME/f").await,
        (32u64 << 20).to_string()
    );

    env.rt().destroy("big").await.expect("destroy big");
    env.rt().destroy("small").await.expect("destroy small");
    assert!(env.rt().list().is_empty());
}

/// Whether the state dir of `env` enforces project quotas (a create with
/// a limit is refused with 400 when it does not).
async fn quotas_enforced(env: &TestEnv) -> bool {
    match env
        .rt()
        .create(request("probe-quota", Some(64 << 20)))
        .await
    {
        Ok(_) => {
            env.rt()
                .destroy("probe-quota")
                .await
                .expect("destroy probe");
            true
        }
        Err(Error::InvalidInput(_)) => false,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn the_server_default_disk_limit_applies_only_where_quotas_hold() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let enforced = quotas_enforced(&env).await;
    env.rt.take();
    let mut config = env.config();
    config.default_disk = Some(64 << 20);
    env.rt = Some(
        clawdspace_runtime::Runtime::open(config)
            .await
            .expect("open with a default disk limit"),
    );
    let want = enforced.then_some(64 << 20);
    // Without quotas the default is off (and the runtime warned at open).
    assert_eq!(env.rt().config().default_disk, want);
    let s = env.create(request("d", None)).await;
    assert_eq!(s.disk, want, "a space without `disk` gets the default");
    if enforced {
        let own = env.create(request("own", Some(32 << 20))).await;
        assert_eq!(own.disk, Some(32 << 20), "its own limit wins");
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_space_whose_disk_limit_cannot_be_applied_is_not_started_without_it() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    if quotas_enforced(&env).await {
        eprintln!("skipped: this state dir enforces project quotas");
        return;
    }
    // A space created with a limit on a filesystem that enforced it, after
    // a reboot that lost `prjquota`: its record has the limit, quotas are
    // gone, its init is dead.
    let s = env.space("lim").await;
    env.rt.take();
    let pid = s.init_pid.expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill init");
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(common::wait_until(std::time::Duration::from_secs(5), gone).await);
    let record = env.dir.join("state/spaces").join(&s.id).join("space.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&record).expect("read record")).expect("record");
    v["disk"] = serde_json::json!(64u64 << 20);
    fs::write(&record, serde_json::to_vec(&v).expect("json")).expect("write record");

    env.rt = Some(env.open().await);
    let back = env.rt().get("lim").expect("still listed");
    assert_eq!(back.status, clawdspace_runtime::SpaceStatus::Stopped);
    assert_eq!(back.disk, Some(64 << 20), "its limit is kept");
    assert!(back.init_pid.is_none());
    match env.rt().start("lim").await {
        Err(e @ Error::DiskLimit(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("disk limit of 64 MiB"), "{msg}");
            assert!(msg.contains("not started without it"), "{msg}");
            assert!(msg.contains("disk quotas are not available"), "{msg}");
        }
        other => panic!("started without its limit or failed otherwise: {other:?}"),
    }
    assert!(matches!(
        env.rt()
            .exec(
                "lim",
                clawdspace_runtime::ExecRequest::new(clawdspace_runtime::Command::Shell(
                    "true".into()
                ))
            )
            .await,
        Err(Error::NotRunning)
    ));
}

#[tokio::test]
#[ignore = "needs root"]
async fn uploads_past_the_disk_limit_fail_whole_and_leave_no_partial_file() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    if !on_quota_fs(&mut env).await {
        return;
    }
    env.rt()
        .create(request("full", Some(8 << 20)))
        .await
        .expect("create with a disk limit");
    let zeros = || std::io::Read::take(std::io::repeat(0), 32 << 20);
    let opts = PutOptions::default();
    for dir in ["/home/sandbox", "/workspace"] {
        let e = env
            .rt()
            .put_file("full", &format!("{dir}/big"), opts, zeros())
            .await
            .expect_err("over the limit");
        assert_eq!(e.kind(), ErrorKind::InsufficientStorage, "{dir}: {e}");
        assert!(e.to_string().contains("quota"), "{e}");
        let left = env.rt().list_dir("full", dir).await.expect("list");
        assert!(
            left.iter().all(|e| !e.name.contains("big")),
            "{dir}: a partial file is left: {left:?}"
        );
    }
    // The volume counts against the same limit as the writable layer.
    env.rt()
        .put_file(
            "full",
            "/workspace/six",
            opts,
            std::io::Read::take(std::io::repeat(1), 6 << 20),
        )
        .await
        .expect("6 MiB fit");
    let e = env
        .rt()
        .put_file(
            "full",
            "/home/sandbox/four",
            opts,
            std::io::Read::take(std::io::repeat(1), 4 << 20),
        )
        .await
        .expect_err("6 + 4 MiB do not");
    assert_eq!(e.kind(), ErrorKind::InsufficientStorage, "{e}");
    // An archive that does not fit is refused the same way, its file gone.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(
        &mut h,
        "t/big",
        std::io::Read::take(std::io::repeat(2), 4 << 20),
    )
    .expect("tar");
    let tarball = b.into_inner().expect("tar");
    let e = env
        .rt()
        .extract_archive("full", "/home/sandbox/x", std::io::Cursor::new(tarball))
        .await
        .expect_err("over the limit");
    assert_eq!(e.kind(), ErrorKind::InsufficientStorage, "{e}");
    assert!(env
        .rt()
        .list_dir("full", "/home/sandbox/x/t")
        .await
        .expect("list")
        .is_empty());
    // Freed space is usable again.
    env.rt()
        .delete_path("full", "/workspace/six")
        .await
        .expect("rm");
    env.rt()
        .put_file(
            "full",
            "/home/sandbox/four",
            opts,
            std::io::Read::take(std::io::repeat(1), 4 << 20),
        )
        .await
        .expect("fits now");
    env.rt().destroy_space("full", true).await.expect("destroy");
}
