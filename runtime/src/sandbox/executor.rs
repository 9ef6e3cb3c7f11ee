//! How a space's processes run their program (the init and every exec,
//! [`super::join`]): with shell-like exit codes when it cannot be run (127
//! not found, 126 not executable).

use std::ffi::CString;
use std::io::Write;

fn fail(code: i32, msg: &str) -> ! {
    let _ = std::io::stderr().write_all(msg.as_bytes());
    // SAFETY: _exit ends this forked child at once, with no atexit handlers
    // or destructors of the worker's state running in it.
    unsafe { libc::_exit(code) }
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
