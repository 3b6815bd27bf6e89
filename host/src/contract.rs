//! The client contract: what a client can do with no application server behind the gateway.
//!
//! Clients join and leave rooms, publish events to rooms they are in (relayed to every member across the
//! fleet, the sender excluded unless it asks), and send a request to one socket and get its
//! acknowledgement back. Every answer goes through the client's ack as `{"ok":true,...}` or
//! `{"ok":false,"code":...,"message":...}` with a stable `code`, so an app can tell refusals apart.
//! Event names are settings, so a tenant whose app already uses `join` can pick others.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::adapter::Room;
use crate::codec::relayable_event;
use crate::sid::Sid;
use crate::socketio::{AckError, AckResponder, Event, Handlers, Payload, Socket};

/// Settings of the client contract.
#[derive(Clone, Debug)]
pub struct ContractConfig {
    /// Event that joins a room: `emit("join", "room", ack)`.
    pub join_event: String,
    /// Event that leaves a room: `emit("leave", "room", ack)`.
    pub leave_event: String,
    /// Event that publishes to rooms: `emit("publish", {room, event, args}, ack)`.
    pub publish_event: String,
    /// Event that asks one socket and returns its ack: `emit("request", {to, event, args}, ack)`.
    pub request_event: String,
    /// Event that lists a room's members across the fleet: `emit("members", "room", ack)`.
    pub members_event: String,
    /// Rooms a socket may be in, its own id room not counted.
    pub max_rooms_per_socket: usize,
    /// Longest room name, in bytes.
    pub max_room_name_len: usize,
    /// Longest a request waits for the target's ack (a request may ask for less).
    pub max_request_timeout: Duration,
}

impl Default for ContractConfig {
    fn default() -> Self {
        ContractConfig {
            join_event: "join".into(),
            leave_event: "leave".into(),
            publish_event: "publish".into(),
            request_event: "request".into(),
            members_event: "members".into(),
            max_rooms_per_socket: 100,
            max_room_name_len: 256,
            max_request_timeout: Duration::from_secs(30),
        }
    }
}

/// A refusal sent back through the client's ack as `{"ok":false,"code":...,"message":...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable, machine-readable: `invalid_room`, `forbidden`, `rejected`, `plugin_failed`, ...
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl Refusal {
    /// A refusal with a code and a message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// An event a client asked to relay, as the tenant's policy sees and may change it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The event name receivers get.
    pub event: String,
    /// Its arguments and binary attachments.
    pub payload: Payload,
    /// Rooms it goes to.
    pub rooms: Vec<Room>,
    /// Rooms excluded (the sender's own id room is added later unless it asked to receive).
    pub except: Vec<Room>,
    /// Whether the sender waits for an acknowledgement.
    pub wants_ack: bool,
}

/// What a tenant decides before the contract acts: whether a join may happen and what a publish
/// becomes. The gateway backs it with the tenant's plugins; [`AllowAll`] is the embedded default.
pub trait ContractPolicy: Send + Sync + 'static {
    /// May `socket` join `room`?
    fn authorize_join(&self, socket: &Arc<Socket>, room: &Room) -> Result<(), Refusal>;

    /// The publish to send (possibly rewritten or rerouted), `None` to drop it quietly, or a refusal
    /// for the sender's ack.
    fn transform_publish(
        &self,
        socket: &Arc<Socket>,
        publish: Publish,
    ) -> Result<Option<Publish>, Refusal>;
}

/// Allows every join and relays every publish unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl ContractPolicy for AllowAll {
    fn authorize_join(&self, _socket: &Arc<Socket>, _room: &Room) -> Result<(), Refusal> {
        Ok(())
    }

    fn transform_publish(
        &self,
        _socket: &Arc<Socket>,
        publish: Publish,
    ) -> Result<Option<Publish>, Refusal> {
        Ok(Some(publish))
    }
}

fn ok(extra: Map<String, Value>) -> Value {
    let mut body = Map::with_capacity(1 + extra.len());
    body.insert("ok".into(), Value::Bool(true));
    body.extend(extra);
    Value::Object(body)
}

fn answer(ack: Option<AckResponder>, result: Result<Value, Refusal>) {
    let Some(ack) = ack else { return };
    let body =
        result.unwrap_or_else(|r| json!({"ok": false, "code": r.code, "message": r.message}));
    ack.send(Payload::json(vec![body]));
}

/// Handlers implementing the contract for a namespace, every join and publish allowed.
pub fn handlers(config: ContractConfig) -> Handlers {
    handlers_with_policy(config, Arc::new(AllowAll))
}

