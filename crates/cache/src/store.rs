//! The cache's storage: a memory tier (complete objects, size-bounded: TinyUFO decides what is
//! admitted and what goes, this store lets it go) over a disk tier (one file per object,
//! size-bounded by its own LRU, still valid after a restart or a `kill -9`), with one purge
//! index by zone, URL, host and `Cache-Tag` over both, so that a purge touches only the objects
//! it names.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use parapet_model::purge::Purge;
use pingora::cache::eviction::EvictionManager as _;
use pingora::cache::key::CompactCacheKey;
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheEntryKey, CacheEntryKeyRef, CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome,
    PurgeTarget, PurgeType, Storage,
};
use pingora::{Error, ErrorType, Result};

use crate::disk::{self, DiskTier};
use crate::eviction::TinyUfoEviction;
use crate::key::ParsedKey;

/// Largest object kept in memory (and an eighth of the memory tier at most): larger responses
/// go to the disk tier as they arrive, or pass through uncached without one.
pub const MAX_MEMORY_OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// Stored variants (`Vary`) of one URL at most.
pub const MAX_VARIANTS: usize = 32;
/// Tags per object, as Cloudflare's limit on `Cache-Tag`.
const MAX_TAGS: usize = 64;

struct Entry {
    /// The object in memory, if it is.
    resident: Option<Resident>,
    /// The object's file in the disk tier, if it has one.
    disk: Option<OnDisk>,
    compact: CompactCacheKey,
    zone: Arc<str>,
    /// The URL part of the primary key (every Vary variant of a URL shares it).
    url: Arc<str>,
    host: String,
    path: String,
    tags: Vec<String>,
    /// The zone's purge generation when stored: older than the zone's current one is purged.
    generation: u64,
    /// What the entry's names and index nodes cost in memory.
    names: usize,
    /// Distinguishes this storing of the key from earlier and later ones.
    serial: u64,
}

struct Resident {
    meta: Arc<StoredMeta>,
    body: Bytes,
}

/// A stored response header: serialized (as the disk tier and revalidation keep it) and, from
/// its first hit on, decoded too, so that later hits skip the decompression and parsing.
struct StoredMeta {
    serialized: (Vec<u8>, Vec<u8>),
    decoded: std::sync::OnceLock<Option<Arc<DecodedMeta>>>,
}

/// A stored response's header, rendered once for the edge's own hit path.
#[derive(Debug, Clone)]
pub struct HitHead {
    /// Status line and the header fields every hit repeats.
    pub head: Bytes,
    /// The same as a `304 Not Modified` (for a stored `200`), for a visitor whose copy is
    /// current.
    pub not_modified: Option<Bytes>,
    /// Whether the edge would compress this response for a visitor that accepts it.
    pub compressible: bool,
}

/// A complete object whose body is in memory (held by the memory tier, or read whole from the
/// disk tier), whose header was stored once and never revalidated: what the edge needs to
/// answer a hit without the HTTP engine.
pub struct MemoryHit {
    decoded: Arc<DecodedMeta>,
    pub body: Bytes,
    /// What the object weighs in the memory tier (for its eviction policy; 0: not there).
    pub weight: usize,
    /// Which storing of its key it is.
    serial: u64,
}

/// The file of the disk tier that holds a body, for sending it to a socket without copying it
/// through the edge's memory. The body's bytes in a file never change: an object stored again
/// goes to a new file renamed over the old name, and only the record after the body is ever
/// rewritten; a file deleted while open stays readable.
pub struct BodyFile {
    pub file: Arc<std::fs::File>,
    /// Where the body starts in the file.
    pub offset: u64,
}

impl MemoryHit {
    /// The response as stored.
    pub fn header(&self) -> &pingora::http::ResponseHeader {
        &self.decoded().header
    }

    fn decoded(&self) -> &DecodedMeta {
        &self.decoded
    }

    /// Until when the object is fresh.
    pub fn fresh_until(&self) -> std::time::SystemTime {
        self.decoded().fresh_until
    }

    /// The time its age counts from.
    pub fn epoch(&self) -> std::time::SystemTime {
        let d = self.decoded();
        d.epoch_override.unwrap_or(d.created)
    }

    /// Which of its URL's Vary variants it is (`None`: the URL has no variants).
    pub fn variance(&self) -> Option<pingora::cache::key::HashBinary> {
        self.decoded().variance
    }

    /// When it was stored.
    pub fn created(&self) -> std::time::SystemTime {
        self.decoded().created
    }

    /// The header as `render` makes it, made once per stored header (`None`: the edge's own
    /// path cannot answer for this object).
    pub fn hit_head(
        &self,
        render: impl FnOnce(&pingora::http::ResponseHeader) -> Option<HitHead>,
    ) -> Option<&HitHead> {
        self.decoded
            .hit_head
            .get_or_init(|| render(&self.decoded.header))
            .as_ref()
    }
}

/// What rebuilds a header's metadata without decoding it again. Only for metadata never
/// revalidated (its `updated` is its `created`, as a new one's is): the rest is decoded each time.
struct DecodedMeta {
    header: pingora::http::ResponseHeader,
    fresh_until: std::time::SystemTime,
    created: std::time::SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<pingora::cache::key::HashBinary>,
    epoch_override: Option<std::time::SystemTime>,
    /// The header as the edge's own hit path writes it, made at its first such hit.
    hit_head: std::sync::OnceLock<Option<HitHead>>,
}

impl StoredMeta {
    fn new(serialized: (Vec<u8>, Vec<u8>)) -> Self {
        Self {
            serialized,
            decoded: std::sync::OnceLock::new(),
        }
    }

    /// What the entry costs in memory for its header: serialized, decoded and rendered
    /// (estimated).
    fn weight(&self) -> usize {
        self.serialized.0.len() + 11 * self.serialized.1.len() + 384
    }

    /// The header decoded, when it was never revalidated (decoded once, at the first hit).
    fn decoded(&self) -> Option<&Arc<DecodedMeta>> {
        let (internal, header) = (&self.serialized.0, &self.serialized.1);
        self.decoded
            .get_or_init(|| {
                let meta = CacheMeta::deserialize(internal, header).ok()?;
                let fresh = meta.updated() == meta.created() && meta.provenance() == meta.created();
                fresh.then(|| {
                    Arc::new(DecodedMeta {
                        header: meta.response_header_copy(),
                        fresh_until: meta.fresh_until(),
                        created: meta.created(),
                        stale_while_revalidate: meta.stale_while_revalidate_sec(),
                        stale_if_error: meta.stale_if_error_sec(),
                        variance: meta.variance(),
                        epoch_override: meta.epoch_override(),
                        hit_head: std::sync::OnceLock::new(),
                    })
                })
            })
            .as_ref()
    }

    fn meta(&self) -> Result<CacheMeta> {
        let Some(d) = self.decoded() else {
            return CacheMeta::deserialize(&self.serialized.0, &self.serialized.1);
        };
        let mut meta = CacheMeta::new(
            d.fresh_until,
            d.created,
            d.stale_while_revalidate,
            d.stale_if_error,
            d.header.clone(),
        );
        if let Some(variance) = d.variance {
            meta.set_variance(variance);
        }
        if let Some(epoch) = d.epoch_override {
            meta.set_epoch_override(epoch);
        }
        Ok(meta)
    }
}

struct OnDisk {
    body_len: u64,
    /// Which file it is, and its length (a file opened by name is this object's only if it
    /// matches).
    stored: disk::FileId,
    /// The file, kept open once hit (up to `MAX_OPEN_FILES` of them): a hit then costs one read.
    file: Option<Arc<std::fs::File>>,
    /// Its header, kept with the open file: a hit then reads only the body.
    meta: Option<Arc<StoredMeta>>,
}

impl OnDisk {
    fn new(body_len: u64, stored: disk::FileId) -> Self {
        Self {
            body_len,
            stored,
            file: None,
            meta: None,
        }
    }

