//! Connection state recovery on Redis Streams: the sessions a namespace's adapter keeps (written at
//! connect and on every change) and their restore, which replays the stream from the client's offset
//! up to the reader's position and puts the socket back under the delivery lock.

use std::sync::atomic::Ordering;

use fred::interfaces::{ClientLike, KeysInterface};
use serde_json::Value;

use super::StreamsAdapter;
use super::bus::{SessionWrite, once, unavailable};
use super::wire::{RawEntry, StoredSession, StreamId, addressed_to};
use crate::adapter::redis::messages::Request;
use crate::adapter::redis::sharded_wire::{Envelope, ShardedMessage};
use crate::adapter::{
    Adapter, AdapterError, AttachRestored, BoxFuture, BroadcastPacket, PersistedSession, Room,
    SessionStore,
};
use crate::codec::EncodedPacket;
use crate::sid::Sid;

/// Stream entries a restore may read at most; past it the client starts afresh.
const MAX_REPLAY_ENTRIES: usize = 100_000;
/// Bytes of missed packets a restore may hold at most; past it the client starts afresh.
const MAX_REPLAY_BYTES: usize = 32 << 20;
/// Entries per XRANGE while a restore catches up.
const RESTORE_PAGE: u64 = 1000;

/// Reads the first page of a restore, fetched from `start` inclusive: `None` when `start` itself
/// is no longer in the stream, else the entries after it and whether the page was short.
fn split_first_page(
    mut page: Vec<(StreamId, RawEntry)>,
    start: StreamId,
) -> (Option<Vec<(StreamId, RawEntry)>>, bool) {
    if page.first().is_none_or(|(id, _)| *id != start) {
        return (None, true);
    }
    page.remove(0);
    let short = (page.len() as u64) < RESTORE_PAGE;
    (Some(page), short)
}

/// A local socket whose session this node keeps.
pub(super) struct Tracked {
    pub(super) pid: String,
    pub(super) data: Value,
    pub(super) user_id: Option<String>,
    /// The stream position when it connected (or was restored).
    pub(super) from: StreamId,
}

impl StreamsAdapter {
    /// The session value of tracked socket `sid` as it is now.
    pub(super) fn stored(&self, sid: Sid, tracked: &Tracked) -> String {
        StoredSession {
            session: PersistedSession {
                sid,
                pid: tracked.pid.clone(),
                rooms: self.local.socket_rooms(sid),
                data: tracked.data.clone(),
                user_id: tracked.user_id.clone(),
            },
            nsp: Some(self.nsp.clone()),
            from: Some(tracked.from),
            node: Some(self.uid.clone()),
        }
        .encode()
    }

    /// Writes again the sessions of tracked sockets among `sids` (their rooms changed).
    pub(super) fn rooms_changed(&self, sids: impl IntoIterator<Item = Sid>) {
        let tracked = self.tracked.lock();
        if tracked.is_empty() {
            return;
        }
        for sid in sids {
            if let Some(t) = tracked.get(&sid) {
                self.bus
                    .write_session(&t.pid, SessionWrite::Set(self.stored(sid, t)));
            }
        }
    }

    /// Every tracked session as it is now: `(pid, value)`.
    pub(super) fn tracked_sessions(&self) -> Vec<(String, String)> {
        self.tracked
            .lock()
            .iter()
            .map(|(sid, t)| (t.pid.clone(), self.stored(*sid, t)))
            .collect()
    }

    /// The packets a restored session missed among `entries`, each with its offset: broadcasts of
    /// this namespace to its rooms, volatile ones left out.
    pub(super) fn missed(
        &self,
        entries: Vec<(StreamId, RawEntry)>,
        rooms: &[Room],
        into: &mut Vec<(StreamId, EncodedPacket)>,
    ) {
        for (id, entry) in entries {
            if entry.nsp.as_deref() != Some(self.nsp.as_str())
                || entry.kind != "3"
                || entry.len() > self.bus.config.max_message_bytes
            {
                continue;
            }
            let Ok(Some(Envelope {
                message:
                    ShardedMessage::Request {
                        request_id: None,
                        request:
                            Request::Broadcast {
                                mut packet, opts, ..
                            },
                    },
                ..
            })) = entry.decode()
            else {
                continue;
            };
            // A volatile packet is one a client may miss (as live, when it is behind).
            if opts.volatile || !addressed_to(&opts.rooms, &opts.except, rooms) {
                continue;
            }
            if let Some(Value::Array(args)) = &mut packet.data {
                args.push(Value::String(id.to_string()));
            }
            into.push((id, BroadcastPacket::new(packet).encoded().clone()));
        }
    }
}

impl SessionStore for StreamsAdapter {
    fn track(&self, sid: Sid, pid: &str, data: Value, user_id: Option<&str>) {
        let from = self
            .joined_at
            .lock()
            .get(&sid)
            .copied()
            .unwrap_or_else(|| self.bus.position());
        let tracked = Tracked {
            pid: pid.to_owned(),
            data,
            user_id: user_id.map(str::to_owned),
            from,
        };
        self.bus
            .write_session(pid, SessionWrite::Set(self.stored(sid, &tracked)));
        self.tracked.lock().insert(sid, tracked);
    }

