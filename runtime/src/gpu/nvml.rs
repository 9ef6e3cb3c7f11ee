//! GPU detection through NVML (`nvml-wrapper`, which loads
//! `libnvidia-ml.so` at run time): a host without the driver reports no GPU
//! quickly and without error. Detected once, then cached.

use std::sync::OnceLock;

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// Product name (e.g. `NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Minor number of its `/dev/nvidiaN` node.
    pub minor: Option<u32>,
}

impl GpuInfo {
    /// The NVML index of the GPU with this UUID.
    pub fn index_of_uuid(&self, uuid: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.uuid == uuid)
    }
}

/// What the host's NVIDIA driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// Every GPU, in NVML index order.
    pub devices: Vec<GpuDevice>,
    /// Driver version.
    pub driver_version: String,
    /// Highest CUDA version the driver supports (`12.4`).
    pub cuda_version: String,
}

fn detect() -> Option<GpuInfo> {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            tracing::info!("no NVIDIA GPU: {e}");
            return None;
        }
    };
    let count = nvml.device_count().ok()?;
    let mut devices = Vec::new();
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        devices.push(GpuDevice {
            name: d.name().unwrap_or_default(),
            memory_mib: d.memory_info().map(|m| m.total >> 20).unwrap_or(0),
            uuid: d.uuid().unwrap_or_default(),
            minor: d.minor_number().ok(),
        });
    }
    if devices.is_empty() {
        return None;
    }
    let cuda = nvml
        .sys_cuda_driver_version()
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
        .unwrap_or_default();
    Some(GpuInfo {
        devices,
        driver_version: nvml.sys_driver_version().unwrap_or_default(),
        cuda_version: cuda,
    })
}

/// The host's GPUs (detected on first call, then cached).
pub fn gpus() -> Option<&'static GpuInfo> {
    static CACHE: OnceLock<Option<GpuInfo>> = OnceLock::new();
    CACHE.get_or_init(detect).as_ref()
}
