//! The pingora adapter: a thin `ProxyHttp` that asks [`crate::route`] where a request goes,
//! applies [`crate::headers`], and turns failures into [`crate::errors`] pages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use parapet_cache::EdgeCache;
use parapet_model::expr::RequestFacts;
use parapet_model::rules::{CacheParameters, CompiledRule, NamedKeyParts};
use parapet_model::settings::SslMode;
use parapet_snapshot::Published;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::filters::resp_cacheable;
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CacheOptionOverrides, CachePhase, NoCacheReason,
    RespCacheable, VarianceBuilder,
};
use pingora::prelude::*;
use pingora::protocols::http::HttpTask;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::balance;
use crate::errors::{EdgeError, error_page};
use crate::freshness;
use crate::headers::{self, CDN_LOOP_TOKEN, HOP_BY_HOP};
use crate::route::{Origin, host_of, route};

/// Timeouts to origins (Cloudflare's defaults: 15 s to connect is generous; 100 s to answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(100);
/// How long a request body may go without a byte (nginx's `client_body_timeout`).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct EdgeProxy {
    pub published: Arc<Published>,
    /// Resolves origin names outside Parapet's zones (shared with the DNS server's flattening).
    pub resolver: Option<Arc<parapet_dns::Flattener>>,
    /// Origin addresses refused (the edge's own, and denied networks).
    pub origin_policy: Arc<crate::route::OriginPolicy>,
    pub metrics: Arc<crate::EdgeMetrics>,
    /// Overrides for tests and operators: connect and read timeouts to origins.
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// How long a visitor's request body may go without a byte arriving: then the request
    /// ends (HTTP/1: 400 and the connection closed; HTTP/2: the stream reset), as nginx's
    /// `client_body_timeout` has it.
    pub body_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: u64,
    /// Open connections allowed per client.
    pub client_limit: Arc<crate::ClientLimit>,
    /// The cache (`None`: nothing is cached).
    pub cache: Option<&'static EdgeCache>,
    /// A PEM bundle of the roots origins' certificates are checked against in `strict` mode
    /// (`None`: the system's).
    pub origin_trust: Option<String>,
    /// The certificate the edge presents to origins of zones with Authenticated Origin Pulls
    /// that uploaded none of their own.
    pub origin_pull: Option<crate::tls::ClientIdentity>,
    /// The node's roots for origins (DER), the base of a zone's custom trust store.
    pub trust_roots: Arc<Vec<Vec<u8>>>,
    /// Zones' trust stores as the TLS client takes them, with their connections' pool group
    /// ([`trust_group`]), built once per set of certificates.
    zone_trust: Arc<Converted<(u64, Arc<pingora::protocols::tls::CaType>)>>,
    /// Zones' own origin pull certificates, converted once: certificate id → identity.
    zone_pulls: Arc<Converted<crate::tls::ClientIdentity>>,
    /// The port plain-HTTP visitors are redirected to for HTTPS when their port has no
    /// Cloudflare pair (the first `--https-listen`; else 443).
    pub https_port: u16,
    /// The same for HTTPS visitors of zones with SSL off (the first `--http-listen`; else 80).
    pub http_port: u16,
}

/// Cloudflare's limits: 32 KiB of request headers, 100 MB of body (free plan).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
pub const MAX_BODY_BYTES: u64 = 100 * 1000 * 1000;
/// Open connections per client address: room for a large NAT, not for a flood.
pub const MAX_CONNECTIONS_PER_CLIENT: u32 = 1024;

impl EdgeProxy {
    /// The configuration file's cache rules for the zone that routed `origin` (its name is
    /// the longest zone name the host lies within).
    fn configured_cache_rules(&self, origin: &Origin) -> &[CompiledRule] {
        if !self.published.has_configured_cache_rules() {
            return &[];
        }
        let snapshot = self.published.load();
        let mut candidate = origin.host.as_str();
        loop {
            if let Some(zone) = snapshot.zones.get(candidate) {
                if *zone.zone.id != *origin.zone_id {
                    return &[];
                }
                return self.published.configured_cache_rules(candidate);
            }
            match candidate.split_once('.') {
                Some((_, parent)) => candidate = parent,
                None => return &[],
            }
        }
    }

    /// The connect and read timeouts toward a zone's origins: the zone's, else the edge's.
    pub(crate) fn origin_timeouts(
        &self,
        settings: &parapet_model::settings::EdgeZoneSettings,
    ) -> (Duration, Duration) {
        (
            settings
                .connect_timeout_secs
                .map_or(self.connect_timeout, Duration::from_secs),
            settings
                .read_timeout_secs
                .map_or(self.read_timeout, Duration::from_secs),
        )
    }

    /// The cache rules (the configuration file's, then the zone's) that match a request
    /// `origin` routed, merged (`None`: none matched).
    pub(crate) fn cache_parameters(&self, origin: &Origin) -> Option<Box<CacheParameters>> {
        let facts = RequestFacts {
            host: &origin.host,
            path: &origin.rule_path,
        };
        let configured = self.configured_cache_rules(origin);
        parapet_model::rules::matching_cache_parameters(
            configured.iter().chain(origin.edge.cache_rules.iter()),
            &facts,
        )
    }

    pub fn new(published: Arc<Published>) -> Self {
        Self {
            published,
            resolver: None,
            origin_policy: Arc::default(),
            metrics: Arc::default(),
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout: READ_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            client_limit: Arc::new(crate::ClientLimit::new(MAX_CONNECTIONS_PER_CLIENT)),
            cache: None,
            origin_trust: None,
            origin_pull: None,
            zone_pulls: Arc::new(Converted::new(ZONE_PULLS_KEPT)),
            trust_roots: Arc::default(),
            zone_trust: Arc::new(Converted::new(ZONE_TRUST_KEPT)),
            https_port: 443,
            http_port: 80,
        }
    }
}

/// Zones' trust stores kept built at most (beyond, the map starts over).
const ZONE_TRUST_KEPT: usize = 1024;

/// Zones' origin pull identities kept converted at most (beyond, the map starts over).
const ZONE_PULLS_KEPT: usize = 4096;

/// What stored certificates become for the TLS client, made once per key and kept (at most
/// `max`; beyond, it starts over).
struct Converted<T> {
    max: usize,
    made: std::sync::Mutex<std::collections::HashMap<String, T>>,
}

impl<T: Clone> Converted<T> {
    fn new(max: usize) -> Self {
        Self {
            max,
            made: std::sync::Mutex::default(),
        }
    }

    /// The value for `key`, made by `make` the first time (nothing is kept when it fails).
    fn get_or_make(&self, key: &str, make: impl FnOnce() -> Option<T>) -> Option<T> {
        let mut made = self
            .made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(value) = made.get(key) {
            return Some(value.clone());
        }
        let value = make()?;
        if made.len() >= self.max {
            made.clear();
        }
        made.insert(key.to_owned(), value.clone());
        Some(value)
    }
}

impl EdgeProxy {
    /// A request the proxy's phases never saw ([`crate::stream::HeadOutcome`]) ended with
    /// `status`: counted under no zone, and logged without a method or path (its header was
    /// not understood).
    pub(crate) fn unseen_request_finished(
        &self,
        (status, ray): (u16, Option<headers::RayId>),
        peer: Option<SocketAddr>,
        started: Instant,
    ) {
        self.metrics.refused_unparsed(status);
        if !access_logged() {
            return;
        }
        AccessLine {
            ray: &ray.unwrap_or_else(headers::ray_id),
            zone: None,
            host: None,
            method: "",
            path: "",
            status,
            bytes: 0,
            started,
            cache: "",
            client_ip: peer.map(|p| p.ip()),
            edge_error: None,
            origin_time: None,
        }
        .log();
    }

    /// The roots a `strict` zone with a custom trust store checks its origin against (the
    /// node's and the zone's), and the pool group of the connections so checked.
    fn zone_trust_store(
        &self,
        cas: &[Arc<parapet_model::certificate::TrustedCa>],
    ) -> Option<(u64, Arc<pingora::protocols::tls::CaType>)> {
        let key = cas
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(",");
        self.zone_trust.get_or_make(&key, || {
            let zone_ders = cas
                .iter()
                .flat_map(|c| parapet_tls::chain::bundle_der(&c.certificate));
            // Every certificate here parsed as X.509 already (`bundle_der`), as the TLS
            // client's wrapper requires.
            let roots = self
                .trust_roots
                .iter()
                .cloned()
                .chain(zone_ders)
                .map(|der| {
                    pingora::utils::tls::WrappedX509::new(der, pingora::utils::tls::parse_x509)
                })
                .collect::<Vec<_>>();
            let roots: Arc<pingora::protocols::tls::CaType> = roots.into();
            Some((trust_group(cas), roots))
        })
    }

    /// A zone's own origin pull certificate as the TLS client takes it (`None` if it no
    /// longer parses: the origin then sees no certificate and refuses, a 525).
    fn zone_pull_identity(
        &self,
        cert: &parapet_model::certificate::OriginPullCertificate,
    ) -> Option<crate::tls::ClientIdentity> {
        self.zone_pulls.get_or_make(&cert.id, || {
            crate::tls::client_identity(&cert.certificate, &cert.private_key).ok()
        })
    }
}

/// What one request carries through the phases.
pub struct Ctx {
    pub(crate) ray: headers::RayId,
    pub(crate) origin: Option<Origin>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) started: Instant,
    /// When the request went to the origin, and how long its response header took.
    pub(crate) upstream_sent: Option<Instant>,
    pub(crate) origin_time: Option<Duration>,
    pub(crate) body_bytes: u64,
    /// The origin's addresses in the order this request tries them ([`balance::order`]), and
    /// which one this attempt uses (failover on connection errors).
    pub(crate) tries: Vec<std::net::IpAddr>,
    pub(crate) attempt: usize,
    pub(crate) error: Option<EdgeError>,
    /// The cache was asked for this request (its key was made).
    pub(crate) cache_asked: bool,
    /// What the cache did (`CF-Cache-Status`), once known.
    pub(crate) cache_status: &'static str,
    /// The zone's cache rules that match this request, merged (`None`: none matched).
    pub(crate) cache_rules: Option<Box<CacheParameters>>,
    /// The visitor's target, when it was not in normal form: the origin is sent it as it came
    /// (the cache keys the request on the normal form, and does not store this answer).
    pub(crate) raw_target: Option<Vec<u8>>,
    /// The request may come with a body (a GET may): it takes no cache lock, and if a byte of
    /// body comes, or the body has not ended when the origin answers, the answer is for that
    /// body, which the key does not hold, and is not stored.
    pub(crate) request_body: bool,
    /// The request's body has ended (its last part went through `request_body_filter`).
    pub(crate) request_body_ended: bool,
    /// A cache rule said bypass.
    pub(crate) rule_bypass: bool,
    /// The origin's 304 to a revalidation, whose fields update the stored response.
    pub(crate) not_modified: Option<Box<ResponseHeader>>,
    /// The cache's count of URL invalidations when the request went to the origin.
    pub(crate) fetch_mark: Option<parapet_cache::FetchMark>,
}

pub(crate) fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(SocketAddr::ip)
}

/// Fields removed from responses by name (a parsed name needs no parsing on each request).
const SURROGATE_CONTROL: http::HeaderName = http::HeaderName::from_static("surrogate-control");
const CLOUDFLARE_CDN_CACHE_CONTROL: http::HeaderName =
    http::HeaderName::from_static("cloudflare-cdn-cache-control");
const CACHE_TAG: http::HeaderName = http::HeaderName::from_static("cache-tag");
/// Fields read or written on each request, by name (parsed once).
const CDN_LOOP: http::HeaderName = http::HeaderName::from_static("cdn-loop");
const CF_RAY: http::HeaderName = http::HeaderName::from_static("cf-ray");
const CF_CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cf-cache-status");
const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

/// One level for gzip, brotli and zstd: most of the size gain at a small share of the CPU.
pub(crate) const COMPRESSION_LEVEL: u32 = 5;

/// How long an HTTP/2 answer waits, at most, for the rest of a request body it did not read.
const UNREAD_BODY_WAIT: Duration = Duration::from_millis(100);

/// How long a request waits for another one fetching the same object before going itself.
const CACHE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Statuses stored when the origin allows it (RFC 9110 §15.1 heuristically cacheable, and
/// redirects).
/// Request fields the edge writes to the origin for each visitor.
const PER_VISITOR_FIELDS: [&str; 3] = ["cf-connecting-ip", "x-forwarded-for", "cf-ray"];

/// Statuses stored by default. Not 206: a part is not the object (RFC 9111 §3.3); the edge
/// asks for the whole object and serves ranges from it.
const CACHEABLE_STATUS: &[u16] = &[
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Cloudflare's edge TTLs for responses without freshness information; no stale serving unless
/// the origin asks for it.
const CACHE_DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(
    |status| parapet_cache::policy::default_ttl(status.as_u16()),
    0,
    0,
);

/// Media types the edge compresses: Cloudflare's list (text-like types; not images, archives,
/// media, fonts that are compressed already or octet streams, which compressing only slows and
/// whose ranges and validators it would change).
const COMPRESSED_TYPES: &[&str] = &[
    "text/html",
    "text/richtext",
    "text/plain",
    "text/css",
    "text/x-script",
    "text/x-component",
    "text/x-java-source",
    "text/x-markdown",
    "text/javascript",
    "text/js",
    "text/xml",
    "application/javascript",
    "application/x-javascript",
    "application/x-perl",
    "application/x-httpd-cgi",
    "application/xml",
    "application/rss+xml",
    "application/vnd.api+json",
    "application/x-protobuf",
    "application/json",
    "application/xhtml+xml",
    "application/vnd.ms-fontobject",
    "application/ttf",
    "application/x-ttf",
    "application/otf",
    "application/x-otf",
    "application/truetype",
    "application/opentype",
    "application/x-opentype",
    "application/font-woff",
    "application/eot",
    "application/font",
    "application/font-sfnt",
    "application/wasm",
    "application/javascript-binast",
    "application/manifest+json",
    "application/ld+json",
    "application/graphql+json",
    "application/geo+json",
    "font/ttf",
    "font/otf",
    "font/x-woff",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "multipart/bag",
    "multipart/mixed",
];

/// Whether `content_type` (a `Content-Type` value) is one the edge compresses.
pub(crate) fn compressed_type(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    COMPRESSED_TYPES
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t.as_bytes()))
}

