//! Plugin versions shared by every node of a fleet through Redis.
//!
//! An upload validated on one node is stored once (`<prefix>:plugin:blob:<sha256>`), recorded as the
//! tenant's active version (`<prefix>:plugins:<tenant>`, a hash of name → `sha256:signature`; tenants
//! listed in `<prefix>:plugins:tenants`), and announced on `<prefix>:plugins:changed`. Every node installs
//! announced versions through the same validation; because pub/sub may lose a message, each node also
//! reconciles against the hashes at start-up and every 30 s. A version that fails validation on a node is
//! refused there with a log line; the node keeps its previous version.
//!
//! Redis is not trusted with the decision: records and announcements are signed with the fleet key
//! (configuration, never in Redis), and a node acts only on a valid signature, for a tenant it serves and
//! a valid plugin name. A plugin installed from this node's plugin directory is never replaced or removed
//! by the fleet. A blob no record points to any more is deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface, SetsInterface,
};
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};
use serde::{Deserialize, Serialize};

use super::fleet_key::FleetKey;
use super::loaded::PluginSource;
use super::manifest::PluginManifest;
use super::precompiled::version_hash;
use super::runtime::PluginRuntime;
use super::watch::valid_name;

const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// How far an announcement's time may be from this node's clock (replays of old ones are refused).
const ANNOUNCEMENT_WINDOW_MS: u64 = 10 * 60 * 1000;

#[derive(Serialize, Deserialize)]
struct Change {
    tenant: String,
    name: String,
    /// The new version, or `None` when the plugin was removed.
    sha256: Option<String>,
    /// The node that made the change (it has applied it already).
    origin: String,
    /// When, in ms since the Unix epoch.
    issued: u64,
    /// The fleet key's signature of all of the above.
    sig: String,
}

impl Change {
    fn signed_parts(&self) -> [String; 6] {
        [
            "ioplex-plugin-change-v1".into(),
            self.tenant.clone(),
            self.name.clone(),
            self.sha256.clone().unwrap_or_else(|| "-".into()),
            self.origin.clone(),
            self.issued.to_string(),
        ]
    }
}

