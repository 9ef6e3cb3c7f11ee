//! What a space is doing, read from the host without entering it: cgroup
//! figures plus network counters (stats), and for the observability view
//! the disk of its volume, the size of its files, its busiest processes
//! and the tail of its shell history. Every read here is bounded (entries,
//! time, bytes) and never follows a path the space controls out of it.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};

use crate::cgroups::SpaceStats;
use crate::error::Result;
use crate::inroot::{Resolve, Root};
use crate::store::Space;

use super::{blocking, Runtime, WORKSPACE};

/// Processes listed in `top` at most.
pub const TOP_PROCESSES: usize = 8;
/// Lines of shell history returned at most.
pub const HISTORY_LINES: usize = 50;
/// Bytes read from the end of a history file at most.
const HISTORY_BYTES: u64 = 64 << 10;
/// Entries the size walk visits at most.
const WALK_ENTRIES: usize = 200_000;
/// Time the size walk may take.
const WALK_TIME: Duration = Duration::from_secs(2);
/// Directory depth the size walk goes down to.
const WALK_DEPTH: usize = 128;
/// Processes of a cgroup looked at for `top` at most.
const PROCS: usize = 4096;

/// The filesystem of a space's `/workspace`, as `df` sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceDisk {
    /// Size, bytes.
    pub total_bytes: u64,
    /// Used, bytes.
    pub used_bytes: u64,
    /// Available to unprivileged users, bytes.
    pub avail_bytes: u64,
    /// `used / total × 100`.
    pub used_percent: f64,
    /// Always `/workspace`.
    pub path: String,
}

/// Bytes a space's `/workspace` files take on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceSize {
    /// Allocated bytes (as `du`).
    pub bytes: u64,
    /// False when the walk stopped at its entry or time cap (`bytes` is
    /// then a lower bound).
    pub complete: bool,
}

/// One process of a space, as `ps -eo pid,%cpu,%mem,etime,comm` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// Pid inside the space.
    pub pid: i32,
    /// CPU time over lifetime, percent of one core.
    pub cpu: f64,
    /// Resident memory, percent of the host's memory.
    pub mem: f64,
    /// Time since it started, `[[dd-]hh:]mm:ss`.
    pub etime: String,
    /// Its command name (at most 15 bytes, as the kernel keeps it).
    pub command: String,
}

/// A snapshot of a space for the observability view.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Resource use.
    pub stats: SpaceStats,
    /// The filesystem of its volume (none without a volume).
    pub workspace_disk: Option<WorkspaceDisk>,
    /// Its volume's size (none without a volume).
    pub workspace_size: Option<WorkspaceSize>,
    /// Its busiest processes, by CPU.
    pub top: Vec<ProcessInfo>,
    /// The last lines of its shell history (none when empty or absent).
    pub bash_history_tail: Option<String>,
}

impl Runtime {
    /// Resource use of a space: its cgroup's figures plus the byte counters
    /// of its network interfaces. Blocking (reads cgroup and /proc files).
    pub fn stats(&self, name: &str) -> Result<SpaceStats> {
        let s = self.get(name)?;
        let mut stats = self.cgroup(&s).stats();
        if let Some((rx, tx)) = network_bytes(&s) {
            stats.network_rx_bytes = rx;
            stats.network_tx_bytes = tx;
        }
        Ok(stats)
    }

    /// A snapshot of space `name` for the observability view.
    pub async fn observe(&self, name: &str) -> Result<Observation> {
        let space = self.get(name)?;
        let rt = self.clone();
        blocking("observing a space", move || {
            let stats = rt.stats(&space.name)?;
            let volume = rt.space_volume(&space);
            let workspace_disk = volume.as_deref().and_then(workspace_disk);
            let workspace_size = volume
                .as_deref()
                .map(|v| tree_size(v, WALK_ENTRIES, Instant::now() + WALK_TIME));
            let top = top(&rt.cgroup(&space).procs(PROCS), &rt.cgroup(&space));
            let bash_history_tail = rt.history_tail(&space, volume.as_deref());
            Ok(Observation {
                stats,
                workspace_disk,
                workspace_size,
                top,
                bash_history_tail,
            })
        })
        .await
    }

    /// The last [`HISTORY_LINES`] lines of `/workspace/.bash_history`, or
    /// of the user's `~/.bash_history` in the root filesystem.
    fn history_tail(&self, space: &Space, volume: Option<&Path>) -> Option<String> {
        let from_volume = volume.and_then(|v| tail_in(v, Path::new(".bash_history")));
        let text = from_volume.or_else(|| {
            let home = Path::new(&space.user.home).join(".bash_history");
            // Under /workspace it was the volume's: nothing else to read.
            if home.starts_with(WORKSPACE) || !self.is_rootfs_mounted(space) {
                return None;
            }
            tail_in(&self.rootfs_dir(space), &home)
        })?;
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(HISTORY_LINES)..].join("\n");
        let tail = tail.trim();
        (!tail.is_empty()).then(|| tail.to_string())
    }
}

