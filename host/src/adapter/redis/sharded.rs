//! The sharded Redis adapter: `@socket.io/redis-adapter` 8.3 `createShardedAdapter` on a Redis Cluster
//! (Redis ≥ 7 `SPUBLISH` / `SSUBSCRIBE`), so a broadcast travels through the one shard that owns its
//! channel instead of through every node of the cluster.
//!
//! Channels of namespace N under prefix K: `K#N#` (every node), `K#N#<uid>#` (this node's responses) and,
//! in the dynamic modes, `K#N#<room>#` while this node holds the room. One [`ShardedBus`] (a cluster
//! client and a subscriber client, each with one connection per cluster node) serves every namespace.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Builder;
use fred::types::config::{Config, Options, ReconnectPolicy};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::mpsc;

use super::inbox::{INBOX_MAX_BYTES, Inbox, SUBSCRIBER_RING};
use super::messages::{
    Request, Response, Target, await_broadcast_acks, await_responses, await_server_side_acks,
    strip_credentials,
};
use super::shard_subscriptions::ShardSubscriptions;
use super::sharded_wire::{Envelope, ShardedMessage};
use super::{BusError, PeerPolicy};
use crate::adapter::local::collect_acks;
use crate::adapter::{
    Adapter, AdapterError, AdapterFactory, BoxFuture, BroadcastAcks, BroadcastOptions,
    BroadcastPacket, LocalAdapter, Room, SocketInfo, SocketTable,
};
use crate::sid::Sid;

/// Which rooms get a channel of their own (Node's `subscriptionMode`). A fleet shares one mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubscriptionMode {
    /// Only the namespace channel: every node receives every broadcast of the namespace.
    Static,
    /// A channel per public room (not a socket's own room) this node holds; Node's default.
    #[default]
    Dynamic,
    /// A channel per room this node holds, each socket's own room included.
    DynamicPrivate,
}

impl std::str::FromStr for SubscriptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "static" => Ok(SubscriptionMode::Static),
            "dynamic" => Ok(SubscriptionMode::Dynamic),
            "dynamic-private" => Ok(SubscriptionMode::DynamicPrivate),
            other => Err(format!(
                "unknown subscription mode {other:?}: static, dynamic or dynamic-private"
            )),
        }
    }
}

impl SubscriptionMode {
    /// Whether `room` gets a channel of its own in this mode.
    fn has_channel(self, room: &Room) -> bool {
        match self {
            SubscriptionMode::Static => false,
            SubscriptionMode::Dynamic => Sid::parse(room.as_str()).is_none(),
            SubscriptionMode::DynamicPrivate => true,
        }
    }
}

/// How to reach the cluster and how to use it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Seed nodes, `host:port,host:port`; the first may carry a scheme and credentials
    /// (`rediss://user:password@host:port`), which apply to every node.
    pub seeds: String,
    /// Channel prefix (Node's `channelPrefix`).
    pub key: String,
    /// Which rooms get channels.
    pub mode: SubscriptionMode,
    /// How long fleet requests wait for every node.
    pub requests_timeout: Duration,
    /// What peers may do here.
    pub policy: PeerPolicy,
    /// Larger messages are refused unread (counted in `refused`).
    pub max_message_bytes: usize,
}

