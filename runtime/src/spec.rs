//! The OCI runtime spec of a space, built in code from its record.
//!
//! Pure: no I/O, so every rule here is unit-tested without root.

use std::path::Path;

use libcontainer::oci_spec::runtime::{Process, Spec};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::proto::ExecRequest;
use crate::store::Space;

/// Where the init binary appears inside every space.
pub const INIT_PATH_IN_SPACE: &str = "/dev/init";
/// CFS period used for CPU limits (µs).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Docker's default capability set, given to root (GPU) spaces.
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// CFS quota (µs per [`CPU_PERIOD_US`]) for a limit in nano-CPUs.
pub fn cpu_quota_us(nano_cpus: u64) -> i64 {
    ((nano_cpus as u128 * CPU_PERIOD_US as u128) / 1_000_000_000) as i64
}

/// Capabilities of a space's processes: none for unprivileged users,
/// Docker's default set for root.
pub fn capabilities_for(uid: u32) -> Vec<String> {
    if uid == 0 {
        DOCKER_DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    }
}

/// Capabilities of a process exec'd as `uid` in a space whose init runs as
/// `space_uid`. The space decides the set, not the exec path or user: its
/// bounding set is the init's ([`capabilities_for`]), root gets it as
/// effective and permitted, other users none (as Docker's `exec -u`). So
/// `root` in a non-GPU space has no capabilities at all.
pub fn exec_capabilities(space_uid: u32, uid: u32) -> Value {
    let bounding = capabilities_for(space_uid);
    let held = if uid == 0 {
        bounding.clone()
    } else {
        Vec::new()
    };
    json!({ "bounding": bounding, "effective": held, "permitted": held })
}

/// `env` with later entries replacing earlier ones of the same name, each
/// name kept at its first position (a process must not see a name twice).
fn dedup_env(env: &[String]) -> Vec<String> {
    let name = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    let mut index = std::collections::HashMap::new();
    for e in env {
        match index.get(&name(e)) {
            Some(&i) => out[i] = e.clone(),
            None => {
                index.insert(name(e), out.len());
                out.push(e.clone());
            }
        }
    }
    out
}

/// The OCI process of an exec, piped or on a terminal alike: argv, the
/// environment, working directory, user and groups, the space's
/// capabilities for that user, `noNewPrivileges`, and a terminal of the
/// requested size when `req.tty` is set. Both exec paths start exactly this.
pub fn exec_process(req: &ExecRequest) -> Result<Process> {
    let mut gids = req.additional_gids.clone();
    gids.retain(|g| *g != req.gid);
    let mut p = json!({
        "terminal": req.tty.is_some(),
        "user": { "uid": req.uid, "gid": req.gid, "additionalGids": gids },
        "args": req.args,
        "env": dedup_env(&req.env),
        "cwd": req.cwd,
        "capabilities": exec_capabilities(req.space_uid, req.uid),
        "noNewPrivileges": true
    });
    if let Some(t) = &req.tty {
        p["consoleSize"] = json!({ "height": t.rows, "width": t.cols });
    }
    serde_json::from_value(p).map_err(|e| Error::Container(format!("building exec process: {e}")))
}

/// The spec as JSON (what goes into the bundle's `config.json`).
pub fn spec_json(space: &Space, cgroups_path: &str, init_host_path: &Path) -> Value {
    let caps = capabilities_for(space.user.uid);
    let mut gids = space.user.additional_gids.clone();
    gids.retain(|g| *g != space.user.gid);
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs", "readonly": space.readonly_rootfs },
        "hostname": space.name,
        "process": {
            "terminal": false,
            "user": { "uid": space.user.uid, "gid": space.user.gid, "additionalGids": gids },
            "args": [INIT_PATH_IN_SPACE],
            "env": space.env,
            "cwd": space.user.workdir,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "noNewPrivileges": true
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
            { "destination": INIT_PATH_IN_SPACE, "type": "bind",
              "source": init_host_path.to_string_lossy(),
              "options": ["bind", "ro", "nosuid", "nodev"] }
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "resources": {
                // Deny every device first; libcontainer then allows its
                // default set (null, zero, full, tty, random, urandom, pts).
                "devices": [ { "allow": false, "access": "rwm" } ],
                "memory": { "limit": space.memory },
                "cpu": { "quota": cpu_quota_us(space.nano_cpus), "period": CPU_PERIOD_US },
                "pids": { "limit": space.pids_limit }
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS
        }
    });
    if space.readonly_rootfs {
        // A read-only root still needs somewhere to put temporary files.
        if let Some(m) = spec["mounts"].as_array_mut() {
            m.push(
                json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=512m"] }),
            );
            m.push(
                json!({ "destination": "/run", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "noexec", "mode=755", "size=16m"] }),
            );
        }
    }
    spec
}

