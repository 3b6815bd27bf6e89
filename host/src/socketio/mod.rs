//! Socket.IO v5 over Engine.IO: namespaces, sockets, rooms, events, acknowledgements and binary.
//!
//! Packets are decoded once per connection ([`crate::codec::PacketDecoder`]), routed to the socket of their namespace, and
//! handed to the namespace's [`Handlers`]. Broadcasts are encoded once and given to the namespace's
//! [`crate::adapter::Adapter`]; this layer knows nothing of Redis or of how other nodes are reached.

mod broadcast;
mod client;
mod config;
mod connect_timeout;
mod handlers;
mod monitor;
mod namespace;
mod rate;
mod recovery;
mod server;
mod socket;
#[cfg(all(test, unix))]
mod test_support;

pub use crate::codec::Payload;
pub use broadcast::{BroadcastAckError, BroadcastOperator};
pub use config::SocketIoConfig;
pub use handlers::{ConnectAccept, ConnectRefusal, ConnectRequest, Handlers};
pub use monitor::Monitor;
pub use namespace::Namespace;
pub use rate::{RateAction, RateLimit};
pub use recovery::RecoveryConfig;
pub use server::{NamespaceHandle, SocketIo, SocketIoBuilder, WeakSocketIo};
pub use socket::{AckError, AckResponder, DisconnectReason, EmitError, Event, Socket};
