//! An origin's HTTP/1 answer, read for the pass-through without the engine's client.
//!
//! The header is parsed in place: its fields are spans of the bytes read, and nothing is
//! copied into a header map unless a caller asks for one. The body is framed as RFC 9112 §6.3
//! orders it (no body for HEAD, 1xx, 204 and 304; chunked when the last transfer coding says
//! so; then `Content-Length`; else the connection's end), with the engine client's rules for
//! what it refuses (differing or invalid lengths) and for when the connection may carry
//! another request.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::fast_timeout::fast_timeout;
use pingora::{Error, ErrorType};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest header accepted, and most fields (the engine client's limits).
const MAX_HEAD: usize = 1024 * 1024 - 1;
const MAX_FIELDS: usize = 256;
/// Room made for each read.
const READ_ROOM: usize = 16 * 1024;
/// Largest read buffer kept with an idle connection.
pub(crate) const KEPT_BUFFER: usize = 64 * 1024;
/// Largest chunk-size line and trailer section accepted (the engine client's limits).
const MAX_CHUNK_LINE: usize = 8 * 1024;
const MAX_TRAILERS: usize = 64 * 1024;

/// A part of the header's bytes.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// `part`'s place in `base` (it is a part of it).
    fn of(base: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        // A header is at most MAX_HEAD bytes long: its offsets fit.
        Self {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(start + part.len()).unwrap_or(u32::MAX),
        }
    }

    fn get(self, raw: &[u8]) -> &[u8] {
        raw.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One response header as the origin sent it.
#[derive(Debug)]
pub(crate) struct Head {
    raw: Bytes,
    pub(crate) status: StatusCode,
    /// HTTP/1.0 (else 1.1).
    pub(crate) http10: bool,
    reason: Span,
    fields: Vec<(Span, Span)>,
}

impl Head {
    /// Every field, in the origin's order and case.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.fields
            .iter()
            .map(|&(name, value)| (name.get(&self.raw), value.get(&self.raw)))
    }

    /// The values of the fields named `name` (lowercase).
    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The complete header at the start of `raw` (without folded lines).
    #[cfg(test)]
    pub(crate) fn of_bytes(raw: impl Into<Bytes>) -> Head {
        let raw = raw.into();
        let (_, mut head) = parse(&raw).expect("valid").expect("complete");
        head.raw = raw;
        head
    }

    /// The header's length as the origin sent it.
    pub(crate) fn raw_len(&self) -> usize {
        self.raw.len()
    }

    pub(crate) fn reason(&self) -> &[u8] {
        self.reason.get(&self.raw)
    }

    /// The engine's header for the fields `keep` chooses, values as the engine stores them.
    pub(crate) fn to_header(&self, keep: impl Fn(&[u8]) -> bool) -> Option<ResponseHeader> {
        let mut header = ResponseHeader::build_no_case(self.status, Some(8)).ok()?;
        for (name, value) in self.fields().filter(|(name, _)| keep(name)) {
            let name = http::HeaderName::from_bytes(name).ok()?;
            let value = pingora::http::header_value_from_raw(self.raw.slice_ref(value));
            header.append_header(name, value).ok()?;
        }
        Some(header)
    }
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// With its last chunk.
    Chunked(Chunk),
    /// With the connection.
    Close,
    /// It has ended.
    Done,
}

/// Where the chunked decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this much left.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// In the trailer section, this much read so far.
    Trailers(usize),
}

/// A connection to an origin with its answer on the way.
pub(crate) struct Reply {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
    framing: Framing,
    /// Whether the origin lets the connection carry another request once the body is read.
    keep_alive: bool,
    /// The buffer's allocation grew past [`KEPT_BUFFER`] (what is left of it after the bytes
    /// handed on may look small while it still holds all of it).
    grown: bool,
}

fn invalid(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, why)
}

impl Reply {
    /// `buf`: a buffer to read into (kept with the connection between requests).
    pub(crate) fn new(stream: TcpStream, buf: BytesMut, timeout: Duration) -> Self {
        Self {
            stream,
            buf,
            timeout,
            framing: Framing::Done,
            keep_alive: false,
            grown: false,
        }
    }

