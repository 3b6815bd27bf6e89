//! A namespace's adapter on Redis Streams: appends what every node must see, answers peers' requests,
//! and follows its sockets' rooms for the sessions it keeps.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::interfaces::{ClientLike, PubsubInterface};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use super::bus::{Outgoing, StreamsBus, once, uid16, unavailable};
use super::sessions::Tracked;
use super::wire::{StreamId, entry_fields};
use crate::adapter::local::collect_acks;
use crate::adapter::redis::PeerPolicy;
use crate::adapter::redis::messages::{
    Request, Response, Target, await_broadcast_acks, await_responses, await_server_side_acks,
    strip_credentials,
};
use crate::adapter::redis::sharded_wire::{Envelope, ShardedMessage};
use crate::adapter::{
    Adapter, AdapterError, BoxFuture, BroadcastAcks, BroadcastOptions, BroadcastPacket,
    LocalAdapter, Room, SessionStore, SocketInfo, SocketTable,
};
use crate::codec::{Packet, PacketKind};
use crate::sid::Sid;

/// A namespace's adapter on Redis Streams.
pub struct StreamsAdapter {
    pub(super) me: Weak<StreamsAdapter>,
    pub(super) nsp: String,
    pub(super) uid: String,
    /// `K#N#`: requests to every node.
    pub(super) main: String,
    /// `K#N#<uid>#`: answers to this node.
    pub(super) own: String,
    pub(super) local: LocalAdapter,
    pub(super) bus: Arc<StreamsBus>,
    pub(super) policy: PeerPolicy,
    pub(super) pending: Mutex<HashMap<String, mpsc::UnboundedSender<Response>>>,
    pub(super) tracked: Mutex<HashMap<Sid, Tracked>>,
    /// Where each local socket's life began in the stream (read when it first joined a room).
    pub(super) joined_at: Mutex<HashMap<Sid, StreamId>>,
}

impl StreamsAdapter {
    pub(super) fn new(
        nsp: &str,
        sockets: Weak<dyn SocketTable>,
        bus: Arc<StreamsBus>,
        policy: PeerPolicy,
    ) -> Arc<Self> {
        let uid = uid16();
        let main = format!("{}#{nsp}#", bus.config.key);
        let adapter = Arc::new_cyclic(|me| StreamsAdapter {
            me: me.clone(),
            nsp: nsp.to_owned(),
            own: format!("{main}{uid}#"),
            main,
            uid,
            local: LocalAdapter::new(sockets),
            bus: Arc::clone(&bus),
            policy,
            pending: Mutex::new(HashMap::new()),
            tracked: Mutex::new(HashMap::new()),
            joined_at: Mutex::new(HashMap::new()),
        });
        bus.register(&adapter);
        adapter
    }

    pub(super) fn recovers(&self) -> bool {
        self.bus.config.recovery_window.is_some()
    }

    pub(super) fn envelope(&self, message: ShardedMessage) -> Envelope {
        Envelope {
            uid: self.uid.clone(),
            nsp: self.nsp.clone(),
            message,
        }
    }

    /// Appends a message to the stream (what every node must see, in order).
    pub(super) fn append(
        &self,
        request: Request,
        fallback: Option<(BroadcastPacket, BroadcastOptions)>,
    ) {
        let fields = entry_fields(&self.envelope(ShardedMessage::Request {
            request_id: None,
            request,
        }));
        let fallback = fallback.map(|(p, o)| Box::new((self.me.clone(), p, o)));
        self.bus.send(Outgoing::Append { fields, fallback });
    }

    pub(super) fn publish(&self, channel: String, message: ShardedMessage) {
        let payload = self.envelope(message).encode_msgpack();
        self.bus.send(Outgoing::Publish { channel, payload });
    }

    pub(super) async fn publish_now(&self, message: ShardedMessage) -> Result<(), AdapterError> {
        let payload = self.envelope(message).encode_msgpack();
        self.bus
            .publisher
            .with_options(&once())
            .publish::<(), _, _>(self.main.clone(), payload)
            .await
            .map_err(unavailable)?;
        self.bus.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Delivers a broadcast here, with its offset appended when recovery logs it.
    pub(super) fn deliver_broadcast(
        &self,
        id: StreamId,
        mut packet: Packet,
        opts: &BroadcastOptions,
    ) {
        if self.recovers()
            && matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent)
            && packet.id.is_none()
            && !opts.volatile
            && let Some(Value::Array(args)) = &mut packet.data
        {
            args.push(Value::String(id.to_string()));
        }
        self.local.broadcast(&BroadcastPacket::new(packet), opts);
    }

