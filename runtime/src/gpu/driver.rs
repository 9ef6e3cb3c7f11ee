//! GPU spaces with only the NVIDIA driver installed: the CDI edits that
//! `nvidia-ctk cdi generate` would write, made from the driver itself and
//! applied through the same CDI code as a spec file.
//!
//! Everything is looked up under a driver root (`/` on a host; a test tree
//! in tests):
//! - the kernel module: its version in `proc/driver/nvidia/version`, its
//!   GPUs (PCI bus, UUID, device minor) in
//!   `proc/driver/nvidia/gpus/<bus>/information`;
//! - device nodes: `dev/nvidia<minor>` per GPU, and `dev/nvidiactl`,
//!   `nvidia-uvm`, `nvidia-uvm-tools`, `nvidia-modeset` for every GPU space;
//! - the compute and utility libraries ([`LIBRARIES`]) through the linker
//!   cache (`etc/ld.so.cache`), then in [`LIBRARY_DIRS`]; each is mounted
//!   read-only at its soname in [`SPACE_LIB_DIR`], which is added to the
//!   space's `LD_LIBRARY_PATH`;
//! - [`BINARIES`] (`nvidia-smi`, …) in [`BINARY_DIRS`], mounted read-only in
//!   `/usr/bin`; the `nvidia-persistenced` socket when it runs.
//!
//! Symlinks are resolved inside the root (`openat2` `RESOLVE_IN_ROOT`), as
//! the driver's own programs would see them with that root as `/`.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use container_device_interface::specs::config::Spec as CdiSpec;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use serde_json::{json, Value};

use super::cdi::{self, Fingerprint};
use super::{GpuInfo, DEFAULT_DRIVER_CAPABILITIES, NVIDIA_CDI_KIND};
use crate::inroot::{open_beneath, Resolve, Root};

/// Where the driver's libraries appear in a space (NVIDIA's convention:
/// CUDA images already have it on `LD_LIBRARY_PATH`).
pub const SPACE_LIB_DIR: &str = "/usr/local/nvidia/lib64";
/// Where the driver's programs appear in a space.
pub const SPACE_BIN_DIR: &str = "/usr/bin";
/// The compute and utility libraries (libnvidia-container's lists for
/// `NVIDIA_DRIVER_CAPABILITIES=compute,utility`), by name without `.so`.
pub const LIBRARIES: &[&str] = &[
    "libcuda",
    "libnvidia-ml",
    "libnvidia-ptxjitcompiler",
    "libnvidia-nvvm",
    "libnvidia-gpucomp",
    "libcudadebugger",
    "libnvidia-opencl",
    "libnvidia-cfg",
    "libnvidia-allocator",
    "libnvidia-pkcs11",
    "libnvidia-pkcs11-openssl3",
    "libnvidia-nscq",
    "libnvidia-fatbinaryloader",
    "libnvidia-compiler",
];
/// Libraries without which a GPU space is refused.
const REQUIRED_LIBRARIES: &[&str] = &["libcuda", "libnvidia-ml"];
/// Library directories searched (in this order) for what the linker cache
/// does not list; `{triple}` is this machine's multiarch triple
/// (`x86_64-linux-gnu`).
pub const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/nvidia/lib64",
    "/usr/lib/{triple}",
    "/lib/{triple}",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib",
];
/// The driver's utility and compute programs.
pub const BINARIES: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
];
/// Directories searched (in this order) for [`BINARIES`].
pub const BINARY_DIRS: &[&str] = &[
    "/usr/local/nvidia/bin",
    "/usr/bin",
    "/usr/local/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
];
/// Device nodes every GPU space gets besides its GPUs (when present;
/// `nvidiactl` is required).
const CONTROL_NODES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];
/// The socket of `nvidia-persistenced`, mounted where it is when present.
const PERSISTENCED_SOCKET: &str = "/run/nvidia-persistenced/socket";
/// The most we read of a `/proc/driver/nvidia` file.
const MAX_PROC_BYTES: u64 = 64 << 10;
/// The most GPUs we read the kernel's description of.
const MAX_GPUS: usize = 256;

