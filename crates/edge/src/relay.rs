//! The pass-through of HTTP/2 visitors' requests the cache does not keep: a GET or HEAD without
//! a body (not eligible, a rule's bypass, development mode, or a URL whose last response could
//! not be stored), to an origin spoken to in plain HTTP/1.1, over [`crate::pass`]'s per-worker
//! connection pool. [`crate::h2`] hands such a stream here instead of to the HTTP engine.
//!
//! It answers as the engine does for the same request (`tests/pass.rs` sends each one both
//! ways). The origin gets what the engine's HTTP/1 client writes for an HTTP/2 visitor
//! (HTTP/1.1, `Host` from `:authority`, without this hop's fields, with
//! [`crate::proxy::to_origin`]'s). The answer goes through the engine's filters in its order:
//! the cache's own compression of what the origin sends for a URL it knows, [`from_origin`],
//! the cache's judgement, framing, [`to_visitor`], the visitor's compression (the engine's
//! module, with the same settings). A failure before the answer began gets the engine's page
//! for it; one after it resets the visitor's stream, so a cut answer never looks whole; a
//! visitor that resets its stream while the origin thinks gives the origin request up at once,
//! as the engine does. The metrics and the access-log line are the engine's.
//!
//! As in [`crate::pass`], a response to a URL remembered as uncacheable that could be stored
//! now tells the cache so (the next request is a miss that stores it) instead of being stored.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use parapet_model::rules::CacheParameters;
use parapet_model::settings::{Hsts, SslMode};
use pingora::cache::predictor::CacheablePredictor as _;
use pingora::cache::{CacheKey, NoCacheReason, RespCacheable};
use pingora::http::RequestHeader;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::protocols::http::v2::server::HttpSession;
use pingora::{Error, ErrorType};

use crate::errors::{EdgeError, error_page};
use crate::headers::{RayId, ray_id};
use crate::pass::{
    Asking, Lesson, POOL_IDLE, STRIPPED, ToOrigin, ask, content_length, encoding_only, pool_put,
    wire_session_request,
};
use crate::proxy::{
    AccessLine, COMPRESSION_LEVEL, EdgeProxy, access_logged, cacheability, edge_error, from_origin,
    is_grpc, keep_bytes, origin_port_of, page_header, to_visitor,
};
use crate::route::Origin;
use crate::stream::SEND_TIMEOUT;

/// An HTTP/2 visitor's request to pass on, decided before anything is sent.
pub(crate) struct Relay {
    /// The request for the origin, as bytes.
    wire: Vec<u8>,
    head_only: bool,
    origin: Origin,
    port: u16,
    connect_timeout: Duration,
    read_timeout: Duration,
    idle_timeout: Duration,
    /// The key of a URL remembered as uncacheable, and why: what its response says is learnt.
    learn: Option<(CacheKey, NoCacheReason)>,
    rules: Option<Box<CacheParameters>>,
    status: (&'static str, &'static str),
    /// The visitor's compression, and for a URL the cache knows, the engine's own compression
    /// of what the origin sends.
    compression: ResponseCompressionCtx,
    upstream_compression: Option<ResponseCompressionCtx>,
    hsts: Option<Hsts>,
    client: Option<IpAddr>,
    ray: RayId,
    started: Instant,
}

/// A routed HTTP/2 request the cache does not keep, as [`crate::h2`] found it.
pub(crate) struct Relaying<'a> {
    pub(crate) req: &'a RequestHeader,
    pub(crate) head_only: bool,
    pub(crate) origin: Origin,
    pub(crate) rules: Option<Box<CacheParameters>>,
    pub(crate) learn: Option<(CacheKey, NoCacheReason)>,
    pub(crate) status: (&'static str, &'static str),
    pub(crate) https: bool,
    /// The port the visitor came to.
    pub(crate) port: u16,
    pub(crate) client: Option<IpAddr>,
    pub(crate) started: Instant,
}

