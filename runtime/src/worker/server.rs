//! The worker process: a single-threaded loop that runs libcontainer for
//! the runtime. It owns the processes it starts (their parent), reaps them
//! when `SIGCHLD` says one ended, and reports exits of exec'd processes. It
//! ends when the runtime's end of the socket closes (daemon exit or crash);
//! spaces live on.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::fdpass;
use crate::proto::SandboxError;
use crate::proto::{Call, CallId, Message, Reply, Request, MAX_MESSAGE};
use crate::sandbox::lifecycle;

fn send(sock: RawFd, msg: &Message) {
    if let Ok(data) = serde_json::to_vec(msg) {
        // A failed send means the runtime is gone; the loop notices EOF.
        let _ = fdpass::send(sock, &data, &[]);
    }
}

/// Exit code of a wait status: the code, or 128+signal.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// The epoll key of the request socket.
const SOCK_KEY: u64 = 0;
/// The epoll key of the `SIGCHLD` pipe.
const CHLD_KEY: u64 = 1;

/// How long the loop waits before it reaps anyway.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The write end of the `SIGCHLD` pipe, for the handler.
static CHLD_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = CHLD_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno is saved and restored around a write of one byte
        // to a non-blocking pipe (async-signal-safe); a full pipe already
        // says what this byte would.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"c".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// The exec'd processes whose exits this worker reports, and how the loop
/// learns that children ended: a `SIGCHLD` handler writes to a pipe in the
/// loop's epoll set. Every child (space inits too) is reaped; none is held
/// by a descriptor: each would be copied into every process the worker
/// forks and closed again at its `execve` (0.25 ms of a create or an exec
/// with 125 spaces per worker, `perf`).
struct Watched {
    epoll: Epoll,
    chld: OwnedFd,
    reported: HashSet<i32>,
}

impl Watched {
    fn new(sock: &OwnedFd) -> nix::Result<Watched> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sock, EpollEvent::new(EpollFlags::EPOLLIN, SOCK_KEY))?;
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        epoll.add(&r, EpollEvent::new(EpollFlags::EPOLLIN, CHLD_KEY))?;
        // The write end lives as long as the worker.
        CHLD_PIPE.store(std::os::fd::IntoRawFd::into_raw_fd(w), Ordering::Relaxed);
        // SAFETY: installs a handler that only writes to a pipe. Restarted
        // system calls: the worker's blocking calls resume after it.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigchld as *const () as usize;
            sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut()) < 0 {
                return Err(nix::errno::Errno::last());
            }
        }
        Ok(Watched {
            epoll,
            chld: r,
            reported: HashSet::new(),
        })
    }

    /// Reaps every child that ended, reporting those it must (the
    /// children of a request are its own until it replies: this runs only
    /// between requests, or while a destroy waits).
    fn reap(&mut self, sock: RawFd) {
        let mut buf = [0u8; 64];
        while nix::unistd::read(self.chld.as_raw_fd(), &mut buf).is_ok_and(|n| n > 0) {}
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => match (st.pid(), exit_code(st)) {
                    (Some(pid), Some(code)) => (pid.as_raw(), code),
                    _ => continue,
                },
            };
            if self.reported.remove(&pid) {
                send(sock, &Message::Exited { pid, code });
            }
        }
    }
}

/// Serves requests on `sock` until it closes.
pub fn serve(sock: OwnedFd) {
    let fd = sock.as_raw_fd();
    let fault = std::env::var_os(FAULT_ENV).map(std::path::PathBuf::from);
    let Ok(mut watched) = Watched::new(&sock) else {
        tracing::error!("worker: cannot make its epoll set");
        return;
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut events = vec![EpollEvent::empty(); 8];
    let mut last_reap = std::time::Instant::now();
    loop {
        let n = match watched.epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let sock_ready = events[..n].iter().any(|e| e.data() == SOCK_KEY);
        // A `SIGCHLD`, or now and then anyway.
        if events[..n].iter().any(|e| e.data() == CHLD_KEY) || last_reap.elapsed() >= REAP_EVERY {
            watched.reap(fd);
            last_reap = std::time::Instant::now();
        }
        if !sock_ready {
            continue;
        }
        let (n, fds) = match fdpass::recv(fd, &mut buf) {
            Ok((0, _)) => return,
            Ok(x) => x,
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(_) => return,
        };
        let mut t = crate::timing::Phases::new("worker request");
        let (id, reply) = match serde_json::from_slice::<Call>(&buf[..n]) {
            Ok(call) => {
                t.mark("parse");
                let reply = handle(call.request, fds, &mut watched, fd);
                t.mark("handle");
                if matches!(reply, Reply::Spawned { .. }) {
                    die_if_asked(fault.as_deref());
                }
                (call.id, reply)
            }
            Err(e) => (
                // Answer under the id if there is one, so the runtime
                // frees the slot instead of waiting forever.
                serde_json::from_slice::<CallId>(&buf[..n]).map_or(0, |c| c.id),
                Reply::Failed {
                    error: format!("bad request: {e}").into(),
                },
            ),
        };
        send(fd, &Message::Reply { id, reply });
        t.mark("reply");
    }
}

/// Names a file that, while it exists, makes the worker exit right after
/// it started an exec'd process, before replying (it removes the file
/// first: one fault per file). A test hook (see `clawdspace_runtime::testing`)
/// for a worker killed at the worst moment; unset, it costs nothing.
pub const FAULT_ENV: &str = "CLAWDSPACE_WORKER_FAULT_FILE";

fn die_if_asked(fault: Option<&std::path::Path>) {
    if fault.is_some_and(|f| std::fs::remove_file(f).is_ok()) {
        std::process::exit(3);
    }
}

fn handle(req: Request, fds: Vec<OwnedFd>, children: &mut Watched, sock: RawFd) -> Reply {
    let failed = |error: SandboxError| Reply::Failed { error };
    match req {
        Request::Create(r) => match lifecycle::create(&r) {
            // We are the init's parent: reaped with the others when it dies.
            Ok((pid, start_time)) => Reply::Created { pid, start_time },
            Err(e) => failed(e),
        },
        Request::Exec(r) if r.tty.is_some() => {
            let result = r
                .tty
                .as_ref()
                .map_or(Err("no tty".into()), |t| lifecycle::exec_tty(&r, t));
            match result {
                Ok(pid) => {
                    children.reported.insert(pid);
                    Reply::Spawned { pid }
                }
                Err(e) => failed(e),
            }
        }
        Request::Exec(r) => {
            let mut it = fds.into_iter();
            let (Some(i), Some(o), Some(e)) = (it.next(), it.next(), it.next()) else {
                return failed("exec needs stdin, stdout and stderr descriptors".into());
            };
            match lifecycle::exec(&r, i, o, e) {
                Ok(pid) => {
                    children.reported.insert(pid);
                    Reply::Spawned { pid }
                }
                Err(e) => failed(e),
            }
        }
        Request::Pause { id, state_root } => done(lifecycle::pause(&state_root, &id)),
        Request::Resume { id, state_root } => done(lifecycle::resume(&state_root, &id)),
        // While it waits for the space's init to die, this worker reaps its
        // own children that exited: an exec it started in the space is in
        // the space's PID namespace, whose init cannot finish dying until
        // that exec's process is reaped by its parent, this worker.
        Request::Destroy(r) => done(lifecycle::destroy(&r, &mut || children.reap(sock))),
    }
}

fn done(r: Result<(), SandboxError>) -> Reply {
    match r {
        Ok(()) => Reply::Done,
        Err(error) => Reply::Failed { error },
    }
}
