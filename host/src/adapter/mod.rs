//! Where broadcasts go: the seam between one node's sockets and the fleet.
//!
//! [`Adapter`] is the contract a namespace uses for rooms and broadcasts. [`LocalAdapter`] keeps the room index
//! of one node and delivers to its sockets; fleet adapters (Redis) wrap it and add publishing and the fleet-wide
//! requests. The adapter reaches sockets only through [`SocketTable`], so it knows nothing of sessions or
//! transports, and encodes nothing: a broadcast arrives already encoded once, and every recipient gets a
//! reference to the same frames.

mod local;
pub mod redis;
pub mod session;
#[cfg(test)]
pub(crate) mod test_support;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use local::LocalAdapter;
pub use session::{AttachRestored, PersistedSession, SessionStore};

use crate::codec::{EncodedPacket, Packet, Payload, encode};
use crate::sid::Sid;

/// A boxed future, for the fleet-wide operations of the object-safe [`Adapter`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A room name. Cheap to clone; every socket is also in a room named after its id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room(Arc<str>);

impl Room {
    /// A room by name.
    pub fn new(name: &str) -> Self {
        Room(Arc::from(name))
    }

    /// The room of one socket.
    pub fn of_socket(sid: Sid) -> Self {
        Room::new(sid.as_str())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Room {
    fn from(s: &str) -> Self {
        Room::new(s)
    }
}

impl From<String> for Room {
    fn from(s: String) -> Self {
        Room(Arc::from(s))
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Room({:?})", &*self.0)
    }
}

/// Which sockets an operation targets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BroadcastOptions {
    /// Sockets in any of these rooms; every socket of the namespace when empty.
    pub rooms: Vec<Room>,
    /// Minus sockets in any of these rooms.
    pub except: Vec<Room>,
    /// Drop for clients that are behind instead of queueing.
    pub volatile: bool,
    /// This node only (do not publish to the fleet).
    pub local: bool,
}

/// A packet to broadcast: its structure (for fleet adapters, which re-encode it for their bus) and its
/// Engine.IO frames, encoded once for every local recipient.
#[derive(Clone, Debug)]
pub struct BroadcastPacket {
    packet: Packet,
    encoded: EncodedPacket,
}

impl BroadcastPacket {
    /// Encodes `packet` once.
    pub fn new(packet: Packet) -> Self {
        let encoded = encode(&packet);
        BroadcastPacket { packet, encoded }
    }

    /// The packet.
    pub fn packet(&self) -> &Packet {
        &self.packet
    }

    /// Its frames.
    pub fn encoded(&self) -> &EncodedPacket {
        &self.encoded
    }
}

/// What the fleet knows of a socket (Node's `fetchSockets()` result).
#[derive(Clone, Debug, PartialEq)]
pub struct SocketInfo {
    /// Socket id.
    pub id: Sid,
    /// Rooms it is in (its own id room included).
    pub rooms: Vec<Room>,
    /// Application data attached to it.
    pub data: Value,
    /// The handshake as Node describes it (`headers`, `time`, `address`, `xdomain`, `secure`, `issued`,
    /// `url`, `query`, `auth`).
    pub handshake: Value,
}

/// A fleet-wide operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The namespace is gone (server shutting down).
    #[error("namespace closed")]
    Closed,
    /// Other nodes did not answer in time.
    #[error(
        "timeout reached after {waited_ms} ms: only {received} responses received out of {expected}"
    )]
    Timeout {
        /// How long we waited.
        waited_ms: u64,
        /// Answers received.
        received: usize,
        /// Answers expected.
        expected: usize,
    },
    /// The bus (e.g. Redis) is unreachable; retry when it is back.
    #[error("fleet bus unavailable: {0}")]
    Unavailable(String),
}

/// Receives the acknowledgements of a broadcast with acks (each client's arguments).
pub type AckSink = tokio::sync::mpsc::UnboundedSender<Payload>;

/// Answers a server-side emit from another server (first argument only, as Node's adapters do).
pub type ServerAck = Box<dyn FnOnce(Value) + Send>;

/// The acknowledgements a broadcast with acks collected.
#[derive(Debug, Default)]
pub struct BroadcastAcks {
    /// How many clients were asked, across the fleet (as far as nodes reported before the timeout).
    pub expected: usize,
    /// One entry per client that answered.
    pub responses: Vec<Payload>,
    /// Some clients (or nodes) had not answered when the timeout passed.
    pub timed_out: bool,
}

