//! The file tools: read, write and list files in a space
//! (`…/fs`, `…/files`), and copy files between it and the client's machine
//! (stdio transport only: the server then runs on that machine).

use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::params::Encoding;
use super::rest::{error_text, read_capped, CallError, Endpoint, Rest, Target};

/// `read_file`'s default and largest `maxBytes`.
pub const READ_DEFAULT: u32 = 1024 * 1024;
const READ_MAX: u32 = 8 * 1024 * 1024;

/// Bytes as text when they are UTF-8 (a character cut at the end of a
/// truncated read is dropped), else base64.
fn decode(bytes: Vec<u8>, truncated: bool) -> (&'static str, String) {
    match String::from_utf8(bytes) {
        Ok(s) => ("utf-8", s),
        Err(e) => {
            let u = e.utf8_error();
            let bytes = e.into_bytes();
            if truncated && u.error_len().is_none() {
                let s = String::from_utf8_lossy(&bytes[..u.valid_up_to()]).into_owned();
                return ("utf-8", s);
            }
            (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )
        }
    }
}

/// The total size in `Content-Range: bytes a-b/total`.
fn range_total(v: &str) -> Option<u64> {
    v.rsplit_once('/')?.1.trim().parse().ok()
}

/// `read_file`: the first `max` bytes of a file.
pub async fn read(
    rest: &Rest,
    t: &Target,
    name: &str,
    path: &str,
    max: Option<u32>,
) -> Result<Value, CallError> {
    let max = max.unwrap_or(READ_DEFAULT).clamp(1, READ_MAX) as usize;
    let req = rest
        .request(t, Endpoint::ReadFile, name, &[("path", path)])
        .header(RANGE, format!("bytes=0-{}", max - 1));
    let mut resp = rest.send_raw(t, req).await?;
    let status = resp.status();
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        // Only an empty file has no byte 0.
        return Ok(
            json!({"path": path, "size": 0, "truncated": false, "encoding": "utf-8", "content": ""}),
        );
    }
    if !status.is_success() {
        let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
        return Err(CallError(error_text(status, &body)));
    }
    let header = |h| resp.headers().get(h).and_then(|v| v.to_str().ok());
    let size = match status {
        StatusCode::PARTIAL_CONTENT => header(CONTENT_RANGE).and_then(range_total),
        _ => header(CONTENT_LENGTH).and_then(|v| v.parse().ok()),
    };
    let mut bytes = Vec::new();
    let mut more = false;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError(format!("reading {path}: {e}")))?
    {
        let room = max - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            more = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    let truncated = more || size.is_some_and(|s| s > bytes.len() as u64);
    let returned = bytes.len();
    let (encoding, content) = decode(bytes, truncated);
    Ok(json!({
        "path": path,
        "size": size,
        "returnedBytes": returned,
        "truncated": truncated,
        "encoding": encoding,
        "content": content,
    }))
}

/// The `mode` query value (default 0644).
fn mode(m: Option<&str>) -> String {
    m.unwrap_or("0644").to_string()
}

/// `write_file`: the whole file, replaced atomically.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    rest: &Rest,
    t: &Target,
    name: &str,
    path: &str,
    content: String,
    encoding: Encoding,
    file_mode: Option<&str>,
) -> Result<Value, CallError> {
    let bytes = match encoding {
        Encoding::Utf8 => content.into_bytes(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| CallError(format!("content is not valid base64: {e}")))?,
    };
    let size = bytes.len();
    let m = mode(file_mode);
    let req = rest
        .request(
            t,
            Endpoint::WriteFile,
            name,
            &[("path", path), ("mode", &m), ("mkdirs", "true")],
        )
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(bytes);
    let resp = rest.send(t, req).await?;
    let stat: Value = read_capped(resp, 64 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Ok(json!({"path": path, "bytesWritten": size, "stat": stat}))
}

/// The `/files` path for a tool's `path`: relative to /workspace, which
/// `/workspace/…` names too.
pub fn workspace_path(p: Option<&str>) -> String {
    let p = p.unwrap_or("/").trim();
    let rel = match p.strip_prefix("/workspace") {
        Some("") => "/",
        Some(r) if r.starts_with('/') => r,
        _ => p,
    };
    if rel.is_empty() {
        "/".into()
    } else {
        rel.into()
    }
}

/// `list_files`: a directory of the workspace volume.
pub async fn list(
    rest: &Rest,
    t: &Target,
    name: &str,
    path: Option<&str>,
) -> Result<Value, CallError> {
    let rel = workspace_path(path);
    let mut v = rest
        .json(t, Endpoint::ListFiles, name, &[("path", &rel)], None)
        .await?;
    v["directory"] = json!(format!(
        "/workspace{}",
        if rel == "/" {
            String::new()
        } else {
            format!("/{}", rel.trim_start_matches('/'))
        }
    ));
    Ok(v)
}

fn local(p: &str) -> Result<PathBuf, CallError> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(CallError(format!(
            "localPath must be an absolute path on this machine (got '{p}')"
        )));
    }
    Ok(path)
}