    /// What the file costs on disk.
    fn weight(&self) -> u64 {
        disk::disk_weight(self.stored.len())
    }
}

impl Entry {
    fn new(parsed: ParsedKey, compact: CompactCacheKey, tags: Vec<String>, id: &str) -> Self {
        let names = 2 * id.len()
            + 2 * parsed.url.len()
            + parsed.host.len()
            + parsed.path.len()
            + tags.iter().map(|t| 2 * t.len()).sum::<usize>()
            + ENTRY_OVERHEAD;
        Self {
            resident: None,
            disk: None,
            compact,
            zone: Arc::from(parsed.zone.as_str()),
            url: Arc::from(parsed.url.as_str()),
            host: parsed.host,
            path: parsed.path,
            tags,
            generation: 0,
            names,
            serial: 0,
        }
    }

    /// What the entry costs in memory.
    fn weight(&self) -> usize {
        self.names
            + self
                .resident
                .as_ref()
                .map_or(0, |r| r.body.len() + r.meta.weight())
    }

    fn record(&self, id: &str, meta: (Vec<u8>, Vec<u8>)) -> disk::Record {
        disk::Record {
            id: id.to_owned(),
            key: self.compact.clone(),
            zone: self.zone.to_string(),
            url: self.url.to_string(),
            host: self.host.clone(),
            path: self.path.clone(),
            tags: self.tags.clone(),
            generation: self.generation,
            meta,
        }
    }
}

/// Memory an object costs beyond its body, headers and names (map and index nodes).
const ENTRY_OVERHEAD: usize = 512;

/// The newest URL invalidations kept, 16 bytes each (a fetch that lasts longer than this many
/// invalidations is not stored).
const INVALIDATIONS_KEPT: usize = 65_536;

/// The counts of purges and URL invalidations when a fetch was sent to the origin
/// ([`CacheStore::fetch_mark`]), carried in its response's metadata to the store: a response
/// whose zone was purged, or whose URL was invalidated, after its request was sent is not
/// stored.
#[derive(Clone, Copy, Debug)]
pub struct FetchMark {
    invalidations: u64,
    purges: u64,
}

/// Which storing of its key a hit's metadata was read from: put in the metadata a lookup
/// returns, which the engine hands back to [`Storage::update_meta`] after a `304`, so that a
/// revalidation updates the object it revalidated and never one stored under the key since.
#[derive(Clone, Copy, Debug)]
struct HitOf(u64);

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
    /// lookups at once, and swept out of memory and off disk in the background).
    generations: HashMap<Arc<str>, u64>,
    /// Purges so far, all zones together, and per zone the number of its latest: a response
    /// whose request was sent before a purge of its zone is not stored after it (it may be one
    /// the purge meant to remove).
    purge_count: u64,
    purges: HashMap<Arc<str>, u64>,
    /// Invalidations of one URL by an unsafe request (RFC 9111 §4.4), numbered: the newest
    /// ones in order, and the last number by URL (URLs held as keyed hashes: two that collide
    /// only cost a fetch its storing). A response fetched while its own URL was invalidated is
    /// not stored after it; the other fetches are.
    invalidations: VecDeque<(u64, u64)>,
    invalidated: HashMap<u64, u64>,
    invalidation_count: u64,
    url_keys: std::collections::hash_map::RandomState,
    /// Memory the entries hold.
    bytes: usize,
    /// Disk the entries' files take, and how many there are.
    disk_bytes: u64,
    disk_objects: usize,
    /// Files kept open for hits.
    open_files: usize,
    next_serial: u64,
    /// While the disk tier's files are indexed again: the purges made meanwhile, which files
    /// not yet indexed must answer to too.
    purged_while_loading: Option<PurgedWhileLoading>,
}

/// The purges made while the disk tier's files are indexed again, kept by what they name so
/// that each file is checked against all of them in a few lookups (a busy edge invalidates
/// many URLs meanwhile).
#[derive(Default)]
struct PurgedWhileLoading {
    /// Primary URLs: files purged, URLs invalidated.
    urls: HashSet<String>,
    /// Per zone: tags (lower case), hosts, and `(host, path prefix)`.
    tags: HashMap<Arc<str>, HashSet<String>>,
    hosts: HashMap<Arc<str>, HashSet<String>>,
    prefixes: HashMap<Arc<str>, Vec<(String, String)>>,
}

impl PurgedWhileLoading {
    fn add(&mut self, zone: &str, purge: &Purge) {
        let zone: Arc<str> = Arc::from(zone);
        match purge {
            // The zone's generation answers for these.
            Purge::Everything => {}
            Purge::Files(urls) => self.urls.extend(
                urls.iter()
                    .map(|u| crate::key::primary(&zone, u.https, &u.host, u.port, &u.path)),
            ),
            Purge::Tags(tags) => self
                .tags
                .entry(zone)
                .or_default()
                .extend(tags.iter().map(|t| t.to_ascii_lowercase())),
            Purge::Hosts(hosts) => self
                .hosts
                .entry(zone)
                .or_default()
                .extend(hosts.iter().cloned()),
            Purge::Prefixes(prefixes) => self
                .prefixes
                .entry(zone)
                .or_default()
                .extend(prefixes.iter().cloned()),
        }
    }

    /// One purge per line, its fields separated by tabs (escaped: URLs hold line breaks).
    fn to_text(&self) -> String {
        fn escape(s: &str) -> String {
            s.replace('%', "%25")
                .replace('\t', "%09")
                .replace('\n', "%0A")
        }
        let mut out = String::new();
        for url in &self.urls {
            out.push_str(&format!("url\t{}\n", escape(url)));
        }
        for (kind, map) in [("tag", &self.tags), ("host", &self.hosts)] {
            for (zone, names) in map {
                for name in names {
                    out.push_str(&format!("{kind}\t{}\t{}\n", escape(zone), escape(name)));
                }
            }
        }
        for (zone, prefixes) in &self.prefixes {
            for (host, prefix) in prefixes {
                out.push_str(&format!(
                    "prefix\t{}\t{}\t{}\n",
                    escape(zone),
                    escape(host),
                    escape(prefix)
                ));
            }
        }
        out
    }

    /// What [`Self::to_text`] wrote (lines it cannot read are left out).
    fn from_text(text: &str) -> Self {
        fn unescape(s: &str) -> String {
            s.replace("%0A", "\n")
                .replace("%09", "\t")
                .replace("%25", "%")
        }
        let mut out = Self::default();
        for line in text.lines() {
            let fields: Vec<String> = line.split('\t').map(unescape).collect();
            match fields.as_slice() {
                [kind, url] if kind == "url" => {
                    out.urls.insert(url.clone());
                }
                [kind, zone, name] if kind == "tag" || kind == "host" => {
                    let map = if kind == "tag" {
                        &mut out.tags
                    } else {
                        &mut out.hosts
                    };
                    map.entry(Arc::from(zone.as_str()))
                        .or_default()
                        .insert(name.clone());
                }
                [kind, zone, host, prefix] if kind == "prefix" => out
                    .prefixes
                    .entry(Arc::from(zone.as_str()))
                    .or_default()
                    .push((host.clone(), prefix.clone())),
                _ => {}
            }
        }
        out
    }

    /// Whether the object `record` describes is one of those purged.
    fn covers(&self, record: &disk::Record) -> bool {
        let zone = record.zone.as_str();
        self.urls.contains(&record.url)
            || self
                .tags
                .get(zone)
                .is_some_and(|tags| record.tags.iter().any(|t| tags.contains(t)))
            || self
                .hosts
                .get(zone)
                .is_some_and(|hosts| hosts.contains(&record.host))
            || self.prefixes.get(zone).is_some_and(|prefixes| {
                prefixes
                    .iter()
                    .any(|(h, p)| record.host == *h && record.path.starts_with(p.as_str()))
            })
    }
}

impl Index {
    fn generation(&self, zone: &str) -> u64 {
        self.generations.get(zone).copied().unwrap_or(0)
    }

