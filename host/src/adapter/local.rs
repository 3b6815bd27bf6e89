//! The in-memory adapter: the room index of one node's namespace.
//!
//! Room membership is held twice (room -> sockets, socket -> rooms) so both "who is in this room" and "leave
//! every room" are direct lookups; an emptied room is removed at once so the index shrinks with traffic.
//! Broadcasts walk the index under a read lock and hand each recipient the same encoded frames.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;

use parking_lot::RwLock;
use serde_json::Value;

use std::time::Duration;

use super::{
    AckSink, Adapter, AdapterError, BoxFuture, BroadcastAcks, BroadcastOptions, BroadcastPacket,
    Room, RoomChange, SocketInfo, SocketTable,
};
use crate::codec::Payload;
use crate::sid::Sid;

#[derive(Default)]
struct Index {
    rooms: HashMap<Room, HashSet<Sid>>,
    sockets: HashMap<Sid, HashSet<Room>>,
}

impl Index {
    /// Every socket targeted by `opts`, each once. One allocation per call, none per socket.
    fn targets_iter<'a>(
        &'a self,
        opts: &'a BroadcastOptions,
    ) -> Box<dyn Iterator<Item = Sid> + 'a> {
        let except: HashSet<Sid> = opts
            .except
            .iter()
            .filter_map(|room| self.rooms.get(room))
            .flatten()
            .copied()
            .collect();
        let included = move |sid: &Sid| !except.contains(sid);
        match opts.rooms.as_slice() {
            [] => Box::new(self.sockets.keys().copied().filter(included)),
            [room] => Box::new(
                self.rooms
                    .get(room)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(included),
            ),
            rooms => {
                let mut seen = HashSet::new();
                Box::new(
                    rooms
                        .iter()
                        .filter_map(|r| self.rooms.get(r))
                        .flatten()
                        .copied()
                        .filter(move |sid| seen.insert(*sid))
                        .filter(included),
                )
            }
        }
    }

    /// Calls `f` once for every socket targeted by `opts`.
    fn for_each_target(&self, opts: &BroadcastOptions, f: impl FnMut(Sid)) {
        self.targets_iter(opts).for_each(f);
    }

    fn targets(&self, opts: &BroadcastOptions) -> Vec<Sid> {
        let mut out = Vec::new();
        self.for_each_target(opts, |sid| out.push(sid));
        out
    }

    /// Adds a membership; true when it is new.
    fn add(&mut self, sid: Sid, room: &Room) -> bool {
        self.rooms.entry(room.clone()).or_default().insert(sid);
        self.sockets.entry(sid).or_default().insert(room.clone())
    }

    /// Removes a membership; true when there was one.
    fn remove(&mut self, sid: Sid, room: &Room) -> bool {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&sid);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        self.sockets
            .get_mut(&sid)
            .is_some_and(|rooms| rooms.remove(room))
    }
}

/// Room changes made under the index lock, reported to the socket table once it is released (only when
/// the table watches rooms, so an unwatched namespace collects nothing).
struct Changes(Option<Vec<RoomChange>>);

impl Changes {
    fn record(&mut self, changed: bool, sid: Sid, room: &Room, joined: bool) {
        if let (true, Some(list)) = (changed, &mut self.0) {
            list.push(RoomChange {
                sid,
                room: room.clone(),
                joined,
            });
        }
    }
}

/// The room index of one namespace on one node.
pub struct LocalAdapter {
    index: RwLock<Index>,
    sockets: Weak<dyn SocketTable>,
    /// Whether the table watches room changes; asked at the first change, since the table is still
    /// being built when its adapter is.
    watched: std::sync::OnceLock<bool>,
}

impl LocalAdapter {
    /// An adapter delivering to `sockets`.
    pub fn new(sockets: Weak<dyn SocketTable>) -> Self {
        LocalAdapter {
            index: RwLock::new(Index::default()),
            sockets,
            watched: std::sync::OnceLock::new(),
        }
    }

    /// An empty change list when the table watches rooms, no list otherwise.
    fn changes(&self) -> Changes {
        let watched = *self.watched.get_or_init(|| {
            self.sockets
                .upgrade()
                .is_some_and(|table| table.watches_rooms())
        });
        Changes(watched.then(Vec::new))
    }

    /// Tells the table what changed; call with the index lock released.
    fn report(&self, changes: Changes) {
        if let Some(list) = changes.0.filter(|l| !l.is_empty())
            && let Some(table) = self.sockets.upgrade()
        {
            table.rooms_changed(&list);
        }
    }

    /// The local sockets targeted by `opts`.
    pub fn local_targets(&self, opts: &BroadcastOptions) -> Vec<Sid> {
        self.index.read().targets(opts)
    }

