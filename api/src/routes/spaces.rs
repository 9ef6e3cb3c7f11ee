//! Space endpoints: list, create, get, destroy, stop, start, exec.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use clawdspace_runtime::audit::AuditType;
use clawdspace_runtime::{CreateSpace, ErrorKind, INVALID_NAME};
use serde_json::json;

use super::audit::audited;

use super::message;
use crate::body::{json_response, Json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::format::js_trim;
use crate::input;
use crate::model::{
    CreateSpaceBody, ErrorJson, ExecBody, ExecResult, Field, Message, SpaceEnvelope, SpaceJson,
    SpaceList,
};
use crate::AppState;

/// Every space, newest first.
#[utoipa::path(get, path = "/api/spaces", tag = "spaces",
    responses((status = 200, body = SpaceList), (status = 401, body = ErrorJson)))]
pub async fn list(State(st): State<AppState>) -> Json<SpaceList> {
    Json(SpaceList {
        spaces: st.rt.list().iter().map(SpaceJson::from).collect(),
    })
}

/// Creates and starts a space (pulling its image when needed), then
/// writes its environment file and clones its repository when asked (a
/// failure of either is a 400 and removes the space). A `template` fills
/// the fields the request leaves out.
#[utoipa::path(post, path = "/api/spaces", tag = "spaces",
    request_body = CreateSpaceBody,
    responses((status = 201, body = SpaceEnvelope), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 409, body = ErrorJson),
        (status = 500, body = ErrorJson), (status = 502, body = ErrorJson)))]
pub async fn create(
    State(st): State<AppState>,
    JsonBody(raw): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let mut body: CreateSpaceBody = crate::body::fields(raw.clone())?;
    let name = input::name(&body)?;
    if st.rt.get(name.as_str()).is_ok() {
        return Err(ApiError::new(StatusCode::CONFLICT, "Space already exists"));
    }
    if let Some(t) = input::template(&body)? {
        let (templates, t) = (st.templates.clone(), t.to_string());
        let template = tokio::task::spawn_blocking(move || templates.get(&t))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| match e.kind() {
                ErrorKind::Invalid | ErrorKind::NotFound => {
                    ApiError::bad_request(format!("Invalid template: {e}"))
                }
                _ => ApiError::from(e),
            })?;
        let serde_json::Value::Object(mut merged) = raw else {
            return Err(ApiError::bad_request(INVALID_NAME));
        };
        crate::template::apply(
            &mut merged,
            &template,
            clawdspace_runtime::host::online_cpus(),
        );
        body = crate::body::fields(serde_json::Value::Object(merged))?;
    }
    let memory = input::memory(&body)?;
    let nano_cpus = input::cpus(&body, clawdspace_runtime::host::online_cpus())?;
    let gpus = input::gpus(&body)?;
    let gpu = input::gpu(&body)?;
    if gpus.is_some() && body.gpu == Some(Field::Typed(false)) {
        return Err(ApiError::bad_request("Invalid gpus: gpu is false"));
    }
    let gpu = gpu || gpus.is_some();
    if gpu {
        // NVML, CDI specs and the driver's files: off the async threads.
        let rt = st.rt.clone();
        let available = tokio::task::spawn_blocking(move || {
            clawdspace_runtime::gpu::gpus().is_some() || rt.gpu().available()
        })
        .await
        .unwrap_or(false);
        if !available {
            return Err(ApiError::bad_request("GPU not available on this server"));
        }
    }
    let image = input::image(&body, gpu, &st.config.image, &st.config.gpu_image)?;
    let (network, egress) = input::network(&body)?;
    let disk = input::disk(&body)?;
    let publish = input::ports(&body)?;
    let env = input::create_env(&body)?;
    let env_file = input::env_file(&body)?;
    let repo = input::repo(&body)?;
    let readonly_rootfs = input::readonly_rootfs(&body)?;
    let rt = st.rt.clone();
    let req = CreateSpace {
        name,
        image,
        memory,
        nano_cpus,
        pids_limit: None,
        gpu,
        gpus,
        network,
        publish,
        egress,
        disk,
        env,
        env_file,
        repo,
        readonly_rootfs,
    };
    let space_name = req.name.as_str().to_string();
    let space = audited(
        &st,
        &space_name,
        AuditType::SpaceCreate,
        async move { rt.create(req).await },
        |s| Some(create_meta(s)),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &SpaceEnvelope {
            space: SpaceJson::from(&space),
        },
    ))
}

