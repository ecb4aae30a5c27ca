//! The edge's own pass-through for its commonest trip to the origin: a GET or HEAD without a
//! body over HTTP/1.1, for a response the cache does not keep (a path the cache is not for, a
//! rule's bypass, development mode, or a URL whose last response could not be stored), to an
//! origin spoken to in plain HTTP/1.1.
//!
//! It does what the HTTP engine does for such a request (same routing, header policy, origin
//! failover and retries, error pages, compression, framing and log line) without the engine's
//! per-request machinery: no session or proxy state machine, no task per body chunk, and a
//! connection pool of its own per worker thread. The origin's answer is read by
//! [`crate::reply`], which frames and refuses answers as the engine's HTTP/1 client does
//! without building the engine's header map. Anything
//! else goes to the engine, which reads the same bytes: every case [`crate::hit`] sends there,
//! HTTP/1.0 visitors, HTTPS or HTTP/2 to the origin, origins outside Parapet's zones, redirects,
//! and a URL the cache may hold.
//!
//! Its connection pool, origin exchange ([`ask`]) and request writer also serve
//! [`crate::relay`], which passes HTTP/2 visitors' requests on the same way.
//!
//! One difference remains: when the response to a URL remembered as uncacheable can be stored
//! now, this path tells the cache so (the next request is a miss that stores it) instead of
//! storing this one, as the engine does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use http::header;
use parapet_model::rules::CacheParameters;
use parapet_model::settings::SslMode;
use pingora::cache::predictor::CacheablePredictor;
use pingora::cache::{CacheKey, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::balance;
use crate::errors::{EdgeError, error_page};
use crate::headers::{CDN_LOOP_TOKEN, RayId, with_date};
use crate::hit;
use crate::proxy::{
    AccessLine, COMPRESSION_LEVEL, EDGE_ONLY, EdgeProxy, OriginFilter, access_logged,
    browser_cache_control, cacheability, edge_compresses, edge_error, forbids_transform,
    from_origin, ip_text, keep_bytes_of, keep_bytes_unless, normalized_encoding, origin_port_of,
    page_header, to_origin, to_visitor, values_say_no_store,
};
use crate::reply::{Head, KEPT_BUFFER, Reply, last_coding_is_chunked};
use crate::route::Origin;
use crate::stream::send_now;

/// Request fields the engine strips before anything else (pingora's default request policy):
/// this hop's, and the protocol switches a plain GET does not make.
pub(crate) const STRIPPED: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "connection",
    "upgrade",
    "http2-settings",
];

/// Fields a visitor's `Connection` may not name, and how many names it may give, as the
/// engine's request policy has it.
const PROTECTED: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];
const MAX_NAMED: usize = 10;

/// A `tchar` of RFC 9110 §5.6.2.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Idle origin connections kept per origin address and worker thread.
const POOL_PER_ORIGIN: usize = 128;

/// An idle origin connection with the buffer its answers are read into.
type Kept = (TcpStream, BytesMut);

/// How long an idle origin connection is kept when the zone sets no idle timeout.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(60);

/// A request to pass on, decided before anything is read off the connection.
pub(crate) struct Pass {
    request_len: usize,
    /// The request for the origin, as bytes.
    wire: Vec<u8>,
    head_only: bool,
    keep_alive: bool,
    https: bool,
    client: IpAddr,
    origin: Origin,
    port: u16,
    connect_timeout: Duration,
    read_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// The key of a URL remembered as uncacheable: what its response says is learnt.
    learn: Option<CacheKey>,
    /// Why it was remembered so, as the prediction said when the request came.
    bypassed_for: Option<NoCacheReason>,
    rules: Option<Box<CacheParameters>>,
    status: (&'static str, &'static str),
    /// The visitor's compression, and for a URL the cache knows, the engine's own compression
    /// of what the origin sends.
    compression: ResponseCompressionCtx,
    upstream_compression: Option<ResponseCompressionCtx>,
    coding_asked: CodingAsked,
    ray: RayId,
    /// The visitor's `Accept`, for an error page's format.
    accept: Option<String>,
    path: String,
    started: Instant,
}

/// Whether the visitor's compression, and the engine's own of what the origin sends, had an
/// `Accept-Encoding` to read.
#[derive(Debug, Clone, Copy)]
struct CodingAsked {
    visitor: bool,
    upstream: bool,
}

/// A request the cache does not keep, as [`crate::hit`] found it: routed, with the zone's
/// cache rules, and the cache's status for it.
pub(crate) struct Passing<'a, 'b> {
    pub(crate) conn: &'a hit::Conn<'b>,
    pub(crate) request: &'a hit::Request<'b>,
    pub(crate) origin: Origin,
    pub(crate) rules: Option<Box<CacheParameters>>,
    /// The key of a URL remembered as uncacheable, and why it was.
    pub(crate) learn: Option<(CacheKey, NoCacheReason)>,
    pub(crate) status: (&'static str, &'static str),
    pub(crate) started: Instant,
    /// The edge is shutting down: the connection closes after the answer.
    pub(crate) stopping: bool,
}

impl EdgeProxy {
    /// The pass-through of a request, when it is one this path makes.
    pub(crate) fn pass(&self, passing: Passing<'_, '_>) -> Option<Box<Pass>> {
        let Passing {
            conn,
            request,
            origin,
            rules,
            learn,
            status,
            started,
            stopping,
        } = passing;
        let (learn, bypassed_for) = learn.unzip();
        let settings = origin.edge.settings;
        let origin_tls = conn.https && matches!(settings.ssl, SslMode::Full | SslMode::Strict);
        if !request.http11 || origin_tls || settings.origin_h2 {
            return None;
        }
        let (path, _) = request
            .target
            .split_once('?')
            .unwrap_or((request.target, ""));
        let ray = crate::headers::ray_id();
        // Compression toward the visitor reads the visitor's `Accept-Encoding`, as the engine's.
        let mut compression = ResponseCompressionCtx::new(COMPRESSION_LEVEL, false, false);
        if let Some(accept_encoding) = request.accept_encoding {
            compression.request_filter(&encoding_only(accept_encoding)?);
        }
        let to = ToOrigin {
            client: conn.peer.ip(),
            https: conn.https,
            port: conn.port,
            origin: &origin,
            ray: &ray,
            cache_asked: learn.is_some(),
        };
        // A GET is written as bytes here; a HEAD as the engine's client writes its request.
        let (wire, accept, asked_coding) = if request.head_only {
            let (upstream, accept) = upstream_request(request, &to)?;
            let coding = upstream
                .headers
                .get(header::ACCEPT_ENCODING)
                .map(|v| v.as_bytes().to_vec());
            let wire = http_req_header_to_wire(&upstream)?.to_vec();
            (wire, accept, coding)
        } else {
            let (wire, accept, coding) = wire_request(request, &to)?;
            (wire, accept, coding.map(|c| c.as_bytes().to_vec()))
        };
        // For a URL the cache knows, the engine compresses what the origin sends in the coding
        // class it asked for.
        let upstream_compression = match learn {
            Some(_) => {
                let mut upstream_compression =
                    ResponseCompressionCtx::new(COMPRESSION_LEVEL, false, false);
                if let Some(coding) = &asked_coding {
                    upstream_compression.request_filter(&encoding_only(coding)?);
                }
                Some(upstream_compression)
            }
            None => None,
        };
        let port = origin_port_of(&origin, conn.https, conn.port);
        let (connect_timeout, read_timeout) = self.origin_timeouts(&settings);
        self.metrics.request_started();
        Some(Box::new(Pass {
            request_len: request.len,
            wire,
            head_only: request.head_only,
            keep_alive: request.keep_alive && !stopping,
            https: conn.https,
            client: conn.peer.ip(),
            port,
            connect_timeout,
            read_timeout,
            idle_timeout: settings.idle_timeout_secs.map(Duration::from_secs),
            bypassed_for,
            learn,
            rules,
            status,
            compression,
            coding_asked: CodingAsked {
                visitor: request.accept_encoding.is_some(),
                upstream: upstream_compression.is_some() && asked_coding.is_some(),
            },
            upstream_compression,
            ray,
            accept,
            // For the access log only.
            path: if access_logged() {
                path.to_owned()
            } else {
                String::new()
            },
            origin,
            started,
        }))
    }
}

/// What the origin is told about the visitor and this edge.
pub(crate) struct ToOrigin<'a> {
    pub(crate) client: IpAddr,
    pub(crate) https: bool,
    /// The port the visitor came to (a `Host` with a port is sent with this one).
    pub(crate) port: u16,
    pub(crate) origin: &'a Origin,
    pub(crate) ray: &'a str,
    /// The cache knows the URL: the origin is asked for the visitor's coding class.
    pub(crate) cache_asked: bool,
}

