//! HTTP plumbing every layer that answers requests shares: the response body type, the shape of a
//! request handler, query-string parsing, the listeners' counters.
//!
//! It is the bottom layer: it knows hyper's types and nothing of Engine.IO, tenants or listeners, so the
//! Engine.IO endpoint, the HTTP API, `/metrics` and the listener can all use it without importing each
//! other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

/// The body type of every response the gateway produces: answers are built whole before they are sent.
pub type Body = http_body_util::Full<Bytes>;

/// Answers the requests under one path prefix (the HTTP API, say).
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// The decoded `(name, value)` pairs of a query string (`a=1&b=%20`), in order.
pub fn query_pairs(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// The first value of the query parameter `name` in `query`, decoded.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query_pairs(query)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The first value of the query parameter `name` of `uri`, decoded.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    query_value(uri.query()?, name)
}

/// A short plain-text answer (health checks, 404s).
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

/// Whether `headers` carry `Authorization: <expected>` (`expected` being `Bearer <token>`); no
/// expectation admits every request.
pub fn bearer_matches(headers: &http::HeaderMap, expected: Option<&str>) -> bool {
    expected.is_none_or(|expected| {
        headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    })
}

/// Counters of the listeners, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted and admitted.
    pub accepted: AtomicU64,
    /// HTTP connections held now.
    pub open: AtomicU64,
    /// Idle connections closed to make room (per-address cap, connection cap, or out of descriptors).
    pub shed: AtomicU64,
    /// New connections closed at once because the cap was reached with nothing idle to shed.
    pub refused: AtomicU64,
    /// Connections closed because their request headers did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// `accept` failures (out of file descriptors, mostly).
    pub accept_errors: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_decodes_the_first_value() {
        let uri: Uri = "/socket.io/?EIO=4&tenant=ac%20me&tenant=other"
            .parse()
            .expect("uri");
        assert_eq!(query_param(&uri, "tenant").as_deref(), Some("ac me"));
        assert_eq!(query_param(&uri, "EIO").as_deref(), Some("4"));
        assert_eq!(query_param(&uri, "missing"), None);
        let bare: Uri = "/socket.io/".parse().expect("uri");
        assert_eq!(query_param(&bare, "tenant"), None);
    }

    #[test]
    fn query_pairs_keeps_order_and_plus_as_space() {
        let pairs: Vec<(String, String)> = query_pairs("b=1&a=x+y&b=2")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("b".into(), "1".into()),
                ("a".into(), "x y".into()),
                ("b".into(), "2".into())
            ]
        );
    }

    #[test]
    fn bearer_matches_only_the_exact_header() {
        let mut headers = http::HeaderMap::new();
        assert!(bearer_matches(&headers, None));
        assert!(!bearer_matches(&headers, Some("Bearer s3cret")));
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cre".parse().expect("header"),
        );
        assert!(!bearer_matches(&headers, Some("Bearer s3cret")));
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("header"),
        );
        assert!(bearer_matches(&headers, Some("Bearer s3cret")));
    }

    #[test]
    fn text_sets_status_and_body() {
        let resp = text(StatusCode::NOT_FOUND, "not found");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}

/// Tells `/readyz` whether the node can take traffic; `Err` carries the reason shown with the 503.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Whether the node takes traffic: what `/readyz` answers and what `/metrics` shows, one state for
/// both. The listener starts the drain; clones share it.
#[derive(Clone, Default)]
pub struct Health {
    draining: Arc<AtomicBool>,
    readiness: Option<Readiness>,
}

impl Health {
    /// Ready unless draining or `readiness` says otherwise.
    pub fn new(readiness: Option<Readiness>) -> Self {
        Health {
            draining: Arc::default(),
            readiness,
        }
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node as draining, for every clone.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Ok` when `/readyz` answers 200; else the reason it gives with the 503.
    pub fn check(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("draining: shutting down".to_owned());
        }
        self.readiness.as_ref().map_or(Ok(()), |check| check())
    }
}

/// The process's soft limit on open files, `None` when unlimited or unknown.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}
