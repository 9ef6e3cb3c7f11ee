//! Starting a space's init (a create), without libcontainer's builder.
//!
//! libcontainer's create forks twice, builds a v1 cgroup manager that moves
//! its intermediate process with `cgroup.procs` writes (each takes the
//! kernel's global threadgroup lock), and checks every mount through
//! several dozen procfs lookups: most of a create's time here. This module
//! does the same work directly, as [`super::join`] does for an exec:
//!
//! 1. the space's cgroup is made and limited first ([`super::cgroup`]);
//! 2. one `clone3` starts the init in new PID, mount, IPC and UTS (and,
//!    without a prepared one, network) namespaces: on cgroup v2 born in its
//!    cgroup (`CLONE_INTO_CGROUP`), on v1 it writes its own `tasks` files;
//! 3. the init joins the prepared network namespace, unshares its cgroup
//!    namespace, makes its mounts, devices and `/dev` links inside its
//!    root ([`super::layout`]), lets the worker run the spec's prestart and
//!    createRuntime hooks and runs its createContainer hooks, pivots into
//!    its root, masks and write-protects paths, sets its host name;
//! 4. then becomes its process as an exec does ([`super::join::become_process`]).
//!
//! The worker writes libcontainer's state files afterwards, so pause,
//! resume and destroy keep reading them as before.

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use libcontainer::container::{ContainerStatus, State};
use libcontainer::oci_spec::runtime::{Hook, Hooks, LinuxNamespaceType, Spec};

use super::join::{self, CgroupJoin, ProcessPlan, Stdio};
use super::{cgroup, layout};
use crate::proto::{CreateRequest, SandboxError};
use crate::timing::ChildSteps;

type Res<T> = Result<T, SandboxError>;

/// How long the init may take to reach the point where hooks run.
const HOOK_WAIT_MS: u16 = 10_000;

/// The namespaces of a spec: new ones made by the `clone3`, prepared ones
/// (a network namespace file) joined by the init.
struct Namespaces {
    clone_flags: u64,
    join: Vec<(OwnedFd, libc::c_int)>,
    new_cgroup: bool,
}

fn namespaces(spec: &Spec) -> Res<Namespaces> {
    let mut ns = Namespaces {
        clone_flags: 0,
        join: Vec::new(),
        new_cgroup: false,
    };
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in &list {
        let flag = match n.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            other => return Err(unsupported(&format!("a {other:?} namespace"))),
        };
        match n.path() {
            // Only a network namespace is ever prepared for a space.
            Some(p) if flag == libc::CLONE_NEWNET => {
                let f = File::open(p).map_err(|e| format!("open {}: {e}", p.display()))?;
                ns.join.push((f.into(), flag));
            }
            Some(_) => return Err(unsupported(&format!("joining a {:?} namespace", n.typ()))),
            // Unshared by the init once it is in its cgroups, so that they
            // are its namespace's root.
            None if flag == libc::CLONE_NEWCGROUP => ns.new_cgroup = true,
            None => ns.clone_flags |= flag as u64,
        }
    }
    if ns.clone_flags & libc::CLONE_NEWNS as u64 == 0 {
        return Err(SandboxError::Runtime(
            "the space's spec has no mount namespace of its own; a space needs one".into(),
        ));
    }
    Ok(ns)
}

/// Spaces' own specs never ask for these; a CDI spec on the host can.
fn unsupported(what: &str) -> SandboxError {
    SandboxError::Runtime(format!(
        "the space's spec asks for {what}, which clawdspace does not set up for a space; \
         if a CDI spec on this host adds it, remove it there"
    ))
}

/// Refuses what the spec may say that this start does not set up (spaces'
/// specs never do; a CDI edit might).
fn check_supported(spec: &Spec) -> Res<()> {
    let linux = spec.linux().as_ref();
    let process = spec.process().as_ref();
    let checks = [
        (
            process.is_some_and(|p| p.rlimits().as_ref().is_some_and(|r| !r.is_empty())),
            "resource limits (rlimits)",
        ),
        (
            process.is_some_and(|p| p.terminal() == Some(true)),
            "a terminal for its init",
        ),
        (
            process.is_some_and(|p| p.oom_score_adj().is_some()),
            "an OOM score",
        ),
        (
            linux.is_some_and(|l| l.sysctl().as_ref().is_some_and(|s| !s.is_empty())),
            "sysctls",
        ),
        (
            linux.is_some_and(|l| l.uid_mappings().is_some() || l.gid_mappings().is_some()),
            "user ID mappings",
        ),
        (
            linux.is_some_and(|l| l.seccomp().is_some()),
            "a seccomp profile in the spec",
        ),
        (
            linux.is_some_and(|l| l.rootfs_propagation().is_some()),
            "a root propagation",
        ),
        (linux.is_some_and(|l| l.intel_rdt().is_some()), "Intel RDT"),
        (
            linux.is_some_and(|l| l.personality().is_some()),
            "a personality",
        ),
        (
            linux.is_some_and(|l| l.time_offsets().is_some()),
            "time offsets",
        ),
        (
            process.is_some_and(|p| p.io_priority().is_some() || p.scheduler().is_some()),
            "an I/O priority or scheduler",
        ),
        (
            spec.hooks()
                .as_ref()
                .is_some_and(|h| has(h.start_container())),
            "startContainer hooks",
        ),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, what)) => Err(unsupported(what)),
        None => Ok(()),
    }
}

