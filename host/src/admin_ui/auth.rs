//! Who may open a tenant's dashboard: its user name and bcrypt password, then a session token.
//!
//! Node keeps dashboard sessions in one process's memory, so a dashboard that reconnects through a load
//! balancer to another node must log in again, and every wrong password costs a bcrypt run that nothing
//! limits. Here a session token is signed (HMAC-SHA256) with a key derived from the tenant's password
//! hash, so every node with the same configuration accepts it until it expires, and a new password ends
//! every session. bcrypt runs are rate-limited per tenant and node; a password that already passed is
//! recognised by its SHA-256 without another bcrypt run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use ring::{digest, hmac};
use serde_json::Value;

use super::config::AdminUiConfig;

/// How long a session token is good for.
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// bcrypt checks one tenant may cost a node back to back, and per second after that.
const BCRYPT_BURST: f64 = 5.0;
const BCRYPT_PER_SECOND: f64 = 1.0;

/// Why a dashboard was refused (the client's `connect_error` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong user name or password, or no credentials.
    #[error("invalid credentials")]
    Invalid,
    /// Too many password checks in a short time.
    #[error("too many login attempts; retry in a few seconds")]
    Throttled,
}

/// How a dashboard proved itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// With a session token it already held.
    Session,
    /// With its user name and password: it gets this new token.
    Password(String),
}

/// Checks dashboard logins for one tenant.
pub struct Authenticator {
    username: String,
    password_hash: String,
    key: hmac::Key,
    state: Mutex<State>,
}

struct State {
    /// SHA-256 of the password that last passed bcrypt.
    known_good: Option<digest::Digest>,
    tokens: f64,
    refilled: Instant,
}

impl Authenticator {
    /// Checks logins against `config`'s credentials.
    pub fn new(config: &AdminUiConfig) -> Self {
        let seed = digest::digest(
            &digest::SHA256,
            format!("ioplex-admin-session-v1\n{}", config.password_hash).as_bytes(),
        );
        Authenticator {
            username: config.username.clone(),
            password_hash: config.password_hash.clone(),
            key: hmac::Key::new(hmac::HMAC_SHA256, seed.as_ref()),
            state: Mutex::new(State {
                known_good: None,
                tokens: BCRYPT_BURST,
                refilled: Instant::now(),
            }),
        }
    }

    /// Checks a CONNECT's `auth` object: `{sessionId}` or `{username, password}`.
    pub fn login(&self, auth: &Value) -> Result<Login, LoginError> {
        if let Some(token) = auth.get("sessionId").and_then(Value::as_str)
            && self.session_valid_now(token)
        {
            return Ok(Login::Session);
        }
        let (Some(username), Some(password)) = (
            auth.get("username").and_then(Value::as_str),
            auth.get("password").and_then(Value::as_str),
        ) else {
            return Err(LoginError::Invalid);
        };
        if !constant_time_eq(username.as_bytes(), self.username.as_bytes()) {
            return Err(LoginError::Invalid);
        }
        if self.password_ok(password)? {
            Ok(Login::Password(self.new_session()))
        } else {
            Err(LoginError::Invalid)
        }
    }

    /// Whether `token` is a session this tenant's configuration signed and that has not expired.
    pub fn session_valid_now(&self, token: &str) -> bool {
        self.session_valid(token, now_secs())
    }

    /// A new session token, for a dashboard that just logged in with its password.
    pub fn new_session(&self) -> String {
        self.session_token(now_secs())
    }

