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
mod server;

pub use server::FAULT_ENV;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::error::{Error, Result};
use crate::proto::{Call, Message, Reply, Request, MAX_MESSAGE};

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

/// Sends descriptor `fd` on connected unix socket `sock` (the console
/// socket protocol: the terminal's master, named `/dev/ptmx`).
pub(crate) fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    fdpass::send(sock, b"/dev/ptmx", &[fd])
}

/// Logs `tracing` events matching `filter` (e.g. `warn`) to stderr; for the
/// workers and the runtime's command-line tools.
pub fn log_to_stderr(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The exit code of an exec'd process, to await. The holder owns the
/// process: dropping it before the exit was seen (a caller that went away,
/// a worker that died) SIGKILLs the process's group; the worker reaps it.
pub struct ExitReceiver {
    pid: i32,
    rx: oneshot::Receiver<i32>,
    seen: bool,
}

impl ExitReceiver {
    fn new(pid: i32) -> (oneshot::Sender<i32>, Self) {
        let (tx, rx) = oneshot::channel();
        (
            tx,
            ExitReceiver {
                pid,
                rx,
                seen: false,
            },
        )
    }
}

impl Future for ExitReceiver {
    type Output = std::result::Result<i32, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.seen = r.is_ok();
        Poll::Ready(r)
    }
}

impl Drop for ExitReceiver {
    fn drop(&mut self) {
        if !self.seen && self.rx.try_recv().is_err() {
            crate::process::kill_group(self.pid);
        }
    }
}

const WORKER_DIED: &str = "worker process died";

/// The error of a call whose worker died before answering.
fn died() -> Error {
    Error::Container(WORKER_DIED.into())
}

/// Whether `e` says the worker died before answering: the request may or
/// may not have been carried out, and a new worker serves the next one.
pub fn is_worker_death(e: &Error) -> bool {
    matches!(e, Error::Container(m) if m == WORKER_DIED)
}

/// A worker's reply and, for `Spawned`, the exit of the started process.
pub type Answer = (Reply, Option<ExitReceiver>);

/// Idle list and free count of a pool, shared with its connections: a
/// slot goes back only when its worker answered (or died).
struct Slots {
    idle: Mutex<Vec<usize>>,
    free: Semaphore,
}

impl Slots {
    fn release(&self, idx: usize) {
        lock(&self.idle).push(idx);
        self.free.add_permits(1);
    }
}

/// The request a worker is running: its id and who waits for the answer.
type Pending = (u64, oneshot::Sender<Answer>);

struct Conn {
    sock: AsyncFd<OwnedFd>,
    /// Pool slot this worker fills.
    idx: usize,
    slots: Arc<Slots>,
    /// Whoever takes the pending request out of here returns the slot.
    pending: Mutex<Option<Pending>>,
    exits: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
    alive: AtomicBool,
    /// Set when the pool closes the worker on purpose.
    closing: AtomicBool,
    /// The worker process, until whoever reaps it takes it.
    child: Mutex<Option<std::process::Child>>,
    /// Set once the worker process was reaped (or handed to a reaper).
    reaped: watch::Sender<bool>,
}

/// Starts a worker process running `exe`; returns it and the daemon's end
/// of its socket. Blocking (fork and exec): call on the blocking pool.
fn spawn_process(exe: &Path) -> Result<(std::process::Child, OwnedFd)> {
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
        // A group of its own, which what libcontainer clones from it
        // inherits: killed with the worker's death (see `end_worker`).
        .process_group(0)
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
    Ok((child, ours))
}

/// Started worker processes not yet attached to a pool: dropped unclaimed
/// (a caller that went away while they started), they are ended and reaped.
struct Started(Vec<(std::process::Child, OwnedFd)>);

impl Drop for Started {
    fn drop(&mut self) {
        for (mut child, _) in self.0.drain(..) {
            let _ = child.kill();
            reap(child);
        }
    }
}

/// Starts `n` worker processes on the blocking pool.
async fn spawn_processes(exe: &Path, n: usize) -> Result<Vec<(std::process::Child, OwnedFd)>> {
    let exe = exe.to_path_buf();
    let mut started = tokio::task::spawn_blocking(move || {
        let mut started = Started(Vec::with_capacity(n));
        for _ in 0..n {
            started.0.push(spawn_process(&exe)?);
        }
        Ok::<_, Error>(started)
    })
    .await
    .map_err(|e| Error::Container(format!("starting workers: {e}")))??;
    Ok(std::mem::take(&mut started.0))
}

