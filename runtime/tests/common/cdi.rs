//! A test CDI vendor standing in for `nvidia.com/gpu` on a machine without
//! a GPU, and a fake NVIDIA driver tree for the driver backend (shared by
//! the runtime's and the API's GPU tests).

use std::fs;
use std::path::{Path, PathBuf};

/// The CDI kind of the test GPUs.
pub const KIND: &str = "clawdspace.test/gpu";

/// Writes the test vendor's CDI specs into `dir/cdi` and returns that
/// directory. GPU "0" is `/dev/null` at `/dev/fakegpu0` (env `FAKEGPU_0`),
/// GPU "1" is `/dev/fuse` (not in the default device allow list) at
/// `/dev/fakegpu1` (env `FAKEGPU_1`); every GPU space also gets
/// `FAKEGPU_DRIVER=1.0`, a read-only "driver" bind mount at
/// `/usr/local/fakegpu` and a createContainer hook that appends the
/// container state to `dir/hook.log`. A second kind,
/// `clawdspace.test/broken`, has a hook that fails.
pub fn write_test_vendor(dir: &Path) -> PathBuf {
    let cdi = dir.join("cdi");
    let driver = dir.join("driver");
    fs::create_dir_all(&cdi).expect("cdi dir");
    fs::create_dir_all(&driver).expect("driver dir");
    fs::write(driver.join("version"), "fake-driver 1.0\n").expect("driver file");
    let log = dir.join("hook.log");
    let spec = format!(
        r#"cdiVersion: "0.6.0"
kind: "{KIND}"
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/fakegpu0
          hostPath: /dev/null
      env: ["FAKEGPU_0=yes"]
  - name: "1"
    containerEdits:
      deviceNodes:
        - path: /dev/fakegpu1
          hostPath: /dev/fuse
      env: ["FAKEGPU_1=yes"]
containerEdits:
  env: ["FAKEGPU_DRIVER=1.0"]
  mounts:
    - hostPath: {driver}
      containerPath: /usr/local/fakegpu
      options: ["ro", "nosuid", "nodev", "bind"]
  hooks:
    - hookName: createContainer
      path: /bin/sh
      args: ["sh", "-c", "cat >> {log}; echo >> {log}"]
"#,
        driver = driver.display(),
        log = log.display()
    );
    fs::write(cdi.join("clawdspace-test.yaml"), spec).expect("write spec");
    let broken = r#"cdiVersion: "0.6.0"
kind: "clawdspace.test/broken"
devices:
  - name: "0"
    containerEdits:
      hooks:
        - hookName: createContainer
          path: /bin/false
"#;
    fs::write(cdi.join("broken.yaml"), broken).expect("write broken spec");
    cdi
}

/// UUIDs of the fake driver's two GPUs.
pub const FAKE_UUIDS: [&str; 2] = [
    "GPU-11111111-2222-3333-4444-555555555555",
    "GPU-66666666-7777-8888-9999-000000000000",
];

/// This machine's multiarch triple (`x86_64-linux-gnu`).
pub fn triple() -> String {
    format!("{}-linux-gnu", std::env::consts::ARCH)
}

