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

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
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
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            } else {
                ApiError::bad_request("Invalid JSON body")
            }
        })?;
        if !is_json || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::bad_request("Invalid JSON body"))?;
        fields(value).map(JsonBody)
    }
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
