//! The JSON shapes of the contract (SPEC section 4), with OpenAPI schemas.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
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
    /// Network mode (extension): `internet`, `lan` or `none`.
    #[schema(example = "internet")]
    pub network: String,
    /// Networks the space may not reach (extension; when set).
    #[serde(rename = "blockCidrs", skip_serializing_if = "Option::is_none")]
    pub block_cidrs: Option<Vec<String>>,
    /// The only names the space resolves and reaches (extension; when
    /// set).
    #[serde(rename = "allowDomains", skip_serializing_if = "Option::is_none")]
    pub allow_domains: Option<Vec<String>>,
    /// TCP ports the allowed names are reachable on (extension; with
    /// `allowDomains`).
    #[serde(rename = "allowPorts", skip_serializing_if = "Option::is_none")]
    pub allow_ports: Option<Vec<u16>>,
    /// The space's IPv4 address on the spaces' bridge (extension; mode
    /// `internet` only).
    #[serde(rename = "ipAddress", skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.88.0.2")]
    pub ip_address: Option<String>,
    /// Disk limit of the space's writable layer, bytes (extension; only
    /// when one was asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// The persistent volume mounted at `/workspace` (absent for spaces
    /// created before volumes existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<SpaceVolume>,
    /// `false` when the root filesystem is read-only (absent otherwise).
    #[serde(rename = "writableRootfs", skip_serializing_if = "Option::is_none")]
    pub writable_rootfs: Option<bool>,
    /// TCP ports published on the host's addresses (extension; only when
    /// some are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
}

/// A port of a space published on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The port inside the space.
    #[schema(example = 8000)]
    pub container: u16,
    /// The port on the host's addresses.
    #[schema(example = 18000)]
    pub host: u16,
}

/// A space's workspace volume.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpaceVolume {
    /// Volume name (see `GET /api/volumes`).
    pub name: String,
    /// Always `/workspace`.
    #[schema(example = "/workspace")]
    pub mountpoint: String,
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
            block_cidrs: non_empty(s.network.egress.block_cidrs.iter().map(|c| c.to_string())),
            allow_domains: non_empty(s.network.egress.allow_domains.iter().cloned()),
            allow_ports: non_empty(s.network.egress.allow_ports.iter().copied()),
            ip_address: s.network.address.map(|a| a.to_string()),
            disk: s.disk,
            volume: s.volume.as_ref().map(|v| SpaceVolume {
                name: v.clone(),
                mountpoint: clawdspace_runtime::WORKSPACE.into(),
            }),
            ports: s
                .network
                .published
                .iter()
                .map(|p| PortMapping {
                    container: p.container,
                    host: p.host,
                })
                .collect(),
            writable_rootfs: s.readonly_rootfs.then_some(false),
        }
    }
}

fn non_empty<T>(items: impl Iterator<Item = T>) -> Option<Vec<T>> {
    let v: Vec<T> = items.collect();
    (!v.is_empty()).then_some(v)
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

/// `{"status":"ok","version":"1.6.0"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// Version of the API contract (upstream's release it matches).
    #[schema(example = "1.6.0")]
    pub version: String,
}

/// `GET /api/templates`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// Every template, by name.
    pub templates: Vec<TemplateSummaryJson>,
}

/// A template in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateSummaryJson {
    /// Its name.
    #[schema(example = "default")]
    pub name: String,
    /// Its description (`""` when it has none).
    pub description: String,
}

/// `GET /api/templates/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateYaml {
    /// The name asked for.
    pub name: String,
    /// The stored YAML document.
    #[schema(example = "name: default\nresources:\n  memory: 2g\n")]
    pub yaml: String,
}

/// `PUT /api/templates` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PutTemplateBody {
    /// The template as a YAML document (at most 64 KiB): `name`,
    /// `description`, `managed`, `resources{memory, cpus, gpu, image}`,
    /// `security{writableRootfs}`, `network{mode, blockCidrs}`,
    /// `workspace{defaultRepoDest}` (docs/API.md).
    #[schema(value_type = String, example = "name: small\nresources:\n  memory: 512m\n  cpus: 0.5\n")]
    pub yaml: Option<Field<String>>,
}

