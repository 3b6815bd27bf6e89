//! The `ioplex` command line: what each command is, and the pieces every command shares (logging).
//! Each command lives in a module of its own; `main.rs` only parses and dispatches.

pub mod plugin_check;
pub mod plugin_compile;
pub mod serve;
pub mod serve_args;
pub mod tenants;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use ioplex::plugin::TrustedKeys;

pub use serve_args::ServeArgs;

/// Multi-tenant Socket.IO gateway (Engine.IO v4 / Socket.IO v5).
///
/// With no options it serves the embedded default: a single node with an in-memory adapter, every
/// namespace open, and the client contract (join / leave / publish / request / members events). With
/// --config it serves many tenants, each with its own rooms, limits, Redis channels and plugins, plus an
/// HTTP API for their backends. Timing and size options default to Node socket.io's values.
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve Socket.IO clients (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List the tenants a configuration defines: how each is reached, its limits, and whether each of
    /// its plugins would be served; with --url, also the live connections of a running node.
    Tenants {
        /// Public keys whose signed precompiled plugins (.cwasm) count as servable.
        #[arg(long, env = "IOPLEX_PLUGIN_TRUSTED_KEYS", value_parser = TrustedKeys::parse)]
        plugin_trusted_keys: Option<TrustedKeys>,
        /// Tenant configuration (default: the tenants a gateway without one serves).
        #[arg(long, short = 'c', env = "IOPLEX_CONFIG")]
        config: Option<PathBuf>,
        /// Plugin directory to validate (`<dir>/<tenant>/<name>.wasm`).
        #[arg(long, env = "IOPLEX_PLUGINS_DIR")]
        plugins_dir: Option<PathBuf>,
        /// A running node (e.g. http://127.0.0.1:3000) whose /status gives each tenant's live connections.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Validate a plugin as the gateway would before serving it: compile, check imports and exports
    /// against the ioplex:plugin contract, instantiate, and call each hook once. Prints the contract
    /// version and the hooks it implements; exits 1 if the gateway would refuse it.
    Check {
        /// The component (.wasm), or a precompiled plugin (.cwasm).
        file: PathBuf,
        /// Its manifest (settings and limits); default: FILE with a .toml extension, if present.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Public keys (hex, comma-separated) whose precompiled plugins are accepted.
        #[arg(long, env = "IOPLEX_PLUGIN_TRUSTED_KEYS", value_parser = TrustedKeys::parse)]
        trusted_keys: Option<TrustedKeys>,
    },
    /// Precompile a component for nodes without a compiler (the edge build): validate it as `check`
    /// does, then write the native code, signed with the build machine's key, as FILE.cwasm. Nodes load
    /// it only if started with the key's public half in --plugin-trusted-keys, and only on the same
    /// ioplex version and CPU family.
    Compile {
        /// The component (.wasm).
        file: PathBuf,
        /// Its manifest (settings and limits); default: FILE with a .toml extension, if present.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The signing key file (`ioplex plugin keygen`).
        #[arg(long, env = "IOPLEX_PLUGIN_SIGNING_KEY")]
        signing_key: PathBuf,
        /// Where to write the precompiled plugin (default: FILE with a .cwasm extension).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Create a signing key for precompiled plugins: writes the private key to FILE (mode 0600, keep it
    /// on the build machine) and prints the public key that nodes trust.
    Keygen {
        /// Where to write the private key; an existing file is never overwritten.
        file: PathBuf,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// `key=value` text, coloured on a terminal.
    Text,
    /// One JSON object per line, for collectors.
    Json,
}

/// Installs the global `tracing` subscriber; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain `key=value` text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
