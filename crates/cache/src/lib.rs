//! The edge cache: keys, Cloudflare's default policy over RFC 9111 (pingora's cache state
//! machine does the protocol: freshness, revalidation, Vary, ranges, the cache lock), and the
//! storage with its purge index.

pub mod key;
pub mod policy;
mod store;

use std::time::Duration;

use pingora::cache::eviction::simple_lru;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::predictor::Predictor;

pub use store::{MAX_OBJECT_BYTES, MemoryStore};

/// Everything the edge's cache needs, built once per process (`'static`, as the engine wants).
pub struct EdgeCache {
    pub store: MemoryStore,
    pub eviction: &'static simple_lru::Manager,
    pub lock: Box<CacheKeyLockImpl>,
    /// URLs whose last response could not be stored: their next requests skip the lookup and
    /// the lock (no queueing behind one another), and are stored again once the origin allows.
    pub predictor: Predictor<PREDICTOR_SHARDS>,
}

const PREDICTOR_SHARDS: usize = 16;
/// URLs remembered as uncacheable, per shard.
const PREDICTOR_SHARD_CAPACITY: usize = 16 * 1024;

const HEADER_DICTIONARY: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: \r\nContent-Type: text/html; charset=utf-8\r\nContent-Type: application/javascript\r\nContent-Type: text/css\r\nContent-Type: image/png\r\nContent-Type: application/json\r\nContent-Length: \r\nConnection: keep-alive\r\nCache-Control: public, max-age=\r\nCache-Control: no-cache\r\nETag: \"\r\nLast-Modified: \r\nExpires: \r\nVary: Accept-Encoding\r\nContent-Encoding: gzip\r\nAccept-Ranges: bytes\r\nCache-Tag: \r\nAccess-Control-Allow-Origin: *\r\nStrict-Transport-Security: max-age=\r\nX-Content-Type-Options: nosniff\r\n\r\n";

/// How long one request may hold a key's lock while it fetches the object for the others.
const LOCK_AGE: Duration = Duration::from_secs(10);

impl EdgeCache {
    /// The cache's metrics in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        use pingora::cache::eviction::EvictionManager as _;
        let (objects, bytes) = self.store.usage();
        format!(
            "# HELP parapet_cache_objects Objects in the memory cache.\n# TYPE parapet_cache_objects gauge\nparapet_cache_objects {objects}\n# HELP parapet_cache_bytes Bytes of objects in the memory cache.\n# TYPE parapet_cache_bytes gauge\nparapet_cache_bytes {bytes}\n# HELP parapet_cache_evicted_total Objects evicted to stay within the memory bound.\n# TYPE parapet_cache_evicted_total counter\nparapet_cache_evicted_total {}\n",
            self.eviction.evicted_items()
        )
    }

    /// A cache of at most `memory_bytes` of objects.
    pub fn leak(memory_bytes: usize) -> &'static Self {
        // Stored response headers are compressed against this text (common header names and
        // values). Objects are only in memory for now; a disk tier must keep it unchanged.
        let _ = pingora::cache::set_compression_dict_content(std::borrow::Cow::Borrowed(
            HEADER_DICTIONARY,
        ));
        let eviction: &'static simple_lru::Manager =
            Box::leak(Box::new(simple_lru::Manager::new(memory_bytes)));
        Box::leak(Box::new(Self {
            store: MemoryStore::new(eviction),
            eviction,
            lock: CacheLock::new_boxed(LOCK_AGE),
            predictor: Predictor::new(PREDICTOR_SHARD_CAPACITY, None),
        }))
    }
}