impl ClusterConfig {
    /// Node's defaults for the cluster at `seeds`.
    pub fn new(seeds: impl Into<String>) -> Self {
        ClusterConfig {
            seeds: seeds.into(),
            key: "socket.io".into(),
            mode: SubscriptionMode::default(),
            requests_timeout: Duration::from_secs(5),
            policy: PeerPolicy {
                max_rooms_per_socket: 100,
                share_credentials: false,
            },
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// fred's clustered URL: the first seed (with its scheme) plus `?node=` for the others.
    fn url(&self) -> String {
        let mut seeds = self
            .seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let first = seeds.next().unwrap_or("127.0.0.1:6379");
        let mut url = if first.contains("://") {
            first.to_owned()
        } else {
            format!("redis://{first}")
        };
        for (i, seed) in seeds.enumerate() {
            let seed = seed.rsplit('@').next().unwrap_or(seed);
            let seed = seed.split("://").last().unwrap_or(seed);
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str("node=");
            url.push_str(seed);
        }
        url
    }
}

/// Counters of one cluster connection, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages published.
    pub published: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
    /// Messages refused: larger than `max_message_bytes`, over the decoding bounds, or malformed.
    pub refused: AtomicU64,
    /// Messages lost: not published (the outgoing queue was full, or the shard was unreachable), or
    /// received while this node's receive loop had fallen a whole channel behind.
    pub dropped: AtomicU64,
}

/// The cluster connections every namespace of one prefix shares.
pub struct ShardedBus {
    config: ClusterConfig,
    publisher: Client,
    subscriber: SubscriberClient,
    adapters: RwLock<Vec<Weak<ShardedAdapter>>>,
    /// Broadcasts and answers on their way out, in the order they were made.
    outgoing: mpsc::Sender<(String, Vec<u8>)>,
    /// The shard channels this node holds, checked against every master.
    pub subscriptions: Arc<ShardSubscriptions>,
    /// Counters.
    pub stats: ClusterStats,
}

/// Messages waiting to be published; past it the newest are dropped (and counted).
const OUTGOING_QUEUE: usize = 10_000;
/// Publishes in flight at once: enough to pipeline on every shard, few enough to bound a stall.
const PUBLISHES_IN_FLIGHT: usize = 512;

/// One attempt, no waiting for a reconnect, a short timeout: a shard that is down costs its own
/// messages, not the others' (pub/sub keeps nothing anyway).
fn once() -> Options {
    Options {
        max_attempts: Some(1),
        fail_fast: true,
        timeout: Some(Duration::from_secs(1)),
        ..Options::default()
    }
}

impl ShardedBus {
    /// Connects to the cluster (retrying in the background while it is unreachable).
    pub async fn start(config: ClusterConfig) -> Result<Arc<Self>, BusError> {
        let mut fred_config = Config::from_url_clustered(&config.url())?;
        fred_config.fail_fast = false;
        let mut builder = Builder::from_config(fred_config);
        builder.set_policy(ReconnectPolicy::new_linear(0, 500, 50));
        // Named connections let the subscription check find this node's own line in CLIENT LIST.
        builder.with_connection_config(|c| c.auto_client_setname = true);
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let publisher = builder.build()?;
        // Every broadcast arrives through the subscriber: fred's default of 32 queued messages would
        // lose a burst while this node is busy.
        let subscriber = super::build_subscriber(&mut builder, SUBSCRIBER_RING)?;
        let bus = Arc::new(ShardedBus {
            publisher,
            subscriber,
            config,
            adapters: RwLock::new(Vec::new()),
            outgoing,
            subscriptions: Arc::new(ShardSubscriptions::default()),
            stats: ClusterStats::default(),
        });
        bus.publisher.connect();
        bus.subscriber.connect();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let _ = bus.publisher.wait_for_connect().await;
            let _ = bus.subscriber.wait_for_connect().await;
        })
        .await;
        tokio::spawn(Arc::clone(&bus).receive_loop());
        tokio::spawn(
            Arc::clone(&bus.subscriptions).run(bus.subscriber.clone(), bus.publisher.clone()),
        );
        tokio::spawn(Arc::clone(&bus).publish_loop(queue));
        Ok(bus)
    }

    /// Whether both clients are connected.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    fn register(self: &Arc<Self>, adapter: &Arc<ShardedAdapter>) {
        let mut adapters = self.adapters.write();
        adapters.retain(|a| a.strong_count() > 0);
        adapters.push(Arc::downgrade(adapter));
    }

    /// Queues a message; never waits. Messages leave in the order they were queued, so two
    /// broadcasts to one room arrive in the order they were made.
    fn publish_nowait(self: &Arc<Self>, channel: String, payload: Vec<u8>) {
        if self.outgoing.try_send((channel, payload)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends queued messages with many in flight. `FuturesOrdered` polls new publishes for the
    /// first time in the order they were pushed, and that first poll is when fred hands the
    /// command to the shard's connection: each channel keeps the queue's order, while a slow
    /// shard holds back the others only once [`PUBLISHES_IN_FLIGHT`] are waiting.
    async fn publish_loop(self: Arc<Self>, mut queue: mpsc::Receiver<(String, Vec<u8>)>) {
        use futures_util::StreamExt;
        use futures_util::stream::FuturesOrdered;
        let mut in_flight = FuturesOrdered::new();
        loop {
            tokio::select! {
                next = queue.recv(), if in_flight.len() < PUBLISHES_IN_FLIGHT => {
                    let Some((channel, payload)) = next else { break };
                    let bus = Arc::clone(&self);
                    in_flight.push_back(async move { bus.publish_now(channel, payload).await });
                }
                Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(err) = result {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%err, "shard publish failed");
                    }
                }
            }
        }
    }

    async fn publish_now(&self, channel: String, payload: Vec<u8>) -> Result<(), AdapterError> {
        self.publisher
            .with_options(&once())
            .spublish::<(), _, _>(channel, payload)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many nodes listen on `channel` (`PUBSUB SHARDNUMSUB` on the shard that owns it).
    async fn server_count(&self, channel: &str) -> Result<usize, AdapterError> {
        let reply: Vec<fred::types::Value> = self
            .publisher
            .with_options(&once())
            .pubsub_shardnumsub::<fred::types::Value, _>(channel)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?
            .into_array();
        Ok(reply.get(1).and_then(|v| v.as_u64()).unwrap_or(0) as usize)
    }

    async fn receive_loop(self: Arc<Self>) {
        let mut messages = Inbox::forward(self.subscriber.message_rx(), INBOX_MAX_BYTES);
        loop {
            let (message, lost) = messages.recv().await;
            if lost > 0 {
                self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
                tracing::warn!(lost, "shard messages lost: this node fell behind Redis");
            }
            let Some(message) = message else { return };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let Some(payload) = message.value.as_bytes() else {
                continue;
            };
            if payload.len() > self.config.max_message_bytes {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    bytes = payload.len(),
                    "refusing an oversized shard message unread"
                );
                continue;
            }
            let channel = &*message.channel;
            let adapters: Vec<_> = self
                .adapters
                .read()
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for adapter in adapters {
                if channel.starts_with(&adapter.main) {
                    adapter.on_message(channel, payload);
                }
            }
        }
    }
}

