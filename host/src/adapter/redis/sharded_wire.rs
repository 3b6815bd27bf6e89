//! The messages of `@socket.io/redis-adapter` 8.3's sharded adapter (socket.io-adapter's
//! `ClusterAdapter`): the envelope `{type, data, uid, nsp}` around the same fleet operations the classic
//! adapter carries, so both speak the typed [`Request`] / [`Response`] of [`super::messages`].
//!
//! JSON, except a message whose `data` carries binary and whose type may carry it (broadcasts, fetch
//! responses, server-side emits and their answers, broadcast acks): then msgpack of the whole envelope.

use serde_json::{Map, Value, json};

use super::messages::{Request, Response, Target};
use super::wire::{
    self, WireError, broadcast_opts_json, packet_json, parse_opts, parse_packet, parse_rooms,
};
use crate::adapter::{BroadcastOptions, Room, SocketInfo};
use crate::codec::Payload;
use crate::sid::Sid;

/// The `type` codes of the cluster protocol.
mod code {
    pub const BROADCAST: u64 = 3;
    pub const SOCKETS_JOIN: u64 = 4;
    pub const SOCKETS_LEAVE: u64 = 5;
    pub const DISCONNECT_SOCKETS: u64 = 6;
    pub const FETCH_SOCKETS: u64 = 7;
    pub const FETCH_SOCKETS_RESPONSE: u64 = 8;
    pub const SERVER_SIDE_EMIT: u64 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;
    pub const BROADCAST_CLIENT_COUNT: u64 = 11;
    pub const BROADCAST_ACK: u64 = 12;
}

/// One message of a shard channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardedMessage {
    /// A request to the other nodes (a plain broadcast is a [`Request::Broadcast`] without request id).
    Request {
        /// Set when the sender waits for answers.
        request_id: Option<String>,
        /// What it asks.
        request: Request,
    },
    /// An answer, sent on the requester's own channel.
    Response {
        /// The request it answers.
        request_id: String,
        /// The answer.
        response: Response,
    },
}

/// A message with its sender and namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The sending node's uid.
    pub uid: String,
    /// The namespace it concerns.
    pub nsp: String,
    /// The message.
    pub message: ShardedMessage,
}

fn opts_json(opts: &BroadcastOptions) -> Value {
    broadcast_opts_json(opts, None)
}

