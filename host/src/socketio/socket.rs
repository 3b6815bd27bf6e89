//! One client's membership of one namespace: emitting, acknowledgements, rooms and disconnection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

use super::broadcast::BroadcastOperator;
use super::client::Client;
use super::namespace::Namespace;
use crate::adapter::{AckSink, Room};
use crate::codec::{
    EncodedPacket, Packet, PacketKind, Parser, Payload, encode, encode_ack, encode_event,
};
use crate::engineio::{CloseReason, Handshake, SendOutcome, Session, TransportKind};
use crate::sid::Sid;

/// Why a socket left its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT for this namespace.
    ClientNamespaceDisconnect,
    /// The server disconnected the socket.
    ServerNamespaceDisconnect,
    /// The whole connection ended.
    Transport(CloseReason),
}

impl DisconnectReason {
    /// Whether the client may come back and recover its state: the connection broke, timed out, was
    /// closed without leaving the namespace (an Engine.IO close, as Node counts it), or the server
    /// closed it; not when either side left the namespace on purpose (DISCONNECT).
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            DisconnectReason::Transport(
                CloseReason::TransportClose
                    | CloseReason::ClientClose
                    | CloseReason::TransportError(_)
                    | CloseReason::PingTimeout
                    | CloseReason::SlowClient
                    | CloseReason::ServerClose
            )
        )
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => {
                f.write_str("client namespace disconnect")
            }
            DisconnectReason::ServerNamespaceDisconnect => {
                f.write_str("server namespace disconnect")
            }
            DisconnectReason::Transport(reason) => reason.fmt(f),
        }
    }
}

/// An emit that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The name is reserved by Socket.IO; clients would close the connection on receiving it.
    #[error("\"{0}\" is a reserved event name")]
    ReservedEvent(String),
    /// The socket is disconnected.
    #[error("socket disconnected")]
    Disconnected,
}

/// An acknowledgement that did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The emit itself failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// The client did not answer in time.
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    /// The socket disconnected before answering.
    #[error("socket disconnected before acknowledging")]
    Disconnected,
}

/// An event received from a client.
pub struct Event {
    /// The event name (numeric names as their decimal text).
    pub name: String,
    /// The arguments after the name.
    pub payload: Payload,
    /// Present when the client waits for an acknowledgement.
    pub ack: Option<AckResponder>,
}

/// Answers a client's event exactly once (consumed by [`AckResponder::send`]).
pub struct AckResponder {
    socket: Arc<Socket>,
    id: u64,
}

impl AckResponder {
    /// Sends the acknowledgement.
    pub fn send(self, payload: Payload) {
        let packet = encode_ack(self.socket.ns.name(), self.id, &payload);
        self.socket.send_encoded(&packet, false);
    }
}

#[derive(Default)]
struct PendingAcks {
    next_id: u64,
    waiting: HashMap<u64, AckWaiter>,
}

/// Who waits for one acknowledgement.
enum AckWaiter {
    /// A single emit (`emit_with_ack`), which removes its entry on timeout.
    Once(oneshot::Sender<Payload>),
    /// One recipient of a broadcast with acks; swept once past its deadline.
    Broadcast(AckSink, tokio::time::Instant),
}

impl PendingAcks {
    fn register(&mut self, waiter: AckWaiter) -> u64 {
        // Broadcast waiters remove nothing themselves: drop the expired ones as new ones arrive.
        let now = tokio::time::Instant::now();
        self.waiting
            .retain(|_, w| !matches!(w, AckWaiter::Broadcast(_, deadline) if *deadline <= now));
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, waiter);
        id
    }
}

/// Who a new socket is: fresh, or restored by connection state recovery.
pub(crate) struct Identity {
    /// Its id (a restored socket keeps its old one).
    pub id: Sid,
    /// Its private session id, with recovery on.
    pub pid: Option<String>,
    /// The recovery log's position when it first connected.
    pub from: u64,
    /// Restored by connection state recovery.
    pub recovered: bool,
}

