//! Keeps [`Published`] in step with the store, and the last good snapshot on disk.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parapet_store::{Revision, Store};
use serde::{Deserialize, Serialize};

use crate::compile::RecordChanges;
use crate::keys::StoreKey;
use crate::{Published, Snapshot, SnapshotError, compile_snapshot_with};

/// Store entries by key.
pub type Entries = BTreeMap<String, Vec<u8>>;

/// The store entries the last good snapshot was compiled from, kept in a file.
pub struct LastGood {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct LastGoodFile {
    revision: Revision,
    entries: BTreeMap<String, serde_json::Value>,
}

impl LastGood {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn error(&self, message: impl ToString) -> SnapshotError {
        SnapshotError::LastGood {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// The saved entries, if a file exists.
    pub fn load(&self) -> Result<Option<(Revision, Entries)>, SnapshotError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let file: LastGoodFile = serde_json::from_slice(&bytes).map_err(|e| self.error(e))?;
        let entries = file
            .entries
            .into_iter()
            .map(|(k, v)| serde_json::to_vec(&v).map(|v| (k, v)))
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(e))?;
        Ok(Some((file.revision, entries)))
    }

    /// Replaces the file atomically (write, fsync, rename, fsync the directory) with `entries`
    /// and the stored records of `records`' zones. Values are written as they are stored (they
    /// are JSON: the snapshot compiled from them).
    pub fn save(
        &self,
        revision: Revision,
        entries: &Entries,
        records: Option<&Snapshot>,
    ) -> Result<(), SnapshotError> {
        // Unique: the background saver and a handover's save may write at once.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .path
            .with_extension(format!("tmp.{}.{n}", std::process::id()));
        // It holds private keys (certificates'): its owner's only, whatever the umask.
        let file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| self.error(e))?
        };
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut first = true;
        let mut entry = |out: &mut BufWriter<std::fs::File>, key: &str, value: &[u8]| {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            serde_json::to_writer(&mut *out, key)?;
            out.write_all(b":")?;
            out.write_all(value)
        };
        let written = (|| -> std::io::Result<std::fs::File> {
            write!(out, "{{\"revision\":{revision},\"entries\":{{")?;
            for (k, v) in entries {
                if serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok() {
                    entry(&mut out, k, v)?;
                }
            }
            let zones = records.into_iter().flat_map(|s| s.zones.values());
            let mut value = Vec::new();
            for zone in zones {
                for r in &zone.records {
                    value.clear();
                    serde_json::to_writer(&mut value, r.as_ref())?;
                    entry(
                        &mut out,
                        &crate::keys::record_key(&zone.zone.id, &r.id),
                        &value,
                    )?;
                }
            }
            out.write_all(b"}}")?;
            out.into_inner()
                .map_err(std::io::IntoInnerError::into_error)
        })();
        let f = written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.error(e)
        })?;
        f.sync_all().map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What changed since the snapshot served now was compiled.
#[derive(Default)]
struct Changes {
    /// Zones whose zone entry or ACME challenges changed.
    zones: HashSet<String>,
    /// Record writes: the records themselves are kept only in the snapshot.
    records: RecordChanges,
}

/// Compiles `mirror` and publishes the result (or rejects it). With `changes`, `mirror` holds no
/// records: the snapshot served now gives them, and its zones that did not change are taken as
/// they are. Without, `mirror` holds everything and everything is compiled.
fn rebuild<K: AsRef<str>, V: AsRef<[u8]>>(
    published: &Published,
    mirror: impl IntoIterator<Item = (K, V)>,
    revision: Revision,
    changes: Option<&Changes>,
) -> bool {
    let started = std::time::Instant::now();
    let previous = published.load();
    let compiled = compile_snapshot_with(
        mirror,
        revision,
        changes.map(|c| crate::Reuse {
            previous: &previous,
            changed_zones: &c.zones,
            records: &c.records,
        }),
    );
    drop(previous);
    match compiled {
        Ok(snapshot) => {
            tracing::debug!(
                revision,
                zones = snapshot.zones.len(),
                records = snapshot.record_count(),
                micros = started.elapsed().as_micros() as u64,
                "snapshot published"
            );
            published.publish(snapshot);
            true
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!(revision, key = %e.key, "snapshot rejected: {}", e.message);
            }
            published.reject(errors);
            false
        }
    }
}

/// Publishes the state saved in `last_good`, if there is one that compiles; whether it did.
pub fn publish_last_good(published: &Published, last_good: &LastGood) -> bool {
    match last_good.load() {
        Ok(Some((revision, entries))) => rebuild(published, entries, revision, None),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    }
}

/// Saves the store's current state as the last good snapshot now (before handing over to a
/// successor process, which starts from it).
pub async fn save_store_state(
    store: &dyn Store,
    last_good: &LastGood,
) -> Result<(), SnapshotError> {
    let listing = store.list("").await?;
    let entries: Entries = listing
        .entries
        .into_iter()
        .filter(|e| StoreKey::parse(&e.key).feeds_snapshot())
        .map(|e| (e.key, e.value))
        .collect();
    last_good.save(listing.revision, &entries, None)
}

/// A compiled state to save: the entries besides records, and the snapshot holding the records.
type SaveState = (Revision, Entries, Arc<Snapshot>);

