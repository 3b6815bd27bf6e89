//! Sockets as the dashboard draws them (`SerializedSocket` of `@socket.io/admin-ui`).
//!
//! A socket on this node is described from the socket itself; one on another node from what the fleet's
//! `fetchSockets` returned, where its connection id and transport travel in `data._admin`, as Node's
//! `instrument()` puts them there, so sockets of Node servers and of ioplex nodes read the same.

use serde_json::{Map, Value, json};

use crate::adapter::SocketInfo;
use crate::socketio::Socket;

/// Headers a dashboard is not shown: other people's credentials.
const HIDDEN_HEADERS: [&str; 2] = ["cookie", "authorization"];

/// What `data._admin` holds for `socket`. Node puts the first 12 characters of the Engine.IO session
/// id there, where every `fetchSockets` caller (and here, every `members` answer) reads it; whoever
/// knows a session id can poll that session, so the dashboard gets a digest of it instead: the same for
/// every socket of one connection, and telling nothing of the id.
pub fn admin_tag(socket: &Socket) -> Value {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("ioplex-admin-client\n{}", socket.session_id().as_str()).as_bytes(),
    );
    let client_id = crate::hex::encode(&digest.as_ref()[..6]);
    json!({
        "clientId": client_id,
        "transport": socket.transport().as_str(),
    })
}

/// A socket of this node.
pub fn local(socket: &Socket) -> Value {
    let tag = admin_tag(socket);
    serialized(
        socket.id().as_str(),
        socket.namespace().name(),
        &tag,
        socket.data(),
        socket.handshake_json(),
        socket
            .rooms()
            .iter()
            .map(|r| Value::from(r.as_str()))
            .collect(),
    )
}

/// A socket the fleet described.
pub fn fetched(info: SocketInfo, nsp: &str) -> Value {
    let mut data = info.data;
    let tag = match &mut data {
        Value::Object(map) => map.remove("_admin").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    serialized(
        info.id.as_str(),
        nsp,
        &tag,
        data,
        info.handshake,
        info.rooms.iter().map(|r| Value::from(r.as_str())).collect(),
    )
}

fn serialized(
    id: &str,
    nsp: &str,
    tag: &Value,
    data: Value,
    handshake: Value,
    rooms: Vec<Value>,
) -> Value {
    let data = match data {
        Value::Object(mut map) => {
            map.remove("_admin");
            Value::Object(map)
        }
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    json!({
        "id": id,
        "clientId": tag.get("clientId").cloned().unwrap_or(Value::Null),
        "transport": tag.get("transport").cloned().unwrap_or(Value::Null),
        "nsp": nsp,
        "data": data,
        "handshake": handshake_shown(handshake),
        "rooms": rooms,
    })
}

/// The handshake without the client's `auth` object and credential headers.
fn handshake_shown(handshake: Value) -> Value {
    let Value::Object(mut hs) = handshake else {
        return Value::Object(Map::new());
    };
    hs.remove("auth");
    if let Some(Value::Object(headers)) = hs.get_mut("headers") {
        for name in HIDDEN_HEADERS {
            headers.remove(name);
        }
    }
    if let Some(address) = hs
        .get("headers")
        .and_then(|h| {
            h.get("cf-connecting-ip")
                .or_else(|| h.get("x-forwarded-for"))
        })
        .cloned()
    {
        hs.insert("address".into(), address);
    }
    Value::Object(hs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Room;

    #[test]
    fn a_fetched_socket_reads_its_admin_tag_and_loses_credentials() {
        let id = crate::sid::Sid::random();
        let info = SocketInfo {
            id,
            rooms: vec![Room::of_socket(id), Room::new("lobby")],
            data: json!({"_admin": {"clientId": "c1", "transport": "websocket"}, "user": "ann"}),
            handshake: json!({
                "address": "10.0.0.1",
                "headers": {"cookie": "s=1", "authorization": "Bearer x", "x-forwarded-for": "1.2.3.4", "host": "h"},
                "auth": {"token": "secret"},
                "query": {"EIO": "4"},
            }),
        };
        let shown = fetched(info, "/chat");
        assert_eq!(shown["clientId"], "c1");
        assert_eq!(shown["transport"], "websocket");
        assert_eq!(shown["nsp"], "/chat");
        assert_eq!(shown["data"], json!({"user": "ann"}));
        assert_eq!(shown["rooms"], json!([id.as_str(), "lobby"]));
        assert_eq!(shown["handshake"]["address"], "1.2.3.4");
        assert_eq!(
            shown["handshake"]["headers"],
            json!({"x-forwarded-for": "1.2.3.4", "host": "h"})
        );
        assert!(shown["handshake"].get("auth").is_none());
    }
}
