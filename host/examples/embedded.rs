//! ioplex as a library: a Socket.IO server with its own handlers, in a few lines.
//!
//! `cargo run -p ioplex --example embedded` listens on port 3001 (`PORT` overrides) and serves:
//! - `/`: anyone may connect; greets with `welcome` (socket id, namespace, auth payload); `echo` sends the
//!   arguments back (binary included) and acknowledges with them too; `ask-me` makes the server ask the
//!   client a `question` and wait for its acknowledgement, then report it as `answer`;
//! - `/admin`: only with `auth: { token: "letmein" }`; other clients get a `connect_error` saying why.
//!
//! With `REDIS_URL` set it joins a fleet (ioplex or Node servers with `@socket.io/redis-adapter`), and
//! clients of `/` can drive the fleet-wide operations: `join`, `fetch-sockets`, `all-rooms`,
//! `sockets-join`, `disconnect-room`, `emit-with-ack`, `server-side-emit`; emits from other servers
//! (`serverSideEmit`) are forwarded to this node's clients as `server-side` and acknowledged.

use std::time::Duration;

use ioplex::adapter::redis::{RedisAdapterFactory, RedisConfig};
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

/// Runs `f` on the namespace in a task and answers the client's ack with its result.
fn ops(handlers: Handlers) -> Handlers {
    fn reply(ack: Option<ioplex::socketio::AckResponder>, value: serde_json::Value) {
        if let Some(ack) = ack {
            ack.send(Payload::json(vec![value]));
        }
    }
    fn text_arg(event: &ioplex::socketio::Event, i: usize) -> String {
        event
            .payload
            .args
            .get(i)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }
    handlers
        .on("join", |socket, event| {
            socket.join(&[text_arg(&event, 0).as_str().into()]);
            reply(event.ack, json!({ "ok": true }));
        })
        .on("fetch-sockets", |socket, event| {
            let op = socket.namespace().to(text_arg(&event, 0));
            tokio::spawn(async move {
                let result = match op.fetch_sockets().await {
                    Ok(sockets) => {
                        let mut ids: Vec<String> =
                            sockets.iter().map(|s| s.id.to_string()).collect();
                        ids.sort();
                        json!({ "ids": ids })
                    }
                    Err(err) => json!({ "error": err.to_string() }),
                };
                reply(event.ack, result);
            });
        })
        .on("all-rooms", |socket, event| {
            let op = socket.namespace().broadcast();
            tokio::spawn(async move {
                let result = match op.all_rooms().await {
                    Ok(rooms) => {
                        let mut rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
                        rooms.sort();
                        json!({ "rooms": rooms })
                    }
                    Err(err) => json!({ "error": err.to_string() }),
                };
                reply(event.ack, result);
            });
        })
        .on("sockets-join", |socket, event| {
            let (target, room) = (text_arg(&event, 0), text_arg(&event, 1));
            let op = socket.namespace().to(target);
            tokio::spawn(async move {
                let result = op.sockets_join(&[room.as_str().into()]).await;
                reply(event.ack, json!({ "ok": result.is_ok() }));
            });
        })
        .on("disconnect-room", |socket, event| {
            let op = socket.namespace().to(text_arg(&event, 0));
            tokio::spawn(async move {
                let result = op.disconnect_sockets(false).await;
                reply(event.ack, json!({ "ok": result.is_ok() }));
            });
        })
        .on("emit-with-ack", |socket, event| {
            let (room, name) = (text_arg(&event, 0), text_arg(&event, 1));
            let op = socket.namespace().to(room);
            tokio::spawn(async move {
                let result = op
                    .emit_with_ack(&name, Payload::default(), Duration::from_millis(2000))
                    .await;
                let value = match result {
                    Ok(acks) => {
                        let mut answers: Vec<serde_json::Value> = acks
                            .responses
                            .into_iter()
                            .flat_map(|p| p.args.into_iter().take(1))
                            .collect();
                        answers.sort_by_key(|a| a.to_string());
                        json!({ "answers": answers, "timedOut": acks.timed_out })
                    }
                    Err(err) => json!({ "error": err.to_string() }),
                };
                reply(event.ack, value);
            });
        })
        .on("server-side-emit", |socket, event| {
            let ns = std::sync::Arc::clone(socket.namespace());
            let name = text_arg(&event, 0);
            tokio::spawn(async move {
                let value = match ns
                    .server_side_emit_with_ack(&name, vec![], Duration::from_millis(2000))
                    .await
                {
                    Ok(answers) => json!({ "answers": answers }),
                    Err(err) => json!({ "error": err.to_string() }),
                };
                reply(event.ack, value);
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
    let mut builder = SocketIo::builder();
    if let Ok(url) = std::env::var("REDIS_URL") {
        let factory = RedisAdapterFactory::start(RedisConfig::new(url)).await?;
        builder = builder.adapter(std::sync::Arc::new(factory));
    }
    let (forward_to, forwarder) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let main = ops(greeting_and_echo()).on_server_side_emit(move |data, ack| {
        let _ = forward_to.send(serde_json::Value::Array(data));
        if let Some(ack) = ack {
            ack(json!("ack-from-ioplex"));
        }
    });
    let io = builder
        .namespace("/", main)
        .namespace("/admin", admin)
        .build();

    if let Some(ns) = io.of("/") {
        tokio::spawn(forward_server_side_emits(ns, forwarder));
    }
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

/// Hands emits from other servers to this node's clients.
async fn forward_server_side_emits(
    ns: std::sync::Arc<ioplex::socketio::Namespace>,
    mut emits: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    while let Some(data) = emits.recv().await {
        let _ = ns
            .broadcast()
            .local()
            .emit("server-side", Payload::json(vec![data]));
    }
}
