//! Hostile paths in a space's files. Whatever an image ships or root in a
//! space plants (symlinks to host directories, a FIFO, a device or a huge
//! file as `/etc/passwd`), the daemon never creates or reads host files
//! through it, never hangs on it, and refuses it with an error that names
//! it; and what a space holds is out of reach of unprivileged host users.
//! Needs root; skipped otherwise.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command as HostCommand;
use std::time::Duration;

use clawdspace_runtime::{
    Command, CreateSpace, Error, ErrorKind, ExecOutput, ExecRequest, SpaceStatus,
};
use common::{wait_until, TestEnv};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A host directory the tests aim at: it must stay empty.
fn decoy(env: &TestEnv) -> PathBuf {
    let d = env.dir.join("decoy");
    fs::create_dir_all(&d).expect("decoy dir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).expect("chmod decoy");
    d
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read decoy")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// `../` enough times to leave any root, then `abs` (without its `/`).
fn climbing(abs: &Path) -> String {
    format!("{}{}", "../".repeat(12), abs.display())
}

/// Imports the busybox image with `edit` applied to its root as `tag`.
fn import(env: &TestEnv, tag: &str, edit: impl FnOnce(&Path)) {
    let root = env.dir.join(format!("rootfs-{}", tag.replace(':', "-")));
    common::busybox_rootfs(&root);
    edit(&root);
    env.rt()
        .images()
        .import_rootfs(tag, &root, Default::default())
        .expect("import image");
}

fn on(image: &str, name: &str) -> CreateSpace {
    CreateSpace {
        image: image.into(),
        ..common::request(name)
    }
}

/// Runs `sh -c cmd` as `user` in `name`, failing the test if it takes
/// more than 10 s (a lookup that hangs).
async fn sh_as(env: &TestEnv, name: &str, user: &str, cmd: &str) -> Result<ExecOutput, Error> {
    let mut req = ExecRequest::new(Command::Shell(cmd.into()));
    req.user = Some(user.into());
    tokio::time::timeout(Duration::from_secs(10), env.rt().exec(name, req))
        .await
        .unwrap_or_else(|_| panic!("exec as {user} in {name} hung"))
}

/// Runs `sh -c cmd` as root in `name` and asserts it succeeded.
async fn as_root(env: &TestEnv, name: &str, cmd: &str) {
    let o = sh_as(env, name, "root", cmd).await.expect("exec as root");
    assert_eq!(o.exit_code, 0, "{cmd}: {o:?}");
}

/// Kills the init of `name` (a process this test started) and waits until
/// the runtime has tried to start it again and given up.
async fn kill_init_until_stopped(env: &TestEnv, name: &str) {
    let s = env.rt().get(name).expect("space");
    kill(Pid::from_raw(s.init_pid.expect("pid")), Signal::SIGKILL).expect("kill init");
    let rt = env.rt().clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.get(name).is_ok_and(|n| n.status == SpaceStatus::Stopped)
        })
        .await,
        "the restart of {name} should fail, not run: {:?}",
        env.rt().get(name).map(|s| s.status)
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_image_whose_home_leads_to_the_host_creates_nothing_there() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let host = decoy(&env);
    for (tag, target) in [
        ("home-abs:latest", host.display().to_string()),
        ("home-rel:latest", climbing(&host)),
    ] {
        import(&env, tag, |root| {
            fs::remove_dir_all(root.join("home")).expect("rm home");
            std::os::unix::fs::symlink(&target, root.join("home")).expect("symlink home");
        });
        let name = tag.split(':').next().expect("name");
        let e = env
            .rt()
            .create(on(tag, name))
            .await
            .expect_err("a working directory through a dangling symlink");
        assert!(e.to_string().contains("/home/sandbox"), "names it: {e}");
        assert!(entries(&host).is_empty(), "{tag}: {:?}", entries(&host));
        assert!(matches!(env.rt().get(name), Err(Error::SpaceNotFound)));
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn root_in_a_space_cannot_make_a_restart_create_host_directories() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let host = decoy(&env);
    for (name, target) in [
        ("abs", host.display().to_string()),
        ("rel", climbing(&host)),
    ] {
        env.space(name).await;
        as_root(&env, name, &format!("rm -rf /home && ln -s {target} /home")).await;
        kill_init_until_stopped(&env, name).await;
        assert!(entries(&host).is_empty(), "{name}: {:?}", entries(&host));
        let e = env
            .rt()
            .start(name)
            .await
            .expect_err("start through the planted symlink");
        assert!(e.to_string().contains("/home/sandbox"), "names it: {e}");
        assert!(entries(&host).is_empty(), "{name}: {:?}", entries(&host));
    }
    // A symlink that stays inside the space is followed there.
    let s = env.space("inside").await;
    as_root(&env, "inside", "rm -rf /home && ln -s /tmp /home").await;
    kill(Pid::from_raw(s.init_pid.expect("pid")), Signal::SIGKILL).expect("kill init");
    let rt = env.rt().clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.get("inside")
                .is_ok_and(|n| n.status == SpaceStatus::Running && n.init_pid != s.init_pid)
        })
        .await,
        "started again"
    );
    assert_eq!(
        env.out("inside", "stat -c %u /tmp/sandbox; pwd -P").await,
        "1000\n/tmp/sandbox"
    );
}

