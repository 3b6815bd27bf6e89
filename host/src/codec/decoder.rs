//! Per-connection decoding: which parser the client speaks (told by its first packet), and for the
//! default parser the reassembly of binary packets from a text header and the binary messages after it.

use bytes::Bytes;

use super::msgpack_parser::{Parser, decode_msgpack_packet};
use super::packet::{DecodeError, Packet, decode_text, placeholders_valid};

/// Which parsers a connection may speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParserChoice {
    /// Whichever the client's first packet is in.
    #[default]
    Auto,
    /// Only socket.io-parser (what Node's server speaks by default).
    Default,
    /// Only socket.io-msgpack-parser.
    Msgpack,
}

/// Decoder state of one connection.
pub struct PacketDecoder {
    max_attachments: usize,
    choice: ParserChoice,
    parser: Option<Parser>,
    partial: Option<(Packet, usize)>,
}

impl PacketDecoder {
    /// A decoder accepting at most `max_attachments` per packet (socket.io-parser's default is 10) and
    /// the parsers `choice` allows.
    pub fn new(max_attachments: usize, choice: ParserChoice) -> Self {
        PacketDecoder {
            max_attachments,
            choice,
            parser: None,
            partial: None,
        }
    }

    /// The parser the client speaks, once its first packet told.
    pub fn parser(&self) -> Parser {
        self.parser.unwrap_or_default()
    }

    /// Settles the parser on the first packet; refuses one the configuration does not allow.
    fn settle(&mut self, told: Parser) -> Result<(), DecodeError> {
        match (self.parser, self.choice, told) {
            (Some(p), _, t) if p == t => Ok(()),
            (Some(_), _, _) => Err(DecodeError::ParserChanged),
            (None, ParserChoice::Default, Parser::MsgPack)
            | (None, ParserChoice::Msgpack, Parser::Default) => Err(DecodeError::ParserRefused),
            (None, _, t) => {
                self.parser = Some(t);
                Ok(())
            }
        }
    }

    /// Feeds a text message; returns the packet if it is complete.
    pub fn on_text(&mut self, text: &str) -> Result<Option<Packet>, DecodeError> {
        self.settle(Parser::Default)?;
        if self.partial.is_some() {
            return Err(DecodeError::UnexpectedText);
        }
        let (packet, expected) = decode_text(text, self.max_attachments)?;
        if expected == 0 {
            return finish(packet);
        }
        self.partial = Some((packet, expected));
        Ok(None)
    }

    /// Feeds a binary message; returns the packet once its last attachment arrived (default parser),
    /// or the packet it holds (msgpack parser; a connection's first packet being binary says so).
    pub fn on_binary(&mut self, data: Bytes) -> Result<Option<Packet>, DecodeError> {
        if self.parser.is_none() {
            self.settle(Parser::MsgPack)?;
        }
        if self.parser == Some(Parser::MsgPack) {
            return decode_msgpack_packet(&data, self.max_attachments).map(Some);
        }
        let Some((packet, expected)) = self.partial.as_mut() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        packet.attachments.push(data);
        if packet.attachments.len() < *expected {
            return Ok(None);
        }
        let (packet, _) = self.partial.take().ok_or(DecodeError::UnexpectedBinary)?;
        finish(packet)
    }
}

fn finish(packet: Packet) -> Result<Option<Packet>, DecodeError> {
    if packet.kind.is_binary() {
        let count = packet.attachments.len();
        if !packet
            .data
            .as_ref()
            .is_none_or(|d| placeholders_valid(d, count))
        {
            return Err(DecodeError::IllegalAttachments);
        }
    }
    Ok(Some(packet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PacketKind;

    #[test]
    fn reassembles_binary_packets() {
        let mut d = PacketDecoder::new(10, ParserChoice::Auto);
        let head = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(d.on_text(head), Ok(None));
        assert_eq!(d.on_binary(Bytes::from_static(&[1, 2, 3])), Ok(None));
        let p = d
            .on_binary(Bytes::from_static(&[4, 5, 6]))
            .unwrap()
            .unwrap();
        assert_eq!(p.kind, PacketKind::BinaryEvent);
        assert_eq!(
            p.attachments,
            vec![
                Bytes::from_static(&[1, 2, 3]),
                Bytes::from_static(&[4, 5, 6])
            ]
        );
        // Ready for the next packet.
        assert!(d.on_text(r#"2["x"]"#).unwrap().is_some());
    }

    #[test]
    fn zero_attachments_complete_at_once() {
        let mut d = PacketDecoder::new(10, ParserChoice::Auto);
        assert!(d.on_text(r#"50-["a"]"#).unwrap().is_some());
    }

    #[test]
    fn refuses_out_of_order_messages() {
        let mut d = PacketDecoder::new(10, ParserChoice::Auto);
        assert!(d.on_text("0").unwrap().is_some());
        assert_eq!(
            d.on_binary(Bytes::from_static(b"x")),
            Err(DecodeError::UnexpectedBinary)
        );
        d.on_text(r#"51-["a",{"_placeholder":true,"num":0}]"#)
            .unwrap();
        assert_eq!(d.on_text(r#"2["a"]"#), Err(DecodeError::UnexpectedText));
    }

    /// `{type: 0, nsp: "/"}` as socket.io-msgpack-parser sends a CONNECT.
    const MSGPACK_CONNECT: &[u8] = &[
        0x82, 0xa4, b't', b'y', b'p', b'e', 0x00, 0xa3, b'n', b's', b'p', 0xa1, b'/',
    ];

    #[test]
    fn the_first_packet_settles_the_parser_for_good() {
        let mut d = PacketDecoder::new(10, ParserChoice::Auto);
        let connect = d.on_binary(Bytes::from_static(MSGPACK_CONNECT)).unwrap();
        assert_eq!(connect.map(|p| p.kind), Some(PacketKind::Connect));
        assert_eq!(d.parser(), Parser::MsgPack);
        assert_eq!(d.on_text("0"), Err(DecodeError::ParserChanged));

        let mut d = PacketDecoder::new(10, ParserChoice::Default);
        assert_eq!(
            d.on_binary(Bytes::from_static(MSGPACK_CONNECT)),
            Err(DecodeError::ParserRefused)
        );
        let mut d = PacketDecoder::new(10, ParserChoice::Msgpack);
        assert_eq!(d.on_text("0"), Err(DecodeError::ParserRefused));
        assert!(d.on_binary(Bytes::from_static(MSGPACK_CONNECT)).is_ok());
    }

    #[test]
    fn refuses_placeholders_out_of_range() {
        let mut d = PacketDecoder::new(10, ParserChoice::Auto);
        d.on_text(r#"51-["a",{"_placeholder":true,"num":1}]"#)
            .unwrap();
        assert_eq!(
            d.on_binary(Bytes::from_static(b"x")),
            Err(DecodeError::IllegalAttachments)
        );
    }
}
