//! The edge's own answer to its commonest request: a GET or HEAD over HTTP/1 for a fresh
//! stored object whose header was stored once and never revalidated, and whose body the memory
//! tier holds or a small file of the disk tier has (read whole).
//!
//! It answers as the HTTP engine would (same routing, rules, key, freshness, header fields and
//! log line) without the engine's per-request machinery: no session, no request or response
//! objects, no cache state machine. Anything unusual goes to the engine, which reads the same
//! bytes: a request that is incomplete or does not parse here, a body, preconditions other
//! than a cached copy's validators (those get the engine's 304 here), ranges, an encoding to
//! make, `Vary` on fields other than `Accept-Encoding`, a redirect or an error to answer, a rule
//! this path does not apply, an object that is stale, on disk in a large file, or was
//! revalidated.
//!
//! The same reading of the request (parse, route, rules, cache key, prediction) also decides
//! the requests the cache does not keep, which [`crate::pass`] sends to the origin itself.
//! HTTP/2 streams ([`crate::h2`]) are decided by the same [`EdgeProxy::cached`], and their hits
//! looked up by [`EdgeProxy::fresh_hit`].
//!
//! A check added to the engine's request path (`proxy.rs`: `request_filter`,
//! `request_cache_filter`, `response_filter`) must be added here too, or sent to the engine from
//! here: the test comparing both answers field by field catches header differences, not a
//! missing refusal.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header;
use parapet_cache::{HitHead, MemoryHit};
use parapet_model::rules::CacheParameters;
use parapet_model::settings::SslMode;
use pingora::cache::eviction::EvictionManager as _;
use pingora::cache::predictor::CacheablePredictor as _;
use pingora::cache::{CacheEntryKey, CacheKey, NoCacheReason, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, ReadBuf};

use crate::headers;
use crate::pass::{Pass, Passing};
use crate::proxy::{
    ACME_CHALLENGE, AccessLine, EdgeProxy, access_logged, eligibility, normalized_encoding, url_key,
};
use crate::route::{Origin, route};
use crate::stream::{FileSend, VisitorStream};

/// Request header fields read here at most (a request with more goes to the engine).
pub(crate) const MAX_FIELDS: usize = 32;

/// Bodies up to this size go out in the same buffer as the header.
const INLINE_BODY: usize = 16 * 1024;
/// Hit bodies from this size on go from the disk tier's file to a plain connection
/// (`sendfile`) rather than copied from memory. Below it, copying costs less (edge CPU per
/// hit over loopback, copy vs file: 24 KiB 12.6-14.0 vs 15.4-16.9 µs, 48 KiB 15.8-16.4 vs
/// 16.8-17.0, 100 KiB 26-28 vs 21-24).
const FILE_BODY: usize = 64 * 1024;

/// Request fields whose presence sends the request to the engine: framing and bodies,
/// preconditions other than the validators of a cached copy (`If-None-Match`,
/// `If-Modified-Since`) and ranges, protocol changes, loops and credentials (the engine decides
/// what each of them means for a hit). The visitor's `Cache-Control` and `Pragma` are not among
/// them: the engine's hits do not read them, as Cloudflare's do not.
pub(crate) const ENGINE_FIELDS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "http2-settings",
    "te",
    "range",
    "if-range",
    "if-match",
    "if-unmodified-since",
    "cdn-loop",
    "authorization",
];

/// Stored response fields a hit does not repeat: this hop's, the ones the edge writes itself,
/// and the ones meant for the edge only.
const NOT_REPEATED: &[&str] = &[
    "server",
    "date",
    "connection",
    "keep-alive",
    "proxy-connection",
    "age",
    "surrogate-control",
    "cloudflare-cdn-cache-control",
    "cache-tag",
    "cf-ray",
    "cf-cache-status",
    "cache-status",
];

/// What the connection knows about itself.
pub(crate) struct Conn<'s> {
    pub(crate) ahead: &'s [u8],
    pub(crate) https: bool,
    /// The name a TLS connection's handshake was for.
    pub(crate) sni: Option<&'s str>,
    pub(crate) peer: SocketAddr,
    pub(crate) port: u16,
}

pub(crate) fn conn(stream: &Stream) -> Option<Conn<'_>> {
    let any = stream.as_any();
    if let Some(tcp) = any.downcast_ref::<crate::stream::VisitorStream>() {
        return Some(Conn {
            ahead: tcp.ahead(),
            https: false,
            sni: None,
            peer: tcp.peer(),
            port: tcp.local_port()?,
        });
    }
    let tls = any.downcast_ref::<crate::tls::TlsVisitorStream>()?;
    Some(Conn {
        ahead: tls.ahead(),
        https: true,
        sni: tls.sni(),
        peer: tls.tcp().peer(),
        port: tls.tcp().local_port()?,
    })
}

