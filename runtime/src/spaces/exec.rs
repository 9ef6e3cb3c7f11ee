//! Running commands in a space: piped or on a PTY, as the space's user or
//! another one, in a checked working directory.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::fcntl::OFlag;

use crate::error::{Error, IoContext, Result};
use crate::exec::{self, ExecHandle, ExecOutput, ExecRequest};
use crate::image::resolve_user;
use crate::proto::{Reply, Request};
use crate::space_id::new_space_id;
use crate::store::{Space, SpaceStatus};

use super::registry::Entry;
use super::Runtime;

/// Decrements an exec counter when dropped.
struct ExecGuard(Arc<Entry>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        self.0.execs.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runtime {
    /// Starts a command in a space and returns its pipes. A paused space is
    /// thawed first; a stopped one gives [`Error::NotRunning`]. The start
    /// runs to the end even if the caller goes away; the process is then
    /// killed with its dropped handle (see [`crate::worker::ExitReceiver`]).
    pub async fn exec_spawn(
        &self,
        name: &str,
        req: &ExecRequest,
    ) -> Result<(ExecHandle, ExecActivity)> {
        let name = name.to_string();
        // What the start needs: stdin's bytes stay with the caller.
        let req = ExecRequest {
            command: req.command.clone(),
            cwd: req.cwd.clone(),
            env: req.env.clone(),
            user: req.user.clone(),
            timeout: req.timeout,
            stdin: req.stdin.as_ref().map(|_| Vec::new()),
            output_limit: req.output_limit,
            tty: req.tty,
        };
        self.detached(move |rt| async move { rt.exec_spawn_now(&name, &req).await })
            .await
    }

    async fn exec_spawn_now(
        &self,
        name: &str,
        req: &ExecRequest,
    ) -> Result<(ExecHandle, ExecActivity)> {
        let mut t = crate::timing::Phases::new("exec start");
        let entry = self.entry(name)?;
        entry.execs.fetch_add(1, Ordering::AcqRel);
        let guard = ExecActivity {
            rt: self.clone(),
            name: name.to_string(),
            _g: ExecGuard(entry.clone()),
        };
        // The op lock, shared with other exec starts, is held from the
        // status check to the end of the start: the auto-sleep check (which
        // sees this exec counted) cannot interleave, and no destroy, stop or
        // pause runs while the process joins the space.
        let op = entry.op.read().await;
        let (s, _op) = match entry.snapshot().status {
            SpaceStatus::Running => (entry.snapshot(), op),
            SpaceStatus::Paused => {
                drop(op);
                let op = entry.op.write().await;
                (self.resume_locked(&entry).await?, op.downgrade())
            }
            SpaceStatus::Stopped => return Err(Error::NotRunning),
            _ => return Err(Error::SpaceNotFound),
        };
        t.mark("lock");
        let _ = self.touch(name);
        let handle = self.spawn_in(&s, req).await?;
        t.mark("spawn");
        Ok((handle, guard))
    }

    /// Starts `req` in the running space `s`: its user, working directory
    /// and environment unless `req` overrides them. The caller holds the
    /// space's op lock (shared or not) and made sure the space runs.
    pub(super) async fn spawn_in(&self, s: &Space, req: &ExecRequest) -> Result<ExecHandle> {
        let (Some(init_pid), Some(init_start_time)) = (s.init_pid, s.init_start_time) else {
            return Err(Error::NotRunning);
        };
        let (uid, gid, gids) = if req.cwd.is_none() && req.user.is_none() {
            let u = &s.user;
            (u.uid, u.gid, u.additional_gids.clone())
        } else {
            // Both read the space's files: off the async threads.
            let (rootfs, volume, space, cwd, user) = (
                self.rootfs_dir(s),
                self.space_volume(s),
                s.clone(),
                req.cwd.clone(),
                req.user.clone(),
            );
            tokio::task::spawn_blocking(move || {
                if let Some(cwd) = &cwd {
                    check_dir_in_space(&rootfs, volume.as_deref(), cwd)?;
                }
                exec_user(&rootfs, &space, user.as_deref())
            })
            .await
            .map_err(|e| Error::Container(format!("exec user lookup task: {e}")))??
        };
        let mut env = s.env.clone();
        env.extend(req.env.iter().cloned());
        let wreq = crate::proto::ExecRequest {
            id: s.id.clone(),
            state_root: self.inner.state_root.clone(),
            bundle: self.inner.store.space_dir(&s.id),
            args: req.command.argv(),
            env,
            cwd: req.cwd.clone().unwrap_or_else(|| s.user.workdir.clone()),
            uid,
            gid,
            additional_gids: gids,
            space_uid: s.user.uid,
            init_pid,
            init_start_time,
            tty: None,
        };
        match req.tty {
            Some((cols, rows)) => self.spawn_tty(wreq, cols, rows).await,
            None => self.spawn_piped(wreq, req.stdin.is_some()).await,
        }
    }

    async fn spawn_piped(
        &self,
        wreq: crate::proto::ExecRequest,
        with_stdin: bool,
    ) -> Result<ExecHandle> {
        let (stdin_child, stdin_ours) = if with_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = fs::File::open("/dev/null").ctx(|| "open /dev/null".into())?;
            (OwnedFd::from(null), None)
        };
        let (stdout_ours, stdout_child) = pipe()?;
        let (stderr_ours, stderr_child) = pipe()?;
        let fds = [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ];
        let answer = self.inner.pool.call(&Request::Exec(wreq), &fds).await;
        let pipes: Vec<u64> = [&stdin_child, &stdout_child, &stderr_child]
            .into_iter()
            .filter_map(crate::process::inode)
            .collect();
        drop((stdin_child, stdout_child, stderr_child));
        let (reply, exit) = match answer {
            Err(e) if crate::worker::is_worker_death(&e) => {
                // It may have started the process before it died, and
                // nobody knows its pid: the holders of its stdio pipes are
                // it and what it started.
                let kill = move || crate::process::kill_pipe_holders(&pipes);
                let _ = tokio::task::spawn_blocking(kill).await;
                return Err(e);
            }
            answer => answer?,
        };
        let (pid, exit) = spawned(reply, exit)?;
        Ok(ExecHandle {
            pid,
            stdin: stdin_ours.map(exec::sender).transpose()?,
            stdout: exec::receiver(stdout_ours)?,
            stderr: exec::receiver(stderr_ours)?,
            exit,
            pty: None,
        })
    }

    /// Starts a process on a PTY: libcontainer sends the master to a unix
    /// socket we listen on. The process itself is the one a piped exec
    /// would start ([`crate::spec::exec_process`]), on a terminal.
    async fn spawn_tty(
        &self,
        mut wreq: crate::proto::ExecRequest,
        cols: u16,
        rows: u16,
    ) -> Result<ExecHandle> {
        // Made by `Runtime::open`.
        let dir = self.inner.config.state_dir.join("tty");
        let tag = &new_space_id()[..16];
        let sock_path = dir.join(format!("{tag}.sock"));
        let listener = tokio::net::UnixListener::bind(&sock_path)
            .ctx(|| format!("bind {}", sock_path.display()))?;
        wreq.tty = Some(crate::proto::TtyRequest {
            console_socket: sock_path.clone(),
            cols,
            rows,
        });
        let accept = async {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(|e| Error::io("accept console socket", e))?;
            crate::worker::recv_fd(&stream).await
        };
        let req = Request::Exec(wreq);
        let result = async {
            let (reply, exit) = self.inner.pool.call(&req, &[]).await?;
            let (pid, exit) = spawned(reply, exit)?;
            let master = tokio::time::timeout(std::time::Duration::from_secs(10), accept)
                .await
                .map_err(|_| Error::Container("no PTY from the exec'd process".into()))??;
            Ok::<_, Error>((pid, exit, master))
        }
        .await;
        let _ = tokio::fs::remove_file(&sock_path).await;
        let (pid, exit, master) = result?;
        exec::set_winsize(&master, cols, rows);
        let (stdout, stdin) = exec::pty_ends(&master)?;
        // A TTY merges stderr into the terminal: stderr is an empty pipe.
        let (stderr_ours, stderr_w) = pipe()?;
        drop(stderr_w);
        Ok(ExecHandle {
            pid,
            stdin: Some(stdin),
            stdout,
            stderr: exec::receiver(stderr_ours)?,
            exit,
            pty: Some(Arc::new(master)),
        })
    }

    /// Runs a command to completion and returns its captured output.
    pub async fn exec(&self, name: &str, req: ExecRequest) -> Result<ExecOutput> {
        let (handle, activity) = self.exec_spawn(name, &req).await?;
        let out = exec::collect(handle, req.stdin, req.output_limit, req.timeout).await;
        drop(activity);
        Ok(out)
    }
}