/// Waits for `child` to exit without holding up an async thread: on the
/// blocking pool inside a tokio runtime, on a thread of its own outside.
fn reap(mut child: std::process::Child) {
    let wait = move || {
        let _ = child.wait();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(wait)),
        Err(_) => drop(std::thread::spawn(wait)),
    }
}

impl Conn {
    /// Serves slot `idx` with a started worker process: registers its
    /// socket and starts reading its messages. Inside a tokio runtime.
    fn attach(
        child: std::process::Child,
        ours: OwnedFd,
        idx: usize,
        slots: Arc<Slots>,
    ) -> Result<Arc<Conn>> {
        let child_pid = child.id() as i32;
        let fail = |child: std::process::Child, e: std::io::Error| {
            // A worker nobody talks to: end it without waiting here.
            let mut child = child;
            let _ = child.kill();
            reap(child);
            Error::io("register worker socket", e)
        };
        // SAFETY: `ours` is an owned socket that stays open, unshared, for
        // as long as the AsyncFd that owns it.
        let sock = match unsafe {
            AsyncFd::register_with_interest(ours, Interest::READABLE | Interest::WRITABLE)
        } {
            Ok(sock) => sock,
            Err(e) => return Err(fail(child, e.into())),
        };
        let (reaped, _) = watch::channel(false);
        let conn = Arc::new(Conn {
            sock,
            idx,
            slots,
            pending: Mutex::new(None),
            exits: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            child: Mutex::new(Some(child)),
            reaped,
        });
        // A worker whose pidfd cannot be had is still seen dying at EOF.
        let pidfd = crate::sandbox::proc::pidfd_open(child_pid)
            .and_then(|fd| {
                // SAFETY: the pidfd is owned by the AsyncFd for its whole life.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(Into::into)
            })
            .map_err(|e| tracing::warn!("pidfd of a worker: {e}"))
            .ok();
        tokio::spawn(Conn::read_loop(conn.clone(), pidfd));
        Ok(conn)
    }

    /// Ends the worker: closing our end of its socket makes it exit once
    /// its request in flight (if any) is done. Its read loop reaps it.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        // SAFETY: shutting down our end of a socket we own.
        unsafe { libc::shutdown(self.sock.get_ref().as_raw_fd(), libc::SHUT_RDWR) };
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Takes the pending request if it is `id` (any id: `None`); the taker
    /// returns the slot.
    fn take_pending(&self, id: Option<u64>) -> Option<oneshot::Sender<Answer>> {
        let mut p = lock(&self.pending);
        match &*p {
            Some((pid, _)) if id.is_none_or(|id| id == *pid) => p.take().map(|(_, tx)| tx),
            _ => None,
        }
    }

