//! ioplex: a multi-tenant Socket.IO gateway.
//!
//! Layers, each depending only on those below it:
//! - [`contract`]: the events a client uses when no application server stands behind the gateway;
//! - [`socketio`]: namespaces, sockets, rooms, acks and binary over Engine.IO;
//! - [`adapter`]: where broadcasts go: the local in-memory adapter (Redis adapters plug in behind the same trait);
//! - [`engineio`]: handshake, polling, websocket, upgrade and heartbeat on hyper and tokio;
//! - [`serve`]: binding listeners and routing HTTP requests to an endpoint.

pub mod adapter;
pub mod api;
pub mod contract;
pub mod engineio;
pub mod metrics;
pub mod plugin;
pub mod serve;
pub mod sid;
pub mod socketio;
pub mod static_files;
pub mod tenant;

pub use sid::Sid;
