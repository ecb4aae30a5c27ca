//! A visitor's TCP connection as the HTTP engine sees it.
//!
//! It holds no buffer while the connection waits for a request: the read-ahead buffer is
//! allocated when bytes arrive, and a peek (the engine's, or ours while waiting) reads what is
//! there once and hands the same bytes to the HTTP parser, without a second system call. Writes
//! are gathered up to one segment, as the engine's own stream does, so that a response header
//! and a small body leave in one send; the gathering buffer is freed once it is flushed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
/// How much is gathered at most while flushes are held ([`FlushGate`]).
pub(crate) const HELD_GATHER: usize = 64 * 1024;
/// How much one read-ahead takes at most.
const READ_AHEAD: usize = 16 * 1024;
/// How long gathered writes wait at most while the engine waits for more to write (an origin
/// that pauses after a part of its answer): see [`IdleFlush`].
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(1);
/// How long a closing connection reads what its visitor still sends, at most.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How much it reads and drops, at most.
const LINGER_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_AHEAD].into_boxed_slice());
}

/// Shared by an HTTP/2 connection's accept loop and its stream. While it is held, a flush
/// leaves what is gathered for the next one, so that what the HTTP/2 implementation writes for
/// the streams it handles in one round (it flushes after every DATA frame) leaves in one send;
/// the loop lets flushes through for the round's last one. A stream with a gate gathers up to
/// [`HELD_GATHER`] (copying a body is cheaper than a send of its own; under TLS, the records of
/// a round gather too).
#[derive(Clone, Debug, Default)]
pub(crate) struct FlushGate(Arc<GateState>);

#[derive(Debug, Default)]
struct GateState {
    held: AtomicBool,
}

impl FlushGate {
    /// Holds flushes back (`true`) or lets them through.
    pub(crate) fn hold(&self, held: bool) {
        self.0.held.store(held, Ordering::Relaxed);
    }

    /// Whether a flush on a stream with `gate` leaves what is gathered for later.
    pub(crate) fn holds(gate: Option<&Self>) -> bool {
        gate.is_some_and(|g| g.0.held.load(Ordering::Relaxed))
    }

    /// How much a stream with `gate` gathers: `limit` without one.
    pub(crate) fn gather_limit(gate: Option<&Self>, limit: usize) -> usize {
        gate.map_or(limit, |_| HELD_GATHER.max(limit))
    }
}

/// A connection's read-ahead (bytes read or peeked, not yet handed on) and gathered writes
/// (sent at the next flush, or when more would not fit); both hold no memory while empty.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Bytes read ahead, from `ahead_pos`.
    ahead: Vec<u8>,
    ahead_pos: usize,
    /// Gathered writes, sent from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes sent in all (gathered or not).
    pub(crate) sent: u64,
}

impl Buffers {
    /// Nothing read ahead, nothing gathered to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.ahead_len() == 0 && self.out_pos == self.out.len()
    }

    fn count_sent(&mut self, n: usize) {
        self.sent = self.sent.wrapping_add(n as u64);
    }

    pub(crate) fn ahead_len(&self) -> usize {
        self.ahead.len() - self.ahead_pos
    }

    /// The bytes read ahead.
    pub(crate) fn ahead(&self) -> &[u8] {
        &self.ahead[self.ahead_pos..]
    }

    /// Keeps `bytes` after what is already read ahead.
    pub(crate) fn keep_ahead(&mut self, bytes: &[u8]) {
        if self.ahead_pos > 0 {
            self.ahead.drain(..self.ahead_pos);
            self.ahead_pos = 0;
        }
        self.ahead.extend_from_slice(bytes);
    }

    /// Copies the first `buf.len()` bytes read ahead (there must be that many).
    pub(crate) fn peek_into(&self, buf: &mut [u8]) {
        buf.copy_from_slice(&self.ahead[self.ahead_pos..self.ahead_pos + buf.len()]);
    }

    /// Hands read-ahead bytes to `buf`; false when there are none.
    pub(crate) fn read_ahead(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.ahead_len() == 0 {
            return false;
        }
        let n = self.ahead_len().min(buf.remaining());
        buf.put_slice(&self.ahead[self.ahead_pos..self.ahead_pos + n]);
        self.ahead_pos += n;
        if self.ahead_pos == self.ahead.len() {
            self.ahead = Vec::new();
            self.ahead_pos = 0;
        }
        true
    }

    /// Hands at most `max` read-ahead bytes to `buf`.
    fn read_ahead_upto(&mut self, buf: &mut ReadBuf<'_>, max: usize) {
        let n = self.ahead_len().min(buf.remaining()).min(max);
        buf.put_slice(&self.ahead[self.ahead_pos..self.ahead_pos + n]);
        self.ahead_pos += n;
        if self.ahead_pos == self.ahead.len() {
            self.ahead = Vec::new();
            self.ahead_pos = 0;
        }
    }

    /// Reads what `io` has into the read-ahead: how much (0: the visitor closed).
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; 4096];
        let mut room = ReadBuf::new(&mut chunk);
        ready!(Pin::new(io).poll_read(cx, &mut room))?;
        self.keep_ahead(room.filled());
        Poll::Ready(Ok(room.filled().len()))
    }

    /// Keeps what `io` has read ahead (up to [`HELD_AHEAD`]) until the visitor closes (ready,
    /// as a read of nothing) or fails.
    fn poll_hold<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.ahead_len() < HELD_AHEAD {
            if ready!(self.poll_fill(io, cx))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        // Enough is held: the rest waits in the socket (nothing wakes this read again; the
        // engine's reader has other things to wait for).
        Poll::Pending
    }

    /// Sends every gathered byte to `io`.
    pub(crate) fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
            self.count_sent(n);
        }
        // Nothing is kept for an idle connection.
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Gathers `buf` (up to `limit` bytes in all) for the next flush, sending what was gathered
    /// first when it would not fit; a write of `limit` or more goes straight to `io`.
    pub(crate) fn poll_gather<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.len() >= limit && self.out_pos < self.out.len() {
            // A large write after gathered ones (a response header, then its body): both leave
            // in one vectored send.
            return self.poll_send_vectored(io, cx, &[io::IoSlice::new(buf)]);
        }
        if self.out.len() + buf.len() > limit {
            ready!(self.poll_drain(io, cx))?;
        }
        if buf.len() >= limit {
            let n = ready!(Pin::new(io).poll_write(cx, buf))?;
            self.count_sent(n);
            return Poll::Ready(Ok(n));
        }
        if self.out.capacity() == 0 && limit > GATHER {
            // A large gathering is made room for once, not grown a piece at a time.
            self.out.reserve(limit);
        }
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Sends `bufs` now, after what is gathered and in the same send when there is some: the
    /// count is of `bufs`' bytes sent. (Nothing is copied: an answer written whole with one
    /// call goes straight from where it is.)
    pub(crate) fn poll_send_vectored<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.out_pos == self.out.len() {
                if !self.out.is_empty() {
                    self.out = Vec::new();
                    self.out_pos = 0;
                }
                let n = ready!(Pin::new(io).poll_write_vectored(cx, bufs))?;
                self.count_sent(n);
                return Poll::Ready(Ok(n));
            }
            let gathered = &self.out[self.out_pos..];
            let mut slices = [io::IoSlice::new(&[]); 8];
            slices[0] = io::IoSlice::new(gathered);
            let count = bufs.len().min(slices.len() - 1);
            slices[1..=count].copy_from_slice(&bufs[..count]);
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..=count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let gathered = gathered.len();
            self.count_sent(n);
            if n < gathered {
                self.out_pos += n;
                continue;
            }
            let from_bufs = n - gathered;
            self.out = Vec::new();
            self.out_pos = 0;
            if from_bufs > 0 {
                return Poll::Ready(Ok(from_bufs));
            }
        }
    }
}

/// How long a send to a visitor may wait for the visitor to read (nginx's `send_timeout`):
/// a visitor that stops reading does not hold its connection, and an origin's, forever.
#[cfg(not(test))]
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
#[cfg(test)]
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// `write` (a send), failing with `TimedOut` when it waits longer than [`SEND_TIMEOUT`]. The
/// engine's coarse timer: armed only when the send has to wait.
async fn within_send_timeout<T>(write: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    pingora::prelude::fast_timeout::fast_timeout(SEND_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the visitor stopped reading",
            ))
        })
}

