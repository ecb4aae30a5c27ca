//! The disk tier through the storage interface the edge uses: an object the memory tier let go
//! is served from its file, a revalidated header replaces the file's, and a new process finds
//! both again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use parapet_cache::key::cache_key;
use parapet_cache::{DiskTier, EdgeCache};
use pingora::cache::key::CompactCacheKey;
use pingora::cache::trace::Span;
use pingora::cache::{CacheKey, CacheMeta, PurgeTarget, PurgeType, Storage};
use pingora::http::ResponseHeader;

mod common;
use common::store;

fn meta(etag: &str, max_age: u64) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("etag", etag).unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(max_age), now, 0, 0, header)
}

/// The stored ETag and body, if the object is found.
async fn lookup(cache: &'static EdgeCache, key: &CacheKey) -> Option<(String, Vec<u8>)> {
    let (meta, body) = common::lookup(cache, key).await?;
    let etag = meta.headers().get("etag")?.to_str().ok()?.to_owned();
    Some((etag, body))
}

/// What the engine hands the store after a `304` for the object found under `key` now: the
/// hit's metadata, with the new response's header (ETag `etag`) merged in.
async fn revalidated(cache: &'static EdgeCache, key: &CacheKey, etag: &str) -> CacheMeta {
    let span = Span::inactive().handle();
    let (hit, _) = cache.store.lookup(key, &span).await.unwrap().unwrap();
    let mut merged = meta(etag, 60);
    let mut extensions = hit.extensions().clone();
    extensions.extend(merged.extensions().clone());
    *merged.extensions_mut() = extensions;
    merged
}

/// What the engine asks when its memory bound lets an object go (`Eviction`) or a request
/// invalidates it (`Invalidation`).
async fn purge(cache: &'static EdgeCache, key: &CompactCacheKey, why: PurgeType) {
    let span = Span::inactive().handle();
    Storage::purge(&cache.store, PurgeTarget::Active(key), why, &span)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_object_evicted_from_memory_is_served_and_revalidated_from_disk_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let cache = EdgeCache::leak(64 << 20, Some(open()));
    let key = cache_key("zone1", true, "www.example.com", 443, "/logo.png");
    store(cache, &key, &meta("\"v1\"", 60), b"the logo").await;

    // The memory tier lets it go; the disk copy answers.
    let span = Span::inactive().handle();
    let compact = key.to_compact();
    purge(cache, &compact, PurgeType::Eviction).await;
    assert!(cache.store.usage().memory_bytes < 1024);
    assert_eq!(
        lookup(cache, &key).await,
        Some(("\"v1\"".into(), b"the logo".to_vec()))
    );

    // A revalidation's new header is written to the file.
    let v2 = revalidated(cache, &key, "\"v2\"").await;
    purge(cache, &compact, PurgeType::Eviction).await;
    assert!(cache.store.update_meta(&key, &v2, &span).await.unwrap());
    assert_eq!(
        lookup(cache, &key).await,
        Some(("\"v2\"".into(), b"the logo".to_vec()))
    );

    // Another process on the same directory serves it.
    let again = EdgeCache::leak(64 << 20, Some(open()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while again.store.usage().disk_objects == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the files were not indexed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        lookup(again, &key).await,
        Some(("\"v2\"".into(), b"the logo".to_vec()))
    );

    // An invalidation deletes the file.
    purge(again, &compact, PurgeType::Invalidation).await;
    assert_eq!(lookup(again, &key).await, None);
    assert_eq!(again.store.usage().disk_objects, 0);
}

#[tokio::test]
async fn a_disk_only_object_is_served_from_its_kept_file_and_header_after_a_revalidation() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    // No memory tier: every hit is read from the file.
    let cache = EdgeCache::leak(0, Some(tier));
    let key = cache_key("zone1", false, "www.example.com", 80, "/big.png");
    store(cache, &key, &meta("\"v1\"", 60), b"on disk only").await;
    assert!(
        cache.store.usage().memory_bytes < 1024,
        "only its index entry"
    );
    for _ in 0..3 {
        // The first hit opens and checks the file and keeps it; the others read only the body.
        assert_eq!(
            lookup(cache, &key).await,
            Some(("\"v1\"".into(), b"on disk only".to_vec()))
        );
    }
    let span = Span::inactive().handle();
    let v2 = revalidated(cache, &key, "\"v2\"").await;
    assert!(cache.store.update_meta(&key, &v2, &span).await.unwrap());
    for _ in 0..2 {
        assert_eq!(
            lookup(cache, &key).await,
            Some(("\"v2\"".into(), b"on disk only".to_vec()))
        );
    }
}