    fn password_ok(&self, password: &str) -> Result<bool, LoginError> {
        let attempt = digest::digest(&digest::SHA256, password.as_bytes());
        {
            let mut state = self.state.lock();
            if state
                .known_good
                .as_ref()
                .is_some_and(|good| constant_time_eq(good.as_ref(), attempt.as_ref()))
            {
                return Ok(true);
            }
            let now = Instant::now();
            let elapsed = now.duration_since(state.refilled).as_secs_f64();
            state.tokens = (state.tokens + elapsed * BCRYPT_PER_SECOND).min(BCRYPT_BURST);
            state.refilled = now;
            if state.tokens < 1.0 {
                return Err(LoginError::Throttled);
            }
            state.tokens -= 1.0;
        }
        // Tens of milliseconds of CPU: off the runtime's other tasks where the runtime allows it.
        let verify = || bcrypt::verify(password, &self.password_hash).unwrap_or(false);
        let ok = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(verify),
            _ => verify(),
        };
        if ok {
            self.state.lock().known_good = Some(attempt);
        }
        Ok(ok)
    }

    /// A token good until `now + SESSION_LIFETIME`: `<expiry>.<hex hmac>`.
    fn session_token(&self, now: u64) -> String {
        let expiry = now + SESSION_LIFETIME.as_secs();
        let tag = hmac::sign(&self.key, expiry.to_string().as_bytes());
        format!("{expiry}.{}", crate::hex::encode(tag.as_ref()))
    }

    fn session_valid(&self, token: &str, now: u64) -> bool {
        let Some((expiry, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(at) = expiry.parse::<u64>() else {
            return false;
        };
        let Some(tag) = crate::hex::decode(tag).filter(|t| t.len() == 32) else {
            return false;
        };
        at > now
            && at <= now + SESSION_LIFETIME.as_secs()
            && hmac::verify(&self.key, expiry.as_bytes(), &tag).is_ok()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> AdminUiConfig {
        AdminUiConfig {
            username: "admin".into(),
            password_hash: bcrypt::hash("changeit", 4).expect("hash"),
            namespace: "/admin".into(),
            readonly: false,
            mode: Default::default(),
            max_sockets_listed: 10,
        }
    }

    #[test]
    fn a_password_login_gets_a_token_that_another_node_accepts() {
        let config = config();
        let a = Authenticator::new(&config);
        let Login::Password(token) = a
            .login(&json!({"username": "admin", "password": "changeit"}))
            .expect("login")
        else {
            panic!("a password login gets a token");
        };
        let b = Authenticator::new(&config);
        assert_eq!(b.login(&json!({ "sessionId": token })), Ok(Login::Session));
    }

    #[test]
    fn wrong_credentials_forged_and_expired_tokens_are_refused() {
        let a = Authenticator::new(&config());
        assert_eq!(
            a.login(&json!({"username": "admin", "password": "nope"})),
            Err(LoginError::Invalid)
        );
        assert_eq!(
            a.login(&json!({"username": "root", "password": "changeit"})),
            Err(LoginError::Invalid)
        );
        assert_eq!(a.login(&json!({})), Err(LoginError::Invalid));
        let token = a.session_token(1_000);
        assert!(a.session_valid(&token, 1_001));
        assert!(!a.session_valid(&token, 1_000 + SESSION_LIFETIME.as_secs()));
        let forged = format!("{}.{}", 9_999_999_999u64, &token[token.len() - 64..]);
        assert!(!a.session_valid(&forged, 1_001));
        let other = Authenticator::new(&AdminUiConfig {
            password_hash: bcrypt::hash("rotated", 4).expect("hash"),
            ..config()
        });
        assert!(
            !other.session_valid(&token, 1_001),
            "a new password ends old sessions"
        );
    }

    #[test]
    fn password_guessing_is_throttled() {
        let a = Authenticator::new(&config());
        let guess = json!({"username": "admin", "password": "guess"});
        let results: Vec<_> = (0..8).map(|_| a.login(&guess)).collect();
        assert!(results.contains(&Err(LoginError::Throttled)), "{results:?}");
        // The right password has not passed here yet, so it waits for the bucket like any guess.
        assert_eq!(
            a.login(&json!({"username": "admin", "password": "changeit"})),
            Err(LoginError::Throttled)
        );
    }
}
