//! Client websocket bytes fed in arbitrary chunks: the decoder must never panic, never return a message
//! above its limit, and never keep more than one frame's worth of bytes beyond the limit.
#![no_main]

use ioplex::engineio::ws_codec::{FrameDecoder, WsEvent};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(LIMIT);
    for piece in rest.chunks(chunk) {
        decoder.feed(piece);
        loop {
            match decoder.next_event() {
                Ok(Some(WsEvent::Text(t))) => {
                    assert!(t.len() <= LIMIT);
                    assert!(std::str::from_utf8(&t).is_ok());
                }
                Ok(Some(WsEvent::Binary(b))) => assert!(b.len() <= LIMIT),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        decoder.shrink_if_idle();
    }
});
