//! Channels and messages of `@socket.io/redis-adapter` 8.x (classic, PUBLISH/SUBSCRIBE).
//!
//! Broadcasts are msgpack `[uid, packet, opts]`; requests and responses are JSON except broadcasts with
//! acks and their acks, which are msgpack. Receivers tell the two apart by the first byte (`{` is JSON).
//! Everything is decoded into JSON values with binary placeholders, the form the rest of the server uses.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::msgpack::{self, MsgpackError};
use crate::adapter::{BroadcastOptions, Room};
use crate::codec::{Packet, PacketKind};

/// Request and response types of the classic protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestType {
    /// Socket ids in rooms (sent by adapters ≤ 7).
    Sockets = 0,
    /// Every room.
    AllRooms = 1,
    /// Make sockets join rooms.
    RemoteJoin = 2,
    /// Make sockets leave rooms.
    RemoteLeave = 3,
    /// Disconnect sockets.
    RemoteDisconnect = 4,
    /// Describe sockets (`fetchSockets`).
    RemoteFetch = 5,
    /// An event for the other servers.
    ServerSideEmit = 6,
    /// A broadcast whose recipients acknowledge.
    Broadcast = 7,
    /// Response: how many clients a node asked for acks.
    BroadcastClientCount = 8,
    /// Response: one client's ack.
    BroadcastAck = 9,
}

impl RequestType {
    /// The type of a decoded message.
    pub fn from_value(v: &Value) -> Option<Self> {
        Some(match v.get("type")?.as_u64()? {
            0 => RequestType::Sockets,
            1 => RequestType::AllRooms,
            2 => RequestType::RemoteJoin,
            3 => RequestType::RemoteLeave,
            4 => RequestType::RemoteDisconnect,
            5 => RequestType::RemoteFetch,
            6 => RequestType::ServerSideEmit,
            7 => RequestType::Broadcast,
            8 => RequestType::BroadcastClientCount,
            9 => RequestType::BroadcastAck,
            _ => return None,
        })
    }
}

/// The channels of one namespace.
#[derive(Clone, Debug)]
pub struct Channels {
    /// `<key>#<nsp>#`: broadcasts to 0 or several rooms; prefix of the room channels.
    pub broadcast: String,
    /// `<key>#<nsp>#*`: the pattern covering all broadcasts.
    pub pattern: String,
    /// `<key>-request#<nsp>#`.
    pub request: String,
    /// `<key>-response#<nsp>#`: the common response channel.
    pub response: String,
    /// `<key>-response#<nsp>#<uid>#`: responses for this node only.
    pub own_response: String,
    /// `<key>-response#<nsp>#`: prefix of every node's specific response channel.
    response_prefix: String,
}

/// `text` with Redis glob characters escaped, so a pattern built from it matches it literally.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Channels {
    /// The channels of namespace `nsp` under `key`, for the node `uid`.
    pub fn new(key: &str, nsp: &str, uid: &str) -> Self {
        let broadcast = format!("{key}#{nsp}#");
        let response = format!("{key}-response#{nsp}#");
        Channels {
            pattern: format!("{}*", glob_escape(&broadcast)),
            own_response: format!("{response}{uid}#"),
            response_prefix: response.clone(),
            broadcast,
            request: format!("{key}-request#{nsp}#"),
            response,
        }
    }

    /// The channel of a broadcast: the room's own channel for exactly one room, the namespace's otherwise.
    pub fn for_broadcast(&self, opts: &BroadcastOptions) -> String {
        match opts.rooms.as_slice() {
            [room] => format!("{}{}#", self.broadcast, room),
            _ => self.broadcast.clone(),
        }
    }

    /// The room a broadcast channel names (`Some("")` for the namespace channel), `None` if not ours.
    pub fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.broadcast.as_str())?;
        if rest.is_empty() {
            return Some("");
        }
        rest.strip_suffix('#')
    }

    /// The channel a responder answers `requester` on.
    pub fn response_for(&self, requester: Option<&str>, specific: bool) -> String {
        match requester {
            Some(uid) if specific => format!("{}{uid}#", self.response_prefix),
            _ => self.response.clone(),
        }
    }

    /// Whether `channel` carries responses for this namespace.
    pub fn is_response(&self, channel: &str) -> bool {
        channel == self.response || channel == self.own_response
    }
}

