//! The fleet's requests and responses as Rust types, shared by every Redis adapter.
//!
//! On the wire they are `@socket.io/redis-adapter`'s: JSON objects with a numeric `type`
//! ([`RequestType`]), `uid` (the sender), `requestId` when an answer is expected, and the request's own
//! fields; a broadcast with acks and its acks travel as msgpack, so binary survives. Decoding turns
//! that into [`RequestMessage`] / [`ResponseMessage`] once, so adapters match on variants instead of
//! reading JSON fields; encoding writes the fields in Node's order (the byte-vector tests pin it).

use serde_json::{Map, Value, json};

use super::wire::{
    self, RequestType, WireError, broadcast_opts_json, opts_json, packet_json, parse_opts,
    parse_packet, parse_rooms, request_rooms,
};
use crate::adapter::{AdapterError, BroadcastAcks, BroadcastOptions, Room, SocketInfo};
use crate::codec::{Packet, Payload};
use crate::sid::Sid;

/// Which sockets a membership or disconnect request addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Every socket the options select (adapter 8 and ioplex); not answered.
    Matching(BroadcastOptions),
    /// One socket by id (adapters ≤ 7); the node holding it answers `{requestId}`.
    Socket(Sid),
}

/// What a node asks the others.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Socket ids in rooms (sent by adapters ≤ 7).
    Sockets {
        /// The rooms; none: every socket.
        rooms: Vec<Room>,
    },
    /// Every room.
    AllRooms,
    /// Make sockets join rooms.
    RemoteJoin {
        /// Who joins.
        target: Target,
        /// What they join.
        rooms: Vec<Room>,
    },
    /// Make sockets leave rooms.
    RemoteLeave {
        /// Who leaves.
        target: Target,
        /// What they leave.
        rooms: Vec<Room>,
    },
    /// Disconnect sockets.
    RemoteDisconnect {
        /// Who is disconnected.
        target: Target,
        /// Close the underlying connection too.
        close: bool,
    },
    /// Describe sockets (`fetchSockets`).
    RemoteFetch {
        /// Which sockets.
        opts: BroadcastOptions,
    },
    /// An event for the other servers' `serverSideEmit` handlers.
    ServerSideEmit {
        /// The event name and arguments.
        data: Vec<Value>,
    },
    /// A broadcast whose recipients acknowledge.
    Broadcast {
        /// The event, binary attachments included.
        packet: Packet,
        /// Its targets.
        opts: BroadcastOptions,
        /// How long the sender waits for acks, in ms.
        timeout_ms: Option<u64>,
    },
}

/// A request with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMessage {
    /// The sending node's uid (absent from the emitter's messages).
    pub uid: Option<String>,
    /// Present when the sender waits for answers.
    pub request_id: Option<String>,
    /// What it asks.
    pub request: Request,
}

impl RequestMessage {
    /// Decodes a message of the request channel; `Ok(None)` for a type no node answers (responses,
    /// unknown types), which are ignored as Node ignores them.
    pub fn decode(bytes: &[u8], default_nsp: &str) -> Result<Option<Self>, WireError> {
        let (value, attachments) = wire::decode_any(bytes)?;
        let Some(kind) = RequestType::from_value(&value) else {
            return Ok(None);
        };
        let str_field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        let target = || match value.get("opts") {
            Some(opts) => Some(Target::Matching(parse_opts(Some(opts)))),
            None => value
                .get("sid")
                .and_then(Value::as_str)
                .and_then(Sid::parse)
                .map(Target::Socket),
        };
        let request = match kind {
            RequestType::Sockets => Request::Sockets {
                rooms: request_rooms(&value),
            },
            RequestType::AllRooms => Request::AllRooms,
            RequestType::RemoteJoin | RequestType::RemoteLeave => {
                let Some(target) = target() else {
                    return Err(WireError::Shape("membership request names no sockets"));
                };
                let rooms = request_rooms(&value);
                if kind == RequestType::RemoteJoin {
                    Request::RemoteJoin { target, rooms }
                } else {
                    Request::RemoteLeave { target, rooms }
                }
            }
            RequestType::RemoteDisconnect => Request::RemoteDisconnect {
                target: target().ok_or(WireError::Shape("disconnect request names no sockets"))?,
                close: value.get("close").and_then(Value::as_bool).unwrap_or(false),
            },
            RequestType::RemoteFetch => Request::RemoteFetch {
                opts: parse_opts(value.get("opts")),
            },
            RequestType::ServerSideEmit => match value.get("data") {
                Some(Value::Array(data)) => Request::ServerSideEmit { data: data.clone() },
                _ => return Err(WireError::Shape("server-side emit without data")),
            },
            RequestType::Broadcast => {
                let packet = value
                    .get("packet")
                    .ok_or(WireError::Shape("broadcast without packet"))?;
                let opts = value.get("opts");
                Request::Broadcast {
                    packet: parse_packet(packet, attachments, default_nsp)?,
                    opts: parse_opts(opts),
                    timeout_ms: opts
                        .and_then(|o| o.get("flags"))
                        .and_then(|f| f.get("timeout"))
                        .and_then(Value::as_u64),
                }
            }
            RequestType::BroadcastClientCount | RequestType::BroadcastAck => return Ok(None),
        };
        Ok(Some(RequestMessage {
            uid: str_field("uid"),
            request_id: str_field("requestId"),
            request,
        }))
    }

