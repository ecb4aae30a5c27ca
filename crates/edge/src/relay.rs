//! The pass-through of requests the HTTP engine has read (HTTP/2 visitors' GET and HEAD without
//! a body) to an origin spoken to in plain HTTP/1.1, over [`crate::pass`]'s per-worker
//! connection pool instead of the engine's connector and proxy state machine.
//!
//! The engine has already refused and routed the request (its `request_filter` ran); this takes
//! over where the engine would connect to the origin, for a request the cache will not store
//! (not eligible, a rule's bypass, development mode, or a URL whose last response could not be
//! stored: for that one, `request_cache_filter` reads the cache's prediction itself and never
//! enables the engine's cache state machine). It calls the same filters the
//! engine calls, in the engine's order (`upstream_request_filter`'s work,
//! `upstream_response_filter`, `response_filter`), and writes through the session, so the
//! visitor's compression, the access-log line and the metrics are the engine's own. A failure
//! before the answer began gets the engine's page for it (its `fail_to_proxy`); one after it
//! resets the visitor's stream, so a cut answer never looks whole; a visitor that resets its
//! stream while the origin thinks gives the origin request up at once, as the engine does.
//!
//! As in [`crate::pass`], a response to a URL remembered as uncacheable that could be stored
//! now tells the cache so (the next request is a miss that stores it) instead of being stored.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use parapet_model::settings::SslMode;
use pingora::cache::RespCacheable;
use pingora::cache::predictor::CacheablePredictor as _;
use pingora::protocols::http::HttpTask;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::hit::ENGINE_FIELDS;
use crate::pass::{
    Asking, Lesson, POOL_IDLE, STRIPPED, ToOrigin, ask, content_length, encoding_only, pool_put,
    wire_session_request,
};
use crate::proxy::{
    COMPRESSION_LEVEL, Ctx, EdgeProxy, cacheability, client_ip, is_grpc, is_https, keep_bytes,
    origin_port,
};

