//! Binding listeners and routing HTTP requests to Engine.IO endpoints.
//!
//! This is the only module that accepts TCP connections. It speaks HTTP/1.1 with upgrades (websockets leave
//! hyper here) and sends each request to the first endpoint whose path matches; everything else is 404.
//! Which connections it keeps, and for how long before a request arrives, is [`admission`]'s job.

pub mod admission;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::engineio::{Body, Endpoints, Engine, EnginesByPath};
pub use crate::http_util::query_param;
use crate::http_util::{Handler, text};
pub use admission::{Admission, ListenerLimits, ListenerStats};

pub use crate::http_util::{Health, Readiness};

/// How long a shutdown may take by default: sessions are closed over the first half, and the process
/// waits for them (and their close frames) at most this long.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Below this many sessions a drain closes them all at once; above, it spreads the closes over half the
/// grace period so the clients' reconnects do not land on the other nodes all in the same instant.
const DRAIN_AT_ONCE: usize = 100;

/// The endpoints served on one set of listeners.
#[derive(Clone)]
pub struct Router {
    endpoints: Arc<dyn Endpoints>,
    handlers: Vec<(String, Handler)>,
    fallback: Option<Handler>,
    health: Health,
    grace: Duration,
    admission: Arc<Admission>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(Vec::new())
    }
}

impl Router {
    /// A router over `engines`, matched in order.
    pub fn new(engines: Vec<Engine>) -> Self {
        Router::with_endpoints(Arc::new(EnginesByPath::new(engines)))
    }

    /// A router whose endpoints are chosen per request by `endpoints`.
    pub fn with_endpoints(endpoints: Arc<dyn Endpoints>) -> Self {
        Router {
            endpoints,
            handlers: Vec::new(),
            fallback: None,
            health: Health::default(),
            grace: DEFAULT_SHUTDOWN_GRACE,
            admission: Admission::new(ListenerLimits::default()),
        }
    }

    /// Admits connections with `admission` (default: [`ListenerLimits::default`]).
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// The admission table of the listeners, whose counters `/metrics` shows.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Answers `/readyz` with `check` (without it, `/readyz` is always ready).
    pub fn with_readiness(self, check: Readiness) -> Self {
        self.with_health(Health::new(Some(check)))
    }

    /// Answers `/readyz` from `health`, and marks it draining at shutdown: give a clone to whatever
    /// else reports readiness (`/metrics`).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Sends requests whose path starts with `prefix` to `handler`.
    pub fn with_handler(mut self, prefix: &str, handler: Handler) -> Self {
        self.handlers.push((prefix.to_owned(), handler));
        self
    }

    /// Answers requests nothing else claims (static files, say) instead of 404.
    pub fn with_fallback(mut self, handler: Handler) -> Self {
        self.fallback = Some(handler);
        self
    }

    /// How long [`serve`] may take to drain at shutdown (default [`DEFAULT_SHUTDOWN_GRACE`]).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.health.is_draining()
    }

    /// Every endpoint.
    pub fn engines(&self) -> Vec<Engine> {
        self.endpoints.all()
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok");
        }
        if path == "/readyz" {
            return match self.health.check() {
                Ok(()) => text(StatusCode::OK, "ready"),
                Err(reason) => {
                    let mut resp = Response::new(Body::new(Bytes::from(reason)));
                    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    resp
                }
            };
        }
        if let Some((_, handler)) = self
            .handlers
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
        {
            return handler(req).await;
        }
        match self.endpoints.resolve(req.uri(), req.headers()) {
            Ok(Some(engine)) => engine.handle(req, remote).await,
            Ok(None) => match &self.fallback {
                Some(fallback) => fallback(req).await,
                None => text(StatusCode::NOT_FOUND, "not found"),
            },
            Err(err) => err.response(),
        }
    }
}

/// Accepts connections on every listener until `shutdown` resolves, then drains: `/readyz` answers
/// 503, new handshakes are refused (503), open sessions are closed (clients see `transport close` and
/// reconnect, through the load balancer, to another node), spread over half the grace period when
/// there are many; returns once they are gone or the grace period is over.
pub async fn serve(
    listeners: Vec<TcpListener>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut accept_loops = tokio::task::JoinSet::new();
    for listener in listeners {
        accept_loops.spawn(accept_loop(listener, router.clone()));
    }
    shutdown.await;
    drain(&router).await;
    accept_loops.shutdown().await;
    Ok(())
}

