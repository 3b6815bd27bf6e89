//! Outgoing Engine.IO packets, encoded once for every transport.
//!
//! A [`WirePacket`] holds the complete server-to-client websocket frame (header included: server frames are
//! never masked, so the frame is the same for every recipient) with the Engine.IO packet as its payload. A
//! broadcast builds one and hands clones (a reference-count increment) to each recipient; websocket writers
//! send the frame as is, polling writers take the payload slice. Nothing here allocates per recipient.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes};

use super::ws_codec::{MAX_HEADER_LEN, OPCODE_BINARY, OPCODE_TEXT, write_header};

/// An encoded server-to-client Engine.IO packet.
#[derive(Clone)]
pub struct WirePacket {
    frame: Bytes,
    header_len: u8,
    binary: bool,
    separated: bool,
}

impl WirePacket {
    /// Builds a text packet; `write` appends the packet text, type digit first (e.g. `4` then a Socket.IO packet).
    pub fn text_with(capacity_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN + capacity_hint);
        buf.resize(MAX_HEADER_LEN, 0);
        write(&mut buf);
        Self::seal(buf, OPCODE_TEXT, false)
    }

    /// Builds a text packet from its type digit and payload.
    pub fn text(packet_type: u8, payload: &[u8]) -> Self {
        Self::text_with(1 + payload.len(), |buf| {
            buf.push(packet_type);
            buf.extend_from_slice(payload);
        })
    }

    /// Builds a binary `message` packet (a binary websocket frame; `b<base64>` over polling).
    pub fn binary(data: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN + data.len());
        buf.resize(MAX_HEADER_LEN, 0);
        buf.extend_from_slice(data);
        Self::seal(buf, OPCODE_BINARY, true)
    }

    /// Writes the websocket header right-aligned into the reserved prefix and drops the unused part.
    fn seal(mut buf: Vec<u8>, opcode: u8, binary: bool) -> Self {
        let payload_len = buf.len() - MAX_HEADER_LEN;
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = write_header(&mut header, opcode, payload_len);
        let start = MAX_HEADER_LEN - header_len;
        buf[start..MAX_HEADER_LEN].copy_from_slice(&header[..header_len]);
        let mut frame = Bytes::from(buf);
        frame.advance(start);
        WirePacket {
            frame,
            header_len: header_len as u8,
            binary,
            separated: false,
        }
    }

    /// A complete websocket frame built elsewhere (control frames), to be queued with the others.
    pub(crate) fn raw_frame(frame: Vec<u8>) -> Self {
        WirePacket {
            frame: Bytes::from(frame),
            header_len: 0,
            binary: false,
            separated: false,
        }
    }

    /// What remains of this packet's websocket frame after `written` bytes went out.
    pub(crate) fn rest_after(&self, written: usize) -> Self {
        WirePacket {
            frame: self.frame.slice(written.min(self.frame.len())..),
            header_len: 0,
            binary: self.binary,
            separated: self.separated,
        }
    }

    /// Marks the packet to reach the client in its own TCP segment: a websocket writer pauses briefly
    /// before the frames queued after it. Used for a Socket.IO CONNECT reply, which Node's event loop also
    /// writes apart from what the connection handler emits; clients that read one frame per network read
    /// (such as the official conformance suite) depend on it.
    pub fn separated(mut self) -> Self {
        self.separated = true;
        self
    }

    /// Whether the packet is [`WirePacket::separated`].
    pub fn is_separated(&self) -> bool {
        self.separated
    }

    /// The whole websocket frame.
    pub fn ws_frame(&self) -> &[u8] {
        &self.frame
    }

    /// The Engine.IO packet without websocket framing (text packets start with their type digit).
    pub fn payload(&self) -> &[u8] {
        &self.frame[usize::from(self.header_len)..]
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Bytes this packet holds, for queue accounting.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Always false: every packet has at least a header.
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Appends this packet as one record of a polling response body.
    pub fn append_polling(&self, out: &mut Vec<u8>) {
        if self.binary {
            out.push(b'b');
            let payload = self.payload();
            let start = out.len();
            out.resize(start + payload.len().div_ceil(3) * 4, 0);
            let written = STANDARD
                .encode_slice(payload, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
        } else {
            out.extend_from_slice(self.payload());
        }
    }
}

impl std::fmt::Debug for WirePacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.binary {
            write!(f, "WirePacket::Binary({} bytes)", self.payload().len())
        } else {
            write!(
                f,
                "WirePacket::Text({:?})",
                String::from_utf8_lossy(self.payload())
            )
        }
    }
}

/// Joins packets into one polling response body.
pub fn polling_body<'a>(packets: impl IntoIterator<Item = &'a WirePacket>) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            body.push(super::packet::SEPARATOR);
        }
        packet.append_polling(&mut body);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packet_carries_a_ready_websocket_frame() {
        let p = WirePacket::text(b'4', b"hello");
        assert_eq!(p.ws_frame(), b"\x81\x064hello");
        assert_eq!(p.payload(), b"4hello");
        assert!(!p.is_binary());
    }

    #[test]
    fn long_payloads_use_extended_lengths() {
        let data = vec![b'x'; 300];
        let p = WirePacket::text(b'4', &data);
        assert_eq!(&p.ws_frame()[..4], &[0x81, 126, 0x01, 0x2d]);
        assert_eq!(p.payload().len(), 301);
        let big = vec![7u8; 70_000];
        let b = WirePacket::binary(&big);
        assert_eq!(&b.ws_frame()[..2], &[0x82, 127]);
        assert_eq!(&b.ws_frame()[2..10], &70_000u64.to_be_bytes());
        assert_eq!(b.payload(), &big[..]);
    }

    #[test]
    fn polling_body_joins_and_base64s_binary() {
        let a = WirePacket::text(b'4', b"hello");
        let b = WirePacket::binary(&[1, 2, 3, 4]);
        assert_eq!(polling_body([&a, &b]), b"4hello\x1ebAQIDBA==");
        assert_eq!(polling_body([] as [&WirePacket; 0]), b"");
    }
}
