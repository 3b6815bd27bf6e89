//! ioplex as a library: a Socket.IO server with its own handlers, in a few lines.
//!
//! `cargo run -p ioplex --example embedded` listens on port 3001 (`PORT` overrides) and serves:
//! - `/`: anyone may connect; greets with `welcome` (socket id, namespace, auth payload); `echo` sends the
//!   arguments back (binary included) and acknowledges with them too; `ask-me` makes the server ask the
//!   client a `question` and wait for its acknowledgement, then report it as `answer`;
//! - `/admin`: only with `auth: { token: "letmein" }`; other clients get a `connect_error` saying why.

use std::time::Duration;

use ioplex::engineio::EngineConfig;
use ioplex::serve::{Router, bind, serve};
use ioplex::socketio::{ConnectAccept, ConnectRefusal, Handlers, Payload, SocketIo};
use serde_json::json;

fn greeting_and_echo() -> Handlers {
    Handlers::new()
        .on_connect(|socket| {
            let welcome = json!({
                "id": socket.id().to_string(),
                "nsp": socket.namespace().name(),
                "auth": socket.auth(),
            });
            let _ = socket.emit("welcome", &Payload::json(vec![welcome]));
        })
        .on("echo", |socket, event| {
            let _ = socket.emit("echo", &event.payload);
            if let Some(ack) = event.ack {
                ack.send(event.payload);
            }
        })
        .on("ask-me", |socket, event| {
            let socket = std::sync::Arc::clone(socket);
            let timeout = event
                .payload
                .args
                .first()
                .and_then(|v| v.as_u64())
                .unwrap_or(1000);
            tokio::spawn(async move {
                let question = Payload::json(vec![json!("what is your name?")]);
                let answer = match socket
                    .emit_with_ack("question", &question, Duration::from_millis(timeout))
                    .await
                {
                    Ok(reply) => json!({ "reply": reply.args }),
                    Err(err) => json!({ "error": err.to_string() }),
                };
                let _ = socket.emit("answer", &Payload::json(vec![answer]));
            });
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);

    let admin = greeting_and_echo().authorize(|req| {
        if req.auth.get("token").and_then(|t| t.as_str()) == Some("letmein") {
            Ok(ConnectAccept {
                data: Some(json!({ "role": "admin" })),
                ..ConnectAccept::default()
            })
        } else {
            Err(ConnectRefusal {
                message: "invalid token".into(),
                data: Some(json!({ "hint": "pass auth: { token }" })),
            })
        }
    });
    let io = SocketIo::builder()
        .namespace("/", greeting_and_echo())
        .namespace("/admin", admin)
        .build();

    let listeners = bind("0.0.0.0".parse()?, port).await?;
    tracing::info!(port, "embedded example listening");
    serve(
        listeners,
        Router::new(vec![io.engine(EngineConfig::default())]),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    Ok(())
}
