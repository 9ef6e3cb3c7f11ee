//! NVIDIA GPUs for spaces: detection (NVML), what a space asks for, and
//! passthrough into its OCI spec.
//!
//! Passthrough is chosen per host, in this order: a CDI spec for the
//! configured kind (`nvidia.com/gpu`, written by `nvidia-ctk cdi generate`),
//! then the NVIDIA container hook (`nvidia-container-runtime-hook`), then
//! CDI edits generated from the installed driver itself (`driver.rs`), else
//! none (GPU spaces are refused with what to install).

mod cdi;
pub mod driver;
mod hook;
mod ldcache;
mod nvml;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libcontainer::oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use nvml::{gpus, GpuDevice, GpuInfo};

/// The CDI kind of NVIDIA GPUs.
pub const NVIDIA_CDI_KIND: &str = "nvidia.com/gpu";
/// Where `nvidia-ctk cdi generate` writes specs.
pub const DEFAULT_CDI_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];
/// Driver capabilities given to hook spaces, as `docker run --gpus` does.
pub const DEFAULT_DRIVER_CAPABILITIES: &str = "compute,utility";

/// What to install when a GPU space cannot get its GPUs.
const INSTALL_HINT: &str = "no GPU runtime is configured on this server: install the NVIDIA \
driver (kernel module loaded, `nvidia-smi` working), or the NVIDIA Container Toolkit and run \
`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (or install \
nvidia-container-runtime-hook)";
/// Where the driver backend looks for the driver by default.
pub const DEFAULT_DRIVER_ROOT: &str = "/";
/// What the driver backend's generated spec is called in errors.
const DRIVER_SPEC_ORIGIN: &str = "/run/clawdspace/generated/nvidia-driver.yaml";

/// Which GPUs a space asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    /// Every GPU of the host (`gpu: true`, like `--gpus all`).
    All,
    /// This many GPUs, the lowest indexes first.
    Count(usize),
    /// These GPUs, by index (`"0"`) or UUID (`"GPU-…"`).
    Devices(Vec<String>),
}

/// How GPUs reach a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuBackend {
    /// Container Device Interface spec injection.
    Cdi,
    /// `nvidia-container-runtime-hook` as an OCI prestart hook.
    NvidiaHook,
    /// CDI edits generated from the installed NVIDIA driver.
    Driver,
}

impl GpuBackend {
    /// Name used in the API and logs (`cdi`, `nvidia-hook`).
    pub fn as_str(self) -> &'static str {
        match self {
            GpuBackend::Cdi => "cdi",
            GpuBackend::NvidiaHook => "nvidia-hook",
            GpuBackend::Driver => "driver",
        }
    }
}

/// The GPUs given to one space (persisted in its record, applied again at
/// every start, so a driver upgrade's new CDI spec is picked up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAssignment {
    /// How the devices are injected.
    pub backend: GpuBackend,
    /// CDI and driver: qualified device names (`nvidia.com/gpu=0`). Hook: the
    /// `NVIDIA_VISIBLE_DEVICES` entries (`all`, indexes or UUIDs).
    pub devices: Vec<String>,
}

/// GPU passthrough settings of a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuConfig {
    /// Directories scanned for CDI specs.
    pub cdi_dirs: Vec<PathBuf>,
    /// CDI kind of the GPUs (`vendor/class`).
    pub cdi_kind: String,
    /// The NVIDIA container hook; `None`: not used.
    pub hook: Option<PathBuf>,
    /// `NVIDIA_DRIVER_CAPABILITIES` for hook spaces.
    pub driver_capabilities: String,
    /// Where the driver backend finds the NVIDIA driver (its libraries,
    /// programs, device nodes and `/proc/driver/nvidia`); `None`: not used.
    pub driver_root: Option<PathBuf>,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            cdi_dirs: DEFAULT_CDI_DIRS.iter().map(PathBuf::from).collect(),
            cdi_kind: NVIDIA_CDI_KIND.into(),
            hook: hook::find(),
            driver_capabilities: DEFAULT_DRIVER_CAPABILITIES.into(),
            driver_root: Some(PathBuf::from(DEFAULT_DRIVER_ROOT)),
        }
    }
}