/// Handlers implementing the contract, asking `policy` before each join and publish.
pub fn handlers_with_policy(config: ContractConfig, policy: Arc<dyn ContractPolicy>) -> Handlers {
    let config = Arc::new(config);
    let (join, leave, publish, request, members) = (
        Arc::clone(&config),
        Arc::clone(&config),
        Arc::clone(&config),
        Arc::clone(&config),
        Arc::clone(&config),
    );
    let join_policy = Arc::clone(&policy);
    let request_policy = Arc::clone(&policy);
    Handlers::new()
        .on(&config.join_event, move |socket, event| {
            let result = join_room(&join, &*join_policy, socket, &event).map(|()| ok(Map::new()));
            answer(event.ack, result);
        })
        .on(&config.leave_event, move |socket, event| {
            let result = room_arg(&leave, &event).map(|room| {
                socket.leave(&room);
                ok(Map::new())
            });
            answer(event.ack, result);
        })
        .on(&config.publish_event, move |socket, event| {
            let Event { payload, ack, .. } = event;
            let result = publish_to_rooms(&publish, &*policy, socket, payload, ack.is_some())
                .map(|()| ok(Map::new()));
            answer(ack, result);
        })
        .on(&config.request_event, move |socket, event| {
            forward_request(&request, &*request_policy, socket, event);
        })
        .on(&config.members_event, move |socket, event| {
            list_members(&members, socket, event);
        })
}

/// Most members a `members` answer lists.
const MAX_MEMBERS: usize = 1000;

/// Answers `members`: the sockets in a room the asker is in, on every node, with their data (a plugin's
/// verified claims, say) so a page can show who is online.
fn list_members(config: &ContractConfig, socket: &Arc<Socket>, event: Event) {
    let Event { payload, ack, .. } = event;
    let room = match parse_room(config, payload.args.first()) {
        Ok(room) => room,
        Err(refusal) => return answer(ack, Err(refusal)),
    };
    if !socket.rooms().contains(&room) {
        return answer(
            ack,
            Err(Refusal::new(
                "not_in_room",
                format!("join \"{room}\" before listing its members"),
            )),
        );
    }
    let ns = Arc::clone(socket.namespace());
    tokio::spawn(async move {
        let result = ns
            .to(room)
            .fetch_sockets()
            .await
            .map_err(|e| Refusal::new("unavailable", e.to_string()));
        let result = result.map(|sockets| {
            let members: Vec<Value> = sockets
                .into_iter()
                .take(MAX_MEMBERS)
                .map(|s| json!({ "id": s.id.to_string(), "data": s.data }))
                .collect();
            let mut extra = Map::new();
            extra.insert("members".into(), Value::Array(members));
            ok(extra)
        });
        answer(ack, result);
    });
}

/// Checks a room name a client gave.
fn parse_room(config: &ContractConfig, value: Option<&Value>) -> Result<Room, Refusal> {
    let Some(Value::String(name)) = value else {
        return Err(Refusal::new("invalid_room", "room must be a string"));
    };
    if name.is_empty() || name.len() > config.max_room_name_len {
        return Err(Refusal::new(
            "invalid_room",
            format!(
                "room names are 1 to {} bytes long",
                config.max_room_name_len
            ),
        ));
    }
    if Sid::parse(name).is_some() {
        // Every socket has a private room named after its id; clients must not join someone else's.
        return Err(Refusal::new(
            "invalid_room",
            "room names shaped like a socket id (20 base64url characters) are reserved",
        ));
    }
    Ok(Room::from(name.as_str()))
}

fn room_arg(config: &ContractConfig, event: &Event) -> Result<Room, Refusal> {
    parse_room(config, event.payload.args.first())
}

fn join_room(
    config: &ContractConfig,
    policy: &dyn ContractPolicy,
    socket: &Arc<Socket>,
    event: &Event,
) -> Result<(), Refusal> {
    let room = room_arg(config, event)?;
    let rooms = socket.rooms();
    if rooms.contains(&room) {
        return Ok(());
    }
    // The socket's own id room does not count.
    if rooms.len().saturating_sub(1) >= config.max_rooms_per_socket {
        return Err(Refusal::new(
            "too_many_rooms",
            format!(
                "a socket may be in at most {} rooms",
                config.max_rooms_per_socket
            ),
        ));
    }
    policy.authorize_join(socket, &room)?;
    socket.join(&[room]);
    Ok(())
}

