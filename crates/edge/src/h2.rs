//! HTTP/2 visitor connections: the edge accepts their streams itself and answers a fresh hit
//! (in memory, or in a small disk file read whole) or passes on a request the cache does not
//! keep ([`crate::relay`]) on its own; every other stream goes to the HTTP engine, as it would
//! have.
//!
//! The accept loop does what the engine's does: one task per stream (but a hit of up to 64 KiB
//! that the visitor's window holds, queued whole on its stream by the loop itself), the
//! connection closed after the engine's HTTP/2 idle timeout without a stream in flight or
//! started, a graceful shutdown (GOAWAY, then the streams in flight finish) once the edge
//! stops, and the connection torn down after [`MAX_MALFORMED_STREAMS`] streams the engine's
//! HTTP/2 reader refused (the HTTP/2 implementation refuses most malformed streams before that
//! reader sees them) or after [`MAX_RESET_STREAMS`] reset before their answer. What the
//! connection writes in one round leaves in one send ([`FlushGate`]). The limits of
//! the HTTP/2 implementation itself (concurrent streams, header list size, rapid resets,
//! CONTINUATION floods) are the engine's options, given to the same handshake.
//!
//! The request's checks before routing are the engine's `request_filter`'s: a request they
//! would refuse, or answer with a redirect or an error page, goes to the engine; what the cache
//! makes of it is [`EdgeProxy::cached`], as for HTTP/1.
//!
//! A hit answered here is the engine's hit answer (`proxy_cache_hit`) for the same request: the
//! stored header with its `Age` and `Accept-Ranges`, the fields every answer gets
//! ([`to_visitor`]), the visitor's compression (the engine's module, with the same settings),
//! the HTTP/2 writer's `Date`; `tests/cache.rs` compares both field by field, as
//! `tests/pass.rs` does for passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header;
use parapet_model::rules::CacheParameters;
use pingora::apps::HttpServerApp;
use pingora::cache::CacheEntryKey;
use pingora::cache::CachePhase;
use pingora::cache::eviction::EvictionManager as _;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::protocols::http::v2::server::{H2Accept, HttpSession, handshake};
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use crate::Connections;
use crate::errors::EdgeError;
use crate::hit::{Cached, ENGINE_FIELDS, Found, redirects};
use crate::proxy::{
    ACME_CHALLENGE, AccessLine, COMPRESSION_LEVEL, EdgeProxy, access_logged, cache_status,
    h1_head_len, host_field, keep_bytes, to_visitor,
};
use crate::relay::{Relay, Relaying};
use crate::route::{Origin, route};
use crate::stream::FlushGate;

/// How long a connection closed for refused streams has to send its GOAWAY.
const CLOSING: std::time::Duration = std::time::Duration::from_secs(1);

/// Streams of one connection the HTTP/2 reader may refuse (bad pseudo-fields, conflicting
/// lengths) before the connection is closed, as the engine's accept loop counts them.
const MAX_MALFORMED_STREAMS: usize = 32;

/// Streams of one connection reset before their answer was whole, past which the connection is
/// closed when they are also more than a quarter of its streams. Each reset stream may have
/// cost an origin request (HTTP/2 "rapid reset": the HTTP/2 implementation counts only the
/// streams reset before they are accepted, a few at a time).
const MAX_RESET_STREAMS: u32 = 100;

/// The streams of a connection in flight, and when one last started or ended, for its idle
/// timeout.
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    opened: Instant,
    /// Microseconds from `opened` to the last stream's start or end.
    active: AtomicU64,
    /// Streams reset before their answer was whole.
    resets: AtomicU32,
}

/// Held by a stream's task while it runs.
struct StreamGuard(Arc<InFlight>);

tokio::task_local! {
    /// The connection of the HTTP/2 stream the engine answers in this task.
    static ENGINE_STREAM: Arc<InFlight>;
    /// How the request body of the HTTP/2 stream the engine answers in this task arrives.
    static REQUEST_BODY: Arc<BodyProgress>;
}

