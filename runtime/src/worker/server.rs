//! The worker process: a single-threaded loop that runs libcontainer for
//! the runtime. It owns the processes it starts (their parent), reaps them
//! through pidfds, and reports exits of exec'd processes. It ends when the
//! runtime's end of the socket closes (daemon exit or crash); spaces live on.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
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

/// Serves requests on `sock` until it closes.
pub fn serve(sock: OwnedFd) {
    let fd = sock.as_raw_fd();
    let fault = std::env::var_os(FAULT_ENV).map(std::path::PathBuf::from);
    let mut children: HashMap<i32, Child> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (sock_ready, ready_pids) = {
            let mut pfds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            let pids: Vec<i32> = children.keys().copied().collect();
            for p in &pids {
                pfds.push(PollFd::new(children[p].pidfd.as_fd(), PollFlags::POLLIN));
            }
            // Wake up now and then to reap children nobody watches.
            match poll(&mut pfds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
            let sock_ready = ready(&pfds[0]);
            let ready_pids: Vec<i32> = pids
                .iter()
                .zip(&pfds[1..])
                .filter(|(_, p)| ready(p))
                .map(|(pid, _)| *pid)
                .collect();
            (sock_ready, ready_pids)
        };
        for pid in ready_pids {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(st) => {
                    if let Some(child) = children.remove(&pid) {
                        if child.report {
                            let code = exit_code(st).unwrap_or(255);
                            send(fd, &Message::Exited { pid, code });
                        }
                    }
                }
                // Not our child any more (or never was): stop watching.
                Err(_) => {
                    if let Some(child) = children.remove(&pid) {
                        if child.report {
                            send(fd, &Message::Exited { pid, code: 255 });
                        }
                    }
                }
            }
        }
        reap_unwatched(&children);
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
                let reply = handle(call.request, fds, &mut children);
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

fn watch(children: &mut HashMap<i32, Child>, pid: i32, report: bool) -> Result<(), SandboxError> {
    let pidfd = proc::pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    children.insert(pid, Child { pidfd, report });
    Ok(())
}

fn handle(req: Request, fds: Vec<OwnedFd>, children: &mut HashMap<i32, Child>) -> Reply {
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
        Request::Destroy(r) => done(lifecycle::destroy(&r)),
    }
}

fn done(r: Result<(), SandboxError>) -> Reply {
    match r {
        Ok(()) => Reply::Done,
        Err(error) => Reply::Failed { error },
    }
}
