//! The memory tier: complete objects, size-bounded (pingora's LRU eviction manager decides what
//! goes; this store removes it), with a purge index by zone, URL, host and `Cache-Tag`, so that
//! a purge touches only the objects it names.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use parapet_model::purge::Purge;
use pingora::cache::eviction::{EvictionManager as _, simple_lru};
use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheEntryKeyRef, CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora::{Error, ErrorType, Result};

use crate::key::ParsedKey;

/// Largest object kept in memory (larger responses pass through uncached).
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// Stored variants (`Vary`) of one URL at most.
pub const MAX_VARIANTS: usize = 32;
/// Tags per object, as Cloudflare's limit on `Cache-Tag`.
const MAX_TAGS: usize = 64;

struct Entry {
    meta: Arc<(Vec<u8>, Vec<u8>)>,
    body: Bytes,
    compact: CompactCacheKey,
    zone: Arc<str>,
    /// The URL part of the primary key (every Vary variant of a URL shares it).
    url: Arc<str>,
    host: String,
    path: String,
    tags: Vec<String>,
    /// The zone's purge generation when stored: older than the zone's current one is purged.
    generation: u64,
    /// What the object costs in memory: body, stored header, key and index copies.
    weight: usize,
}

/// Memory an object costs beyond its body, headers and names (map and index nodes).
const ENTRY_OVERHEAD: usize = 512;

/// `(zone, host, path, object id)`, ordered: the objects of a host or under a path prefix are
/// one contiguous range.
type PathKey = (Arc<str>, String, String, String);

#[derive(Default)]
struct Index {
    objects: HashMap<String, Entry>,
    by_url: HashMap<Arc<str>, HashSet<String>>,
    by_tag: HashMap<(Arc<str>, String), HashSet<String>>,
    by_path: BTreeSet<PathKey>,
    /// Per zone, bumped by a purge of everything (objects of older generations are gone for
    /// lookups at once, and swept out of memory in the background).
    generations: HashMap<Arc<str>, u64>,
    /// Per zone, bumped by every purge: a response fetched before a purge is not stored after
    /// it (it may be one the purge meant to remove).
    purges: HashMap<Arc<str>, u64>,
    bytes: usize,
}

impl Index {
    fn generation(&self, zone: &str) -> u64 {
        self.generations.get(zone).copied().unwrap_or(0)
    }

    fn purges(&self, zone: &str) -> u64 {
        self.purges.get(zone).copied().unwrap_or(0)
    }

    fn live(&self, entry: &Entry) -> bool {
        entry.generation >= self.generation(&entry.zone)
    }

    fn insert(&mut self, id: String, mut entry: Entry) {
        self.remove(&id);
        entry.generation = self.generation(&entry.zone);
        self.bytes += entry.weight;
        self.by_url
            .entry(Arc::clone(&entry.url))
            .or_default()
            .insert(id.clone());
        for tag in &entry.tags {
            self.by_tag
                .entry((Arc::clone(&entry.zone), tag.clone()))
                .or_default()
                .insert(id.clone());
        }
        self.by_path.insert((
            Arc::clone(&entry.zone),
            entry.host.clone(),
            entry.path.clone(),
            id.clone(),
        ));
        self.objects.insert(id, entry);
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.objects.remove(id)?;
        self.bytes -= entry.weight;
        let drop_from = |map: &mut HashSet<String>| {
            map.remove(id);
            map.is_empty()
        };
        if self.by_url.get_mut(&entry.url).is_some_and(drop_from) {
            self.by_url.remove(&entry.url);
        }
        for tag in &entry.tags {
            let k = (Arc::clone(&entry.zone), tag.clone());
            if self.by_tag.get_mut(&k).is_some_and(drop_from) {
                self.by_tag.remove(&k);
            }
        }
        self.by_path.remove(&(
            Arc::clone(&entry.zone),
            entry.host.clone(),
            entry.path.clone(),
            id.to_owned(),
        ));
        Some(entry)
    }