impl EdgeProxy {
    /// The pass-through of an HTTP/2 request, when it is one this path makes: an origin spoken
    /// to in plain HTTP/1.1, and a request whose fields are merged here as the engine merges
    /// them.
    pub(crate) fn relay(&self, relaying: Relaying<'_>) -> Option<Box<Relay>> {
        let Relaying {
            req,
            head_only,
            origin,
            rules,
            learn,
            status,
            https,
            port,
            client,
            started,
        } = relaying;
        let settings = origin.edge.settings;
        let origin_tls = https && matches!(settings.ssl, SslMode::Full | SslMode::Strict);
        if origin_tls || settings.origin_h2 || is_grpc(req) {
            return None;
        }
        let ray = ray_id();
        let to = ToOrigin {
            client: client?,
            https,
            port,
            origin: &origin,
            ray: &ray,
            cache_asked: learn.is_some(),
        };
        // A GET is written as bytes; a HEAD as the engine's client writes its request.
        let (wire, coding) = if head_only {
            head_request(req, &to)?
        } else {
            let (wire, coding) = wire_session_request(req, &to)?;
            (wire, coding.map(|c| c.as_bytes().to_vec()))
        };
        // For a URL the cache knows, the engine compresses what the origin sends in the coding
        // class it asked for.
        let upstream_compression = match learn {
            Some(_) => {
                let mut compression = ResponseCompressionCtx::new(COMPRESSION_LEVEL, false, false);
                if let Some(coding) = &coding {
                    compression.request_filter(&encoding_only(coding)?);
                }
                Some(compression)
            }
            None => None,
        };
        // Compression toward the visitor reads the visitor's `Accept-Encoding`, as the engine's.
        let mut compression = ResponseCompressionCtx::new(COMPRESSION_LEVEL, false, false);
        compression.request_filter(req);
        let (connect_timeout, read_timeout) = self.origin_timeouts(&settings);
        self.metrics.request_started();
        Some(Box::new(Relay {
            wire,
            head_only,
            port: origin_port_of(&origin, https, port),
            connect_timeout,
            read_timeout,
            idle_timeout: settings
                .idle_timeout_secs
                .map_or(POOL_IDLE, Duration::from_secs),
            learn,
            rules,
            status,
            compression,
            upstream_compression,
            hsts: settings.hsts.filter(|_| https),
            client,
            ray,
            origin,
            started,
        }))
    }
}

/// A HEAD for the origin, as the engine's HTTP/1 client writes an HTTP/2 visitor's request
/// after [`crate::proxy::to_origin`]; with the `Accept-Encoding` the origin is sent. `None`
/// for one the engine refuses (userinfo in the authority, an origin rule's `Host` that is no
/// authority).
fn head_request(req: &RequestHeader, to: &ToOrigin<'_>) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut req = req.clone();
    req.set_version(http::Version::HTTP_11);
    if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned()) {
        if authority.contains('@') {
            return None;
        }
        req.insert_header(header::HOST, authority).ok()?;
    }
    for name in STRIPPED {
        req.remove_header(*name);
    }
    // Weighted codings as the engine's first filter reads them: `gzip;q=0` is no gzip.
    if let Some(plain) = crate::proxy::codings_without_weights(&req.headers) {
        req.insert_header(header::ACCEPT_ENCODING, plain).ok()?;
    }
    to.write_into(&mut req).ok()?;
    if req.headers.get(header::HOST).is_some_and(|host| {
        host.as_bytes().contains(&b'@') || http::uri::Authority::try_from(host.as_bytes()).is_err()
    }) {
        return None;
    }
    let coding = req
        .headers
        .get(header::ACCEPT_ENCODING)
        .map(|v| v.as_bytes().to_vec());
    Some((http_req_header_to_wire(&req)?.to_vec(), coding))
}

/// How a pass-through ended, for the metrics and the log.
struct Ended {
    status: u16,
    origin_time: Option<Duration>,
    error: Option<EdgeError>,
}

