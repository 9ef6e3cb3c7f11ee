//! Worker processes that run libcontainer on behalf of the runtime.
//!
//! libcontainer clones with raw `clone3`, `chdir`s and marks its caller
//! non-dumpable, so it must never run on a thread of the async daemon. The
//! runtime starts a few single-threaded workers (the daemon's own executable
//! re-executed with [`WORKER_ARG`]) and talks to each over a SOCK_SEQPACKET
//! socket pair: one request at a time per worker, exec'd processes' stdio
//! passed with SCM_RIGHTS, exits reported asynchronously. See
//! docs/ARCHITECTURE.md.

mod fdpass;
pub mod proto;
mod server;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{oneshot, Semaphore};

use crate::error::{Error, Result};
use proto::{Message, Reply, Request, MAX_MESSAGE};

/// First argument that turns an executable into a worker.
pub const WORKER_ARG: &str = "__clawdspace-worker";
const FD_ENV: &str = "CLAWDSPACE_WORKER_FD";

/// Call first thing in `main` of every binary that hosts a
/// [`crate::Runtime`]: when the process was started as a worker, it serves
/// and exits here; otherwise it returns at once.
pub fn run_if_worker() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(WORKER_ARG)) {
        return;
    }
    let fd: Option<RawFd> = std::env::var(FD_ENV).ok().and_then(|v| v.parse().ok());
    let Some(fd) = fd else {
        eprintln!("clawdspace worker: {FD_ENV} not set");
        std::process::exit(2);
    };
    // libcontainer logs with `tracing`; CLAWDSPACE_WORKER_LOG (e.g. `debug`)
    // shows it on stderr, which workers share with the daemon.
    if let Ok(filter) = std::env::var("CLAWDSPACE_WORKER_LOG") {
        log_to_stderr(&filter);
    }
    // SAFETY: the runtime passed this descriptor to us, open, for our use only.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    server::serve(sock);
    std::process::exit(0);
}

/// Receives one file descriptor sent with SCM_RIGHTS on a connected unix
/// stream (libcontainer's console socket protocol).
pub async fn recv_fd(sock: &tokio::net::UnixStream) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    loop {
        sock.readable()
            .await
            .map_err(|e| Error::io("console socket", e))?;
        let got = sock.try_io(Interest::READABLE, || {
            fdpass::recv(sock.as_raw_fd(), &mut buf).map_err(std::io::Error::from)
        });
        match got {
            Ok((_, mut fds)) if !fds.is_empty() => return Ok(fds.swap_remove(0)),
            Ok((0, _)) => {
                return Err(Error::Container(
                    "console socket closed without a PTY".into(),
                ))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(Error::io("receive PTY", e)),
        }
    }
}