/// What the edge answers itself.
pub(crate) enum Direct {
    Hit(Answer),
    Pass(Box<Pass>),
}

/// A hit ready to go out.
pub(crate) struct Answer {
    /// The request's length (read ahead already), to take off the stream.
    request_len: usize,
    /// The response header, and the body when it is small.
    head: Vec<u8>,
    /// A larger body, sent after the header.
    body: Option<Bytes>,
    /// The same body in the disk tier's file, for a plain connection: sent from there.
    file: Option<parapet_cache::BodyFile>,
    keep_alive: bool,
    done: Done,
}

/// The parts of the request this path reads.
pub(crate) struct Request<'b> {
    pub(crate) len: usize,
    pub(crate) head_only: bool,
    pub(crate) http11: bool,
    pub(crate) target: &'b str,
    pub(crate) host: &'b str,
    pub(crate) keep_alive: bool,
    /// The visitor's `Accept-Encoding`, if it sent one.
    pub(crate) accept_encoding: Option<&'b [u8]>,
    /// The validators of the visitor's own copy.
    if_none_match: Option<&'b [u8]>,
    if_modified_since: Option<&'b [u8]>,
    /// Every field, as parsed (the first `field_count`): the pass-through writes them on.
    fields: [httparse::Header<'b>; MAX_FIELDS],
    field_count: usize,
}

impl<'b> Request<'b> {
    /// The request's fields, in the visitor's order and case.
    pub(crate) fn fields(&self) -> &[httparse::Header<'b>] {
        &self.fields[..self.field_count]
    }
}

/// The request read ahead on the connection, if it is complete and of the kind answered here.
pub(crate) fn request(ahead: &[u8], max_header_bytes: usize) -> Option<Request<'_>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let httparse::Status::Complete(len) = parsed.parse(ahead).ok()? else {
        return None;
    };
    if len > max_header_bytes || headers::check_raw_head(&ahead[..len]).is_err() {
        return None;
    }
    let head_only = match parsed.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let http11 = match parsed.version? {
        1 => true,
        0 => false,
        _ => return None,
    };
    let target = parsed.path?;
    if !target.starts_with('/') || http::uri::PathAndQuery::try_from(target).is_err() {
        return None;
    }
    let field_count = parsed.headers.len();
    let (mut host, mut connection, mut accept_encoding) = (None, None, None);
    let (mut if_none_match, mut if_modified_since, mut cookie) = (None, None, None);
    for field in parsed.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            // Two, or one that is no host and port: the engine's 400.
            if host.is_some() || !crate::headers::host_field_ok(field.value) {
                return None;
            }
            host = Some(std::str::from_utf8(field.value).ok()?);
        } else if name.eq_ignore_ascii_case("connection") {
            if connection.is_some() {
                return None;
            }
            connection = Some(field.value);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            // Weighted: the engine lists its codings by weight first.
            if crate::headers::weighs_codings(field.value) {
                return None;
            }
            once(&mut accept_encoding, field.value)?;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            once(&mut if_none_match, field.value)?;
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            once(&mut if_modified_since, field.value)?;
        } else if name.eq_ignore_ascii_case("cookie") {
            // More than one: the engine joins them for the origin.
            once(&mut cookie, field.value)?;
        } else if ENGINE_FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            return None;
        }
    }
    let keep_alive = match connection.map(connection_says) {
        None | Some(ConnectionSays::Neither) => http11,
        Some(ConnectionSays::KeepAlive) => true,
        Some(ConnectionSays::Close) => false,
        Some(ConnectionSays::Upgrade) => return None,
    };
    // The fragment is the visitor's own; the engine's URI drops it.
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    Some(Request {
        len,
        head_only,
        http11,
        target,
        host: host?,
        keep_alive,
        accept_encoding,
        if_none_match,
        if_modified_since,
        fields,
        field_count,
    })
}

/// Keeps the value of a field that may come once (`None`: it came again, the engine's).
fn once<'b>(slot: &mut Option<&'b [u8]>, value: &'b [u8]) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// Whether the visitor's copy is current, as the engine decides it ([`current_copy`]).
fn not_modified(request: &Request<'_>, stored: &ResponseHeader, received: SystemTime) -> bool {
    current_copy(
        request.if_none_match,
        request.if_modified_since,
        stored,
        received,
    )
}

