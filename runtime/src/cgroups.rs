//! Which cgroup layout the host has, and reading a space's figures from it.
//! (libcontainer writes the limits; this module only reads, without forking.)

use std::fs;
use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Pure cgroup v2 (unified hierarchy at /sys/fs/cgroup).
    Unified,
    /// v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only.
    Legacy,
}

impl CgroupMode {
    /// The layout of this host (detected once per process).
    pub fn detect() -> Self {
        static MODE: std::sync::OnceLock<CgroupMode> = std::sync::OnceLock::new();
        *MODE.get_or_init(Self::probe)
    }

    fn probe() -> Self {
        // `f_type`'s width differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let is_cg2 = |p: &str| {
            nix::sys::statfs::statfs(p)
                .map(|s| s.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC)
                .unwrap_or(false)
        };
        if is_cg2(CGROUP_ROOT) {
            CgroupMode::Unified
        } else if is_cg2("/sys/fs/cgroup/unified") {
            CgroupMode::Hybrid
        } else {
            CgroupMode::Legacy
        }
    }

    /// Human name for logs.
    pub fn describe(self) -> &'static str {
        match self {
            CgroupMode::Unified => "cgroup v2 (unified)",
            CgroupMode::Hybrid => {
                "hybrid (cgroup v1 controllers + cgroup2 at /sys/fs/cgroup/unified)"
            }
            CgroupMode::Legacy => "cgroup v1 (legacy)",
        }
    }
}

/// Resource use of a space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Memory charged to the space, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (`None` when unlimited).
    pub memory_limit_bytes: Option<u64>,
    /// CPU time used by all processes, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Number of processes (tasks).
    pub pids: u64,
    /// CFS quota and period (µs), when limited.
    pub cpu_quota: Option<(i64, u64)>,
    /// Maximum number of pids, when limited.
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices (v1 `blkio` throttle figures, v2
    /// `io.stat`). Page-cache hits and, on v1, buffered writes are not
    /// charged here.
    pub block_read_bytes: u64,
    /// Bytes written to block devices.
    pub block_write_bytes: u64,
    /// Bytes received on the space's network interfaces (loopback not
    /// counted); filled by the runtime, not from the cgroup.
    pub network_rx_bytes: u64,
    /// Bytes sent on the space's network interfaces.
    pub network_tx_bytes: u64,
}

/// Paths of one cgroup (absolute cgroup path like `/clawdspace/<id>`).
#[derive(Debug, Clone)]
pub struct CgroupPaths {
    mode: CgroupMode,
    path: String,
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn read_limit(p: &Path) -> Option<u64> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        return None;
    }
    s.parse().ok().filter(|v: &u64| *v < (1 << 62))
}

/// Block I/O bytes from a v2 `io.stat` (`MAJ:MIN rbytes=N wbytes=N …`).
fn block_v2(file: &Path) -> SpaceStats {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut s = SpaceStats::default();
    for field in text.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let v = v.parse::<u64>().unwrap_or(0);
        match k {
            "rbytes" => s.block_read_bytes += v,
            "wbytes" => s.block_write_bytes += v,
            _ => {}
        }
    }
    s
}

/// Block I/O bytes from a v1 blkio directory (`MAJ:MIN Read N` lines of
/// the throttle figures, which every kernel keeps; the recursive file
/// when there is one).
fn block_v1(dir: &Path) -> SpaceStats {
    let text = [
        "blkio.throttle.io_service_bytes_recursive",
        "blkio.throttle.io_service_bytes",
    ]
    .iter()
    .find_map(|f| fs::read_to_string(dir.join(f)).ok())
    .unwrap_or_default();
    let mut s = SpaceStats::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(_dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let v = v.parse::<u64>().unwrap_or(0);
        match op {
            "Read" => s.block_read_bytes += v,
            "Write" => s.block_write_bytes += v,
            _ => {}
        }
    }
    s
}

impl CgroupPaths {
    /// The cgroup at absolute path `path` under `mode`.
    pub fn new(mode: CgroupMode, path: &str) -> Self {
        CgroupPaths {
            mode,
            path: path.trim_start_matches('/').to_string(),
        }
    }

    /// The directory of controller `ctrl` (ignored on v2).
    pub fn dir(&self, ctrl: &str) -> PathBuf {
        match self.mode {
            CgroupMode::Unified => Path::new(CGROUP_ROOT).join(&self.path),
            _ => Path::new(CGROUP_ROOT).join(ctrl).join(&self.path),
        }
    }

