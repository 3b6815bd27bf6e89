//! A stream of Socket.IO messages (text headers and binary attachments, in any order): decoding and
//! binary reassembly must never panic, and every packet produced must re-encode and decode to itself.
#![no_main]

use bytes::Bytes;
use ioplex::codec::PacketDecoder;
use ioplex::codec::{decode_text, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = PacketDecoder::new(10);
    // Messages are separated by 0xFF; a leading 0x00 marks a binary message.
    for message in data.split(|b| *b == 0xFF) {
        let result = match message.split_first() {
            Some((0, bin)) => decoder.on_binary(Bytes::copy_from_slice(bin)),
            _ => match std::str::from_utf8(message) {
                Ok(text) => decoder.on_text(text),
                Err(_) => return,
            },
        };
        match result {
            Ok(Some(packet)) => {
                let encoded = encode(&packet);
                let head = std::str::from_utf8(&encoded.frames()[0].payload()[1..]).unwrap();
                let (again, expected) = decode_text(head, 10).unwrap();
                assert_eq!(expected, packet.attachments.len());
                // A binary kind without attachments is encoded as its plain twin.
                assert_eq!(again.kind.is_binary(), !packet.attachments.is_empty());
                assert_eq!((&again.nsp, again.id, &again.data), (&packet.nsp, packet.id, &packet.data));
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
});
