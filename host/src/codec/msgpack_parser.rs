//! The `socket.io-msgpack-parser` (3.x) wire form: every packet is one binary Engine.IO message holding
//! a msgpack map `{type, nsp, data, id}`, binary inline as msgpack `bin`. Types are those of the default
//! parser without the binary kinds (2 is an event with or without binary, 3 an ack).
//!
//! A connection speaks one parser, told by its first packet (a CONNECT): text for the default parser,
//! binary for this one. Inside, packets keep one form (JSON with placeholders plus attachments), so
//! handlers, plugins and adapters never see which parser a client uses.

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::Value;

use super::bounds;
use super::msgpack;
use super::packet::{DecodeError, Packet, PacketKind};
use crate::engineio::WirePacket;

/// Which Socket.IO parser a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parser {
    /// socket.io-parser: a text packet, then one binary message per attachment.
    #[default]
    Default,
    /// socket.io-msgpack-parser: one binary message per packet.
    MsgPack,
}

/// Decodes one msgpack-parser packet, checking it as the parser's `isPacketValid` does.
pub fn decode_msgpack_packet(bytes: &[u8], max_attachments: usize) -> Result<Packet, DecodeError> {
    bounds::check_msgpack(bytes).map_err(|_| DecodeError::InvalidPayload)?;
    let Mp::Map(entries) = msgpack::decode(bytes).map_err(|_| DecodeError::InvalidPayload)? else {
        return Err(DecodeError::InvalidPayload);
    };
    let (mut kind, mut nsp, mut id, mut data) = (None, None, None, None);
    for (key, value) in entries {
        match key.as_str() {
            Some("type") => kind = value.as_u64(),
            Some("nsp") => {
                nsp = Some(
                    value
                        .as_str()
                        .ok_or(DecodeError::InvalidPayload)?
                        .to_owned(),
                )
            }
            Some("id") => id = Some(value.as_u64().ok_or(DecodeError::InvalidId)?),
            Some("data") => data = Some(value),
            _ => {}
        }
    }
    let nsp = nsp.ok_or(DecodeError::InvalidPayload)?;
    let mut attachments = Vec::new();
    // notepack writes an absent `data` (JavaScript `undefined`) as an extension that reads as null.
    let data = data
        .map(|d| msgpack::to_json(d, &mut attachments))
        .filter(|d| !d.is_null());
    if attachments.len() > max_attachments {
        return Err(DecodeError::IllegalAttachments);
    }
    let binary = !attachments.is_empty();
    let kind = match (kind.ok_or(DecodeError::UnknownType)?, binary) {
        (0, _) => PacketKind::Connect,
        (1, _) => PacketKind::Disconnect,
        (2, false) => PacketKind::Event,
        (2, true) => PacketKind::BinaryEvent,
        (3, false) => PacketKind::Ack,
        (3, true) => PacketKind::BinaryAck,
        (4, _) => PacketKind::ConnectError,
        _ => return Err(DecodeError::UnknownType),
    };
    let valid = match kind {
        PacketKind::Connect => data.as_ref().is_none_or(Value::is_object),
        PacketKind::Disconnect => data.is_none(),
        PacketKind::Event | PacketKind::BinaryEvent => data
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .is_some_and(Value::is_string),
        PacketKind::Ack | PacketKind::BinaryAck => {
            id.is_some() && data.as_ref().is_some_and(Value::is_array)
        }
        PacketKind::ConnectError => false, // servers send these, clients do not
    };
    if !valid || (binary && kind == PacketKind::Connect) {
        return Err(DecodeError::InvalidPayload);
    }
    Ok(Packet {
        kind,
        nsp,
        id,
        data,
        attachments,
    })
}

