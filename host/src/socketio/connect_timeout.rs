//! connectTimeout: a connection that joins no namespace in time is closed.
//!
//! Every connection has the same timeout, so deadlines arrive in order: one queue and one task serve all
//! connections, instead of a timer task each (which idle connections would carry for 45 s).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client::Client;
use crate::engineio::{CloseReason, Session};

struct Pending {
    deadline: Instant,
    session: Weak<Session>,
    client: Weak<Client>,
}

/// The connections still waiting to join a namespace, oldest first.
pub(crate) struct ConnectTimeouts {
    timeout: Duration,
    queue: Mutex<VecDeque<Pending>>,
    added: Notify,
    started: std::sync::Once,
}

impl ConnectTimeouts {
    pub(crate) fn new(timeout: Duration) -> Self {
        ConnectTimeouts {
            timeout,
            queue: Mutex::new(VecDeque::new()),
            added: Notify::new(),
            started: std::sync::Once::new(),
        }
    }

    /// Starts the clock of a new connection.
    pub(crate) fn watch(self: &Arc<Self>, session: &Arc<Session>, client: &Arc<Client>) {
        self.started.call_once(|| {
            tokio::spawn(Arc::clone(self).run());
        });
        let was_empty = {
            let mut queue = self.queue.lock();
            queue.push_back(Pending {
                deadline: Instant::now() + self.timeout,
                session: Arc::downgrade(session),
                client: Arc::downgrade(client),
            });
            queue.len() == 1
        };
        if was_empty {
            self.added.notify_one();
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let next = self.queue.lock().front().map(|p| p.deadline);
            match next {
                None => self.added.notified().await,
                Some(deadline) => {
                    tokio::time::sleep_until(deadline).await;
                    self.expire(Instant::now());
                }
            }
        }
    }

    fn expire(&self, now: Instant) {
        loop {
            let pending = {
                let mut queue = self.queue.lock();
                match queue.front() {
                    Some(p) if p.deadline <= now => queue.pop_front(),
                    _ => None,
                }
            };
            let Some(pending) = pending else {
                break;
            };
            let (Some(session), Some(client)) =
                (pending.session.upgrade(), pending.client.upgrade())
            else {
                continue;
            };
            if !client.has_sockets() && !session.is_closed() {
                tracing::debug!(sid = %session.sid(), "no namespace joined within connectTimeout; closing");
                session.close(CloseReason::ServerClose);
            }
        }
        let mut queue = self.queue.lock();
        if queue.is_empty() && queue.capacity() > 1024 {
            *queue = VecDeque::new();
        }
    }
}