/// Whether the edge compresses an answer with this status and `Content-Type` (for a visitor
/// that accepts a coding, when the origin sent none): answers with their whole body (200, and
/// 403 and 404 pages, as nginx; never a 206, whose range counts the bytes uncompressed) of a
/// type it compresses ([`compressed_type`]).
pub(crate) fn edge_compresses(status: http::StatusCode, content_type: Option<&[u8]>) -> bool {
    matches!(status.as_u16(), 200 | 403 | 404) && content_type.is_some_and(compressed_type)
}

/// Turns `compression` off for a response the edge does not compress ([`edge_compresses`]) or
/// the rules keep byte for byte (Cloudflare's "respect strong ETags": a strong `ETag` stays
/// strong, stored and passed on as the origin sent it).
pub(crate) fn keep_bytes(
    rules: Option<&CacheParameters>,
    resp: &ResponseHeader,
    compression: &mut pingora::protocols::http::compression::ResponseCompressionCtx,
) {
    keep_bytes_unless(rules, resp, no_transform(&resp.headers), compression);
}

/// [`keep_bytes`] for a header whose `Cache-Control` was read elsewhere: `untransformable`
/// when it forbids transforming the body.
pub(crate) fn keep_bytes_unless(
    rules: Option<&CacheParameters>,
    resp: &ResponseHeader,
    untransformable: bool,
    compression: &mut pingora::protocols::http::compression::ResponseCompressionCtx,
) {
    let first = |name| resp.headers.get(name).map(http::HeaderValue::as_bytes);
    let (etag, content_type) = (first(http::header::ETAG), first(http::header::CONTENT_TYPE));
    keep_bytes_of(
        rules,
        etag,
        content_type,
        (resp.status, untransformable),
        compression,
    );
    decode_unaccepted(resp, untransformable, compression);
}

/// Lets `compression` decode an answer in a content coding its request does not accept (an
/// origin may send gzip or brotli whatever it was asked, as object stores do with files kept
/// compressed): Cloudflare decodes it for a visitor that cannot. Not a partial answer (its
/// range counts coded bytes), nor one whose `Cache-Control` forbids changing it. Only an answer
/// with a `Content-Encoding` is concerned, so that an answer without one finds `compression` as
/// [`keep_bytes_of`] left it.
fn decode_unaccepted(
    resp: &ResponseHeader,
    untransformable: bool,
    compression: &mut pingora::protocols::http::compression::ResponseCompressionCtx,
) {
    if compression.is_header_phase()
        && !resp.status.is_informational()
        && resp.headers.contains_key(http::header::CONTENT_ENCODING)
    {
        let partial = resp.status == http::StatusCode::PARTIAL_CONTENT;
        compression.adjust_decompression(!untransformable && !partial);
    }
}

/// Whether a `Cache-Control` field value holds `no-transform`: the origin forbids changing the
/// body (RFC 9110 §7.7, RFC 9111 §5.2.2.6), so the edge does not compress it.
pub(crate) fn forbids_transform(cache_control: &[u8]) -> bool {
    cache_control.split(|&b| b == b',').any(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"no-transform")
    })
}

/// [`forbids_transform`] for every `Cache-Control` field of `headers`.
pub(crate) fn no_transform(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .any(|v| forbids_transform(v.as_bytes()))
}

/// [`keep_bytes`] for a response with this first `ETag` and `Content-Type`, `status`, and
/// whether its `Cache-Control` forbids transforming it.
pub(crate) fn keep_bytes_of(
    rules: Option<&CacheParameters>,
    etag: Option<&[u8]>,
    content_type: Option<&[u8]>,
    (status, untransformable): (http::StatusCode, bool),
    compression: &mut pingora::protocols::http::compression::ResponseCompressionCtx,
) {
    if !status.is_informational()
        && compression.is_header_phase()
        && (untransformable
            || rules.is_some_and(|r| r.keeps_bytes_of(etag))
            || !edge_compresses(status, content_type))
    {
        compression.adjust_level(0);
    }
}

/// `CF-Cache-Status` and the RFC 9211 `Cache-Status` for what the cache did.
pub(crate) fn cache_status(phase: &CachePhase) -> (&'static str, &'static str) {
    match phase {
        CachePhase::Hit => ("HIT", "parapet; hit"),
        CachePhase::Miss => ("MISS", "parapet; fwd=uri-miss; stored"),
        CachePhase::Expired => ("EXPIRED", "parapet; fwd=stale; stored"),
        // Served stale after the origin failed: the request went forward (RFC 9211 §2.2).
        CachePhase::Stale => ("STALE", "parapet; fwd=stale"),
        // Served from the cache while a refresh goes on in the background.
        CachePhase::StaleUpdating => ("UPDATING", "parapet; hit"),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            ("REVALIDATED", "parapet; fwd=stale; fwd-status=304")
        }
        CachePhase::Disabled(NoCacheReason::NeverEnabled) => ("DYNAMIC", "parapet; fwd=bypass"),
        _ => ("BYPASS", "parapet; fwd=uri-miss"),
    }
}

/// The values of every `name` field of `headers`, joined by commas (borrowed when there is
/// at most one).
/// A request's `Accept-Encoding` with weights (`gzip;q=0, br`) as the codings it accepts, in
/// order of preference (`br`): `None` when it has no weights.
pub(crate) fn codings_without_weights(headers: &http::HeaderMap) -> Option<Vec<u8>> {
    let weighted = headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .any(|v| headers::weighs_codings(v.as_bytes()));
    weighted.then(|| headers::codings_by_weight(&joined_values(headers, "accept-encoding")))
}

fn joined_values<'h>(headers: &'h http::HeaderMap, name: &str) -> std::borrow::Cow<'h, [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => std::borrow::Cow::Borrowed(&[]),
        (Some(one), None) => std::borrow::Cow::Borrowed(one.as_bytes()),
        (Some(first), Some(second)) => {
            let mut all = [first, second]
                .into_iter()
                .chain(values)
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .join(&b","[..]);
            all.shrink_to_fit();
            std::borrow::Cow::Owned(all)
        }
    }
}

/// Selecting fields that are lists by definition (RFC 9110 §12.5), told apart by their
/// elements. (`Accept-Encoding` is reduced to its coding class.)
const LIST_SELECTING: [&str; 3] = ["accept", "accept-charset", "accept-language"];

/// A selecting field's value as variants are told apart by (`name` lowercase; `joined`: its
/// lines joined by commas). For the fields of [`LIST_SELECTING`]: list elements without the
/// whitespace around them and without empty ones (RFC 9110 §5.6.1), so that `en, de`, `en,de`
/// and two lines `en` and `de` select the same variant; `Accept-Language` also lowercase
/// (language tags ignore case, RFC 5646 §2.1.1). Any other field, and a value with a quoted
/// string, is taken as it is: normalising a field that is not a list (`User-Agent`'s
/// `(KHTML, like Gecko)`) would let a visitor store, under a real browser's value, the answer
/// an origin gives to a value it tells apart.
fn selecting_value(name: &str, joined: std::borrow::Cow<'_, [u8]>) -> Vec<u8> {
    if !LIST_SELECTING.contains(&name) || joined.contains(&b'"') {
        return joined.into_owned();
    }
    let mut value = Vec::with_capacity(joined.len());
    for element in joined
        .split(|&b| b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
    {
        if !value.is_empty() {
            value.push(b',');
        }
        value.extend_from_slice(element);
    }
    if name == "accept-language" {
        value.make_ascii_lowercase();
    }
    value
}

/// The coding a stored variant is chosen by: br, zstd or gzip, the first the visitor accepts
/// in that order (each is stored once, made from what the origin sends), or none.
pub(crate) fn normalized_encoding(accept: &[u8]) -> &'static str {
    ["br", "zstd", "gzip"]
        .into_iter()
        .find(|coding| headers::accepts_coding(accept, coding.as_bytes()))
        .unwrap_or("")
}

/// Whether a request for `path` may be served from the cache, and whether a cache rule said
/// bypass, given the cache rules that match it.
pub(crate) fn eligibility(rules: Option<&CacheParameters>, path: &str) -> (bool, bool) {
    match rules.and_then(|m| m.cache) {
        Some(by_rule) => (by_rule, !by_rule),
        None => (parapet_cache::policy::eligible_path(path), false),
    }
}

/// The primary cache key of the request's URL, the query shaped by the zone's cache rules.
fn primary_key(session: &Session, origin: &Origin, rules: Option<&CacheParameters>) -> String {
    url_key(
        origin,
        is_https(session),
        visitor_port(session),
        &path_and_query(session),
        rules,
    )
}

/// The primary cache key of `target` (path and query) on `origin`'s host, the query shaped by
/// the zone's cache rules.
pub(crate) fn url_key(
    origin: &Origin,
    https: bool,
    port: u16,
    target: &str,
    rules: Option<&CacheParameters>,
) -> String {
    let target = rules.map_or(std::borrow::Cow::Borrowed(target), |r| r.key_target(target));
    parapet_cache::key::primary(&origin.zone_id, https, &origin.host, port, &target)
}

/// A stored response's metadata: `header` (the response as stored) fresh for `lifetime` from
/// `received`, less the age it already had (its `Age`, which also counts in the `Age` visitors
/// see; an invalid one, or one past the lifetime, makes it stale); `stale` is the
/// stale-while-revalidate and stale-if-error windows, in seconds. The origin's `Age` is not
/// stored: a later revalidation must not count it again.
fn aged(
    received: std::time::SystemTime,
    lifetime: Duration,
    mut header: ResponseHeader,
    stale: (u32, u32),
) -> CacheMeta {
    let (created, fresh_until) = match freshness::age(&header.headers) {
        Some(age) if age < lifetime => {
            let since_epoch = received
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let created = received - age.min(since_epoch.saturating_sub(Duration::from_secs(1)));
            (created, received + (lifetime - age))
        }
        _ => (received, received),
    };
    header.remove_header("age");
    CacheMeta::new(fresh_until, created, stale.0, stale.1, header)
}

