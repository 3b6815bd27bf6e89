//! Plugins compiled ahead of time on a build machine (`ioplex plugin compile`) and served by nodes that
//! carry no compiler (the edge build).
//!
//! Loading native code is only as safe as its origin: wasmtime trusts a deserialized artifact
//! completely. So an artifact is served only inside an envelope signed with an Ed25519 key whose public
//! half the operator gave the node (`--plugin-trusted-keys`), and only if its bytes hash to what the
//! signature covers. The signing key stays on the build machine; a node, or whoever can write to its
//! plugin directory or its Redis, cannot make an artifact a node will load.
//!
//! The envelope (`<name>.cwasm`):
//!
//! ```text
//! ioplex-precompiled 1\n
//! {"component_sha256":…,"artifact_sha256":…,"key":…,"signature":…}\n
//! <the wasmtime artifact>
//! ```
//!
//! Once verified, the artifact is kept in the node's compile cache under its hash, so a restart maps it
//! instead of hashing tens of megabytes again.
//!
//! The signature covers `ioplex-precompiled-v1\n<component_sha256>\n<artifact_sha256>`, so an artifact
//! names the component it was compiled from. The plugin's version on a node is the hash of the
//! envelope's magic and header ([`version_hash`]). wasmtime itself refuses an artifact built by another
//! wasmtime version, engine settings or CPU.

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use wasmtime::component::Component;

use super::compile::{cache_path, load_cached, sha256_hex, store_cached};
use super::error::PluginError;
use super::wasm_engine::PluginEngine;

/// File extension of a precompiled plugin in a plugin directory.
pub const EXTENSION: &str = "cwasm";
const MAGIC: &[u8] = b"ioplex-precompiled 1\n";
const SIGNED_AS: &str = "ioplex-precompiled-v1";
/// The header is a short JSON line; anything longer is not an envelope of ours.
const MAX_HEADER: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    component_sha256: String,
    artifact_sha256: String,
    key: String,
    signature: String,
}

/// Whether `bytes` are a precompiled plugin envelope (signed or not).
pub fn is_precompiled(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The hash that names a plugin file (its version, in logs, metrics and the fleet's records): of its
/// bytes, or for an envelope of its magic and header only. The header holds the artifact's hash, which
/// [`open`] checks against the signature and the bytes, so a 40 MB artifact is hashed once per load.
pub fn version_hash(bytes: &[u8]) -> String {
    let header_end = bytes.strip_prefix(MAGIC).and_then(|rest| {
        rest.iter()
            .take(MAX_HEADER)
            .position(|&b| b == b'\n')
            .map(|end| MAGIC.len() + end + 1)
    });
    sha256_hex(&bytes[..header_end.unwrap_or(bytes.len())])
}

/// An Ed25519 public key a node accepts precompiled plugins from.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedKey([u8; 32]);

impl std::fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({self})")
    }
}

/// A key that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error(
    "a trusted plugin key is 64 hex digits (the public key `ioplex plugin keygen` prints): {0:?}"
)]
pub struct BadKey(String);

impl std::str::FromStr for TrustedKey {
    type Err = BadKey;

    fn from_str(s: &str) -> Result<Self, BadKey> {
        let s = s.trim();
        crate::hex::decode(s)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(TrustedKey)
            .ok_or_else(|| BadKey(s.to_owned()))
    }
}

/// The public keys a node accepts precompiled plugins from (none: precompiled plugins are refused).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<TrustedKey>);

impl TrustedKeys {
    /// Keys from a comma- or whitespace-separated list of hex public keys.
    pub fn parse(list: &str) -> Result<Self, BadKey> {
        list.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedKeys)
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, hex_key: &str) -> Option<&TrustedKey> {
        let wanted: TrustedKey = hex_key.parse().ok()?;
        self.0.iter().find(|k| **k == wanted)
    }
}

impl From<Vec<TrustedKey>> for TrustedKeys {
    fn from(keys: Vec<TrustedKey>) -> Self {
        TrustedKeys(keys)
    }
}

/// The build machine's private key that signs precompiled plugins.
pub struct SigningKey(Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.public_key())
    }
}

/// A signing key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// Not the base64 PKCS#8 text `ioplex plugin keygen` writes.
    #[error("not a plugin signing key (base64 PKCS#8 Ed25519, as `ioplex plugin keygen` writes)")]
    Malformed,
    /// The system's random source failed.
    #[error("cannot generate a key: no system randomness")]
    Random,
}