/// A client connected to a namespace.
pub struct Socket {
    id: Sid,
    /// Private session id (connection state recovery); never shown to other clients.
    pid: Option<String>,
    /// The recovery log's position when the socket first connected.
    from: u64,
    recovered: bool,
    pub(crate) ns: Arc<Namespace>,
    session: Arc<Session>,
    /// The client's parser, settled before any socket exists (by the CONNECT).
    parser: Parser,
    client: Weak<Client>,
    auth: Value,
    user_id: Option<Arc<str>>,
    data: Mutex<Value>,
    acks: Mutex<PendingAcks>,
    connected: AtomicBool,
    /// Present when the namespace limits event rates.
    bucket: Option<Mutex<super::rate::TokenBucket>>,
}

impl Socket {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        session: Arc<Session>,
        client: Weak<Client>,
        auth: Value,
        data: Value,
        user_id: Option<Arc<str>>,
        identity: Identity,
    ) -> Arc<Self> {
        let bucket = ns
            .handlers()
            .rate_limit
            .as_ref()
            .map(|limit| Mutex::new(super::rate::TokenBucket::full(limit)));
        let parser = client
            .upgrade()
            .map_or_else(Parser::default, |c| c.parser());
        Arc::new(Socket {
            id: identity.id,
            pid: identity.pid,
            from: identity.from,
            recovered: identity.recovered,
            ns,
            session,
            parser,
            client,
            auth,
            user_id,
            data: Mutex::new(data),
            bucket,
            acks: Mutex::new(PendingAcks::default()),
            connected: AtomicBool::new(true),
        })
    }

    /// The Socket.IO parser its client speaks.
    pub fn parser(&self) -> Parser {
        self.parser
    }

    /// The socket id (not the Engine.IO session id).
    pub fn id(&self) -> Sid {
        self.id
    }

    /// Whether this socket came back through connection state recovery (Node's `socket.recovered`):
    /// same id, rooms and data as before its connection dropped, and what it missed replayed.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The private session id a recovering client presents (with connection state recovery on).
    pub(crate) fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// The namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// The `auth` object the client sent with CONNECT.
    pub fn auth(&self) -> &Value {
        &self.auth
    }

    /// Who the socket acts for, as its connect authorizers said (e.g. a plugin's verified token).
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The Engine.IO handshake of the connection.
    pub fn handshake(&self) -> &Handshake {
        self.session.handshake()
    }

    /// The handshake as Node's `socket.handshake` describes it (for fleet-wide `fetchSockets`).
    pub fn handshake_json(&self) -> Value {
        let hs = self.session.handshake();
        let headers: serde_json::Map<String, Value> = hs
            .headers
            .iter_str()
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect();
        let query: serde_json::Map<String, Value> = hs
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        let issued = hs
            .issued
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let time = chrono::DateTime::<chrono::Utc>::from(hs.issued)
            .format("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)")
            .to_string();
        serde_json::json!({
            "headers": headers,
            "time": time,
            "address": hs.remote_addr.ip().to_string(),
            "xdomain": hs.headers.contains("origin"),
            "secure": false,
            "issued": issued,
            "url": format!("{}?{}", hs.path, hs.query),
            "query": query,
            "auth": self.auth,
        })
    }

    /// The Engine.IO session id of the connection.
    pub fn session_id(&self) -> Sid {
        self.session.sid()
    }

    /// The transport the connection uses now.
    pub fn transport(&self) -> TransportKind {
        self.session.transport()
    }

    /// Application data attached to the socket.
    pub fn data(&self) -> Value {
        self.data.lock().clone()
    }

    /// Replaces the application data.
    pub fn set_data(&self, data: Value) {
        if let Some(store) = self.ns.adapter().sessions() {
            store.update_data(self.id, data.clone());
        }
        *self.data.lock() = data;
    }

    /// Whether the socket is still in its namespace.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Emits an event to this client.
    pub fn emit(&self, event: &str, payload: &Payload) -> Result<(), EmitError> {
        check_event_name(event)?;
        if !self.connected() {
            return Err(EmitError::Disconnected);
        }
        if self.ns.recovery().is_some() || self.ns.adapter().sessions().is_some() {
            // Through the log (its own room), so that it is replayed if the connection drops.
            return BroadcastOperator::new(Arc::clone(&self.ns))
                .to(Room::of_socket(self.id))
                .emit(event, payload.clone());
        }
        self.send_encoded(&encode_event(self.ns.name(), event, payload, None), false);
        Ok(())
    }

    /// Emits an event and waits for the client's acknowledgement.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: &Payload,
        timeout: Duration,
    ) -> Result<Payload, AckError> {
        check_event_name(event)?;
        if !self.connected() {
            return Err(EmitError::Disconnected.into());
        }
        let (tx, rx) = oneshot::channel();
        let id = self.acks.lock().register(AckWaiter::Once(tx));
        self.send_encoded(
            &encode_event(self.ns.name(), event, payload, Some(id)),
            false,
        );
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(_)) => Err(AckError::Disconnected),
            Err(_) => {
                let mut acks = self.acks.lock();
                acks.waiting.remove(&id);
                if acks.waiting.is_empty() && acks.waiting.capacity() > 16 {
                    acks.waiting = HashMap::new();
                }
                Err(AckError::Timeout(timeout))
            }
        }
    }

    /// Sends one recipient's copy of a broadcast with acks: its own ack id, so its own encoding.
    pub(crate) fn send_with_ack_sink(
        &self,
        packet: &Packet,
        timeout: Duration,
        sink: &AckSink,
    ) -> bool {
        if !self.connected() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let id = self
            .acks
            .lock()
            .register(AckWaiter::Broadcast(sink.clone(), deadline));
        let mut own = packet.clone();
        own.id = Some(id);
        own.nsp = self.ns.name().to_owned();
        self.send_encoded(&encode(&own), false) == SendOutcome::Queued
    }

    pub(crate) fn send_encoded(&self, packet: &EncodedPacket, volatile: bool) -> SendOutcome {
        self.session
            .send_all(packet.frames_for(self.parser), volatile)
    }

    /// Joins rooms.
    pub fn join(&self, rooms: &[Room]) {
        self.ns.adapter().add_all(self.id, rooms);
    }

    /// Leaves a room.
    pub fn leave(&self, room: &Room) {
        self.ns.adapter().del(self.id, room);
    }

    /// The rooms the socket is in (its own id room included).
    pub fn rooms(&self) -> Vec<Room> {
        self.ns.adapter().socket_rooms(self.id)
    }

    /// Whether the socket is in every one of `rooms` (no copy of its room set).
    pub fn in_rooms(&self, rooms: &[Room]) -> bool {
        self.ns.adapter().socket_in_all(self.id, rooms)
    }

    /// Targets `room` for a broadcast that excludes this socket.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// A broadcast to the whole namespace that excludes this socket.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(&self.ns)).except(Room::of_socket(self.id))
    }

    /// Disconnects the socket from its namespace; the client does not reconnect to it on its own.
    pub fn disconnect(self: &Arc<Self>) {
        if !self.connected() {
            return;
        }
        let packet = Packet {
            kind: PacketKind::Disconnect,
            nsp: self.ns.name().to_owned(),
            id: None,
            data: None,
            attachments: Vec::new(),
        };
        self.send_encoded(&encode(&packet), false);
        if let Some(client) = self.client.upgrade() {
            client.forget(self.ns.name());
        }
        self.leave_namespace(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Disconnects the socket and closes the whole connection (every namespace of the client).
    pub fn close_connection(self: &Arc<Self>) {
        self.disconnect();
        self.session.close(CloseReason::ServerClose);
    }

    /// Resolves an acknowledgement the client sent for one of our emits.
    pub(crate) fn on_ack(&self, id: u64, payload: Payload) {
        let waiting = self.acks.lock().waiting.remove(&id);
        match waiting {
            Some(AckWaiter::Once(tx)) => {
                let _ = tx.send(payload);
            }
            Some(AckWaiter::Broadcast(sink, deadline))
                if tokio::time::Instant::now() < deadline =>
            {
                let _ = sink.send(payload);
            }
            _ => {}
        }
    }

    /// Delivers a client event to the namespace's handler.
    pub(crate) fn on_event(
        self: &Arc<Self>,
        id: Option<u64>,
        data: Vec<Value>,
        attachments: Vec<bytes::Bytes>,
    ) {
        self.ns
            .events_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut args = data.into_iter();
        let name = match args.next() {
            Some(Value::String(name)) => name,
            Some(other) => other.to_string(),
            None => return,
        };
        let handlers = self.ns.handlers();
        if let (Some(bucket), Some(limit)) = (&self.bucket, &handlers.rate_limit)
            && !bucket.lock().take(limit, std::time::Instant::now())
        {
            return self.over_rate(limit, id);
        }
        let payload = Payload {
            args: args.collect(),
            attachments,
        };
        if let Some(monitor) = self.ns.monitor() {
            monitor.event_received(self, &name, &payload);
        }
        let Some(handler) = handlers.event_handler(&name) else {
            return;
        };
        let event = Event {
            name,
            payload,
            ack: id.map(|id| AckResponder {
                socket: Arc::clone(self),
                id,
            }),
        };
        handler(self, event);
    }

    /// An event past the namespace's rate limit: refused through its ack, or the socket disconnected.
    fn over_rate(self: &Arc<Self>, limit: &super::rate::RateLimit, ack_id: Option<u64>) {
        self.ns
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match limit.action {
            super::rate::RateAction::Disconnect => {
                tracing::debug!(socket = %self.id, "event rate exceeded: disconnecting");
                self.disconnect();
            }
            super::rate::RateAction::Reject => {
                if let Some(id) = ack_id {
                    let body = serde_json::json!({
                        "ok": false,
                        "code": "rate_limited",
                        "message": format!(
                            "more than {} events per second (burst {})",
                            limit.per_second, limit.burst
                        ),
                    });
                    let packet = encode_ack(self.ns.name(), id, &Payload::json(vec![body]));
                    self.send_encoded(&packet, false);
                }
            }
        }
    }

    /// Removes the socket from its namespace and rooms and runs the disconnect handler, once.
    pub(crate) fn leave_namespace(self: &Arc<Self>, reason: DisconnectReason) {
        if !self.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        // Waiting emit_with_ack calls fail with `Disconnected`.
        self.acks.lock().waiting.clear();
        if let Some(handler) = self.ns.handlers().disconnect.clone() {
            handler(self, &reason);
        }
        if let Some(monitor) = self.ns.monitor() {
            monitor.disconnected(self, &reason);
        }
        let keep = match (self.ns.recovery(), &self.pid) {
            (Some(recovery), Some(pid)) if reason.recoverable() => {
                let own = Room::of_socket(self.id);
                let rooms = self.rooms().into_iter().filter(|r| *r != own).collect();
                Some((recovery, pid, rooms))
            }
            _ => None,
        };
        if let Some(store) = self.ns.adapter().sessions() {
            store.untrack(self.id, reason.recoverable());
        }
        self.ns.remove_socket(self.id);
        // Saved only once the socket is gone, so that a client coming back at once cannot be
        // restored under this id while the old socket still holds it.
        if let Some((recovery, pid, rooms)) = keep {
            recovery.save(
                pid.clone(),
                super::recovery::SavedSession {
                    sid: self.id,
                    nsp: self.ns.name().to_owned(),
                    rooms,
                    data: self.data(),
                    user_id: self.user_id.clone(),
                    from: self.from,
                },
            );
        }
        if self.ns.dynamic
            && let Some(client) = self.client.upgrade()
        {
            client.release_namespace(&self.ns);
        }
    }
}

/// Refuses the names Socket.IO reserves: clients close the connection on receiving one.
pub(crate) fn check_event_name(event: &str) -> Result<(), EmitError> {
    if crate::codec::is_reserved_event(event) {
        return Err(EmitError::ReservedEvent(event.to_owned()));
    }
    Ok(())
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.ns.name())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::codec::Payload;
    use crate::socketio::test_support::{connected, engine};
    use crate::socketio::{Handlers, SocketIo};

    #[tokio::test]
    async fn an_event_reaches_its_handler_and_the_ack_answers() {
        let handlers = Handlers::new().on("echo", |_socket, event| {
            if let Some(ack) = event.ack {
                ack.send(event.payload);
            }
        });
        let io = SocketIo::builder().namespace("/", handlers).build();
        let engine = engine(&io);
        let (mut client, _) = connected(&engine, "/").await;
        client
            .send(r#"421["echo","hi",{"n":1}]"#)
            .await
            .expect("send");
        assert_eq!(
            client.recv_text().await.expect("ack"),
            r#"431["hi",{"n":1}]"#
        );
    }

    #[tokio::test]
    async fn emit_with_ack_gets_the_clients_answer() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (mut client, sid) = connected(&engine, "/").await;
        let socket = io
            .of("/")
            .and_then(|ns| ns.socket(sid.parse().expect("sid")))
            .expect("socket");
        let asking = tokio::spawn(async move {
            socket
                .emit_with_ack(
                    "question",
                    &Payload::json(vec![json!("name?")]),
                    Duration::from_secs(2),
                )
                .await
        });
        let question = client.recv_text().await.expect("question");
        let id = question
            .strip_prefix("42")
            .and_then(|r| r.split('[').next())
            .expect("an ack id");
        assert_eq!(question, format!(r#"42{id}["question","name?"]"#));
        client
            .send(&format!(r#"43{id}["Ada"]"#))
            .await
            .expect("answer");
        let answer = asking.await.expect("task").expect("acked");
        assert_eq!(answer.args, vec![json!("Ada")]);
    }

    #[tokio::test]
    async fn data_set_on_a_socket_is_read_back_and_session_ids_differ_from_socket_ids() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (client, sid) = connected(&engine, "/").await;
        let socket = io
            .of("/")
            .and_then(|ns| ns.socket(sid.parse().expect("sid")))
            .expect("socket");
        socket.set_data(json!({"user": "ada"}));
        assert_eq!(socket.data(), json!({"user": "ada"}));
        assert_eq!(socket.session_id().to_string(), client.sid());
        assert_ne!(
            socket.session_id(),
            socket.id(),
            "the Engine.IO id is never shown as the socket id"
        );
    }

    #[tokio::test]
    async fn a_server_disconnect_tells_the_client_and_leaves_its_rooms() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (mut client, sid) = connected(&engine, "/").await;
        let ns = io.of("/").expect("namespace");
        let socket = ns.socket(sid.parse().expect("sid")).expect("socket");
        socket.join(&["lobby".into()]);
        assert_eq!(ns.adapter().room_size(&"lobby".into()), 1);
        socket.disconnect();
        assert_eq!(client.recv_text().await.expect("disconnect"), "41");
        assert_eq!(
            ns.adapter().room_size(&"lobby".into()),
            0,
            "a gone socket leaves its rooms"
        );
        assert!(!socket.connected());
    }

    #[tokio::test]
    async fn reserved_event_names_cannot_be_emitted() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (_client, sid) = connected(&engine, "/").await;
        let socket = io
            .of("/")
            .and_then(|ns| ns.socket(sid.parse().expect("sid")))
            .expect("socket");
        let err = socket
            .emit("disconnect", &Payload::json(vec![]))
            .expect_err("reserved");
        assert_eq!(err.to_string(), "\"disconnect\" is a reserved event name");
    }
}