/// Runs the policy's transform; what it returns must still name an event clients may receive.
fn transformed(
    policy: &dyn ContractPolicy,
    socket: &Arc<Socket>,
    publish: Publish,
) -> Result<Option<Publish>, Refusal> {
    match policy.transform_publish(socket, publish)? {
        Some(p) if !relayable_event(&p.event) => Err(Refusal::new(
            "invalid_event",
            "the transformed event name is empty or reserved",
        )),
        other => Ok(other),
    }
}

/// The event name a client wants relayed.
fn relayed_event(spec: &Map<String, Value>) -> Result<String, Refusal> {
    match spec.get("event") {
        Some(Value::String(name)) if relayable_event(name) => Ok(name.clone()),
        _ => Err(Refusal::new(
            "invalid_event",
            "event must be a non-empty string and not a reserved name",
        )),
    }
}

/// The arguments a client wants relayed, with the binary attachments they refer to.
fn relayed_args(
    spec: &mut Map<String, Value>,
    attachments: Vec<bytes::Bytes>,
) -> Result<Payload, Refusal> {
    let args = match spec.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args,
        Some(_) => return Err(Refusal::new("invalid_args", "args must be an array")),
    };
    Ok(Payload { args, attachments })
}

fn string_list(
    config: &ContractConfig,
    spec: &Map<String, Value>,
    key: &str,
) -> Result<Vec<Room>, Refusal> {
    match spec.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| parse_room(config, Some(v))).collect(),
        Some(one) => Ok(vec![parse_room(config, Some(one))?]),
    }
}

fn publish_to_rooms(
    config: &ContractConfig,
    policy: &dyn ContractPolicy,
    socket: &Arc<Socket>,
    payload: Payload,
    wants_ack: bool,
) -> Result<(), Refusal> {
    let Payload { args, attachments } = payload;
    let Some(Value::Object(mut spec)) = args.into_iter().next() else {
        return Err(Refusal::new(
            "invalid_publish",
            "publish takes an object: {room, event, args}",
        ));
    };
    let mut rooms = string_list(config, &spec, "room")?;
    rooms.extend(string_list(config, &spec, "rooms")?);
    if rooms.is_empty() {
        return Err(Refusal::new(
            "invalid_publish",
            "publish needs a room (or rooms)",
        ));
    }
    if !socket.in_rooms(&rooms) {
        let joined = socket.rooms();
        let outside = rooms
            .iter()
            .find(|r| !joined.contains(r))
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(Refusal::new(
            "not_in_room",
            format!("join \"{outside}\" before publishing to it"),
        ));
    }
    let except = string_list(config, &spec, "except")?;
    let include_self = spec.get("self").and_then(Value::as_bool).unwrap_or(false);
    let volatile = spec
        .get("volatile")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let event = relayed_event(&spec)?;
    let payload = relayed_args(&mut spec, attachments)?;
    let publish = Publish {
        event,
        payload,
        rooms,
        except,
        wants_ack,
    };
    let Some(Publish {
        event,
        payload,
        rooms,
        except,
        ..
    }) = transformed(policy, socket, publish)?
    else {
        return Ok(());
    };
    if rooms.is_empty() {
        // Routed nowhere: an empty room list would otherwise mean "everyone in the namespace".
        return Ok(());
    }

    let mut op = socket.namespace().broadcast();
    for room in rooms {
        op = op.to(room);
    }
    for room in except {
        op = op.except(room);
    }
    if !include_self {
        op = op.except(Room::of_socket(socket.id()));
    }
    if volatile {
        op = op.volatile();
    }
    op.emit(&event, payload)
        .map_err(|e| Refusal::new("invalid_event", e.to_string()))
}

