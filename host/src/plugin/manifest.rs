//! The optional `<name>.toml` next to a plugin: its settings and limits.
//!
//! ```toml
//! [settings]          # read by the guest with host.setting(key)
//! secret = "change-me"
//!
//! [limits]
//! deadline-ms = 10    # running time per hook call
//! memory-mib = 128    # linear memory per instance
//! warm-instances = 4
//! calls-per-instance = 100000
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::PluginError;
use super::limits::PluginLimits;

/// Settings and limits of one plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginManifest {
    /// Key/value settings the guest reads through `host.setting`.
    pub settings: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: PluginLimits,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawManifest {
    settings: BTreeMap<String, toml::Value>,
    limits: PluginLimits,
}

impl PluginManifest {
    /// Parses a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PluginError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| PluginError::Manifest {
            path: origin.to_owned(),
            reason: e.to_string(),
        })?;
        let mut settings = BTreeMap::new();
        for (key, value) in raw.settings {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(PluginError::Manifest {
                        path: origin.to_owned(),
                        reason: format!(
                            "setting `{key}` must be a string, number, boolean or list, not {}",
                            other.type_str()
                        ),
                    });
                }
            };
            settings.insert(key, text);
        }
        Ok(PluginManifest {
            settings,
            limits: raw.limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn settings_and_limits_are_read() {
        let m = PluginManifest::parse(
            "[settings]\nsecret = \"k\"\nmax-bytes = 2048\nwords = [\"a\", \"b\"]\n[limits]\ndeadline-ms = 3\nmemory-mib = 16\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(m.settings["secret"], "k");
        assert_eq!(m.settings["max-bytes"], "2048");
        assert_eq!(m.settings["words"], "a,b");
        assert_eq!(m.limits.deadline, Duration::from_millis(3));
        assert_eq!(m.limits.memory_bytes, 16 << 20);
        assert_eq!(
            m.limits.warm_instances,
            PluginLimits::default().warm_instances
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_file() {
        let err = PluginManifest::parse("[limits]\ndeadline = 3\n", "p/x.toml").unwrap_err();
        assert!(err.to_string().starts_with("manifest p/x.toml:"), "{err}");
    }
}
