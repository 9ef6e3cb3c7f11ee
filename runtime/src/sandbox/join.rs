//! Starting a process in a running space (an exec), without libcontainer's
//! tenant builder.
//!
//! The tenant builder forks twice, builds a v1 cgroup manager that reads
//! the mount table once per controller, and moves its intermediate process
//! with a `cgroup.procs` write. That write takes the kernel's global
//! threadgroup lock for writing, which waits for an RCU grace period: about
//! 5 ms on every exec here, as long as the rest of the exec together (crun
//! pays it too). This module starts the process with one `clone3` instead:
//!
//! - cgroup v2: the child is born in the space's cgroup (`CLONE_INTO_CGROUP`);
//! - cgroup v1: the child writes `0` to each hierarchy's `tasks` file, which
//!   moves only the writing thread and takes no global lock;
//! - the PID namespace is the space's from birth: the worker sets its own
//!   `pid_for_children` to the space's init's for the `clone3`, then back;
//! - the child joins the init's other namespaces in one `setns` on a pidfd,
//!   changes directory, drops to the exec's user, groups and capabilities,
//!   takes its stdio (or a new terminal from the space's devpts), loads the
//!   space's seccomp filter and runs the program.
//!
//! What the process is (argv, environment, user, capabilities, terminal)
//! is the OCI process of [`crate::spec::exec_process`], as before.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use libcontainer::capabilities::CapabilityExt;
use libcontainer::oci_spec::runtime::{Capabilities, Process};

use super::proc;
use crate::cgroups::{CgroupMode, CgroupPaths};
use crate::proto::{ExecRequest, SandboxError};
use crate::timing::{ChildSteps, Phases};

type Res<T> = Result<T, SandboxError>;

/// How long the worker waits for a new process to reach its program.
const START_TIMEOUT_MS: u16 = 10_000;

/// Where a new process's stdio comes from.
pub(crate) enum Stdio {
    /// These three descriptors become 0, 1 and 2.
    Piped([OwnedFd; 3]),
    /// A new terminal from the space's devpts: its master goes to this
    /// connected console socket, its slave becomes 0, 1 and 2.
    Tty(OwnedFd),
}

/// The cgroup hierarchy of a `/proc/<pid>/cgroup` line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// The cgroup2 hierarchy (`0::/path`).
    V2,
    /// A v1 hierarchy and its controllers as the kernel lists them
    /// (`cpu,cpuacct`, `name=systemd`).
    V1(String),
}

/// The cgroups of `theirs` (a `/proc/<pid>/cgroup` text) that differ from
/// `ours`: where a process must move to be where `theirs` is. A path that
/// is not absolute or climbs (`..`, shown for cgroups outside the reader's
/// cgroup namespace) is refused.
fn cgroups_to_join(theirs: &str, ours: &str) -> Result<Vec<(Hierarchy, String)>, String> {
    fn parse(text: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
        text.lines().filter(|l| !l.is_empty()).map(|l| {
            let (_id, rest) = l.split_once(':')?;
            rest.split_once(':')
        })
    }
    let mine: HashMap<&str, &str> = parse(ours).flatten().collect();
    let mut out = Vec::new();
    for entry in parse(theirs) {
        let (ctrls, path) = entry.ok_or("unreadable cgroup membership of the space's init")?;
        if mine.get(ctrls) == Some(&path) {
            continue;
        }
        let plain = path == "/"
            || path.strip_prefix('/').is_some_and(|rest| {
                rest.split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..")
            });
        if !plain {
            return Err(format!(
                "the space's init is in cgroup {path:?}, outside this host's view"
            ));
        }
        let h = if ctrls.is_empty() {
            Hierarchy::V2
        } else {
            Hierarchy::V1(ctrls.to_string())
        };
        out.push((h, path.to_string()));
    }
    Ok(out)
}

/// The directory of group `path` in v1 hierarchy `ctrls` (`cpu,cpuacct`,
/// `name=systemd`): under the hierarchy's name, or one of its controllers'.
fn v1_dir(ctrls: &str, path: &str) -> Option<PathBuf> {
    let group = CgroupPaths::new(CgroupMode::detect(), path);
    std::iter::once(ctrls)
        .chain(ctrls.split(','))
        .map(|n| group.dir(n.strip_prefix("name=").unwrap_or(n)))
        .find(|d| d.is_dir())
}