/// The stream's own close (a TLS close_notify, then the socket's), which lets the answer
/// arrive before the socket goes; given up after [`SEND_TIMEOUT`] if the visitor does not
/// read.
pub(crate) async fn close_within_send_timeout(stream: &mut pingora::protocols::Stream) {
    let close = pingora::protocols::Shutdown::shutdown(&mut **stream);
    let _ = pingora::prelude::fast_timeout::fast_timeout(SEND_TIMEOUT, close).await;
}

/// Sends `parts` in order, now (after anything gathered), in as few sends as the socket takes,
/// then flushes. For an answer that is complete: unlike `write_all`, small parts are not
/// copied into the gathering buffer first. Each send waits at most [`SEND_TIMEOUT`].
pub(crate) async fn send_now<W: AsyncWrite + Unpin + ?Sized>(
    stream: &mut W,
    parts: &[&[u8]],
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (mut part, mut offset) = (0, 0);
    while part < parts.len() {
        let mut slices = [io::IoSlice::new(&[]); 4];
        let mut count = 0;
        for (i, whole) in parts[part..].iter().enumerate() {
            let from = if i == 0 { offset } else { 0 };
            if count == slices.len() {
                break;
            }
            if whole.len() > from {
                slices[count] = io::IoSlice::new(&whole[from..]);
                count += 1;
            }
        }
        if count == 0 {
            break;
        }
        let mut n = within_send_timeout(stream.write_vectored(&slices[..count])).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Past the parts written whole, into the one written in part.
        while part < parts.len() && n >= parts[part].len() - offset {
            n -= parts[part].len() - offset;
            (part, offset) = (part + 1, 0);
        }
        offset += n;
    }
    within_send_timeout(stream.flush()).await
}

/// Runs `f` with this thread's scratch space, for a read whose bytes are kept elsewhere.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with_borrow_mut(|scratch| f(&mut scratch[..]))
}

/// Once the end of the stream is sent: when the visitor sent more than was read (`unread`: bytes
/// were read and not used; or bytes wait in the socket: requests pipelined behind the last
/// answer, a body not taken), reads and drops what it sends until it closes, for at most
/// [`LINGER`]. Closing a socket with bytes unread makes the kernel reset the connection,
/// throwing away whatever of the answer the visitor has not yet received (nginx's lingering
/// close; RFC 9112 §9.6).
async fn linger_on(tcp: &TcpStream, unread: bool) {
    use rustix::net::{RecvFlags, recv};
    let mut unread = unread;
    let deadline = tokio::time::Instant::now() + LINGER;
    let (mut dropped, mut first) = (0, true);
    while dropped <= LINGER_BYTES {
        let read = with_scratch(|scratch| {
            if std::mem::take(&mut first) {
                // The runtime's readiness may be stale (a short read clears it): the socket
                // itself says whether bytes wait.
                let read = recv(tcp, &mut *scratch, RecvFlags::DONTWAIT);
                read.map(|(n, _)| n).map_err(io::Error::from)
            } else {
                tcp.try_read(scratch)
            }
        });
        match read {
            Ok(0) => return,
            Ok(n) => (unread, dropped) = (true, dropped + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && unread => {
                let readable = tcp.readable();
                if !matches!(
                    tokio::time::timeout_at(deadline, readable).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// How many dropped connections linger in tasks of their own at most ([`VisitorStream`]'s
/// `drop`); past that, a connection closes at once.
const LINGERING_MAX: usize = 1024;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// How much a connection keeps read ahead of the HTTP engine's request at most
/// ([`EngineReads`]).
const HELD_AHEAD: usize = 64 * 1024;

/// How the HTTP engine reads one request of a connection. The engine reads as much as a read
/// brings; it would take bytes the visitor sent behind its request (pipelined requests) along
/// with it, and it treats bytes that arrive once it has the whole request as an error. So its
/// reads of a request's header stop at the header's end, and once it has the whole request,
/// what the visitor sends stays read ahead for the edge's next turn on the connection: the
/// engine's reads then see nothing but the visitor's close.
///
/// A header must also arrive whole within [`HEAD_TIME`] (checked as its bytes come; the
/// engine's own timeout ends a silent wait) and within twice the size the edge answers with
/// 431: the engine itself would wait on each read alone, and take up to a MiB.
#[derive(Debug, Default)]
pub(crate) struct EngineReads {
    /// 0: reads go as they come. Otherwise the engine reads a request's header: 1 + how many
    /// bytes of the `\r\n\r\n` that ends it the bytes it read last end with.
    head: AtomicU8,
    /// The engine has the whole request.
    held: AtomicBool,
    /// A request began: the header's time and size count from the next read.
    begun: AtomicBool,
    /// How much of a header is read at most.
    head_limit: AtomicUsize,
    /// When the header being read must have arrived by, and how much of it has.
    head_deadline: Option<std::time::Instant>,
    head_read: usize,
    /// Lines of the header being read that have ended (the request line's among them).
    head_lines: usize,
    /// What became of the request being read, shared with the edge's loop (made for the first
    /// request the engine reads).
    outcome: OnceLock<Arc<HeadOutcome>>,
    /// The request's body is chunked: reads of it stop at its end (what follows is the
    /// visitor's next request), as reads of a header do.
    chunked: AtomicBool,
    /// The engine's own refusal of this request went out as the edge's page: the rest of what
    /// the engine writes for it is dropped.
    refused: AtomicBool,
    /// Reading the request line: the spaces in it so far, and whether it held a control
    /// character (the engine would correct such a target into `%20`, `%01`, ...).
    line: Option<u8>,
    bad_line: AtomicBool,
    /// The request line's version is of an HTTP later than 1 (then 505, not the engine's 400).
    newer_major: AtomicBool,
    /// Where the chunked body being read stands (`None`: not begun).
    chunk: Option<ChunkRead>,
}

/// Where in a chunk-size line a read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizeLine {
    /// In the size, with this many hex digits read.
    Digits(u8),
    /// White space after the size, before an extension or the line's end.
    Space,
    /// In the extensions.
    Extension,
    /// At the line's CR, before its LF.
    Cr,
}

/// Where in a trailer section a read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrailerAt {
    /// At a line's start: a field's name, or the CRLF that ends the section.
    LineStart,
    Name,
    Value,
    /// A field line's CR, before its LF.
    Cr,
    /// The section's last CR, before its LF.
    EndCr,
}

/// Where a chunked request body being read stands, read as strictly as RFC 9112 §7.1 writes
/// it: a size of 1 to 16 hex digits; extensions without control characters; every line ended
/// by CRLF; a chunk's data followed by CRLF; trailer fields as field lines. The engine's reader
/// is laxer (an empty size line is the last chunk; a bare LF ends a size line; anything
/// before a blank line is a trailer), and a proxy before this edge may be lax otherwise: a
/// body the two could end in different places fails where it breaks the rules, before the
/// engine reads past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkRead {
    /// In a chunk-size line, with the size read so far and where in the line.
    Size(u64, SizeLine),
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data: its CR (`false`) or its LF (`true`).
    DataEnd(bool),
    /// In the trailer section.
    Trailer(TrailerAt),
    /// The body has ended.
    Done,
    /// The body broke the rules above.
    Malformed,
}

/// A field name's character (RFC 9110 §5.6.2 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ChunkRead {
    /// Steps over `bytes`; how many of them belong to the body (all, unless it ends in them).
    /// A malformed body stops the count where it broke the rules.
    fn step(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Self::Done | Self::Malformed => return i,
                Self::Size(size, at) => match (at, b) {
                    (SizeLine::Digits(n), _) if b.is_ascii_hexdigit() => {
                        if n == 16 {
                            Self::Malformed
                        } else {
                            let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                            Self::Size(size * 16 + d, SizeLine::Digits(n + 1))
                        }
                    }
                    (SizeLine::Digits(0), _) => Self::Malformed,
                    (SizeLine::Digits(_) | SizeLine::Space, b' ' | b'\t') => {
                        Self::Size(size, SizeLine::Space)
                    }
                    (SizeLine::Digits(_) | SizeLine::Space | SizeLine::Extension, b';') => {
                        Self::Size(size, SizeLine::Extension)
                    }
                    (SizeLine::Digits(_) | SizeLine::Space | SizeLine::Extension, b'\r') => {
                        Self::Size(size, SizeLine::Cr)
                    }
                    (SizeLine::Extension, _) if b == b'\t' || !b.is_ascii_control() => {
                        Self::Size(size, SizeLine::Extension)
                    }
                    (SizeLine::Cr, b'\n') if size == 0 => Self::Trailer(TrailerAt::LineStart),
                    (SizeLine::Cr, b'\n') => Self::Data(size),
                    _ => Self::Malformed,
                },
                Self::Data(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    i += n;
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Self::DataEnd(false)
                    } else {
                        Self::Data(left)
                    };
                    continue;
                }
                Self::DataEnd(false) if b == b'\r' => Self::DataEnd(true),
                Self::DataEnd(true) if b == b'\n' => Self::Size(0, SizeLine::Digits(0)),
                Self::DataEnd(_) => Self::Malformed,
                Self::Trailer(at) => match (at, b) {
                    (TrailerAt::LineStart, b'\r') => Self::Trailer(TrailerAt::EndCr),
                    (TrailerAt::LineStart | TrailerAt::Name, _) if is_tchar(b) => {
                        Self::Trailer(TrailerAt::Name)
                    }
                    (TrailerAt::Name, b':') => Self::Trailer(TrailerAt::Value),
                    (TrailerAt::Value, b'\r') => Self::Trailer(TrailerAt::Cr),
                    (TrailerAt::Value, _) if b == b'\t' || !b.is_ascii_control() => {
                        Self::Trailer(TrailerAt::Value)
                    }
                    (TrailerAt::Cr, b'\n') => Self::Trailer(TrailerAt::LineStart),
                    (TrailerAt::EndCr, b'\n') => {
                        *self = Self::Done;
                        return i + 1;
                    }
                    _ => Self::Malformed,
                },
            };
            if *self == Self::Malformed {
                return i;
            }
            i += 1;
        }
        i
    }
}

