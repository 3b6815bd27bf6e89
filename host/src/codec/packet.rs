//! Socket.IO v5 packet codec: `<type>[<n>-][<nsp>,][<id>][<json>]` plus binary attachments.
//!
//! Decoding follows socket.io-parser 4.2 exactly, including which payloads each type accepts, and turns every
//! deviation into a [`DecodeError`] (the connection is then closed, as Node does). Encoding produces
//! [`EncodedPacket`]s, ready-made Engine.IO frames that a broadcast shares between all its recipients.
//! Binary values stay where the client put them as `{"_placeholder":true,"num":N}` with the bytes alongside
//! in [`Payload::attachments`], so relaying a packet never walks its JSON twice.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::Value;

use super::msgpack_parser::{Parser, attachments_of, encode_msgpack_packet};
use crate::engineio::WirePacket;

/// The seven Socket.IO packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketKind {
    /// Join a namespace (client) / joined (server).
    Connect = 0,
    /// Leave a namespace.
    Disconnect = 1,
    /// An event without binary data.
    Event = 2,
    /// An acknowledgement without binary data.
    Ack = 3,
    /// Refusal of a CONNECT.
    ConnectError = 4,
    /// An event with binary attachments.
    BinaryEvent = 5,
    /// An acknowledgement with binary attachments.
    BinaryAck = 6,
}

impl PacketKind {
    fn from_digit(d: u8) -> Option<Self> {
        Some(match d {
            b'0' => PacketKind::Connect,
            b'1' => PacketKind::Disconnect,
            b'2' => PacketKind::Event,
            b'3' => PacketKind::Ack,
            b'4' => PacketKind::ConnectError,
            b'5' => PacketKind::BinaryEvent,
            b'6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether attachments follow a packet of this kind.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }

    /// The numeric type (as on the wire and in the Redis adapter's messages).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The binary twin of an event or ack when attachments are present.
    fn with_attachments(self, has_attachments: bool) -> Self {
        match (self, has_attachments) {
            (PacketKind::Event, true) => PacketKind::BinaryEvent,
            (PacketKind::Ack, true) => PacketKind::BinaryAck,
            (PacketKind::BinaryEvent, false) => PacketKind::Event,
            (PacketKind::BinaryAck, false) => PacketKind::Ack,
            (kind, _) => kind,
        }
    }
}

/// Event names a peer may never send or receive.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether Socket.IO reserves `name` (`connect`, `disconnect`, ...): a server never emits one, and a
/// client that receives one closes the connection.
pub fn is_reserved_event(name: &str) -> bool {
    RESERVED_EVENTS.contains(&name)
}

/// Whether an application may relay an event under `name`: not empty and not reserved.
pub fn relayable_event(name: &str) -> bool {
    !name.is_empty() && !is_reserved_event(name)
}

/// Arguments of an event or ack: JSON values with binary placeholders, and the binary buffers they refer to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload {
    /// The arguments (for an event, without its name).
    pub args: Vec<Value>,
    /// Binary buffers, referred to from `args` by `{"_placeholder":true,"num":N}`.
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// Arguments without binary data.
    pub fn json(args: Vec<Value>) -> Self {
        Payload {
            args,
            attachments: Vec::new(),
        }
    }

    /// Appends a binary argument.
    pub fn push_binary(&mut self, data: Bytes) {
        self.args.push(placeholder(self.attachments.len()));
        self.attachments.push(data);
    }
}

/// The data array of an event: its name, then its arguments.
pub fn event_data(event: &str, args: Vec<Value>) -> Vec<Value> {
    let mut data = Vec::with_capacity(1 + args.len());
    data.push(Value::String(event.to_owned()));
    data.extend(args);
    data
}

/// The JSON that stands for binary attachment `num`.
pub fn placeholder(num: usize) -> Value {
    let mut map = serde_json::Map::with_capacity(2);
    map.insert("_placeholder".into(), Value::Bool(true));
    map.insert("num".into(), Value::from(num));
    Value::Object(map)
}

/// A decoded packet. For events `data` is the whole array, name first.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// The type.
    pub kind: PacketKind,
    /// The namespace, `/` when absent on the wire.
    pub nsp: String,
    /// The ack id, if the sender wants an acknowledgement (events) or answers one (acks).
    pub id: Option<u64>,
    /// The JSON payload, if any.
    pub data: Option<Value>,
    /// Binary attachments (binary kinds only).
    pub attachments: Vec<Bytes>,
}

/// Why a packet was refused; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Empty text.
    #[error("empty packet")]
    Empty,
    /// First character is not 0-6.
    #[error("unknown packet type")]
    UnknownType,
    /// The attachment count is missing, malformed or above the limit.
    #[error("illegal attachments")]
    IllegalAttachments,
    /// The ack id does not fit in 64 bits.
    #[error("invalid ack id")]
    InvalidId,
    /// The JSON is malformed or not what this packet type allows.
    #[error("invalid payload")]
    InvalidPayload,
    /// A binary message arrived while no binary packet was waiting for one.
    #[error("unexpected binary data")]
    UnexpectedBinary,
    /// A text packet arrived while a binary packet still waited for attachments.
    #[error("text packet while reconstructing a binary packet")]
    UnexpectedText,
    /// The client switched between the default and the msgpack parser.
    #[error("a packet in another parser's form than the connection's first")]
    ParserChanged,
    /// The client's parser is not the one its tenant allows.
    #[error("this parser is not allowed here")]
    ParserRefused,
}