/// The local sockets of one namespace, as the adapter sees them.
pub trait SocketTable: Send + Sync + 'static {
    /// Queues an encoded packet for every socket in `targets`; unknown ids are ignored. Called once per
    /// broadcast so the table is locked once, not once per recipient.
    fn deliver(
        &self,
        targets: &mut dyn Iterator<Item = Sid>,
        packet: &EncodedPacket,
        volatile: bool,
    );
    /// Describes socket `sid` if it is connected here.
    fn socket_info(&self, sid: Sid, rooms: Vec<Room>) -> Option<SocketInfo>;
    /// Disconnects socket `sid` (sending DISCONNECT; `close` also ends its Engine.IO session).
    fn disconnect(&self, sid: Sid, close: bool);
    /// Emits `packet` to every target with an ack id of its own; each answer goes to `acks` until `timeout`.
    /// Returns how many sockets it was sent to.
    fn deliver_with_ack(
        &self,
        targets: &mut dyn Iterator<Item = Sid>,
        packet: &Packet,
        timeout: Duration,
        acks: &AckSink,
    ) -> usize;
    /// Runs the namespace's server-side event handler for an emit from another server.
    fn server_side_emit(&self, data: Vec<Value>, ack: Option<ServerAck>);
    /// Whether the table wants [`SocketTable::rooms_changed`]; asked once, at the first room change.
    fn watches_rooms(&self) -> bool {
        false
    }
    /// Memberships that changed on this node, however they changed (a socket's own join, a fleet
    /// request, a disconnect). Called with no adapter lock held; must not block.
    fn rooms_changed(&self, _changes: &[RoomChange]) {}
}

/// One socket joining or leaving one room on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomChange {
    /// The socket.
    pub sid: Sid,
    /// The room.
    pub room: Room,
    /// Joined (true) or left.
    pub joined: bool,
}

/// Rooms and broadcasts of one namespace. Every method is non-blocking; the fleet-wide ones return futures
/// that resolve when every node answered (or at the fleet adapter's timeout).
pub trait Adapter: Send + Sync + 'static {
    /// Adds a local socket to rooms, creating them.
    fn add_all(&self, sid: Sid, rooms: &[Room]);
    /// Removes a local socket from one room; an emptied room is deleted.
    fn del(&self, sid: Sid, room: &Room);
    /// Removes a local socket from every room (it disconnected).
    fn del_all(&self, sid: Sid);
    /// Rooms a local socket is in.
    fn socket_rooms(&self, sid: Sid) -> Vec<Room>;
    /// Whether a local socket is in every one of `rooms`, without copying its room set.
    fn socket_in_all(&self, sid: Sid, rooms: &[Room]) -> bool {
        let joined = self.socket_rooms(sid);
        rooms.iter().all(|r| joined.contains(r))
    }
    /// Number of local sockets in a room.
    fn room_size(&self, room: &Room) -> usize;
    /// Delivers to every targeted socket, here and (unless `opts.local`) on other nodes.
    fn broadcast(&self, packet: &BroadcastPacket, opts: &BroadcastOptions);
    /// Describes every targeted socket of the fleet.
    fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> BoxFuture<'_, Result<Vec<SocketInfo>, AdapterError>>;
    /// Every room of the namespace across the fleet.
    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>>;
    /// Makes every targeted socket of the fleet join `rooms`.
    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>>;
    /// Makes every targeted socket of the fleet leave `rooms`.
    fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>>;
    /// Disconnects every targeted socket of the fleet.
    fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>>;
    /// Emits to every targeted socket of the fleet and collects their acknowledgements until `timeout`.
    fn broadcast_with_ack(
        &self,
        packet: &BroadcastPacket,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BroadcastAcks, AdapterError>>;
    /// Emits `[event, ...args]` to the other servers of the fleet (not to clients); alone, there is no one
    /// to tell.
    fn server_side_emit(&self, data: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>>;
    /// Like [`Adapter::server_side_emit`], collecting one answer per other server until `timeout`.
    fn server_side_emit_with_ack(
        &self,
        data: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>>;
    /// The fleet's connection state recovery, when this adapter keeps sessions and offsets itself;
    /// it then appends each logged broadcast's offset as its last argument.
    fn sessions(&self) -> Option<&dyn SessionStore> {
        None
    }
}

/// Creates the adapter of each namespace.
pub trait AdapterFactory: Send + Sync + 'static {
    /// The adapter for namespace `nsp`, reaching its sockets through `sockets`.
    fn create(&self, nsp: &str, sockets: std::sync::Weak<dyn SocketTable>) -> Arc<dyn Adapter>;

    /// Whether every broadcast of the namespace passes through this node (no fleet), so that a log
    /// kept here holds all a disconnected socket missed (connection state recovery in memory).
    fn single_node(&self) -> bool {
        false
    }
}

/// Builds [`LocalAdapter`]s: a single node.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAdapterFactory;

impl AdapterFactory for LocalAdapterFactory {
    fn create(&self, _nsp: &str, sockets: std::sync::Weak<dyn SocketTable>) -> Arc<dyn Adapter> {
        Arc::new(LocalAdapter::new(sockets))
    }

    fn single_node(&self) -> bool {
        true
    }
}
