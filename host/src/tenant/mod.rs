//! Tenants: what ties a tenant's limits, Redis prefix and plugin slot to the sockets it serves.
//!
//! [`config`] reads them from TOML; [`Tenants`] serves them, one Socket.IO server and Engine.IO endpoint
//! each, chosen per request by host name or `tenant` parameter. With no configuration the gateway
//! serves one tenant, [`DEFAULT_TENANT`].

pub mod config;
mod plugins;
mod registry;
mod watch;

pub use config::{ConfigError, TenantConfig, TenantsConfig};
pub use plugins::{PluginPolicy, namespace_handlers};
pub use registry::{GatewayDefaults, Tenant, TenantError, Tenants};
pub use watch::{ConfigCheck, ConfigWatch};

/// The tenant of the embedded default (and of every connection while no tenants are configured).
pub const DEFAULT_TENANT: &str = "default";
