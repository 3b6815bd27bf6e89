//! A namespace: its sockets on this node, its handlers and its adapter.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;
use std::time::Duration;

use super::broadcast::BroadcastOperator;
use super::handlers::Handlers;
use super::monitor::Monitor;
use super::recovery::Recovery;
use super::socket::{EmitError, Socket};
use crate::adapter::{
    AckSink, Adapter, AdapterError, AdapterFactory, Room, ServerAck, SocketInfo, SocketTable,
};
use crate::codec::{EncodedPacket, Packet, Payload};
use crate::engineio::CloseReason;
use crate::sid::Sid;

/// A Socket.IO namespace on this node.
pub struct Namespace {
    name: String,
    handlers: Arc<Handlers>,
    sockets: RwLock<HashMap<Sid, Arc<Socket>>>,
    adapter: Arc<dyn Adapter>,
    /// Created on demand for a client (removed again when its last socket leaves).
    pub(crate) dynamic: bool,
    /// Events received from clients (for `/metrics`).
    pub(crate) events_in: std::sync::atomic::AtomicU64,
    /// Events refused by the namespace's rate limit.
    pub(crate) rate_limited: std::sync::atomic::AtomicU64,
    /// The server's recovery log, when connection state recovery is on here.
    recovery: Option<Arc<Recovery>>,
    /// The server's observer, if one watches its sockets.
    monitor: Option<Arc<dyn Monitor>>,
}

impl Namespace {
    pub(crate) fn new(
        name: &str,
        handlers: Arc<Handlers>,
        factory: &dyn AdapterFactory,
        dynamic: bool,
        recovery: Option<Arc<Recovery>>,
        monitor: Option<Arc<dyn Monitor>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me: &std::sync::Weak<Namespace>| {
            let table: std::sync::Weak<dyn SocketTable> = me.clone();
            Namespace {
                name: name.to_owned(),
                handlers,
                sockets: RwLock::new(HashMap::new()),
                adapter: factory.create(name, table),
                dynamic,
                events_in: std::sync::atomic::AtomicU64::new(0),
                rate_limited: std::sync::atomic::AtomicU64::new(0),
                recovery,
                monitor,
            }
        })
    }

    /// Events received from clients since the namespace was created.
    pub fn events_received(&self) -> u64 {
        self.events_in.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events refused (or whose socket was disconnected) by the rate limit since the namespace was
    /// created.
    pub fn events_rate_limited(&self) -> u64 {
        self.rate_limited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The name, e.g. `/` or `/chat`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The adapter (rooms, broadcasts, fleet-wide operations).
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.adapter
    }

    /// The recovery log, when connection state recovery is on.
    pub(crate) fn recovery(&self) -> Option<&Arc<Recovery>> {
        self.recovery.as_ref()
    }

    pub(crate) fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// The server's observer, if any.
    pub(crate) fn monitor(&self) -> Option<&Arc<dyn Monitor>> {
        self.monitor.as_ref()
    }

    /// A socket connected to this node.
    pub fn socket(&self, sid: Sid) -> Option<Arc<Socket>> {
        self.sockets.read().get(&sid).cloned()
    }

    /// Number of sockets connected to this node.
    pub fn socket_count(&self) -> usize {
        self.sockets.read().len()
    }

    pub(crate) fn insert_socket(&self, socket: Arc<Socket>, rooms: &[Room]) {
        let sid = socket.id();
        self.sockets.write().insert(sid, Arc::clone(&socket));
        let mut all = Vec::with_capacity(rooms.len() + 1);
        all.push(Room::of_socket(sid));
        all.extend_from_slice(rooms);
        self.adapter.add_all(sid, &all);
        if let Some(monitor) = &self.monitor {
            monitor.connected(&socket);
        }
    }

    pub(crate) fn remove_socket(&self, sid: Sid) {
        self.adapter.del_all(sid);
        self.sockets.write().remove(&sid);
    }

    /// A broadcast to every socket of the namespace.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(self))
    }

    /// A broadcast to the sockets in `room`.
    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// Emits to every socket of the namespace.
    pub fn emit(self: &Arc<Self>, event: &str, payload: Payload) -> Result<(), EmitError> {
        self.broadcast().emit(event, payload)
    }

    /// Emits `event` to the other servers of the fleet (their [`Handlers::on_server_side_emit`]).
    pub async fn server_side_emit(
        &self,
        event: &str,
        args: Vec<Value>,
    ) -> Result<(), AdapterError> {
        let data = crate::codec::event_data(event, args);
        self.adapter.server_side_emit(data).await
    }

    /// Like [`Namespace::server_side_emit`], returning each other server's answer.
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, AdapterError> {
        let data = crate::codec::event_data(event, args);
        self.adapter.server_side_emit_with_ack(data, timeout).await
    }

    /// Disconnects every socket on this node (server shutdown).
    pub fn disconnect_all(&self, reason: CloseReason) {
        let sockets: Vec<_> = self.sockets.read().values().cloned().collect();
        for socket in sockets {
            socket.leave_namespace(super::socket::DisconnectReason::Transport(reason.clone()));
        }
    }
}

