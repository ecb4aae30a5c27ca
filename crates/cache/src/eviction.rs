//! The memory tier's bound: TinyUFO (S3-FIFO eviction with TinyLFU admission), so that a scan
//! of objects seen once cannot push out the objects visitors keep asking for, as it would
//! under plain LRU. The engine drives it through its eviction interface: it admits what is
//! stored, counts hits, and lets the store go of what comes back evicted (a new object the
//! admission test refuses comes back at once).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::Result;
use pingora::cache::eviction::EvictionManager;
use pingora::cache::key::CompactCacheKey;
use pingora::cache::{CacheEntryKey, CacheEntryKeyRef};
use tinyufo::TinyUfo;

/// Weights are counted in these units (TinyUFO's weights are 16-bit): an object of up to
/// 64 MiB fits, and anything smaller than a unit counts as one.
const UNIT: usize = 1024;
/// Objects the memory tier is expected to hold per unit of its size, for sizing the
/// popularity sketch (one object per 4 KiB).
const UNITS_PER_OBJECT: usize = 4;

/// TinyUFO as the engine's eviction manager for the memory tier.
pub struct TinyUfoEviction {
    ufo: TinyUfo<u64, Arc<CompactCacheKey>>,
    /// Keys are hashed to 64 bits with a secret key: two keys anyone could make collide would
    /// share one slot, and the object the other left would escape the bound.
    hasher: RandomState,
    /// Approximate: an object stored again with another size is not recounted.
    size: AtomicUsize,
    items: AtomicUsize,
    evicted_size: AtomicUsize,
    evicted_items: AtomicUsize,
}

fn units(size: usize) -> u16 {
    u16::try_from(size.div_ceil(UNIT).max(1)).unwrap_or(u16::MAX)
}

impl TinyUfoEviction {
    /// A bound of `bytes` in all.
    pub fn new(bytes: usize) -> Self {
        let limit = (bytes / UNIT).max(1);
        Self {
            ufo: TinyUfo::new(limit, (limit / UNITS_PER_OBJECT).max(1024)),
            hasher: RandomState::new(),
            size: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            evicted_size: AtomicUsize::new(0),
            evicted_items: AtomicUsize::new(0),
        }
    }

    fn put(&self, key: CompactCacheKey, size: usize) -> Vec<CacheEntryKey> {
        let weight = units(size);
        let hash = self.hasher.hash_one(&key);
        let tracked = self.ufo.get(&hash).is_some();
        let evicted = self.ufo.put(hash, Arc::new(key), weight);
        if !tracked {
            self.size
                .fetch_add(usize::from(weight) * UNIT, Ordering::Relaxed);
            self.items.fetch_add(1, Ordering::Relaxed);
        }
        evicted
            .into_iter()
            .map(|kv| {
                let bytes = usize::from(kv.weight) * UNIT;
                let _ = self
                    .size
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                        Some(s.saturating_sub(bytes))
                    });
                let _ = self
                    .items
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
                self.evicted_size.fetch_add(bytes, Ordering::Relaxed);
                self.evicted_items.fetch_add(1, Ordering::Relaxed);
                CacheEntryKey::key_only(Arc::unwrap_or_clone(kv.data))
            })
            .collect()
    }
}

#[async_trait]
impl EvictionManager for TinyUfoEviction {
    fn total_size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    fn total_items(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    fn evicted_size(&self) -> usize {
        self.evicted_size.load(Ordering::Relaxed)
    }

    fn evicted_items(&self) -> usize {
        self.evicted_items.load(Ordering::Relaxed)
    }

    fn admit(
        &self,
        item: CacheEntryKey,
        size: usize,
        _fresh_until: SystemTime,
    ) -> Vec<CacheEntryKey> {
        self.put(item.into_key(), size)
    }

    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        _max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        // Objects are stored whole here: an append is a new admission of its full size.
        self.put(item.key().clone(), delta)
    }

    /// Left tracked until evicted: TinyUFO's own removal leaves the key in its queue, and the
    /// same key stored again would then be queued twice and its weight counted against the
    /// wrong queue. A removed object's weight thus counts until its turn comes (the bound errs
    /// on the safe side), and storing it again updates it in place.
    fn remove(&self, _item: CacheEntryKeyRef<'_>) {}

    /// Counts a hit. An object not tracked (not stored through this bound) is left alone: it
    /// cannot be admitted without evicting, which a hit cannot report.
    fn access(&self, item: &CacheEntryKey, _size: usize, _fresh_until: SystemTime) -> bool {
        self.ufo.get(&self.hasher.hash_one(item.key())).is_some()
    }

    fn peek(&self, item: &CacheEntryKey) -> bool {
        self.ufo.get(&self.hasher.hash_one(item.key())).is_some()
    }

    async fn save(&self, _dir_path: &str) -> Result<()> {
        Ok(())
    }

    async fn load(&self, _dir_path: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::CacheKey;

    fn key(n: usize) -> CacheEntryKey {
        CacheEntryKey::key_only(CacheKey::new(format!("object {n}"), "zone").to_compact())
    }

    #[test]
    fn slots_are_keyed_by_a_secret_hash() {
        let compact = CacheKey::new("object", "zone").to_compact();
        let (one, two) = (TinyUfoEviction::new(1 << 20), TinyUfoEviction::new(1 << 20));
        assert_eq!(one.hasher.hash_one(&compact), one.hasher.hash_one(&compact));
        assert_ne!(
            one.hasher.hash_one(&compact),
            two.hasher.hash_one(&compact),
            "another process places keys elsewhere"
        );
    }

    #[test]
    fn a_scan_of_objects_seen_once_does_not_push_out_popular_ones() {
        let bound = TinyUfoEviction::new(1 << 20);
        let now = SystemTime::now();
        let hot: Vec<CacheEntryKey> = (0..8).map(key).collect();
        for k in &hot {
            assert!(bound.admit(k.clone(), 16 * 1024, now).is_empty());
        }
        for _ in 0..20 {
            for k in &hot {
                assert!(bound.access(k, 16 * 1024, now));
                // Each is asked for again and again (as a miss would re-admit it).
                let _ = bound.admit(k.clone(), 16 * 1024, now);
            }
        }
        // A scan of ten times the bound, each object once.
        let mut evicted = 0;
        for n in 1000..1640 {
            evicted += bound.admit(key(n), 16 * 1024, now).len();
        }
        // What fits beside the popular objects stays; the rest goes.
        assert!(
            evicted >= 640 - 56,
            "the bound was kept: {evicted} evictions"
        );
        let kept = hot.iter().filter(|k| bound.peek(k)).count();
        assert!(kept >= 7, "{kept} of 8 popular objects survived the scan");
        assert!(bound.total_size() <= 1 << 20);
    }

    #[test]
    fn objects_removed_and_stored_again_keep_the_bound() {
        let bound = TinyUfoEviction::new(1 << 20);
        let now = SystemTime::now();
        // Purged and fetched again, over and over, among others: the bound still holds.
        for round in 0..200 {
            for n in 0..64 {
                let k = key(n);
                bound.remove(CacheEntryKeyRef::KeyOnly(k.key()));
                let _ = bound.admit(k, 16 * 1024, now);
            }
            let _ = bound.admit(key(10_000 + round), 16 * 1024, now);
            assert!(bound.total_size() <= (1 << 20) + 16 * 1024, "round {round}");
        }
        assert!(bound.peek(&key(1)));
    }
}