/// The URL a `Location` or `Content-Location` value names, if it is on `host`: whether over
/// HTTPS, its port and its path and query. A relative reference is on the request's own
/// scheme and port (`here`).
fn same_host_target(value: &str, host: &str, here: (bool, u16)) -> Option<(bool, u16, String)> {
    let value = value.trim();
    let value = value.split_once('#').map_or(value, |(v, _)| v);
    if value.starts_with('/') && !value.starts_with("//") {
        return Some((here.0, here.1, value.to_owned()));
    }
    let (https, rest) = match value.get(..8) {
        Some(s) if s.eq_ignore_ascii_case("https://") => (true, &value[8..]),
        _ => match value.get(..7) {
            Some(s) if s.eq_ignore_ascii_case("http://") => (false, &value[7..]),
            _ => return None,
        },
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    // Without a port: the request's own, on the request's scheme (an edge behind a port
    // mapping is reached on its scheme's port); else the scheme's.
    let (named, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None if https == here.0 => (authority, here.1),
        None => (authority, if https { 443 } else { 80 }),
    };
    if !named.eq_ignore_ascii_case(host) {
        return None;
    }
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Some((https, port, path))
}

/// The `Host` the origin is sent for a visitor's `value`, when it is not that already: the
/// routed host name (lower case, no final dot) and the port the visitor gave, if any, when it
/// is the one it came to or its scheme's own (an edge behind a port mapping); another port is
/// replaced with the one it came to. The cache keys the answer on those; a `Host` the origin
/// may reflect (in a redirect, in links) must not say otherwise, or `Host:
/// www.example.com:1337` on port 80 would store a redirect to a dead port for every visitor.
pub(crate) fn canonical_host(
    value: &[u8],
    origin: &Origin,
    (https, port): (bool, u16),
) -> Option<String> {
    // A port follows the last colon outside brackets.
    let colon = value.iter().rposition(|&b| b == b':');
    let given_port = colon.filter(|&i| !value[i..].contains(&b']'));
    let (name, said_port) = match given_port {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let said_port = said_port.map(|p| std::str::from_utf8(p).ok()?.parse::<u16>().ok());
    let default = if https { 443 } else { 80 };
    let kept_port = match said_port {
        None => None,
        Some(Some(p)) if p == port || p == default => Some(p),
        Some(_) => Some(port),
    };
    if name == origin.host.as_bytes() && kept_port == said_port.flatten() {
        return None;
    }
    Some(match kept_port {
        Some(p) => format!("{}:{p}", origin.host),
        None => origin.host.clone(),
    })
}

/// Whether the visitor came over TLS.
pub(crate) fn is_https(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Cloudflare's HTTP and HTTPS ports, in pairs: where Always Use HTTPS sends a visitor, and
/// where a `flexible` zone's origin is reached for an HTTPS visitor.
pub(crate) const PORT_PAIRS: &[(u16, u16)] = &[
    (80, 443),
    (8080, 8443),
    (2052, 2053),
    (2082, 2083),
    (2086, 2087),
    (2095, 2096),
];

/// The URL a request is redirected to on the other scheme.
fn redirect_location(session: &Session, host: &str, https: bool, port: u16) -> String {
    let default = if https { 443 } else { 80 };
    let authority = if port == default {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{authority}{}", path_and_query(session))
}

async fn redirect(session: &mut Session, ctx: &Ctx, location: &str) {
    let Ok(mut resp) = ResponseHeader::build(301, Some(5)) else {
        return;
    };
    let _ = resp.insert_header("location", location);
    let _ = resp.insert_header("content-length", "0");
    if let Ok(ray) = ray_value(&ctx.ray) {
        let _ = resp.insert_header(CF_RAY, ray);
    }
    let _ = resp.insert_header("server", "parapet");
    let _ = session.write_response_header(Box::new(resp), true).await;
}

/// The pool group of origin connections verified against a zone's own trust store: one per
/// set of trusted CAs (0, the engine's default group, is for the node's roots alone).
fn trust_group(trust_store: &[Arc<parapet_model::certificate::TrustedCa>]) -> u64 {
    use std::hash::{Hash, Hasher};
    if trust_store.is_empty() {
        return 0;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for ca in trust_store {
        ca.id.hash(&mut hasher);
        ca.certificate.hash(&mut hasher);
    }
    hasher.finish().max(1)
}

/// Whether `e`, on a pooled connection to an origin, says the connection was gone before the
/// origin answered (it closed it, or reset it): a stale connection, not the origin's answer.
pub(crate) fn pooled_connection_lost(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

/// How the engine reads the session's visitor connection, when it is one of the edge's.
fn engine_reads(session: &Session) -> Option<&crate::stream::EngineReads> {
    session
        .downstream_session
        .stream()
        .and_then(crate::stream::engine_reads)
}

/// Tells the visitor's connection that the engine has the whole request
/// ([`crate::stream::EngineReads`]). Not for an upgrade: the connection carries the upgraded
/// protocol afterwards, read by the engine.
fn request_read(session: &Session) {
    if !session.is_upgrade_req()
        && let Some(reads) = engine_reads(session)
    {
        reads.request_read();
    }
}

/// Tells the visitor's connection that the request's body is chunked, so that the engine's
/// reads of it stop at its end ([`crate::stream::EngineReads`]).
fn chunked_body(session: &Session) {
    if !session.is_upgrade_req()
        && let Some(reads) = engine_reads(session)
    {
        reads.chunked_body();
    }
}

/// The length of the HTTP/1 head an HTTP/2 request makes (`METHOD target HTTP/2`, its fields,
/// the blank line), without writing it.
pub(crate) fn h1_head_len(req: &RequestHeader) -> usize {
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    req.method.as_str().len() + req.raw_path().len() + 12 + fields
}

/// The origin's port: an origin rule's, else the visitor's (`tls`: HTTPS to the origin).
pub(crate) fn origin_port(session: &Session, origin: &Origin, tls: bool) -> u16 {
    origin_port_of(origin, is_https(session) && !tls, visitor_port(session))
}

/// The port `origin` is asked on for a visitor who came to `port`, over HTTPS to an origin
/// spoken to in plain HTTP when `flexible` (the HTTP port paired with that HTTPS port), unless
/// an origin rule names one.
pub(crate) fn origin_port_of(origin: &Origin, flexible: bool, port: u16) -> u16 {
    origin.port.unwrap_or_else(|| {
        if flexible {
            PORT_PAIRS
                .iter()
                .find(|p| p.1 == port)
                .map_or(port, |p| p.0)
        } else {
            port
        }
    })
}

/// Request fields origins commonly take to rewrite the URL, host, scheme or method: what the
/// origin answers to a request with any of them is not what the key says (cache poisoning).
const REWRITING_FIELDS: [&str; 13] = [
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-host",
    "x-original-host",
    "forwarded",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether what the origin answers to this request is what its cache key names: no field that
/// rewrites the request, no body, and the target in normal form (the origin is sent the
/// visitor's own spelling of one that is not). The origin is always given the key's host
/// ([`canonical_host`]). Otherwise the answer is the visitor's alone, not stored.
fn origin_answers_the_key(session: &Session, ctx: &Ctx) -> bool {
    let req = session.req_header();
    // Also spelled with underscores (`X_Forwarded_Host`).
    let underscored = |name: &http::HeaderName| {
        REWRITING_FIELDS
            .iter()
            .any(|field| headers::underscored(field, name.as_str().as_bytes()))
    };
    // A body that ended empty (an HTTP/2 GET's empty last DATA frame, an HTTP/1.1 GET's last
    // chunk alone) is none.
    let body = ctx.body_bytes > 0 || (ctx.request_body && !ctx.request_body_ended);
    ctx.raw_target.is_none()
        && !body
        && !REWRITING_FIELDS
            .iter()
            .any(|name| req.headers.contains_key(*name))
        && !req.headers.keys().any(underscored)
}

fn visitor_port(session: &Session) -> u16 {
    session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map_or(80, SocketAddr::port)
}

/// Puts the request's path in its normal form (the path rules and the cache key see), as
/// Cloudflare normalises incoming URLs: `/%61pp/../x.js` is `/x.js`. Returns the target as it
/// came when that changed it: the origin is sent that one (Cloudflare's default), and its
/// answer is not stored, so that no visitor can store the answer to one spelling under
/// another's key. A target that is not UTF-8 is left as it came.
fn normalize_target(req: &mut RequestHeader) -> Option<Vec<u8>> {
    if !req.raw_path_is_utf8() {
        return None;
    }
    let target = req
        .uri
        .path_and_query()
        .and_then(|p| parapet_model::expr::normalized_target(p.as_str()))?;
    let target = http::uri::PathAndQuery::try_from(target).ok()?;
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(target);
    let uri = http::Uri::from_parts(parts).ok()?;
    let raw = req.raw_path().to_vec();
    req.set_uri(uri);
    Some(raw)
}

fn path_and_query(session: &Session) -> String {
    let uri = &session.req_header().uri;
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// A gRPC request (not gRPC-Web, which is made for HTTP/1.1 and goes as any request does).
pub(crate) fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .is_some_and(|v| {
            v.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

fn request_host(session: &Session) -> Option<String> {
    host_field(session.req_header()).map(str::to_owned)
}

/// The host a request names: its `Host` field, else its target's authority (HTTP/2's
/// `:authority`).
pub(crate) fn host_field(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// Where an ACME CA asks for this edge's HTTP-01 answers (RFC 8555 §8.3).
pub(crate) const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

async fn respond_with(session: &mut Session, ctx: &mut Ctx, error: EdgeError) {
    ctx.error = Some(error);
    let accept = session
        .req_header()
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = request_host(session).and_then(|h| host_of(&h));
    let (body, content_type) = error_page(error, &ctx.ray, host.as_deref(), accept.as_deref());
    let Some(resp) = page_header(error.status(), content_type, body.len(), &ctx.ray) else {
        return;
    };
    write_own_answer(session, resp, Bytes::from(body)).await;
}

/// The header of one of the edge's pages (`len` bytes of `content_type`), never stored.
pub(crate) fn page_header(
    status: u16,
    content_type: &str,
    len: usize,
    ray: &str,
) -> Option<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(8)).ok()?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)
        .ok()?;
    resp.insert_header(http::header::CONTENT_LENGTH, len).ok()?;
    resp.insert_header(CF_RAY, ray_value(ray).ok()?).ok()?;
    resp.insert_header(http::header::SERVER, "parapet").ok()?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")
        .ok()?;
    Some(resp)
}

/// Writes an answer the edge makes itself (a page, an ACME answer) through the engine's
/// filters: the header, then the body, unless the request is a HEAD, whose answer ends with its
/// header (over HTTP/2, content on a HEAD answer is a stream error for the visitor).
async fn write_own_answer(session: &mut Session, resp: ResponseHeader, body: Bytes) {
    let head = session.req_header().method == http::Method::HEAD;
    let mut tasks = vec![HttpTask::Header(Box::new(resp), head)];
    if !head {
        tasks.push(HttpTask::Body(Some(body), true));
    }
    let _ = session.write_response_tasks(tasks).await;
}

/// The longest request target taken (Cloudflare answers longer URLs with 414).
const MAX_TARGET_BYTES: usize = 16 * 1024;

/// The methods the edge passes on, for a 405's `Allow`.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A refusal of the edge's own as bytes on the wire (for one the engine would make itself,
/// before any phase: [`crate::stream::EngineReads::rewrite`]), the connection closed after it.
pub(crate) fn refusal_bytes(status: u16, ray: &str) -> Vec<u8> {
    let body = plain_refusal_body(status);
    let reason = reason_phrase(status);
    let allow = if status == 405 {
        format!("Allow: {ALLOWED_METHODS}\r\n")
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{allow}cf-ray: {ray}\r\nServer: parapet\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body of the edge's plain refusal with `status`: its code and reason.
pub(crate) fn plain_refusal_body(status: u16) -> String {
    format!("{status} {}\n", reason_phrase(status))
}

/// The reason phrase of `status` ("Error" for one without).
fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// `Allow` on a 405: the methods the edge takes (RFC 9110 §15.5.6).
pub(crate) fn allow_methods(resp: &mut ResponseHeader) -> Option<()> {
    resp.insert_header(http::header::ALLOW, ALLOWED_METHODS)
        .ok()
}

/// A refusal of the edge's own (400, 413, 431, ...): the status in a line of text, with the
/// ray id and `Server: parapet` as every answer of the edge has, and the connection closed.
async fn refuse(session: &mut Session, ray: &str, status: u16) {
    session.set_keepalive(None);
    let body = plain_refusal_body(status);
    let page =
        page_header(status, "text/plain; charset=utf-8", body.len(), ray).and_then(|mut resp| {
            if status == 405 {
                allow_methods(&mut resp)?;
            }
            Some(resp)
        });
    match page {
        Some(resp) => write_own_answer(session, resp, Bytes::from(body)).await,
        None => {
            let _ = session.respond_error(status).await;
        }
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        self.metrics.request_started();
        Ctx {
            ray: headers::ray_id(),
            origin: None,
            peer: None,
            started: Instant::now(),
            upstream_sent: None,
            origin_time: None,
            body_bytes: 0,
            request_body_ended: false,
            tries: Vec::new(),
            attempt: 0,
            error: None,
            cache_asked: false,
            cache_status: "DYNAMIC",
            cache_rules: None,
            raw_target: None,
            request_body: false,
            rule_bypass: false,
            not_modified: None,
            fetch_mark: None,
        }
    }

    /// Compression toward visitors: gzip, brotli or zstd (as the visitor's `Accept-Encoding`
    /// prefers) for compressible types the origin sent uncompressed; a strong `ETag` becomes weak.
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        modules.add_module(
            pingora::modules::http::compression::ResponseCompressionBuilder::enable(
                COMPRESSION_LEVEL,
            ),
        );
    }

    /// Refuses ambiguous framing, then routes the request; answers unknown hosts, unproxied
    /// names and loops with an error page.
    /// A visitor's weighted `Accept-Encoding`, as the edge's compression reads one: the engine's
    /// takes the listed codings in order and ignores weights, so `gzip;q=0` would get gzip.
    /// Before it reads the field, the field lists the codings accepted, highest weight first
    /// ([`headers::codings_by_weight`]).
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // `Upgrade` asks for another protocol only beside a `Connection` that lists `upgrade`
        // (RFC 9110 §7.8): alone, it is a field of this hop, and the request an ordinary one.
        // (The engine takes any `Upgrade` for a request to switch: the connection would become
        // a tunnel to the origin, past the edge, for every request that follows on it.)
        let upgrade_listed = session
            .req_header()
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        if !upgrade_listed {
            session
                .req_header_mut()
                .remove_header(&http::header::UPGRADE);
        }
        if let Some(reads) = engine_reads(session) {
            reads.seen();
        }
        // Reads of the request's body wait this long for each part (HTTP/1; HTTP/2 streams
        // are watched by the edge's own loop).
        session.set_read_timeout(Some(self.body_timeout));
        if let Some(plain) = codings_without_weights(&session.req_header().headers) {
            let plain = http::HeaderValue::from_bytes(&plain)
                .or_err(ErrorType::InvalidHTTPHeader, "Accept-Encoding by weight")?;
            session
                .req_header_mut()
                .insert_header(http::header::ACCEPT_ENCODING, plain)?;
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if session.downstream_session.is_body_empty() {
            request_read(session);
        } else if session.req_header().version == http::Version::HTTP_11
            && session
                .req_header()
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            // (A request whose coding is anything but chunked alone is refused below.)
            chunked_body(session);
        }
        // `close` in any `Connection` line closes the connection after the answer: separate
        // lines are one list (RFC 9110 §5.3), where the engine reads the first alone.
        let closing = session
            .req_header()
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .skip(1)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"));
        if closing {
            session.set_keepalive(None);
        }
        // An HTTP/1.0 visitor is sent no informational answer (RFC 9110 §15.2), and its
        // `Expect: 100-continue` is ignored (§10.1.1): neither answered nor sent on.
        if session.req_header().version == http::Version::HTTP_10 {
            session.downstream_session.set_ignore_info_resp(true);
            session
                .req_header_mut()
                .remove_header(&http::header::EXPECT);
        }
        let req = session.req_header();
        let (head_len, checked) = if req.version == http::Version::HTTP_2 {
            // HTTP/2 fields hold no line breaks (its reader refuses them): only the size of the
            // HTTP/1 head they make counts, and the framing.
            (h1_head_len(req), headers::check_framing(&req.headers))
        } else {
            let raw_head = session.as_downstream().to_h1_raw();
            let checked = headers::check_raw_head(&raw_head)
                .and_then(|()| headers::check_framing(&session.req_header().headers));
            (raw_head.len(), checked)
        };
        // A URL longer than Cloudflare takes is a 414, in a header under the limit or not.
        if session.req_header().raw_path().len() > MAX_TARGET_BYTES {
            refuse(session, &ctx.ray, 414).await;
            return Ok(true);
        }
        if head_len > self.max_header_bytes {
            refuse(session, &ctx.ray, 431).await;
            return Ok(true);
        }
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            refuse(session, &ctx.ray, 413).await;
            return Ok(true);
        }
        // An HTTP/1.1 request without Host is refused (RFC 9112 §3.2).
        let hostless = session.req_header().version == http::Version::HTTP_11
            && !session
                .req_header()
                .headers
                .contains_key(http::header::HOST);
        let req = session.req_header();
        let bad_host = req
            .headers
            .get(http::header::HOST)
            .is_some_and(|h| !headers::host_field_ok(h.as_bytes()));
        let checked = match checked {
            Ok(()) if hostless => Err("an HTTP/1.1 request without Host"),
            Ok(()) if bad_host => Err("a Host that is no host and port"),
            Ok(()) if !headers::target_form_ok(&req.method, req.raw_path()) => Err(
                "a request target neither in origin form nor in absolute form, or holding a space or a control character",
            ),
            Ok(())
                if engine_reads(session)
                    .is_some_and(crate::stream::EngineReads::bad_request_line) =>
            {
                Err("a request line with a space or a control character in its target")
            }
            other => other,
        };
        if let Err(reason) = checked {
            tracing::debug!(ray = %ctx.ray, "request refused: {reason}");
            refuse(session, &ctx.ray, 400).await;
            return Ok(true);
        }
        // TRACE would echo the visitor's cookies and credentials back (405, as Cloudflare
        // answers it).
        let refused = if req.method == http::Method::TRACE {
            Some(405)
        } else {
            None
        };
        if let Some(status) = refused {
            refuse(session, &ctx.ray, status).await;
            return Ok(true);
        }
        ctx.raw_target = normalize_target(session.req_header_mut());
        let looped = session
            .req_header()
            .headers
            .get_all(&CDN_LOOP)
            .iter()
            .any(|v| v.to_str().is_ok_and(headers::is_loop));
        if looped {
            respond_with(session, ctx, EdgeError::Loop).await;
            return Ok(true);
        }
        let snapshot = self.published.load();
        // A host of another zone than the one the TLS connection was made for (HTTP/2's are
        // answered before they reach here).
        let sni = session
            .as_downstream()
            .stream()
            .and_then(|s| s.as_any().downcast_ref::<crate::tls::TlsVisitorStream>())
            .and_then(crate::tls::TlsVisitorStream::sni);
        if let (Some(sni), Some(host)) = (sni, host_field(session.req_header()))
            && crate::route::misdirected(&snapshot, sni, host)
        {
            respond_with(session, ctx, EdgeError::Misdirected).await;
            return Ok(true);
        }
        let path = session.req_header().uri.path().to_owned();
        // An ACME CA validating an HTTP-01 challenge of ours (plain HTTP only, RFC 8555 §8.3).
        if let Some(token) = path.strip_prefix(ACME_CHALLENGE)
            && !is_https(session)
            && let Some(answer) = snapshot.acme_http.get(token)
            && request_host(session)
                .and_then(|h| host_of(&h))
                .is_some_and(|h| h == answer.hostname)
        {
            let body = answer.key_authorization.clone();
            if let Ok(mut resp) = ResponseHeader::build(200, Some(3)) {
                let _ = resp.insert_header("content-type", "text/plain");
                let _ = resp.insert_header("content-length", body.len().to_string());
                if let Ok(ray) = ray_value(&ctx.ray) {
                    let _ = resp.insert_header(CF_RAY, ray);
                }
                write_own_answer(session, resp, Bytes::from(body)).await;
            }
            return Ok(true);
        }
        match route(
            &snapshot,
            &self.origin_policy,
            request_host(session).as_deref(),
            &path,
        ) {
            Ok(mut origin) => {
                if origin.addrs.is_empty() {
                    // Only names outside Parapet: ask the resolver (cached by TTL).
                    let mut addrs = Vec::new();
                    for name in &origin.outside {
                        let Some(resolver) = self.resolver.as_ref() else {
                            break;
                        };
                        if let Some(answer) = resolver.resolve_now(name).await {
                            addrs.extend(answer.v4.iter().copied().map(std::net::IpAddr::from));
                            addrs.extend(answer.v6.iter().copied().map(std::net::IpAddr::from));
                        }
                    }
                    // What the resolver says is checked as records are: an outside name may
                    // resolve to anything.
                    let checked = if addrs.is_empty() {
                        Err(EdgeError::OriginDns)
                    } else {
                        self.origin_policy.allowed(addrs.into())
                    };
                    match checked {
                        Ok(addrs) => origin.addrs = addrs,
                        Err(refused) => {
                            // Routed: counted and logged under its zone.
                            ctx.origin = Some(origin);
                            respond_with(session, ctx, refused).await;
                            return Ok(true);
                        }
                    }
                }
                let https = is_https(session);
                let settings = origin.edge.settings;
                let port = visitor_port(session);
                // SSL off: no HTTPS for the zone's visitors. Always Use HTTPS: no plain HTTP.
                let location = if https && settings.ssl == SslMode::Off {
                    let http_port = PORT_PAIRS
                        .iter()
                        .find(|p| p.1 == port)
                        .map_or(self.http_port, |p| p.0);
                    Some(redirect_location(session, &origin.host, false, http_port))
                } else if !https && settings.always_use_https && settings.ssl != SslMode::Off {
                    let https_port = PORT_PAIRS
                        .iter()
                        .find(|p| p.0 == port)
                        .map_or(self.https_port, |p| p.1);
                    Some(redirect_location(session, &origin.host, true, https_port))
                } else {
                    None
                };
                if let Some(location) = location {
                    ctx.origin = Some(origin);
                    redirect(session, ctx, &location).await;
                    return Ok(true);
                }
                ctx.origin = Some(origin);
                Ok(false)
            }
            Err(e) => {
                respond_with(session, ctx, e).await;
                Ok(true)
            }
        }
    }

    /// A connection that could not be made sent nothing, so any request may go to the origin's
    /// next address (in [`balance::order`]); the address rests.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(addr) = ctx.peer {
            balance::failed(addr, e.etype());
        }
        if ctx.attempt + 1 < ctx.tries.len() {
            ctx.attempt += 1;
            e.set_retry(true);
            tracing::warn!(ray = %ctx.ray, origin = ?ctx.peer, "connecting to the origin failed, trying its next address: {e}");
        }
        e
    }

    /// After a connection was made: an idempotent request whose response has not started is
    /// retried when the connection failed (closed or reset), on a fresh connection when a
    /// pooled one turned out stale, else on the origin's next address (in
    /// [`balance::order`]). Not after a read timeout (524) or a bad response (520): the origin
    /// had the request, and the visitor would wait a timeout per address while each one ran it
    /// (Cloudflare retries on connection errors only).
    /// A request that may change state (POST, PATCH, ...) is never sent twice.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Only the origin's failures: a visitor that left, or the edge's own refusal of its
        // body, would fail the same way on every try while each try asks the origin again.
        let replayable = e.esource() == &ErrorSource::Upstream
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        // The engine marks errors that say the request was not processed (an HTTP/2 origin's
        // GOAWAY or REFUSED_STREAM) as retryable itself, or as retryable on a reused
        // connection. (Read from the field: `retry()` panics on the second kind.)
        let unprocessed = pooled_connection_lost(&e)
            || match e.retry {
                pingora::RetryType::Decided(retry) => retry,
                pingora::RetryType::ReusedOnly => client_reused,
            };
        if replayable && client_reused && unprocessed {
            e.set_retry(true);
        } else if replayable && unprocessed && ctx.attempt + 1 < ctx.tries.len() {
            ctx.attempt += 1;
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    /// A hit's 304, decided as the edge's direct paths decide it ([`hit::current_copy`]). An
    /// answer fetched from the origin now (a miss, an expired copy refetched) goes whole: the
    /// engine would cut it to a header, leaving the stored copy unfinished, and on HTTP/2 it
    /// wrote that 304 without ending the stream, then the body.
    fn cache_not_modified_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<bool> {
        let req = session.req_header();
        if !matches!(req.method, http::Method::GET | http::Method::HEAD) {
            return Ok(false);
        }
        let from_store = matches!(
            session.cache.phase(),
            CachePhase::Hit
                | CachePhase::Stale
                | CachePhase::StaleUpdating
                | CachePhase::Revalidated
                | CachePhase::RevalidatedNoCache(_)
        );
        if !from_store {
            return Ok(false);
        }
        let tags = req
            .headers
            .get_all(http::header::IF_NONE_MATCH)
            .iter()
            .map(http::HeaderValue::as_bytes);
        let since = req
            .headers
            .get(http::header::IF_MODIFIED_SINCE)
            .map(http::HeaderValue::as_bytes);
        let received = session
            .cache
            .maybe_cache_meta()
            .map_or_else(std::time::SystemTime::now, |meta| meta.created());
        Ok(crate::hit::current_copy(tags, since, resp, received))
    }

    /// Counts streamed request bodies (chunked ones declare no length) against the limit.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if end_of_stream {
            request_read(session);
        }
        crate::h2::request_body_read(end_of_stream);
        // What a visitor sends after an upgrade is the new protocol, not a request body.
        if session.was_upgraded() {
            return Ok(());
        }
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.request_body_ended |= end_of_stream;
        if ctx.body_bytes > self.max_body_bytes {
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
        }
        Ok(())
    }

    /// The origin: the routed record's address, on the port the visitor used.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(origin) = &ctx.origin else {
            return Error::e_explain(ErrorType::InternalError, "request was not routed");
        };
        let settings = &origin.edge.settings;
        // HTTPS to the origin only for HTTPS visitors of `full` and `strict` zones.
        let tls = is_https(session) && matches!(settings.ssl, SslMode::Full | SslMode::Strict);
        let port = origin_port(session, origin, tls);
        if ctx.tries.is_empty() {
            ctx.tries = balance::order(&origin.addrs, port).into_owned();
        }
        let Some(ip) = ctx.tries.get(ctx.attempt) else {
            return Error::e_explain(ErrorType::InternalError, "route without an address");
        };
        let addr = SocketAddr::new(*ip, port);
        ctx.peer = Some(addr);
        // The origin's name for SNI and certificate checks: an origin rule's, else the Host it
        // is sent.
        let server_name = origin
            .sni
            .clone()
            .or_else(|| origin.host_header.as_deref().and_then(host_of))
            .unwrap_or_else(|| origin.host.clone());
        let mut peer = HttpPeer::new(addr, tls, server_name);
        if tls {
            let strict = settings.ssl == SslMode::Strict;
            peer.options.verify_cert = strict;
            peer.options.verify_hostname = strict;
            if strict && !origin.edge.trust_store.is_empty() {
                // The engine's pool tells connections apart by peer, name and verification
                // flags, not by the roots they were verified against: a connection one zone's
                // trust store accepted must not serve a zone that trusts less.
                if let Some((group, roots)) = self.zone_trust_store(&origin.edge.trust_store) {
                    peer.options.ca = Some(roots);
                    peer.group_key = group;
                }
            }
            if settings.origin_pull {
                peer.client_cert_key = match &origin.edge.origin_pull {
                    Some(own) => {
                        // The engine's pool tells client certificates apart by their serial
                        // numbers alone, which an upload chooses: a zone's connections are
                        // its own.
                        use std::hash::{BuildHasher as _, BuildHasherDefault};
                        let hasher = BuildHasherDefault::<std::hash::DefaultHasher>::default();
                        peer.group_key ^= hasher.hash_one(&own.id) | 1;
                        self.zone_pull_identity(own)
                    }
                    None => self.origin_pull.clone(),
                };
            }
        }
        let (connect, read) = self.origin_timeouts(settings);
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(connect);
        peer.options.read_timeout = Some(read);
        // An origin that stops reading an upload times out as one that stops answering (its
        // answer is not read while a write to it waits).
        peer.options.write_timeout = Some(read);
        peer.options.idle_timeout = settings.idle_timeout_secs.map(Duration::from_secs);
        // HTTP/2 to the origin when the zone asks for it, and always for gRPC (which needs it);
        // without TLS there is nothing to negotiate, so it is h2c with prior knowledge. Never
        // for an upgrade (a WebSocket): HTTP/2 has no Upgrade (RFC 9113 §8.6).
        let upgrade = session.is_upgrade_req();
        if !upgrade && (settings.origin_h2 || is_grpc(session.req_header())) {
            peer.options.set_http_version(2, 2);
        } else if tls {
            peer.options.set_http_version(1, 1);
        }
        Ok(Box::new(peer))
    }

    /// In `strict` mode an origin that presents a revoked Origin CA certificate is refused
    /// (526), on new and pooled connections alike, from the revocation's snapshot on.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(addr) = ctx.peer {
            balance::connected(addr);
        }
        let strict = ctx
            .origin
            .as_ref()
            .is_some_and(|o| o.edge.settings.ssl == SslMode::Strict);
        let Some(tls) = digest
            .and_then(|d| d.ssl_digest.as_ref())
            .filter(|_| strict)
        else {
            return Ok(());
        };
        let snapshot = self.published.load();
        let revoked = <[u8; 32]>::try_from(tls.cert_digest.as_slice())
            .is_ok_and(|sha| snapshot.revoked_origin_certs.contains(&sha));
        if revoked {
            return Error::e_explain(
                ErrorType::InvalidCert,
                "the origin presented a revoked Origin CA certificate",
            );
        }
        Ok(())
    }

    /// What the origin is told: who the visitor is, over which scheme, and that this edge saw it.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(origin) = ctx.origin.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "request was not routed");
        };
        // The visitor's own spelling of a target not in normal form (see `normalize_target`):
        // in origin form, the path and query alone are put back (an HTTP/2 request keeps its
        // authority).
        if let Some(raw) = &ctx.raw_target {
            let path = std::str::from_utf8(raw)
                .ok()
                .filter(|r| r.starts_with('/'))
                .and_then(|r| http::uri::PathAndQuery::try_from(r).ok());
            let mut parts = req.uri.clone().into_parts();
            let uri = path.and_then(|path| {
                parts.path_and_query = Some(path);
                http::Uri::from_parts(parts).ok()
            });
            match uri {
                Some(uri) => req.set_uri(uri),
                None => req.set_raw_path(raw)?,
            }
        }
        // An origin is asked in origin form (RFC 9112 §3.2.1): an absolute-form target is
        // written as its path and query.
        if !req.raw_path().starts_with(b"/") && req.raw_path() != b"*" {
            let origin_form = req
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request target", e))?;
            req.set_uri(origin_form);
        }
        to_origin(
            req,
            client_ip(session),
            (is_https(session), visitor_port(session)),
            origin,
            &ctx.ray,
            ctx.cache_asked,
        )?;
        if ctx.cache_asked {
            // A compressible response the origin sends uncompressed is compressed before it is
            // stored, in the class asked for: each coding is made once, not on every hit.
            session.upstream_compression.adjust_level(COMPRESSION_LEVEL);
            ctx.fetch_mark = self.cache.map(|c| c.store.fetch_mark());
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    /// A HEAD's answer carries no content (RFC 9110 §9.3.2). The cache asks the origin with a
    /// GET for a HEAD it may keep, and stores that body; the visitor gets none of it (the
    /// engine's HTTP/1 writer drops it, its HTTP/2 writer would send it as DATA frames).
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if session.req_header().method == http::Method::HEAD {
            *body = None;
        }
        Ok(None)
    }

    /// What the visitor sees added, and no header that names the origin's address.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (status, cache_status) = if ctx.rule_bypass {
            ("BYPASS", "parapet; fwd=bypass")
        } else {
            cache_status(&session.cache.phase())
        };
        ctx.cache_status = status;
        // An interim answer (an origin's `100 Continue`, which asks for the body) leaves the
        // connection as it was; a final one before the request's body is read closes it, as
        // what is left of the body would be read as the next request. (The engine closes on
        // either.)
        let interim =
            resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS;
        session
            .downstream_session
            .set_close_on_response_before_downstream_finish(!interim);
        // The edge answers in its own version, whatever the origin's (RFC 9110 §6.2): an
        // HTTP/1.0 origin's status line would tell the visitor the connection is not kept.
        if resp.version < http::Version::HTTP_11 {
            resp.set_version(http::Version::HTTP_11);
        }
        // An upgraded connection (a WebSocket) idles as long as the zone lets an origin take to
        // answer, both ways (the visitor's side kept the engine's 60 s).
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(origin) = ctx.origin.as_ref()
        {
            let (_, read) = self.origin_timeouts(&origin.edge.settings);
            session.set_read_timeout(Some(read));
        }
        // A stale copy served for a failed origin: the engine does not keep the visitor's
        // connection after an origin failure, so the answer says it closes (a client reusing a
        // connection announced as kept would send its next request into the close).
        if status == "STALE" {
            session.set_keepalive(None);
        }
        let keeping = ctx.cache_rules.as_deref();
        // An HTTP/1.0 visitor reads no chunked coding (RFC 9112 §6.1): an answer of unknown
        // length goes as it comes, ended by the close, and is neither compressed nor decoded
        // (its length would be unknown), as nginx answers HTTP/1.0.
        let http10 = session.req_header().version < http::Version::HTTP_11;
        if http10
            && resp.headers.contains_key(http::header::TRANSFER_ENCODING)
            && !resp.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            resp.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        if let Some(compression) = session
            .downstream_modules_ctx
            .get_mut::<pingora::modules::http::compression::ResponseCompression>(
        ) {
            keep_bytes(keeping, resp, compression);
            if http10 && compression.is_header_phase() {
                compression.adjust_level(0);
                compression.adjust_decompression(false);
            }
        }
        let hsts = ctx
            .origin
            .as_ref()
            .and_then(|o| o.edge.settings.hsts)
            .filter(|_| is_https(session));
        to_visitor(
            resp,
            (status, cache_status),
            ctx.cache_rules.as_deref(),
            &ctx.ray,
            hsts,
        )?;
        // A state-changing request that succeeded makes the stored copies of its URL stale,
        // and those of the URLs its `Location` and `Content-Location` name on the same host
        // (RFC 9111 §4.4).
        let method = &session.req_header().method;
        if !method.is_safe()
            && (200..400).contains(&resp.status.as_u16())
            && let (Some(cache), Some(origin)) = (self.cache, ctx.origin.as_ref())
        {
            let url = primary_key(session, origin, ctx.cache_rules.as_deref());
            cache.store.invalidate_url(&url);
            for name in ["location", "content-location"] {
                let target = resp
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let here = (is_https(session), visitor_port(session));
                        same_host_target(v, &origin.host, here)
                    });
                if let Some((https, port, target)) = target {
                    // Keyed as a request for it would be: its path in normal form, and its
                    // path's rules shape the query.
                    let target = parapet_model::expr::normalized_target(&target).unwrap_or(target);
                    let mut named = origin.clone();
                    named.rule_path = parapet_model::expr::normalize_path(
                        target.split_once('?').map_or(target.as_str(), |(p, _)| p),
                    );
                    let rules = self.cache_parameters(&named);
                    let url = url_key(&named, https, port, &target, rules.as_deref());
                    cache.store.invalidate_url(&url);
                }
            }
        }
        Ok(())
    }

    /// A response the rules keep byte for byte is stored as the origin sent it.
    async fn adjust_upstream_modules(
        &self,
        session: &mut Session,
        upstream_response: &ResponseHeader,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        keep_bytes(
            ctx.cache_rules.as_deref(),
            upstream_response,
            &mut session.upstream_compression,
        );
        Ok(())
    }

    /// The origin's response before it is stored: no header that names the origin's address.
    /// A 304 to a revalidation is kept for the stored response's update.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.origin_time = ctx.upstream_sent.map(|t| t.elapsed());
        // Chunked is the one transfer coding passed on, as on the edge's own path.
        if !crate::reply::only_chunked(
            resp.headers
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .map(HeaderValue::as_bytes),
        ) {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "a transfer coding other than chunked",
            )
            .into_up());
        }
        // A status from 600 to 999 is in the grammar but in no class (RFC 9110 §15): an
        // invalid answer, as on the edge's own path.
        if resp.status.as_u16() >= 600 {
            return Err(Error::explain(ErrorType::InvalidHTTPHeader, "response status").into_up());
        }
        // Switching protocols is an answer to an upgrade request only (RFC 9110 §15.2.2), and
        // none goes to an HTTP/1.0 visitor (§15.2).
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS
            && (!session.is_upgrade_req() || session.req_header().version < http::Version::HTTP_11)
        {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "101 Switching Protocols to a request that asked for no upgrade",
            )
            .into_up());
        }
        from_origin(resp, ctx.peer);
        if resp.status == http::StatusCode::NOT_MODIFIED
            && session.cache.phase() == CachePhase::Stale
        {
            ctx.not_modified = Some(Box::new(resp.clone()));
        }
        Ok(())
    }

    /// Trailers (gRPC's status, for one) go through the same filter as the header: a field
    /// that names the origin's address does not reach the visitor.
    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let fields = || {
            trailers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
        };
        let filter = OriginFilter::of_fields(http::StatusCode::OK, fields, ctx.peer);
        let dropped: Vec<http::HeaderName> = trailers
            .keys()
            .filter(|name| filter.drops(name))
            .cloned()
            .collect();
        for name in dropped {
            trailers.remove(&name);
        }
        for name in filter.by_address() {
            let kept = filter.kept_values(trailers, name);
            trailers.remove(name);
            for value in kept {
                trailers.append(name.clone(), value);
            }
        }
        Ok(())
    }

    /// Ranges of a whole answer (a stored one) as the engine serves them, but where it errs: a
    /// weak validator in `If-Range` never matches (RFC 9110 §13.1.5 compares strongly: the
    /// whole answer goes), and a range set none of whose ranges selects a byte of the body (a
    /// suffix of no bytes, any range of an empty body, a start past the end) gets 416 with
    /// `Content-Range: bytes */length` (RFC 9110 §14.1.1; the engine answered an empty 206 or
    /// failed).
    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> pingora::proxy::RangeType {
        use pingora::proxy::RangeType;
        const MAX_RANGES: Option<usize> = Some(200);
        let req = session.req_header();
        let length = (resp.status == http::StatusCode::OK)
            .then(|| resp.headers.get(http::header::CONTENT_LENGTH))
            .flatten()
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse::<u64>().ok());
        let ranged = matches!(req.method, http::Method::GET | http::Method::HEAD);
        let range = req.headers.get(http::header::RANGE).filter(|_| ranged);
        let (Some(length), Some(range)) = (length, range) else {
            return pingora::proxy::range_header_filter(req, resp, MAX_RANGES);
        };
        // A weak validator never matches If-Range (RFC 9110 §13.1.5), and a date is one for an
        // encoded copy: the identity and every coding the edge makes share the origin's
        // Last-Modified with different bytes. The whole answer then, which is always right.
        let if_range = req
            .headers
            .get(http::header::IF_RANGE)
            .map(|v| v.as_bytes());
        let weak_if_range = if_range.is_some_and(|v| {
            v.starts_with(b"W/")
                || (!v.starts_with(b"\"")
                    && resp.headers.contains_key(http::header::CONTENT_ENCODING))
        });
        if weak_if_range {
            let _ = resp.insert_header(http::header::ACCEPT_RANGES, "bytes");
            return RangeType::None;
        }
        match headers::range_ask(range.as_bytes(), length) {
            headers::RangeAsk::Ignored | headers::RangeAsk::All => {
                pingora::proxy::range_header_filter(req, resp, MAX_RANGES)
            }
            // Ranges that select nothing are dropped from a set that has others (RFC 9110
            // §14.1.1): the engine would announce and then fail to send them.
            headers::RangeAsk::Some(trimmed) => {
                let mut asked = req.clone();
                let _ = asked.insert_header(http::header::RANGE, trimmed);
                pingora::proxy::range_header_filter(&asked, resp, MAX_RANGES)
            }
            headers::RangeAsk::Nothing => {
                let _ = resp.set_status(http::StatusCode::RANGE_NOT_SATISFIABLE);
                let _ = resp.insert_header(http::header::CONTENT_LENGTH, "0");
                for name in [
                    http::header::ACCEPT_RANGES,
                    http::header::CONTENT_TYPE,
                    http::header::CONTENT_ENCODING,
                    http::header::TRANSFER_ENCODING,
                ] {
                    resp.remove_header(&name);
                }
                let _ =
                    resp.insert_header(http::header::CONTENT_RANGE, format!("bytes */{length}"));
                RangeType::Invalid
            }
        }
    }

    /// Caches GET and HEAD of eligible paths (Cloudflare's default extensions) in active zones.
    /// The zone's cache rules apply to every answer (a browser TTL, strong ETags kept), with a
    /// cache or without one.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let Some(origin) = ctx.origin.as_ref() else {
            return Ok(());
        };
        let merged = self.cache_parameters(origin);
        let Some(cache) = self.cache else {
            ctx.cache_rules = merged;
            return Ok(());
        };
        let req = session.req_header();
        let (eligible, bypass) = eligibility(merged.as_deref(), req.uri.path());
        ctx.rule_bypass = bypass;
        let method_ok = matches!(req.method, http::Method::GET | http::Method::HEAD);
        ctx.cache_rules = merged;
        if !method_ok || !eligible || in_development_mode(&origin.edge.settings) {
            return Ok(());
        }
        // A GET with a body may be answered from the store, but its own answer is not kept
        // (`origin_answers_the_key`): stored, it would be every visitor's.
        ctx.request_body = !session.downstream_session.is_body_empty();
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(CACHE_LOCK_WAIT);
        // A spelling not in normal form is looked up under the normal form's key but never
        // stored (`origin_answers_the_key`): it takes no lock, which would send the requests
        // waiting on it to the origin unstored.
        let lock = (ctx.raw_target.is_none() && !ctx.request_body).then(|| cache.lock.as_ref());
        session.cache.enable(
            &cache.store,
            Some(cache.eviction),
            Some(&cache.predictor),
            lock,
            Some(overrides),
        );
        session
            .cache
            .set_max_file_size_bytes(cache.store.max_object_bytes());
        Ok(())
    }

    /// Stale copies are served only within the windows the origin gave (`stale-while-revalidate`
    /// while a background request refreshes it; `stale-if-error` when the origin fails or
    /// answers 5xx), which the engine checks before asking.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            None => !ctx
                .cache_rules
                .as_ref()
                .and_then(|r| r.serve_stale.as_ref())
                .is_some_and(|s| s.disable_stale_while_updating),
            Some(e) => e.esource() == &ErrorSource::Upstream,
        }
    }

    /// Zone, scheme, host, port, path and query: never a header the visitor chose freely.
    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let Some(origin) = ctx.origin.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "cache without a route");
        };
        let url = primary_key(session, origin, ctx.cache_rules.as_deref());
        ctx.cache_asked = true;
        Ok(parapet_cache::key::key_of(url, &origin.zone_id))
    }

    /// RFC 9111 freshness with Cloudflare's defaults; never a response that sets a cookie or
    /// varies on everything.
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        if !origin_answers_the_key(session, ctx) {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                parapet_cache::UNKEYED_REQUEST,
            )));
        }
        let authorization = session.req_header().headers.contains_key("authorization");
        // After a 304, the engine passes the stored header with a few of the 304's fields; the
        // stored response takes all of them (RFC 9111 §4.3.4) but those it keeps.
        let updated = ctx.not_modified.take().map(|fresh| {
            let stored = session.cache.maybe_cache_meta().map(CacheMeta::headers);
            updated_by_304(resp, stored, &fresh)
        });
        let mut verdict = cacheability(
            authorization,
            updated.as_ref().unwrap_or(resp),
            ctx.cache_rules.as_deref(),
        );
        // Cache Deception Armor: an answer whose type is not what the URL's extension names
        // (`/account.php/x.css` answered with a page) is not stored.
        let armored = ctx.cache_rules.as_deref().is_some_and(|r| {
            r.cache_key
                .as_ref()
                .is_some_and(|k| k.cache_deception_armor == Some(true))
        });
        if armored
            && matches!(verdict, RespCacheable::Cacheable(_))
            && !parapet_cache::policy::type_fits_extension(
                session.req_header().uri.path(),
                resp.headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
            )
        {
            verdict = RespCacheable::Uncacheable(NoCacheReason::Custom("cache deception armor"));
        }
        // The store learns when the response was asked for: one fetched while its URL was
        // invalidated (a POST to it) or its zone purged is not stored.
        if let (RespCacheable::Cacheable(meta), Some(mark)) = (&mut verdict, ctx.fetch_mark) {
            meta.extensions_mut().insert(mark);
        }
        Ok(verdict)
    }

    /// A stored response varies on the request headers its `Vary` names; `Accept-Encoding` is
    /// reduced to the coding that matters (br, gzip or none), so browsers share one variant.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let mut variance = VarianceBuilder::new();
        for value in meta.headers().get_all("vary") {
            let Ok(value) = value.to_str() else { continue };
            for name in value.split(',').map(str::trim) {
                if name.is_empty() {
                    continue;
                }
                let got = joined_values(&req.headers, name);
                if name.eq_ignore_ascii_case("accept-encoding") {
                    variance.add_value("accept-encoding", normalized_encoding(&got));
                } else {
                    let name = name.to_ascii_lowercase();
                    let got = selecting_value(&name, got);
                    variance.add_owned_name_value(name, got);
                }
            }
        }
        // A cache rule's custom key: request headers and cookies, by value or presence.
        let custom = ctx
            .cache_rules
            .as_deref()
            .and_then(|r| r.cache_key.as_ref())
            .and_then(|k| k.custom_key.as_ref());
        let mut add = |kind: &str,
                       parts: &NamedKeyParts,
                       value_of: &dyn Fn(&str) -> Option<Vec<u8>>| {
            for name in &parts.include {
                let value = value_of(name).unwrap_or_default();
                variance.add_owned_name_value(format!("key-{kind}:{name}"), value);
            }
            for name in &parts.check_presence {
                let present = value_of(name).is_some();
                variance
                    .add_owned_name_value(format!("key-{kind}?:{name}"), vec![u8::from(present)]);
            }
        };
        if let Some(parts) = custom.and_then(|c| c.header.as_ref()) {
            add("header", parts, &|name| {
                let values: Vec<&[u8]> = req
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                (!values.is_empty()).then(|| values.join(&b","[..]))
            });
        }
        if let Some(parts) = custom.and_then(|c| c.cookie.as_ref()) {
            let cookies = headers::cookies(&req.headers);
            add("cookie", parts, &|name| {
                cookies
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_bytes().to_vec())
            });
        }
        if ctx
            .cache_rules
            .as_deref()
            .is_some_and(CacheParameters::keys_device_type)
        {
            let agent = joined_values(&req.headers, "user-agent");
            variance.add_value(
                "key-device",
                headers::device_type(&String::from_utf8_lossy(&agent)),
            );
        }
        variance.finalize()
    }

    /// Failures reaching the origin become Cloudflare's 52x pages; a failure after the
    /// response began only ends the connection (or the HTTP/2 stream) without its end. An
    /// interim answer (`100 Continue`, `103`) is no beginning: a final one still follows
    /// (RFC 9110 §15.2).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let Some(written) = session.response_written().filter(|r| {
            !r.status.is_informational() || r.status == http::StatusCode::SWITCHING_PROTOCOLS
        }) {
            return FailToProxy {
                error_code: written.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        // The connection is not kept after a failure (below): the answer says so, or a client
        // would send its next request on it as it closes.
        session.set_keepalive(None);
        let error = edge_error(e);
        let code = match error {
            Some(error) => {
                respond_with(session, ctx, error).await;
                error.status()
            }
            None => match e.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => 0,
                ErrorType::HTTPStatus(code) => {
                    refuse(session, &ctx.ray, *code).await;
                    *code
                }
                _ => {
                    refuse(session, &ctx.ray, 400).await;
                    400
                }
            },
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A visitor going away mid-request is normal traffic, not an error worth a log line.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    /// One JSON access-log line per request.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // An HTTP/2 request whose body the answer did not read (a hit, a page for a refused
        // request): the part already on its way is read before the stream is let go. A stream
        // dropped with data unread is reset, and the reset discards an answer not yet flushed
        // to the connection (RFC 9113 §8.1 allows it only after the complete answer).
        let downstream = session.as_downstream_mut();
        if downstream.req_header().version == http::Version::HTTP_2 && !downstream.is_body_done() {
            let _ = tokio::time::timeout(UNREAD_BODY_WAIT, downstream.drain_request_body()).await;
        }
        crate::h2::note_engine_reset(downstream);
        // A stale object's refresh in the background is no visitor's request: neither counted
        // as one nor logged.
        if session.subrequest_ctx.is_some() {
            self.metrics.background_finished(ctx.origin_time);
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let zone = ctx.origin.as_ref().map_or("", |o| &*o.zone_id);
        self.metrics.request_finished(zone, status, ctx.origin_time);
        if !access_logged() {
            return;
        }
        let req = session.req_header();
        AccessLine {
            ray: &ctx.ray,
            zone: ctx.origin.as_ref().map(|o| &*o.zone_id),
            // Not routed (an unknown host, a refused request): the host it asked for.
            host: ctx
                .origin
                .as_ref()
                .map(|o| o.host.as_str())
                .or_else(|| host_field(req)),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            bytes: session.body_bytes_sent(),
            started: ctx.started,
            cache: ctx.cache_status,
            client_ip: client_ip(session),
            edge_error: ctx.error.map(EdgeError::code),
            origin_time: ctx.origin_time,
        }
        .log();
    }
}

/// The request the origin gets (after the engine's hop-by-hop stripping): who the visitor is,
/// over which scheme, and that this edge saw it; for a cache lookup (`cache_asked`), exactly
/// the coding class a stored variant is for.
pub(crate) fn to_origin(
    req: &mut RequestHeader,
    client: Option<std::net::IpAddr>,
    (https, port): (bool, u16),
    origin: &Origin,
    ray: &str,
    cache_asked: bool,
) -> Result<()> {
    if let Some(connection) = req
        .headers
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in headers::connection_listed(&connection) {
            req.remove_header(name);
        }
    }
    // gRPC goes to its origin over HTTP/2, where `TE: trailers` is the one TE allowed (RFC
    // 9113 §8.2.2) and gRPC servers require it.
    let trailers_accepted = is_grpc(req)
        && req
            .headers
            .get_all(http::header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"));
    for name in HOP_BY_HOP {
        req.remove_header(&name);
    }
    if trailers_accepted {
        req.insert_header(http::header::TE, "trailers")?;
    }
    // Cookies an HTTP/2 visitor sent in pieces go to the origin as one field (RFC 9113
    // §8.2.3): an HTTP/1.1 origin may join several with commas, which breaks them.
    let mut cookies = req.headers.get_all(http::header::COOKIE).iter();
    if let (Some(first), Some(_)) = (cookies.next(), cookies.next()) {
        let mut joined = first.as_bytes().to_vec();
        for more in req.headers.get_all(http::header::COOKIE).iter().skip(1) {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(more.as_bytes());
        }
        let joined = http::HeaderValue::from_bytes(&joined)
            .or_err(ErrorType::InvalidHTTPHeader, "joining cookies")?;
        req.insert_header(http::header::COOKIE, joined)?;
    }
    // Fields passing for the edge's own are not the visitor's to send.
    let impostors: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| headers::impersonates_edge(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in impostors {
        req.remove_header(&name);
    }
    if let Some(ip) = client {
        // Every X-Forwarded-For field, as one list (RFC 9110 §5.3).
        let mut existing: Option<String> = None;
        for value in req.headers.get_all("x-forwarded-for").iter() {
            if let Ok(value) = value.to_str() {
                headers::extend_list(&mut existing, value);
            }
        }
        req.insert_header(
            "x-forwarded-for",
            headers::forwarded_for(existing.as_deref(), ip),
        )?;
        req.insert_header("cf-connecting-ip", ip.to_string())?;
    }
    if let Some(host) = origin.host_header.as_deref() {
        req.insert_header("host", host)?;
    } else {
        if let Some(host) = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| canonical_host(v.as_bytes(), origin, (https, port)))
        {
            req.insert_header("host", host)?;
        }
        // An HTTP/2 request's authority is the `:authority` an HTTP/2 origin is sent.
        let authority = req.uri.authority().and_then(|a| {
            let host = canonical_host(a.as_str().as_bytes(), origin, (https, port))?;
            http::uri::Authority::try_from(host).ok()
        });
        if let Some(authority) = authority {
            let mut parts = req.uri.clone().into_parts();
            parts.authority = Some(authority);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                req.set_uri(uri);
            }
        }
    }
    // A stored response is chosen by the coding class (br, gzip or none): ask the origin for
    // exactly that class, so a variant never holds a coding another visitor of the same
    // class cannot decode.
    if cache_asked {
        let coding = normalized_encoding(&joined_values(&req.headers, "accept-encoding"));
        match coding {
            "" => {
                req.remove_header("accept-encoding");
            }
            coding => {
                req.insert_header("accept-encoding", coding)?;
            }
        }
    }
    if https {
        req.insert_header("x-forwarded-proto", "https")?;
        req.insert_header("cf-visitor", r#"{"scheme":"https"}"#)?;
    } else {
        req.insert_header("x-forwarded-proto", "http")?;
        req.insert_header("cf-visitor", r#"{"scheme":"http"}"#)?;
    }
    req.insert_header("cf-ray", ray)?;
    // Every CDN's entries stay, in order, with this edge's after them (RFC 8586).
    let mut cdn_loop = Vec::new();
    for existing in req.headers.get_all("cdn-loop") {
        cdn_loop.extend_from_slice(existing.as_bytes());
        cdn_loop.extend_from_slice(b", ");
    }
    cdn_loop.extend_from_slice(CDN_LOOP_TOKEN.as_bytes());
    let cdn_loop = http::HeaderValue::from_bytes(&cdn_loop)
        .or_err(ErrorType::InvalidHTTPHeader, "joining CDN-Loop")?;
    req.insert_header("cdn-loop", cdn_loop)?;
    // Surrogate-Control directives targeted at this edge apply to it (Edge Architecture 1.0).
    req.append_header("surrogate-capability", freshness::SURROGATE_CAPABILITY)?;
    Ok(())
}

/// The `Cache-Control` a cache rule's browser TTL gives visitors in place of the origin's (hits
/// included), if it sets one.
pub(crate) fn browser_cache_control(rules: Option<&CacheParameters>) -> Option<String> {
    let ttl = rules.and_then(|r| r.browser_ttl.as_ref())?;
    match (ttl.mode.as_str(), ttl.default) {
        ("override_origin", Some(secs)) => Some(format!("max-age={secs}")),
        ("bypass", _) => Some("no-store".to_owned()),
        _ => None,
    }
}

/// The CDN-targeted fields are this edge's (RFC 9213; Surrogate-Control), except
/// CDN-Cache-Control, which other CDNs further down may read too. Tags are for purging;
/// visitors do not see them (as Cloudflare).
pub(crate) const EDGE_ONLY: [http::HeaderName; 3] =
    [SURROGATE_CONTROL, CLOUDFLARE_CDN_CACHE_CONTROL, CACHE_TAG];

/// What the visitor sees added to a response from the origin or the cache: the ray, this
/// edge's name, the cache's status (`CF-Cache-Status` and RFC 9211's), a rule's browser TTL and
/// the zone's HSTS (`hsts`: for an HTTPS visitor); never the fields meant for this edge.
pub(crate) fn to_visitor(
    resp: &mut ResponseHeader,
    (status, cache_status): (&'static str, &'static str),
    rules: Option<&CacheParameters>,
    ray: &str,
    hsts: Option<parapet_model::settings::Hsts>,
) -> Result<()> {
    if let Some(cache_control) = browser_cache_control(rules) {
        resp.insert_header("cache-control", cache_control)?;
    }
    for name in EDGE_ONLY {
        resp.remove_header(&name);
    }
    resp.insert_header(CF_RAY, ray_value(ray)?)?;
    resp.insert_header(http::header::SERVER, HeaderValue::from_static("parapet"))?;
    resp.insert_header(CF_CACHE_STATUS, HeaderValue::from_static(status))?;
    resp.insert_header(CACHE_STATUS, HeaderValue::from_static(cache_status))?;
    // HSTS only means something over HTTPS (RFC 6797 §7.2).
    if let Some(hsts) = hsts {
        resp.insert_header("strict-transport-security", hsts.header_value())?;
        if hsts.nosniff {
            resp.insert_header("x-content-type-options", "nosniff")?;
        }
    }
    Ok(())
}

/// The ray id as a response field's value. Unique to each response, it is marked sensitive:
/// HTTP/2 writes it as a literal kept out of the connection's header table (RFC 7541 §6.2.3),
/// where each one would push out the fields every response repeats.
pub(crate) fn ray_value(ray: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(ray).or_err(ErrorType::InternalError, "ray id")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The origin's response as it may be stored and passed on (`peer`: the origin's address): no
/// field of this hop's, none that names the origin's address, and one `Content-Length` value
/// where the origin repeated it (RFC 9110 §8.6: it must not be passed on so).
pub(crate) fn from_origin(resp: &mut ResponseHeader, peer: Option<SocketAddr>) {
    one_length(resp);
    let filter = OriginFilter::new(resp, peer);
    if !filter.drops_any(resp) {
        return;
    }
    let dropped: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|name| filter.drops(name))
        .cloned()
        .collect();
    for name in dropped {
        resp.remove_header(&name);
    }
    // Of a name some of whose fields name the address, the others stay.
    for name in filter.by_address() {
        let kept: Vec<HeaderValue> = filter.kept_values(&resp.headers, name);
        resp.remove_header(name);
        for value in kept {
            let _ = resp.append_header(name.clone(), value);
        }
    }
}

/// A repeated `Content-Length` (equal values: the engine's client refuses others) as one.
fn one_length(resp: &mut ResponseHeader) {
    let mut lengths = resp.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (Some(first), second) = (lengths.next(), lengths.next()) else {
        return;
    };
    if second.is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let one = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .map(<[u8]>::trim_ascii)
        .and_then(|n| HeaderValue::from_bytes(n).ok());
    if let Some(one) = one {
        let _ = resp.insert_header(http::header::CONTENT_LENGTH, one);
    }
}

/// What [`from_origin`] takes out of an origin's header: the fields of this hop (`Keep-Alive`,
/// `Proxy-Connection`, `TE` and those its `Connection` names, RFC 9110 §7.6.1; `Upgrade` but in
/// a 101, §7.8), the framing of a response that has no body to frame (a 1xx or a 204 holds no
/// `Content-Length` or `Transfer-Encoding`, §8.6 and RFC 9112 §6.1; a 1xx no `Connection`
/// either, the final response's), and every field that names the origin's address (`peer`):
/// that field alone, its siblings of the same name stay (one `Set-Cookie` with the address
/// in its `Domain` takes no other cookie with it). (An HTTP/2 visitor's stream fails on a `TE`
/// other than `trailers`, RFC 9113 §8.2.2, and on a 204's `Content-Length` other than 0.)
pub(crate) struct OriginFilter {
    /// Not an upgrade: this hop's fields go.
    hop: bool,
    /// A 1xx or a 204: no framing fields.
    bodiless: bool,
    /// A 1xx (not a 101): no `Connection`.
    interim: bool,
    /// The names `Connection` lists: every field of these goes.
    named: Vec<http::HeaderName>,
    /// The names of the fields that name the origin's address (and that address).
    by_address: Vec<http::HeaderName>,
    address: Option<Address>,
}

/// An origin's address, to find in field values: as a whole address (`127.0.0.21` and
/// `5127.0.0.2` do not name `127.0.0.2`); an IPv6 address in any of its spellings.
struct Address {
    ip: std::net::IpAddr,
    text: [u8; 64],
    len: usize,
}

impl Address {
    fn new(ip: std::net::IpAddr) -> Self {
        let mut text = [0u8; 64];
        let len = ip_text(ip, &mut text);
        Self { ip, text, len }
    }

    fn named_in(&self, value: &[u8]) -> bool {
        let ip = &self.text[..self.len];
        // Values are short: each place the address's first byte occurs is compared. An IPv6
        // address has other spellings (upper case, zeros written out): each word that could
        // be one is read as one.
        let v6 = match self.ip {
            std::net::IpAddr::V6(v6) => Some(v6),
            std::net::IpAddr::V4(_) => None,
        };
        let part = |b: &u8| b.is_ascii_digit() || *b == b'.';
        v6.is_some_and(|v6| names_ipv6(value, v6))
            || ip.first().is_some_and(|&first| {
                memchr::memchr_iter(first, value).any(|at| {
                    value[at..].starts_with(ip)
                        && (v6.is_some()
                            || (!value[..at].last().is_some_and(part)
                                && !value.get(at + ip.len()).is_some_and(u8::is_ascii_digit)))
                })
            })
    }
}

impl OriginFilter {
    pub(crate) fn new(resp: &ResponseHeader, peer: Option<SocketAddr>) -> Self {
        Self::of_fields(
            resp.status,
            || {
                resp.headers
                    .iter()
                    .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
            },
            peer,
        )
    }

    /// The filter for a header of `status` given as its fields.
    pub(crate) fn of_fields<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>>(
        status: http::StatusCode,
        fields: impl Fn() -> I,
        peer: Option<SocketAddr>,
    ) -> Self {
        let upgrade = status == http::StatusCode::SWITCHING_PROTOCOLS;
        let hop = !upgrade;
        let interim = status.is_informational() && !upgrade;
        let bodiless = interim || status == http::StatusCode::NO_CONTENT;
        let named: Vec<http::HeaderName> = if hop {
            fields()
                .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
                .filter_map(|(_, value)| std::str::from_utf8(value).ok())
                .flat_map(headers::connection_listed)
                .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
                .collect()
        } else {
            Vec::new()
        };
        let mut by_address: Vec<http::HeaderName> = Vec::new();
        let address = peer.map(|peer| Address::new(peer.ip())).filter(|address| {
            for (name, value) in fields() {
                if address.named_in(value)
                    && !by_address
                        .iter()
                        .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name))
                    && let Ok(name) = http::HeaderName::from_bytes(name)
                {
                    by_address.push(name);
                }
            }
            !by_address.is_empty()
        });
        Self {
            hop,
            bodiless,
            interim,
            named,
            by_address,
            address,
        }
    }

    /// Whether the fields of `name` (as sent) go, or may: every one of them, or those that
    /// name the origin's address (what decisions on the name alone take as gone).
    pub(crate) fn drops_name(&self, name: &[u8]) -> bool {
        let is = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        self.by_status().any(is) || self.named.iter().any(is) || self.by_address.iter().any(is)
    }

    /// Whether the field `name: value` (as sent) goes.
    pub(crate) fn drops_field(&self, name: &[u8], value: &[u8]) -> bool {
        let is = |n: &http::HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        self.by_status().any(is)
            || self.named.iter().any(is)
            || (self.by_address.iter().any(is)
                && self.address.as_ref().is_some_and(|a| a.named_in(value)))
    }

    /// Whether every field of `name` goes (see [`OriginFilter::by_address`] for the others).
    pub(crate) fn drops(&self, name: &http::HeaderName) -> bool {
        self.by_status().any(|n| n == name) || self.named.contains(name)
    }

    /// The names some of whose fields name the origin's address (and that [`drops`] keeps).
    ///
    /// [`drops`]: OriginFilter::drops
    fn by_address(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.by_address.iter().filter(|name| !self.drops(name))
    }

    /// The values of `name` in `headers` that do not name the origin's address.
    fn kept_values(&self, headers: &http::HeaderMap, name: &http::HeaderName) -> Vec<HeaderValue> {
        headers
            .get_all(name)
            .iter()
            .filter(|value| {
                !self
                    .address
                    .as_ref()
                    .is_some_and(|a| a.named_in(value.as_bytes()))
            })
            .cloned()
            .collect()
    }

    /// The names dropped whatever the `Connection` field says.
    fn by_status(&self) -> impl Iterator<Item = &'static http::HeaderName> {
        static HOP: [http::HeaderName; 4] = [
            headers::KEEP_ALIVE,
            headers::PROXY_CONNECTION,
            http::header::TE,
            http::header::UPGRADE,
        ];
        static FRAMING: [http::HeaderName; 2] = [
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
        ];
        static INTERIM: [http::HeaderName; 1] = [http::header::CONNECTION];
        let pick = |yes: bool, names: &'static [http::HeaderName]| {
            if yes { names } else { &[] }
        };
        pick(self.hop, &HOP)
            .iter()
            .chain(pick(self.bodiless, &FRAMING))
            .chain(pick(self.interim, &INTERIM))
    }

    /// Whether the header has anything to take out.
    pub(crate) fn drops_any(&self, resp: &ResponseHeader) -> bool {
        !self.named.is_empty()
            || !self.by_address.is_empty()
            || self.by_status().any(|n| resp.headers.contains_key(n))
    }
}