    /// The bytes Node's adapter would publish for this request.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Map::new();
        if let Some(uid) = &self.uid {
            body.insert("uid".into(), Value::String(uid.clone()));
        }
        if let Some(id) = &self.request_id {
            body.insert("requestId".into(), Value::String(id.clone()));
        }
        body.insert("type".into(), Value::from(self.request.kind() as u8));
        let target_json = |body: &mut Map<String, Value>, target: &Target| match target {
            Target::Matching(opts) => body.insert("opts".into(), opts_json(opts)),
            Target::Socket(sid) => body.insert("sid".into(), Value::String(sid.to_string())),
        };
        match &self.request {
            Request::Sockets { rooms } => {
                body.insert("rooms".into(), rooms_json(rooms));
            }
            Request::AllRooms => {}
            Request::RemoteJoin { target, rooms } | Request::RemoteLeave { target, rooms } => {
                target_json(&mut body, target);
                body.insert("rooms".into(), rooms_json(rooms));
            }
            Request::RemoteDisconnect { target, close } => {
                target_json(&mut body, target);
                body.insert("close".into(), Value::Bool(*close));
            }
            Request::RemoteFetch { opts } => {
                body.insert("opts".into(), opts_json(opts));
            }
            Request::ServerSideEmit { data } => {
                body.insert("data".into(), Value::Array(data.clone()));
            }
            Request::Broadcast {
                packet,
                opts,
                timeout_ms,
            } => {
                body.insert("packet".into(), packet_json(packet));
                body.insert("opts".into(), broadcast_opts_json(opts, *timeout_ms));
                return wire::encode_msgpack(&Value::Object(body), &packet.attachments);
            }
        }
        wire::encode_json(&Value::Object(body))
    }
}

impl Request {
    /// Its numeric wire type.
    pub fn kind(&self) -> RequestType {
        match self {
            Request::Sockets { .. } => RequestType::Sockets,
            Request::AllRooms => RequestType::AllRooms,
            Request::RemoteJoin { .. } => RequestType::RemoteJoin,
            Request::RemoteLeave { .. } => RequestType::RemoteLeave,
            Request::RemoteDisconnect { .. } => RequestType::RemoteDisconnect,
            Request::RemoteFetch { .. } => RequestType::RemoteFetch,
            Request::ServerSideEmit { .. } => RequestType::ServerSideEmit,
            Request::Broadcast { .. } => RequestType::Broadcast,
        }
    }
}

/// What a node answers a request with.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Socket ids, for [`Request::Sockets`].
    SocketIds(Vec<Sid>),
    /// Rooms, for [`Request::AllRooms`].
    Rooms(Vec<Room>),
    /// Socket descriptions, for [`Request::RemoteFetch`].
    Sockets(Vec<SocketInfo>),
    /// A legacy membership or disconnect request was applied.
    Done,
    /// One server's answer to a server-side emit with ack.
    ServerSideEmitAck(Value),
    /// How many clients a node asked for acks of a [`Request::Broadcast`].
    BroadcastClientCount(usize),
    /// One client's ack of a [`Request::Broadcast`] (its first argument: only that travels, as in Node).
    BroadcastAck(Payload),
}

/// A response with the id of the request it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMessage {
    /// The request it answers.
    pub request_id: String,
    /// The answer.
    pub response: Response,
}

