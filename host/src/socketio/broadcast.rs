//! Targeting a set of sockets across the fleet: `to(room)`, `except(room)`, `volatile()`, then emit or a
//! fleet-wide operation. The packet is encoded once, however many sockets receive it.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::namespace::Namespace;
use super::socket::EmitError;
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
        if crate::codec::RESERVED_EVENTS.contains(&event) {
            return Err(EmitError::ReservedEvent(event.to_owned()));
        }
        let packet = self.event_packet(event, payload);
        self.ns.adapter().broadcast(&packet, &self.opts);
        Ok(())
    }

    /// Emits an event to every targeted socket and collects their acknowledgements until `timeout`.
    pub async fn emit_with_ack(
        self,
        event: &str,
        payload: Payload,
        timeout: std::time::Duration,
    ) -> Result<BroadcastAcks, BroadcastAckError> {
        if crate::codec::RESERVED_EVENTS.contains(&event) {
            return Err(EmitError::ReservedEvent(event.to_owned()).into());
        }
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
