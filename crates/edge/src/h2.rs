//! HTTP/2 visitor connections: the edge accepts their streams itself and answers a fresh hit
//! (in memory, or in a small disk file read whole) or passes on a request the cache does not
//! keep ([`crate::relay`]) on its own; every other stream goes to the HTTP engine, as it would
//! have.
//!
//! The accept loop does what the engine's does: one task per stream, the connection closed
//! after the engine's HTTP/2 idle timeout without a stream in flight, a graceful shutdown
//! (GOAWAY, then the streams in flight finish) once the edge stops, and the connection torn
//! down after [`MAX_MALFORMED_STREAMS`] streams the engine's HTTP/2 reader refused (the HTTP/2
//! implementation refuses most malformed streams before that reader sees them). The limits of
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
use std::sync::atomic::{AtomicUsize, Ordering};
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
use crate::hit::{Cached, ENGINE_FIELDS, Found, redirects};
use crate::proxy::{
    ACME_CHALLENGE, AccessLine, COMPRESSION_LEVEL, EdgeProxy, access_logged, cache_status,
    h1_head_len, host_field, keep_bytes, to_visitor,
};
use crate::relay::{Relay, Relaying};
use crate::route::{Origin, route};
use crate::stream::FlushGate;

/// Streams of one connection the HTTP/2 reader may refuse (bad pseudo-fields, conflicting
/// lengths) before the connection is closed, as the engine's accept loop counts them.
const MAX_MALFORMED_STREAMS: usize = 32;

/// The streams of a connection in flight, for its idle timeout.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by a stream's task while it runs.
struct StreamGuard(Arc<InFlight>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_one();
        }
    }
}

impl InFlight {
    fn start(self: &Arc<Self>) -> StreamGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(self))
    }

    /// Returns once no stream has been in flight for `timeout` (never without one).
    async fn idle_for(&self, timeout: Option<std::time::Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        while self.count.load(Ordering::Relaxed) != 0 {
            self.idle.notified().await;
        }
        tokio::time::sleep(timeout).await;
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
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let mut conn = match handshake(stream, self.http.h2_options.clone()).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!("HTTP/2 handshake: {e}");
                return;
            }
        };
        let idle_timeout = self
            .http
            .server_options
            .as_ref()
            .and_then(|o| o.h2_idle_timeout);
        let in_flight = Arc::new(InFlight::default());
        let mut watch = shutdown.clone();
        let mut stopping = false;
        let mut malformed = 0;
        loop {
            let accepted = if stopping {
                accept(&mut conn, &digest, &gate).await
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
                    () = in_flight.idle_for(idle_timeout) => return,
                }
            };
            match accepted {
                // Usually the visitor going away without closing HTTP/2.
                Err(e) => {
                    tracing::debug!("HTTP/2 stream: {e}");
                    return;
                }
                Ok(None) => return,
                Ok(Some(H2Accept::Rejected)) => {
                    malformed += 1;
                    if malformed >= MAX_MALFORMED_STREAMS {
                        tracing::warn!(
                            "HTTP/2 connection closed after {malformed} malformed streams"
                        );
                        return;
                    }
                }
                Ok(Some(H2Accept::Session(session))) => {
                    let guard = in_flight.start();
                    let app = Arc::clone(self);
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        app.h2_stream(session, &shutdown).await;
                    });
                }
            }
        }
    }

    /// One stream: a fresh hit or a pass-through answered here, anything else by the engine.
    async fn h2_stream(&self, mut session: HttpSession, shutdown: &ShutdownWatch) {
        match self.proxy.h2_direct(&session) {
            Some(H2Direct::Hit(hit)) => {
                Box::pin(hit.send(&mut session, &self.proxy)).await;
                return;
            }
            Some(H2Direct::Pass(relay)) => {
                Box::pin(relay.send(&mut session, &self.proxy)).await;
                return;
            }
            None => {}
        }
        HttpServerApp::process_new_http(&self.http, ServerSession::new_http2(session), shutdown)
            .await;
    }
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
        // The engine's checks before routing: a request it answers with 431 or a page is its.
        if !session.is_body_empty()
            || h1_head_len(req) > self.max_header_bytes
            || req.uri.path().starts_with(ACME_CHALLENGE)
            || req
                .headers
                .keys()
                .any(|name| ENGINE_FIELDS.contains(&name.as_str()))
        {
            return None;
        }
        let host = host_field(req)?;
        let https = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(80, std::net::SocketAddr::port);
        let snapshot = self.published.load();
        let origin = route(&snapshot, Some(host), req.uri.path()).ok()?;
        if origin.addrs.is_empty() || redirects(&origin.edge.settings, https) {
            return None;
        }
        let rules = self.cache_parameters(&origin);
        let target = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |p| p.as_str());
        match self.cached(&origin, rules.as_deref(), https, port, target) {
            Cached::Looked(key) => {
                let found = self.fresh_hit(req, key, rules.as_deref())?;
                let hit = self.h2_hit(req, found, origin, rules, https, started)?;
                Some(H2Direct::Hit(hit))
            }
            Cached::Passed { learn, status } => {
                let client = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(std::net::SocketAddr::ip);
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
        if rules
            .as_deref()
            .is_some_and(|r| r.respect_strong_etags == Some(true))
        {
            keep_bytes(rules.as_deref(), &resp, &mut compression);
        }
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

impl H2Hit {
    /// Writes the answer, then counts and logs it.
    async fn send(self, session: &mut HttpSession, proxy: &EdgeProxy) {
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
        let status = resp.status.as_u16();
        let mut sent = 0;
        let mut written = session.write_response_header(resp, head_only).is_ok();
        if written && !head_only {
            let mut body = Some(found.body.clone());
            // As the engine's module: a compression the header filter turned off (a rule
            // keeping the bytes, nothing to compress) is not asked for the body.
            if compression.is_enabled()
                && let Some(compressed) = compression.response_body_filter(body.as_ref(), true)
            {
                body = Some(compressed);
            }
            let body = body.unwrap_or_else(Bytes::new);
            sent = body.len();
            written = session.write_body(body, true).await.is_ok();
        }
        if written {
            let _ = session.finish();
        }
        proxy.metrics.direct_hit_finished(&zone, status);
        if !access_logged() {
            return;
        }
        let req = session.req_header();
        AccessLine {
            ray: &ray,
            routed: Some((&zone, &host)),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            bytes: if written { sent } else { 0 },
            started,
            cache: "HIT",
            client_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(std::net::SocketAddr::ip),
            edge_error: None,
        }
        .log();
    }
}