    /// One stream entry of this namespace, under the bus's delivery lock.
    pub(super) fn on_entry(&self, id: StreamId, envelope: Envelope) {
        let ShardedMessage::Request {
            request_id,
            request,
        } = envelope.message
        else {
            return;
        };
        match request {
            // This node's own broadcasts are delivered here too, in stream order.
            Request::Broadcast { packet, opts, .. } if request_id.is_none() => {
                self.deliver_broadcast(id, packet, &opts);
            }
            _ if envelope.uid == self.uid => {}
            Request::RemoteJoin {
                target: Target::Matching(opts),
                rooms,
            } => {
                let targets = self.local.local_targets(&opts);
                let refused = self.local.local_join_capped(
                    &opts,
                    &rooms,
                    self.policy.max_rooms_per_socket + 1,
                );
                if refused > 0 {
                    tracing::debug!(refused, "a peer's join went past the rooms limit");
                }
                self.rooms_changed(targets);
            }
            Request::RemoteLeave {
                target: Target::Matching(opts),
                rooms,
            } => {
                let targets = self.local.local_targets(&opts);
                self.local.local_update_rooms(&opts, &rooms, false);
                self.rooms_changed(targets);
            }
            Request::RemoteDisconnect {
                target: Target::Matching(opts),
                close,
            } => self.local.local_disconnect(&opts, close),
            _ => {}
        }
    }

    /// A pub/sub message of this namespace: answers, and requests that wait for answers.
    pub(super) fn on_message(&self, envelope: Envelope) {
        if envelope.uid == self.uid {
            return;
        }
        match envelope.message {
            ShardedMessage::Response {
                request_id,
                response,
            } => {
                if let Some(tx) = self.pending.lock().get(&request_id) {
                    let _ = tx.send(response);
                }
            }
            ShardedMessage::Request {
                request_id: Some(id),
                request,
            } => self.on_request(&envelope.uid, id, request),
            ShardedMessage::Request { .. } => {}
        }
    }

    pub(super) fn on_request(&self, requester: &str, id: String, request: Request) {
        let channel = format!("{}{requester}#", self.main);
        match request {
            Request::Broadcast {
                packet,
                opts,
                timeout_ms,
            } => {
                let timeout = timeout_ms
                    .map_or(self.bus.config.requests_timeout, Duration::from_millis)
                    .min(Duration::from_secs(60));
                let (tx, rx) = mpsc::unbounded_channel();
                let count = self.local.local_broadcast_with_ack(
                    &BroadcastPacket::new(packet),
                    &opts,
                    timeout,
                    &tx,
                );
                drop(tx);
                self.publish(
                    channel.clone(),
                    ShardedMessage::Response {
                        request_id: id.clone(),
                        response: Response::BroadcastClientCount(count),
                    },
                );
                let (bus, uid, nsp) = (Arc::clone(&self.bus), self.uid.clone(), self.nsp.clone());
                tokio::spawn(async move {
                    for ack in collect_acks(rx, count, timeout).await.responses {
                        let payload = Envelope {
                            uid: uid.clone(),
                            nsp: nsp.clone(),
                            message: ShardedMessage::Response {
                                request_id: id.clone(),
                                response: Response::BroadcastAck(ack),
                            },
                        }
                        .encode_msgpack();
                        bus.send(Outgoing::Publish {
                            channel: channel.clone(),
                            payload,
                        });
                    }
                });
            }
            Request::RemoteFetch { opts } => {
                let mut sockets = self.local.local_socket_infos(&opts);
                if !self.policy.share_credentials {
                    for info in &mut sockets {
                        strip_credentials(&mut info.handshake);
                    }
                }
                self.publish(
                    channel,
                    ShardedMessage::Response {
                        request_id: id,
                        response: Response::Sockets(sockets),
                    },
                );
            }
            Request::ServerSideEmit { data } => {
                let Some(table) = self.local.socket_table() else {
                    return;
                };
                let (bus, uid, nsp) = (Arc::clone(&self.bus), self.uid.clone(), self.nsp.clone());
                let ack = Box::new(move |answer: Value| {
                    let payload = Envelope {
                        uid,
                        nsp,
                        message: ShardedMessage::Response {
                            request_id: id,
                            response: Response::ServerSideEmitAck(answer),
                        },
                    }
                    .encode_msgpack();
                    bus.send(Outgoing::Publish { channel, payload });
                }) as crate::adapter::ServerAck;
                table.server_side_emit(data, Some(ack));
            }
            _ => {}
        }
    }

    pub(super) fn open_request(
        &self,
    ) -> (String, mpsc::UnboundedReceiver<Response>, PendingGuard<'_>) {
        let id = uid16();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        (id.clone(), rx, PendingGuard { adapter: self, id })
    }

    pub(super) async fn others(&self) -> Result<usize, AdapterError> {
        Ok(self.bus.server_count(&self.main).await?.saturating_sub(1))
    }
}

pub(super) struct PendingGuard<'a> {
    pub(super) adapter: &'a StreamsAdapter,
    pub(super) id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.adapter.pending.lock().remove(&self.id);
    }
}

impl Drop for StreamsAdapter {
    fn drop(&mut self) {
        let channels = vec![self.main.clone(), self.own.clone()];
        let (subscriber, bus) = (self.bus.subscriber.clone(), Arc::clone(&self.bus));
        let nsp = self.nsp.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A namespace made again at once shares the main channel; keep it then.
                let keep = bus.adapter(&nsp).is_some();
                let gone: Vec<String> = if keep {
                    channels[1..].to_vec()
                } else {
                    channels
                };
                let _ = subscriber.unsubscribe(gone).await;
            });
        }
    }
}

