//! Engine.IO v4: the transport layer under Socket.IO.
//!
//! Handshake, HTTP long-polling, websocket, upgrade and heartbeat, on hyper and tokio. It delivers opaque
//! messages (text or binary) to an [`EngineHandler`] and knows nothing of namespaces, rooms or Redis.
//! The hot path is [`WirePacket`]: a packet is encoded once, frame header included, and shared by every
//! recipient.

mod config;
mod cors;
mod endpoints;
mod error;
mod headers;
mod heartbeat;
#[cfg(unix)]
mod memory_client;
pub mod packet;
mod polling;
mod server;
mod session;
mod stats;
mod v3;
mod websocket;
pub mod wire;
pub mod ws_codec;
mod ws_socket;

pub use config::{AllowedOrigins, EngineConfig, Transports};
pub use endpoints::{Endpoints, EnginesByPath};
pub use error::RequestError;
pub use headers::HandshakeHeaders;
#[cfg(unix)]
pub use memory_client::{MemoryClient, Received};
pub use packet::{Message, Utf8Bytes};
pub use server::{Engine, EngineHandler, WeakEngine};
pub use session::{
    CloseReason, Handshake, SendOutcome, Session, SessionHandler, TransportFailure, TransportKind,
};
pub use stats::EngineStats;
pub use v3::Protocol;
pub use wire::WirePacket;
pub use ws_socket::WsSocket;

pub use crate::http_util::Body;
