//! Engine.IO v4 packet and polling-payload decoding.
//!
//! This is the only place that turns peer bytes into Engine.IO packets, so every rule a peer can break is
//! checked here and reported as a [`PacketError`]; nothing here can panic on input. Encoding of outgoing
//! packets lives in [`super::wire`], where it is done once per packet for every transport.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

/// The record separator that joins packets in a polling body.
pub const SEPARATOR: u8 = 0x1e;

/// Text known to be valid UTF-8, sharing the buffer it was received in.
#[derive(Clone, PartialEq, Eq)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Checks `bytes` once; afterwards [`Utf8Bytes::as_str`] is free.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, PacketError> {
        std::str::from_utf8(&bytes).map_err(|_| PacketError::InvalidUtf8)?;
        Ok(Utf8Bytes(bytes))
    }

    /// A static string.
    pub fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Validated at construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    fn slice_from(&self, start: usize) -> Self {
        Utf8Bytes(self.0.slice(start..))
    }
}

impl std::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Application data carried by a `message` packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (payload after the `4`).
    Text(Utf8Bytes),
    /// A binary message (a binary websocket frame, or `b<base64>` over polling).
    Binary(Bytes),
}

/// One packet received from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// `1`: the client closes the session.
    Close,
    /// `2`: only valid as `2probe` during an upgrade (clients do not ping in v4).
    Ping(Utf8Bytes),
    /// `3`: answer to a server ping (`3probe` is server-to-client only).
    Pong(Utf8Bytes),
    /// `4`: application data.
    Message(Message),
    /// `5`: completes an upgrade on the new transport.
    Upgrade,
    /// `6`: no operation.
    Noop,
}

/// Why a peer's bytes are not a valid Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The packet was empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type a client may send.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// Text was not UTF-8.
    #[error("packet text is not valid UTF-8")]
    InvalidUtf8,
    /// A `b` packet's base64 did not decode.
    #[error("binary packet is not valid base64")]
    InvalidBase64,
    /// A v3 polling body's length prefix is malformed or does not match its packet.
    #[error("malformed length prefix in a v3 polling body")]
    BadLength,
}

/// Decodes one text packet (a websocket text frame, or one record of a polling body).
pub fn decode_text(text: Utf8Bytes) -> Result<Packet, PacketError> {
    let first = *text.as_bytes().first().ok_or(PacketError::Empty)?;
    let rest = || text.slice_from(1);
    Ok(match first {
        b'1' => Packet::Close,
        b'2' => Packet::Ping(rest()),
        b'3' => Packet::Pong(rest()),
        b'4' => Packet::Message(Message::Text(rest())),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        other => return Err(PacketError::UnknownType(char::from(other))),
    })
}

/// Decodes a polling request body: records joined by `\x1e`, binary records as `b<base64>`.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    let body = Utf8Bytes::try_from_bytes(body)?;
    let raw = body.as_bytes();
    let mut packets = Vec::with_capacity(1);
    let mut start = 0;
    loop {
        let end = raw[start..]
            .iter()
            .position(|b| *b == SEPARATOR)
            .map_or(raw.len(), |i| start + i);
        let record = raw.slice(start..end);
        if record.first() == Some(&b'b') {
            let data = STANDARD
                .decode(&record[1..])
                .map_err(|_| PacketError::InvalidBase64)?;
            packets.push(Packet::Message(Message::Binary(Bytes::from(data))));
        } else {
            // A record of a UTF-8 body split at an ASCII byte is itself UTF-8.
            packets.push(decode_text(Utf8Bytes(record))?);
        }
        if end == raw.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Utf8Bytes {
        Utf8Bytes::from_static(s)
    }

    #[test]
    fn decodes_each_client_packet_type() {
        assert_eq!(decode_text(text("1")), Ok(Packet::Close));
        assert_eq!(decode_text(text("2probe")), Ok(Packet::Ping(text("probe"))));
        assert_eq!(decode_text(text("3")), Ok(Packet::Pong(text(""))));
        assert_eq!(
            decode_text(text("4hello")),
            Ok(Packet::Message(Message::Text(text("hello"))))
        );
        assert_eq!(decode_text(text("5")), Ok(Packet::Upgrade));
        assert_eq!(decode_text(text("6")), Ok(Packet::Noop));
    }

    #[test]
    fn refuses_malformed_text() {
        assert_eq!(decode_text(text("")), Err(PacketError::Empty));
        assert_eq!(decode_text(text("abc")), Err(PacketError::UnknownType('a')));
        assert_eq!(decode_text(text("0{}")), Err(PacketError::UnknownType('0')));
        assert_eq!(decode_text(text("7")), Err(PacketError::UnknownType('7')));
        assert_eq!(
            decode_text(text("é")),
            Err(PacketError::UnknownType('\u{c3}'))
        );
    }

    #[test]
    fn splits_payloads_and_decodes_binary_records() {
        let packets = decode_payload(Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e3")).unwrap();
        assert_eq!(
            packets,
            vec![
                Packet::Message(Message::Text(text("hello"))),
                Packet::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4]))),
                Packet::Pong(text("")),
            ]
        );
    }

    #[test]
    fn refuses_malformed_payloads() {
        assert_eq!(decode_payload(Bytes::new()), Err(PacketError::Empty));
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e")),
            Err(PacketError::Empty)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"\x1e4a")),
            Err(PacketError::Empty)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"b!!!")),
            Err(PacketError::InvalidBase64)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff")),
            Err(PacketError::InvalidUtf8)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4ok\x1eabc")),
            Err(PacketError::UnknownType('a'))
        );
    }

    #[test]
    fn multibyte_text_survives_splitting() {
        let packets = decode_payload(Bytes::from("4héllo\x1e4wörld".as_bytes().to_vec())).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(
            packets[1],
            Packet::Message(Message::Text(
                Utf8Bytes::try_from_bytes(Bytes::from("wörld")).unwrap()
            ))
        );
    }
}
