//! The JSON shapes of the contract (SPEC section 4), with OpenAPI schemas.

use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use clawdspace_runtime::Space;

use crate::format::{iso_millis, iso_nanos, number};

fn compact_number<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    number(*v).serialize(s)
}

/// A space as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpaceJson {
    /// The user-chosen name.
    pub name: String,
    /// 12 lowercase hex characters, stable for the life of the space.
    pub id: String,
    /// `running`, `paused` or `stopped`.
    #[schema(example = "running")]
    pub status: String,
    /// ISO-8601 UTC.
    pub created: String,
    /// ISO-8601 UTC, when the init last started.
    pub started: String,
    /// Image reference, verbatim.
    pub image: String,
    /// Memory limit, bytes.
    pub memory: u64,
    /// CPU limit in cores.
    #[serde(serialize_with = "compact_number")]
    pub cpus: f64,
    /// Last activity, ISO-8601 with milliseconds.
    #[serde(rename = "lastActivity")]
    pub last_activity: String,
    /// GPUs given to the space (extension; GPU spaces only): CDI device
    /// names, or the NVIDIA hook's device list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<String>>,
    /// Network mode (extension): `internet` or `none`.
    #[schema(example = "internet")]
    pub network: String,
    /// The space's IPv4 address on the spaces' bridge (extension; mode
    /// `internet` only).
    #[serde(rename = "ipAddress", skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.88.0.2")]
    pub ip_address: Option<String>,
    /// Disk limit of the space's writable layer, bytes (extension; only
    /// when one was asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

impl From<&Space> for SpaceJson {
    fn from(s: &Space) -> Self {
        SpaceJson {
            name: s.name.clone(),
            id: s.short_id().to_string(),
            status: s.status.as_str().to_string(),
            created: iso_nanos(&s.created),
            started: iso_nanos(&s.started),
            image: s.image.clone(),
            memory: s.memory,
            cpus: s.cpus(),
            last_activity: iso_millis(&s.last_activity),
            gpus: s.gpus.as_ref().map(|g| g.devices.clone()),
            network: s.network.mode.to_string(),
            ip_address: s.network.address.map(|a| a.to_string()),
            disk: s.disk,
        }
    }
}

/// `{"space": Space}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpaceEnvelope {
    /// The space.
    pub space: SpaceJson,
}

/// `{"spaces": [Space]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpaceList {
    /// Every space, newest first.
    pub spaces: Vec<SpaceJson>,
}

/// `{"message": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    /// What happened.
    pub message: String,
}

/// `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorJson {
    /// What was wrong.
    pub error: String,
}

/// `{"status":"ok","version":"1.0.0"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// Contract version.
    pub version: String,
}

/// The result of a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    /// Standard output, trimmed.
    pub stdout: String,
    /// Standard error, trimmed.
    pub stderr: String,
    /// Exit status; 128+N when killed by signal N.
    #[serde(rename = "exitCode")]
    pub exit_code: i32,
    /// Present (true) when output was cut at the capture limit (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Present (true) when the command's timeout killed it (extension).
    #[serde(rename = "timedOut", skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
}

/// Memory figures, formatted.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryInfo {
    /// Total (`formatBytes`).
    pub total: String,
    /// Available.
    pub free: String,
    /// total - free.
    pub used: String,
    /// Used share, one decimal and `%`.
    pub percentage: String,
}

/// Disk figures, formatted like `df -h`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiskInfo {
    /// Size.
    pub total: String,
    /// Used.
    pub used: String,
    /// Available.
    pub available: String,
    /// Use%.
    pub percentage: String,
}

/// Runtime counters (named as the original's Docker counters).
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeCounters {
    /// Runtime name and version.
    pub version: String,
    /// Spaces in any state.
    pub containers: usize,
    /// Running spaces.
    #[serde(rename = "containersRunning")]
    pub containers_running: usize,
    /// Paused spaces.
    #[serde(rename = "containersPaused")]
    pub containers_paused: usize,
    /// Images available locally.
    pub images: usize,
}

/// The runtime's worker pool inside `/api/system` (extension).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkersJson {
    /// Worker processes (slots) in the pool.
    pub size: usize,
    /// Slots with no request in flight; equals `size` when the runtime is
    /// quiet.
    pub idle: usize,
    /// Runtime operations (create, destroy, pause, resume, start, exec
    /// start, pull) running now, including those whose client went away.
    pub operations: usize,
}

/// GPU facts inside `/api/system`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemCapabilities {
    /// Whether the host has an NVIDIA GPU.
    pub gpu: bool,
    /// Name of the first GPU.
    #[serde(rename = "gpuName", skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
    /// Memory of the first GPU, e.g. `24576 MiB`.
    #[serde(rename = "gpuMemory", skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<String>,
    /// Node.js architecture name.
    pub arch: String,
    /// `linux`.
    pub platform: String,
    /// Every GPU NVML reports (extension; absent without a GPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuJson>>,
    /// How GPUs reach spaces: `cdi`, `nvidia-hook` or `driver` (extension;
    /// absent when GPU spaces cannot be created).
    #[serde(rename = "gpuRuntime", skip_serializing_if = "Option::is_none")]
    pub gpu_runtime: Option<String>,
}