fn forward_request(
    config: &ContractConfig,
    policy: &dyn ContractPolicy,
    socket: &Arc<Socket>,
    event: Event,
) {
    let Event { payload, ack, .. } = event;
    let Payload { args, attachments } = payload;
    let prepared = (|| {
        let Some(Value::Object(mut spec)) = args.into_iter().next() else {
            return Err(Refusal::new(
                "invalid_request",
                "request takes an object: {to, event, args}",
            ));
        };
        let target = spec
            .get("to")
            .and_then(Value::as_str)
            .and_then(Sid::parse)
            .ok_or_else(|| Refusal::new("unknown_socket", "`to` must be a socket id"))?;
        let timeout = spec
            .get("timeout")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
            .unwrap_or(config.max_request_timeout)
            .min(config.max_request_timeout);
        let name = relayed_event(&spec)?;
        let payload = relayed_args(&mut spec, attachments)?;
        Ok((target, name, payload, timeout))
    })();
    let (target, name, payload, timeout) = match prepared {
        Ok(p) => p,
        Err(refusal) => return answer(ack, Err(refusal)),
    };
    // The tenant's rules see a request like a publish to the target's own room; they may rewrite or
    // drop it, not send it elsewhere.
    let publish = Publish {
        event: name,
        payload,
        rooms: vec![Room::of_socket(target)],
        except: Vec::new(),
        wants_ack: ack.is_some(),
    };
    let (name, payload) = match transformed(policy, socket, publish) {
        Ok(Some(p)) => (p.event, p.payload),
        Ok(None) => {
            return answer(
                ack,
                Err(Refusal::new(
                    "dropped",
                    "the tenant's rules dropped this request",
                )),
            );
        }
        Err(refusal) => return answer(ack, Err(refusal)),
    };
    let ns = Arc::clone(socket.namespace());
    tokio::spawn(async move {
        let result = match ns.socket(target) {
            Some(local) => local.emit_with_ack(&name, &payload, timeout).await,
            None => {
                let result = request_across_fleet(&ns, target, &name, payload, timeout).await;
                return match (ack, result) {
                    (Some(ack), Ok(reply)) => ack.send(reply),
                    (ack, Err(refusal)) => answer(ack, Err(refusal)),
                    (None, Ok(_)) => {}
                };
            }
        };
        let Some(ack) = ack else { return };
        match result {
            Ok(response) => {
                let mut extra = Map::new();
                extra.insert("args".into(), Value::Array(response.args));
                ack.send(Payload {
                    args: vec![ok(extra)],
                    attachments: response.attachments,
                });
            }
            Err(err) => {
                let code = match err {
                    AckError::Timeout(_) => "timeout",
                    AckError::Disconnected => "disconnected",
                    AckError::Emit(_) => "invalid_event",
                };
                answer(Some(ack), Err(Refusal::new(code, err.to_string())));
            }
        }
    });
}

/// A request to a socket on another node: a broadcast with acks to its id room (only the first ack
/// argument travels between nodes, as with Node's adapter).
async fn request_across_fleet(
    ns: &Arc<crate::socketio::Namespace>,
    target: Sid,
    event: &str,
    payload: Payload,
    timeout: Duration,
) -> Result<Payload, Refusal> {
    let acks = ns
        .to(Room::of_socket(target))
        .emit_with_ack(event, payload, timeout)
        .await
        .map_err(|err| Refusal::new("unavailable", err.to_string()))?;
    if let Some(first) = acks.responses.into_iter().next() {
        let mut extra = Map::new();
        extra.insert("args".into(), Value::Array(first.args));
        return Ok(Payload {
            args: vec![ok(extra)],
            attachments: first.attachments,
        });
    }
    if acks.timed_out {
        return Err(Refusal::new(
            "timeout",
            "the socket did not acknowledge in time",
        ));
    }
    Err(Refusal::new(
        "unknown_socket",
        "no socket with that id in this namespace",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked() {
        let cfg = ContractConfig::default();
        assert_eq!(
            parse_room(&cfg, Some(&json!("company:42"))),
            Ok(Room::from("company:42"))
        );
        assert_eq!(
            parse_room(&cfg, Some(&json!(""))).unwrap_err().code,
            "invalid_room"
        );
        assert_eq!(
            parse_room(&cfg, Some(&json!(42))).unwrap_err().code,
            "invalid_room"
        );
        assert_eq!(parse_room(&cfg, None).unwrap_err().code, "invalid_room");
        let long = "x".repeat(257);
        assert_eq!(
            parse_room(&cfg, Some(&json!(long))).unwrap_err().code,
            "invalid_room"
        );
        let sid = Sid::random().to_string();
        assert_eq!(
            parse_room(&cfg, Some(&json!(sid))).unwrap_err().code,
            "invalid_room"
        );
    }

    #[test]
    fn relayed_event_names_are_checked() {
        let spec = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            relayed_event(&spec(json!({"event": "message"}))),
            Ok("message".into())
        );
        assert!(relayed_event(&spec(json!({"event": "disconnect"}))).is_err());
        assert!(relayed_event(&spec(json!({"event": ""}))).is_err());
        assert!(relayed_event(&spec(json!({}))).is_err());
        let mut s = spec(json!({"args": "nope"}));
        assert_eq!(
            relayed_args(&mut s, vec![]).unwrap_err().code,
            "invalid_args"
        );
    }
}