/// Asserts that an exec as `user` is refused with a 400-class error whose
/// message contains `what`.
async fn refused_as(env: &TestEnv, name: &str, user: &str, what: &str) {
    match sh_as(env, name, user, "id -u").await {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
            assert!(e.to_string().contains(what), "{e} (wanted {what:?})");
        }
        Ok(o) => panic!("exec as {user} ran: {o:?}"),
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn exec_user_names_resolve_only_in_the_spaces_own_files() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let host_passwd = env.dir.join("host-passwd");
    fs::write(&host_passwd, "intruder:x:4242:4242::/:/bin/sh\n").expect("host passwd");
    let host_group = env.dir.join("host-group");
    fs::write(&host_group, "wheel:x:4343:me,intruder\n").expect("host group");
    env.space("p").await;

    for target in [host_passwd.display().to_string(), climbing(&host_passwd)] {
        as_root(&env, "p", &format!("ln -sf {target} /etc/passwd")).await;
        refused_as(&env, "p", "intruder", "unknown user 'intruder'").await;
    }
    as_root(&env, "p", "rm /etc/passwd && mkfifo /etc/passwd").await;
    refused_as(&env, "p", "intruder", "/etc/passwd: not a regular file").await;
    // A device (root with CAP_MKNOD could make one; here the host does).
    as_root(&env, "p", "rm /etc/passwd").await;
    let space = env.rt().get("p").expect("space");
    let dev = env.rt().rootfs_dir(&space).join("etc/passwd");
    let zero = nix::sys::stat::makedev(1, 5);
    nix::sys::stat::mknod(
        &dev,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        zero,
    )
    .expect("mknod /etc/passwd");
    refused_as(&env, "p", "intruder", "/etc/passwd: not a regular file").await;
    as_root(
        &env,
        "p",
        "rm /etc/passwd && yes x | head -c 1100000 > /etc/passwd && \
         echo 'big:x:1234:1234::/:/bin/sh' >> /etc/passwd",
    )
    .await;
    refused_as(
        &env,
        "p",
        "big",
        "/etc/passwd: larger than the 1048576-byte limit",
    )
    .await;

    // The space's own files work; a group file pointing at the host adds
    // no host groups.
    as_root(
        &env,
        "p",
        &format!(
            "echo 'me:x:1234:1234::/tmp:/bin/sh' > /etc/passwd && ln -sf {} /etc/group",
            host_group.display()
        ),
    )
    .await;
    let o = sh_as(&env, "p", "me", "id -u; id -G")
        .await
        .expect("exec as me");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1234\n1234\n");
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_images_passwd_is_read_inside_the_image_only() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    // Were it followed on the host, this would make the space's user root.
    let host_passwd = env.dir.join("host-root-passwd");
    fs::write(&host_passwd, "sandbox:x:0:0::/root:/bin/sh\n").expect("host passwd");
    import(&env, "passwd-link:latest", |root| {
        fs::remove_file(root.join("etc/passwd")).expect("rm passwd");
        std::os::unix::fs::symlink(&host_passwd, root.join("etc/passwd")).expect("symlink");
    });
    let s = env.create(on("passwd-link:latest", "link")).await;
    assert_eq!((s.user.uid, s.user.gid), (1000, 1000), "the default user");
    assert_eq!(env.out("link", "id -u").await, "1000");

    // A layer holding a FIFO (the tar unpacker makes regular files of
    // them today, so the stored layer gets one directly).
    import(&env, "passwd-fifo:latest", |_| {});
    let img = env.rt().images().get("passwd-fifo:latest").expect("image");
    let layer = env
        .rt()
        .images()
        .layer_dir(&img.expect("stored").layers[0])
        .expect("layer dir");
    fs::remove_file(layer.join("etc/passwd")).expect("rm passwd");
    nix::unistd::mkfifo(
        &layer.join("etc/passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        env.rt().create(on("passwd-fifo:latest", "fifo")),
    )
    .await
    .expect("create must not hang on a FIFO")
    .expect_err("an image whose /etc/passwd is a FIFO");
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(
        e.to_string().contains("/etc/passwd: not a regular file"),
        "{e}"
    );
    assert!(matches!(env.rt().get("fifo"), Err(Error::SpaceNotFound)));
}

/// Runs `path -u` (a set-uid copy of `id`) as `nobody`; its stdout when it
/// ran, None when it could not be executed. Through a shell: setpriv itself
/// keeps root's capabilities up to its own execve, so the path must be
/// looked up by a process that really is nobody.
fn id_as_nobody(path: &Path) -> Option<String> {
    let o = HostCommand::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$0\" -u"])
        .arg(path)
        .output()
        .expect("run setpriv");
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The per-mount options of the mount at `target`.
fn mount_options(target: &Path) -> String {
    let line = common::mountinfo_line(target);
    line.split(' ').nth(5).unwrap_or_default().to_string()
}