/// Whether a GET or HEAD with these `If-None-Match` values and `If-Modified-Since` finds the
/// visitor's copy current against the stored response: a `200` whose `ETag` matches one of
/// them (weakly), any stored `200` for `*` (RFC 9110 §13.1.2), or, without `If-None-Match`, one
/// last modified no later than `If-Modified-Since`, by its `Last-Modified` or, without one, its
/// `Date`, or the time it was `received` (RFC 9111 §4.3.2).
pub(crate) fn current_copy<'t>(
    if_none_match: impl IntoIterator<Item = &'t [u8]>,
    if_modified_since: Option<&[u8]>,
    stored: &ResponseHeader,
    received: SystemTime,
) -> bool {
    use pingora::protocols::http::conditional_filter::weak_validate_etag;
    if stored.status != http::StatusCode::OK {
        return false;
    }
    let mut if_none_match = if_none_match.into_iter().peekable();
    if if_none_match.peek().is_some() {
        let etag = stored.headers.get(header::ETAG);
        return if_none_match.any(|tags| {
            tags.trim_ascii() == b"*"
                || etag.is_some_and(|etag| weak_validate_etag(tags, etag.as_bytes()))
        });
    }
    let date = |value: &[u8]| {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    let since = if_modified_since.and_then(date);
    let modified = match stored.headers.get(header::LAST_MODIFIED) {
        Some(value) => date(value.as_bytes()),
        None => Some(
            stored
                .headers
                .get(header::DATE)
                .and_then(|v| date(v.as_bytes()))
                .unwrap_or(received),
        ),
    };
    matches!((since, modified), (Some(since), Some(modified)) if since >= modified)
}

/// What a request's `Connection` says, as the engine reads it.
enum ConnectionSays {
    /// Exactly `keep-alive` (in a list, the engine does not see it).
    KeepAlive,
    /// `close`, alone or in a list.
    Close,
    /// `upgrade`: the engine's.
    Upgrade,
    Neither,
}

fn connection_says(value: &[u8]) -> ConnectionSays {
    if value.eq_ignore_ascii_case(b"keep-alive") {
        return ConnectionSays::KeepAlive;
    }
    let tokens = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    if tokens().any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
        ConnectionSays::Upgrade
    } else if tokens().any(|t| t.eq_ignore_ascii_case(b"close")) {
        ConnectionSays::Close
    } else {
        ConnectionSays::Neither
    }
}

impl EdgeProxy {
    /// The edge's own answer to the request read ahead on `stream`: a hit this path serves, or
    /// a pass-through [`crate::pass`] makes; `None` for the engine (`stopping`: the edge is
    /// shutting down, so the connection closes after the answer).
    pub(crate) fn direct(&self, stream: &Stream, stopping: bool) -> Option<Direct> {
        let started = Instant::now();
        let conn = conn(stream)?;
        let request = request(conn.ahead, self.max_header_bytes)?;
        // Routed and keyed on the target's normal form; a pass sends the origin the visitor's
        // own spelling (see `proxy::normalize_target`).
        let normal = parapet_model::expr::normalized_target(request.target);
        let target = normal.as_deref().unwrap_or(request.target);
        let (path, _) = target.split_once('?').unwrap_or((target, ""));
        if path.starts_with(ACME_CHALLENGE) {
            return None;
        }
        let snapshot = self.published.load();
        // (A host of another zone than the handshake's is the engine's to refuse.)
        if conn
            .sni
            .is_some_and(|sni| crate::route::misdirected(&snapshot, sni, request.host))
        {
            return None;
        }
        let origin = route(&snapshot, &self.origin_policy, Some(request.host), path).ok()?;
        let settings = origin.edge.settings;
        if origin.addrs.is_empty() || redirects(&settings, conn.https) {
            return None;
        }
        let rules = self.cache_parameters(&origin);
        let key = match self.cached(&origin, rules.as_deref(), conn.https, conn.port, target) {
            Cached::Looked(key) => key,
            Cached::Passed { learn, status } => {
                // The answer to another spelling teaches nothing about the key's.
                let learn = learn.filter(|_| normal.is_none());
                let passing = Passing {
                    conn: &conn,
                    request: &request,
                    origin,
                    rules,
                    learn,
                    status,
                    started,
                    stopping,
                };
                return self.pass(passing).map(Direct::Pass);
            }
        };
        let cache = self.cache?;
        // Query-string shaping is applied here; a browser TTL is the engine's.
        if !keyed_here(rules.as_deref())
            || rules.as_deref().is_some_and(|r| r.browser_ttl.is_some())
        {
            return None;
        }
        let hit = stored_fresh(&cache.store, key, request.accept_encoding)?;
        let now = SystemTime::now();
        let head = hit.hit_head(render)?;
        let stored = hit.header();
        // The engine compresses a compressible response stored without a coding for a
        // visitor that accepts one, unless the rules keep it byte for byte.
        let encoded = stored.headers.contains_key(header::CONTENT_ENCODING);
        let etag = stored.headers.get(header::ETAG).map(|v| v.as_bytes());
        let compressible =
            head.compressible && !rules.as_deref().is_some_and(|r| r.keeps_bytes_of(etag));
        // A visitor whose copy is current gets a 304: nothing to compress.
        let current = not_modified(&request, stored, hit.created());
        if !current && compressible && !encoded && request.accept_encoding.is_some() {
            return None;
        }
        let hsts = settings.hsts.filter(|_| conn.https);
        if hsts.is_some()
            && (stored
                .headers
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
                || stored.headers.contains_key(header::X_CONTENT_TYPE_OPTIONS))
        {
            return None;
        }
        // A hit counts for the object in the memory tier's eviction policy.
        if hit.weight > 0 {
            cache.eviction.access(
                &CacheEntryKey::key_only(hit.key.to_compact()),
                hit.weight,
                hit.fresh_until(),
            );
        }
        let fields = Fields {
            keep_alive: request.keep_alive && !stopping,
            age: now
                .duration_since(hit.epoch())
                .unwrap_or_default()
                .as_secs(),
            ray: headers::ray_id(),
            hsts,
            vary: compressible && !lists_encoding(stored),
            started,
        };
        let (response, body) = response(&hit, head, &request, &fields, current)?;
        // Copying a large body into the socket costs more than sending it; from the file its
        // pages go to the socket as they are (not under TLS, which must encrypt them).
        let file = match &body {
            Some(body) if !conn.https && body.len() >= FILE_BODY => {
                cache.store.body_file(&hit.key, &hit.hit)
            }
            _ => None,
        };
        let log = access_logged().then(|| {
            Box::new(Logged {
                host: origin.host,
                path: path.to_owned(),
                head_only: request.head_only,
                client: conn.peer.ip(),
            })
        });
        self.metrics.request_started();
        Some(Direct::Hit(Answer {
            request_len: request.len,
            head: response,
            body,
            file,
            keep_alive: fields.keep_alive,
            done: Done {
                zone: origin.zone_id,
                status: if current { 304 } else { stored.status.as_u16() },
                body_len: if request.head_only || current {
                    0
                } else {
                    hit.body.len()
                },
                ray: fields.ray,
                started,
                log,
            },
        }))
    }
}

