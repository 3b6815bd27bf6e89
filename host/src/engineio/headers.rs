//! The handshake's request headers, kept for a session's whole life in one small allocation.

use std::fmt;

use http::HeaderMap;

/// Request headers of a handshake: every name and value in one buffer.
///
/// A session keeps its handshake headers for as long as it lives (for `socket.handshake`, plugins and
/// the fleet's `fetchSockets`), so they are stored compactly: a `HeaderMap` copy costs about 100 bytes of
/// tables per header on top of the bytes themselves, which is most of an idle connection's memory budget.
/// The bytes are copied, never shared: values parsed by hyper share the connection's read buffer, and a
/// `HeaderMap` clone kept this long would pin that whole buffer (about 8 KiB per connection). Lookups are
/// linear; a handshake has a handful of headers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HandshakeHeaders {
    /// `name \0 value \0` for each header in request order; names are lowercase (as `http` parses them)
    /// and neither names nor values can contain NUL.
    bytes: Box<[u8]>,
}

impl HandshakeHeaders {
    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name` as text; `None` when absent or not visible ASCII.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(visible_str)
    }

    /// Whether the request had a header `name` (any case).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every header, in request order; a repeated header appears once per value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut parts = self.bytes.split(|b| *b == 0);
        std::iter::from_fn(move || {
            let name = parts.next().filter(|n| !n.is_empty())?;
            let value = parts.next()?;
            // Names come from `http::HeaderName`, which only holds ASCII tokens.
            Some((std::str::from_utf8(name).unwrap_or_default(), value))
        })
    }

    /// Every header whose value is visible ASCII, as text (for JSON views of the handshake).
    pub fn iter_str(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.iter()
            .filter_map(|(name, value)| Some((name, visible_str(value)?)))
    }

    /// How many header values there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Like `HeaderValue::to_str`: only visible ASCII (and tabs) is text.
fn visible_str(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

impl From<&HeaderMap> for HandshakeHeaders {
    fn from(headers: &HeaderMap) -> Self {
        let size = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 2)
            .sum();
        let mut bytes = Vec::with_capacity(size);
        for (name, value) in headers {
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
        }
        HandshakeHeaders {
            bytes: bytes.into_boxed_slice(),
        }
    }
}

impl fmt::Debug for HandshakeHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(n, v)| (n, String::from_utf8_lossy(v).into_owned())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, header};

    use super::HandshakeHeaders;

    #[test]
    fn keeps_every_value_in_order_and_finds_names_in_any_case() {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_static("chat.example:3000"));
        map.append("x-tag", HeaderValue::from_static("a"));
        map.append("x-tag", HeaderValue::from_static("b"));
        map.insert(header::ORIGIN, HeaderValue::from_static(""));
        map.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        let headers = HandshakeHeaders::from(&map);
        assert_eq!(headers.len(), 5);
        assert_eq!(headers.get_str("Host"), Some("chat.example:3000"));
        assert_eq!(headers.get("X-TAG"), Some(&b"a"[..]));
        assert!(
            headers.contains("origin"),
            "an empty value is still a header"
        );
        assert_eq!(headers.get_str("user-agent"), None, "not visible ASCII");
        assert_eq!(headers.get("user-agent"), Some("café".as_bytes()));
        assert!(!headers.contains("cookie"));
        let names: Vec<_> = headers
            .iter_str()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(
            names,
            ["host=chat.example:3000", "x-tag=a", "x-tag=b", "origin="]
        );
    }

    #[test]
    fn no_headers() {
        let headers = HandshakeHeaders::from(&HeaderMap::new());
        assert!(headers.is_empty());
        assert_eq!(headers.iter().count(), 0);
        assert_eq!(headers.get("host"), None);
    }
}