/// What became of a request the HTTP engine read: whether the proxy's phases saw it, and
/// otherwise how reading its header ended. The engine answers a header it cannot parse with
/// its own 400 before any phase runs; the edge logs and counts that request from this.
#[derive(Debug, Default)]
pub(crate) struct HeadOutcome {
    /// Some of the header arrived.
    arrived: AtomicBool,
    /// Something was written (the engine writes before the phases only to refuse a header).
    answered: AtomicBool,
    /// The status of what was written first, when it was an HTTP/1 status line (0: not).
    answered_status: std::sync::atomic::AtomicU16,
    /// The proxy's phases saw the request.
    seen: AtomicBool,
    /// How reading the header failed here: 0 (it did not), [`HEAD_CLOSED`],
    /// [`HEAD_TIMED_OUT`] or [`HEAD_TOO_LARGE`].
    failed: AtomicU8,
    /// The ray id of the edge's page sent in place of the engine's own refusal.
    ray: std::sync::Mutex<Option<crate::headers::RayId>>,
}

const HEAD_CLOSED: u8 = 1;
const HEAD_TIMED_OUT: u8 = 2;
const HEAD_TOO_LARGE: u8 = 3;

impl HeadOutcome {
    /// The proxy's phases have the request.
    pub(crate) fn seen(&self) {
        self.seen.store(true, Ordering::Relaxed);
    }

    /// The ray id the visitor was given for a request the proxy never saw, if any.
    pub(crate) fn ray(&self) -> Option<crate::headers::RayId> {
        *self
            .ray
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Once the engine is done with the request: the status to log and count for a request
    /// the proxy's phases never saw — the status the engine answered with itself (400 for a
    /// header it refused, 405 for CONNECT), 431
    /// (the header grew past twice the limit: the connection is closed) or 408 (it did not
    /// arrive in time, here or by the engine's own wait for a read; nothing is sent, as nginx
    /// does). `None`: the phases saw it, nothing arrived, or the visitor closed its connection
    /// in the middle of the header.
    pub(crate) fn unseen_status(&self) -> Option<u16> {
        if self.seen.load(Ordering::Relaxed) || !self.arrived.load(Ordering::Relaxed) {
            return None;
        }
        if self.answered.load(Ordering::Relaxed) {
            // The engine's own refusal: 400 for a header it cannot read, 405 for CONNECT.
            return Some(match self.answered_status.load(Ordering::Relaxed) {
                0 => 400,
                status => status,
            });
        }
        match self.failed.load(Ordering::Relaxed) {
            HEAD_CLOSED => None,
            HEAD_TOO_LARGE => Some(431),
            _ => Some(408),
        }
    }

    fn fail(&self, how: u8) {
        self.failed.store(how, Ordering::Relaxed);
    }
}

/// The status of an HTTP/1 status line at the start of `bytes` (`HTTP/1.1 405 ...`), or 0.
fn status_of(bytes: &[u8]) -> u16 {
    match bytes.get(..13) {
        Some(
            [
                b'H',
                b'T',
                b'T',
                b'P',
                b'/',
                b'1',
                b'.',
                _,
                b' ',
                d @ ..,
                b' ',
            ],
        ) if d.iter().all(u8::is_ascii_digit) => {
            d.iter().fold(0, |n, &b| n * 10 + u16::from(b - b'0'))
        }
        _ => 0,
    }
}

/// The version at the end of a request line (`line`, up to its LF): its major and minor digits.
fn line_version(line: &[u8]) -> Option<(u8, u8)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.get(line.len().checked_sub(9)?..)? {
        [b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((*major, *minor))
        }
        _ => None,
    }
}

/// The most header fields the engine reads in a request (pingora's `MAX_HEADERS`).
const ENGINE_MAX_FIELDS: usize = 256;

/// How long a request header may take to arrive (nginx's `client_header_timeout`).
#[cfg(not(test))]
const HEAD_TIME: std::time::Duration = std::time::Duration::from_secs(60);
#[cfg(test)]
const HEAD_TIME: std::time::Duration = std::time::Duration::from_millis(300);

/// What goes out for a write of the engine's ([`EngineReads::rewrite`]).
enum Rewrite {
    Same,
    /// This page instead, with its ray id and status.
    Replace(Vec<u8>, crate::headers::RayId, u16),
    Drop,
}

impl EngineReads {
    /// The engine is about to read a request, whose header is refused (431) over
    /// `max_header_bytes`.
    /// Returns what will become of the request.
    pub(crate) fn begin(&self, max_header_bytes: usize) -> Arc<HeadOutcome> {
        self.refused.store(false, Ordering::Relaxed);
        self.head.store(1, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
        self.chunked.store(false, Ordering::Relaxed);
        self.bad_line.store(false, Ordering::Relaxed);
        self.newer_major.store(false, Ordering::Relaxed);
        self.head_limit
            .store(max_header_bytes.saturating_mul(2), Ordering::Relaxed);
        self.begun.store(true, Ordering::Relaxed);
        let outcome = self.outcome.get_or_init(Arc::default);
        outcome.arrived.store(false, Ordering::Relaxed);
        outcome.answered.store(false, Ordering::Relaxed);
        outcome.answered_status.store(0, Ordering::Relaxed);
        outcome.seen.store(false, Ordering::Relaxed);
        outcome.fail(0);
        *outcome
            .ray
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Arc::clone(outcome)
    }

    /// The proxy's phases have the request the engine read.
    pub(crate) fn seen(&self) {
        if let Some(outcome) = self.outcome.get() {
            outcome.seen();
        }
    }

    /// What goes out for the engine's write of `bytes`: the engine's own refusal of a request
    /// the proxy never saw (its 400 for a header it cannot read, its 405 for CONNECT) goes out
    /// as the edge's refusals do, with `Server: parapet` and a ray id, and the rest of what it
    /// writes for that request is dropped.
    fn rewrite(&self, bytes: &[u8]) -> Rewrite {
        if self.refused.load(Ordering::Relaxed) {
            return Rewrite::Drop;
        }
        let Some(outcome) = self.outcome.get() else {
            return Rewrite::Same;
        };
        if outcome.seen.load(Ordering::Relaxed) || outcome.answered.load(Ordering::Relaxed) {
            return Rewrite::Same;
        }
        let status = match status_of(bytes) {
            // The engine reads at most ENGINE_MAX_FIELDS fields and refuses a header with
            // more as unreadable: it is too large (RFC 6585 §5).
            400 if self.head_lines > ENGINE_MAX_FIELDS + 2 => 431,
            400 if self.newer_major.load(Ordering::Relaxed) => 505,
            status @ 400..500 => status,
            _ => return Rewrite::Same,
        };
        let ray = crate::headers::ray_id();
        Rewrite::Replace(crate::proxy::refusal_bytes(status, &ray), ray, status)
    }

    /// A write of the engine's `buf` to `io` behind `buffers`, gathered up to `limit`, as
    /// [`Self::rewrite`] has it go out.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &self,
        buffers: &mut Buffers,
        io: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        match self.rewrite(buf) {
            Rewrite::Same => {
                self.wrote(buf);
                buffers.poll_gather(io, cx, buf, limit)
            }
            Rewrite::Replace(page, ray, status) => {
                ready!(buffers.poll_gather(io, cx, &page, limit))?;
                self.replaced(status, ray);
                Poll::Ready(Ok(buf.len()))
            }
            Rewrite::Drop => Poll::Ready(Ok(buf.len())),
        }
    }

