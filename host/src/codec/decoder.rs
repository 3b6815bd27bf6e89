//! Per-connection reassembly of binary packets from a text header and the binary messages that follow it.

use bytes::Bytes;

use super::packet::{DecodeError, Packet, decode_text, placeholders_valid};

/// Decoder state of one connection.
pub struct PacketDecoder {
    max_attachments: usize,
    partial: Option<(Packet, usize)>,
}

impl PacketDecoder {
    /// A decoder accepting at most `max_attachments` per packet (socket.io-parser's default is 10).
    pub fn new(max_attachments: usize) -> Self {
        PacketDecoder {
            max_attachments,
            partial: None,
        }
    }

    /// Feeds a text message; returns the packet if it is complete.
    pub fn on_text(&mut self, text: &str) -> Result<Option<Packet>, DecodeError> {
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

    /// Feeds a binary message; returns the packet once its last attachment arrived.
    pub fn on_binary(&mut self, data: Bytes) -> Result<Option<Packet>, DecodeError> {
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
        let mut d = PacketDecoder::new(10);
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
        let mut d = PacketDecoder::new(10);
        assert!(d.on_text(r#"50-["a"]"#).unwrap().is_some());
    }

    #[test]
    fn refuses_out_of_order_messages() {
        let mut d = PacketDecoder::new(10);
        assert_eq!(
            d.on_binary(Bytes::from_static(b"x")),
            Err(DecodeError::UnexpectedBinary)
        );
        d.on_text(r#"51-["a",{"_placeholder":true,"num":0}]"#)
            .unwrap();
        assert_eq!(d.on_text(r#"2["a"]"#), Err(DecodeError::UnexpectedText));
    }

    #[test]
    fn refuses_placeholders_out_of_range() {
        let mut d = PacketDecoder::new(10);
        d.on_text(r#"51-["a",{"_placeholder":true,"num":1}]"#)
            .unwrap();
        assert_eq!(
            d.on_binary(Bytes::from_static(b"x")),
            Err(DecodeError::IllegalAttachments)
        );
    }
}