impl GpuConfig {
    /// Defaults, overridden by `CLAWDSPACE_CDI_DIRS` (`:`-separated),
    /// `CLAWDSPACE_GPU_CDI_KIND`, `CLAWDSPACE_NVIDIA_HOOK` (a path, or empty
    /// to disable), `CLAWDSPACE_GPU_CAPABILITIES` and
    /// `CLAWDSPACE_NVIDIA_DRIVER_ROOT` (a directory, or empty to disable).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        Self::from_settings(
            var("CLAWDSPACE_CDI_DIRS").as_deref(),
            var("CLAWDSPACE_GPU_CDI_KIND").as_deref(),
            var("CLAWDSPACE_NVIDIA_HOOK").as_deref(),
            var("CLAWDSPACE_GPU_CAPABILITIES").as_deref(),
            var("CLAWDSPACE_NVIDIA_DRIVER_ROOT").as_deref(),
        )
    }

    /// Defaults with the given settings applied (`None`: default; as in
    /// [`GpuConfig::from_env`]).
    pub fn from_settings(
        cdi_dirs: Option<&str>,
        cdi_kind: Option<&str>,
        hook: Option<&str>,
        driver_capabilities: Option<&str>,
        driver_root: Option<&str>,
    ) -> Self {
        let mut c = GpuConfig::default();
        if let Some(dirs) = cdi_dirs {
            c.cdi_dirs = std::env::split_paths(dirs)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
        }
        if let Some(kind) = cdi_kind.filter(|k| !k.is_empty()) {
            c.cdi_kind = kind.into();
        }
        if let Some(h) = hook {
            c.hook = (!h.is_empty()).then(|| PathBuf::from(h));
        }
        if let Some(caps) = driver_capabilities.filter(|c| !c.is_empty()) {
            c.driver_capabilities = caps.into();
        }
        if let Some(r) = driver_root {
            c.driver_root = (!r.is_empty()).then(|| PathBuf::from(r));
        }
        c
    }
}

/// What passthrough this host offers right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRuntimeInfo {
    /// The backend new GPU spaces get; `None`: GPU spaces are refused.
    pub backend: Option<GpuBackend>,
    /// CDI device names of the configured kind (without the kind).
    pub cdi_devices: Vec<String>,
    /// Why CDI specs could not be read, if they could not.
    pub cdi_error: Option<String>,
    /// The driver backend's devices (looked at only without CDI devices
    /// and hook): names without the kind.
    pub driver_devices: Vec<String>,
    /// The driver version the driver backend's edits were made for.
    pub driver_version: Option<String>,
    /// Why the driver's edits could not be made, if a driver is there but
    /// they could not.
    pub driver_error: Option<String>,
}

/// GPU passthrough for a runtime.
#[derive(Debug)]
pub struct Passthrough {
    config: GpuConfig,
    /// The device names (or error) of the CDI specs last read, with the
    /// fingerprint of the files they came from.
    cdi: Mutex<Option<(cdi::Fingerprint, CdiDevices)>>,
    /// The driver's generated edits, with what they were made from.
    driver: Mutex<Option<(driver::Key, DriverEdits)>>,
}

/// CDI device names of the configured kind, or why the specs are unusable.
type CdiDevices = std::result::Result<Vec<String>, String>;
/// The driver backend's edits, or why they could not be made.
type DriverEdits = std::result::Result<Arc<driver::Generated>, String>;

impl Passthrough {
    /// Passthrough with these settings.
    pub fn new(config: GpuConfig) -> Self {
        Passthrough {
            config,
            cdi: Mutex::new(None),
            driver: Mutex::new(None),
        }
    }