    /// The page [`Self::rewrite`] made, with `status`, went out in place of the engine's.
    fn replaced(&self, status: u16, ray: crate::headers::RayId) {
        self.refused.store(true, Ordering::Relaxed);
        if let Some(outcome) = self.outcome.get() {
            if !outcome.answered.swap(true, Ordering::Relaxed) {
                outcome.answered_status.store(status, Ordering::Relaxed);
            }
            *outcome
                .ray
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ray);
        }
    }

    /// The engine wrote `bytes` to the connection.
    pub(crate) fn wrote(&self, bytes: &[u8]) {
        // (Read first: a write-back on every write of every answer costs more than a load.)
        if let Some(outcome) = self.outcome.get()
            && !outcome.answered.load(Ordering::Relaxed)
            && !outcome.answered.swap(true, Ordering::Relaxed)
        {
            outcome
                .answered_status
                .store(status_of(bytes), Ordering::Relaxed);
        }
    }

    fn outcome(&self, how: u8) {
        if let Some(outcome) = self.outcome.get() {
            outcome.fail(how);
        }
    }

    /// The request line held more than its two spaces, or a control character: a target the
    /// engine corrected (RFC 9112 §3.2 asks for a 400 instead).
    pub(crate) fn bad_request_line(&self) -> bool {
        self.bad_line.load(Ordering::Relaxed)
    }

    /// The request's body is chunked: the engine's reads stop at its end.
    pub(crate) fn chunked_body(&self) {
        self.chunked.store(true, Ordering::Relaxed);
    }

    /// The engine has the whole request (its body, if any, read to the end).
    pub(crate) fn request_read(&self) {
        self.held.store(true, Ordering::Relaxed);
    }

    /// The engine is done with the connection's request: reads go as they come.
    pub(crate) fn end(&self) {
        self.head.store(0, Ordering::Relaxed);
        self.held.store(false, Ordering::Relaxed);
        self.chunked.store(false, Ordering::Relaxed);
    }

    /// A read of `io` behind `buffers`' read-ahead.
    pub(crate) fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        buffers: &mut Buffers,
        io: &mut R,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.held.load(Ordering::Relaxed) {
            return buffers.poll_hold(io, cx);
        }
        let head = self.head.load(Ordering::Relaxed);
        if head == 0 && self.chunked.load(Ordering::Relaxed) {
            return self.poll_read_chunked(buffers, io, cx, buf);
        }
        self.chunk = None;
        if head == 0 {
            if buffers.read_ahead(buf) {
                return Poll::Ready(Ok(()));
            }
            return Pin::new(io).poll_read(cx, buf);
        }
        if self.begun.swap(false, Ordering::Relaxed) {
            self.head_deadline = Some(std::time::Instant::now() + HEAD_TIME);
            self.head_read = 0;
            self.head_lines = 0;
            self.line = Some(0);
        }
        if buffers.ahead_len() == 0 {
            match ready!(buffers.poll_fill(io, cx)) {
                Ok(0) => {
                    self.outcome(HEAD_CLOSED);
                    return Poll::Ready(Ok(()));
                }
                Ok(_) => {}
                Err(e) => {
                    self.outcome(HEAD_CLOSED);
                    return Poll::Ready(Err(e));
                }
            }
        }
        if let Some(outcome) = self.outcome.get() {
            outcome.arrived.store(true, Ordering::Relaxed);
        }
        if self
            .head_deadline
            .is_some_and(|deadline| std::time::Instant::now() > deadline)
        {
            self.outcome(HEAD_TIMED_OUT);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request header took too long",
            )));
        }
        let ahead = buffers.ahead();
        let readable = ahead.len().min(buf.remaining());
        let (mut matched, mut take) = (head - 1, readable);
        for (i, &byte) in ahead[..readable].iter().enumerate() {
            matched = match (matched, byte) {
                (0 | 2, b'\r') => matched + 1,
                (1 | 3, b'\n') => matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if matched == 4 {
                take = i + 1;
                break;
            }
        }
        self.head.store(
            if matched == 4 { 0 } else { matched + 1 },
            Ordering::Relaxed,
        );
        // The request line: a method, a target and a version, two spaces between them.
        // Where in what is read now the request line's minor version is, to be read as 1.
        let mut newer_minor = None;
        if let Some(spaces) = self.line {
            let mut spaces = spaces;
            let mut ended = false;
            for (i, &byte) in ahead[..take].iter().enumerate() {
                match byte {
                    b'\n' => {
                        ended = true;
                        match line_version(&ahead[..i]) {
                            Some((b'1', minor)) if minor > b'1' => {
                                newer_minor = Some(i - 1 - usize::from(ahead[i - 1] == b'\r'));
                            }
                            Some((major, _)) if major > b'1' => {
                                self.newer_major.store(true, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        break;
                    }
                    b'\r' => {}
                    b' ' => spaces = spaces.saturating_add(1),
                    b if b < b' ' || b == 0x7f => self.bad_line.store(true, Ordering::Relaxed),
                    _ => {}
                }
            }
            if spaces > 2 {
                self.bad_line.store(true, Ordering::Relaxed);
            }
            self.line = (!ended).then_some(spaces);
        }
        self.head_read = self.head_read.saturating_add(take);
        self.head_lines = self
            .head_lines
            .saturating_add(memchr::memchr_iter(b'\n', &ahead[..take]).count());
        if matched != 4 && self.head_read > self.head_limit.load(Ordering::Relaxed) {
            self.outcome(HEAD_TOO_LARGE);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request header is too large",
            )));
        }
        let before = buf.filled().len();
        buffers.read_ahead_upto(buf, take);
        // HTTP/1.2 to 1.9 are read as 1.1, the highest minor version of HTTP/1 there is (RFC
        // 9112 §2.3), as nginx reads them: the engine refuses them.
        if let Some(at) = newer_minor
            && let Some(minor) = buf.filled_mut().get_mut(before + at)
        {
            *minor = b'1';
        }
        Poll::Ready(Ok(()))
    }

    /// A read of a chunked request body: up to its end, what follows kept read ahead.
    fn poll_read_chunked<R: AsyncRead + Unpin>(
        &mut self,
        buffers: &mut Buffers,
        io: &mut R,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let state = self
            .chunk
            .get_or_insert(ChunkRead::Size(0, SizeLine::Digits(0)));
        if *state == ChunkRead::Done {
            // The body is whole: what comes next waits for the edge's next turn.
            self.held.store(true, Ordering::Relaxed);
            return buffers.poll_hold(io, cx);
        }
        if buffers.ahead_len() == 0 && ready!(buffers.poll_fill(io, cx))? == 0 {
            return Poll::Ready(Ok(()));
        }
        let ahead = buffers.ahead();
        let readable = ahead.len().min(buf.remaining());
        let take = state.step(&ahead[..readable]);
        if *state == ChunkRead::Malformed {
            // Nothing more of this connection is read: the engine fails the request, and
            // the origin's connection, if the body had begun there, is not used again.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed chunked request body",
            )));
        }
        buffers.read_ahead_upto(buf, take);
        Poll::Ready(Ok(()))
    }
}