impl ResponseMessage {
    /// Decodes a message of a response channel; `Ok(None)` when it carries no request id.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, WireError> {
        let (value, attachments) = wire::decode_any(bytes)?;
        let Some(request_id) = value
            .get("requestId")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        let response = match RequestType::from_value(&value) {
            Some(RequestType::ServerSideEmit) => {
                Response::ServerSideEmitAck(value.get("data").cloned().unwrap_or(Value::Null))
            }
            Some(RequestType::BroadcastClientCount) => Response::BroadcastClientCount(
                value
                    .get("clientCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize,
            ),
            Some(RequestType::BroadcastAck) => Response::BroadcastAck(Payload {
                args: vec![value.get("packet").cloned().unwrap_or(Value::Null)],
                attachments,
            }),
            _ => match (value.get("rooms"), value.get("sockets")) {
                (Some(rooms), _) => Response::Rooms(parse_rooms(Some(rooms))),
                (None, Some(Value::Array(sockets))) => {
                    Response::Sockets(sockets.iter().filter_map(socket_from_json).collect())
                }
                _ => Response::Done,
            },
        };
        Ok(Some(ResponseMessage {
            request_id,
            response,
        }))
    }

    /// The bytes Node's adapter would publish for this response.
    pub fn encode(&self) -> Vec<u8> {
        let id = &self.request_id;
        let body = match &self.response {
            Response::SocketIds(ids) => {
                json!({ "requestId": id, "sockets": ids.iter().map(|s| s.to_string()).collect::<Vec<_>>() })
            }
            Response::Rooms(rooms) => json!({ "requestId": id, "rooms": rooms_json(rooms) }),
            Response::Sockets(sockets) => {
                json!({ "requestId": id, "sockets": sockets.iter().map(socket_json).collect::<Vec<_>>() })
            }
            Response::Done => json!({ "requestId": id }),
            Response::ServerSideEmitAck(data) => {
                json!({ "type": RequestType::ServerSideEmit as u8, "requestId": id, "data": data })
            }
            Response::BroadcastClientCount(count) => {
                json!({ "type": RequestType::BroadcastClientCount as u8, "requestId": id, "clientCount": count })
            }
            Response::BroadcastAck(payload) => {
                let first = payload.args.first().cloned().unwrap_or(Value::Null);
                let body = json!({ "type": RequestType::BroadcastAck as u8, "requestId": id, "packet": first });
                return wire::encode_msgpack(&body, &payload.attachments);
            }
        };
        wire::encode_json(&body)
    }
}

fn rooms_json(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

/// Headers that carry a client's credentials; left out of fetch replies unless the tenant opts in.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "cookie",
    "authorization",
    "proxy-authorization",
    "x-api-key",
];

/// Removes the credential headers and the CONNECT `auth` from a socket's handshake description.
pub fn strip_credentials(handshake: &mut Value) {
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

/// Waits for `expected` responses to one request, handing each to `take`, which says whether it
/// counts (a response of another kind does not). Every adapter's fleet requests end here, so they all
/// fail alike: [`AdapterError::Timeout`] with what came, once `timeout` has passed.
pub async fn await_responses(
    responses: &mut tokio::sync::mpsc::UnboundedReceiver<Response>,
    expected: usize,
    timeout: std::time::Duration,
    mut take: impl FnMut(Response) -> bool,
) -> Result<(), AdapterError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut received = 0;
    while received < expected {
        match tokio::time::timeout_at(deadline, responses.recv()).await {
            Ok(Some(response)) => received += usize::from(take(response)),
            Ok(None) | Err(_) => {
                return Err(AdapterError::Timeout {
                    waited_ms: timeout.as_millis() as u64,
                    received,
                    expected,
                });
            }
        }
    }
    Ok(())
}

/// The answers of `expected` nodes to a server-side emit with an ack, as [`await_responses`] waits.
pub async fn await_server_side_acks(
    responses: &mut tokio::sync::mpsc::UnboundedReceiver<Response>,
    expected: usize,
    timeout: std::time::Duration,
) -> Result<Vec<Value>, AdapterError> {
    let mut answers = Vec::with_capacity(expected);
    await_responses(responses, expected, timeout, |response| match response {
        Response::ServerSideEmitAck(answer) => {
            answers.push(answer);
            true
        }
        _ => false,
    })
    .await?;
    Ok(answers)
}

