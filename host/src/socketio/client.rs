//! One Engine.IO connection seen by Socket.IO: decodes its packets and routes them to its sockets, one per
//! joined namespace. Any protocol violation closes the whole connection, as Node does.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::namespace::Namespace;
use super::server::Shared;
use super::socket::{DisconnectReason, Identity, Socket};
use crate::adapter::{PersistedSession, Room};
use crate::codec::PacketDecoder;
use crate::codec::{EncodedPacket, Packet, PacketKind, Parser, Payload, encode};
use crate::engineio::{CloseReason, Message, Protocol, Session, SessionHandler};
use crate::sid::Sid;

/// Socket.IO state of one connection.
pub struct Client {
    io: Arc<Shared>,
    me: Weak<Client>,
    decoder: Mutex<PacketDecoder>,
    /// Joined namespaces; almost always one or two, so a vector beats a map.
    sockets: Mutex<Vec<Arc<Socket>>>,
    /// Namespaces whose CONNECT waits for the fleet to restore a session.
    restoring: Mutex<Vec<String>>,
}

impl Client {
    pub(crate) fn new(io: Arc<Shared>) -> Arc<Self> {
        let (max_attachments, parser) = (io.config.max_attachments, io.config.parser);
        Arc::new_cyclic(|me| Client {
            io,
            me: me.clone(),
            decoder: Mutex::new(PacketDecoder::new(max_attachments, parser)),
            sockets: Mutex::new(Vec::new()),
            restoring: Mutex::new(Vec::new()),
        })
    }

    /// The parser this connection speaks (settled by its first packet).
    pub(crate) fn parser(&self) -> Parser {
        self.decoder.lock().parser()
    }

    /// Whether any namespace was joined (checked by the connect timeout).
    pub(crate) fn has_sockets(&self) -> bool {
        !self.sockets.lock().is_empty()
    }

    /// Drops the socket of `nsp` from this connection (it left its namespace).
    pub(crate) fn forget(&self, nsp: &str) {
        self.sockets.lock().retain(|s| s.namespace().name() != nsp);
    }

    pub(crate) fn release_namespace(&self, ns: &Arc<super::namespace::Namespace>) {
        self.io.release_if_unused(ns);
    }

    fn socket_of(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.sockets
            .lock()
            .iter()
            .find(|s| s.namespace().name() == nsp)
            .cloned()
    }

    fn violation(session: &Arc<Session>, what: &str) {
        tracing::debug!(sid = %session.sid(), what, "socket.io protocol violation; closing");
        session.close(CloseReason::ParseError(what.to_owned()));
    }

    fn dispatch(&self, session: &Arc<Session>, packet: Packet) {
        match packet.kind {
            PacketKind::Connect => self.connect(session, packet),
            PacketKind::Disconnect => match self.socket_of(&packet.nsp) {
                Some(socket) => {
                    self.forget(&packet.nsp);
                    socket.leave_namespace(DisconnectReason::ClientNamespaceDisconnect);
                }
                None => Self::violation(session, "DISCONNECT for a namespace not joined"),
            },
            PacketKind::Event | PacketKind::BinaryEvent => match self.socket_of(&packet.nsp) {
                Some(socket) => {
                    let data = match packet.data {
                        Some(Value::Array(items)) => items,
                        _ => return Self::violation(session, "event without arguments"),
                    };
                    socket.on_event(packet.id, data, packet.attachments);
                }
                None => Self::violation(session, "EVENT for a namespace not joined"),
            },
            PacketKind::Ack | PacketKind::BinaryAck => {
                match (self.socket_of(&packet.nsp), packet.id) {
                    (Some(socket), Some(id)) => {
                        let args = match packet.data {
                            Some(Value::Array(items)) => items,
                            _ => Vec::new(),
                        };
                        socket.on_ack(
                            id,
                            Payload {
                                args,
                                attachments: packet.attachments,
                            },
                        );
                    }
                    (None, _) => Self::violation(session, "ACK for a namespace not joined"),
                    (_, None) => Self::violation(session, "ACK without an id"),
                }
            }
            PacketKind::ConnectError => Self::violation(session, "CONNECT_ERROR sent by a client"),
        }
    }

    /// Socket.IO v2 servers connect every Engine.IO v3 client to `/` at once, without a CONNECT from
    /// it; its clients wait for that `40`.
    pub(crate) fn connect_legacy_main(&self, session: &Arc<Session>) {
        self.connect(
            session,
            Packet {
                kind: PacketKind::Connect,
                nsp: "/".to_owned(),
                id: None,
                data: None,
                attachments: Vec::new(),
            },
        );
    }