/// Decodes the text part of a packet. For binary kinds the returned count says how many binary messages
/// must follow before the packet is complete.
pub fn decode_text(text: &str, max_attachments: usize) -> Result<(Packet, usize), DecodeError> {
    let bytes = text.as_bytes();
    let kind = PacketKind::from_digit(*bytes.first().ok_or(DecodeError::Empty)?)
        .ok_or(DecodeError::UnknownType)?;
    let mut i = 1;

    let mut expected = 0;
    if kind.is_binary() {
        let dash = bytes[i..]
            .iter()
            .position(|b| *b == b'-')
            .ok_or(DecodeError::IllegalAttachments)?;
        let digits = &text[i..i + dash];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::IllegalAttachments);
        }
        expected = digits
            .parse::<usize>()
            .map_err(|_| DecodeError::IllegalAttachments)?;
        if expected > max_attachments {
            return Err(DecodeError::IllegalAttachments);
        }
        i += dash + 1;
    }

    let nsp = if bytes.get(i) == Some(&b'/') {
        let end = bytes[i..]
            .iter()
            .position(|b| *b == b',')
            .map_or(bytes.len(), |p| i + p);
        let nsp = text[i..end].to_owned();
        i = (end + 1).min(bytes.len());
        nsp
    } else {
        "/".to_owned()
    };

    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        let id = text[i..i + digits]
            .parse::<u64>()
            .map_err(|_| DecodeError::InvalidId)?;
        i += digits;
        Some(id)
    } else {
        None
    };

    let data = if i < bytes.len() {
        let value: Value =
            serde_json::from_str(&text[i..]).map_err(|_| DecodeError::InvalidPayload)?;
        if !payload_valid(kind, &value) {
            return Err(DecodeError::InvalidPayload);
        }
        Some(value)
    } else {
        None
    };
    if data.is_none() && matches!(kind, PacketKind::Event | PacketKind::BinaryEvent) {
        return Err(DecodeError::InvalidPayload);
    }

    Ok((
        Packet {
            kind,
            nsp,
            id,
            data,
            attachments: Vec::new(),
        },
        expected,
    ))
}

fn payload_valid(kind: PacketKind, value: &Value) -> bool {
    match kind {
        PacketKind::Connect => value.is_object(),
        PacketKind::Disconnect => false,
        PacketKind::ConnectError => value.is_object() || value.is_string(),
        PacketKind::Event | PacketKind::BinaryEvent => {
            match value.as_array().and_then(|a| a.first()) {
                Some(Value::String(name)) => !is_reserved_event(name),
                Some(Value::Number(_)) => true,
                _ => false,
            }
        }
        PacketKind::Ack | PacketKind::BinaryAck => value.is_array(),
    }
}

/// Checks that every placeholder in `value` refers to one of `count` attachments.
pub fn placeholders_valid(value: &Value, count: usize) -> bool {
    match value {
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true)) {
                return map
                    .get("num")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| (n as usize) < count);
            }
            map.values().all(|v| placeholders_valid(v, count))
        }
        Value::Array(items) => items.iter().all(|v| placeholders_valid(v, count)),
        _ => true,
    }
}

/// A packet encoded for Engine.IO: the text frame, then one binary frame per attachment; and, made the
/// first time a msgpack-parser client needs it, the msgpack parser's one binary frame. Every recipient
/// of a broadcast shares one `EncodedPacket`, so each parser in use encodes once.
#[derive(Clone, Debug)]
pub struct EncodedPacket {
    frames: Vec<WirePacket>,
    msgpack: OnceLock<Option<WirePacket>>,
    separated: bool,
}

impl EncodedPacket {
    fn new(frames: Vec<WirePacket>) -> Self {
        EncodedPacket {
            frames,
            msgpack: OnceLock::new(),
            separated: false,
        }
    }

    /// The frames for the default parser, in sending order.
    pub fn frames(&self) -> &[WirePacket] {
        &self.frames
    }

