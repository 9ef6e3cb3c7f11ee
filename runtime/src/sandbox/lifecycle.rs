//! Create, exec, pause, resume and destroy of a space (libcontainer's state
//! files record it; the starts are [`super::boot`] and [`super::join`]).
//! Worker-only.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;

use super::proc;
use super::rootfs;
use crate::cgroups::{CgroupMode, CgroupPaths};
use crate::proto::SandboxError;
use crate::proto::{CreateRequest, DestroyRequest, ExecRequest, TtyRequest};

type Res<T> = Result<T, SandboxError>;

fn lc<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SandboxError + '_ {
    move |e| SandboxError::Runtime(format!("{what}: {e}"))
}

/// Removes whatever libcontainer left for `id` (after a crash or reboot).
fn remove_stale(state_root: &Path, id: &str) {
    let dir = state_root.join(id);
    if !dir.exists() {
        return;
    }
    if let Ok(mut c) = Container::load(dir.clone()) {
        let _ = c.delete(true);
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Creates `dir` inside the mounted rootfs if missing, owned by uid:gid.
/// Resolved inside the rootfs (`RESOLVE_IN_ROOT`): a symlink the image or
/// the space planted (`home -> /etc`) never reaches a host directory.
fn ensure_workdir(rootfs: &Path, dir: &str, uid: u32, gid: u32) -> Res<()> {
    use crate::inroot::{Resolve, Root};
    if dir.trim_start_matches('/').is_empty() || dir.split('/').any(|s| s == "..") {
        return Ok(());
    }
    let root = Root::open(rootfs).map_err(lc("open the space's root"))?;
    root.create_dir_all(Path::new(dir), 0o755, Some((uid, gid)), Resolve::InRoot)
        .map(drop)
        .map_err(|e| {
            SandboxError::image_io(&format!("create working directory {dir} in the space"), e)
        })
}

/// Mounts the rootfs and starts the init; returns its pid and start time.
/// On failure nothing of this attempt is left (mount, container state).
pub fn create(req: &CreateRequest) -> Res<(i32, u64)> {
    let mut t = crate::timing::Phases::new("worker create");
    remove_stale(&req.state_root, &req.id);
    t.mark("stale");
    let mounted = if rootfs::is_mounted(&req.rootfs.target) {
        rootfs::harden(&req.rootfs.target)?;
        false
    } else {
        rootfs::mount_overlay(&req.rootfs)?;
        true
    };
    t.mark("mount");
    // Read once: what the init is, its cgroup, what a failure is told as.
    let spec = Spec::load(req.bundle.join("config.json")).ok();
    let exhausted = spec
        .as_ref()
        .and_then(spec_cgroup)
        .map(|(cg, _)| cg.memory_exhaustions());
    t.mark("oom-count");
    start_init(req, spec.as_ref(), &mut t).map_err(|e| {
        let e = match e {
            SandboxError::Runtime(_) => spec
                .as_ref()
                .and_then(|spec| {
                    blocked_mount(req, spec).or_else(|| out_of_memory(spec, exhausted))
                })
                .unwrap_or(e),
            e => e,
        };
        remove_stale(&req.state_root, &req.id);
        let undo = if mounted {
            rootfs::unmount(&req.rootfs.target)
        } else {
            Ok(())
        };
        e.rolled_back(undo)
    })
}

/// The cgroup a create's spec puts the space in.
fn spec_cgroup(spec: &Spec) -> Option<(CgroupPaths, Option<i64>)> {
    let linux = spec.linux().as_ref()?;
    let path = linux.cgroups_path().as_ref()?;
    let limit = linux
        .resources()
        .as_ref()
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit());
    Some((
        CgroupPaths::new(CgroupMode::detect(), &path.to_string_lossy()),
        limit,
    ))
}

/// Whether memory ran out since `before` (see
/// [`CgroupPaths::memory_exhaustions`]) in the space's cgroup or above it:
/// why a create failed (a limit too small for the init to start), told as
/// the request's problem.
fn out_of_memory(spec: &Spec, before: Option<u64>) -> Option<SandboxError> {
    let (cgroup, limit) = spec_cgroup(spec)?;
    if cgroup.memory_exhaustions() <= before? {
        return None;
    }
    Some(SandboxError::OutOfMemory(match limit.filter(|l| *l > 0) {
        Some(l) => format!(
            "the space ran out of memory while starting: raise its memory limit ({} MiB) or that of the cgroup it is created in",
            l >> 20
        ),
        None => "the space ran out of memory while starting".into(),
    }))
}

/// A file of the image where the space mounts a file system (say `/dev` a
/// regular file): why a create failed, told as the image's problem.
fn blocked_mount(req: &CreateRequest, spec: &Spec) -> Option<SandboxError> {
    use crate::inroot::{Resolve, Root};
    let root = Root::open(&req.rootfs.target).ok()?;
    spec.mounts()
        .as_ref()?
        .iter()
        .find_map(|m| {
            let file_bind = m.typ().as_deref() == Some("bind")
                && m.source().as_ref().is_some_and(|s| !s.is_dir());
            if file_bind {
                return None;
            }
            match root.dir(m.destination(), Resolve::InRoot) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    Some(SandboxError::Image(format!(
                    "{} is not a directory in the image, but a space mounts a file system there",
                    m.destination().display()
                )))
                }
                _ => None,
            }
        })
        .or_else(|| dangling_destination(&root, spec.mounts().as_ref()?))
}

