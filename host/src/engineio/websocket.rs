//! The websocket transport: handshake, upgrade from polling, and the per-connection task.
//!
//! One task per websocket reads and writes, so an idle connection costs one small future and no buffers.
//! It writes pre-encoded frames from the session queue with vectored writes; while that queue is empty a
//! sender writes to the socket itself (see `Session::send_all`), sparing a task wake-up per delivery. During an
//! upgrade the task runs in probe mode: it answers `2probe` with `3probe`, leaves the queue to polling, and
//! switches the session over when `5` arrives; anything else before that aborts the upgrade and polling goes on.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ws_socket::WsSocket;
use tokio::time::{Instant, Sleep};

use super::Body;
use super::error::RequestError;
use super::packet::{Message, Packet, Utf8Bytes, decode_text};
use super::server::EngineShared;
use super::session::{CloseReason, Handshake, Session, TransportKind};
use super::wire::WirePacket;
use super::ws_codec::{self, FrameDecoder, WsError, WsEvent};

/// Whether the request asks for a websocket (`Connection: upgrade` and `Upgrade: websocket`).
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// The 101 response, or `BadRequest` when the websocket handshake headers are wrong.
fn switching_protocols(req: &Request<Incoming>) -> Result<Response<Body>, RequestError> {
    let headers = req.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(RequestError::BadRequest);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(RequestError::BadRequest)?;
    let accept = HeaderValue::from_str(&ws_codec::accept_key(key.as_bytes()))
        .map_err(|_| RequestError::BadRequest)?;
    let mut resp = Response::new(Body::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(resp)
}

/// Waits for hyper to hand over the connection; `None` if the client went away or the I/O is not TCP.
async fn take_stream(on_upgrade: OnUpgrade) -> Option<(WsSocket, Bytes)> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(%err, "websocket upgrade did not complete");
            return None;
        }
    };
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Some((WsSocket::Tcp(parts.io.into_inner()), parts.read_buf)),
        Err(_) => {
            tracing::error!("websocket upgrade on a connection that is not plain TCP; closing it");
            None
        }
    }
}

