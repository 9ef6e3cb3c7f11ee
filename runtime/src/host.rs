//! Figures about the host (CPUs, load, memory, disk, uptime), and the
//! daemon process's allocator setting.

use std::fs;
use std::path::Path;

/// Caps glibc's malloc at two arenas for this process (unless
/// `MALLOC_ARENA_MAX` is set). By default glibc gives a thread that
/// allocates while another holds an arena one of its own, up to eight per
/// CPU: with the daemon's burst of blocking-pool threads around 500 creates
/// that left ~2 MiB resident in arenas half empty (daemon RSS with 500
/// spaces 33.1 → 30.8 MiB with two, measured). Call first thing in `main`, before threads start.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt with integer arguments, before other threads run.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Disk usage of one filesystem, in bytes (as `df` computes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the filesystem.
    pub total: u64,
    /// Used (blocks - free blocks).
    pub used: u64,
    /// Available to unprivileged users.
    pub available: u64,
}

/// A snapshot of the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Machine architecture as `uname -m` says (`x86_64`, `aarch64`).
    pub machine: String,
    /// Online logical CPUs (not limited by cgroups or affinity).
    pub cpus: u32,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// `MemTotal`, bytes.
    pub mem_total: u64,
    /// `MemAvailable`, bytes.
    pub mem_available: u64,
    /// Seconds since boot.
    pub uptime_secs: u64,
    /// The filesystem holding the given path, when it can be read.
    pub disk: Option<DiskUsage>,
}

/// Online logical CPUs of the host.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(1).max(1)
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, bytes.
pub fn memory() -> (u64, u64) {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Disk usage of the filesystem holding `path`.
pub fn disk_usage(path: &Path) -> Option<DiskUsage> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let f = s.fragment_size() as u64;
    let total = s.blocks() as u64 * f;
    let free = s.blocks_free() as u64 * f;
    Some(DiskUsage {
        total,
        used: total.saturating_sub(free),
        available: s.blocks_available() as u64 * f,
    })
}

/// Everything about the host; `disk_path` picks the filesystem.
pub fn host_info(disk_path: &Path) -> HostInfo {
    let uts = nix::sys::utsname::uname().ok();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut l = load
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    let uptime = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let (mem_total, mem_available) = memory();
    HostInfo {
        hostname: uts
            .as_ref()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default(),
        machine: uts
            .as_ref()
            .map(|u| u.machine().to_string_lossy().into_owned())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        cpus: online_cpus(),
        load: [
            l.next().unwrap_or(0.0),
            l.next().unwrap_or(0.0),
            l.next().unwrap_or(0.0),
        ],
        mem_total,
        mem_available,
        uptime_secs: uptime as u64,
        disk: disk_usage(disk_path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        let h = host_info(Path::new("/"));
        assert!(h.cpus >= 1 && h.mem_total > 0 && h.mem_available <= h.mem_total);
        let d = h.disk.expect("disk of /");
        assert!(d.total >= d.used && d.total > 0);
        assert!(!h.hostname.is_empty());
    }
}
