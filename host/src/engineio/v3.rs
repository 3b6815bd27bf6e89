//! Engine.IO v3 (`EIO=3`, socket.io-client 2.x): what differs from v4 on the wire.
//!
//! - Polling bodies carry length prefixes instead of `\x1e` separators. As text, each packet is
//!   `<length>:<packet>`, the length counted in UTF-16 code units (JavaScript string length), binary
//!   packets as `b4<base64>`. A client that can read binary (no `b64=1`) gets a body with a binary packet
//!   in the binary form: per packet a `0` (text) or `1` (binary) byte, the length's decimal digits as
//!   bytes, `0xFF`, then the packet, the length counted in bytes.
//! - A binary message keeps its packet type: the byte `4` leads binary websocket frames and binary
//!   packets in polling bodies.
//! - The client pings (`2`) and the server answers (`3`); see the session's heartbeat.
//!
//! Like [`super::packet`], nothing here can panic on input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::packet::{Message, Packet, PacketError, Utf8Bytes, decode_text};
use super::wire::WirePacket;

/// The type byte binary messages carry in v3.
pub(crate) const MESSAGE_TYPE: u8 = 4;
/// Most length digits a binary-payload packet may declare (a body is bounded by `maxPayload` anyway).
const MAX_DIGITS: usize = 10;

/// Which Engine.IO protocol a session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `EIO=3`: socket.io-client 2.x and other Socket.IO v2 clients.
    V3,
    /// `EIO=4`.
    V4,
}

/// A binary message as a v3 client receives it: its type byte, then the data.
pub(crate) fn typed_binary(packet: &WirePacket) -> WirePacket {
    let payload = packet.payload();
    let mut data = Vec::with_capacity(1 + payload.len());
    data.push(MESSAGE_TYPE);
    data.extend_from_slice(payload);
    WirePacket::binary(&data)
}

/// A binary message from a v3 client (a websocket frame, or a binary-payload record): the type byte,
/// which must be `4`, then the data.
pub(crate) fn untyped_binary(data: Bytes) -> Result<Packet, PacketError> {
    match data.first() {
        Some(&MESSAGE_TYPE) => Ok(Packet::Message(Message::Binary(data.slice(1..)))),
        Some(other) => Err(PacketError::UnknownType(char::from(
            b'0'.wrapping_add(*other),
        ))),
        None => Err(PacketError::Empty),
    }
}

/// Decodes a text polling body: `<length>:<packet>` repeated.
pub(crate) fn decode_text_payload(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    let body = Utf8Bytes::try_from_bytes(body)?;
    let text = body.as_str();
    let mut packets = Vec::new();
    let mut rest = text;
    if rest.is_empty() {
        return Err(PacketError::Empty);
    }
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(PacketError::BadLength)?;
        let units: usize = rest[..colon].parse().map_err(|_| PacketError::BadLength)?;
        let after = &rest[colon + 1..];
        // Walk `units` UTF-16 code units forward.
        let mut taken = 0;
        let mut end = 0;
        for c in after.chars() {
            if taken >= units {
                break;
            }
            taken += c.len_utf16();
            end += c.len_utf8();
        }
        if taken != units || units == 0 {
            return Err(PacketError::BadLength);
        }
        let start = text.len() - after.len();
        let record = body.as_bytes().slice(start..start + end);
        packets.push(decode_record(record)?);
        rest = &after[end..];
    }
    Ok(packets)
}

/// One packet of a text body: `b4<base64>` for binary, else a text packet.
fn decode_record(record: Bytes) -> Result<Packet, PacketError> {
    if record.first() == Some(&b'b') {
        if record.get(1) != Some(&b'4') {
            return Err(PacketError::UnknownType(char::from(
                *record.get(1).unwrap_or(&b'?'),
            )));
        }
        let data = STANDARD
            .decode(&record[2..])
            .map_err(|_| PacketError::InvalidBase64)?;
        return Ok(Packet::Message(Message::Binary(Bytes::from(data))));
    }
    decode_text(Utf8Bytes::try_from_bytes(record)?)
}