    /// Ids of the zone's objects on `host` whose path starts with `prefix` (`None`: every
    /// host), at most `limit`, from the ordered index.
    fn under(&self, zone: &str, host: Option<&str>, prefix: &str, limit: usize) -> Vec<String> {
        let zone: Arc<str> = Arc::from(zone);
        let start = (
            Arc::clone(&zone),
            host.unwrap_or("").to_owned(),
            prefix.to_owned(),
            String::new(),
        );
        self.by_path
            .range(start..)
            .take_while(|(z, h, p, _)| {
                *z == zone && host.is_none_or(|host| h == host) && p.starts_with(prefix)
            })
            .take(limit)
            .map(|(_, _, _, id)| id.clone())
            .collect()
    }
}

/// Objects removed per lock hold when sweeping a purged zone (lookups go on in between).
const SWEEP_BATCH: usize = 2_000;

/// The memory tier. One per process, `'static` as the engine requires.
pub struct MemoryStore {
    index: Mutex<Index>,
    eviction: &'static simple_lru::Manager,
}

impl MemoryStore {
    pub fn new(eviction: &'static simple_lru::Manager) -> Self {
        Self {
            index: Mutex::default(),
            eviction,
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Objects and bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let index = self.index();
        (index.objects.len(), index.bytes)
    }

    /// Removes what `purge` names in zone `zone_id`: effective for the next lookup. Returns
    /// how many objects were removed (a purge of everything is counted as it is swept).
    pub fn purge(&'static self, zone_id: &str, purge: &Purge) -> usize {
        let mut index = self.index();
        *index.purges.entry(Arc::from(zone_id)).or_default() += 1;
        let ids: Vec<String> = match purge {
            Purge::Everything => {
                *index.generations.entry(Arc::from(zone_id)).or_default() += 1;
                drop(index);
                let zone = zone_id.to_owned();
                // Free the memory in the background, a batch per lock hold.
                let _ = std::thread::Builder::new()
                    .name("cache-sweep".into())
                    .spawn(move || while self.sweep(&zone) > 0 {});
                return 0;
            }
            Purge::Files(urls) => urls
                .iter()
                .flat_map(|u| {
                    let url = crate::key::primary(zone_id, u.https, &u.host, u.port, &u.path);
                    index
                        .by_url
                        .get(url.as_str())
                        .map(|ids| ids.iter().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect(),
            Purge::Tags(tags) => tags
                .iter()
                .flat_map(|t| {
                    index
                        .by_tag
                        .get(&(Arc::from(zone_id), t.to_ascii_lowercase()))
                        .map(|ids| ids.iter().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect(),
            Purge::Hosts(hosts) => {
                let ranges: Vec<(&str, &str)> = hosts.iter().map(|h| (h.as_str(), "")).collect();
                drop(index);
                return self.purge_ranges(zone_id, &ranges);
            }
            Purge::Prefixes(prefixes) => {
                let ranges: Vec<(&str, &str)> = prefixes
                    .iter()
                    .map(|(h, p)| (h.as_str(), p.as_str()))
                    .collect();
                drop(index);
                return self.purge_ranges(zone_id, &ranges);
            }
        };
        self.remove_all(&mut index, &ids)
    }

    /// Removes the zone's objects under each `(host, path prefix)`, a batch per lock hold so
    /// that lookups go on while a large purge runs.
    fn purge_ranges(&self, zone_id: &str, ranges: &[(&str, &str)]) -> usize {
        let mut removed = 0;
        for (host, prefix) in ranges {
            loop {
                let mut index = self.index();
                let ids = index.under(zone_id, Some(host), prefix, SWEEP_BATCH);
                let batch = self.remove_all(&mut index, &ids);
                if batch == 0 {
                    break;
                }
                removed += batch;
            }
        }
        removed
    }

    /// Removes up to a batch of the zone's objects older than its generation; how many.
    fn sweep(&self, zone: &str) -> usize {
        let mut index = self.index();
        let generation = index.generation(zone);
        let mut stale = Vec::new();
        for (_, _, _, id) in index
            .by_path
            .range((Arc::from(zone), String::new(), String::new(), String::new())..)
            .take_while(|(z, ..)| &**z == zone)
        {
            if index
                .objects
                .get(id)
                .is_some_and(|e| e.generation < generation)
            {
                stale.push(id.clone());
                if stale.len() == SWEEP_BATCH {
                    break;
                }
            }
        }
        self.remove_all(&mut index, &stale)
    }

    /// Every variant of one URL (a state-changing request to it succeeded: RFC 9111 §4.4).
    pub fn invalidate_url(&self, url: &str) -> usize {
        let mut index = self.index();
        if let Some(parsed) = ParsedKey::parse(url) {
            *index
                .purges
                .entry(Arc::from(parsed.zone.as_str()))
                .or_default() += 1;
        }
        let ids: Vec<String> = index
            .by_url
            .get(url)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        self.remove_all(&mut index, &ids)
    }

    fn remove_all(&self, index: &mut Index, ids: &[String]) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(entry) = index.remove(id) {
                self.eviction
                    .remove(CacheEntryKeyRef::KeyOnly(&entry.compact));
                removed += 1;
            }
        }
        removed
    }
}

fn storage_error(context: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, context)
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let found = {
            let index = self.index();
            index
                .objects
                .get(&key.combined())
                .filter(|e| index.live(e))
                .map(|e| (Arc::clone(&e.meta), e.body.clone(), e.weight))
        };
        let Some((meta, body, weight)) = found else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&meta.0, &meta.1)?;
        let end = body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                weight,
                body,
                start: 0,
                end,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let parsed = key
            .primary_key_str()
            .and_then(ParsedKey::parse)
            .ok_or_else(|| storage_error("cache key is not one of the edge's"))?;
        let tags = meta
            .headers()
            .get_all("cache-tag")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t.len() <= 1024)
            .take(MAX_TAGS)
            .collect();
        let purges = self.index().purges(&parsed.zone);
        Ok(Box::new(Miss {
            purges,
            store: self,
            id: key.combined(),
            compact: key.to_compact(),
            meta: meta.serialize()?,
            body: Vec::new(),
            parsed,
            tags,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let removed = self.index().remove(&target.key().combined());
        Ok(match removed {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let serialized = Arc::new(meta.serialize()?);
        let mut index = self.index();
        Ok(match index.objects.get_mut(&key.combined()) {
            Some(entry) => {
                entry.meta = serialized;
                true
            }
            None => false,
        })
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A complete object being served (whole, or the range asked for).
struct Hit {
    weight: usize,
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(ErrorType::InternalError, "seek past the end of the object");
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// An object being received from the origin; stored only when complete (a body cut short is
/// never served).
struct Miss {
    /// The zone's purge count when the fetch began.
    purges: u64,
    store: &'static MemoryStore,
    id: String,
    compact: CompactCacheKey,
    meta: (Vec<u8>, Vec<u8>),
    body: Vec<u8>,
    parsed: ParsedKey,
    tags: Vec<String>,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > MAX_OBJECT_BYTES {
            return Error::e_explain(
                ErrorType::InternalError,
                "object larger than the cache takes",
            );
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let weight = self.body.len()
            + self.meta.0.len()
            + self.meta.1.len()
            + 2 * self.id.len()
            + 2 * self.parsed.url.len()
            + self.parsed.host.len()
            + self.parsed.path.len()
            + self.tags.iter().map(|t| 2 * t.len()).sum::<usize>()
            + ENTRY_OVERHEAD;
        let entry = Entry {
            meta: Arc::new(self.meta),
            body: Bytes::from(self.body),
            compact: self.compact,
            zone: Arc::from(self.parsed.zone.as_str()),
            url: Arc::from(self.parsed.url.as_str()),
            host: self.parsed.host,
            path: self.parsed.path,
            tags: self.tags,
            generation: 0,
            weight,
        };
        let mut index = self.store.index();
        if index.purges(&entry.zone) != self.purges {
            return Error::e_explain(
                ErrorType::InternalError,
                "the zone was purged while this response was fetched",
            );
        }
        let variants = index.by_url.get(entry.url.as_ref()).map_or(0, HashSet::len);
        if variants >= MAX_VARIANTS && !index.objects.contains_key(&self.id) {
            // A URL that varies without end (`Vary: User-Agent`, …) keeps its first variants
            // only; the others pass through uncached.
            return Error::e_explain(ErrorType::InternalError, "too many variants of one URL");
        }
        index.insert(self.id, entry);
        Ok(MissFinishType::Created(weight))
    }
}