/// One GPU as the kernel module describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelGpu {
    /// PCI bus location (`0000:01:00.0`).
    pub bus: String,
    /// `GPU-…`, or empty when the kernel does not say.
    pub uuid: String,
    /// Minor number of its `/dev/nvidiaN`.
    pub minor: u32,
}

/// What the generated edits depend on: when any of it changes they are
/// made again (a driver upgrade changes the version, the libraries'
/// directories and the linker cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The loaded kernel module's version (`580.95.05`).
    pub version: String,
    /// Its GPUs, in NVML index order.
    pub gpus: Vec<KernelGpu>,
    files: Fingerprint,
}

/// The edits for one driver, as a CDI spec of kind `nvidia.com/gpu`
/// (devices: each GPU by index and UUID, and `all`).
#[derive(Debug, Clone)]
pub struct Generated {
    /// The driver version they were made for.
    pub version: String,
    /// The spec's device names: indexes first, then UUIDs, then `all`.
    pub devices: Vec<String>,
    /// The spec (what `nvidia-ctk cdi generate` would have written).
    pub spec: CdiSpec,
    /// Things missing that GPU spaces may need (logged).
    pub warnings: Vec<String>,
}

/// What the driver under `root` is now: `Ok(None)` without a loaded
/// kernel module or without GPUs. Cheap (a few small reads and stats):
/// done at every probe. `nvml` orders the GPUs as NVML indexes them.
pub fn key(root: &Path, nvml: Option<&GpuInfo>) -> Result<Option<Key>, String> {
    let Ok(r) = Root::open(root) else {
        return Ok(None);
    };
    let read = |p: &str| {
        r.read_regular(Path::new(p), MAX_PROC_BYTES, Resolve::InRoot)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let Ok(text) = read("/proc/driver/nvidia/version") else {
        return Ok(None);
    };
    let version = parse_version(&text).ok_or_else(|| {
        format!(
            "no version in {}",
            root.join("proc/driver/nvidia/version").display()
        )
    })?;
    let dir = root.join("proc/driver/nvidia/gpus");
    let mut buses: Vec<String> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .take(MAX_GPUS)
        .collect();
    buses.sort();
    let mut gpus = Vec::new();
    for bus in buses {
        let text = read(&format!("/proc/driver/nvidia/gpus/{bus}/information"))
            .map_err(|e| format!("{}: {e}", dir.join(&bus).display()))?;
        let Some(mut gpu) = parse_information(&bus, &text) else {
            return Err(format!(
                "no device minor in {}/information",
                dir.join(&bus).display()
            ));
        };
        if let Some(d) = nvml.and_then(|g| g.devices.iter().find(|d| d.minor == Some(gpu.minor))) {
            if !gpu.uuid.starts_with("GPU-") {
                gpu.uuid = d.uuid.clone();
            }
        }
        gpus.push(gpu);
    }
    if gpus.is_empty() {
        return Ok(None);
    }
    if let Some(g) = nvml {
        // NVML's index order (PCI bus order by default, but NVML decides).
        gpus.sort_by_key(|k| {
            g.devices
                .iter()
                .position(|d| d.minor == Some(k.minor))
                .unwrap_or(usize::MAX)
        });
    }
    let mut watched: Vec<PathBuf> = ["/etc/ld.so.cache", "/dev", "/run/nvidia-persistenced"]
        .iter()
        .map(|p| in_root(root, p))
        .collect();
    watched.extend(library_dirs().iter().map(|d| in_root(root, d)));
    watched.extend(BINARY_DIRS.iter().map(|d| in_root(root, d)));
    Ok(Some(Key {
        version,
        gpus,
        files: cdi::stat_all(&watched),
    }))
}

/// Makes the edits for the driver `key` describes.
pub fn generate(root: &Path, key: &Key) -> Result<Generated, String> {
    let r = Root::open(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut warnings = Vec::new();
    let node = |name: &str| -> Option<Value> {
        let path = format!("/dev/{name}");
        let (host, st) = resolve(&r, &path).ok()?;
        (SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR)
            .then(|| json!({ "path": path, "hostPath": host }))
    };
    let mut common_nodes = Vec::new();
    for name in CONTROL_NODES {
        match node(name) {
            Some(n) => common_nodes.push(n),
            None if *name == "nvidiactl" => {
                return Err(format!(
                    "{} is missing (is the NVIDIA kernel module loaded?)",
                    in_root(root, "/dev/nvidiactl").display()
                ))
            }
            None if name.starts_with("nvidia-uvm") => warnings.push(format!(
                "/dev/{name} is missing: CUDA needs it (run `nvidia-modprobe -u -c=0` once)"
            )),
            None => {}
        }
    }
    let mut devices = Vec::new();
    let mut all_nodes = Vec::new();
    let mut by_uuid = Vec::new();
    for (i, g) in key.gpus.iter().enumerate() {
        let name = format!("nvidia{}", g.minor);
        let n = node(&name).ok_or_else(|| {
            format!(
                "GPU {} ({}): {} is missing",
                i,
                g.bus,
                in_root(root, &format!("/dev/{name}")).display()
            )
        })?;
        let edits = json!({ "deviceNodes": [n.clone()] });
        devices.push(json!({ "name": i.to_string(), "containerEdits": edits }));
        if g.uuid.starts_with("GPU-") {
            by_uuid.push(json!({ "name": g.uuid, "containerEdits": edits }));
        }
        all_nodes.push(n);
    }
    devices.extend(by_uuid);
    devices.push(json!({ "name": "all", "containerEdits": { "deviceNodes": all_nodes } }));

    let cache = r
        .read_regular(
            Path::new("/etc/ld.so.cache"),
            super::ldcache::MAX_CACHE_BYTES,
            Resolve::InRoot,
        )
        .ok()
        .map(|b| super::ldcache::parse(&b));
    let cache = match cache {
        Some(Ok(entries)) => entries,
        Some(Err(e)) => {
            warnings.push(format!(
                "{}: {e}",
                in_root(root, "/etc/ld.so.cache").display()
            ));
            Vec::new()
        }
        None => Vec::new(),
    };
    let ro = json!(["ro", "nosuid", "nodev", "bind"]);
    let mut mounts = Vec::new();
    for lib in LIBRARIES {
        match find_library(&r, &cache, lib, &key.version) {
            Some((soname, host)) => mounts.push(json!({
                "hostPath": host,
                "containerPath": format!("{SPACE_LIB_DIR}/{soname}"),
                "options": ro,
            })),
            None if REQUIRED_LIBRARIES.contains(lib) => {
                return Err(format!(
                    "{lib}.so is not in the linker cache ({}) nor in {} under {}",
                    in_root(root, "/etc/ld.so.cache").display(),
                    library_dirs().join(", "),
                    root.display()
                ))
            }
            None => {}
        }
    }
    for bin in BINARIES {
        let found = BINARY_DIRS.iter().find_map(|d| {
            let (host, st) = resolve(&r, &format!("{d}/{bin}")).ok()?;
            (SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
                && st.st_mode & 0o111 != 0)
                .then_some(host)
        });
        if let Some(host) = found {
            mounts.push(json!({
                "hostPath": host,
                "containerPath": format!("{SPACE_BIN_DIR}/{bin}"),
                "options": ro,
            }));
        }
    }
    if let Ok((host, st)) = resolve(&r, PERSISTENCED_SOCKET) {
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK {
            mounts.push(json!({
                "hostPath": host,
                "containerPath": PERSISTENCED_SOCKET,
                "options": ["nosuid", "nodev", "noexec", "bind"],
            }));
        }
    }
    let raw = json!({
        "cdiVersion": "0.6.0",
        "kind": NVIDIA_CDI_KIND,
        "devices": devices,
        "containerEdits": {
            "env": [
                format!("NVIDIA_DRIVER_CAPABILITIES={DEFAULT_DRIVER_CAPABILITIES}"),
                format!("LD_LIBRARY_PATH={SPACE_LIB_DIR}"),
            ],
            "deviceNodes": common_nodes,
            "mounts": mounts,
        },
    });
    let names = devices
        .iter()
        .filter_map(|d| d["name"].as_str().map(String::from))
        .collect();
    let spec: CdiSpec = serde_json::from_value(raw).map_err(|e| format!("driver edits: {e}"))?;
    Ok(Generated {
        version: key.version.clone(),
        devices: names,
        spec,
        warnings,
    })
}

/// The version in `/proc/driver/nvidia/version` (`NVRM version: NVIDIA
/// UNIX x86_64 Kernel Module  580.95.05  …`, or `… Open Kernel Module for
/// x86_64  580.95.05 …`): its first dotted number.
fn parse_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| {
            w.contains('.')
                && w.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(String::from)
}

/// A GPU from its `information` file (`GPU UUID:`, `Device Minor:` lines).
fn parse_information(bus: &str, text: &str) -> Option<KernelGpu> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':').map(str::trim))
    };
    Some(KernelGpu {
        bus: bus.to_string(),
        uuid: field("GPU UUID")
            .filter(|u| u.starts_with("GPU-"))
            .unwrap_or_default()
            .to_string(),
        minor: field("Device Minor")?.parse().ok()?,
    })
}

