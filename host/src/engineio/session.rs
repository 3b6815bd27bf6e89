//! One Engine.IO session: its outgoing queue, transport state and heartbeat steps.
//!
//! The session is shared between whoever currently writes to the client (a pending polling GET or the
//! websocket task), whoever reads from it (POST handlers, the websocket task) and the upper layer that sends
//! packets. All of that state sits behind one short, never-awaited lock. The queue is bounded: volatile packets
//! are dropped once it is above a high-water mark, and a client that lets it overflow is disconnected. When
//! a websocket is active, nothing is queued and no batch is being written, a sender writes the frame with a
//! non-blocking write under that lock, so frames never interleave and order is kept.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::EngineConfig;
use super::packet::{Message, Packet};
use super::server::EngineShared;
use super::stats::EngineStats;
use super::wire::WirePacket;
use crate::sid::Sid;

/// The transport a session currently writes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl TransportKind {
    /// The name used in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::Websocket => "websocket",
        }
    }
}

/// How a transport failed: the I/O error's kind, to match on, and its message, to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportFailure {
    /// The error's kind (`ConnectionReset`, `BrokenPipe`, ...; `Other` for a broken request body).
    pub kind: std::io::ErrorKind,
    /// What the system or hyper said.
    pub message: String,
}

impl From<&std::io::Error> for TransportFailure {
    fn from(err: &std::io::Error) -> Self {
        TransportFailure {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl std::fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the transport (socket closed, websocket close frame).
    TransportClose,
    /// The transport failed (I/O error, broken request body).
    TransportError(TransportFailure),
    /// The client sent a `close` packet.
    ClientClose,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent bytes that are not Engine.IO (or Socket.IO, reported by the upper layer).
    ParseError(String),
    /// The client sent a message larger than the configured maximum.
    PayloadTooLarge,
    /// The client broke the transport rules (e.g. two concurrent polling requests).
    ProtocolViolation(&'static str),
    /// The client did not read fast enough and its outgoing queue overflowed.
    SlowClient,
    /// The server closed it (application decision or shutdown).
    ServerClose,
}

impl CloseReason {
    /// Whether the client asked for the close (a pending poll then gets `6` rather than `1`).
    fn client_initiated(&self) -> bool {
        matches!(self, CloseReason::ClientClose)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::TransportClose => f.write_str("transport close"),
            CloseReason::TransportError(e) => write!(f, "transport error: {e}"),
            CloseReason::ClientClose => f.write_str("forced close"),
            CloseReason::PingTimeout => f.write_str("ping timeout"),
            CloseReason::ParseError(e) => write!(f, "parse error: {e}"),
            CloseReason::PayloadTooLarge => f.write_str("payload too large"),
            CloseReason::ProtocolViolation(e) => write!(f, "protocol violation: {e}"),
            CloseReason::SlowClient => f.write_str("outgoing buffer full (client too slow)"),
            CloseReason::ServerClose => f.write_str("server close"),
        }
    }
}

/// What the handshake request told us about the client; kept for the session's lifetime.
#[derive(Debug)]
pub struct Handshake {
    /// Path of the handshake request.
    pub path: String,
    /// Query string of the handshake request (without `?`).
    pub query: String,
    /// Request headers of the handshake.
    pub headers: super::HandshakeHeaders,
    /// Peer address.
    pub remote_addr: SocketAddr,
    /// When the session was opened.
    pub issued: std::time::SystemTime,
    /// The Engine.IO protocol the client speaks (`EIO`).
    pub protocol: super::Protocol,
    /// A v3 client that cannot read binary polling bodies (`b64=1`).
    pub b64: bool,
}

impl Handshake {
    /// The handshake's query parameters, decoded, in order (repeated names included).
    pub fn query_pairs(&self) -> form_urlencoded::Parse<'_> {
        crate::http_util::query_pairs(&self.query)
    }
}

/// Receives what arrives on one session; installed by the upper layer when the session opens.
pub trait SessionHandler: Send + Sync + 'static {
    /// A message arrived. Runs on the reading task; must not block.
    fn on_message(&self, session: &Arc<Session>, message: Message);
    /// The session ended; called exactly once.
    fn on_close(&self, session: &Arc<Session>, reason: &CloseReason);
}