/// When an HTTP/2 request body last brought bytes, and whether it has ended. The engine sets
/// no timeout on reads of one: without this, a body that stops arriving would hold the stream
/// and its origin connection until the origin's read timeout, and be answered as the origin's
/// fault (524).
struct BodyProgress {
    base: Instant,
    /// Milliseconds from `base` to the last read.
    last: AtomicU64,
    ended: std::sync::atomic::AtomicBool,
}

impl BodyProgress {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
            ended: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Returns once the body has gone `limit` without a read before it ended.
    async fn stalled(&self, limit: std::time::Duration) {
        loop {
            if self.ended.load(Ordering::Relaxed) {
                return std::future::pending().await;
            }
            let last = self.last.load(Ordering::Relaxed);
            let due = self.base + std::time::Duration::from_millis(last) + limit;
            tokio::time::sleep_until(due.into()).await;
            if !self.ended.load(Ordering::Relaxed) && self.last.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// The engine read (a part of) the request body of this task's HTTP/2 stream, the last one if
/// `ended`. Outside an engine's HTTP/2 stream, nothing.
pub(crate) fn request_body_read(ended: bool) {
    let _ = REQUEST_BODY.try_with(|progress| {
        let now = u64::try_from(progress.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        progress.last.store(now, Ordering::Relaxed);
        if ended {
            progress.ended.store(true, Ordering::Relaxed);
        }
    });
}

/// Counts toward its connection's resets an HTTP/2 stream the engine answered (`session`) if the
/// visitor reset it before the answer was whole. Outside an engine's HTTP/2 stream, nothing.
pub(crate) fn note_engine_reset(session: &mut ServerSession) {
    let _ = ENGINE_STREAM.try_with(|in_flight| {
        let Some(closed) = session.watch_h2_stream_close() else {
            return;
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if matches!(
            std::pin::pin!(closed).poll(&mut cx),
            std::task::Poll::Ready(Ok(_))
        ) {
            in_flight.resets.fetch_add(1, Ordering::Relaxed);
        }
    });
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_one();
        }
    }
}

impl InFlight {
    fn new() -> Self {
        Self {
            count: AtomicUsize::new(0),
            idle: Notify::new(),
            opened: Instant::now(),
            active: AtomicU64::new(0),
            resets: AtomicU32::new(0),
        }
    }

    /// A stream started or ended now.
    fn touch(&self) {
        let us = u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.active.store(us, Ordering::Relaxed);
    }

    fn start(self: &Arc<Self>) -> StreamGuard {
        self.touch();
        self.count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(self))
    }

    /// Returns once no stream has been in flight or started for `timeout` (never without
    /// one). What the connection sends meanwhile does not count: PING and SETTINGS answers do
    /// not keep a connection without streams open (answers still queued then are let out by
    /// the close, within the send timeout). One future for the connection's life: its timer is
    /// set again only when it fires, however many streams come and go meanwhile.
    async fn idle_for(&self, timeout: Option<std::time::Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            while self.count.load(Ordering::Relaxed) != 0 {
                self.idle.notified().await;
            }
            let active = self.active.load(Ordering::Relaxed);
            let since = self.opened + std::time::Duration::from_micros(active);
            tokio::time::sleep_until((since + timeout).into()).await;
            if self.count.load(Ordering::Relaxed) == 0
                && self.active.load(Ordering::Relaxed) == active
            {
                return;
            }
        }
    }
}

impl Connections {
    /// Serves an HTTP/2 connection (its preface read, or ALPN's choice) until it closes.
    /// `gate` holds back the connection's flushes (see [`accept`]).
    pub(crate) async fn serve_h2(
        self: &Arc<Self>,
        stream: Stream,
        gate: FlushGate,
        shutdown: &ShutdownWatch,
    ) {
        // The name the TLS handshake was for: each request's host must be of its zone.
        let sni: Option<Box<str>> = stream
            .as_any()
            .downcast_ref::<crate::tls::TlsVisitorStream>()
            .and_then(crate::tls::TlsVisitorStream::sni)
            .map(Into::into);
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        // A visitor that never sends its preface (after TLS chose HTTP/2) is not waited for
        // longer than an idle one.
        let handshaken = tokio::time::timeout(
            crate::IDLE_TIMEOUT,
            handshake(stream, self.http.h2_options.clone()),
        );
        let mut conn = match handshaken.await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!("HTTP/2 handshake: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("HTTP/2 handshake: no preface within the idle timeout");
                return;
            }
        };
        let idle_timeout = self
            .http
            .server_options
            .as_ref()
            .and_then(|o| o.h2_idle_timeout);
        let in_flight = Arc::new(InFlight::new());
        let idle = in_flight.idle_for(idle_timeout);
        let mut idle = std::pin::pin!(idle);
        let mut watch = shutdown.clone();
        let mut stopping = false;
        // When a close that waits for what is queued gives up (none: the edge's own stop).
        let mut closing_by = None;
        let mut malformed = 0;
        let mut streams = 0u32;
        loop {
            let accepted = if stopping {
                let accepting = accept(&mut conn, &digest, &gate);
                match closing_by {
                    None => accepting.await,
                    Some(by) => match tokio::time::timeout_at(by, accepting).await {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    },
                }
            } else {
                tokio::select! {
                    biased;
                    // The edge stopping (or its watch gone).
                    _ = watch.wait_for(|stopping| *stopping) => {
                        conn.graceful_shutdown();
                        stopping = true;
                        continue;
                    }
                    accepted = accept(&mut conn, &digest, &gate) => accepted,
                    () = &mut idle => Ok(None),
                }
            };
            match accepted {
                // Usually the visitor going away without closing HTTP/2.
                Err(e) => {
                    tracing::debug!("HTTP/2 stream: {e}");
                    return;
                }
                // Idle, or closed by the visitor, with answers still queued (their streams not
                // done): a graceful close lets them leave, within the send timeout; streams
                // racing it are still answered.
                Ok(None) if !stopping && conn.has_streams() => {
                    conn.graceful_shutdown();
                    stopping = true;
                    closing_by = Some(tokio::time::Instant::now() + crate::stream::SEND_TIMEOUT);
                }
                // Idle, or closed by the visitor, with nothing queued: a GOAWAY first (RFC 9113
                // §6.8), so that a request racing the close is known to the visitor as not
                // processed.
                Ok(None) => {
                    go_away(&mut conn, ::h2::Reason::NO_ERROR).await;
                    return;
                }
                Ok(Some(H2Accept::Rejected)) => {
                    malformed += 1;
                    if malformed >= MAX_MALFORMED_STREAMS {
                        tracing::warn!(
                            "HTTP/2 connection closed after {malformed} malformed streams"
                        );
                        // A GOAWAY, sent with what this round gathered, within a bound.
                        go_away(&mut conn, ::h2::Reason::ENHANCE_YOUR_CALM).await;
                        return;
                    }
                }
                Ok(Some(H2Accept::Session(mut session))) => {
                    streams = streams.saturating_add(1);
                    let resets = in_flight.resets.load(Ordering::Relaxed);
                    if resets > MAX_RESET_STREAMS && resets.saturating_mul(4) > streams {
                        tracing::warn!(
                            "HTTP/2 connection closed after {resets} of {streams} streams reset"
                        );
                        go_away(&mut conn, ::h2::Reason::ENHANCE_YOUR_CALM).await;
                        return;
                    }
                    // Reset as it came (HEADERS and RST_STREAM in one read): nothing to do.
                    if was_reset(&mut session) {
                        in_flight.resets.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let misdirected = sni.as_deref().is_some_and(|sni| {
                        host_field(session.req_header()).is_some_and(|host| {
                            crate::route::misdirected(&self.proxy.published.load(), sni, host)
                        })
                    });
                    let direct = if session.req_header().method == http::Method::CONNECT {
                        Some(H2Direct::MethodRefused)
                    } else if misdirected {
                        Some(H2Direct::Refused(EdgeError::Misdirected))
                    } else {
                        match self.proxy.h2_direct(&session) {
                            Some(H2Direct::Hit(hit)) if hit.at_once() => {
                                // Queued whole on the stream at once: no task of its own.
                                in_flight.touch();
                                if let Some(windowed) =
                                    hit.answer_at_once(&mut session, &self.proxy)
                                {
                                    let guard = in_flight.start();
                                    let app = Arc::clone(self);
                                    tokio::spawn(async move {
                                        let _guard = guard;
                                        windowed.send(&session, &app.proxy).await;
                                    });
                                }
                                continue;
                            }
                            direct => direct,
                        }
                    };
                    let guard = in_flight.start();
                    let app = Arc::clone(self);
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        app.h2_stream(session, direct, &guard.0, &shutdown).await;
                    });
                }
            }
        }
    }

    /// One stream: a hit or a pass-through answered here (`direct`), anything else by the
    /// engine.
    async fn h2_stream(
        &self,
        mut session: HttpSession,
        direct: Option<H2Direct>,
        in_flight: &Arc<InFlight>,
        shutdown: &ShutdownWatch,
    ) {
        // A visitor that opens no window for an answer does not hold its stream (and an
        // origin's connection) forever.
        session.set_write_timeout(Some(crate::stream::SEND_TIMEOUT));
        match direct {
            Some(H2Direct::Hit(hit)) => {
                Box::pin(hit.send(&mut session, &self.proxy)).await;
            }
            Some(H2Direct::Pass(relay)) => {
                Box::pin(relay.send(&mut session, &self.proxy)).await;
            }
            Some(H2Direct::Refused(error)) => {
                refuse(&mut session, &self.proxy, Err(error)).await;
                return;
            }
            Some(H2Direct::MethodRefused) => {
                refuse(&mut session, &self.proxy, Ok(405)).await;
                return;
            }
            None => {
                // A request whose body is still to come: what it is, should the body stall.
                let asked = (!session.is_body_done()).then(|| {
                    let req = session.req_header();
                    (
                        req.method.clone(),
                        req.uri.path().to_owned(),
                        host_field(req).and_then(crate::route::host_of),
                        visitor_ip(&session),
                    )
                });
                // Boxed: the engine's state machine does not size the task of every stream.
                // The engine's log step counts the stream if it was reset
                // ([`note_engine_reset`]).
                let engine = Box::pin(HttpServerApp::process_new_http(
                    &self.http,
                    ServerSession::new_http2(session),
                    shutdown,
                ));
                let engine = ENGINE_STREAM.scope(Arc::clone(in_flight), engine);
                let Some((method, path, host, client_ip)) = asked else {
                    engine.await;
                    return;
                };
                let started = Instant::now();
                let progress = Arc::new(BodyProgress::new());
                let engine = REQUEST_BODY.scope(Arc::clone(&progress), engine);
                tokio::select! {
                    _ = engine => {}
                    () = progress.stalled(self.proxy.body_timeout) => {
                        // The engine and its stream are dropped: the stream is reset, the
                        // origin's connection closed. Counted and logged as nginx's
                        // `client_body_timeout` (408).
                        self.proxy.metrics.refused_unparsed(408);
                        if access_logged() {
                            AccessLine {
                                ray: &crate::headers::ray_id(),
                                zone: None,
                                host: host.as_deref(),
                                method: method.as_str(),
                                path: &path,
                                status: 408,
                                bytes: 0,
                                started,
                                cache: "",
                                client_ip,
                                edge_error: None,
                                origin_time: None,
                            }
                            .log();
                        }
                    }
                }
                return;
            }
        }
        // A hit or pass the visitor reset before its answer was whole counts toward the
        // connection's resets.
        if was_reset(&mut session) {
            in_flight.resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Ends the connection with a GOAWAY for `reason`, sent with what is queued, within
/// [`CLOSING`].
async fn go_away(conn: &mut ::h2::server::Connection<Stream, Bytes>, reason: ::h2::Reason) {
    conn.abrupt_shutdown(reason);
    let closing = std::future::poll_fn(|cx| conn.poll_closed(cx));
    let _ = tokio::time::timeout(CLOSING, closing).await;
}

/// Whether `session`'s stream is reset by now (by the visitor, or for its connection).
fn was_reset(session: &mut HttpSession) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        std::pin::Pin::new(&mut session.idle()).poll(&mut cx),
        std::task::Poll::Ready(Ok(_))
    )
}

