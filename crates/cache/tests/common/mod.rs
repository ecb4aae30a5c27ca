//! What the cache's integration tests share: storing and looking up objects through the storage
//! interface, as the engine does.
// Each test binary uses its own part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use parapet_cache::EdgeCache;
use pingora::cache::trace::Span;
use pingora::cache::{CacheKey, CacheMeta, Storage};

/// Stores `body` under `key` with `meta` as the engine does once the answer's header is in;
/// whether it was stored.
pub async fn try_store(
    cache: &'static EdgeCache,
    key: &CacheKey,
    meta: &CacheMeta,
    body: &'static [u8],
) -> bool {
    let span = Span::inactive().handle();
    let mut miss = cache
        .store
        .get_miss_handler(key, meta, &span)
        .await
        .unwrap();
    miss.write_body(Bytes::from_static(body), true)
        .await
        .unwrap();
    miss.finish().await.is_ok()
}

/// [`try_store`], which must store it.
pub async fn store(
    cache: &'static EdgeCache,
    key: &CacheKey,
    meta: &CacheMeta,
    body: &'static [u8],
) {
    assert!(try_store(cache, key, meta, body).await, "not stored");
}

/// The stored header (as the engine gets it from a hit) and body, if the object is found.
pub async fn lookup(cache: &'static EdgeCache, key: &CacheKey) -> Option<(CacheMeta, Vec<u8>)> {
    let span = Span::inactive().handle();
    let (meta, mut hit) = cache.store.lookup(key, &span).await.unwrap()?;
    let mut body = Vec::new();
    while let Some(chunk) = hit.read_body().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    Some((meta, body))
}