    fn connect(&self, session: &Arc<Session>, mut packet: Packet) {
        if session.protocol() == Protocol::V3
            && let Some((nsp, query)) = packet.nsp.split_once('?')
        {
            // Socket.IO v2 clients put a namespace's query after its name (`40/chat?token=x,`); it
            // stands in for the `auth` object they cannot send.
            let auth: Map<String, Value> = crate::http_util::query_pairs(query)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            packet.data = Some(Value::Object(auth));
            packet.nsp = nsp.to_owned();
        }
        if self.socket_of(&packet.nsp).is_some() || self.restoring.lock().contains(&packet.nsp) {
            return Self::violation(session, "CONNECT for a namespace already joined");
        }
        let auth = packet.data.unwrap_or_else(|| Value::Object(Map::new()));
        let ns = match self.io.namespace_for(&packet.nsp) {
            Ok(ns) => ns,
            Err(message) => {
                return send_connect_error(session, self.parser(), &packet.nsp, message, None);
            }
        };
        if self.recover(session, &ns, &packet.nsp, &auth)
            || self.recover_from_fleet(session, &ns, &auth)
        {
            return;
        }
        self.connect_fresh(session, &ns, &packet.nsp, auth);
    }

    /// A new socket: the connect authorizers decide, then it joins its namespace and rooms.
    fn connect_fresh(&self, session: &Arc<Session>, ns: &Arc<Namespace>, nsp: &str, auth: Value) {
        let mut data = Value::Null;
        let mut user_id = None;
        let mut rooms = Vec::new();
        for authorize in &ns.handlers().authorizers {
            let request = super::handlers::ConnectRequest {
                nsp,
                auth: &auth,
                handshake: session.handshake(),
            };
            match authorize(&request) {
                Ok(accept) => {
                    if let Some(d) = accept.data {
                        data = d;
                    }
                    if let Some(u) = accept.user_id {
                        user_id = Some(u);
                    }
                    rooms.extend(accept.rooms);
                }
                Err(refusal) => {
                    self.io.release_if_unused(ns);
                    return send_connect_error(
                        session,
                        self.parser(),
                        nsp,
                        &refusal.message,
                        refusal.data,
                    );
                }
            }
        }
        // Socket.IO v2 clients cannot recover: no private session id for them.
        let fleet = ns
            .adapter()
            .sessions()
            .filter(|_| session.protocol() == Protocol::V4);
        let identity = Identity {
            id: Sid::random(),
            pid: ns
                .recovery()
                .filter(|_| session.protocol() == Protocol::V4)
                .map(|r| r.new_pid())
                .or_else(|| fleet.map(|_| Sid::random().to_string())),
            from: ns.recovery().map_or(0, |r| r.position()),
            recovered: false,
        };
        let socket = Socket::new(
            Arc::clone(ns),
            Arc::clone(session),
            self.me.clone(),
            auth,
            data,
            user_id.map(Arc::from),
            identity,
        );
        self.io.attach(ns, Arc::clone(&socket), &rooms);
        self.sockets.lock().push(Arc::clone(&socket));
        if let (Some(store), Some(pid)) = (fleet, socket.pid()) {
            store.track(socket.id(), pid, socket.data(), socket.user_id());
        }
        self.connected(session, ns, &socket);
    }