/// How the new process gets into the space's cgroups.
pub(super) struct CgroupJoin {
    /// v1 `tasks` files, each written `0` by the child.
    pub tasks: Vec<(OwnedFd, String)>,
    /// The cgroup2 directory the child is born in.
    pub v2: Option<OwnedFd>,
}

fn cgroup_join(init_pid: i32) -> Res<CgroupJoin> {
    let read = |p: String| fs::read_to_string(&p).map_err(|e| format!("read {p}: {e}"));
    let theirs = read(format!("/proc/{init_pid}/cgroup"))?;
    let ours = read("/proc/self/cgroup".into())?;
    let mut join = CgroupJoin {
        tasks: Vec::new(),
        v2: None,
    };
    for (h, path) in cgroups_to_join(&theirs, &ours)? {
        match h {
            Hierarchy::V2 => {
                // The cgroup2 hierarchy: /sys/fs/cgroup, or its `unified`
                // directory on a hybrid host.
                let dir = CgroupPaths::new(CgroupMode::detect(), &path).dir("unified");
                let fd = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(&dir)
                    .map_err(|e| format!("open cgroup {}: {e}", dir.display()))?;
                join.v2 = Some(fd.into());
            }
            Hierarchy::V1(ctrls) => {
                let file = v1_dir(&ctrls, &path)
                    .ok_or_else(|| format!("no directory of cgroup {path} of hierarchy {ctrls}"))?
                    .join("tasks");
                let fd = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&file)
                    .map_err(|e| format!("open {}: {e}", file.display()))?;
                join.tasks.push((fd.into(), file.display().to_string()));
            }
        }
    }
    Ok(join)
}

/// A capability set as a bit mask.
fn mask(set: &Option<Capabilities>) -> u64 {
    set.iter()
        .flatten()
        .map(|c| c.to_cap().index())
        .filter(|i| *i < 64)
        .fold(0, |m, i| m | (1u64 << i))
}

/// Everything the child needs, made before the `clone3` (the child only
/// makes system calls and formats errors).
struct Plan {
    init: OwnedFd,
    cgroups: CgroupJoin,
    process: ProcessPlan,
}

/// What a new process of a space becomes, from its OCI process: made
/// before the `clone3`, applied by [`become_process`].
pub(super) struct ProcessPlan {
    argv: Vec<String>,
    env: Vec<CString>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    bounding: u64,
    held: u64,
    last_cap: u32,
    size: Option<(u16, u16)>,
    filter: Vec<u8>,
}

fn cstring(s: &str, what: &str) -> Res<CString> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte").into())
}

fn plan(req: &ExecRequest, process: &Process, filter: Vec<u8>) -> Res<Plan> {
    let (pid, start) = (req.init_pid, req.init_start_time);
    let gone = || {
        SandboxError::State(
            "the space's init is gone (the space is stopping or restarting); try again".into(),
        )
    };
    let init = proc::pidfd_open(pid).map_err(|_| gone())?;
    let cgroups = cgroup_join(pid)?;
    // The pidfd and what was read are the init's only if it still is the
    // process that started then (a pid can be reused).
    if !proc::is_same_process(pid, start) {
        return Err(gone());
    }
    Ok(Plan {
        init,
        cgroups,
        process: process_plan(process, filter)?,
    })
}

