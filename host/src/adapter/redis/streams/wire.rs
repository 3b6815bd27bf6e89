//! The bytes of `@socket.io/redis-streams-adapter` 0.3: stream entries, stream ids (the offsets
//! clients hold) and the sessions it keeps for connection state recovery.
//!
//! An entry has the fields `uid`, `nsp`, `type` (the cluster message code, as a decimal string) and
//! `data`: JSON, or base64 of msgpack when binary travels. Entries without `nsp` are skipped by every
//! reader (ioplex writes one to give an empty stream its first id). A session is stored under
//! `<prefix><pid>` as base64 of msgpack `{sid, pid, rooms, data}`; ioplex adds `nsp`, `from` (the
//! stream id when the socket connected, so a client that never received a packet recovers too),
//! `node` (the adapter holding the socket) and `user` (the user its connect authorizer named), which
//! Node's adapter ignores.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::adapter::redis::msgpack;
use crate::adapter::redis::sharded_wire::Envelope;
use crate::adapter::redis::wire::{self, WireError};
use crate::adapter::{PersistedSession, Room};
use crate::sid::Sid;

/// A stream entry id, `<ms>-<seq>`: ordered, and the offset a client holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Parses `<ms>-<seq>` (what Node's adapter accepts as an offset: digits, a dash, digits).
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one (an exclusive range start that Redis < 6.2 also reads).
    pub fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One entry's fields: `(uid, nsp, type, data)`; `nsp` absent for entries readers skip.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawEntry {
    /// Sender.
    pub uid: String,
    /// Namespace; `None` for a marker entry.
    pub nsp: Option<String>,
    /// The message code, as sent.
    pub kind: String,
    /// `data` as sent.
    pub data: Option<String>,
}

impl RawEntry {
    /// Reads the field list of an entry (`[k, v, k, v, …]`).
    pub fn from_fields(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut entry = RawEntry::default();
        for (key, value) in fields {
            match key.as_str() {
                "uid" => entry.uid = value,
                "nsp" => entry.nsp = Some(value),
                "type" => entry.kind = value,
                "data" => entry.data = Some(value),
                _ => {}
            }
        }
        entry
    }

    /// Bytes the entry holds (checked against the size limit before decoding).
    pub fn len(&self) -> usize {
        self.data.as_ref().map_or(0, String::len)
    }

    /// Whether the entry carries no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes the message; `Ok(None)` for markers and types this node ignores.
    pub fn decode(self) -> Result<Option<Envelope>, WireError> {
        let Some(nsp) = self.nsp else {
            return Ok(None);
        };
        let kind: u64 = self
            .kind
            .parse()
            .map_err(|_| WireError::Shape("entry type is not a number"))?;
        let (data, attachments) = match self.data.as_deref() {
            None | Some("") => (Value::Null, Vec::new()),
            Some(text) if text.starts_with('{') => wire::decode_any(text.as_bytes())?,
            Some(text) => {
                let bytes = BASE64
                    .decode(text)
                    .map_err(|_| WireError::Shape("entry data is neither JSON nor base64"))?;
                wire::decode_any(&bytes)?
            }
        };
        Envelope::from_parts(self.uid, nsp, kind, data, attachments)
    }
}

/// The fields of `message` as an entry: JSON data, or base64 msgpack when it carries binary.
pub fn entry_fields(message: &Envelope) -> Vec<(&'static str, String)> {
    let (kind, data, attachments) = message.type_and_data();
    let data = if attachments.is_empty() {
        wire::encode_json(&data)
    } else {
        BASE64
            .encode(wire::encode_msgpack(&data, attachments))
            .into_bytes()
    };
    vec![
        ("uid", message.uid.clone()),
        ("nsp", message.nsp.clone()),
        ("type", kind.to_string()),
        ("data", String::from_utf8(data).unwrap_or_default()),
    ]
}

/// A session as ioplex stores it: Node's fields plus where it was kept.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSession {
    /// What recovery restores.
    pub session: PersistedSession,
    /// Its namespace (ioplex's sessions only; Node's carry none).
    pub nsp: Option<String>,
    /// The stream id when the socket first connected (ioplex's sessions only).
    pub from: Option<StreamId>,
    /// The adapter that holds the socket now (ioplex's sessions only).
    pub node: Option<String>,
}

impl StoredSession {
    /// The value stored under the session key.
    pub fn encode(&self) -> String {
        let s = &self.session;
        let mut map = Map::new();
        map.insert("sid".into(), Value::String(s.sid.to_string()));
        map.insert("pid".into(), Value::String(s.pid.clone()));
        map.insert(
            "rooms".into(),
            Value::Array(
                s.rooms
                    .iter()
                    .map(|r| Value::String(r.to_string()))
                    .collect(),
            ),
        );
        map.insert("data".into(), s.data.clone());
        if let Some(user) = &s.user_id {
            map.insert("user".into(), Value::String(user.clone()));
        }
        if let Some(nsp) = &self.nsp {
            map.insert("nsp".into(), Value::String(nsp.clone()));
        }
        if let Some(from) = self.from {
            map.insert("from".into(), Value::String(from.to_string()));
        }
        if let Some(node) = &self.node {
            map.insert("node".into(), Value::String(node.clone()));
        }
        let mp = msgpack::from_json(&Value::Object(map), &[]);
        BASE64.encode(msgpack::encode(&mp))
    }