/// A websocket handshake without `sid`: a websocket-only session.
pub(crate) fn accept_new(
    engine: &Arc<EngineShared>,
    mut req: Request<Incoming>,
    handshake: Handshake,
) -> Result<Response<Body>, RequestError> {
    let resp = switching_protocols(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let engine = Arc::clone(engine);
    tokio::spawn(async move {
        let Some((stream, leftover)) = take_stream(on_upgrade).await else {
            return;
        };
        open_on(&engine, stream, leftover, handshake).await;
    });
    Ok(resp)
}

/// Opens a websocket-only session on `stream`: sends the open packet, then runs the connection.
pub(crate) async fn open_on(
    engine: &Arc<EngineShared>,
    stream: WsSocket,
    leftover: Bytes,
    handshake: Handshake,
) {
    let session = engine.open_session(TransportKind::Websocket, handshake);
    let open = WirePacket::text_with(160, |buf| {
        buf.extend(engine.open_packet(session.sid(), TransportKind::Websocket));
    });
    if stream.write_all(open.ws_frame()).await.is_err() {
        session.close(CloseReason::TransportClose);
        return;
    }
    // A task of its own: this one's handshake and upgrade state are not carried for the
    // connection's lifetime.
    tokio::spawn(Connection::new(session, stream, leftover, Mode::Active).run());
}

/// A websocket for an existing polling session: the upgrade.
pub(crate) fn accept_upgrade(
    session: Arc<Session>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, RequestError> {
    let resp = switching_protocols(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let duplicate = { !session.state.lock().begin_upgrade() };
    if !duplicate {
        // Release a pending GET with `6` so the client can complete the upgrade.
        session.writer.notify_waiters();
    }
    tokio::spawn(async move {
        let Some((mut stream, leftover)) = take_stream(on_upgrade).await else {
            if !duplicate {
                session.state.lock().abort_upgrade();
            }
            return;
        };
        if duplicate {
            // One websocket per session: complete the handshake, then close the newcomer.
            let _ = stream
                .write_all(&ws_codec::close_frame(
                    ws_codec::CLOSE_PROTOCOL_ERROR,
                    "session already upgraded",
                ))
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        let mut connection = Connection::new(session, stream, leftover, Mode::Probing);
        let deadline = Instant::now() + connection.session.config().upgrade_timeout;
        connection.upgrade_timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
        tokio::spawn(connection.run());
    });
    Ok(resp)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Upgrading: polling still carries the session; this socket only answers the probe.
    Probing,
    /// The session's transport.
    Active,
}

/// How the connection task ends.
enum End {
    /// Close the websocket with this code; if active, close the session with the reason.
    Close(u16, CloseReason),
    /// The upgrade failed: close this websocket, leave the session on polling.
    AbortUpgrade(&'static str),
    /// The session was closed elsewhere; send what is queued, then a close frame.
    SessionClosed,
}

struct Connection {
    session: Arc<Session>,
    /// Shared with the session while active, so senders can write directly when nothing is queued.
    stream: Arc<WsSocket>,
    decoder: FrameDecoder,
    mode: Mode,
    /// While probing: when the upgrade is given up. Boxed, so that active connections (nearly all of
    /// them) do not carry a timer in their future.
    upgrade_timer: Option<Pin<Box<Sleep>>>,
    batch: Vec<WirePacket>,
}

/// How long a closing connection may spend sending what is queued and its close frame.
const GOODBYE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes read per readiness event; lives on the stack only while reading.
const READ_CHUNK: usize = 16 * 1024;

impl Connection {
    fn new(session: Arc<Session>, stream: WsSocket, leftover: Bytes, mode: Mode) -> Self {
        let mut decoder = FrameDecoder::new(session.config().max_payload);
        decoder.feed(&leftover);
        let connection = Connection {
            session,
            stream: Arc::new(stream),
            decoder,
            mode,
            upgrade_timer: None,
            batch: Vec::new(),
        };
        if mode == Mode::Active {
            connection.activate();
        }
        connection
    }

    /// Makes this socket the session's transport for direct writes.
    fn activate(&self) {
        self.session
            .state
            .lock()
            .attach_websocket(Arc::clone(&self.stream));
    }

    /// The connection's task. Not an `async fn`: that would keep a second copy of `self` in the future,
    /// which every idle connection carries.
    #[allow(clippy::manual_async_fn)] // see above: the `async fn` form is larger
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let end = self.drive().await;
            // Boxed: the goodbye happens once, and its futures would otherwise enlarge every idle
            // connection (a future is as large as its largest await point).
            Box::pin(self.goodbye(end)).await;
            // Dropping the last handle closes the socket.
            self.session.state.lock().detach_websocket();
        }
    }

    /// Closes the session or the upgrade as `end` says and sends a close frame; best effort and bounded,
    /// since the peer may be gone or not reading at all.
    async fn goodbye(&mut self, end: End) {
        let goodbye = async {
            match end {
                End::Close(code, reason) => {
                    let peer_gone = matches!(
                        reason,
                        CloseReason::TransportClose
                            | CloseReason::TransportError(_)
                            | CloseReason::SlowClient
                    );
                    if self.mode == Mode::Active {
                        self.session.close(reason);
                    } else {
                        self.abort_upgrade("websocket closed during upgrade");
                    }
                    if !peer_gone {
                        let _ = self.write_raw(&ws_codec::close_frame(code, "")).await;
                    }
                }
                End::AbortUpgrade(why) => {
                    self.abort_upgrade(why);
                    let _ = self
                        .write_raw(&ws_codec::close_frame(ws_codec::CLOSE_NORMAL, ""))
                        .await;
                }
                End::SessionClosed => {
                    // What the session queued before closing (e.g. DISCONNECT packets) goes first.
                    let _ = self
                        .write_raw(&ws_codec::close_frame(ws_codec::CLOSE_NORMAL, ""))
                        .await;
                }
            }
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }

    fn abort_upgrade(&self, why: &'static str) {
        tracing::debug!(sid = %self.session.sid(), why, "websocket upgrade aborted");
        self.session.state.lock().abort_upgrade();
    }

    async fn drive(&mut self) -> End {
        loop {
            while let Some(event) = match self.decoder.next_event() {
                Ok(event) => event,
                Err(err) => return self.on_ws_error(err),
            } {
                if let Some(end) = self.on_event(event).await {
                    return end;
                }
            }
            self.decoder.shrink_if_idle();

            if self.session.is_closed() {
                return End::SessionClosed;
            }
            if self.mode == Mode::Active
                && let Err(err) = self.flush().await
            {
                return End::Close(ws_codec::CLOSE_NORMAL, write_failure(err));
            }

            let notified = self.session.writer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let has_work = {
                let state = self.session.state.lock();
                state.closed_as().is_some() || (self.mode == Mode::Active && state.has_queued())
            };
            if has_work {
                continue;
            }
            tokio::select! {
                ready = self.stream.readable() => {
                    if let Err(err) = ready {
                        return End::Close(ws_codec::CLOSE_NORMAL, CloseReason::TransportError((&err).into()));
                    }
                    match read_available(&self.stream, &mut self.decoder) {
                        Ok(0) => return End::Close(ws_codec::CLOSE_NORMAL, CloseReason::TransportClose),
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                        Err(err) => return End::Close(
                            ws_codec::CLOSE_NORMAL,
                            CloseReason::TransportError((&err).into()),
                        ),
                    }
                }
                _ = notified => {}
                _ = expired(&mut self.upgrade_timer) => return End::AbortUpgrade("upgrade timeout"),
            }
        }
    }

    fn on_ws_error(&self, err: WsError) -> End {
        let reason = match &err {
            WsError::TooBig { .. } => CloseReason::PayloadTooLarge,
            other => CloseReason::ParseError(other.to_string()),
        };
        End::Close(err.close_code(), reason)
    }

    /// Handles one websocket event; `Some` ends the connection.
    async fn on_event(&mut self, event: WsEvent) -> Option<End> {
        match event {
            WsEvent::Text(bytes) => {
                let packet = match Utf8Bytes::try_from_bytes(bytes).and_then(decode_text) {
                    Ok(packet) => packet,
                    Err(err) => {
                        return Some(match self.mode {
                            Mode::Active => End::Close(
                                ws_codec::CLOSE_NORMAL,
                                CloseReason::ParseError(err.to_string()),
                            ),
                            Mode::Probing => End::AbortUpgrade("invalid packet during upgrade"),
                        });
                    }
                };
                match self.mode {
                    Mode::Active => {
                        if packet == Packet::Close {
                            self.session.close(CloseReason::ClientClose);
                            return Some(End::SessionClosed);
                        }
                        self.session.on_packet(packet);
                        None
                    }
                    // Boxed, like the pong below: rare, and kept out of every connection's future.
                    Mode::Probing => Box::pin(self.on_probe_packet(packet)).await,
                }
            }
            WsEvent::Binary(data) => match self.mode {
                Mode::Active => {
                    let packet = match self.session.protocol() {
                        super::Protocol::V4 => Packet::Message(Message::Binary(data)),
                        super::Protocol::V3 => match super::v3::untyped_binary(data) {
                            Ok(packet) => packet,
                            Err(err) => {
                                return Some(End::Close(
                                    ws_codec::CLOSE_NORMAL,
                                    CloseReason::ParseError(err.to_string()),
                                ));
                            }
                        },
                    };
                    self.session.on_packet(packet);
                    None
                }
                Mode::Probing => Some(End::AbortUpgrade("binary frame during upgrade")),
            },
            WsEvent::Ping(payload) => {
                let pong = ws_codec::pong_frame(&payload);
                if let Err(err) = Box::pin(self.write_raw(&pong)).await {
                    return Some(End::Close(ws_codec::CLOSE_NORMAL, write_failure(err)));
                }
                None
            }
            WsEvent::Pong => None,
            WsEvent::Close(_) => Some(End::Close(
                ws_codec::CLOSE_NORMAL,
                CloseReason::TransportClose,
            )),
        }
    }

    async fn on_probe_packet(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Ping(payload) if payload.as_str() == "probe" => {
                let pong = WirePacket::text(b'3', b"probe");
                if let Err(err) = self.write_raw(pong.ws_frame()).await {
                    return Some(End::Close(ws_codec::CLOSE_NORMAL, write_failure(err)));
                }
                None
            }
            Packet::Upgrade => {
                if !self.session.state.lock().complete_upgrade() {
                    return Some(End::SessionClosed);
                }
                self.mode = Mode::Active;
                self.upgrade_timer = None;
                self.activate();
                // A GET still pending must answer `6` now.
                self.session.writer.notify_waiters();
                tracing::debug!(sid = %self.session.sid(), "upgraded to websocket");
                None
            }
            _ => Some(End::AbortUpgrade("unexpected packet during upgrade")),
        }
    }

    /// Writes everything queued for the session. Senders write directly only while nothing is queued
    /// and no batch is in flight, so frames never interleave.
    async fn flush(&mut self) -> io::Result<()> {
        loop {
            if !self.session.state.lock().begin_batch(&mut self.batch) {
                break;
            }
            let result = self.write_batch().await;
            self.batch.clear();
            self.session.state.lock().end_batch();
            result?;
        }
        if self.batch.capacity() > 256 {
            self.batch = Vec::new();
        }
        Ok(())
    }

    /// Writes `batch`. Most batches fit in the socket's send buffer and go out without waiting; only one
    /// that must wait (a slow reader, or a frame to be sent separately) builds the boxed future with
    /// the stall timeout, which would otherwise be part of every idle connection's future.
    async fn write_batch(&self) -> io::Result<()> {
        let (index, offset) = if self.batch.iter().any(WirePacket::is_separated) {
            (0, 0)
        } else {
            write_ready(&self.stream, &self.batch, 0, 0)?
        };
        if index == self.batch.len() {
            return Ok(());
        }
        let stall = self.session.config().ping_interval + self.session.config().ping_timeout;
        let rest = write_frames(&self.stream, &self.batch[index..], offset);
        Box::pin(tokio::time::timeout(stall, rest))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                ))
            })
    }

    /// Writes a control frame: behind the queue once active (a partly written frame may be waiting there),
    /// straight to the socket while probing.
    async fn write_raw(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.mode == Mode::Active {
            self.session
                .state
                .lock()
                .push_frame(WirePacket::raw_frame(frame.to_vec()));
            return self.flush().await;
        }
        self.stream.write_all(frame).await
    }
}

