//! Tenants: what ties a tenant's limits, Redis prefix and plugin slot to the sockets it serves.
//!
//! Until tenant configuration lands, the gateway serves one tenant, [`DEFAULT_TENANT`], whose plugin
//! slot is filled from `plugins.d/default/` or through [`crate::plugin::PluginRuntime::install`].

mod plugins;

pub use plugins::{PluginPolicy, namespace_handlers};

/// The tenant of the embedded default (and of every connection while no tenants are configured).
pub const DEFAULT_TENANT: &str = "default";
