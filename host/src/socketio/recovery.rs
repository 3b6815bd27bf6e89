//! Connection state recovery (Socket.IO 4.6+) on one node: a socket whose connection drops comes
//! back with its id, rooms and data, and receives what was broadcast to it meanwhile, in order and
//! once.
//!
//! The protocol is the stock client's: the CONNECT reply carries a private session id (`pid`), each
//! logged EVENT carries its offset as its last argument, and a reconnecting client sends
//! `{pid, offset}` in its CONNECT `auth`. This log lives in the node's memory, so it serves servers
//! whose adapter keeps no fleet log (the local adapter). Unlike Node's, a client that never
//! received a packet recovers too: with no offset, it is sent everything logged for it since it
//! connected.
//!
//! Bounded: packets older than the window or past `max_packets` are dropped (a client whose offset
//! was dropped starts afresh), and saved sessions past `max_sessions` push out the oldest.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;

use crate::adapter::{BroadcastOptions, Room};
use crate::codec::EncodedPacket;
use crate::sid::Sid;

/// How long and how much a node keeps for disconnected sockets.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    /// How long a disconnected socket can come back (Node's `maxDisconnectionDuration`).
    pub window: Duration,
    /// Most broadcasts kept, all namespaces together.
    pub max_packets: usize,
    /// Most disconnected sessions kept.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            window: Duration::from_millis(120_000),
            max_packets: 10_000,
            max_sessions: 10_000,
        }
    }
}

/// What a socket had when its connection dropped.
#[derive(Clone, Debug)]
pub(crate) struct SavedSession {
    pub sid: Sid,
    pub nsp: String,
    /// Its rooms, its own id room left out.
    pub rooms: Vec<Room>,
    pub data: Value,
    pub user_id: Option<std::sync::Arc<str>>,
    /// The first sequence number it could have missed: the log's next one when it connected.
    pub from: u64,
}

struct Logged {
    seq: u64,
    at: Instant,
    nsp: String,
    rooms: Vec<Room>,
    except: Vec<Room>,
    packet: EncodedPacket,
}

struct Saved {
    session: SavedSession,
    at: Instant,
}

#[derive(Default)]
struct State {
    packets: VecDeque<Logged>,
    sessions: HashMap<String, Saved>,
    /// Saved sessions by age, for the cap (entries of restored ones are skipped when met).
    order: VecDeque<(Instant, String)>,
}

/// The node's recovery log and saved sessions, for one Socket.IO server.
pub(crate) struct Recovery {
    config: RecoveryConfig,
    /// Random per process, so offsets an earlier process handed out never match this log.
    epoch: String,
    state: Mutex<State>,
    next: std::sync::atomic::AtomicU64,
}

/// The log held while a broadcast is appended and delivered, so that a socket being restored sees
/// each packet exactly once: in its replay or live, never both.
pub(crate) struct LogGuard<'a> {
    recovery: &'a Recovery,
    state: MutexGuard<'a, State>,
}

impl LogGuard<'_> {
    /// Appends a broadcast under the offset [`Recovery::offset`] gave.
    pub fn append(&mut self, seq: u64, nsp: &str, opts: &BroadcastOptions, packet: &EncodedPacket) {
        let now = Instant::now();
        self.state.packets.push_back(Logged {
            seq,
            at: now,
            nsp: nsp.to_owned(),
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            packet: packet.clone(),
        });
        self.recovery.prune_packets(&mut self.state, now);
    }
}

