//! Targeting a set of sockets across the fleet: `to(room)`, `except(room)`, `volatile()`, then emit or a
//! fleet-wide operation. The packet is encoded once, however many sockets receive it.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::namespace::Namespace;
use super::socket::EmitError;
use super::socket::check_event_name;
use crate::adapter::{
    AdapterError, BroadcastAcks, BroadcastOptions, BroadcastPacket, Room, SocketInfo,
};
use crate::codec::{Packet, PacketKind, Payload};

/// A broadcast with acks that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastAckError {
    /// The emit itself was refused.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// The fleet could not be asked.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
}

/// A broadcast being built.
#[derive(Clone, Debug)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    opts: BroadcastOptions,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            opts: BroadcastOptions::default(),
        }
    }

    /// Adds a target room (sockets in any target room receive it).
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        self.opts.rooms.push(room.into());
        self
    }

    /// Excludes sockets in `room`.
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        self.opts.except.push(room.into());
        self
    }

    /// Drops the packet for clients that are behind instead of queueing it.
    pub fn volatile(mut self) -> Self {
        self.opts.volatile = true;
        self
    }

    /// Only sockets on this node.
    pub fn local(mut self) -> Self {
        self.opts.local = true;
        self
    }

    /// The targeting so far.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// Emits an event to every targeted socket.
    pub fn emit(self, event: &str, payload: Payload) -> Result<(), EmitError> {
        check_event_name(event)?;
        // With recovery on, logged with its offset as the last argument and delivered while the log
        // is held, so a socket being restored gets it exactly once (replayed, or live).
        let mut log = self
            .ns
            .recovery()
            .filter(|_| !self.opts.volatile)
            .map(|recovery| recovery.offset());
        let mut payload = payload;
        if let Some((_, _, offset)) = &mut log {
            payload.args.push(Value::String(std::mem::take(offset)));
        }
        let packet = self.event_packet(event, payload);
        if let Some((log, seq, _)) = &mut log {
            log.append(*seq, self.ns.name(), &self.opts, packet.encoded());
        }
        self.ns.adapter().broadcast(&packet, &self.opts);
        drop(log);
        Ok(())
    }

    /// Emits an event to every targeted socket and collects their acknowledgements until `timeout`.
    pub async fn emit_with_ack(
        self,
        event: &str,
        payload: Payload,
        timeout: std::time::Duration,
    ) -> Result<BroadcastAcks, BroadcastAckError> {
        check_event_name(event)?;
        let packet = self.event_packet(event, payload);
        Ok(self
            .ns
            .adapter()
            .broadcast_with_ack(&packet, &self.opts, timeout)
            .await?)
    }

    fn event_packet(&self, event: &str, payload: Payload) -> BroadcastPacket {
        let data = crate::codec::event_data(event, payload.args);
        BroadcastPacket::new(Packet {
            kind: PacketKind::Event,
            nsp: self.ns.name().to_owned(),
            id: None,
            data: Some(Value::Array(data)),
            attachments: payload.attachments,
        })
    }

    /// Describes every targeted socket of the fleet.
    pub async fn fetch_sockets(&self) -> Result<Vec<SocketInfo>, AdapterError> {
        self.ns.adapter().fetch_sockets(&self.opts).await
    }

    /// Makes every targeted socket join `rooms`.
    pub async fn sockets_join(&self, rooms: &[Room]) -> Result<(), AdapterError> {
        self.ns.adapter().add_sockets(&self.opts, rooms).await
    }

    /// Makes every targeted socket leave `rooms`.
    pub async fn sockets_leave(&self, rooms: &[Room]) -> Result<(), AdapterError> {
        self.ns.adapter().del_sockets(&self.opts, rooms).await
    }

    /// Disconnects every targeted socket (`close` ends their whole connection).
    pub async fn disconnect_sockets(&self, close: bool) -> Result<(), AdapterError> {
        self.ns
            .adapter()
            .disconnect_sockets(&self.opts, close)
            .await
    }

    /// Every room of the namespace across the fleet.
    pub async fn all_rooms(&self) -> Result<HashSet<Room>, AdapterError> {
        self.ns.adapter().all_rooms().await
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::codec::Payload;
    use crate::engineio::Received;
    use crate::socketio::test_support::{connected, engine};
    use crate::socketio::{EmitError, Handlers, SocketIo};

    #[tokio::test]
    async fn to_a_room_except_another_reaches_the_right_sockets() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let ns = io.of("/").expect("ns");
        let (mut a, sa) = connected(&engine, "/").await;
        let (mut b, sb) = connected(&engine, "/").await;
        let (mut c, sc) = connected(&engine, "/").await;
        for (sid, rooms) in [
            (&sa, vec!["room"]),
            (&sb, vec!["room", "muted"]),
            (&sc, vec![]),
        ] {
            let socket = ns.socket(sid.parse().expect("sid")).expect("socket");
            socket.join(&rooms.into_iter().map(Into::into).collect::<Vec<_>>());
        }
        ns.to("room")
            .except("muted")
            .emit("m", Payload::json(vec![json!("x")]))
            .expect("emit");
        ns.emit("all", Payload::json(vec![])).expect("emit");
        assert_eq!(a.recv_text().await.expect("a"), r#"42["m","x"]"#);
        assert_eq!(
            b.recv_text().await.expect("b"),
            r#"42["all"]"#,
            "b is muted"
        );
        assert_eq!(
            c.recv_text().await.expect("c"),
            r#"42["all"]"#,
            "c is not in the room"
        );
    }

    #[tokio::test]
    async fn a_broadcast_with_binary_sends_its_attachments_once_per_recipient() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (mut a, _) = connected(&engine, "/").await;
        let payload = Payload {
            args: vec![json!({"_placeholder": true, "num": 0})],
            attachments: vec![bytes::Bytes::from_static(b"\x01\x02\x03")],
        };
        io.of("/")
            .expect("ns")
            .broadcast()
            .emit("file", payload)
            .expect("emit");
        assert_eq!(
            a.recv_text().await.expect("header"),
            r#"451-["file",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(
            a.recv().await.expect("attachment"),
            Received::Binary(vec![1, 2, 3])
        );
    }

    #[tokio::test]
    async fn emit_with_ack_collects_every_answer_and_reports_the_missing() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (mut a, _) = connected(&engine, "/").await;
        let (mut b, _) = connected(&engine, "/").await;
        let ns = io.of("/").expect("ns");
        let asking = tokio::spawn(async move {
            ns.broadcast()
                .emit_with_ack("poll", Payload::json(vec![]), Duration::from_millis(300))
                .await
        });
        let question = a.recv_text().await.expect("a");
        let id = question
            .strip_prefix("42")
            .and_then(|r| r.split('[').next())
            .expect("ack id")
            .to_owned();
        a.send(&format!(r#"43{id}["yes"]"#)).await.expect("answer");
        let _ignored = b.recv_text().await.expect("b hears it but never answers");
        let acks = asking.await.expect("task").expect("the acks that came");
        assert!(acks.timed_out, "b never answered");
        assert_eq!(acks.expected, 2);
        assert_eq!(acks.responses.len(), 1);
        assert_eq!(acks.responses[0].args, vec![json!("yes")]);
    }

    #[tokio::test]
    async fn reserved_names_are_refused_for_broadcasts() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let err = io
            .of("/")
            .expect("ns")
            .broadcast()
            .emit("connect", Payload::json(vec![]))
            .expect_err("reserved");
        assert_eq!(err, EmitError::ReservedEvent("connect".into()));
    }
}