/// The acks of a broadcast with acks across the fleet: this node's clients' (`local`, of which
/// `local_count` were asked) and the other `servers` nodes' (each first says how many of its clients
/// were asked, then relays their acks), until every counted client answered or `timeout` passed.
pub async fn await_broadcast_acks(
    mut local: tokio::sync::mpsc::UnboundedReceiver<Payload>,
    local_count: usize,
    remote: &mut tokio::sync::mpsc::UnboundedReceiver<Response>,
    servers: usize,
    timeout: std::time::Duration,
) -> BroadcastAcks {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut acks = BroadcastAcks::default();
    let (mut counts, mut expected, mut local_open) = (0usize, local_count, true);
    while counts < servers || acks.responses.len() < expected {
        tokio::select! {
            ack = local.recv(), if local_open => match ack {
                Some(payload) => acks.responses.push(payload),
                None => local_open = false,
            },
            response = remote.recv() => match response {
                Some(Response::BroadcastClientCount(count)) => {
                    counts += 1;
                    expected += count;
                }
                Some(Response::BroadcastAck(payload)) => acks.responses.push(payload),
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                acks.timed_out = true;
                break;
            }
        }
    }
    acks.expected = expected;
    acks
}

/// A socket as `fetchSockets` responses describe it (Node's `RemoteSocket` fields).
fn socket_json(info: &SocketInfo) -> Value {
    json!({
        "id": info.id.to_string(),
        "handshake": info.handshake,
        "rooms": rooms_json(&info.rooms),
        "data": info.data,
    })
}

fn socket_from_json(v: &Value) -> Option<SocketInfo> {
    Some(SocketInfo {
        id: Sid::parse(v.get("id")?.as_str()?)?,
        rooms: parse_rooms(v.get("rooms")),
        data: v.get("data").cloned().unwrap_or(Value::Null),
        handshake: v.get("handshake").cloned().unwrap_or(Value::Null),
    })
}

