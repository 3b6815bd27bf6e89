//! A socket table for the adapters' tests: no sockets, only a record of what reached them.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::{AckSink, Room, ServerAck, SocketInfo, SocketTable};
use crate::codec::EncodedPacket;
use crate::sid::Sid;

/// A socket table that records which sockets a broadcast reached.
#[derive(Default)]
pub(crate) struct Recorder {
    /// Every socket delivered to, in order.
    pub(crate) delivered: Mutex<Vec<Sid>>,
}

impl SocketTable for Recorder {
    fn deliver(
        &self,
        targets: &mut dyn Iterator<Item = Sid>,
        _packet: &EncodedPacket,
        _volatile: bool,
    ) {
        self.delivered.lock().unwrap().extend(targets);
    }
    fn socket_info(&self, sid: Sid, rooms: Vec<Room>) -> Option<SocketInfo> {
        Some(SocketInfo {
            id: sid,
            rooms,
            data: Value::Null,
            handshake: Value::Null,
        })
    }
    fn disconnect(&self, _sid: Sid, _close: bool) {}
    fn deliver_with_ack(
        &self,
        _targets: &mut dyn Iterator<Item = Sid>,
        _packet: &crate::codec::Packet,
        _timeout: Duration,
        _acks: &AckSink,
    ) -> usize {
        0
    }
    fn server_side_emit(&self, _data: Vec<Value>, _ack: Option<ServerAck>) {}
}