/// One GPU of the host.
#[derive(Debug, Serialize, ToSchema)]
pub struct GpuJson {
    /// NVML index (what `gpus: ["0"]` names).
    pub index: usize,
    /// Product name.
    pub name: String,
    /// Total memory, e.g. `81559 MiB`.
    pub memory: String,
    /// `GPU-…` UUID.
    pub uuid: String,
}

/// `GET /api/system`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemInfo {
    /// Host name.
    pub hostname: String,
    /// `linux`.
    pub platform: String,
    /// Node.js architecture name.
    pub arch: String,
    /// Online logical CPUs.
    pub cpus: u32,
    /// 1, 5, 15 minute load averages.
    #[serde(rename = "loadAverage")]
    pub load_average: [f64; 3],
    /// Memory.
    pub memory: MemoryInfo,
    /// Disk of the state directory's filesystem, or null.
    pub disk: Option<DiskInfo>,
    /// `<d>d <h>h <m>m`.
    pub uptime: String,
    /// Space counters.
    pub docker: RuntimeCounters,
    /// GPU facts.
    pub capabilities: SystemCapabilities,
    /// Spaces whose record could not be read, moved aside with all their
    /// files instead of being deleted (extension; empty when none). See
    /// docs/OPERATIONS.md for how to recover one.
    pub quarantined: Vec<QuarantinedJson>,
    /// Worker pool (extension).
    pub workers: WorkersJson,
}

/// A space directory moved aside because its record could not be read.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantinedJson {
    /// Where it is now on the host (`<state>/quarantine/<id>-<time>`).
    pub dir: String,
    /// The space id (its directory name under `<state>/spaces`).
    pub id: String,
    /// Why its record could not be read.
    pub reason: String,
    /// When it was quarantined (ISO-8601).
    pub at: String,
}

/// `GET /api/system/capabilities`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Capabilities {
    /// The same GPU, arch and platform facts as in `/api/system`.
    #[serde(flatten)]
    pub base: SystemCapabilities,
    /// Online logical CPUs.
    pub cpus: u32,
    /// Total memory, bytes.
    pub memory: u64,
    /// Number of GPUs (extension).
    #[serde(rename = "gpuCount", skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<usize>,
    /// NVIDIA driver version (extension).
    #[serde(rename = "driverVersion", skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA version the driver supports (extension).
    #[serde(rename = "cudaVersion", skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
}

/// `POST /api/spaces` body (documentation: bodies are parsed field by field,
/// with the contract's defaults and error messages, see `input.rs`).
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
pub struct CreateSpaceBody {
    /// `^[a-zA-Z0-9_-]{1,63}$`.
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,63}$", example = "dev")]
    pub name: String,
    /// `2g`, `512m`, `1024k`, `512` (MiB); default `2g`.
    #[schema(example = "2g")]
    pub memory: Option<String>,
    /// Cores, 0.01 up to the host's CPU count; default 1.
    #[schema(example = 1, minimum = 0.01)]
    pub cpus: Option<f64>,
    /// GPU space (root, /workspace, all GPUs); default false.
    pub gpu: Option<bool>,
    /// Which GPUs (extension; implies `gpu`): a count, or a list of
    /// indexes / UUIDs. Default: all.
    pub gpus: Option<GpusSpec>,
    /// Image reference; default CLAWDSPACE_IMAGE (or the GPU image).
    pub image: Option<String>,
    /// Network (extension): `internet` (default: outbound through NAT,
    /// isolated from other spaces, the host and private ranges) or `none`
    /// (loopback only).
    #[schema(example = "internet")]
    pub network: Option<NetworkName>,
    /// Disk limit of the space's files (extension), written like `memory`
    /// (`10g`, `512m`, no suffix = MiB), at least 1 MiB; default: none.
    /// Needs project quotas on the state directory's filesystem, else 400.
    #[schema(example = "10g")]
    pub disk: Option<String>,
}

/// Network mode of a space.
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    /// Outbound access through NAT.
    Internet,
    /// Loopback only.
    None,
}

/// `gpus` of a create body.
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum GpusSpec {
    /// This many GPUs (at least 1), lowest indexes first.
    Count(u32),
    /// These GPUs: indexes (numbers or strings) or `GPU-…` UUIDs.
    Devices(Vec<GpuId>),
}

/// A GPU index or UUID.
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum GpuId {
    /// NVML index.
    Index(u32),
    /// Index as a string, or a `GPU-…` UUID.
    Name(String),
}

/// A command: a string run with `sh -c`, or argv.
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CommandSpec {
    /// Run with `sh -c` (non-empty).
    Shell(String),
    /// argv, no shell.
    Argv(Vec<String>),
}

/// `POST /api/spaces/{name}/exec` body (documentation, see `input.rs`).
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct ExecBody {
    /// The command.
    #[schema(example = "echo hello")]
    pub command: CommandSpec,
    /// Working directory (absolute; extension).
    pub cwd: Option<String>,
    /// Extra environment (extension).
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// User name or uid (extension).
    pub user: Option<String>,
    /// Bytes for stdin (extension; default: stdin at EOF).
    pub stdin: Option<String>,
    /// Kill the command's process group after this many ms (extension).
    #[serde(rename = "timeoutMs")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
}