/// A request body as bytes, for tests and tools: `value` encoded as JSON.
#[cfg(test)]
fn json_bytes(value: Value) -> Vec<u8> {
    wire::encode_json(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PacketKind;
    use bytes::Bytes;

    fn room_opts(rooms: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            local: true,
            ..Default::default()
        }
    }

    #[test]
    fn membership_request_is_node_json_both_ways() {
        let message = RequestMessage {
            uid: Some("2hVDiL".into()),
            request_id: None,
            request: Request::RemoteJoin {
                target: Target::Matching(room_opts(&["room1"])),
                rooms: vec!["room2".into(), "room3".into()],
            },
        };
        let bytes = message.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf8"),
            r#"{"uid":"2hVDiL","type":2,"opts":{"rooms":["room1"],"except":[]},"rooms":["room2","room3"]}"#
        );
        assert_eq!(
            RequestMessage::decode(&bytes, "/").expect("decode"),
            Some(message)
        );
    }

    #[test]
    fn fetch_and_all_rooms_requests_match_node() {
        let fetch = RequestMessage {
            uid: Some("a".into()),
            request_id: Some("b".into()),
            request: Request::RemoteFetch {
                opts: room_opts(&["r"]),
            },
        };
        assert_eq!(
            String::from_utf8(fetch.encode()).expect("utf8"),
            r#"{"uid":"a","requestId":"b","type":5,"opts":{"rooms":["r"],"except":[]}}"#
        );
        let rooms = RequestMessage {
            uid: Some("a".into()),
            request_id: Some("c".into()),
            request: Request::AllRooms,
        };
        assert_eq!(
            String::from_utf8(rooms.encode()).expect("utf8"),
            r#"{"uid":"a","requestId":"c","type":1}"#
        );
        assert_eq!(
            RequestMessage::decode(&rooms.encode(), "/").expect("decode"),
            Some(rooms)
        );
    }

    #[test]
    fn legacy_requests_name_one_socket() {
        let sid = Sid::random();
        let bytes = json_bytes(
            json!({"uid": "old", "requestId": "r1", "type": 4, "sid": sid.to_string(), "close": true}),
        );
        let message = RequestMessage::decode(&bytes, "/")
            .expect("decode")
            .expect("a request");
        assert_eq!(
            message.request,
            Request::RemoteDisconnect {
                target: Target::Socket(sid),
                close: true
            }
        );
        let legacy_join = json_bytes(
            json!({"uid": "old", "requestId": "r2", "type": 2, "sid": sid.to_string(), "room": "x"}),
        );
        let message = RequestMessage::decode(&legacy_join, "/")
            .expect("decode")
            .expect("a request");
        assert_eq!(
            message.request,
            Request::RemoteJoin {
                target: Target::Socket(sid),
                rooms: vec!["x".into()]
            }
        );
    }

    #[test]
    fn malformed_requests_are_errors_and_responses_are_skipped() {
        let no_target = json_bytes(json!({"uid": "u", "type": 3, "rooms": ["a"]}));
        assert!(RequestMessage::decode(&no_target, "/").is_err());
        let no_data = json_bytes(json!({"uid": "u", "type": 6}));
        assert!(RequestMessage::decode(&no_data, "/").is_err());
        let count = json_bytes(json!({"type": 8, "requestId": "x", "clientCount": 2}));
        assert_eq!(RequestMessage::decode(&count, "/").expect("decode"), None);
        let unknown = json_bytes(json!({"type": 42}));
        assert_eq!(RequestMessage::decode(&unknown, "/").expect("decode"), None);
        assert!(RequestMessage::decode(b"{nope", "/").is_err());
    }

    #[test]
    fn broadcast_with_ack_travels_as_msgpack_with_its_binary() {
        let message = RequestMessage {
            uid: Some("n1".into()),
            request_id: Some("q".into()),
            request: Request::Broadcast {
                packet: Packet {
                    kind: PacketKind::Event,
                    nsp: "/".into(),
                    id: None,
                    data: Some(json!(["e", {"_placeholder": true, "num": 0}])),
                    attachments: vec![Bytes::from_static(b"\x01\x02")],
                },
                opts: room_opts(&["r"]),
                timeout_ms: Some(5000),
            },
        };
        let bytes = message.encode();
        assert_ne!(bytes.first(), Some(&b'{'), "msgpack, not JSON");
        assert_eq!(
            RequestMessage::decode(&bytes, "/").expect("decode"),
            Some(message)
        );
    }

    #[test]
    fn broadcast_ack_matches_the_captured_bytes() {
        // Node peer's answer: 83 a4"type" 09 a9"requestId" a6"1ccTfK" a6"packet" ab"clientack-z"
        let mut expected = vec![0x83, 0xa4];
        expected.extend(b"type");
        expected.extend([0x09, 0xa9]);
        expected.extend(b"requestId");
        expected.push(0xa6);
        expected.extend(b"1ccTfK");
        expected.push(0xa6);
        expected.extend(b"packet");
        expected.push(0xab);
        expected.extend(b"clientack-z");
        let message = ResponseMessage {
            request_id: "1ccTfK".into(),
            response: Response::BroadcastAck(Payload {
                args: vec![json!("clientack-z")],
                attachments: Vec::new(),
            }),
        };
        assert_eq!(message.encode(), expected);
        assert_eq!(
            ResponseMessage::decode(&expected).expect("decode"),
            Some(message)
        );
    }

    #[test]
    fn responses_round_trip() {
        let info = SocketInfo {
            id: Sid::random(),
            rooms: vec!["a".into()],
            data: json!({"user": 1}),
            handshake: json!({"headers": {}}),
        };
        for response in [
            Response::Rooms(vec!["a".into(), "b".into()]),
            Response::Sockets(vec![info]),
            Response::Done,
            Response::ServerSideEmitAck(json!(["pong"])),
            Response::BroadcastClientCount(3),
        ] {
            let message = ResponseMessage {
                request_id: "id".into(),
                response,
            };
            assert_eq!(
                ResponseMessage::decode(&message.encode()).expect("decode"),
                Some(message)
            );
        }
        assert_eq!(
            ResponseMessage::decode(br#"{"rooms":[]}"#).expect("decode"),
            None,
            "no request id"
        );
    }

    #[test]
    fn credentials_are_stripped_from_handshakes() {
        let mut hs = json!({"headers": {"Cookie": "s=1", "authorization": "x", "user-agent": "ua"}, "auth": {"token": "t"}});
        strip_credentials(&mut hs);
        assert_eq!(hs, json!({"headers": {"user-agent": "ua"}, "auth": {}}));
    }
}
