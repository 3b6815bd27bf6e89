//! Stops calling a plugin that keeps failing, so a broken version costs one deadline per failure only
//! until the breaker opens, not one per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures within `WINDOW` that open the breaker.
const THRESHOLD: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Failures {
    window_start: Instant,
    count: u32,
    backoff: Duration,
}

/// A failure counter with an open state that refuses calls for a doubling backoff.
#[derive(Debug)]
pub(crate) struct Breaker {
    epoch: Instant,
    /// Milliseconds since `epoch` until which calls are refused; 0 when closed. Read on every call.
    open_until: AtomicU64,
    failures: Mutex<Failures>,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Breaker {
            epoch: now,
            open_until: AtomicU64::new(0),
            failures: Mutex::new(Failures {
                window_start: now,
                count: 0,
                backoff: Duration::ZERO,
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// `Err(remaining)` while open.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        if now < until {
            Err(Duration::from_millis(until - now))
        } else {
            Ok(()) // half-open: let calls through; the next failure reopens at once
        }
    }

    pub(crate) fn record_success(&self) {
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Relaxed);
            let mut f = self.failures.lock();
            f.count = 0;
            f.backoff = Duration::ZERO;
        }
    }

    /// Counts a failure; returns the backoff if this one opened the breaker.
    pub(crate) fn record_failure(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut f = self.failures.lock();
        let half_open = self.open_until.load(Ordering::Relaxed) != 0;
        if now.duration_since(f.window_start) > WINDOW {
            f.window_start = now;
            f.count = 0;
        }
        f.count += 1;
        if f.count < THRESHOLD && !half_open {
            return None;
        }
        f.backoff = if f.backoff.is_zero() {
            FIRST_BACKOFF
        } else {
            (f.backoff * 2).min(MAX_BACKOFF)
        };
        f.count = 0;
        f.window_start = now;
        let until = self.now_ms() + f.backoff.as_millis() as u64;
        self.open_until.store(until.max(1), Ordering::Relaxed);
        Some(f.backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_closes_on_success() {
        let b = Breaker::new();
        for _ in 0..THRESHOLD - 1 {
            assert_eq!(b.record_failure(), None);
            assert!(b.check().is_ok());
        }
        assert_eq!(b.record_failure(), Some(FIRST_BACKOFF));
        assert!(b.check().is_err());
        // Pretend the backoff passed: a half-open failure reopens with a doubled backoff.
        b.open_until.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        assert!(b.check().is_ok());
        assert_eq!(b.record_failure(), Some(FIRST_BACKOFF * 2));
        b.open_until.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        b.record_success();
        assert!(b.check().is_ok());
        assert_eq!(b.record_failure(), None);
    }
}
