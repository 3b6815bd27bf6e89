//! The byte stream under a websocket: a TCP connection handed over by hyper, or one end of an
//! in-memory socket pair ([`crate::engineio::Engine::connect_in_memory`]) so the engine, the Socket.IO
//! layer above it and the plugins can be driven in tests without a listener or a port.
//!
//! Both are readiness-based sockets that can be written through a shared reference: senders write
//! straight to the socket while the connection task owns the reading, which is what keeps a broadcast
//! to an idle connection one system call.

use std::io::{self, IoSlice};

use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

/// A websocket's socket.
#[derive(Debug)]
pub enum WsSocket {
    /// A client's TCP connection.
    Tcp(TcpStream),
    /// One end of an in-memory socket pair.
    #[cfg(unix)]
    Memory(UnixStream),
}

impl WsSocket {
    /// Reads what is available without waiting (`WouldBlock` when nothing is).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            WsSocket::Tcp(s) => s.try_read(buf),
            #[cfg(unix)]
            WsSocket::Memory(s) => s.try_read(buf),
        }
    }

    /// Writes what the socket takes now without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WsSocket::Tcp(s) => s.try_write(buf),
            #[cfg(unix)]
            WsSocket::Memory(s) => s.try_write(buf),
        }
    }

    /// Writes what the socket takes now of several buffers, in one system call.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            WsSocket::Tcp(s) => s.try_write_vectored(bufs),
            #[cfg(unix)]
            WsSocket::Memory(s) => s.try_write_vectored(bufs),
        }
    }

    /// Waits until a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            WsSocket::Tcp(s) => s.readable().await,
            #[cfg(unix)]
            WsSocket::Memory(s) => s.readable().await,
        }
    }

    /// Waits until a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            WsSocket::Tcp(s) => s.writable().await,
            #[cfg(unix)]
            WsSocket::Memory(s) => s.writable().await,
        }
    }

    /// Writes `buf` completely.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Closes the write half: the peer reads end-of-stream.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        match self {
            WsSocket::Tcp(s) => s.shutdown().await,
            #[cfg(unix)]
            WsSocket::Memory(s) => s.shutdown().await,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_memory_pair_carries_bytes_both_ways() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut a, b) = (WsSocket::Memory(a), WsSocket::Memory(b));
        a.write_all(b"hello").await.expect("write");
        b.readable().await.expect("readable");
        let mut buf = [0u8; 16];
        let n = b.try_read(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"hello");
        a.shutdown().await.expect("shutdown");
        b.readable().await.expect("readable");
        assert_eq!(
            b.try_read(&mut buf).expect("eof"),
            0,
            "end of stream after shutdown"
        );
    }
}
