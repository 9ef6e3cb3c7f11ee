//! A space's files: the upstream JSON API (`/files`, `/file`, paths under
//! `/workspace`) and the streaming one (`/fs`, `/fs/stat`, `/archive`,
//! absolute paths), plus the volumes kept by destroyed spaces.

use std::collections::HashMap;
use std::future::Future as _;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use clawdspace_runtime::audit::AuditType;
use clawdspace_runtime::{workspace_path, FileInfo, FileKind, PutOptions};

use super::audit::audited;
use crate::body::{Json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::model::{ErrorJson, Message};
use crate::stream::{body_reader, body_writer, file_body};
use crate::AppState;

/// Query parameters, as strings (bad values are 400s that say which).
type Params = Query<HashMap<String, String>>;

/// Default and largest `maxBytes` of `GET …/file`.
const DEFAULT_MAX_BYTES: u64 = 262_144;
const MAX_MAX_BYTES: u64 = 8 << 20;

/// One entry of a listing (upstream shape).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileEntryJson {
    /// Name in the directory.
    pub name: String,
    /// The listed path joined with the name.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ms since the epoch.
    pub mtime_ms: i64,
}

/// `GET …/files` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileListJson {
    /// The `path` query as given.
    pub path: String,
    /// The directory's entries, by name.
    pub entries: Vec<FileEntryJson>,
}

/// `GET …/file` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileContentJson {
    /// The `path` query as given.
    pub path: String,
    /// The first `maxBytes` bytes, base64.
    pub content_base64: String,
    /// Whether the file is longer than what was sent.
    pub truncated: bool,
}

/// `PUT …/file` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutFileBody {
    /// The whole content, base64.
    #[schema(value_type = String)]
    pub content_base64: Option<serde_json::Value>,
}

/// `GET …/fs/stat` answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStatJson {
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits as a number (`420` = `0644`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Last modification, ms since the epoch.
    pub mtime_ms: i64,
    /// The target of a symlink (not followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl From<&FileInfo> for FileStatJson {
    fn from(i: &FileInfo) -> Self {
        FileStatJson {
            kind: i.kind.as_str().into(),
            size: i.size,
            mode: i.mode,
            uid: i.uid,
            gid: i.gid,
            mtime_ms: i.mtime_ms,
            link_target: i.link_target.clone(),
        }
    }
}

/// One volume.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeJson {
    /// Its name (the space name it belongs to).
    pub name: String,
    /// Bytes its files take on disk.
    pub size_bytes: u64,
    /// The space mounting it now, or null.
    pub in_use_by: Option<String>,
}

/// `GET /api/volumes` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeList {
    /// Every volume, by name.
    pub volumes: Vec<VolumeJson>,
}

/// The `path` query, which upstream's handlers require non-empty.
fn path_param(q: &HashMap<String, String>) -> ApiResult<String> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.clone()),
        _ => Err(ApiError::bad_request("path required")),
    }
}

/// A workspace-relative path of the upstream API as an absolute path.
fn in_workspace(p: &str) -> ApiResult<String> {
    Ok(workspace_path(p)?.to_string_lossy().into_owned())
}

/// Lists a directory under `/workspace` (upstream API).
#[utoipa::path(get, path = "/api/spaces/{name}/files", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = Option<String>, Query, description = "Directory, relative to /workspace (default /); `..` is clamped there")),
    responses((status = 200, body = FileListJson), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn list(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<FileListJson>> {
    let given = q
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| "/".into());
    let entries = st.rt.list_dir(&name, &in_workspace(&given)?).await?;
    let join = |n: &str| {
        if given.ends_with('/') {
            format!("{given}{n}")
        } else {
            format!("{given}/{n}")
        }
    };
    Ok(Json(FileListJson {
        entries: entries
            .iter()
            .map(|e| FileEntryJson {
                path: join(&e.name),
                name: e.name.clone(),
                kind: e.info.kind.as_str().into(),
                size: e.info.size,
                mtime_ms: e.info.mtime_ms,
            })
            .collect(),
        path: given,
    }))
}

/// Reads the start of a file under `/workspace`, base64 (upstream API).
#[utoipa::path(get, path = "/api/spaces/{name}/file", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "File, relative to /workspace"),
        ("maxBytes" = Option<u64>, Query, description = "Bytes to send at most (default 262144, at most 8388608)")),
    responses((status = 200, body = FileContentJson), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn read(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<FileContentJson>> {
    let given = path_param(&q)?;
    let max = match q.get("maxBytes") {
        None => DEFAULT_MAX_BYTES,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("Invalid maxBytes (a whole number of bytes)"))?
            .min(MAX_MAX_BYTES),
    };
    let (file, info) = st.rt.open_file(&name, &in_workspace(&given)?).await?;
    let data = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut out = Vec::with_capacity(info.size.min(max) as usize);
        file.take(max).read_to_end(&mut out).map(|_| out)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("read: {e}")))?;
    Ok(Json(FileContentJson {
        path: given,
        content_base64: base64::engine::general_purpose::STANDARD.encode(&data),
        truncated: info.size > data.len() as u64,
    }))
}