    /// The frames for a client speaking `parser`.
    pub fn frames_for(&self, parser: Parser) -> &[WirePacket] {
        match parser {
            Parser::Default => &self.frames,
            Parser::MsgPack => self
                .msgpack
                .get_or_init(|| self.to_msgpack())
                .as_ref()
                .map_or(&[], std::slice::from_ref),
        }
    }

    /// Re-reads the default form (once per packet, not per recipient) and writes the msgpack form.
    fn to_msgpack(&self) -> Option<WirePacket> {
        let head = self.frames.first()?.payload();
        let text = std::str::from_utf8(head.get(1..)?).ok()?;
        let decoded = decode_text(text, usize::MAX).map(|(mut packet, _)| {
            packet.attachments = attachments_of(&self.frames);
            packet
        });
        match decoded {
            Ok(packet) => {
                let frame = encode_msgpack_packet(&packet);
                Some(if self.separated {
                    frame.separated()
                } else {
                    frame
                })
            }
            Err(err) => {
                // Only our own encoder wrote this text; a failure here is a bug, not a peer's doing.
                tracing::error!(%err, "cannot re-encode a packet for a msgpack client; not sent");
                None
            }
        }
    }

    /// Makes the packet reach the client apart from what follows it (see [`WirePacket::separated`]).
    pub fn separated(mut self) -> Self {
        if let Some(last) = self.frames.pop() {
            self.frames.push(last.separated());
        }
        self.separated = true;
        self.msgpack = OnceLock::new();
        self
    }
}

/// Encodes a packet whose JSON is written by `write_json` (nothing for no payload).
pub fn encode_with(
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    attachments: &[Bytes],
    write_json: impl FnOnce(&mut Vec<u8>),
) -> EncodedPacket {
    let kind = kind.with_attachments(!attachments.is_empty());
    let head = WirePacket::text_with(64, |buf| {
        buf.push(b'4');
        buf.push(b'0' + kind.as_u8());
        if kind.is_binary() {
            push_decimal(buf, attachments.len() as u64);
            buf.push(b'-');
        }
        if nsp != "/" {
            buf.extend_from_slice(nsp.as_bytes());
            buf.push(b',');
        }
        if let Some(id) = id {
            push_decimal(buf, id);
        }
        write_json(buf);
    });
    let mut frames = Vec::with_capacity(1 + attachments.len());
    frames.push(head);
    frames.extend(attachments.iter().map(|a| WirePacket::binary(a)));
    EncodedPacket::new(frames)
}

/// Encodes a packet.
pub fn encode(packet: &Packet) -> EncodedPacket {
    encode_with(
        packet.kind,
        &packet.nsp,
        packet.id,
        &packet.attachments,
        |buf| {
            if let Some(data) = &packet.data {
                write_json(buf, data);
            }
        },
    )
}

/// Encodes an event `[name, ...args]`.
pub fn encode_event(nsp: &str, event: &str, payload: &Payload, id: Option<u64>) -> EncodedPacket {
    encode_with(PacketKind::Event, nsp, id, &payload.attachments, |buf| {
        buf.push(b'[');
        write_json(buf, &event);
        for arg in &payload.args {
            buf.push(b',');
            write_json(buf, arg);
        }
        buf.push(b']');
    })
}

/// Encodes an acknowledgement `[...args]`.
pub fn encode_ack(nsp: &str, id: u64, payload: &Payload) -> EncodedPacket {
    encode_with(
        PacketKind::Ack,
        nsp,
        Some(id),
        &payload.attachments,
        |buf| {
            write_json(buf, &payload.args);
        },
    )
}

/// Appends compact JSON. Serialising a `Value` or `&str` into a `Vec` cannot fail.
pub fn write_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    if let Err(err) = serde_json::to_writer(&mut *buf, value) {
        tracing::error!(%err, "JSON serialisation failed");
    }
}

