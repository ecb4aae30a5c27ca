//! Keeps [`Published`] in step with the store, and the last good snapshot on disk.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parapet_store::{Revision, Store};
use serde::{Deserialize, Serialize};

use crate::keys::StoreKey;
use crate::{Published, SnapshotError, compile_snapshot};

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

    /// Replaces the file atomically (write, fsync, rename, fsync the directory).
    pub fn save(
        &self,
        revision: Revision,
        entries: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), SnapshotError> {
        let file = LastGoodFile {
            revision,
            entries: entries
                .iter()
                .filter_map(|(k, v)| serde_json::from_slice(v).ok().map(|v| (k.clone(), v)))
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| self.error(e))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.error(e))?;
        f.write_all(&bytes).map_err(|e| self.error(e))?;
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

fn rebuild(published: &Published, mirror: &BTreeMap<String, Vec<u8>>, revision: Revision) -> bool {
    let started = std::time::Instant::now();
    match compile_snapshot(
        mirror.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        revision,
    ) {
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

async fn save_last_good(
    last_good: Option<&Arc<LastGood>>,
    revision: Revision,
    mirror: &BTreeMap<String, Vec<u8>>,
) {
    let Some(lg) = last_good else { return };
    let (lg, mirror) = (Arc::clone(lg), mirror.clone());
    match tokio::task::spawn_blocking(move || lg.save(revision, &mirror)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{e}"),
        Err(e) => tracing::warn!("saving the last good snapshot failed: {e}"),
    }
}

/// Follows the store forever: publishes a snapshot for every change that compiles, and keeps
/// serving the previous one when a change does not. Starts from `last_good` if there is one,
/// so a node serves before its store answers. Returns only when the store's watch ends.
pub async fn run_snapshot_watcher(
    store: Arc<dyn Store>,
    published: Arc<Published>,
    last_good: Option<LastGood>,
) {
    let last_good = last_good.map(Arc::new);
    if let Some(lg) = &last_good {
        match lg.load() {
            Ok(Some((revision, entries))) => {
                if rebuild(&published, &entries, revision) {
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
        let mut mirror: BTreeMap<String, Vec<u8>> = listing
            .entries
            .into_iter()
            .filter(|e| StoreKey::parse(&e.key).feeds_snapshot())
            .map(|e| (e.key, e.value))
            .collect();
        let mut revision = listing.revision;
        if rebuild(&published, &mirror, revision) {
            save_last_good(last_good.as_ref(), revision, &mirror).await;
        }
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
                        revision = batch.revision;
                        for event in batch.events {
                            if !StoreKey::parse(&event.key).feeds_snapshot() {
                                continue;
                            }
                            changed = true;
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
            if failed {
                break;
            }
            if changed {
                if rebuild(&published, &mirror, revision) {
                    save_last_good(last_good.as_ref(), revision, &mirror).await;
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
