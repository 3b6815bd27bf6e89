//! Counters of one Engine.IO endpoint, read by `/metrics`. Relaxed atomics: a counter costs one add
//! on paths that already pay a lock and a syscall.

use std::sync::atomic::{AtomicU64, Ordering};

/// What an endpoint received and sent.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Messages received from clients.
    pub messages_in: AtomicU64,
    /// Their payload bytes.
    pub bytes_in: AtomicU64,
    /// Packets queued or written to clients.
    pub packets_out: AtomicU64,
    /// Their bytes, framing included.
    pub bytes_out: AtomicU64,
    /// Volatile packets dropped because the client was behind.
    pub dropped_volatile: AtomicU64,
    /// Sessions closed because their outgoing queue overflowed.
    pub slow_client_closes: AtomicU64,
    /// Sessions opened.
    pub handshakes: AtomicU64,
    /// Handshakes refused because the endpoint held its `max-connections`.
    pub refused_at_limit: AtomicU64,
}

impl EngineStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