/// The meta of `space.create`: what was asked for, never env values,
/// env-file contents or credentials.
fn create_meta(space: &clawdspace_runtime::Space) -> serde_json::Value {
    let mut m = json!({
        "memory": space.memory,
        "cpus": space.cpus(),
        "gpu": space.gpu,
        "image": space.image,
        "network": space.network.mode.as_str(),
    });
    if let Some(d) = space.disk {
        m["disk"] = json!(d);
    }
    m
}

/// One space.
#[utoipa::path(get, path = "/api/spaces/{name}", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = SpaceEnvelope), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn get(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<SpaceEnvelope>> {
    let s = st.rt.get(&name)?;
    Ok(Json(SpaceEnvelope {
        space: SpaceJson::from(&s),
    }))
}

/// Destroys a space and its files; its `/workspace` volume is kept unless
/// `removeVolume=true`.
#[utoipa::path(delete, path = "/api/spaces/{name}", tag = "spaces",
    params(("name" = String, Path, description = "Space name"),
        ("removeVolume" = Option<bool>, Query, description = "Delete the space's /workspace volume too (default: keep it for a new space of the same name)")),
    responses((status = 200, body = Message), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn destroy(
    State(st): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Message>> {
    let remove_volume = q.get("removeVolume").is_some_and(|v| v == "true");
    let (rt, n) = (st.rt.clone(), name.clone());
    audited(
        &st,
        &name,
        AuditType::SpaceDestroy,
        async move { rt.destroy_space(&n, remove_volume).await },
        move |_| Some(json!({ "removeVolume": remove_volume })),
    )
    .await?;
    Ok(message("Space destroyed"))
}

/// Pauses (freezes) a space.
#[utoipa::path(post, path = "/api/spaces/{name}/stop", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = Message), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson), (status = 409, body = ErrorJson)))]
pub async fn stop(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Message>> {
    let (rt, n) = (st.rt.clone(), name.clone());
    audited(
        &st,
        &name,
        AuditType::SpacePause,
        async move { rt.pause(&n).await },
        |_| None,
    )
    .await?;
    Ok(message("Space paused"))
}

/// Resumes a paused space or restarts a stopped one.
#[utoipa::path(post, path = "/api/spaces/{name}/start", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    responses((status = 200, body = Message), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn start(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Message>> {
    let (rt, n) = (st.rt.clone(), name.clone());
    audited(
        &st,
        &name,
        AuditType::SpaceStart,
        async move { rt.start(&n).await },
        |_| None,
    )
    .await?;
    Ok(message("Space started"))
}

/// Runs a command to completion.
#[utoipa::path(post, path = "/api/spaces/{name}/exec", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    request_body = ExecBody,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson), (status = 409, body = ErrorJson)))]
pub async fn exec(
    State(st): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ExecBody>,
) -> ApiResult<Response> {
    let req = input::exec_request(&body)?;
    let started = std::time::Instant::now();
    // Not detached: a client that hangs up kills its command (the
    // runtime's exec ends with this future), so it has no event.
    let out = st.rt.exec(&name, req.clone()).await?;
    let meta = super::audit::exec_meta(&st.rt, &name, &req, out.exit_code, started, out.timed_out);
    st.audit
        .record(Some(&name), AuditType::SpaceExec, Some(meta))
        .await;
    let text = |b: &[u8]| js_trim(&String::from_utf8_lossy(b)).to_string();
    let truncated = out.stdout_truncated || out.stderr_truncated;
    Ok(Json(ExecResult {
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
        exit_code: out.exit_code,
        truncated: truncated.then_some(true),
        timed_out: out.timed_out.then_some(true),
    })
    .into_response())
}