/// The outcome of queueing packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for the client.
    Queued,
    /// A volatile packet was dropped because the client is behind.
    DroppedVolatile,
    /// The session is closed (or was just closed for overflowing its queue).
    Closed,
}

/// A session's mutable state, behind one lock. Transports change it only through the methods below,
/// which keep these invariants (asserted in debug builds):
///
/// - the transport goes from polling to websocket at most once, and never back;
/// - `upgrading` is set only while the transport is polling, and one upgrade runs at a time;
/// - once `closed` is set it stays set, and no websocket is attached to a closed session;
/// - at most one polling `GET` and one `POST` are in flight;
/// - `writing` (a websocket batch in flight) is set only by the one websocket task, and only while the
///   transport is websocket; direct writes happen only while it is clear and the queue is empty.
pub(crate) struct State {
    queue: VecDeque<WirePacket>,
    queued_bytes: usize,
    transport: TransportKind,
    upgrading: bool,
    /// Set once the session is closed: whether a pending poll answers `6` (client close) or `1`.
    closed: Option<ClosedAs>,
    poll_pending: bool,
    post_pending: bool,
    /// The websocket task is writing a batch; nobody else may write to the socket meanwhile.
    writing: bool,
    /// The active websocket, for senders to write to directly when nothing is queued.
    direct: Option<Arc<super::ws_socket::WsSocket>>,
    ping_sent: Option<Instant>,
    last_pong: Instant,
    handler: Option<Arc<dyn SessionHandler>>,
}

impl State {
    fn new(transport: TransportKind) -> Self {
        State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            transport,
            upgrading: false,
            closed: None,
            poll_pending: false,
            post_pending: false,
            writing: false,
            direct: None,
            ping_sent: None,
            last_pong: Instant::now(),
            handler: None,
        }
    }

    /// The transport the session writes through now.
    pub(crate) fn transport(&self) -> TransportKind {
        self.transport
    }

    /// How the session was closed, if it was.
    pub(crate) fn closed_as(&self) -> Option<ClosedAs> {
        self.closed
    }

    /// Whether a websocket is probing to take the session over.
    pub(crate) fn is_upgrading(&self) -> bool {
        self.upgrading
    }

    /// Whether packets wait to be written.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Starts an upgrade; `false` when one is running or the session is already on websocket (a
    /// second websocket for one session is refused).
    pub(crate) fn begin_upgrade(&mut self) -> bool {
        if self.upgrading || self.transport == TransportKind::Websocket {
            return false;
        }
        self.upgrading = true;
        true
    }

    /// Gives up an upgrade; the session stays on polling.
    pub(crate) fn abort_upgrade(&mut self) {
        debug_assert!(self.transport == TransportKind::Polling || !self.upgrading);
        self.upgrading = false;
    }

    /// Finishes an upgrade: the websocket is the transport from now on. `false` when the session
    /// closed meanwhile.
    pub(crate) fn complete_upgrade(&mut self) -> bool {
        if self.closed.is_some() {
            return false;
        }
        debug_assert!(self.upgrading, "an upgrade completes only after it began");
        debug_assert_eq!(self.transport, TransportKind::Polling);
        self.upgrading = false;
        self.transport = TransportKind::Websocket;
        true
    }

    /// Makes `stream` the socket senders write to directly.
    pub(crate) fn attach_websocket(&mut self, stream: Arc<super::ws_socket::WsSocket>) {
        debug_assert_eq!(self.transport, TransportKind::Websocket);
        if self.closed.is_none() {
            self.direct = Some(stream);
        }
    }

    /// Forgets the websocket (its task is ending).
    pub(crate) fn detach_websocket(&mut self) {
        self.direct = None;
    }

    /// Marks a polling `GET` (or `POST`) in flight; `false` when one already is (a protocol violation).
    pub(crate) fn begin_request(&mut self, get: bool) -> bool {
        let slot = if get {
            &mut self.poll_pending
        } else {
            &mut self.post_pending
        };
        !std::mem::replace(slot, true)
    }

    /// Ends the polling request [`State::begin_request`] began.
    pub(crate) fn end_request(&mut self, get: bool) {
        let slot = if get {
            &mut self.poll_pending
        } else {
            &mut self.post_pending
        };
        debug_assert!(*slot, "a request ends only after it began");
        *slot = false;
    }

    /// Takes the queue into `batch` for the websocket task to write; `false` when it is empty. Until
    /// [`State::end_batch`], senders queue instead of writing directly.
    pub(crate) fn begin_batch(&mut self, batch: &mut Vec<WirePacket>) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        debug_assert!(!self.writing, "one websocket task writes at a time");
        Session::take_queue(self, batch);
        self.writing = true;
        true
    }

    /// The batch is written (or failed).
    pub(crate) fn end_batch(&mut self) {
        debug_assert!(self.writing);
        self.writing = false;
    }

    /// Queues a packet the server makes itself (a websocket control frame, a ping or a pong), behind what
    /// is queued, outside the send limits.
    pub(crate) fn push_frame(&mut self, frame: WirePacket) {
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }
}