impl ToOrigin<'_> {
    /// Writes [`to_origin`]'s fields into `req`.
    pub(crate) fn write_into(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        to_origin(
            req,
            Some(self.client),
            (self.https, self.port),
            self.origin,
            self.ray,
            self.cache_asked,
        )
    }
}

/// A request header holding only an `Accept-Encoding`, which is all compression reads.
pub(crate) fn encoding_only(value: &[u8]) -> Option<RequestHeader> {
    let mut req = RequestHeader::build("GET", b"/", Some(1)).ok()?;
    req.insert_header(header::ACCEPT_ENCODING, value).ok()?;
    Some(req)
}

/// Whether a visitor's field is dropped on the way: the engine's request policy strips it, or
/// the visitor's `Connection` names it. `None` for a `Connection` list the engine refuses (too
/// long, not tokens, naming a field it protects).
fn stripped_fields<'h>(parsed: &'h [httparse::Header<'_>]) -> Option<Vec<&'h [u8]>> {
    let mut named: Vec<&[u8]> = Vec::new();
    for field in parsed {
        if field.name.eq_ignore_ascii_case("connection") {
            named.extend(
                field
                    .value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let refused = named.len() >= MAX_NAMED
        || named.iter().any(|name| {
            !name.iter().all(|&b| is_token(b))
                || PROTECTED
                    .iter()
                    .any(|p| name.eq_ignore_ascii_case(p.as_bytes()))
        });
    (!refused).then_some(named)
}

/// Whether the engine's header map takes `name` as `http::HeaderName::from_bytes` does
/// (tokens, shorter than 64 KiB), without looking it up among the standard names.
fn header_map_takes(name: &[u8]) -> bool {
    !name.is_empty() && name.len() < 1 << 16 && name.iter().all(|&b| is_token(b))
}

fn is_stripped(named: &[&[u8]], name: &str) -> bool {
    STRIPPED.iter().any(|s| name.eq_ignore_ascii_case(s))
        || named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The request as the engine hands it to the origin: the visitor's fields (case kept) but the
/// stripped ones, with [`to_origin`]'s; and the visitor's `Accept`.
fn upstream_request(
    request: &hit::Request<'_>,
    to: &ToOrigin<'_>,
) -> Option<(Box<RequestHeader>, Option<String>)> {
    let fields = request.fields();
    let named = stripped_fields(fields)?;
    let method = if request.head_only { "HEAD" } else { "GET" };
    let mut req =
        RequestHeader::build(method, request.target.as_bytes(), Some(fields.len())).ok()?;
    let mut accept = None;
    for field in fields {
        let name = field.name;
        if is_stripped(&named, name) {
            continue;
        }
        if name.eq_ignore_ascii_case("accept") && accept.is_none() {
            accept = std::str::from_utf8(field.value).ok().map(str::to_owned);
        }
        req.append_header(name.to_owned(), field.value).ok()?;
    }
    to.write_into(&mut req).ok()?;
    Some((Box::new(req), accept))
}

/// Fields the edge writes itself toward the origin, in place of any the visitor sent.
const REPLACED: &[&str] = &[
    "x-forwarded-for",
    "cf-connecting-ip",
    "x-forwarded-proto",
    "cf-visitor",
    "cf-ray",
    "cdn-loop",
];

/// A GET for the origin as bytes, equal field for field to what [`upstream_request`] builds
/// (the order of fields aside); the visitor's `Accept`; and the `Accept-Encoding` the origin
/// is sent when the cache knows the URL.
///
/// It relies on [`hit::request`] having left to the engine the requests whose fields this does
/// not merge as the engine does: a `CDN-Loop` (the engine appends to it) and more than one
/// `Accept-Encoding` (the engine joins them).
fn wire_request(
    request: &hit::Request<'_>,
    to: &ToOrigin<'_>,
) -> Option<(Vec<u8>, Option<String>, Option<&'static str>)> {
    let fields = request.fields();
    // What the engine's header map refuses is the engine's (it reads every field before it
    // strips any).
    let taken = fields.iter().all(|field| {
        header_map_takes(field.name.as_bytes())
            && http::HeaderValue::from_bytes(field.value).is_ok()
    });
    if !taken {
        return None;
    }
    let named = stripped_fields(fields)?;
    let kept = fields
        .iter()
        .filter(|field| !is_stripped(&named, field.name))
        .map(|field| (field.name.as_bytes(), field.value));
    let mut out = Vec::with_capacity(request.len + 320);
    let (accept, coding) = wire_fields(&mut out, "GET", request.target, kept, to);
    Some((out, accept, coding))
}

/// A GET the engine has read (an HTTP/2 visitor's) for the origin as bytes, as
/// [`wire_request`] writes one: `Host` from the `:authority`, without this hop's fields. `None`
/// for a request whose fields this does not merge as the engine does (a `CDN-Loop`, more than
/// one `Accept-Encoding` or `Cookie`: HTTP/2 visitors send cookies in pieces; a weighted
/// `Accept-Encoding`, which the engine lists by weight).
pub(crate) fn wire_session_request(
    req: &RequestHeader,
    to: &ToOrigin<'_>,
) -> Option<(Vec<u8>, Option<&'static str>)> {
    let several = |name| req.headers.get_all(name).iter().nth(1).is_some();
    let weighted = req
        .headers
        .get(header::ACCEPT_ENCODING)
        .is_some_and(|v| crate::headers::weighs_codings(v.as_bytes()));
    if req.headers.contains_key("cdn-loop")
        || several(header::ACCEPT_ENCODING)
        || several(header::COOKIE)
        || weighted
    {
        return None;
    }
    let authority = req.uri.authority().map(|a| a.as_str().as_bytes());
    // What the engine refuses is the engine's: userinfo, a `Host` rule that is no authority.
    if authority.is_some_and(|a| a.contains(&b'@'))
        || to
            .origin
            .host_header
            .as_deref()
            .is_some_and(|h| h.contains('@') || http::uri::Authority::try_from(h).is_err())
    {
        return None;
    }
    let fields = authority.map(|a| (&b"host"[..], a)).into_iter().chain(
        req.headers
            .iter()
            .filter(|(name, _)| {
                let replaced = authority.is_some() && *name == header::HOST;
                !replaced && !is_stripped(&[], name.as_str())
            })
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
    );
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(512);
    let (_, coding) = wire_fields(&mut out, "GET", target, fields, to);
    Some((out, coding))
}

/// The request line and `fields` (this hop's already left out) with [`to_origin`]'s, into
/// `out`; the visitor's `Accept`, and the `Accept-Encoding` the origin is sent when the cache
/// knows the URL.
fn wire_fields<'f>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
    to: &ToOrigin<'_>,
) -> (Option<String>, Option<&'static str>) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut accept, mut forwarded_for, mut accept_encoding) = (None, None::<String>, None);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"accept") && accept.is_none() {
            accept = std::str::from_utf8(value).ok().map(str::to_owned);
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            // Every one that is text, as one list (as the engine reads them).
            if let Some(value) = visible_text(value) {
                crate::headers::extend_list(&mut forwarded_for, value);
            }
            continue;
        }
        if REPLACED
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
            || crate::headers::impersonates_edge(name)
            || (to.origin.host_header.is_some() && name.eq_ignore_ascii_case(b"host"))
        {
            continue;
        }
        if to.cache_asked && name.eq_ignore_ascii_case(b"accept-encoding") {
            accept_encoding = Some(value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"host")
            && let Some(host) = crate::proxy::canonical_host(value, to.origin, (to.https, to.port))
        {
            field_line(out, name, host.as_bytes());
            continue;
        }
        field_line(out, name, value);
    }
    if let Some(host) = to.origin.host_header.as_deref() {
        field_line(out, b"host", host.as_bytes());
    }
    let mut asked_coding = None;
    if to.cache_asked {
        let class = normalized_encoding(accept_encoding.unwrap_or_default());
        if !class.is_empty() {
            field_line(out, b"accept-encoding", class.as_bytes());
            asked_coding = Some(class);
        }
    }
    let mut text = [0u8; 64];
    let len = ip_text(to.client, &mut text);
    let client = &text[..len];
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(existing) = forwarded_for {
        let existing = existing.trim();
        if !existing.is_empty() {
            out.extend_from_slice(existing.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(client);
    out.extend_from_slice(b"\r\n");
    field_line(out, b"cf-connecting-ip", client);
    let (proto, visitor) = if to.https {
        ("https", r#"{"scheme":"https"}"#)
    } else {
        ("http", r#"{"scheme":"http"}"#)
    };
    field_line(out, b"x-forwarded-proto", proto.as_bytes());
    field_line(out, b"cf-visitor", visitor.as_bytes());
    field_line(out, b"cf-ray", to.ray.as_bytes());
    field_line(out, b"cdn-loop", CDN_LOOP_TOKEN.as_bytes());
    field_line(
        out,
        b"surrogate-capability",
        crate::freshness::SURROGATE_CAPABILITY.as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    (accept, asked_coding)
}

/// A field value as text, when the engine's header map reads it as text (visible ASCII, spaces
/// and tabs).
fn visible_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the response to a URL the cache bypassed (its last response could not be stored)
/// teaches the cache's predictor, as the engine's cache filter decides it: nothing when it cannot
/// be stored either; that it can, at once or, for a URL bypassed for its size (or for a reason
/// not remembered) whose response gives no length, once its whole body has come within the
/// largest object the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lesson {
    Nothing,
    Cacheable,
    /// Cacheable if the body, counted so far in `.1`, stays within `.0` bytes.
    CacheableWithin(usize, usize),
    /// Storable but larger than the largest object the cache keeps.
    TooLarge,
}

impl Lesson {
    /// `length`: the answer's length as the cache would store it; `get_ok`: a 200 to a GET,
    /// which the engine stores at once, and so first checks against the limit.
    pub(crate) fn of(
        cacheable: bool,
        bypassed_for: Option<NoCacheReason>,
        limit: Option<usize>,
        length: Option<usize>,
        get_ok: bool,
    ) -> Self {
        if !cacheable {
            return Self::Nothing;
        }
        let for_size = bypassed_for.is_none_or(|r| r == NoCacheReason::ResponseTooLarge);
        match (limit, length) {
            (Some(limit), None) if for_size => Self::CacheableWithin(limit, 0),
            (Some(limit), Some(length)) if get_ok && length > limit => Self::TooLarge,
            _ => Self::Cacheable,
        }
    }

    /// Tells the predictor what is learnt as soon as the header is read.
    pub(crate) fn teach_now(&self, predictor: &dyn CacheablePredictor, key: &CacheKey) {
        match self {
            Self::Cacheable => {
                predictor.mark_cacheable(key);
            }
            Self::TooLarge => {
                predictor.mark_uncacheable(key, NoCacheReason::ResponseTooLarge);
            }
            Self::Nothing | Self::CacheableWithin(..) => {}
        }
    }

    /// Counts a piece of the body.
    pub(crate) fn count(&mut self, data: Option<&bytes::Bytes>) {
        if let Self::CacheableWithin(_, seen) = self {
            *seen = seen.saturating_add(data.map_or(0, bytes::Bytes::len));
        }
    }

    /// Whether the whole body, now read, makes the URL cacheable.
    pub(crate) fn learnt_at_end(&self) -> bool {
        matches!(self, Self::CacheableWithin(limit, seen) if seen <= limit)
    }
}

/// How a pass-through ended, for the log.
struct Ended {
    status: u16,
    bytes: usize,
    origin_time: Option<Duration>,
    error: Option<EdgeError>,
    /// The visitor's connection may serve another request.
    reusable: bool,
}

/// Passes the request on and answers the visitor; whether the connection may serve another
/// request.
pub(crate) async fn send(stream: &mut Stream, pass: Box<Pass>, proxy: &EdgeProxy) -> bool {
    let mut pass = pass;
    let ended = if hit::take_request(stream, pass.request_len).await {
        exchange(stream, &mut pass, proxy).await
    } else {
        Ended {
            status: 0,
            bytes: 0,
            origin_time: None,
            error: None,
            reusable: false,
        }
    };
    proxy
        .metrics
        .direct_pass_finished(&pass.origin.zone_id, ended.status, ended.origin_time);
    if access_logged() {
        AccessLine {
            ray: &pass.ray,
            zone: Some(&pass.origin.zone_id),
            host: Some(&pass.origin.host),
            method: if pass.head_only { "HEAD" } else { "GET" },
            path: &pass.path,
            status: ended.status,
            bytes: ended.bytes,
            started: pass.started,
            cache: pass.status.0,
            client_ip: Some(pass.client),
            edge_error: ended.error.map(EdgeError::code),
            origin_time: ended.origin_time,
        }
        .log();
    }
    if !ended.reusable {
        crate::stream::close_within_send_timeout(stream).await;
    }
    ended.reusable
}

/// `work`, unless `visitor` closes its connection first (`None`: the answer would be for
/// nobody, and the origin's connection goes, as the engine and nginx give up).
async fn unless_left<T>(
    visitor: &crate::stream::VisitorStream,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        biased;
        done = &mut work => Some(done),
        left = visitor.closed() => if left { None } else { Some(work.await) },
    }
}

/// The origin's answer, or the page saying why there is none.
async fn exchange(stream: &mut Stream, pass: &mut Pass, proxy: &EdgeProxy) -> Ended {
    let asking = Asking {
        wire: &pass.wire,
        head_only: pass.head_only,
        addrs: &pass.origin.addrs,
        port: pass.port,
        connect_timeout: pass.connect_timeout,
        read_timeout: pass.read_timeout,
        idle_timeout: pass.idle_timeout.unwrap_or(POOL_IDLE),
        ray: &pass.ray,
    };
    let asked = match stream
        .as_any()
        .downcast_ref::<crate::stream::VisitorStream>()
    {
        Some(visitor) => match unless_left(visitor, ask(&asking)).await {
            Some(asked) => asked,
            None => return closed(0),
        },
        None => ask(&asking).await,
    };
    let (mut reply, mut head, addr, sent) = match asked {
        Ok(asked) => asked,
        Err(e) => return Box::pin(error_answer(stream, pass, &e)).await,
    };
    let mut informational = 0;
    while head.status.is_informational() {
        // 100 is never passed on (nothing asked for it); other 1xx are, as the engine does;
        // 101 without an upgrade asked for is an invalid answer.
        informational += 1;
        if head.status == http::StatusCode::SWITCHING_PROTOCOLS || informational > 8 {
            let e = Error::explain(ErrorType::InvalidHTTPHeader, "unexpected 1xx");
            return Box::pin(error_answer(stream, pass, &e.into_up())).await;
        }
        if head.status != http::StatusCode::CONTINUE {
            let Some(resp) = head.to_header(|_| true) else {
                let e = Error::explain(ErrorType::InvalidHTTPHeader, "response fields");
                return Box::pin(error_answer(stream, pass, &e.into_up())).await;
            };
            if !Box::pin(write_informational(stream, pass, Box::new(resp), addr)).await {
                return closed(0);
            }
        }
        head = match reply.head(pass.head_only).await {
            Ok(head) => head,
            Err(e) => return Box::pin(error_answer(stream, pass, &e.into_up())).await,
        };
    }
    let answered = Instant::now();
    let origin_time = answered.saturating_duration_since(sent);
    let end = reply.is_done();
    let status = head.status.as_u16();
    let filter = OriginFilter::of_fields(head.status, || head.fields(), Some(addr));
    // Judged on the fields the judgement reads, as the engine's filters leave them.
    let cacheable = pass.learn.is_some()
        && !plainly_not_stored(&head, &filter, pass.rules.as_deref())
        && head
            .to_header(|name| is_one_of(name, &JUDGED) && !filter.drops_name(name))
            .is_some_and(|judged| {
                matches!(
                    cacheability(false, &judged, pass.rules.as_deref()),
                    RespCacheable::Cacheable(_)
                )
            });
    let no_body = pass.head_only || matches!(status, 204 | 304);
    let Some(Answered {
        head: rendered,
        chunked,
        framed,
        stored_length,
    }) = answer_head(pass, answered, &head, &filter, end, no_body)
    else {
        let e = Error::explain(ErrorType::InvalidHTTPHeader, "response fields");
        return Box::pin(error_answer(stream, pass, &e.into_up())).await;
    };
    drop(head);
    let mut lesson = Lesson::Nothing;
    if let (Some(key), Some(cache)) = (&pass.learn, proxy.cache) {
        lesson = Lesson::of(
            cacheable,
            pass.bypassed_for,
            Some(cache.store.max_object_bytes()),
            stored_length,
            !pass.head_only && status == 200,
        );
        lesson.teach_now(&cache.predictor, key);
    }
    let keep_alive = pass.keep_alive && framed;
    let mut out = rendered;
    out.put_slice(b"Connection: ");
    out.put_slice(if keep_alive { b"keep-alive" } else { b"close" });
    out.put_slice(b"\r\n\r\n");
    let mut bytes = 0;
    let mut done = end || no_body;
    // Whether the body made this wait, for the visitor or the origin (until then, the time the
    // answer ends is the header's).
    let mut waited = false;
    while !done {
        let read = {
            let mut read = std::pin::pin!(reply.body());
            match poll_once(read.as_mut()) {
                Some(read) => read,
                None => {
                    // Nothing more has come yet: what is gathered goes out while it comes.
                    if send_now(stream, &[&out]).await.is_err() {
                        return gone(status, bytes, origin_time);
                    }
                    out.clear();
                    waited = true;
                    read.await
                }
            }
        };
        let chunk = match read {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(ray = %pass.ray, "the origin's answer broke off: {e}");
                // The visitor has a header and part of a body: only a close can say it failed.
                let _ = send_now(stream, &[&out]).await;
                return Ended {
                    status,
                    bytes,
                    origin_time: Some(origin_time),
                    error: None,
                    reusable: false,
                };
            }
        };
        done = chunk.is_none() || reply.is_done();
        let mut data = chunk;
        // A compression turned off for this answer ([`keep_bytes`]) never left its header phase.
        if let Some(upstream) = pass.upstream_compression.as_mut()
            && upstream.is_enabled()
            && let Some(encoded) = upstream.response_body_filter(data.as_ref(), done)
        {
            data = Some(encoded);
        }
        lesson.count(data.as_ref());
        if pass.compression.is_enabled()
            && let Some(encoded) = pass.compression.response_body_filter(data.as_ref(), done)
        {
            data = Some(encoded);
        }
        if let Some(data) = data.filter(|d| !d.is_empty()) {
            bytes += data.len();
            if chunked {
                out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            // Small pieces gather with the header; a large one goes out at once.
            if out.len() + data.len() <= GATHERED_BODY {
                out.put_slice(&data);
            } else {
                if send_now(stream, &[&out, &data]).await.is_err() {
                    return gone(status, bytes, origin_time);
                }
                out.clear();
                waited = true;
            }
            if chunked {
                out.put_slice(b"\r\n");
            }
        }
    }
    if chunked {
        out.put_slice(b"0\r\n\r\n");
    }
    let written = send_now(stream, &[&out]).await.is_ok();
    if let (Some(key), Some(cache)) = (&pass.learn, proxy.cache)
        && lesson.learnt_at_end()
    {
        cache.predictor.mark_cacheable(key);
    }
    // The origin's connection, once its answer is whole, serves the next request.
    if let Some(connection) = reply.reusable() {
        let idle_since = if waited { Instant::now() } else { answered };
        pool_put(
            addr,
            connection,
            pass.idle_timeout.unwrap_or(POOL_IDLE),
            idle_since,
        );
    }
    Ended {
        status,
        bytes,
        origin_time: Some(origin_time),
        error: None,
        reusable: written && keep_alive,
    }
}

/// The header an answer goes out with (but `Connection`), and how its body is framed.
struct Answered {
    head: BytesMut,
    chunked: bool,
    /// The body's end is known without the connection closing.
    framed: bool,
    /// The length the cache would store the answer with (after its own compression).
    stored_length: Option<usize>,
}

/// How much of an answer is gathered before it is sent.
const GATHERED_BODY: usize = 16 * 1024;

/// Response fields the engine's compression reads or changes: they go through it on a header of
/// their own when a compression may change the answer ([`coded`]).
const CODING_FIELDS: [&str; 7] = [
    "content-encoding",
    "content-length",
    "content-type",
    "vary",
    "accept-ranges",
    "etag",
    "transfer-encoding",
];

/// `name` as [`CODING_FIELDS`] lists it (lowercase), when it is one of them.
fn coding_name(name: &[u8]) -> Option<&'static str> {
    CODING_FIELDS
        .iter()
        .find(|n| n.as_bytes().eq_ignore_ascii_case(name))
        .copied()
}

/// Response fields whether a response may be stored is judged on ([`cacheability`]).
const JUDGED: [&str; 10] = [
    "set-cookie",
    "vary",
    "cache-control",
    "expires",
    "date",
    "age",
    "last-modified",
    "cloudflare-cdn-cache-control",
    "cdn-cache-control",
    "surrogate-control",
];

/// An answer [`cacheability`] does not store, known from its fields as they come: one that
/// plainly says `no-store` with neither a rule's edge TTL nor a CDN-targeted field over it.
fn plainly_not_stored(head: &Head, filter: &OriginFilter, rules: Option<&CacheParameters>) -> bool {
    let judged = || head.fields().filter(|(name, _)| !filter.drops_name(name));
    rules.is_none_or(|r| r.edge_ttl_for(head.status.as_u16()).is_none())
        && !judged().any(|(name, _)| is_one_of(name, &crate::freshness::TARGETED))
        && values_say_no_store(
            judged()
                .filter(|(name, _)| name.eq_ignore_ascii_case(b"cache-control"))
                .map(|(_, value)| value),
        )
}

fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// The visitor's header for the origin's answer, written from the origin's fields as the
/// engine's filters would leave them ([`from_origin`], [`to_visitor`], the framing of a body
/// that ends with the connection, both compressions).
fn answer_head(
    pass: &mut Pass,
    answered: Instant,
    head: &Head,
    filter: &OriginFilter,
    end: bool,
    no_body: bool,
) -> Option<Answered> {
    // To the visitor: what this edge writes itself replaces the origin's.
    let hsts = pass.origin.edge.settings.hsts.filter(|_| pass.https);
    let browser_ttl = browser_cache_control(pass.rules.as_deref());
    let written_here = |name: &[u8]| {
        is_one_of(
            name,
            &[
                "connection",
                "date",
                "server",
                "cf-ray",
                "cf-cache-status",
                "cache-status",
            ],
        ) || EDGE_ONLY
            .iter()
            .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name))
            || (hsts.is_some() && name.eq_ignore_ascii_case(b"strict-transport-security"))
            || (hsts.is_some_and(|h| h.nosniff)
                && name.eq_ignore_ascii_case(b"x-content-type-options"))
            || (browser_ttl.is_some() && name.eq_ignore_ascii_case(b"cache-control"))
    };
    // The fields compression decides on, as both of the engine's compressions leave them.
    let kept = |name: &[u8]| coding_name(name).is_some() && !filter.drops_name(name);
    let compressions = Compressions {
        visitor: (&mut pass.compression, pass.coding_asked.visitor),
        upstream: pass
            .upstream_compression
            .as_mut()
            .map(|c| (c, pass.coding_asked.upstream)),
        rules: pass.rules.as_deref(),
    };
    let Coded {
        coding,
        stored_length,
        chunked,
        framed,
    } = coded(head, &kept, compressions, end, no_body)?;

    // Room for the header and a body small enough to go out with it, so that neither grows it.
    let body_room = stored_length.filter(|&n| n <= GATHERED_BODY).unwrap_or(0);
    let mut out = BytesMut::with_capacity(head.raw_len() + 512 + body_room);
    put_status_line(
        &mut out,
        head.status,
        Some(head.reason()).filter(|r| !r.is_empty()),
    );
    let mut field = |name: &[u8], value: &[u8]| put_field(&mut out, name, value);
    for (name, value) in head.fields() {
        if coding_name(name).is_none() && !filter.drops_field(name, value) && !written_here(name) {
            field(name, value);
        }
    }
    match &coding {
        Coding::Header(coding) => {
            for (name, value) in &coding.headers {
                field(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        Coding::Origin {
            chunked_added,
            vary_added,
        } => {
            // Named as a header of their own would name them: lowercase.
            for (name, value) in head.fields() {
                if let Some(lower) = coding_name(name).filter(|_| !filter.drops_name(name)) {
                    field(lower.as_bytes(), value);
                }
            }
            if *chunked_added {
                field(b"transfer-encoding", b"chunked");
            }
            if *vary_added {
                field(b"vary", b"accept-encoding");
            }
        }
    }
    field(b"cf-ray", pass.ray.as_bytes());
    field(b"server", b"parapet");
    field(b"cf-cache-status", pass.status.0.as_bytes());
    field(b"cache-status", pass.status.1.as_bytes());
    if let Some(hsts) = hsts {
        field(b"strict-transport-security", hsts.header_value().as_bytes());
        if hsts.nosniff {
            field(b"x-content-type-options", b"nosniff");
        }
    }
    if let Some(ttl) = &browser_ttl {
        field(b"cache-control", ttl.as_bytes());
    }
    with_date(answered, |date| field(b"Date", date));
    Some(Answered {
        head: out,
        chunked,
        framed,
        stored_length,
    })
}

/// The compressions an answer goes through: the visitor's, and for a URL the cache knows the
/// engine's own of what the origin sends; each with whether it had an `Accept-Encoding` to read.
struct Compressions<'a> {
    visitor: (&'a mut ResponseCompressionCtx, bool),
    upstream: Option<(&'a mut ResponseCompressionCtx, bool)>,
    rules: Option<&'a CacheParameters>,
}

impl Compressions<'_> {
    /// The upstream one first, as the engine applies them.
    fn each(&mut self) -> impl Iterator<Item = &mut ResponseCompressionCtx> {
        let upstream = self.upstream.as_mut().map(|(c, _)| &mut **c);
        upstream.into_iter().chain([&mut *self.visitor.0])
    }
}

/// The coding fields of an answer as both compressions leave them.
enum Coding {
    /// Through both compressions, on a header of their own.
    Header(Box<ResponseHeader>),
    /// Untouched: the origin's fields, with `Transfer-Encoding: chunked` and
    /// `Vary: accept-encoding` where the header would have them added.
    Origin {
        chunked_added: bool,
        vary_added: bool,
    },
}

struct Coded {
    coding: Coding,
    stored_length: Option<usize>,
    chunked: bool,
    framed: bool,
}

/// The answer's coding fields (those `kept` of [`CODING_FIELDS`]) through both compressions,
/// which are left past their header phase.
fn coded(
    head: &Head,
    kept: &impl Fn(&[u8]) -> bool,
    mut compressions: Compressions<'_>,
    end: bool,
    no_body: bool,
) -> Option<Coded> {
    // The origin may forbid changing the body (RFC 9110 §7.7): then neither compression does.
    let untransformable = head.fields().any(|(name, value)| {
        name.eq_ignore_ascii_case(b"cache-control") && forbids_transform(value)
    });
    if let Some(coded) = untouched(
        head,
        kept,
        (&mut compressions, untransformable),
        end,
        no_body,
    ) {
        return Some(coded);
    }
    through_compressions(head, kept, (compressions, untransformable), end, no_body)
}

/// [`coded`] on a header of the compressions' own.
fn through_compressions(
    head: &Head,
    kept: &impl Fn(&[u8]) -> bool,
    (compressions, untransformable): (Compressions<'_>, bool),
    end: bool,
    no_body: bool,
) -> Option<Coded> {
    let mut coding = head.to_header(kept)?;
    // A body that ends with the connection goes to the visitor chunked (as the engine's).
    if !no_body
        && !end
        && !coding.headers.contains_key(header::TRANSFER_ENCODING)
        && !coding.headers.contains_key(header::CONTENT_LENGTH)
    {
        coding
            .insert_header(header::TRANSFER_ENCODING, "chunked")
            .ok()?;
    }
    let Compressions {
        visitor,
        upstream,
        rules,
    } = compressions;
    // (The coding fields hold no Cache-Control: whether it forbids transforming was read
    // from the whole head.)
    if let Some((upstream, _)) = upstream {
        keep_bytes_unless(rules, &coding, untransformable, upstream);
        upstream.response_header_filter(&mut coding, end);
    }
    keep_bytes_unless(rules, &coding, untransformable, visitor.0);
    let stored_length = content_length(&coding);
    visitor.0.response_header_filter(&mut coding, end);
    let chunked = !no_body && is_chunked(&coding);
    let framed = no_body || chunked || coding.headers.contains_key(header::CONTENT_LENGTH);
    Some(Coded {
        coding: Coding::Header(Box::new(coding)),
        stored_length,
        chunked,
        framed,
    })
}

/// [`coded`] without a header of the compressions' own, when neither would change the body:
/// the answer has no `Content-Encoding`, and no compression that had an `Accept-Encoding` finds
/// it compressible. Each is left as its header filter would leave it. `None`, with nothing
/// changed, otherwise.
fn untouched(
    head: &Head,
    kept: &impl Fn(&[u8]) -> bool,
    (compressions, untransformable): (&mut Compressions<'_>, bool),
    end: bool,
    no_body: bool,
) -> Option<Coded> {
    if head.status.is_informational() {
        return None;
    }
    let mut lengths = 0;
    let (mut length, mut content_type, mut etag, mut last_coding) = (None, None, None, None);
    let mut varies = false;
    for (name, value) in head.fields().filter(|(name, _)| kept(name)) {
        if name.eq_ignore_ascii_case(b"content-encoding") {
            return None;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"etag") {
            etag.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            last_coding = Some(value);
        } else if name.eq_ignore_ascii_case(b"vary") {
            varies |= value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .any(|v| v == b"*" || v.eq_ignore_ascii_case(b"accept-encoding"));
        }
    }
    let compressible = hit::compressible_by(length, content_type)
        && edge_compresses(head.status, content_type)
        && !untransformable;
    let asked = compressions.visitor.1 || compressions.upstream.as_ref().is_some_and(|u| u.1);
    if compressible && asked {
        return None;
    }
    // What a compression's filter leaves an answer it does not change in.
    let mut left = ResponseHeader::build_no_case(http::StatusCode::OK, Some(0)).ok()?;
    let rules = compressions.rules;
    let mut vary_added = false;
    for compression in compressions.each() {
        keep_bytes_of(
            rules,
            etag,
            content_type,
            (head.status, untransformable),
            compression,
        );
        // The filter marks an answer whose type it could compress as varying by coding.
        if compression.is_enabled() && !end && compressible && !varies {
            vary_added = true;
            varies = true;
        }
        compression.response_header_filter(&mut left, true);
    }
    let chunked_added = !no_body && !end && last_coding.is_none() && lengths == 0;
    let is_chunked = chunked_added || last_coding_is_chunked(last_coding);
    Some(Coded {
        coding: Coding::Origin {
            chunked_added,
            vary_added,
        },
        stored_length: length
            .filter(|_| lengths == 1)
            .and_then(|l| std::str::from_utf8(l).ok()?.parse().ok()),
        chunked: !no_body && is_chunked,
        framed: no_body || is_chunked || lengths > 0,
    })
}

/// The future's output if it is ready without waiting.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Option<F::Output> {
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// The visitor went away while its answer was on its way: `bytes` of the body were sent, and
/// the origin had answered in `origin_time`.
fn gone(status: u16, bytes: usize, origin_time: Duration) -> Ended {
    Ended {
        bytes,
        origin_time: Some(origin_time),
        ..closed(status)
    }
}

fn closed(status: u16) -> Ended {
    Ended {
        status,
        bytes: 0,
        origin_time: None,
        error: None,
        reusable: false,
    }
}

/// A header's `Content-Length`, when it has one valid one.
pub(crate) fn content_length(resp: &ResponseHeader) -> Option<usize> {
    let mut values = resp.headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()
}

fn is_chunked(resp: &ResponseHeader) -> bool {
    last_coding_is_chunked(
        resp.headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .map(http::HeaderValue::as_bytes),
    )
}

/// A request on its way to a plain-HTTP/1.1 origin, as [`ask`] sends it.
pub(crate) struct Asking<'a> {
    /// The request, as bytes.
    pub(crate) wire: &'a [u8],
    pub(crate) head_only: bool,
    /// The origin's addresses, tried in [`balance::order`].
    pub(crate) addrs: &'a [IpAddr],
    pub(crate) port: u16,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    /// How long a connection may stay idle in the pool.
    pub(crate) idle_timeout: Duration,
    pub(crate) ray: &'a str,
}

/// The request sent and the origin's first response header read: a pooled connection first,
/// then new ones, the origin's addresses tried in [`balance::order`] (a pooled connection that
/// turns out stale is replaced by a new one to the same address), as the engine retries.
pub(crate) async fn ask(
    pass: &Asking<'_>,
) -> Result<(Reply, Head, SocketAddr, Instant), Box<Error>> {
    let addrs = balance::order(pass.addrs, pass.port);
    let count = addrs.len();
    let mut attempt = 0;
    let mut pooled_failed = false;
    loop {
        let Some(&ip) = addrs.get(attempt) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "route without an address",
            ));
        };
        let addr = SocketAddr::new(ip, pass.port);
        let now = Instant::now();
        let pooled = if pooled_failed {
            None
        } else {
            pool_take(addr, pass.idle_timeout, now)
        };
        let reused = pooled.is_some();
        let (mut connection, buf) = match pooled {
            Some(kept) => kept,
            None => match Box::pin(connect(addr, pass.connect_timeout)).await {
                Ok(connection) => {
                    balance::connected(addr);
                    (connection, BytesMut::new())
                }
                Err(e) => {
                    balance::failed(addr, e.etype());
                    if attempt + 1 == count {
                        return Err(e);
                    }
                    tracing::warn!(ray = %pass.ray, origin = %addr, "connecting to the origin failed, trying its next address: {e}");
                    attempt += 1;
                    continue;
                }
            },
        };
        // A pooled connection is written to at once; a new one after its connect.
        let sent = if reused { now } else { Instant::now() };
        let asked = match write_wire(&mut connection, pass.wire, pass.read_timeout).await {
            Ok(()) => {
                let mut reply = Reply::new(connection, buf, pass.read_timeout);
                reply.head(pass.head_only).await.map(|head| (reply, head))
            }
            Err(e) => Err(e),
        };
        match asked {
            Ok((reply, head)) => return Ok((reply, head, addr, sent)),
            Err(e) if reused && crate::proxy::pooled_connection_lost(&e) => pooled_failed = true,
            // The connection failed: the next address. Not after a timeout or a bad answer
            // (the origin had the request; see `error_while_proxy`).
            Err(e) if attempt + 1 < count && crate::proxy::pooled_connection_lost(&e) => {
                tracing::warn!(ray = %pass.ray, origin = %addr, "the origin's connection failed before an answer, trying its next address: {e}");
                attempt += 1;
                pooled_failed = true;
            }
            // Which of the origin's addresses failed, for the log line the failure gets.
            Err(e) => return Err(e.into_up().more_context(format!("origin {addr}"))),
        }
    }
}

/// Writes a request given as bytes, as the engine's client writes one, within `timeout` (an
/// origin that takes nothing in does not hold the request).
async fn write_wire(
    connection: &mut TcpStream,
    wire: &[u8],
    timeout: Duration,
) -> Result<(), Box<Error>> {
    // Most requests go into the socket's buffer at once: no timer for those.
    let mut written = 0;
    while written < wire.len() {
        match connection.try_write(&wire[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                return Err(Error::because(
                    ErrorType::WriteError,
                    "writing the request",
                    e,
                ));
            }
        }
    }
    if written == wire.len() {
        return Ok(());
    }
    let writing = async {
        connection.write_all(&wire[written..]).await?;
        connection.flush().await
    };
    match tokio::time::timeout(timeout, writing).await {
        Ok(written) => {
            written.map_err(|e| Error::because(ErrorType::WriteError, "writing the request", e))
        }
        Err(_) => Error::e_explain(ErrorType::WriteTimedout, "writing the request"),
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Box<Error>> {
    let context = || format!("connecting to {addr}");
    let connection = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(connection)) => connection,
        // Failures are told apart as the engine's connector tells them apart.
        Ok(Err(e)) => {
            let kind = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                std::io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
                // No local address or port to connect from: the edge's own failure, which the
                // engine answers by closing the visitor's connection.
                std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::AddrInUse
                | std::io::ErrorKind::PermissionDenied => ErrorType::InternalError,
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                    ErrorType::ConnectNoRoute
                }
                _ => ErrorType::ConnectError,
            };
            return Err(Error::because(kind, context(), e));
        }
        Err(_) => return Err(Error::explain(ErrorType::ConnectTimedout, context())),
    };
    connection
        .set_nodelay(true)
        .map_err(|e| Error::because(ErrorType::ConnectError, context(), e))?;
    Ok(connection)
}

/// Idle origin connections of one worker thread, by address, newest last: each with when it
/// became idle and how long it may stay.
#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<(Kept, Instant, Duration)>>,
    swept: Option<Instant>,
    /// A task sweeps this pool while it holds connections, traffic or not.
    sweeping: bool,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Every second at most, idle connections that were kept too long or that their origin
/// closed are dropped, whatever their origin.
fn sweep(pool: &mut Pool, now: Instant) {
    if pool
        .swept
        .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
    {
        return;
    }
    pool.swept = Some(now);
    pool.idle.retain(|_, idle_ones| {
        idle_ones.retain_mut(|((connection, _), since, limit)| {
            now.duration_since(*since) < *limit && still_open(connection)
        });
        !idle_ones.is_empty()
    });
}

/// An idle connection to `addr` that is still open and has sent nothing since (`now`: the
/// time, read once by the caller).
fn pool_take(addr: SocketAddr, idle: Duration, now: Instant) -> Option<Kept> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        sweep(&mut pool, now);
        let pool = &mut pool.idle;
        let idle_ones = pool.get_mut(&addr)?;
        while let Some(((mut connection, buf), since, _)) = idle_ones.pop() {
            if now.duration_since(since) < idle && still_open(&mut connection) {
                return Some((connection, buf));
            }
        }
        None
    })
}

