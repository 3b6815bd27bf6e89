//! The classic Redis adapter of one namespace: `@socket.io/redis-adapter` 8.x `createAdapter`, byte for byte.
//!
//! Local work goes to the [`LocalAdapter`] inside; Redis carries it to the other nodes. Received broadcasts
//! for a room this node does not hold are dropped from the channel name alone, before decoding. Fleet
//! requests count their responders with `PUBSUB NUMSUB`, wait at most `requestsTimeout`, and fail at once
//! while Redis is unreachable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::bus::RedisBus;
use super::wire::{self, Channels, RequestType};
use crate::adapter::local::collect_acks;
use crate::adapter::{
    Adapter, AdapterError, BoxFuture, BroadcastAcks, BroadcastOptions, BroadcastPacket,
    LocalAdapter, Room, SocketInfo, SocketTable,
};
use crate::codec::Payload;
use crate::sid::Sid;

type Responses = mpsc::UnboundedSender<(Value, Vec<Bytes>)>;

/// A namespace's adapter in a fleet sharing Redis.
pub struct RedisAdapter {
    nsp: String,
    uid: String,
    channels: Channels,
    local: LocalAdapter,
    bus: Arc<RedisBus>,
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
    pub(crate) fn new(nsp: &str, sockets: Weak<dyn SocketTable>, bus: Arc<RedisBus>) -> Arc<Self> {
        let uid = uid2();
        let adapter = Arc::new(RedisAdapter {
            nsp: nsp.to_owned(),
            channels: Channels::new(&bus.config.key, nsp, &uid),
            uid,
            local: LocalAdapter::new(sockets),
            bus: Arc::clone(&bus),
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
        let (value, attachments) = match wire::decode_any(payload) {
            Ok(decoded) => decoded,
            Err(err) => return self.undecodable(&err, "response"),
        };
        let Some(id) = value.get("requestId").and_then(Value::as_str) else {
            return;
        };
        if let Some(tx) = self.pending.lock().get(id) {
            let _ = tx.send((value, attachments));
        }
    }

    fn is_mine(&self, request: &Value) -> bool {
        request
            .get("requestId")
            .and_then(Value::as_str)
            .is_some_and(|id| self.pending.lock().contains_key(id))
    }

    fn sent_by_us(&self, request: &Value) -> bool {
        request.get("uid").and_then(Value::as_str) == Some(self.uid.as_str())
    }

    fn respond_json(&self, request: &Value, body: Value) {
        let channel = self.response_channel(request);
        self.bus.publish_nowait(channel, wire::encode_json(&body));
    }

    fn response_channel(&self, request: &Value) -> String {
        self.channels.response_for(
            request.get("uid").and_then(Value::as_str),
            self.bus.config.publish_on_specific_response_channel,
        )
    }

    fn on_request(&self, payload: &[u8]) {
        let (request, attachments) = match wire::decode_any(payload) {
            Ok(decoded) => decoded,
            Err(err) => return self.undecodable(&err, "request"),
        };
        let Some(kind) = RequestType::from_value(&request) else {
            return;
        };
        let request_id = request.get("requestId").cloned().unwrap_or(Value::Null);
        match kind {
            RequestType::Sockets if !self.is_mine(&request) => {
                let opts = BroadcastOptions {
                    rooms: wire::request_rooms(&request),
                    ..Default::default()
                };
                let ids: Vec<Value> = self
                    .local
                    .local_targets(&opts)
                    .iter()
                    .map(|sid| Value::String(sid.to_string()))
                    .collect();
                self.respond_json(&request, json!({ "requestId": request_id, "sockets": ids }));
            }
            RequestType::AllRooms if !self.is_mine(&request) => {
                let rooms: Vec<Value> = self
                    .local
                    .local_rooms()
                    .into_iter()
                    .map(|r| Value::String(r.to_string()))
                    .collect();
                self.respond_json(&request, json!({ "requestId": request_id, "rooms": rooms }));
            }
            RequestType::RemoteJoin | RequestType::RemoteLeave => {
                let join = kind == RequestType::RemoteJoin;
                if let Some(opts) = request.get("opts") {
                    // We applied our own requests when sending them.
                    if !self.sent_by_us(&request) {
                        let (opts, rooms) =
                            (wire::parse_opts(Some(opts)), wire::request_rooms(&request));
                        if join {
                            self.join_capped(&opts, &rooms);
                        } else {
                            self.local.local_update_rooms(&opts, &rooms, false);
                        }
                    }
                } else if let Some(sid) = self.legacy_target(&request) {
                    let rooms = wire::request_rooms(&request);
                    if join {
                        let opts = BroadcastOptions {
                            rooms: vec![Room::of_socket(sid)],
                            ..Default::default()
                        };
                        self.join_capped(&opts, &rooms);
                    } else {
                        for room in &rooms {
                            self.local.del(sid, room);
                        }
                    }
                    self.respond_json(&request, json!({ "requestId": request_id }));
                }
            }
            RequestType::RemoteDisconnect => {
                let close = request
                    .get("close")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(opts) = request.get("opts") {
                    if !self.sent_by_us(&request) {
                        self.local
                            .local_disconnect(&wire::parse_opts(Some(opts)), close);
                    }
                } else if let Some(sid) = self.legacy_target(&request) {
                    if let Some(table) = self.local.socket_table() {
                        table.disconnect(sid, close);
                    }
                    self.respond_json(&request, json!({ "requestId": request_id }));
                }
            }
            RequestType::RemoteFetch if !self.is_mine(&request) => {
                let opts = wire::parse_opts(request.get("opts"));
                let share = self.bus.config.share_credentials;
                let sockets: Vec<Value> = self
                    .local
                    .local_socket_infos(&opts)
                    .iter_mut()
                    .map(|info| {
                        if !share {
                            strip_credentials(&mut info.handshake);
                        }
                        socket_json(info)
                    })
                    .collect();
                self.respond_json(
                    &request,
                    json!({ "requestId": request_id, "sockets": sockets }),
                );
            }
            RequestType::ServerSideEmit if !self.sent_by_us(&request) => {
                self.on_server_side_emit(request)
            }
            RequestType::Broadcast if !self.is_mine(&request) => {
                self.on_broadcast_with_ack(&request, attachments)
            }
            _ => {}
        }
    }

    /// Applies a peer's join under the tenant's rooms-per-socket limit, counting what it refuses.
    fn join_capped(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        // A socket's own room is not one it joined.
        let refused =
            self.local
                .local_join_capped(opts, rooms, self.bus.config.max_rooms_per_socket + 1);
        if refused > 0 {
            self.bus
                .stats
                .remote_joins_refused
                .fetch_add(refused as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The local socket a legacy (adapter ≤ 7) request names, if it is here.
    fn legacy_target(&self, request: &Value) -> Option<Sid> {
        let sid = Sid::parse(request.get("sid")?.as_str()?)?;
        (self.local.room_size(&Room::of_socket(sid)) > 0).then_some(sid)
    }

    fn on_server_side_emit(&self, request: Value) {
        let Some(Value::Array(data)) = request.get("data").cloned() else {
            return;
        };
        let Some(table) = self.local.socket_table() else {
            return;
        };
        let ack = request.get("requestId").cloned().map(|request_id| {
            // Node answers server-side acks on the common channel, whatever its options say.
            let (bus, channel) = (Arc::clone(&self.bus), self.channels.response.clone());
            Box::new(move |answer: Value| {
                let body = json!({ "type": RequestType::ServerSideEmit as u8, "requestId": request_id, "data": answer });
                bus.publish_nowait(channel, wire::encode_json(&body));
            }) as crate::adapter::ServerAck
        });
        table.server_side_emit(data, ack);
    }

    fn on_broadcast_with_ack(&self, request: &Value, attachments: Vec<Bytes>) {
        let Some(request_id) = request.get("requestId").cloned() else {
            return;
        };
        let Some(packet) = request.get("packet") else {
            return;
        };
        let Ok(packet) = wire::parse_packet(packet, attachments, &self.nsp) else {
            return;
        };
        if packet.nsp != self.nsp {
            return;
        }
        let opts = wire::parse_opts(request.get("opts"));
        let timeout = request
            .get("opts")
            .and_then(|o| o.get("flags"))
            .and_then(|f| f.get("timeout"))
            .and_then(Value::as_u64)
            .map_or(self.bus.config.requests_timeout, Duration::from_millis)
            .min(self.bus.config.max_ack_timeout);
        let (tx, rx) = mpsc::unbounded_channel();
        let count =
            self.local
                .local_broadcast_with_ack(&BroadcastPacket::new(packet), &opts, timeout, &tx);
        drop(tx);
        let channel = self.response_channel(request);
        let count_body = json!({
            "type": RequestType::BroadcastClientCount as u8,
            "requestId": request_id,
            "clientCount": count,
        });
        self.bus
            .publish_nowait(channel.clone(), wire::encode_json(&count_body));
        let bus = Arc::clone(&self.bus);
        tokio::spawn(async move {
            let acks = collect_acks(rx, count, timeout).await;
            for ack in acks.responses {
                // Only the first ack argument travels, as msgpack so binary survives.
                let first = ack.args.into_iter().next().unwrap_or(Value::Null);
                let body = json!({ "type": RequestType::BroadcastAck as u8, "requestId": request_id, "packet": first });
                bus.publish_nowait(
                    channel.clone(),
                    wire::encode_msgpack(&body, &ack.attachments),
                );
            }
        });
    }

    /// Registers a request id whose responses arrive on the returned receiver until the guard is dropped.
    fn open_request(
        &self,
    ) -> (
        String,
        mpsc::UnboundedReceiver<(Value, Vec<Bytes>)>,
        PendingGuard<'_>,
    ) {
        let id = uid2();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let guard = PendingGuard {
            adapter: self,
            id: id.clone(),
        };
        (id, rx, guard)
    }

    /// Asks every node and merges `field` (an array) of their responses, as fetchSockets and allRooms do.
    async fn gather(
        &self,
        kind: RequestType,
        extra: Map<String, Value>,
        field: &str,
    ) -> Result<Vec<Value>, AdapterError> {
        let expected = self.bus.numsub(&self.channels.request).await?;
        if expected <= 1 {
            return Ok(Vec::new());
        }
        let (request_id, mut rx, _guard) = self.open_request();
        let mut request = Map::new();
        request.insert("uid".into(), Value::String(self.uid.clone()));
        request.insert("requestId".into(), Value::String(request_id));
        request.insert("type".into(), Value::from(kind as u8));
        request.extend(extra);
        self.bus
            .publish_now(
                &self.channels.request,
                wire::encode_json(&Value::Object(request)),
            )
            .await?;
        let timeout = self.bus.config.requests_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Like Node: ourselves count as the first response.
        let mut answered = 1;
        let mut merged = Vec::new();
        while answered < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((response, _))) => {
                    answered += 1;
                    if let Some(Value::Array(items)) = response.get(field) {
                        merged.extend(items.iter().cloned());
                    }
                }
                Ok(None) | Err(_) => {
                    return Err(AdapterError::Timeout {
                        waited_ms: timeout.as_millis() as u64,
                        received: answered - 1,
                        expected: expected - 1,
                    });
                }
            }
        }
        Ok(merged)
    }

    async fn publish_request(&self, body: Value) -> Result<(), AdapterError> {
        self.bus
            .publish_now(&self.channels.request, wire::encode_json(&body))
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

/// Headers that carry a client's credentials; left out of fetch replies unless the tenant opts in.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "cookie",
    "authorization",
    "proxy-authorization",
    "x-api-key",
];

/// Removes what would let a peer act as the client: credential headers and the CONNECT `auth`.
fn strip_credentials(handshake: &mut Value) {
    if let Some(headers) = handshake.get_mut("headers").and_then(Value::as_object_mut) {
        headers.retain(|name, _| {
            !CREDENTIAL_HEADERS
                .iter()
                .any(|c| name.eq_ignore_ascii_case(c))
        });
    }
    if let Some(hs) = handshake.as_object_mut()
        && hs.contains_key("auth")
    {
        hs.insert("auth".into(), Value::Object(Map::new()));
    }
}

/// A socket as `fetchSockets` responses describe it (Node's `RemoteSocket` fields).
fn socket_json(info: &SocketInfo) -> Value {
    json!({
        "id": info.id.to_string(),
        "handshake": info.handshake,
        "rooms": info.rooms.iter().map(|r| Value::String(r.to_string())).collect::<Vec<_>>(),
        "data": info.data,
    })
}

fn socket_from_json(v: &Value) -> Option<SocketInfo> {
    Some(SocketInfo {
        id: Sid::parse(v.get("id")?.as_str()?)?,
        rooms: wire::parse_rooms(v.get("rooms")),
        data: v.get("data").cloned().unwrap_or(Value::Null),
        handshake: v.get("handshake").cloned().unwrap_or(Value::Null),
    })
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
            let mut extra = Map::new();
            extra.insert("opts".into(), wire::opts_json(&opts));
            let remote = self
                .gather(RequestType::RemoteFetch, extra, "sockets")
                .await?;
            sockets.extend(remote.iter().filter_map(socket_from_json));
            Ok(sockets)
        })
    }

    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>> {
        Box::pin(async move {
            let mut rooms = self.local.local_rooms();
            let remote = self
                .gather(RequestType::AllRooms, Map::new(), "rooms")
                .await?;
            rooms.extend(wire::parse_rooms(Some(&Value::Array(remote))));
            Ok(rooms)
        })
    }

    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_update_rooms(opts, rooms, true);
        let body = self.membership_request(RequestType::RemoteJoin, opts, rooms);
        Box::pin(async move { self.publish_request(body).await })
    }

    fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_update_rooms(opts, rooms, false);
        let body = self.membership_request(RequestType::RemoteLeave, opts, rooms);
        Box::pin(async move { self.publish_request(body).await })
    }

    fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        let body = json!({
            "uid": self.uid,
            "type": RequestType::RemoteDisconnect as u8,
            "opts": wire::opts_json(opts),
            "close": close,
        });
        self.local.local_disconnect(opts, close);
        Box::pin(async move { self.publish_request(body).await })
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
            let (local_tx, mut local_rx) = mpsc::unbounded_channel();
            let (request_id, mut rx, _guard) = self.open_request();
            let body = json!({
                "uid": self.uid,
                "requestId": request_id,
                "type": RequestType::Broadcast as u8,
                "packet": wire::packet_json(packet.packet()),
                "opts": wire::broadcast_opts_json(&opts, Some(timeout.as_millis() as u64)),
            });
            // Published before the local delivery, as Node does.
            self.bus
                .publish_now(
                    &self.channels.request,
                    wire::encode_msgpack(&body, &packet.packet().attachments),
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
            let deadline = tokio::time::Instant::now() + timeout;
            let mut acks = BroadcastAcks::default();
            let (mut counts, mut expected) = (0usize, local_count);
            let mut local_open = true;
            while counts < servers || acks.responses.len() < expected {
                tokio::select! {
                    local = local_rx.recv(), if local_open => match local {
                        Some(payload) => acks.responses.push(payload),
                        None => local_open = false,
                    },
                    remote = rx.recv() => {
                        let Some((response, attachments)) = remote else { break };
                        match RequestType::from_value(&response) {
                            Some(RequestType::BroadcastClientCount) => {
                                counts += 1;
                                expected += response.get("clientCount").and_then(Value::as_u64).unwrap_or(0) as usize;
                            }
                            Some(RequestType::BroadcastAck) => {
                                let first = response.get("packet").cloned().unwrap_or(Value::Null);
                                acks.responses.push(Payload { args: vec![first], attachments });
                            }
                            _ => {}
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        acks.timed_out = true;
                        break;
                    }
                }
            }
            acks.expected = expected;
            Ok(acks)
        })
    }

    fn server_side_emit(&self, data: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        let body =
            json!({ "uid": self.uid, "type": RequestType::ServerSideEmit as u8, "data": data });
        Box::pin(async move { self.publish_request(body).await })
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
            let body = json!({
                "uid": self.uid,
                "requestId": request_id,
                "type": RequestType::ServerSideEmit as u8,
                "data": data,
            });
            self.publish_request(body).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            let mut answers = Vec::with_capacity(expected);
            while answers.len() < expected {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((response, _))) => {
                        answers.push(response.get("data").cloned().unwrap_or(Value::Null))
                    }
                    Ok(None) | Err(_) => {
                        return Err(AdapterError::Timeout {
                            waited_ms: timeout.as_millis() as u64,
                            received: answers.len(),
                            expected,
                        });
                    }
                }
            }
            Ok(answers)
        })
    }
}

impl RedisAdapter {
    fn membership_request(
        &self,
        kind: RequestType,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Value {
        json!({
            "uid": self.uid,
            "type": kind as u8,
            "opts": wire::opts_json(opts),
            "rooms": rooms.iter().map(|r| Value::String(r.to_string())).collect::<Vec<_>>(),
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

    #[test]
    fn socket_details_round_trip() {
        let info = SocketInfo {
            id: Sid::random(),
            rooms: vec!["a".into()],
            data: json!({"user": 1}),
            handshake: json!({"address": "127.0.0.1"}),
        };
        assert_eq!(socket_from_json(&socket_json(&info)), Some(info));
    }
}