#[tokio::test]
async fn a_body_file_is_the_file_of_the_object_hit_while_it_is_stored() {
    use std::os::unix::fs::FileExt as _;
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let cache = EdgeCache::leak(64 << 20, Some(tier));
    let key = cache_key("zone1", true, "www.example.com", 443, "/big.bin");
    let body_of = |file: parapet_cache::BodyFile| {
        let mut body = [0; 10];
        file.file.read_exact_at(&mut body, file.offset).unwrap();
        body
    };
    store(cache, &key, &meta("\"v1\"", 60), b"first body").await;
    let first = cache.store.direct_hit(&key).unwrap();
    for _ in 0..2 {
        let file = cache.store.body_file(&key, &first).unwrap();
        assert_eq!(&body_of(file), b"first body");
    }
    // Stored again: a hit of the object before has no file (its file may be another's).
    store(cache, &key, &meta("\"v2\"", 60), b"other body").await;
    assert!(cache.store.body_file(&key, &first).is_none());
    let second = cache.store.direct_hit(&key).unwrap();
    let file = cache.store.body_file(&key, &second).unwrap();
    assert_eq!(&body_of(file), b"other body");
    // Purged: none.
    purge(cache, &key.to_compact(), PurgeType::Invalidation).await;
    assert!(cache.store.body_file(&key, &second).is_none());

    // Without a disk tier: none.
    let memory = EdgeCache::leak(64 << 20, None);
    store(memory, &key, &meta("\"v1\"", 60), b"first body").await;
    let hit = memory.store.direct_hit(&key).unwrap();
    assert!(memory.store.body_file(&key, &hit).is_none());
}

#[tokio::test]
async fn objects_with_long_urls_on_disk_keep_the_index_within_a_32nd_of_the_tier() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 64 << 20;
    let tier = DiskTier::open(dir.path(), capacity, 1 << 20).unwrap();
    let cache = EdgeCache::leak(0, Some(tier));
    let long = "q".repeat(30 << 10);
    for i in 0..300 {
        let path = format!("/a.png?{i}-{long}");
        let key = cache_key("zone1", false, "www.example.com", 80, &path);
        store(cache, &key, &meta("\"v1\"", 60), b"small").await;
    }
    let usage = cache.store.usage();
    let bound = usize::try_from(capacity / 32).unwrap();
    assert!(
        usage.memory_bytes <= bound + (200 << 10),
        "{} bytes of index for {} objects",
        usage.memory_bytes,
        usage.disk_objects
    );
    // The last stored are kept.
    let key = cache_key(
        "zone1",
        false,
        "www.example.com",
        80,
        &format!("/a.png?299-{long}"),
    );
    assert!(lookup(cache, &key).await.is_some());
}