/// The connection's next stream, its frames written with flushes held back by `gate`, then,
/// once it has nothing more to do for now, polled once more with them let through: what it
/// wrote for every stream it handled in this round leaves in one send, where the HTTP/2
/// implementation would send after each DATA frame.
async fn accept(
    conn: &mut ::h2::server::Connection<Stream, Bytes>,
    digest: &Arc<Digest>,
    gate: &FlushGate,
) -> pingora::Result<Option<H2Accept>> {
    let mut accepting = std::pin::pin!(HttpSession::from_h2_conn(conn, Arc::clone(digest)));
    std::future::poll_fn(|cx| {
        gate.hold(true);
        let accepted = accepting.as_mut().poll(cx);
        gate.hold(false);
        if accepted.is_ready() {
            return accepted;
        }
        accepting.as_mut().poll(cx)
    })
    .await
}

/// A hit to answer on an HTTP/2 stream.
struct H2Hit {
    found: Found,
    head_only: bool,
    resp: Box<pingora::http::ResponseHeader>,
    compression: ResponseCompressionCtx,
    zone: Arc<str>,
    host: String,
    ray: crate::headers::RayId,
    started: Instant,
}

/// What the edge answers itself on an HTTP/2 stream.
#[allow(
    clippy::large_enum_variant,
    reason = "a hit is made and sent at once, without moving"
)]
enum H2Direct {
    Hit(H2Hit),
    Pass(Box<Relay>),
    /// The edge's page for a request it refuses before routing.
    Refused(EdgeError),
    /// A method the edge does not take (CONNECT: it opens no tunnels): 405 with `Allow`, as
    /// over HTTP/1.1 (the engine's own answer has neither the edge's fields nor `Allow`).
    MethodRefused,
}

