//! Write [ioplex] plugins in Rust.
//!
//! A plugin is a WebAssembly component that ioplex runs for one tenant, in a sandbox, on the paths that
//! decide who may connect, who may join which room, and what an event or a broadcast carries. This crate
//! holds the bindings of the `ioplex:plugin` WIT contract (generated with `wit-bindgen`), the [`Plugin`]
//! trait whose hooks all have permissive defaults, and [`export!`], which exports only the hooks you name.
//!
//! ```
//! use ioplex_guest::{host, JoinRequest, Plugin};
//!
//! struct OnlyTeamRooms;
//!
//! impl Plugin for OnlyTeamRooms {
//!     fn authorize_join(request: JoinRequest) -> Result<(), String> {
//!         let prefix = host::setting("room-prefix").unwrap_or_else(|| "team:".into());
//!         if request.room.starts_with(&prefix) {
//!             Ok(())
//!         } else {
//!             host::info(&format!("refused {} for {}", request.room, request.socket.id));
//!             Err(format!("only rooms starting with {prefix} may be joined"))
//!         }
//!     }
//! }
//!
//! ioplex_guest::export!(OnlyTeamRooms: authorize_join);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; the result is a component:
//! `cargo build --release --target wasm32-wasip2`, then `ioplex plugin check target/wasm32-wasip2/release/NAME.wasm`.
//!
//! A hook that is not exported costs nothing: the host does not call it. A hook that panics traps, which the
//! host treats as a failure of the plugin (the request is refused), so return `Err` for expected refusals.
//!
//! [ioplex]: https://example.invalid/ioplex

#![warn(missing_docs)]

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bindings generated from `wit/plugin.wit`; use the re-exports at the crate root instead.
#[doc(hidden)]
pub mod bindings;

pub use bindings::base::ioplex::plugin::types::{
    Broadcast, BroadcastAction, ClientEvent, ConnectAccept, ConnectRequest, EventAction, EventBody,
    Header, JoinRequest, Route, SocketInfo,
};

/// The version of the WIT contract this crate targets.
pub const CONTRACT_VERSION: &str = "ioplex:plugin@0.1.0";

/// What the host gives a plugin: logging, the tenant's settings for the plugin, and a clock.
pub mod host {
    use crate::bindings::base::ioplex::plugin::host as wit;

    pub use wit::LogLevel;

    /// Logs a line at `level`; the host adds the tenant and the plugin's name and version.
    pub fn log(level: LogLevel, message: &str) {
        wit::log(level, message);
    }

    /// Logs at debug level.
    pub fn debug(message: &str) {
        wit::log(LogLevel::Debug, message);
    }

    /// Logs at info level.
    pub fn info(message: &str) {
        wit::log(LogLevel::Info, message);
    }

    /// Logs at warn level.
    pub fn warn(message: &str) {
        wit::log(LogLevel::Warn, message);
    }

    /// The plugin's setting `key` from the tenant's configuration.
    pub fn setting(key: &str) -> Option<String> {
        wit::setting(key)
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        wit::now_ms()
    }
}

/// The hooks a plugin may implement. Every method has a permissive default, so a plugin writes only the
/// hooks it needs and names them in [`export!`]; hooks left out of `export!` are never called.
pub trait Plugin {
    /// May this client connect? `Err` is the message the client gets in `connect_error`.
    fn authorize_connect(request: ConnectRequest) -> Result<ConnectAccept, String> {
        let _ = request;
        Ok(ConnectAccept::default())
    }

    /// May this socket join this room? `Err` is the reason the client gets through its ack.
    fn authorize_join(request: JoinRequest) -> Result<(), String> {
        let _ = request;
        Ok(())
    }

    /// Rewrite, drop or route a client's event; `Err` rejects it with a message for the client's ack.
    fn transform_event(event: ClientEvent) -> Result<EventAction, String> {
        let _ = event;
        Ok(EventAction::Pass)
    }

    /// Rewrite or drop a broadcast (called once per broadcast, not per recipient).
    fn transform_broadcast(broadcast: Broadcast) -> Result<BroadcastAction, String> {
        let _ = broadcast;
        Ok(BroadcastAction::Pass)
    }
}

