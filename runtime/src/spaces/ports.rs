//! Connections to a port inside a space: the daemon joins the space's own
//! network namespace on a short-lived thread of its own, connects to the
//! port on the space's loopback, and hands the socket back. Nothing is
//! opened on the host or the bridge, so `network: none` spaces are reached
//! the same way, and only the space's own namespace ever is.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::sandbox::proc::start_time;
use crate::store::SpaceStatus;

use super::Runtime;

/// How long connecting to a port inside a space may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Runtime {
    /// A TCP connection to `port` on the loopback of running space `name`.
    /// A paused space is not woken here (the caller decides); a port nobody
    /// listens on is [`Error::PortClosed`].
    pub async fn connect_port(&self, name: &str, port: u16) -> Result<tokio::net::TcpStream> {
        if port == 0 {
            return Err(Error::InvalidInput("Invalid port: 0 (1-65535)".into()));
        }
        let space = self.get(name)?;
        if space.status != SpaceStatus::Running {
            return Err(Error::NotRunning);
        }
        let (Some(pid), Some(start)) = (space.init_pid, space.init_start_time) else {
            return Err(Error::NotRunning);
        };
        let name = name.to_string();
        let stream = tokio::task::spawn_blocking(move || connect_in(pid, start, port, &name))
            .await
            .map_err(|e| Error::Container(format!("port connection task: {e}")))??;
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("port connection", e))?;
        tokio::net::TcpStream::from_std(stream).map_err(|e| Error::io("port connection", e))
    }
}

/// Connects to `127.0.0.1:port` in the network namespace of init `pid`
/// (which must still be the process that started at `start`).
fn connect_in(pid: i32, start: u64, port: u16, name: &str) -> Result<TcpStream> {
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|_| Error::NotRunning)?;
    // Checked after opening: the descriptor is the namespace of the very
    // init that started at `start`, not of a process that reused its pid.
    if start_time(pid) != Some(start) {
        return Err(Error::NotRunning);
    }
    let name = name.to_string();
    // setns changes the calling thread only: a thread of our own that ends
    // right after, never a runtime or blocking-pool thread.
    std::thread::Builder::new()
        .name("cs-port".into())
        .spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Network(format!("joining the network of space {name}: {e}")))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
                Error::PortClosed(format!(
                    "Nothing answers on port {port} in space '{name}' ({e})"
                ))
            })
        })
        .map_err(|e| Error::io("starting a port connection thread", e))?
        .join()
        .map_err(|_| Error::Network("port connection thread panicked".into()))?
}