    /// The number of the zone's latest purge (0: none yet).
    fn last_purge(&self, zone: &str) -> u64 {
        self.purges.get(zone).copied().unwrap_or(0)
    }

    /// Numbers an invalidation of `url`, keeping the newest [`INVALIDATIONS_KEPT`].
    fn invalidate(&mut self, url: &str) {
        use std::hash::BuildHasher as _;
        self.invalidation_count += 1;
        let url = self.url_keys.hash_one(url);
        self.invalidations.push_back((self.invalidation_count, url));
        self.invalidated.insert(url, self.invalidation_count);
        while self.invalidations.len() > INVALIDATIONS_KEPT {
            if let Some((n, old)) = self.invalidations.pop_front()
                && self.invalidated.get(&old) == Some(&n)
            {
                self.invalidated.remove(&old);
            }
        }
    }

    /// Whether `url` was invalidated after invalidation number `since` (or may have been: the
    /// invalidations since then are no longer all kept).
    fn invalidated_since(&self, url: &str, since: u64) -> bool {
        use std::hash::BuildHasher as _;
        if self.invalidation_count == since {
            return false;
        }
        let forgotten = self
            .invalidations
            .front()
            .is_some_and(|&(oldest, _)| oldest > since + 1);
        forgotten
            || self
                .invalidated
                .get(&self.url_keys.hash_one(url))
                .is_some_and(|&n| n > since)
    }

    fn live(&self, entry: &Entry) -> bool {
        entry.generation >= self.generation(&entry.zone)
    }

    /// Keeps the object's file open, with its header, for its next hits.
    fn keep_open(&mut self, id: &str, file: &Arc<std::fs::File>, meta: &Arc<StoredMeta>) {
        let (file, meta) = (Arc::clone(file), Arc::clone(meta));
        self.update(id, |e| {
            if let Some(d) = &mut e.disk {
                d.file = Some(file);
                d.meta = Some(meta);
            }
        });
    }

    fn count(&mut self, entry: &Entry, sign: isize) {
        let disk = entry.disk.as_ref().map_or(0, OnDisk::weight);
        let open = entry.disk.as_ref().is_some_and(|d| d.file.is_some());
        if sign > 0 {
            self.bytes += entry.weight();
            self.disk_bytes += disk;
            self.disk_objects += usize::from(entry.disk.is_some());
            self.open_files += usize::from(open);
        } else {
            self.bytes -= entry.weight();
            self.disk_bytes -= disk;
            self.disk_objects -= usize::from(entry.disk.is_some());
            self.open_files -= usize::from(open);
        }
    }