/// The visitor's address on an HTTP/2 stream.
fn visitor_ip(session: &HttpSession) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(std::net::SocketAddr::ip)
}

/// Answers a stream the edge refuses before routing, counted and logged: `Err`, with the
/// edge's page for that error (as the engine's, in the format the request asks for); `Ok`,
/// with a plain answer of that status (and `Allow` on a 405).
async fn refuse(session: &mut HttpSession, proxy: &EdgeProxy, refusal: Result<u16, EdgeError>) {
    let started = Instant::now();
    let ray = crate::headers::ray_id();
    let req = session.req_header();
    let head_only = req.method == http::Method::HEAD;
    let accept = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let host = host_field(req).and_then(crate::route::host_of);
    let (status, (body, content_type)) = match refusal {
        Err(error) => (
            error.status(),
            crate::errors::error_page(error, &ray, host.as_deref(), accept),
        ),
        Ok(status) => (
            status,
            (
                crate::proxy::plain_refusal_body(status),
                "text/plain; charset=utf-8",
            ),
        ),
    };
    proxy.metrics.refused_unparsed(status);
    let resp =
        crate::proxy::page_header(status, content_type, body.len(), &ray).and_then(|mut resp| {
            if status == 405 {
                crate::proxy::allow_methods(&mut resp)?;
            }
            Some(resp)
        });
    if let Some(resp) = resp
        && session
            .write_response_header(Box::new(resp), head_only)
            .is_ok()
        && !head_only
    {
        let _ = session.write_body(Bytes::from(body), true).await;
    }
    let _ = session.finish();
    if access_logged() {
        let req = session.req_header();
        AccessLine {
            ray: &ray,
            zone: None,
            host: host.as_deref(),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            bytes: 0,
            started,
            cache: "",
            client_ip: visitor_ip(session),
            edge_error: refusal.err().map(EdgeError::code),
            origin_time: None,
        }
        .log();
    }
}

