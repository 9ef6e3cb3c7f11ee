//! Templates (upstream's later API): list, read, add or replace, delete.
//! The store and its rules are the runtime's (`templates` module).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use clawdspace_runtime::audit::AuditType;

use clawdspace_runtime::templates::Templates;

use crate::body::{Json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    ErrorJson, Field, Message, PutTemplateBody, TemplateEnvelope, TemplateList,
    TemplateSummaryJson, TemplateYaml,
};
use crate::AppState;

/// Runs a blocking call of the store off the async threads.
async fn store<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&Templates) -> clawdspace_runtime::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let t = st.templates.clone();
    tokio::task::spawn_blocking(move || f(&t))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// Every template, by name.
#[utoipa::path(get, path = "/api/templates", tag = "templates",
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorJson)))]
pub async fn list(State(st): State<AppState>) -> ApiResult<Json<TemplateList>> {
    let list = store(&st, Templates::list).await?;
    Ok(Json(TemplateList {
        templates: list
            .into_iter()
            .map(|t| TemplateSummaryJson {
                name: t.name,
                description: t.description,
            })
            .collect(),
    }))
}

/// One template's YAML document.
#[utoipa::path(get, path = "/api/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 200, body = TemplateYaml), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson, description = "`Template not found`")))]
pub async fn get(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<TemplateYaml>> {
    let n = name.clone();
    let yaml = store(&st, move |t| t.yaml(&n)).await?;
    Ok(Json(TemplateYaml { name, yaml }))
}

/// Adds a template, or replaces the one of the same name.
#[utoipa::path(put, path = "/api/templates", tag = "templates",
    request_body = PutTemplateBody,
    responses((status = 200, body = TemplateEnvelope),
        (status = 400, body = ErrorJson, description = "`yaml required`, invalid YAML, or what the schema refuses"),
        (status = 401, body = ErrorJson)))]
pub async fn put(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<PutTemplateBody>,
) -> ApiResult<Json<TemplateEnvelope>> {
    let yaml = match body.yaml {
        Some(Field::Typed(y)) if !y.trim().is_empty() => y,
        Some(Field::Typed(_)) | None | Some(Field::Other(serde_json::Value::Null)) => {
            return Err(ApiError::bad_request("yaml required"))
        }
        Some(Field::Other(_)) => return Err(ApiError::bad_request("yaml must be a string")),
    };
    let t = store(&st, move |t| t.put_yaml(&yaml)).await?;
    tracing::info!(template = %t.name, "template saved");
    st.audit
        .record(
            None,
            AuditType::TemplateUpsert,
            Some(serde_json::json!({"template": t.name})),
        )
        .await;
    let template = serde_json::to_value(&t)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(TemplateEnvelope { template }))
}

/// Deletes a template.
#[utoipa::path(delete, path = "/api/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 200, body = Message, description = "`OK`"), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson, description = "`Template not found`")))]
pub async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Message>> {
    let n = name.clone();
    store(&st, move |t| t.delete(&n)).await?;
    tracing::info!(template = %name, "template deleted");
    st.audit
        .record(
            None,
            AuditType::TemplateDelete,
            Some(serde_json::json!({"template": name})),
        )
        .await;
    Ok(super::message("OK"))
}
