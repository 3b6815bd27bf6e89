//! Errors of the HTTP API: a status, a stable code and a message, as JSON.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::engineio::Body;

/// A request the API refuses; the body is `{"error":{"code":...,"message":...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable, machine-readable.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the tenant's API key as `Authorization: Bearer <key>`",
        )
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub(crate) fn response(&self) -> Response<Body> {
        json_response(
            self.status,
            &serde_json::json!({ "error": { "code": self.code, "message": self.message } }),
        )
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
