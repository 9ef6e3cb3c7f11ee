//! Images whose mount destinations are symlinks to host paths: the files the
//! runtime mounts into a space (`/etc/resolv.conf`, `/etc/hosts`, `/dev`,
//! `/proc`, our init at `/dev/init`) land inside the space's own root or the
//! space is refused; no host file is ever created, replaced or mounted over.
//! (libcontainer resolves destinations with libpathrs; these tests keep it so.)

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use std::time::Duration;

use clawdspace_runtime::{CreateSpace, ErrorKind, NetworkMode, SpaceStatus};
use common::decoy::{snapshot, Decoy};
use common::{busybox_rootfs, request, wait_until, TestEnv};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Imports a busybox image as `reference` after `plant` has changed its tree.
fn import(env: &TestEnv, reference: &str, plant: impl FnOnce(&Path)) {
    let root = env
        .dir
        .join(format!("rootfs-{}", reference.replace(':', "-")));
    busybox_rootfs(&root);
    plant(&root);
    env.rt()
        .images()
        .import_rootfs(reference, &root, Default::default())
        .expect("import image");
}

fn replace_with_symlink(root: &Path, rel: &str, target: &Path) {
    let p = root.join(rel);
    if fs::symlink_metadata(&p)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        fs::remove_dir_all(&p).expect("remove dir");
    } else {
        let _ = fs::remove_file(&p);
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).expect("parent");
    }
    symlink(target, &p).expect("symlink");
}

/// Creates, restarts and destroys a networked space of `image`; the decoy
/// must not change and nothing may be mounted on it at any point. Returns
/// whether the create succeeded (a clear refusal is also fine).
async fn exercise(env: &TestEnv, decoy: &Decoy, name: &str, image: &str) -> bool {
    let before = snapshot(&decoy.dir);
    let created = env
        .rt()
        .create(CreateSpace {
            image: image.into(),
            network: NetworkMode::Internet,
            ..request(name)
        })
        .await;
    let ok = match created {
        Ok(space) => {
            assert!(
                decoy.mounts().is_empty(),
                "{name}: mounted on the host: {:?}",
                decoy.mounts()
            );
            // The space sees its own resolver file, wherever it landed.
            let o = env.out(name, "cat /etc/resolv.conf").await;
            assert!(
                !o.contains("host resolv"),
                "{name}: the space reads the host's file"
            );
            // A dead init is started again: the mounts are made anew.
            let pid = space.init_pid.expect("init pid");
            kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill init");
            let rt = env.rt().clone();
            assert!(
                wait_until(Duration::from_secs(10), || {
                    rt.get(name).is_ok_and(|n| {
                        n.init_pid.is_some_and(|p| p != pid) && n.status == SpaceStatus::Running
                    })
                })
                .await,
                "{name}: not restarted"
            );
            assert!(
                decoy.mounts().is_empty(),
                "{name}: mounted on the host after restart"
            );
            env.rt().destroy(name).await.expect("destroy");
            true
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Invalid, "{name}: refused with {e}");
            assert!(
                e.to_string().contains("symlink"),
                "{name}: unclear refusal: {e}"
            );
            assert!(
                env.rt().get(name).is_err(),
                "{name}: a refused space is listed"
            );
            false
        }
    };
    assert!(decoy.mounts().is_empty(), "{name}: mounts left on the host");
    assert_eq!(
        before,
        snapshot(&decoy.dir),
        "{name}: the host's decoy tree changed"
    );
    ok
}

#[tokio::test]
#[ignore = "needs root"]
async fn mount_destinations_through_symlinks_stay_in_the_space() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let decoy = Decoy::new();
    let d = decoy.dir.clone();
    let rel = PathBuf::from("../../../../../../..").join(d.strip_prefix("/").expect("abs"));

    // Files the runtime bind-mounts, as absolute and relative symlinks.
    import(&env, "evil-files:1", |r| {
        replace_with_symlink(r, "etc/resolv.conf", &d.join("etc/resolv.conf"));
        replace_with_symlink(r, "etc/hosts", &rel.join("etc/hosts"));
    });
    // The directory holding them, through a chain of two symlinks.
    import(&env, "evil-etc:1", |r| {
        replace_with_symlink(r, "hop", &d.join("etc"));
        replace_with_symlink(r, "etc", Path::new("/hop"));
    });
    // /dev (a tmpfs and our init's bind mount) and /proc.
    import(&env, "evil-dev:1", |r| {
        replace_with_symlink(r, "dev", &d.join("dev"));
        replace_with_symlink(r, "proc", &rel.join("etc"));
    });

    // /sys (sysfs and the cgroup mounts below it) and /workspace (the
    // space's volume, a directory bind).
    import(&env, "evil-sys:1", |r| {
        replace_with_symlink(r, "sys", &d.join("sub"));
    });
    import(&env, "evil-volume:1", |r| {
        replace_with_symlink(r, "workspace", &rel.join("sub/deeper"));
    });

    // Each of these leads outside the image: refused, the host untouched.
    for (name, image) in [
        ("files", "evil-files:1"),
        ("etcdir", "evil-etc:1"),
        ("devdir", "evil-dev:1"),
        ("sysdir", "evil-sys:1"),
        ("volume", "evil-volume:1"),
    ] {
        assert!(
            !exercise(&env, &decoy, name, image).await,
            "{name}: started"
        );
    }
    // A symlink that stays inside the image is followed there: the space
    // starts and reads the runtime's file.
    import(&env, "inside:1", |r| {
        fs::create_dir_all(r.join("run")).expect("run");
        fs::write(r.join("run/resolv.conf"), "image resolv\n").expect("file");
        replace_with_symlink(r, "etc/resolv.conf", Path::new("../run/resolv.conf"));
    });
    assert!(
        exercise(&env, &decoy, "inside", "inside:1").await,
        "inside: refused"
    );
}