    /// More bytes from the origin; false at its end.
    async fn fill(&mut self, reading: &'static str) -> Result<bool, Box<Error>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 4 {
            self.buf.reserve(READ_ROOM);
        }
        // Polled first, the read arms the timer only when it has to wait.
        match fast_timeout(self.timeout, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => {
                // A buffer grown past what a pooled connection keeps is not kept.
                self.grown |= self.buf.capacity() > KEPT_BUFFER;
                Ok(n > 0)
            }
            Ok(Err(e)) => Err(Error::because(ErrorType::ReadError, reading, e)),
            Err(_) => Err(Error::explain(ErrorType::ReadTimedout, reading)),
        }
    }

    /// The next response header: a 1xx (call again for the final one) or the final response,
    /// after which the body is read with [`Reply::body`]. `head_only`: the request was a HEAD.
    pub(crate) async fn head(&mut self, head_only: bool) -> Result<Head, Box<Error>> {
        loop {
            if let Some((len, mut head)) = parse(&self.buf)? {
                head.raw = self.buf.split_to(len).freeze();
                if head.fields().any(|(_, value)| needs_normalizing(value)) {
                    head = normalized(head);
                }
                self.frame(&mut head, head_only)?;
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("response header too large"));
            }
            if !self.fill("reading the response header").await? {
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "the origin closed before its response header",
                ));
            }
        }
    }

    /// How the body of `head` is framed, and whether the connection may be reused after it.
    fn frame(&mut self, head: &mut Head, head_only: bool) -> Result<(), Box<Error>> {
        let status = head.status.as_u16();
        // Chunked is the one transfer coding passed on (as nginx, which answers 502 to
        // others): the visitor never asked for another (RFC 9112 §7.4), and would be sent
        // its bytes as the content.
        if !only_chunked(head.values("transfer-encoding")) {
            return Err(invalid("a transfer coding other than chunked"));
        }
        let last_coding = head.values("transfer-encoding").last();
        let (coded, last_coding_chunked) =
            (last_coding.is_some(), last_coding_is_chunked(last_coding));
        // Lengths are checked (differing or invalid ones are refused), 1xx answers' too, unless
        // a transfer coding frames the body. Then the length must not reach the visitor beside
        // it (RFC 9112 §6.3): the engine's client drops it too.
        let length = if coded {
            let raw = head.raw.clone();
            head.fields
                .retain(|(name, _)| !name.get(&raw).eq_ignore_ascii_case(b"content-length"));
            None
        } else {
            let length = content_length(head)?;
            one_length(head);
            length
        };
        if head.status.is_informational() {
            self.framing = Framing::Done;
            return Ok(());
        }
        self.framing = if head_only || matches!(status, 204 | 304) {
            Framing::Done
        } else if last_coding_chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            Framing::Close
        };
        if self.framing == Framing::Length(0) {
            self.framing = Framing::Done;
        }
        // A `close` in any Connection field closes (RFC 9112 §9.6); else the first that says
        // anything decides, as the engine's client reads it.
        let connection = head
            .values("connection")
            .map(connection_says)
            .fold(None, |said, this| match (said, this) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), _) => Some(true),
                (None, this) => this,
            });
        self.keep_alive = self.framing != Framing::Close
            && !(head.http10 && coded)
            && match connection {
                Some(keep_alive) => keep_alive,
                None => !head.http10,
            };
        Ok(())
    }

    /// The body has been read whole.
    pub(crate) fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The next piece of the body (decoded from its chunks), `None` once it has ended.
    pub(crate) async fn body(&mut self) -> Result<Option<Bytes>, Box<Error>> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(left) => {
                    if !self.buf.is_empty() {
                        let take = self
                            .buf
                            .len()
                            .min(usize::try_from(left).unwrap_or(usize::MAX));
                        let piece = self.buf.split_to(take).freeze();
                        let left = left - piece.len() as u64;
                        self.framing = if left == 0 {
                            Framing::Done
                        } else {
                            Framing::Length(left)
                        };
                        return Ok(Some(piece));
                    }
                    if !self.fill("reading the response body").await? {
                        return Err(Error::explain(
                            ErrorType::ConnectionClosed,
                            "the origin closed before the end of its body",
                        ));
                    }
                }
                Framing::Close => {
                    if !self.buf.is_empty() {
                        return Ok(Some(self.buf.split().freeze()));
                    }
                    if !self.fill("reading the response body").await? {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                }
                Framing::Chunked(chunk) => {
                    if let Some(piece) = self.dechunk(chunk)? {
                        return Ok(Some(piece));
                    }
                    if self.framing == Framing::Done {
                        return Ok(None);
                    }
                    if !self.fill("reading the response body").await? {
                        return Err(Error::explain(
                            ErrorType::ConnectionClosed,
                            "the origin closed before its last chunk",
                        ));
                    }
                }
            }
        }
    }

    /// Decodes what the buffer holds: a piece of data, or nothing (more bytes are needed, or the
    /// body has ended).
    fn dechunk(&mut self, mut chunk: Chunk) -> Result<Option<Bytes>, Box<Error>> {
        loop {
            match chunk {
                Chunk::Size => match httparse::parse_chunk_size(&self.buf) {
                    // A size line without a digit (a stray blank line) is no last chunk, which
                    // would end the body early, its rest read as trailers (RFC 9112 §7.1).
                    Ok(httparse::Status::Complete(_))
                        if !self.buf.first().is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        return Err(invalid("invalid chunk size"));
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = self.buf.split_to(used);
                        chunk = if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() <= MAX_CHUNK_LINE => break,
                    _ => return Err(invalid("invalid chunk size")),
                },
                Chunk::Data(left) => {
                    if self.buf.is_empty() {
                        break;
                    }
                    let take = self
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let piece = self.buf.split_to(take).freeze();
                    let left = left - piece.len() as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(piece));
                }
                Chunk::DataEnd => {
                    if self.buf.len() < 2 {
                        break;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not ended by CRLF"));
                    }
                    let _ = self.buf.split_to(2);
                    chunk = Chunk::Size;
                }
                Chunk::Trailers(read) => {
                    // Trailer fields are read and dropped, up to the empty line.
                    let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                        if read + self.buf.len() > MAX_TRAILERS {
                            return Err(invalid("trailers too large"));
                        }
                        chunk = Chunk::Trailers(read);
                        break;
                    };
                    let line = self.buf.split_to(end + 1);
                    // Lines end in CRLF, with no other CR (as the engine's client reads them).
                    let Some(content) = line.strip_suffix(b"\r\n") else {
                        return Err(invalid("trailer line not ended by CRLF"));
                    };
                    if content.contains(&b'\r') {
                        return Err(invalid("CR in a trailer line"));
                    }
                    if content.is_empty() {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    if read + line.len() > MAX_TRAILERS {
                        return Err(invalid("trailers too large"));
                    }
                    chunk = Chunk::Trailers(read + line.len());
                }
            }
        }
        self.framing = Framing::Chunked(chunk);
        Ok(None)
    }

    /// The connection and its buffer, when it may carry another request: the body read whole,
    /// nothing sent past it, and the origin keeping it open.
    pub(crate) fn reusable(self) -> Option<(TcpStream, BytesMut)> {
        if !(self.keep_alive && self.framing == Framing::Done && self.buf.is_empty()) {
            return None;
        }
        let buf = if self.grown {
            BytesMut::new()
        } else {
            self.buf
        };
        Some((self.stream, buf))
    }
}