/// `{"template": Template}`: the template as stored, as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateEnvelope {
    /// The parsed template (the YAML document's fields).
    #[schema(value_type = Object)]
    pub template: Value,
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
    /// Available memory (`MemAvailable`), bytes (extension, for placement).
    #[serde(rename = "memoryFree")]
    pub memory_free: u64,
    /// Spaces running now (extension, for placement).
    #[serde(rename = "spacesRunning")]
    pub spaces_running: usize,
    /// GPUs this server's runtime can give to spaces (extension, for
    /// placement; 0 when GPU spaces cannot be created).
    #[serde(rename = "gpusAvailable")]
    pub gpus_available: usize,
}

/// `GET /api/nodes`: this server and the others it knows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodesJson {
    /// This server first, then the others by name.
    pub nodes: Vec<NodeJson>,
    /// When the other nodes were last probed (ms since the epoch).
    #[serde(rename = "lastUpdatedAt")]
    pub last_updated_at: i64,
}

/// One server of the fleet.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeJson {
    /// Node name (`CLAWDSPACE_NODES` name, Tailscale host name, or this
    /// server's `CLAWDSPACE_NODE_NAME`).
    pub name: String,
    /// Its API's base URL.
    pub url: String,
    /// `online` or `offline`.
    pub status: String,
    /// Round trip of its health probe, ms (absent when offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// GPU, architecture and platform (absent until it answered once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<NodeCapabilities>,
    /// Available memory, bytes (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_free: Option<u64>,
    /// Spaces running there (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spaces_running: Option<usize>,
    /// GPUs its runtime can give to spaces (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus_available: Option<usize>,
    /// How it is known: `self`, `config` (`CLAWDSPACE_NODES`) or
    /// `tailscale` (extension).
    pub source: String,
    /// Why it is offline, or why its figures are missing (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it last answered, ms since the epoch (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<i64>,
}

/// The capabilities of a node as `/api/nodes` shows them (SPEC 12).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapabilities {
    pub gpu: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<String>,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub platform: String,
}

/// `GET /api/nodes/placement`: where a new space would go.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlacementJson {
    /// The chosen node's name.
    pub node: String,
    /// Its URL.
    pub url: String,
    /// Why, in words.
    pub reason: String,
}

/// A request field as sent: its documented type when the JSON has that
/// type, else the raw JSON, so the handler answers with the contract's own
/// message and in the contract's order (SPEC section 6) instead of serde's.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    /// The value has the documented type.
    Typed(T),
    /// Any other JSON value.
    Other(Value),
}

impl<T> Field<T> {
    /// The value, when it has the documented type.
    pub fn typed(self) -> Option<T> {
        match self {
            Field::Typed(t) => Some(t),
            Field::Other(_) => None,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match T::deserialize(&v) {
            Ok(t) => Field::Typed(t),
            Err(_) => Field::Other(v),
        })
    }
}