fn has(hooks: &Option<Vec<Hook>>) -> bool {
    hooks.as_ref().is_some_and(|h| !h.is_empty())
}

fn devnull() -> Res<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| format!("open /dev/null: {e}").into())
}

/// Starts the init of `req` as `spec` says, with the space's seccomp
/// `filter`; returns its pid once it runs its program. On failure nothing
/// of it is left (process, cgroup).
pub(super) fn start(
    req: &CreateRequest,
    spec: &Spec,
    filter: Vec<u8>,
    t: &mut crate::timing::Phases,
) -> Res<i32> {
    check_supported(spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or("the space's spec has no process")?;
    let plan = join::process_plan(process, filter)?;
    let ns = namespaces(spec)?;
    let path = cgroup::spec_path(spec)?;
    // An init a create started before a crash, and before its state was
    // written (nothing else names it), is ended by its cgroup.
    super::lifecycle::thaw_and_kill(Path::new(&path));
    t.mark("plan");
    let started = spawn(req, spec, &plan, &ns, &path, t);
    if started.is_err() {
        if let Err(e) = super::lifecycle::remove_cgroup(Path::new(&path)) {
            tracing::warn!("removing the cgroup of a failed create: {e}");
        }
    }
    t.mark("started");
    started
}

fn spawn(
    req: &CreateRequest,
    spec: &Spec,
    plan: &ProcessPlan,
    ns: &Namespaces,
    cgroup_path: &str,
    t: &mut crate::timing::Phases,
) -> Res<i32> {
    let stdio = Stdio::Piped([devnull()?, devnull()?, devnull()?]);
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let hooks = spec
        .hooks()
        .as_ref()
        .filter(|h| has(h.prestart()) || has(h.create_runtime()) || has(h.create_container()));
    let sync = match hooks {
        Some(_) => Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair: {e}"))?,
        ),
        None => None,
    };
    let rootfs = &req.rootfs.target;
    let state = |pid: i32| {
        let mut s = State::new(
            &req.id,
            ContainerStatus::Creating,
            Some(pid),
            req.bundle.clone(),
        );
        s.creator = Some(0);
        s
    };
    // No process of the space may read this worker's memory or
    // `/proc/<pid>/exe` through the init before it runs its program.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let steps = std::cell::OnceCell::new();
    let mut launch = || -> Res<i32> {
        let cgroups = cgroup::prepare(spec, cgroup_path)?;
        t.mark("cgroup");
        let steps = steps.get_or_init(ChildSteps::begin);
        join::clone3(ns.clone_flags, cgroups.v2.as_ref(), |_| {
            steps.forked();
            let theirs = sync.as_ref().map(|(_, c)| c);
            let Err(e) = child(
                spec, rootfs, plan, ns, &cgroups, &stdio, theirs, &state, steps,
            );
            // SAFETY: a write of a valid buffer, then the end of this child.
            unsafe {
                libc::write(err_w.as_raw_fd(), e.as_ptr().cast(), e.len());
                libc::_exit(1)
            }
        })
        .map_err(|e| format!("clone3: {e}").into())
    };
    // In the worker's lean mount namespace (see [`super::mountns`]): the
    // init's copy of it has no other space's mounts, and libcgroups' v1
    // manager (for limits spaces' specs do not have) reads that short
    // mount table, not the host's.
    let pid = match req.bundle.parent() {
        Some(spaces) => super::mountns::in_lean(spaces, std::slice::from_ref(rootfs), launch),
        None => launch(),
    }?;
    t.mark("clone");
    drop(err_w);
    drop(stdio);
    if let (Some(h), Some((ours, theirs))) = (hooks, sync) {
        drop(theirs);
        if let Err(e) = runtime_hooks(h, &ours, &state(pid)) {
            join::end_child(pid);
            return Err(e);
        }
    }
    let pid = join::wait_started(pid, err_r)?;
    if let Some(steps) = steps.get() {
        steps.report(t, INIT_STEPS.into_iter().chain(join::BECOME_STEPS));
    }
    t.mark("exec");
    if let Some(h) = spec.hooks().as_ref().filter(|h| has(h.poststart())) {
        let mut s = state(pid);
        s.status = ContainerStatus::Running;
        if let Err(e) =
            libcontainer::hooks::run_hooks(h.poststart().as_ref(), Some(&s), None, None, None)
        {
            tracing::warn!("a poststart hook of the space failed: {e}");
        }
    }
    Ok(pid)
}