/// Whether the `Transfer-Encoding` values name no coding but chunked.
pub(crate) fn only_chunked<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.all(|v| {
        v.split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case(b"chunked"))
    })
}

/// Whether the last transfer coding of a `Transfer-Encoding` value (the last one) is chunked.
pub(crate) fn last_coding_is_chunked(last_value: Option<&[u8]>) -> bool {
    last_value.is_some_and(|v| {
        v.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    })
}

/// The engine client's parser settings.
fn parser() -> httparse::ParserConfig {
    let mut parser = httparse::ParserConfig::default();
    parser.allow_spaces_after_header_name_in_responses(true);
    parser.allow_obsolete_multiline_headers_in_responses(true);
    parser
}

/// A complete header at the start of `buf`, if one is there: its length, and the header with
/// spans of `buf` (to be given its bytes).
fn parse(buf: &[u8]) -> Result<Option<(usize, Head)>, Box<Error>> {
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let len = match parser().parse_response_with_uninit_headers(&mut response, buf, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Error::because(
                ErrorType::InvalidHTTPHeader,
                "parsing the response header",
                e,
            ));
        }
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        // (100 to 599: RFC 9110 §15; the library takes up to 999.)
        .filter(|status| status.as_u16() < 600)
        .ok_or_else(|| invalid("response status"))?;
    let reason = Span::of(buf, response.reason.unwrap_or_default().as_bytes());
    let fields = response
        .headers
        .iter()
        .filter(|field| !field.name.is_empty())
        .map(|field| {
            (
                Span::of(buf, field.name.as_bytes()),
                Span::of(buf, field.value),
            )
        })
        .collect();
    Ok(Some((
        len,
        Head {
            raw: Bytes::new(),
            status,
            http10: response.version == Some(0),
            reason,
            fields,
        },
    )))
}

