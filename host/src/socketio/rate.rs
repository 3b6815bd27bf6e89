//! Per-socket event rate limits: a token bucket checked before an event reaches its handler.

use std::time::Instant;

/// What happens to an event over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAction {
    /// The event is dropped; if the client waits for an ack it gets
    /// `{"ok":false,"code":"rate_limited","message":...}`.
    Reject,
    /// The socket is disconnected from the namespace.
    Disconnect,
}

/// Events a socket may send: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained events per second.
    pub per_second: f64,
    /// Events that may arrive back to back.
    pub burst: f64,
    /// What to do past the limit.
    pub action: RateAction,
}

/// One socket's bucket.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn full(limit: &RateLimit) -> Self {
        TokenBucket {
            tokens: limit.burst,
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, limit: &RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 3.0,
            action: RateAction::Reject,
        };
        let start = Instant::now();
        let mut b = TokenBucket::full(&limit);
        b.last = start;
        assert!((0..3).all(|_| b.take(&limit, start)));
        assert!(!b.take(&limit, start));
        assert!(!b.take(&limit, start + Duration::from_millis(50)));
        assert!(b.take(&limit, start + Duration::from_millis(160)));
        assert!(!b.take(&limit, start + Duration::from_millis(170)));
        // Idle time refills up to the burst only.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(&limit, later)));
        assert!(!b.take(&limit, later));
    }
}