    fn update_data(&self, sid: Sid, data: Value) {
        let mut tracked = self.tracked.lock();
        if let Some(t) = tracked.get_mut(&sid) {
            t.data = data;
            self.bus
                .write_session(&t.pid, SessionWrite::Set(self.stored(sid, t)));
        }
    }

    fn untrack(&self, sid: Sid, keep: bool) {
        let Some(t) = self.tracked.lock().remove(&sid) else {
            return;
        };
        let value = keep.then(|| self.stored(sid, &t));
        let node = self.uid.clone();
        self.bus
            .write_session(&t.pid, SessionWrite::Release { value, node });
    }

    fn restore<'a>(
        &'a self,
        pid: &'a str,
        offset: Option<&'a str>,
        attach: AttachRestored<'a>,
    ) -> BoxFuture<'a, Result<bool, AdapterError>> {
        Box::pin(async move {
            let restored = self.try_restore(pid, offset, attach).await;
            let counter = match restored {
                Ok(true) => &self.bus.stats.restored,
                _ => &self.bus.stats.not_restored,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            restored
        })
    }
}

impl StreamsAdapter {
    pub(super) async fn try_restore(
        &self,
        pid: &str,
        offset: Option<&str>,
        mut attach: AttachRestored<'_>,
    ) -> Result<bool, AdapterError> {
        let start = match offset {
            Some(offset) => match StreamId::parse(offset) {
                Some(id) => Some(id),
                None => return Ok(false),
            },
            None => None,
        };
        let key = self.bus.session_key(pid);
        let take_session = async {
            self.bus
                .publisher
                .with_options(&once())
                .getdel::<Option<String>, _>(&key)
                .await
                .map_err(unavailable)
        };
        // With the client's offset known, the session and the stream from that offset at once.
        let (raw, mut first_page) = match start {
            Some(start) => {
                let (raw, page) =
                    tokio::join!(take_session, self.bus.entries_from(start, RESTORE_PAGE + 1));
                (raw?, Some(page?))
            }
            None => (take_session.await?, None),
        };
        let Some(stored) = raw.and_then(|raw| StoredSession::decode(&raw).ok()) else {
            return Ok(false);
        };
        if stored.nsp.as_deref().is_some_and(|nsp| nsp != self.nsp) || stored.session.pid != pid {
            return Ok(false);
        }
        // With no offset the client never received a packet: everything since it connected.
        let Some(start) = start.or(stored.from) else {
            return Ok(false);
        };
        let rooms = stored.session.rooms.clone();
        let reader_deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut missed = Vec::new();
        let mut covered = start;
        let (mut fetched, mut held) = (0usize, 0usize);
        loop {
            let (page, short) = if covered == start {
                // Read from the offset itself (fetched with the session when the client sent one).
                let page = match first_page.take() {
                    Some(page) => page,
                    None => self.bus.entries_from(start, RESTORE_PAGE + 1).await?,
                };
                split_first_page(page, start)
            } else {
                let page = self.bus.entries_from(covered.next(), RESTORE_PAGE).await?;
                let short = (page.len() as u64) < RESTORE_PAGE;
                (Some(page), short)
            };
            // The offset's own entry must still be in the stream: otherwise some after it may be gone.
            let Some(page) = page else {
                return Ok(false);
            };
            fetched += page.len();
            let bytes: usize = page.iter().map(|(_, e)| e.len()).sum();
            if bytes > MAX_REPLAY_BYTES.saturating_sub(held) {
                return Ok(false);
            }
            held += bytes;
            if let Some((last, _)) = page.last() {
                covered = *last;
            }
            self.missed(page, &rooms, &mut missed);
            if fetched > MAX_REPLAY_ENTRIES {
                return Ok(false);
            }
            if !short {
                continue;
            }
            match self.commit(start, covered, &mut missed, &stored.session, attach) {
                None => return Ok(true),
                Some(back) => attach = back,
            }
            // This node's reader has not reached the client's offset yet (another node delivered
            // it first): wait for it, or entries the client has would reach it again live.
            if self.bus.position() < start {
                if tokio::time::Instant::now() >= reader_deadline {
                    return Err(AdapterError::Unavailable(
                        "this node's stream reader is behind the client's offset".into(),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// Puts the socket back if the reader's position lies between the client's offset `start` and
    /// what `missed` covers, replaying the entries up to it and leaving later ones to be delivered
    /// live; otherwise hands `attach` back (to fetch more, or to wait for the reader).
    pub(super) fn commit<'a>(
        &self,
        start: StreamId,
        covered: StreamId,
        missed: &mut Vec<(StreamId, EncodedPacket)>,
        session: &PersistedSession,
        attach: AttachRestored<'a>,
    ) -> Option<AttachRestored<'a>> {
        let _order = self.bus.delivery.lock();
        let position = self.bus.position();
        if position > covered || position < start {
            return Some(attach);
        }
        let packets = std::mem::take(missed)
            .into_iter()
            .filter(|(id, _)| *id <= position)
            .map(|(_, p)| p)
            .collect();
        attach(session.clone(), packets);
        None
    }
}