    /// The edits generated from the driver under the driver root (`None`:
    /// disabled, no kernel module, or no GPU). They are made again when the
    /// driver version, its GPUs or the files they come from change (a
    /// probe reads a few small files and stats ~20 paths).
    fn driver_edits(&self) -> Option<DriverEdits> {
        let root = self.config.driver_root.as_deref()?;
        let key = match driver::key(root, gpus()) {
            Ok(Some(k)) => k,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let mut cache = self.driver.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, edits)) = cache.as_ref() {
            if *seen == key {
                return Some(edits.clone());
            }
        }
        let edits = driver::generate(root, &key).map(Arc::new);
        match &edits {
            Ok(g) => {
                tracing::info!(version = %g.version, devices = ?g.devices,
                    root = %root.display(), "GPU: edits generated from the NVIDIA driver");
                for w in &g.warnings {
                    tracing::warn!("GPU: {w}");
                }
            }
            Err(e) => tracing::warn!("GPU: the NVIDIA driver's edits: {e}"),
        }
        *cache = Some((key, edits.clone()));
        Some(edits)
    }

    /// The CDI devices of the configured kind; the specs are parsed again
    /// only when a spec file was added, removed or changed (parsing
    /// NVIDIA's spec takes milliseconds, the check microseconds).
    fn cdi_devices(&self) -> CdiDevices {
        let print = cdi::fingerprint(&self.config.cdi_dirs);
        let mut cache = self.cdi.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, devices)) = cache.as_ref() {
            if *seen == print {
                return devices.clone();
            }
        }
        let devices = cdi::Specs::load(&self.config.cdi_dirs)
            .map(|mut specs| specs.device_names(&self.config.cdi_kind));
        *cache = Some((print, devices.clone()));
        devices
    }

    /// The settings.
    pub fn config(&self) -> &GpuConfig {
        &self.config
    }

    /// Looks at the CDI specs, the hook and the driver now (specs change
    /// when drivers are upgraded; they are parsed again when their files
    /// change, and the driver's edits made again when it changes).
    pub fn probe(&self) -> GpuRuntimeInfo {
        let (cdi_devices, cdi_error) = match self.cdi_devices() {
            Ok(devices) => (devices, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut info = GpuRuntimeInfo {
            backend: None,
            cdi_devices,
            cdi_error,
            driver_devices: Vec::new(),
            driver_version: None,
            driver_error: None,
        };
        if !info.cdi_devices.is_empty() {
            info.backend = Some(GpuBackend::Cdi);
        } else if self.config.hook.as_deref().is_some_and(hook::is_executable) {
            info.backend = Some(GpuBackend::NvidiaHook);
        } else {
            match self.driver_edits() {
                Some(Ok(g)) => {
                    info.backend = Some(GpuBackend::Driver);
                    info.driver_devices = g.devices.clone();
                    info.driver_version = Some(g.version.clone());
                }
                Some(Err(e)) => info.driver_error = Some(e),
                None => {}
            }
        }
        info
    }

    /// Logs which passthrough GPU spaces get (at startup).
    pub fn log(&self) {
        let info = self.probe();
        if let Some(e) = &info.cdi_error {
            tracing::warn!("GPU: {e}");
        }
        match info.backend {
            Some(GpuBackend::Cdi) => tracing::info!(
                kind = %self.config.cdi_kind, devices = ?info.cdi_devices, "GPU passthrough: CDI"
            ),
            Some(GpuBackend::NvidiaHook) => tracing::info!(
                hook = ?self.config.hook, "GPU passthrough: NVIDIA container hook"
            ),
            Some(GpuBackend::Driver) => tracing::info!(
                version = info.driver_version.as_deref().unwrap_or_default(),
                devices = ?info.driver_devices,
                root = ?self.config.driver_root,
                "GPU passthrough: driver (CDI edits generated from the NVIDIA driver)"
            ),
            None if gpus().is_some() => tracing::warn!("GPUs found but {INSTALL_HINT}"),
            None => tracing::debug!("no GPU passthrough"),
        }
    }

    /// Whether GPU spaces can be created: a backend exists and it has GPUs
    /// (CDI devices, or GPUs NVML sees for the hook).
    pub fn available(&self) -> bool {
        let info = self.probe();
        match info.backend {
            Some(GpuBackend::Cdi) | Some(GpuBackend::Driver) => true,
            Some(GpuBackend::NvidiaHook) => gpus().is_some(),
            None => false,
        }
    }

    /// How many GPUs spaces can be given here (0: GPU spaces cannot be
    /// created).
    pub fn count(&self) -> usize {
        let info = self.probe();
        match info.backend {
            Some(GpuBackend::Cdi) => gpu_names(&info.cdi_devices).len(),
            Some(GpuBackend::Driver) => gpu_names(&info.driver_devices).len(),
            Some(GpuBackend::NvidiaHook) => gpus().map_or(0, |g| g.devices.len()),
            None => 0,
        }
    }

    /// Chooses the devices for a request. Errors are the caller's
    /// ([`Error::InvalidInput`]): unknown GPUs, too many, no GPU runtime.
    pub fn assign(&self, request: &GpuRequest) -> Result<GpuAssignment> {
        let info = self.probe();
        match info.backend {
            Some(GpuBackend::Cdi) => {
                let devices = select(request, &info.cdi_devices, gpus())?
                    .into_iter()
                    .map(|d| format!("{}={d}", self.config.cdi_kind))
                    .collect();
                Ok(GpuAssignment {
                    backend: GpuBackend::Cdi,
                    devices,
                })
            }
            Some(GpuBackend::NvidiaHook) => Ok(GpuAssignment {
                backend: GpuBackend::NvidiaHook,
                devices: hook::select(request, gpus())?,
            }),
            Some(GpuBackend::Driver) => {
                let devices = select(request, &info.driver_devices, gpus())?
                    .into_iter()
                    .map(|d| format!("{NVIDIA_CDI_KIND}={d}"))
                    .collect();
                Ok(GpuAssignment {
                    backend: GpuBackend::Driver,
                    devices,
                })
            }
            None => {
                let mut why = INSTALL_HINT.to_string();
                if let Some(e) = info.cdi_error {
                    why.push_str(&format!("; the CDI specs could not be read: {e}"));
                }
                if let Some(e) = info.driver_error {
                    why.push_str(&format!("; the NVIDIA driver is not usable: {e}"));
                }
                Err(Error::InvalidInput(format!(
                    "GPU not available on this server: {why}"
                )))
            }
        }
    }

    /// Adds an assignment's devices, mounts, environment and hooks to a
    /// space's spec (device cgroup rules included: only these GPUs).
    pub fn apply(&self, spec: &mut Spec, a: &GpuAssignment) -> Result<()> {
        match a.backend {
            GpuBackend::Cdi => {
                let mut specs = cdi::Specs::load(&self.config.cdi_dirs).map_err(Error::Gpu)?;
                specs.inject(spec, &a.devices).map_err(Error::Gpu)
            }
            GpuBackend::Driver => {
                let edits = match self.driver_edits() {
                    Some(e) => e.map_err(Error::Gpu)?,
                    None => return Err(Error::Gpu("the NVIDIA driver is gone".into())),
                };
                cdi::Specs::from_spec(&edits.spec, DRIVER_SPEC_ORIGIN)
                    .and_then(|mut s| s.inject(spec, &a.devices))
                    .map_err(Error::Gpu)?;
                let visible: Vec<&str> = a
                    .devices
                    .iter()
                    .map(|d| d.rsplit_once('=').map_or(d.as_str(), |(_, n)| n))
                    .collect();
                set_env(
                    spec,
                    &[format!("NVIDIA_VISIBLE_DEVICES={}", visible.join(","))],
                );
                merge_path_list(spec, "LD_LIBRARY_PATH");
                Ok(())
            }
            GpuBackend::NvidiaHook => {
                let hook = self
                    .config
                    .hook
                    .as_deref()
                    .filter(|h| hook::is_executable(h))
                    .ok_or_else(|| {
                        Error::Gpu(format!(
                            "the NVIDIA container hook is gone ({})",
                            self.config
                                .hook
                                .as_deref()
                                .unwrap_or(Path::new("not configured"))
                                .display()
                        ))
                    })?;
                hook::apply(
                    spec,
                    hook,
                    &a.devices,
                    &self.config.driver_capabilities,
                    gpus(),
                )
            }
        }
    }
}

/// Sets environment variables (`K=V`) of a spec's process, replacing any
/// earlier value of the same names.
fn set_env(spec: &mut Spec, vars: &[String]) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let keys: Vec<String> = vars.iter().map(|v| key(v)).collect();
    if let Some(p) = spec.process_mut() {
        let mut env = p.env().clone().unwrap_or_default();
        env.retain(|e| !keys.contains(&key(e)));
        env.extend(vars.iter().cloned());
        p.set_env(Some(env));
    }
}

