//! Builds the space init (`init/init.rs`) as a static binary that the runtime
//! embeds and bind-mounts into every space.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "init/init.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("clawdspace-init");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = env::var("TARGET").expect("TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "clawdspace_init",
            "--target",
        ])
        .arg(&target)
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run rustc for the space init");
    assert!(status.success(), "building the static space init failed");
}
