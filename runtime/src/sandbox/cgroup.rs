//! The cgroup a new space's init is born in: made and limited before the
//! init exists (v2 by libcgroups' controllers, v1 by writing the same
//! files they write); the init then joins it without the global lock a
//! `cgroup.procs` write takes (see [`super::join`]).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Spec};
use libcontainer::rootfs::utils::default_devices;

use super::join::CgroupJoin;
use crate::cgroups::{CgroupMode, CgroupPaths, CGROUP_ROOT};
use crate::proto::SandboxError;

type Res<T> = Result<T, SandboxError>;

/// The v1 controllers libcgroups puts a container in (every one mounted).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// The v1 controllers mounted on this host (read once per worker).
fn mounted_v1() -> &'static [&'static str] {
    static MOUNTED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    MOUNTED.get_or_init(|| {
        V1_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| Path::new(CGROUP_ROOT).join(c).is_dir())
            .collect()
    })
}

/// The absolute cgroup path of `spec`, checked: absolute, and no component
/// that is empty, `.` or `..`.
pub(super) fn spec_path(spec: &Spec) -> Res<String> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .ok_or("the space's spec has no cgroup path")?
        .to_string_lossy()
        .into_owned();
    let plain = path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    });
    if !plain {
        return Err(format!("bad cgroup path {path:?} in the space's spec").into());
    }
    Ok(path)
}

fn io<'a>(what: &'a str, p: &'a Path) -> impl FnOnce(std::io::Error) -> SandboxError + 'a {
    move |e| format!("{what} {}: {e}", p.display()).into()
}

/// Makes the cgroup at `path` with `spec`'s limits (memory, CPU, pids,
/// devices, with libcontainer's semantics) and returns how the init joins
/// it. Undo with [`super::lifecycle`]'s cgroup removal.
pub(super) fn prepare(spec: &Spec, path: &str) -> Res<CgroupJoin> {
    let mut t = crate::timing::Phases::new("worker cgroup");
    let resources = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let opt = ControllerOpt {
        resources: &resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    };
    let paths = CgroupPaths::new(CgroupMode::detect(), path);
    if CgroupMode::detect() == CgroupMode::Unified {
        let dir = paths.dir("");
        make_unified(Path::new(CGROUP_ROOT), path)?;
        libcgroups::v2::manager::Manager::new(
            CGROUP_ROOT.into(),
            path.trim_start_matches('/').into(),
        )
        .map_err(|e| format!("cgroup {path}: {e}"))?
        .apply(&opt)
        .map_err(|e| format!("limit cgroup {path}: {e}"))?;
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(io("open cgroup", &dir))?;
        return Ok(CgroupJoin {
            tasks: Vec::new(),
            v2: Some(fd.into()),
        });
    }
    let mut tasks = Vec::new();
    for ctrl in mounted_v1() {
        let mut dir = paths.dir(ctrl);
        if *ctrl == "cpuset" {
            // Unpinned: the parent's group, which every such space shares.
            let group = shared_cpuset(path, &resources).unwrap_or(path);
            inherit_cpuset(Path::new(CGROUP_ROOT).join(ctrl), group)?;
            dir = CgroupPaths::new(CgroupMode::detect(), group).dir(ctrl);
        } else {
            fs::create_dir_all(&dir).map_err(io("create cgroup", &dir))?;
        }
        let file = dir.join("tasks");
        let fd = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&file)
            .map_err(io("open", &file))?;
        tasks.push((fd.into(), file.display().to_string()));
    }
    t.mark("dirs");
    match v1_limits(&paths, &resources) {
        Some(written) => written?,
        // Building libcgroups' v1 manager reads the mount table and
        // `/proc/self/cgroup` once per controller (1.7 ms here): only for
        // limits spaces' specs do not have.
        None => libcgroups::v1::Manager::new(Path::new(path))
            .map_err(|e| format!("cgroup {path}: {e}"))?
            .apply(&opt)
            .map_err(|e| format!("limit cgroup {path}: {e}"))?,
    }
    t.mark("limits");
    Ok(CgroupJoin { tasks, v2: None })
}