/// Writes (or upgrades to `version`) a fake NVIDIA driver tree in
/// `dir/driver-root` and returns that root, for the driver backend's
/// discovery (`CLAWDSPACE_NVIDIA_DRIVER_ROOT`). Needs root (device nodes).
///
/// - `proc/driver/nvidia/version` says `version`; two GPUs in
///   `proc/driver/nvidia/gpus/*/information`: minor 0 ([`FAKE_UUIDS`]`[0]`)
///   and minor 1;
/// - `dev/nvidia0` is `/dev/null`'s device (1:3), `dev/nvidia1` is
///   `/dev/fuse`'s (10:229, outside the default device allow list),
///   `nvidiactl` 1:5, `nvidia-uvm` 1:7, `nvidia-uvm-tools` 1:8,
///   `nvidia-modeset` 1:9;
/// - libraries whose contents are `<name> <version>`: `libcuda` in
///   `/usr/lib/<triple>` (link `libcuda.so.1`) and `libnvidia-ml` in
///   `/opt/nvidia/lib` (absolute link `libnvidia-ml.so.1`), both only
///   reachable through `etc/ld.so.cache` (which also lists an i386
///   `libcuda.so.1` first, to be skipped);
///   `libnvidia-ptxjitcompiler` (`.so.1`), `libnvidia-nvvm` (`.so.4`) and
///   `libnvidia-gpucomp` (no link: its soname is its file name) in
///   `/usr/local/nvidia/lib64`, found by the directory scan;
/// - `nvidia-smi` (a script printing `fake nvidia-smi <version>`) in
///   `/usr/local/nvidia/bin`, `nvidia-debugdump` in `/usr/bin`;
/// - the `nvidia-persistenced` socket.
///
/// Files of an earlier version stay (as after a real upgrade); the links,
/// the cache and the version move on.
pub fn write_fake_driver(dir: &Path, version: &str) -> PathBuf {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::{symlink, PermissionsExt};

    let root = dir.join("driver-root");
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let write = |p: &str, text: &str| {
        let path = at(p);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
    };
    let link = |target: &str, p: &str| {
        let path = at(p);
        let _ = fs::remove_file(&path);
        symlink(target, &path).expect("symlink");
    };
    write(
        "/proc/driver/nvidia/version",
        &format!(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Release Build  (test)\n\
             GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
        ),
    );
    for (i, uuid) in FAKE_UUIDS.iter().enumerate() {
        let bus = format!("0000:0{}:00.0", i + 1);
        write(
            &format!("/proc/driver/nvidia/gpus/{bus}/information"),
            &format!(
                "Model: \t\t Fake GPU\nIRQ:   \t\t 42\nGPU UUID: \t {uuid}\n\
                 Video BIOS: \t ??.??.??.??.??\nBus Type: \t PCIe\n\
                 Device Minor: \t {i}\nBus Location: \t {bus}\n"
            ),
        );
    }
    fs::create_dir_all(at("/dev")).expect("dev");
    for (name, major, minor) in [
        ("nvidia0", 1, 3),
        ("nvidia1", 10, 229),
        ("nvidiactl", 1, 5),
        ("nvidia-uvm", 1, 7),
        ("nvidia-uvm-tools", 1, 8),
        ("nvidia-modeset", 1, 9),
    ] {
        let path = at(&format!("/dev/{name}"));
        if !path.exists() {
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .expect("mknod");
        }
    }
    let gnu = format!("/usr/lib/{}", triple());
    write(
        &format!("{gnu}/libcuda.so.{version}"),
        &format!("libcuda {version}\n"),
    );
    link(
        &format!("libcuda.so.{version}"),
        &format!("{gnu}/libcuda.so.1"),
    );
    link("libcuda.so.1", &format!("{gnu}/libcuda.so"));
    write("/usr/lib/i386-linux-gnu/libcuda.so.1", "libcuda i386\n");
    write(
        &format!("/opt/nvidia/lib/libnvidia-ml.so.{version}"),
        &format!("libnvidia-ml {version}\n"),
    );
    link(
        &format!("/opt/nvidia/lib/libnvidia-ml.so.{version}"),
        "/opt/nvidia/lib/libnvidia-ml.so.1",
    );
    let lib64 = "/usr/local/nvidia/lib64";
    for (name, soname) in [
        ("libnvidia-ptxjitcompiler", Some("1")),
        ("libnvidia-nvvm", Some("4")),
        ("libnvidia-gpucomp", None),
    ] {
        write(
            &format!("{lib64}/{name}.so.{version}"),
            &format!("{name} {version}\n"),
        );
        if let Some(s) = soname {
            link(
                &format!("{name}.so.{version}"),
                &format!("{lib64}/{name}.so.{s}"),
            );
        }
    }
    let native = if cfg!(target_arch = "aarch64") {
        0x0a03
    } else {
        0x0303
    };
    let cache = ld_so_cache(&[
        (
            0x0003,
            "libcuda.so.1",
            "/usr/lib/i386-linux-gnu/libcuda.so.1",
        ),
        (native, "libcuda.so.1", &format!("{gnu}/libcuda.so.1")),
        (native, "libcuda.so", &format!("{gnu}/libcuda.so")),
        (
            native,
            "libnvidia-ml.so.1",
            "/opt/nvidia/lib/libnvidia-ml.so.1",
        ),
    ]);
    fs::create_dir_all(at("/etc")).expect("etc");
    fs::write(at("/etc/ld.so.cache"), cache).expect("write cache");
    for (bin, dir) in [
        ("nvidia-smi", "/usr/local/nvidia/bin"),
        ("nvidia-debugdump", "/usr/bin"),
    ] {
        let p = format!("{dir}/{bin}");
        write(&p, &format!("#!/bin/sh\necho \"fake {bin} {version}\"\n"));
        fs::set_permissions(at(&p), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let sock = at("/run/nvidia-persistenced/socket");
    if !sock.exists() {
        fs::create_dir_all(sock.parent().expect("parent")).expect("mkdir");
        std::os::unix::net::UnixListener::bind(&sock).expect("bind socket");
    }
    root
}

/// A glibc linker cache (the new format `ldconfig` writes since glibc
/// 2.32) listing `(flags, name, path)`.
fn ld_so_cache(entries: &[(i32, &str, &str)]) -> Vec<u8> {
    let strings_at = 48 + entries.len() * 24;
    let (mut table, mut strings) = (Vec::new(), Vec::new());
    for (flags, name, path) in entries {
        let mut add = |s: &str| {
            let off = (strings_at + strings.len()) as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let (k, v) = (add(name), add(path));
        table.extend_from_slice(&flags.to_ne_bytes());
        table.extend_from_slice(&k.to_ne_bytes());
        table.extend_from_slice(&v.to_ne_bytes());
        table.extend_from_slice(&[0; 12]); // osversion, hwcap
    }
    let mut out = b"glibc-ld.so.cache1.1".to_vec();
    out.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    out.extend_from_slice(&[0; 20]); // flags, padding, extension offset, unused
    out.extend(table);
    out.extend(strings);
    out
}