/// How the HTTP engine reads `stream`'s requests, when it is a visitor's connection (plain or
/// TLS).
pub(crate) fn engine_reads(stream: &pingora::protocols::Stream) -> Option<&EngineReads> {
    let any = stream.as_any();
    match any.downcast_ref::<VisitorStream>() {
        Some(plain) => Some(&plain.engine_reads),
        None => any
            .downcast_ref::<crate::tls::TlsVisitorStream>()
            .map(|tls| &tls.engine_reads),
    }
}

/// The visitor's address, when `stream` is a visitor's connection (plain or TLS).
pub(crate) fn visitor_peer(stream: &pingora::protocols::Stream) -> Option<SocketAddr> {
    let any = stream.as_any();
    match any.downcast_ref::<VisitorStream>() {
        Some(plain) => Some(plain.peer()),
        None => any
            .downcast_ref::<crate::tls::TlsVisitorStream>()
            .map(crate::tls::TlsVisitorStream::peer),
    }
}

/// How far [`VisitorStream::send_head_and_file`] got.
#[derive(Debug)]
pub(crate) enum FileSend {
    /// The header and the body went.
    Sent,
    /// The header and `body_sent` bytes of the body went, then the file (a short one, a read
    /// error) or the socket failed.
    Broke { body_sent: usize, error: io::Error },
}

/// Sends gathered writes the engine leaves waiting. The engine flushes an answer of known
/// length only at its end, so its header and a first part smaller than the gathering limit
/// would wait for the rest however long the origin takes to send it. While the engine waits
/// for the origin it also waits for the visitor (a read that detects a close): when such a
/// read finds nothing, what is gathered leaves after [`IDLE_FLUSH`] unless more writes send it
/// first (as the rest of an answer that follows at once does, in one send with its header).
#[derive(Debug, Default)]
pub(crate) struct IdleFlush {
    /// Made at the first wait, then reset for each.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The count of bytes sent when the timer was set for what is gathered now: a send since
    /// means the gathered bytes are newer and the timer is set again.
    armed_at: Option<u64>,
}

impl IdleFlush {
    /// After a read of the visitor that found nothing: sends what is gathered once it has
    /// waited long enough (the send, or its failure, is the next write's concern).
    pub(crate) fn poll<W: AsyncWrite + Unpin>(
        &mut self,
        buffers: &mut Buffers,
        io: &mut W,
        cx: &mut Context<'_>,
    ) {
        if buffers.out_pos == buffers.out.len() {
            self.armed_at = None;
            return;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE_FLUSH)));
        if self.armed_at != Some(buffers.sent) {
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + IDLE_FLUSH);
            self.armed_at = Some(buffers.sent);
        }
        if timer.as_mut().poll(cx).is_ready() {
            match buffers.poll_drain(io, cx) {
                Poll::Ready(Ok(())) => {
                    self.armed_at = None;
                    // Flushed too: under TLS, that sends the records made of them.
                    let _ = Pin::new(io).poll_flush(cx);
                }
                // Sent in part or not at all: the rest goes when the socket takes more (the
                // drain waits for that), not after another wait.
                _ => self.armed_at = Some(buffers.sent),
            }
        }
    }
}

/// A visitor connection out of the runtime (see `park.rs`).
#[derive(Debug)]
pub(crate) struct ParkedStream {
    pub(crate) tcp: std::net::TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    established: SystemTime,
}

#[derive(Debug)]
pub struct VisitorStream {
    tcp: TcpStream,
    buffers: Buffers,
    /// The visitor's address, and the edge's once known.
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// The engine's digest of those addresses (about 400 bytes): built when a request asks for
    /// it, dropped while the connection waits for its next request.
    digest: OnceLock<Arc<SocketDigest>>,
    established: SystemTime,
    /// Vectored writes leave at once ([`Buffers::poll_send_vectored`]) rather than gathered as
    /// other writes are: for plain connections, whose complete answers [`send_now`] sends. A
    /// TLS layer writes each record vectored and keeps gathering.
    vectored_now: bool,
    /// An HTTP/2 connection's: flushes held back while it says so.
    gate: Option<FlushGate>,
    /// Something was sent by [`Self::send_head_and_file`] (which the buffers do not count).
    sent_from_file: AtomicBool,
    /// How the HTTP engine reads the request it handles.
    pub(crate) engine_reads: EngineReads,
    idle_flush: IdleFlush,
    /// Nothing is left to do when the stream is dropped: it lingered, or its socket went on.
    finished: bool,
}

impl VisitorStream {
    /// A visitor's connection from `peer` to `local` (when the listener's address says it).
    pub fn new(tcp: TcpStream, peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        Self {
            tcp,
            buffers: Buffers::default(),
            peer,
            local,
            digest: OnceLock::new(),
            established: SystemTime::now(),
            vectored_now: false,
            gate: None,
            sent_from_file: AtomicBool::new(false),
            engine_reads: EngineReads::default(),
            idle_flush: IdleFlush::default(),
            finished: false,
        }
    }

    /// Flushes on this connection from now on wait while `gate` is held.
    pub(crate) fn gate_flushes(&mut self, gate: FlushGate) {
        self.gate = Some(gate);
    }

    /// The stream with vectored writes sent at once (a plain connection's).
    pub(crate) fn sending_vectored_writes_at_once(mut self) -> Self {
        self.vectored_now = true;
        self
    }

    /// The connection's socket taken out of the runtime, with what a request needs to know of
    /// the connection, to be parked. The stream comes back while anything is read ahead or
    /// waits to be sent; an error means the socket is lost (closed).
    pub(crate) fn park(mut self: Box<Self>) -> Result<io::Result<ParkedStream>, Box<Self>> {
        if !self.buffers.is_empty() {
            return Err(self);
        }
        // A second handle goes on; this one leaves the runtime when the stream is dropped.
        use std::os::fd::AsFd;
        let tcp = self.tcp.as_fd().try_clone_to_owned();
        self.finished = true;
        Ok(tcp.map(|tcp| ParkedStream {
            tcp: tcp.into(),
            peer: self.peer,
            local: self.local,
            established: self.established,
        }))
    }

    /// A parked connection back in the runtime.
    pub(crate) fn unpark(parked: ParkedStream) -> io::Result<Self> {
        let tcp = TcpStream::from_std(parked.tcp)?;
        // Only plain connections are parked.
        let mut stream =
            Self::new(tcp, parked.peer, parked.local).sending_vectored_writes_at_once();
        stream.established = parked.established;
        Ok(stream)
    }

    /// The bytes read ahead (a request the connection waited for, as far as it has arrived).
    pub(crate) fn ahead(&self) -> &[u8] {
        self.buffers.ahead()
    }

    /// Once the end of the stream is sent: when the visitor sent more than was read (`unread`
    /// bytes read ahead, or bytes waiting in the socket), lingers ([`linger_on`]) before the
    /// stream is dropped.
    pub(crate) async fn linger(&mut self, unread: bool) {
        self.buffers.ahead = Vec::new();
        self.buffers.ahead_pos = 0;
        linger_on(&self.tcp, unread).await;
        self.finished = true;
    }

    /// Whether writes are gathered, waiting for a flush.
    pub(crate) fn gathering(&self) -> bool {
        self.buffers.out_pos != self.buffers.out.len()
    }

