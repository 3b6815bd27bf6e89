//! Pings for every session of an endpoint from one task: a min-heap of (due time, session, step), so an
//! idle connection costs a heap entry instead of a task of its own.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::session::Session;

/// What is due for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send a ping.
    Ping,
    /// The ping sent earlier must have been answered by now.
    Check,
    /// v3: the client must have pinged within an interval and a timeout of its last ping.
    ExpectPing,
}

struct Due {
    at: Instant,
    /// Breaks ties in insertion order.
    seq: u64,
    step: Step,
    session: Weak<Session>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed, so the max-heap pops the earliest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The endpoint's heartbeat schedule and the task that works through it.
#[derive(Default)]
pub(crate) struct Heartbeats {
    due: Mutex<BinaryHeap<Due>>,
    seq: AtomicU64,
    wake: Notify,
    started: AtomicBool,
}

impl Heartbeats {
    /// Schedules `step` for `session` at `at`, starting the task on first use.
    pub(crate) fn schedule(self: &Arc<Self>, session: &Arc<Session>, at: Instant, step: Step) {
        let earliest = {
            let mut due = self.due.lock();
            let earlier = due.peek().is_none_or(|first| at < first.at);
            due.push(Due {
                at,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                step,
                session: Arc::downgrade(session),
            });
            earlier
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).run());
        } else if earliest {
            self.wake.notify_one();
        }
    }

    /// Tells the task the endpoint is gone.
    pub(crate) fn stop(&self) {
        self.due.lock().clear();
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        loop {
            let next = self.due.lock().peek().map(|d| d.at);
            match next {
                None => {
                    if Arc::strong_count(&self) == 1 {
                        return; // the endpoint is gone
                    }
                    self.wake.notified().await;
                }
                Some(at) if at > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Some(_) => {
                    let now = Instant::now();
                    let mut ready = Vec::new();
                    {
                        let mut due = self.due.lock();
                        while due.peek().is_some_and(|d| d.at <= now) {
                            if let Some(d) = due.pop() {
                                ready.push(d);
                            }
                        }
                    }
                    for d in ready {
                        if let Some(session) = d.session.upgrade()
                            && let Some((at, step)) = session.heartbeat_step(d.step, now)
                        {
                            self.schedule(&session, at, step);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use crate::engineio::server::test_support::echo_engine;
    use crate::engineio::{CloseReason, EngineConfig, MemoryClient, Received};

    fn quick() -> EngineConfig {
        EngineConfig {
            ping_interval: Duration::from_millis(100),
            ping_timeout: Duration::from_millis(100),
            ..EngineConfig::default()
        }
    }

    #[tokio::test]
    async fn a_client_that_answers_pings_stays() {
        let (engine, echo) = echo_engine(quick());
        let mut client = MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        for _ in 0..4 {
            assert_eq!(
                client.recv_raw().await.expect("ping"),
                Received::Text("2".into())
            );
            client.send("3").await.expect("pong");
        }
        assert!(
            echo.closed.lock().is_empty(),
            "answered pings keep the session"
        );
    }

    #[tokio::test]
    async fn a_client_that_stops_answering_is_dropped_after_the_timeout() {
        let (engine, echo) = echo_engine(quick());
        let mut client = MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        assert_eq!(
            client.recv_raw().await.expect("ping"),
            Received::Text("2".into())
        );
        // No pong. The heartbeat wheel checks at its own granularity; allow it a second.
        for _ in 0..100 {
            if !echo.closed.lock().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*echo.closed.lock(), vec![CloseReason::PingTimeout]);
    }
}