/// `POST /api/spaces` body. Unknown fields are ignored; a field of another
/// JSON type than shown is a 400 that names it.
// The type the handler deserializes: each field's `value_type` is the `T`
// of its `Field<T>`; the rules beyond the type are in `input.rs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateSpaceBody {
    /// `^[a-zA-Z0-9_-]{1,63}$`.
    #[schema(value_type = String, pattern = "^[a-zA-Z0-9_-]{1,63}$", example = "dev")]
    pub name: Option<Field<String>>,
    /// `2g`, `512m`, `1024k`, `512` (MiB); default `2g`.
    #[schema(value_type = Option<String>, example = "2g")]
    pub memory: Option<Field<String>>,
    /// Cores, 0.01 up to the host's CPU count; default 1.
    #[schema(value_type = Option<CpusSpec>, example = 1)]
    pub cpus: Option<Field<CpusSpec>>,
    /// GPU space (root, /workspace, all GPUs); default false.
    #[schema(value_type = Option<bool>)]
    pub gpu: Option<Field<bool>>,
    /// Which GPUs (extension; implies `gpu`): a count, or a list of
    /// indexes / UUIDs. Default: all.
    #[schema(value_type = Option<GpusSpec>)]
    pub gpus: Option<Field<GpusSpec>>,
    /// Image reference; default CLAWDSPACE_IMAGE (or the GPU image).
    #[schema(value_type = Option<String>)]
    pub image: Option<Field<String>>,
    /// Network (extension): `internet` (default: outbound through NAT,
    /// isolated from other spaces, the host and private ranges), `lan`
    /// (`internet` plus the private ranges) or `none` (loopback only); or
    /// an object with the mode and the space's egress policy.
    #[schema(value_type = Option<NetworkSpec>, example = "internet")]
    pub network: Option<Field<NetworkSpec>>,
    /// Disk limit of the space's files (extension), written like `memory`
    /// (`10g`, `512m`, no suffix = MiB), at least 1 MiB; default: none.
    /// Needs project quotas on the state directory's filesystem, else 400.
    #[schema(value_type = Option<String>, example = "10g")]
    pub disk: Option<Field<String>>,
    /// TCP ports to publish on the host's addresses (extension):
    /// `[{"container": 8000, "host": 18000}]`, at most 16. Only where the
    /// operator allows it (`CLAWDSPACE_PUBLISH_PORTS=1`), else 400; needs
    /// network `internet`.
    #[schema(value_type = Option<Vec<PortMapping>>)]
    pub ports: Option<Field<Vec<PortMapping>>>,
    /// Environment variables added to the space's (image's) environment,
    /// for its init and every exec (names `^[A-Za-z_][A-Za-z0-9_]*$`, at
    /// most 256, values up to 32 KiB). `GITHUB_TOKEN` is also the token for
    /// cloning a private https `repoUrl`.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<Field<BTreeMap<String, String>>>,
    /// Text of a file written into the space as its user, mode 0600 (at
    /// most 1 MiB; not together with `envFileBase64`).
    #[serde(rename = "envFileText")]
    #[schema(value_type = Option<String>)]
    pub env_file_text: Option<Field<String>>,
    /// The same as base64 (standard alphabet, padded).
    #[serde(rename = "envFileBase64")]
    #[schema(value_type = Option<String>)]
    pub env_file_base64: Option<Field<String>>,
    /// Where the file goes: an absolute path (default `/workspace/.env`).
    #[serde(rename = "envFilePath")]
    #[schema(value_type = Option<String>, example = "/workspace/.env")]
    pub env_file_path: Option<Field<String>>,
    /// A git repository cloned into `/workspace/<repoDest>` as the space's
    /// user, through the space's network: `https://…` (no credentials in
    /// it) or `git@host:path`. Needs `git` in the image.
    #[serde(rename = "repoUrl")]
    #[schema(value_type = Option<String>, example = "https://github.com/owner/repo.git")]
    pub repo_url: Option<Field<String>>,
    /// Branch to check out (default: the remote's default branch).
    #[serde(rename = "repoBranch")]
    #[schema(value_type = Option<String>, example = "main")]
    pub repo_branch: Option<Field<String>>,
    /// Destination relative to `/workspace` (default `repo`).
    #[serde(rename = "repoDest")]
    #[schema(value_type = Option<String>, example = "repo")]
    pub repo_dest: Option<Field<String>>,
    /// A template (`GET /api/templates`) whose resources, image, network
    /// and workspace defaults fill the fields this request leaves out.
    #[schema(value_type = Option<String>, example = "default")]
    pub template: Option<Field<String>>,
    /// `false`: the root filesystem is read-only (`/workspace`, `/tmp` and
    /// `/run` stay writable); default true (extension).
    #[serde(rename = "writableRootfs")]
    #[schema(value_type = Option<bool>)]
    pub writable_rootfs: Option<Field<bool>>,
}

/// `POST /api/spaces/{name}/git/push` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct GitPushBody {
    /// The repository: an absolute path under `/workspace`.
    #[serde(rename = "repoPath")]
    #[schema(value_type = String, example = "/workspace/repo")]
    pub repo_path: Option<Field<String>>,
    /// Remote name (default `origin`).
    #[schema(value_type = Option<String>, example = "origin")]
    pub remote: Option<Field<String>>,
    /// Branch to push (default `main`).
    #[schema(value_type = Option<String>, example = "main")]
    pub branch: Option<Field<String>>,
    /// Token for an https remote (required), handed to git through its
    /// environment, never stored in the space.
    #[schema(value_type = String)]
    pub token: Option<Field<String>>,
}