/// The latest compiled state waiting to be saved: the saver takes it, so that no snapshot is
/// kept alive for saving once a newer one is waiting.
#[derive(Default)]
struct PendingSave {
    state: std::sync::Mutex<Option<SaveState>>,
    ready: tokio::sync::Notify,
}

impl PendingSave {
    fn put(&self, state: SaveState) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<SaveState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// How long the saver waits for more changes before writing, so that a burst of changes to a
/// large zone is written once.
const SAVE_DELAY: Duration = Duration::from_secs(2);
/// The longest wait between saves of a large store.
const MAX_SAVE_DELAY: Duration = Duration::from_secs(60);

/// Writes the latest good state to disk in the background, coalescing bursts of changes.
async fn run_saver(last_good: Arc<LastGood>, pending: Arc<PendingSave>) {
    let mut delay = SAVE_DELAY;
    loop {
        pending.ready.notified().await;
        tokio::time::sleep(delay).await;
        let Some((revision, entries, snapshot)) = pending.take() else {
            continue;
        };
        let lg = Arc::clone(&last_good);
        let started = std::time::Instant::now();
        let saved =
            tokio::task::spawn_blocking(move || lg.save(revision, &entries, Some(&snapshot))).await;
        // A large store takes a while to write: save at most a tenth of the time.
        delay = (started.elapsed() * 10).clamp(SAVE_DELAY, MAX_SAVE_DELAY);
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("saving the last good snapshot failed: {e}"),
        }
    }
}

/// Follows the store forever: publishes a snapshot for every change that compiles, and keeps
/// serving the previous one when a change does not. Starts from `last_good` if there is one,
/// so a node serves before its store answers. Returns only when the store's watch ends.
/// `published` counts as followed from the call on.
pub fn run_snapshot_watcher(
    store: Arc<dyn Store>,
    published: Arc<Published>,
    last_good: Option<LastGood>,
) -> impl Future<Output = ()> + Send {
    published.set_followed(true);
    async move {
        follow(store, Arc::clone(&published), last_good).await;
        published.set_followed(false);
    }
}

async fn follow(store: Arc<dyn Store>, published: Arc<Published>, last_good: Option<LastGood>) {
    let last_good = last_good.map(Arc::new);
    let save = Arc::new(PendingSave::default());
    if let Some(lg) = &last_good {
        tokio::spawn(run_saver(Arc::clone(lg), Arc::clone(&save)));
        match lg.load() {
            Ok(Some((revision, entries))) => {
                if rebuild(&published, entries, revision, None) {
                    tracing::info!(
                        revision,
                        "serving the last good snapshot from {}",
                        lg.path().display()
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        let listing = match store.list("").await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("reading the store failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Every entry the snapshot is built from but the records: the snapshot holds those,
        // and `changes` the writes since. The listed records are read once and dropped.
        let mut mirror: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut records = Vec::new();
        for e in listing.entries {
            match StoreKey::parse(&e.key) {
                StoreKey::Record { .. } => records.push((e.key, e.value)),
                key if key.feeds_snapshot() => {
                    mirror.insert(e.key, e.value);
                }
                _ => {}
            }
        }
        let mut revision = listing.revision;
        let entries = mirror
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_slice())))
            .chain(
                records
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))),
            );
        // A first compile that fails leaves an older snapshot served, and nothing to apply
        // changes to: the next change reads the store again.
        let compiled_here = rebuild(&published, entries, revision, None);
        if compiled_here && last_good.is_some() {
            save.put((revision, mirror.clone(), published.load()));
        }
        // Changes since the last snapshot compiled.
        let mut changes = Changes::default();
        let mut watch = Arc::clone(&store).watch(revision);
        loop {
            let Some(first) = watch.next().await else {
                return;
            };
            let mut changed = false;
            let mut failed = false;
            let mut next = Some(first);
            while let Some(item) = next {
                match item {
                    Ok(batch) => {
                        tracing::debug!(
                            revision = batch.revision,
                            events = batch.events.len(),
                            "store change received"
                        );
                        revision = batch.revision;
                        for event in batch.events {
                            let key = StoreKey::parse(&event.key);
                            if !key.feeds_snapshot() {
                                continue;
                            }
                            changed = true;
                            match key {
                                StoreKey::Record { zone_id, record_id } => {
                                    changes.records.write(
                                        zone_id,
                                        record_id,
                                        event.value.as_deref(),
                                    );
                                    continue;
                                }
                                StoreKey::Zone(id)
                                | StoreKey::AcmeChallenge { zone_id: id, .. } => {
                                    changes.zones.insert(id.to_owned());
                                }
                                _ => {}
                            }
                            match event.value {
                                Some(v) => mirror.insert(event.key, v),
                                None => mirror.remove(&event.key),
                            };
                        }
                    }
                    Err(e) => {
                        tracing::warn!("store watch ended, reloading: {e}");
                        failed = true;
                        break;
                    }
                }
                next = watch.try_next();
            }
            if failed || (changed && !compiled_here) {
                break;
            }
            if changed {
                if rebuild(&published, &mirror, revision, Some(&changes)) {
                    changes = Changes::default();
                    if last_good.is_some() {
                        save.put((revision, mirror.clone(), published.load()));
                    }
                }
            } else if published.rejected().is_empty() {
                // Nothing the snapshot is built from changed: same content, newer revision.
                let mut same = (*published.load()).clone();
                same.revision = revision;
                published.publish(same);
            }
        }
    }
}