/// A 16-hex-digit node id, like the cluster adapter's.
fn uid16() -> String {
    let raw: [u8; 8] = rand::random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A namespace's adapter on a Redis Cluster.
pub struct ShardedAdapter {
    nsp: String,
    uid: String,
    /// `K#N#`.
    main: String,
    /// `K#N#<uid>#`.
    own: String,
    local: LocalAdapter,
    bus: Arc<ShardedBus>,
    policy: PeerPolicy,
    /// Rooms whose channel this node listens to.
    room_channels: Mutex<HashSet<Room>>,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Response>>>,
}

impl ShardedAdapter {
    fn new(
        nsp: &str,
        sockets: Weak<dyn SocketTable>,
        bus: Arc<ShardedBus>,
        policy: PeerPolicy,
    ) -> Arc<Self> {
        let uid = uid16();
        let main = format!("{}#{nsp}#", bus.config.key);
        let adapter = Arc::new(ShardedAdapter {
            nsp: nsp.to_owned(),
            own: format!("{main}{uid}#"),
            main,
            uid,
            local: LocalAdapter::new(sockets),
            bus: Arc::clone(&bus),
            policy,
            room_channels: Mutex::new(HashSet::new()),
            pending: Mutex::new(HashMap::new()),
        });
        bus.register(&adapter);
        bus.subscriptions
            .want([adapter.main.clone(), adapter.own.clone()]);
        adapter
    }

    fn room_channel(&self, room: &Room) -> String {
        format!("{}{room}#", self.main)
    }

    /// Subscribes to the channels of rooms that just got their first local socket.
    fn rooms_created(&self, rooms: impl IntoIterator<Item = Room>) {
        let mode = self.bus.config.mode;
        let mut fresh = Vec::new();
        {
            let mut subscribed = self.room_channels.lock();
            for room in rooms {
                if mode.has_channel(&room)
                    && self.local.room_size(&room) > 0
                    && subscribed.insert(room.clone())
                {
                    fresh.push(self.room_channel(&room));
                }
            }
        }
        if !fresh.is_empty() {
            self.bus.subscriptions.want(fresh);
        }
    }

    /// Unsubscribes from the channels of rooms that lost their last local socket.
    fn rooms_deleted(&self, rooms: impl IntoIterator<Item = Room>) {
        let mut gone = Vec::new();
        {
            let mut subscribed = self.room_channels.lock();
            for room in rooms {
                if self.local.room_size(&room) == 0 && subscribed.remove(&room) {
                    gone.push(self.room_channel(&room));
                }
            }
        }
        if !gone.is_empty() {
            self.bus.subscriptions.release(gone);
        }
    }

    fn envelope(&self, message: ShardedMessage) -> Vec<u8> {
        Envelope {
            uid: self.uid.clone(),
            nsp: self.nsp.clone(),
            message,
        }
        .encode()
    }

    fn on_message(&self, channel: &str, payload: &[u8]) {
        let envelope = match Envelope::decode(payload) {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return,
            Err(err) => {
                self.bus.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%err, channel, "ignoring an undecodable shard message");
                return;
            }
        };
        if envelope.uid == self.uid || envelope.nsp != self.nsp {
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
                request_id,
                request,
            } => self.on_request(&envelope.uid, request_id, request),
        }
    }

    fn respond(&self, requester: &str, request_id: String, response: Response) {
        let channel = format!("{}{requester}#", self.main);
        self.bus.publish_nowait(
            channel,
            self.envelope(ShardedMessage::Response {
                request_id,
                response,
            }),
        );
    }

    fn on_request(&self, requester: &str, request_id: Option<String>, request: Request) {
        match request {
            Request::Broadcast {
                packet,
                opts,
                timeout_ms,
            } => match request_id {
                None => self.local.broadcast(&BroadcastPacket::new(packet), &opts),
                Some(id) => {
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
                    self.respond(requester, id.clone(), Response::BroadcastClientCount(count));
                    let (bus, channel, uid, nsp) = (
                        Arc::clone(&self.bus),
                        format!("{}{requester}#", self.main),
                        self.uid.clone(),
                        self.nsp.clone(),
                    );
                    tokio::spawn(async move {
                        for ack in collect_acks(rx, count, timeout).await.responses {
                            let message = ShardedMessage::Response {
                                request_id: id.clone(),
                                response: Response::BroadcastAck(ack),
                            };
                            let bytes = Envelope {
                                uid: uid.clone(),
                                nsp: nsp.clone(),
                                message,
                            }
                            .encode();
                            bus.publish_nowait(channel.clone(), bytes);
                        }
                    });
                }
            },
            Request::RemoteJoin {
                target: Target::Matching(opts),
                rooms,
            } => {
                let refused = self.local.local_join_capped(
                    &opts,
                    &rooms,
                    self.policy.max_rooms_per_socket + 1,
                );
                if refused > 0 {
                    tracing::debug!(refused, "a peer's join went past the rooms limit");
                }
                self.rooms_created(rooms);
            }
            Request::RemoteLeave {
                target: Target::Matching(opts),
                rooms,
            } => {
                self.local.local_update_rooms(&opts, &rooms, false);
                self.rooms_deleted(rooms);
            }
            Request::RemoteDisconnect {
                target: Target::Matching(opts),
                close,
            } => self.local.local_disconnect(&opts, close),
            Request::RemoteFetch { opts } => {
                let Some(id) = request_id else { return };
                let mut sockets = self.local.local_socket_infos(&opts);
                if !self.policy.share_credentials {
                    for info in &mut sockets {
                        strip_credentials(&mut info.handshake);
                    }
                }
                self.respond(requester, id, Response::Sockets(sockets));
            }
            Request::ServerSideEmit { data } => {
                let Some(table) = self.local.socket_table() else {
                    return;
                };
                let ack = request_id.map(|id| {
                    let (bus, channel, uid, nsp) = (
                        Arc::clone(&self.bus),
                        format!("{}{requester}#", self.main),
                        self.uid.clone(),
                        self.nsp.clone(),
                    );
                    Box::new(move |answer: Value| {
                        let message = ShardedMessage::Response {
                            request_id: id,
                            response: Response::ServerSideEmitAck(answer),
                        };
                        bus.publish_nowait(channel, Envelope { uid, nsp, message }.encode());
                    }) as crate::adapter::ServerAck
                });
                table.server_side_emit(data, ack);
            }
            _ => {}
        }
    }

    /// The channel a broadcast goes to: the room's own channel for exactly one room with a channel.
    fn channel_for(&self, opts: &BroadcastOptions) -> String {
        match opts.rooms.as_slice() {
            [room] if self.bus.config.mode.has_channel(room) => self.room_channel(room),
            _ => self.main.clone(),
        }
    }

    fn open_request(&self) -> (String, mpsc::UnboundedReceiver<Response>, PendingGuard<'_>) {
        let id = uid16();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        (id.clone(), rx, PendingGuard { adapter: self, id })
    }

    /// How many other nodes a fleet request waits for; fails at once while a master does not
    /// answer (some nodes' answers could not reach this one).
    async fn others(&self) -> Result<usize, AdapterError> {
        if let Some(master) = self.bus.subscriptions.unreachable() {
            return Err(AdapterError::Unavailable(format!(
                "Redis Cluster master {master} does not answer; fleet requests resume after failover"
            )));
        }
        Ok(self.bus.server_count(&self.main).await?.saturating_sub(1))
    }

    async fn publish_request(
        &self,
        request_id: Option<String>,
        request: Request,
    ) -> Result<(), AdapterError> {
        self.bus
            .publish_now(
                self.main.clone(),
                self.envelope(ShardedMessage::Request {
                    request_id,
                    request,
                }),
            )
            .await
    }

    /// Sends a request that expects no answer, unless the operation was local only.
    fn tell_others(
        &self,
        local: bool,
        request: Request,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            if local {
                Ok(())
            } else {
                self.publish_request(None, request).await
            }
        })
    }
}

