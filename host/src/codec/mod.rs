//! The Socket.IO v5 packet codec, shared by the layers that speak Socket.IO ([`crate::socketio`]) and
//! those that carry its packets between nodes ([`crate::adapter`]).
//!
//! It sits on Engine.IO's framing ([`crate::engineio::WirePacket`]) and knows nothing of sockets, rooms
//! or Redis: [`decode_text`] and [`PacketDecoder`] turn a connection's messages into [`Packet`]s
//! (binary attachments reassembled), [`encode`] turns a packet into an [`EncodedPacket`] once, and every
//! recipient of a broadcast shares those bytes. Clients of `socket.io-msgpack-parser` ([`Parser::MsgPack`])
//! get the same packets in that parser's form, encoded once per packet when first needed.

pub mod bounds;
mod decoder;
pub mod msgpack;
mod msgpack_parser;
mod packet;

pub use decoder::{PacketDecoder, ParserChoice};
pub use msgpack_parser::{Parser, decode_msgpack_packet, encode_msgpack_packet};
pub use packet::{
    DecodeError, EncodedPacket, Packet, PacketKind, Payload, decode_text, encode, encode_ack,
    encode_event, encode_with, event_data, is_reserved_event, placeholder, placeholders_valid,
    relayable_event, write_json,
};