    /// Sends `head`, then `len` bytes of `file` from `offset` straight from the file to the
    /// socket (`sendfile`: the body is not copied through the edge's memory). The header goes
    /// on its own: held back with `MSG_MORE` to leave with the body, it cost about a fifth more
    /// CPU per 100 KiB hit and doubled the p99 latency under load. `Err`: the header could not
    /// be sent (the connection is lost), or writes are gathered and would have to go first.
    pub(crate) async fn send_head_and_file(
        &self,
        head: &[u8],
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<FileSend> {
        use rustix::net::{SendFlags, send};
        if self.gathering() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "writes are gathered",
            ));
        }
        let mut head = head;
        while !head.is_empty() {
            let flags = SendFlags::NOSIGNAL;
            let n = self
                .write_with(|| Ok(send(&self.tcp, head, flags)?))
                .await?;
            self.sent_from_file.store(true, Ordering::Relaxed);
            head = &head[n..];
        }
        // (SIGPIPE is ignored by the process: a visitor gone is an `EPIPE` here.)
        let (mut at, end) = (offset, offset.saturating_add(len));
        while at < end {
            let count = usize::try_from(end - at).unwrap_or(usize::MAX);
            let sent = self
                .write_with(|| Ok(rustix::fs::sendfile(&self.tcp, file, Some(&mut at), count)?));
            let error = match sent.await {
                Ok(0) => io::ErrorKind::UnexpectedEof.into(),
                Ok(_) => continue,
                Err(e) => e,
            };
            return Ok(FileSend::Broke {
                body_sent: usize::try_from(at - offset).unwrap_or(usize::MAX),
                error,
            });
        }
        Ok(FileSend::Sent)
    }

    /// Runs `write` (a send on the socket) once the socket takes it, again after an interrupt.
    async fn write_with(&self, mut write: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
        loop {
            match self.tcp.try_io(tokio::io::Interest::WRITABLE, &mut write) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    within_send_timeout(self.tcp.writable()).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => return done,
            }
        }
    }

    /// Waits until the visitor closes its connection (`true`) or sends something more
    /// (`false`: it is there; what it sent stays in the socket).
    pub(crate) async fn closed(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(self.tcp.peek(&mut byte).await, Ok(1..))
    }

    /// The visitor's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The edge's port the visitor connected to.
    pub(crate) fn local_port(&self) -> Option<u16> {
        match self.local {
            Some(local) => Some(local.port()),
            None => self.tcp.local_addr().ok().map(|a| a.port()),
        }
    }

    /// The connection is about to wait for a request: what only a request needs is dropped
    /// (the edge's own address, if the digest looked it up, is kept).
    pub(crate) fn rest(&mut self) {
        if let Some(digest) = self.digest.take()
            && self.local.is_none()
        {
            self.local = inet(digest.local_addr.get());
        }
    }
}

fn inet(addr: Option<&Option<pingora::protocols::l4::socket::SocketAddr>>) -> Option<SocketAddr> {
    addr?.as_ref()?.as_inet().copied()
}

impl AsyncRead for VisitorStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Self {
            tcp,
            buffers,
            engine_reads,
            gate,
            idle_flush,
            ..
        } = this;
        let read = engine_reads.poll_read(buffers, tcp, cx, buf);
        // (An HTTP/2 connection's flushes are let through by its own loop.)
        if read.is_pending() && gate.is_none() {
            idle_flush.poll(buffers, tcp, cx);
        }
        read
    }
}

