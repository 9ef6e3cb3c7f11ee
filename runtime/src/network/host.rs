//! Small host helpers: links in sysfs, sysctls. Links, namespaces and
//! rules need no program ([`super::rtnl`], [`super::nfnl`]).

use crate::error::{Error, Result};

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
