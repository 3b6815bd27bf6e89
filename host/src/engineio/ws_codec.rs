//! RFC 6455 framing for the server side of a websocket.
//!
//! Our own codec rather than a general websocket library because the hot path needs two things those do not
//! give together: frames pre-encoded once per broadcast (see [`super::wire`]) and no per-connection buffer
//! while a connection is idle. The decoder keeps bytes only while a frame or a fragmented message is
//! incomplete. It enforces what a server must: client frames are masked, control frames are short and final,
//! fragments arrive in order, text is UTF-8, and a message never exceeds the configured maximum.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

/// Longest header a server frame needs (no mask).
pub const MAX_HEADER_LEN: usize = 10;
/// Opcode of a text frame.
pub const OPCODE_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CONTINUATION: u8 = 0x0;
/// Opcode of a close frame.
pub const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: text that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: message larger than the server accepts.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Writes an unmasked frame header into `out`; returns its length.
pub fn write_header(out: &mut [u8; MAX_HEADER_LEN], opcode: u8, payload_len: usize) -> usize {
    out[0] = 0x80 | opcode;
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// A complete control frame, ready to write.
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = write_header(&mut header, opcode, payload.len());
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&header[..n]);
    frame.extend_from_slice(payload);
    frame
}

/// A close frame with a status code and a short reason.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    control_frame(OPCODE_CLOSE, &payload)
}

/// A pong answering a client's ping.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    control_frame(OPCODE_PONG, payload)
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(sha.finalize())
}

/// What the decoder produced from the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text message.
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping to be answered with the same payload.
    Ping(Bytes),
    /// A pong (ignored by Engine.IO, which has its own heartbeat).
    Pong,
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// A client broke the websocket protocol; the connection is closed with [`WsError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A framing rule was broken.
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message was larger than the server's maximum payload.
    #[error("websocket message of {size} bytes exceeds the limit of {limit} bytes")]
    TooBig {
        /// Size announced or reached.
        size: u64,
        /// The configured maximum.
        limit: usize,
    },
    /// A text message was not UTF-8.
    #[error("websocket text message is not valid UTF-8")]
    InvalidUtf8,
}

impl WsError {
    /// The close code RFC 6455 prescribes for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => CLOSE_PROTOCOL_ERROR,
            WsError::TooBig { .. } => CLOSE_TOO_BIG,
            WsError::InvalidUtf8 => CLOSE_INVALID_DATA,
        }
    }
}

/// Incremental decoder of client frames.
pub struct FrameDecoder {
    /// Received bytes not yet forming a whole frame; empty (no allocation) when idle.
    pending: BytesMut,
    /// Opcode and data of a fragmented message in progress.
    fragments: Option<(u8, BytesMut)>,
    max_message: usize,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl FrameDecoder {
    /// A decoder refusing messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        FrameDecoder {
            pending: BytesMut::new(),
            fragments: None,
            max_message,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// Whether bytes of an incomplete frame or message are held.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.fragments.is_none()
    }

    /// Releases buffer capacity once nothing is pending, so idle connections hold no buffer.
    pub fn shrink_if_idle(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = BytesMut::new();
        }
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<WsEvent>, WsError> {
        loop {
            let Some(header) = self.parse_header()? else {
                return Ok(None);
            };
            let total = header.header_len + header.payload_len;
            if self.pending.len() < total {
                self.pending.reserve(total - self.pending.len());
                return Ok(None);
            }
            self.pending.advance(header.header_len);
            let mut payload = self.pending.split_to(header.payload_len);
            unmask(&mut payload, header.mask);
            if let Some(event) = self.on_frame(header.fin, header.opcode, payload)? {
                return Ok(Some(event));
            }
        }
    }

    fn parse_header(&self) -> Result<Option<Header>, WsError> {
        let buf = &self.pending[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return Err(WsError::Protocol(
                "reserved bits set without a negotiated extension",
            ));
        }
        let opcode = buf[0] & 0x0F;
        if buf[1] & 0x80 == 0 {
            return Err(WsError::Protocol("client frames must be masked"));
        }
        let (len, mut at) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(raw), 10)
            }
            n => (u64::from(n), 2),
        };
        let is_control = opcode & 0x8 != 0;
        if is_control && (!fin || len > 125) {
            return Err(WsError::Protocol(
                "control frames must be final and at most 125 bytes",
            ));
        }
        let so_far = self
            .fragments
            .as_ref()
            .map_or(0, |(_, data)| data.len() as u64);
        if !is_control && len.saturating_add(so_far) > self.max_message as u64 {
            return Err(WsError::TooBig {
                size: len.saturating_add(so_far),
                limit: self.max_message,
            });
        }
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[at..at + 4]);
        at += 4;
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len: at,
            // Bounded by max_message (a usize) for data frames and by 125 for control frames.
            payload_len: len as usize,
        }))
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
    ) -> Result<Option<WsEvent>, WsError> {
        match opcode {
            OPCODE_TEXT | OPCODE_BINARY => {
                if self.fragments.is_some() {
                    return Err(WsError::Protocol(
                        "new message before the previous one finished",
                    ));
                }
                if fin {
                    return finish_message(opcode, payload).map(Some);
                }
                self.fragments = Some((opcode, payload));
                Ok(None)
            }
            OPCODE_CONTINUATION => {
                let Some((first_opcode, data)) = self.fragments.as_mut() else {
                    return Err(WsError::Protocol("continuation frame without a message"));
                };
                data.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let first_opcode = *first_opcode;
                let data = self.fragments.take().map(|(_, d)| d).unwrap_or_default();
                finish_message(first_opcode, data).map(Some)
            }
            OPCODE_PING => Ok(Some(WsEvent::Ping(payload.freeze()))),
            OPCODE_PONG => Ok(Some(WsEvent::Pong)),
            OPCODE_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                Ok(Some(WsEvent::Close(code)))
            }
            _ => Err(WsError::Protocol("unknown opcode")),
        }
    }
}