/// A value needs rewriting before it is passed on: a folded line, a stray CR or NUL.
fn needs_normalizing(value: &[u8]) -> bool {
    memchr::memchr3(b'\r', b'\n', b'\0', value).is_some()
}

/// The header's fields with folded lines joined by one space and stray CRs and NULs made
/// spaces (RFC 9110 §5.5, RFC 9112 §5.2), in bytes of its own.
fn normalized(head: Head) -> Head {
    let mut raw = Vec::with_capacity(head.raw.len());
    let put = |raw: &mut Vec<u8>, bytes: &[u8]| {
        let start = raw.len();
        raw.extend_from_slice(bytes);
        (start, raw.len())
    };
    let reason = put(&mut raw, head.reason());
    let mut fields = Vec::with_capacity(head.fields.len());
    for (name, value) in head.fields() {
        let name = put(&mut raw, name);
        let start = raw.len();
        let mut first = true;
        for line in value.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if !first {
                raw.push(b' ');
            }
            first = false;
            raw.extend(
                line.iter()
                    .map(|&b| if matches!(b, b'\r' | b'\0') { b' ' } else { b }),
            );
        }
        fields.push((name, (start, raw.len())));
    }
    let span = |(start, end): (usize, usize)| Span {
        start: u32::try_from(start).unwrap_or(u32::MAX),
        end: u32::try_from(end).unwrap_or(u32::MAX),
    };
    Head {
        raw: Bytes::from(raw),
        status: head.status,
        http10: head.http10,
        reason: span(reason),
        fields: fields
            .into_iter()
            .map(|(name, value)| (span(name), span(value)))
            .collect(),
    }
}

