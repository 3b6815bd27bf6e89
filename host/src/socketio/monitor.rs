//! What a server tells an observer of its sockets (the admin UI feed): sockets arriving and leaving,
//! room changes and client events.
//!
//! A [`Monitor`] is called on connection tasks and right after every room edit (with no lock held), so
//! it must only record or queue what it hears: it must never block, and never call back into the server.

use std::sync::Arc;

use super::socket::{DisconnectReason, Socket};
use crate::adapter::RoomChange;
use crate::codec::Payload;

/// Hears what happens to the sockets of every namespace of one server.
pub trait Monitor: Send + Sync + 'static {
    /// A socket joined its namespace (its rooms are already set).
    fn connected(&self, socket: &Arc<Socket>);
    /// A socket left its namespace.
    fn disconnected(&self, socket: &Arc<Socket>, reason: &DisconnectReason);
    /// Memberships of `nsp` changed on this node.
    fn rooms_changed(&self, nsp: &str, changes: &[RoomChange]);
    /// A client sent an event (after the rate limit let it through).
    fn event_received(&self, socket: &Arc<Socket>, name: &str, payload: &Payload);
    /// Adds to a socket's data what the observer on another node needs to see of it, when the fleet
    /// fetches sockets (`data` is a copy; the socket's own data is unchanged).
    fn annotate(&self, _socket: &Socket, _data: &mut serde_json::Value) {}
}