/// The plan of `process` (its argv, environment, working directory, user,
/// groups, capabilities, terminal size) under seccomp `filter`.
pub(super) fn process_plan(process: &Process, filter: Vec<u8>) -> Res<ProcessPlan> {
    let env = process
        .env()
        .iter()
        .flatten()
        .map(|e| cstring(e, "the environment"))
        .collect::<Res<_>>()?;
    let caps = process.capabilities().as_ref();
    static LAST_CAP: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let last_cap = *LAST_CAP.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63)
    });
    Ok(ProcessPlan {
        argv: process.args().clone().unwrap_or_default(),
        env,
        cwd: CString::new(process.cwd().as_os_str().as_bytes())
            .map_err(|_| "the working directory contains a NUL byte".to_string())?,
        uid: process.user().uid(),
        gid: process.user().gid(),
        groups: process.user().additional_gids().clone().unwrap_or_default(),
        bounding: caps.map_or(0, |c| mask(c.bounding())),
        held: caps.map_or(0, |c| mask(c.effective()) & mask(c.permitted())),
        last_cap,
        size: process
            .console_size()
            .map(|s| (dim(s.width()), dim(s.height()))),
        filter,
    })
}

fn dim(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// `clone3`'s argument (linux/sched.h, version 2: with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

thread_local! {
    /// This worker's own PID namespace, to return to after a `clone3`.
    static OWN_PID_NS: Option<OwnedFd> = File::open("/proc/self/ns/pid").ok().map(OwnedFd::from);
}

/// Starts `process` (the OCI process of `req`) in the space of `req` with
/// `stdio` and the space's seccomp `filter`; returns its pid once it runs
/// its program (or failed to find it: exit code 127, as a shell).
pub(crate) fn spawn(
    req: &ExecRequest,
    process: &Process,
    filter: Vec<u8>,
    stdio: Stdio,
    t: &mut Phases,
) -> Res<i32> {
    let plan = plan(req, process, filter)?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    t.mark("plan");
    let steps = ChildSteps::begin();
    let pid = clone_in_space(&plan, |_| {
        steps.forked();
        let Err(e) = child(&plan, &stdio, &steps);
        // SAFETY: a write of a valid buffer, then the end of this child.
        unsafe {
            libc::write(err_w.as_raw_fd(), e.as_ptr().cast(), e.len());
            libc::_exit(1)
        }
    })?;
    drop(err_w);
    drop(stdio);
    drop(plan);
    t.mark("clone");
    let pid = wait_started(pid, err_r)?;
    steps.report(t, EXEC_STEPS.into_iter().chain(BECOME_STEPS));
    Ok(pid)
}

/// The steps of an exec's child that [`ChildSteps`] times, in order.
const EXEC_STEPS: [&str; 3] = ["cloexec", "cgroups", "setns"];

/// The steps of [`become_process`] that [`ChildSteps`] times, in order.
pub(super) const BECOME_STEPS: [&str; 5] = ["chdir", "privs", "stdio", "env", "seccomp"];

/// Clones this (single-threaded) worker into the space's PID namespace
/// and, on cgroup v2, into its cgroup; the child runs `child`.
fn clone_in_space(plan: &Plan, child: impl FnOnce(()) -> Infallible) -> Res<i32> {
    OWN_PID_NS.with(|own| -> Res<i32> {
        let own = own
            .as_ref()
            .ok_or("cannot open the worker's own PID namespace")?;
        // No process of the space may read this worker's memory or
        // `/proc/<pid>/exe` through the child before it runs its program.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        setns(&plan.init, libc::CLONE_NEWPID)
            .map_err(|e| format!("enter the space's PID namespace: {e}"))?;
        let r = clone3(0, plan.cgroups.v2.as_ref(), child);
        if let Err(e) = setns(own, libc::CLONE_NEWPID) {
            // Later forks would start in the space: this worker must go.
            tracing::error!("worker cannot return to its PID namespace: {e}");
            std::process::exit(1);
        }
        r.map_err(|err| match err.raw_os_error() {
            Some(libc::EAGAIN) => {
                SandboxError::State("the space has reached its process limit".into())
            }
            _ => format!("clone3: {err}").into(),
        })
    })
}

/// Forks this (single-threaded) worker with `clone3` and `flags` (new
/// namespaces), into the cgroup2 directory `cgroup` when given; the child
/// runs `child`. Returns the child's pid.
pub(super) fn clone3(
    flags: u64,
    cgroup: Option<&OwnedFd>,
    child: impl FnOnce(()) -> Infallible,
) -> std::io::Result<i32> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without a stack or CLONE_VM is a fork; this worker
    // has one thread, so the child may allocate.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r == 0 {
        // The child: `child` never returns (rustc calls the uninhabited
        // call itself unreachable).
        #[allow(unreachable_code)]
        match child(()) {}
    }
    Ok(r as i32)
}