impl EdgeProxy {
    /// The edge's own answer to this stream's request, when it is one answered here: a GET or
    /// HEAD without a body and without the fields the engine decides on ([`ENGINE_FIELDS`]),
    /// routed to an origin in Parapet's zones, that the engine would neither refuse nor
    /// redirect; a fresh hit, or a pass-through the cache does not keep ([`crate::relay`]).
    fn h2_direct(&self, session: &HttpSession) -> Option<H2Direct> {
        let started = Instant::now();
        let req = session.req_header();
        let head_only = match req.method {
            http::Method::GET => false,
            http::Method::HEAD => true,
            _ => return None,
        };
        // The engine's checks before routing: a request it answers with 400, 431 or a page is
        // its (a `:path` that is not an absolute path among them, RFC 9113 §8.3.1).
        let target = req
            .uri
            .path_and_query()
            .map_or(&b""[..], |p| p.as_str().as_bytes());
        if !session.is_body_empty()
            || !crate::headers::target_form_ok(&req.method, target)
            || h1_head_len(req) > self.max_header_bytes
            || req.uri.path().starts_with(ACME_CHALLENGE)
            || req
                .headers
                .keys()
                .any(|name| ENGINE_FIELDS.contains(&name.as_str()))
        {
            return None;
        }
        let host = host_field(req).filter(|h| crate::headers::host_field_ok(h.as_bytes()))?;
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(80, std::net::SocketAddr::port);
        // Routed and keyed on the target's normal form; a pass sends the origin the visitor's
        // own spelling (see `proxy::normalize_target`).
        let target = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |p| p.as_str());
        let normal = parapet_model::expr::normalized_target(target);
        let target = normal.as_deref().unwrap_or(target);
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let snapshot = self.published.load();
        let origin = route(&snapshot, &self.origin_policy, Some(host), path).ok()?;
        if origin.addrs.is_empty() || redirects(&origin.edge.settings, https) {
            return None;
        }
        let rules = self.cache_parameters(&origin);
        match self.cached(&origin, rules.as_deref(), https, port, target) {
            Cached::Looked(key) => {
                let found = self.fresh_hit(req, key, rules.as_deref())?;
                let hit = self.h2_hit(req, found, origin, rules, https, started)?;
                Some(H2Direct::Hit(hit))
            }
            Cached::Passed { learn, status } => {
                // The answer to another spelling teaches nothing about the key's.
                let learn = learn.filter(|_| normal.is_none());
                let client = visitor_ip(session);
                let relaying = Relaying {
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
                };
                self.relay(relaying).map(H2Direct::Pass)
            }
        }
    }

    /// The answer to a fresh hit on an HTTP/2 stream.
    fn h2_hit(
        &self,
        req: &RequestHeader,
        found: Found,
        origin: Origin,
        rules: Option<Box<CacheParameters>>,
        https: bool,
        started: Instant,
    ) -> Option<H2Hit> {
        let head_only = req.method == http::Method::HEAD;
        let settings = origin.edge.settings;
        // The engine's hit header (`cache_hit_header`, its range filter for a request without
        // `Range`), then its response filter's fields and the visitor's compression.
        let mut resp = Box::new(found.header().clone());
        let age = SystemTime::now()
            .duration_since(found.epoch())
            .unwrap_or_default()
            .as_secs();
        resp.insert_header(header::AGE, age).ok()?;
        resp.set_version(http::Version::HTTP_11);
        // The range filter's condition, a 200 with a length (`fresh_hit` checked the length).
        if resp.status == http::StatusCode::OK {
            resp.insert_header(header::ACCEPT_RANGES, "bytes").ok()?;
        }
        let mut compression = ResponseCompressionCtx::new(COMPRESSION_LEVEL, false, false);
        compression.request_filter(req);
        keep_bytes(rules.as_deref(), &resp, &mut compression);
        let ray = crate::headers::ray_id();
        let hsts = settings.hsts.filter(|_| https);
        to_visitor(
            &mut resp,
            cache_status(&CachePhase::Hit),
            rules.as_deref(),
            &ray,
            hsts,
        )
        .ok()?;
        compression.response_header_filter(&mut resp, head_only);
        // A larger body to compress goes to the engine, which compresses it piece by piece
        // between writes: here it would be compressed whole, holding the worker's thread.
        if compression.is_enabled() && !head_only && found.body.len() > SENT_PART {
            return None;
        }
        if let Some(cache) = self.cache
            && found.weight > 0
        {
            cache.eviction.access(
                &CacheEntryKey::key_only(found.key.to_compact()),
                found.weight,
                found.fresh_until(),
            );
        }
        self.metrics.request_started();
        Some(H2Hit {
            found,
            head_only,
            resp,
            compression,
            zone: origin.zone_id,
            host: origin.host,
            ray,
            started,
        })
    }
}