/// Device rules libcgroups allows in every container besides the default
/// nodes: making any node (`m`), the console, `/dev/pts`, `/dev/ptmx`,
/// tun/tap.
const V1_DEFAULT_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// Writes `r` to the v1 groups of `paths` as libcgroups' v1 controllers
/// write it, when it holds only what spaces' specs do (a memory limit, CPU
/// quota and period, a pids limit, device rules); `None` otherwise.
fn v1_limits(paths: &CgroupPaths, r: &LinuxResources) -> Option<Res<()>> {
    let memory = r.memory().as_ref().is_none_or(|m| {
        m.limit().is_none_or(|l| l > 0)
            && m.reservation().is_none()
            && m.swap().is_none()
            && m.kernel().is_none()
            && m.kernel_tcp().is_none()
            && m.swappiness().is_none()
            && m.disable_oom_killer().is_none()
            && m.use_hierarchy().is_none()
            && m.check_before_update().is_none()
    });
    let cpu = r.cpu().as_ref().is_none_or(|c| {
        c.shares().is_none()
            && c.idle().is_none()
            && c.burst().is_none()
            && c.realtime_runtime().is_none()
            && c.realtime_period().is_none()
            && c.cpus().is_none()
            && c.mems().is_none()
    });
    let others = r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.network().is_some()
        || r.rdma().as_ref().is_some_and(|m| !m.is_empty())
        || r.unified().as_ref().is_some_and(|m| !m.is_empty());
    if !memory || !cpu || others {
        return None;
    }
    let write = |ctrl: &str, file: &str, value: String| -> Res<()> {
        libcgroups::common::write_cgroup_file_str(paths.dir(ctrl).join(file), &value)
            .map_err(|e| SandboxError::Runtime(e.to_string()))
    };
    let mut rules: Vec<(bool, String)> = r
        .devices()
        .iter()
        .flatten()
        .map(|d| (d.allow(), d.to_string()))
        .collect();
    rules.extend(
        default_devices()
            .iter()
            .map(|d| (true, LinuxDeviceCgroup::from(d).to_string())),
    );
    rules.extend(V1_DEFAULT_ALLOW.iter().map(|d| (true, d.to_string())));
    Some((|| {
        if let Some(m) = r.memory() {
            if let Some(limit) = m.limit() {
                write("memory", "memory.limit_in_bytes", limit.to_string())?;
            }
            write("memory", "memory.oom_control", "0".into())?;
        }
        if let Some(c) = r.cpu() {
            // Each write walks every task group of the host to check the
            // bandwidth (`tg_set_cfs_bandwidth`): none when the period is
            // already what it must be (a new group's default, 100 ms).
            let period_file = paths.dir("cpu").join("cpu.cfs_period_us");
            let current = fs::read_to_string(&period_file).ok();
            if let Some(period) = c
                .period()
                .filter(|p| *p != 0 && current.as_deref().map(str::trim) != Some(&p.to_string()))
            {
                write("cpu", "cpu.cfs_period_us", period.to_string())?;
            }
            if let Some(quota) = c.quota().filter(|q| *q != 0) {
                write("cpu", "cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        if let Some(p) = r.pids() {
            let max = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write("pids", "pids.max", max)?;
        }
        for (allow, rule) in rules {
            let file = if allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write("devices", file, rule)?;
        }
        Ok(())
    })())
}

/// Creates the cgroup2 directories of `path` under `root`, each parent
/// delegating every controller the root has (as libcgroups does).
fn make_unified(root: &Path, path: &str) -> Res<()> {
    let controllers = fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(io("read", &root.join("cgroup.controllers")))?;
    let enable = |dir: &Path| {
        for c in controllers.split_whitespace() {
            // Best effort, one at a time: a controller that cannot be
            // delegated here fails only a limit that needs it.
            let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    };
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for c in parts {
        enable(&dir);
        dir.push(c);
        make_dir(&dir)?;
    }
    Ok(())
}

/// Makes the cgroup directory `dir` unless it exists (its parent must).
fn make_dir(dir: &Path) -> Res<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io("create cgroup", dir)(e)),
        _ => Ok(()),
    }
}

/// The v1 cpuset group a space at cgroup `path` shares when its
/// `resources` pin no CPUs or memory nodes: its parent (`None`: it gets a
/// group of its own). A group of its own would hold the parent's CPUs and
/// nodes anyway, and making one makes the kernel look at every sibling
/// group (`cpuset_css_online`: 0.2 ms of a create with 500 spaces, `perf`).
fn shared_cpuset<'a>(path: &'a str, resources: &LinuxResources) -> Option<&'a str> {
    let pinned = resources
        .cpu()
        .as_ref()
        .is_some_and(|c| c.cpus().is_some() || c.mems().is_some());
    let parent = path.rsplit_once('/')?.0;
    (!pinned && !parent.is_empty()).then_some(parent)
}

/// A new v1 cpuset group has no CPUs and no memory nodes, and no task may
/// join it until it has: each level of `path` below `mount` is made with
/// its parent's (as libcgroups copies them before a `cgroup.procs` write).
/// Writing them makes the kernel check every sibling group and rebuild the
/// scheduler's domains, which grows with the number of spaces (0.6 ms of a
/// create with 500, `perf`); so the spaces' parent group gets
/// `cgroup.clone_children` and the kernel fills each new space's group
/// itself. Other levels are written only when made here.
fn inherit_cpuset(mount: PathBuf, path: &str) -> Res<()> {
    let levels: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut parent = mount;
    for (i, c) in levels.iter().enumerate() {
        let dir = parent.join(c);
        make_dir(&dir)?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(dir.join(f)).map_err(io("read", &dir.join(f)))?;
            if mine.trim().is_empty() {
                let theirs =
                    fs::read_to_string(parent.join(f)).map_err(io("read", &parent.join(f)))?;
                fs::write(dir.join(f), theirs.trim()).map_err(io("write", &dir.join(f)))?;
            }
        }
        let clone = dir.join("cgroup.clone_children");
        if i + 2 == levels.len()
            && fs::read_to_string(&clone)
                .map_err(io("read", &clone))?
                .trim()
                != "1"
        {
            fs::write(&clone, "1").map_err(io("write", &clone))?;
        }
        parent = dir;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{LinuxCpuBuilder, LinuxResourcesBuilder};

    #[test]
    fn unpinned_spaces_share_their_parents_cpuset() {
        let quota = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(100_000i64)
                    .build()
                    .expect("cpu"),
            )
            .build()
            .expect("resources");
        assert_eq!(
            shared_cpuset("/clawdspace/abc", &quota),
            Some("/clawdspace")
        );
        assert_eq!(
            shared_cpuset("/a/b/abc", &LinuxResources::default()),
            Some("/a/b")
        );
        // At the top level there is no parent group to share.
        assert_eq!(shared_cpuset("/abc", &quota), None);
        let pinned = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().cpus("0").build().expect("cpu"))
            .build()
            .expect("resources");
        assert_eq!(shared_cpuset("/clawdspace/abc", &pinned), None);
    }
}
