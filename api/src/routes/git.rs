//! `POST /api/spaces/{name}/git/push` (SPEC 12).

use axum::extract::{Path, State};

use crate::body::{Json, JsonBody};
use crate::error::ApiResult;
use crate::format::js_trim;
use crate::input;
use crate::model::{ErrorJson, GitPushBody, GitPushResult};
use crate::AppState;

/// Pushes a branch of a repository in the space, as the space's user; the
/// token reaches git through its environment only.
#[utoipa::path(post, path = "/api/spaces/{name}/git/push", tag = "spaces",
    params(("name" = String, Path, description = "Space name")),
    request_body = GitPushBody,
    responses((status = 200, body = GitPushResult),
        (status = 400, description = "No token, a path not under /workspace, a bad remote or branch name, or a failing push (git's stderr quoted)", body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson), (status = 409, body = ErrorJson)))]
pub async fn push(
    State(st): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<GitPushBody>,
) -> ApiResult<Json<GitPushResult>> {
    let req = input::git_push(&body)?;
    // Never the token.
    let mut meta = serde_json::json!({
        "repoPath": req.repo_path, "remote": req.remote, "branch": req.branch,
    });
    let (rt, n) = (st.rt.clone(), name.clone());
    let out = super::audit::audited(
        &st,
        &name,
        clawdspace_runtime::audit::AuditType::SpaceGitPush,
        async move { rt.git_push(&n, req).await },
        move |out: &clawdspace_runtime::ExecOutput| {
            meta["exitCode"] = serde_json::json!(out.exit_code);
            Some(meta)
        },
    )
    .await?;
    let text = |b: &[u8]| js_trim(&String::from_utf8_lossy(b)).to_string();
    Ok(Json(GitPushResult {
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
        exit_code: out.exit_code,
    }))
}
