//! Engine.IO polling bodies and single text packets: decoding must never panic.
#![no_main]

use bytes::Bytes;
use ioplex::engineio::Utf8Bytes;
use ioplex::engineio::packet::{decode_payload, decode_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(packets) = decode_payload(bytes.clone()) {
        assert!(!packets.is_empty());
    }
    if let Ok(text) = Utf8Bytes::try_from_bytes(bytes) {
        let _ = decode_text(text);
    }
});
