//! The NVIDIA container hook (`nvidia-container-runtime-hook`), used the way
//! the NVIDIA runtime does: an OCI prestart hook that reads
//! `NVIDIA_VISIBLE_DEVICES` / `NVIDIA_DRIVER_CAPABILITIES` from the bundle's
//! `config.json` and mounts the driver into the root filesystem. We add the
//! device nodes and their device cgroup rules ourselves, so access is
//! limited to the chosen GPUs whatever the hook does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use serde_json::{json, Value};

use super::{GpuInfo, GpuRequest};
use crate::error::{Error, Result};

const HOOK_NAME: &str = "nvidia-container-runtime-hook";
const HOOK_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Device nodes every GPU space needs besides its GPUs.
const CONTROL_NODES: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// The hook on `PATH`, else in `/usr/bin`.
pub(super) fn find() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(HOOK_NAME))
        .find(|p| is_executable(p))
}

/// Whether `p` is an executable file.
pub(super) fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `NVIDIA_VISIBLE_DEVICES` entries for a request. `all` needs no NVML;
/// counts and lists are checked against the GPUs NVML sees.
pub(super) fn select(req: &GpuRequest, nvml: Option<&GpuInfo>) -> Result<Vec<String>> {
    if *req == GpuRequest::All {
        return Ok(vec!["all".into()]);
    }
    let Some(g) = nvml else {
        return Err(Error::InvalidInput(
            "GPU not available on this server: the NVIDIA driver reports no GPU".into(),
        ));
    };
    let n = g.devices.len();
    match req {
        GpuRequest::All => Ok(vec!["all".into()]),
        GpuRequest::Count(c) if *c == 0 || *c > n => Err(Error::InvalidInput(format!(
            "Invalid gpus: {c} requested, this server has {n}"
        ))),
        GpuRequest::Count(c) => Ok((0..*c).map(|i| i.to_string()).collect()),
        GpuRequest::Devices(ids) => {
            let mut out: Vec<String> = Vec::new();
            for id in ids {
                let known =
                    id.parse::<usize>().is_ok_and(|i| i < n) || g.index_of_uuid(id).is_some();
                if !known {
                    return Err(Error::InvalidInput(format!(
                        "Invalid gpus: unknown GPU {id}"
                    )));
                }
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
            if out.is_empty() {
                return Err(Error::InvalidInput("Invalid gpus: empty list".into()));
            }
            Ok(out)
        }
    }
}

/// The host device nodes of the chosen GPUs plus the control nodes.
fn device_nodes(devices: &[String], nvml: Option<&GpuInfo>) -> Vec<PathBuf> {
    let mut nodes: Vec<PathBuf> = CONTROL_NODES.iter().map(PathBuf::from).collect();
    if devices.iter().any(|d| d == "all") {
        let mut gpus: Vec<PathBuf> = std::fs::read_dir("/dev")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("nvidia"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        gpus.sort();
        nodes.extend(gpus);
    } else {
        for d in devices {
            let index = d
                .parse::<usize>()
                .ok()
                .or_else(|| nvml.and_then(|g| g.index_of_uuid(d)));
            let minor = index.map(|i| {
                nvml.and_then(|g| g.devices.get(i))
                    .and_then(|dev| dev.minor)
                    .unwrap_or(i as u32)
            });
            if let Some(m) = minor {
                nodes.push(PathBuf::from(format!("/dev/nvidia{m}")));
            }
        }
    }
    nodes
}

/// Adds the hook, the environment it reads, and the device nodes with
/// their cgroup rules to `spec`.
pub(super) fn apply(
    spec: &mut Spec,
    hook: &Path,
    devices: &[String],
    capabilities: &str,
    nvml: Option<&GpuInfo>,
) -> Result<()> {
    super::set_env(
        spec,
        &[
            format!("NVIDIA_VISIBLE_DEVICES={}", devices.join(",")),
            format!("NVIDIA_DRIVER_CAPABILITIES={capabilities}"),
        ],
    );
    let mut v = serde_json::to_value(&*spec).map_err(|e| Error::Gpu(e.to_string()))?;
    let hook = json!({
        "path": hook.to_string_lossy(),
        "args": [HOOK_NAME, "prestart"],
        "env": [HOOK_PATH_ENV],
    });
    push(&mut v, "/hooks", "prestart", hook);
    for node in device_nodes(devices, nvml) {
        let Ok(st) = nix::sys::stat::stat(&node) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
            continue;
        }
        let (major, minor) = (
            nix::sys::stat::major(st.st_rdev),
            nix::sys::stat::minor(st.st_rdev),
        );
        push(
            &mut v,
            "/linux",
            "devices",
            json!({
                "path": node.to_string_lossy(), "type": "c",
                "major": major, "minor": minor, "fileMode": st.st_mode & 0o777,
                "uid": 0, "gid": 0,
            }),
        );
        let rule =
            json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" });
        push(&mut v, "/linux/resources", "devices", rule);
    }
    *spec = serde_json::from_value(v).map_err(|e| Error::Gpu(e.to_string()))?;
    Ok(())
}

/// Appends `item` to the array `key` of the object at `parent` (both
/// created when missing).
fn push(v: &mut Value, parent: &str, key: &str, item: Value) {
    let mut cur = v;
    for seg in parent.split('/').filter(|s| !s.is_empty()) {
        if !cur.get(seg).is_some_and(Value::is_object) {
            cur[seg] = json!({});
        }
        cur = &mut cur[seg];
    }
    if !cur.get(key).is_some_and(Value::is_array) {
        cur[key] = json!([]);
    }
    if let Some(a) = cur[key].as_array_mut() {
        a.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_creates_the_path() {
        let mut v = json!({"linux": {}});
        push(&mut v, "/linux/resources", "devices", json!(1));
        push(&mut v, "/linux/resources", "devices", json!(2));
        push(&mut v, "/hooks", "prestart", json!("h"));
        assert_eq!(v["linux"]["resources"]["devices"], json!([1, 2]));
        assert_eq!(v["hooks"]["prestart"], json!(["h"]));
    }

    #[test]
    fn select_all_needs_no_driver_but_counts_do() {
        assert_eq!(select(&GpuRequest::All, None).expect("ok"), vec!["all"]);
        assert!(select(&GpuRequest::Count(1), None).is_err());
    }
}