#[tokio::test]
async fn a_url_with_all_its_variants_refuses_another_before_any_of_its_body_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let cache = EdgeCache::leak(64 << 20, Some(tier));
    let span = Span::inactive().handle();
    let variant = |i: u8| {
        let mut key = cache_key("zone1", false, "www.example.com", 80, "/ua.png");
        key.set_variance_key([i; 16]);
        key
    };
    for i in 0..parapet_cache::MAX_VARIANTS as u8 {
        store(cache, &variant(i), &meta("\"v1\"", 60), b"a variant").await;
    }
    let more = cache
        .store
        .get_miss_handler(&variant(200), &meta("\"v1\"", 60), &span)
        .await;
    assert!(more.is_err(), "a variant past the limit is refused at once");
    // A stored variant may still be stored again.
    store(cache, &variant(0), &meta("\"v2\"", 60), b"again").await;
}

#[tokio::test]
async fn purges_a_process_kept_while_indexing_are_applied_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let open = || DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let cache = EdgeCache::leak(64 << 20, Some(open()));
    let indexed = |cache: &'static EdgeCache| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cache.store.indexing_disk() {
            assert!(std::time::Instant::now() < deadline, "indexing did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    indexed(cache).await;
    let tagged = |tag: &str| {
        let mut m = meta("\"v1\"", 600);
        let mut header = m.response_header().clone();
        header.insert_header("cache-tag", tag).unwrap();
        m = CacheMeta::new(m.fresh_until(), m.created(), 0, 0, header);
        m
    };
    let (app, other) = (
        cache_key("zone1", true, "www.example.com", 443, "/a.js"),
        cache_key("zone1", true, "www.example.com", 443, "/b.js"),
    );
    store(cache, &app, &tagged("app"), b"app").await;
    store(cache, &other, &tagged("other"), b"other").await;
    // A process indexing the tier took a purge of tag `app` and stopped before it reached the
    // files: it left the purge on disk.
    std::fs::write(dir.path().join("pending-purges"), "tag\tzone1\tapp\n").unwrap();
    let again = EdgeCache::leak(64 << 20, Some(open()));
    indexed(again).await;
    assert!(!dir.path().join("pending-purges").exists(), "applied");
    assert_eq!(lookup(again, &app).await, None, "purged before the restart");
    assert!(lookup(again, &other).await.is_some());
    assert_eq!(again.store.usage().disk_objects, 1);
}

#[tokio::test]
async fn a_revalidated_header_that_grows_the_file_is_counted_in_the_disk_bound() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    let cache = EdgeCache::leak(0, Some(tier));
    let key = cache_key("zone1", false, "www.example.com", 80, "/grows.png");
    store(cache, &key, &meta("\"v1\"", 60), b"small").await;
    let before = cache.store.disk_bound_used();
    // A 304 brings a header of some 100 KB: the file grows by tens of KB.
    let span = Span::inactive().handle();
    let mut grown = revalidated(cache, &key, "\"v2\"").await;
    let mut header = grown.response_header().clone();
    // (Letters in no order: the stored header is compressed.)
    let mut state = 0x2545_f491_u32;
    let noise: String = (0..100_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            char::from(b'a' + u8::try_from(state % 26).unwrap())
        })
        .collect();
    header.insert_header("x-large", noise).unwrap();
    let extensions = grown.extensions().clone();
    grown = CacheMeta::new(grown.fresh_until(), grown.created(), 0, 0, header);
    *grown.extensions_mut() = extensions;
    assert!(cache.store.update_meta(&key, &grown, &span).await.unwrap());
    let after = cache.store.disk_bound_used();
    assert!(after > before + 30_000, "{before} then {after}");
    assert!(u64::try_from(after).unwrap() >= cache.store.usage().disk_bytes);
}

#[test]
fn the_configured_largest_object_bounds_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 64 << 20, 8 << 20).unwrap();
    let cache = EdgeCache::leak(256 << 20, Some(tier));
    // The memory tier takes objects up to 16 MiB, the disk tier up to 8 MiB.
    assert_eq!(cache.store.max_object_bytes(), 16 << 20);
    // `cache_max_object_bytes` lowers that for both.
    cache.store.set_max_object_bytes(2 << 20);
    assert_eq!(cache.store.max_object_bytes(), 2 << 20);
}
