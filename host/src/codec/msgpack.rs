//! MessagePack as Node's Redis adapter (notepack.io 3) and `socket.io-msgpack-parser` write it, converted
//! to and from our packet form.
//!
//! Our packets keep binary out of the JSON (`{"_placeholder":true,"num":N}` plus attachments); on the Redis
//! wire binary is inline as msgpack `bin`. Conversions follow notepack: integral numbers as the smallest
//! integer form, others as float64; a timestamp extension (type −1, a JS `Date`) becomes the ISO string
//! socket.io would send its clients; legacy extension type 0 is binary; other extensions become
//! `[type, <binary>]` as notepack decodes them.

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};

use super::placeholder;

/// Deepest nesting accepted when decoding, so a hostile message cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MsgpackError {
    /// Not valid msgpack.
    #[error("invalid msgpack: {0}")]
    Invalid(#[from] rmpv::decode::Error),
    /// Bytes after the top-level value (notepack refuses those too).
    #[error("{0} trailing bytes after the msgpack value")]
    Trailing(usize),
}

/// Decodes one msgpack value that must span the whole buffer.
pub fn decode(bytes: &[u8]) -> Result<Mp, MsgpackError> {
    let mut rd = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)?;
    if !rd.is_empty() {
        return Err(MsgpackError::Trailing(rd.len()));
    }
    Ok(value)
}

/// Encodes a msgpack value.
pub fn encode(value: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// JSON with placeholders (and the attachments they point to) to msgpack with binary inline.
pub fn from_json(value: &Value, attachments: &[Bytes]) -> Mp {
    match value {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => number_to_mp(n),
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(items) => Mp::Array(items.iter().map(|v| from_json(v, attachments)).collect()),
        Value::Object(map) => {
            if map.get("_placeholder") == Some(&Value::Bool(true))
                && let Some(data) = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|n| attachments.get(n as usize))
            {
                return Mp::Binary(data.to_vec());
            }
            Mp::Map(
                map.iter()
                    .map(|(k, v)| (Mp::from(k.as_str()), from_json(v, attachments)))
                    .collect(),
            )
        }
    }
}