/// Bodies up to this size are queued whole on their stream at once, without a task of their
/// own; the stream sends them as the visitor's window allows.
const AT_ONCE_BYTES: usize = crate::stream::HELD_GATHER;

/// The part of a larger hit's body written within one send timeout.
const SENT_PART: usize = 64 * 1024;

/// A hit's header written: what follows it.
enum Begun {
    /// The stream is gone.
    Failed,
    /// A HEAD: the header ended the stream.
    Ended,
    Body(Bytes),
}

/// The body of a hit whose header is written, waiting for the visitor's window.
struct Windowed {
    stream: ::h2::SendStream<Bytes>,
    body: Bytes,
    done: HitDone,
}

impl Windowed {
    /// Sends the body as the window opens, all of it within the send timeout (else the stream
    /// is reset), then counts and logs the answer.
    async fn send(self, session: &HttpSession, proxy: &EdgeProxy) {
        let Windowed {
            mut stream,
            mut body,
            done,
        } = self;
        let sent = body.len();
        let deadline = tokio::time::Instant::now() + crate::stream::SEND_TIMEOUT;
        let written = loop {
            let room = stream.capacity().min(body.len());
            if room > 0 {
                let last = room == body.len();
                if stream.send_data(body.split_to(room), last).is_err() {
                    break false;
                }
                if last {
                    break true;
                }
                stream.reserve_capacity(body.len());
            }
            let more = std::future::poll_fn(|cx| stream.poll_capacity(cx));
            if !matches!(
                tokio::time::timeout_at(deadline, more).await,
                Ok(Some(Ok(_)))
            ) {
                stream.send_reset(::h2::Reason::CANCEL);
                break false;
            }
        };
        done.finish(session, proxy, written, sent);
    }
}