/// Whether a request's cache key under `rules` is its URL's, shaped at most in its query
/// string: request headers or cookies in the key are the engine's.
fn keyed_here(rules: Option<&CacheParameters>) -> bool {
    rules.is_none_or(|r| {
        !r.keys_device_type()
            && r.cache_key
                .as_ref()
                .and_then(|k| k.custom_key.as_ref())
                .is_none_or(|c| c.header.is_none() && c.cookie.is_none())
    })
}

/// What the cache makes of a routed GET or HEAD, as the engine's cache filter decides it.
pub(crate) enum Cached {
    /// Passed on without the cache, answered with these statuses (`CF-Cache-Status`,
    /// `Cache-Status`); for a URL whose last response could not be stored, with its key and
    /// why, for what the answer teaches the cache.
    Passed {
        learn: Option<(CacheKey, NoCacheReason)>,
        status: (&'static str, &'static str),
    },
    /// Looked up under this key.
    Looked(CacheKey),
}

impl EdgeProxy {
    /// What the cache makes of a GET or HEAD for `target` (path and query) routed to `origin`,
    /// from a visitor on `port`, under the zone's `rules` for it.
    pub(crate) fn cached(
        &self,
        origin: &Origin,
        rules: Option<&CacheParameters>,
        https: bool,
        port: u16,
        target: &str,
    ) -> Cached {
        const DYNAMIC: (&str, &str) = ("DYNAMIC", "parapet; fwd=bypass");
        let passed = |learn, status| Cached::Passed { learn, status };
        let Some(cache) = self.cache else {
            return passed(None, DYNAMIC);
        };
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let (eligible, bypass) = eligibility(rules, path);
        if bypass {
            return passed(None, ("BYPASS", "parapet; fwd=bypass"));
        }
        if !eligible || crate::proxy::in_development_mode(&origin.edge.settings) {
            return passed(None, DYNAMIC);
        }
        let url = url_key(origin, https, port, target, rules);
        let key = parapet_cache::key::key_of(url, &origin.zone_id);
        // The engine looks the URL up, unless its last response was uncacheable.
        match cache.predictor.predicted_uncacheable_reason(&key) {
            Some(reason) => passed(Some((key, reason)), ("BYPASS", "parapet; fwd=uri-miss")),
            None => Cached::Looked(key),
        }
    }

