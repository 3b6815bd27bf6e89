//! Servers for the official Engine.IO and Socket.IO conformance suites.
//!
//! `cargo run --release -p ioplex --example conformance -- engineio` echoes every message on `/engine.io/`;
//! `-- socketio` is the reference wiring of the socket.io-protocol suite on `/socket.io/`. Both listen on
//! port 3000 of 127.0.0.1 and ::1 with pingInterval 300 ms and pingTimeout 200 ms, as the suites expect.

use std::sync::Arc;
use std::time::Duration;

use ioplex::engineio::{
    AllowedOrigins, CloseReason, Engine, EngineConfig, EngineHandler, Message, Session,
    SessionHandler, WirePacket,
};
use ioplex::serve::{Router, bind_localhost, serve};
use ioplex::socketio::{Handlers, Payload, SocketIo, SocketIoConfig};

struct Echo;

impl EngineHandler for Echo {
    fn on_open(&self, _session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        Arc::new(Echo)
    }
}

impl SessionHandler for Echo {
    fn on_message(&self, session: &Arc<Session>, message: Message) {
        let packet = match message {
            Message::Text(text) => WirePacket::text(b'4', text.as_str().as_bytes()),
            Message::Binary(data) => WirePacket::binary(&data),
        };
        session.send(packet, false);
    }

    fn on_close(&self, _session: &Arc<Session>, _reason: &CloseReason) {}
}

/// The suite's reference wiring: greet with the auth payload, echo `message`, acknowledge `message-with-ack`.
fn reference_handlers() -> Handlers {
    Handlers::new()
        .on_connect(|socket| {
            let _ = socket.emit("auth", &Payload::json(vec![socket.auth().clone()]));
        })
        .on("message", |socket, event| {
            let _ = socket.emit("message-back", &event.payload);
        })
        .on("message-with-ack", |_socket, event| {
            if let Some(ack) = event.ack {
                ack.send(event.payload);
            }
        })
}

fn suite_config(path: &str) -> EngineConfig {
    EngineConfig {
        path: path.to_owned(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        cors: AllowedOrigins::Any,
        ..EngineConfig::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mode = std::env::args().nth(1).unwrap_or_default();
    let router = match mode.as_str() {
        "engineio" => Router::new(vec![Engine::new(
            suite_config("/engine.io/"),
            Arc::new(Echo),
        )]),
        "socketio" => {
            let io = SocketIo::builder()
                .config(SocketIoConfig {
                    connect_timeout: Duration::from_millis(1000),
                    ..SocketIoConfig::default()
                })
                .namespace("/", reference_handlers())
                .namespace("/custom", reference_handlers())
                .build();
            Router::new(vec![io.engine(suite_config("/socket.io/"))])
        }
        other => anyhow::bail!("usage: conformance engineio|socketio (got {other:?})"),
    };
    let listeners = bind_localhost(3000).await?;
    println!("conformance server ({mode}) listening on localhost:3000");
    serve(listeners, router, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