/// A message that is neither JSON nor msgpack of the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not msgpack.
    #[error(transparent)]
    Msgpack(#[from] MsgpackError),
    /// Decoded, but not the expected structure.
    #[error("unexpected message shape: {0}")]
    Shape(&'static str),
    /// Refused before decoding: too many values or too deep.
    #[error("refused before decoding: {0}")]
    Bounds(#[from] super::bounds::BoundsError),
}

/// Decodes a request or response: JSON when it starts with `{`, msgpack otherwise.
pub fn decode_any(bytes: &[u8]) -> Result<(Value, Vec<Bytes>), WireError> {
    if bytes.first() == Some(&b'{') {
        super::bounds::check_json(bytes)?;
        return Ok((serde_json::from_slice(bytes)?, Vec::new()));
    }
    super::bounds::check_msgpack(bytes)?;
    let mut attachments = Vec::new();
    let value = msgpack::to_json(msgpack::decode(bytes)?, &mut attachments);
    Ok((value, attachments))
}

/// Encodes a JSON message (requests and most responses).
pub fn encode_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Encodes a msgpack message (broadcasts, broadcast requests with acks and their acks).
pub fn encode_msgpack(value: &Value, attachments: &[Bytes]) -> Vec<u8> {
    msgpack::encode(&msgpack::from_json(value, attachments))
}

fn rooms_json(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

/// `{rooms, except}` as requests carry it.
pub fn opts_json(opts: &BroadcastOptions) -> Value {
    json!({ "rooms": rooms_json(&opts.rooms), "except": rooms_json(&opts.except) })
}

/// `{rooms, except, flags}` as broadcasts carry it.
pub fn broadcast_opts_json(opts: &BroadcastOptions, timeout_ms: Option<u64>) -> Value {
    let mut flags = Map::new();
    if opts.volatile {
        flags.insert("volatile".into(), Value::Bool(true));
    }
    if let Some(ms) = timeout_ms {
        flags.insert("timeout".into(), Value::from(ms));
    }
    json!({ "rooms": rooms_json(&opts.rooms), "except": rooms_json(&opts.except), "flags": flags })
}

/// Room names as Node may send them: strings, or numbers (which JS allows as room names).
pub fn parse_rooms(v: Option<&Value>) -> Vec<Room> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|r| match r {
            Value::String(s) => Some(Room::from(s.as_str())),
            Value::Number(n) => Some(Room::from(n.to_string())),
            _ => None,
        })
        .collect()
}

/// Reads `{rooms, except, flags}`; missing parts mean "none".
pub fn parse_opts(v: Option<&Value>) -> BroadcastOptions {
    let volatile = v
        .and_then(|o| o.get("flags"))
        .and_then(|f| f.get("volatile"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    BroadcastOptions {
        rooms: parse_rooms(v.and_then(|o| o.get("rooms"))),
        except: parse_rooms(v.and_then(|o| o.get("except"))),
        volatile,
        local: true,
    }
}

/// Room names of a request (`rooms` list, or the legacy single `room`).
pub fn request_rooms(v: &Value) -> Vec<Room> {
    let mut rooms = parse_rooms(v.get("rooms"));
    if let Some(room) = v.get("room") {
        rooms.extend(parse_rooms(Some(&Value::Array(vec![room.clone()]))));
    }
    rooms
}

/// The packet object `{type, data, nsp}` of a broadcast.
pub fn packet_json(packet: &Packet) -> Value {
    let mut map = Map::with_capacity(3);
    map.insert("type".into(), Value::from(PacketKind::Event.as_u8()));
    map.insert(
        "data".into(),
        packet.data.clone().unwrap_or(Value::Array(Vec::new())),
    );
    map.insert("nsp".into(), Value::String(packet.nsp.clone()));
    Value::Object(map)
}

/// Reads a packet object; binary event packets (socket.io 2 senders) count as events.
pub fn parse_packet(
    v: &Value,
    attachments: Vec<Bytes>,
    default_nsp: &str,
) -> Result<Packet, WireError> {
    let kind = v.get("type").and_then(Value::as_u64);
    if !matches!(kind, Some(2) | Some(5)) {
        return Err(WireError::Shape("packet type is not an event"));
    }
    let data = v
        .get("data")
        .filter(|d| d.is_array())
        .cloned()
        .ok_or(WireError::Shape("packet data is not an array"))?;
    let nsp = v
        .get("nsp")
        .and_then(Value::as_str)
        .unwrap_or(default_nsp)
        .to_owned();
    Ok(Packet {
        kind: PacketKind::Event,
        nsp,
        id: None,
        data: Some(data),
        attachments,
    })
}

/// A broadcast read from Redis.
pub struct IncomingBroadcast {
    /// The sending node's uid (`"emitter"` for the emitter).
    pub uid: String,
    /// The event.
    pub packet: Packet,
    /// Targeting (marked local: it must not be published again).
    pub opts: BroadcastOptions,
}

/// Encodes a broadcast `[uid, packet, opts]`.
pub fn encode_broadcast(uid: &str, packet: &Packet, opts: &BroadcastOptions) -> Vec<u8> {
    let message = json!([uid, packet_json(packet), broadcast_opts_json(opts, None)]);
    encode_msgpack(&message, &packet.attachments)
}

/// Decodes a broadcast.
pub fn decode_broadcast(bytes: &[u8], default_nsp: &str) -> Result<IncomingBroadcast, WireError> {
    super::bounds::check_msgpack(bytes)?;
    let mut attachments = Vec::new();
    let value = msgpack::to_json(msgpack::decode(bytes)?, &mut attachments);
    let Value::Array(mut parts) = value else {
        return Err(WireError::Shape("broadcast is not an array"));
    };
    if parts.len() < 2 {
        return Err(WireError::Shape("broadcast has fewer than 2 parts"));
    }
    let opts = parse_opts(parts.get(2));
    let packet = parse_packet(&parts[1], attachments, default_nsp)?;
    let uid = match parts.swap_remove(0) {
        Value::String(uid) => uid,
        _ => String::new(),
    };
    Ok(IncomingBroadcast { uid, packet, opts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_match_node() {
        let c = Channels::new("socket.io", "/", "2hVDiL");
        assert_eq!(c.broadcast, "socket.io#/#");
        assert_eq!(c.pattern, "socket.io#/#*");
        let globby = Channels::new("k[1]", "/a*?\\", "2hVDiL");
        assert_eq!(globby.pattern, "k\\[1\\]#/a\\*\\?\\\\#*");
        assert_eq!(c.request, "socket.io-request#/#");
        assert_eq!(c.response, "socket.io-response#/#");
        assert_eq!(c.own_response, "socket.io-response#/#2hVDiL#");
        let one = BroadcastOptions {
            rooms: vec!["room1".into()],
            ..Default::default()
        };
        assert_eq!(c.for_broadcast(&one), "socket.io#/#room1#");
        let two = BroadcastOptions {
            rooms: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(c.for_broadcast(&two), "socket.io#/#");
        assert_eq!(c.room_of("socket.io#/#room1#"), Some("room1"));
        assert_eq!(c.room_of("socket.io#/#"), Some(""));
        assert_eq!(c.room_of("socket.io#/admin#x#"), None);
        assert_eq!(
            c.response_for(Some("abc"), true),
            "socket.io-response#/#abc#"
        );
        assert_eq!(c.response_for(Some("abc"), false), "socket.io-response#/#");
    }

    #[test]
    fn broadcast_round_trip_with_binary() {
        let packet = Packet {
            kind: PacketKind::BinaryEvent,
            nsp: "/".into(),
            id: None,
            data: Some(json!(["e", {"_placeholder": true, "num": 0}])),
            attachments: vec![Bytes::from_static(&[7])],
        };
        let opts = BroadcastOptions {
            rooms: vec!["r".into()],
            except: vec!["x".into()],
            volatile: true,
            local: false,
        };
        let bytes = encode_broadcast("uid123", &packet, &opts);
        let back = decode_broadcast(&bytes, "/").unwrap();
        assert_eq!(back.uid, "uid123");
        assert_eq!(back.packet.data, packet.data);
        assert_eq!(back.packet.attachments, packet.attachments);
        assert_eq!(back.opts.rooms, opts.rooms);
        assert_eq!(back.opts.except, opts.except);
        assert!(back.opts.volatile && back.opts.local);
    }

    #[test]
    fn emitter_broadcast_with_numeric_room_and_flags_first() {
        // ["emitter", {type:2,data:["e",1],nsp:"/"}, {rooms:[42],flags:{volatile:true},except:[]}]
        let value = json!(["emitter", {"type": 2, "data": ["e", 1], "nsp": "/"}, {"rooms": [42], "flags": {"volatile": true}, "except": []}]);
        let bytes = encode_msgpack(&value, &[]);
        let b = decode_broadcast(&bytes, "/").unwrap();
        assert_eq!(b.uid, "emitter");
        assert_eq!(b.opts.rooms, vec![Room::from("42")]);
        assert!(b.opts.volatile);
    }

    #[test]
    fn refuses_malformed_broadcasts() {
        assert!(decode_broadcast(&encode_msgpack(&json!({"a": 1}), &[]), "/").is_err());
        assert!(
            decode_broadcast(
                &encode_msgpack(&json!(["u", {"type": 0, "data": []}]), &[]),
                "/"
            )
            .is_err()
        );
        assert!(
            decode_broadcast(
                &encode_msgpack(&json!(["u", {"type": 2, "data": "x"}]), &[]),
                "/"
            )
            .is_err()
        );
        assert!(decode_broadcast(b"\xc1", "/").is_err());
    }

    #[test]
    fn membership_and_fetch_requests_are_node_json() {
        let opts = BroadcastOptions {
            rooms: vec!["room1".into()],
            ..Default::default()
        };
        let body = json!({"uid": "2hVDiL", "type": 2, "opts": opts_json(&opts), "rooms": ["room2", "room3"]});
        assert_eq!(
            String::from_utf8(encode_json(&body)).unwrap(),
            r#"{"uid":"2hVDiL","type":2,"opts":{"rooms":["room1"],"except":[]},"rooms":["room2","room3"]}"#
        );
    }

    #[test]
    fn requests_decode_from_json_or_msgpack() {
        let (v, _) = decode_any(
            br#"{"uid":"a","requestId":"b","type":5,"opts":{"rooms":["r"],"except":[]}}"#,
        )
        .unwrap();
        assert_eq!(RequestType::from_value(&v), Some(RequestType::RemoteFetch));
        assert_eq!(parse_opts(v.get("opts")).rooms, vec![Room::from("r")]);
        let mp = encode_msgpack(&json!({"type": 9, "requestId": "x", "packet": "ack"}), &[]);
        let (v, _) = decode_any(&mp).unwrap();
        assert_eq!(RequestType::from_value(&v), Some(RequestType::BroadcastAck));
        assert!(decode_any(b"{nope").is_err());
    }
}