impl SocketTable for Namespace {
    fn deliver_with_ack(
        &self,
        targets: &mut dyn Iterator<Item = Sid>,
        packet: &Packet,
        timeout: Duration,
        acks: &AckSink,
    ) -> usize {
        let sockets = self.sockets.read();
        targets
            .filter_map(|sid| sockets.get(&sid))
            .filter(|socket| socket.send_with_ack_sink(packet, timeout, acks))
            .count()
    }

    fn server_side_emit(&self, data: Vec<Value>, ack: Option<ServerAck>) {
        match &self.handlers.server_side {
            Some(handler) => handler(data, ack),
            // Nobody listens here: answer anyway so the emitting server is not left waiting.
            None => {
                if let Some(ack) = ack {
                    ack(Value::Null);
                }
            }
        }
    }

    fn deliver(
        &self,
        targets: &mut dyn Iterator<Item = Sid>,
        packet: &EncodedPacket,
        volatile: bool,
    ) {
        let sockets = self.sockets.read();
        for sid in targets {
            if let Some(socket) = sockets.get(&sid) {
                socket.send_encoded(packet, volatile);
            }
        }
    }

    fn socket_info(&self, sid: Sid, rooms: Vec<Room>) -> Option<SocketInfo> {
        let socket = self.sockets.read().get(&sid).cloned()?;
        let mut data = socket.data();
        if let Some(monitor) = &self.monitor {
            monitor.annotate(&socket, &mut data);
        }
        Some(SocketInfo {
            id: sid,
            rooms,
            data,
            handshake: socket.handshake_json(),
        })
    }

    fn watches_rooms(&self) -> bool {
        self.monitor.is_some()
    }

    fn rooms_changed(&self, changes: &[crate::adapter::RoomChange]) {
        if let Some(monitor) = &self.monitor {
            monitor.rooms_changed(&self.name, changes);
        }
    }

    fn disconnect(&self, sid: Sid, close: bool) {
        let Some(socket) = self.socket(sid) else {
            return;
        };
        if close {
            socket.close_connection();
        } else {
            socket.disconnect();
        }
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;
    use serde_json::json;

    use crate::codec::Payload;
    use crate::socketio::test_support::{connected, engine};
    use crate::socketio::{DisconnectReason, Handlers, SocketIo};

    #[tokio::test]
    async fn a_namespace_emit_reaches_its_sockets_only() {
        let io = SocketIo::builder()
            .namespace("/", Handlers::new())
            .namespace("/admin", Handlers::new())
            .build();
        let engine = engine(&io);
        let (mut a, _) = connected(&engine, "/admin").await;
        let (mut b, _) = connected(&engine, "/admin").await;
        let (mut main, _) = connected(&engine, "/").await;
        io.of("/admin")
            .expect("admin")
            .emit("news", Payload::json(vec![json!(1)]))
            .expect("emit");
        assert_eq!(a.recv_text().await.expect("a"), r#"42/admin,["news",1]"#);
        assert_eq!(b.recv_text().await.expect("b"), r#"42/admin,["news",1]"#);
        io.of("/")
            .expect("main")
            .emit("hello", Payload::json(vec![]))
            .expect("emit");
        assert_eq!(
            main.recv_text().await.expect("main"),
            r#"42["hello"]"#,
            "the first packet main sees"
        );
    }

    #[tokio::test]
    async fn the_disconnect_handler_hears_why() {
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&reasons);
        let handlers =
            Handlers::new().on_disconnect(move |_socket, reason| seen.lock().push(reason.clone()));
        let io = SocketIo::builder().namespace("/", handlers).build();
        let engine = engine(&io);
        let (mut client, _) = connected(&engine, "/").await;
        client.send("41").await.expect("send");
        for _ in 0..100 {
            if !reasons.lock().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            *reasons.lock(),
            vec![DisconnectReason::ClientNamespaceDisconnect]
        );
        assert_eq!(io.of("/").expect("ns").socket_count(), 0);
    }
}
