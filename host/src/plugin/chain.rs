//! A tenant's plugins as one chain per hook, behind an atomic pointer that a reload swaps.
//!
//! Authorization hooks run in plugin-name order and the first refusal wins; transforms run in the same
//! order, each seeing the previous one's output. A call in flight keeps the chain it started with, so a
//! swap never mixes versions within one request and the old version is freed when its last call ends.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::bindings::types;
use super::error::{CallFailure, PluginError};
use super::loaded::{Hook, LoadedPlugin};
use super::runtime::TenantQuota;

/// Why a chain did not say yes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// A plugin refused, with the message meant for the client.
    #[error("{0}")]
    Refused(String),
    /// A plugin failed to answer; the request fails closed.
    #[error("plugin {plugin} failed: {failure}")]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        failure: CallFailure,
    },
}

/// An event after the transform chain.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// Deliver this body to these rooms (both possibly rewritten).
    Deliver {
        /// What to deliver.
        body: types::EventBody,
        /// Where to.
        rooms: Vec<String>,
        /// Whether any plugin changed body or rooms.
        changed: bool,
    },
    /// Deliver nothing.
    Drop,
}

/// A broadcast after the transform chain.
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastOutcome {
    /// Send as it came.
    Pass,
    /// Send this body instead.
    Rewrite(types::EventBody),
    /// Send nothing.
    Drop,
}

/// The plugins of one tenant, sorted by name.
#[derive(Debug, Default)]
pub struct PluginChain {
    plugins: Vec<Arc<LoadedPlugin>>,
    /// Plugins configured for the tenant with no valid version yet: every hook fails closed meanwhile.
    unavailable: Vec<String>,
}

impl PluginChain {
    pub(crate) fn with(&self, plugin: Arc<LoadedPlugin>) -> PluginChain {
        let name = Arc::clone(&plugin.context().name);
        let mut plugins: Vec<_> = self
            .plugins
            .iter()
            .filter(|p| p.context().name != name)
            .cloned()
            .collect();
        plugins.push(plugin);
        plugins.sort_by(|a, b| a.context().name.cmp(&b.context().name));
        let unavailable = self
            .unavailable
            .iter()
            .filter(|n| n.as_str() != &*name)
            .cloned()
            .collect();
        PluginChain {
            plugins,
            unavailable,
        }
    }

    pub(crate) fn without(&self, name: &str) -> Option<PluginChain> {
        let plugins: Vec<_> = self
            .plugins
            .iter()
            .filter(|p| &*p.context().name != name)
            .cloned()
            .collect();
        let unavailable: Vec<_> = self
            .unavailable
            .iter()
            .filter(|n| n.as_str() != name)
            .cloned()
            .collect();
        let changed =
            plugins.len() != self.plugins.len() || unavailable.len() != self.unavailable.len();
        changed.then_some(PluginChain {
            plugins,
            unavailable,
        })
    }

    fn with_unavailable(&self, name: &str) -> PluginChain {
        let mut unavailable = self.unavailable.clone();
        if !unavailable.iter().any(|n| n == name) {
            unavailable.push(name.to_owned());
        }
        PluginChain {
            plugins: self.plugins.clone(),
            unavailable,
        }
    }