/// The result of `git push`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GitPushResult {
    /// git's standard output, trimmed.
    pub stdout: String,
    /// git's standard error, trimmed.
    pub stderr: String,
    /// Exit status (0: a failing push is a 400).
    #[serde(rename = "exitCode")]
    pub exit_code: i32,
}

/// `cpus` of a create body.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CpusSpec {
    /// Cores, fractional allowed (at least 0.01).
    Number(f64),
    /// The same as a decimal string (compatibility).
    Text(String),
}

/// Network mode of a space.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    /// Outbound access through NAT.
    Internet,
    /// `internet` plus the private ranges (the LAN).
    Lan,
    /// Loopback only.
    None,
}

/// `network` of a create body: a mode, or a mode with an egress policy.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NetworkSpec {
    /// Just the mode.
    Mode(NetworkName),
    /// The mode and the space's egress policy.
    Policy(NetworkPolicy),
}

/// A space's network with its egress policy (unknown keys are a 400).
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// The mode; default `internet`.
    #[schema(value_type = Option<NetworkName>)]
    pub mode: Option<Value>,
    /// IPv4 networks (`a.b.c.d/len`, host bits zero, or an address) the
    /// space may not reach; at most 64.
    #[serde(rename = "blockCidrs")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["10.0.0.0/8", "169.254.0.0/16"]))]
    pub block_cidrs: Option<Value>,
    /// When given, the only names the space resolves and reaches
    /// (`pypi.org`: that name; `*.github.com`: any name below it;
    /// lowercase, at most 253 characters, at most 64 entries).
    #[serde(rename = "allowDomains")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["pypi.org", "*.github.com"]))]
    pub allow_domains: Option<Value>,
    /// TCP ports the allowed names are reachable on (1-65535, at most
    /// 16); default `[80, 443]`. Only with `allowDomains`.
    #[serde(rename = "allowPorts")]
    #[schema(value_type = Option<Vec<u16>>, example = json!([443]))]
    pub allow_ports: Option<Value>,
}

/// `gpus` of a create body.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum GpusSpec {
    /// This many GPUs (at least 1), lowest indexes first.
    Count(u64),
    /// These GPUs: indexes (numbers or strings) or `GPU-…` UUIDs.
    Devices(Vec<GpuId>),
}

/// A GPU index or UUID.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum GpuId {
    /// NVML index.
    Index(u64),
    /// Index as a string, or a `GPU-…` UUID.
    Name(String),
}

/// A command: a string run with `sh -c`, or argv.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CommandSpec {
    /// Run with `sh -c` (non-empty).
    Shell(String),
    /// argv, no shell.
    Argv(Vec<String>),
}

/// `POST /api/spaces/{name}/exec` body (also the first message of a
/// streaming exec). Unknown fields are ignored.
// Deserialized by the handlers as `CreateSpaceBody` is; rules: `input.rs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecBody {
    /// The command.
    #[schema(value_type = CommandSpec, example = "echo hello")]
    pub command: Option<Field<CommandSpec>>,
    /// Working directory (absolute; extension).
    #[schema(value_type = Option<String>)]
    pub cwd: Option<Field<String>>,
    /// Extra environment (extension).
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<Field<BTreeMap<String, String>>>,
    /// User name or uid (extension).
    #[schema(value_type = Option<String>)]
    pub user: Option<Field<String>>,
    /// Bytes for stdin (extension; default: stdin at EOF).
    #[schema(value_type = Option<String>)]
    pub stdin: Option<Field<String>>,
    /// Kill the command's process group after this many ms (extension).
    #[serde(rename = "timeoutMs")]
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub timeout_ms: Option<Field<u64>>,
}

/// The first message of `GET /api/spaces/{name}/exec/ws`: an exec body plus
/// the terminal wanted (docs/API.md; not in the OpenAPI document).
#[derive(Debug, Default, Deserialize)]
pub struct ExecStart {
    /// The command and its extensions.
    #[serde(flatten)]
    pub exec: ExecBody,
    /// `true`: run under a pseudo-terminal.
    pub tty: Option<Field<bool>>,
    /// Terminal width (default 80, at most 500).
    pub cols: Option<Field<u64>>,
    /// Terminal height (default 24, at most 200).
    pub rows: Option<Field<u64>>,
}