// A generated type: the derive cannot be added where it is defined.
#[allow(clippy::derivable_impls)]
impl Default for ConnectAccept {
    fn default() -> Self {
        ConnectAccept {
            user_id: None,
            data_json: None,
            rooms: Vec::new(),
        }
    }
}

impl EventBody {
    /// A body with JSON arguments and no binary attachments.
    pub fn new(name: impl Into<String>, args: &impl Serialize) -> Result<Self, String> {
        Ok(EventBody {
            name: name.into(),
            args_json: serde_json::to_string(args).map_err(|e| e.to_string())?,
            attachments: Vec::new(),
        })
    }

    /// The arguments, parsed.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.args_json).map_err(|e| format!("arguments: {e}"))
    }
}

impl SocketInfo {
    /// The socket's data (from `authorize_connect`), parsed.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.data_json).map_err(|e| format!("socket data: {e}"))
    }
}

impl ConnectRequest {
    /// The client's `auth` object, parsed.
    pub fn auth<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.auth_json).map_err(|e| format!("auth: {e}"))
    }

    /// The first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Exports a [`Plugin`] implementation's hooks: `export!(MyPlugin: authorize_join, transform_event);`.
///
/// Hook names: `authorize_connect`, `authorize_join`, `transform_event`, `transform_broadcast`.
/// Use it once per component, at the crate root.
#[macro_export]
macro_rules! export {
    ($plugin:ty : $($hook:ident),+ $(,)?) => {
        $(
            $crate::__export_hook!($plugin, $hook);
            $crate::__export_hook!(@native $plugin, $hook);
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    // Native builds export nothing but still use the hook, so the plugin's own code is not dead there.
    (@native $plugin:ty, $hook:ident) => {
        #[cfg(not(target_family = "wasm"))]
        const _: () = {
            let _ = <$plugin as $crate::Plugin>::$hook;
        };
    };
    ($plugin:ty, authorize_connect) => {
        // Only wasm builds export: a native build (the plugin's own unit tests) links no hook symbols.
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct Hook;
            impl $crate::bindings::authorize_connect::exports::ioplex::plugin::authorize_connect::Guest for Hook {
                fn authorize_connect(request: $crate::ConnectRequest) -> Result<$crate::ConnectAccept, String> {
                    <$plugin as $crate::Plugin>::authorize_connect(request)
                }
            }
            $crate::bindings::authorize_connect::export!(Hook with_types_in $crate::bindings::authorize_connect);
        };
    };
    ($plugin:ty, authorize_join) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct Hook;
            impl $crate::bindings::authorize_join::exports::ioplex::plugin::authorize_join::Guest for Hook {
                fn authorize_join(request: $crate::JoinRequest) -> Result<(), String> {
                    <$plugin as $crate::Plugin>::authorize_join(request)
                }
            }
            $crate::bindings::authorize_join::export!(Hook with_types_in $crate::bindings::authorize_join);
        };
    };
    ($plugin:ty, transform_event) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct Hook;
            impl $crate::bindings::transform_event::exports::ioplex::plugin::transform_event::Guest for Hook {
                fn transform_event(event: $crate::ClientEvent) -> Result<$crate::EventAction, String> {
                    <$plugin as $crate::Plugin>::transform_event(event)
                }
            }
            $crate::bindings::transform_event::export!(Hook with_types_in $crate::bindings::transform_event);
        };
    };
    ($plugin:ty, transform_broadcast) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct Hook;
            impl $crate::bindings::transform_broadcast::exports::ioplex::plugin::transform_broadcast::Guest for Hook {
                fn transform_broadcast(broadcast: $crate::Broadcast) -> Result<$crate::BroadcastAction, String> {
                    <$plugin as $crate::Plugin>::transform_broadcast(broadcast)
                }
            }
            $crate::bindings::transform_broadcast::export!(Hook with_types_in $crate::bindings::transform_broadcast);
        };
    };
    ($plugin:ty, $other:ident) => {
        compile_error!(concat!(
            "unknown hook `", stringify!($other),
            "`; hooks are authorize_connect, authorize_join, transform_event, transform_broadcast"
        ));
    };
}