impl EdgeProxy {
    /// Passes the session's request on and answers it, when it is one this path takes: `false`
    /// for the engine's own proxying.
    pub(crate) async fn relay(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !self.relays(session, ctx) {
            return Ok(false);
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        let wire = self.origin_request(session, ctx, head_only).await?;
        let Some(origin) = ctx.origin.as_ref() else {
            return Ok(false);
        };
        let settings = origin.edge.settings;
        let (connect_timeout, read_timeout) = self.origin_timeouts(&settings);
        let asking = Asking {
            wire: &wire,
            head_only,
            addrs: &origin.addrs,
            port: origin_port(session, origin, false),
            connect_timeout,
            read_timeout,
            idle_timeout: settings
                .idle_timeout_secs
                .map_or(POOL_IDLE, Duration::from_secs),
            ray: &ctx.ray,
        };
        let idle_timeout = asking.idle_timeout;
        ctx.relayed = true;
        let asked = unless_closed(session, ask(&asking)).await?;
        let (mut reply, mut head, addr, sent) = match asked {
            Ok(asked) => asked,
            Err(e) => return self.relay_failed(session, ctx, e.into_up()).await,
        };
        ctx.upstream_sent = Some(sent);
        // An HTTP/2 visitor is sent no 1xx (the engine's HTTP/2 writer drops them), and 101
        // without an upgrade asked for is an invalid answer.
        let mut informational = 0;
        while head.status.is_informational() {
            informational += 1;
            if head.status == http::StatusCode::SWITCHING_PROTOCOLS || informational > 8 {
                let e = Error::explain(ErrorType::InvalidHTTPHeader, "unexpected 1xx");
                return self.relay_failed(session, ctx, e.into_up()).await;
            }
            head = match unless_closed(session, reply.head(head_only)).await? {
                Ok(head) => head,
                Err(e) => return self.relay_failed(session, ctx, e.into_up()).await,
            };
        }
        ctx.peer = Some(addr);
        let end = reply.is_done();
        let Some(resp) = head.to_header(|_| true) else {
            let e = Error::explain(ErrorType::InvalidHTTPHeader, "response fields");
            return self.relay_failed(session, ctx, e.into_up()).await;
        };
        drop(head);
        let mut resp = Box::new(resp);
        // The engine's filters, in its order: compression for the cache, the origin's filter,
        // the cache's judgement, framing, what the visitor sees.
        keep_bytes(
            ctx.cache_rules.as_deref(),
            &resp,
            &mut session.upstream_compression,
        );
        session
            .upstream_compression
            .response_header_filter(&mut resp, end);
        self.upstream_response_filter(session, &mut resp, ctx)
            .await?;
        // A URL the cache bypassed learns from the answer what the engine's cache filter learns.
        let mut lesson = Lesson::Nothing;
        let mut learning = None;
        if let (Some(bypassed), Some(cache)) = (ctx.bypassed.take(), self.cache) {
            let (key, reason) = *bypassed;
            let authorization = session.req_header().headers.contains_key("authorization");
            let cacheable = matches!(
                cacheability(authorization, &resp, ctx.cache_rules.as_deref()),
                RespCacheable::Cacheable(_)
            );
            lesson = Lesson::of(
                cacheable,
                reason,
                Some(cache.store.max_object_bytes()),
                content_length(&resp),
                !head_only && resp.status == http::StatusCode::OK,
            );
            lesson.teach_now(&cache.predictor, &key);
            if lesson != Lesson::Nothing {
                learning = Some((cache, key));
            }
        }
        let no_body = head_only || matches!(resp.status.as_u16(), 204 | 304);
        if !no_body
            && !end
            && !resp.headers.contains_key(header::TRANSFER_ENCODING)
            && !resp.headers.contains_key(header::CONTENT_LENGTH)
        {
            resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        self.response_filter(session, &mut resp, ctx).await?;
        let mut done = end || no_body;
        // Written as the engine writes tasks: the header ends the stream when nothing follows.
        session
            .write_response_tasks(vec![HttpTask::Header(resp, done)])
            .await?;
        while !done {
            let chunk = unless_closed(session, reply.body())
                .await?
                .map_err(|e| e.into_up())?;
            done = chunk.is_none() || reply.is_done();
            let mut data = chunk;
            if session.upstream_compression.is_enabled()
                && let Some(encoded) = session
                    .upstream_compression
                    .response_body_filter(data.as_ref(), done)
            {
                data = Some(encoded);
            }
            lesson.count(data.as_ref());
            if data.as_ref().is_some_and(Bytes::is_empty) && !done {
                continue;
            }
            session
                .write_response_tasks(vec![HttpTask::Body(data, done)])
                .await?;
        }
        if let Some((cache, key)) = learning
            && lesson.learnt_at_end()
        {
            cache.predictor.mark_cacheable(&key);
        }
        // The origin's connection, once its answer is whole, serves the next request.
        if let Some(connection) = reply.reusable() {
            pool_put(addr, connection, idle_timeout, std::time::Instant::now());
        }
        Ok(true)
    }

    /// The request for the origin, as bytes: as the engine's HTTP/1 client writes it for an
    /// HTTP/2 visitor (HTTP/1.1, `Host` from `:authority`, without this hop's fields), through
    /// the engine's `upstream_request_filter` or, for a GET, written directly with the same
    /// fields ([`wire_session_request`]).
    async fn origin_request(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        head_only: bool,
    ) -> Result<Vec<u8>> {
        let direct = match (ctx.origin.as_ref(), client_ip(session)) {
            (Some(origin), Some(client)) if !head_only => {
                let to = ToOrigin {
                    client,
                    https: is_https(session),
                    origin,
                    ray: &ctx.ray,
                    cache_asked: ctx.cache_asked,
                };
                wire_session_request(session.req_header(), &to)
            }
            _ => None,
        };
        if let Some((wire, coding)) = direct {
            if ctx.cache_asked {
                // A compressible answer the origin sends uncompressed is compressed in the
                // class asked for, as the engine's filter arranges it.
                session.upstream_compression.adjust_level(COMPRESSION_LEVEL);
                if let Some(coding) = coding.and_then(|c| encoding_only(c.as_bytes())) {
                    session.upstream_compression.request_filter(&coding);
                }
            }
            return Ok(wire);
        }
        let mut req = session.req_header().clone();
        req.set_version(http::Version::HTTP_11);
        if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned()) {
            if authority.contains('@') {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "userinfo in authority");
            }
            req.insert_header(header::HOST, authority)?;
        }
        for name in STRIPPED {
            req.remove_header(*name);
        }
        self.upstream_request_filter(session, &mut req, ctx).await?;
        // An origin rule's `Host` must be an authority, as the engine checks it.
        if req.headers.get(header::HOST).is_some_and(|host| {
            host.as_bytes().contains(&b'@')
                || http::uri::Authority::try_from(host.as_bytes()).is_err()
        }) {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "invalid Host for the origin")
                .map_err(|e| e.into_in());
        }
        session.upstream_compression.request_filter(&req);
        match http_req_header_to_wire(&req) {
            Some(wire) => Ok(wire.to_vec()),
            None => Error::e_explain(ErrorType::InvalidHTTPHeader, "request target")
                .map_err(|e| e.into_in()),
        }
    }

    /// A failure before the response began: the engine's page for it (`Err` for the engine to
    /// answer when there is none).
    async fn relay_failed(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Result<bool> {
        let failed = self.fail_to_proxy(session, &e, ctx).await;
        if session.response_written().is_none() {
            return Err(e);
        }
        tracing::error!(
            ray = %ctx.ray,
            "Fail to proxy: {e}, status: {}, {}",
            failed.error_code,
            self.request_summary(session, ctx)
        );
        Ok(true)
    }

    /// Whether [`EdgeProxy::relay`] takes the request: an HTTP/2 visitor's GET or HEAD without a
    /// body, that the cache will not store, for an origin reached in plain HTTP/1.1, with none
    /// of the fields that keep an HTTP/1 request from [`crate::pass`] either (preconditions,
    /// ranges, credentials, loops: [`ENGINE_FIELDS`]).
    pub(crate) fn relays(&self, session: &mut Session, ctx: &Ctx) -> bool {
        let Some(origin) = ctx.origin.as_ref() else {
            return false;
        };
        let settings = origin.edge.settings;
        let origin_tls =
            is_https(session) && matches!(settings.ssl, SslMode::Full | SslMode::Strict);
        session.req_header().version == http::Version::HTTP_2
            && matches!(
                session.req_header().method,
                http::Method::GET | http::Method::HEAD
            )
            && !origin_tls
            && !settings.origin_h2
            && !origin.addrs.is_empty()
            && !is_grpc(session)
            && !session.cache.enabled()
            // A URL the engine bypassed itself learns through the engine's cache filter.
            && !session.cache.bypassing()
            && session.is_body_empty()
            && !session
                .req_header()
                .headers
                .keys()
                .any(|name| ENGINE_FIELDS.contains(&name.as_str()))
    }
}

/// `work`, unless the visitor closes its stream first (a reset, or its connection going): then
/// the request is given up, as the engine gives it up, and whatever `work` held is dropped.
async fn unless_closed<T>(
    session: &mut Session,
    work: impl Future<Output = Result<T>>,
) -> Result<Result<T>> {
    let Some(closed) = session.downstream_session.watch_h2_stream_close() else {
        return Ok(work.await);
    };
    tokio::select! {
        biased;
        done = work => Ok(done),
        _ = closed => Error::e_explain(ErrorType::ConnectionClosed, "the visitor closed its stream")
            .map_err(|e| e.into_down()),
    }
}