    /// Stores `entry` under `id`; returns the entry it replaces.
    fn insert(&mut self, id: String, mut entry: Entry) -> Option<Entry> {
        let old = self.remove(&id);
        entry.generation = self.generation(&entry.zone);
        self.next_serial += 1;
        entry.serial = self.next_serial;
        self.count(&entry, 1);
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
        old
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.objects.remove(id)?;
        self.count(&entry, -1);
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

    /// Gives the entry `id` the purge tags `tags` (a revalidated response may bring others).
    fn retag(&mut self, id: &str, tags: Vec<String>) {
        let Some(entry) = self.objects.get(id) else {
            return;
        };
        if entry.tags == tags {
            return;
        }
        let zone = Arc::clone(&entry.zone);
        for tag in &entry.tags {
            let k = (Arc::clone(&zone), tag.clone());
            if self.by_tag.get_mut(&k).is_some_and(|ids| {
                ids.remove(id);
                ids.is_empty()
            }) {
                self.by_tag.remove(&k);
            }
        }
        for tag in &tags {
            self.by_tag
                .entry((Arc::clone(&zone), tag.clone()))
                .or_default()
                .insert(id.to_owned());
        }
        let weight = |tags: &[String]| tags.iter().map(|t| 2 * t.len()).sum::<usize>();
        self.update(id, |e| {
            e.names = e.names - weight(&e.tags) + weight(&tags);
            e.tags = tags;
        });
    }

    /// Changes the entry `id` in place (keeping the totals right); whether it was there.
    fn update(&mut self, id: &str, change: impl FnOnce(&mut Entry)) -> bool {
        let Some(mut entry) = self.objects.remove(id) else {
            return false;
        };
        self.count(&entry, -1);
        change(&mut entry);
        self.count(&entry, 1);
        self.objects.insert(id.to_owned(), entry);
        true
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
const SWEEP_BATCH: usize = 500;

/// What the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Objects in memory, on disk or both.
    pub objects: usize,
    pub memory_bytes: usize,
    pub disk_objects: usize,
    pub disk_bytes: u64,
}

/// The cache's storage: a memory tier over an optional disk tier, with one purge index. One
/// per process, `'static` as the engine requires.
pub struct CacheStore {
    index: Mutex<Index>,
    /// The index's invalidation and purge counts, read without its lock by fetches about to
    /// start.
    invalidation_mark: std::sync::atomic::AtomicU64,
    purge_mark: std::sync::atomic::AtomicU64,
    /// The memory tier's bound (the engine drives it: it admits what is stored and hit, and
    /// asks this store to let go of what it evicts).
    eviction: &'static TinyUfoEviction,
    memory_bytes: usize,
    disk: Option<DiskTier>,
    /// The largest response stored, as configured (the tiers' own bounds may be lower).
    limit: std::sync::atomic::AtomicU64,
}

impl CacheStore {
    pub fn new(
        eviction: &'static TinyUfoEviction,
        memory_bytes: usize,
        disk: Option<DiskTier>,
    ) -> Self {
        let mut index = Index::default();
        if let Some(disk) = &disk {
            index.generations = disk
                .load_generations()
                .into_iter()
                .map(|(zone, g)| (Arc::from(zone), g))
                .collect();
        }
        Self {
            index: Mutex::new(index),
            invalidation_mark: std::sync::atomic::AtomicU64::new(0),
            purge_mark: std::sync::atomic::AtomicU64::new(0),
            eviction,
            memory_bytes,
            disk,
            limit: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// Stores no response larger than `bytes` (`cache_max_object_bytes`), whichever tier
    /// would take it.
    pub fn set_max_object_bytes(&self, bytes: u64) {
        self.limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object stored for `key` when its whole body can be had at once (the memory tier
    /// holds it, or the disk tier has it in a small file, read here) and its header was never
    /// revalidated; `None` otherwise (the HTTP engine's lookup answers for the rest).
    pub fn direct_hit(&self, key: &CacheKey) -> Option<MemoryHit> {
        let id = crate::key::object_id(key);
        let found = {
            let index = self.index();
            let entry = index.objects.get(&id).filter(|e| index.live(e))?;
            match (&entry.resident, &entry.disk) {
                (Some(resident), _) => Ok((
                    Arc::clone(&resident.meta),
                    resident.body.clone(),
                    entry.weight(),
                    entry.serial,
                )),
                (None, Some(d)) if d.stored.len() <= WHOLE_READ_BYTES => Err(DiskFound {
                    serial: entry.serial,
                    body_len: d.body_len,
                    stored: d.stored,
                    file: d.file.clone(),
                    meta: d.meta.clone(),
                }),
                _ => return None,
            }
        };
        let (stored, body, weight, serial) = match found {
            Ok(resident) => resident,
            Err(on_disk) => {
                let serial = on_disk.serial;
                let read = self.disk_read(key, &id, on_disk, false)?;
                (read.stored, read.body?, read.weight, serial)
            }
        };
        let decoded = Arc::clone(stored.decoded()?);
        Some(MemoryHit {
            decoded,
            body,
            weight,
            serial,
        })
    }

    /// The disk tier's file holding the body of `hit` (found under `key`), while the object is
    /// still the one stored there and the body is in the page cache, so that sending it from
    /// the file never waits for the disk; `None` otherwise (no disk tier, an object kept in
    /// memory only, stored again since, or a body the kernel let go of: the memory tier's copy
    /// serves). The file is kept open for the next hits, within half the open files allowed
    /// (the other half is for objects on disk alone, which need them more).
    pub fn body_file(&self, key: &CacheKey, hit: &MemoryHit) -> Option<BodyFile> {
        let disk = self.disk.as_ref()?;
        let id = crate::key::object_id(key);
        let body_len = hit.body.len() as u64;
        let (kept, stored) = {
            let index = self.index();
            let entry = index
                .objects
                .get(&id)
                .filter(|e| e.serial == hit.serial && index.live(e))?;
            let on_disk = entry.disk.as_ref().filter(|d| d.body_len == body_len)?;
            (on_disk.file.clone(), on_disk.stored)
        };
        let file = match kept {
            Some(file) => file,
            None => {
                let file = std::fs::File::open(disk.object_path(&id)).ok()?;
                if disk::FileId::of(&file.metadata().ok()?) != stored {
                    return None;
                }
                let file = Arc::new(file);
                let mut index = self.index();
                let entry = index.objects.get(&id).filter(|e| e.serial == hit.serial);
                let meta = entry.and_then(|e| Some(Arc::clone(&e.resident.as_ref()?.meta)));
                let unkept = entry
                    .and_then(|e| e.disk.as_ref())
                    .is_some_and(|d| d.file.is_none() && d.stored == stored);
                if let Some(meta) = meta
                    && unkept
                    && index.open_files < MAX_OPEN_FILES / 2
                {
                    index.keep_open(&id, &file, &meta);
                }
                file
            }
        };
        disk.in_page_cache(&file, stored, disk::HEAD, body_len)
            .then_some(BodyFile {
                file,
                offset: disk::HEAD,
            })
    }

    /// Largest response the cache stores.
    pub fn max_object_bytes(&self) -> usize {
        let disk = self.disk.as_ref().map_or(0, |d| d.max_object);
        let limit = self.limit.load(std::sync::atomic::Ordering::Relaxed);
        self.memory_object_bytes()
            .max(usize::try_from(disk).unwrap_or(usize::MAX))
            .min(usize::try_from(limit).unwrap_or(usize::MAX))
    }

    /// Largest object held in memory.
    fn memory_object_bytes(&self) -> usize {
        MAX_MEMORY_OBJECT_BYTES.min(self.memory_bytes / 8)
    }

    pub fn usage(&self) -> Usage {
        let index = self.index();
        Usage {
            objects: index.objects.len(),
            memory_bytes: index.bytes,
            disk_objects: index.disk_objects,
            disk_bytes: index.disk_bytes,
        }
    }

    /// What the disk tier's bound counts now: its objects' blocks (or their names' share,
    /// [`disk::bound_weight`]).
    pub fn disk_bound_used(&self) -> usize {
        use pingora::cache::eviction::EvictionManager as _;
        self.disk.as_ref().map_or(0, |d| d.lru.total_size())
    }

    /// Objects the disk tier's bound made room for, so far.
    pub fn disk_evictions(&self) -> usize {
        use pingora::cache::eviction::EvictionManager as _;
        self.disk.as_ref().map_or(0, |d| d.lru.evicted_items())
    }

    /// Whether the disk tier's files are being indexed.
    pub fn indexing_disk(&self) -> bool {
        self.index().purged_while_loading.is_some()
    }

    /// Indexes the disk tier's files in the background (hits for objects not yet indexed are
    /// misses meanwhile): what a previous process stored is served again.
    pub fn load_disk(&'static self) {
        let Some(disk) = &self.disk else {
            return;
        };
        // With those a previous process made while it indexed and could not finish.
        self.index().purged_while_loading =
            Some(PurgedWhileLoading::from_text(&disk.pending_purges()));
        let _ = std::thread::Builder::new()
            .name("cache-load".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut loaded = 0usize;
                disk.scan(|record, scanned| {
                    let mut index = self.index();
                    // Stored since the edge started (this file is then that object's, stored
                    // after any purge made meanwhile): neither removed nor indexed again.
                    if index.objects.contains_key(&record.id) {
                        return;
                    }
                    let parsed = ParsedKey::parse(&record.url).filter(|p| p.zone == record.zone);
                    let Some(parsed) =
                        parsed.filter(|_| record.generation >= index.generation(&record.zone))
                    else {
                        let _ = std::fs::remove_file(disk.object_path(&record.id));
                        return;
                    };
                    let purged = index
                        .purged_while_loading
                        .as_ref()
                        .is_some_and(|p| p.covers(&record));
                    if purged {
                        let _ = std::fs::remove_file(disk.object_path(&record.id));
                        return;
                    }
                    let mut entry = Entry::new(parsed, record.key, record.tags, &record.id);
                    let weight = disk::bound_weight(scanned.file.len(), entry.names);
                    entry.disk = Some(OnDisk::new(scanned.body_len, scanned.file));
                    let compact = entry.compact.clone();
                    index.insert(record.id, entry);
                    self.admit_to_disk(&mut index, compact, weight);
                    loaded += 1;
                });
                {
                    let mut index = self.index();
                    index.purged_while_loading = None;
                    disk.clear_pending_purges();
                }
                tracing::info!(
                    objects = loaded,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "disk cache indexed"
                );
            });
    }

    /// Removes what `purge` names in zone `zone_id`: effective for the next lookup. Returns
    /// how many objects were removed (a purge of everything is counted as it is swept), or,
    /// when the purge is in force but could not be saved for a restart (a purge of everything,
    /// or one made while the disk tier is indexed), why.
    pub fn purge(&'static self, zone_id: &str, purge: &Purge) -> Result<usize, String> {
        let mut unsaved = None;
        let mut index = self.index();
        index.purge_count += 1;
        let number = index.purge_count;
        index.purges.insert(Arc::from(zone_id), number);
        self.purge_mark
            .store(number, std::sync::atomic::Ordering::Release);
        if let Some(pending) = index.purged_while_loading.as_mut() {
            pending.add(zone_id, purge);
            // Durable before the answer, as a purge of everything is.
            if let Some(disk) = &self.disk
                && let Err(e) = disk.save_pending_purges(&pending.to_text())
            {
                tracing::error!(error = %e, "cannot keep the purges made while the disk cache is indexed");
                unsaved = Some(format!(
                    "saving the purges made while the disk cache is indexed: {e}"
                ));
            }
        }
        let removed = match purge {
            Purge::Everything => {
                *index.generations.entry(Arc::from(zone_id)).or_default() += 1;
                if let Some(disk) = &self.disk {
                    // Durable before the answer: a restart must not bring the objects back.
                    let saved = disk
                        .save_generations(index.generations.iter().map(|(z, g)| (z.as_ref(), *g)));
                    if let Err(e) = saved {
                        tracing::error!(error = %e, "cannot save the cache's purge generations");
                        unsaved = Some(format!("saving the cache's purge generations: {e}"));
                    }
                }
                drop(index);
                let zone = zone_id.to_owned();
                // Free memory and disk in the background, a batch per lock hold.
                let _ = std::thread::Builder::new()
                    .name("cache-sweep".into())
                    .spawn(move || while self.sweep(&zone) > 0 {});
                0
            }
            Purge::Files(urls) => {
                drop(index);
                let urls: Vec<String> = urls
                    .iter()
                    .map(|u| crate::key::primary(zone_id, u.https, &u.host, u.port, &u.path))
                    .collect();
                self.purge_batches(|index| {
                    let ids = urls.iter().filter_map(|url| index.by_url.get(url.as_str()));
                    ids.flatten().take(SWEEP_BATCH).cloned().collect()
                })
            }
            Purge::Tags(tags) => {
                drop(index);
                let tags: Vec<(Arc<str>, String)> = tags
                    .iter()
                    .map(|t| (Arc::from(zone_id), t.to_ascii_lowercase()))
                    .collect();
                self.purge_batches(|index| {
                    let ids = tags.iter().filter_map(|t| index.by_tag.get(t));
                    ids.flatten().take(SWEEP_BATCH).cloned().collect()
                })
            }
            Purge::Hosts(hosts) => {
                let ranges: Vec<(&str, &str)> = hosts.iter().map(|h| (h.as_str(), "")).collect();
                drop(index);
                self.purge_ranges(zone_id, &ranges)
            }
            Purge::Prefixes(prefixes) => {
                let ranges: Vec<(&str, &str)> = prefixes
                    .iter()
                    .map(|(h, p)| (h.as_str(), p.as_str()))
                    .collect();
                drop(index);
                self.purge_ranges(zone_id, &ranges)
            }
        };
        match unsaved {
            None => Ok(removed),
            Some(why) => Err(why),
        }
    }

    /// Removes the zone's objects under each `(host, path prefix)`.
    fn purge_ranges(&self, zone_id: &str, ranges: &[(&str, &str)]) -> usize {
        ranges
            .iter()
            .map(|(host, prefix)| {
                self.purge_batches(|index| index.under(zone_id, Some(host), prefix, SWEEP_BATCH))
            })
            .sum()
    }

    /// Removes the objects `next` names, a batch (up to [`SWEEP_BATCH`]) per hold of the index
    /// lock, until it names none: lookups go on while a large purge runs. Their files are
    /// deleted between holds, and all are deleted when it returns (a restart does not bring a
    /// purged object back). How many were removed.
    fn purge_batches(&self, mut next: impl FnMut(&Index) -> Vec<String>) -> usize {
        let mut removed = 0;
        loop {
            let index = self.index();
            let ids = next(&index);
            if ids.is_empty() {
                return removed;
            }
            let batch = self.remove_all(index, &ids);
            // (Names without objects: nothing more to remove.)
            if batch == 0 {
                return removed;
            }
            removed += batch;
        }
    }

    /// Removes up to a batch of the zone's objects older than its generation; how many.
    fn sweep(&self, zone: &str) -> usize {
        let index = self.index();
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
        self.remove_all(index, &stale)
    }

    /// The counts of purges and URL invalidations so far, for a fetch about to be sent to the
    /// origin (taken as its request goes): put in the response's metadata as a [`FetchMark`],
    /// it keeps the response from being stored if its zone is purged or its URL invalidated
    /// after the request was sent. A response without one answers only for the purges made
    /// after its header arrived.
    pub fn fetch_mark(&self) -> FetchMark {
        use std::sync::atomic::Ordering;
        FetchMark {
            invalidations: self.invalidation_mark.load(Ordering::Acquire),
            purges: self.purge_mark.load(Ordering::Acquire),
        }
    }

    /// Every variant of one URL (a state-changing request to it succeeded: RFC 9111 §4.4).
    pub fn invalidate_url(&self, url: &str) -> usize {
        let mut index = self.index();
        if let Some(pending) = index.purged_while_loading.as_mut() {
            // Kept in memory only: visitors make invalidations (any successful POST), so
            // saving the set at each one would be theirs to drive, under the index lock.
            pending.urls.insert(url.to_owned());
        }
        index.invalidate(url);
        self.invalidation_mark.store(
            index.invalidation_count,
            std::sync::atomic::Ordering::Release,
        );
        let ids: Vec<String> = index
            .by_url
            .get(url)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        self.remove_all(index, &ids)
    }

    /// Removes `ids` from the index (whose lock `index` holds) and both bounds, lets the lock
    /// go, then deletes their files ([`Self::delete_files`]: deleting a large file frees its
    /// blocks, which may take a while). How many were removed.
    fn remove_all(&self, mut index: std::sync::MutexGuard<'_, Index>, ids: &[String]) -> usize {
        let (mut removed, mut doomed) = (0, Vec::new());
        for id in ids {
            if let Some(entry) = index.remove(id) {
                self.forget(id, &entry, false);
                if let Some(d) = &entry.disk {
                    doomed.push((id.clone(), d.stored));
                }
                removed += 1;
            }
        }
        drop(index);
        self.delete_files(doomed);
        removed
    }

    /// Deletes the files of removed objects ([`Self::remove_all`]), out of the index lock:
    /// each unless a newer object took its name since (a file stored again has another inode;
    /// the removed one still existed then, so its number was not given again).
    fn delete_files(&self, doomed: Vec<(String, disk::FileId)>) {
        let Some(disk) = &self.disk else {
            return;
        };
        for (id, stored) in doomed {
            let path = disk.object_path(&id);
            let same = std::fs::symlink_metadata(&path)
                .is_ok_and(|m| disk::FileId::of(&m).same_file(&stored));
            if same {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Lets go of a removed entry: out of both bounds, and its file deleted unless `keep_file`
    /// is false (a newer file already took its name).
    fn forget(&self, id: &str, entry: &Entry, delete_file: bool) {
        self.eviction
            .remove(CacheEntryKeyRef::KeyOnly(&entry.compact));
        if let (Some(_), Some(disk)) = (&entry.disk, &self.disk) {
            disk.lru.remove(CacheEntryKeyRef::KeyOnly(&entry.compact));
            if delete_file {
                let _ = std::fs::remove_file(disk.object_path(id));
            }
        }
    }

    /// The memory tier's bound let go of `id`: its disk copy stays, if it has one.
    fn evict_from_memory(&self, index: &mut Index, id: &str) {
        if index.objects.get(id).is_some_and(|e| e.disk.is_some()) {
            index.update(id, |e| e.resident = None);
        } else if let Some(entry) = index.remove(id) {
            self.forget(id, &entry, true);
        }
    }

    /// Counts a new file against the disk tier's bound, deleting what it evicts.
    fn admit_to_disk(&self, index: &mut Index, compact: CompactCacheKey, weight: u64) {
        let Some(disk) = &self.disk else {
            return;
        };
        let weight = usize::try_from(weight).unwrap_or(usize::MAX);
        let evicted = disk.lru.admit(
            CacheEntryKey::key_only(compact),
            weight,
            std::time::SystemTime::now(),
        );
        for key in evicted {
            let id = crate::key::object_id(&key.into_key());
            if index.objects.get(&id).is_some_and(|e| e.resident.is_some()) {
                index.update(&id, |e| e.disk = None);
                let _ = std::fs::remove_file(disk.object_path(&id));
            } else if let Some(entry) = index.remove(&id) {
                self.forget(&id, &entry, true);
            }
        }
    }

    /// A hit on an object only on disk: a small file is read whole in one step (and the object
    /// comes back into memory if the memory tier takes objects that size); a larger one is
    /// read as it is sent.
    fn disk_hit(
        &self,
        key: &CacheKey,
        id: &str,
        found: DiskFound,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let serial = found.serial;
        let Some(mut read) = self.disk_read(key, id, found, true) else {
            return Ok(None);
        };
        let Some(mut meta) = read.meta.take() else {
            return Ok(None);
        };
        meta.extensions_mut().insert(HitOf(serial));
        let hit: HitHandler = match read.body {
            Some(body) => {
                let end = body.len();
                Box::new(Hit {
                    weight: read.weight,
                    body,
                    start: 0,
                    end,
                    done: false,
                })
            }
            None => Box::new(DiskHit {
                file: read.file,
                body_len: read.body_len,
                start: 0,
                end: read.body_len,
            }),
        };
        Ok(Some((meta, hit)))
    }

    /// An object of the disk tier read for a hit (its header, and its body when it is small),
    /// counted in the disk tier's LRU and brought back into memory when it fits; `None` when
    /// its file is gone or damaged (then it is forgotten).
    /// (`with_meta`: the engine's metadata is made too.)
    fn disk_read(
        &self,
        key: &CacheKey,
        id: &str,
        found: DiskFound,
        with_meta: bool,
    ) -> Option<DiskRead> {
        let disk = self.disk.as_ref()?;
        let DiskFound {
            serial,
            body_len,
            stored: found_file,
            file,
            meta: kept_meta,
        } = found;
        let file_len = found_file.len();
        let small = file_len <= WHOLE_READ_BYTES;
        let read = match (file, kept_meta) {
            // Open and read before: only the body is read again (the record is rewritten only
            // under the index lock, which also replaces the header kept here).
            // The edge's own hits need the header decoded once, not the engine's metadata.
            (Some(_), Some(stored)) if !with_meta && stored.decoded().is_none() => return None,
            (Some(file), Some(stored)) => with_meta
                .then(|| stored.meta())
                .transpose()
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|meta| {
                    let body = if small {
                        use std::os::unix::fs::FileExt as _;
                        let mut body = vec![0; usize::try_from(body_len).unwrap_or(usize::MAX)];
                        file.read_exact_at(&mut body, disk::HEAD)?;
                        Some(Bytes::from(body))
                    } else {
                        None
                    };
                    Ok((file, meta, stored, body, false))
                }),
            (file, _) => {
                let newly_opened = file.is_none();
                file.map_or_else(
                    || std::fs::File::open(disk.object_path(id)).map(Arc::new),
                    Ok,
                )
                .and_then(|file| {
                    let (stored_id, stored, body) = if small {
                        let whole = disk::read_whole(&file, file_len)?;
                        let (stored_id, meta0, meta1) = whole.id_and_meta().ok_or_else(|| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed record")
                        })?;
                        let stored = StoredMeta::new((meta0.to_vec(), meta1.to_vec()));
                        (stored_id.to_owned(), stored, Some(whole.body()))
                    } else {
                        let (len, record) = disk::read_record(&file)?;
                        if len != body_len {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                "the file holds another object",
                            ));
                        }
                        (record.id, StoredMeta::new(record.meta), None)
                    };
                    if stored_id != id {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the file holds another object",
                        ));
                    }
                    let meta = stored.meta().map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                    })?;
                    Ok((file, Some(meta), Arc::new(stored), body, newly_opened))
                })
            }
        };
        let (file, meta, stored, body, newly_opened) = match read {
            Ok(read) => read,
            Err(e) => {
                // Deleted or damaged under us (or rewritten while read): unless its header was
                // replaced since it was found (the file is then another, if of the same
                // length), forget the object; the request goes to the origin.
                tracing::debug!(id, error = %e, "disk cache object unreadable");
                let index = self.index();
                // Not for a passing shortage (descriptors, memory): the file is sound.
                let unchanged = disk::gone_or_damaged(&e)
                    && index.objects.get(id).is_some_and(|e| {
                        e.serial == serial
                            && e.disk.as_ref().is_some_and(|d| d.stored == found_file)
                    });
                if unchanged {
                    self.remove_all(index, &[id.to_owned()]);
                }
                return None;
            }
        };
        let compact = key.to_compact();
        let fits = usize::try_from(body_len).is_ok_and(|n| n <= self.memory_object_bytes());
        let mut index = self.index();
        let current = index.objects.get(id).is_some_and(|e| e.serial == serial);
        // Counted as used only while stored (the LRU would take an unknown key in as new).
        if current {
            let _ = disk.lru.access(
                &CacheEntryKey::key_only(compact.clone()),
                0,
                std::time::SystemTime::now(),
            );
        }
        let mut weight = 0;
        match &body {
            Some(body) if fits && current => {
                // Back into memory.
                let resident = Resident {
                    meta: Arc::clone(&stored),
                    body: body.clone(),
                };
                index.update(id, |e| {
                    e.resident = Some(resident);
                    weight = e.weight();
                });
                let fresh_until = meta
                    .as_ref()
                    .map(CacheMeta::fresh_until)
                    .or_else(|| stored.decoded().map(|d| d.fresh_until))
                    .unwrap_or_else(std::time::SystemTime::now);
                let evicted =
                    self.eviction
                        .admit(CacheEntryKey::key_only(compact), weight, fresh_until);
                for key in evicted {
                    self.evict_from_memory(&mut index, &crate::key::object_id(&key.into_key()));
                }
            }
            _ if newly_opened && current && index.open_files < MAX_OPEN_FILES => {
                index.keep_open(id, &file, &stored);
            }
            _ => {}
        }
        drop(index);
        Some(DiskRead {
            meta,
            stored,
            body,
            weight,
            file,
            body_len,
        })
    }
}