/// Decodes a binary polling body (`Content-Type: application/octet-stream`).
pub(crate) fn decode_binary_payload(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    if body.is_empty() {
        return Err(PacketError::Empty);
    }
    let mut packets = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let binary = match body[at] {
            0 => false,
            1 => true,
            _ => return Err(PacketError::BadLength),
        };
        at += 1;
        let mut len: usize = 0;
        let mut digits = 0;
        loop {
            let byte = *body.get(at).ok_or(PacketError::BadLength)?;
            at += 1;
            if byte == 0xff {
                break;
            }
            digits += 1;
            if byte > 9 || digits > MAX_DIGITS {
                return Err(PacketError::BadLength);
            }
            len = len * 10 + usize::from(byte);
        }
        if digits == 0 || len == 0 || at + len > body.len() {
            return Err(PacketError::BadLength);
        }
        let record = body.slice(at..at + len);
        at += len;
        packets.push(if binary {
            untyped_binary(record)?
        } else {
            decode_text(Utf8Bytes::try_from_bytes(record)?)?
        });
    }
    Ok(packets)
}

/// A polling response body and its content type. Binary packets are already typed
/// ([`typed_binary`]): a v3 session queues them so.
pub(crate) fn encode_payload(packets: &[WirePacket], b64: bool) -> (Vec<u8>, &'static str) {
    let mut out = Vec::new();
    if !b64 && packets.iter().any(WirePacket::is_binary) {
        for packet in packets {
            let payload = packet.payload();
            out.push(u8::from(packet.is_binary()));
            out.extend(payload.len().to_string().bytes().map(|d| d - b'0'));
            out.push(0xff);
            out.extend_from_slice(payload);
        }
        return (out, "application/octet-stream");
    }
    for packet in packets {
        let payload = packet.payload();
        if packet.is_binary() {
            let data = payload.get(1..).unwrap_or_default();
            let encoded = STANDARD.encode(data);
            out.extend_from_slice(format!("{}:b4", encoded.len() + 2).as_bytes());
            out.extend_from_slice(encoded.as_bytes());
        } else {
            let text = String::from_utf8_lossy(payload);
            let units: usize = text.chars().map(char::len_utf16).sum();
            out.extend_from_slice(units.to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(payload);
        }
    }
    (out, "text/plain; charset=UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Utf8Bytes {
        Utf8Bytes::from_static(s)
    }

    #[test]
    fn text_bodies_count_utf16_units() {
        let packets =
            decode_text_payload(Bytes::from("6:4héllo3:4😀3:2ab6:b4AQI=".as_bytes())).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Message::Text(
                    Utf8Bytes::try_from_bytes(Bytes::from("héllo")).unwrap()
                )),
                Packet::Message(Message::Text(
                    Utf8Bytes::try_from_bytes(Bytes::from("😀")).unwrap()
                )),
                Packet::Ping(text("ab")),
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2]))),
            ]
        );
    }

    #[test]
    fn malformed_text_bodies_are_refused() {
        for body in ["", "4", "x:4a", "9:4abc", "0:", "2:4😀", "3:b5AQ", "4:b4!!"] {
            assert!(
                decode_text_payload(Bytes::from(body)).is_err(),
                "{body:?} must be refused"
            );
        }
    }

    #[test]
    fn binary_bodies_round_trip() {
        let packets = [
            WirePacket::text(b'4', "hé".as_bytes()),
            typed_binary(&WirePacket::binary(&[9, 8, 7])),
        ];
        let (body, kind) = encode_payload(&packets, false);
        assert_eq!(kind, "application/octet-stream");
        assert_eq!(
            body,
            [
                &[0u8, 4, 0xff][..],
                "4hé".as_bytes(),
                &[1, 4, 0xff, 4, 9, 8, 7]
            ]
            .concat()
        );
        assert_eq!(
            decode_binary_payload(Bytes::from(body)).unwrap(),
            vec![
                Packet::Message(Message::Text(
                    Utf8Bytes::try_from_bytes(Bytes::from("hé")).unwrap()
                )),
                Packet::Message(Message::Binary(Bytes::from_static(&[9, 8, 7]))),
            ]
        );
        for bad in [
            &[2u8, 1, 0xff, b'4'][..],
            &[0, 0xff],
            &[0, 9, 0xff, b'4'],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 0xff],
            &[1, 1, 0xff, 3],
        ] {
            assert!(decode_binary_payload(Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn text_bodies_base64_binary_for_b64_clients() {
        let packets = [
            WirePacket::text(b'4', "😀".as_bytes()),
            typed_binary(&WirePacket::binary(&[1, 2])),
        ];
        let (body, kind) = encode_payload(&packets, true);
        assert_eq!(kind, "text/plain; charset=UTF-8");
        assert_eq!(String::from_utf8(body).unwrap(), "3:4😀6:b4AQI=");
        let (body, _) = encode_payload(&packets[..1], false);
        assert_eq!(String::from_utf8(body).unwrap(), "3:4😀");
    }
}
