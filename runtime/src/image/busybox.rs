//! A tiny root filesystem from the host's static busybox (Debian package
//! `busybox-static`): enough to run spaces in tests and benchmarks, or as a
//! minimal image when nothing else is at hand.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Where the static busybox is expected (`CLAWDSPACE_BUSYBOX` overrides).
pub const BUSYBOX: &str = "/bin/busybox";

fn busybox() -> String {
    std::env::var("CLAWDSPACE_BUSYBOX").unwrap_or_else(|_| BUSYBOX.to_string())
}

/// Writes a busybox root filesystem into `dir`: `/bin/busybox` and its
/// applets as symlinks, `/etc/passwd` and `/etc/group` with `root` and
/// `sandbox` (1000:1000, home `/home/sandbox`), `/tmp` (1777).
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    for d in [
        "bin", "etc", "tmp", "home", "root", "proc", "sys", "dev", "usr/bin", "sbin",
    ] {
        let p = dir.join(d);
        fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))
        .ctx(|| "chmod /tmp".into())?;
    let bin = dir.join("bin");
    let bb = busybox();
    fs::copy(&bb, bin.join("busybox"))
        .ctx(|| format!("copy {bb} (install the busybox-static package)"))?;
    let list = std::process::Command::new(&bb)
        .arg("--list")
        .output()
        .ctx(|| format!("run {bb} --list"))?;
    if !list.status.success() {
        return Err(Error::InvalidInput(format!("{bb} --list failed")));
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') && !bin.join(applet).exists() {
            symlink("busybox", bin.join(applet)).ctx(|| format!("link applet {applet}"))?;
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\n",
    )
    .ctx(|| "write /etc/passwd".into())?;
    fs::write(dir.join("etc/group"), "root:x:0:\nsandbox:x:1000:\n")
        .ctx(|| "write /etc/group".into())?;
    Ok(())
}