struct PendingGuard<'a> {
    adapter: &'a ShardedAdapter,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.adapter.pending.lock().remove(&self.id);
    }
}

impl Drop for ShardedAdapter {
    fn drop(&mut self) {
        let mut channels = vec![self.main.clone(), self.own.clone()];
        channels.extend(
            self.room_channels
                .lock()
                .iter()
                .map(|r| self.room_channel(r)),
        );
        // Channels another adapter of this node still holds (a shared main) keep their holder.
        self.bus.subscriptions.release(channels);
    }
}

impl Adapter for ShardedAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        self.local.add_all(sid, rooms);
        self.rooms_created(rooms.iter().cloned());
    }

    fn del(&self, sid: Sid, room: &Room) {
        self.local.del(sid, room);
        self.rooms_deleted([room.clone()]);
    }

    fn del_all(&self, sid: Sid) {
        let rooms = self.local.socket_rooms(sid);
        self.local.del_all(sid);
        self.rooms_deleted(rooms);
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
            let request = Request::Broadcast {
                packet: packet.packet().clone(),
                opts: opts.clone(),
                timeout_ms: None,
            };
            let bytes = self.envelope(ShardedMessage::Request {
                request_id: None,
                request,
            });
            self.bus.publish_nowait(self.channel_for(opts), bytes);
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
            let expected = self.others().await?;
            if expected == 0 {
                return Ok(sockets);
            }
            let (id, mut rx, _guard) = self.open_request();
            self.publish_request(Some(id), Request::RemoteFetch { opts })
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

    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>> {
        // The cluster protocol has no rooms request; like Node's sharded adapter, the local rooms.
        Box::pin(async move { Ok(self.local.local_rooms()) })
    }

    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_update_rooms(opts, rooms, true);
        self.rooms_created(rooms.iter().cloned());
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
        self.local.local_update_rooms(opts, rooms, false);
        self.rooms_deleted(rooms.iter().cloned());
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
            // Without the whole cluster, the acks of this node's own clients are all that can come.
            if opts.local
                || !self.bus.is_connected()
                || self.bus.subscriptions.unreachable().is_some()
            {
                return self.local.broadcast_with_ack(&packet, &opts, timeout).await;
            }
            let (local_tx, local_rx) = mpsc::unbounded_channel();
            let (id, mut rx, _guard) = self.open_request();
            let request = Request::Broadcast {
                packet: packet.packet().clone(),
                opts: opts.clone(),
                timeout_ms: Some(timeout.as_millis() as u64),
            };
            self.publish_request(Some(id), request).await?;
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
            self.publish_request(None, Request::ServerSideEmit { data })
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
            self.publish_request(Some(id), Request::ServerSideEmit { data })
                .await?;
            await_server_side_acks(&mut rx, expected, timeout).await
        })
    }
}

