//! The pass-through of requests the HTTP engine has read (HTTP/2 visitors' GET and HEAD without
//! a body) to an origin spoken to in plain HTTP/1.1, over [`crate::pass`]'s per-worker
//! connection pool instead of the engine's connector and proxy state machine.
//!
//! The engine has already refused, routed and looked the request up in the cache (its
//! `request_filter` and cache phases ran); this takes over where the engine would connect to the
//! origin, for a request the cache will not store (not eligible, a rule's bypass, development
//! mode, or a URL whose last response could not be stored). It calls the same filters the
//! engine calls, in the engine's order ([`to_origin`] through `upstream_request_filter`'s work,
//! `upstream_response_filter`, `response_filter`), and writes through the session, so the
//! visitor's compression, the access-log line and the metrics are the engine's own. Failures
//! go back to the engine as errors, which answers them with the same pages it gives its own.
//!
//! As in [`crate::pass`], a response to a URL remembered as uncacheable that could be stored
//! now tells the cache so (the next request is a miss that stores it) instead of being stored.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use parapet_model::settings::SslMode;
use pingora::cache::RespCacheable;
use pingora::cache::predictor::CacheablePredictor as _;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::hit::ENGINE_FIELDS;
use crate::pass::{Asking, POOL_IDLE, ask, pool_put};
use crate::proxy::{
    COMPRESSION_LEVEL, Ctx, EdgeProxy, cacheability, client_ip, is_https, origin_port, to_origin,
};

impl EdgeProxy {
    /// Passes the session's request on and answers it, when it is one this path takes: `false`
    /// for the engine's own proxying.
    pub(crate) async fn relay(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !self.relays(session, ctx) {
            return Ok(false);
        }
        let Some(origin) = ctx.origin.as_ref() else {
            return Ok(false);
        };
        let head_only = session.req_header().method == http::Method::HEAD;
        let https = is_https(session);
        // The request as the engine's HTTP/1 client writes it for an HTTP/2 visitor: HTTP/1.1,
        // `Host` from `:authority`, then this edge's fields.
        let mut req = session.req_header().clone();
        req.set_version(http::Version::HTTP_11);
        if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_owned()) {
            if authority.contains('@') {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "userinfo in authority");
            }
            req.insert_header(header::HOST, authority)?;
        }
        to_origin(
            &mut req,
            client_ip(session),
            https,
            origin,
            &ctx.ray,
            ctx.cache_asked,
        )?;
        if ctx.cache_asked {
            session.upstream_compression.adjust_level(COMPRESSION_LEVEL);
        }
        session.upstream_compression.request_filter(&req);
        let Some(wire) = http_req_header_to_wire(&req) else {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "request target");
        };
        drop(req);
        let settings = origin.edge.settings;
        let asking = Asking {
            wire: &wire,
            head_only,
            addrs: &origin.addrs,
            port: origin_port(session, origin, false),
            connect_timeout: settings
                .connect_timeout_secs
                .map_or(self.connect_timeout, Duration::from_secs),
            read_timeout: settings
                .read_timeout_secs
                .map_or(self.read_timeout, Duration::from_secs),
            idle_timeout: settings
                .idle_timeout_secs
                .map_or(POOL_IDLE, Duration::from_secs),
            ray: &ctx.ray,
        };
        let idle_timeout = asking.idle_timeout;
        ctx.upstream_sent = Some(Instant::now());
        ctx.relayed = true;
        let (mut reply, mut head, addr, _) = match ask(&asking).await {
            Ok(asked) => asked,
            Err(e) => return self.relay_failed(session, ctx, e).await,
        };
        // An HTTP/2 visitor is sent no 1xx (the engine's HTTP/2 writer drops them), and 101
        // without an upgrade asked for is an invalid answer.
        let mut informational = 0;
        while head.status.is_informational() {
            informational += 1;
            if head.status == http::StatusCode::SWITCHING_PROTOCOLS || informational > 8 {
                let e = Error::explain(ErrorType::InvalidHTTPHeader, "unexpected 1xx");
                return self.relay_failed(session, ctx, e.into_up()).await;
            }
            head = match reply.head(head_only).await {
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
        session
            .upstream_compression
            .response_header_filter(&mut resp, end);
        self.upstream_response_filter(session, &mut resp, ctx)
            .await?;
        if session.cache.bypassing()
            && let Some(cache) = self.cache
        {
            let authorization = session.req_header().headers.contains_key("authorization");
            let key = self.cache_key_callback(session, ctx)?;
            match cacheability(authorization, &resp, ctx.cache_rules.as_deref()) {
                RespCacheable::Cacheable(_) => {
                    cache.predictor.mark_cacheable(&key);
                }
                RespCacheable::Uncacheable(reason) => {
                    cache.predictor.mark_uncacheable(&key, reason);
                }
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
        session
            .write_response_header(resp, done)
            .await
            .map_err(|e| e.into_down())?;
        while !done {
            let chunk = reply.body().await.map_err(|e| e.into_up())?;
            done = chunk.is_none() || reply.is_done();
            let mut data = chunk;
            if session.upstream_compression.is_enabled()
                && let Some(encoded) = session
                    .upstream_compression
                    .response_body_filter(data.as_ref(), done)
            {
                data = Some(encoded);
            }
            if data.as_ref().is_some_and(Bytes::is_empty) && !done {
                continue;
            }
            session
                .write_response_body(data, done)
                .await
                .map_err(|e| e.into_down())?;
        }
        // The origin's connection, once its answer is whole, serves the next request.
        if let Some(connection) = reply.reusable() {
            pool_put(addr, connection, idle_timeout);
        }
        Ok(true)
    }

    /// A failure before the response began: the engine's page for it (`Err` for the engine to
    /// answer when there is none).
    async fn relay_failed(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Result<bool> {
        self.fail_to_proxy(session, &e, ctx).await;
        if session.response_written().is_none() {
            return Err(e);
        }
        tracing::warn!(ray = %ctx.ray, "passing to the origin: {e}");
        Ok(true)
    }

    /// Whether [`EdgeProxy::relay`] takes the request: an HTTP/2 visitor's GET or HEAD without a
    /// body, that the cache will not store, for an origin reached in plain HTTP/1.1, with none
    /// of the fields that keep an HTTP/1 request from [`crate::pass`] either (preconditions,
    /// ranges, credentials, loops: [`ENGINE_FIELDS`]).
    fn relays(&self, session: &mut Session, ctx: &Ctx) -> bool {
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
            && !session.cache.enabled()
            && session.is_body_empty()
            && !session
                .req_header()
                .headers
                .keys()
                .any(|name| ENGINE_FIELDS.contains(&name.as_str()))
    }
}
