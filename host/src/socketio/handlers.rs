//! What an application attaches to a namespace: connect authorization, connect/disconnect callbacks and
//! event handlers. Shared by every socket of the namespace, so a socket carries no handler table of its own.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::rate::RateLimit;
use super::socket::{DisconnectReason, Event, Socket};
use crate::adapter::{Room, ServerAck};
use crate::engineio::Handshake;

/// A client asking to join a namespace.
pub struct ConnectRequest<'a> {
    /// The namespace.
    pub nsp: &'a str,
    /// The client's `auth` object (`{}` when it sent none).
    pub auth: &'a Value,
    /// The Engine.IO handshake (query, headers, remote address).
    pub handshake: &'a Handshake,
}

/// An accepted connection: data to attach and rooms to join at once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConnectAccept {
    /// Who the socket acts for (e.g. a verified token's subject); later authorizers may replace it.
    pub user_id: Option<String>,
    /// Application data for the socket (`null` keeps what earlier hooks set).
    pub data: Option<Value>,
    /// Rooms the socket joins before its connect handler runs.
    pub rooms: Vec<Room>,
}

/// A refused connection; the client's `connect_error` handler receives `message` (and `data`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRefusal {
    /// Shown to the client as `err.message`.
    pub message: String,
    /// Shown to the client as `err.data`.
    pub data: Option<Value>,
}

impl ConnectRefusal {
    /// A refusal with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        ConnectRefusal {
            message: message.into(),
            data: None,
        }
    }
}

/// Decides whether a client may join a namespace. Runs on the connection's task; must not block.
pub type Authorizer =
    Arc<dyn Fn(&ConnectRequest<'_>) -> Result<ConnectAccept, ConnectRefusal> + Send + Sync>;
/// Runs once a socket has joined (after the CONNECT reply is queued).
pub type ConnectHandler = Arc<dyn Fn(&Arc<Socket>) + Send + Sync>;
/// Handles one event from a client.
pub type EventHandler = Arc<dyn Fn(&Arc<Socket>, Event) + Send + Sync>;
/// Handles an emit from another server of the fleet: `[event, ...args]`, and the ack to answer if it wants one.
pub type ServerSideHandler = Arc<dyn Fn(Vec<Value>, Option<ServerAck>) + Send + Sync>;
/// Runs once when a socket leaves.
pub type DisconnectHandler = Arc<dyn Fn(&Arc<Socket>, &DisconnectReason) + Send + Sync>;

/// The handlers of a namespace.
#[derive(Clone, Default)]
pub struct Handlers {
    pub(crate) authorizers: Vec<Authorizer>,
    pub(crate) connect: Option<ConnectHandler>,
    pub(crate) events: HashMap<String, EventHandler>,
    pub(crate) any: Option<EventHandler>,
    pub(crate) disconnect: Option<DisconnectHandler>,
    pub(crate) server_side: Option<ServerSideHandler>,
    pub(crate) rate_limit: Option<RateLimit>,
}

impl Handlers {
    /// No handlers: every connection accepted, every event ignored.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// Adds a connect authorizer; they run in order and the first refusal wins.
    pub fn authorize(
        mut self,
        f: impl Fn(&ConnectRequest<'_>) -> Result<ConnectAccept, ConnectRefusal> + Send + Sync + 'static,
    ) -> Self {
        self.authorizers.push(Arc::new(f));
        self
    }

    /// Sets the connect callback.
    pub fn on_connect(mut self, f: impl Fn(&Arc<Socket>) + Send + Sync + 'static) -> Self {
        self.connect = Some(Arc::new(f));
        self
    }

    /// Handles events named `event`.
    pub fn on(
        mut self,
        event: &str,
        f: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static,
    ) -> Self {
        self.events.insert(event.to_owned(), Arc::new(f));
        self
    }

    /// Handles events no [`Handlers::on`] handler claims.
    pub fn on_any(mut self, f: impl Fn(&Arc<Socket>, Event) + Send + Sync + 'static) -> Self {
        self.any = Some(Arc::new(f));
        self
    }

    /// Sets the disconnect callback.
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&Arc<Socket>, &DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.disconnect = Some(Arc::new(f));
        self
    }

    /// Handles emits from other servers (`serverSideEmit` in Node).
    pub fn on_server_side_emit(
        mut self,
        f: impl Fn(Vec<Value>, Option<ServerAck>) + Send + Sync + 'static,
    ) -> Self {
        self.server_side = Some(Arc::new(f));
        self
    }

    /// Limits the events each socket of the namespace may send (checked before any handler runs).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    pub(crate) fn event_handler(&self, name: &str) -> Option<&EventHandler> {
        self.events.get(name).or(self.any.as_ref())
    }
}
