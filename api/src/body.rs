//! Request bodies and response JSON as the contract wants them: bodies are
//! parsed only when sent as `application/json` (anything else is `{}`),
//! malformed JSON is a 400, an oversized body a 413; responses are compact
//! JSON with `charset=utf-8`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A request body deserialized into `T` (as `{}` when not sent as JSON or
/// not a JSON object).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let bytes = read_body(req).await?;
        if !is_json || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::bad_request("Invalid JSON body"))?;
        fields(value).map(JsonBody)
    }
}

/// How much of an oversized body is read, and dropped, before its 413 goes
/// out, and for how long at most. Answered while the client still writes,
/// the 413 would be lost: the connection closes with unread bytes, the
/// client's next write fails (reset) and it never reads the answer. A body
/// declared larger than [`DRAIN_LIMIT`] is refused at once, and one that
/// does not arrive within [`DRAIN_TIME`] is not waited for.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long the rest of an oversized body is waited for.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The request's body, at most [`BODY_LIMIT`] bytes (the only limit of
/// request bodies read whole; uploads stream).
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let mut drain_until = declared
        .is_some_and(|n| n > BODY_LIMIT as u64)
        .then(|| tokio::time::Instant::now() + DRAIN_TIME);
    let mut body = req.into_body().into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    loop {
        let next = match drain_until {
            // Oversized: what is left is only waited for a while.
            Some(t) => match tokio::time::timeout_at(t, body.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => body.next().await,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| ApiError::bad_request("Invalid JSON body"))?;
        seen = seen.saturating_add(chunk.len());
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= BODY_LIMIT {
            buf.extend_from_slice(&chunk);
        } else if drain_until.is_none() {
            drain_until = Some(tokio::time::Instant::now() + DRAIN_TIME);
        }
    }
    if drain_until.is_some() {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// `value`'s fields as a `T`; a JSON value that is not an object has none
/// (every field absent), as the contract's `body.field` lookups had it.
pub fn fields<T: DeserializeOwned + Default>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Ok(T::default());
    }
    serde_json::from_value(value).map_err(|_| ApiError::bad_request("Invalid JSON body"))
}

/// A compact JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// 200 with `value` as compact JSON.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}