impl Recovery {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        let raw: [u8; 4] = rand::random();
        Recovery {
            config,
            epoch: raw.iter().map(|b| format!("{b:02x}")).collect(),
            state: Mutex::new(State::default()),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// A fresh private session id.
    pub(crate) fn new_pid(&self) -> String {
        Sid::random().to_string()
    }

    /// The sequence number the next broadcast will get (where a socket connecting now starts).
    pub(crate) fn position(&self) -> u64 {
        self.next.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes the log for one broadcast and gives it its sequence number and offset string.
    pub(crate) fn offset(&self) -> (LogGuard<'_>, u64, String) {
        let guard = LogGuard {
            recovery: self,
            state: self.state.lock(),
        };
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        (guard, seq, format!("{}-{seq:x}", self.epoch))
    }

    fn parse_offset(&self, offset: &str) -> Option<u64> {
        let (epoch, seq) = offset.split_once('-')?;
        if epoch != self.epoch {
            return None;
        }
        u64::from_str_radix(seq, 16).ok()
    }

    fn prune_packets(&self, state: &mut State, now: Instant) {
        while state.packets.len() > self.config.max_packets
            || state
                .packets
                .front()
                .is_some_and(|p| now.duration_since(p.at) > self.config.window)
        {
            state.packets.pop_front();
        }
    }

    fn prune_sessions(&self, state: &mut State, now: Instant) {
        while let Some((at, pid)) = state.order.front() {
            let expired = now.duration_since(*at) > self.config.window;
            let over = state.sessions.len() > self.config.max_sessions;
            let stale = state.sessions.get(pid).is_none_or(|s| s.at != *at);
            if !(expired || over || stale) {
                break;
            }
            if !stale {
                state.sessions.remove(pid);
            }
            state.order.pop_front();
        }
    }

    /// Keeps a dropped socket's state for the window.
    pub(crate) fn save(&self, pid: String, session: SavedSession) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.order.push_back((now, pid.clone()));
        state.sessions.insert(pid, Saved { session, at: now });
        self.prune_sessions(&mut state, now);
    }

    /// Takes back the session `pid` of namespace `nsp`, with the packets it missed after `offset`
    /// (everything logged for it since it connected, without one). `None` when the session is
    /// unknown or expired, or the offset is not in the log any more: the client starts afresh.
    /// The returned guard holds the log until the socket is back in its rooms and its replay sent.
    pub(crate) fn restore(
        &self,
        nsp: &str,
        pid: &str,
        offset: Option<&str>,
    ) -> Option<(LogGuard<'_>, SavedSession, Vec<EncodedPacket>)> {
        let now = Instant::now();
        let mut state = self.state.lock();
        self.prune_packets(&mut state, now);
        self.prune_sessions(&mut state, now);
        let saved = state.sessions.get(pid)?;
        if saved.session.nsp != nsp {
            return None;
        }
        let after = match offset {
            Some(offset) => {
                let seq = self.parse_offset(offset)?;
                // The offset's own packet must still be logged: otherwise some after it may be gone.
                if !state.packets.iter().any(|p| p.seq == seq) {
                    return None;
                }
                seq
            }
            None => {
                let from = saved.session.from;
                let oldest = state.packets.front().map_or(self.position(), |p| p.seq);
                if from < oldest {
                    return None;
                }
                from.saturating_sub(1)
            }
        };
        let session = state.sessions.remove(pid)?.session;
        let missed = state
            .packets
            .iter()
            .filter(|p| p.seq > after && p.nsp == nsp && addressed_to(p, &session))
            .map(|p| p.packet.clone())
            .collect();
        Some((
            LogGuard {
                recovery: self,
                state,
            },
            session,
            missed,
        ))
    }
}

/// Whether a logged broadcast reached the session's socket: in a target room (or to everyone) and in
/// no excluded one. Its own id room counts.
fn addressed_to(packet: &Logged, session: &SavedSession) -> bool {
    let own = Room::of_socket(session.sid);
    let member = |room: &Room| *room == own || session.rooms.contains(room);
    (packet.rooms.is_empty() || packet.rooms.iter().any(member))
        && !packet.except.iter().any(member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Packet, PacketKind, encode};

    fn packet(text: &str) -> EncodedPacket {
        encode(&Packet {
            kind: PacketKind::Event,
            nsp: "/".into(),
            id: None,
            data: Some(Value::Array(vec![Value::String(text.into())])),
            attachments: Vec::new(),
        })
    }

    fn log(recovery: &Recovery, rooms: &[&str], text: &str) -> String {
        let (mut guard, seq, offset) = recovery.offset();
        let opts = BroadcastOptions {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            ..BroadcastOptions::default()
        };
        guard.append(seq, "/", &opts, &packet(text));
        offset
    }

    fn session(recovery: &Recovery, rooms: &[&str]) -> SavedSession {
        SavedSession {
            sid: Sid::random(),
            nsp: "/".into(),
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            data: Value::Null,
            user_id: None,
            from: recovery.position(),
        }
    }

    fn texts(packets: &[EncodedPacket]) -> Vec<String> {
        packets
            .iter()
            .map(|p| format!("{:?}", p.frames()[0]))
            .collect()
    }

    #[test]
    fn missed_packets_of_the_sessions_rooms_come_back_after_the_offset() {
        let recovery = Recovery::new(RecoveryConfig::default());
        let saved = session(&recovery, &["a"]);
        let seen = log(&recovery, &["a"], "one");
        recovery.save("pid".into(), saved);
        log(&recovery, &["b"], "not mine");
        log(&recovery, &["a"], "two");
        log(&recovery, &[], "everyone");
        let (_guard, back, missed) = recovery.restore("/", "pid", Some(&seen)).expect("restored");
        assert_eq!(back.rooms, vec![Room::from("a")]);
        let got = texts(&missed);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].contains("two") && got[1].contains("everyone"),
            "{got:?}"
        );
    }

    #[test]
    fn without_an_offset_everything_since_connecting_is_replayed() {
        let recovery = Recovery::new(RecoveryConfig::default());
        log(&recovery, &["a"], "before it connected");
        let saved = session(&recovery, &["a"]);
        log(&recovery, &["a"], "first");
        recovery.save("pid".into(), saved);
        let (_guard, _, missed) = recovery.restore("/", "pid", None).expect("restored");
        let got = texts(&missed);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("first"));
    }

    #[test]
    fn a_session_is_restored_once_and_only_in_its_namespace_and_epoch() {
        let recovery = Recovery::new(RecoveryConfig::default());
        let saved = session(&recovery, &[]);
        let offset = log(&recovery, &[], "x");
        recovery.save("pid".into(), saved);
        assert!(recovery.restore("/other", "pid", Some(&offset)).is_none());
        assert!(
            recovery.restore("/", "pid", Some("00000000-1")).is_none(),
            "another process's offset"
        );
        assert!(recovery.restore("/", "pid", Some(&offset)).is_some());
        assert!(
            recovery.restore("/", "pid", Some(&offset)).is_none(),
            "taken already"
        );
    }

    #[test]
    fn limits_drop_old_packets_and_sessions() {
        let recovery = Recovery::new(RecoveryConfig {
            max_packets: 2,
            max_sessions: 1,
            ..RecoveryConfig::default()
        });
        let first = log(&recovery, &[], "1");
        log(&recovery, &[], "2");
        log(&recovery, &[], "3");
        recovery.save("old".into(), session(&recovery, &[]));
        recovery.save("new".into(), session(&recovery, &[]));
        assert!(
            recovery.restore("/", "old", None).is_none(),
            "pushed out by the cap"
        );
        assert!(
            recovery.restore("/", "new", Some(&first)).is_none(),
            "its offset fell out of the log: start afresh"
        );
        let expired = Recovery::new(RecoveryConfig {
            window: Duration::ZERO,
            ..RecoveryConfig::default()
        });
        expired.save("pid".into(), session(&expired, &[]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            expired.restore("/", "pid", None).is_none(),
            "past the window"
        );
    }
}
