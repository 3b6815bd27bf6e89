//! Socket.IO server settings, with Node's defaults.

use std::time::Duration;

/// Settings of the Socket.IO layer.
#[derive(Clone, Debug)]
pub struct SocketIoConfig {
    /// Time a new connection has to join a namespace before it is closed.
    pub connect_timeout: Duration,
    /// Most binary attachments a client packet may carry (socket.io-parser's default).
    pub max_attachments: usize,
    /// Most namespaces clients may create on demand (with dynamic namespaces). Each costs a room index and,
    /// in a fleet, a Redis pattern subscription, so client-chosen names must not grow them without bound.
    pub max_dynamic_namespaces: usize,
    /// Connection state recovery in this node's memory; off (`None`) in the library, as in Node,
    /// because every logged event then carries its offset as a last argument, which the stock
    /// client hands to the handler (the `ioplex` binary turns it on). It runs only where the adapter
    /// is single-node; in a fleet the adapter keeps the log ([`crate::adapter::SessionStore`]).
    pub recovery: Option<super::RecoveryConfig>,
    /// Which Socket.IO parsers clients may speak: by default each connection's first packet tells
    /// (socket.io-parser or socket.io-msgpack-parser), where Node serves one for the whole server.
    pub parser: crate::codec::ParserChoice,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            connect_timeout: Duration::from_millis(45_000),
            max_attachments: 10,
            max_dynamic_namespaces: 1000,
            recovery: None,
            parser: crate::codec::ParserChoice::Auto,
        }
    }
}
