//! How an exec'd process starts inside a space: in a session of its own (so
//! a timeout can kill its whole process group), and with shell-like exit
//! codes when the program cannot be run (127 not found, 126 not executable),
//! and under the space's seccomp filter.

use std::ffi::CString;
use std::io::Write;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

/// Executor for processes joining a space.
#[derive(Clone, Default)]
pub struct SpaceExecutor {
    /// The space's compiled seccomp filter (`crate::seccomp`), loaded last
    /// thing before `execve`.
    pub filter: Vec<u8>,
}

fn fail(code: i32, msg: &str) -> ! {
    let _ = std::io::stderr().write_all(msg.as_bytes());
    // SAFETY: _exit ends this forked child at once, with no atexit handlers
    // or destructors of the worker's state running in it.
    unsafe { libc::_exit(code) }
}

impl Executor for SpaceExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let process = spec.process().as_ref().ok_or(ExecutorError::InvalidArg)?;
        let args = process
            .args()
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        // libcontainer leaves a new terminal at 0x0; size it before the
        // program starts, or it may read the size before the daemon sets it.
        // stdin is the terminal libcontainer connected.
        if let (Some(true), Some(size)) = (process.terminal(), process.console_size()) {
            let dim = |v| u16::try_from(v).unwrap_or(u16::MAX);
            crate::process::set_winsize(std::io::stdin(), dim(size.width()), dim(size.height()));
        }
        // A new session makes the process its own group leader; with a TTY
        // libcontainer already did this, and setsid then fails harmlessly.
        let _ = nix::unistd::setsid();
        // Loading a filter without CAP_SYS_ADMIN needs no_new_privs (set
        // for every process of a space already).
        let _ = nix::sys::prctl::set_no_new_privs();
        if let Err(e) = crate::seccomp::load(&self.filter) {
            fail(126, &format!("clawdspace: seccomp filter: {e}\n"));
        }
        let Ok(cargs) = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
        else {
            fail(126, "clawdspace: argument contains a NUL byte\n");
        };
        let err = nix::unistd::execvp(&cargs[0], &cargs).err();
        let prog = &args[0];
        match err {
            Some(nix::errno::Errno::ENOENT) | Some(nix::errno::Errno::ENOTDIR) => {
                fail(127, &format!("clawdspace: {prog}: command not found\n"))
            }
            Some(e) => fail(
                126,
                &format!("clawdspace: {prog}: cannot execute: {}\n", e.desc()),
            ),
            None => fail(126, "clawdspace: exec returned\n"),
        }
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Missing programs are reported by `exec` as exit code 127, like a
        // shell, instead of failing the whole request.
        Ok(())
    }
}