/// Held while an exec runs: counts it as in flight and records activity at
/// its end.
pub struct ExecActivity {
    rt: Runtime,
    name: String,
    _g: ExecGuard,
}

impl Drop for ExecActivity {
    fn drop(&mut self) {
        let _ = self.rt.touch(&self.name);
    }
}

/// Refuses a working directory that is not a directory inside the space
/// whose root is `rootfs` (and workspace volume `volume`, mounted at
/// `/workspace`), resolving it as the space would (symlinks stay inside
/// its root). Blocking.
fn check_dir_in_space(rootfs: &Path, volume: Option<&Path>, dir: &str) -> Result<()> {
    use crate::inroot::{Resolve, Root};
    let bad = |why: &str| Error::InvalidInput(format!("working directory {dir}: {why}"));
    if !dir.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    let (top, rel) = match (volume, Path::new(dir).strip_prefix(crate::WORKSPACE)) {
        (Some(v), Ok(rel)) => (v, Path::new("/").join(rel)),
        _ => (rootfs, Path::new(dir).to_path_buf()),
    };
    let root = Root::open(top).ctx(|| "open the space's root".into())?;
    match root.dir(&rel, Resolve::InRoot) {
        Ok(_) => Ok(()),
        Err(e) => match nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            nix::errno::Errno::ENOENT => Err(bad("no such directory in the space")),
            nix::errno::Errno::ENOTDIR => Err(bad("not a directory")),
            _ => Err(bad(&e.to_string())),
        },
    }
}