/// What is counted and logged of a hit once it is written.
struct HitDone {
    status: u16,
    zone: Arc<str>,
    host: String,
    ray: crate::headers::RayId,
    started: Instant,
}

impl H2Hit {
    /// Whether the answer is queued whole at once ([`AT_ONCE_BYTES`]).
    fn at_once(&self) -> bool {
        self.head_only || self.found.body.len() <= AT_ONCE_BYTES
    }

    /// Queues the whole answer on the stream, then counts and logs it; or, when the visitor's
    /// window does not hold the body, gives back what is left to send.
    fn answer_at_once(self, session: &mut HttpSession, proxy: &EdgeProxy) -> Option<Windowed> {
        let (begun, done) = self.begin(session);
        let (written, sent) = match begun {
            Begun::Failed => (false, 0),
            Begun::Ended => (true, 0),
            Begun::Body(body) => {
                let sent = body.len();
                let Some(mut stream) = session.take_response_body_writer() else {
                    done.finish(session, proxy, false, sent);
                    return None;
                };
                // Queued whole only within the visitor's window: an answer the window does not
                // hold waits for it in a task, within a deadline, instead of staying queued on
                // a connection whose visitor never reads it.
                stream.reserve_capacity(sent);
                if stream.capacity() < sent {
                    return Some(Windowed { stream, body, done });
                }
                (stream.send_data(body, true).is_ok(), sent)
            }
        };
        done.finish(session, proxy, written, sent);
        None
    }

