//! Running commands in spaces: request and result types, and collecting a
//! process's output with a cap so a noisy command cannot exhaust the daemon.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::config::DEFAULT_OUTPUT_LIMIT;
use crate::error::{Error, Result};
use crate::worker::ExitReceiver;

pub use crate::process::{kill_group, set_winsize};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A string run with `sh -c`.
    Shell(String),
    /// argv run directly, no shell.
    Argv(Vec<String>),
}

impl Command {
    /// The argv this command runs.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            Command::Argv(a) => a.clone(),
        }
    }
}

/// A command and how to run it.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The command.
    pub command: Command,
    /// Working directory (default: the space's).
    pub cwd: Option<String>,
    /// Extra environment (`KEY=value`), over the space's.
    pub env: Vec<String>,
    /// User name or numeric uid (default: the space's user).
    pub user: Option<String>,
    /// Kill the process group after this long.
    pub timeout: Option<Duration>,
    /// Bytes written to stdin, then closed; `None` = stdin at EOF at once.
    pub stdin: Option<Vec<u8>>,
    /// Cap on captured bytes per stream.
    pub output_limit: usize,
    /// Run on a pseudo-terminal of this size (columns, rows): output comes
    /// on stdout only, input goes to the terminal.
    pub tty: Option<(u16, u16)>,
}

impl ExecRequest {
    /// A request with defaults for `command`.
    pub fn new(command: Command) -> Self {
        ExecRequest {
            command,
            cwd: None,
            env: Vec::new(),
            user: None,
            timeout: None,
            stdin: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            tty: None,
        }
    }
}

/// The outcome of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Captured stdout (at most the limit).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most the limit).
    pub stderr: Vec<u8>,
    /// Exit code; 128+N when killed by signal N.
    pub exit_code: i32,
    /// stdout went past the limit and was cut.
    pub stdout_truncated: bool,
    /// stderr went past the limit and was cut.
    pub stderr_truncated: bool,
    /// The timeout fired and the process group was killed.
    pub timed_out: bool,
}

/// A started process: its pipes and its exit.
pub struct ExecHandle {
    /// Host pid (the leader of its own process group).
    pub pid: i32,
    /// Write end of its stdin, when stdin was requested.
    pub stdin: Option<pipe::Sender>,
    /// Read end of its stdout.
    pub stdout: pipe::Receiver,
    /// Read end of its stderr.
    pub stderr: pipe::Receiver,
    /// Resolves to the exit code.
    pub exit: ExitReceiver,
    /// The PTY master, for a TTY exec (to resize it).
    pub pty: Option<std::sync::Arc<OwnedFd>>,
}

impl ExecHandle {
    /// Sets the terminal size of a TTY exec (no-op otherwise); see
    /// [`set_winsize`].
    pub fn resize(&self, cols: u16, rows: u16) {
        if let Some(pty) = &self.pty {
            set_winsize(pty, cols, rows);
        }
    }

    /// Kills the process and everything in its process group.
    pub fn kill(&self) {
        kill_group(self.pid);
    }
}

/// Our end of a pipe as a non-blocking tokio pipe.
pub(crate) fn receiver(fd: OwnedFd) -> Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd).map_err(|e| Error::io("register pipe", e))
}

/// A PTY master as a reader and a writer (non-blocking, same terminal).
pub(crate) fn pty_ends(master: &OwnedFd) -> Result<(pipe::Receiver, pipe::Sender)> {
    let nb = |fd: &OwnedFd| -> Result<OwnedFd> {
        let d = fd.try_clone().map_err(|e| Error::io("dup pty", e))?;
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&d),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| Error::io("pty non-blocking", e.into()))?;
        Ok(d)
    };
    let r = pipe::Receiver::from_owned_fd_unchecked(nb(master)?)
        .map_err(|e| Error::io("register pty", e))?;
    let w = pipe::Sender::from_owned_fd_unchecked(nb(master)?)
        .map_err(|e| Error::io("register pty", e))?;
    Ok((r, w))
}

/// Our end of a stdin pipe as a non-blocking tokio pipe.
pub(crate) fn sender(fd: OwnedFd) -> Result<pipe::Sender> {
    pipe::Sender::from_owned_fd(fd).map_err(|e| Error::io("register pipe", e))
}

/// Reads `r` to EOF, keeping at most `limit` bytes; returns (bytes, cut).
async fn read_capped(mut r: pipe::Receiver, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                if n > room {
                    cut = true;
                }
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (out, cut)
}

/// Feeds stdin, drains both outputs concurrently and waits for the exit,
/// enforcing `timeout` by killing the process group.
pub async fn collect(
    handle: ExecHandle,
    stdin_data: Option<Vec<u8>>,
    limit: usize,
    timeout: Option<Duration>,
) -> ExecOutput {
    let ExecHandle {
        pid,
        stdin,
        stdout,
        stderr,
        exit,
        pty: _pty,
    } = handle;
    let feed = async move {
        if let (Some(mut w), Some(data)) = (stdin, stdin_data) {
            let _ = w.write_all(&data).await;
        }
    };
    let work = async {
        let ((out, out_cut), (err, err_cut), code, ()) = tokio::join!(
            read_capped(stdout, limit),
            read_capped(stderr, limit),
            exit,
            feed
        );
        (out, out_cut, err, err_cut, code.unwrap_or(255))
    };
    tokio::pin!(work);
    let mut timed_out = false;
    let (out, out_cut, err, err_cut, code) = match timeout {
        Some(t) => match tokio::time::timeout(t, &mut work).await {
            Ok(r) => r,
            Err(_) => {
                timed_out = true;
                kill_group(pid);
                // Something outside the group may still hold the pipes open.
                match tokio::time::timeout(Duration::from_secs(5), &mut work).await {
                    Ok(r) => r,
                    Err(_) => (Vec::new(), false, Vec::new(), false, 137),
                }
            }
        },
        None => work.await,
    };
    ExecOutput {
        stdout: out,
        stderr: err,
        exit_code: code,
        stdout_truncated: out_cut,
        stderr_truncated: err_cut,
        timed_out,
    }
}