pub(super) fn setns(fd: &OwnedFd, flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setns on a descriptor we own.
    if unsafe { libc::setns(fd.as_raw_fd(), flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the child to run its program (the close-on-exec error pipe
/// closes without a word) or report why it could not; a child that hangs
/// is killed.
pub(super) fn wait_started(pid: i32, err_r: OwnedFd) -> Res<i32> {
    if !readable(&err_r, START_TIMEOUT_MS) {
        end_child(pid);
        return Err(format!(
            "the new process did not start within {} s",
            START_TIMEOUT_MS / 1000
        )
        .into());
    }
    let mut msg = Vec::new();
    let mut buf = [0u8; 1024];
    while msg.len() < 4096 {
        match nix::unistd::read(err_r.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => msg.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if msg.is_empty() {
        return Ok(pid);
    }
    // It exits after telling why; the kill is for one that would not.
    end_child(pid);
    Err(String::from_utf8_lossy(&msg).into_owned().into())
}

/// Kills this worker's child `pid` and reaps it.
pub(super) fn end_child(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Whether `fd` becomes readable (or closed) within `ms` milliseconds.
pub(super) fn readable(fd: &OwnedFd, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(ms)) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return matches!(r, Ok(n) if n > 0),
        }
    }
}

pub(super) fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Checks a raw system call's result.
pub(super) fn ok(r: libc::c_long, what: &str) -> Result<(), String> {
    if r < 0 {
        return Err(errno(what));
    }
    Ok(())
}

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// The child, in the space's PID namespace: everything up to `execve`.
/// Returns only with why it failed.
fn child(plan: &Plan, stdio: &Stdio, steps: &ChildSteps) -> Result<Infallible, String> {
    close_on_exec()?;
    steps.mark();
    join_v1(&plan.cgroups)?;
    steps.mark();
    let nss = libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    setns(&plan.init, nss).map_err(|e| format!("enter the space's namespaces: {e}"))?;
    steps.mark();
    become_process(&plan.process, stdio, steps)
}

/// The rest of a new process of a space, in its namespaces and cgroups:
/// its working directory, user, groups and capabilities, stdio, signals
/// and environment, `no_new_privs` and the space's seccomp filter, then
/// its program. Returns only with why it failed.
/// Its steps are marked in `steps` ([`BECOME_STEPS`]).
pub(super) fn become_process(
    plan: &ProcessPlan,
    stdio: &Stdio,
    steps: &ChildSteps,
) -> Result<Infallible, String> {
    // As root, before the user changes (as libcontainer and runc do).
    ok(
        // SAFETY: chdir with a valid C string.
        unsafe { libc::chdir(plan.cwd.as_ptr()) } as libc::c_long,
        "chdir",
    )?;
    steps.mark();
    drop_privileges(plan)?;
    steps.mark();
    match stdio {
        Stdio::Piped(fds) => {
            // SAFETY: setsid has no arguments; a new session makes the
            // process its group's leader (a timeout kills the group).
            unsafe { libc::setsid() };
            // Above 2 first: one of them may be 0, 1 or 2 already.
            let mut high = [0; 3];
            for (h, fd) in high.iter_mut().zip(fds) {
                // SAFETY: fcntl on a descriptor we own.
                *h = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
                ok(*h as libc::c_long, "dup stdio")?;
            }
            connect_stdio(&high)?;
        }
        Stdio::Tty(console) => {
            let slave = new_terminal(console.as_raw_fd(), plan.size)?;
            connect_stdio(&[slave; 3])?;
        }
    }
    steps.mark();
    // SAFETY: umask and sigprocmask/signal with valid arguments.
    unsafe {
        libc::umask(0o022);
        // The worker's ignored signals (SIGPIPE) would stay ignored in
        // the program; its blocked ones blocked.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        default_signals();
        libc::clearenv();
        for e in &plan.env {
            // putenv keeps the pointer: `plan` outlives the exec.
            libc::putenv(e.as_ptr().cast_mut());
        }
        ok(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long,
            "no_new_privs",
        )?;
    }
    steps.mark();
    crate::seccomp::load(&plan.filter).map_err(|e| format!("seccomp filter: {e}"))?;
    steps.mark();
    super::executor::run(&plan.argv)
}

/// Every signal's disposition back to the default, with the system call
/// itself: glibc's wrapper refuses the two signals it keeps for its own
/// use, and an ignored one stays ignored across `execve`.
fn default_signals() {
    /// The kernel's `struct sigaction` (x86-64 and arm64 layout).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads one struct of the kernel's layout.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
}

/// Marks every descriptor but stdio close-on-exec: nothing of the
/// worker's may reach the program (the error pipe then tells the worker
/// the program runs).
pub(super) fn close_on_exec() -> Result<(), String> {
    // SAFETY: system calls with integer arguments.
    let marked =
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if marked < 0 {
        mark_cloexec_by_listing()?;
    }
    Ok(())
}

/// Moves the calling thread into the v1 groups of `cgroups` (`tasks`).
pub(super) fn join_v1(cgroups: &CgroupJoin) -> Result<(), String> {
    for (fd, path) in &cgroups.tasks {
        // SAFETY: a write of a 1-byte buffer to a descriptor we own.
        let r = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        ok(r as libc::c_long, &format!("join cgroup {path}"))?;
    }
    Ok(())
}

/// `close_range`'s fallback (kernels before 5.11): every descriptor above
/// 2 listed in `/proc/self/fd` gets close-on-exec.
fn mark_cloexec_by_listing() -> Result<(), String> {
    let rd = fs::read_dir("/proc/self/fd").map_err(|e| format!("list descriptors: {e}"))?;
    for fd in rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
    {
        if fd > 2 {
            // SAFETY: fcntl with integer arguments; a closed fd fails harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Makes `fds` (each above 2) the process's 0, 1 and 2.
fn connect_stdio(fds: &[RawFd; 3]) -> Result<(), String> {
    for (target, fd) in fds.iter().enumerate() {
        ok(
            // SAFETY: dup2 between descriptors we own; the copy is inheritable.
            unsafe { libc::dup2(*fd, target as RawFd) } as libc::c_long,
            "dup2 stdio",
        )?;
    }
    Ok(())
}

/// The exec's user, groups and capabilities: the bounding set first
/// (that needs CAP_SETPCAP), then the ids keeping the permitted set, then
/// exactly the held set; nothing inheritable or ambient.
fn drop_privileges(plan: &ProcessPlan) -> Result<(), String> {
    for cap in 0..=plan.last_cap.min(63) {
        if plan.bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            // EINVAL: a capability this kernel does not know.
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(errno("drop a bounding capability"));
            }
        }
    }
    // Raw system calls: glibc's wrappers would signal the worker's
    // threads of its own bookkeeping, which this child does not have.
    // SAFETY: system calls with valid pointers and integers.
    unsafe {
        ok(
            libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()),
            "setgroups",
        )?;
        ok(
            libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid),
            "setresgid",
        )?;
        ok(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) as libc::c_long,
            "keepcaps",
        )?;
        ok(
            libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid),
            "setresuid",
        )?;
        ok(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) as libc::c_long,
            "keepcaps",
        )?;
    }
    capset(plan.held)?;
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    ok(r as libc::c_long, "clear ambient capabilities")
}