fn number_to_mp(n: &Number) -> Mp {
    if let Some(u) = n.as_u64() {
        return Mp::from(u);
    }
    if let Some(i) = n.as_i64() {
        return Mp::from(i);
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // JavaScript has one number type: notepack writes integral values as integers.
    const SAFE: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() < SAFE {
        return Mp::from(f as i64);
    }
    Mp::F64(f)
}

/// Msgpack with inline binary to JSON with placeholders, appending the binary to `attachments`.
pub fn to_json(value: Mp, attachments: &mut Vec<Bytes>) -> Value {
    match value {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        Mp::F32(f) => float(f64::from(f)),
        Mp::F64(f) => float(f),
        Mp::String(s) => Value::String(s.into_str().unwrap_or_default()),
        Mp::Binary(data) => binary(Bytes::from(data), attachments),
        Mp::Array(items) => {
            Value::Array(items.into_iter().map(|v| to_json(v, attachments)).collect())
        }
        Mp::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match k {
                    Mp::String(s) => s.into_str().unwrap_or_default(),
                    other => other.to_string(),
                };
                map.insert(key, to_json(v, attachments));
            }
            Value::Object(map)
        }
        Mp::Ext(-1, data) => timestamp(&data).map_or(Value::Null, Value::String),
        // notepack 2 wrote `undefined` as fixext1 type 0 with one zero byte.
        Mp::Ext(0, data) if data == [0] => Value::Null,
        Mp::Ext(0, data) => binary(Bytes::from(data), attachments),
        Mp::Ext(kind, data) => Value::Array(vec![
            Value::from(kind),
            binary(Bytes::from(data), attachments),
        ]),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn binary(data: Bytes, attachments: &mut Vec<Bytes>) -> Value {
    let value = placeholder(attachments.len());
    attachments.push(data);
    value
}

/// A msgpack timestamp as the ISO string `Date#toJSON` gives (millisecond precision, UTC).
fn timestamp(data: &[u8]) -> Option<String> {
    let (secs, nanos) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let raw = u64::from_be_bytes(data.try_into().ok()?);
            ((raw & 0x3_ffff_ffff) as i64, (raw >> 34) as u32)
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().ok()?);
            let secs = i64::from_be_bytes(data[4..].try_into().ok()?);
            (secs, nanos)
        }
        _ => return None,
    };
    let at = chrono::DateTime::from_timestamp(secs, nanos)?;
    Some(at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn encodes_numbers_like_notepack() {
        assert_eq!(
            hex(&encode(&from_json(&json!(1.5), &[]))),
            "cb3ff8000000000000"
        );
        assert_eq!(
            hex(&encode(&from_json(&json!(1_099_511_627_776u64), &[]))),
            "cf0000010000000000"
        );
        assert_eq!(hex(&encode(&from_json(&json!(-1), &[]))), "ff");
        assert_eq!(hex(&encode(&from_json(&json!(2.0), &[]))), "02");
        assert_eq!(hex(&encode(&from_json(&json!([null]), &[]))), "91c0");
        assert_eq!(hex(&encode(&from_json(&json!({"b": 1}), &[]))), "81a16201");
    }

    #[test]
    fn placeholders_become_inline_binary_and_back() {
        let attachments = vec![Bytes::from_static(&[9, 8])];
        let mp = from_json(
            &json!(["e", {"_placeholder": true, "num": 0}]),
            &attachments,
        );
        assert_eq!(hex(&encode(&mp)), "92a165c4020908");
        let mut back = Vec::new();
        let value = to_json(decode(&encode(&mp)).unwrap(), &mut back);
        assert_eq!(value, json!(["e", {"_placeholder": true, "num": 0}]));
        assert_eq!(back, attachments);
    }

    #[test]
    fn decodes_dates_and_legacy_extensions() {
        let mut att = Vec::new();
        // new Date(1700000000000) and new Date(1700000000123), as captured from notepack 3.
        let d1 = decode(&[0xd6, 0xff, 0x65, 0x53, 0xf1, 0x00]).unwrap();
        assert_eq!(to_json(d1, &mut att), json!("2023-11-14T22:13:20.000Z"));
        let d2 = decode(&[0xd7, 0xff, 0x1d, 0x53, 0x53, 0x00, 0x65, 0x53, 0xf1, 0x00]).unwrap();
        assert_eq!(to_json(d2, &mut att), json!("2023-11-14T22:13:20.123Z"));
        let undefined = decode(&[0xd4, 0x00, 0x00]).unwrap();
        assert_eq!(to_json(undefined, &mut att), Value::Null);
        let legacy_buffer = decode(&[0xc7, 0x02, 0x00, 0x01, 0x02]).unwrap();
        assert_eq!(
            to_json(legacy_buffer, &mut att),
            json!({"_placeholder": true, "num": 0})
        );
        assert_eq!(att, vec![Bytes::from_static(&[1, 2])]);
    }

    #[test]
    fn refuses_trailing_bytes_and_garbage() {
        assert!(matches!(
            decode(&[0x01, 0x02]),
            Err(MsgpackError::Trailing(1))
        ));
        assert!(decode(&[0x92, 0x01]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 10_000).chain([0xc0]).collect();
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn decodes_the_captured_broadcast() {
        // io.to("room1").emit("to-room","x") from a Node server with uid 2hVDiL.
        let mut bytes = vec![0x93, 0xa6];
        bytes.extend(b"2hVDiL");
        bytes.extend([0x83, 0xa4]);
        bytes.extend(b"type");
        bytes.push(0x02);
        bytes.push(0xa4);
        bytes.extend(b"data");
        bytes.extend([0x92, 0xa7]);
        bytes.extend(b"to-room");
        bytes.push(0xa1);
        bytes.extend(b"x");
        bytes.push(0xa3);
        bytes.extend(b"nsp");
        bytes.push(0xa1);
        bytes.extend(b"/");
        bytes.extend([0x83, 0xa5]);
        bytes.extend(b"rooms");
        bytes.extend([0x91, 0xa5]);
        bytes.extend(b"room1");
        bytes.push(0xa6);
        bytes.extend(b"except");
        bytes.push(0x90);
        bytes.push(0xa5);
        bytes.extend(b"flags");
        bytes.push(0x80);
        let mut att = Vec::new();
        let value = to_json(decode(&bytes).unwrap(), &mut att);
        assert_eq!(
            value,
            json!(["2hVDiL", {"type": 2, "data": ["to-room", "x"], "nsp": "/"}, {"rooms": ["room1"], "except": [], "flags": {}}])
        );
        // And we write the same bytes for the same broadcast.
        assert_eq!(encode(&from_json(&value, &att)), bytes);
    }
}
