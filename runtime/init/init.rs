//! `clawdspace-init`: PID 1 of every space.
//!
//! Built as a small static binary by `runtime/build.rs` (no dependencies, so
//! it compiles with plain `rustc`) and bind-mounted read-only into each space,
//! as `docker run --init` does. It keeps the space alive and reaps every
//! orphan re-parented to it, so `sh -c 'sleep 100 &'` leaves no zombie.
//! SIGTERM, SIGINT and SIGHUP end it, which ends the space's PID namespace.

use std::os::raw::c_int;

/// glibc's `sigset_t`: 1024 bits on every Linux architecture.
#[repr(C)]
struct SigSet([u64; 16]);

/// glibc's `siginfo_t`: 128 bytes; only `si_signo` (the first int) is read.
#[repr(C)]
struct SigInfo {
    signo: c_int,
    _rest: [c_int; 31],
}

const SIG_BLOCK: c_int = 0;
const WNOHANG: c_int = 1;
const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

extern "C" {
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

fn reap_all() {
    let mut status: c_int = 0;
    // SAFETY: waitpid with a valid status pointer; -1 means any child.
    while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
}

fn main() {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a properly sized, writable sigset_t.
    unsafe {
        sigfillset(&mut set);
        sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut());
    }
    loop {
        let mut info = SigInfo { signo: 0, _rest: [0; 31] };
        // SAFETY: both pointers are valid for the call.
        let sig = unsafe { sigwaitinfo(&set, &mut info) };
        match sig {
            SIGTERM | SIGINT | SIGHUP => std::process::exit(0),
            _ => reap_all(),
        }
    }
}
