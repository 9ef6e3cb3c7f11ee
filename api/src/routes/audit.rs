//! `GET /api/audit` (SPEC 12) and `GET /metrics`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use std::future::Future;
use std::time::Instant;

use serde_json::{json, Value};

use clawdspace_runtime::audit::{AuditEvent, AuditType};
use clawdspace_runtime::{Command, ExecRequest};

use crate::body::Json;
use crate::error::{ApiError, ApiResult};
use crate::model::ErrorJson;
use crate::AppState;

/// Events returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 200;
/// Events returned at most.
const MAX_LIMIT: usize = 1000;

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventJson {
    /// When, ISO 8601 UTC with milliseconds.
    pub ts: String,
    /// The space it concerns (absent for template events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// What happened: `space.create`, `space.start`, `space.pause`,
    /// `space.destroy`, `space.exec`, `space.shell`, `space.file.write`,
    /// `terminal.open`, `terminal.close`, `template.upsert`,
    /// `template.delete`; extensions: `space.file.delete`,
    /// `space.archive.extract`, `space.git.push`, `port.publish`,
    /// `port.revoke`, `volume.delete`, `network.drop`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Details (names and numbers; never environment values or file
    /// contents).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
}

impl From<AuditEvent> for AuditEventJson {
    fn from(e: AuditEvent) -> Self {
        AuditEventJson {
            ts: e.ts,
            space: e.space,
            kind: e.kind,
            meta: e.meta,
        }
    }
}

/// `{"events": [...]}`, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// The events.
    pub events: Vec<AuditEventJson>,
}

/// `limit` as upstream reads it: the leading integer of the value (so
/// `"20x"` is 20), 200 when absent or not a number, clamped to 1–1000.
fn limit(v: Option<&String>) -> usize {
    let Some(v) = v else {
        return DEFAULT_LIMIT;
    };
    let t = v.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return DEFAULT_LIMIT;
    }
    if neg {
        return 1;
    }
    digits[..end]
        .parse::<usize>()
        .unwrap_or(MAX_LIMIT)
        .clamp(1, MAX_LIMIT)
}

/// The last events of the audit log, oldest first.
#[utoipa::path(get, path = "/api/audit", tag = "system",
    params(("space" = Option<String>, Query, description = "Only events of this space"),
        ("limit" = Option<u32>, Query, description = "Events at most (default 200, clamped to 1–1000)")),
    responses((status = 200, body = AuditList), (status = 401, body = ErrorJson)))]
pub async fn list(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AuditList>> {
    let space = q.get("space").filter(|s| !s.is_empty()).cloned();
    let events = st
        .audit
        .query(space, limit(q.get("limit")))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(AuditList {
        events: events.into_iter().map(AuditEventJson::from).collect(),
    }))
}

/// Prometheus text format (0.0.4): per-space CPU, memory, pids, network
/// and block I/O, request latencies, the worker pool.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"),
        (status = 401, body = ErrorJson)))]
pub async fn metrics(State(st): State<AppState>) -> ApiResult<Response> {
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&st))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// Runs `op` to completion on a task of its own and, when it succeeds,
/// records a `kind` event of `space` with `meta(&result)`, both even if the
/// client hangs up meanwhile (the runtime's operations finish regardless:
/// their events must not be lost with the request).
pub async fn audited<T, F, M>(
    st: &AppState,
    space: &str,
    kind: AuditType,
    op: F,
    meta: M,
) -> ApiResult<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T, clawdspace_runtime::Error>> + Send + 'static,
    M: FnOnce(&T) -> Option<Value> + Send + 'static,
{
    let audit = st.audit.clone();
    let space = space.to_string();
    tokio::spawn(async move {
        let r = op.await;
        if let Ok(v) = &r {
            audit.record(Some(&space), kind, meta(v)).await;
        }
        r
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(ApiError::from)
}

/// The meta of a `space.exec` event: the command as given, the user it
/// ran as, its exit code and duration, and the *names* of extra
/// environment variables (never their values, never stdin).
pub fn exec_meta(
    rt: &clawdspace_runtime::Runtime,
    space: &str,
    req: &ExecRequest,
    exit_code: i32,
    started: Instant,
    timed_out: bool,
) -> Value {
    let command = match &req.command {
        Command::Shell(s) => Value::String(s.clone()),
        Command::Argv(a) => json!(a),
    };
    let user = req
        .user
        .clone()
        .or_else(|| rt.get(space).ok().map(|s| s.user.name));
    let mut meta = json!({
        "command": command,
        "user": user,
        "exitCode": exit_code,
        "durationMs": started.elapsed().as_millis() as u64,
    });
    let names: Vec<&str> = req
        .env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    if !names.is_empty() {
        meta["envNames"] = json!(names);
    }
    if let Some(cwd) = &req.cwd {
        meta["cwd"] = json!(cwd);
    }
    if req.tty.is_some() {
        meta["tty"] = json!(true);
    }
    if timed_out {
        meta["timedOut"] = json!(true);
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_reads_like_parse_int_and_clamps() {
        let l = |s: &str| limit(Some(&s.to_string()));
        assert_eq!(limit(None), 200);
        assert_eq!(l("5"), 5);
        assert_eq!(l("20x"), 20);
        assert_eq!(l("abc"), 200);
        assert_eq!(l(""), 200);
        assert_eq!(l("0"), 1);
        assert_eq!(l("-3"), 1);
        assert_eq!(l("5000"), 1000);
        assert_eq!(l("99999999999999999999999"), 1000);
    }
}
