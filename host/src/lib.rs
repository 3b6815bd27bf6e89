//! ioplex: a multi-tenant Socket.IO gateway.
//!
//! Layers, bottom to top; each imports only those below it (`tests/layers.rs` checks it, and
//! `docs/architecture.md` follows one event through them):
//! - [`sid`], [`http_util`], [`file_watch`]: ids, the HTTP plumbing every request-answering layer
//!   shares, and the polling of configuration files;
//! - [`engineio`]: handshake, polling, websocket, upgrade and heartbeat on hyper and tokio;
//! - [`codec`]: Socket.IO packets, binary attachments, encoding once per broadcast;
//! - [`adapter`]: where broadcasts go: the local in-memory adapter, or Redis (wire-compatible with Node's);
//! - [`socketio`]: namespaces, sockets, rooms, acks and binary over Engine.IO;
//! - [`plugin`]: tenants' WebAssembly components (wasmtime), knowing nothing of sockets;
//! - [`contract`]: the events a client uses when no application server stands behind the gateway;
//! - [`tenant`]: tenants from configuration, each a Socket.IO server with its limits, Redis channels and
//!   plugin slot, chosen per request;
//! - [`api`], [`metrics`], [`status`], [`static_files`]: the HTTP surfaces beside Socket.IO (tenants' backends,
//!   Prometheus, a demo page);
//! - [`serve`]: binding listeners, admitting connections and routing requests to an endpoint.
//!
//! # Embedding
//!
//! A Socket.IO server of your own, on ioplex's transports: handlers per namespace, then an Engine.IO
//! endpoint to put behind [`serve::serve`]. Here a client connects in memory and its `echo` is acked:
//!
//! ```
//! use ioplex::engineio::{EngineConfig, MemoryClient};
//! use ioplex::socketio::{Handlers, SocketIo};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let io = SocketIo::builder()
//!     .namespace("/", Handlers::new().on("echo", |_socket, event| {
//!         if let Some(ack) = event.ack {
//!             ack.send(event.payload);
//!         }
//!     }))
//!     .build();
//! let engine = io.engine(EngineConfig::default());
//! // In production: serve(bind(host, port).await?, Router::new(vec![engine]), shutdown).await
//!
//! let mut client = MemoryClient::connect(&engine, "EIO=4").await?;
//! client.send("40").await?;
//! assert!(client.recv_text().await?.starts_with("40{\"sid\":"));
//! client.send(r#"421["echo","hi"]"#).await?;
//! assert_eq!(client.recv_text().await?, r#"431["hi"]"#);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod adapter;
pub mod admin_ui;
pub mod api;
pub mod codec;
pub mod contract;
pub mod engineio;
pub mod file_watch;
pub mod hex;
pub mod http_util;
pub mod metrics;
pub mod plugin;
pub mod serve;
pub mod sid;
pub mod socketio;
pub mod static_files;
pub mod status;
pub mod tenant;

pub use sid::Sid;
