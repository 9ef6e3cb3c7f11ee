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
