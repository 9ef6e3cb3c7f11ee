//! The worker process: a single-threaded loop that runs libcontainer for
//! the runtime. It owns the processes it starts (their parent), reaps them
//! through pidfds, and reports exits of exec'd processes. It ends when the
//! runtime's end of the socket closes (daemon exit or crash); spaces live on.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::fdpass;
use crate::proto::SandboxError;
use crate::proto::{Call, CallId, Message, Reply, Request, MAX_MESSAGE};
use crate::sandbox::{lifecycle, proc};

struct Child {
    pidfd: OwnedFd,
    report: bool,
}

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

/// The epoll key of the request socket (children are keyed by pid).
const SOCK_KEY: u64 = u64::MAX;

/// How long the loop waits before it reaps unwatched children anyway.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// After a failed request, how long unwatched children are reaped at every
/// [`REAP_SOON`] (what libcontainer forked may exit just after the reply).
const REAP_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(1);
/// The loop's wait (ms) meanwhile.
const REAP_SOON: u16 = 20;

/// The processes this worker watches, in an epoll set with the request
/// socket: waiting costs the same with 1 or 1000 spaces' inits (a `poll`
/// of every pidfd per request grew with them).
struct Watched {
    epoll: Epoll,
    children: HashMap<i32, Child>,
}

impl Watched {
    fn new(sock: &OwnedFd) -> nix::Result<Watched> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(sock, EpollEvent::new(EpollFlags::EPOLLIN, SOCK_KEY))?;
        Ok(Watched {
            epoll,
            children: HashMap::new(),
        })
    }

    fn remove(&mut self, pid: i32) -> Option<Child> {
        let child = self.children.remove(&pid)?;
        let _ = self.epoll.delete(&child.pidfd);
        Some(child)
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
    let mut events = vec![EpollEvent::empty(); 64];
    let mut last_reap = std::time::Instant::now();
    let mut reap_soon_until = last_reap;
    loop {
        // Wake up now and then to reap children nobody watches: often for
        // a while after a failed request.
        let soon = reap_soon_until > std::time::Instant::now();
        let timeout = if soon { REAP_SOON } else { 1000u16 };
        let n = match watched.epoll.wait(&mut events, EpollTimeout::from(timeout)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let sock_ready = reap_ready(&mut watched, &events[..n], fd);
        if n == 0 || soon || last_reap.elapsed() >= REAP_EVERY {
            reap_unwatched(&watched.children);
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
        let (id, reply) = match serde_json::from_slice::<Call>(&buf[..n]) {
            Ok(call) => {
                let reply = handle(call.request, fds, &mut watched, fd);
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
        // A failed request may leave processes libcontainer forked: reap
        // them now rather than at the next idle second.
        let failed = matches!(reply, Reply::Failed { .. });
        send(fd, &Message::Reply { id, reply });
        if failed {
            reap_unwatched(&watched.children);
            last_reap = std::time::Instant::now();
            reap_soon_until = last_reap + REAP_AFTER_FAILURE;
        }
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

/// Reaps the watched children whose pidfds are in `events` and reports
/// those it must; returns whether the request socket is ready too.
fn reap_ready(w: &mut Watched, events: &[EpollEvent], sock: RawFd) -> bool {
    let mut sock_ready = false;
    for ev in events {
        let key = ev.data();
        if key == SOCK_KEY {
            sock_ready = true;
            continue;
        }
        let Ok(pid) = i32::try_from(key) else {
            continue;
        };
        let code = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => continue,
            Ok(st) => exit_code(st).unwrap_or(255),
            // Not our child any more (or never was): stop watching.
            Err(_) => 255,
        };
        if w.remove(pid).is_some_and(|c| c.report) {
            send(sock, &Message::Exited { pid, code });
        }
    }
    sock_ready
}

/// Reaps the watched children that exited by now (the epoll set, not
/// waiting; a request left on the socket stays for the loop).
fn reap_exited(w: &mut Watched, sock: RawFd) {
    let mut events = [EpollEvent::empty(); 64];
    if let Ok(n) = w.epoll.wait(&mut events, EpollTimeout::ZERO) {
        reap_ready(w, &events[..n], sock);
    }
}

/// Reaps exited children that no pidfd watches: processes libcontainer
/// forked for a request that then failed. Left as zombies they would keep a
/// space's PID namespace from ever ending (its init waits for them).
fn reap_unwatched(children: &HashMap<i32, Child>) {
    let me = std::process::id();
    let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
        return;
    };
    for pid in list
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if !children.contains_key(&pid) {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

fn watch(w: &mut Watched, pid: i32, report: bool) -> Result<(), SandboxError> {
    let pidfd = proc::pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    let key = u64::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
    w.epoll
        .add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, key))
        .map_err(|e| format!("watch pid {pid}: {e}"))?;
    if let Some(old) = w.children.insert(pid, Child { pidfd, report }) {
        let _ = w.epoll.delete(&old.pidfd);
    }
    Ok(())
}

fn handle(req: Request, fds: Vec<OwnedFd>, children: &mut Watched, sock: RawFd) -> Reply {
    let failed = |error: SandboxError| Reply::Failed { error };
    match req {
        Request::Create(r) => match lifecycle::create(&r) {
            Ok((pid, start_time)) => {
                // We are the init's parent: reap it when it dies. (A failed
                // pidfd_open means it is already gone; the runtime notices.)
                let _ = watch(children, pid, false);
                Reply::Created { pid, start_time }
            }
            Err(e) => failed(e),
        },
        Request::Exec(r) if r.tty.is_some() => {
            let result = r
                .tty
                .as_ref()
                .map_or(Err("no tty".into()), |t| lifecycle::exec_tty(&r, t));
            match result {
                Ok(pid) => match watch(children, pid, true) {
                    Ok(()) => Reply::Spawned { pid },
                    Err(e) => failed(e),
                },
                Err(e) => failed(e),
            }
        }
        Request::Exec(r) => {
            let mut it = fds.into_iter();
            let (Some(i), Some(o), Some(e)) = (it.next(), it.next(), it.next()) else {
                return failed("exec needs stdin, stdout and stderr descriptors".into());
            };
            match lifecycle::exec(&r, i, o, e) {
                Ok(pid) => match watch(children, pid, true) {
                    Ok(()) => Reply::Spawned { pid },
                    Err(e) => failed(e),
                },
                Err(e) => failed(e),
            }
        }
        Request::Pause { id, state_root } => done(lifecycle::pause(&state_root, &id)),
        Request::Resume { id, state_root } => done(lifecycle::resume(&state_root, &id)),
        // While it waits for the space's init to die, this worker reaps its
        // own children that exited: an exec it started in the space is in
        // the space's PID namespace, whose init cannot finish dying until
        // that exec's process is reaped by its parent, this worker.
        Request::Destroy(r) => done(lifecycle::destroy(&r, &mut || reap_exited(children, sock))),
    }
}

fn done(r: Result<(), SandboxError>) -> Reply {
    match r {
        Ok(()) => Reply::Done,
        Err(error) => Reply::Failed { error },
    }
}