/// [`LIBRARY_DIRS`] for this machine.
pub fn library_dirs() -> Vec<String> {
    let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
    LIBRARY_DIRS
        .iter()
        .map(|d| d.replace("{triple}", &triple))
        .collect()
}

/// `p` (absolute) under `root`.
fn in_root(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// The host path of what `path` names inside the root (symlinks followed
/// inside it) and its status.
fn resolve(r: &Root, path: &str) -> std::io::Result<(PathBuf, FileStat)> {
    let fd = open_beneath(
        r.fd(),
        Path::new(path),
        OFlag::O_PATH,
        Mode::empty(),
        Resolve::InRoot,
    )?;
    let st = fstat(fd.as_raw_fd())?;
    let host = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok((host, st))
}

/// The soname and the host path of the library `lib` (`libcuda`): the
/// first entry `lib.so.*` of the linker cache, else the first directory of
/// [`LIBRARY_DIRS`] with one (its shortest such name: the soname link
/// `ldconfig` makes). In that directory the file `lib.so.<version>` is
/// preferred (a stale link may point at an older driver's file). The
/// soname is the file's `DT_SONAME`, else the name it was found by (or,
/// when that is another file's full-version name, the file's own name).
fn find_library(
    r: &Root,
    cache: &[super::ldcache::Entry],
    lib: &str,
    version: &str,
) -> Option<(String, PathBuf)> {
    let prefix = format!("{lib}.so.");
    let cached = cache.iter().filter_map(|e| {
        let path = Path::new(&e.path);
        Some((path.parent()?.to_path_buf(), e.name.clone()))
    });
    let scanned = library_dirs().into_iter().filter_map(|d| {
        let (host, _) = resolve(r, &d).ok()?;
        let names: BTreeSet<(usize, String)> = fs::read_dir(host)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .map(|n| (n.matches('.').count(), n))
            .collect();
        let (_, name) = names.into_iter().next()?;
        Some((PathBuf::from(d), name))
    });
    cached
        .filter(|(_, name)| name.starts_with(&prefix))
        .chain(scanned)
        .find_map(|(dir, name)| {
            let named = resolve(r, &dir.join(&name).to_string_lossy()).ok();
            let exact = resolve(r, &dir.join(format!("{prefix}{version}")).to_string_lossy()).ok();
            let (host, st) = exact.or_else(|| named.clone())?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                return None;
            }
            // Without a DT_SONAME: the name it was found by when that names
            // this file or is a shorter (soname) link, else the file's own
            // name (an older driver's full-version name).
            let own = host.file_name()?.to_string_lossy().into_owned();
            let fallback = match named {
                Some((h, _)) if h == host => name,
                _ if name.matches('.').count() < own.matches('.').count() => name,
                _ => own,
            };
            let soname = super::ldcache::elf_soname(&host)
                .filter(|s| s.starts_with(&prefix))
                .unwrap_or(fallback);
            Some((soname, host))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_proprietary_and_open_kernel_modules() {
        let closed = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Tue Nov 11 \
                      UTC 2025\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(parse_version(closed).as_deref(), Some("580.159.04"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  \
                    Release Build  (dvs-builder@U16-I2-C03-12-4)  Thu Jan 23 2025\n";
        assert_eq!(parse_version(open).as_deref(), Some("570.86.15"));
        assert_eq!(parse_version("GCC version: 12.2\n"), None);
        assert_eq!(parse_version("NVRM version: unknown\n"), None);
    }

    #[test]
    fn gpu_information() {
        let text = "Model: \t\t NVIDIA H200\nIRQ:   \t\t 40\n\
                    GPU UUID: \t GPU-7f3a0c7e-1b2c-4d5e-8f90-123456789abc\n\
                    Video BIOS: \t 96.00.af.00.01\nBus Type: \t PCIe\n\
                    Device Minor: \t 3\nBus Location: \t 0000:00:05.0\n";
        assert_eq!(
            parse_information("0000:00:05.0", text),
            Some(KernelGpu {
                bus: "0000:00:05.0".into(),
                uuid: "GPU-7f3a0c7e-1b2c-4d5e-8f90-123456789abc".into(),
                minor: 3,
            })
        );
        // A UUID the kernel does not know yet is left out; no minor: no GPU.
        let unknown = parse_information("b", "GPU UUID: \t ??\nDevice Minor: \t 1\n");
        assert_eq!(unknown.map(|g| g.uuid), Some(String::new()));
        assert_eq!(parse_information("b", "GPU UUID: GPU-1\n"), None);
    }

    #[test]
    fn library_dirs_use_this_machines_triple() {
        let dirs = library_dirs();
        assert_eq!(dirs[0], "/usr/local/nvidia/lib64");
        assert_eq!(
            dirs[1],
            format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH)
        );
    }

    /// Libraries are found by directory scan where the linker cache does
    /// not list them, at the shortest (soname link) name, symlinks resolved
    /// inside the root; a real ELF library's soname comes from the file.
    #[test]
    fn directory_scan_resolves_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib64 = dir.path().join("usr/local/nvidia/lib64");
        fs::create_dir_all(&lib64).expect("mkdir");
        fs::write(lib64.join("libcuda.so.1.2.3"), "cuda").expect("write");
        // An absolute link: inside the root, not the host's /usr/local.
        std::os::unix::fs::symlink(
            "/usr/local/nvidia/lib64/libcuda.so.1.2.3",
            lib64.join("libcuda.so.1"),
        )
        .expect("symlink");
        let r = Root::open(dir.path()).expect("root");
        let (soname, host) = find_library(&r, &[], "libcuda", "9.9").expect("found");
        assert_eq!(soname, "libcuda.so.1");
        assert_eq!(host, lib64.join("libcuda.so.1.2.3"));
        // The exact version's file wins over a stale link.
        fs::write(lib64.join("libcuda.so.9.9"), "cuda 9.9").expect("write");
        let (soname, host) = find_library(&r, &[], "libcuda", "9.9").expect("found");
        assert_eq!(
            (soname.as_str(), host),
            ("libcuda.so.1", lib64.join("libcuda.so.9.9"))
        );
        assert_eq!(find_library(&r, &[], "libnvidia-ml", "9.9"), None);

        // A real library copied in: its DT_SONAME names it.
        let Ok(real) = fs::canonicalize(format!(
            "/usr/lib/{}-linux-gnu/libz.so.1",
            std::env::consts::ARCH
        )) else {
            return;
        };
        fs::copy(&real, lib64.join("libz.so.1.2.3.4")).expect("copy");
        let (soname, _) = find_library(&r, &[], "libz", "0").expect("found");
        assert_eq!(soname, "libz.so.1");
    }
}