/// Writes a whole file under `/workspace` from base64 (upstream API).
#[utoipa::path(put, path = "/api/spaces/{name}/file", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "File, relative to /workspace")),
    request_body = PutFileBody,
    responses((status = 200, body = Message), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson),
        (status = 413, body = ErrorJson), (status = 507, body = ErrorJson)))]
pub async fn write(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    JsonBody(body): JsonBody<PutFileBody>,
) -> ApiResult<Json<Message>> {
    let given = path_param(&q)?;
    let content = match &body.content_base64 {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ => return Err(ApiError::bad_request("contentBase64 required")),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content.trim())
        .map_err(|_| ApiError::bad_request("Invalid contentBase64"))?;
    let opts = PutOptions {
        mkdirs: true,
        ..Default::default()
    };
    let len = bytes.len();
    let (rt, n, p) = (st.rt.clone(), name.clone(), in_workspace(&given)?);
    audited(
        &st,
        &name,
        AuditType::SpaceFileWrite,
        async move { rt.put_file(&n, &p, opts, std::io::Cursor::new(bytes)).await },
        move |_| Some(json!({"path": given, "bytes": len})),
    )
    .await?;
    Ok(super::message("OK"))
}

/// A `true`/`false` query flag.
fn flag(q: &HashMap<String, String>, key: &str) -> ApiResult<bool> {
    match q.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid {key} (true or false)"
        ))),
    }
}

/// Streams a request body into a file (temporary file, fsync, rename).
#[utoipa::path(put, path = "/api/spaces/{name}/fs", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "Absolute path in the space"),
        ("mode" = Option<String>, Query, description = "Octal permission bits (default 0644)"),
        ("mkdirs" = Option<bool>, Query, description = "Create missing parent directories")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileStatJson, description = "The file as written"),
        (status = 400, body = ErrorJson), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson), (status = 507, body = ErrorJson)))]
pub async fn put(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Body,
) -> ApiResult<Json<FileStatJson>> {
    let path = path_param(&q)?;
    let mode = match q.get("mode") {
        None => 0o644,
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| ApiError::bad_request("Invalid mode (octal, e.g. 0644)"))?,
    };
    let opts = PutOptions {
        mode,
        mkdirs: flag(&q, "mkdirs")?,
    };
    // Not on a task of its own (`audited`): the body is the client's, so
    // a client that hangs up fails the write anyway; and the request body
    // must stay with the request while an early error (507) is answered.
    let info = st
        .rt
        .put_file(&name, &path, opts, body_reader(body))
        .await?;
    st.audit
        .record(
            Some(&name),
            AuditType::SpaceFileWrite,
            Some(json!({"path": path, "bytes": info.size})),
        )
        .await;
    Ok(Json(FileStatJson::from(&info)))
}

/// A single `bytes=` range of a file of `size` bytes: (start, length);
/// `Err` when it cannot be satisfied.
fn parse_range(v: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: the whole file instead
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            Err(())
        } else {
            Ok((size - n.min(size), n.min(size)))
        }
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            Err(())
        } else {
            Ok((start, end - start + 1))
        }
    };
    Some(r)
}

/// Streams a file out (`Range`, `ETag`, `If-None-Match`).
#[utoipa::path(get, path = "/api/spaces/{name}/fs", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "Absolute path in the space")),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range"), (status = 304, description = "Unchanged (If-None-Match)"),
        (status = 400, body = ErrorJson), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson), (status = 416, description = "Range not satisfiable")))]
pub async fn get(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let (file, info) = st.rt.open_file(&name, &path).await?;
    let etag = info.etag();
    let mut h = HeaderMap::new();
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, info.size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, info.size),
        Some(Ok((start, len))) => {
            h.insert(
                header::CONTENT_RANGE,
                hv(&format!("bytes {start}-{}/{}", start + len - 1, info.size)),
            );
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        Some(Err(())) => {
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes */{}", info.size)));
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response());
        }
    };
    let mut file = file;
    if start > 0 {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("seek: {e}")))?;
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    Ok((status, h, file_body(file, len)).into_response())
}