/// The worker's side of the hook handshake: waits for the init to have
/// made its mounts, runs the prestart and createRuntime hooks, and lets it
/// go on (sending its pid, for the createContainer hooks' state). An init
/// that failed before is not an error here: its reason follows on the
/// error pipe.
fn runtime_hooks(h: &Hooks, sock: &OwnedFd, state: &State) -> Res<()> {
    if !join::readable(sock, HOOK_WAIT_MS) {
        return Err("the space's init did not reach its hooks within 10 s".into());
    }
    let mut b = [0u8; 1];
    if !matches!(nix::unistd::read(sock.as_raw_fd(), &mut b), Ok(1)) {
        return Ok(());
    }
    let pid = state.pid.map(nix::unistd::Pid::from_raw);
    for (name, list) in [
        ("prestart", h.prestart()),
        ("createRuntime", h.create_runtime()),
    ] {
        libcontainer::hooks::run_hooks(list.as_ref(), Some(state), None, pid, None)
            .map_err(|e| SandboxError::Runtime(format!("{name} hooks: {e}")))?;
    }
    let raw = state.pid.unwrap_or(0).to_ne_bytes();
    nix::unistd::write(sock, &raw).map_err(|e| format!("release the init: {e}"))?;
    Ok(())
}

/// The init, up to its program. Returns only with why it failed.
#[allow(clippy::too_many_arguments)]
fn child(
    spec: &Spec,
    rootfs: &Path,
    plan: &ProcessPlan,
    ns: &Namespaces,
    cgroups: &CgroupJoin,
    stdio: &Stdio,
    sync: Option<&OwnedFd>,
    state: &dyn Fn(i32) -> State,
    steps: &ChildSteps,
) -> Result<Infallible, String> {
    join::close_on_exec()?;
    steps.mark();
    join::join_v1(cgroups)?;
    steps.mark();
    for (fd, flag) in &ns.join {
        join::setns(fd, *flag).map_err(|e| format!("join the space's network: {e}"))?;
    }
    if ns.new_cgroup {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("unshare the cgroup namespace: {e}"))?;
    }
    steps.mark();
    let root = layout::mount_all(spec, rootfs)?;
    steps.mark();
    if let Some(sock) = sync {
        nix::unistd::write(sock, b"h").map_err(|e| format!("ask for hooks: {e}"))?;
        let mut raw = [0u8; 4];
        match nix::unistd::read(sock.as_raw_fd(), &mut raw) {
            Ok(4) => {}
            _ => return Err("the worker ran no hooks".into()),
        }
        let hooks = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.create_container().as_ref());
        libcontainer::hooks::run_hooks(
            hooks,
            Some(&state(i32::from_ne_bytes(raw))),
            None,
            None,
            None,
        )
        .map_err(|e| format!("createContainer hooks: {e}"))?;
    }
    steps.mark();
    layout::pivot(&root)?;
    drop(root);
    steps.mark();
    layout::finish(spec)?;
    steps.mark();
    join::become_process(plan, stdio, steps)
}

/// The steps of an init's child that [`ChildSteps`] times, in order,
/// before those of [`join::become_process`].
const INIT_STEPS: [&str; 7] = [
    "cloexec",
    "cgroups",
    "namespaces",
    "mounts",
    "hooks",
    "pivot",
    "finish",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> Spec {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "process": { "cwd": "/", "user": { "uid": 0, "gid": 0 }, "args": ["/dev/init"] },
            "linux": { "namespaces": [ { "type": "pid" }, { "type": "mount" } ] }
        });
        for (k, val) in extra.as_object().into_iter().flatten() {
            let (section, field) = k.split_once('.').unwrap_or(("", k));
            v[section][field] = val.clone();
        }
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn what_a_start_does_not_set_up_is_refused_by_name() {
        assert!(check_supported(&spec(serde_json::json!({}))).is_ok());
        for (extra, named) in [
            (
                serde_json::json!({ "process.rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1, "soft": 1 } ] }),
                "rlimits",
            ),
            (
                serde_json::json!({ "linux.sysctl": { "net.ipv4.ip_forward": "1" } }),
                "sysctls",
            ),
            (serde_json::json!({ "process.terminal": true }), "terminal"),
            (
                serde_json::json!({ "linux.uidMappings": [] }),
                "ID mappings",
            ),
            (
                serde_json::json!({ "linux.personality": { "domain": "LINUX" } }),
                "personality",
            ),
        ] {
            let err = check_supported(&spec(extra.clone())).expect_err("refused");
            assert!(err.to_string().contains(named), "{extra}: {err}");
        }
    }

    #[test]
    fn namespaces_are_made_or_refused() {
        let ns = namespaces(&spec(serde_json::json!({}))).expect("namespaces");
        assert_eq!(
            ns.clone_flags,
            (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64
        );
        let user = spec(serde_json::json!({
            "linux.namespaces": [ { "type": "mount" }, { "type": "user" } ]
        }));
        assert!(namespaces(&user).is_err());
        let no_mount = spec(serde_json::json!({ "linux.namespaces": [ { "type": "pid" } ] }));
        assert!(namespaces(&no_mount).is_err());
        let joined_pid = spec(serde_json::json!({
            "linux.namespaces": [ { "type": "mount" }, { "type": "pid", "path": "/proc/1/ns/pid" } ]
        }));
        assert!(namespaces(&joined_pid).is_err());
    }
}
