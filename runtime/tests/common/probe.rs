//! The static test probe (`tests/probe/probe.rs`): built once per test run
//! and put into test images only.

use std::process::Command as HostCommand;

use super::TestEnv;

/// The static probe, compiled once per test binary into cargo's temporary
/// directory for integration tests.
pub fn probe_binary() -> &'static std::path::Path {
    static PROBE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe");
        // Built under a name of its own, then renamed: test binaries of one
        // run may build it at the same time.
        let tmp = out.with_extension(std::process::id().to_string());
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let status = HostCommand::new(rustc)
            .args([
                "--edition",
                "2021",
                "-C",
                "opt-level=1",
                "-C",
                "panic=abort",
            ])
            .args(["-C", "target-feature=+crt-static", "-o"])
            .arg(&tmp)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe/probe.rs"))
            .status()
            .expect("run rustc");
        assert!(status.success(), "building the probe failed");
        std::fs::rename(&tmp, &out).expect("rename the probe");
        out
    })
}

/// Imports an image of busybox plus `/bin/probe` into `env` as `tag`. With
/// `root`, the image's `sandbox` user is uid 0, so its spaces run as root
/// with Docker's capabilities, as GPU spaces do (this host has no GPU).
pub fn import_probe_image(env: &TestEnv, tag: &str, root: bool) {
    let rootfs = env.dir.join(format!("probe-rootfs-{root}"));
    super::busybox_rootfs(&rootfs);
    if root {
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nsandbox:x:0:0:root:/home/sandbox:/bin/sh\n",
        )
        .expect("passwd");
    }
    std::fs::copy(probe_binary(), rootfs.join("bin/probe")).expect("copy the probe");
    env.rt()
        .images()
        .import_rootfs(tag, &rootfs, Default::default())
        .expect("import probe image");
}