async fn drain(router: &Router) {
    let started = tokio::time::Instant::now();
    let deadline = started + router.grace;
    router.health.start_draining();
    let engines = router.engines();
    for engine in &engines {
        engine.begin_drain();
    }
    let sessions: Vec<_> = engines.iter().flat_map(Engine::sessions).collect();
    tracing::info!(
        sessions = sessions.len(),
        grace_ms = router.grace.as_millis() as u64,
        "draining: new handshakes refused, closing sessions"
    );
    if sessions.len() <= DRAIN_AT_ONCE {
        for session in &sessions {
            session.close(crate::engineio::CloseReason::ServerClose);
        }
    } else {
        const BATCHES: usize = 20;
        let per_batch = sessions.len().div_ceil(BATCHES);
        let pause = router.grace / 2 / BATCHES as u32;
        for batch in sessions.chunks(per_batch) {
            for session in batch {
                session.close(crate::engineio::CloseReason::ServerClose);
            }
            tokio::time::sleep(pause).await;
        }
    }
    // Sessions leave the table when closed; their writers still send the close frames.
    while engines.iter().any(|e| e.session_count() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for engine in &engines {
        engine.close_all();
    }
    let flush = Duration::from_millis(200)
        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    tokio::time::sleep(flush).await;
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "drained");
}

async fn accept_loop(listener: TcpListener, router: Router) {
    let admission = Arc::clone(&router.admission);
    let limits = admission.limits().clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                admission
                    .stats()
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                // Out of file descriptors, usually: idle connections make room for working ones.
                let shed = admission.shed_oldest(16);
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(%err, shed, "accept failed; closing idle connections to make room");
                    last_warning = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(if shed > 0 { 2 } else { 50 })).await;
                continue;
            }
        };
        let Some(ticket) = admission.admit(remote.ip()) else {
            // Full, with nothing idle to shed: closing the socket is the answer.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let http = http.clone();
        tokio::spawn(serve_connection(
            stream,
            remote,
            router,
            http,
            Arc::new(ticket),
        ));
    }
}

/// Serves one HTTP connection until it ends, is upgraded away, or the admission table sheds it.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    ticket: Arc<admission::Ticket>,
) {
    let stats = Arc::clone(router.admission.stats());
    let service = {
        let ticket = Arc::clone(&ticket);
        service_fn(move |req| {
            let router = router.clone();
            let busy = ticket.busy();
            let ticket = Arc::clone(&ticket);
            async move {
                let resp = router.handle(req, remote).await;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    ticket.upgraded();
                }
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let conn = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        ended = conn => {
            if let Err(err) = ended {
                if err.is_timeout() {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%err, %remote, "http connection ended with an error");
            }
        }
        () = ticket.shed() => tracing::debug!(%remote, "idle connection shed"),
    }
}

/// Binds `host:port`. An unspecified IPv4 host (`0.0.0.0`) also gets `[::]` (IPv6 only), so clients
/// reach the server over either family; a missing IPv6 stack is not an error.
pub async fn bind(host: IpAddr, port: u16) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = vec![listen(SocketAddr::new(host, port))?];
    if host == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        match listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
            Ok(v6) => listeners.push(v6),
            Err(err) => tracing::debug!(%err, "IPv6 unavailable; serving IPv4 only"),
        }
    }
    Ok(listeners)
}

/// Connections the kernel queues before `accept`. A burst past it (a reconnect storm after a node dies,
/// a connection flood) has SYNs dropped, and each dropped client waits a 1 s retransmission: everyone,
/// not only the flood, pays that. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener with address reuse; IPv6 sockets are IPv6-only so they coexist with IPv4 ones.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Binds `port` on both IPv4 and IPv6 loopback, so `localhost` works whichever address it resolves to.
pub async fn bind_localhost(port: u16) -> std::io::Result<Vec<TcpListener>> {
    let v4 = listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))?;
    let mut listeners = vec![v4];
    match listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)) {
        Ok(v6) => listeners.push(v6),
        Err(err) => tracing::warn!(%err, "IPv6 loopback unavailable; serving 127.0.0.1 only"),
    }
    Ok(listeners)
}