/// A mount destination that passes through a symlink leading nowhere inside
/// the image (say `/etc/resolv.conf -> /run/systemd/…`, or to a host path):
/// the space's mounts are made inside its own root only, so such an image
/// cannot be started; say which link is at fault.
fn dangling_destination(
    root: &crate::inroot::Root,
    mounts: &[libcontainer::oci_spec::runtime::Mount],
) -> Option<SandboxError> {
    use crate::inroot::Resolve;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    mounts.iter().find_map(|m| {
        let dest = m.destination();
        let parent = dest.parent().unwrap_or(Path::new("/"));
        // The destination itself may be missing (it is created), but what
        // leads to it must resolve; a symlink as the last part must too.
        let (link, target) = root.first_symlink(dest).ok()??;
        let resolves = |p: &Path| {
            root.open_at(p, OFlag::O_PATH, Mode::empty(), Resolve::InRoot)
                .is_ok()
        };
        if resolves(&link) && resolves(parent) {
            return None;
        }
        Some(SandboxError::Image(format!(
            "{} is mounted by the space, but /{} in the image is a symlink to {} that does not \
             exist inside the image",
            dest.display(),
            link.display(),
            target.display()
        )))
    })
}

fn start_init(
    req: &CreateRequest,
    spec: Option<&Spec>,
    t: &mut crate::timing::Phases,
) -> Res<(i32, u64)> {
    let spec = spec.ok_or("the space's spec (config.json) is unreadable")?;
    ensure_workdir(&req.rootfs.target, &req.workdir, req.uid, req.gid)?;
    t.mark("workdir");
    let pid = super::boot::start(req, spec, seccomp_filter(&req.bundle)?, t)?;
    let saved = proc::start_time(pid)
        .ok_or_else(|| SandboxError::from("space init exited right after start"))
        .and_then(|start| save_state(req, spec, pid).map(|()| start));
    match saved {
        Ok(start) => {
            t.mark("state");
            Ok((pid, start))
        }
        Err(e) => {
            // The init is this worker's child: end it, and its cgroup.
            super::join::end_child(pid);
            if let Ok(path) = super::cgroup::spec_path(spec) {
                let _ = remove_cgroup(Path::new(&path));
            }
            Err(e)
        }
    }
}

/// Writes libcontainer's state files of a started space (its status,
/// init pid and cgroup), which pause, resume and destroy load.
fn save_state(req: &CreateRequest, spec: &Spec, pid: i32) -> Res<()> {
    use libcontainer::config::YoukiConfig;
    use libcontainer::container::{ContainerStatus, State};
    let dir = req.state_root.join(&req.id);
    fs::create_dir_all(&dir).map_err(lc("create container state"))?;
    YoukiConfig::from_spec(spec, &req.id)
        .map_err(lc("container config"))?
        .save(&dir)
        .map_err(lc("save container config"))?;
    let mut state = State::new(
        &req.id,
        ContainerStatus::Running,
        Some(pid),
        req.bundle.clone(),
    );
    state.created = Some(chrono::Utc::now());
    state.creator = Some(0);
    state.save(&dir).map_err(lc("save container state"))
}

/// The space's seccomp filter from its bundle. A space without one runs
/// nothing.
pub(super) fn seccomp_filter(bundle: &Path) -> Res<Vec<u8>> {
    fs::read(bundle.join(crate::seccomp::FILTER_FILE))
        .map_err(lc("read the space's seccomp filter"))
}

/// Starts a process on a new PTY in a running space; its master goes to
/// the request's console socket. Returns the pid.
pub fn exec_tty(req: &ExecRequest, tty: &TtyRequest) -> Res<i32> {
    let console = connect_console(&tty.console_socket)?;
    start(req, super::join::Stdio::Tty(console))
}

