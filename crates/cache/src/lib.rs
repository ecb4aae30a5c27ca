//! The edge cache: keys, Cloudflare's default policy over RFC 9111 (pingora's cache state
//! machine does the protocol: freshness, revalidation, Vary, ranges, the cache lock), and the
//! storage with its purge index.

mod disk;
mod eviction;
pub mod key;
pub mod policy;
mod store;

use std::time::Duration;

use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;

pub use disk::DiskTier;
pub use eviction::TinyUfoEviction;
pub use store::{
    BodyFile, CacheStore, FetchMark, HitHead, MAX_MEMORY_OBJECT_BYTES, MAX_VARIANTS, MemoryHit,
    Usage,
};

/// Everything the edge's cache needs, built once per process (`'static`, as the engine wants).
pub struct EdgeCache {
    pub store: CacheStore,
    pub eviction: &'static TinyUfoEviction,
    pub lock: Box<CacheKeyLockImpl>,
    /// URLs whose last response could not be stored: their next requests skip the lookup and
    /// the lock (no queueing behind one another), and are stored again once the origin allows.
    pub predictor: Predictor<PREDICTOR_SHARDS>,
}

const PREDICTOR_SHARDS: usize = 16;
/// URLs remembered as uncacheable, per shard.
const PREDICTOR_SHARD_CAPACITY: usize = 16 * 1024;

/// Why a response is not stored when its request carried fields that change what an origin
/// answers but are not in the key. The key may well be cacheable for other requests: the
/// predictor does not remember it as uncacheable.
pub const UNKEYED_REQUEST: &str = "request fields not in the key";

fn unkeyed_request(reason: &'static str) -> bool {
    reason == UNKEYED_REQUEST
}

const HEADER_DICTIONARY: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: \r\nContent-Type: text/html; charset=utf-8\r\nContent-Type: application/javascript\r\nContent-Type: text/css\r\nContent-Type: image/png\r\nContent-Type: application/json\r\nContent-Length: \r\nConnection: keep-alive\r\nCache-Control: public, max-age=\r\nCache-Control: no-cache\r\nETag: \"\r\nLast-Modified: \r\nExpires: \r\nVary: Accept-Encoding\r\nContent-Encoding: gzip\r\nAccept-Ranges: bytes\r\nCache-Tag: \r\nAccess-Control-Allow-Origin: *\r\nStrict-Transport-Security: max-age=\r\nX-Content-Type-Options: nosniff\r\n\r\n";

/// How long one request may hold a key's lock while it fetches the object for the others.
const LOCK_AGE: Duration = Duration::from_secs(10);

impl EdgeCache {
    /// The cache's metrics in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        use pingora::cache::eviction::EvictionManager as _;
        let usage = self.store.usage();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "parapet_cache_objects",
            "gauge",
            "Objects in the cache (memory, disk or both).",
            usage.objects.to_string(),
        );
        metric(
            "parapet_cache_bytes",
            "gauge",
            "Bytes of memory the cache holds.",
            usage.memory_bytes.to_string(),
        );
        metric(
            "parapet_cache_evicted_total",
            "counter",
            "Objects evicted from memory to stay within its bound.",
            self.eviction.evicted_items().to_string(),
        );
        metric(
            "parapet_cache_disk_objects",
            "gauge",
            "Objects in the disk tier.",
            usage.disk_objects.to_string(),
        );
        metric(
            "parapet_cache_disk_bytes",
            "gauge",
            "Bytes of disk the disk tier takes.",
            usage.disk_bytes.to_string(),
        );
        metric(
            "parapet_cache_disk_evicted_total",
            "counter",
            "Objects evicted from disk to stay within its bound.",
            self.store.disk_evictions().to_string(),
        );
        out
    }

    /// A cache of at most `memory_bytes` of objects in memory, over `disk` if given (whose
    /// files are indexed again in the background).
    pub fn leak(memory_bytes: usize, disk: Option<DiskTier>) -> &'static Self {
        // Stored response headers are compressed against this text (common header names and
        // values). Files of the disk tier hold headers compressed so: it must stay unchanged.
        let _ = pingora::cache::set_compression_dict_content(std::borrow::Cow::Borrowed(
            HEADER_DICTIONARY,
        ));
        let eviction: &'static TinyUfoEviction =
            Box::leak(Box::new(TinyUfoEviction::new(memory_bytes)));
        let cache: &'static Self = Box::leak(Box::new(Self {
            store: CacheStore::new(eviction, memory_bytes, disk),
            eviction,
            lock: CacheLock::new_boxed(LOCK_AGE),
            predictor: Predictor::new(PREDICTOR_SHARD_CAPACITY, Some(unkeyed_request)),
        }));
        cache.store.load_disk();
        cache
    }
}