    /// Describes the local sockets targeted by `opts`.
    pub fn local_socket_infos(&self, opts: &BroadcastOptions) -> Vec<SocketInfo> {
        let Some(table) = self.sockets.upgrade() else {
            return Vec::new();
        };
        let index = self.index.read();
        let mut out = Vec::new();
        index.for_each_target(opts, |sid| {
            let rooms = index
                .sockets
                .get(&sid)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            out.extend(table.socket_info(sid, rooms));
        });
        out
    }

    /// Every room that has a local socket.
    pub fn local_rooms(&self) -> HashSet<Room> {
        self.index.read().rooms.keys().cloned().collect()
    }

    /// Applies a join/leave to the local sockets targeted by `opts`.
    pub fn local_update_rooms(&self, opts: &BroadcastOptions, rooms: &[Room], join: bool) {
        let mut changes = self.changes();
        let mut index = self.index.write();
        for sid in index.targets(opts) {
            for room in rooms {
                let changed = if join {
                    index.add(sid, room)
                } else {
                    index.remove(sid, room)
                };
                changes.record(changed, sid, room, join);
            }
        }
        drop(index);
        self.report(changes);
    }

    /// Joins the local sockets targeted by `opts` to `rooms`, except where a socket would then be in more
    /// than `max_rooms` rooms (a peer's request must not lift a tenant's limit); returns the joins refused.
    pub fn local_join_capped(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
        max_rooms: usize,
    ) -> usize {
        let mut changes = self.changes();
        let mut index = self.index.write();
        let mut refused = 0;
        for sid in index.targets(opts) {
            for room in rooms {
                let held = index.sockets.get(&sid);
                let member = held.is_some_and(|r| r.contains(room));
                if !member && held.map_or(0, HashSet::len) >= max_rooms {
                    refused += 1;
                    continue;
                }
                let added = index.add(sid, room);
                changes.record(added, sid, room, true);
            }
        }
        drop(index);
        self.report(changes);
        refused
    }

    /// Disconnects the local sockets targeted by `opts`.
    pub fn local_disconnect(&self, opts: &BroadcastOptions, close: bool) {
        let targets = self.local_targets(opts);
        if let Some(table) = self.sockets.upgrade() {
            // The index lock is released: disconnecting edits it.
            for sid in targets {
                table.disconnect(sid, close);
            }
        }
    }
}

/// Waits for `expected` acknowledgements (or `timeout`).
pub(crate) async fn collect_acks(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Payload>,
    expected: usize,
    timeout: Duration,
) -> BroadcastAcks {
    let mut acks = BroadcastAcks {
        expected,
        ..BroadcastAcks::default()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    while acks.responses.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(payload)) => acks.responses.push(payload),
            Ok(None) | Err(_) => {
                acks.timed_out = true;
                break;
            }
        }
    }
    acks
}

impl LocalAdapter {
    /// Emits with acks to the local targets; returns how many sockets were asked.
    pub fn local_broadcast_with_ack(
        &self,
        packet: &BroadcastPacket,
        opts: &BroadcastOptions,
        timeout: Duration,
        acks: &AckSink,
    ) -> usize {
        let Some(table) = self.sockets.upgrade() else {
            return 0;
        };
        let index = self.index.read();
        table.deliver_with_ack(
            &mut index.targets_iter(opts),
            packet.packet(),
            timeout,
            acks,
        )
    }

    /// The socket table this adapter delivers to.
    pub fn socket_table(&self) -> Option<std::sync::Arc<dyn SocketTable>> {
        self.sockets.upgrade()
    }
}