impl AsyncWrite for VisitorStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let limit = FlushGate::gather_limit(this.gate.as_ref(), GATHER);
        this.engine_reads
            .poll_write(&mut this.buffers, &mut this.tcp, cx, buf, limit)
    }

    /// On a plain connection, sent at once (see [`Buffers::poll_send_vectored`]): callers that
    /// write piece by piece (the engine, through `write_all_buf`) ask `is_write_vectored`,
    /// which stays false, and keep gathering. Under TLS, gathered as `poll_write` gathers
    /// (the first slice with bytes, as the default does).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.vectored_now {
            return this.buffers.poll_send_vectored(&mut this.tcp, cx, bufs);
        }
        let buf = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        let limit = FlushGate::gather_limit(this.gate.as_ref(), GATHER);
        this.buffers.poll_gather(&mut this.tcp, cx, buf, limit)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if FlushGate::holds(this.gate.as_ref()) {
            return Poll::Ready(Ok(()));
        }
        ready!(this.buffers.poll_drain(&mut this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.buffers.poll_drain(&mut this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl Drop for VisitorStream {
    /// The HTTP engine closes a connection by dropping its stream (shut down or not), and may
    /// have read bytes the visitor sent behind its request (pipelined requests, a body it did
    /// not take) that the stream does not see; the visitor may send more. Closing the socket
    /// then would reset the connection and throw away what of the answer has not arrived: so,
    /// unless the visitor has closed its side or nothing was ever sent, the socket lingers
    /// ([`linger_on`]) in a task of its own, on a second handle.
    fn drop(&mut self) {
        use rustix::net::{RecvFlags, recv};
        use std::os::fd::AsFd;
        let sent = self.buffers.sent > 0 || *self.sent_from_file.get_mut();
        if self.finished || !sent {
            return;
        }
        let waiting = with_scratch(|scratch| recv(&self.tcp, scratch, RecvFlags::DONTWAIT));
        let open = match waiting {
            Ok((read, _)) => read > 0,
            Err(e) => e == rustix::io::Errno::WOULDBLOCK,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !open || LINGERING.fetch_add(1, Ordering::Relaxed) >= LINGERING_MAX {
            if open {
                LINGERING.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let socket = self.tcp.as_fd().try_clone_to_owned();
        let _ = rustix::net::shutdown(&self.tcp, rustix::net::Shutdown::Write);
        runtime.spawn(async move {
            if let Ok(tcp) = socket.and_then(|s| TcpStream::from_std(s.into())) {
                linger_on(&tcp, true).await;
            }
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[async_trait]
impl Peek for VisitorStream {
    /// Waits until `buf.len()` bytes have arrived and copies them without consuming them.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.buffers.ahead_len() < buf.len() {
            self.rest();
        }
        while self.buffers.ahead_len() < buf.len() {
            // Read into this thread's scratch space and keep exactly what arrived. A read that
            // leaves room also clears the socket's readiness, so that the next wait does not
            // begin with a read that finds nothing.
            let Self { tcp, buffers, .. } = &mut *self;
            let read = std::future::poll_fn(|cx| {
                SCRATCH.with_borrow_mut(|scratch| {
                    let mut room = ReadBuf::new(&mut scratch[..]);
                    ready!(Pin::new(&mut *tcp).poll_read(cx, &mut room))?;
                    buffers.keep_ahead(room.filled());
                    Poll::Ready(Ok::<_, io::Error>(room.filled().len()))
                })
            })
            .await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.buffers.peek_into(buf);
        Ok(true)
    }
}

#[async_trait]
impl Shutdown for VisitorStream {
    /// Sends what is gathered and the end of the stream, then lingers ([`Self::linger`]).
    async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        if AsyncWriteExt::shutdown(self).await.is_ok() {
            let unread = self.buffers.ahead_len() > 0;
            self.linger(unread).await;
        }
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
        let digest = self.digest.get_or_init(|| {
            use std::os::fd::AsRawFd;
            let digest = SocketDigest::from_raw_fd(self.tcp.as_raw_fd());
            let _ = digest.peer_addr.set(Some(self.peer.into()));
            if let Some(local) = self.local {
                let _ = digest.local_addr.set(Some(local.into()));
            }
            Arc::new(digest)
        });
        Some(Arc::clone(digest))
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        if let Some(peer) = inet(socket_digest.peer_addr.get()) {
            self.peer = peer;
        }
        if let Some(local) = inet(socket_digest.local_addr.get()) {
            self.local = Some(local);
        }
        self.digest = OnceLock::from(Arc::new(socket_digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lines_version_is_read_from_its_end() {
        assert_eq!(line_version(b"GET / HTTP/1.2\r"), Some((b'1', b'2')));
        assert_eq!(line_version(b"GET / HTTP/2.0"), Some((b'2', b'0')));
        assert_eq!(line_version(b"GET /HTTP/1.2"), None, "no space before it");
        assert_eq!(line_version(b"GET / HTTP/1.10\r"), None);
        assert_eq!(line_version(b"GET / HTTPS/1.2\r"), None);
        assert_eq!(line_version(b"HTTP/1.2"), None);
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
        let next = b"GET /next HTTP/1.1\r\n\r\n";
        for body in [
            &b"3\r\nabc\r\n0\r\n\r\n"[..],
            b"A;name=value\r\n0123456789\r\n0;last\r\n\r\n",
            b"3\r\na\r\n\r\n0\r\nX-One: 1\r\nX-Two: 2\r\n\r\n",
            b"0\r\n\r\n",
            b"0000000000000005 ; a=\"b c\"\r\nhello\r\n0\r\nX:\r\n\r\n",
        ] {
            let mut all = body.to_vec();
            all.extend_from_slice(next);
            // Whole, and a byte at a time.
            let mut state = ChunkRead::Size(0, SizeLine::Digits(0));
            assert_eq!(
                state.step(&all),
                body.len(),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(state, ChunkRead::Done);
            let mut state = ChunkRead::Size(0, SizeLine::Digits(0));
            let mut taken = 0;
            for byte in all.chunks(1) {
                taken += state.step(byte);
            }
            assert_eq!(taken, body.len(), "{}", String::from_utf8_lossy(body));
        }
        // Bodies two readers could read differently are malformed where they break the rules:
        // an empty size line (read by some as the last chunk), a bare LF in a size line or
        // after data, 17 digits, a control byte in an extension, a trailer that is no field
        // line (a folded one, a request line).
        for (body, good) in [
            (&b"5\r\nhello\r\n\r\nXXXX\r\n0\r\n\r\n"[..], 10),
            (b"\r\n\r\n", 0),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", 3),
            (b"5\nhello\r\n0\r\n\r\n", 1),
            (b"5\r\nhello\n0\r\n\r\n", 8),
            (b"5\r\nhelloXX0\r\n\r\n", 8),
            (b"11111111111111111\r\n", 16),
            (b"1;a\x00b\r\nX\r\n0\r\n\r\n", 3),
            (b"0\r\nnot a header\r\n\r\n", 6),
            (b"0\r\nX: a\r\n folded\r\n\r\n", 9),
            (b"0\r\nGET /x HTTP/1.1\r\n\r\n", 6),
            (b"0\r\nX: a\x00b\r\n\r\n", 7),
            (b"0\r\n\n", 3),
        ] {
            let mut state = ChunkRead::Size(0, SizeLine::Digits(0));
            assert_eq!(state.step(body), good, "{}", String::from_utf8_lossy(body));
            assert_eq!(
                state,
                ChunkRead::Malformed,
                "{}",
                String::from_utf8_lossy(body)
            );
            let mut state = ChunkRead::Size(0, SizeLine::Digits(0));
            let taken: usize = body.chunks(1).map(|byte| state.step(byte)).sum();
            assert_eq!(taken, good, "{}", String::from_utf8_lossy(body));
            assert_eq!(state, ChunkRead::Malformed);
        }
        // A body not over yet takes everything.
        let mut state = ChunkRead::Size(0, SizeLine::Digits(0));
        assert_eq!(state.step(b"5\r\nab"), 5);
        assert_eq!(state, ChunkRead::Data(3));
    }

    /// A writer that takes at most `step` bytes per call, vectored or not, and records them.
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.got.extend_from_slice(&b[..take]);
                (left, n) = (left - take, n + take);
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes `parts` through the gathering buffer as the engine does, then flushes.
    fn send(step: usize, parts: &[&[u8]]) -> Trickle {
        let mut out = Trickle {
            step,
            got: Vec::new(),
            calls: 0,
        };
        let mut buffers = Buffers::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                match buffers.poll_gather(&mut out, &mut cx, rest, GATHER) {
                    Poll::Ready(Ok(n)) => rest = &rest[n..],
                    other => panic!("gather: {other:?}"),
                }
            }
        }
        assert!(buffers.poll_drain(&mut out, &mut cx).is_ready());
        out
    }

    #[test]
    fn the_status_of_an_answer_the_engine_wrote_is_read_from_its_first_line() {
        assert_eq!(status_of(b"HTTP/1.1 405 Method Not Allowed\r\n"), 405);
        assert_eq!(status_of(b"HTTP/1.0 400 \r\n"), 400);
        assert_eq!(status_of(b"HTTP/1.1 4x5 Bad\r\n"), 0);
        assert_eq!(status_of(b"HTTP/1.1 40"), 0);
        assert_eq!(status_of(b"\x00\x00\x12\x04"), 0);
    }

    #[test]
    fn a_header_and_a_large_body_leave_in_order_in_one_send_when_the_socket_takes_them() {
        let header = b"HTTP/1.1 200 OK\r\ncontent-length: 4000\r\n\r\n".as_slice();
        let body: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let whole = [header, &body].concat();
        let fast = send(1 << 20, &[header, &body]);
        assert_eq!(fast.got, whole);
        assert_eq!(fast.calls, 1, "header and body in one vectored send");
        // A socket that takes a few bytes at a time: nothing lost, repeated or reordered.
        for step in [1, 7, 40, 41, 42, 1500, 3999] {
            assert_eq!(send(step, &[header, &body]).got, whole, "step {step}");
        }
        // Small writes are gathered into one send.
        let small = send(1 << 20, &[b"ab", b"cd", b"ef"]);
        assert_eq!((small.got.as_slice(), small.calls), (&b"abcdef"[..], 1));
    }

    #[test]
    fn a_vectored_write_leaves_at_once_after_what_is_gathered() {
        let header = b"HTTP/1.1 200 OK\r\ncontent-length: 300\r\n\r\n".as_slice();
        let body: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let whole = [b"ab".as_slice(), header, &body].concat();
        for step in [1, 2, 3, 50, 51, 52, 1 << 20] {
            let mut out = Trickle {
                step,
                got: Vec::new(),
                calls: 0,
            };
            let mut buffers = Buffers::default();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(matches!(
                buffers.poll_gather(&mut out, &mut cx, b"ab", GATHER),
                Poll::Ready(Ok(2))
            ));
            assert_eq!(out.calls, 0, "gathered");
            let (mut part, mut offset) = (0, 0);
            let parts = [header, body.as_slice()];
            while part < parts.len() {
                let slices: Vec<io::IoSlice<'_>> = std::iter::once(&parts[part][offset..])
                    .chain(parts[part + 1..].iter().copied())
                    .map(io::IoSlice::new)
                    .collect();
                let Poll::Ready(Ok(mut n)) = buffers.poll_send_vectored(&mut out, &mut cx, &slices)
                else {
                    panic!("send")
                };
                while part < parts.len() && n >= parts[part].len() - offset {
                    n -= parts[part].len() - offset;
                    (part, offset) = (part + 1, 0);
                }
                offset += n;
            }
            assert_eq!(out.got, whole, "step {step}");
            assert!(buffers.is_empty());
            if step == 1 << 20 {
                assert_eq!(out.calls, 1, "gathered bytes and the answer in one send");
            }
        }
    }

    #[tokio::test]
    async fn a_body_sent_from_its_file_arrives_whole_behind_its_header_however_slowly_it_is_read() {
        use std::io::{Read as _, Write as _};
        use tokio::io::AsyncWriteExt;
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().expect("file");
        file.write_all(b"sixteen bytes...").expect("write");
        file.write_all(&body).expect("write");
        file.write_all(b"what follows the body").expect("write");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A visitor with a small receive window, reading a little at a time: the file goes out
        // in many sends.
        let visitor = std::thread::spawn(move || {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket.set_recv_buffer_size(4096).expect("small window");
            socket.connect(&addr.into()).expect("connect");
            let mut tcp = std::net::TcpStream::from(socket);
            let (mut got, mut piece) = (Vec::new(), [0u8; 3000]);
            loop {
                match tcp.read(&mut piece) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&piece[..n]),
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        let (tcp, peer) = listener.accept().await.expect("accept");
        let mut stream = VisitorStream::new(tcp, peer, None);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n";
        let sent = stream.send_head_and_file(head, &file, 16, body.len() as u64);
        assert!(matches!(sent.await, Ok(FileSend::Sent)));
        // A write gathered and not yet sent goes first: the file waits.
        stream.write_all(b"gathered").await.expect("write");
        assert!(stream.gathering());
        let sent = stream.send_head_and_file(head, &file, 16, 10);
        assert!(sent.await.is_err());
        stream.flush().await.expect("flush");
        // A file shorter than said breaks off after what it holds.
        let sent = stream.send_head_and_file(b"", &file, 16 + body.len() as u64, 1000);
        match sent.await {
            Ok(FileSend::Broke { body_sent, error }) => {
                assert_eq!(body_sent, b"what follows the body".len());
                assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            }
            other => panic!("{other:?}"),
        }
        drop(stream);
        let got = visitor.join().expect("visitor");
        let want = [&head[..], &body, b"gathered", b"what follows the body"].concat();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes arrive as written");
    }

    #[tokio::test]
    async fn a_visitor_that_stops_reading_fails_the_send_after_the_send_timeout() {
        // The client never reads.
        let (_client, tcp, peer) = crate::loopback_pair().await;
        let mut stream = VisitorStream::new(tcp, peer, None).sending_vectored_writes_at_once();
        let body = vec![b'x'; 64 << 20];
        let started = std::time::Instant::now();
        let sent = send_now(&mut stream, &[b"HTTP/1.1 200 OK\r\n\r\n", &body]).await;
        assert_eq!(sent.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert!(
            started.elapsed() < SEND_TIMEOUT * 10,
            "{:?}",
            started.elapsed()
        );
        // So from a file.
        let (_client, tcp, peer) = crate::loopback_pair().await;
        let stream = VisitorStream::new(tcp, peer, None);
        let mut file = tempfile::tempfile().expect("file");
        std::io::Write::write_all(&mut file, &body).expect("write");
        let sent = stream
            .send_head_and_file(b"HTTP/1.1 200 OK\r\n\r\n", &file, 0, body.len() as u64)
            .await;
        match sent {
            Ok(FileSend::Broke { error, .. }) => assert_eq!(error.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_engine_reads_a_header_to_its_end_then_nothing_but_a_close_and_no_endless_header() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let connect = || TcpStream::connect(listener.local_addr().expect("addr"));
        let mut client = connect().await.expect("connect");
        let (tcp, peer) = listener.accept().await.expect("accept");
        let mut stream = VisitorStream::new(tcp, peer, None);
        let mut buf = [0u8; 4096];
        async fn read(stream: &mut VisitorStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
            let within = std::time::Duration::from_millis(200);
            tokio::time::timeout(within, stream.read(buf)).await.ok()
        }
        // A request, a body and the next request in one write, its header's end split over
        // the read's edge: the engine gets the header alone.
        let first = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
        client
            .write_all(format!("{first}{next}").as_bytes())
            .await
            .expect("write");
        stream.engine_reads.begin(1024);
        let n = stream
            .read(&mut buf[..first.len() - 3])
            .await
            .expect("read");
        assert_eq!(&buf[..n], &first.as_bytes()[..n]);
        let rest = stream.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..rest], &first.as_bytes()[n..]);
        // The request is whole: what follows stays read ahead, and the engine's read waits...
        stream.engine_reads.request_read();
        client.write_all(b"more").await.expect("write");
        assert!(read(&mut stream, &mut buf).await.is_none());
        assert_eq!(stream.ahead(), format!("{next}more").as_bytes());
        // ... until the visitor closes, which it sees.
        client.shutdown().await.expect("close");
        assert_eq!(
            read(&mut stream, &mut buf).await.map(|r| r.ok()),
            Some(Some(0))
        );
        // The edge's next turn reads what was kept.
        stream.engine_reads.end();
        let n = stream.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], format!("{next}more").as_bytes());

        // A header that does not end within twice the limit fails the read.
        let mut client = connect().await.expect("connect");
        let (tcp, peer) = listener.accept().await.expect("accept");
        let mut stream = VisitorStream::new(tcp, peer, None);
        let outcome = stream.engine_reads.begin(1024);
        client
            .write_all(format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(3000)).as_bytes())
            .await
            .expect("write");
        let mut failed = None;
        for _ in 0..10 {
            if let Err(e) = stream.read(&mut buf).await {
                failed = Some(e.kind());
                break;
            }
        }
        assert_eq!(failed, Some(io::ErrorKind::InvalidData));
        assert_eq!(outcome.unseen_status(), Some(431));

        // A header still coming after its time fails the read as its next bytes come.
        let mut client = connect().await.expect("connect");
        let (tcp, peer) = listener.accept().await.expect("accept");
        let mut stream = VisitorStream::new(tcp, peer, None);
        let outcome = stream.engine_reads.begin(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(stream.read(&mut buf).await.is_ok());
        tokio::time::sleep(HEAD_TIME + std::time::Duration::from_millis(50)).await;
        client.write_all(b"X: y\r\n").await.expect("write");
        let late = stream.read(&mut buf).await.map_err(|e| e.kind());
        assert_eq!(late, Err(io::ErrorKind::TimedOut));
        assert_eq!(outcome.unseen_status(), Some(408));
        // The same connection's next request, which the phases see, is not one to log here;
        // nor is a header its visitor stops sending by closing.
        let outcome = stream.engine_reads.begin(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert!(stream.read(&mut buf).await.is_ok());
        stream.engine_reads.seen();
        assert_eq!(outcome.unseen_status(), None);
        let outcome = stream.engine_reads.begin(1024);
        client.write_all(b"X: y\r\n").await.expect("write");
        assert!(stream.read(&mut buf).await.is_ok());
        drop(client);
        assert!(stream.read(&mut buf).await.is_ok());
        assert_eq!(outcome.unseen_status(), None);
    }

    #[tokio::test]
    async fn a_held_gate_keeps_flushes_back_until_it_is_let_through_or_64_kib_are_gathered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, tcp, peer) = crate::loopback_pair().await;
        let mut stream = VisitorStream::new(tcp, peer, None);
        let gate = FlushGate::default();
        stream.gate_flushes(gate.clone());
        let quiet = |client: &mut TcpStream| {
            let mut byte = [0u8; 1];
            let read = client.try_read(&mut byte);
            matches!(read, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
        };
        // Held: frames of 2 KB and 9 KB (larger than an ungated stream gathers) and a flush
        // send nothing.
        gate.hold(true);
        stream.write_all(&[b'a'; 2000]).await.expect("write");
        stream.write_all(&[b'b'; 9000]).await.expect("write");
        stream.flush().await.expect("flush");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(quiet(&mut client), "sent while held");
        // Let through: the next flush sends them.
        gate.hold(false);
        stream.flush().await.expect("flush");
        let mut got = vec![0u8; 11_000];
        client.read_exact(&mut got).await.expect("read");
        assert!(got[..2000].iter().all(|&b| b == b'a') && got[2000..].iter().all(|&b| b == b'b'));
        // Held, but more than 64 KiB: what was gathered goes, the rest waits.
        gate.hold(true);
        for _ in 0..10 {
            stream.write_all(&[b'c'; 10_000]).await.expect("write");
        }
        stream.flush().await.expect("flush");
        let mut first = vec![0u8; 60_000];
        client.read_exact(&mut first).await.expect("read");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut rest = vec![0u8; 40_000];
        let mut more = [0u8; 1];
        assert!(
            quiet(&mut client),
            "{} sent",
            client.try_read(&mut more).unwrap_or(0)
        );
        gate.hold(false);
        stream.flush().await.expect("flush");
        client.read_exact(&mut rest).await.expect("read");
        assert!(first.iter().chain(&rest).all(|&b| b == b'c'));
    }

    #[tokio::test]
    async fn vectored_writes_leave_at_once_only_on_plain_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for plain in [true, false] {
            let (client, tcp, peer) = crate::loopback_pair().await;
            let stream = VisitorStream::new(tcp, peer, None);
            let mut stream = if plain {
                stream.sending_vectored_writes_at_once()
            } else {
                stream
            };
            let mut client = client;
            let n = stream
                .write_vectored(&[io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")])
                .await
                .expect("write");
            let mut got = [0u8; 4];
            let arrived =
                tokio::time::timeout(std::time::Duration::from_millis(200), client.read(&mut got))
                    .await;
            if plain {
                assert_eq!(n, 4);
                assert_eq!(arrived.expect("sent at once").expect("read"), 4);
                assert_eq!(&got, b"abcd");
            } else {
                // Gathered, as a TLS record is, until the flush.
                assert_eq!(n, 2);
                assert!(
                    arrived.is_err(),
                    "a gathered write was sent before the flush"
                );
                stream.flush().await.expect("flush");
                assert_eq!(client.read(&mut got).await.expect("read"), 2);
                assert_eq!(&got[..2], b"ab");
            }
        }
    }

    #[tokio::test]
    async fn answers_sent_now_arrive_whole_and_in_order_however_the_socket_takes_them() {
        let parts: [&[u8]; 5] = [b"", b"head\r\n\r\n", b"", &[7u8; 700], b"end"];
        let whole = parts.concat();
        for step in [1, 3, 9, 10, 11, 700, 1 << 20] {
            let mut out = Trickle {
                step,
                got: Vec::new(),
                calls: 0,
            };
            send_now(&mut out, &parts).await.expect("sent");
            assert_eq!(out.got, whole, "step {step}");
            if step == 1 << 20 {
                assert_eq!(out.calls, 1, "one send");
            }
        }
    }
}