    /// The fresh stored object under `key` that answers `req` (a GET or HEAD without a body,
    /// looked up under `rules`), in memory or in a small disk file read whole. `None` leaves
    /// the request to the engine: a cached copy's validators, a rule that puts request headers
    /// or cookies in the key, `Vary` on other fields than `Accept-Encoding`, an object not
    /// fresh, in a large disk file, or of another length than stored.
    pub(crate) fn fresh_hit(
        &self,
        req: &RequestHeader,
        key: CacheKey,
        rules: Option<&CacheParameters>,
    ) -> Option<Found> {
        let cache = self.cache?;
        if req.headers.contains_key(header::IF_NONE_MATCH)
            || req.headers.contains_key(header::IF_MODIFIED_SINCE)
            || !keyed_here(rules)
        {
            return None;
        }
        let mut accept_encoding = req.headers.get_all(header::ACCEPT_ENCODING).iter();
        let (accept_encoding, None) = (accept_encoding.next(), accept_encoding.next()) else {
            return None;
        };
        // Weighted: the engine lists its codings by weight first.
        if accept_encoding.is_some_and(|v| crate::headers::weighs_codings(v.as_bytes())) {
            return None;
        }
        stored_fresh(&cache.store, key, accept_encoding.map(|v| v.as_bytes()))
    }
}

/// Whether the zone's SSL mode sends a visitor elsewhere (the engine's redirect): HTTPS with SSL
/// off, plain HTTP with Always Use HTTPS.
pub(crate) fn redirects(settings: &parapet_model::settings::EdgeZoneSettings, https: bool) -> bool {
    if https {
        settings.ssl == SslMode::Off
    } else {
        settings.always_use_https && settings.ssl != SslMode::Off
    }
}

/// The stored variant of `key` for the visitor, fresh, in memory or in a small file read whole,
/// with a body of its stored length.
fn stored_fresh(
    store: &parapet_cache::CacheStore,
    key: CacheKey,
    accept_encoding: Option<&[u8]>,
) -> Option<Found> {
    let hit = store.direct_hit(&key)?;
    let found = variant(store, key, hit, accept_encoding)?;
    if found.fresh_until() < SystemTime::now() {
        return None;
    }
    let length = found
        .header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    (length == Some(found.body.len())).then_some(found)
}

/// What is counted and logged once a hit is sent.
struct Done {
    zone: std::sync::Arc<str>,
    status: u16,
    body_len: usize,
    ray: headers::RayId,
    started: Instant,
    /// What the access log needs besides (when it is written).
    log: Option<Box<Logged>>,
}

struct Logged {
    host: String,
    path: String,
    head_only: bool,
    client: std::net::IpAddr,
}

impl Done {
    /// Counts the hit. Done before it is written, so that a visitor who has the answer finds
    /// it counted.
    fn count(&self, metrics: &crate::EdgeMetrics) {
        metrics.direct_hit_finished(&self.zone, self.status);
    }

    /// Logs the hit once it is written (or failed to be).
    fn log(self, sent: bool) {
        let Some(log) = self.log else { return };
        AccessLine {
            ray: &self.ray,
            zone: Some(&self.zone),
            host: Some(&log.host),
            method: if log.head_only { "HEAD" } else { "GET" },
            path: &log.path,
            status: self.status,
            bytes: if sent { self.body_len } else { 0 },
            started: self.started,
            cache: "HIT",
            client_ip: Some(log.client),
            edge_error: None,
            origin_time: None,
        }
        .log();
    }
}

/// The fields a hit's answer adds to its stored header.
struct Fields {
    keep_alive: bool,
    age: u64,
    ray: headers::RayId,
    /// The zone's HSTS, for an HTTPS visitor.
    hsts: Option<parapet_model::settings::Hsts>,
    /// `Vary: accept-encoding`, as the engine's compression adds it.
    vary: bool,
    /// When the request came (its `Date`).
    started: Instant,
}