fn rooms_json(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

fn socket_json(info: &SocketInfo) -> Value {
    json!({ "id": info.id.to_string(), "handshake": info.handshake, "rooms": rooms_json(&info.rooms), "data": info.data })
}

fn socket_from_json(v: &Value) -> Option<SocketInfo> {
    Some(SocketInfo {
        id: Sid::parse(v.get("id")?.as_str()?)?,
        rooms: parse_rooms(v.get("rooms")),
        data: v.get("data").cloned().unwrap_or(Value::Null),
        handshake: v.get("handshake").cloned().unwrap_or(Value::Null),
    })
}

impl Envelope {
    /// The bytes Node's sharded adapter would publish: JSON, or msgpack when binary travels.
    pub fn encode(&self) -> Vec<u8> {
        let (envelope, attachments) = self.to_value();
        if attachments.is_empty() {
            wire::encode_json(&envelope)
        } else {
            wire::encode_msgpack(&envelope, attachments)
        }
    }

    /// Always msgpack, as the Redis Streams adapter publishes its pub/sub messages.
    pub fn encode_msgpack(&self) -> Vec<u8> {
        let (envelope, attachments) = self.to_value();
        wire::encode_msgpack(&envelope, attachments)
    }

    fn to_value(&self) -> (Value, &[bytes::Bytes]) {
        let (kind, data, attachments) = self.type_and_data();
        let envelope = json!({ "type": kind, "data": data, "uid": self.uid, "nsp": self.nsp });
        (envelope, attachments)
    }

    /// The message's `type` code and `data`, with the binary attachments `data` refers to.
    pub fn type_and_data(&self) -> (u64, Value, &[bytes::Bytes]) {
        match &self.message {
            ShardedMessage::Request {
                request_id,
                request,
            } => match request {
                Request::Broadcast {
                    packet,
                    opts,
                    timeout_ms,
                } => {
                    let mut data = Map::new();
                    data.insert("packet".into(), packet_json(packet));
                    if let Some(id) = request_id {
                        data.insert("requestId".into(), Value::String(id.clone()));
                    }
                    data.insert("opts".into(), broadcast_opts_json(opts, *timeout_ms));
                    (code::BROADCAST, Value::Object(data), &packet.attachments)
                }
                Request::RemoteJoin {
                    target: Target::Matching(opts),
                    rooms,
                } => (
                    code::SOCKETS_JOIN,
                    json!({ "opts": opts_json(opts), "rooms": rooms_json(rooms) }),
                    &[],
                ),
                Request::RemoteLeave {
                    target: Target::Matching(opts),
                    rooms,
                } => (
                    code::SOCKETS_LEAVE,
                    json!({ "opts": opts_json(opts), "rooms": rooms_json(rooms) }),
                    &[],
                ),
                Request::RemoteDisconnect {
                    target: Target::Matching(opts),
                    close,
                } => (
                    code::DISCONNECT_SOCKETS,
                    json!({ "opts": opts_json(opts), "close": close }),
                    &[],
                ),
                Request::RemoteFetch { opts } => (
                    code::FETCH_SOCKETS,
                    json!({ "opts": opts_json(opts), "requestId": request_id }),
                    &[],
                ),
                Request::ServerSideEmit { data } => {
                    let mut body = Map::new();
                    if let Some(id) = request_id {
                        body.insert("requestId".into(), Value::String(id.clone()));
                    }
                    body.insert("packet".into(), Value::Array(data.clone()));
                    (code::SERVER_SIDE_EMIT, Value::Object(body), &[])
                }
                // Legacy single-socket requests and type 0/1 have no sharded form; callers never send them.
                _ => (0, Value::Null, &[]),
            },
            ShardedMessage::Response {
                request_id,
                response,
            } => match response {
                Response::Sockets(sockets) => (
                    code::FETCH_SOCKETS_RESPONSE,
                    json!({ "requestId": request_id, "sockets": sockets.iter().map(socket_json).collect::<Vec<_>>() }),
                    &[],
                ),
                Response::ServerSideEmitAck(answer) => (
                    code::SERVER_SIDE_EMIT_RESPONSE,
                    json!({ "requestId": request_id, "packet": answer }),
                    &[],
                ),
                Response::BroadcastClientCount(count) => (
                    code::BROADCAST_CLIENT_COUNT,
                    json!({ "requestId": request_id, "clientCount": count }),
                    &[],
                ),
                Response::BroadcastAck(payload) => (
                    code::BROADCAST_ACK,
                    json!({ "requestId": request_id, "packet": payload.args.first().cloned().unwrap_or(Value::Null) }),
                    &payload.attachments,
                ),
                _ => (0, Value::Null, &[]),
            },
        }
    }

    /// Reads a message; `Ok(None)` for the types this node ignores (heartbeats, unknown).
    pub fn decode(bytes: &[u8]) -> Result<Option<Envelope>, WireError> {
        let (value, attachments) = wire::decode_any(bytes)?;
        let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let uid = str_of(value.get("uid")).unwrap_or_default();
        let nsp = str_of(value.get("nsp")).unwrap_or_else(|| "/".to_owned());
        let data = value.get("data").cloned().unwrap_or(Value::Null);
        let Some(kind) = value.get("type").and_then(Value::as_u64) else {
            return Err(WireError::Shape("message without a type"));
        };
        Self::from_parts(uid, nsp, kind, data, attachments)
    }

    /// Reads a message from its parts (a stream entry carries them as separate fields).
    pub fn from_parts(
        uid: String,
        nsp: String,
        kind: u64,
        data: Value,
        attachments: Vec<bytes::Bytes>,
    ) -> Result<Option<Envelope>, WireError> {
        let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let request_id = str_of(data.get("requestId"));
        let request = |request| {
            Ok(Some(ShardedMessage::Request {
                request_id: request_id.clone(),
                request,
            }))
        };
        let response = |response| match &request_id {
            Some(id) => Ok(Some(ShardedMessage::Response {
                request_id: id.clone(),
                response,
            })),
            None => Err(WireError::Shape("response without a request id")),
        };
        let opts = || parse_opts(data.get("opts"));
        let message: Result<Option<ShardedMessage>, WireError> = match kind {
            code::BROADCAST => {
                let packet = data
                    .get("packet")
                    .ok_or(WireError::Shape("broadcast without packet"))?;
                request(Request::Broadcast {
                    packet: parse_packet(packet, attachments, &nsp)?,
                    opts: opts(),
                    timeout_ms: data
                        .get("opts")
                        .and_then(|o| o.get("flags"))
                        .and_then(|f| f.get("timeout"))
                        .and_then(Value::as_u64),
                })
            }
            code::SOCKETS_JOIN => request(Request::RemoteJoin {
                target: Target::Matching(opts()),
                rooms: parse_rooms(data.get("rooms")),
            }),
            code::SOCKETS_LEAVE => request(Request::RemoteLeave {
                target: Target::Matching(opts()),
                rooms: parse_rooms(data.get("rooms")),
            }),
            code::DISCONNECT_SOCKETS => request(Request::RemoteDisconnect {
                target: Target::Matching(opts()),
                close: data.get("close").and_then(Value::as_bool).unwrap_or(false),
            }),
            code::FETCH_SOCKETS => request(Request::RemoteFetch { opts: opts() }),
            code::SERVER_SIDE_EMIT => match data.get("packet") {
                Some(Value::Array(items)) => request(Request::ServerSideEmit {
                    data: items.clone(),
                }),
                _ => Err(WireError::Shape("server-side emit without packet")),
            },
            code::FETCH_SOCKETS_RESPONSE => response(Response::Sockets(
                data.get("sockets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(socket_from_json)
                    .collect(),
            )),
            code::SERVER_SIDE_EMIT_RESPONSE => response(Response::ServerSideEmitAck(
                data.get("packet").cloned().unwrap_or(Value::Null),
            )),
            code::BROADCAST_CLIENT_COUNT => response(Response::BroadcastClientCount(
                data.get("clientCount").and_then(Value::as_u64).unwrap_or(0) as usize,
            )),
            code::BROADCAST_ACK => response(Response::BroadcastAck(Payload {
                args: vec![data.get("packet").cloned().unwrap_or(Value::Null)],
                attachments,
            })),
            _ => Ok(None),
        };
        Ok(message?.map(|message| Envelope { uid, nsp, message }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Packet, PacketKind};

    fn envelope(message: ShardedMessage) -> Envelope {
        Envelope {
            uid: "0123456789abcdef".into(),
            nsp: "/".into(),
            message,
        }
    }

    #[test]
    fn a_broadcast_is_nodes_json_in_its_key_order() {
        let message = envelope(ShardedMessage::Request {
            request_id: None,
            request: Request::Broadcast {
                packet: Packet {
                    kind: PacketKind::Event,
                    nsp: "/".into(),
                    id: None,
                    data: Some(json!(["e", 1])),
                    attachments: vec![],
                },
                opts: BroadcastOptions {
                    rooms: vec!["r".into()],
                    ..Default::default()
                },
                timeout_ms: None,
            },
        });
        let bytes = message.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("json"),
            r#"{"type":3,"data":{"packet":{"type":2,"data":["e",1],"nsp":"/"},"opts":{"rooms":["r"],"except":[],"flags":{}}},"uid":"0123456789abcdef","nsp":"/"}"#
        );
        let back = Envelope::decode(&bytes)
            .expect("decode")
            .expect("a message");
        assert_eq!(back.uid, message.uid);
        match back.message {
            ShardedMessage::Request {
                request: Request::Broadcast { opts, .. },
                request_id: None,
            } => {
                assert_eq!(opts.rooms, vec![Room::from("r")])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_makes_the_whole_envelope_msgpack() {
        let message = envelope(ShardedMessage::Response {
            request_id: "q".into(),
            response: Response::BroadcastAck(Payload {
                args: vec![json!({"_placeholder": true, "num": 0})],
                attachments: vec![bytes::Bytes::from_static(b"\x01")],
            }),
        });
        let bytes = message.encode();
        assert_eq!(bytes[0], 0x84, "a fixmap of four keys");
        assert_eq!(Envelope::decode(&bytes).expect("decode"), Some(message));
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for message in [
            ShardedMessage::Request {
                request_id: Some("f1".into()),
                request: Request::RemoteFetch {
                    opts: BroadcastOptions {
                        rooms: vec!["a".into()],
                        local: true,
                        ..Default::default()
                    },
                },
            },
            ShardedMessage::Request {
                request_id: None,
                request: Request::RemoteJoin {
                    target: Target::Matching(BroadcastOptions {
                        local: true,
                        ..Default::default()
                    }),
                    rooms: vec!["x".into()],
                },
            },
            ShardedMessage::Request {
                request_id: Some("s".into()),
                request: Request::ServerSideEmit {
                    data: vec![json!("ping")],
                },
            },
            ShardedMessage::Response {
                request_id: "s".into(),
                response: Response::ServerSideEmitAck(json!("pong")),
            },
            ShardedMessage::Response {
                request_id: "c".into(),
                response: Response::BroadcastClientCount(2),
            },
        ] {
            let e = envelope(message);
            assert_eq!(Envelope::decode(&e.encode()).expect("decode"), Some(e));
        }
        assert_eq!(
            Envelope::decode(br#"{"type":2,"uid":"x","nsp":"/"}"#).expect("heartbeat"),
            None
        );
        assert!(
            Envelope::decode(br#"{"type":8,"data":{},"uid":"x","nsp":"/"}"#).is_err(),
            "a response needs its request id"
        );
    }
}