    /// Connection state recovery kept by the fleet (the Redis Streams adapter): the session may
    /// have been saved by any node, this one or one that crashed. The CONNECT is answered once
    /// the adapter has looked; until then, a second CONNECT for the namespace is a violation.
    fn recover_from_fleet(
        &self,
        session: &Arc<Session>,
        ns: &Arc<Namespace>,
        auth: &Value,
    ) -> bool {
        let (Some(_), Some(pid), Some(client)) = (
            ns.adapter().sessions(),
            auth.get("pid").and_then(Value::as_str),
            self.me.upgrade(),
        ) else {
            return false;
        };
        let offset = auth
            .get("offset")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (pid, session, ns, auth) = (
            pid.to_owned(),
            Arc::clone(session),
            Arc::clone(ns),
            auth.clone(),
        );
        self.restoring.lock().push(ns.name().to_owned());
        tokio::spawn(async move {
            let adapter = Arc::clone(ns.adapter());
            let Some(store) = adapter.sessions() else {
                client.restoring.lock().retain(|n| n != ns.name());
                return;
            };
            let slot: Mutex<Option<Arc<Socket>>> = Mutex::new(None);
            let attach = Box::new(|saved: PersistedSession, missed: Vec<EncodedPacket>| {
                // A socket of this id still here is the one whose connection the client left.
                if let Some(stale) = ns.socket(saved.sid) {
                    stale.leave_namespace(DisconnectReason::ServerNamespaceDisconnect);
                }
                let identity = Identity {
                    id: saved.sid,
                    pid: Some(saved.pid),
                    from: 0,
                    recovered: true,
                };
                let socket = Socket::new(
                    Arc::clone(&ns),
                    Arc::clone(&session),
                    client.me.clone(),
                    auth.clone(),
                    saved.data,
                    saved.user_id.map(Arc::from),
                    identity,
                );
                let own = Room::of_socket(saved.sid);
                let rooms: Vec<Room> = saved.rooms.into_iter().filter(|r| *r != own).collect();
                client.io.attach(&ns, Arc::clone(&socket), &rooms);
                client.sockets.lock().push(Arc::clone(&socket));
                send_connect_reply(&session, &ns, &socket);
                for packet in &missed {
                    session.send_all(packet.frames_for(socket.parser()), false);
                }
                tracing::debug!(socket = %socket.id(), replayed = missed.len(), "socket recovered from the fleet");
                *slot.lock() = Some(socket);
            });
            let restored = store.restore(&pid, offset.as_deref(), attach).await;
            client.restoring.lock().retain(|n| n != ns.name());
            if let Err(err) = &restored {
                tracing::debug!(%err, "session not restored; a fresh socket instead");
            }
            let socket = slot.lock().take();
            match socket {
                Some(socket) => {
                    store.track(socket.id(), &pid, socket.data(), socket.user_id());
                    if session.is_closed() {
                        // Gone while it was restored: keep it for the next attempt.
                        client.forget(ns.name());
                        socket.leave_namespace(DisconnectReason::Transport(
                            CloseReason::TransportClose,
                        ));
                    } else {
                        run_connect_handler(&ns, &socket);
                    }
                }
                None if !session.is_closed() => {
                    client.connect_fresh(&session, &ns, ns.name(), auth);
                }
                None => client.io.release_if_unused(&ns),
            }
        });
        true
    }

    /// Connection state recovery: a CONNECT whose `auth` names a saved session (`pid`, and the
    /// `offset` of the last packet the client got) brings the socket back with its id, rooms and
    /// data, skipping the connect authorizers as Node does (the pid is the session's secret), and
    /// sends what it missed right after the CONNECT reply. `false` when there is nothing to recover.
    fn recover(
        &self,
        session: &Arc<Session>,
        ns: &Arc<Namespace>,
        nsp: &str,
        auth: &Value,
    ) -> bool {
        let Some(recovery) = ns.recovery() else {
            return false;
        };
        let Some(pid) = auth.get("pid").and_then(Value::as_str) else {
            return false;
        };
        let offset = auth.get("offset").and_then(Value::as_str);
        let Some((log, saved, missed)) = recovery.restore(nsp, pid, offset) else {
            return false;
        };
        let identity = Identity {
            id: saved.sid,
            pid: Some(pid.to_owned()),
            from: saved.from,
            recovered: true,
        };
        let socket = Socket::new(
            Arc::clone(ns),
            Arc::clone(session),
            self.me.clone(),
            auth.clone(),
            saved.data,
            saved.user_id,
            identity,
        );
        // While the log is held no broadcast is appended or delivered: the replay and the live
        // packets that follow it neither overlap nor leave a gap.
        self.io.attach(ns, Arc::clone(&socket), &saved.rooms);
        self.sockets.lock().push(Arc::clone(&socket));
        send_connect_reply(session, ns, &socket);
        for packet in &missed {
            session.send_all(packet.frames_for(socket.parser()), false);
        }
        drop(log);
        tracing::debug!(socket = %socket.id(), replayed = missed.len(), "socket recovered");
        run_connect_handler(ns, &socket);
        true
    }

    /// Sends the CONNECT reply (`sid`, and `pid` with recovery on) and runs the connect handler.
    fn connected(&self, session: &Arc<Session>, ns: &Arc<Namespace>, socket: &Arc<Socket>) {
        send_connect_reply(session, ns, socket);
        run_connect_handler(ns, socket);
    }
}

/// The CONNECT reply: `sid`, and `pid` with recovery on. A restored socket gets it before its
/// replay, so that the client handles each replayed packet (and moves its offset past it) as it
/// arrives: packets it buffered before a CONNECT that never came would be replayed twice.
fn send_connect_reply(session: &Arc<Session>, ns: &Arc<Namespace>, socket: &Arc<Socket>) {
    let mut reply = Map::new();
    reply.insert("sid".into(), Value::String(socket.id().to_string()));
    if let Some(pid) = socket.pid() {
        reply.insert("pid".into(), Value::String(pid.to_owned()));
    }
    let reply = Packet {
        kind: PacketKind::Connect,
        nsp: ns.name().to_owned(),
        id: None,
        // Socket.IO v2 answers a bare `40` (its clients derive the socket id themselves).
        data: (session.protocol() == Protocol::V4).then_some(Value::Object(reply)),
        attachments: Vec::new(),
    };
    session.send_all(
        encode(&reply).separated().frames_for(socket.parser()),
        false,
    );
}

