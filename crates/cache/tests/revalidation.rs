//! A revalidation (a `304` from the origin) updates the header of the object it revalidated,
//! and never that of another object stored under the same key since the revalidation began.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use parapet_cache::key::cache_key;
use parapet_cache::{DiskTier, EdgeCache};
use pingora::cache::trace::Span;
use pingora::cache::{CacheMeta, PurgeTarget, PurgeType, Storage};
use pingora::http::ResponseHeader;

mod common;
use common::{lookup, store};

fn meta(etag: &str, tag: &str, max_age: u64) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("etag", etag).unwrap();
    header.insert_header("cache-tag", tag).unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(max_age), now, 0, 0, header)
}

fn etag(meta: &CacheMeta) -> &str {
    meta.headers().get("etag").unwrap().to_str().unwrap()
}

/// What the engine hands the store after a `304`: the hit's metadata (with what the store put
/// in it) and the new response's header, as `HttpCache::revalidate_cache_meta` merges them.
fn revalidated(hit: &CacheMeta, etag: &str, tag: &str) -> CacheMeta {
    let mut merged = meta(etag, tag, 120);
    let mut extensions = hit.extensions().clone();
    extensions.extend(merged.extensions().clone());
    *merged.extensions_mut() = extensions;
    merged
}

/// Request A hits X and asks the origin; meanwhile (A's lock expired, or X was purged) request
/// C stores Y under the same key; then A's `304` arrives.
/// (`disk`: the disk tier's directory, whose files a new process must find holding Y.)
async fn late_304_leaves_the_newer_object_alone(cache: &'static EdgeCache, disk: Option<&Path>) {
    let span = Span::inactive().handle();
    let key = cache_key("zone1", true, "www.example.com", 443, "/app.js");
    store(cache, &key, &meta("\"x\"", "old", 0), b"body of x").await;
    let (hit_x, body) = lookup(cache, &key).await.unwrap();
    assert_eq!((etag(&hit_x), &body[..]), ("\"x\"", &b"body of x"[..]));

    store(cache, &key, &meta("\"y\"", "new", 60), b"the body of y").await;
    if disk.is_some() {
        // Y only on disk: its file is what a revalidation would rewrite.
        let compact = key.to_compact();
        Storage::purge(
            &cache.store,
            PurgeTarget::Active(&compact),
            PurgeType::Eviction,
            &span,
        )
        .await
        .unwrap();
    }
    let updated = cache
        .store
        .update_meta(&key, &revalidated(&hit_x, "\"x\"", "old"), &span)
        .await
        .unwrap();
    assert!(
        !updated,
        "the store said it updated an object it no longer holds"
    );

    let (now, body) = lookup(cache, &key).await.unwrap();
    assert_eq!(etag(&now), "\"y\"");
    assert_eq!(body, b"the body of y");
    if let Some(dir) = disk {
        let again = EdgeCache::leak(0, Some(DiskTier::open(dir, 1 << 30, 1 << 30).unwrap()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while again.store.usage().disk_objects == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the file was not indexed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (file, body) = lookup(again, &key).await.unwrap();
        assert_eq!((etag(&file), &body[..]), ("\"y\"", &b"the body of y"[..]));
    }
    // Y keeps its purge tags: a purge of X's tag leaves it, one of its own removes it.
    let zone_purge = |tag: &str| parapet_model::purge::Purge::Tags(vec![tag.to_owned()]);
    assert_eq!(
        cache
            .store
            .purge("zone1", &zone_purge("old"))
            .expect("purged"),
        0
    );
    assert!(lookup(cache, &key).await.is_some());
    assert_eq!(
        cache
            .store
            .purge("zone1", &zone_purge("new"))
            .expect("purged"),
        1
    );
    assert!(lookup(cache, &key).await.is_none());
}

#[tokio::test]
async fn a_late_304_for_an_object_stored_over_since_leaves_the_new_one_in_memory() {
    late_304_leaves_the_newer_object_alone(EdgeCache::leak(64 << 20, None), None).await;
}

#[tokio::test]
async fn a_late_304_for_an_object_stored_over_since_leaves_the_new_ones_file() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let cache = EdgeCache::leak(64 << 20, Some(tier));
    late_304_leaves_the_newer_object_alone(cache, Some(dir.path())).await;
}

#[tokio::test]
async fn a_304_for_the_object_still_stored_updates_its_header_in_memory_and_on_disk() {
    let span = Span::inactive().handle();
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let memory = EdgeCache::leak(64 << 20, None);
    let disk_only = EdgeCache::leak(0, Some(tier));
    for cache in [memory, disk_only] {
        let key = cache_key("zone1", true, "www.example.com", 443, "/app.js");
        store(cache, &key, &meta("\"x\"", "old", 0), b"body of x").await;
        let (hit_x, _) = lookup(cache, &key).await.unwrap();
        let updated = cache
            .store
            .update_meta(&key, &revalidated(&hit_x, "\"x2\"", "new"), &span)
            .await
            .unwrap();
        assert!(updated);
        let (now, body) = lookup(cache, &key).await.unwrap();
        assert_eq!((etag(&now), &body[..]), ("\"x2\"", &b"body of x"[..]));
        let tags = parapet_model::purge::Purge::Tags(vec!["new".to_owned()]);
        assert_eq!(cache.store.purge("zone1", &tags).expect("purged"), 1);
    }
}