/// Keeps a connection whose last answer ended about `now` (idle from then).
pub(crate) fn pool_put(addr: SocketAddr, (connection, buf): Kept, idle: Duration, now: Instant) {
    // A buffer a large answer grew is not kept.
    let buf = if buf.capacity() > KEPT_BUFFER {
        BytesMut::new()
    } else {
        buf
    };
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        sweep(&mut pool, now);
        let idle_ones = pool.idle.entry(addr).or_default();
        if idle_ones.len() >= POOL_PER_ORIGIN {
            idle_ones.remove(0);
        }
        idle_ones.push(((connection, buf), now, idle));
        if !pool.sweeping {
            pool.sweeping = start_sweeping();
        }
    });
}

/// Starts the task that sweeps this thread's pool every second until it is empty, so that
/// connections an origin closed or that were kept too long are let go even when no request
/// comes (each worker runs its own single-threaded runtime, where the task stays on this
/// thread); whether it started.
fn start_sweeping() -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return false;
    }
    /// Marks the pool unswept if the task ends early (its runtime stopping), so that a later
    /// connection starts another.
    struct Sweeping;
    impl Drop for Sweeping {
        fn drop(&mut self) {
            let _ = POOL.try_with(|pool| {
                if let Ok(mut pool) = pool.try_borrow_mut() {
                    pool.sweeping = false;
                }
            });
        }
    }
    runtime.spawn(async {
        let _sweeping = Sweeping;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let done = POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                pool.swept = None;
                sweep(&mut pool, Instant::now());
                pool.sweeping = !pool.idle.is_empty();
                !pool.sweeping
            });
            if done {
                return;
            }
        }
    });
    true
}