fn run_connect_handler(ns: &Arc<Namespace>, socket: &Arc<Socket>) {
    if let Some(on_connect) = ns.handlers().connect.clone() {
        on_connect(socket);
    }
}

fn send_connect_error(
    session: &Session,
    parser: Parser,
    nsp: &str,
    message: &str,
    data: Option<Value>,
) {
    let mut body = Map::new();
    body.insert("message".into(), Value::String(message.to_owned()));
    if let Some(data) = data {
        body.insert("data".into(), data);
    }
    let body = match session.protocol() {
        Protocol::V4 => Value::Object(body),
        // Socket.IO v2's ERROR packet: the message alone, which its clients emit as `error`.
        Protocol::V3 => Value::String(message.to_owned()),
    };
    let packet = Packet {
        kind: PacketKind::ConnectError,
        nsp: nsp.to_owned(),
        id: None,
        data: Some(body),
        attachments: Vec::new(),
    };
    session.send_all(encode(&packet).frames_for(parser), false);
}

impl SessionHandler for Client {
    fn on_message(&self, session: &Arc<Session>, message: Message) {
        let decoded = {
            let mut decoder = self.decoder.lock();
            match message {
                Message::Text(text) => decoder.on_text(text.as_str()),
                Message::Binary(data) => decoder.on_binary(data),
            }
        };
        match decoded {
            Ok(Some(packet)) => self.dispatch(session, packet),
            Ok(None) => {}
            Err(err) => Self::violation(session, &err.to_string()),
        }
    }

    fn on_close(&self, _session: &Arc<Session>, reason: &CloseReason) {
        let sockets = std::mem::take(&mut *self.sockets.lock());
        for socket in sockets {
            socket.leave_namespace(DisconnectReason::Transport(reason.clone()));
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use crate::engineio::{MemoryClient, Received};
    use crate::socketio::test_support::{connected, engine};
    use crate::socketio::{Handlers, SocketIo};

    #[tokio::test]
    async fn a_binary_event_is_reassembled_and_echoed_with_its_attachment() {
        let handlers = Handlers::new().on("bin", |socket, event| {
            let _ = socket.emit("bin", &event.payload);
        });
        let io = SocketIo::builder().namespace("/", handlers).build();
        let engine = engine(&io);
        let (mut client, _) = connected(&engine, "/").await;
        client
            .send(r#"451-["bin",{"_placeholder":true,"num":0}]"#)
            .await
            .expect("header");
        client.send_binary(&[9, 8, 7]).await.expect("attachment");
        assert_eq!(
            client.recv_text().await.expect("echo"),
            r#"451-["bin",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(
            client.recv().await.expect("bytes"),
            Received::Binary(vec![9, 8, 7])
        );
    }

    #[tokio::test]
    async fn a_malformed_packet_closes_only_that_connection() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (mut bad, _) = connected(&engine, "/").await;
        let (mut good, _) = connected(&engine, "/").await;
        bad.send("42[\"unterminated").await.expect("send");
        loop {
            match bad.recv().await {
                Ok(Received::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        io.of("/")
            .expect("ns")
            .emit("still", crate::codec::Payload::json(vec![]))
            .expect("emit");
        assert_eq!(good.recv_text().await.expect("good"), r#"42["still"]"#);
    }

    #[tokio::test]
    async fn on_any_sees_events_without_a_handler_of_their_own() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let handlers = Handlers::new()
            .on("known", |_s, _e| {})
            .on_any(move |_socket, event| log.lock().push(event.name.clone()));
        let io = SocketIo::builder().namespace("/", handlers).build();
        let engine = engine(&io);
        let (mut client, _) = connected(&engine, "/").await;
        client.send(r#"42["other",1]"#).await.expect("send");
        client.send(r#"42["known",2]"#).await.expect("send");
        client.send(r#"42["last"]"#).await.expect("send");
        for _ in 0..100 {
            if seen.lock().len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(*seen.lock(), vec!["other".to_owned(), "last".to_owned()]);
    }

    #[tokio::test]
    async fn two_namespaces_share_one_connection() {
        let io = SocketIo::builder()
            .namespace("/", Handlers::new())
            .namespace("/chat", Handlers::new())
            .build();
        let engine = engine(&io);
        let mut client = MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        client.send("40").await.expect("main");
        assert!(client.recv_text().await.expect("main").starts_with("40{"));
        client.send("40/chat,").await.expect("chat");
        assert!(
            client
                .recv_text()
                .await
                .expect("chat")
                .starts_with("40/chat,{")
        );
        assert_eq!(io.of("/").expect("/").socket_count(), 1);
        assert_eq!(io.of("/chat").expect("/chat").socket_count(), 1);
    }
}
