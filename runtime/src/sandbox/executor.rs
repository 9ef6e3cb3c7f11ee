//! How a space's processes run their program: the init (through
//! libcontainer) in a session of its own and under the space's seccomp
//! filter, and every process (an exec too, [`super::join`]) with shell-like
//! exit codes when the program cannot be run (127 not found, 126 not
//! executable).

use std::ffi::CString;
use std::io::Write;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

/// libcontainer's executor for a space's init.
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
        // A new session makes the process its own group leader.
        let _ = nix::unistd::setsid();
        // Loading a filter without CAP_SYS_ADMIN needs no_new_privs (set
        // for every process of a space already).
        let _ = nix::sys::prctl::set_no_new_privs();
        if let Err(e) = crate::seccomp::load(&self.filter) {
            fail(126, &format!("clawdspace: seccomp filter: {e}\n"));
        }
        run(&args)
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Missing programs are reported by `exec` as exit code 127, like a
        // shell, instead of failing the whole request.
        Ok(())
    }
}

/// Runs `args` (searched in `PATH`), or ends this process with a shell's
/// exit code and message on stderr: 127 when the program is not found, 126
/// when it cannot be run.
pub(crate) fn run(args: &[String]) -> ! {
    let Ok(cargs) = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        fail(126, "clawdspace: argument contains a NUL byte\n");
    };
    let Some(prog) = cargs.first() else {
        fail(126, "clawdspace: no program to run\n");
    };
    let err = nix::unistd::execvp(prog, &cargs).err();
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