/// The response (a 304 when the visitor's copy is `current`): its header (with the body when
/// it is small), and a larger body.
fn response(
    hit: &MemoryHit,
    head: &HitHead,
    request: &Request<'_>,
    fields: &Fields,
    current: bool,
) -> Option<(Vec<u8>, Option<Bytes>)> {
    let Fields {
        keep_alive,
        age,
        ref ray,
        hsts,
        vary,
        started,
    } = *fields;
    let header_only = request.head_only || current;
    let base = if current {
        head.not_modified.as_ref()?
    } else {
        &head.head
    };
    let inline = !header_only && hit.body.len() <= INLINE_BODY;
    let mut out = Vec::with_capacity(base.len() + 192 + if inline { hit.body.len() } else { 0 });
    out.extend_from_slice(base);
    out.extend_from_slice(b"Date: ");
    headers::with_date(started, |date| out.extend_from_slice(date));
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\nAge: "
    } else {
        b"\r\nConnection: close\r\nAge: "
    });
    out.extend_from_slice(age.to_string().as_bytes());
    // The engine's compression says that the response depends on `Accept-Encoding` whenever it
    // would compress it for a visitor that accepts an encoding (not for a header alone).
    if vary && !header_only {
        out.extend_from_slice(b"\r\nvary: accept-encoding");
    }
    out.extend_from_slice(b"\r\ncf-ray: ");
    out.extend_from_slice(ray.as_bytes());
    out.extend_from_slice(b"\r\ncf-cache-status: HIT\r\ncache-status: parapet; hit\r\n");
    if let Some(hsts) = hsts {
        out.extend_from_slice(b"strict-transport-security: ");
        out.extend_from_slice(hsts.header_value().as_bytes());
        out.extend_from_slice(b"\r\n");
        if hsts.nosniff {
            out.extend_from_slice(b"x-content-type-options: nosniff\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    let mut body = None;
    if inline {
        out.extend_from_slice(&hit.body);
    } else if !header_only {
        body = Some(hit.body.clone());
    }
    Some((out, body))
}

/// A hit with the key it was found under.
pub(crate) struct Found {
    pub(crate) key: CacheKey,
    hit: MemoryHit,
}

impl std::ops::Deref for Found {
    type Target = MemoryHit;

    fn deref(&self) -> &MemoryHit {
        &self.hit
    }
}

/// The stored variant for the visitor, starting from `primary`, the URL's primary entry: itself
/// when the response has no variants, or when it is the variant for the visitor's coding class;
/// else the one stored under that class, if it is in memory and younger than the primary
/// entry (an older one is from before a purge). `None` for variants on other fields.
fn variant(
    store: &parapet_cache::CacheStore,
    key: CacheKey,
    primary: MemoryHit,
    accept_encoding: Option<&[u8]>,
) -> Option<Found> {
    let vary = primary
        .header()
        .headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
        .try_fold(false, |_, name| {
            name.eq_ignore_ascii_case(b"accept-encoding")
                .then_some(true)
        })?;
    if !vary {
        return primary
            .variance()
            .is_none()
            .then_some(Found { key, hit: primary });
    }
    let mut variance = VarianceBuilder::new();
    variance.add_value(
        "accept-encoding",
        normalized_encoding(accept_encoding.unwrap_or_default()),
    );
    let wanted = variance.finalize()?;
    if primary.variance() == Some(wanted) {
        return Some(Found { key, hit: primary });
    }
    let mut key = key;
    key.set_variance_key(wanted);
    let hit = store.direct_hit(&key)?;
    (hit.variance() == Some(wanted) && hit.created() >= primary.created())
        .then_some(Found { key, hit })
}

/// Whether a stored response's `Vary` already names `Accept-Encoding` (or everything).
fn lists_encoding(stored: &ResponseHeader) -> bool {
    stored
        .headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding"))
}

/// A stored header as every hit repeats it: `None` for a response this path leaves to the
/// engine (no body of a known length, or a coding or variants to negotiate).
fn render(stored: &ResponseHeader) -> Option<HitHead> {
    let status = stored.status;
    let fields = &stored.headers;
    if status.is_informational()
        || matches!(status.as_u16(), 204 | 304)
        || !fields.contains_key(header::CONTENT_LENGTH)
        || fields.contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    // A complete object of known length may be asked for in ranges: the engine says so.
    let ranges = status == http::StatusCode::OK;
    let reason = stored.get_reason_phrase().unwrap_or("");
    let mut head = status_line(status.as_str(), reason);
    write_fields(stored, &mut head, |name| {
        ranges && name.eq_ignore_ascii_case(b"accept-ranges")
    });
    if ranges {
        head.put_slice(b"accept-ranges: bytes\r\n");
    }
    // A 304 keeps no representation metadata (the engine's `to_304`).
    let not_modified = ranges.then(|| {
        let mut head = status_line("304", "Not Modified");
        write_fields(stored, &mut head, |name| {
            [
                "content-length",
                "content-type",
                "content-encoding",
                "accept-ranges",
            ]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        });
        head.freeze()
    });
    Some(HitHead {
        head: head.freeze(),
        not_modified,
        compressible: compressible(stored),
    })
}

fn status_line(status: &str, reason: &str) -> BytesMut {
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_bytes());
    head.put_u8(b' ');
    head.put_slice(reason.as_bytes());
    head.put_slice(b"\r\nserver: parapet\r\n");
    head
}

/// Writes the stored fields a hit repeats (in the stored order and case), but those `skip`
/// names.
fn write_fields(stored: &ResponseHeader, head: &mut BytesMut, skip: impl Fn(&[u8]) -> bool) {
    let mut field = |name: &[u8], value: &[u8]| {
        let repeated = !NOT_REPEATED
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
        if repeated && !skip(name) {
            head.put_slice(name);
            head.put_slice(b": ");
            head.put_slice(value);
            head.put_slice(b"\r\n");
        }
    };
    if stored.has_case() {
        for (name, value) in stored.case_header_iter() {
            field(name.as_slice(), value.as_bytes());
        }
    } else {
        for (name, value) in &stored.headers {
            field(name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Whether the engine's compression would encode this response for a visitor that accepts
/// an encoding ([`compressible_by`]), at a status the edge compresses
/// ([`crate::proxy::edge_compresses`]: a 301's page is not, and varies on nothing), and that
/// the origin lets be transformed ([`crate::proxy::no_transform`]).
fn compressible(stored: &ResponseHeader) -> bool {
    let fields = &stored.headers;
    let content_type = fields.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    compressible_by(
        fields.get(header::CONTENT_LENGTH).map(|v| v.as_bytes()),
        content_type,
    ) && crate::proxy::edge_compresses(stored.status, content_type)
        && !crate::proxy::no_transform(fields)
}

/// Whether the engine compresses a stored answer, by its first `Content-Length` and
/// `Content-Type`: its compression's rule (not under 20 bytes; by type, not without one, with
/// one that is not UTF-8 or that names zip; text, application and font types, three image types
/// and `binary/octet-stream`), for the types the edge compresses
/// ([`crate::proxy::compressed_type`]).
pub(crate) fn compressible_by(length: Option<&[u8]>, content_type: Option<&[u8]>) -> bool {
    engine_compressible_by(length, content_type)
        && content_type.is_some_and(crate::proxy::compressed_type)
}

/// The engine's compression's own rule ([`compressible_by`]).
pub(crate) fn engine_compressible_by(length: Option<&[u8]>, content_type: Option<&[u8]>) -> bool {
    const TYPES: [&str; 7] = [
        "text/",
        "application/",
        "font/",
        "image/x-icon",
        "image/svg+xml",
        "image/nd.microsoft.icon",
        "binary/octet-stream",
    ];
    let short = length
        .and_then(|l| std::str::from_utf8(l).ok()?.parse::<usize>().ok())
        .is_some_and(|n| n < 20);
    let Some(kind) = content_type.and_then(|t| std::str::from_utf8(t).ok()) else {
        return false;
    };
    !short && !kind.contains("zip") && TYPES.iter().any(|t| kind.starts_with(t))
}

/// Sends `answer` on `stream` (taking its request off first), then counts and logs it; false
/// when the connection is to close (or failed).
pub(crate) async fn send(
    stream: &mut Stream,
    answer: Answer,
    metrics: &crate::EdgeMetrics,
) -> bool {
    let Answer {
        request_len,
        head,
        body,
        file,
        keep_alive,
        done,
    } = answer;
    done.count(metrics);
    let sent = if !take_request(stream, request_len).await {
        false
    } else if let (Some(file), Some(body)) = (file, &body)
        && let Some(visitor) = stream.as_any().downcast_ref::<VisitorStream>()
        && !visitor.gathering()
    {
        metrics.hit_sent_from_file();
        let len = body.len() as u64;
        match visitor
            .send_head_and_file(&head, &file.file, file.offset, len)
            .await
        {
            Ok(FileSend::Sent) => true,
            // The memory tier's copy finishes what the file could not (if the visitor is
            // still there).
            Ok(FileSend::Broke { body_sent, error }) => {
                tracing::debug!(ray = %done.ray, "sending a hit from its file: {error}");
                let rest = body.get(body_sent..).unwrap_or_default();
                crate::stream::send_now(stream, &[rest]).await.is_ok()
            }
            Err(_) => false,
        }
    } else {
        write(stream, &head, body.as_ref()).await
    };
    done.log(sent);
    if sent && !keep_alive {
        crate::stream::close_within_send_timeout(stream).await;
    }
    sent && keep_alive
}

async fn write(stream: &mut Stream, head: &[u8], body: Option<&Bytes>) -> bool {
    let body: &[u8] = body.map_or(&[], |b| b.as_ref());
    crate::stream::send_now(stream, &[head, body]).await.is_ok()
}

/// Takes the request's `len` bytes, read ahead already, off the stream.
pub(crate) async fn take_request(stream: &mut Stream, len: usize) -> bool {
    let mut left = len;
    while left > 0 {
        // The request was read ahead: this takes it off without waiting.
        let taken = std::future::poll_fn(|cx| {
            crate::stream::with_scratch(|scratch| {
                let room = left.min(scratch.len());
                let mut buf = ReadBuf::new(&mut scratch[..room]);
                std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf))?;
                std::task::Poll::Ready(Ok::<_, std::io::Error>(buf.filled().len()))
            })
        })
        .await;
        match taken {
            Ok(n) if n > 0 => left -= n,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 32 * 1024;

    fn read(raw: &str) -> Option<Request<'_>> {
        request(raw.as_bytes(), MAX)
    }

    #[test]
    fn plain_gets_and_heads_are_read_with_their_length_and_keep_alive() {
        let raw =
            "GET /a.css?v=1#top HTTP/1.1\r\nHost: www.example.test\r\nAccept: */*\r\n\r\nGET /next";
        let r = read(raw).expect("a plain GET");
        assert_eq!(r.len, raw.len() - "GET /next".len());
        assert_eq!((r.target, r.host), ("/a.css?v=1", "www.example.test"));
        assert!(r.keep_alive && !r.head_only && r.accept_encoding.is_none());
        let r = read("HEAD / HTTP/1.0\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n").expect("HEAD");
        assert!(r.head_only && !r.keep_alive);
        assert_eq!(r.accept_encoding, Some(&b"gzip"[..]));
    }

    #[test]
    fn connection_is_read_as_the_engine_reads_it() {
        for (version, connection, keep_alive) in [
            ("1.1", None, Some(true)),
            ("1.0", None, Some(false)),
            ("1.0", Some("keep-alive"), Some(true)),
            ("1.0", Some("Keep-Alive"), Some(true)),
            ("1.0", Some("keep-alive, x-trace"), Some(false)),
            ("1.1", Some("close"), Some(false)),
            ("1.1", Some("x-trace, close"), Some(false)),
            ("1.1", Some("close, keep-alive"), Some(false)),
            ("1.1", Some("x-trace"), Some(true)),
            ("1.1", Some("Upgrade"), None),
        ] {
            let field = connection.map_or(String::new(), |c| format!("Connection: {c}\r\n"));
            let raw = format!("GET / HTTP/{version}\r\nHost: h\r\n{field}\r\n");
            assert_eq!(
                read(&raw).map(|r| r.keep_alive),
                keep_alive,
                "{version} {connection:?}"
            );
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_engine() {
        for raw in [
            // Incomplete, not HTTP/1, other methods, other targets.
            "GET / HTTP/1.1\r\nHost: h\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            "get / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a\u{1}b HTTP/1.1\r\nHost: h\r\n\r\n",
            // Framing, bodies and protocol changes.
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            // Malformed heads: bare LF, folded lines, spaces before the colon.
            "GET / HTTP/1.1\nHost: h\n\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n continued\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            // Hosts: none, two; fields sent twice that matter.
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: br\r\nAccept-Encoding: gzip\r\n\r\n",
            // Preconditions, ranges, credentials, loops.
            "GET / HTTP/1.1\r\nHost: h\r\nIf-Match: \"x\"\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nIf-Unmodified-Since: Mon, 02 Jan 2023 00:00:00 GMT\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nIf-Range: \"x\"\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\nIf-None-Match: \"y\"\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nCDN-Loop: parapet\r\n\r\n",
        ] {
            assert!(read(raw).is_none(), "{raw:?}");
        }
        // A head larger than the limit is the engine's (431).
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "a".repeat(100)
        );
        assert!(request(big.as_bytes(), 64).is_none());
        assert!(request(big.as_bytes(), 1024).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// Hostile bytes never panic, and a request read here is exactly a complete head at the
        /// start of what arrived (so that what follows is the next request's, untouched).
        #[test]
        fn any_bytes_are_read_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(r) = request(&bytes, MAX) {
                prop_assert!(r.len <= bytes.len());
                prop_assert!(bytes[..r.len].ends_with(b"\r\n\r\n"));
            }
        }

        /// Mutations of a valid request: still no panic, and the length read is always where
        /// its head ends.
        #[test]
        fn mutated_requests_are_read_safely(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        ) {
            let mut bytes = b"GET /x.css?a=1 HTTP/1.1\r\nHost: www.example.test\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n".to_vec();
            for (at, byte) in flips {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Some(r) = request(&bytes, MAX) {
                prop_assert!(bytes[..r.len].ends_with(b"\r\n\r\n"));
                prop_assert!(!bytes[..r.len - 4].windows(4).any(|w| w == b"\r\n\r\n"));
            }
        }
    }
}
