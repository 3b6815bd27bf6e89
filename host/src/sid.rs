//! Session and socket identifiers.
//!
//! Engine.IO session ids and Socket.IO socket ids share one shape: 20 characters of URL-safe base64 drawn from
//! 15 random bytes, like Node's `base64id`. They are kept inline (no heap) because every room entry, queue and
//! map in the server carries them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A 20-character identifier of an Engine.IO session or a Socket.IO socket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; Sid::LEN]);

impl Sid {
    /// Length of every id on the wire.
    pub const LEN: usize = 20;

    /// A fresh random id.
    pub fn random() -> Self {
        let raw: [u8; 15] = rand::random();
        let mut out = [0u8; Self::LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("15 bytes always encode to 20 base64 characters");
        debug_assert_eq!(written, Self::LEN);
        Sid(out)
    }

    /// Parses an id received from a peer; `None` unless it has the exact shape we hand out.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != Self::LEN
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(bytes);
        Some(Sid(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Constructed only from base64url characters, which are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

/// A string that is not a 20-character socket or session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a socket id: 20 characters of [A-Za-z0-9_-] expected")]
pub struct InvalidSid;

impl std::str::FromStr for Sid {
    type Err = InvalidSid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sid::parse(s).ok_or(InvalidSid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_node_shape_and_round_trip() {
        let a = Sid::random();
        assert_eq!(a.as_str().len(), 20);
        assert_eq!(Sid::parse(a.as_str()), Some(a));
        assert_ne!(a, Sid::random());
    }

    #[test]
    fn parse_refuses_other_shapes() {
        assert_eq!(Sid::parse(""), None);
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("lv_VI97HAXpY6yYWAAA!"), None);
        assert_eq!(Sid::parse("lv_VI97HAXpY6yYWAAACx"), None);
        assert!(Sid::parse("lv_VI97HAXpY6yYWAAAC").is_some());
    }
}
