//! CDI specs (`/etc/cdi`, `/var/run/cdi`) read with the
//! `container-device-interface` crate, and device injection into a spec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use container_device_interface::cache::Cache;
use container_device_interface::device::Device;
use container_device_interface::spec::new_spec;
use container_device_interface::spec_dirs::with_spec_dirs;
use container_device_interface::specs::config::Spec as CdiSpec;
use libcontainer::oci_spec::runtime::Spec;

/// What identifies the specs in some directories without reading them:
/// every spec file's path, modification time and size.
pub(super) type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The [`Fingerprint`] of the spec files (`.json`, `.yaml`, recursively,
/// as the CDI reader finds them) under `dirs`.
pub(super) fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    fn walk(dir: &Path, out: &mut Fingerprint) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "json" || x == "yaml") {
                out.push((path, meta.modified().ok(), meta.len()));
            }
        }
    }
    let mut out = Fingerprint::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out.sort();
    out
}

/// The [`Fingerprint`] of some paths (files or directories; a missing
/// one is listed without time and size).
pub(super) fn stat_all(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (p.clone(), m.modified().ok(), m.len()),
            Err(_) => (p.clone(), None, 0),
        })
        .collect()
}

/// The CDI specs found in some directories (or one made in memory).
pub(super) struct Specs {
    cache: Cache,
}

impl Specs {
    /// Reads every spec in `dirs` (missing directories are skipped).
    pub(super) fn load(dirs: &[PathBuf]) -> Result<Specs, String> {
        let dirs: Vec<String> = dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let mut cache = Cache::default();
        with_spec_dirs(&refs)(&mut cache);
        cache
            .refresh()
            .map_err(|e| format!("reading CDI specs in {}: {e}", dirs.join(":")))?;
        Ok(Specs { cache })
    }

    /// One spec made in memory (the driver's generated edits), validated
    /// as a spec file is. `origin` names it in errors.
    pub(super) fn from_spec(raw: &CdiSpec, origin: &str) -> Result<Specs, String> {
        let spec =
            new_spec(raw, &PathBuf::from(origin), 0).map_err(|e| format!("{origin}: {e:#}"))?;
        let devices: HashMap<String, Device> = spec
            .get_devices()
            .into_values()
            .map(|d| (d.get_qualified_name(), d))
            .collect();
        let specs = HashMap::from([(spec.get_vendor(), vec![spec])]);
        Ok(Specs {
            cache: Cache::new(Vec::new(), specs, devices),
        })
    }

    /// Names of the devices of `kind` (`vendor/class`), numbered ones first
    /// in numeric order, then the others by name.
    pub(super) fn device_names(&mut self, kind: &str) -> Vec<String> {
        let prefix = format!("{kind}=");
        let mut names: Vec<String> = self
            .cache
            .list_devices()
            .into_iter()
            .filter_map(|q| q.strip_prefix(&prefix).map(String::from))
            .collect();
        names.sort_by_key(|n| match n.parse::<u64>() {
            Ok(i) => (0, i, String::new()),
            Err(_) => (1, 0, n.clone()),
        });
        names
    }

    /// Applies the edits of `devices` (qualified names) to `spec`: device
    /// nodes with their cgroup allow rules, mounts, environment, hooks.
    pub(super) fn inject(&mut self, spec: &mut Spec, devices: &[String]) -> Result<(), String> {
        self.cache
            .inject_devices(Some(spec), devices.to_vec())
            .map(|_| ())
            .map_err(|e| format!("injecting CDI devices {}: {e}", devices.join(", ")))
    }
}