impl Relay {
    /// Passes the request on and answers the stream, then counts and logs it.
    pub(crate) async fn send(mut self: Box<Self>, session: &mut HttpSession, proxy: &EdgeProxy) {
        let ended = self.exchange(session, proxy).await;
        proxy
            .metrics
            .direct_pass_finished(&self.origin.zone_id, ended.status, ended.origin_time);
        if !access_logged() {
            return;
        }
        let req = session.req_header();
        AccessLine {
            ray: &self.ray,
            zone: Some(&self.origin.zone_id),
            host: Some(&self.origin.host),
            method: req.method.as_str(),
            path: req.uri.path(),
            status: ended.status,
            bytes: session.body_bytes_sent(),
            started: self.started,
            cache: self.status.0,
            client_ip: self.client,
            edge_error: ended.error.map(EdgeError::code),
            origin_time: ended.origin_time,
        }
        .log();
    }

    /// The origin's answer, or the page saying why there is none.
    async fn exchange(&mut self, session: &mut HttpSession, proxy: &EdgeProxy) -> Ended {
        let asking = Asking {
            wire: &self.wire,
            head_only: self.head_only,
            addrs: &self.origin.addrs,
            port: self.port,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            idle_timeout: self.idle_timeout,
            ray: &self.ray,
        };
        let asked = match unless_closed(session, ask(&asking)).await {
            Some(Ok(asked)) => asked,
            // Marked as `ask` marks them: a failure of the origin's, or of this edge's.
            Some(Err(e)) => return self.failed(session, &e).await,
            None => return Ended::closed(0, None),
        };
        let (mut reply, mut head, addr, sent) = asked;
        // An HTTP/2 visitor is sent no 1xx (the engine's HTTP/2 writer drops them), and 101
        // without an upgrade asked for is an invalid answer.
        let mut informational = 0;
        while head.status.is_informational() {
            informational += 1;
            if head.status == http::StatusCode::SWITCHING_PROTOCOLS || informational > 8 {
                let e = Error::explain(ErrorType::InvalidHTTPHeader, "unexpected 1xx");
                return self.failed(session, &e.into_up()).await;
            }
            head = match unless_closed(session, reply.head(self.head_only)).await {
                Some(Ok(head)) => head,
                Some(Err(e)) => return self.failed(session, &e.into_up()).await,
                None => return Ended::closed(0, None),
            };
        }
        let end = reply.is_done();
        let Some(resp) = head.to_header(|_| true) else {
            let e = Error::explain(ErrorType::InvalidHTTPHeader, "response fields");
            return self.failed(session, &e.into_up()).await;
        };
        drop(head);
        let mut resp = Box::new(resp);
        // The engine's filters, in its order: compression for the cache, the origin's filter,
        // the cache's judgement, framing, what the visitor sees.
        if let Some(upstream) = self.upstream_compression.as_mut() {
            keep_bytes(self.rules.as_deref(), &resp, upstream);
            upstream.response_header_filter(&mut resp, end);
        }
        let origin_time = Some(sent.elapsed());
        from_origin(&mut resp, Some(addr));
        let status = resp.status.as_u16();
        let mut lesson = Lesson::Nothing;
        if let (Some((key, reason)), Some(cache)) = (&self.learn, proxy.cache) {
            // `Authorization` sends a request to the engine: none here.
            let cacheable = matches!(
                cacheability(false, &resp, self.rules.as_deref()),
                RespCacheable::Cacheable(_)
            );
            lesson = Lesson::of(
                cacheable,
                Some(*reason),
                Some(cache.store.max_object_bytes()),
                content_length(&resp),
                !self.head_only && status == 200,
            );
            lesson.teach_now(&cache.predictor, key);
        }
        let no_body = self.head_only || matches!(status, 204 | 304);
        if !no_body
            && !end
            && !resp.headers.contains_key(header::TRANSFER_ENCODING)
            && !resp.headers.contains_key(header::CONTENT_LENGTH)
            && resp
                .insert_header(header::TRANSFER_ENCODING, "chunked")
                .is_err()
        {
            return Ended::closed(0, origin_time);
        }
        // Compressed only as the engine compresses: Cloudflare's types, 200/403/404, strong
        // ETags kept when the zone says so (an event stream or a download goes as it came).
        let rules = self.rules.as_deref();
        keep_bytes(rules, &resp, &mut self.compression);
        if to_visitor(&mut resp, self.status, rules, &self.ray, self.hsts).is_err() {
            return Ended::closed(0, origin_time);
        }
        let mut done = end || no_body;
        self.compression.response_header_filter(&mut resp, done);
        if session.write_response_header(resp, done).is_err() {
            return Ended::closed(0, origin_time);
        }
        while !done {
            // A failure once the answer began resets the stream: a cut answer never looks whole.
            let chunk = match unless_closed(session, reply.body()).await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    tracing::warn!(ray = %self.ray, "the origin's answer broke off: {e}");
                    return Ended::closed(status, origin_time);
                }
                None => return Ended::closed(status, origin_time),
            };
            done = chunk.is_none() || reply.is_done();
            let mut data = chunk;
            // A compression turned off for this answer ([`keep_bytes`]) never left its header
            // phase.
            if let Some(upstream) = self.upstream_compression.as_mut()
                && upstream.is_enabled()
                && let Some(encoded) = upstream.response_body_filter(data.as_ref(), done)
            {
                data = Some(encoded);
            }
            lesson.count(data.as_ref());
            if self.compression.is_enabled()
                && let Some(encoded) = self.compression.response_body_filter(data.as_ref(), done)
            {
                data = Some(encoded);
            }
            let written = match data {
                // Each piece within the send timeout (which the engine's writer counts per
                // wait for the window): a visitor opening its window a byte at a time does not
                // hold the stream, and the origin's connection, for longer.
                Some(data) if !data.is_empty() || done => {
                    tokio::time::timeout(SEND_TIMEOUT, session.write_body(data, done))
                        .await
                        .unwrap_or_else(|_| Error::e_explain(ErrorType::WriteTimedout, "visitor"))
                }
                Some(_) => continue,
                None => session.finish(),
            };
            if written.is_err() {
                return Ended::closed(status, origin_time);
            }
        }
        let _ = session.finish();
        if let (Some((key, _)), Some(cache)) = (&self.learn, proxy.cache)
            && lesson.learnt_at_end()
        {
            cache.predictor.mark_cacheable(key);
        }
        // The origin's connection, once its answer is whole, serves the next request.
        if let Some(connection) = reply.reusable() {
            pool_put(addr, connection, self.idle_timeout, Instant::now());
        }
        Ended {
            status,
            origin_time,
            error: None,
        }
    }

    /// A failure before the answer began: the engine's page for it, compressed as the engine's
    /// would be (for a failure without one, the stream is reset).
    async fn failed(&mut self, session: &mut HttpSession, e: &Error) -> Ended {
        let Some(error) = edge_error(e) else {
            return Ended::closed(0, None);
        };
        tracing::warn!(ray = %self.ray, "passing to the origin: {e}");
        let accept = session
            .req_header()
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let (body, content_type) = error_page(error, &self.ray, Some(&self.origin.host), accept);
        let status = error.status();
        let ended = Ended {
            status,
            origin_time: None,
            error: Some(error),
        };
        let Some(mut resp) = page_header(status, content_type, body.len(), &self.ray) else {
            return ended;
        };
        self.compression
            .response_header_filter(&mut resp, self.head_only);
        if session
            .write_response_header(Box::new(resp), self.head_only)
            .is_err()
            || self.head_only
        {
            return ended;
        }
        let body = Bytes::from(body);
        let sent = if self.compression.is_enabled() {
            self.compression.response_body_filter(Some(&body), true)
        } else {
            None
        };
        let _ = session.write_body(sent.unwrap_or(body), true).await;
        ended
    }
}

impl Ended {
    /// An answer given up (a stream reset when the session goes); `status`: the one written,
    /// if any.
    fn closed(status: u16, origin_time: Option<Duration>) -> Self {
        Self {
            status,
            origin_time,
            error: None,
        }
    }
}

/// `work`, unless the visitor resets its stream (or its connection goes) first: then the
/// request is given up, as the engine gives it up, and whatever `work` held is dropped.
async fn unless_closed<T>(session: &mut HttpSession, work: impl Future<Output = T>) -> Option<T> {
    // The reset first: a stream reset as it came makes no origin request.
    tokio::select! {
        biased;
        _ = session.idle() => None,
        done = work => Some(done),
    }
}
