//! The HTTP error responses of the Engine.IO protocol.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::Body;

/// A request refused before it reaches a session, answered like Node's engine.io does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `transport` missing or not enabled.
    #[error("Transport unknown")]
    UnknownTransport,
    /// `sid` not found: expired, closed, or opened on another node (polling needs sticky sessions).
    #[error("Session ID unknown")]
    UnknownSid,
    /// A handshake that is not a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// A request that breaks the transport rules.
    #[error("Bad request")]
    BadRequest,
    /// The request was refused by policy.
    #[error("Forbidden")]
    Forbidden,
    /// `EIO` is not 4.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// The server is shutting down and takes no new sessions (503; the client retries elsewhere).
    #[error("Server shutting down")]
    Draining,
    /// No tenant answers to this host name or `tenant` parameter (403; nothing was created).
    #[error("Unknown tenant")]
    UnknownTenant,
    /// The endpoint (tenant) holds as many sessions as it may (503).
    #[error("Connection limit reached")]
    ConnectionLimit,
}

impl RequestError {
    /// The numeric code of the JSON body.
    pub fn code(self) -> u8 {
        match self {
            RequestError::UnknownTransport => 0,
            RequestError::UnknownSid => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest => 3,
            RequestError::Forbidden => 4,
            RequestError::UnsupportedProtocolVersion => 5,
            // Engine.IO has no codes for these; clients treat them like a refused handshake.
            RequestError::Draining
            | RequestError::UnknownTenant
            | RequestError::ConnectionLimit => 4,
        }
    }

    /// `{"code":N,"message":M}` with status 400 (403 when refused by policy, 503 while draining or at
    /// the connection limit).
    pub fn response(self) -> Response<Body> {
        let status = match self {
            RequestError::Forbidden | RequestError::UnknownTenant => StatusCode::FORBIDDEN,
            RequestError::Draining | RequestError::ConnectionLimit => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let body = format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self);
        let mut resp = Response::new(Body::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// A plain status response with a short text body.
pub fn status_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_bodies_match_node() {
        let resp = RequestError::UnknownSid.response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"code":1,"message":"Session ID unknown"}"#);
        assert_eq!(
            RequestError::Forbidden.response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(RequestError::UnsupportedProtocolVersion.code(), 5);
    }
}