/// The body's length from `Content-Length` (identical repeats, also in one list, are one
/// length); differing or invalid values are refused.
fn content_length(head: &Head) -> Result<Option<u64>, Box<Error>> {
    let mut length = None;
    for value in head.values("content-length") {
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(invalid("invalid Content-Length header"));
            }
            let n = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| invalid("invalid Content-Length header"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("differing Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Leaves one `Content-Length` field holding one value, when the origin repeated it (`5, 5`, or
/// two fields, all checked equal): such a value must not be passed on (RFC 9110 §8.6), and an
/// HTTP/2 visitor's stream fails on it.
fn one_length(head: &mut Head) {
    let raw = head.raw.clone();
    let mut seen = false;
    head.fields.retain_mut(|(name, value)| {
        if !name.get(&raw).eq_ignore_ascii_case(b"content-length") {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        let text = value.get(&raw);
        if let Some(first) = text.split(|&b| b == b',').next() {
            *value = Span::of(&raw, first.trim_ascii());
        }
        true
    });
}

/// What a `Connection` value says of keeping the connection open, as the engine's client reads
/// it: `keep-alive` alone yes, a `close` among its tokens no, else nothing.
fn connection_says(value: &[u8]) -> Option<bool> {
    if value.trim_ascii().eq_ignore_ascii_case(b"keep-alive") {
        Some(true)
    } else if value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A reply on a real connection whose origin end writes `pieces` (pausing between them so
    /// that each arrives on its own) and then keeps the connection open unless `close`.
    async fn reply_to(pieces: &[&[u8]], close: bool) -> (Reply, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut origin, _) = listener.accept().await.expect("accept");
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let origin = tokio::spawn(async move {
            for piece in pieces {
                origin.write_all(&piece).await.expect("write");
                origin.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !close {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        (
            Reply::new(client, BytesMut::new(), Duration::from_secs(2)),
            origin,
        )
    }

    /// The kind of error reading `answer` (its header, then its body) ends with, and whether
    /// its header was refused; `close`: the origin closes after it.
    async fn failure_of(answer: &[u8], close: bool) -> (ErrorType, bool) {
        let (mut reply, origin) = reply_to(&[answer], close).await;
        reply.timeout = Duration::from_millis(300);
        let (e, at_head) = match reply.head(false).await {
            Err(e) => (e, true),
            Ok(_) => (
                whole_body(&mut reply).await.expect_err("a broken answer"),
                false,
            ),
        };
        origin.abort();
        (e.etype().clone(), at_head)
    }

    async fn whole_body(reply: &mut Reply) -> Result<Vec<u8>, Box<Error>> {
        let mut body = Vec::new();
        while let Some(piece) = reply.body().await? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }

    #[tokio::test]
    async fn a_length_framed_answer_in_pieces_is_read_whole_and_leaves_the_connection_reusable() {
        let (mut reply, origin) = reply_to(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 10\r\nX-A: 1\r\n\r\n0123",
                b"456789",
            ],
            false,
        )
        .await;
        let head = reply.head(false).await.expect("head");
        assert_eq!(head.status, 200);
        assert_eq!(head.reason(), b"OK");
        let fields: Vec<_> = head.fields().collect();
        assert_eq!(
            fields,
            vec![(&b"Content-Length"[..], &b"10"[..]), (b"X-A", b"1")]
        );
        assert_eq!(whole_body(&mut reply).await.expect("body"), b"0123456789");
        assert!(reply.is_done());
        assert!(reply.reusable().is_some());
        origin.abort();
    }

    #[tokio::test]
    async fn chunks_are_decoded_across_reads_with_extensions_and_trailers() {
        let (mut reply, origin) = reply_to(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5;x=y\r\nhel",
                b"lo\r\n",
                b"6\r\n, worl\r\n1\r\nd\r\n0\r\nTrailer-A: 1\r\n",
                b"\r\n",
            ],
            false,
        )
        .await;
        reply.head(false).await.expect("head");
        assert_eq!(whole_body(&mut reply).await.expect("body"), b"hello, world");
        assert!(reply.reusable().is_some());
        origin.abort();
    }

    #[tokio::test]
    async fn a_body_ended_by_the_close_is_read_to_the_end_and_the_connection_is_not_kept() {
        let (mut reply, origin) =
            reply_to(&[b"HTTP/1.1 200 OK\r\n\r\nfirst ", b"second"], true).await;
        reply.head(false).await.expect("head");
        assert_eq!(whole_body(&mut reply).await.expect("body"), b"first second");
        assert!(reply.reusable().is_none());
        origin.await.expect("origin");
    }

    #[tokio::test]
    async fn answers_without_a_body_end_at_their_header() {
        for (head_only, answer) in [
            (true, &b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"[..]),
            (false, b"HTTP/1.1 204 No Content\r\n\r\n"),
            (
                false,
                b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ] {
            let (mut reply, origin) = reply_to(&[answer], false).await;
            reply.head(head_only).await.expect("head");
            assert!(reply.is_done());
            assert_eq!(reply.body().await.expect("body"), None);
            assert!(reply.reusable().is_some());
            origin.abort();
        }
    }

    #[tokio::test]
    async fn informational_answers_come_before_the_final_one() {
        let (mut reply, origin) = reply_to(
            &[b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .await;
        let early = reply.head(false).await.expect("103");
        assert_eq!(early.status, 103);
        assert_eq!(early.values("link").next(), Some(&b"</a.css>"[..]));
        let last = reply.head(false).await.expect("200");
        assert_eq!(last.status, 200);
        assert_eq!(whole_body(&mut reply).await.expect("body"), b"ok");
        origin.abort();
    }

    #[tokio::test]
    async fn repeated_lengths_must_agree() {
        let (mut reply, origin) = reply_to(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok"],
            false,
        )
        .await;
        reply.head(false).await.expect("agreeing lengths");
        assert_eq!(whole_body(&mut reply).await.expect("body"), b"ok");
        origin.abort();
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nok",
        ] {
            assert_eq!(
                failure_of(answer, false).await,
                (ErrorType::InvalidHTTPHeader, true),
                "{}",
                answer.escape_ascii()
            );
        }
    }

    #[tokio::test]
    async fn broken_answers_are_errors_of_the_engines_kinds() {
        // Garbage, a header cut by the close, bad chunks, a body cut short, silence.
        let cases: [(&[u8], bool, (ErrorType, bool)); 5] = [
            (
                b"garbage\r\n\r\n",
                false,
                (ErrorType::InvalidHTTPHeader, true),
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-A",
                true,
                (ErrorType::ConnectionClosed, true),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
                (ErrorType::InvalidHTTPHeader, false),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                true,
                (ErrorType::ConnectionClosed, false),
            ),
            (b"", false, (ErrorType::ReadTimedout, true)),
        ];
        for (answer, close, kind) in cases {
            assert_eq!(
                failure_of(answer, close).await,
                kind,
                "{}",
                answer.escape_ascii()
            );
        }
    }

    #[tokio::test]
    async fn connections_are_kept_only_as_the_origin_allows() {
        for (answer, kept) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", false),
            // A close in any Connection field closes (RFC 9112 §9.6).
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: x-custom\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
        ] {
            let (mut reply, origin) = reply_to(&[answer], false).await;
            reply.head(false).await.expect("head");
            whole_body(&mut reply).await.expect("body");
            assert_eq!(
                reply.reusable().is_some(),
                kept,
                "{}",
                answer.escape_ascii()
            );
            origin.abort();
        }
    }

    #[tokio::test]
    async fn a_length_beside_a_transfer_coding_is_dropped() {
        for (answer, body, kept) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
                &b"ok"[..],
                true,
            ),
        ] {
            let (mut reply, origin) = reply_to(&[answer], true).await;
            let head = reply.head(false).await.expect("head");
            assert_eq!(
                head.values("content-length").next(),
                None,
                "{}",
                answer.escape_ascii()
            );
            assert_eq!(whole_body(&mut reply).await.expect("body"), body);
            assert_eq!(reply.reusable().is_some(), kept);
            origin.abort();
        }
    }

    #[tokio::test]
    async fn transfer_codings_but_chunked_and_chunk_lines_without_a_size_are_refused() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
        ] {
            let (mut reply, origin) = reply_to(&[answer], true).await;
            assert!(reply.head(false).await.is_err(), "{}", answer.escape_ascii());
            origin.abort();
        }
        // A blank line where a chunk size belongs is no last chunk.
        let (mut reply, origin) = reply_to(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n\r\n0\r\n\r\n"],
            false,
        )
        .await;
        reply.head(false).await.expect("head");
        assert!(whole_body(&mut reply).await.is_err());
        origin.abort();
    }

    #[tokio::test]
    async fn a_buffer_a_large_header_grew_is_not_kept_with_the_connection() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        // 200 fields of 500 bytes: a header of about 100 KiB.
        for i in 0..200 {
            answer.extend_from_slice(format!("X-Field-{i}: {}\r\n", "v".repeat(500)).as_bytes());
        }
        answer.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let (mut reply, origin) = reply_to(&[&answer], false).await;
        reply.timeout = Duration::from_secs(5);
        reply.head(false).await.expect("head");
        let (_, buf) = reply.reusable().expect("kept");
        assert_eq!(buf.capacity(), 0, "a fresh buffer instead");
        origin.abort();
    }

    #[tokio::test]
    async fn a_close_among_connection_tokens_wins() {
        for (connection, kept) in [
            ("keep-alive, close", false),
            ("close", false),
            ("Keep-Alive", true),
            ("foo", true),
        ] {
            let answer =
                format!("HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: 0\r\n\r\n");
            let (mut reply, origin) = reply_to(&[answer.as_bytes()], false).await;
            reply.head(false).await.expect("head");
            assert_eq!(reply.reusable().is_some(), kept, "{connection}");
            origin.abort();
        }
        // HTTP/1.0 keeps a connection only for `keep-alive` alone.
        let (mut reply, origin) = reply_to(
            &[b"HTTP/1.0 200 OK\r\nConnection: keep-alive, foo\r\nContent-Length: 0\r\n\r\n"],
            false,
        )
        .await;
        reply.head(false).await.expect("head");
        assert!(reply.reusable().is_none());
        origin.abort();
    }

    #[tokio::test]
    async fn trailer_lines_must_end_in_crlf() {
        for trailers in [&b"X: 1\n\r\n"[..], b"\n", b"X: a\rb\r\n\r\n"] {
            let mut answer =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n".to_vec();
            answer.extend_from_slice(trailers);
            // The header is fine; the trailers are not.
            assert_eq!(
                failure_of(&answer, false).await,
                (ErrorType::InvalidHTTPHeader, false)
            );
        }
    }

    #[tokio::test]
    async fn informational_answers_with_bad_lengths_are_refused() {
        let answer = b"HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            failure_of(answer, false).await,
            (ErrorType::InvalidHTTPHeader, true)
        );
    }

    #[tokio::test]
    async fn folded_values_are_joined_and_stray_bytes_made_spaces() {
        let (mut reply, origin) = reply_to(
            &[b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n  two\r\n\tthree\r\nX-Plain: p\r\nContent-Length: 0\r\n\r\n"],
            false,
        )
        .await;
        let head = reply.head(false).await.expect("head");
        let fields: Vec<_> = head.fields().collect();
        assert_eq!(
            fields,
            vec![
                (&b"X-Folded"[..], &b"one two three"[..]),
                (b"X-Plain", b"p"),
                (b"Content-Length", b"0"),
            ]
        );
        let header = head.to_header(|_| true).expect("a header");
        assert_eq!(header.headers["x-folded"], "one two three");
        origin.abort();
    }
}
