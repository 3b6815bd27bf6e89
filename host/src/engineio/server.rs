//! The Engine.IO endpoint: verifies each request like Node's engine.io, opens sessions and hands requests
//! to the polling or websocket transport.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::config::EngineConfig;
use super::error::RequestError;
use super::session::{Handshake, Session, SessionHandler, TransportKind};
use super::v3::Protocol;
use super::{Body, cors, polling, websocket};
use crate::sid::Sid;

/// Receives every new session; the seam to the layer above (Socket.IO).
pub trait EngineHandler: Send + Sync + 'static {
    /// A session opened. The returned handler receives its messages and its close.
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler>;
}

/// State shared by every request and session of one endpoint.
pub(crate) struct EngineShared {
    pub(crate) config: EngineConfig,
    sessions: DashMap<Sid, Arc<Session>>,
    handler: Arc<dyn EngineHandler>,
    /// Set at shutdown: new handshakes are refused, existing sessions keep working until closed.
    draining: std::sync::atomic::AtomicBool,
    /// Sessions not yet closed (the table also holds closed polling sessions until their last GET).
    pub(crate) open: std::sync::atomic::AtomicUsize,
    /// Every session's pings, from one task.
    heartbeats: Arc<super::heartbeat::Heartbeats>,
    pub(crate) stats: super::EngineStats,
}

impl Drop for EngineShared {
    fn drop(&mut self) {
        self.heartbeats.stop();
    }
}

impl EngineShared {
    pub(crate) fn new(config: EngineConfig, handler: Arc<dyn EngineHandler>) -> Arc<Self> {
        Arc::new(EngineShared {
            config: config.normalized(),
            sessions: DashMap::new(),
            handler,
            draining: std::sync::atomic::AtomicBool::new(false),
            open: std::sync::atomic::AtomicUsize::new(0),
            heartbeats: Arc::default(),
            stats: super::EngineStats::default(),
        })
    }

    pub(crate) fn session(&self, sid: Sid) -> Option<Arc<Session>> {
        self.sessions.get(&sid).map(|s| Arc::clone(s.value()))
    }

    pub(crate) fn remove(&self, sid: Sid) {
        self.sessions.remove(&sid);
    }

    /// Creates and registers a session, installs its handler and starts its heartbeat.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        transport: TransportKind,
        handshake: Handshake,
    ) -> Arc<Session> {
        let session = Session::new(Arc::clone(self), transport, handshake);
        self.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.sessions.insert(session.sid(), Arc::clone(&session));
        session.set_handler(self.handler.on_open(&session));
        let (first, step) = match session.protocol() {
            Protocol::V4 => (self.config.ping_interval, super::heartbeat::Step::Ping),
            // The client pings; it must be heard from within an interval and a timeout.
            Protocol::V3 => (
                self.config.ping_interval + self.config.ping_timeout,
                super::heartbeat::Step::ExpectPing,
            ),
        };
        self.heartbeats
            .schedule(&session, tokio::time::Instant::now() + first, step);
        tracing::debug!(sid = %session.sid(), transport = transport.as_str(), "engine.io session opened");
        session
    }

    /// The open packet (`0{...}`) announcing a session to its client (the same JSON for v3, whose
    /// clients ignore `maxPayload`).
    pub(crate) fn open_packet(&self, sid: Sid, transport: TransportKind) -> Vec<u8> {
        let upgrades = if transport == TransportKind::Polling && self.config.transports.websocket {
            r#"["websocket"]"#
        } else {
            "[]"
        };
        format!(
            r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        )
        .into_bytes()
    }
}

/// One Engine.IO endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<EngineShared>,
}

/// An [`Engine`] that does not keep the endpoint alive; see [`Engine::downgrade`].
#[derive(Clone)]
pub struct WeakEngine {
    shared: std::sync::Weak<EngineShared>,
}

impl WeakEngine {
    /// The endpoint, if it still exists.
    pub fn upgrade(&self) -> Option<Engine> {
        self.shared.upgrade().map(|shared| Engine { shared })
    }
}

impl Engine {
    /// A handle for background tasks that must not keep the endpoint alive.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// An endpoint that hands every session to `handler`.
    pub fn new(config: EngineConfig, handler: Arc<dyn EngineHandler>) -> Self {
        Engine {
            shared: EngineShared::new(config, handler),
        }
    }

