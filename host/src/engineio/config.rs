//! Engine.IO server settings, with Node's defaults.

use std::time::Duration;

/// Which transports clients may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transports {
    /// HTTP long-polling.
    pub polling: bool,
    /// WebSocket.
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            polling: true,
            websocket: true,
        }
    }
}

/// Which browser origins may read polling responses (CORS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS headers: only same-origin pages can use polling.
    #[default]
    SameOrigin,
    /// Every origin. The request's origin is echoed (never `*`), so pages using `withCredentials` work too.
    Any,
    /// Only these origins (exact match, e.g. `https://app.example.com`). Pages from other origins are
    /// refused at the handshake (403, code 4), websockets included.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request from `origin` gets CORS headers.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::SameOrigin => false,
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Settings of one Engine.IO endpoint.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Path prefix the endpoint answers, with leading and trailing slash (`/socket.io/`).
    pub path: String,
    /// Time between server pings.
    pub ping_interval: Duration,
    /// Time a client has to answer a ping before the session is closed.
    pub ping_timeout: Duration,
    /// Time a polling session has to finish an upgrade to websocket.
    pub upgrade_timeout: Duration,
    /// Largest polling body or websocket message accepted, in bytes (Node's `maxHttpBufferSize`).
    pub max_payload: usize,
    /// Enabled transports.
    pub transports: Transports,
    /// CORS for polling requests.
    pub cors: AllowedOrigins,
    /// Outgoing packets a session may have queued before it is closed as too slow.
    pub max_buffered_packets: usize,
    /// Outgoing bytes a session may have queued before it is closed as too slow.
    pub max_buffered_bytes: usize,
    /// Queued packets above which volatile packets are dropped instead of queued.
    pub volatile_high_water: usize,
    /// Sessions the endpoint may hold; handshakes past it get 503 `Connection limit reached`.
    pub max_sessions: Option<usize>,
    /// Accept Engine.IO v3 clients (`EIO=3`: socket.io-client 2.x); Node's `allowEIO3`.
    pub allow_eio3: bool,
}

impl EngineConfig {
    /// Whether a request path belongs to an endpoint with this configuration.
    pub fn serves_path(&self, path: &str) -> bool {
        path.starts_with(self.path.as_str()) || path == self.path.trim_end_matches('/')
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            transports: Transports::default(),
            cors: AllowedOrigins::SameOrigin,
            max_buffered_packets: 4096,
            max_buffered_bytes: 8 << 20,
            volatile_high_water: 16,
            max_sessions: None,
            allow_eio3: true,
        }
    }
}

impl EngineConfig {
    /// Normalises the path to `/<path>/` so prefix matching is exact.
    pub fn normalized(mut self) -> Self {
        let trimmed = self.path.trim_matches('/');
        self.path = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        };
        self
    }
}
