//! The fleet key: a secret every node of a fleet is given (never stored in Redis) that signs plugin
//! announcements and the active-version records, so that whoever can write to the gateway's Redis still
//! cannot install or remove a tenant's plugin.
//!
//! Signatures are HMAC-SHA256 (RFC 2104) over a versioned, newline-joined message; comparisons run in
//! constant time.

/// A shared secret of the fleet's nodes.
#[derive(Clone)]
pub struct FleetKey(Vec<u8>);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(***)")
    }
}

/// The key is too short to resist guessing.
#[derive(Debug, thiserror::Error)]
#[error("the fleet key must be at least 32 bytes (e.g. `openssl rand -hex 32`)")]
pub struct WeakKey;

impl FleetKey {
    /// A key from its text (at least 32 bytes).
    pub fn new(secret: &str) -> Result<Self, WeakKey> {
        let secret = secret.trim();
        if secret.len() < 32 {
            return Err(WeakKey);
        }
        Ok(FleetKey(secret.as_bytes().to_vec()))
    }

    /// Hex HMAC-SHA256 of `parts` joined by newlines (parts must not contain newlines themselves to be
    /// unambiguous; tenant ids, plugin names and hashes cannot).
    pub fn sign(&self, parts: &[&str]) -> String {
        crate::hex::encode(hmac_sha256(&self.0, parts.join("\n").as_bytes()).as_ref())
    }

    /// Whether `signature` is this key's signature of `parts`.
    pub fn verify(&self, parts: &[&str], signature: &str) -> bool {
        let expected = self.sign(parts);
        expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> ring::hmac::Tag {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::hex::encode(mac.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            crate::hex::encode(mac.as_ref()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn verifies_its_own_signatures_only() {
        let key = FleetKey::new(&"k".repeat(32)).expect("key");
        let other = FleetKey::new(&"o".repeat(32)).expect("key");
        let sig = key.sign(&["v1", "acme", "redact", "abc"]);
        assert!(key.verify(&["v1", "acme", "redact", "abc"], &sig));
        assert!(!key.verify(&["v1", "acme", "redact", "abd"], &sig));
        assert!(!other.verify(&["v1", "acme", "redact", "abc"], &sig));
        assert!(!key.verify(&["v1", "acme", "redact", "abc"], ""));
        assert!(FleetKey::new("short").is_err());
    }
}
