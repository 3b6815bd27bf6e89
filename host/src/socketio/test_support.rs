//! Helpers for the Socket.IO layer's tests: a server's engine with in-memory clients connected to a
//! namespace, speaking raw Engine.IO / Socket.IO text as a stock client would.

use crate::engineio::{Engine, EngineConfig, MemoryClient};

use super::SocketIo;

/// The engine of `io` with default settings.
pub(crate) fn engine(io: &SocketIo) -> Engine {
    io.engine(EngineConfig::default())
}

/// A client connected to namespace `nsp` (`"/"` or `"/admin"`); returns it with its Socket.IO id.
pub(crate) async fn connected(engine: &Engine, nsp: &str) -> (MemoryClient, String) {
    let mut client = MemoryClient::connect(engine, "EIO=4")
        .await
        .expect("engine session");
    let prefix = if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    };
    client
        .send(&format!("40{prefix}"))
        .await
        .expect("send connect");
    let answer = client.recv_text().await.expect("connect answer");
    let body = answer
        .strip_prefix(&format!("40{prefix}"))
        .unwrap_or_else(|| panic!("expected a CONNECT for {nsp}, got {answer}"));
    let value: serde_json::Value = serde_json::from_str(body).expect("connect body");
    let sid = value["sid"].as_str().expect("socket id").to_owned();
    (client, sid)
}