/// Logs `tracing` events matching `filter` (e.g. `warn`) to stderr; for the
/// workers and the runtime's command-line tools.
pub fn log_to_stderr(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Receiver of an exec'd process's exit code.
pub type ExitReceiver = oneshot::Receiver<i32>;

type Pending = oneshot::Sender<(Reply, Option<ExitReceiver>)>;

struct Conn {
    sock: AsyncFd<OwnedFd>,
    pending: Mutex<Option<Pending>>,
    exits: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
    alive: std::sync::atomic::AtomicBool,
    /// Set when the pool closes the worker on purpose.
    closing: std::sync::atomic::AtomicBool,
    child: Mutex<std::process::Child>,
}

impl Conn {
    fn spawn(exe: &Path) -> Result<Arc<Conn>> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| Error::Container(format!("socketpair for worker: {e}")))?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg(WORKER_ARG)
            .env(FD_ENV, their_fd.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe fcntl calls between fork and exec:
        // the worker's end must survive exec, in blocking mode.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(their_fd, libc::F_SETFD, 0) < 0
                    || libc::fcntl(their_fd, libc::F_SETFL, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Container(format!("start worker {}: {e}", exe.display())))?;
        drop(theirs);
        // SAFETY: `ours` is an owned socket that stays open, unshared, for
        // as long as the AsyncFd that owns it.
        let sock = unsafe {
            AsyncFd::register_with_interest(ours, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| Error::io("register worker socket", e.into()))?;
        let conn = Arc::new(Conn {
            sock,
            pending: Mutex::new(None),
            exits: Mutex::new(HashMap::new()),
            alive: std::sync::atomic::AtomicBool::new(true),
            closing: std::sync::atomic::AtomicBool::new(false),
            child: Mutex::new(child),
        });
        tokio::spawn(Conn::read_loop(conn.clone()));
        Ok(conn)
    }

    fn is_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn read_loop(conn: Arc<Conn>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let res = match conn.sock.readable().await {
                Ok(mut guard) => guard.try_io(|s| {
                    fdpass::recv(s.get_ref().as_raw_fd(), &mut buf)
                        .map(|(n, _)| n)
                        .map_err(std::io::Error::from)
                }),
                Err(_) => Ok(Ok(0)),
            };
            let n = match res {
                Err(_would_block) => continue,
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
            };
            if n == 0 {
                break;
            }
            match serde_json::from_slice::<Message>(&buf[..n]) {
                Ok(Message::Reply(reply)) => {
                    let exit_rx = if let Reply::Spawned { pid } = reply {
                        let (tx, rx) = oneshot::channel();
                        lock(&conn.exits).insert(pid, tx);
                        Some(rx)
                    } else {
                        None
                    };
                    if let Some(tx) = lock(&conn.pending).take() {
                        let _ = tx.send((reply, exit_rx));
                    }
                }
                Ok(Message::Exited { pid, code }) => {
                    if let Some(tx) = lock(&conn.exits).remove(&pid) {
                        let _ = tx.send(code);
                    }
                }
                Err(e) => tracing::error!("bad message from worker: {e}"),
            }
        }
        // The worker is gone: fail what waits on it.
        conn.alive
            .store(false, std::sync::atomic::Ordering::Release);
        if let Some(tx) = lock(&conn.pending).take() {
            let _ = tx.send((
                Reply::Failed {
                    error: "worker process died".into(),
                },
                None,
            ));
        }
        lock(&conn.exits).clear();
        let mut child = lock(&conn.child);
        let _ = child.kill();
        let _ = child.wait();
        if conn.closing.load(std::sync::atomic::Ordering::Acquire) {
            tracing::debug!("worker process exited");
        } else {
            tracing::warn!("worker process exited unexpectedly; a new one starts on demand");
        }
    }

    async fn call(&self, data: &[u8], fds: &[RawFd]) -> Result<(Reply, Option<ExitReceiver>)> {
        let (tx, rx) = oneshot::channel();
        *lock(&self.pending) = Some(tx);
        loop {
            let mut guard = self
                .sock
                .writable()
                .await
                .map_err(|e| Error::io("worker socket", e))?;
            match guard
                .try_io(|s| fdpass::send(s.get_ref().as_raw_fd(), data, fds).map_err(Into::into))
            {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    lock(&self.pending).take();
                    return Err(Error::Container(format!("send to worker: {e}")));
                }
                Err(_would_block) => continue,
            }
        }
        rx.await
            .map_err(|_| Error::Container("worker process died".into()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fixed-size pool of worker processes; each runs one request at a time.
pub struct WorkerPool {
    exe: PathBuf,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    idle: Mutex<Vec<usize>>,
    free: Semaphore,
}

impl WorkerPool {
    /// Starts `n` workers running `exe`. Must be called inside a tokio runtime.
    pub fn start(exe: &Path, n: usize) -> Result<Self> {
        let n = n.max(1);
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(tokio::sync::Mutex::new(Some(Conn::spawn(exe)?)));
        }
        Ok(WorkerPool {
            exe: exe.to_path_buf(),
            slots,
            idle: Mutex::new((0..n).collect()),
            free: Semaphore::new(n),
        })
    }

    /// Sends `req` (with `fds`) to an idle worker and waits for its reply.
    /// The descriptors are duplicated into the worker; the caller keeps and
    /// should close its own copies.
    pub async fn call(
        &self,
        req: &Request,
        fds: &[RawFd],
    ) -> Result<(Reply, Option<ExitReceiver>)> {
        let data = serde_json::to_vec(req).map_err(|e| Error::Container(e.to_string()))?;
        let _permit = self
            .free
            .acquire()
            .await
            .map_err(|_| Error::Container("worker pool closed".into()))?;
        let idx = lock(&self.idle)
            .pop()
            .ok_or_else(|| Error::Container("no idle worker".into()))?;
        let result = async {
            let mut slot = self.slots[idx].lock().await;
            if !slot.as_ref().is_some_and(|c| c.is_alive()) {
                *slot = Some(Conn::spawn(&self.exe)?);
            }
            let conn = slot
                .as_ref()
                .cloned()
                .ok_or_else(|| Error::Container("no worker".into()))?;
            drop(slot);
            conn.call(&data, fds).await
        }
        .await;
        lock(&self.idle).push(idx);
        result
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Closing our socket ends each worker; reap them.
        for slot in &mut self.slots {
            if let Some(conn) = slot.get_mut().take() {
                conn.closing
                    .store(true, std::sync::atomic::Ordering::Release);
                let mut child = lock(&conn.child);
                // SAFETY: shutting down our end of a socket we own.
                unsafe { libc::shutdown(conn.sock.get_ref().as_raw_fd(), libc::SHUT_RDWR) };
                let _ = child.wait();
            }
        }
    }
}