    /// The endpoint's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Whether `path` belongs to this endpoint.
    pub fn matches(&self, path: &str) -> bool {
        self.shared.config.serves_path(path)
    }

    /// Its counters.
    pub fn stats(&self) -> &super::EngineStats {
        &self.shared.stats
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// A session by id.
    pub fn session(&self, sid: Sid) -> Option<Arc<Session>> {
        self.shared.session(sid)
    }

    /// Refuses new handshakes from now on (503, the client retries, usually on another node); the
    /// sessions already open keep working until they are closed.
    pub fn begin_drain(&self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The open sessions, for closing them a few at a time.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.shared
            .sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect()
    }

    /// Opens a websocket-only session over an in-memory socket pair and returns the client's end, which
    /// reads the open packet and then speaks websocket frames (masked, as a client's must be). For tests
    /// and tools that drive the engine, and everything above it, without a listener; see
    /// [`super::MemoryClient`].
    #[cfg(unix)]
    pub async fn connect_in_memory(&self, query: &str) -> std::io::Result<tokio::net::UnixStream> {
        let (server, client) = tokio::net::UnixStream::pair()?;
        let parsed = Query::parse(query);
        let handshake = Handshake {
            path: self.shared.config.path.clone(),
            query: query.to_owned(),
            headers: Default::default(),
            remote_addr: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            issued: std::time::SystemTime::now(),
            protocol: match parsed.eio.as_deref() {
                Some("3") => Protocol::V3,
                _ => Protocol::V4,
            },
            b64: parsed.b64,
        };
        websocket::open_on(
            &self.shared,
            super::WsSocket::Memory(server),
            bytes::Bytes::new(),
            handshake,
        )
        .await;
        Ok(client)
    }

    /// Open sessions as `(websocket, polling)`; closed polling sessions waiting for their last `GET`
    /// are not counted.
    pub fn open_sessions_by_transport(&self) -> (usize, usize) {
        let (mut websocket, mut polling) = (0, 0);
        for session in self.shared.sessions.iter() {
            if session.is_closed() {
                continue;
            }
            match session.transport() {
                TransportKind::Websocket => websocket += 1,
                TransportKind::Polling => polling += 1,
            }
        }
        (websocket, polling)
    }

    /// Closes every session (server shutdown).
    pub fn close_all(&self) {
        let sessions: Vec<_> = self
            .shared
            .sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect();
        for session in sessions {
            session.close(super::CloseReason::ServerClose);
        }
    }

    /// Answers one HTTP request addressed to this endpoint.
    pub async fn handle(&self, req: Request<Incoming>, remote_addr: SocketAddr) -> Response<Body> {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut resp = if req.method() == Method::OPTIONS {
            cors::preflight(&self.shared.config.cors, &req)
        } else {
            match self.route(req, remote_addr).await {
                Ok(resp) => resp,
                Err(err) => err.response(),
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            cors::apply(
                &self.shared.config.cors,
                origin.as_ref(),
                resp.headers_mut(),
            );
        }
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        remote_addr: SocketAddr,
    ) -> Result<Response<Body>, RequestError> {
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let transport = match query.transport.as_deref() {
            Some("polling") if self.shared.config.transports.polling => TransportKind::Polling,
            Some("websocket") if self.shared.config.transports.websocket => {
                TransportKind::Websocket
            }
            _ => return Err(RequestError::UnknownTransport),
        };
        let is_upgrade = websocket::is_upgrade_request(req.headers());
        if transport == TransportKind::Websocket && !is_upgrade {
            return Err(RequestError::BadRequest);
        }

        let Some(sid) = query.sid else {
            if req.method() != Method::GET {
                return Err(RequestError::BadHandshakeMethod);
            }
            if !origin_allowed(&self.shared.config.cors, req.headers()) {
                return Err(RequestError::Forbidden);
            }
            let protocol = match query.eio.as_deref() {
                Some("4") => Protocol::V4,
                Some("3") if self.shared.config.allow_eio3 => Protocol::V3,
                _ => return Err(RequestError::UnsupportedProtocolVersion),
            };
            if query.jsonp {
                // JSONP polling (`j=`): script tags, v3 only, and no CORS; not served.
                return Err(RequestError::BadRequest);
            }
            if self
                .shared
                .draining
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(RequestError::Draining);
            }
            if let Some(max) = self.shared.config.max_sessions
                && self.shared.open.load(std::sync::atomic::Ordering::Acquire) >= max
            {
                super::EngineStats::add(&self.shared.stats.refused_at_limit, 1);
                return Err(RequestError::ConnectionLimit);
            }
            super::EngineStats::add(&self.shared.stats.handshakes, 1);
            let handshake = Handshake {
                path: req.uri().path().to_owned(),
                query: req.uri().query().unwrap_or("").to_owned(),
                headers: super::HandshakeHeaders::from(req.headers()),
                remote_addr,
                issued: std::time::SystemTime::now(),
                protocol,
                b64: query.b64,
            };
            return match transport {
                TransportKind::Polling => Ok(polling::handshake(&self.shared, handshake)),
                TransportKind::Websocket => websocket::accept_new(&self.shared, req, handshake),
            };
        };

        let session = Sid::parse(&sid)
            .and_then(|sid| self.shared.session(sid))
            .ok_or(RequestError::UnknownSid)?;
        if session.is_closed() {
            // A polling session the client just closed answers one last GET (see `Session::close`).
            return match (transport, req.method()) {
                (TransportKind::Polling, &Method::GET) => Ok(polling::poll(session).await),
                _ => Err(RequestError::UnknownSid),
            };
        }
        if session.ping_overdue(tokio::time::Instant::now()) {
            session.close(super::CloseReason::PingTimeout);
            return Err(RequestError::UnknownSid);
        }
        match transport {
            TransportKind::Websocket => websocket::accept_upgrade(session, req),
            TransportKind::Polling => {
                if session.transport() != TransportKind::Polling {
                    return Err(RequestError::BadRequest);
                }
                match *req.method() {
                    Method::GET => Ok(polling::poll(session).await),
                    Method::POST => Ok(polling::post(session, req).await),
                    _ => Err(RequestError::BadRequest),
                }
            }
        }
    }
}

/// Whether a browser page may open a session: with an explicit list, its origin must be listed; with
/// the same-origin default, its origin must be the host it connects to (browsers do not apply CORS to
/// websockets, so without this any site could open one with the visitor's cookies). Requests without
/// `Origin` (not from a browser page) are not concerned.
fn origin_allowed(cors: &super::AllowedOrigins, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    match cors {
        super::AllowedOrigins::Any => true,
        super::AllowedOrigins::List(_) => cors.allows(origin),
        super::AllowedOrigins::SameOrigin => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            host.is_some_and(|host| same_authority(origin, host))
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the authority `host` (a Host header), default
/// ports allowed on either side.
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    strip(authority) == strip(host)
}

/// The query parameters Engine.IO reads (first occurrence wins; others are ignored).
#[derive(Default)]
struct Query {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
    /// `b64=1`: a v3 client that cannot read binary polling bodies.
    b64: bool,
    /// `j=<n>`: a v3 JSONP poll.
    jsonp: bool,
}

impl Query {
    fn parse(raw: &str) -> Self {
        let mut q = Query::default();
        for (key, value) in crate::http_util::query_pairs(raw) {
            let slot = match &*key {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                "b64" => {
                    q.b64 = value == "1" || value == "true";
                    continue;
                }
                "j" => {
                    q.jsonp = true;
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        q
    }
}

/// Sets a header from a static string.
pub(crate) fn set_static(headers: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    headers.insert(name, HeaderValue::from_static(value));
}

#[cfg(test)]
pub(crate) mod test_support {
    //! An echoing Engine.IO endpoint, and an HTTP/1.1 connection to it over an in-memory duplex
    //! stream, for the transport tests.

    use std::convert::Infallible;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper_util::rt::TokioIo;
    use parking_lot::Mutex;

    use super::{Engine, EngineConfig, EngineHandler};
    use crate::engineio::{CloseReason, Message, Session, SessionHandler, WirePacket};

    /// Echoes every text message back (`4<text>`) and records how sessions closed.
    #[derive(Default)]
    pub(crate) struct Echo {
        pub(crate) closed: Mutex<Vec<CloseReason>>,
    }

    impl SessionHandler for Echo {
        fn on_message(&self, session: &Arc<Session>, message: Message) {
            if let Message::Text(text) = message {
                session.send(WirePacket::text(b'4', text.as_bytes()), false);
            }
        }
        fn on_close(&self, _session: &Arc<Session>, reason: &CloseReason) {
            self.closed.lock().push(reason.clone());
        }
    }

    struct Opener(Arc<Echo>);

    impl EngineHandler for Opener {
        fn on_open(&self, _session: &Arc<Session>) -> Arc<dyn SessionHandler> {
            self.0.clone()
        }
    }

    /// An engine whose sessions echo.
    pub(crate) fn echo_engine(config: EngineConfig) -> (Engine, Arc<Echo>) {
        let echo = Arc::new(Echo::default());
        (
            Engine::new(config, Arc::new(Opener(Arc::clone(&echo)))),
            echo,
        )
    }

    /// An HTTP/1.1 connection to `engine` over an in-memory duplex stream.
    pub(crate) async fn http_client(engine: &Engine) -> SendRequest<Full<Bytes>> {
        let (client, server) = tokio::io::duplex(1 << 16);
        let engine = engine.clone();
        let service = hyper::service::service_fn(move |req| {
            let engine = engine.clone();
            async move {
                Ok::<_, Infallible>(
                    engine
                        .handle(req, SocketAddr::from((Ipv4Addr::LOCALHOST, 9)))
                        .await,
                )
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service),
        );
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .expect("client handshake");
        tokio::spawn(connection);
        sender
    }

    /// Sends a request and answers its status and body as text.
    pub(crate) async fn request(
        sender: &mut SendRequest<Full<Bytes>>,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::server::test_support::{echo_engine, http_client, request};

    #[tokio::test]
    async fn requests_outside_the_protocol_get_nodes_errors() {
        let (engine, _) = echo_engine(EngineConfig::default());
        let mut http = http_client(&engine).await;
        let unsupported = (
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#.to_owned(),
        );
        assert_eq!(
            request(&mut http, "GET", "/socket.io/?EIO=2&transport=polling", "").await,
            unsupported
        );
        let (no_v3, _) = echo_engine(EngineConfig {
            allow_eio3: false,
            ..EngineConfig::default()
        });
        let mut no_v3_http = http_client(&no_v3).await;
        assert_eq!(
            request(
                &mut no_v3_http,
                "GET",
                "/socket.io/?EIO=3&transport=polling",
                ""
            )
            .await,
            unsupported
        );
        assert_eq!(
            request(
                &mut http,
                "GET",
                "/socket.io/?EIO=3&transport=polling&j=0",
                ""
            )
            .await
            .0,
            400,
            "JSONP polling is not served"
        );
        assert_eq!(
            request(
                &mut http,
                "GET",
                "/socket.io/?EIO=4&transport=carrier-pigeon",
                ""
            )
            .await,
            (
                400,
                r#"{"code":0,"message":"Transport unknown"}"#.to_owned()
            )
        );
        assert_eq!(
            request(
                &mut http,
                "GET",
                "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
                ""
            )
            .await,
            (
                400,
                r#"{"code":1,"message":"Session ID unknown"}"#.to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_full_endpoint_refuses_new_sessions() {
        let (engine, _) = echo_engine(EngineConfig {
            max_sessions: Some(1),
            ..EngineConfig::default()
        });
        let mut http = http_client(&engine).await;
        let (status, _) =
            request(&mut http, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!(status, 200);
        let (status, body) =
            request(&mut http, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(engine.open_sessions_by_transport(), (0, 1));
    }

    #[test]
    fn same_origin_means_the_host_connected_to() {
        assert!(same_authority("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(same_authority("https://Chat.Example", "chat.example:443"));
        assert!(same_authority("http://chat.example:80", "chat.example"));
        assert!(!same_authority("http://evil.example", "chat.example"));
        assert!(!same_authority(
            "http://chat.example:3001",
            "chat.example:3000"
        ));
        assert!(!same_authority("null", "chat.example"));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, http::HeaderValue::from_static("chat.example"));
        assert!(origin_allowed(
            &crate::engineio::AllowedOrigins::SameOrigin,
            &headers
        ));
        headers.insert(
            header::ORIGIN,
            http::HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(
            &crate::engineio::AllowedOrigins::SameOrigin,
            &headers
        ));
        assert!(origin_allowed(
            &crate::engineio::AllowedOrigins::Any,
            &headers
        ));
    }
}
