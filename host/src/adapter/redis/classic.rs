//! The classic Redis adapter of one namespace: `@socket.io/redis-adapter` 8.x `createAdapter`, byte for byte.
//!
//! Local work goes to the [`LocalAdapter`] inside; Redis carries it to the other nodes. Received broadcasts
//! for a room this node does not hold are dropped from the channel name alone, before decoding. Fleet
//! requests count their responders with `PUBSUB NUMSUB`, wait at most `requestsTimeout`, and fail at once
//! while Redis is unreachable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use super::PeerPolicy;
use super::bus::RedisBus;
use super::messages::{
    Request, RequestMessage, Response, ResponseMessage, Target, await_broadcast_acks,
    await_responses, await_server_side_acks, strip_credentials,
};
use super::wire::{self, Channels};
use crate::adapter::local::collect_acks;
use crate::adapter::{
    Adapter, AdapterError, BoxFuture, BroadcastAcks, BroadcastOptions, BroadcastPacket,
    LocalAdapter, Room, SocketInfo, SocketTable,
};
use crate::codec::Packet;
use crate::sid::Sid;

type Responses = mpsc::UnboundedSender<Response>;

/// A namespace's adapter in a fleet sharing Redis.
pub struct RedisAdapter {
    nsp: String,
    uid: String,
    channels: Channels,
    local: LocalAdapter,
    bus: Arc<RedisBus>,
    /// What peers may do here (this tenant's settings).
    policy: PeerPolicy,
    /// Our requests waiting for responses, by request id.
    pending: Mutex<HashMap<String, Responses>>,
}

/// A 6-character id from `[A-Za-z0-9_-]`, like Node's `uid2(6)`.
fn uid2() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let raw: [u8; 6] = rand::random();
    raw.iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 64)]))
        .collect()
}

impl RedisAdapter {
    pub(crate) fn new(
        nsp: &str,
        sockets: Weak<dyn SocketTable>,
        bus: Arc<RedisBus>,
        policy: PeerPolicy,
    ) -> Arc<Self> {
        let uid = uid2();
        let adapter = Arc::new(RedisAdapter {
            nsp: nsp.to_owned(),
            channels: Channels::new(&bus.config.key, nsp, &uid),
            uid,
            local: LocalAdapter::new(sockets),
            bus: Arc::clone(&bus),
            policy,
            pending: Mutex::new(HashMap::new()),
        });
        bus.register(&adapter);
        adapter
    }

    /// The pattern and channels this namespace listens on.
    pub(crate) fn subscriptions(&self) -> (String, Vec<String>) {
        (
            self.channels.pattern.clone(),
            vec![
                self.channels.request.clone(),
                self.channels.response.clone(),
                self.channels.own_response.clone(),
            ],
        )
    }

    /// Handles a message if its channel is ours; returns whether it was.
    pub(crate) fn on_message(&self, channel: &str, payload: &[u8]) -> bool {
        if channel == self.channels.request {
            self.on_request(payload);
        } else if self.channels.is_response(channel) {
            self.on_response(payload);
        } else if let Some(room) = self.channels.room_of(channel) {
            self.on_broadcast(room, payload);
        } else {
            return false;
        }
        true
    }

    fn on_broadcast(&self, room: &str, payload: &[u8]) {
        // Most room traffic is for rooms other nodes hold: skip it without decoding.
        if !room.is_empty() && self.local.room_size(&Room::from(room)) == 0 {
            return;
        }
        let incoming = match wire::decode_broadcast(payload, "/") {
            Ok(incoming) => incoming,
            Err(err) => {
                self.undecodable(&err, "broadcast");
                return;
            }
        };
        if incoming.uid == self.uid || incoming.packet.nsp != self.nsp {
            return;
        }
        self.local
            .broadcast(&BroadcastPacket::new(incoming.packet), &incoming.opts);
    }

    /// A message that did not decode: counted as refused when it was over the bounds, else ignored.
    fn undecodable(&self, err: &wire::WireError, what: &str) {
        if matches!(err, wire::WireError::Bounds(_)) {
            self.bus
                .refuse(&self.channels.broadcast, &format!("{what} {err}"));
        } else {
            tracing::debug!(%err, nsp = %self.nsp, what, "ignoring an undecodable Redis message");
        }
    }

