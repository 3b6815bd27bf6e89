//! A websocket client over an in-memory socket pair: the Engine.IO handshake, text and binary
//! messages, and the server's frames decoded, so the engine and every layer above it (Socket.IO,
//! the client contract, plugins) can be tested in Rust without TCP.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::Engine;
use super::ws_codec::{self, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_TEXT};

/// What the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An Engine.IO text packet (`4hello`, `2` for a ping).
    Text(String),
    /// An Engine.IO binary message.
    Binary(Vec<u8>),
    /// A close frame with its code; the server is done with the connection.
    Close(u16),
}

/// One client of an [`Engine`], connected in memory.
pub struct MemoryClient {
    stream: UnixStream,
    buffer: BytesMut,
    sid: String,
}

/// How long [`MemoryClient::recv`] waits before reporting a timeout.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

impl MemoryClient {
    /// Opens a websocket-only session with `query` (e.g. `EIO=4&tenant=acme`) and reads its open packet.
    pub async fn connect(engine: &Engine, query: &str) -> io::Result<Self> {
        let stream = engine.connect_in_memory(query).await?;
        let mut client = MemoryClient {
            stream,
            buffer: BytesMut::new(),
            sid: String::new(),
        };
        match client.recv().await? {
            Received::Text(open) if open.starts_with('0') => {
                let value: serde_json::Value = serde_json::from_str(&open[1..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                client.sid = value["sid"].as_str().unwrap_or_default().to_owned();
                Ok(client)
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected an open packet, got {other:?}"),
            )),
        }
    }

    /// The Engine.IO session id the server gave.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Sends an Engine.IO text packet (e.g. `40` to connect to the main namespace).
    pub async fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream
            .write_all(&ws_codec::masked_frame(true, OPCODE_TEXT, text.as_bytes()))
            .await
    }

    /// Sends a binary message (a Socket.IO attachment).
    pub async fn send_binary(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream
            .write_all(&ws_codec::masked_frame(true, OPCODE_BINARY, bytes))
            .await
    }

    /// Closes the connection as a client would (close frame, then end of stream).
    pub async fn close(mut self) -> io::Result<()> {
        self.stream
            .write_all(&ws_codec::masked_frame(
                true,
                OPCODE_CLOSE,
                &1000u16.to_be_bytes(),
            ))
            .await?;
        self.stream.shutdown().await
    }

    /// The next message, answering pings on the way; a timeout after 5 s.
    pub async fn recv(&mut self) -> io::Result<Received> {
        loop {
            let received = tokio::time::timeout(RECV_TIMEOUT, self.next_frame())
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "nothing from the server in 5 s")
                })??;
            if received == Received::Text("2".into()) {
                self.send("3").await?;
                continue;
            }
            return Ok(received);
        }
    }

    /// The next frame as it comes, pings included and unanswered (a client that stopped answering).
    pub async fn recv_raw(&mut self) -> io::Result<Received> {
        tokio::time::timeout(RECV_TIMEOUT, self.next_frame())
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "nothing from the server in 5 s")
            })?
    }

    /// The next text message that is not a ping.
    pub async fn recv_text(&mut self) -> io::Result<String> {
        match self.recv().await? {
            Received::Text(text) => Ok(text),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected text, got {other:?}"),
            )),
        }
    }

    async fn next_frame(&mut self) -> io::Result<Received> {
        loop {
            if let Some(frame) = parse_server_frame(&mut self.buffer)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// One unmasked, final server frame from the front of `buf`, if it is all there.
fn parse_server_frame(buf: &mut BytesMut) -> io::Result<Option<Received>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[2..10]);
            (
                usize::try_from(u64::from_be_bytes(raw)).map_err(|_| io::ErrorKind::InvalidData)?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if buf.len() < header + len {
        return Ok(None);
    }
    buf.advance(header);
    let payload = buf.split_to(len).to_vec();
    Ok(Some(match opcode {
        OPCODE_TEXT => {
            Received::Text(String::from_utf8(payload).map_err(|_| io::ErrorKind::InvalidData)?)
        }
        OPCODE_BINARY => Received::Binary(payload),
        OPCODE_CLOSE => Received::Close(
            payload
                .get(..2)
                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
        ),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected opcode {opcode}"),
            ));
        }
    }))
}
