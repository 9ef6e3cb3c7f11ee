//! Process helpers that depend on nothing else in the crate: killing a
//! process group and sizing a terminal (used by exec, the worker pool and
//! the sandbox).

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

/// SIGKILLs the process group led by `pid`, and `pid` itself.
pub fn kill_group(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
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