/// An object read from the disk tier for a hit.
struct DiskRead {
    /// The engine's metadata, when asked for.
    meta: Option<CacheMeta>,
    stored: Arc<StoredMeta>,
    /// The whole body, for a small object (a larger one is read as it is sent).
    body: Option<Bytes>,
    /// What it weighs in memory when the hit brought it back there (else 0).
    weight: usize,
    file: Arc<std::fs::File>,
    body_len: u64,
}

/// Where an object only on disk is, as the index has it.
struct DiskFound {
    serial: u64,
    body_len: u64,
    /// The file as the index knew it when it was found.
    stored: disk::FileId,
    file: Option<Arc<std::fs::File>>,
    meta: Option<Arc<StoredMeta>>,
}

/// Files kept open for hits at most.
const MAX_OPEN_FILES: usize = 4096;
/// Disk files up to this size are read whole when hit.
const WHOLE_READ_BYTES: u64 = 1024 * 1024;
/// What a hit on a larger disk object reads per step.
const DISK_CHUNK_BYTES: u64 = 256 * 1024;

fn storage_error(context: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, context)
}

/// Runs file work off the event loop.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::because(ErrorType::InternalError, "cache disk", e)),
        Err(e) => Err(Error::because(
            ErrorType::InternalError,
            "cache disk task",
            e,
        )),
    }
}