/// Whether an idle connection can be used: nothing to read yet (a close or stray bytes mean it
/// cannot).
fn still_open(connection: &mut TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(
        Pin::new(connection).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

/// What the visitor sees added (as [`to_visitor`]); whether it could be.
fn visitor_fields(pass: &Pass, resp: &mut ResponseHeader) -> bool {
    let hsts = pass.origin.edge.settings.hsts.filter(|_| pass.https);
    to_visitor(resp, pass.status, pass.rules.as_deref(), &pass.ray, hsts).is_ok()
}

/// `HTTP/1.1`, the status and its reason (the status's usual one when none is given).
fn put_status_line(out: &mut BytesMut, status: http::StatusCode, reason: Option<&[u8]>) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(
        reason
            .or_else(|| status.canonical_reason().map(str::as_bytes))
            .unwrap_or_default(),
    );
    out.put_slice(b"\r\n");
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The header of a response (status line and fields, in order and case) into `out`.
fn render(resp: &ResponseHeader, out: &mut BytesMut) {
    put_status_line(
        out,
        resp.status,
        resp.get_reason_phrase().map(str::as_bytes),
    );
    let mut field = |name: &[u8], value: &[u8]| put_field(out, name, value);
    if resp.has_case() {
        for (name, value) in resp.case_header_iter() {
            field(name.as_slice(), value.as_bytes());
        }
    } else {
        for (name, value) in &resp.headers {
            field(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    out.put_slice(b"\r\n");
}

/// A 1xx response of the origin's, passed on with the fields the engine gives it.
async fn write_informational(
    stream: &mut Stream,
    pass: &Pass,
    mut resp: Box<ResponseHeader>,
    addr: SocketAddr,
) -> bool {
    from_origin(&mut resp, Some(addr));
    if !visitor_fields(pass, &mut resp) {
        return false;
    }
    let mut out = BytesMut::with_capacity(256);
    render(&resp, &mut out);
    send_now(stream, &[&out]).await.is_ok()
}

/// The page for a failure to get the origin's answer, compressed as the engine's would be; the
/// connection closes after it, as the engine's does.
async fn error_answer(stream: &mut Stream, pass: &mut Pass, e: &Error) -> Ended {
    let Some(error) = edge_error(e) else {
        return closed(0);
    };
    tracing::warn!(ray = %pass.ray, "passing to the origin: {e}");
    let (body, content_type) = error_page(
        error,
        &pass.ray,
        Some(&pass.origin.host),
        pass.accept.as_deref(),
    );
    let status = error.status();
    let Some(mut resp) = page_header(status, content_type, body.len(), &pass.ray) else {
        return closed(0);
    };
    pass.compression
        .response_header_filter(&mut resp, pass.head_only);
    let date = with_date(Instant::now(), |date| {
        http::HeaderValue::from_bytes(date).ok()
    });
    if let Some(date) = date {
        let _ = resp.insert_header(header::DATE, date);
    }
    let _ = resp.insert_header(header::CONNECTION, "close");
    let mut out = BytesMut::with_capacity(512 + body.len());
    render(&resp, &mut out);
    let mut bytes = 0;
    if !pass.head_only {
        let body = bytes::Bytes::from(body);
        let sent = if pass.compression.is_enabled() {
            pass.compression.response_body_filter(Some(&body), true)
        } else {
            None
        }
        .unwrap_or(body);
        bytes = sent.len();
        if is_chunked(&resp) {
            out.put_slice(format!("{:x}\r\n", sent.len()).as_bytes());
            out.put_slice(&sent);
            out.put_slice(b"\r\n0\r\n\r\n");
        } else {
            out.put_slice(&sent);
        }
    }
    let _ = send_now(stream, &[&out]).await;
    Ended {
        status,
        bytes,
        origin_time: None,
        error: Some(error),
        reusable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_an_origin_does_not_take_in_fails_within_the_timeout() {
        // The origin accepts and never reads: 8 MiB cannot all go into the socket buffers.
        let (mut connection, _origin, _) = crate::loopback_pair().await;
        let wire = vec![b'a'; 8 << 20];
        let started = Instant::now();
        let written = write_wire(&mut connection, &wire, Duration::from_millis(200)).await;
        let e = written.expect_err("not written");
        assert_eq!(e.etype(), &ErrorType::WriteTimedout);
        assert!(started.elapsed() < Duration::from_secs(2));
        // A request the origin takes in is written.
        let (mut other, mut taken, _) = crate::loopback_pair().await;
        write_wire(
            &mut other,
            b"GET / HTTP/1.1\r\n\r\n",
            Duration::from_millis(200),
        )
        .await
        .expect("written");
        let mut got = [0u8; 18];
        tokio::io::AsyncReadExt::read_exact(&mut taken, &mut got)
            .await
            .expect("read");
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_bypassed_url_learns_as_the_engine_learns() {
        use NoCacheReason::{OriginNotCache, ResponseTooLarge};
        // An answer that cannot be stored either teaches nothing.
        assert_eq!(
            Lesson::of(false, Some(OriginNotCache), Some(10), None, true),
            Lesson::Nothing
        );
        // One that can is cacheable at once, unless the URL was bypassed for its size (or for
        // a reason not remembered) and the answer gives no length, or a 200 to a GET is longer
        // than the cache keeps.
        assert_eq!(
            Lesson::of(true, Some(OriginNotCache), Some(10), None, true),
            Lesson::Cacheable
        );
        assert_eq!(
            Lesson::of(true, Some(ResponseTooLarge), Some(10), Some(10), true),
            Lesson::Cacheable
        );
        assert_eq!(
            Lesson::of(true, Some(OriginNotCache), Some(10), Some(11), true),
            Lesson::TooLarge
        );
        assert_eq!(
            Lesson::of(true, Some(OriginNotCache), Some(10), Some(11), false),
            Lesson::Cacheable
        );
        assert_eq!(Lesson::of(true, None, None, None, true), Lesson::Cacheable);
        for reason in [Some(ResponseTooLarge), None] {
            let mut lesson = Lesson::of(true, reason, Some(10), None, true);
            lesson.count(Some(&bytes::Bytes::from_static(b"0123456789")));
            assert!(lesson.learnt_at_end(), "{reason:?}");
            lesson.count(Some(&bytes::Bytes::from_static(b"!")));
            assert!(!lesson.learnt_at_end(), "{reason:?}");
        }
        assert!(!Lesson::Cacheable.learnt_at_end());
    }
    use tokio::net::TcpListener;

    /// A connection to `listener`'s address, as the pool keeps it, and the origin's end.
    async fn connection(listener: &TcpListener) -> (Kept, TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (origin, _) = listener.accept().await.expect("accept");
        ((client, BytesMut::new()), origin)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_origin_connections_are_reused_only_while_open_silent_and_young() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let idle = Duration::from_secs(60);
        assert!(
            pool_take(addr, idle, Instant::now()).is_none(),
            "nothing kept yet"
        );

        // Open and silent: taken back, once.
        let (stream, _origin) = connection(&listener).await;
        pool_put(addr, stream, idle, Instant::now());
        assert!(pool_take(addr, idle, Instant::now()).is_some());
        assert!(pool_take(addr, idle, Instant::now()).is_none());

        // Closed by the origin, or with bytes nobody asked for: never handed out.
        let (stream, origin) = connection(&listener).await;
        pool_put(addr, stream, idle, Instant::now());
        drop(origin);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool_take(addr, idle, Instant::now()).is_none(),
            "closed by the origin"
        );
        let (stream, mut origin) = connection(&listener).await;
        pool_put(addr, stream, idle, Instant::now());
        origin
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool_take(addr, idle, Instant::now()).is_none(),
            "stray bytes"
        );

        // Kept longer than the zone allows: dropped.
        let (stream, _origin) = connection(&listener).await;
        pool_put(addr, stream, Duration::from_millis(20), Instant::now());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            pool_take(addr, Duration::from_millis(20), Instant::now()).is_none(),
            "expired"
        );

        // The sweep drops what expired for an address nobody asks for again.
        let (stream, _origin) = connection(&listener).await;
        pool_put(addr, stream, Duration::from_millis(20), Instant::now());
        tokio::time::sleep(Duration::from_millis(40)).await;
        POOL.with(|pool| pool.borrow_mut().swept = None);
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(pool_take(elsewhere, idle, Instant::now()).is_none());
        POOL.with(|pool| assert!(!pool.borrow().idle.contains_key(&addr), "swept"));
    }

    #[tokio::test]
    async fn connections_the_origin_closes_are_let_go_without_further_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (kept, origin) = connection(&listener).await;
        pool_put(addr, kept, Duration::from_secs(60), Instant::now());
        drop(origin);
        // No request comes: the pool's own task lets the connection go, then stops.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        POOL.with(|pool| {
            let pool = pool.borrow();
            assert!(!pool.idle.contains_key(&addr), "let go");
            assert!(!pool.sweeping, "the task stopped with the pool empty");
        });
    }

    #[test]
    fn answers_plainly_not_stored_are_those_the_judgement_does_not_store() {
        let rule = |json: serde_json::Value| {
            Some(serde_json::from_value::<CacheParameters>(json).expect("rule"))
        };
        let rules = [
            None,
            rule(serde_json::json!({"cache": true})),
            rule(
                serde_json::json!({"cache": true, "edge_ttl": {"mode": "override_origin", "default": 60}}),
            ),
            rule(
                serde_json::json!({"cache": true, "edge_ttl": {"mode": "respect_origin",
                "status_code_ttl": [{"status_code": 200, "value": 30}]}}),
            ),
        ];
        let heads: [&'static [u8]; 9] = [
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncache-control: public, No-Store=1\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nCache-Control: max-age=60, no-store\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nCDN-Cache-Control: max-age=60\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nSurrogate-Control: max-age=60\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nConnection: cache-control\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: private=\"x, no-store\"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nCache-Control: no-store\r\n\r\n",
        ];
        let mut shortcuts = 0;
        for raw in heads {
            let head = Head::of_bytes(raw);
            let filter = OriginFilter::of_fields(head.status, || head.fields(), None);
            for rules in &rules {
                let judged = head
                    .to_header(|name| is_one_of(name, &JUDGED) && !filter.drops_name(name))
                    .expect("fields");
                let stored = matches!(
                    cacheability(false, &judged, rules.as_ref()),
                    RespCacheable::Cacheable(_)
                );
                let shortcut = plainly_not_stored(&head, &filter, rules.as_ref());
                assert!(!(shortcut && stored), "{}", String::from_utf8_lossy(raw));
                shortcuts += usize::from(shortcut);
            }
        }
        // The plain ones are known without the judgement (the first three and the last) unless
        // a rule's edge TTL applies: the overriding one to all four, the one for 200s to three.
        assert_eq!(shortcuts, 2 + 2 + 3 + 2);
    }

    /// A compression as [`EdgeProxy::pass`] makes one: `asked`, the `Accept-Encoding` it reads.
    fn compression(asked: Option<&str>) -> ResponseCompressionCtx {
        let mut compression = ResponseCompressionCtx::new(COMPRESSION_LEVEL, false, false);
        if let Some(asked) = asked {
            compression.request_filter(&encoding_only(asked.as_bytes()).expect("coding"));
        }
        compression
    }

    #[test]
    fn answers_are_compressible_as_the_engines_compression_takes_them() {
        let lengths = [
            None,
            Some("0"),
            Some("19"),
            Some("20"),
            Some("1024"),
            Some("x"),
        ];
        let types: [Option<&[u8]>; 12] = [
            None,
            Some(b"text/html; charset=utf-8"),
            Some(b"application/octet-stream"),
            Some(b"application/zip"),
            Some(b"image/png"),
            Some(b"image/svg+xml"),
            Some(b"image/x-iconic"),
            Some(b"Text/html"),
            Some(b"font/woff2"),
            Some(b"binary/octet-stream"),
            Some(b"t\xe9xt/html"),
            Some(b"x-text/html"),
        ];
        let mut compressible_ones = 0;
        for length in lengths {
            for kind in types {
                let mut resp = ResponseHeader::build_no_case(200, None).expect("header");
                if let Some(length) = length {
                    resp.insert_header(header::CONTENT_LENGTH, length)
                        .expect("length");
                }
                if let Some(kind) = kind {
                    let value =
                        pingora::http::header_value_from_raw(bytes::Bytes::from_static(kind));
                    resp.insert_header(header::CONTENT_TYPE, value)
                        .expect("type");
                }
                // The engine's filter marks a compressible answer as varying by coding.
                compression(None).response_header_filter(&mut resp, false);
                let engine = resp.headers.contains_key(header::VARY);
                assert_eq!(
                    hit::engine_compressible_by(length.map(str::as_bytes), kind),
                    engine,
                    "{length:?} {kind:?}"
                );
                compressible_ones += usize::from(engine);
            }
        }
        // Six types in four of the lengths.
        assert_eq!(compressible_ones, 6 * 4);
    }

    /// An answer's coding fields without a header of their own, and the compressions in the
    /// states they are left in, equal those that go through the compressions; `None` when
    /// they are left to the compressions.
    fn untouched_matches_the_compressions(
        raw: Vec<u8>,
        asked: (Option<&str>, Option<Option<&str>>),
        rules: Option<&CacheParameters>,
        end: bool,
        no_body: bool,
    ) -> Option<bool> {
        let head = Head::of_bytes(raw);
        let filter = OriginFilter::of_fields(head.status, || head.fields(), None);
        let kept = |name: &[u8]| coding_name(name).is_some() && !filter.drops_name(name);
        let make = || (compression(asked.0), asked.1.map(compression));
        let ((mut visitor, mut upstream), (mut visitor2, mut upstream2)) = (make(), make());
        fn compressions<'a>(
            visitor: &'a mut ResponseCompressionCtx,
            upstream: Option<&'a mut ResponseCompressionCtx>,
            asked: (bool, bool),
            rules: Option<&'a CacheParameters>,
        ) -> Compressions<'a> {
            Compressions {
                visitor: (visitor, asked.0),
                upstream: upstream.map(|u| (u, asked.1)),
                rules,
            }
        }
        let asked = (asked.0.is_some(), asked.1.flatten().is_some());
        let fast = untouched(
            &head,
            &kept,
            (
                &mut compressions(&mut visitor, upstream.as_mut(), asked, rules),
                false,
            ),
            end,
            no_body,
        );
        let states = |v: &ResponseCompressionCtx, u: &Option<ResponseCompressionCtx>| {
            let state = |c: &ResponseCompressionCtx| (c.is_enabled(), c.is_header_phase());
            (state(v), u.as_ref().map(state))
        };
        let Some(fast) = fast else {
            // Nothing changed.
            assert_eq!(states(&visitor, &upstream), states(&visitor2, &upstream2));
            return None;
        };
        let slow = through_compressions(
            &head,
            &kept,
            (
                compressions(&mut visitor2, upstream2.as_mut(), asked, rules),
                false,
            ),
            end,
            no_body,
        )
        .expect("header");
        let Coding::Origin {
            chunked_added,
            vary_added,
        } = fast.coding
        else {
            panic!("untouched")
        };
        let mut fast_fields: Vec<(Vec<u8>, Vec<u8>)> = head
            .fields()
            .filter(|(name, _)| kept(name))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_vec()))
            .collect();
        if chunked_added {
            fast_fields.push((b"transfer-encoding".to_vec(), b"chunked".to_vec()));
        }
        if vary_added {
            fast_fields.push((b"vary".to_vec(), b"accept-encoding".to_vec()));
        }
        let Coding::Header(header) = &slow.coding else {
            panic!("through the compressions")
        };
        let mut slow_fields: Vec<(Vec<u8>, Vec<u8>)> = header
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect();
        fast_fields.sort();
        slow_fields.sort();
        assert_eq!(fast_fields, slow_fields);
        assert_eq!(
            (fast.stored_length, fast.chunked, fast.framed),
            (slow.stored_length, slow.chunked, slow.framed)
        );
        assert_eq!(states(&visitor, &upstream), states(&visitor2, &upstream2));
        Some(vary_added)
    }

    #[test]
    fn answers_no_compression_changes_keep_their_coding_fields_as_the_compressions_leave_them() {
        let raw = |fields: &str| format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes();
        let text = raw("Content-Type: text/css\r\nContent-Length: 1024\r\n");
        let binary = raw("Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n");
        let image = raw("Content-Type: image/png\r\nContent-Length: 1024\r\n");
        let zipped = raw("Content-Type: text/html\r\nContent-Encoding: gzip\r\n");
        let check = |raw: &Vec<u8>, asked| {
            untouched_matches_the_compressions(raw.clone(), asked, None, false, false)
        };
        // Compressible, nothing asked: marked as varying by coding.
        assert_eq!(check(&text, (None, None)), Some(true));
        assert_eq!(check(&text, (None, Some(None))), Some(true));
        // Asked of either: left to the compressions.
        assert_eq!(check(&text, (Some("gzip"), None)), None);
        assert_eq!(check(&text, (None, Some(Some("gzip")))), None);
        // Not compressible, asked or not: an image, and an octet stream the engine's
        // compression would take but the edge does not compress.
        assert_eq!(check(&image, (Some("gzip"), Some(Some("br")))), Some(false));
        assert_eq!(
            check(&binary, (Some("gzip"), Some(Some("br")))),
            Some(false)
        );
        assert_eq!(check(&binary, (None, None)), Some(false));
        // A coded answer is always left to them.
        assert_eq!(check(&zipped, (None, None)), None);
        // Without a body, nothing varies.
        assert_eq!(
            untouched_matches_the_compressions(text, (None, None), None, true, false),
            Some(false)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn any_coding_fields_are_left_as_the_compressions_leave_them(
            status in proptest::sample::select(vec![200u16, 204, 206, 304, 404, 500]),
            fields in proptest::collection::vec(proptest::sample::select(vec![
                "Content-Type: text/html", "content-type: application/octet-stream",
                "Content-Type: image/png", "Content-Type: image/svg+xml",
                "Content-Type: application/zip", "Content-Type: Text/plain",
                "Content-Length: 1024", "Content-Length: 10", "content-length: 20",
                "Content-Length: x", "Content-Encoding: gzip", "Vary: Accept-Encoding",
                "Vary: Cookie", "Vary: *", "vary: cookie, accept-encoding", "ETag: \"v1\"",
                "ETag: W/\"v1\"", "Accept-Ranges: bytes", "Transfer-Encoding: chunked",
                "Transfer-Encoding: gzip", "Connection: content-type", "Connection: vary",
                "X-Other: 1",
            ]), 0..7),
            visitor in proptest::sample::select(vec![None, Some("gzip"), Some("br, gzip"), Some("identity")]),
            upstream in proptest::sample::select(vec![None, Some(None), Some(Some("gzip"))]),
            keep_strong in proptest::bool::ANY,
            end in proptest::bool::ANY,
            no_body in proptest::bool::ANY,
        ) {
            let raw = format!("HTTP/1.1 {status} X\r\n{}\r\n", fields.iter().map(|f| format!("{f}\r\n")).collect::<String>());
            let rules = keep_strong.then(|| CacheParameters {
                respect_strong_etags: Some(true),
                ..CacheParameters::default()
            });
            untouched_matches_the_compressions(raw.into_bytes(), (visitor, upstream), rules.as_ref(), end, no_body);
        }
    }

    #[test]
    fn field_names_are_taken_as_the_engine_takes_them() {
        for b in 0..=u8::MAX {
            for name in [vec![b], vec![b'x', b, b'-', b'Y'], vec![b; 3]] {
                assert_eq!(
                    header_map_takes(&name),
                    http::HeaderName::from_bytes(&name).is_ok(),
                    "{name:?}"
                );
            }
        }
        // Names longer than 64 bytes take another way through the header map's check.
        for bad in [b' ', b'"', b':', 0x80] {
            let mut name = vec![b'A'; 70];
            name[66] = bad;
            assert!(!header_map_takes(&name));
            assert!(http::HeaderName::from_bytes(&name).is_err());
        }
        for len in [0, 1, 64, 65, (1 << 16) - 1, 1 << 16, (1 << 16) + 1] {
            let name = vec![b'a'; len];
            assert_eq!(
                header_map_takes(&name),
                http::HeaderName::from_bytes(&name).is_ok(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn connection_lists_the_engine_refuses_are_left_to_it() {
        let parse = |raw: &'static [u8]| {
            let mut fields = Box::new([httparse::EMPTY_HEADER; hit::MAX_FIELDS]);
            let mut request = httparse::Request::new(&mut fields[..]);
            request.parse(raw).expect("parse");
            let headers: Vec<(String, Vec<u8>)> = request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect();
            headers
        };
        let check = |raw: &'static [u8]| {
            let owned = parse(raw);
            let fields: Vec<httparse::Header<'_>> = owned
                .iter()
                .map(|(name, value)| httparse::Header { name, value })
                .collect();
            stripped_fields(&fields).map(|named| {
                named
                    .iter()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n\r\n"),
            Some(vec!["keep-alive".to_owned(), "X-Secret".to_owned()])
        );
        for refused in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: \"x\"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i,j\r\n\r\n",
        ] {
            assert!(
                check(refused).is_none(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }
}
