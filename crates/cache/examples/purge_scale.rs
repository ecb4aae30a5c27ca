//! How long purges take among many cached objects.
//!
//!   cargo run --release -p parapet-cache --example purge_scale [OBJECTS]   (default 1000000)
//!
//! Fills the memory tier through the storage interface the edge uses (objects of 100 bytes,
//! 10 per tag), then times a purge by tag, by URL, by prefix and of everything.

use std::time::Instant;

use bytes::Bytes;
use parapet_cache::EdgeCache;
use parapet_cache::key::cache_key;
use parapet_model::purge::{Purge, PurgeUrl};
use pingora::cache::trace::Span;
use pingora::cache::{CacheMeta, Storage};
use pingora::http::ResponseHeader;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cache = EdgeCache::leak(usize::MAX / 2, None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let span = Span::inactive().handle();
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..n {
            let key = cache_key("zone1", false, "www.example.com", 80, &format!("/o/{i}.js"));
            let mut header = ResponseHeader::build(200, None).expect("header");
            header
                .insert_header("cache-tag", format!("t{}", i / 10))
                .expect("tag");
            let now = std::time::SystemTime::now();
            let meta = CacheMeta::new(
                now + std::time::Duration::from_secs(3600),
                now,
                0,
                0,
                header,
            );
            let mut miss = cache
                .store
                .get_miss_handler(&key, &meta, &span)
                .await
                .expect("miss handler");
            miss.write_body(Bytes::from_static(&[b'x'; 100]), true)
                .await
                .expect("body");
            miss.finish().await.expect("finish");
        }
    });
    println!("filled {n} objects in {:?}", started.elapsed());
    let time = |what: &str, purge: Purge| {
        let t = Instant::now();
        let removed = cache.store.purge("zone1", &purge).expect("purged");
        println!("purge {what}: {removed} objects in {:?}", t.elapsed());
    };
    time("by tag", Purge::Tags(vec![format!("t{}", n / 20)]));
    time(
        "by URL",
        Purge::Files(vec![PurgeUrl {
            https: false,
            host: "www.example.com".into(),
            port: 80,
            port_given: true,
            path: format!("/o/{}.js", n / 3),
        }]),
    );
    time(
        "by prefix",
        Purge::Prefixes(vec![("www.example.com".into(), "/o/99999".into())]),
    );
    time("everything (effective at once)", Purge::Everything);
    let t = Instant::now();
    while cache.store.usage().objects > 0 && t.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!(
        "everything swept from memory in the background in {:?}; left: {:?}",
        t.elapsed(),
        cache.store.usage()
    );
}