#[async_trait]
impl Storage for CacheStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        enum Found {
            Memory(Arc<StoredMeta>, Bytes, usize, u64),
            Disk(DiskFound),
        }
        let id = crate::key::object_id(key);
        let found = {
            let index = self.index();
            index
                .objects
                .get(&id)
                .filter(|e| index.live(e))
                .and_then(|e| match (&e.resident, &e.disk) {
                    (Some(r), _) => Some(Found::Memory(
                        Arc::clone(&r.meta),
                        r.body.clone(),
                        e.weight(),
                        e.serial,
                    )),
                    (None, Some(d)) => Some(Found::Disk(DiskFound {
                        serial: e.serial,
                        body_len: d.body_len,
                        stored: d.stored,
                        file: d.file.clone(),
                        meta: d.meta.clone(),
                    })),
                    (None, None) => None,
                })
        };
        let (meta, body, weight, serial) = match found {
            None => return Ok(None),
            Some(Found::Disk(found)) => {
                return self.disk_hit(key, &id, found);
            }
            Some(Found::Memory(meta, body, weight, serial)) => (meta, body, weight, serial),
        };
        let mut meta = meta.meta()?;
        meta.extensions_mut().insert(HitOf(serial));
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
        let tags = tags_of(meta);
        let id = crate::key::object_id(key);
        let (mark, generation) = {
            let index = self.index();
            // A URL that already has all the variants it may have: this one passes through
            // uncached before any of its body is buffered or written (checked again at the end).
            let variants = index
                .by_url
                .get(parsed.url.as_str())
                .map_or(0, HashSet::len);
            if variants >= MAX_VARIANTS && !index.objects.contains_key(&id) {
                return Err(storage_error("too many variants of one URL"));
            }
            let now = FetchMark {
                invalidations: index.invalidation_count,
                purges: index.purge_count,
            };
            let mark = meta.extensions().get::<FetchMark>().copied();
            (mark.unwrap_or(now), index.generation(&parsed.zone))
        };
        Ok(Box::new(Miss {
            mark,
            generation,
            store: self,
            id,
            compact: key.to_compact(),
            meta: meta.serialize()?,
            body: Vec::new(),
            spill: None,
            written: 0,
            parsed,
            tags,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let id = crate::key::object_id(target.key());
        let mut index = self.index();
        if !index.objects.contains_key(&id) {
            return Ok(PurgeOutcome::NotFound);
        }
        match purge_type {
            PurgeType::Eviction => self.evict_from_memory(&mut index, &id),
            PurgeType::Invalidation => {
                self.remove_all(index, &[id]);
            }
        }
        Ok(PurgeOutcome::Purged(None))
    }

    /// Replaces the header of the object `meta` was read from (by a lookup: the engine passes
    /// the hit's metadata with the `304`'s header merged in); `false`, changing nothing, when
    /// the key holds another object now (stored over it while it was revalidated) or none.
    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let Some(&HitOf(serial)) = meta.extensions().get::<HitOf>() else {
            tracing::debug!("a revalidated header without the hit it is for: not written");
            return Ok(false);
        };
        let serialized = meta.serialize()?;
        let id = crate::key::object_id(key);
        let mut index = self.index();
        if index.objects.get(&id).is_none_or(|e| e.serial != serial) {
            return Ok(false);
        }
        index.retag(&id, tags_of(meta));
        let Some(entry) = index.objects.get(&id) else {
            return Ok(false);
        };
        let mut rewritten = None;
        if let (Some(on_disk), Some(disk)) = (&entry.disk, &self.disk) {
            // In place, under the lock (no new file can take the name meanwhile).
            let record = entry.record(&id, serialized.clone());
            let path = disk.object_path(&id);
            match disk::rewrite_record(&path, on_disk.body_len, &record, on_disk.stored) {
                Ok(stored) => rewritten = Some(stored),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    // Another process's file took the name: forgotten here, that file kept.
                    tracing::debug!(error = %e, "a disk cache object stored again elsewhere");
                    if let Some(entry) = index.remove(&id) {
                        self.forget(&id, &entry, false);
                    }
                    return Ok(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update a disk cache object's header");
                    self.remove_all(index, &[id]);
                    return Ok(false);
                }
            }
        }
        let stored = Arc::new(StoredMeta::new(serialized));
        index.update(&id, |e| {
            if let Some(r) = &mut e.resident {
                r.meta = Arc::clone(&stored);
            }
            if let (Some(d), Some(file)) = (&mut e.disk, rewritten) {
                d.stored = file;
                if d.file.is_some() {
                    d.meta = Some(Arc::clone(&stored));
                }
            }
        });
        // The file's new length (and the entry's names, its tags may have changed) counted in
        // the disk tier's bound.
        if let (Some(file), Some(entry)) = (rewritten, index.objects.get(&id)) {
            let weight = disk::bound_weight(file.len(), entry.names);
            let compact = entry.compact.clone();
            self.admit_to_disk(&mut index, compact, weight);
        }
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// The purge tags of a response (its `Cache-Tag` fields), as the index keeps them.
fn tags_of(meta: &CacheMeta) -> Vec<String> {
    meta.headers()
        .get_all("cache-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t.len() <= 1024)
        .take(MAX_TAGS)
        .collect()
}

/// A stored header that says how long its complete body is: one sent without a length (a
/// body the edge compressed, or a chunked one) gets `Content-Length`, so that hits are
/// delimited by it instead of by chunks.
fn with_length(meta: (Vec<u8>, Vec<u8>), body_len: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut decoded = CacheMeta::deserialize(&meta.0, &meta.1)?;
    let header = decoded.response_header();
    let bodiless = header.status.is_informational() || matches!(header.status.as_u16(), 204 | 304);
    if bodiless || header.headers.contains_key("content-length") {
        return Ok(meta);
    }
    let header = decoded.response_header_mut();
    header.remove_header("transfer-encoding");
    header.insert_header("content-length", body_len)?;
    decoded.serialize()
}

/// The largest part of a memory-tier object one read of its body gives.
const MEMORY_PART: usize = 64 * 1024;

/// A complete object being served from memory (whole, or the range asked for).
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
        // In parts: what the engine does with each (compress it, write it) happens between
        // them, not for the whole object in one go on the worker's thread.
        let end = self
            .end
            .min(self.start.saturating_add(MEMORY_PART))
            .max(self.start);
        let part = self.body.slice(self.start..end);
        self.start = end;
        self.done = self.start >= self.end;
        Ok(Some(part))
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

    fn should_count_access(&self) -> bool {
        // Only an object the memory tier holds (it has a weight there) counts for its bound.
        self.weight > 0
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

/// An object being served from its file, a chunk at a time (the file stays readable even if
/// the object is purged or replaced meanwhile). Reads are from the page cache as a rule, so
/// they are made on the event loop, as nginx makes them without thread pools.
struct DiskHit {
    file: Arc<std::fs::File>,
    body_len: u64,
    start: u64,
    end: u64,
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.start >= self.end {
            return Ok(None);
        }
        use std::os::unix::fs::FileExt as _;
        let n = (self.end - self.start).min(DISK_CHUNK_BYTES);
        let mut chunk = vec![0; n as usize];
        self.file
            .read_exact_at(&mut chunk, disk::HEAD + self.start)
            .map_err(|e| Error::because(ErrorType::InternalError, "cache disk read", e))?;
        self.start += n;
        Ok(Some(Bytes::from(chunk)))
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
        let start = start as u64;
        if start >= self.body_len {
            return Error::e_explain(ErrorType::InternalError, "seek past the end of the object");
        }
        self.start = start;
        self.end = end.map_or(self.body_len, |e| (e as u64).min(self.body_len));
        Ok(())
    }

    /// The memory tier does not hold this object: its bound is not told about the hit.
    fn should_count_access(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// An object being received from the origin; stored only when complete (a body cut short is
/// never served). It is gathered in memory up to the memory tier's object limit, then written
/// to a file as it arrives; a complete object in memory is written to the disk tier too.
struct Miss {
    /// The purges' and URL invalidations' counts when the request was sent (without a
    /// [`FetchMark`], when the response began to arrive).
    mark: FetchMark,
    /// The zone's purge generation when the response began to arrive (what the file records:
    /// no purge came since the mark, or the object is not stored).
    generation: u64,
    store: &'static CacheStore,
    id: String,
    compact: CompactCacheKey,
    meta: (Vec<u8>, Vec<u8>),
    body: Vec<u8>,
    /// The file the body goes to once it is too large for memory.
    spill: Option<disk::Writer>,
    written: usize,
    parsed: ParsedKey,
    tags: Vec<String>,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.written += data.len();
        if self.written > self.store.max_object_bytes() {
            return Error::e_explain(
                ErrorType::InternalError,
                "object larger than the cache takes",
            );
        }
        if self.spill.is_none() && self.written > self.store.memory_object_bytes() {
            let (Some(disk), true) = (&self.store.disk, disk::is_object_id(&self.id)) else {
                return Error::e_explain(ErrorType::InternalError, "object too large for memory");
            };
            let gathered = std::mem::take(&mut self.body);
            self.spill = Some(
                blocking(move || {
                    let mut file = disk.writer()?;
                    file.write(&gathered)?;
                    Ok(file)
                })
                .await?,
            );
        }
        match self.spill.take() {
            Some(mut file) => {
                self.spill = Some(
                    blocking(move || {
                        file.write(&data)?;
                        Ok(file)
                    })
                    .await?,
                );
            }
            None => self.body.extend_from_slice(&data),
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.meta = with_length(std::mem::take(&mut self.meta), self.written)?;
        let store = self.store;
        let id = self.id;
        let mut entry = Entry::new(self.parsed, self.compact, self.tags, &id);
        entry.generation = self.generation;
        let body = Bytes::from(self.body);
        let disk = store.disk.as_ref().filter(|_| disk::is_object_id(&id));
        let file = match (self.spill, disk) {
            (Some(spill), _) => {
                let record = entry.record(&id, self.meta);
                Some(blocking(move || spill.finish(&record)).await?)
            }
            (None, Some(disk)) => {
                entry.resident = Some(Resident {
                    meta: Arc::new(StoredMeta::new(self.meta.clone())),
                    body: body.clone(),
                });
                let record = entry.record(&id, self.meta);
                let written = blocking(move || {
                    let mut file = disk.writer()?;
                    file.write(&body)?;
                    file.finish(&record)
                })
                .await;
                match written {
                    Ok(file) => Some(file),
                    Err(e) => {
                        tracing::debug!(error = %e, "object kept in memory only");
                        None
                    }
                }
            }
            (None, None) => {
                entry.resident = Some(Resident {
                    meta: Arc::new(StoredMeta::new(self.meta)),
                    body,
                });
                None
            }
        };
        let discard = |file: &Option<disk::Finished>| {
            if let Some(file) = file {
                let _ = std::fs::remove_file(&file.path);
            }
        };
        let mut index = store.index();
        if index.last_purge(&entry.zone) > self.mark.purges {
            discard(&file);
            return Error::e_explain(
                ErrorType::InternalError,
                "the zone was purged while this response was fetched",
            );
        }
        if index.invalidated_since(&entry.url, self.mark.invalidations) {
            discard(&file);
            return Error::e_explain(
                ErrorType::InternalError,
                "the URL was invalidated while this response was fetched",
            );
        }
        let variants = index.by_url.get(entry.url.as_ref()).map_or(0, HashSet::len);
        if variants >= MAX_VARIANTS && !index.objects.contains_key(&id) {
            // A URL that varies without end (`Vary: User-Agent`, …) keeps its first variants
            // only; the others pass through uncached.
            discard(&file);
            return Error::e_explain(ErrorType::InternalError, "too many variants of one URL");
        }
        let mut placed = None;
        if let (Some(file), Some(disk)) = (&file, disk) {
            // Under the lock: a purge cannot delete the name between this and the index.
            match std::fs::rename(&file.path, disk.object_path(&id)) {
                Ok(()) => {
                    entry.disk = Some(OnDisk::new(file.body_len, file.file));
                    placed = Some(disk::bound_weight(file.file.len(), entry.names));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot place a disk cache object");
                    let _ = std::fs::remove_file(&file.path);
                }
            }
        }
        if entry.resident.is_none() && entry.disk.is_none() {
            return Error::e_explain(ErrorType::InternalError, "the object could not be stored");
        }
        let weight = entry.weight();
        let compact = entry.compact.clone();
        if let Some(old) = index.insert(id.clone(), entry) {
            store.forget(&id, &old, placed.is_none());
        }
        if let Some(disk_weight) = placed {
            store.admit_to_disk(&mut index, compact, disk_weight);
        }
        Ok(MissFinishType::Created(weight))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn purges_made_while_indexing_are_read_back_as_they_were_written() {
        let mut purged = PurgedWhileLoading::default();
        purged.add("z1", &Purge::Tags(vec!["App".into(), "tab\there".into()]));
        purged.add("z1", &Purge::Hosts(vec!["b.test".into()]));
        purged.add(
            "z2",
            &Purge::Prefixes(vec![("c.test".into(), "/img/%41".into())]),
        );
        purged
            .urls
            .insert(crate::key::primary("z1", true, "e.test", 443, "/posted.js"));
        let again = PurgedWhileLoading::from_text(&purged.to_text());
        assert_eq!(again.urls, purged.urls);
        assert_eq!(again.tags, purged.tags);
        assert_eq!(again.hosts, purged.hosts);
        assert_eq!(again.prefixes, purged.prefixes);
        assert!(
            PurgedWhileLoading::from_text("garbage\nurl\n")
                .urls
                .is_empty()
        );
    }

    #[test]
    fn purges_made_while_the_disk_tier_is_indexed_cover_the_files_they_name() {
        let record = |zone: &str, host: &str, path: &str, tags: &[&str]| disk::Record {
            id: "id".into(),
            key: CompactCacheKey {
                primary: [0; 16],
                variance: None,
                user_tag: "".into(),
            },
            zone: zone.into(),
            url: crate::key::primary(zone, true, host, 443, path),
            host: host.into(),
            path: path.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            generation: 0,
            meta: (Vec::new(), Vec::new()),
        };
        let mut purged = PurgedWhileLoading::default();
        let in_zone = |purged: &PurgedWhileLoading, host: &str, path: &str, tags: &[&str]| {
            purged.covers(&record("z1", host, path, tags))
        };
        assert!(!in_zone(&purged, "a.test", "/x.js", &["app"]));
        purged.add("z1", &Purge::Tags(vec!["App".into()]));
        assert!(in_zone(&purged, "a.test", "/x.js", &["app"]));
        assert!(!purged.covers(&record("z2", "a.test", "/x.js", &["app"])));
        purged.add("z1", &Purge::Hosts(vec!["b.test".into()]));
        assert!(in_zone(&purged, "b.test", "/y.js", &[]));
        purged.add(
            "z1",
            &Purge::Prefixes(vec![("c.test".into(), "/img/".into())]),
        );
        assert!(in_zone(&purged, "c.test", "/img/1.png", &[]));
        assert!(!in_zone(&purged, "c.test", "/css/1.css", &[]));
        purged.add(
            "z1",
            &Purge::Files(vec![parapet_model::purge::PurgeUrl {
                https: true,
                host: "d.test".into(),
                port: 443,
                port_given: true,
                path: "/f.js".into(),
            }]),
        );
        assert!(in_zone(&purged, "d.test", "/f.js", &[]));
        purged
            .urls
            .insert(crate::key::primary("z1", true, "e.test", 443, "/posted.js"));
        assert!(in_zone(&purged, "e.test", "/posted.js", &[]));
        assert!(!in_zone(&purged, "e.test", "/other.js", &[]));
    }

    #[test]
    fn a_fetch_is_told_of_its_own_urls_invalidations_only_while_they_are_remembered() {
        let mut index = Index::default();
        let start = index.invalidation_count;
        assert!(!index.invalidated_since("a", start));
        index.invalidate("b");
        assert!(!index.invalidated_since("a", start), "another URL");
        index.invalidate("a");
        assert!(index.invalidated_since("a", start));
        let later = index.invalidation_count;
        assert!(!index.invalidated_since("a", later));
        // Beyond the invalidations kept, a fetch that began before them cannot tell: it is
        // told its URL may have been invalidated.
        for i in 0..INVALIDATIONS_KEPT {
            index.invalidate(&format!("u{i}"));
        }
        assert_eq!(index.invalidations.len(), INVALIDATIONS_KEPT);
        assert!(index.invalidated.len() <= INVALIDATIONS_KEPT);
        assert!(index.invalidated_since("c", start));
        assert!(!index.invalidated_since("c", later));
    }

    #[test]
    fn a_decoded_header_rebuilds_the_same_metadata_and_a_revalidated_one_is_decoded_again() {
        let mut header = pingora::http::ResponseHeader::build(200, None).unwrap();
        header.insert_header("etag", "\"v1\"").unwrap();
        header.insert_header("vary", "accept-encoding").unwrap();
        let now = SystemTime::now();
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 5, 7, header);
        meta.set_variance([3; 16]);
        meta.set_epoch_override(now - Duration::from_secs(2));
        let stored = StoredMeta::new(meta.serialize().unwrap());
        for _ in 0..2 {
            assert_eq!(
                stored.meta().unwrap().serialize().unwrap(),
                meta.serialize().unwrap()
            );
        }
        assert!(stored.decoded.get().is_some_and(Option::is_some));

        let mut revalidated =
            CacheMeta::deserialize(&meta.serialize().unwrap().0, &meta.serialize().unwrap().1)
                .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        revalidated.update_freshness(now + Duration::from_secs(120), 0, 0);
        let stored = StoredMeta::new(revalidated.serialize().unwrap());
        assert_eq!(
            stored.meta().unwrap().serialize().unwrap(),
            revalidated.serialize().unwrap()
        );
        assert!(stored.decoded.get().is_some_and(Option::is_none));
    }
}