fn push_decimal(buf: &mut Vec<u8>, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head(p: &EncodedPacket) -> String {
        String::from_utf8(p.frames()[0].payload().to_vec()).unwrap()
    }

    #[test]
    fn decodes_the_suite_packets() {
        let (p, n) = decode_text("0", 10).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.data, n),
            (PacketKind::Connect, "/", None, 0)
        );

        let (p, _) = decode_text(r#"0/custom,{"token":"abc"}"#, 10).unwrap();
        assert_eq!(p.nsp, "/custom");
        assert_eq!(p.data, Some(json!({"token": "abc"})));

        let (p, _) = decode_text("0/random", 10).unwrap();
        assert_eq!(p.nsp, "/random");

        let (p, _) = decode_text(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#, 10).unwrap();
        assert_eq!(p.id, Some(456));
        assert_eq!(
            p.data,
            Some(json!(["message-with-ack", 1, "2", {"3": [false]}]))
        );

        let (p, n) = decode_text(
            r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            10,
        )
        .unwrap();
        assert_eq!((p.kind, p.id, n), (PacketKind::BinaryEvent, Some(789), 2));

        let (p, _) = decode_text("1/admin,", 10).unwrap();
        assert_eq!((p.kind, p.nsp.as_str()), (PacketKind::Disconnect, "/admin"));
        let (p, _) = decode_text("3/admin,13[]", 10).unwrap();
        assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(13)));
        let (p, _) = decode_text("2[1]", 10).unwrap();
        assert_eq!(p.data, Some(json!([1])));
    }

    #[test]
    fn refuses_malformed_packets() {
        let bad = [
            ("", DecodeError::Empty),
            ("abc", DecodeError::UnknownType),
            ("7", DecodeError::UnknownType),
            ("2{}", DecodeError::InvalidPayload),
            (r#"2abc["message-with-ack",1]"#, DecodeError::InvalidPayload),
            ("2", DecodeError::InvalidPayload),
            ("2[]", DecodeError::InvalidPayload),
            ("2[{}]", DecodeError::InvalidPayload),
            (r#"2["connect"]"#, DecodeError::InvalidPayload),
            (r#"2["disconnect",1]"#, DecodeError::InvalidPayload),
            ("0[]", DecodeError::InvalidPayload),
            (r#"0"x""#, DecodeError::InvalidPayload),
            ("1{}", DecodeError::InvalidPayload),
            ("3{}", DecodeError::InvalidPayload),
            (r#"5["a"]"#, DecodeError::IllegalAttachments),
            (r#"5x-["a"]"#, DecodeError::IllegalAttachments),
            (r#"5-["a"]"#, DecodeError::IllegalAttachments),
            (r#"511-["a"]"#, DecodeError::IllegalAttachments),
            ("299999999999999999999[\"a\"]", DecodeError::InvalidId),
            ("2[\"a\"", DecodeError::InvalidPayload),
        ];
        for (text, err) in bad {
            assert_eq!(decode_text(text, 10).map(|_| ()), Err(err), "{text:?}");
        }
    }

    #[test]
    fn validates_placeholders() {
        let v = json!(["a", {"_placeholder": true, "num": 1}, [{"_placeholder": true, "num": 0}]]);
        assert!(placeholders_valid(&v, 2));
        assert!(!placeholders_valid(&v, 1));
        assert!(!placeholders_valid(
            &json!([{"_placeholder": true, "num": "0"}]),
            1
        ));
        assert!(!placeholders_valid(
            &json!([{"_placeholder": true, "num": -1}]),
            1
        ));
    }

    #[test]
    fn encodes_like_socket_io_parser() {
        let payload = Payload::json(vec![json!(1), json!("2"), json!({"3": [true]})]);
        assert_eq!(
            head(&encode_event("/", "message-back", &payload, None)),
            r#"42["message-back",1,"2",{"3":[true]}]"#
        );
        assert_eq!(
            head(&encode_ack("/", 456, &Payload::json(vec![json!(1)]))),
            "43456[1]"
        );
        assert_eq!(
            head(&encode_event(
                "/custom",
                "auth",
                &Payload::json(vec![json!({})]),
                None
            )),
            r#"42/custom,["auth",{}]"#
        );

        let mut bin = Payload::default();
        bin.push_binary(Bytes::from_static(&[1, 2, 3]));
        bin.push_binary(Bytes::from_static(&[4, 5, 6]));
        let enc = encode_ack("/", 789, &bin);
        assert_eq!(
            head(&enc),
            r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );
        assert_eq!(enc.frames().len(), 3);
        assert_eq!(enc.frames()[2].payload(), &[4, 5, 6]);

        let connect = Packet {
            kind: PacketKind::Connect,
            nsp: "/custom".into(),
            id: None,
            data: Some(json!({"sid": "x"})),
            attachments: vec![],
        };
        assert_eq!(head(&encode(&connect)), r#"40/custom,{"sid":"x"}"#);
    }

    #[test]
    fn numbers_are_relayed_exactly() {
        // Found by the socketio_packets fuzz target: without exact float parsing this came back 1 ULP off.
        let text = r#"2["n",3.3333333299999997e+53,333333333.000034,18446744073709551615,-9223372036854775808]"#;
        let (p, _) = decode_text(text, 10).unwrap();
        let enc = encode(&p);
        assert_eq!(head(&enc), format!("4{text}"));
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut payload = Payload::json(vec![json!({"nested": [1, 2.5, null]}), json!("é")]);
        payload.push_binary(Bytes::from_static(b"bin"));
        let enc = encode_event("/chat", "ev", &payload, Some(7));
        let text = head(&enc);
        let (p, n) = decode_text(&text[1..], 10).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketKind::BinaryEvent, "/chat", Some(7))
        );
        let mut expected = vec![json!("ev")];
        expected.extend(payload.args.clone());
        assert_eq!(p.data, Some(Value::Array(expected)));
    }
}