/// Regular file `path` resolved inside `root` (never through a symlink out
/// of it; FIFOs and devices are refused without blocking), and its status.
pub(super) fn open_regular_in(
    root: &Path,
    path: &Path,
) -> Option<(File, nix::sys::stat::FileStat)> {
    let root = Root::open(root).ok()?;
    let fd = root
        .open_at(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
            Resolve::InRoot,
        )
        .ok()?;
    let st = fstat(fd.as_raw_fd()).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return None;
    }
    Some((File::from(fd), st))
}

/// The last [`HISTORY_BYTES`] of regular file `path` resolved inside
/// `root`, as text (a cut first line is dropped).
fn tail_in(root: &Path, path: &Path) -> Option<String> {
    let (mut f, st) = open_regular_in(root, path)?;
    let size = st.st_size as u64;
    let start = size.saturating_sub(HISTORY_BYTES);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.take(HISTORY_BYTES).read_to_end(&mut buf).ok()?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        text = text.split_once('\n').map(|(_, r)| r.to_string())?;
    }
    Some(text)
}

/// Received and sent bytes of a space's interfaces but `lo`, from
/// `/proc/<init>/net/dev` (the init's namespace, checked to be the init
/// that started at the recorded time).
fn network_bytes(space: &Space) -> Option<(u64, u64)> {
    let (pid, start) = (space.init_pid?, space.init_start_time?);
    let mut f = File::open(format!("/proc/{pid}/net/dev")).ok()?;
    // Checked after opening: the file is that init's namespace's.
    if crate::sandbox::proc::start_time(pid) != Some(start) {
        return None;
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    Some(parse_net_dev(&text))
}

fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = fields
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// `df` of the filesystem holding volume directory `dir` (with a project
/// quota on the directory, the kernel reports the quota's figures).
fn workspace_disk(dir: &Path) -> Option<WorkspaceDisk> {
    // Opened without following a link: the directory is ours, but check.
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .ok()?;
    let s = nix::sys::statvfs::fstatvfs(&f).ok()?;
    let frag = s.fragment_size() as u64;
    let total = s.blocks() as u64 * frag;
    let used = total.saturating_sub(s.blocks_free() as u64 * frag);
    Some(WorkspaceDisk {
        total_bytes: total,
        used_bytes: used,
        avail_bytes: s.blocks_available() as u64 * frag,
        used_percent: if total > 0 {
            used as f64 / total as f64 * 100.0
        } else {
            0.0
        },
        path: WORKSPACE.into(),
    })
}

/// Allocated bytes under `root` (itself included), like `du -s`: links
/// are not followed, other filesystems not entered, hard links counted
/// once. Stops after `max_entries` entries or at `deadline`.
fn tree_size(root: &Path, max_entries: usize, deadline: Instant) -> WorkspaceSize {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut size = WorkspaceSize {
        bytes: 0,
        complete: false,
    };
    let Ok(top) = Dir::open(root, flags, Mode::empty()) else {
        return size;
    };
    let Ok(st) = fstat(top.as_raw_fd()) else {
        return size;
    };
    let dev = st.st_dev;
    size.bytes = st.st_blocks as u64 * 512;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut entries = 0usize;
    // Each frame: an open directory and its subdirectories still to visit
    // (so open descriptors are bounded by the depth).
    let mut stack: Vec<(Dir, Vec<CString>)> = Vec::new();
    let mut next = Some(top);
    loop {
        if let Some(mut dir) = next.take() {
            let fd = dir.as_raw_fd();
            let mut subdirs = Vec::new();
            for e in dir.iter().flatten() {
                let name: &CStr = e.file_name();
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                entries += 1;
                if entries > max_entries || Instant::now() > deadline {
                    return size;
                }
                let Ok(st) = fstatat(Some(fd), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                if st.st_dev != dev {
                    continue;
                }
                let is_dir =
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
                if st.st_nlink > 1 && !is_dir && !seen.insert(st.st_ino) {
                    continue;
                }
                size.bytes += st.st_blocks as u64 * 512;
                if is_dir && stack.len() < WALK_DEPTH {
                    subdirs.push(name.to_owned());
                }
            }
            stack.push((dir, subdirs));
        }
        let Some((dir, pending)) = stack.last_mut() else {
            break;
        };
        match pending.pop() {
            Some(name) => {
                next =
                    Dir::openat(Some(dir.as_raw_fd()), name.as_c_str(), flags, Mode::empty()).ok();
            }
            None => {
                stack.pop();
            }
        }
    }
    size.complete = true;
    size
}

/// The busiest [`TOP_PROCESSES`] of `pids` (host pids), each checked to
/// be in `cgroup` when read.
fn top(pids: &[i32], cgroup: &crate::cgroups::CgroupPaths) -> Vec<ProcessInfo> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let (mem_total, _) = crate::host::memory();
    let mut out: Vec<ProcessInfo> = pids
        .iter()
        .filter_map(|&pid| {
            let p = read_process(pid, cgroup)?;
            let elapsed = (uptime - p.start_ticks as f64 / hz).max(0.0);
            let cpu = if elapsed > 0.0 {
                p.cpu_ticks as f64 / hz / elapsed * 100.0
            } else {
                0.0
            };
            let mem = if mem_total > 0 {
                (p.rss_pages * page) as f64 / mem_total as f64 * 100.0
            } else {
                0.0
            };
            Some(ProcessInfo {
                pid: p.ns_pid,
                cpu: (cpu * 10.0).round() / 10.0,
                mem: (mem * 10.0).round() / 10.0,
                etime: etime(elapsed as u64),
                command: p.comm,
            })
        })
        .collect();
    out.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then(a.pid.cmp(&b.pid)));
    out.truncate(TOP_PROCESSES);
    out
}