fn write_failure(err: io::Error) -> CloseReason {
    if err.kind() == io::ErrorKind::TimedOut {
        CloseReason::SlowClient
    } else {
        CloseReason::TransportError((&err).into())
    }
}

/// Reads what the socket has into the decoder without keeping a buffer across awaits.
fn read_available(stream: &WsSocket, decoder: &mut FrameDecoder) -> io::Result<usize> {
    let mut buf = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut buf)?;
    decoder.feed(&buf[..n]);
    Ok(n)
}

/// Completes when `timer` fires; never without one.
async fn expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Pause after a frame marked [`WirePacket::separated`] when more frames follow it in the same flush.
const SEPARATION_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Writes whole frames (the first from `offset`), batching them into vectored writes except across a
/// separated frame.
async fn write_frames(stream: &WsSocket, frames: &[WirePacket], offset: usize) -> io::Result<()> {
    let (mut rest, mut offset) = (frames, offset);
    while let Some(split) = rest.iter().position(WirePacket::is_separated) {
        if split + 1 == rest.len() {
            break;
        }
        write_vectored_all(stream, &rest[..=split], offset).await?;
        tokio::time::sleep(SEPARATION_PAUSE).await;
        rest = &rest[split + 1..];
        offset = 0;
    }
    write_vectored_all(stream, rest, offset).await
}