fn record_parts<'a>(tenant: &'a str, name: &'a str, sha: &'a str) -> [&'a str; 4] {
    ["ioplex-plugin-record-v1", tenant, name, sha]
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether a tenant exists on this node (the fleet acts only for those).
pub type TenantExists = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// This node's link to the fleet's plugin store.
pub struct PluginFleet {
    client: Client,
    subscriber: SubscriberClient,
    prefix: String,
    node: String,
    runtime: Arc<PluginRuntime>,
    key: FleetKey,
    tenant_exists: TenantExists,
}

/// Why a change could not be shared with the fleet (it still serves on this node).
#[derive(Debug, thiserror::Error)]
#[error("plugin not shared with the fleet: {0}")]
pub struct FleetError(String);

impl From<fred::error::Error> for FleetError {
    fn from(e: fred::error::Error) -> Self {
        FleetError(e.to_string())
    }
}

impl PluginFleet {
    /// Connects to the Redis at `url` (retrying in the background while it is down), installs the
    /// fleet's versions before returning, then follows changes and reconciles every 30 s.
    pub async fn start(
        url: &str,
        prefix: &str,
        runtime: Arc<PluginRuntime>,
        key: FleetKey,
        tenant_exists: TenantExists,
    ) -> Result<Arc<Self>, FleetError> {
        let mut config = Config::from_url(url)?;
        config.fail_fast = false;
        let mut builder = Builder::from_config(config);
        builder.set_policy(ReconnectPolicy::new_linear(0, 500, 50));
        let fleet = Arc::new(PluginFleet {
            client: builder.build()?,
            subscriber: builder.build_subscriber_client()?,
            prefix: prefix.to_owned(),
            node: crate::sid::Sid::random().to_string(),
            runtime,
            key,
            tenant_exists,
        });
        fleet.client.connect();
        fleet.subscriber.connect();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let _ = fleet.client.wait_for_connect().await;
            let _ = fleet.subscriber.wait_for_connect().await;
        })
        .await;
        fleet.subscriber.manage_subscriptions();
        if let Err(err) = fleet.subscriber.subscribe(fleet.channel()).await {
            tracing::warn!(error = %err, "cannot follow plugin changes yet; retried on reconnect");
        }
        tokio::spawn(Arc::clone(&fleet).follow());
        // Serve the fleet's versions from the first request on (skipped while Redis is unreachable).
        fleet.reconcile().await;
        tokio::spawn(Arc::clone(&fleet).reconcile_periodically());
        Ok(fleet)
    }

    fn channel(&self) -> String {
        format!("{}:plugins:changed", self.prefix)
    }

    fn tenants_key(&self) -> String {
        format!("{}:plugins:tenants", self.prefix)
    }

    fn tenant_key(&self, tenant: &str) -> String {
        format!("{}:plugins:{tenant}", self.prefix)
    }

    fn blob_key(&self, sha: &str) -> String {
        format!("{}:plugin:blob:{sha}", self.prefix)
    }

    /// Shares a version this node has validated and serves.
    pub async fn publish_install(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), FleetError> {
        let sha = version_hash(bytes);
        let previous = self.recorded(tenant, name).await;
        self.client
            .set::<(), _, _>(self.blob_key(&sha), bytes.to_vec(), None, None, false)
            .await?;
        let record = format!("{sha}:{}", self.key.sign(&record_parts(tenant, name, &sha)));
        self.client
            .hset::<(), _, _>(self.tenant_key(tenant), (name, record.as_str()))
            .await?;
        self.client
            .sadd::<(), _, _>(self.tenants_key(), tenant)
            .await?;
        self.announce(tenant, name, Some(sha.clone())).await?;
        if let Some(old) = previous.filter(|old| *old != sha) {
            self.delete_if_unreferenced(&old).await;
        }
        Ok(())
    }

    /// Shares a removal.
    pub async fn publish_remove(&self, tenant: &str, name: &str) -> Result<(), FleetError> {
        let previous = self.recorded(tenant, name).await;
        self.client
            .hdel::<(), _, _>(self.tenant_key(tenant), name)
            .await?;
        self.announce(tenant, name, None).await?;
        if let Some(old) = previous {
            self.delete_if_unreferenced(&old).await;
        }
        Ok(())
    }

    /// The version recorded for `tenant/name` (signature not checked: used to find garbage only).
    async fn recorded(&self, tenant: &str, name: &str) -> Option<String> {
        let record: Option<String> = self.client.hget(self.tenant_key(tenant), name).await.ok()?;
        record.map(|r| r.split(':').next().unwrap_or_default().to_owned())
    }

    /// Deletes the blob of `sha` unless a record of any tenant still points to it.
    async fn delete_if_unreferenced(&self, sha: &str) {
        let tenants: Vec<String> = match self.client.smembers(self.tenants_key()).await {
            Ok(t) => t,
            Err(_) => return,
        };
        for tenant in tenants {
            let records: HashMap<String, String> =
                match self.client.hgetall(self.tenant_key(&tenant)).await {
                    Ok(r) => r,
                    Err(_) => return, // unsure: keep it
                };
            if records.values().any(|r| r.split(':').next() == Some(sha)) {
                return;
            }
        }
        if let Err(err) = self.client.del::<(), _>(self.blob_key(sha)).await {
            tracing::debug!(error = %err, sha, "cannot delete an unreferenced plugin blob");
        } else {
            tracing::info!(sha, "deleted a plugin blob no tenant uses any more");
        }
    }

    /// Counts and logs an announcement or record this node will not act on.
    fn reject(&self, tenant: &str, name: &str, why: &str) {
        self.runtime
            .fleet_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            tenant,
            plugin = name,
            why,
            "ignoring a plugin change from Redis"
        );
    }

    /// Whether this node may act on a change for `tenant/name` at all.
    fn acceptable(&self, tenant: &str, name: &str) -> bool {
        if !(self.tenant_exists)(tenant) {
            self.reject(tenant, name, "no such tenant on this node");
            return false;
        }
        if !valid_name(name) {
            self.reject(tenant, name, "invalid plugin name");
            return false;
        }
        true
    }

    async fn announce(
        &self,
        tenant: &str,
        name: &str,
        sha256: Option<String>,
    ) -> Result<(), FleetError> {
        let mut change = Change {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            sha256,
            origin: self.node.clone(),
            issued: now_ms(),
            sig: String::new(),
        };
        let parts = change.signed_parts();
        change.sig = self
            .key
            .sign(&parts.iter().map(String::as_str).collect::<Vec<_>>());
        let text = serde_json::to_string(&change).map_err(|e| FleetError(e.to_string()))?;
        self.client
            .publish::<(), _, _>(self.channel(), text)
            .await?;
        Ok(())
    }

    async fn follow(self: Arc<Self>) {
        let mut messages = self.subscriber.message_rx();
        loop {
            let message = match messages.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.reconcile().await;
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(text) = message.value.as_string() else {
                continue;
            };
            let Ok(change) = serde_json::from_str::<Change>(&text) else {
                self.reject("?", "?", "malformed announcement");
                continue;
            };
            if change.origin == self.node {
                continue;
            }
            let parts = change.signed_parts();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            if !self.key.verify(&parts, &change.sig) {
                self.reject(
                    &change.tenant,
                    &change.name,
                    "bad signature (wrong or no fleet key)",
                );
                continue;
            }
            if now_ms().abs_diff(change.issued) > ANNOUNCEMENT_WINDOW_MS {
                self.reject(
                    &change.tenant,
                    &change.name,
                    "announcement too old (a replay?)",
                );
                continue;
            }
            if self.acceptable(&change.tenant, &change.name) {
                self.apply(&change.tenant, &change.name, change.sha256.as_deref())
                    .await;
            }
        }
    }

    async fn reconcile_periodically(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RECONCILE_EVERY).await;
            self.reconcile().await;
        }
    }

    /// Brings this node to the versions recorded in Redis (installs missing or different ones).
    pub async fn reconcile(&self) {
        let tenants: Vec<String> = match self.client.smembers(self.tenants_key()).await {
            Ok(t) => t,
            Err(err) => {
                tracing::debug!(error = %err, "plugin reconcile skipped: Redis unreachable");
                return;
            }
        };
        for tenant in tenants {
            let active: HashMap<String, String> = self
                .client
                .hgetall(self.tenant_key(&tenant))
                .await
                .unwrap_or_default();
            for (name, record) in active {
                let Some((sha, sig)) = record.split_once(':') else {
                    self.reject(&tenant, &name, "unsigned record");
                    continue;
                };
                if !self.key.verify(&record_parts(&tenant, &name, sha), sig) {
                    self.reject(
                        &tenant,
                        &name,
                        "bad record signature (wrong or no fleet key)",
                    );
                    continue;
                }
                if self.acceptable(&tenant, &name) {
                    self.apply(&tenant, &name, Some(sha)).await;
                }
            }
        }
    }

    /// Installs (or removes) one plugin version unless this node already serves it.
    async fn apply(&self, tenant: &str, name: &str, sha: Option<&str>) {
        let chain = self.runtime.slot(tenant).chain();
        let current = chain.get(name);
        // The plugin directory is the operator's word on this node: the fleet neither replaces nor
        // removes what it installed.
        let from_directory = current.is_some_and(|p| p.source() == PluginSource::Directory);
        let Some(sha) = sha else {
            if from_directory {
                self.reject(
                    tenant,
                    name,
                    "installed from the plugin directory: only the directory removes it",
                );
            } else {
                self.runtime.remove(tenant, name);
            }
            return;
        };
        if from_directory {
            tracing::debug!(
                tenant,
                plugin = name,
                "keeping the plugin directory's version over the fleet's"
            );
            return;
        }
        if current.is_some_and(|p| p.sha256() == sha) {
            return;
        }
        let bytes: Option<Vec<u8>> = match self.client.get(self.blob_key(sha)).await {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(tenant, plugin = name, error = %err, "cannot fetch a plugin version from Redis");
                return;
            }
        };
        let Some(bytes) = bytes.filter(|b| version_hash(b) == sha) else {
            tracing::warn!(
                tenant,
                plugin = name,
                sha,
                "plugin version missing or corrupt in Redis"
            );
            return;
        };
        let manifest = current
            .map(|p| PluginManifest {
                settings: p.context().settings.clone(),
                limits: p.limits().clone(),
            })
            .unwrap_or_default();
        if let Err(err) = self
            .runtime
            .install(tenant, name, bytes, manifest, PluginSource::Fleet)
            .await
        {
            tracing::warn!(tenant, plugin = name, error = %err, "a fleet plugin version is refused on this node");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plugin::test_support::{component, runtime};

    fn redis_url() -> String {
        std::env::var("IOPLEX_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    fn key() -> FleetKey {
        FleetKey::new("a fleet key of at least thirty-two bytes").expect("strong enough")
    }

    async fn node(prefix: &str) -> (Arc<PluginRuntime>, Arc<PluginFleet>) {
        let runtime = runtime();
        let exists: TenantExists = Arc::new(|id: &str| id == "acme");
        let fleet = PluginFleet::start(&redis_url(), prefix, Arc::clone(&runtime), key(), exists)
            .await
            .expect("fleet");
        (runtime, fleet)
    }

    async fn eventually(mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..100 {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_on_one_node_serves_on_the_other_and_a_removal_follows() {
        let prefix = format!("ioplex-test-fleet-{}", crate::sid::Sid::random());
        let (runtime_a, fleet_a) = node(&prefix).await;
        let (runtime_b, _fleet_b) = node(&prefix).await;
        let bytes = component("chaos");
        runtime_a
            .install(
                "acme",
                "chaos",
                bytes.clone(),
                crate::plugin::PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("installed on a");
        fleet_a
            .publish_install("acme", "chaos", &bytes)
            .await
            .expect("shared");
        assert!(
            eventually(|| runtime_b.slot("acme").chain().get("chaos").is_some()).await,
            "b installs it"
        );
        fleet_a
            .publish_remove("acme", "chaos")
            .await
            .expect("removal shared");
        assert!(
            eventually(|| runtime_b.slot("acme").chain().get("chaos").is_none()).await,
            "b removes it"
        );
        let blob = fleet_a.blob_key(&version_hash(&bytes));
        let left: i64 = fleet_a.client.exists(&blob).await.expect("exists");
        assert_eq!(left, 0, "an unreferenced blob is deleted");
        let _: Result<(), _> = fleet_a
            .client
            .del::<(), _>(vec![
                fleet_a.tenants_key(),
                fleet_a.tenant_key("acme"),
                blob,
            ])
            .await;
    }
}
