//! Host endpoints: system information and capabilities.

use axum::extract::State;
use axum::http::StatusCode;

use clawdspace_runtime::gpu::{gpus, Passthrough};
use clawdspace_runtime::host::{host_info, memory, online_cpus};
use clawdspace_runtime::SpaceStatus;

use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::format::{df_human, format_bytes, iso_millis, node_arch, uptime};
use crate::model::{
    Capabilities, DiskInfo, ErrorJson, GpuJson, MemoryInfo, QuarantinedJson, RuntimeCounters,
    SystemCapabilities, SystemInfo, WorkersJson,
};
use crate::AppState;

/// GPU, architecture and platform facts (both endpoints share them).
fn capabilities_of(machine: &str, gpu: &Passthrough) -> SystemCapabilities {
    let first = gpus().and_then(|g| g.devices.first());
    SystemCapabilities {
        gpu: first.is_some(),
        gpu_name: first.map(|d| d.name.clone()),
        gpu_memory: first.map(|d| format!("{} MiB", d.memory_mib)),
        arch: node_arch(machine),
        platform: "linux".into(),
        gpus: gpus().map(|g| {
            g.devices
                .iter()
                .enumerate()
                .map(|(index, d)| GpuJson {
                    index,
                    name: d.name.clone(),
                    memory: format!("{} MiB", d.memory_mib),
                    uuid: d.uuid.clone(),
                })
                .collect()
        }),
        gpu_runtime: gpu.probe().backend.map(|b| b.as_str().to_string()),
    }
}

/// Runs `f` on a blocking thread: these endpoints read procfs, the state
/// directory's filesystem, the image store and the CDI specs, and the
/// dashboard polls them.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<Json<T>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("system information task failed: {e}"),
            )
        })?
        .map(Json)
}

/// Host figures and space counters.
#[utoipa::path(get, path = "/api/system", tag = "system",
    responses((status = 200, body = SystemInfo), (status = 401, body = ErrorJson), (status = 500, body = ErrorJson)))]
pub async fn system(State(st): State<AppState>) -> ApiResult<Json<SystemInfo>> {
    blocking(move || system_info(&st)).await
}

fn system_info(st: &AppState) -> ApiResult<SystemInfo> {
    let h = host_info(&st.config.state_dir);
    let spaces = st.rt.list();
    let count = |s: SpaceStatus| spaces.iter().filter(|x| x.status == s).count();
    let used = h.mem_total.saturating_sub(h.mem_available);
    let pct = if h.mem_total > 0 {
        (1.0 - h.mem_available as f64 / h.mem_total as f64) * 100.0
    } else {
        0.0
    };
    let capabilities = capabilities_of(&h.machine, st.rt.gpu());
    Ok(SystemInfo {
        hostname: h.hostname,
        platform: "linux".into(),
        arch: capabilities.arch.clone(),
        cpus: h.cpus,
        load_average: h.load,
        memory: MemoryInfo {
            total: format_bytes(h.mem_total),
            free: format_bytes(h.mem_available),
            used: format_bytes(used),
            percentage: format!("{pct:.1}%"),
        },
        disk: h.disk.map(|d| DiskInfo {
            total: df_human(d.total),
            used: df_human(d.used),
            available: df_human(d.available),
            percentage: format!(
                "{}%",
                if d.used + d.available == 0 {
                    0
                } else {
                    (d.used * 100).div_ceil(d.used + d.available)
                }
            ),
        }),
        uptime: uptime(h.uptime_secs),
        docker: RuntimeCounters {
            version: format!("clawdspace-libcontainer {}", env!("CARGO_PKG_VERSION")),
            containers: spaces.len(),
            containers_running: count(SpaceStatus::Running),
            containers_paused: count(SpaceStatus::Paused),
            images: st.rt.images().list()?.len(),
        },
        capabilities,
        quarantined: st
            .rt
            .quarantined()?
            .into_iter()
            .map(|q| QuarantinedJson {
                dir: q.dir.display().to_string(),
                id: q.id,
                reason: q.reason,
                at: iso_millis(&q.at),
            })
            .collect(),
        workers: {
            let w = st.rt.workers();
            WorkersJson {
                size: w.size,
                idle: w.idle,
                operations: st.rt.operations_in_flight(),
            }
        },
    })
}

/// What this server can run (GPUs, CPUs, memory).
#[utoipa::path(get, path = "/api/system/capabilities", tag = "system",
    responses((status = 200, body = Capabilities), (status = 401, body = ErrorJson)))]
pub async fn capabilities(State(st): State<AppState>) -> ApiResult<Json<Capabilities>> {
    blocking(move || Ok(capabilities_now(&st))).await
}

pub fn capabilities_now(st: &AppState) -> Capabilities {
    let g = gpus();
    let machine = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.into());
    Capabilities {
        base: capabilities_of(&machine, st.rt.gpu()),
        cpus: online_cpus(),
        memory: memory().0,
        gpu_count: g.map(|g| g.devices.len()),
        driver_version: g.map(|g| g.driver_version.clone()),
        cuda_version: g.map(|g| g.cuda_version.clone()),
        memory_free: memory().1,
        spaces_running: st
            .rt
            .list()
            .iter()
            .filter(|s| s.status == SpaceStatus::Running)
            .count(),
        gpus_available: st.rt.gpu().count(),
    }
}
