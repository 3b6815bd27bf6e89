//! Messages a Redis peer can publish: the bounds check, the msgpack and JSON decoders and the broadcast
//! envelope must never panic; a message the bounds refuse must not decode; and the bounds must never
//! refuse a well-formed message that is within them (the scan agrees with the decoder).
#![no_main]

use ioplex::adapter::redis::bounds::{self, MAX_VALUES};
use ioplex::adapter::redis::{msgpack, wire};
use libfuzzer_sys::fuzz_target;

/// Values (map keys included) and nesting depth of a decoded msgpack value.
fn shape(value: &rmpv::Value, depth: usize, values: &mut usize, deepest: &mut usize) {
    *values += 1;
    *deepest = (*deepest).max(depth);
    match value {
        rmpv::Value::Array(items) => items.iter().for_each(|v| shape(v, depth + 1, values, deepest)),
        rmpv::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            shape(k, depth + 1, values, deepest);
            shape(v, depth + 1, values, deepest);
        }),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let checked = bounds::check_msgpack(data);
    if let Ok(value) = msgpack::decode(data) {
        let (mut values, mut deepest) = (0, 0);
        shape(&value, 0, &mut values, &mut deepest);
        if values <= MAX_VALUES && deepest < 100 {
            assert_eq!(checked, Ok(()), "the bounds refused a well-formed message within them");
        }
    }
    let decoded = wire::decode_any(data);
    if data.first() != Some(&b'{') && checked.is_err() {
        assert!(decoded.is_err(), "a message over the bounds was decoded");
    }
    if data.first() == Some(&b'{') && bounds::check_json(data).is_err() {
        assert!(decoded.is_err(), "a JSON message over the bounds was decoded");
    }
    let _ = wire::decode_broadcast(data, "/");
});
