//! The `@socket.io/admin-ui` dashboard's server side, per tenant.
//!
//! A tenant with an `[admin-ui]` table gets an admin namespace that speaks what Node's `instrument()`
//! speaks: `config`, `session`, `all_sockets`, `server_stats` every two seconds, the socket and room
//! feed, and the dashboard's `emit`, `join`, `leave` and `_disconnect` requests. Every node of the fleet
//! feeds the same namespace through the tenant's adapter, so one dashboard sees the whole fleet, and its
//! requests act fleet-wide through the adapter's `fetchSockets` / `socketsJoin` / `disconnectSockets`.
//!
//! The dashboard sees only its own tenant: the namespace lives in the tenant's Socket.IO server.

mod actions;
mod auth;
mod config;
mod feed;
mod serialize;

use std::sync::{Arc, OnceLock};

pub use auth::{Authenticator, Login, LoginError};
pub use config::{AdminMode, AdminUiConfig};

use crate::engineio::Engine;
use crate::socketio::{SocketIo, SocketIoBuilder, WeakSocketIo};

/// One tenant's dashboard server.
pub struct AdminUi {
    config: AdminUiConfig,
    auth: Authenticator,
    /// The tenant's server, known once built (its admin namespace is part of it).
    io: OnceLock<WeakSocketIo>,
    /// Development mode: the monitor, and its receiving end until [`AdminUi::start`] takes it.
    feed: Option<(Arc<feed::Feed>, parking_lot::Mutex<Option<feed::Receiver>>)>,
}

impl AdminUi {
    /// A dashboard server for `config` (already checked by [`AdminUiConfig::problem`]).
    pub fn new(config: AdminUiConfig) -> Arc<Self> {
        let feed = (config.mode == AdminMode::Development).then(|| {
            let (feed, rx) = feed::Feed::new(&config.namespace);
            (feed, parking_lot::Mutex::new(Some(rx)))
        });
        Arc::new(AdminUi {
            auth: Authenticator::new(&config),
            config,
            io: OnceLock::new(),
            feed,
        })
    }

    /// Adds the admin namespace, and in development mode the socket feed, to a tenant's server.
    pub fn install(self: &Arc<Self>, builder: SocketIoBuilder) -> SocketIoBuilder {
        let builder = builder.namespace(&self.config.namespace, actions::handlers(self));
        match &self.feed {
            Some((feed, _)) => builder.monitor(Arc::clone(feed) as _),
            None => builder,
        }
    }

    /// Starts the feed and statistics for the built server. Call once, inside a tokio runtime.
    pub fn start(self: &Arc<Self>, io: &SocketIo, engine: &Engine) {
        if self.io.set(io.downgrade()).is_err() {
            return;
        }
        let lines = match &self.feed {
            Some((_, rx)) => rx.lock().take(),
            None => None,
        };
        tokio::spawn(feed::run(
            lines,
            io.downgrade(),
            engine.downgrade(),
            self.config.namespace.clone(),
            feed::NodeIdentity::of_this_process(),
        ));
    }

    fn io(&self) -> Option<SocketIo> {
        self.io.get().and_then(WeakSocketIo::upgrade)
    }
}