/// The spec as a typed [`Spec`], checked against the OCI schema types.
pub fn build_spec(space: &Space, cgroups_path: &str, init_host_path: &Path) -> Result<Spec> {
    serde_json::from_value(spec_json(space, cgroups_path, init_host_path))
        .map_err(|e| Error::Container(format!("building OCI spec: {e}")))
}

/// The environment of a space: the image's, plus `HOSTNAME`, and `HOME` and
/// `PATH` when the image does not set them (SPEC section 7).
pub fn space_env(image_env: &[String], name: &str, home: &str) -> Vec<String> {
    let mut env: Vec<String> = image_env
        .iter()
        .filter(|e| !e.starts_with("HOSTNAME="))
        .cloned()
        .collect();
    let has = |env: &[String], k: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
    };
    if !has(&env, "PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    env.push(format!("HOSTNAME={name}"));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SpaceStatus, SpaceUser};
    use chrono::Utc;

    fn space(uid: u32) -> Space {
        let now = Utc::now();
        Space {
            name: "dev".into(),
            id: "a".repeat(64),
            image: "img".into(),
            memory: 512 << 20,
            nano_cpus: 500_000_000,
            pids_limit: 1024,
            gpu: false,
            gpus: None,
            created: now,
            started: now,
            last_activity: now,
            status: SpaceStatus::Creating,
            init_pid: None,
            init_start_time: None,
            user: SpaceUser {
                name: "sandbox".into(),
                uid,
                gid: uid,
                additional_gids: vec![27],
                home: "/home/sandbox".into(),
                workdir: "/home/sandbox".into(),
            },
            env: vec!["PATH=/bin".into()],
            layers: vec![],
            network: Default::default(),
            disk: None,
            volume: None,
            readonly_rootfs: false,
        }
    }

    #[test]
    fn limits_and_identity_are_in_the_spec() {
        let s = build_spec(&space(1000), "/clawdspace/x", Path::new("/s/bin/init")).expect("spec");
        assert_eq!(s.hostname().as_deref(), Some("dev"));
        let linux = s.linux().as_ref().expect("linux");
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(512 << 20)
        );
        let cpu = res.cpu().as_ref().expect("cpu");
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(1024));
        assert_eq!(linux.namespaces().as_ref().map(|n| n.len()), Some(6));
        let p = s.process().as_ref().expect("process");
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(
            p.args().as_ref().map(|a| a[0].as_str()),
            Some(INIT_PATH_IN_SPACE)
        );
        assert_eq!(p.cwd().to_str(), Some("/home/sandbox"));
    }

    #[test]
    fn a_read_only_root_gets_writable_tmp_and_run() {
        let mut sp = space(1000);
        let rw = spec_json(&sp, "/c/x", Path::new("/s/init"));
        assert_eq!(rw["root"]["readonly"], false);
        sp.readonly_rootfs = true;
        let ro = build_spec(&sp, "/c/x", Path::new("/s/init")).expect("spec");
        assert_eq!(ro.root().as_ref().and_then(|r| r.readonly()), Some(true));
        let tmpfs: Vec<String> = ro
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.typ().as_deref() == Some("tmpfs"))
            .map(|m| m.destination().display().to_string())
            .collect();
        assert!(tmpfs.contains(&"/tmp".into()) && tmpfs.contains(&"/run".into()));
    }

    #[test]
    fn sandbox_has_no_capabilities_and_root_has_dockers() {
        assert!(capabilities_for(1000).is_empty());
        assert_eq!(capabilities_for(0).len(), DOCKER_DEFAULT_CAPS.len());
        let s = build_spec(&space(0), "/c/x", Path::new("/i")).expect("spec");
        let caps = s
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("caps");
        assert_eq!(
            caps.bounding().as_ref().map(|b| b.len()),
            Some(DOCKER_DEFAULT_CAPS.len())
        );
    }

    fn exec_req(space_uid: u32, uid: u32, tty: bool) -> ExecRequest {
        ExecRequest {
            id: "a".repeat(64),
            state_root: "/s/run".into(),
            bundle: "/s/spaces/a".into(),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "A=1".into(), "PATH=/usr/bin".into()],
            cwd: "/tmp".into(),
            uid,
            gid: uid,
            additional_gids: vec![uid, 27],
            space_uid,
            init_pid: 1,
            init_start_time: 1,
            tty: tty.then(|| crate::proto::TtyRequest {
                console_socket: "/s/tty/x.sock".into(),
                cols: 80,
                rows: 24,
            }),
        }
    }

    fn caps(p: &Process) -> [usize; 3] {
        let c = p.capabilities().as_ref().expect("capabilities");
        let n = |s: &Option<_>| {
            s.as_ref()
                .map_or(usize::MAX, |s: &std::collections::HashSet<_>| s.len())
        };
        [n(c.bounding()), n(c.effective()), n(c.permitted())]
    }

    #[test]
    fn exec_capabilities_follow_the_space_not_the_path() {
        for tty in [false, true] {
            // root in a non-root space: nothing, on a terminal or not.
            let p = exec_process(&exec_req(1000, 0, tty)).expect("process");
            assert_eq!(caps(&p), [0, 0, 0]);
            assert_eq!(p.terminal(), Some(tty));
            assert_eq!(p.no_new_privileges(), Some(true));
            // root in a root space: the space's set.
            let n = DOCKER_DEFAULT_CAPS.len();
            let p = exec_process(&exec_req(0, 0, tty)).expect("process");
            assert_eq!(caps(&p), [n, n, n]);
            // another user in a root space: bounded, none held.
            let p = exec_process(&exec_req(0, 1000, tty)).expect("process");
            assert_eq!(caps(&p), [n, 0, 0]);
            let c = p.capabilities().as_ref().expect("caps");
            assert!(c.inheritable().is_none() && c.ambient().is_none());
        }
    }

    #[test]
    fn exec_process_has_identity_env_and_terminal() {
        let p = exec_process(&exec_req(1000, 1000, true)).expect("process");
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[27][..]));
        assert_eq!(p.cwd().to_str(), Some("/tmp"));
        assert_eq!(
            p.env().as_deref(),
            Some(&["PATH=/usr/bin".to_string(), "A=1".to_string()][..])
        );
        let size = p.console_size().expect("console size");
        assert_eq!((size.width(), size.height()), (80, 24));
        let p = exec_process(&exec_req(1000, 1000, false)).expect("process");
        assert!(p.console_size().is_none());
    }

    #[test]
    fn fractional_cpus_become_quota() {
        assert_eq!(cpu_quota_us(1_000_000_000), 100_000);
        assert_eq!(cpu_quota_us(10_000_000), 1_000);
        assert_eq!(cpu_quota_us(2_500_000_000), 250_000);
    }

    #[test]
    fn env_gets_defaults_only_when_missing() {
        let e = space_env(&["PATH=/x".into(), "HOSTNAME=old".into()], "dev", "/root");
        assert_eq!(e, vec!["PATH=/x", "HOME=/root", "HOSTNAME=dev"]);
        let e = space_env(&["HOME=/h".into()], "n", "/root");
        assert!(e.iter().any(|v| v.starts_with("PATH=/usr/local/sbin")));
        assert!(e.contains(&"HOME=/h".to_string()));
    }
}