/// Gives each namespace a sharded adapter on a shared cluster connection.
#[derive(Clone)]
pub struct ShardedAdapterFactory {
    bus: Arc<ShardedBus>,
    policy: PeerPolicy,
}

impl ShardedAdapterFactory {
    /// Connects to the cluster (see [`ShardedBus::start`]).
    pub async fn start(config: ClusterConfig) -> Result<Self, BusError> {
        let policy = config.policy;
        Ok(ShardedAdapterFactory {
            bus: ShardedBus::start(config).await?,
            policy,
        })
    }

    /// The shared connection.
    pub fn bus(&self) -> &Arc<ShardedBus> {
        &self.bus
    }

    /// Adapters on the same connection under another peer policy.
    pub fn with_policy(&self, policy: PeerPolicy) -> Self {
        ShardedAdapterFactory {
            bus: Arc::clone(&self.bus),
            policy,
        }
    }
}

impl AdapterFactory for ShardedAdapterFactory {
    fn create(&self, nsp: &str, sockets: Weak<dyn SocketTable>) -> Arc<dyn Adapter> {
        ShardedAdapter::new(nsp, sockets, Arc::clone(&self.bus), self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_become_one_clustered_url() {
        let config = ClusterConfig::new("127.0.0.1:7000, 127.0.0.1:7001,127.0.0.1:7002");
        assert_eq!(
            config.url(),
            "redis://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002"
        );
        let tls = ClusterConfig::new("rediss://u:p@a.example:7000,b.example:7001");
        assert_eq!(tls.url(), "rediss://u:p@a.example:7000?node=b.example:7001");
    }

    #[test]
    fn modes_say_which_rooms_get_channels() {
        let private = Room::of_socket(Sid::random());
        let public = Room::from("company:1");
        assert!(!SubscriptionMode::Static.has_channel(&public));
        assert!(SubscriptionMode::Dynamic.has_channel(&public));
        assert!(
            !SubscriptionMode::Dynamic.has_channel(&private),
            "dynamic leaves socket rooms on the main channel"
        );
        assert!(SubscriptionMode::DynamicPrivate.has_channel(&private));
        assert_eq!(
            "dynamic-private".parse(),
            Ok(SubscriptionMode::DynamicPrivate)
        );
        assert!("sharded".parse::<SubscriptionMode>().is_err());
    }
}