/// Metadata of a path; a symlink is not followed.
#[utoipa::path(get, path = "/api/spaces/{name}/fs/stat", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "Absolute path in the space")),
    responses((status = 200, body = FileStatJson), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn stat(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<FileStatJson>> {
    let path = path_param(&q)?;
    let info = st.rt.file_stat(&name, &path).await?;
    Ok(Json(FileStatJson::from(&info)))
}

/// Deletes a file, symlink or directory (with its contents).
#[utoipa::path(delete, path = "/api/spaces/{name}/fs", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "Absolute path in the space")),
    responses((status = 200, body = Message), (status = 400, body = ErrorJson),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Message>> {
    let path = path_param(&q)?;
    let (rt, n, p) = (st.rt.clone(), name.clone(), path.clone());
    audited(
        &st,
        &name,
        AuditType::SpaceFileDelete,
        async move { rt.delete_path(&n, &p).await },
        move |_| Some(json!({ "path": path })),
    )
    .await?;
    Ok(super::message("Deleted"))
}

/// A directory as a tar stream.
#[utoipa::path(get, path = "/api/spaces/{name}/archive", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "Absolute path of a directory in the space")),
    responses((status = 200, description = "A tar stream of the directory's contents", content_type = "application/x-tar"),
        (status = 400, body = ErrorJson), (status = 401, body = ErrorJson), (status = 404, body = ErrorJson)))]
pub async fn archive_get(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    // Errors a client can act on come before the first byte.
    let info = st.rt.file_stat(&name, &path).await?;
    if info.kind != FileKind::Dir && info.kind != FileKind::Symlink {
        return Err(ApiError::bad_request(format!("{path} is not a directory")));
    }
    let (w, body) = body_writer();
    let rt = st.rt.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = rt.write_archive(&name, &path, w).await;
        let _ = tx.send(r);
    });
    // A directory that cannot be opened fails before anything is sent;
    // a failure later breaks the stream off.
    let body = Body::from_stream(ArchiveStream::new(body, rx));
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        )],
        body,
    )
        .into_response())
}

/// The archive's bytes, then an error if writing it failed.
struct ArchiveStream {
    body: Option<axum::body::BodyDataStream>,
    done: Option<tokio::sync::oneshot::Receiver<clawdspace_runtime::Result<()>>>,
}

impl ArchiveStream {
    fn new(
        body: Body,
        done: tokio::sync::oneshot::Receiver<clawdspace_runtime::Result<()>>,
    ) -> Self {
        ArchiveStream {
            body: Some(body.into_data_stream()),
            done: Some(done),
        }
    }
}

impl futures_util::Stream for ArchiveStream {
    type Item = Result<axum::body::Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let next = match self.body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_next(cx),
            None => Poll::Ready(None),
        };
        match next {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.body = None;
                let Some(done) = self.done.as_mut() else {
                    return Poll::Ready(None);
                };
                match std::pin::Pin::new(done).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => {
                        self.done = None;
                        match r {
                            Ok(Ok(())) => Poll::Ready(None),
                            Ok(Err(e)) => {
                                tracing::warn!("archive broken off: {e}");
                                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
                            }
                            Err(_) => {
                                Poll::Ready(Some(Err(std::io::Error::other("archive task ended"))))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Extracts a tar stream into a directory (created if missing).
#[utoipa::path(put, path = "/api/spaces/{name}/archive", tag = "files",
    params(("name" = String, Path, description = "Space name"),
        ("path" = String, Query, description = "Absolute path of the directory to extract into")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A tar stream (any content type is accepted)"),
    responses((status = 200, body = Message), (status = 400, body = ErrorJson, description = "A bad or hostile archive (names the entry)"),
        (status = 401, body = ErrorJson), (status = 404, body = ErrorJson), (status = 507, body = ErrorJson)))]
pub async fn archive_put(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Body,
) -> ApiResult<Json<Message>> {
    let path = path_param(&q)?;
    // As for `put`: the body stays with the request.
    st.rt
        .extract_archive(&name, &path, body_reader(body))
        .await?;
    st.audit
        .record(
            Some(&name),
            AuditType::SpaceArchiveExtract,
            Some(json!({ "path": path })),
        )
        .await;
    Ok(super::message("Extracted"))
}

/// Every workspace volume: of live spaces and kept by destroyed ones.
#[utoipa::path(get, path = "/api/volumes", tag = "volumes",
    responses((status = 200, body = VolumeList), (status = 401, body = ErrorJson)))]
pub async fn volumes(State(st): State<AppState>) -> ApiResult<Json<VolumeList>> {
    let v = st.rt.volumes().await?;
    Ok(Json(VolumeList {
        volumes: v
            .into_iter()
            .map(|v| VolumeJson {
                name: v.name,
                size_bytes: v.size_bytes,
                in_use_by: v.in_use_by,
            })
            .collect(),
    }))
}

/// Deletes a kept volume and its files.
#[utoipa::path(delete, path = "/api/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses((status = 200, body = Message), (status = 401, body = ErrorJson),
        (status = 404, body = ErrorJson), (status = 409, body = ErrorJson, description = "A space mounts it")))]
pub async fn remove_volume(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Message>> {
    let (rt, n) = (st.rt.clone(), name.clone());
    audited(
        &st,
        &name,
        AuditType::VolumeDelete,
        async move { rt.remove_volume(&n).await },
        |_| None,
    )
    .await?;
    Ok(super::message("Volume removed"))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 10))));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok((90, 10))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 10))));
        assert_eq!(parse_range("bytes=-500", 100), Some(Ok((0, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-4", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
    }
}