    fn on_response(&self, payload: &[u8]) {
        let message = match ResponseMessage::decode(payload) {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(err) => return self.undecodable(&err, "response"),
        };
        if let Some(tx) = self.pending.lock().get(&message.request_id) {
            let _ = tx.send(message.response);
        }
    }

    /// Whether we sent this request (our own requests come back on the channel we listen to).
    fn is_mine(&self, message: &RequestMessage) -> bool {
        message.uid.as_deref() == Some(self.uid.as_str())
            || message
                .request_id
                .as_ref()
                .is_some_and(|id| self.pending.lock().contains_key(id))
    }

    fn respond(&self, request: &RequestMessage, response: Response) {
        let Some(request_id) = request.request_id.clone() else {
            return;
        };
        let channel = self.channels.response_for(
            request.uid.as_deref(),
            self.bus.config.publish_on_specific_response_channel,
        );
        self.bus.publish_nowait(
            channel,
            ResponseMessage {
                request_id,
                response,
            }
            .encode(),
        );
    }

    fn on_request(&self, payload: &[u8]) {
        let message = match RequestMessage::decode(payload, &self.nsp) {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(err) => return self.undecodable(&err, "request"),
        };
        // We applied our own requests when sending them.
        if self.is_mine(&message) {
            return;
        }
        match &message.request {
            Request::Sockets { rooms } => {
                let opts = BroadcastOptions {
                    rooms: rooms.clone(),
                    ..Default::default()
                };
                let ids = self.local.local_targets(&opts);
                self.respond(&message, Response::SocketIds(ids));
            }
            Request::AllRooms => {
                let rooms = self.local.local_rooms().into_iter().collect();
                self.respond(&message, Response::Rooms(rooms));
            }
            Request::RemoteJoin { target, rooms } => match target {
                Target::Matching(opts) => self.join_capped(opts, rooms),
                Target::Socket(sid) => {
                    if self.holds(*sid) {
                        let opts = BroadcastOptions {
                            rooms: vec![Room::of_socket(*sid)],
                            ..Default::default()
                        };
                        self.join_capped(&opts, rooms);
                        self.respond(&message, Response::Done);
                    }
                }
            },
            Request::RemoteLeave { target, rooms } => match target {
                Target::Matching(opts) => self.local.local_update_rooms(opts, rooms, false),
                Target::Socket(sid) => {
                    if self.holds(*sid) {
                        for room in rooms {
                            self.local.del(*sid, room);
                        }
                        self.respond(&message, Response::Done);
                    }
                }
            },
            Request::RemoteDisconnect { target, close } => match target {
                Target::Matching(opts) => self.local.local_disconnect(opts, *close),
                Target::Socket(sid) => {
                    if self.holds(*sid) {
                        if let Some(table) = self.local.socket_table() {
                            table.disconnect(*sid, *close);
                        }
                        self.respond(&message, Response::Done);
                    }
                }
            },
            Request::RemoteFetch { opts } => {
                let share = self.policy.share_credentials;
                let mut sockets = self.local.local_socket_infos(opts);
                if !share {
                    for info in &mut sockets {
                        strip_credentials(&mut info.handshake);
                    }
                }
                self.respond(&message, Response::Sockets(sockets));
            }
            Request::ServerSideEmit { data } => self.on_server_side_emit(&message, data.clone()),
            Request::Broadcast {
                packet,
                opts,
                timeout_ms,
            } => self.on_broadcast_with_ack(&message, packet.clone(), opts, *timeout_ms),
        }
    }