/// Sets the effective and permitted capabilities to `held`, inheritable none.
fn capset(held: u64) -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let header = Header {
        version: V3,
        pid: 0,
    };
    let half = |shift: u32| {
        let v = (held >> shift) as u32;
        Data {
            effective: v,
            permitted: v,
            inheritable: 0,
        }
    };
    let data = [half(0), half(32)];
    // SAFETY: capset reads one header and two data structs (version 3).
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    ok(r, "capset")
}

const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// Whether `fd` is a character device of devpts with a major number in
/// `majors` (and minor `minor`, if given).
fn is_devpts_char(fd: RawFd, majors: std::ops::RangeInclusive<u32>, minor: Option<u32>) -> bool {
    // SAFETY: fstat/fstatfs fill structs we own from a descriptor we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let mut sfs: libc::statfs = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 || libc::fstatfs(fd, &mut sfs) < 0 {
            return false;
        }
        #[allow(clippy::unnecessary_cast)]
        let on_devpts = sfs.f_type as i64 == DEVPTS_SUPER_MAGIC;
        on_devpts
            && st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && majors.contains(&libc::major(st.st_rdev))
            && minor.is_none_or(|m| libc::minor(st.st_rdev) == m)
    }
}

/// A new terminal in the space's devpts, the controlling one of a new
/// session: its master goes to `console`, its slave is returned. The
/// space's `/dev` is the tenant's: what is opened is checked to be devpts'
/// real multiplexer and slave (as runc does since CVE-2025-52565).
fn new_terminal(console: RawFd, size: Option<(u16, u16)>) -> Result<RawFd, String> {
    // SAFETY: system calls on valid C strings, pointers to locals, and
    // descriptors this child owns.
    unsafe {
        libc::setsid();
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        let master = libc::open(c"/dev/pts/ptmx".as_ptr(), flags);
        ok(master as libc::c_long, "open /dev/pts/ptmx")?;
        let master = OwnedFd::from_raw_fd(master);
        if !is_devpts_char(master.as_raw_fd(), 5..=5, Some(2)) {
            return Err("/dev/pts/ptmx of the space is not a terminal multiplexer".into());
        }
        let unlock: libc::c_int = 0;
        ok(
            libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) as libc::c_long,
            "unlock terminal",
        )?;
        let slave = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        ok(slave as libc::c_long, "open the terminal")?;
        // 136..=143: the kernel's Unix98 slave majors.
        if !is_devpts_char(slave, 136..=143, None) {
            return Err("the space's terminal is not a devpts slave".into());
        }
        if let Some((cols, rows)) = size {
            crate::process::set_winsize(std::os::fd::BorrowedFd::borrow_raw(slave), cols, rows);
        }
        ok(
            libc::ioctl(slave, libc::TIOCSCTTY, 0) as libc::c_long,
            "set the controlling terminal",
        )?;
        crate::worker::send_fd(console, master.as_raw_fd())
            .map_err(|e| format!("send the terminal: {e}"))?;
        Ok(slave)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_INIT: &str = "12:pids:/cs/abc\n11:cpu,cpuacct:/cs/abc\n1:name=systemd:/system.slice/cs.service\n0::/system.slice/cs.service\n";
    const HYBRID_OURS: &str = "12:pids:/system.slice/cs.service\n11:cpu,cpuacct:/\n1:name=systemd:/system.slice/cs.service\n0::/system.slice/cs.service\n";

    #[test]
    fn joins_only_the_cgroups_that_differ() {
        let j = cgroups_to_join(HYBRID_INIT, HYBRID_OURS).expect("join");
        assert_eq!(
            j,
            vec![
                (Hierarchy::V1("pids".into()), "/cs/abc".into()),
                (Hierarchy::V1("cpu,cpuacct".into()), "/cs/abc".into()),
            ]
        );
        let v2 = cgroups_to_join("0::/cs/abc\n", "0::/system.slice/x\n").expect("v2");
        assert_eq!(v2, vec![(Hierarchy::V2, "/cs/abc".into())]);
        assert!(cgroups_to_join("0::/a\n", "0::/a\n")
            .expect("same")
            .is_empty());
    }

    #[test]
    fn cgroup_paths_that_climb_or_are_relative_are_refused() {
        for bad in [
            "0::/../../x\n",
            "0::/a/../b\n",
            "0::x\n",
            "3:pids:/a/./b\n",
            "garbage\n",
        ] {
            assert!(cgroups_to_join(bad, "0::/\n").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capability_masks_follow_the_oci_names() {
        use libcontainer::oci_spec::runtime::Capability;
        let set: Capabilities = [Capability::Chown, Capability::Kill].into_iter().collect();
        assert_eq!(mask(&Some(set)), (1 << 0) | (1 << 5));
        assert_eq!(mask(&None), 0);
    }
}
