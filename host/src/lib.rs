//! ioplex: a multi-tenant Socket.IO gateway.
//!
//! Layers, each depending only on those below it:
//! - [`api`], [`metrics`], [`static_files`]: the HTTP surfaces beside Socket.IO (tenants' backends,
//!   Prometheus, a demo page);
//! - [`tenant`]: tenants from configuration, each a Socket.IO server with its limits, Redis channels and
//!   plugin slot, chosen per request;
//! - [`contract`]: the events a client uses when no application server stands behind the gateway;
//! - [`plugin`]: tenants' WebAssembly components (wasmtime), knowing nothing of sockets;
//! - [`socketio`]: namespaces, sockets, rooms, acks and binary over Engine.IO;
//! - [`adapter`]: where broadcasts go: the local in-memory adapter, or Redis (wire-compatible with Node's);
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