fn finish_message(opcode: u8, data: BytesMut) -> Result<WsEvent, WsError> {
    let data = data.freeze();
    if opcode == OPCODE_TEXT {
        std::str::from_utf8(&data).map_err(|_| WsError::InvalidUtf8)?;
        Ok(WsEvent::Text(data))
    } else {
        Ok(WsEvent::Binary(data))
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (byte, m) in chunk.iter_mut().zip(mask) {
            *byte ^= m;
        }
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= m;
    }
}

/// A masked frame, as a client sends them (the mask is fixed: this is for tests and in-memory
/// clients, not for clients on a network, which must pick a fresh mask per frame).
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        masked_frame(fin, opcode, payload)
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn decodes_frames_split_at_every_byte() {
        let mut bytes = client_frame(true, OPCODE_TEXT, b"4hello");
        bytes.extend(client_frame(true, OPCODE_BINARY, &[1, 2, 3]));
        let mut dec = FrameDecoder::new(1000);
        let mut events = Vec::new();
        for b in &bytes {
            dec.feed(std::slice::from_ref(b));
            while let Some(ev) = dec.next_event().unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(
            events,
            vec![
                WsEvent::Text(Bytes::from_static(b"4hello")),
                WsEvent::Binary(Bytes::from_static(&[1, 2, 3]))
            ]
        );
        assert!(dec.is_idle());
    }

    #[test]
    fn reassembles_fragments_with_interleaved_control_frames() {
        let mut dec = FrameDecoder::new(1000);
        dec.feed(&client_frame(false, OPCODE_TEXT, b"4he"));
        dec.feed(&client_frame(true, OPCODE_PING, b"p"));
        dec.feed(&client_frame(true, OPCODE_CONTINUATION, b"llo"));
        assert_eq!(
            dec.next_event(),
            Ok(Some(WsEvent::Ping(Bytes::from_static(b"p"))))
        );
        assert_eq!(
            dec.next_event(),
            Ok(Some(WsEvent::Text(Bytes::from_static(b"4hello"))))
        );
        assert_eq!(dec.next_event(), Ok(None));
    }

    #[test]
    fn enforces_the_message_limit_before_buffering() {
        let mut dec = FrameDecoder::new(10);
        dec.feed(&client_frame(true, OPCODE_TEXT, &[b'a'; 11])[..4]);
        assert!(matches!(dec.next_event(), Err(WsError::TooBig { .. })));
        let mut dec = FrameDecoder::new(10);
        dec.feed(&client_frame(false, OPCODE_TEXT, &[b'a'; 6]));
        dec.feed(&client_frame(true, OPCODE_CONTINUATION, &[b'a'; 6]));
        assert!(matches!(
            dec.next_event(),
            Err(WsError::TooBig { size: 12, .. })
        ));
        let mut dec = FrameDecoder::new(100);
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        dec.feed(&huge);
        assert!(matches!(dec.next_event(), Err(WsError::TooBig { .. })));
    }

    #[test]
    fn refuses_protocol_violations() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x81, 0x01, b'a'],                         // unmasked
            vec![0xC1, 0x80, 0, 0, 0, 0],                   // RSV1
            client_frame(true, OPCODE_CONTINUATION, b"x"),  // stray continuation
            client_frame(false, OPCODE_PING, b"x"),         // fragmented control
            client_frame(true, OPCODE_PING, &[0; 126]),     // long control
            client_frame(true, 0x3, b"x"),                  // reserved opcode
            client_frame(true, OPCODE_TEXT, &[0xff, 0xfe]), // not UTF-8
        ];
        for case in cases {
            let mut dec = FrameDecoder::new(1000);
            dec.feed(&case);
            assert!(dec.next_event().is_err(), "accepted {case:?}");
        }
        let mut dec = FrameDecoder::new(1000);
        dec.feed(&client_frame(false, OPCODE_TEXT, b"a"));
        dec.feed(&client_frame(true, OPCODE_TEXT, b"b"));
        assert_eq!(
            dec.next_event(),
            Err(WsError::Protocol(
                "new message before the previous one finished"
            ))
        );
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut dec = FrameDecoder::new(1000);
        dec.feed(&client_frame(true, OPCODE_CLOSE, &1001u16.to_be_bytes()));
        dec.feed(&client_frame(true, OPCODE_CLOSE, b""));
        assert_eq!(dec.next_event(), Ok(Some(WsEvent::Close(Some(1001)))));
        assert_eq!(dec.next_event(), Ok(Some(WsEvent::Close(None))));
        assert_eq!(
            close_frame(1009, "big"),
            vec![0x88, 5, 0x03, 0xF1, b'b', b'i', b'g']
        );
    }
}
