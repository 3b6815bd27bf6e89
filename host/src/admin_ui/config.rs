//! A tenant's `[tenants.<id>.admin-ui]` table.

use serde::Deserialize;

/// Serves `@socket.io/admin-ui` to one tenant. There is no setting that opens it without a password:
/// a tenant without this table has no admin namespace at all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminUiConfig {
    /// The user name the dashboard logs in with.
    pub username: String,
    /// A bcrypt hash of the password (`$2a$`/`$2b$`/`$2y$`), as Node's `instrument({ auth })` takes, so a
    /// team moving from Node keeps its hash.
    pub password_hash: String,
    /// The namespace the dashboard connects to.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Only watch: no emit, join, leave or disconnect from the dashboard.
    #[serde(default)]
    pub readonly: bool,
    /// `development` (every socket, room change and client event is fed to the dashboard) or
    /// `production` (server statistics only), as Node's `mode`.
    #[serde(default)]
    pub mode: AdminMode,
    /// Most sockets listed when a dashboard connects (`all_sockets`); the rest still arrive as they
    /// connect.
    #[serde(default = "default_max_listed")]
    pub max_sockets_listed: usize,
}

/// What the dashboard is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminMode {
    /// Statistics, sockets, rooms and client events.
    #[default]
    Development,
    /// Statistics only.
    Production,
}

fn default_namespace() -> String {
    "/admin".into()
}

fn default_max_listed() -> usize {
    5_000
}

impl AdminUiConfig {
    /// Why this table cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.username.is_empty() {
            return Some("admin-ui: username is empty".into());
        }
        if let Err(err) = self.password_hash.parse::<bcrypt::HashParts>() {
            return Some(format!(
                "admin-ui: password-hash is not a bcrypt hash ({err}); make one with \
                 `htpasswd -bnBC 10 \"\" PASSWORD | tr -d ':\\n'` or bcryptjs"
            ));
        }
        if !self.namespace.starts_with('/') || self.namespace.len() > 129 {
            return Some(format!(
                "admin-ui: namespace {:?} must start with / (at most 129 bytes)",
                self.namespace
            ));
        }
        None
    }
}