/// How a closed session answers a pending poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClosedAs {
    Client,
    Server,
}

/// A live Engine.IO session.
pub struct Session {
    sid: Sid,
    handshake: Handshake,
    pub(crate) engine: Arc<EngineShared>,
    pub(crate) state: Mutex<State>,
    /// Wakes the current writer (pending poll or websocket task) when packets are queued or state changes.
    pub(crate) writer: Notify,
    is_closed: AtomicBool,
    /// The outgoing queue overflowed; a close is on its way.
    overflowed: AtomicBool,
}

impl Session {
    pub(crate) fn new(
        engine: Arc<EngineShared>,
        transport: TransportKind,
        handshake: Handshake,
    ) -> Arc<Self> {
        Arc::new(Session {
            sid: Sid::random(),
            handshake,
            engine,
            state: Mutex::new(State::new(transport)),
            writer: Notify::new(),
            is_closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        })
    }

    /// The session id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// What the handshake request carried.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The transport the session writes through now.
    pub fn transport(&self) -> TransportKind {
        self.state.lock().transport
    }

    /// The Engine.IO protocol its client speaks.
    pub fn protocol(&self) -> super::Protocol {
        self.handshake.protocol
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.engine.config
    }

    pub(crate) fn set_handler(&self, handler: Arc<dyn SessionHandler>) {
        self.state.lock().handler = Some(handler);
    }

    /// Queues one packet. See [`Session::send_all`].
    pub fn send(&self, packet: WirePacket, volatile: bool) -> SendOutcome {
        self.send_all(std::slice::from_ref(&packet), volatile)
    }

    /// Queues packets that must stay together (a Socket.IO packet and its binary attachments).
    ///
    /// A volatile group is dropped when the client is behind; any group that would overflow the queue
    /// closes the session as too slow.
    pub fn send_all(self: &Session, packets: &[WirePacket], volatile: bool) -> SendOutcome {
        // A broadcast's packets are hot in cache, the recipient's handshake is not: look at it last.
        if packets.iter().any(WirePacket::is_binary)
            && self.handshake.protocol == super::Protocol::V3
        {
            return self.send_v3_binary(packets, volatile);
        }
        self.send_typed(packets, volatile)
    }