/// Writes frames (the first from `offset`) with vectored writes of up to 64 frames per system call.
async fn write_vectored_all(
    stream: &WsSocket,
    frames: &[WirePacket],
    offset: usize,
) -> io::Result<()> {
    let (mut index, mut offset) = (0, offset);
    loop {
        (index, offset) = write_ready(stream, frames, index, offset)?;
        if index == frames.len() {
            return Ok(());
        }
        stream.writable().await?;
    }
}

/// Writes what the socket takes now of `frames`, from frame `index` at byte `offset`, without waiting;
/// returns where the unwritten rest starts (`frames.len()` when everything went out).
fn write_ready(
    stream: &WsSocket,
    frames: &[WirePacket],
    mut index: usize,
    mut offset: usize,
) -> io::Result<(usize, usize)> {
    while index < frames.len() {
        match try_write_some(stream, &frames[index..], offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut written) => {
                while written > 0 && index < frames.len() {
                    let remaining = frames[index].ws_frame().len() - offset;
                    if written >= remaining {
                        written -= remaining;
                        index += 1;
                        offset = 0;
                    } else {
                        offset += written;
                        written = 0;
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    Ok((index, offset))
}

/// One non-blocking vectored write of up to 64 frames, the first from `offset`. Synchronous so that the
/// 1 KiB of slices never becomes part of a connection's future (which every idle connection carries).
fn try_write_some(stream: &WsSocket, frames: &[WirePacket], offset: usize) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); 64];
    let mut count = 0;
    for (slot, frame) in slices.iter_mut().zip(frames) {
        let bytes = frame.ws_frame();
        *slot = IoSlice::new(if count == 0 { &bytes[offset..] } else { bytes });
        count += 1;
    }
    stream.try_write_vectored(&slices[..count])
}

#[cfg(all(test, unix))]
mod tests {
    use crate::engineio::server::test_support::echo_engine;
    use crate::engineio::{CloseReason, EngineConfig, MemoryClient, Received};

    #[tokio::test]
    async fn a_websocket_session_opens_echoes_and_closes() {
        let (engine, echo) = echo_engine(EngineConfig::default());
        let mut client = MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        assert_eq!(client.sid().len(), 20);
        assert_eq!(engine.open_sessions_by_transport(), (1, 0));
        client.send("4hello").await.expect("send");
        assert_eq!(client.recv_text().await.expect("echo"), "4hello");
        client.send("1").await.expect("close packet");
        for _ in 0..100 {
            if !echo.closed.lock().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(*echo.closed.lock(), vec![CloseReason::ClientClose]);
    }

    #[tokio::test]
    async fn an_oversized_message_closes_with_1009() {
        let (engine, echo) = echo_engine(EngineConfig {
            max_payload: 32,
            ..EngineConfig::default()
        });
        let mut client = MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        client
            .send(&format!("4{}", "x".repeat(100)))
            .await
            .expect("send");
        assert_eq!(client.recv().await.expect("close"), Received::Close(1009));
        for _ in 0..100 {
            if !echo.closed.lock().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(echo.closed.lock().len(), 1);
    }

    #[tokio::test]
    async fn many_packets_arrive_in_order() {
        let (engine, _) = echo_engine(EngineConfig::default());
        let mut client = MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        for i in 0..200 {
            client.send(&format!("4m{i}")).await.expect("send");
        }
        for i in 0..200 {
            assert_eq!(client.recv_text().await.expect("echo"), format!("4m{i}"));
        }
    }
}