/// uid, gid and groups of an exec as `user` (a name from the space's own
/// `/etc/passwd`, `root`, or a number; none: the space's user) in `space`,
/// whose mounted root is `rootfs`. Blocking.
fn exec_user(rootfs: &Path, space: &Space, user: Option<&str>) -> Result<(u32, u32, Vec<u32>)> {
    let Some(u) = user.filter(|u| !u.is_empty()) else {
        let su = &space.user;
        return Ok((su.uid, su.gid, su.additional_gids.clone()));
    };
    if let Ok(uid) = u.parse::<u32>() {
        return Ok((uid, uid, Vec::new()));
    }
    if u == "root" {
        return Ok((0, 0, Vec::new()));
    }
    // The merged view, with users added inside the space; nothing else.
    let unknown = || Error::InvalidInput(format!("unknown user '{u}' in space {}", space.name));
    match resolve_user(&[rootfs.to_path_buf()], u) {
        Ok(Some(p)) => Ok((p.uid, p.gid, p.groups)),
        Ok(None) => Err(unknown()),
        Err(Error::InvalidInput(why)) => Err(Error::InvalidInput(format!(
            "user '{u}' in space {}: cannot read {why}",
            space.name
        ))),
        Err(e) => Err(e),
    }
}

/// The pid and exit channel of a `Spawned` reply.
fn spawned(
    reply: Reply,
    exit: Option<crate::worker::ExitReceiver>,
) -> Result<(i32, crate::worker::ExitReceiver)> {
    match reply {
        Reply::Spawned { pid } => Ok((
            pid,
            exit.ok_or_else(|| Error::Container("no exit channel for exec".into()))?,
        )),
        Reply::Failed { error } => Err(error.into()),
        other => Err(Error::Container(format!(
            "unexpected worker reply {other:?}"
        ))),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe", e.into()))?;
    Ok((r, w))
}