    /// v3 clients read a type byte before binary data: these frames are theirs alone. Old clients and
    /// binary data only, so kept out of the broadcast path.
    #[cold]
    #[inline(never)]
    fn send_v3_binary(self: &Session, packets: &[WirePacket], volatile: bool) -> SendOutcome {
        let typed: Vec<WirePacket> = packets
            .iter()
            .map(|p| {
                if p.is_binary() {
                    super::v3::typed_binary(p)
                } else {
                    p.clone()
                }
            })
            .collect();
        self.send_typed(&typed, volatile)
    }

    /// Queues packets already in the form the client reads.
    #[inline]
    fn send_typed(self: &Session, packets: &[WirePacket], volatile: bool) -> SendOutcome {
        let size: usize = packets.iter().map(WirePacket::len).sum();
        {
            let mut state = self.state.lock();
            if state.closed.is_some() || self.overflowed.load(Ordering::Acquire) {
                return SendOutcome::Closed;
            }
            let cfg = &self.engine.config;
            if volatile && state.queue.len() >= cfg.volatile_high_water {
                EngineStats::add(&self.engine.stats.dropped_volatile, packets.len() as u64);
                return SendOutcome::DroppedVolatile;
            }
            let overflow = state.queue.len() + packets.len() > cfg.max_buffered_packets
                || state.queued_bytes + size > cfg.max_buffered_bytes;
            if !overflow {
                EngineStats::add(&self.engine.stats.packets_out, packets.len() as u64);
                EngineStats::add(&self.engine.stats.bytes_out, size as u64);
                if state.queue.is_empty()
                    && !state.writing
                    && !packets.iter().any(WirePacket::is_separated)
                    && let Some(stream) = state.direct.as_ref()
                {
                    // Fast path: nothing waits, so write from here (no task wake-up). What the socket does
                    // not take at once is queued for the websocket task, in order.
                    let stream = Arc::clone(stream);
                    return self.write_directly(&mut state, &stream, packets);
                }
                state.queue.extend(packets.iter().cloned());
                state.queued_bytes += size;
                drop(state);
                self.writer.notify_one();
                return SendOutcome::Queued;
            }
        }
        // The sender may hold room or socket-table locks that closing takes (a broadcast does), so the
        // close runs on its own task; until then the session refuses further packets.
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            EngineStats::add(&self.engine.stats.slow_client_closes, 1);
            tracing::debug!(sid = %self.sid, "outgoing queue full; closing the session");
            if let Some(me) = self.engine.session(self.sid) {
                tokio::spawn(async move { me.close(CloseReason::SlowClient) });
            }
        }
        SendOutcome::Closed
    }

    /// Writes packets straight to the websocket while holding the state lock (so nothing interleaves);
    /// queues whatever the socket does not accept immediately.
    fn write_directly(
        &self,
        state: &mut State,
        stream: &super::ws_socket::WsSocket,
        packets: &[WirePacket],
    ) -> SendOutcome {
        for (i, packet) in packets.iter().enumerate() {
            let frame = packet.ws_frame();
            let written = match stream.try_write(frame) {
                Ok(n) if n == frame.len() => continue,
                Ok(n) => n,
                // WouldBlock, or an error the websocket task will meet and report itself.
                Err(_) => 0,
            };
            let rest = if written == 0 {
                packet.clone()
            } else {
                packet.rest_after(written)
            };
            state.queued_bytes += rest.len();
            state.queue.push_back(rest);
            for later in &packets[i + 1..] {
                state.queued_bytes += later.len();
                state.queue.push_back(later.clone());
            }
            self.writer.notify_one();
            return SendOutcome::Queued;
        }
        SendOutcome::Queued
    }

    /// Takes every queued packet, for a writer that is about to send them.
    pub(crate) fn take_queue(state: &mut State, into: &mut Vec<WirePacket>) {
        into.extend(state.queue.drain(..));
        state.queued_bytes = 0;
        if state.queue.capacity() > 64 {
            state.queue = VecDeque::new();
        }
    }

    /// Ends the session: releases its writer and tells the upper layer, once (its heartbeat entry lapses).
    pub fn close(self: &Arc<Self>, reason: CloseReason) {
        let (handler, keep_for_next_poll) = {
            let mut state = self.state.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(if reason.client_initiated() {
                ClosedAs::Client
            } else {
                ClosedAs::Server
            });
            state.direct = None;
            debug_assert!(!state.upgrading || state.transport == TransportKind::Polling);
            // After an orderly close a polling client learns of it from its next GET (`1` when the
            // server closed, as Node does, `6` when it raced its own `1`), so the session stays
            // findable until then. Errors and timeouts forget it at once: the next GET gets 400.
            let orderly = reason.client_initiated() || reason == CloseReason::ServerClose;
            let keep = orderly && state.transport == TransportKind::Polling && !state.poll_pending;
            (state.handler.take(), keep)
        };
        self.is_closed.store(true, Ordering::Release);
        let _ = self
            .engine
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        if keep_for_next_poll {
            // Answer the client's next GET (`1`, or `6` if it is racing its own `1` on another
            // connection); later requests get "Session ID unknown". Nobody polling: forget it after
            // pingTimeout.
            let me = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(me.engine.config.ping_timeout).await;
                me.engine.remove(me.sid);
            });
        } else {
            self.engine.remove(self.sid);
        }
        self.writer.notify_waiters();
        self.writer.notify_one();
        tracing::debug!(sid = %self.sid, %reason, "engine.io session closed");
        if let Some(handler) = handler {
            handler.on_close(self, &reason);
        }
    }

    /// Applies one packet received on the active transport. An error closes the session.
    pub(crate) fn on_packet(self: &Arc<Self>, packet: Packet) {
        match packet {
            Packet::Message(message) => {
                let len = match &message {
                    Message::Text(t) => t.as_bytes().len(),
                    Message::Binary(b) => b.len(),
                };
                EngineStats::add(&self.engine.stats.messages_in, 1);
                EngineStats::add(&self.engine.stats.bytes_in, len as u64);
                let handler = self.state.lock().handler.clone();
                if let Some(handler) = handler {
                    handler.on_message(self, message);
                }
            }
            Packet::Pong(_) => {
                let mut state = self.state.lock();
                state.ping_sent = None;
                state.last_pong = Instant::now();
            }
            Packet::Close => self.close(CloseReason::ClientClose),
            Packet::Ping(data) if self.handshake.protocol == super::Protocol::V3 => {
                // v3: the client pings, the server answers with the same data.
                {
                    let mut state = self.state.lock();
                    if state.closed.is_some() {
                        return;
                    }
                    state.last_pong = Instant::now();
                    state.push_frame(WirePacket::text(b'3', data.as_bytes()));
                }
                self.writer.notify_one();
            }
            Packet::Ping(_) => self.close(CloseReason::ProtocolViolation(
                "invalid heartbeat direction: clients answer pings, they do not send them",
            )),
            Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Whether a ping went unanswered for longer than `pingTimeout`, even if the heartbeat task has not run yet.
    pub(crate) fn ping_overdue(&self, now: Instant) -> bool {
        let state = self.state.lock();
        let config = &self.engine.config;
        match self.handshake.protocol {
            super::Protocol::V4 => state
                .ping_sent
                .is_some_and(|sent| now >= sent + config.ping_timeout),
            super::Protocol::V3 => {
                now >= state.last_pong + config.ping_interval + config.ping_timeout
            }
        }
    }

    /// One step of the heartbeat (run by the endpoint's heartbeat task): send a ping, or check that the
    /// last one was answered (else close the session). Returns the next step, or `None` once closed.
    pub(crate) fn heartbeat_step(
        self: &Arc<Self>,
        step: super::heartbeat::Step,
        now: Instant,
    ) -> Option<(Instant, super::heartbeat::Step)> {
        use super::heartbeat::Step;
        let config = &self.engine.config;
        match step {
            Step::Ping => {
                {
                    let mut state = self.state.lock();
                    if state.closed.is_some() {
                        return None;
                    }
                    state.ping_sent = Some(now);
                    state.push_frame(ping_packet());
                }
                self.writer.notify_one();
                Some((now + config.ping_timeout, Step::Check))
            }
            Step::ExpectPing => {
                let heard = {
                    let state = self.state.lock();
                    if state.closed.is_some() {
                        return None;
                    }
                    state.last_pong
                };
                let due = heard + config.ping_interval + config.ping_timeout;
                if now >= due {
                    self.close(CloseReason::PingTimeout);
                    return None;
                }
                Some((due, Step::ExpectPing))
            }
            Step::Check => {
                let answered = {
                    let state = self.state.lock();
                    if state.closed.is_some() {
                        return None;
                    }
                    state.ping_sent.is_none().then_some(state.last_pong)
                };
                match answered {
                    Some(pong_at) => Some((pong_at + config.ping_interval, Step::Ping)),
                    None => {
                        self.close(CloseReason::PingTimeout);
                        None
                    }
                }
            }
        }
    }
}

fn ping_packet() -> WirePacket {
    WirePacket::text(b'2', b"")
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use std::time::Duration;

    use super::*;
    use crate::engineio::server::EngineShared;
    use crate::engineio::{EngineHandler, Message};

    struct Recorder(Mutex<Vec<CloseReason>>);

    impl SessionHandler for Recorder {
        fn on_message(&self, _session: &Arc<Session>, _message: Message) {}
        fn on_close(&self, _session: &Arc<Session>, reason: &CloseReason) {
            self.0.lock().push(reason.clone());
        }
    }

    struct Opener(Arc<Recorder>);

    impl EngineHandler for Opener {
        fn on_open(&self, _session: &Arc<Session>) -> Arc<dyn SessionHandler> {
            self.0.clone()
        }
    }

    fn open(config: EngineConfig) -> (Arc<Session>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let engine = EngineShared::new(config, Arc::new(Opener(recorder.clone())));
        let handshake = Handshake {
            path: "/socket.io/".into(),
            query: String::new(),
            headers: Default::default(),
            remote_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            protocol: crate::engineio::Protocol::V4,
            b64: false,
            issued: std::time::SystemTime::now(),
        };
        (
            engine.open_session(TransportKind::Websocket, handshake),
            recorder,
        )
    }

    #[tokio::test]
    async fn volatile_packets_are_dropped_above_the_high_water_mark() {
        let (session, _) = open(EngineConfig {
            volatile_high_water: 2,
            ..EngineConfig::default()
        });
        let packet = WirePacket::text(b'4', b"x");
        assert_eq!(session.send(packet.clone(), true), SendOutcome::Queued);
        assert_eq!(session.send(packet.clone(), false), SendOutcome::Queued);
        assert_eq!(
            session.send(packet.clone(), true),
            SendOutcome::DroppedVolatile
        );
        assert_eq!(session.send(packet, false), SendOutcome::Queued);
        assert_eq!(session.state.lock().queue.len(), 3);
    }

    #[tokio::test]
    async fn an_overflowing_queue_closes_the_session_as_too_slow() {
        let (session, recorder) = open(EngineConfig {
            max_buffered_packets: 3,
            ..EngineConfig::default()
        });
        let packet = WirePacket::text(b'4', b"x");
        for _ in 0..3 {
            assert_eq!(session.send(packet.clone(), false), SendOutcome::Queued);
        }
        assert_eq!(session.send(packet.clone(), false), SendOutcome::Closed);
        assert_eq!(session.send(packet, false), SendOutcome::Closed);
        // The close runs on its own task.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(session.is_closed());
        assert_eq!(*recorder.0.lock(), vec![CloseReason::SlowClient]);
    }

    #[tokio::test]
    async fn byte_limit_counts_too() {
        let (session, _) = open(EngineConfig {
            max_buffered_bytes: 100,
            ..EngineConfig::default()
        });
        let big = WirePacket::text(b'4', &[b'x'; 60]);
        assert_eq!(session.send(big.clone(), false), SendOutcome::Queued);
        assert_eq!(session.send(big, false), SendOutcome::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_closes_the_session() {
        let (session, recorder) = open(EngineConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            ..EngineConfig::default()
        });
        tokio::time::sleep(Duration::from_millis(310)).await;
        assert_eq!(
            session
                .state
                .lock()
                .queue
                .back()
                .map(|p| p.payload().to_vec()),
            Some(b"2".to_vec())
        );
        assert!(!session.is_closed());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(session.is_closed());
        assert_eq!(*recorder.0.lock(), vec![CloseReason::PingTimeout]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_ping_keeps_the_session() {
        let (session, _) = open(EngineConfig {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            ..EngineConfig::default()
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(310)).await;
            session.on_packet(Packet::Pong(crate::engineio::Utf8Bytes::from_static("")));
        }
        assert!(!session.is_closed());
    }

    #[test]
    fn an_upgrade_runs_once_and_moves_the_session_to_websocket() {
        let mut state = State::new(TransportKind::Polling);
        assert!(state.begin_upgrade());
        assert!(
            !state.begin_upgrade(),
            "a second probe is refused while one runs"
        );
        state.abort_upgrade();
        assert!(!state.is_upgrading());
        assert_eq!(
            state.transport(),
            TransportKind::Polling,
            "an aborted upgrade stays on polling"
        );
        assert!(state.begin_upgrade());
        assert!(state.complete_upgrade());
        assert_eq!(state.transport(), TransportKind::Websocket);
        assert!(
            !state.begin_upgrade(),
            "a websocket session is never upgraded again"
        );
    }

    #[test]
    fn an_upgrade_of_a_closed_session_does_not_complete() {
        let mut state = State::new(TransportKind::Polling);
        assert!(state.begin_upgrade());
        state.closed = Some(ClosedAs::Server);
        assert!(!state.complete_upgrade());
        assert_eq!(state.transport(), TransportKind::Polling);
    }

    #[test]
    fn one_get_and_one_post_at_a_time() {
        let mut state = State::new(TransportKind::Polling);
        assert!(state.begin_request(true));
        assert!(
            state.begin_request(false),
            "a POST beside a pending GET is fine"
        );
        assert!(
            !state.begin_request(true),
            "a second GET is a protocol violation"
        );
        state.end_request(true);
        assert!(state.begin_request(true));
    }

    #[test]
    fn a_batch_takes_the_queue_and_blocks_direct_writes_until_it_ends() {
        let mut state = State::new(TransportKind::Websocket);
        let mut batch = Vec::new();
        assert!(!state.begin_batch(&mut batch), "nothing to write");
        state.push_frame(WirePacket::text(b'4', b"a"));
        state.push_frame(WirePacket::text(b'4', b"b"));
        assert!(state.begin_batch(&mut batch));
        assert_eq!(batch.len(), 2);
        assert!(state.writing && !state.has_queued() && state.queued_bytes == 0);
        state.end_batch();
        assert!(!state.writing);
    }

    #[tokio::test]
    async fn a_closed_session_keeps_no_websocket_and_refuses_sends() {
        let (session, recorder) = open(EngineConfig::default());
        session.close(CloseReason::ServerClose);
        assert_eq!(session.state.lock().closed_as(), Some(ClosedAs::Server));
        assert_eq!(
            session.send(WirePacket::text(b'4', b"x"), false),
            SendOutcome::Closed
        );
        session.close(CloseReason::TransportClose);
        assert_eq!(
            recorder.0.lock().len(),
            1,
            "the upper layer hears of a close once"
        );
    }
}
