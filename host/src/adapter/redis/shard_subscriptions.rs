//! The shard channels one node must hold on a Redis Cluster, and the loop that makes the cluster
//! agree with them.
//!
//! A subscription can vanish without an error reaching the client: a `SSUBSCRIBE` refused while a
//! master fails over, a replica promoted that never heard of this node, a slot migrated (Redis drops
//! that slot's shard subscribers). Reacting to reconnect events misses some of these (ioredis #1988,
//! the Go port's PR #182), so this module keeps its own list of what the node should hold and, once a
//! second, asks every master how many shard channels this node's subscriber connection holds there
//! (`CLIENT LIST`, field `ssub`; by client id once known, one line per master). Wherever the count
//! falls short, that master's channels are subscribed again: one `SSUBSCRIBE` per hash slot (Redis
//! refuses a command across slots), issued together so they share the connection's round trips.
//!
//! Knows nothing of namespaces or rooms: it holds channel names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface};
use fred::types::config::{Options, Server};
use fred::types::{ClusterHash, CustomCommand};
use fred::util::redis_keyslot;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// How often every master is asked what this node holds.
const VERIFY_EVERY: Duration = Duration::from_secs(1);
/// How long one question to one master may take before that master counts as unreachable.
const ASK_TIMEOUT: Duration = Duration::from_millis(800);

/// One master as last seen: what this node should hold there and what it held.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardState {
    /// `host:port` of the master.
    pub server: String,
    /// Channels this node wants whose slot that master serves.
    pub wanted: usize,
    /// Shard channels this node's connection held there (`None`: the master did not answer).
    pub held: Option<usize>,
}

