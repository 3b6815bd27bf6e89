//! Plugin versions shared by every node of a fleet through Redis.
//!
//! An upload validated on one node is stored once (`<prefix>:plugin:blob:<sha256>`), recorded as the
//! tenant's active version (`<prefix>:plugins:<tenant>`, a hash of name → sha256; tenants listed in
//! `<prefix>:plugins:tenants`), and announced on `<prefix>:plugins:changed`. Every node installs announced
//! versions through the same validation; because pub/sub may lose a message, each node also reconciles
//! against the hashes at start-up and every 30 s. A version that fails validation on a node is refused
//! there with a log line; the node keeps its previous version.

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

use super::compile::sha256_hex;
use super::manifest::PluginManifest;
use super::runtime::PluginRuntime;

const RECONCILE_EVERY: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Change {
    tenant: String,
    name: String,
    /// The new version, or `None` when the plugin was removed.
    sha256: Option<String>,
    /// The node that made the change (it has applied it already).
    origin: String,
}

/// This node's link to the fleet's plugin store.
pub struct PluginFleet {
    client: Client,
    subscriber: SubscriberClient,
    prefix: String,
    node: String,
    runtime: Arc<PluginRuntime>,
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
        let sha = sha256_hex(bytes);
        self.client
            .set::<(), _, _>(self.blob_key(&sha), bytes.to_vec(), None, None, false)
            .await?;
        self.client
            .hset::<(), _, _>(self.tenant_key(tenant), (name, sha.as_str()))
            .await?;
        self.client
            .sadd::<(), _, _>(self.tenants_key(), tenant)
            .await?;
        self.announce(tenant, name, Some(sha)).await
    }

    /// Shares a removal.
    pub async fn publish_remove(&self, tenant: &str, name: &str) -> Result<(), FleetError> {
        self.client
            .hdel::<(), _, _>(self.tenant_key(tenant), name)
            .await?;
        self.announce(tenant, name, None).await
    }

    async fn announce(
        &self,
        tenant: &str,
        name: &str,
        sha256: Option<String>,
    ) -> Result<(), FleetError> {
        let change = Change {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            sha256,
            origin: self.node.clone(),
        };
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
                tracing::warn!("ignoring a malformed plugin change announcement");
                continue;
            };
            if change.origin != self.node {
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
            for (name, sha) in active {
                self.apply(&tenant, &name, Some(&sha)).await;
            }
        }
    }

    /// Installs (or removes) one plugin version unless this node already serves it.
    async fn apply(&self, tenant: &str, name: &str, sha: Option<&str>) {
        let chain = self.runtime.slot(tenant).chain();
        let current = chain.get(name);
        let Some(sha) = sha else {
            self.runtime.remove(tenant, name);
            return;
        };
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
        let Some(bytes) = bytes.filter(|b| sha256_hex(b) == sha) else {
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
        if let Err(err) = self.runtime.install(tenant, name, bytes, manifest).await {
            tracing::warn!(tenant, plugin = name, error = %err, "a fleet plugin version is refused on this node");
        }
    }
}
