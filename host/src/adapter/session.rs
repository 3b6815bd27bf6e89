//! Connection state recovery kept by the fleet: the seam between a namespace's sockets and an adapter
//! that stores their sessions where another node can restore them (the Redis Streams adapter).
//!
//! The adapter owns both halves of recovery there: the log (its stream, whose entry ids are the
//! offsets clients hold) and the sessions. The Socket.IO layer tells it which sockets to keep and
//! when they leave; the adapter follows their rooms itself, since peers can change them too.

use serde_json::Value;

use super::{AdapterError, BoxFuture, Room};
use crate::codec::EncodedPacket;
use crate::sid::Sid;

/// A socket's state as recovery restores it (Socket.IO's `Session`).
#[derive(Clone, Debug, PartialEq)]
pub struct PersistedSession {
    /// The socket id it comes back with.
    pub sid: Sid,
    /// Its private session id, the secret the client presents.
    pub pid: String,
    /// Its rooms, its own id room included (as Node stores them).
    pub rooms: Vec<Room>,
    /// Its application data.
    pub data: Value,
    /// The user its connect authorizer named (ioplex's sessions only; plugins see it).
    pub user_id: Option<String>,
}

/// Called once, under the adapter's delivery order, with the restored session and the packets the
/// client missed (each already carrying its offset). It must put the socket back in its namespace
/// and queue the packets before returning: every packet delivered after it returns is live.
pub type AttachRestored<'a> = Box<dyn FnOnce(PersistedSession, Vec<EncodedPacket>) + Send + 'a>;

/// Sessions an adapter keeps for the fleet.
pub trait SessionStore: Send + Sync {
    /// Starts keeping the state of local socket `sid` under `pid`: from now on until it leaves, its
    /// rooms and data are where another node can restore them, so a crash of this node loses none.
    fn track(&self, sid: Sid, pid: &str, data: Value, user_id: Option<&str>);
    /// The socket's application data changed.
    fn update_data(&self, sid: Sid, data: Value);
    /// The socket is leaving: keep its state for the recovery window (`keep`), or forget it (it
    /// left on purpose). Called before it leaves its rooms.
    fn untrack(&self, sid: Sid, keep: bool);
    /// Takes back session `pid` with what it missed after `offset` (or, without one, since it first
    /// connected) and hands both to `attach`. `Ok(false)` when it cannot be recovered (unknown,
    /// expired, or its offset is gone from the log): the client starts afresh.
    fn restore<'a>(
        &'a self,
        pid: &'a str,
        offset: Option<&'a str>,
        attach: AttachRestored<'a>,
    ) -> BoxFuture<'a, Result<bool, AdapterError>>;
}
