//! Running `nft`, with a whole script on stdin (`nft -f -`): one operation
//! costs one process, and nft applies its script as one transaction. Links
//! need no program ([`super::rtnl`]).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A started `prog args…` that was given its script; [`Running::wait`]
/// collects its verdict. Lets one tool run while the caller does other work.
pub struct Running {
    child: std::process::Child,
    what: String,
    script: String,
}

impl Running {
    /// Waits for the process; fails with its stderr.
    pub fn wait(self) -> Result<()> {
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| Error::Network(format!("{}: {e}", self.what)))?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::Network(format!(
            "{} failed ({}): {}; script:\n{}",
            self.what,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.script
        )))
    }
}

/// Starts `prog args…` and writes `script` to its stdin (closed after).
pub fn start(prog: &str, args: &[&str], script: &str) -> Result<Running> {
    let what = format!("{prog} {}", args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Network(format!("{what}: {e} (is {prog} installed?)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(script.as_bytes()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Network(format!("{what}: writing the script: {e}")));
        }
    }
    Ok(Running {
        child,
        what,
        script: script.to_string(),
    })
}

/// `nft -f -`: applies `script` atomically.
pub fn nft(script: &str) -> Result<()> {
    nft_start(script)?.wait()
}

/// Starts `nft -f -` with `script`; the caller waits for it.
pub fn nft_start(script: &str) -> Result<Running> {
    start("nft", &["-f", "-"], script)
}

/// The sysfs directory of network interface `name` (host namespace).
pub fn link_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/sys/class/net").join(name)
}

/// Whether a network interface of this name exists in the host namespace.
pub fn link_exists(name: &str) -> bool {
    link_dir(name).exists()
}

/// Writes a sysctl under `/proc/sys/net/…` (path relative to it).
pub fn sysctl(path: &str, value: &str) -> Result<()> {
    let p = format!("/proc/sys/net/{path}");
    std::fs::write(&p, value).map_err(|e| Error::Network(format!("write {p}: {e}")))
}