    /// Every directory this cgroup has on the host (to check it is gone, or
    /// to remove it): on v1, one per hierarchy mounted under
    /// `/sys/fs/cgroup` (libcontainer joins every one it finds).
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        if self.mode == CgroupMode::Unified {
            return vec![self.dir("")];
        }
        let mut ctrls: Vec<String> = fs::read_dir(CGROUP_ROOT)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if ctrls.is_empty() {
            ctrls = [
                "memory", "cpu", "cpuacct", "pids", "freezer", "devices", "blkio", "cpuset",
                "unified",
            ]
            .map(String::from)
            .to_vec();
        }
        ctrls.sort();
        ctrls.iter().map(|c| self.dir(c)).collect()
    }

    /// Current figures of the cgroup.
    pub fn stats(&self) -> SpaceStats {
        match self.mode {
            CgroupMode::Unified => {
                let d = self.dir("");
                let cpu_usec = fs::read_to_string(d.join("cpu.stat"))
                    .ok()
                    .and_then(|s| {
                        s.lines().find_map(|l| {
                            l.strip_prefix("usage_usec ")
                                .and_then(|v| v.trim().parse::<u64>().ok())
                        })
                    })
                    .unwrap_or(0);
                let cpu_quota = fs::read_to_string(d.join("cpu.max")).ok().and_then(|s| {
                    let mut it = s.split_whitespace();
                    let q = it.next()?.parse::<i64>().ok()?;
                    let p = it.next()?.parse::<u64>().ok()?;
                    Some((q, p))
                });
                SpaceStats {
                    memory_bytes: read_u64(&d.join("memory.current")).unwrap_or(0),
                    memory_limit_bytes: read_limit(&d.join("memory.max")),
                    cpu_usage_ns: cpu_usec * 1000,
                    pids: read_u64(&d.join("pids.current")).unwrap_or(0),
                    cpu_quota,
                    pids_limit: read_limit(&d.join("pids.max")),
                    ..block_v2(&d.join("io.stat"))
                }
            }
            _ => {
                let quota = fs::read_to_string(self.dir("cpu").join("cpu.cfs_quota_us"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .filter(|q| *q > 0);
                let period = read_u64(&self.dir("cpu").join("cpu.cfs_period_us"));
                SpaceStats {
                    memory_bytes: read_u64(&self.dir("memory").join("memory.usage_in_bytes"))
                        .unwrap_or(0),
                    memory_limit_bytes: read_limit(
                        &self.dir("memory").join("memory.limit_in_bytes"),
                    ),
                    cpu_usage_ns: read_u64(&self.dir("cpuacct").join("cpuacct.usage"))
                        .or_else(|| read_u64(&self.dir("cpu,cpuacct").join("cpuacct.usage")))
                        .unwrap_or(0),
                    pids: read_u64(&self.dir("pids").join("pids.current")).unwrap_or(0),
                    cpu_quota: quota.zip(period),
                    pids_limit: read_limit(&self.dir("pids").join("pids.max")),
                    ..block_v1(&self.dir("blkio"))
                }
            }
        }
    }

    /// Pids of the processes in the cgroup (at most `cap`).
    pub fn procs(&self, cap: usize) -> Vec<i32> {
        let ctrl = if self.mode == CgroupMode::Unified {
            ""
        } else {
            "pids"
        };
        fs::read_to_string(self.dir(ctrl).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .take(cap)
            .collect()
    }

    /// Whether `/proc/<pid>/cgroup` text `text` puts its process in this
    /// cgroup or below it.
    pub fn lists(&self, text: &str) -> bool {
        let me = format!("/{}", self.path);
        text.lines().any(|l| {
            let Some(p) = l.splitn(3, ':').nth(2) else {
                return false;
            };
            self.path.is_empty() || p == me || p.starts_with(&format!("{me}/"))
        })
    }

    /// Number of OOM kills in the cgroup, when the kernel reports it.
    pub fn oom_kills(&self) -> u64 {
        let f = match self.mode {
            CgroupMode::Unified => self.dir("").join("memory.events"),
            _ => self.dir("memory").join("memory.oom_control"),
        };
        fs::read_to_string(f)
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// How often memory ran out in this cgroup or above it: OOM kills and
    /// OOM events, and on v1 charges refused at a limit. On v2 the counts
    /// include the cgroup's subtree; on v1 each level counts its own. Taken
    /// before and after a create, a rise says the create ran out of memory,
    /// even once its own cgroup is gone.
    pub fn memory_exhaustions(&self) -> u64 {
        let count = |file: PathBuf, keys: &[&str]| -> u64 {
            fs::read_to_string(file)
                .map(|s| {
                    s.lines()
                        .filter_map(|l| l.split_once(' '))
                        .filter(|(k, _)| keys.contains(k))
                        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                        .sum()
                })
                .unwrap_or(0)
        };
        let mut path = self.path.as_str();
        let mut total = 0;
        while !path.is_empty() {
            let level = CgroupPaths::new(self.mode, path);
            total += match self.mode {
                CgroupMode::Unified => {
                    count(level.dir("").join("memory.events"), &["oom", "oom_kill"])
                }
                _ => {
                    let mem = level.dir("memory");
                    count(mem.join("memory.oom_control"), &["oom_kill"])
                        + read_u64(&mem.join("memory.failcnt")).unwrap_or(0)
                }
            };
            path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
        total
    }

    /// Whether the freezer says the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match self.mode {
            CgroupMode::Unified => fs::read_to_string(self.dir("").join("cgroup.freeze"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false),
            _ => fs::read_to_string(self.dir("freezer").join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_figures_v1_and_v2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v2 = dir.path().join("io.stat");
        fs::write(
            &v2,
            "8:0 rbytes=100 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n254:0 rbytes=5 wbytes=7 rios=1 wios=1\n",
        )
        .expect("write");
        let s = block_v2(&v2);
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (105, 27));
        fs::write(
            dir.path().join("blkio.throttle.io_service_bytes"),
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\nTotal 12288\n",
        )
        .expect("write");
        let s = block_v1(dir.path());
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (4096, 8192));
        assert_eq!(block_v1(&dir.path().join("none")), SpaceStats::default());
    }
}