/// Starts a process in a running space with the given stdio; returns its pid.
pub fn exec(req: &ExecRequest, stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> Res<i32> {
    start(req, super::join::Stdio::Piped([stdin, stdout, stderr]))
}

fn start(req: &ExecRequest, stdio: super::join::Stdio) -> Res<i32> {
    let mut t = crate::timing::Phases::new("worker exec");
    let process = crate::spec::exec_process(req).map_err(|e| e.to_string())?;
    let filter = seccomp_filter(&req.bundle)?;
    t.mark("process");
    super::join::spawn(req, &process, filter, stdio, &mut t).map_err(|e| exec_failed(req, e))
}

/// Connects to the daemon's console socket, through its directory's
/// descriptor: a socket path may be longer than a unix address holds.
fn connect_console(path: &Path) -> Res<OwnedFd> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("bad console socket {}", path.display()).into());
    };
    let dir = File::open(dir).map_err(lc("open the console socket's directory"))?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let sock = std::os::unix::net::UnixStream::connect(&short)
        .map_err(lc("connect to the console socket"))?;
    Ok(sock.into())
}

/// Why an exec failed: its working directory is not a directory inside the
/// space (it may have gone since the daemon checked it), or what went wrong.
fn exec_failed(req: &ExecRequest, e: SandboxError) -> SandboxError {
    let SandboxError::Runtime(msg) = e else {
        return e;
    };
    let root = match crate::inroot::Root::open(&req.bundle.join("rootfs")) {
        Ok(r) => r,
        Err(re) => return format!("exec: {msg} (the space's root: {re})").into(),
    };
    match root.dir(Path::new(&req.cwd), crate::inroot::Resolve::InRoot) {
        Err(de) if matches!(de.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            SandboxError::working_dir(&req.cwd, &de)
        }
        _ => format!("exec: {msg}").into(),
    }
}

fn load(state_root: &Path, id: &str) -> Res<Container> {
    Container::load(state_root.join(id)).map_err(lc("load container"))
}

/// The directories of the cgroup at absolute cgroup path `cg` on this host.
fn cgroup_paths(cg: &Path) -> CgroupPaths {
    CgroupPaths::new(CgroupMode::detect(), &cg.to_string_lossy())
}

/// The freezer directory of a container's cgroup on this host.
fn freezer_dir(c: &Container) -> Res<PathBuf> {
    let cg = c.spec().map_err(lc("container config"))?.cgroup_path;
    Ok(cgroup_paths(&cg).dir("freezer"))
}

/// Freezes the space. The freezer files are driven directly rather than
/// through libcontainer's `pause`: libcgroups 0.7 builds a cgroup manager
/// that re-reads the host's mount table once per controller (slow with many
/// spaces mounted) and on v2 sleeps a fixed 10 ms after writing
/// `cgroup.freeze`, while freezing takes well under a millisecond.
pub fn pause(state_root: &Path, id: &str) -> Res<()> {
    let mut t = crate::timing::Phases::new("worker pause");
    let mut c = load(state_root, id)?;
    t.mark("load");
    c.refresh_status().map_err(lc("container status"))?;
    t.mark("refresh");
    // Asked again after a worker died having done it: done.
    if c.status() == libcontainer::container::ContainerStatus::Paused {
        return Ok(());
    }
    if !c.can_pause() {
        return Err(SandboxError::State(format!(
            "cannot pause a space whose container is {:?}",
            c.status()
        )));
    }
    let dir = freezer_dir(&c)?;
    t.mark("config");
    if CgroupMode::detect() == CgroupMode::Unified {
        freeze(&dir, "cgroup.freeze", "1", "0", |d| {
            let events = fs::read_to_string(d.join("cgroup.events"))?;
            Ok(events.lines().any(|l| l.trim() == "frozen 1"))
        })?;
    } else {
        freeze(&dir, "freezer.state", "FROZEN", "THAWED", |d| {
            Ok(fs::read_to_string(d.join("freezer.state"))?.trim() == "FROZEN")
        })?;
    }
    t.mark("freeze");
    c.set_status(libcontainer::container::ContainerStatus::Paused)
        .save()
        .map_err(lc("save container state"))
}

/// Writes `on` to `file` until `frozen` says so (v1 may need the write
/// repeated while FREEZING); thaws again and fails after 5 s.
fn freeze(
    dir: &Path,
    file: &str,
    on: &str,
    off: &str,
    frozen: impl Fn(&Path) -> std::io::Result<bool>,
) -> Res<()> {
    let start = std::time::Instant::now();
    let mut wait = Duration::from_micros(20);
    loop {
        fs::write(dir.join(file), on).map_err(lc("write the freezer"))?;
        if frozen(dir).map_err(lc("read the freezer"))? {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = fs::write(dir.join(file), off);
            return Err("the space did not freeze within 5 s".into());
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(2));
    }
}