    /// Reads a stored session, Node's or ioplex's.
    pub fn decode(text: &str) -> Result<Self, WireError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| WireError::Shape("session is not base64"))?;
        crate::adapter::redis::bounds::check_msgpack(&bytes)?;
        let mut attachments: Vec<Bytes> = Vec::new();
        let value = msgpack::to_json(msgpack::decode(&bytes)?, &mut attachments);
        let str_of = |key: &str| value.get(key).and_then(Value::as_str);
        let sid = str_of("sid")
            .and_then(Sid::parse)
            .ok_or(WireError::Shape("session without a valid sid"))?;
        let pid = str_of("pid")
            .ok_or(WireError::Shape("session without a pid"))?
            .to_owned();
        Ok(StoredSession {
            session: PersistedSession {
                sid,
                pid,
                rooms: wire::parse_rooms(value.get("rooms")),
                data: value.get("data").cloned().unwrap_or(Value::Null),
                user_id: str_of("user").map(str::to_owned),
            },
            nsp: str_of("nsp").map(str::to_owned),
            from: str_of("from").and_then(StreamId::parse),
            node: str_of("node").map(str::to_owned),
        })
    }
}

/// Whether a logged broadcast reached a session (Node's `shouldIncludePacket`): to everyone or to
/// one of its rooms, and to none of its excluded rooms.
pub fn addressed_to(rooms: &[Room], except: &[Room], session_rooms: &[Room]) -> bool {
    (rooms.is_empty() || rooms.iter().any(|r| session_rooms.contains(r)))
        && !except.iter().any(|r| session_rooms.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::BroadcastOptions;
    use crate::adapter::redis::messages::Request;
    use crate::adapter::redis::sharded_wire::ShardedMessage;
    use crate::codec::{Packet, PacketKind};
    use serde_json::json;

    /// A broadcast as sent; as received, its options say `local` (deliver here, do not pass on).
    fn broadcast(attachments: Vec<Bytes>, received: bool) -> Envelope {
        Envelope {
            uid: "abc".into(),
            nsp: "/".into(),
            message: ShardedMessage::Request {
                request_id: None,
                request: Request::Broadcast {
                    packet: Packet {
                        kind: PacketKind::Event,
                        nsp: "/".into(),
                        id: None,
                        data: Some(if attachments.is_empty() {
                            json!(["e", 1])
                        } else {
                            json!(["e", {"_placeholder": true, "num": 0}])
                        }),
                        attachments,
                    },
                    opts: BroadcastOptions {
                        rooms: vec!["r".into()],
                        local: received,
                        ..Default::default()
                    },
                    timeout_ms: None,
                },
            },
        }
    }

    fn entry_of(fields: Vec<(&'static str, String)>) -> RawEntry {
        RawEntry::from_fields(fields.into_iter().map(|(k, v)| (k.to_owned(), v)))
    }

    #[test]
    fn a_broadcast_entry_is_nodes_fields_with_json_data() {
        let fields = entry_fields(&broadcast(Vec::new(), false));
        assert_eq!(fields[2], ("type", "3".to_owned()));
        assert_eq!(
            fields[3].1,
            r#"{"packet":{"type":2,"data":["e",1],"nsp":"/"},"opts":{"rooms":["r"],"except":[],"flags":{}}}"#
        );
        let back = entry_of(fields).decode().expect("decode").expect("message");
        assert_eq!(back, broadcast(Vec::new(), true));
    }

    #[test]
    fn binary_data_is_base64_msgpack_and_comes_back_binary() {
        let binary = || vec![Bytes::from_static(&[1, 2, 3])];
        let fields = entry_fields(&broadcast(binary(), false));
        assert!(!fields[3].1.starts_with('{'), "{}", fields[3].1);
        let back = entry_of(fields).decode().expect("decode").expect("message");
        assert_eq!(back, broadcast(binary(), true));
    }

    #[test]
    fn markers_and_junk() {
        let marker = RawEntry::from_fields([("uid".to_owned(), "x".to_owned())]);
        assert_eq!(marker.decode().expect("marker"), None);
        let junk = entry_of(vec![
            ("uid", "x".into()),
            ("nsp", "/".into()),
            ("type", "3".into()),
            ("data", "%%%".into()),
        ]);
        assert!(junk.decode().is_err());
    }

    #[test]
    fn sessions_round_trip_and_nodes_decode() {
        let stored = StoredSession {
            session: PersistedSession {
                sid: Sid::random(),
                pid: "p".into(),
                rooms: vec!["a".into()],
                data: json!({"user": 1}),
                user_id: Some("agent-1".into()),
            },
            nsp: Some("/".into()),
            from: StreamId::parse("5-1"),
            node: Some("0123456789abcdef".into()),
        };
        assert_eq!(
            StoredSession::decode(&stored.encode()).expect("decode"),
            stored
        );
        // Node's session: msgpack {sid, pid, rooms, data}, no nsp or from.
        let node = msgpack::from_json(
            &json!({"sid": "AAAAAAAAAAAAAAAAAAAA", "pid": "q", "rooms": ["AAAAAAAAAAAAAAAAAAAA", "r"], "data": {}}),
            &[],
        );
        let decoded =
            StoredSession::decode(&BASE64.encode(msgpack::encode(&node))).expect("node's");
        assert_eq!(decoded.nsp, None);
        assert_eq!(decoded.session.rooms.len(), 2);
        assert!(StoredSession::decode("not base64!").is_err());
    }

    #[test]
    fn stream_ids_order_and_parse_like_node() {
        let a = StreamId::parse("1700000000000-0").expect("id");
        assert!(a < a.next());
        assert_eq!(a.next().to_string(), "1700000000000-1");
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3"] {
            assert_eq!(StreamId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn addressing_follows_rooms_and_excepts() {
        let mine: Vec<Room> = vec!["a".into(), "b".into()];
        assert!(addressed_to(&[], &[], &mine));
        assert!(addressed_to(&["b".into()], &[], &mine));
        assert!(!addressed_to(&["c".into()], &[], &mine));
        assert!(!addressed_to(&[], &["a".into()], &mine));
    }
}