/// Joins every `key=…` entry of a spec's process environment (CDI edits
/// append theirs after the image's) into the first one: directories in
/// order, each once.
fn merge_path_list(spec: &mut Spec, key: &str) {
    let prefix = format!("{key}=");
    let Some(p) = spec.process_mut() else {
        return;
    };
    let mut env = p.env().clone().unwrap_or_default();
    let Some(first) = env.iter().position(|e| e.starts_with(&prefix)) else {
        return;
    };
    let mut dirs: Vec<String> = Vec::new();
    for e in env.iter().filter_map(|e| e.strip_prefix(&prefix)) {
        for d in e.split(':').filter(|d| !d.is_empty()) {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_string());
            }
        }
    }
    env[first] = format!("{prefix}{}", dirs.join(":"));
    let mut i = 0;
    env.retain(|e| {
        i += 1;
        i - 1 == first || !e.starts_with(&prefix)
    });
    p.set_env(Some(env));
}

/// The device names (CDI names without the kind) a request gets, from the
/// names a CDI spec offers. `all` stands for every GPU when the spec has it;
/// otherwise GPUs are its numbered devices (or, without numbers, every
/// device). UUIDs map to indexes through NVML when the spec names GPUs by
/// index only.
/// The GPUs among a backend's device names: the numbered ones when there
/// are (NVIDIA's specs also name each GPU by UUID, and `all`), else every
/// name but `all`.
fn gpu_names(names: &[String]) -> Vec<&String> {
    let numbered: Vec<&String> = names.iter().filter(|n| n.parse::<u32>().is_ok()).collect();
    if numbered.is_empty() {
        names.iter().filter(|n| *n != "all").collect()
    } else {
        numbered
    }
}