/// Encodes a packet as the msgpack parser's one binary message.
pub fn encode_msgpack_packet(packet: &Packet) -> WirePacket {
    let kind: u8 = match packet.kind {
        PacketKind::Connect => 0,
        PacketKind::Disconnect => 1,
        PacketKind::Event | PacketKind::BinaryEvent => 2,
        PacketKind::Ack | PacketKind::BinaryAck => 3,
        PacketKind::ConnectError => 4,
    };
    let mut map = Vec::with_capacity(4);
    map.push((Mp::from("type"), Mp::from(kind)));
    map.push((Mp::from("nsp"), Mp::from(packet.nsp.as_str())));
    if let Some(data) = &packet.data {
        map.push((
            Mp::from("data"),
            msgpack::from_json(data, &packet.attachments),
        ));
    }
    if let Some(id) = packet.id {
        map.push((Mp::from("id"), Mp::from(id)));
    }
    WirePacket::binary(&msgpack::encode(&Mp::Map(map)))
}

/// The attachments a default-parser packet's text announced, taken from the frames that follow it.
pub(crate) fn attachments_of(frames: &[WirePacket]) -> Vec<Bytes> {
    frames
        .iter()
        .skip(1)
        .map(|f| Bytes::copy_from_slice(f.payload()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::placeholder;
    use serde_json::json;

    fn encoded(value: &Mp) -> Vec<u8> {
        msgpack::encode(value)
    }

    fn map(entries: Vec<(&str, Mp)>) -> Mp {
        Mp::Map(entries.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
    }

    #[test]
    fn an_event_with_binary_becomes_a_binary_event_and_back() {
        let wire = encoded(&map(vec![
            ("type", Mp::from(2)),
            ("nsp", Mp::from("/")),
            ("id", Mp::from(7)),
            (
                "data",
                Mp::Array(vec![Mp::from("m"), Mp::Binary(vec![1, 2]), Mp::from(3)]),
            ),
        ]));
        let packet = decode_msgpack_packet(&wire, 10).expect("valid");
        assert_eq!(packet.kind, PacketKind::BinaryEvent);
        assert_eq!(packet.id, Some(7));
        assert_eq!(packet.data, Some(json!(["m", placeholder(0), 3])));
        assert_eq!(packet.attachments, vec![Bytes::from_static(&[1, 2])]);
        let back = encode_msgpack_packet(&packet);
        assert!(back.is_binary());
        assert_eq!(
            decode_msgpack_packet(back.payload(), 10).expect("again"),
            packet
        );
    }

    #[test]
    fn malformed_packets_are_refused() {
        let refused = |value: Mp| decode_msgpack_packet(&encoded(&value), 10).is_err();
        assert!(refused(Mp::from("not a map")));
        assert!(refused(map(vec![
            ("type", Mp::from(2)),
            ("nsp", Mp::from("/"))
        ])));
        assert!(refused(map(vec![
            ("type", Mp::from(9)),
            ("nsp", Mp::from("/"))
        ])));
        assert!(refused(map(vec![
            ("type", Mp::from(2)),
            ("nsp", Mp::from("/")),
            ("data", Mp::Array(vec![Mp::from(1)]))
        ])));
        assert!(refused(map(vec![
            ("type", Mp::from(3)),
            ("nsp", Mp::from("/")),
            ("data", Mp::Array(vec![]))
        ])));
        assert!(
            decode_msgpack_packet(&[0x81, 0xa4], 10).is_err(),
            "truncated"
        );
        let many = Mp::Array((0..11).map(|_| Mp::Binary(vec![0])).collect());
        assert!(refused(map(vec![
            ("type", Mp::from(2)),
            ("nsp", Mp::from("/")),
            ("data", Mp::Array(vec![Mp::from("m"), many]))
        ])));
        let connect = map(vec![("type", Mp::from(0)), ("nsp", Mp::from("/admin"))]);
        let packet = decode_msgpack_packet(&encoded(&connect), 10).expect("connect");
        assert_eq!(
            (packet.kind, packet.nsp.as_str()),
            (PacketKind::Connect, "/admin")
        );
    }
}