/// `Cache-Control` plainly says `no-store` (its parser would find the directive too); false
/// when in doubt (a quoted value anywhere), for the parser to decide.
fn says_no_store(headers: &http::HeaderMap) -> bool {
    values_say_no_store(
        headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .map(http::HeaderValue::as_bytes),
    )
}

/// [`says_no_store`] for the values of `Cache-Control` fields.
pub(crate) fn values_say_no_store<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.any(|value| {
        // The parser finds a directive only at the start or after a delimiter.
        !value.contains(&b'"')
            && !value.first().is_some_and(u8::is_ascii_whitespace)
            && value.split(|&b| b == b',').any(|directive| {
                let name = directive.split(|&b| b == b'=').next().unwrap_or(directive);
                name.trim_ascii().eq_ignore_ascii_case(b"no-store")
            })
    })
}

/// Whether `value` holds `ip` in any of its spellings (as a word of hex digits, colons and
/// dots, within brackets or not).
fn names_ipv6(value: &[u8], ip: std::net::Ipv6Addr) -> bool {
    memchr::memchr(b':', value).is_some()
        && value
            .split(|b| !(b.is_ascii_hexdigit() || *b == b':' || *b == b'.'))
            .filter(|word| word.len() > 2 && word.contains(&b':'))
            .filter_map(|word| std::str::from_utf8(word).ok()?.parse().ok())
            .any(|found: std::net::Ipv6Addr| found == ip)
}

