//! A visitor's TCP connection as the HTTP engine sees it.
//!
//! It holds no buffer while the connection waits for a request: the read-ahead buffer is
//! allocated when bytes arrive, and a peek (the engine's, or ours while waiting) reads what is
//! there once and hands the same bytes to the HTTP parser, without a second system call. Writes
//! are gathered up to one segment, as the engine's own stream does, so that a response header
//! and a small body leave in one send; the gathering buffer is freed once it is flushed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes smaller than this are gathered until a flush (one TCP segment on Ethernet).
const GATHER: usize = 1460;
/// How much one read-ahead takes at most.
const READ_AHEAD: usize = 16 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_AHEAD].into_boxed_slice());
}

#[derive(Debug)]
pub struct VisitorStream {
    tcp: TcpStream,
    /// Bytes read but not yet handed to the HTTP layer, from `ahead_pos`.
    ahead: Vec<u8>,
    ahead_pos: usize,
    /// Gathered writes, sent from `out_pos` at the next flush.
    out: Vec<u8>,
    out_pos: usize,
    digest: Option<Arc<SocketDigest>>,
    established: SystemTime,
}

impl VisitorStream {
    pub fn new(tcp: TcpStream, digest: SocketDigest) -> Self {
        Self {
            tcp,
            ahead: Vec::new(),
            ahead_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            digest: Some(Arc::new(digest)),
            established: SystemTime::now(),
        }
    }

    fn ahead_len(&self) -> usize {
        self.ahead.len() - self.ahead_pos
    }

    /// Sends every gathered byte.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        // Nothing is kept for an idle connection.
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for VisitorStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead_len() > 0 {
            let n = this.ahead_len().min(buf.remaining());
            buf.put_slice(&this.ahead[this.ahead_pos..this.ahead_pos + n]);
            this.ahead_pos += n;
            if this.ahead_pos == this.ahead.len() {
                this.ahead = Vec::new();
                this.ahead_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for VisitorStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + buf.len() > GATHER {
            ready!(this.poll_drain(cx))?;
        }
        if buf.len() >= GATHER {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Peek for VisitorStream {
    /// Waits until `buf.len()` bytes have arrived and copies them without consuming them.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        while self.ahead_len() < buf.len() {
            self.tcp.readable().await?;
            if self.ahead_pos > 0 {
                self.ahead.drain(..self.ahead_pos);
                self.ahead_pos = 0;
            }
            // Read into this thread's scratch space and keep exactly what arrived.
            let read = SCRATCH.with_borrow_mut(|scratch| {
                self.tcp.try_read(&mut scratch[..]).inspect(|&n| {
                    self.ahead.extend_from_slice(&scratch[..n]);
                })
            });
            match read {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        buf.copy_from_slice(&self.ahead[self.ahead_pos..self.ahead_pos + buf.len()]);
        Ok(true)
    }
}

#[async_trait]
impl Shutdown for VisitorStream {
    async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for VisitorStream {
    fn id(&self) -> UniqueIDType {
        use std::os::fd::AsRawFd;
        self.tcp.as_raw_fd()
    }
}

impl Ssl for VisitorStream {}

impl GetTimingDigest for VisitorStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            ..TimingDigest::default()
        })]
    }
}

impl GetProxyDigest for VisitorStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for VisitorStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.digest.clone()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.digest = Some(Arc::new(socket_digest));
    }
}