impl SigningKey {
    /// A new key, with its text form (base64 PKCS#8) to store.
    pub fn generate() -> Result<(SigningKey, String), SigningKeyError> {
        use base64::Engine as _;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SigningKeyError::Random)?;
        let text = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        Ok((SigningKey::from_text(&text)?, text))
    }

    /// A key from the text [`SigningKey::generate`] gave.
    pub fn from_text(text: &str) -> Result<SigningKey, SigningKeyError> {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SigningKeyError::Malformed)?;
        Ed25519KeyPair::from_pkcs8(&der)
            .map(SigningKey)
            .map_err(|_| SigningKeyError::Malformed)
    }

    /// The public half, which nodes are told to trust.
    pub fn public_key(&self) -> TrustedKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.public_key().as_ref());
        TrustedKey(key)
    }
}

fn signed_message(component_sha256: &str, artifact_sha256: &str) -> String {
    format!("{SIGNED_AS}\n{component_sha256}\n{artifact_sha256}")
}

/// Wraps a compiled component's artifact in a signed envelope.
pub(crate) fn seal(artifact: &[u8], component_sha256: &str, key: &SigningKey) -> Vec<u8> {
    let artifact_sha256 = sha256_hex(artifact);
    let signature = key
        .0
        .sign(signed_message(component_sha256, &artifact_sha256).as_bytes());
    let header = Header {
        component_sha256: component_sha256.to_owned(),
        artifact_sha256,
        key: key.public_key().to_string(),
        signature: crate::hex::encode(signature.as_ref()),
    };
    // A struct of four strings always serializes.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + artifact.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(artifact);
    out
}

/// Checks an envelope's signature against the trusted keys and the artifact against the signature, then
/// loads it.
pub(crate) fn open(
    engine: &PluginEngine,
    bytes: &[u8],
    trusted: &TrustedKeys,
) -> Result<Component, PluginError> {
    let untrusted = |why: &str| PluginError::Untrusted(why.to_owned());
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| untrusted("not an ioplex precompiled plugin"))?;
    let end = rest
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| untrusted("the envelope's header is missing or too long"))?;
    let header: Header = serde_json::from_slice(&rest[..end])
        .map_err(|e| PluginError::Untrusted(format!("the envelope's header is malformed: {e}")))?;
    let artifact = &rest[end + 1..];
    if trusted.is_empty() {
        return Err(untrusted(
            "this node trusts no signing key (set --plugin-trusted-keys to the key `ioplex plugin keygen` printed)",
        ));
    }
    let key = trusted.get(&header.key).ok_or_else(|| {
        PluginError::Untrusted(format!(
            "signed by {}, a key this node does not trust",
            header.key
        ))
    })?;
    let signature = crate::hex::decode(&header.signature)
        .ok_or_else(|| untrusted("the signature is malformed"))?;
    UnparsedPublicKey::new(&ED25519, key.0)
        .verify(
            signed_message(&header.component_sha256, &header.artifact_sha256).as_bytes(),
            &signature,
        )
        .map_err(|_| untrusted("the signature does not match"))?;
    // A copy this node verified before loads from its cache without hashing megabytes again.
    let cached = cache_path(
        engine,
        &format!("precompiled-{}.cwasm", header.artifact_sha256),
    );
    if let Some(component) = cached.as_deref().and_then(|path| load_cached(engine, path)) {
        return Ok(component);
    }
    if sha256_hex(artifact) != header.artifact_sha256 {
        return Err(untrusted(
            "the artifact is not the one that was signed (altered or truncated)",
        ));
    }
    // SAFETY: the artifact is byte for byte what a trusted key signed, i.e. what `ioplex plugin compile`
    // produced on the operator's build machine; wasmtime checks it matches this engine's version,
    // settings and CPU before using it.
    let component = unsafe { Component::deserialize(&engine.engine, artifact) }
        .map_err(|e| PluginError::Incompatible(format!("{e:#}")))?;
    if let Some(path) = &cached {
        store_cached(path, artifact);
    }
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_keys_parse_from_lists_of_hex() {
        let (key, text) = SigningKey::generate().expect("generate");
        let again = SigningKey::from_text(&text).expect("reload");
        assert_eq!(key.public_key(), again.public_key());
        let public = key.public_key().to_string();
        let keys = TrustedKeys::parse(&format!(" {public}, {public}\n")).expect("parse");
        assert_eq!(keys.0.len(), 2);
        assert!(keys.get(&public).is_some());
        assert!(TrustedKeys::parse("abc").is_err());
        assert!(TrustedKeys::parse("").expect("empty").is_empty());
        assert!(SigningKey::from_text("bm90IGEga2V5").is_err());
    }

    #[test]
    fn a_sealed_envelope_carries_what_it_signs() {
        let (key, _) = SigningKey::generate().expect("generate");
        let sealed = seal(b"artifact", "abc", &key);
        assert!(is_precompiled(&sealed));
        assert!(sealed.ends_with(b"\nartifact"));
        assert_eq!(crate::hex::decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(crate::hex::decode("0"), None);
    }
}