    /// The plugins, in call order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// Plugins that have no valid version yet (the tenant fails closed until they do).
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| &*p.context().name == name)
    }

    /// Whether a request must go through the chain for `hook` (a plugin exports it, or one is missing).
    pub fn has(&self, hook: Hook) -> bool {
        !self.unavailable.is_empty() || self.plugins.iter().any(|p| p.has(hook))
    }

    /// Fails closed while a configured plugin has no valid version.
    fn check_complete(&self) -> Result<(), HookError> {
        match self.unavailable.first() {
            None => Ok(()),
            Some(name) => Err(HookError::Failed {
                plugin: name.clone(),
                failure: CallFailure::Unavailable("no valid version has been installed".into()),
            }),
        }
    }

    fn failed(plugin: &LoadedPlugin, failure: CallFailure) -> HookError {
        HookError::Failed {
            plugin: plugin.context().name.to_string(),
            failure,
        }
    }

    /// Runs `authorize-connect` of every plugin; accepts are merged (later user ids and data win, rooms add up).
    pub fn authorize_connect(
        &self,
        request: &types::ConnectRequest,
    ) -> Result<types::ConnectAccept, HookError> {
        self.check_complete()?;
        let mut merged = types::ConnectAccept {
            user_id: None,
            data_json: None,
            rooms: Vec::new(),
        };
        for p in self
            .plugins
            .iter()
            .filter(|p| p.has(Hook::AuthorizeConnect))
        {
            match p.authorize_connect(request) {
                Ok(Ok(accept)) => {
                    if accept.user_id.is_some() {
                        merged.user_id = accept.user_id;
                    }
                    if accept.data_json.is_some() {
                        merged.data_json = accept.data_json;
                    }
                    merged.rooms.extend(accept.rooms);
                }
                Ok(Err(message)) => return Err(HookError::Refused(message)),
                Err(failure) => return Err(Self::failed(p, failure)),
            }
        }
        Ok(merged)
    }

    /// Runs `authorize-join` of every plugin.
    pub fn authorize_join(&self, request: &types::JoinRequest) -> Result<(), HookError> {
        self.check_complete()?;
        for p in self.plugins.iter().filter(|p| p.has(Hook::AuthorizeJoin)) {
            match p.authorize_join(request) {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(HookError::Refused(reason)),
                Err(failure) => return Err(Self::failed(p, failure)),
            }
        }
        Ok(())
    }

    /// Runs `transform-event` of every plugin, each on the previous one's output.
    pub fn transform_event(&self, event: types::ClientEvent) -> Result<EventOutcome, HookError> {
        self.check_complete()?;
        let mut event = event;
        let mut changed = false;
        for p in self.plugins.iter().filter(|p| p.has(Hook::TransformEvent)) {
            match p.transform_event(&event) {
                Ok(Ok(types::EventAction::Pass)) => {}
                Ok(Ok(types::EventAction::Rewrite(body))) => {
                    event.body = body;
                    changed = true;
                }
                Ok(Ok(types::EventAction::Route(route))) => {
                    event.rooms = route.rooms;
                    if let Some(body) = route.body {
                        event.body = body;
                    }
                    changed = true;
                }
                Ok(Ok(types::EventAction::Drop)) => return Ok(EventOutcome::Drop),
                Ok(Err(message)) => return Err(HookError::Refused(message)),
                Err(failure) => return Err(Self::failed(p, failure)),
            }
        }
        Ok(EventOutcome::Deliver {
            body: event.body,
            rooms: event.rooms,
            changed,
        })
    }

    /// Runs `transform-broadcast` of every plugin, each on the previous one's output.
    pub fn transform_broadcast(
        &self,
        broadcast: types::Broadcast,
    ) -> Result<BroadcastOutcome, HookError> {
        self.check_complete()?;
        let mut broadcast = broadcast;
        let mut rewritten = false;
        for p in self
            .plugins
            .iter()
            .filter(|p| p.has(Hook::TransformBroadcast))
        {
            match p.transform_broadcast(&broadcast) {
                Ok(Ok(types::BroadcastAction::Pass)) => {}
                Ok(Ok(types::BroadcastAction::Rewrite(body))) => {
                    broadcast.body = body;
                    rewritten = true;
                }
                Ok(Ok(types::BroadcastAction::Drop)) => return Ok(BroadcastOutcome::Drop),
                Ok(Err(message)) => return Err(HookError::Refused(message)),
                Err(failure) => return Err(Self::failed(p, failure)),
            }
        }
        Ok(if rewritten {
            BroadcastOutcome::Rewrite(broadcast.body)
        } else {
            BroadcastOutcome::Pass
        })
    }
}

/// A tenant's plugin slot: the chain that serves now, replaced atomically by installs and removals.
#[derive(Debug)]
pub struct PluginSlot {
    tenant: Arc<str>,
    quota: Arc<TenantQuota>,
    /// One install (compile and validation) of this tenant at a time.
    pub(crate) installing: tokio::sync::Semaphore,
    chain: ArcSwap<PluginChain>,
    /// Serialises read-modify-write of the chain (installs of two plugins at once); never held across an await.
    writer: parking_lot::Mutex<()>,
}