struct RawProcess {
    ns_pid: i32,
    comm: String,
    cpu_ticks: u64,
    start_ticks: u64,
    rss_pages: u64,
}

/// Reads `/proc/<pid>` through one directory descriptor (so every file is
/// the same process's, never a process that reused the pid), and only
/// when the process is in `cgroup`.
fn read_process(pid: i32, cgroup: &crate::cgroups::CgroupPaths) -> Option<RawProcess> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}"))
        .ok()?;
    let read = |name: &str| -> Option<String> {
        let fd = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        // SAFETY: `openat` returned a new descriptor that we now own.
        let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut s = String::new();
        f.by_ref().take(64 << 10).read_to_string(&mut s).ok()?;
        Some(s)
    };
    if !cgroup.lists(&read("cgroup")?) {
        return None;
    }
    let stat = read("stat")?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_string();
    let f: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let status = read("status")?;
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .unwrap_or(pid);
    Some(RawProcess {
        ns_pid,
        comm,
        cpu_ticks: num(11)? + num(12)?,
        start_ticks: num(19)?,
        rss_pages: num(21)?,
    })
}

/// Elapsed time as `ps` writes it: `mm:ss`, `hh:mm:ss`, `d-hh:mm:ss`.
fn etime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else if h > 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  500 5 0 0 0 0 0 0  500 5 0 0 0 0 0 0\n  eth0: 1234 10 0 0 0 0 0 0 4321 9 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), (1234, 4321));
    }

    #[test]
    fn etime_like_ps() {
        assert_eq!(etime(5), "00:05");
        assert_eq!(etime(3 * 3600 + 61), "03:01:01");
        assert_eq!(etime(2 * 86400 + 5), "2-00:00:05");
    }

    #[test]
    fn tree_size_counts_without_following_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b/c")).expect("mkdir");
        std::fs::write(d.join("a/b/c/f"), vec![1u8; 100_000]).expect("write");
        std::fs::hard_link(d.join("a/b/c/f"), d.join("a/g")).expect("link");
        // A link to a big tree elsewhere must not be walked.
        std::os::unix::fs::symlink("/usr", d.join("usr")).expect("symlink");
        let s = tree_size(d, 1000, Instant::now() + Duration::from_secs(5));
        assert!(s.complete);
        assert!(s.bytes >= 100_000 && s.bytes < 1_000_000, "{}", s.bytes);
        let capped = tree_size(d, 2, Instant::now() + Duration::from_secs(5));
        assert!(!capped.complete);
    }

    #[test]
    fn history_tail_reads_in_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines: Vec<String> = (0..80).map(|i| format!("echo {i}")).collect();
        std::fs::write(dir.path().join("h"), lines.join("\n")).expect("write");
        let t = tail_in(dir.path(), Path::new("h")).expect("tail");
        assert!(t.ends_with("echo 79"));
        // An absolute link resolves inside the root, not on the host.
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("l")).expect("symlink");
        assert_eq!(tail_in(dir.path(), Path::new("l")), None);
    }

    #[test]
    fn top_lists_our_own_process() {
        // A cgroup path every process of a v2 or v1 host is under: "/".
        let cg = crate::cgroups::CgroupPaths::new(crate::cgroups::CgroupMode::detect(), "/");
        let me = std::process::id() as i32;
        let t = top(&[me], &cg);
        assert_eq!(t.len(), 1);
        assert!(!t[0].command.is_empty());
        assert!(t[0].etime.contains(':'));
    }
}
