//! Process helpers that depend on nothing else in the crate: killing a
//! process group, sizing a terminal (used by exec, the worker pool and
//! the sandbox) and threads' CPU priority.

/// `TIOCSWINSZ` on a PTY master (or, in an exec'd process, its terminal).
pub fn set_winsize(fd: impl std::os::fd::AsFd, cols: u16, rows: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from a valid pointer.
    unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// The id of the calling thread.
pub fn thread_id() -> libc::pid_t {
    // SAFETY: gettid has no arguments.
    unsafe { libc::gettid() }
}

/// Sets the nice value of thread `tid` (Linux keeps one per thread; threads
/// it starts later inherit it). Raising a priority needs CAP_SYS_NICE.
pub fn set_thread_nice(tid: libc::pid_t, nice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setpriority with integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGKILLs the process group led by `pid`, and `pid` itself.
pub fn kill_group(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// SIGKILLs the process group `pgid` and waits up to `timeout` until none
/// of its members but the leader runs any more (the dead wait to be reaped
/// by whoever adopted them). Returns whether any member had to be killed,
/// or `None` if some still ran after `timeout`. The leader
/// (`pgid` itself) must be a child of this process that has exited and is
/// not reaped yet: its pid, and so the group's id, cannot be reused
/// meanwhile, so nothing outside the group is ever signalled. For the
/// processes libcontainer cloned from a worker that died (its clones stay
/// in the worker's group until the container's init calls `setsid`), which
/// would otherwise go on making cgroups and directories of a create that
/// was already rolled back. Blocking.
pub fn kill_group_and_wait(pgid: i32, timeout: std::time::Duration) -> Option<bool> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let end = std::time::Instant::now() + timeout;
    let had = group_runs(pgid);
    loop {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        if !group_runs(pgid) {
            return Some(had);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether a process of group `pgid` other than its leader runs (is not a
/// zombie): from field 5 of `/proc/<pid>/stat`.
fn group_runs(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != pgid)
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
                return false;
            };
            let mut f = rest.split(' ');
            let (state, group) = (f.next(), f.nth(1).and_then(|g| g.parse::<i32>().ok()));
            group == Some(pgid) && !matches!(state, Some("Z") | Some("X") | Some("x"))
        })
}

/// SIGKILLs every process but this one and its own children that holds
/// one of the pipes whose inode numbers are `pipes` (`pipe:[N]` in
/// `/proc/<pid>/fd`), with its process group; scans again until none is
/// left (at most about a second). For an exec whose worker died before
/// telling its pid: the holders of the pipes its stdio was given are the
/// process and what it started. Blocking.
pub fn kill_pipe_holders(pipes: &[u64]) {
    let me = std::process::id() as i32;
    let wanted: Vec<String> = pipes.iter().map(|i| format!("pipe:[{i}]")).collect();
    for _ in 0..50 {
        let holders = pipe_holders(me, &wanted);
        if holders.is_empty() {
            return;
        }
        for pid in holders {
            kill_group(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Processes (not `me`, nor its children: a worker forked but not yet
/// exec'd holds copies of everything) with an fd linked to one of `wanted`.
fn pipe_holders(me: i32, wanted: &[String]) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && parent(pid) != Some(me))
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| wanted.iter().any(|w| l.as_os_str() == w.as_str()))
                })
            })
        })
        .collect()
}

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`).
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// The inode number of an open file (a pipe end: what `/proc/<pid>/fd`
/// shows as `pipe:[N]`).
pub fn inode(fd: &impl std::os::fd::AsRawFd) -> Option<u64> {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .ok()
        .map(|st| st.st_ino)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_dead_leaders_orphaned_group_is_killed_and_waited_for() {
        use std::os::unix::process::CommandExt;
        // The shell leads a group of its own and leaves two `sleep`s in it
        // (orphans, not our children), as a killed worker leaves its clones.
        let mut sh = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 30 >/dev/null & sleep 30 >/dev/null & echo $!; exit 0",
            ])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pgid = sh.id() as i32;
        let mut out = String::new();
        sh.stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        let sleeper: i32 = out.trim().parse().expect("pid of sleep");
        // Exited, not reaped: the group's id stays reserved.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pgid)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .expect("waitid");
        assert!(group_runs(pgid), "the sleeps run");
        assert_eq!(
            kill_group_and_wait(pgid, Duration::from_secs(5)),
            Some(true)
        );
        assert!(!group_runs(pgid));
        let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat[stat.rfind(')').expect("stat") + 2..].starts_with('Z'),
            "sleep {sleeper} still runs: {stat}"
        );
        sh.wait().expect("reap");
    }

    #[test]
    fn the_orphaned_holders_of_a_pipe_are_killed() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let ino = inode(&r).expect("inode");
        // `sleep` outlives its shell: an orphan (not our child) holding the
        // pipe, as an exec'd process is once its worker died.
        let status = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & exit 0"])
            .stdout(std::process::Stdio::from(w))
            .status()
            .expect("sh");
        assert!(status.success());
        let start = Instant::now();
        kill_pipe_holders(&[ino]);
        let mut rest = Vec::new();
        std::fs::File::from(r).read_to_end(&mut rest).expect("read");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the writer lived on: {:?}",
            start.elapsed()
        );
    }
}