    /// Receives one message without waiting: `Some(0)` at EOF, `None`
    /// when there is none now.
    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        match fdpass::recv(self.sock.get_ref().as_raw_fd(), buf) {
            Ok((n, _)) => Some(n),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => None,
            Err(_) => Some(0),
        }
    }

    /// Hands a reply to the request it answers (by id) and frees the slot;
    /// passes exit codes on.
    fn on_message(&self, data: &[u8]) {
        match serde_json::from_slice::<Message>(data) {
            Ok(Message::Reply { id, reply }) => {
                let exit = if let Reply::Spawned { pid } = reply {
                    let (tx, rx) = ExitReceiver::new(pid);
                    lock(&self.exits).insert(pid, tx);
                    Some(rx)
                } else {
                    None
                };
                let Some(tx) = self.take_pending(Some(id)) else {
                    // Dropping `exit` kills what nobody asked for.
                    tracing::warn!(id, "worker reply to no pending request; ignored");
                    return;
                };
                // Free first: the caller may send its next request at once.
                self.slots.release(self.idx);
                // A caller that went away drops the answer; an exec'd
                // process is then killed with its `ExitReceiver`.
                let _ = tx.send((reply, exit));
            }
            Ok(Message::Exited { pid, code }) => {
                if let Some(tx) = lock(&self.exits).remove(&pid) {
                    let _ = tx.send(code);
                }
            }
            Err(e) => tracing::error!("bad message from worker: {e}"),
        }
    }

    /// Reads the worker's messages until it dies. Death is seen on its
    /// pidfd, not only as EOF: processes libcontainer cloned from the
    /// worker (stuck half-way when it was killed) may hold its socket open.
    async fn read_loop(conn: Arc<Conn>, pidfd: Option<AsyncFd<OwnedFd>>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let exited = async {
            match &pidfd {
                Some(p) => drop(p.readable().await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(exited);
        'serve: loop {
            tokio::select! {
                ready = conn.sock.readable() => {
                    let Ok(mut guard) = ready else { break 'serve };
                    match conn.try_recv(&mut buf) {
                        None => guard.clear_ready(),
                        Some(0) => break 'serve,
                        Some(n) => conn.on_message(&buf[..n]),
                    }
                }
                () = &mut exited => {
                    // Take what it sent before it died, then give up.
                    while let Some(n) = conn.try_recv(&mut buf).filter(|n| *n > 0) {
                        conn.on_message(&buf[..n]);
                    }
                    break 'serve;
                }
            }
        }
        // The worker is gone: no new request goes to it.
        conn.alive.store(false, Ordering::Release);
        let child = lock(&conn.child).take();
        let closing = conn.closing.load(Ordering::Acquire);
        if let Some(child) = child {
            // Never waited for on an async thread.
            let _ = tokio::task::spawn_blocking(move || end_worker(child, closing)).await;
        }
        // Only now that nothing of the worker runs any more, fail what
        // waits on it (a create rolls back) and free its slot (the next
        // request there starts a new worker).
        if let Some(tx) = conn.take_pending(None) {
            conn.slots.release(conn.idx);
            // The caller sees the closed channel: `died()`.
            drop(tx);
        }
        lock(&conn.exits).clear();
        conn.reaped.send_replace(true);
        if closing {
            tracing::debug!("worker process exited");
        } else {
            tracing::warn!("worker process exited unexpectedly; a new one starts on demand");
        }
    }

    async fn send(&self, data: &[u8], fds: &[RawFd]) -> Result<()> {
        loop {
            let mut guard = self
                .sock
                .writable()
                .await
                .map_err(|e| Error::io("worker socket", e))?;
            // One datagram: sent whole or not at all.
            match guard
                .try_io(|s| fdpass::send(s.get_ref().as_raw_fd(), data, fds).map_err(Into::into))
            {
                Ok(Ok(())) => return Ok(()),
                // The worker died before its death was noticed: the request
                // never reached it, so it is a worker death (idempotent
                // requests are asked again on a fresh worker).
                Ok(Err(e))
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ECONNREFUSED)
                    ) =>
                {
                    return Err(died())
                }
                Ok(Err(e)) => return Err(Error::Container(format!("send to worker: {e}"))),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Ends a worker whose socket closed or whose process exited, and what it
/// left running, then reaps it. Blocking.
///
/// Dead already, or (EOF without a pidfd) made so; a worker closed on
/// purpose finishes its request in flight first. Processes libcontainer
/// cloned for that request (a create's intermediate process and, until it
/// calls `setsid`, its init) outlive a worker that was killed and carry on:
/// they would make the space's cgroup, or directories under its bundle,
/// after the rollback of the failed create removed them. They are in the
/// worker's process group: it is killed, and they are waited for, before
/// the worker is reaped (its pid, the group's id, stays reserved until
/// then) and before its caller hears of its death. An init that already
/// called `setsid` is in the space's cgroup, which the rollback kills.
fn end_worker(mut child: std::process::Child, closing: bool) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    if !closing {
        let _ = child.kill();
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Exited, not reaped.
    let exited = loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.is_ok(),
        }
    };
    if exited {
        match crate::process::kill_group_and_wait(pid.as_raw(), GROUP_GRACE) {
            Some(false) => {}
            Some(true) => tracing::info!(
                worker = pid.as_raw(),
                "killed what libcontainer had cloned from a dead worker"
            ),
            None => tracing::error!(
                worker = pid.as_raw(),
                "processes cloned from a dead worker still run {} s after SIGKILL",
                GROUP_GRACE.as_secs()
            ),
        }
    }
    let _ = child.wait();
}

/// How long a dead worker's clones may take to die after SIGKILL.
const GROUP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A slot taken for one request until the request reaches its worker;
/// dropped before that (an error, a cancelled caller), it frees the slot.
struct Lease<'a> {
    slots: &'a Slots,
    idx: usize,
    /// The worker and request id once the request is pending there.
    pending: Option<(Arc<Conn>, u64)>,
    sent: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        if let Some((conn, id)) = &self.pending {
            if conn.take_pending(Some(*id)).is_none() {
                // The read loop took it (the worker died) and freed the slot.
                return;
            }
        }
        self.slots.release(self.idx);
    }
}

/// Sizes of a worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker slots.
    pub size: usize,
    /// Slots with no request in flight.
    pub idle: usize,
}

