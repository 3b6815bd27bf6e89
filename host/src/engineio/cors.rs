//! CORS for polling requests (websockets are not subject to CORS).
//!
//! Allowed origins are echoed back with `Access-Control-Allow-Credentials: true` rather than answered with
//! `*`, because browsers refuse `*` for requests made `withCredentials`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use super::Body;
use super::config::AllowedOrigins;
use super::server::set_static;

/// Adds CORS headers to a response when the request's origin is allowed.
pub fn apply(cors: &AllowedOrigins, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    let Some(origin) = origin else { return };
    let Ok(origin_str) = origin.to_str() else {
        return;
    };
    if !cors.allows(origin_str) {
        return;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    set_static(headers, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    set_static(headers, header::VARY, "Origin");
}

/// Answers a preflight `OPTIONS` request.
pub fn preflight<B>(cors: &AllowedOrigins, req: &Request<B>) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| cors.allows(o));
    if allowed {
        let headers = resp.headers_mut();
        set_static(
            headers,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET,POST,OPTIONS",
        );
        if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        set_static(headers, header::ACCESS_CONTROL_MAX_AGE, "86400");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_allowed_origins_with_credentials() {
        let mut headers = HeaderMap::new();
        let origin = HeaderValue::from_static("https://a.example");
        apply(&AllowedOrigins::Any, Some(&origin), &mut headers);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");

        let mut headers = HeaderMap::new();
        let list = AllowedOrigins::List(vec!["https://b.example".into()]);
        apply(&list, Some(&origin), &mut headers);
        assert!(headers.is_empty());
        apply(&AllowedOrigins::SameOrigin, Some(&origin), &mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn preflight_echoes_requested_headers() {
        let req = Request::builder()
            .method("OPTIONS")
            .header(header::ORIGIN, "https://a.example")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-token")
            .body(())
            .unwrap();
        let resp = preflight(&AllowedOrigins::Any, &req);
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "x-token"
        );
    }
}