impl PluginSlot {
    pub(crate) fn new(tenant: Arc<str>) -> Self {
        PluginSlot {
            tenant,
            quota: Arc::new(TenantQuota::default()),
            installing: tokio::sync::Semaphore::new(1),
            chain: ArcSwap::from_pointee(PluginChain::default()),
            writer: parking_lot::Mutex::new(()),
        }
    }

    /// The tenant this slot serves.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// What the tenant's plugins may hold.
    pub fn quota(&self) -> &Arc<TenantQuota> {
        &self.quota
    }

    /// The chain serving now; hold it for the whole request.
    pub fn chain(&self) -> Arc<PluginChain> {
        self.chain.load_full()
    }

    /// Whether no plugin is configured (a cheap check before building hook inputs).
    pub fn is_empty(&self) -> bool {
        let chain = self.chain.load();
        chain.plugins.is_empty() && chain.unavailable.is_empty()
    }

    /// Records that `name` is configured but has no valid version: the tenant fails closed until it has.
    pub(crate) fn mark_unavailable(&self, name: &str) {
        let _writer = self.writer.lock();
        let next = self.chain.load().with_unavailable(name);
        self.chain.store(Arc::new(next));
    }

    /// Puts `plugin` in the chain, unless it is a new name past the tenant's plugin count.
    pub(crate) fn install(&self, plugin: Arc<LoadedPlugin>) -> Result<(), PluginError> {
        let _writer = self.writer.lock();
        let chain = self.chain.load();
        let name = &plugin.context().name;
        let max = self.quota.max_plugins();
        if chain.get(name).is_none() && chain.plugins.len() >= max {
            return Err(PluginError::Limit(format!(
                "tenant {} already has {max} plugins, its limit; remove one first",
                self.tenant
            )));
        }
        plugin.bind_quota(Arc::clone(&self.quota));
        let next = chain.with(plugin);
        self.chain.store(Arc::new(next));
        Ok(())
    }

    /// Whether one more plugin named `name` fits (checked before compiling it).
    pub(crate) fn has_room_for(&self, name: &str) -> bool {
        let chain = self.chain.load();
        chain.get(name).is_some() || chain.plugins.len() < self.quota.max_plugins()
    }

    pub(crate) fn remove(&self, name: &str) -> bool {
        let _writer = self.writer.lock();
        match self.chain.load().without(name) {
            Some(next) => {
                self.chain.store(Arc::new(next));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::test_support::{component, join, runtime};
    use crate::plugin::{PluginManifest, PluginSource};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_authorizer_must_allow_and_a_refusal_carries_its_message() {
        let runtime = runtime();
        let manifest =
            PluginManifest::parse("[settings]\nlabel = \"one\"\n", "one.toml").expect("manifest");
        runtime
            .install(
                "t",
                "10-one",
                component("chaos"),
                manifest,
                PluginSource::Api,
            )
            .await
            .expect("one");
        let manifest =
            PluginManifest::parse("[settings]\nlabel = \"two\"\n", "two.toml").expect("manifest");
        runtime
            .install(
                "t",
                "20-two",
                component("chaos"),
                manifest,
                PluginSource::Api,
            )
            .await
            .expect("two");
        let chain = runtime.slot("t").chain();
        let names: Vec<String> = chain
            .plugins()
            .iter()
            .map(|p| p.context().name.to_string())
            .collect();
        assert_eq!(names, ["10-one", "20-two"], "plugins run in name order");
        assert!(chain.authorize_join(&join("lobby")).is_ok());
        match chain.authorize_join(&join("chaos:refuse")) {
            Err(HookError::Refused(message)) => {
                assert_eq!(message, "refused by chaos one", "the first refusal wins")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_plugin_fails_the_chain_closed() {
        let runtime = runtime();
        runtime
            .install(
                "t",
                "chaos",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("chaos");
        let chain = runtime.slot("t").chain();
        match chain.authorize_join(&join("chaos:trap")) {
            Err(HookError::Failed { plugin, failure }) => {
                assert_eq!(plugin, "chaos");
                assert!(matches!(failure, CallFailure::Trap(_)), "{failure}");
            }
            other => panic!("a trap must fail closed, got {other:?}"),
        }
        assert!(
            chain.authorize_join(&join("lobby")).is_ok(),
            "the next call runs on a fresh instance"
        );
    }
}
