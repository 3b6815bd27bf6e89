//! The queue between a subscriber connection and the loop that handles its messages.
//!
//! fred hands a subscriber's messages to a broadcast ring, and allocates every slot of it (and of the
//! client's eight other event rings) when the client is made: a ring deep enough for a busy node's
//! bursts was most of an idle node's memory. So the ring stays small, enough for what one read off the
//! socket holds, and a forwarding task moves each message at once into this inbox, which grows with use
//! up to a byte limit and gives its memory back as it drains. Whatever is lost (the ring overrun, or the
//! inbox full) is counted by the receive loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use fred::types::Message;
use tokio::sync::{broadcast, mpsc};

/// Slots of fred's ring in front of the forwarder (per event channel of a subscriber client).
pub(crate) const SUBSCRIBER_RING: usize = 2048;
/// Bytes of payload the inbox holds for a receive loop that fell behind; newer messages are lost past it.
pub(crate) const INBOX_MAX_BYTES: usize = 64 << 20;

/// Received messages, in order, from the forwarding task.
pub(crate) struct Inbox {
    rx: mpsc::UnboundedReceiver<Message>,
    queued_bytes: Arc<AtomicUsize>,
    lost: Arc<AtomicU64>,
}

fn weight(message: &Message) -> usize {
    message.channel.len() + message.value.as_bytes().map_or(0, <[u8]>::len)
}

impl Inbox {
    /// Starts forwarding `ring`'s messages into a new inbox holding at most `max_bytes`.
    pub(crate) fn forward(mut ring: broadcast::Receiver<Message>, max_bytes: usize) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (queued, lost_by_forwarder) = (Arc::clone(&queued_bytes), Arc::clone(&lost));
        tokio::spawn(async move {
            loop {
                match ring.recv().await {
                    Ok(message) => {
                        let size = weight(&message);
                        if queued.load(Ordering::Relaxed) + size > max_bytes {
                            lost_by_forwarder.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        queued.fetch_add(size, Ordering::Relaxed);
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        lost_by_forwarder.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Inbox {
            rx,
            queued_bytes,
            lost,
        }
    }

    /// The next message (`None` once the subscriber is gone), and how many were lost since the last
    /// call.
    pub(crate) async fn recv(&mut self) -> (Option<Message>, u64) {
        let message = self.rx.recv().await;
        if let Some(m) = &message {
            self.queued_bytes.fetch_sub(weight(m), Ordering::Relaxed);
        }
        (message, self.lost.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::config::Server;
    use fred::types::{MessageKind, Value};

    fn message(payload: &str) -> Message {
        Message {
            channel: "ch".into(),
            value: Value::String(payload.into()),
            kind: MessageKind::Message,
            server: Server::new("127.0.0.1", 6379),
        }
    }

    #[tokio::test]
    async fn a_full_inbox_loses_newer_messages_and_counts_them() {
        let (tx, rx) = broadcast::channel(16);
        let mut inbox = Inbox::forward(rx, 2 * weight(&message("0123456789")));
        for _ in 0..5 {
            tx.send(message("0123456789")).expect("send");
        }
        drop(tx);
        let (mut received, mut lost) = (0, 0);
        loop {
            let (message, newly_lost) = inbox.recv().await;
            lost += newly_lost;
            if message.is_none() {
                break; // closed once the subscriber is gone
            }
            received += 1;
        }
        assert_eq!((received, lost), (2, 3), "three did not fit");
        assert_eq!(inbox.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_drained_inbox_takes_what_came_after() {
        let (tx, rx) = broadcast::channel(16);
        let mut inbox = Inbox::forward(rx, 1 << 20);
        for i in 0..10 {
            tx.send(message(&i.to_string())).expect("send");
            let (got, lost) = inbox.recv().await;
            assert_eq!(got.and_then(|m| m.value.as_string()), Some(i.to_string()));
            assert_eq!(lost, 0);
        }
    }
}