/// `upload_file`: a local file into the space, streamed.
pub async fn upload(
    rest: &Rest,
    t: &Target,
    name: &str,
    local_path: &str,
    path: &str,
    file_mode: Option<&str>,
) -> Result<Value, CallError> {
    let src = local(local_path)?;
    let file = tokio::fs::File::open(&src)
        .await
        .map_err(|e| CallError(format!("{local_path}: {e}")))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| CallError(format!("{local_path}: {e}")))?;
    if !meta.is_file() {
        return Err(CallError(format!("{local_path} is not a regular file")));
    }
    let chunks = futures_util::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let m = mode(file_mode);
    let req = rest
        .request(
            t,
            Endpoint::WriteFile,
            name,
            &[("path", path), ("mode", &m), ("mkdirs", "true")],
        )
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, meta.len())
        .body(reqwest::Body::wrap_stream(chunks));
    let resp = rest.send(t, req).await?;
    let stat: Value = read_capped(resp, 64 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Ok(json!({"localPath": local_path, "path": path, "bytes": meta.len(), "stat": stat}))
}

/// A temporary name next to `dest`.
fn part_path(dest: &Path) -> PathBuf {
    let file = dest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{file}.clawdspace-part.{}", std::process::id()))
}

/// `download_file`: a file of the space onto this machine, streamed into a
/// temporary file renamed into place at the end.
pub async fn download(
    rest: &Rest,
    t: &Target,
    name: &str,
    path: &str,
    local_path: &str,
    overwrite: bool,
) -> Result<Value, CallError> {
    let dest = local(local_path)?;
    if !overwrite && tokio::fs::symlink_metadata(&dest).await.is_ok() {
        return Err(CallError(format!(
            "{local_path} exists (pass overwrite: true to replace it)"
        )));
    }
    let req = rest.request(t, Endpoint::ReadFile, name, &[("path", path)]);
    let mut resp = rest.send(t, req).await?;
    let part = part_path(&dest);
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| CallError(format!("{}: {e}", part.display())))?;
    let copied: Result<u64, CallError> = async {
        let mut n = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CallError(format!("reading {path}: {e}")))?
        {
            out.write_all(&chunk)
                .await
                .map_err(|e| CallError(format!("{local_path}: {e}")))?;
            n += chunk.len() as u64;
        }
        out.sync_all()
            .await
            .map_err(|e| CallError(format!("{local_path}: {e}")))?;
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|e| CallError(format!("{local_path}: {e}")))?;
        Ok(n)
    }
    .await;
    match copied {
        Ok(n) => Ok(json!({"path": path, "localPath": local_path, "bytes": n})),
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_are_relative_to_the_volume() {
        assert_eq!(workspace_path(None), "/");
        assert_eq!(workspace_path(Some("/workspace")), "/");
        assert_eq!(workspace_path(Some("/workspace/src")), "/src");
        assert_eq!(workspace_path(Some("src/a")), "src/a");
        assert_eq!(workspace_path(Some("/workspacex")), "/workspacex");
    }

    #[test]
    fn content_is_text_or_base64() {
        assert_eq!(decode(b"hi".to_vec(), false), ("utf-8", "hi".into()));
        assert_eq!(decode(vec![0xff, 0], false).0, "base64");
        // A character cut by the byte limit is dropped, not base64'd.
        assert_eq!(
            decode("aé".as_bytes()[..2].to_vec(), true),
            ("utf-8", "a".into())
        );
        assert_eq!(range_total("bytes 0-9/1234"), Some(1234));
    }
}
