//! `floor-server`: the least a Socket.IO fan-out server can do on this machine, to measure others
//! against. It answers the generator's handshake, namespace CONNECT and joins just enough for `fanout`
//! to run unchanged, and for each publish writes one pre-encoded websocket frame to every other member
//! of the room with one `write` per delivery: no parsing beyond finding the room, no queues, no
//! allocation per recipient. What it costs per delivery is the kernel's cost of sending (plus a
//! sliver of user time), the floor of `bench/floor`'s ratios.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};

type Rooms = Rc<RefCell<HashMap<String, Vec<Rc<TcpStream>>>>>;

/// Serves on 127.0.0.1:`port` until killed, on one thread.
pub fn run(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot listen on {port}"))?;
        let rooms: Rooms = Rc::default();
        let mut next = 0u64;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            next += 1;
            let rooms = Rc::clone(&rooms);
            tokio::task::spawn_local(async move {
                let _ = serve(Rc::new(stream), next, rooms).await;
            });
        }
    })
}

/// One server-to-client text frame (unmasked).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Writes all of `bytes` with as few `write` calls as the socket allows (one, unless it is full).
async fn send(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn serve(stream: Rc<TcpStream>, id: u64, rooms: Rooms) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if !read_some(&stream, &mut buf).await? {
            return Ok(());
        }
    };
    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let key = request
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .context("not a websocket upgrade")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    send(&stream, response.as_bytes()).await?;
    let open = format!(
        r#"0{{"sid":"floor{id}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    );
    send(&stream, &frame(open.as_bytes())).await?;
    let result = frames(&stream, id, &rooms, buf).await;
    for members in rooms.borrow_mut().values_mut() {
        members.retain(|m| !Rc::ptr_eq(m, &stream));
    }
    result
}

/// Reads the client's (masked) frames and answers them until it closes.
async fn frames(
    stream: &Rc<TcpStream>,
    id: u64,
    rooms: &Rooms,
    mut buf: Vec<u8>,
) -> anyhow::Result<()> {
    loop {
        while let Some((opcode, payload, used)) = parse_client_frame(&buf) {
            buf.drain(..used);
            match opcode {
                0x8 => return Ok(()),
                0x1 => handle(stream, id, rooms, &payload).await?,
                _ => {}
            }
        }
        if !read_some(stream, &mut buf).await? {
            return Ok(());
        }
    }
}

/// A complete masked frame at the start of `buf`: its opcode, unmasked payload and length.
fn parse_client_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask: [u8; 4] = if b1 & 0x80 != 0 {
        let m = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        m
    } else {
        [0; 4]
    };
    let payload = buf.get(at..at + len)?;
    let unmasked = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((b0 & 0x0f, unmasked, at + len))
}

async fn handle(stream: &Rc<TcpStream>, id: u64, rooms: &Rooms, text: &[u8]) -> anyhow::Result<()> {
    let text = std::str::from_utf8(text).unwrap_or("");
    if text.starts_with("40") {
        send(stream, &frame(format!(r#"40{{"sid":"s{id}"}}"#).as_bytes())).await?;
    } else if let Some(rest) = text.strip_prefix("42") {
        // `42<ack id>["join","room"]` or `42["publish",{"room":"r","event":"m","args":[...]}]`
        let ack_end = rest.find('[').unwrap_or(0);
        let (ack, body) = rest.split_at(ack_end);
        if let Some(room) = body
            .strip_prefix(r#"["join",""#)
            .and_then(|r| r.strip_suffix(r#""]"#))
        {
            rooms
                .borrow_mut()
                .entry(room.to_owned())
                .or_default()
                .push(Rc::clone(stream));
            send(
                stream,
                &frame(format!(r#"43{ack}[{{"ok":true}}]"#).as_bytes()),
            )
            .await?;
        } else if let Some(spec) = body.strip_prefix(r#"["publish",{"room":""#) {
            let room_end = spec.find('"').context("publish without a room")?;
            let room = &spec[..room_end];
            let args_at = spec.find(r#""args":["#).context("publish without args")? + 8;
            let args = spec[args_at..]
                .strip_suffix("]}]")
                .context("publish args are not last")?;
            let out = frame(format!(r#"42["m",{args}]"#).as_bytes());
            // The members, without holding the map across the writes' awaits.
            let members: Vec<Rc<TcpStream>> = rooms.borrow().get(room).cloned().unwrap_or_default();
            for member in members.iter().filter(|m| !Rc::ptr_eq(m, stream)) {
                let _ = send(member, &out).await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_client_frame_parses_and_a_short_one_waits() {
        let mask = [1u8, 2, 3, 4];
        let payload: Vec<u8> = b"40"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        let mut bytes = vec![0x81, 0x80 | 2];
        bytes.extend_from_slice(&mask);
        bytes.extend_from_slice(&payload);
        let (opcode, text, used) = parse_client_frame(&bytes).expect("complete");
        assert_eq!((opcode, text.as_slice(), used), (1, &b"40"[..], 8));
        assert!(parse_client_frame(&bytes[..7]).is_none());
        assert_eq!(frame(b"hi"), vec![0x81, 2, b'h', b'i']);
    }
}
