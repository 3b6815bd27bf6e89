//! Limits on what one message (from a Redis peer, or a msgpack client) may make a node hold while it is
//! decoded.
//!
//! A message's bytes are bounded by its size cap; what decoding makes of them is not: one byte of
//! msgpack or two of JSON become a 32-byte value, then another as JSON, before any shape check. This
//! module walks a message once without allocating and refuses it when it holds more values or deeper
//! nesting than a fleet message plausibly does, so a hostile peer's message costs a scan, not gigabytes.

/// The most values (scalars, arrays, maps, map keys) a message may hold.
pub const MAX_VALUES: usize = 256 * 1024;
/// The deepest nesting a message may have.
pub const MAX_DEPTH: usize = 128;

/// Why a message was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// More values than [`MAX_VALUES`].
    #[error("more than {MAX_VALUES} values")]
    TooManyValues,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// The msgpack ended inside a value.
    #[error("truncated msgpack")]
    Truncated,
}

/// Checks a msgpack message: at most [`MAX_VALUES`] values and [`MAX_DEPTH`] levels, declared lengths
/// inside the buffer. Walks the structure with an explicit stack of remaining counts.
pub fn check_msgpack(bytes: &[u8]) -> Result<(), BoundsError> {
    let mut at = 0usize;
    let mut values = 0usize;
    // Values still to read at each open level; the outermost level holds the one top-level value.
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        values += 1;
        if values > MAX_VALUES {
            return Err(BoundsError::TooManyValues);
        }
        let marker = *bytes.get(at).ok_or(BoundsError::Truncated)?;
        at += 1;
        let (skip, children): (u64, u64) = match marker {
            // 0xc1 is reserved: one byte, whatever the decoder then makes of it.
            0x00..=0x7f | 0xe0..=0xff | 0xc0..=0xc3 => (0, 0),
            0x80..=0x8f => (0, u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (read_be(bytes, &mut at, 1)?, 0),
            0xc5 | 0xda => (read_be(bytes, &mut at, 2)?, 0),
            0xc6 | 0xdb => (read_be(bytes, &mut at, 4)?, 0),
            0xc7 => (read_be(bytes, &mut at, 1)? + 1, 0),
            0xc8 => (read_be(bytes, &mut at, 2)? + 1, 0),
            0xc9 => (read_be(bytes, &mut at, 4)? + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_be(bytes, &mut at, 2)?),
            0xdd => (0, read_be(bytes, &mut at, 4)?),
            0xde => (0, read_be(bytes, &mut at, 2)? * 2),
            0xdf => (0, read_be(bytes, &mut at, 4)? * 2),
        };
        let end = (at as u64).saturating_add(skip);
        if end > bytes.len() as u64 {
            return Err(BoundsError::Truncated);
        }
        at = end as usize;
        if children > 0 {
            // Every child takes at least one byte: a count beyond the rest of the buffer is a lie.
            if children > (bytes.len() - at) as u64 {
                return Err(BoundsError::Truncated);
            }
            if pending.len() > MAX_DEPTH {
                return Err(BoundsError::TooDeep);
            }
            pending.push(children);
        }
    }
    Ok(())
}

fn read_be(bytes: &[u8], at: &mut usize, width: usize) -> Result<u64, BoundsError> {
    let end = at.checked_add(width).ok_or(BoundsError::Truncated)?;
    let raw = bytes.get(*at..end).ok_or(BoundsError::Truncated)?;
    *at = end;
    Ok(raw.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

/// Checks a JSON message: at most [`MAX_VALUES`] values and [`MAX_DEPTH`] levels (counted from its
/// structural characters outside strings; the parser checks the rest).
pub fn check_json(bytes: &[u8]) -> Result<(), BoundsError> {
    let (mut values, mut depth) = (1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if depth > MAX_DEPTH {
                    return Err(BoundsError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' | b':' => values += 1,
            _ => continue,
        }
        if values > MAX_VALUES {
            return Err(BoundsError::TooManyValues);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(value: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).expect("encode");
        out
    }

    #[test]
    fn ordinary_messages_pass() {
        let value = rmpv::Value::Array(vec![
            "uid".into(),
            rmpv::Value::Map(vec![("type".into(), 2.into()), ("nsp".into(), "/".into())]),
            rmpv::Value::Binary(vec![1, 2, 3]),
            rmpv::Value::F64(1.5),
            rmpv::Value::Ext(-1, vec![0; 8]),
        ]);
        assert_eq!(check_msgpack(&mp(&value)), Ok(()));
        assert_eq!(
            check_json(br#"{"a":[1,2,{"b":"x,y:[{"}],"c":"\"["}"#),
            Ok(())
        );
    }

    #[test]
    fn too_many_values_are_refused() {
        let many = rmpv::Value::Array(vec![rmpv::Value::Nil; MAX_VALUES + 1]);
        assert_eq!(check_msgpack(&mp(&many)), Err(BoundsError::TooManyValues));
        let json = format!("[{}0]", "0,".repeat(MAX_VALUES + 1));
        assert_eq!(check_json(json.as_bytes()), Err(BoundsError::TooManyValues));
    }

    #[test]
    fn deep_nesting_and_lying_lengths_are_refused() {
        let mut deep = vec![0x91u8; MAX_DEPTH + 2];
        deep.push(0xc0);
        assert_eq!(check_msgpack(&deep), Err(BoundsError::TooDeep));
        assert_eq!(
            check_json("[".repeat(MAX_DEPTH + 1).as_bytes()),
            Err(BoundsError::TooDeep)
        );
        // An array that claims 2^32-1 items in a 5-byte message.
        assert_eq!(
            check_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(BoundsError::Truncated)
        );
        assert_eq!(
            check_msgpack(&[0xc6, 0xff, 0xff, 0xff, 0xff]),
            Err(BoundsError::Truncated)
        );
        assert_eq!(check_msgpack(&[]), Err(BoundsError::Truncated));
    }
}