    /// Applies a peer's join under the tenant's rooms-per-socket limit, counting what it refuses.
    fn join_capped(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        // A socket's own room is not one it joined.
        let refused =
            self.local
                .local_join_capped(opts, rooms, self.policy.max_rooms_per_socket + 1);
        if refused > 0 {
            self.bus
                .stats
                .remote_joins_refused
                .fetch_add(refused as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the socket a legacy (adapter ≤ 7) request names is here.
    fn holds(&self, sid: Sid) -> bool {
        self.local.room_size(&Room::of_socket(sid)) > 0
    }

    fn on_server_side_emit(&self, message: &RequestMessage, data: Vec<Value>) {
        let Some(table) = self.local.socket_table() else {
            return;
        };
        let ack = message.request_id.clone().map(|request_id| {
            // Node answers server-side acks on the common channel, whatever its options say.
            let (bus, channel) = (Arc::clone(&self.bus), self.channels.response.clone());
            Box::new(move |answer: Value| {
                let response = ResponseMessage {
                    request_id,
                    response: Response::ServerSideEmitAck(answer),
                };
                bus.publish_nowait(channel, response.encode());
            }) as crate::adapter::ServerAck
        });
        table.server_side_emit(data, ack);
    }

    fn on_broadcast_with_ack(
        &self,
        message: &RequestMessage,
        packet: Packet,
        opts: &BroadcastOptions,
        timeout_ms: Option<u64>,
    ) {
        let Some(request_id) = message.request_id.clone() else {
            return;
        };
        if packet.nsp != self.nsp {
            return;
        }
        let timeout = timeout_ms
            .map_or(self.bus.config.requests_timeout, Duration::from_millis)
            .min(self.bus.config.max_ack_timeout);
        let (tx, rx) = mpsc::unbounded_channel();
        let count =
            self.local
                .local_broadcast_with_ack(&BroadcastPacket::new(packet), opts, timeout, &tx);
        drop(tx);
        self.respond(message, Response::BroadcastClientCount(count));
        let channel = self.channels.response_for(
            message.uid.as_deref(),
            self.bus.config.publish_on_specific_response_channel,
        );
        let bus = Arc::clone(&self.bus);
        tokio::spawn(async move {
            let acks = collect_acks(rx, count, timeout).await;
            for ack in acks.responses {
                let response = ResponseMessage {
                    request_id: request_id.clone(),
                    response: Response::BroadcastAck(ack),
                };
                bus.publish_nowait(channel.clone(), response.encode());
            }
        });
    }

    /// Registers a request id whose responses arrive on the returned receiver until the guard is dropped.
    fn open_request(&self) -> (String, mpsc::UnboundedReceiver<Response>, PendingGuard<'_>) {
        let id = uid2();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let guard = PendingGuard {
            adapter: self,
            id: id.clone(),
        };
        (id, rx, guard)
    }

    /// A request from this node.
    fn request(&self, request_id: Option<String>, request: Request) -> RequestMessage {
        RequestMessage {
            uid: Some(self.uid.clone()),
            request_id,
            request,
        }
    }

    /// Asks every node and hands each response to `merge`, as fetchSockets and allRooms do.
    async fn gather(
        &self,
        request: Request,
        mut merge: impl FnMut(Response),
    ) -> Result<(), AdapterError> {
        let expected = self.bus.numsub(&self.channels.request).await?;
        if expected <= 1 {
            return Ok(());
        }
        let (request_id, mut rx, _guard) = self.open_request();
        self.bus
            .publish_now(
                &self.channels.request,
                self.request(Some(request_id), request).encode(),
            )
            .await?;
        // Like Node: ourselves count as the first response.
        await_responses(
            &mut rx,
            expected - 1,
            self.bus.config.requests_timeout,
            |r| {
                merge(r);
                true
            },
        )
        .await
    }

    async fn publish_request(&self, request: Request) -> Result<(), AdapterError> {
        self.bus
            .publish_now(&self.channels.request, self.request(None, request).encode())
            .await
    }
}

/// Forgets a request id when its requester is done (or gave up).
struct PendingGuard<'a> {
    adapter: &'a RedisAdapter,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.adapter.pending.lock().remove(&self.id);
    }
}

impl Drop for RedisAdapter {
    fn drop(&mut self) {
        let (pattern, channels) = self.subscriptions();
        if tokio::runtime::Handle::try_current().is_ok() {
            self.bus.unregister(pattern, channels);
        }
    }
}

impl Adapter for RedisAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        self.local.add_all(sid, rooms);
    }

    fn del(&self, sid: Sid, room: &Room) {
        self.local.del(sid, room);
    }

    fn del_all(&self, sid: Sid) {
        self.local.del_all(sid);
    }

    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.local.socket_rooms(sid)
    }

    fn socket_in_all(&self, sid: Sid, rooms: &[Room]) -> bool {
        self.local.socket_in_all(sid, rooms)
    }

    fn room_size(&self, room: &Room) -> usize {
        self.local.room_size(room)
    }

    fn broadcast(&self, packet: &BroadcastPacket, opts: &BroadcastOptions) {
        self.local.broadcast(packet, opts);
        if !opts.local {
            let payload = wire::encode_broadcast(&self.uid, packet.packet(), opts);
            self.bus
                .publish_nowait(self.channels.for_broadcast(opts), payload);
        }
    }

    fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> BoxFuture<'_, Result<Vec<SocketInfo>, AdapterError>> {
        let opts = opts.clone();
        Box::pin(async move {
            let mut sockets = self.local.local_socket_infos(&opts);
            if opts.local {
                return Ok(sockets);
            }
            self.gather(Request::RemoteFetch { opts }, |response| {
                if let Response::Sockets(remote) = response {
                    sockets.extend(remote);
                }
            })
            .await?;
            Ok(sockets)
        })
    }

    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>> {
        Box::pin(async move {
            let mut rooms = self.local.local_rooms();
            self.gather(Request::AllRooms, |response| {
                if let Response::Rooms(remote) = response {
                    rooms.extend(remote);
                }
            })
            .await?;
            Ok(rooms)
        })
    }

    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_update_rooms(opts, rooms, true);
        let request = Request::RemoteJoin {
            target: Target::Matching(opts.clone()),
            rooms: rooms.to_vec(),
        };
        Box::pin(async move { self.publish_request(request).await })
    }

    fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_update_rooms(opts, rooms, false);
        let request = Request::RemoteLeave {
            target: Target::Matching(opts.clone()),
            rooms: rooms.to_vec(),
        };
        Box::pin(async move { self.publish_request(request).await })
    }

    fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        let request = Request::RemoteDisconnect {
            target: Target::Matching(opts.clone()),
            close,
        };
        self.local.local_disconnect(opts, close);
        Box::pin(async move { self.publish_request(request).await })
    }

    fn broadcast_with_ack(
        &self,
        packet: &BroadcastPacket,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BroadcastAcks, AdapterError>> {
        let packet = packet.clone();
        let opts = opts.clone();
        Box::pin(async move {
            if opts.local || !self.bus.is_connected() {
                return self.local.broadcast_with_ack(&packet, &opts, timeout).await;
            }
            let (local_tx, local_rx) = mpsc::unbounded_channel();
            let (request_id, mut rx, _guard) = self.open_request();
            let request = Request::Broadcast {
                packet: packet.packet().clone(),
                opts: opts.clone(),
                timeout_ms: Some(timeout.as_millis() as u64),
            };
            // Published before the local delivery, as Node does.
            self.bus
                .publish_now(
                    &self.channels.request,
                    self.request(Some(request_id), request).encode(),
                )
                .await?;
            let local_count = self
                .local
                .local_broadcast_with_ack(&packet, &opts, timeout, &local_tx);
            drop(local_tx);
            let servers = self
                .bus
                .numsub(&self.channels.request)
                .await?
                .saturating_sub(1);
            Ok(await_broadcast_acks(local_rx, local_count, &mut rx, servers, timeout).await)
        })
    }

    fn server_side_emit(&self, data: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move { self.publish_request(Request::ServerSideEmit { data }).await })
    }

    fn server_side_emit_with_ack(
        &self,
        data: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>> {
        Box::pin(async move {
            let expected = self
                .bus
                .numsub(&self.channels.request)
                .await?
                .saturating_sub(1);
            if expected == 0 {
                return Ok(Vec::new());
            }
            let (request_id, mut rx, _guard) = self.open_request();
            self.bus
                .publish_now(
                    &self.channels.request,
                    self.request(Some(request_id), Request::ServerSideEmit { data })
                        .encode(),
                )
                .await?;
            await_server_side_acks(&mut rx, expected, timeout).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_have_node_shape() {
        let id = uid2();
        assert_eq!(id.len(), 6);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