impl Adapter for StreamsAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        let position = self.bus.position();
        self.joined_at.lock().entry(sid).or_insert(position);
        self.local.add_all(sid, rooms);
        self.rooms_changed([sid]);
    }

    fn del(&self, sid: Sid, room: &Room) {
        self.local.del(sid, room);
        self.rooms_changed([sid]);
    }

    fn del_all(&self, sid: Sid) {
        self.local.del_all(sid);
        self.joined_at.lock().remove(&sid);
        // Left without `untrack` (never on the paths sockets take now): forget it, keep its key.
        self.tracked.lock().remove(&sid);
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
        if opts.local {
            self.local.broadcast(packet, opts);
            return;
        }
        // Delivered here when the reader meets it in the stream, like everyone else's.
        let request = Request::Broadcast {
            packet: packet.packet().clone(),
            opts: opts.clone(),
            timeout_ms: None,
        };
        self.append(request, Some((packet.clone(), opts.clone())));
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
            let expected = self.others().await?;
            if expected == 0 {
                return Ok(sockets);
            }
            let (id, mut rx, _guard) = self.open_request();
            self.publish_now(ShardedMessage::Request {
                request_id: Some(id),
                request: Request::RemoteFetch { opts },
            })
            .await?;
            let timeout = self.bus.config.requests_timeout;
            await_responses(&mut rx, expected, timeout, |response| match response {
                Response::Sockets(remote) => {
                    sockets.extend(remote);
                    true
                }
                _ => false,
            })
            .await?;
            Ok(sockets)
        })
    }

    fn all_rooms(&self) -> BoxFuture<'_, Result<std::collections::HashSet<Room>, AdapterError>> {
        // The cluster protocol has no rooms request; like Node's adapter, the local rooms.
        Box::pin(async move { Ok(self.local.local_rooms()) })
    }

    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        let targets = self.local.local_targets(opts);
        self.local.local_update_rooms(opts, rooms, true);
        self.rooms_changed(targets);
        let request = Request::RemoteJoin {
            target: Target::Matching(opts.clone()),
            rooms: rooms.to_vec(),
        };
        self.tell_others(opts.local, request)
    }

    fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        let targets = self.local.local_targets(opts);
        self.local.local_update_rooms(opts, rooms, false);
        self.rooms_changed(targets);
        let request = Request::RemoteLeave {
            target: Target::Matching(opts.clone()),
            rooms: rooms.to_vec(),
        };
        self.tell_others(opts.local, request)
    }

    fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_disconnect(opts, close);
        let request = Request::RemoteDisconnect {
            target: Target::Matching(opts.clone()),
            close,
        };
        self.tell_others(opts.local, request)
    }

    fn broadcast_with_ack(
        &self,
        packet: &BroadcastPacket,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BroadcastAcks, AdapterError>> {
        let (packet, opts) = (packet.clone(), opts.clone());
        Box::pin(async move {
            if opts.local || !self.bus.is_connected() {
                return self.local.broadcast_with_ack(&packet, &opts, timeout).await;
            }
            let (local_tx, local_rx) = mpsc::unbounded_channel();
            let (id, mut rx, _guard) = self.open_request();
            self.publish_now(ShardedMessage::Request {
                request_id: Some(id),
                request: Request::Broadcast {
                    packet: packet.packet().clone(),
                    opts: opts.clone(),
                    timeout_ms: Some(timeout.as_millis() as u64),
                },
            })
            .await?;
            let local_count = self
                .local
                .local_broadcast_with_ack(&packet, &opts, timeout, &local_tx);
            drop(local_tx);
            let servers = self.others().await?;
            Ok(await_broadcast_acks(local_rx, local_count, &mut rx, servers, timeout).await)
        })
    }

    fn server_side_emit(&self, data: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            self.publish_now(ShardedMessage::Request {
                request_id: None,
                request: Request::ServerSideEmit { data },
            })
            .await
        })
    }

    fn server_side_emit_with_ack(
        &self,
        data: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>> {
        Box::pin(async move {
            let expected = self.others().await?;
            if expected == 0 {
                return Ok(Vec::new());
            }
            let (id, mut rx, _guard) = self.open_request();
            self.publish_now(ShardedMessage::Request {
                request_id: Some(id),
                request: Request::ServerSideEmit { data },
            })
            .await?;
            await_server_side_acks(&mut rx, expected, timeout).await
        })
    }

    fn sessions(&self) -> Option<&dyn SessionStore> {
        self.recovers().then_some(self as &dyn SessionStore)
    }
}

impl StreamsAdapter {
    /// Sends a request that expects no answer through the stream, unless the operation was local.
    pub(super) fn tell_others(
        &self,
        local: bool,
        request: Request,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        if !local {
            self.append(request, None);
        }
        Box::pin(async { Ok(()) })
    }
}