/// A fixed-size pool of worker processes; each runs one request at a time.
/// Cancel-safe: a slot returns to the idle list only when its worker's
/// reply to the request (matched by id) or the worker's death is seen,
/// whatever happens to the caller.
pub struct WorkerPool {
    exe: PathBuf,
    conns: Vec<Mutex<Option<Arc<Conn>>>>,
    slots: Arc<Slots>,
    next_id: AtomicU64,
}

impl WorkerPool {
    /// Starts `n` workers running `exe` (the processes are started on the
    /// blocking pool). Must be called inside a tokio runtime.
    pub async fn start(exe: &Path, n: usize) -> Result<Self> {
        let n = n.max(1);
        let slots = Arc::new(Slots {
            idle: Mutex::new((0..n).collect()),
            free: Semaphore::new(n),
        });
        let mut conns = Vec::with_capacity(n);
        for (idx, (child, sock)) in spawn_processes(exe, n).await?.into_iter().enumerate() {
            conns.push(Mutex::new(Some(Conn::attach(
                child,
                sock,
                idx,
                slots.clone(),
            )?)));
        }
        Ok(WorkerPool {
            exe: exe.to_path_buf(),
            conns,
            slots,
            next_id: AtomicU64::new(1),
        })
    }

    /// Pool size and idle slots now.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.conns.len(),
            idle: lock(&self.slots.idle).len(),
        }
    }

    /// The worker of slot `idx`, started anew if it died. The caller holds
    /// the slot's lease: nobody else replaces its worker meanwhile.
    async fn conn(&self, idx: usize) -> Result<Arc<Conn>> {
        if let Some(c) = lock(&self.conns[idx]).as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let (child, sock) = spawn_processes(&self.exe, 1)
            .await?
            .pop()
            .ok_or_else(|| Error::Container("no worker started".into()))?;
        let c = Conn::attach(child, sock, idx, self.slots.clone())?;
        *lock(&self.conns[idx]) = Some(c.clone());
        Ok(c)
    }

    /// Ends every worker and waits until each has exited and been reaped
    /// (a worker first finishes the request it runs). Later calls start
    /// new workers.
    pub async fn close(&self) {
        let conns: Vec<Arc<Conn>> = self
            .conns
            .iter()
            .filter_map(|slot| lock(slot).take())
            .collect();
        for c in &conns {
            c.close();
        }
        for c in conns {
            let mut reaped = c.reaped.subscribe();
            let _ = reaped.wait_for(|r| *r).await;
        }
    }

    /// Sends `req` (with `fds`) to an idle worker and waits for its reply.
    /// The descriptors are duplicated into the worker; the caller keeps and
    /// should close its own copies. Dropping the returned future never
    /// loses the worker: its slot is freed when the reply arrives.
    pub async fn call(&self, req: &Request, fds: &[RawFd]) -> Result<Answer> {
        let mut t = crate::timing::Phases::new("worker call");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = serde_json::to_vec(&Call {
            id,
            request: req.clone(),
        })
        .map_err(|e| Error::Container(e.to_string()))?;
        self.slots
            .free
            .acquire()
            .await
            .map_err(|_| Error::Container("worker pool closed".into()))?
            .forget();
        t.mark("slot");
        let Some(idx) = lock(&self.slots.idle).pop() else {
            self.slots.free.add_permits(1);
            return Err(Error::Container("no idle worker".into()));
        };
        let mut lease = Lease {
            slots: &self.slots,
            idx,
            pending: None,
            sent: false,
        };
        let conn = self.conn(idx).await?;
        let (tx, rx) = oneshot::channel();
        *lock(&conn.pending) = Some((id, tx));
        lease.pending = Some((conn.clone(), id));
        // The read loop marks a worker dead before it takes what is pending:
        // if it is dead now, nobody answers this request.
        if !conn.is_alive() {
            return Err(died());
        }
        t.mark("conn");
        conn.send(&data, fds).await?;
        t.mark("send");
        lease.sent = true;
        drop(lease);
        let answer = rx.await.map_err(|_| died());
        t.mark("answer");
        answer
    }
}

impl Drop for WorkerPool {
    /// Ends the workers without waiting for them: each exits once its
    /// request in flight is done, and is reaped off the async threads.
    fn drop(&mut self) {
        for slot in &mut self.conns {
            let conn = slot.get_mut().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(conn) = conn {
                conn.close();
                // Reaped here rather than by the read loop, which stops with
                // the tokio runtime, maybe before the worker exits.
                if let Some(child) = lock(&conn.child).take() {
                    reap(child);
                    conn.reaped.send_replace(true);
                }
            }
        }
    }
}
