//! A purge removes what it names for every response fetched before it, including one whose
//! request went to the origin before the purge and whose answer arrives after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parapet_cache::key::cache_key;
use parapet_cache::{DiskTier, EdgeCache, FetchMark};
use parapet_model::purge::{Purge, PurgeUrl};
use pingora::cache::trace::Span;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;

mod common;

const HOST: &str = "www.example.com";
const PATH: &str = "/assets/app.js";

fn key() -> CacheKey {
    cache_key("zone1", true, HOST, 443, PATH)
}

/// The response's metadata as the edge makes it: with the mark taken when its request was sent.
fn meta(mark: Option<FetchMark>) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("cache-tag", "app").unwrap();
    let now = SystemTime::now();
    let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
    if let Some(mark) = mark {
        meta.extensions_mut().insert(mark);
    }
    meta
}

/// Stores the response as the engine does when its header arrives; whether it was stored.
async fn store(cache: &'static EdgeCache, key: &CacheKey, meta: &CacheMeta) -> bool {
    common::try_store(cache, key, meta, b"the body").await
}

async fn found(cache: &'static EdgeCache, key: &CacheKey) -> bool {
    common::lookup(cache, key).await.is_some()
}

/// Each way to purge the object at `HOST` `PATH`, in zone `zone1`.
fn purges() -> Vec<(&'static str, Purge)> {
    let url = PurgeUrl {
        https: true,
        host: HOST.into(),
        port: 443,
        port_given: true,
        path: PATH.into(),
    };
    vec![
        ("url", Purge::Files(vec![url])),
        ("tag", Purge::Tags(vec!["App".into()])),
        ("host", Purge::Hosts(vec![HOST.into()])),
        (
            "prefix",
            Purge::Prefixes(vec![(HOST.into(), "/assets/".into())]),
        ),
        ("everything", Purge::Everything),
    ]
}

/// Memory alone, and memory over a disk tier (in `dir`).
fn caches(dir: &tempfile::TempDir) -> [&'static EdgeCache; 2] {
    let tier = DiskTier::open(dir.path(), 1 << 30, 1 << 30).unwrap();
    [
        EdgeCache::leak(64 << 20, None),
        EdgeCache::leak(64 << 20, Some(tier)),
    ]
}

#[tokio::test]
async fn a_response_requested_before_a_purge_is_not_stored_after_it() {
    for (name, purge) in purges() {
        let dir = tempfile::tempdir().unwrap();
        for cache in caches(&dir) {
            // The request goes to the origin; the purge comes; then the response's header.
            let mark = cache.store.fetch_mark();
            cache.store.purge("zone1", &purge).expect("purged");
            assert!(!store(cache, &key(), &meta(Some(mark))).await, "{name}");
            assert!(
                !found(cache, &key()).await,
                "{name}: served after the purge"
            );
            // Requested after the purge: stored.
            let mark = cache.store.fetch_mark();
            assert!(store(cache, &key(), &meta(Some(mark))).await, "{name}");
            assert!(found(cache, &key()).await, "{name}");
        }
    }
}

#[tokio::test]
async fn a_response_requested_before_its_urls_invalidation_is_not_stored_after_it() {
    let dir = tempfile::tempdir().unwrap();
    for cache in caches(&dir) {
        let mark = cache.store.fetch_mark();
        let url = parapet_cache::key::primary("zone1", true, HOST, 443, PATH);
        cache.store.invalidate_url(&url);
        assert!(!store(cache, &key(), &meta(Some(mark))).await);
        assert!(!found(cache, &key()).await);
    }
}

#[tokio::test]
async fn a_purge_of_another_zone_leaves_a_response_requested_before_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    for cache in caches(&dir) {
        let mark = cache.store.fetch_mark();
        cache
            .store
            .purge("zone2", &Purge::Everything)
            .expect("purged");
        assert!(store(cache, &key(), &meta(Some(mark))).await);
        assert!(found(cache, &key()).await);
    }
}

#[tokio::test]
async fn without_a_mark_a_response_is_stored_unless_a_purge_comes_while_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    for cache in caches(&dir) {
        assert!(store(cache, &key(), &meta(None)).await);
        assert!(found(cache, &key()).await);

        let span = Span::inactive().handle();
        let mut miss = cache
            .store
            .get_miss_handler(&key(), &meta(None), &span)
            .await
            .unwrap();
        cache
            .store
            .purge("zone1", &Purge::Tags(vec!["app".into()]))
            .expect("purged");
        miss.write_body(Bytes::from_static(b"the body"), true)
            .await
            .unwrap();
        assert!(miss.finish().await.is_err());
        assert!(!found(cache, &key()).await);
    }
}

#[tokio::test]
async fn a_purge_naming_more_objects_than_one_batch_removes_every_one_and_its_file() {
    let count = 1200;
    let keys: Vec<CacheKey> = (0..count)
        .map(|i| cache_key("zone1", true, HOST, 443, &format!("/assets/{i}.js")))
        .collect();
    let url = |i: usize| PurgeUrl {
        https: true,
        host: HOST.into(),
        port: 443,
        port_given: true,
        path: format!("/assets/{i}.js"),
    };
    let purges = [
        Purge::Tags(vec!["app".into()]),
        Purge::Files((0..count).map(url).collect()),
    ];
    for purge in purges {
        let dir = tempfile::tempdir().unwrap();
        let [_, cache] = caches(&dir);
        for key in &keys {
            assert!(store(cache, key, &meta(None)).await);
        }
        let files = || {
            std::fs::read_dir(dir.path().join("objects"))
                .unwrap()
                .flatten()
                .map(|fan| std::fs::read_dir(fan.path()).unwrap().count())
                .sum::<usize>()
        };
        assert_eq!(files(), count, "{purge:?}");
        assert_eq!(
            cache.store.purge("zone1", &purge).expect("purged"),
            count,
            "{purge:?}"
        );
        for key in &keys {
            assert!(!found(cache, key).await, "{purge:?}");
        }
        assert_eq!(
            files(),
            0,
            "{purge:?}: every file deleted once the purge returns"
        );
    }
}

#[tokio::test]
async fn a_large_object_is_read_from_memory_in_parts_that_make_it_whole() {
    let cache = EdgeCache::leak(64 << 20, None);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let body: &'static [u8] = Box::leak(body.into_boxed_slice());
    common::store(cache, &key(), &meta(None), body).await;
    let span = Span::inactive().handle();
    let (_, mut hit) = cache
        .store
        .lookup(&key(), &span)
        .await
        .unwrap()
        .expect("stored");
    let mut parts = Vec::new();
    while let Some(part) = hit.read_body().await.unwrap() {
        parts.push(part);
    }
    assert_eq!(parts.len(), 4, "64 KiB parts");
    assert!(parts.iter().all(|p| p.len() <= 64 * 1024));
    assert_eq!(parts.concat(), body);
}