/// An address as text, as `Display` writes it, into `out`; its length. IPv4 is written here
/// without the formatting machinery (this runs on every origin answer).
pub(crate) fn ip_text(ip: std::net::IpAddr, out: &mut [u8; 64]) -> usize {
    use std::io::Write as _;
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    out[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    out[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                out[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        std::net::IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut out[..]);
            let _ = write!(cursor, "{ip}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    }
}

/// Fields a 304 does not update in a stored response (RFC 9111 §3.2): this hop's (§3.1), those
/// that describe the stored body (its validator, length, coding, range and digests), the `Vary`
/// it is stored under, and cookies (a response that sets one is never stored: a 304 setting one
/// refreshes the stored response without it).
const KEPT_ON_304: &[&str] = &[
    "etag",
    "content-md5",
    "content-digest",
    "repr-digest",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-authentication-info",
    "content-length",
    "content-encoding",
    "content-range",
    "vary",
    "set-cookie",
];

/// The stored response `merged` (as the engine merged it with the origin's 304 `fresh`) with
/// every field of the 304 (RFC 9111 §4.3.4: each one the 304 carries replaces the stored
/// values), except those in [`KEPT_ON_304`], which keep the values `stored` had before (or
/// stay absent). A 304 whose strong `ETag` is not the stored one's is not for this response:
/// it updates nothing.
fn updated_by_304(
    merged: &ResponseHeader,
    stored: Option<&http::HeaderMap>,
    fresh: &ResponseHeader,
) -> ResponseHeader {
    let mut out = merged.clone();
    for name in KEPT_ON_304 {
        out.remove_header(*name);
        for value in stored.into_iter().flat_map(|s| s.get_all(*name)) {
            let _ = out.append_header(*name, value.clone());
        }
    }
    let tag = |h: Option<&HeaderValue>| {
        h.map(|v| {
            v.as_bytes()
                .strip_prefix(b"W/")
                .unwrap_or(v.as_bytes())
                .to_vec()
        })
    };
    let new_tag = fresh.headers.get(http::header::ETAG);
    let strong = new_tag.is_some_and(|v| !v.as_bytes().starts_with(b"W/"));
    let old_tag = stored.and_then(|s| s.get(http::header::ETAG));
    if strong && old_tag.is_some() && tag(old_tag) != tag(new_tag) {
        return out;
    }
    for name in fresh.headers.keys() {
        if KEPT_ON_304.contains(&name.as_str()) {
            continue;
        }
        out.remove_header(name);
        for value in fresh.headers.get_all(name) {
            // A name and value already in a header are valid in another.
            let _ = out.append_header(name.clone(), value.clone());
        }
    }
    out
}

/// Whether a response may be stored, and until when: RFC 9111 freshness with Cloudflare's
/// defaults; never a response that sets a cookie or varies on everything (`authorization`: the
/// request carried credentials).
pub(crate) fn cacheability(
    authorization: bool,
    resp: &ResponseHeader,
    rules: Option<&CacheParameters>,
) -> RespCacheable {
    if resp.headers.contains_key("set-cookie") {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    // Varying on everything, or on a field the edge writes for each visitor (the variant
    // would be chosen by what the visitor sent, not by what the origin saw): one answer per
    // visitor, not stored.
    let vary_all = resp.headers.get_all("vary").iter().any(|v| {
        v.to_str().map_or(true, |v| {
            v.split(',')
                .map(str::trim)
                .any(|h| h == "*" || PER_VISITOR_FIELDS.iter().any(|f| h.eq_ignore_ascii_case(f)))
        })
    });
    let status = resp.status.as_u16();
    // Other statuses when a cache rule gives them a TTL (Cloudflare's "cache by status code").
    let status_cacheable = CACHEABLE_STATUS.contains(&status)
        || (status != 206 && rules.is_some_and(|r| r.names_status(status)));
    if vary_all || !status_cacheable {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    // A request with credentials is stored only when the response says it is shared
    // (RFC 9111 §3.5), whatever a cache rule says.
    if authorization {
        let cc = CacheControl::from_resp_headers(resp);
        let shared = cc.as_ref().is_some_and(|cc| {
            cc.public() || cc.must_revalidate() || matches!(cc.s_maxage(), Ok(Some(_)))
        });
        // This request's answer alone: the URL stays cacheable for requests without.
        if !shared {
            return RespCacheable::Uncacheable(NoCacheReason::Custom(
                parapet_cache::UNKEYED_REQUEST,
            ));
        }
    }
    // A cache rule's edge TTL replaces what the origin said.
    if let Some(rules) = rules {
        let now = std::time::SystemTime::now();
        match rules.edge_ttl_rule_for(resp.status.as_u16()) {
            parapet_model::rules::EdgeTtlRule::Origin => {}
            parapet_model::rules::EdgeTtlRule::NoStore => {
                return RespCacheable::Uncacheable(NoCacheReason::Custom("edge ttl below 0"));
            }
            // A TTL of 0: stored, and revalidated with the origin before every use (as
            // Cloudflare reads it).
            parapet_model::rules::EdgeTtlRule::Revalidate => {
                return RespCacheable::Cacheable(CacheMeta::new(now, now, 0, 0, resp.clone()));
            }
            parapet_model::rules::EdgeTtlRule::Fresh(ttl) => {
                let fresh_until = now + Duration::from_secs(u64::from(ttl));
                return RespCacheable::Cacheable(CacheMeta::new(
                    fresh_until,
                    now,
                    0,
                    0,
                    resp.clone(),
                ));
            }
        }
        let says_nothing =
            !resp.headers.contains_key("cache-control") && !resp.headers.contains_key("expires");
        if says_nothing
            && rules.edge_ttl.as_ref().map(|t| t.mode.as_str()) == Some("bypass_by_default")
        {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
    }
    // A CDN-targeted field replaces Cache-Control for the edge (RFC 9213). It is stored
    // (a revalidation reads it again) but never sent to visitors.
    match freshness::targeted(&resp.headers) {
        Some(freshness::Targeted::NoStore) => {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        Some(freshness::Targeted::Fresh { lifetime, stale }) => {
            return RespCacheable::Cacheable(aged(
                std::time::SystemTime::now(),
                lifetime,
                resp.clone(),
                stale,
            ));
        }
        Some(freshness::Targeted::Silent) | None => {}
    }
    // Most uncacheable answers are known without copying the header, the commonest without
    // parsing it.
    if says_no_store(&resp.headers) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    // The engine's reading keeps one value per directive: `private="X"` after `private`
    // would hide the bare one.
    if freshness::says_private(&resp.headers) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let cc = CacheControl::from_resp_headers(resp);
    let fresh = pingora::cache::filters::calculate_fresh_until(
        std::time::SystemTime::now(),
        cc.as_ref(),
        resp,
        authorization,
        &CACHE_DEFAULTS,
    );
    if fresh.is_none() {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    match resp_cacheable(cc.as_ref(), resp.clone(), authorization, &CACHE_DEFAULTS) {
        // The engine's lifetime, read again where RFC 9111 is stricter: quoted and
        // invalid values, Expires against Date, and the origin's Age.
        RespCacheable::Cacheable(meta) => {
            let created = meta.created();
            let lifetime = freshness::explicit_lifetime(&resp.headers).unwrap_or_else(|| {
                meta.fresh_until()
                    .duration_since(created)
                    .unwrap_or_default()
            });
            // `no-cache` forbids serving the response stale, whatever stale windows it
            // gives (the engine reads them regardless).
            let stale = if freshness::says_no_cache(&resp.headers) {
                (0, 0)
            } else {
                (meta.stale_while_revalidate_sec(), meta.stale_if_error_sec())
            };
            // The engine's header: without the fields `private="..."` and
            // `no-cache="..."` name, which must not be shared.
            RespCacheable::Cacheable(aged(created, lifetime, meta.response_header_copy(), stale))
        }
        uncacheable => uncacheable,
    }
}

/// The page a visitor gets for a failure to reach the origin or read its answer (`None`: not
/// the origin's failure).
pub(crate) fn edge_error(e: &Error) -> Option<EdgeError> {
    match (e.esource(), e.etype()) {
        // The visitor's side failing (bytes after an upgrade request's end, a reset) is no
        // failure of the origin's, whatever its type.
        (ErrorSource::Downstream, _) => None,
        (_, ErrorType::ConnectRefused) => Some(EdgeError::OriginRefused),
        (_, ErrorType::InvalidCert) => Some(EdgeError::OriginCertificate),
        (_, ErrorType::TLSHandshakeFailure | ErrorType::HandshakeError) => {
            // rustls says "invalid peer certificate" when the origin's certificate fails
            // the checks; anything else is the handshake itself failing.
            if e.to_string().contains("invalid peer certificate") {
                Some(EdgeError::OriginCertificate)
            } else {
                Some(EdgeError::OriginHandshake)
            }
        }
        // With TLS 1.3 an origin refusing the edge's (missing) client certificate says so
        // with an alert after the handshake: still a failed handshake to the visitor.
        (ErrorSource::Upstream, _) if e.to_string().contains("received fatal alert") => {
            Some(EdgeError::OriginHandshake)
        }
        (_, ErrorType::ConnectTimedout) => Some(EdgeError::ConnectTimeout),
        // A connection that could not be made is no answer of the origin's: 523 on every path
        // (the engine marks connect failures as the origin's, and the edge's own paths not).
        (_, ErrorType::ConnectNoRoute | ErrorType::ConnectError | ErrorType::SocketError) => {
            Some(EdgeError::Unreachable)
        }
        (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            Some(EdgeError::ReadTimeout)
        }
        (ErrorSource::Upstream, _) => Some(EdgeError::InvalidResponse),
        _ => None,
    }
}

/// Whether a zone with these settings caches nothing now: development mode, which turns itself
/// off after its time.
pub(crate) fn in_development_mode(settings: &parapet_model::settings::EdgeZoneSettings) -> bool {
    settings.development_mode_until.is_some()
        && settings.development_mode_at(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
}

/// Whether access-log lines are written.
pub(crate) fn access_logged() -> bool {
    tracing::enabled!(target: "parapet::access", tracing::Level::INFO)
}

/// One request's access-log line.
pub(crate) struct AccessLine<'a> {
    pub ray: &'a str,
    /// The zone the request was routed to.
    pub zone: Option<&'a str>,
    /// The host it was routed to, or asked for.
    pub host: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub started: Instant,
    pub cache: &'static str,
    pub client_ip: Option<std::net::IpAddr>,
    pub edge_error: Option<u16>,
    /// From the request sent to the origin to its answer's header (none: no origin asked).
    pub origin_time: Option<Duration>,
}

impl AccessLine<'_> {
    pub(crate) fn log(&self) {
        let line = serde_json::json!({
            "time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "ray": self.ray,
            "zone": self.zone,
            "host": self.host,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": self.started.elapsed().as_millis() as u64,
            "cache": self.cache,
            "client_ip": self.client_ip.map(|i| i.to_string()),
            "edge_error": self.edge_error,
            // To the microsecond (a float of milliseconds would carry binary noise).
            "origin_ms": self.origin_time.map(|t| t.as_micros() as f64 / 1000.0),
        });
        tracing::info!(target: "parapet::access", "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_set_of_trusted_cas_pools_its_origin_connections_apart() {
        let ca = |id: &str, pem: &str| {
            Arc::new(parapet_model::certificate::TrustedCa {
                id: id.into(),
                zone_id: "z".into(),
                certificate: pem.into(),
                issuer: String::new(),
                signature: String::new(),
                expires_on: String::new(),
                uploaded_on: String::new(),
            })
        };
        let one = [ca("a", "PEM A")];
        let two = [ca("a", "PEM A"), ca("b", "PEM B")];
        assert_eq!(
            trust_group(&[]),
            0,
            "the node's roots alone: the default group"
        );
        assert_ne!(trust_group(&one), 0);
        assert_ne!(trust_group(&one), trust_group(&two));
        assert_ne!(trust_group(&one), trust_group(&[ca("a", "PEM C")]));
        assert_eq!(trust_group(&two), trust_group(&two.clone()));
    }

    #[test]
    fn failures_to_connect_are_unreachable_whoever_marked_them() {
        for etype in [
            ErrorType::ConnectError,
            ErrorType::SocketError,
            ErrorType::ConnectNoRoute,
        ] {
            let mut marked = Error::new(etype.clone());
            marked.as_up();
            let unmarked = Error::new(etype);
            assert_eq!(edge_error(&marked), Some(EdgeError::Unreachable));
            assert_eq!(edge_error(&unmarked), Some(EdgeError::Unreachable));
        }
        let mut garbage = Error::new(ErrorType::InvalidHTTPHeader);
        garbage.as_up();
        assert_eq!(edge_error(&garbage), Some(EdgeError::InvalidResponse));
        let mut visitor = Error::new(ErrorType::ConnectionClosed);
        visitor.as_down();
        assert_eq!(edge_error(&visitor), None);
    }

    /// A response header with `fields`, in order.
    fn header(status: u16, fields: &[(&'static str, &str)]) -> ResponseHeader {
        let mut out = ResponseHeader::build(status, None).expect("header");
        for (name, value) in fields {
            out.append_header(*name, *value).expect("field");
        }
        out
    }

    #[test]
    fn the_ray_alone_is_kept_out_of_http2_header_tables() {
        let mut resp = header(200, &[("Content-Type", "text/plain")]);
        let ray = headers::ray_id();
        to_visitor(&mut resp, ("DYNAMIC", "parapet"), None, &ray, None).expect("fields");
        let value = resp.headers.get("cf-ray").expect("ray");
        assert_eq!(value.as_bytes(), ray.as_bytes());
        // HTTP/2's header compression writes a sensitive value as a never-indexed literal.
        assert!(value.is_sensitive());
        for (name, value) in resp.headers.iter().filter(|(n, _)| *n != "cf-ray") {
            assert!(!value.is_sensitive(), "{name}");
        }
    }

    #[test]
    fn selecting_values_differ_only_where_their_lists_do() {
        let value = |name: &str, v: &str| {
            String::from_utf8(selecting_value(
                name,
                std::borrow::Cow::Borrowed(v.as_bytes()),
            ))
            .expect("text")
        };
        assert_eq!(value("accept", "text/html, */*"), "text/html,*/*");
        assert_eq!(
            value("accept-charset", " utf-8 ,\tlatin1 ,"),
            "utf-8,latin1"
        );
        assert_eq!(value("accept", ""), "");
        assert_eq!(value("accept", "Text/HTML, b"), "Text/HTML,b");
        assert_eq!(
            value("accept-language", "EN-gb, De;q=0.5"),
            "en-gb,de;q=0.5"
        );
        assert_eq!(value("accept", "\"a, b\", c"), "\"a, b\", c");
        assert_ne!(value("accept", "a b"), value("accept", "a  b"));
        // Fields that are not lists by definition are taken as they are.
        assert_eq!(value("user-agent", "x (K, G)"), "x (K, G)");
        assert_eq!(value("foo", "1,, 2"), "1,, 2");
    }

    #[test]
    fn a_304_updates_every_stored_field_but_the_bodys_and_this_hops() {
        let stored = header(
            200,
            &[
                ("Content-Type", "text/plain"),
                ("X-Frame-Options", "deny"),
                ("Set-Cookie2", "a=b"),
                ("Content-Length", "56"),
                ("Content-Encoding", "gzip"),
                ("ETag", "W/\"v1\""),
                ("Vary", "accept-encoding"),
                ("Kept", "yes"),
            ],
        );
        let mut fresh = header(
            304,
            &[
                ("Content-Type", "text/plain;charset=utf-8"),
                ("X-Frame-Options", "sameorigin"),
                ("Set-Cookie2", "a=c"),
                ("Set-Cookie2", "d=e"),
                ("Content-Length", "0"),
                ("ETag", "\"v1\""),
                ("Vary", "*"),
                ("Connection", "close"),
            ],
        );
        // The engine's merge has already taken the 304's ETag.
        let mut merged = stored.clone();
        merged.insert_header("ETag", "\"v2\"").expect("field");
        let out = updated_by_304(&merged, Some(&stored.headers), &fresh);
        let values = |name: &str| -> Vec<&str> {
            out.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        assert_eq!(out.status, 200);
        assert_eq!(values("content-type"), ["text/plain;charset=utf-8"]);
        assert_eq!(values("x-frame-options"), ["sameorigin"]);
        assert_eq!(values("set-cookie2"), ["a=c", "d=e"]);
        assert_eq!(values("content-length"), ["56"]);
        assert_eq!(values("content-encoding"), ["gzip"]);
        assert_eq!(values("etag"), ["W/\"v1\""], "the stored validator stays");
        assert_eq!(values("vary"), ["accept-encoding"]);
        assert_eq!(values("kept"), ["yes"]);
        assert!(values("connection").is_empty());
        // Nothing the stored response lacked comes in under a kept name.
        let bare = header(200, &[]);
        let mut merged = bare.clone();
        merged.insert_header("ETag", "\"x\"").expect("field");
        fresh.insert_header("Set-Cookie", "id=1").expect("field");
        let out = updated_by_304(&merged, Some(&bare.headers), &fresh);
        assert!(out.headers.get("etag").is_none() && out.headers.get("set-cookie").is_none());
        assert_eq!(
            out.headers.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"sameorigin"[..])
        );
        // A 304 for another representation (its strong tag is not the stored one) updates
        // nothing.
        fresh.insert_header("ETag", "\"v2\"").expect("field");
        let out = updated_by_304(&stored, Some(&stored.headers), &fresh);
        assert_eq!(
            out.headers.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"deny"[..])
        );
    }

    #[test]
    fn an_http2_requests_head_is_measured_as_the_http1_head_it_makes() {
        let mut req = RequestHeader::build("GET", b"/a/path?q=1", None).expect("request");
        req.set_version(http::Version::HTTP_2);
        req.insert_header("host", "example.test").expect("host");
        req.append_header("x-long", "v".repeat(300)).expect("field");
        req.append_header("x-long", "w").expect("field");
        let wire =
            pingora::protocols::http::v1::client::http_req_header_to_wire(&req).expect("wire");
        assert_eq!(h1_head_len(&req), wire.len());
    }

    /// Checks that of `fields` from an origin at `peer`, the first `named` name its address and
    /// the others do not.
    fn names_first(peer: SocketAddr, fields: &[(&[u8], &[u8])], named: usize) {
        let filter =
            OriginFilter::of_fields(http::StatusCode::OK, || fields.iter().copied(), Some(peer));
        for (i, (name, _)) in fields.iter().enumerate() {
            assert_eq!(
                filter.drops_name(name),
                i < named,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn an_ipv6_origin_address_is_found_in_every_spelling() {
        let peer: SocketAddr = "[2001:db8::5]:80".parse().expect("address");
        let fields: [(&[u8], &[u8]); 5] = [
            (b"location", b"http://[2001:DB8::5]/next"),
            (b"x-backend", b"2001:db8:0:0:0:0:0:5"),
            (b"x-via", b"by 2001:0db8::0005, then"),
            (b"x-other", b"2001:db8:0::6"),
            (b"x-time", b"12:30:00"),
        ];
        names_first(peer, &fields, 3);
    }

    #[test]
    fn an_ipv4_origin_address_is_found_as_a_whole_address_only() {
        let peer: SocketAddr = "127.0.0.2:80".parse().expect("address");
        let fields: [(&[u8], &[u8]); 6] = [
            (b"location", b"http://127.0.0.2/next"),
            (b"x-backend", b"served by 127.0.0.2."),
            (b"x-port", b"127.0.0.2:8080"),
            (b"set-cookie", b"last_ip=127.0.0.21"),
            (b"x-build", b"5127.0.0.2"),
            (b"x-version", b"1.127.0.0.2"),
        ];
        names_first(peer, &fields, 3);
    }

    #[test]
    fn a_field_naming_the_origin_goes_without_its_siblings() {
        let peer: SocketAddr = "127.0.0.2:80".parse().expect("address");
        let fields: [(&[u8], &[u8]); 3] = [
            (b"set-cookie", b"a=1"),
            (b"Set-Cookie", b"b=127.0.0.2"),
            (b"set-cookie", b"c=3"),
        ];
        let filter =
            OriginFilter::of_fields(http::StatusCode::OK, || fields.iter().copied(), Some(peer));
        let kept: Vec<&[u8]> = fields
            .iter()
            .filter(|(name, value)| !filter.drops_field(name, value))
            .map(|(_, value)| *value)
            .collect();
        assert_eq!(kept, [&b"a=1"[..], b"c=3"]);

        let mut resp = ResponseHeader::build(200, None).expect("header");
        for (name, value) in fields {
            resp.append_header(String::from_utf8_lossy(name).into_owned(), value)
                .expect("field");
        }
        from_origin(&mut resp, Some(peer));
        let values: Vec<&[u8]> = resp
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(values, [&b"a=1"[..], b"c=3"]);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.19",
            "::1",
            "2001:db8::a:1",
            "::ffff:192.0.2.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            let mut text = [0u8; 64];
            let len = ip_text(ip, &mut text);
            assert_eq!(&text[..len], ip.to_string().as_bytes());
        }
    }

    #[test]
    fn no_store_is_read_plainly_only_where_the_parser_agrees() {
        let cases = [
            ("no-store", true),
            ("public, NO-STORE", true),
            ("max-age=5 ,  no-store=1", true),
            ("private=\"x, no-store\"", false),
            ("no-storex", false),
            ("a no-store", false),
            (" no-store", false),
            ("max-age=60", false),
        ];
        for (value, plain) in cases {
            let mut resp = ResponseHeader::build(200, None).expect("a header");
            resp.insert_header(http::header::CACHE_CONTROL, value)
                .expect("a field");
            assert_eq!(says_no_store(&resp.headers), plain, "{value}");
            if plain {
                let cc = CacheControl::from_resp_headers(&resp).expect("parsed");
                assert!(cc.no_store(), "{value}");
            }
        }
    }
}