    /// Writes the answer as the visitor's window opens, then counts and logs it.
    async fn send(self, session: &mut HttpSession, proxy: &EdgeProxy) {
        let (begun, done) = self.begin(session);
        let (written, sent) = match begun {
            Begun::Failed => (false, 0),
            Begun::Ended => (true, 0),
            Begun::Body(mut body) => {
                let sent = body.len();
                // Each part within the send timeout: a visitor opening its window a byte at a
                // time does not hold the stream for longer than that per part.
                let mut written = true;
                while written && !body.is_empty() {
                    let part = body.split_to(body.len().min(SENT_PART));
                    let sending = session.write_body(part, body.is_empty());
                    written = tokio::time::timeout(crate::stream::SEND_TIMEOUT, sending)
                        .await
                        .is_ok_and(|w| w.is_ok());
                }
                if written {
                    let _ = session.finish();
                }
                (written, sent)
            }
        };
        done.finish(session, proxy, written, sent);
    }

    /// Writes the header; the body follows it (the visitor's compression applied).
    fn begin(self, session: &mut HttpSession) -> (Begun, HitDone) {
        let H2Hit {
            found,
            head_only,
            resp,
            mut compression,
            zone,
            host,
            ray,
            started,
        } = self;
        let done = HitDone {
            status: resp.status.as_u16(),
            zone,
            host,
            ray,
            started,
        };
        if session.write_response_header(resp, head_only).is_err() {
            return (Begun::Failed, done);
        }
        if head_only {
            return (Begun::Ended, done);
        }
        let mut body = Some(found.body.clone());
        // As the engine's module: a compression the header filter turned off (a rule keeping
        // the bytes, nothing to compress) is not asked for the body.
        if compression.is_enabled()
            && let Some(compressed) = compression.response_body_filter(body.as_ref(), true)
        {
            body = Some(compressed);
        }
        (Begun::Body(body.unwrap_or_else(Bytes::new)), done)
    }
}

impl HitDone {
    fn finish(self, session: &HttpSession, proxy: &EdgeProxy, written: bool, sent: usize) {
        let HitDone {
            status,
            zone,
            host,
            ray,
            started,
        } = self;
        proxy.metrics.direct_hit_finished(&zone, status);
        if !access_logged() {
            return;
        }
        let req = session.req_header();
        AccessLine {
            ray: &ray,
            zone: Some(&zone),
            host: Some(&host),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            bytes: if written { sent } else { 0 },
            started,
            cache: "HIT",
            client_ip: visitor_ip(session),
            edge_error: None,
            origin_time: None,
        }
        .log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_millis(300);
    /// How late a timer may fire on a busy machine.
    const LATE: Duration = Duration::from_secs(1);

    /// How long `idle_for` takes to return while `during` runs beside it, from when the
    /// connection opened.
    async fn idle_after(in_flight: &Arc<InFlight>, during: impl Future<Output = ()>) -> Duration {
        let idle = in_flight.idle_for(Some(TIMEOUT));
        let ((), ()) = tokio::join!(idle, during);
        in_flight.opened.elapsed()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_without_streams_is_idle_after_the_timeout() {
        let in_flight = Arc::new(InFlight::new());
        let took = idle_after(&in_flight, async {}).await;
        assert!(took >= TIMEOUT && took < TIMEOUT + LATE, "{took:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn streams_answered_at_once_keep_a_connection_from_being_idle() {
        let in_flight = Arc::new(InFlight::new());
        let took = idle_after(&in_flight, async {
            for _ in 0..6 {
                tokio::time::sleep(TIMEOUT / 3).await;
                in_flight.touch();
            }
        })
        .await;
        // The last stream came after 6 × 100 ms; idle a timeout after it.
        assert!(took >= TIMEOUT * 3 && took < TIMEOUT * 3 + LATE, "{took:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_in_flight_keeps_a_connection_from_being_idle_until_a_timeout_after_it() {
        let in_flight = Arc::new(InFlight::new());
        let guard = in_flight.start();
        let took = idle_after(&in_flight, async move {
            tokio::time::sleep(TIMEOUT * 2).await;
            drop(guard);
        })
        .await;
        assert!(took >= TIMEOUT * 3 && took < TIMEOUT * 3 + LATE, "{took:?}");
    }
}
