//! Room authorization for the company / conversation model.
//!
//! A client connects with `auth: { token }` (or `?token=`), an HS256 JWT signed with the tenant's secret
//! (plugin setting `secret`). Its claims decide what the socket may join:
//! `company:{company}` for its own company, `conversation:{id}` for each id in `conversations`, and
//! `user:{sub}` for itself. Everything else is refused with a reason the client receives.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ioplex_guest::{ConnectAccept, ConnectRequest, JoinRequest, Plugin, host};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a verified token grants. Kept as the socket's data so `authorize_join` needs no second check.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Claims {
    pub sub: String,
    /// A display name, passed through to the socket's data for pages to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub company: String,
    #[serde(default)]
    pub conversations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Checks an HS256 JWT's signature (constant time, via `hmac`) and expiry; returns its claims.
pub fn verify(token: &str, secret: &[u8], now_secs: u64) -> Result<Claims, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token is not a JWT (expected header.payload.signature)".into());
    };
    let header: Header = decode_json(header, "header")?;
    if header.alg != "HS256" {
        return Err(format!(
            "token algorithm {} is not accepted (HS256 only)",
            header.alg
        ));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "token signature is not base64url".to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(&token.as_bytes()[..header_len(token)]);
    mac.verify_slice(&signature)
        .map_err(|_| "token signature does not match".to_string())?;
    let claims: Claims = decode_json(payload, "claims")?;
    if let Some(exp) = claims.exp
        && exp <= now_secs
    {
        return Err("token has expired".into());
    }
    Ok(claims)
}

/// Length of `header.payload`, the signed part.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str, what: &str) -> Result<T, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("token {what} is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("token {what}: {e}"))
}

/// May a socket holding `claims` join `room`?
pub fn may_join(claims: &Claims, room: &str) -> Result<(), String> {
    let granted = match room.split_once(':') {
        Some(("company", id)) => id == claims.company,
        Some(("conversation", id)) => claims.conversations.iter().any(|c| c == id),
        Some(("user", id)) => id == claims.sub,
        _ => false,
    };
    if granted {
        Ok(())
    } else {
        Err(format!("your token does not grant room {room}"))
    }
}

#[derive(Deserialize, Default)]
struct Auth {
    token: Option<String>,
}

struct RoomAuth;

impl Plugin for RoomAuth {
    fn authorize_connect(request: ConnectRequest) -> Result<ConnectAccept, String> {
        let secret = host::setting("secret")
            .ok_or_else(|| "room-auth is not configured (no secret)".to_string())?;
        let auth: Auth = request.auth().unwrap_or_default();
        let token = auth
            .token
            .or_else(|| request.query_param("token").map(str::to_owned))
            .ok_or_else(|| "a token is required (auth.token)".to_string())?;
        let claims = verify(&token, secret.as_bytes(), host::now_ms() / 1000)?;
        let data = serde_json::to_string(&claims).map_err(|e| e.to_string())?;
        Ok(ConnectAccept {
            user_id: Some(claims.sub),
            data_json: Some(data),
            rooms: Vec::new(),
        })
    }

    fn authorize_join(request: JoinRequest) -> Result<(), String> {
        let claims: Claims = request
            .socket
            .data()
            .map_err(|_| "connect with a token before joining rooms".to_string())?;
        may_join(&claims, &request.room)
    }
}

ioplex_guest::export!(RoomAuth: authorize_connect, authorize_join);

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(claims: &str, secret: &[u8]) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims);
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{sig}")
    }

    #[test]
    fn verified_claims_grant_their_rooms_only() {
        let token = sign(
            r#"{"sub":"u1","company":"acme","conversations":["42"]}"#,
            b"k",
        );
        let claims = verify(&token, b"k", 0).unwrap();
        assert!(may_join(&claims, "company:acme").is_ok());
        assert!(may_join(&claims, "conversation:42").is_ok());
        assert!(may_join(&claims, "user:u1").is_ok());
        assert!(may_join(&claims, "company:globex").is_err());
        assert!(may_join(&claims, "conversation:43").is_err());
        assert!(may_join(&claims, "lobby").is_err());
    }

    #[test]
    fn wrong_key_expired_and_malformed_tokens_are_refused() {
        let token = sign(r#"{"sub":"u1","company":"acme","exp":100}"#, b"k");
        assert_eq!(
            verify(&token, b"other", 0).unwrap_err(),
            "token signature does not match"
        );
        assert_eq!(verify(&token, b"k", 100).unwrap_err(), "token has expired");
        assert!(verify("a.b", b"k", 0).is_err());
        assert!(verify("!!.!!.!!", b"k", 0).is_err());
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(verify(&tampered, b"k", 0).is_err());
    }
}