impl Adapter for LocalAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        let mut changes = self.changes();
        let mut index = self.index.write();
        for room in rooms {
            let added = index.add(sid, room);
            changes.record(added, sid, room, true);
        }
        drop(index);
        self.report(changes);
    }

    fn del(&self, sid: Sid, room: &Room) {
        let mut changes = self.changes();
        let removed = self.index.write().remove(sid, room);
        changes.record(removed, sid, room, false);
        self.report(changes);
    }

    fn del_all(&self, sid: Sid) {
        let mut changes = self.changes();
        let mut index = self.index.write();
        let Some(rooms) = index.sockets.remove(&sid) else {
            return;
        };
        for room in rooms {
            if let Some(members) = index.rooms.get_mut(&room) {
                members.remove(&sid);
                if members.is_empty() {
                    index.rooms.remove(&room);
                }
            }
            changes.record(true, sid, &room, false);
        }
        drop(index);
        self.report(changes);
    }

    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.index
            .read()
            .sockets
            .get(&sid)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn socket_in_all(&self, sid: Sid, rooms: &[Room]) -> bool {
        let index = self.index.read();
        let joined = index.sockets.get(&sid);
        rooms.iter().all(|r| joined.is_some_and(|j| j.contains(r)))
    }

    fn room_size(&self, room: &Room) -> usize {
        self.index.read().rooms.get(room).map_or(0, HashSet::len)
    }

    fn broadcast(&self, packet: &BroadcastPacket, opts: &BroadcastOptions) {
        let Some(table) = self.sockets.upgrade() else {
            return;
        };
        let index = self.index.read();
        table.deliver(
            &mut index.targets_iter(opts),
            packet.encoded(),
            opts.volatile,
        );
    }

    fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> BoxFuture<'_, Result<Vec<SocketInfo>, AdapterError>> {
        let infos = self.local_socket_infos(opts);
        Box::pin(async move { Ok(infos) })
    }

    fn all_rooms(&self) -> BoxFuture<'_, Result<HashSet<Room>, AdapterError>> {
        let rooms = self.local_rooms();
        Box::pin(async move { Ok(rooms) })
    }

    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local_update_rooms(opts, rooms, true);
        Box::pin(async { Ok(()) })
    }

    fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local_update_rooms(opts, rooms, false);
        Box::pin(async { Ok(()) })
    }

    fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local_disconnect(opts, close);
        Box::pin(async { Ok(()) })
    }

    fn broadcast_with_ack(
        &self,
        packet: &BroadcastPacket,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BroadcastAcks, AdapterError>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let expected = self.local_broadcast_with_ack(packet, opts, timeout, &tx);
        drop(tx);
        Box::pin(async move { Ok(collect_acks(rx, expected, timeout).await) })
    }

    fn server_side_emit(&self, _data: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async { Ok(()) })
    }

    fn server_side_emit_with_ack(
        &self,
        _data: Vec<Value>,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapter::test_support::Recorder;

    fn setup() -> (Arc<Recorder>, LocalAdapter, [Sid; 3]) {
        let rec = Arc::new(Recorder::default());
        let weak: Weak<dyn SocketTable> = Arc::downgrade(&rec) as Weak<dyn SocketTable>;
        let adapter = LocalAdapter::new(weak);
        let ids = [Sid::random(), Sid::random(), Sid::random()];
        for sid in ids {
            adapter.add_all(sid, &[Room::of_socket(sid)]);
        }
        adapter.add_all(ids[0], &["a".into(), "b".into()]);
        adapter.add_all(ids[1], &["a".into()]);
        adapter.add_all(ids[2], &["b".into()]);
        (rec, adapter, ids)
    }

    fn packet() -> BroadcastPacket {
        BroadcastPacket::new(crate::codec::Packet {
            kind: crate::codec::PacketKind::Event,
            nsp: "/".into(),
            id: None,
            data: Some(serde_json::json!(["x"])),
            attachments: vec![],
        })
    }

    fn sorted(mut v: Vec<Sid>) -> Vec<Sid> {
        v.sort();
        v
    }

    #[test]
    fn broadcast_targets_rooms_minus_except_once_each() {
        let (rec, adapter, ids) = setup();
        let opts = BroadcastOptions {
            rooms: vec!["a".into(), "b".into()],
            except: vec![Room::of_socket(ids[1])],
            ..Default::default()
        };
        adapter.broadcast(&packet(), &opts);
        assert_eq!(
            sorted(rec.delivered.lock().unwrap().clone()),
            sorted(vec![ids[0], ids[2]])
        );

        rec.delivered.lock().unwrap().clear();
        adapter.broadcast(
            &packet(),
            &BroadcastOptions {
                except: vec!["b".into()],
                ..Default::default()
            },
        );
        assert_eq!(rec.delivered.lock().unwrap().clone(), vec![ids[1]]);
    }

    #[test]
    fn emptied_rooms_disappear() {
        let (_rec, adapter, ids) = setup();
        adapter.del(ids[1], &"a".into());
        assert_eq!(adapter.room_size(&"a".into()), 1);
        adapter.del_all(ids[0]);
        assert!(!adapter.local_rooms().contains(&Room::from("a")));
        assert_eq!(adapter.socket_rooms(ids[0]), Vec::<Room>::new());
        assert_eq!(adapter.room_size(&"b".into()), 1);
    }

    #[test]
    fn fleet_operations_act_on_local_sockets() {
        let (_rec, adapter, ids) = setup();
        let in_a = BroadcastOptions {
            rooms: vec!["a".into()],
            ..Default::default()
        };
        adapter.local_update_rooms(&in_a, &["c".into()], true);
        assert_eq!(adapter.room_size(&"c".into()), 2);
        let infos = adapter.local_socket_infos(&BroadcastOptions {
            rooms: vec!["c".into()],
            ..Default::default()
        });
        assert_eq!(
            sorted(infos.iter().map(|i| i.id).collect()),
            sorted(vec![ids[0], ids[1]])
        );
        adapter.local_update_rooms(&in_a, &["c".into()], false);
        assert_eq!(adapter.room_size(&"c".into()), 0);
    }
}