/// Counters of the subscription keeper, for `/metrics`.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    /// Passes that found a master holding fewer channels than wanted and subscribed again.
    pub resubscribes: AtomicU64,
    /// Masters that left the cluster's slot map (failed over, removed).
    pub masters_lost: AtomicU64,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE` commands sent.
    pub commands: AtomicU64,
}

#[derive(Default)]
struct Wanted {
    /// Channel → how many holders want it (namespaces may share a main channel).
    holders: HashMap<String, usize>,
    /// Wanted since the last pass and not yet confirmed.
    to_subscribe: HashSet<String>,
    /// Given up since the last pass.
    to_unsubscribe: HashSet<String>,
}

/// The shard channels a node wants, kept true against the cluster by [`ShardSubscriptions::run`].
#[derive(Default)]
pub struct ShardSubscriptions {
    wanted: Mutex<Wanted>,
    wake: Notify,
    shards: Mutex<Vec<ShardState>>,
    /// Counters.
    pub stats: SubscriptionStats,
}

impl ShardSubscriptions {
    /// Adds one holder to each channel; channels nobody held before are subscribed soon.
    pub fn want(&self, channels: impl IntoIterator<Item = String>) {
        let mut fresh = false;
        {
            let mut wanted = self.wanted.lock();
            for channel in channels {
                let holders = wanted.holders.entry(channel.clone()).or_insert(0);
                *holders += 1;
                if *holders == 1 {
                    wanted.to_unsubscribe.remove(&channel);
                    wanted.to_subscribe.insert(channel);
                    fresh = true;
                }
            }
        }
        if fresh {
            self.wake.notify_one();
        }
    }

    /// Removes one holder from each channel; channels nobody holds any more are unsubscribed soon.
    pub fn release(&self, channels: impl IntoIterator<Item = String>) {
        let mut gone = false;
        {
            let mut wanted = self.wanted.lock();
            for channel in channels {
                let Some(holders) = wanted.holders.get_mut(&channel) else {
                    continue;
                };
                *holders -= 1;
                if *holders == 0 {
                    wanted.holders.remove(&channel);
                    wanted.to_subscribe.remove(&channel);
                    wanted.to_unsubscribe.insert(channel);
                    gone = true;
                }
            }
        }
        if gone {
            self.wake.notify_one();
        }
    }

    /// Every channel wanted now.
    pub fn wanted(&self) -> Vec<String> {
        self.wanted.lock().holders.keys().cloned().collect()
    }

    /// The masters as the last pass saw them.
    pub fn shards(&self) -> Vec<ShardState> {
        self.shards.lock().clone()
    }

    /// A master that did not answer the last pass: fleet requests would wait for answers that
    /// cannot arrive, so they fail at once while one is named here.
    pub fn unreachable(&self) -> Option<String> {
        let shards = self.shards.lock();
        shards
            .iter()
            .find(|s| s.held.is_none())
            .map(|s| s.server.clone())
    }

    /// Whether every master answered the last pass holding every channel wanted there.
    pub fn complete(&self) -> bool {
        let shards = self.shards.lock();
        !shards.is_empty() && shards.iter().all(|s| s.held.is_some_and(|h| h >= s.wanted))
    }

    /// Subscribes and unsubscribes as channels come and go, and checks every master once a second,
    /// until the subscriber client is dropped.
    pub async fn run(self: Arc<Self>, subscriber: SubscriberClient, publisher: Client) {
        use tokio::sync::broadcast::error::RecvError;
        let mut changes = subscriber.cluster_change_rx();
        let mut reconnects = subscriber.reconnect_rx();
        let mut verify = tokio::time::interval(VERIFY_EVERY);
        verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut masters: HashSet<String> = HashSet::new();
        let mut ids: HashMap<String, String> = HashMap::new();
        loop {
            let check = tokio::select! {
                _ = self.wake.notified() => false,
                r = changes.recv() => !matches!(r, Err(RecvError::Closed)) || return,
                r = reconnects.recv() => !matches!(r, Err(RecvError::Closed)) || return,
                _ = verify.tick() => true,
            };
            self.apply_changes(&subscriber).await;
            if check {
                self.verify(&subscriber, &publisher, &mut masters, &mut ids)
                    .await;
            }
        }
    }

    /// Sends what changed since the last pass; failed subscribes stay pending for the next one.
    async fn apply_changes(&self, subscriber: &SubscriberClient) {
        let (subscribe, unsubscribe) = {
            let mut wanted = self.wanted.lock();
            (
                std::mem::take(&mut wanted.to_subscribe),
                std::mem::take(&mut wanted.to_unsubscribe),
            )
        };
        if !unsubscribe.is_empty() {
            let failed = self.send(subscriber, unsubscribe, false).await;
            if !failed.is_empty() {
                tracing::debug!(channels = failed.len(), "SUNSUBSCRIBE failed; not retried");
            }
        }
        if !subscribe.is_empty() {
            let failed = self.send(subscriber, subscribe, true).await;
            if !failed.is_empty() {
                let mut wanted = self.wanted.lock();
                for channel in failed {
                    if wanted.holders.contains_key(&channel) {
                        wanted.to_subscribe.insert(channel);
                    }
                }
            }
        }
    }

    /// One command per hash slot, all in flight at once; returns the channels whose command failed.
    async fn send(
        &self,
        subscriber: &SubscriberClient,
        channels: HashSet<String>,
        subscribe: bool,
    ) -> Vec<String> {
        let mut by_slot: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for channel in channels {
            by_slot
                .entry(redis_keyslot(channel.as_bytes()))
                .or_default()
                .push(channel);
        }
        let options = Options {
            max_attempts: Some(1),
            fail_fast: true,
            timeout: Some(ASK_TIMEOUT),
            ..Options::default()
        };
        let client = subscriber.with_options(&options);
        let commands = by_slot.into_values().map(|group| {
            let client = &client;
            async move {
                let result = if subscribe {
                    client.ssubscribe(group.clone()).await
                } else {
                    client.sunsubscribe(group.clone()).await
                };
                result.err().map(|err| (err, group))
            }
        });
        let results = futures_util::future::join_all(commands).await;
        self.stats
            .commands
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        let mut failed = Vec::new();
        for (err, group) in results.into_iter().flatten() {
            tracing::debug!(%err, channels = group.len(), subscribe, "shard (un)subscribe failed");
            failed.extend(group);
        }
        failed
    }

    /// Asks every master what this node holds there and subscribes again where it falls short.
    async fn verify(
        &self,
        subscriber: &SubscriberClient,
        publisher: &Client,
        masters: &mut HashSet<String>,
        ids: &mut HashMap<String, String>,
    ) {
        let Some(routing) = subscriber.cached_cluster_state() else {
            return;
        };
        let wanted = self.wanted();
        let mut per_master: HashMap<Server, Vec<String>> = HashMap::new();
        for channel in wanted {
            if let Some(server) = routing.get_server(redis_keyslot(channel.as_bytes())) {
                per_master.entry(server.clone()).or_default().push(channel);
            }
        }
        let primaries = routing.unique_primary_nodes();
        let now: HashSet<String> = primaries.iter().map(ToString::to_string).collect();
        if !masters.is_empty() {
            let lost = masters.difference(&now).count();
            self.stats
                .masters_lost
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
        *masters = now;
        let name = subscriber.id().to_owned();
        let mut shards = Vec::with_capacity(primaries.len());
        let mut short = HashSet::new();
        let mut unanswered = false;
        for server in primaries {
            let channels = per_master.remove(&server).unwrap_or_default();
            let held = held_on(publisher, &server, &name, ids).await;
            unanswered |= held.is_none();
            if held.is_some_and(|h| h < channels.len()) {
                short.extend(channels.iter().cloned());
            }
            shards.push(ShardState {
                server: server.to_string(),
                wanted: channels.len(),
                held,
            });
        }
        *self.shards.lock() = shards;
        if unanswered {
            // A master that does not answer may have been replaced: learn the slot map again.
            let _ = subscriber.sync_cluster().await;
            let _ = publisher.sync_cluster().await;
        }
        if !short.is_empty() {
            self.stats.resubscribes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                channels = short.len(),
                "shard subscriptions missing on the cluster; subscribing again"
            );
            let failed = self.send(subscriber, short, true).await;
            if !failed.is_empty() {
                let _ = subscriber.sync_cluster().await;
            }
        }
    }
}

/// How many shard channels the connection named `name` holds on `server` (`None`: no answer).
/// `ids` remembers that connection's client id per master, so a check costs one `CLIENT LIST ID`
/// line, not the master's whole list of pub/sub clients; a miss (a new connection) lists them again.
async fn held_on(
    publisher: &Client,
    server: &Server,
    name: &str,
    ids: &mut HashMap<String, String>,
) -> Option<usize> {
    let options = Options {
        cluster_node: Some(server.clone()),
        max_attempts: Some(1),
        fail_fast: true,
        timeout: Some(ASK_TIMEOUT),
        ..Options::default()
    };
    let client = publisher.with_options(&options);
    let list = |args: Vec<String>| {
        let client = &client;
        async move {
            client
                .custom::<String, String>(
                    CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
                    args,
                )
                .await
        }
    };
    let key = server.to_string();
    if let Some(id) = ids.get(&key) {
        let line = list(vec!["LIST".into(), "ID".into(), id.clone()]).await;
        if let Some((_, held)) = line.ok().as_deref().and_then(|l| connection_of(l, name)) {
            return Some(held);
        }
        ids.remove(&key);
    }
    let all = list(vec!["LIST".into(), "TYPE".into(), "pubsub".into()])
        .await
        .ok()?;
    match connection_of(&all, name) {
        Some((id, held)) => {
            ids.insert(key, id.to_owned());
            Some(held)
        }
        None => Some(0),
    }
}

/// The client id and `ssub` field of the `CLIENT LIST` line whose `name` is `name`.
fn connection_of<'a>(list: &'a str, name: &str) -> Option<(&'a str, usize)> {
    list.lines().find_map(|line| {
        let field = |key: &str| line.split(' ').find_map(|f| f.strip_prefix(key));
        (field("name=")? == name)
            .then(|| Some((field("id=")?, field("ssub=")?.parse().ok()?)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssub_is_read_from_the_named_connection_only() {
        let list = "id=5 addr=127.0.0.1:1 name=fred-other db=0 sub=0 psub=0 ssub=9 multi=-1\n\
                    id=6 addr=127.0.0.1:2 name=fred-mine db=0 sub=0 psub=0 ssub=3 multi=-1\n";
        assert_eq!(connection_of(list, "fred-mine"), Some(("6", 3)));
        assert_eq!(connection_of(list, "fred-other"), Some(("5", 9)));
        assert_eq!(connection_of(list, "fred-absent"), None);
        assert_eq!(connection_of("", "fred-mine"), None);
    }

    #[test]
    fn holders_are_counted_and_changes_coalesce() {
        let subs = ShardSubscriptions::default();
        subs.want(["a".to_owned(), "b".to_owned()]);
        subs.want(["a".to_owned()]);
        subs.release(["a".to_owned()]);
        let mut wanted = subs.wanted();
        wanted.sort();
        assert_eq!(wanted, ["a", "b"], "a still has one holder");
        subs.release(["a".to_owned(), "b".to_owned(), "never".to_owned()]);
        assert!(subs.wanted().is_empty());
        let pending = subs.wanted.lock();
        assert!(
            pending.to_subscribe.is_empty(),
            "wanted then given up before any pass: nothing to subscribe"
        );
        assert_eq!(pending.to_unsubscribe.len(), 2);
    }

    #[test]
    fn complete_needs_every_master_to_answer_with_enough() {
        let subs = ShardSubscriptions::default();
        assert!(!subs.complete(), "nothing seen yet");
        *subs.shards.lock() = vec![
            ShardState {
                server: "a:1".into(),
                wanted: 2,
                held: Some(2),
            },
            ShardState {
                server: "b:1".into(),
                wanted: 1,
                held: None,
            },
        ];
        assert!(!subs.complete());
        assert_eq!(subs.unreachable().as_deref(), Some("b:1"));
        subs.shards.lock()[1].held = Some(1);
        assert!(subs.complete());
        assert_eq!(subs.unreachable(), None);
    }
}
