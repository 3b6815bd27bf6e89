//! The admin namespace's handlers: login, the first messages a dashboard gets, and its requests.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{AdminMode, AdminUi, serialize};
use crate::adapter::{BroadcastOptions, Room};
use crate::codec::Payload;
use crate::socketio::{ConnectAccept, ConnectRefusal, Event, Handlers, Socket, SocketIo};

/// What the dashboard may do (Node's `Feature` names).
fn features(admin: &AdminUi) -> Vec<&'static str> {
    let mut features = if admin.config.readonly {
        Vec::new()
    } else {
        vec![
            "EMIT",
            "JOIN",
            "LEAVE",
            "DISCONNECT",
            "MJOIN",
            "MLEAVE",
            "MDISCONNECT",
        ]
    };
    features.push("AGGREGATED_EVENTS");
    if admin.config.mode == AdminMode::Development {
        features.push("ALL_EVENTS");
    }
    features
}

/// The admin namespace's handlers.
pub(super) fn handlers(admin: &Arc<AdminUi>) -> Handlers {
    let auth = Arc::clone(admin);
    let greet = Arc::clone(admin);
    let mut handlers = Handlers::new()
        .authorize(move |req| match auth.auth.login(req.auth) {
            Ok(_) => Ok(ConnectAccept::default()),
            Err(err) => {
                tracing::info!(nsp = req.nsp, %err, "admin UI login refused");
                Err(ConnectRefusal::new(err.to_string()))
            }
        })
        .on_connect(move |socket| greet.greet(socket));
    if admin.config.readonly {
        return handlers;
    }
    for (event, action) in [
        ("emit", Action::Emit),
        ("join", Action::Join),
        ("leave", Action::Leave),
        ("_disconnect", Action::Disconnect),
    ] {
        let admin = Arc::clone(admin);
        handlers = handlers.on(event, move |_socket, event| admin.act(action, event));
    }
    handlers
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Emit,
    Join,
    Leave,
    Disconnect,
}

impl AdminUi {
    /// A dashboard connected: its session token (after a password login), the features, and in
    /// development mode every socket of the fleet.
    fn greet(&self, socket: &Arc<Socket>) {
        if !socket
            .auth()
            .get("sessionId")
            .and_then(Value::as_str)
            .is_some_and(|t| self.auth.session_valid_now(t))
        {
            let _ = socket.emit(
                "session",
                &Payload::json(vec![self.auth.new_session().into()]),
            );
        }
        let _ = socket.emit(
            "config",
            &Payload::json(vec![json!({ "supportedFeatures": features(self) })]),
        );
        if self.config.mode != AdminMode::Development {
            return;
        }
        let Some(io) = self.io() else { return };
        let socket = Arc::clone(socket);
        let max = self.config.max_sockets_listed;
        tokio::spawn(async move {
            let sockets = all_sockets(&io, max).await;
            let _ = socket.emit("all_sockets", &Payload::json(vec![Value::Array(sockets)]));
        });
    }

    fn act(&self, action: Action, event: Event) {
        let Some(io) = self.io() else { return };
        let mut args = event.payload.args.into_iter();
        let Some(nsp) = args.next().and_then(|v| v.as_str().map(str::to_owned)) else {
            return;
        };
        let Ok(ns) = io.namespace_handle(&nsp) else {
            return;
        };
        let room_of = |v: Option<Value>| v.and_then(|v| v.as_str().map(Room::from));
        match action {
            Action::Emit => {
                let filter = room_of(args.next());
                let Some(name) = args.next().and_then(|v| v.as_str().map(str::to_owned)) else {
                    return;
                };
                let mut op = ns.broadcast();
                if let Some(room) = filter {
                    op = op.to(room);
                }
                let payload = Payload {
                    args: args.collect(),
                    attachments: event.payload.attachments,
                };
                if let Err(err) = op.emit(&name, payload) {
                    tracing::info!(%err, "admin UI emit refused");
                }
            }
            Action::Join | Action::Leave => {
                let Some(room) = room_of(args.next()) else {
                    return;
                };
                let opts = targets(room_of(args.next()));
                tokio::spawn(async move {
                    let adapter = ns.adapter();
                    let done = if matches!(action, Action::Join) {
                        adapter.add_sockets(&opts, &[room]).await
                    } else {
                        adapter.del_sockets(&opts, &[room]).await
                    };
                    if let Err(err) = done {
                        tracing::info!(%err, ?action, "admin UI request failed");
                    }
                });
            }
            Action::Disconnect => {
                let close = args.next().and_then(|v| v.as_bool()).unwrap_or(false);
                let opts = targets(room_of(args.next()));
                tokio::spawn(async move {
                    if let Err(err) = ns.adapter().disconnect_sockets(&opts, close).await {
                        tracing::info!(%err, "admin UI disconnect failed");
                    }
                });
            }
        }
    }
}

/// The sockets a request targets: those in `filter` (the dashboard passes a socket id or a room), or
/// the whole namespace.
fn targets(filter: Option<Room>) -> BroadcastOptions {
    BroadcastOptions {
        rooms: filter.into_iter().collect(),
        ..BroadcastOptions::default()
    }
}

/// Every socket of every namespace of this node's server, across the fleet, at most `max`.
async fn all_sockets(io: &SocketIo, max: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut namespaces = io.namespaces();
    namespaces.sort_by(|a, b| a.name().cmp(b.name()));
    for ns in namespaces {
        match ns
            .adapter()
            .fetch_sockets(&BroadcastOptions::default())
            .await
        {
            Ok(sockets) => out.extend(
                sockets
                    .into_iter()
                    .map(|info| serialize::fetched(info, ns.name())),
            ),
            Err(err) => tracing::info!(nsp = ns.name(), %err, "admin UI: sockets not listed"),
        }
        if out.len() >= max {
            out.truncate(max);
            break;
        }
    }
    out
}