fn select(req: &GpuRequest, names: &[String], nvml: Option<&GpuInfo>) -> Result<Vec<String>> {
    let gpus = gpu_names(names);
    match req {
        GpuRequest::All if names.iter().any(|n| n == "all") => Ok(vec!["all".into()]),
        GpuRequest::All => Ok(gpus.into_iter().cloned().collect()),
        GpuRequest::Count(n) if *n == 0 || *n > gpus.len() => Err(Error::InvalidInput(format!(
            "Invalid gpus: {n} requested, this server has {}",
            gpus.len()
        ))),
        GpuRequest::Count(n) => Ok(gpus.into_iter().take(*n).cloned().collect()),
        GpuRequest::Devices(ids) => {
            let mut out: Vec<String> = Vec::new();
            for id in ids {
                let name = if id != "all" && names.contains(id) {
                    id.clone()
                } else {
                    nvml.and_then(|g| g.index_of_uuid(id))
                        .map(|i| i.to_string())
                        .filter(|i| names.contains(i))
                        .ok_or_else(|| {
                            Error::InvalidInput(format!("Invalid gpus: unknown GPU {id}"))
                        })?
                };
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            if out.is_empty() {
                return Err(Error::InvalidInput("Invalid gpus: empty list".into()));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn nvml() -> GpuInfo {
        let dev = |uuid: &str| GpuDevice {
            name: "GPU".into(),
            memory_mib: 1,
            uuid: uuid.into(),
            minor: None,
        };
        GpuInfo {
            devices: vec![dev("GPU-a"), dev("GPU-b")],
            driver_version: "1".into(),
            cuda_version: "1".into(),
        }
    }

    #[test]
    fn all_prefers_the_all_device() {
        let n = names(&["0", "1", "all", "GPU-a", "GPU-b"]);
        assert_eq!(
            select(&GpuRequest::All, &n, None).expect("ok"),
            names(&["all"])
        );
        let n = names(&["1", "0", "10", "2"]);
        // numbered devices come sorted by number from the CDI reader
        assert_eq!(select(&GpuRequest::All, &n, None).expect("ok"), n);
    }

    #[test]
    fn count_takes_the_first_numbered_gpus() {
        let n = names(&["0", "1", "all", "GPU-a", "GPU-b"]);
        assert_eq!(
            select(&GpuRequest::Count(1), &n, None).expect("ok"),
            names(&["0"])
        );
        let e = select(&GpuRequest::Count(3), &n, None).expect_err("error");
        assert_eq!(
            e.to_string(),
            "Invalid gpus: 3 requested, this server has 2"
        );
        assert!(select(&GpuRequest::Count(0), &n, None).is_err());
    }

    #[test]
    fn devices_by_name_or_uuid() {
        let n = names(&["0", "1", "all"]);
        let req = GpuRequest::Devices(names(&["1", "GPU-a", "1"]));
        assert_eq!(
            select(&req, &n, Some(&nvml())).expect("ok"),
            names(&["1", "0"])
        );
        let req = GpuRequest::Devices(names(&["7"]));
        assert_eq!(
            select(&req, &n, Some(&nvml()))
                .expect_err("error")
                .to_string(),
            "Invalid gpus: unknown GPU 7"
        );
        // "all" is not a single GPU
        assert!(select(&GpuRequest::Devices(names(&["all"])), &n, None).is_err());
    }

    #[test]
    fn changed_cdi_specs_are_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = |names: &[&str]| {
            let devices: String = names
                .iter()
                .map(|n| format!("  - name: \"{n}\"\n    containerEdits:\n      env: [\"X=1\"]\n"))
                .collect();
            let text =
                format!("cdiVersion: \"0.6.0\"\nkind: \"test.example/gpu\"\ndevices:\n{devices}");
            std::fs::write(dir.path().join("t.yaml"), text).expect("write spec");
        };
        let p = Passthrough::new(GpuConfig {
            cdi_dirs: vec![dir.path().to_path_buf()],
            cdi_kind: "test.example/gpu".into(),
            hook: None,
            driver_root: None,
            ..GpuConfig::default()
        });
        assert_eq!(p.probe().backend, None);
        spec(&["0"]);
        assert_eq!(p.probe().cdi_devices, names(&["0"]));
        spec(&["0", "1"]);
        assert_eq!(p.probe().cdi_devices, names(&["0", "1"]));
        std::fs::remove_file(dir.path().join("t.yaml")).expect("rm");
        assert_eq!(p.probe().backend, None);
    }

    fn spec_with_env(env: &[&str]) -> Spec {
        let mut spec = Spec::default();
        if let Some(p) = spec.process_mut() {
            p.set_env(Some(names(env)));
        }
        spec
    }

    fn env_of(spec: &Spec) -> Vec<String> {
        spec.process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default()
    }

    #[test]
    fn library_paths_are_merged_image_first() {
        let mut s = spec_with_env(&[
            "PATH=/bin",
            "LD_LIBRARY_PATH=/opt/x/lib:/usr/local/nvidia/lib64",
            "A=1",
            "LD_LIBRARY_PATH=/usr/local/nvidia/lib64",
        ]);
        merge_path_list(&mut s, "LD_LIBRARY_PATH");
        assert_eq!(
            env_of(&s),
            names(&[
                "PATH=/bin",
                "LD_LIBRARY_PATH=/opt/x/lib:/usr/local/nvidia/lib64",
                "A=1"
            ])
        );
        let mut s = spec_with_env(&["LD_LIBRARY_PATH=/a", "LD_LIBRARY_PATH=/b"]);
        merge_path_list(&mut s, "LD_LIBRARY_PATH");
        assert_eq!(env_of(&s), names(&["LD_LIBRARY_PATH=/a:/b"]));
        let mut s = spec_with_env(&["PATH=/bin"]);
        merge_path_list(&mut s, "LD_LIBRARY_PATH");
        assert_eq!(env_of(&s), names(&["PATH=/bin"]));
    }

    #[test]
    fn set_env_replaces_earlier_values() {
        let mut s = spec_with_env(&["NVIDIA_VISIBLE_DEVICES=all", "A=1"]);
        set_env(&mut s, &names(&["NVIDIA_VISIBLE_DEVICES=0,1"]));
        assert_eq!(env_of(&s), names(&["A=1", "NVIDIA_VISIBLE_DEVICES=0,1"]));
    }

    #[test]
    fn driver_root_setting() {
        let c = GpuConfig::from_settings(None, None, None, None, None);
        assert_eq!(c.driver_root, Some(PathBuf::from("/")));
        let c = GpuConfig::from_settings(None, None, None, None, Some(""));
        assert_eq!(c.driver_root, None);
        let c = GpuConfig::from_settings(None, None, None, None, Some("/run/nvidia/driver"));
        assert_eq!(c.driver_root, Some(PathBuf::from("/run/nvidia/driver")));
    }

    #[test]
    fn names_without_numbers_are_all_gpus() {
        let n = names(&["GPU-a", "GPU-b"]);
        assert_eq!(select(&GpuRequest::Count(2), &n, None).expect("ok"), n);
    }
}
