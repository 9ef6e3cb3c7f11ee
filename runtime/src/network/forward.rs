//! IPv4 forwarding (`net.ipv4.ip_forward`) is one switch for the whole
//! host, shared by every clawdspace runtime on it (a daemon, tests running
//! in parallel). Each runtime with a bridge up registers as a user in
//! `/run/clawdspace/net` (tmpfs: gone on reboot, as is the sysctl); the
//! first user records the prior value and turns forwarding on, the last
//! one puts the prior value back. Serialised with a `flock`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::host::{link_exists, sysctl};

const DIR: &str = "/run/clawdspace/net";
const SYSCTL: &str = "ipv4/ip_forward";

fn locked<T>(f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dir = Path::new(DIR);
    let err = |what: &str, e: std::io::Error| Error::Network(format!("{what} {DIR}: {e}"));
    fs::create_dir_all(dir.join("users")).map_err(|e| err("create", e))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| err("open lock in", e))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| err("lock", e.into()))?;
    f(dir)
}

/// Users whose bridge still exists; stale entries (a crashed runtime whose
/// bridge is gone) are removed.
fn live_users(dir: &Path) -> Vec<PathBuf> {
    let mut live = Vec::new();
    for e in fs::read_dir(dir.join("users"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if link_exists(&e.file_name().to_string_lossy()) {
            live.push(e.path());
        } else {
            let _ = fs::remove_file(e.path());
        }
    }
    live
}

/// Registers bridge `user` (which must exist) and turns forwarding on.
pub fn acquire(user: &str) -> Result<()> {
    locked(|dir| {
        let prior = dir.join("ip_forward.prior");
        if live_users(dir).is_empty() && !prior.exists() {
            let now = fs::read_to_string(format!("/proc/sys/net/{SYSCTL}"))
                .map_err(|e| Error::Network(format!("read ip_forward: {e}")))?;
            fs::write(&prior, now.trim())
                .map_err(|e| Error::Network(format!("write {}: {e}", prior.display())))?;
        }
        fs::write(dir.join("users").join(user), "")
            .map_err(|e| Error::Network(format!("register {user}: {e}")))?;
        sysctl(SYSCTL, "1")
    })
}

/// Unregisters `user`; the last user restores the prior forwarding value.
pub fn release(user: &str) -> Result<()> {
    locked(|dir| {
        let _ = fs::remove_file(dir.join("users").join(user));
        let prior = dir.join("ip_forward.prior");
        if live_users(dir).is_empty() {
            if let Ok(v) = fs::read_to_string(&prior) {
                sysctl(SYSCTL, v.trim())?;
                let _ = fs::remove_file(&prior);
            }
        }
        Ok(())
    })
}