/// Thaws the space (see [`pause`] for why the freezer is written directly).
pub fn resume(state_root: &Path, id: &str) -> Res<()> {
    let mut c = load(state_root, id)?;
    c.refresh_status().map_err(lc("container status"))?;
    // Asked again after a worker died having done it: done.
    if c.status() == libcontainer::container::ContainerStatus::Running {
        return Ok(());
    }
    if !c.can_resume() {
        return Err(SandboxError::State(format!(
            "cannot resume a space whose container is {:?}",
            c.status()
        )));
    }
    let dir = freezer_dir(&c)?;
    let (file, off) = if CgroupMode::detect() == CgroupMode::Unified {
        ("cgroup.freeze", "0")
    } else {
        ("freezer.state", "THAWED")
    };
    fs::write(dir.join(file), off).map_err(lc("write the freezer"))?;
    c.set_status(libcontainer::container::ContainerStatus::Running)
        .save()
        .map_err(lc("save container state"))
}

/// Thaws the cgroup at absolute cgroup path `cg` and SIGKILLs every process
/// in it, directly through the cgroup files (v1 and v2).
pub(super) fn thaw_and_kill(cg: &Path) {
    let paths = cgroup_paths(cg);
    for ctrl in ["freezer", "pids"] {
        crate::purge::thaw_and_kill(&paths.dir(ctrl));
    }
}

/// Kills every process of the space, removes its container state and
/// cgroup (unless asked to keep it), and unmounts its rootfs. Idempotent.
/// `reap` is called while it waits for the init to die: the caller reaps
/// its own children that exited there (an exec it started in the space
/// keeps the space's init from dying until it is reaped).
///
/// libcontainer's `kill(all)` and `delete` are not used: each builds a
/// libcgroups v1 manager, which re-reads the host's mount table once per
/// controller, so a destroy grew with the number of spaces mounted. The
/// cgroup files are driven directly instead, as for [`pause`]; the spaces
/// have no poststop hooks for `delete` to run.
pub fn destroy(req: &DestroyRequest, reap: &mut dyn FnMut()) -> Res<()> {
    let mut t = crate::timing::Phases::new("worker destroy");
    let dir = req.state_root.join(&req.id);
    if dir.exists() {
        match Container::load(dir.clone()) {
            Ok(c) => {
                t.mark("load");
                let init = c.pid().map(|p| p.as_raw());
                let pidfd = init.and_then(|p| proc::pidfd_open(p).ok());
                let cgroup = c.spec().ok().map(|cfg| cfg.cgroup_path);
                // A frozen cgroup cannot die: thaw it (whatever libcontainer's
                // state file believes), then kill everything in it.
                if let Some(cg) = &cgroup {
                    thaw_and_kill(cg);
                }
                t.mark("kill");
                if let Some(fd) = &pidfd {
                    proc::pidfd_kill(fd);
                    let mut died = false;
                    for _ in 0..100 {
                        reap();
                        if proc::wait_pidfd(fd, 50) {
                            died = true;
                            break;
                        }
                        if let Some(cg) = &cgroup {
                            thaw_and_kill(cg);
                        }
                    }
                    if !died {
                        return Err("space init did not die within 5 s of SIGKILL".into());
                    }
                }
                t.mark("wait");
                if let (Some(cg), false) = (&cgroup, req.keep_cgroup) {
                    remove_cgroup(cg)?;
                }
                t.mark("rmdir");
            }
            Err(e) => tracing::warn!("container state of {} unreadable: {e}", req.id),
        }
        fs::remove_dir_all(&dir).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(SandboxError::Runtime(format!(
                    "remove container state: {e}"
                )))
            }
        })?;
    }
    t.mark("state");
    match (&req.cgroup, req.keep_cgroup) {
        (Some(cg), false) => remove_cgroup(cg)?,
        (Some(cg), true) => thaw_and_kill(cg),
        (None, _) => {}
    }
    rootfs::unmount(&req.rootfs)?;
    t.mark("umount");
    Ok(())
}

/// Kills whatever is left in the cgroup at absolute cgroup path `cg` and
/// removes its directories, memory uncharged first
/// ([`crate::purge::remove_cgroup_dir`]): what a create cut off before
/// libcontainer saved its state leaves behind (no state, so `delete` never
/// saw it).
pub(super) fn remove_cgroup(cg: &Path) -> Res<()> {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    for dir in cgroup_paths(cg).all_dirs() {
        loop {
            match crate::purge::remove_cgroup_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < end =>
                {
                    thaw_and_kill(cg);
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("remove cgroup {}: {e}", dir.display()).into()),
            }
        }
    }
    Ok(())
}