#[tokio::test]
#[ignore = "needs root"]
async fn set_uid_files_and_devices_of_a_space_are_out_of_the_hosts_reach() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let state = env.rt().state_dir().to_path_buf();
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&state), 0o700, "state dir");
    let s = env.space("suid").await;
    let (rootfs, upper) = (env.rt().rootfs_dir(&s), env.rt().upper_dir(&s));
    let opts = mount_options(&rootfs);
    assert!(
        opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
        "{opts}"
    );

    // A set-uid-root binary and a device node in the space's files, as an
    // image or root with Docker's capabilities could leave them.
    let suid = rootfs.join("suid-id");
    fs::copy("/usr/bin/id", &suid).expect("copy id");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).expect("chmod u+s");
    assert_eq!(mode(&upper.join("suid-id")), 0o4755, "in the upper dir");
    nix::sys::stat::mknod(
        &rootfs.join("zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .expect("mknod");
    // nodev: even root cannot open a device through the space's mount.
    let e = fs::File::open(rootfs.join("zero")).expect_err("a device on a nodev mount");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");

    // The state dir keeps every other host user out.
    for p in [upper.join("suid-id"), suid.clone()] {
        assert_eq!(id_as_nobody(&p), None, "{} ran as nobody", p.display());
    }
    // Even opened up (an older install's 0755), the mount is nosuid...
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    assert_eq!(id_as_nobody(&suid).as_deref(), Some("65534"));
    // ...while the same file in the upper dir would run as root where the
    // host filesystem honours set-uid bits: why the state dir is 0700.
    let host_suid = !nix::sys::statvfs::statvfs(&upper)
        .expect("statvfs")
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_NOSUID);
    if host_suid {
        assert_eq!(id_as_nobody(&upper.join("suid-id")).as_deref(), Some("0"));
    }
    // The next start makes it 0700 again, and the mount of a running space
    // nosuid,nodev again (upgrades fix older installs).
    env.close().await;
    nix::mount::mount(
        None::<&str>,
        &rootfs,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("remount as an older daemon mounted it");
    assert!(!mount_options(&rootfs).contains("nosuid"));
    env.rt = Some(env.open().await);
    assert_eq!(mode(&state), 0o700, "state dir after a restart");
    assert_eq!(id_as_nobody(&suid), None);
    let opts = mount_options(&rootfs);
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{opts}");

    // Inside, the space works as before: whiteouts on the nodev mount.
    as_root(&env, "suid", "rm /etc/group && test ! -e /etc/group").await;
    let wh = fs::symlink_metadata(upper.join("etc/group")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    assert_eq!(
        env.out("suid", "ls /etc/group 2>&1 || echo gone")
            .await
            .lines()
            .last(),
        Some("gone")
    );
}
