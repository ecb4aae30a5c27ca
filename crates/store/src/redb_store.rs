//! The embedded store: one `redb` file, every commit durable (fsync) before it returns.
//!
//! Tables: `kv` maps a key to (mod revision, value); `log` keeps the events of the last
//! [`LOG_RETAINED`] revisions keyed by (revision, sequence); `meta` holds the current and the
//! compacted revision. redb runs one write transaction at a time, so compare-and-set is exact.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

use crate::{
    Entry, Event, LOG_RETAINED, Listing, Op, Revision, Store, StoreError, Txn, Watch, follow_log,
};

const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
/// (revision, sequence) → (key, value or `None` for a delete).
type LogTable<'a> = TableDefinition<'a, (u64, u32), (&'static str, Option<&'static [u8]>)>;
const LOG: LogTable<'static> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";

pub struct RedbStore {
    handle: Arc<Handle>,
}

/// redb's page cache (its default is 1 GiB).
const PAGE_CACHE_BYTES: usize = 64 * 1024 * 1024;

fn backend(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        e @ (redb::Error::Io(_) | redb::Error::PreviousIo) => StoreError::Storage(e.to_string()),
        e => StoreError::Backend(e.to_string()),
    }
}

/// Opens (or creates) the store file at `path`, with its tables; its current revision.
fn open_database(path: &Path) -> Result<(Database, Revision), StoreError> {
    // The snapshot keeps what the data planes read in memory; the store's own page cache only
    // speeds up API reads and the rare full listing, so it stays small.
    let db = redb::Builder::new()
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(path)
        .map_err(|e| match backend(e) {
            StoreError::Storage(m) => StoreError::Storage(format!("{}: {m}", path.display())),
            other => StoreError::Backend(format!("{}: {other}", path.display())),
        })?;
    // It holds private keys (certificates', the CAs'): its owner's only, whatever the umask
    // it was made under (a file this process may not change is reported, not fatal).
    {
        use std::os::unix::fs::PermissionsExt as _;
        let open_to_others =
            std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
        if open_to_others
            && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(path = %path.display(), "cannot make the store its owner's only: {e}");
        }
    }
    let txn = db.begin_write().map_err(backend)?;
    let revision = {
        txn.open_table(KV).map_err(backend)?;
        txn.open_table(LOG).map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        meta.get(REVISION)
            .map_err(backend)?
            .map_or(0, |v| v.value())
    };
    txn.commit().map_err(backend)?;
    Ok((db, revision))
}

/// The open database, shared with the blocking tasks that use it.
struct Handle {
    path: PathBuf,
    /// `None` after a storage failure until the file is opened again (redb refuses every
    /// operation after a failed write until then).
    db: Mutex<Option<Arc<Database>>>,
    revision_tx: watch::Sender<Revision>,
}

impl Handle {
    /// The open database, opening it again after a storage failure. That succeeds once the
    /// storage works and no operation holds the failed one any more (redb locks its file).
    /// Runs on a blocking thread.
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        let mut slot = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(Arc::clone(db));
        }
        let db = redb::Builder::new()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(&self.path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Storage(
                    "the store file is still held by an operation that failed".into(),
                ),
                e => backend(e),
            })?;
        // Reading only: a storage still full must not keep reads failing.
        let revision = db
            .begin_read()
            .map_err(backend)?
            .open_table(META)
            .map_err(backend)?
            .get(REVISION)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        tracing::info!(revision, "store {} opened again", self.path.display());
        // A commit whose last step failed may still have reached the disk.
        self.revision_tx.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
        let db = Arc::new(db);
        *slot = Some(Arc::clone(&db));
        Ok(db)
    }

    /// Drops `failed` as the open database: the next operation opens the file again.
    fn discard(&self, failed: &Arc<Database>) {
        let mut slot = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|db| Arc::ptr_eq(db, failed)) {
            tracing::warn!(
                "store {}: storage failed; it is opened again at the next operation",
                self.path.display()
            );
            *slot = None;
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let (db, revision) = open_database(path)?;
        Ok(Self {
            handle: Arc::new(Handle {
                path: path.to_owned(),
                db: Mutex::new(Some(Arc::new(db))),
                revision_tx: watch::channel(revision).0,
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let handle = Arc::clone(&self.handle);
        tokio::task::spawn_blocking(move || {
            let db = handle.database()?;
            let out = f(&db);
            if matches!(out, Err(StoreError::Storage(_))) {
                handle.discard(&db);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

fn commit_blocking(db: &Database, txn: Txn) -> Result<Option<Revision>, StoreError> {
    let write = db.begin_write().map_err(backend)?;
    let revision;
    {
        let mut kv = write.open_table(KV).map_err(backend)?;
        for c in &txn.compares {
            let current = kv
                .get(c.key.as_str())
                .map_err(backend)?
                .map_or(0, |v| v.value().0);
            if current != c.mod_revision {
                return Err(StoreError::Conflict);
            }
        }
        if txn.ops.is_empty() {
            return Ok(None);
        }
        let mut meta = write.open_table(META).map_err(backend)?;
        revision = meta
            .get(REVISION)
            .map_err(backend)?
            .map_or(0, |v| v.value())
            + 1;
        let mut log = write.open_table(LOG).map_err(backend)?;
        // Each value is dropped once written: a large transaction is not held twice.
        for (seq, op) in txn.ops.into_iter().enumerate() {
            let seq = u32::try_from(seq)
                .map_err(|_| StoreError::Backend("transaction too large".into()))?;
            match op {
                Op::Put { key, value } => {
                    kv.insert(key.as_str(), (revision, value.as_slice()))
                        .map_err(backend)?;
                    log.insert((revision, seq), (key.as_str(), Some(value.as_slice())))
                        .map_err(backend)?;
                }
                Op::Delete { key } => {
                    kv.remove(key.as_str()).map_err(backend)?;
                    log.insert((revision, seq), (key.as_str(), None))
                        .map_err(backend)?;
                }
            }
        }
        meta.insert(REVISION, revision).map_err(backend)?;
        let keep_from = revision.saturating_sub(LOG_RETAINED);
        let compacted = meta
            .get(COMPACTED)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        if keep_from > compacted {
            log.retain_in((compacted, 0)..(keep_from + 1, 0), |_, _| false)
                .map_err(backend)?;
            meta.insert(COMPACTED, keep_from).map_err(backend)?;
        }
    }
    write.commit().map_err(backend)?;
    Ok(Some(revision))
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(backend)?;
            let kv = read.open_table(KV).map_err(backend)?;
            Ok(kv.get(key.as_str()).map_err(backend)?.map(|v| {
                let (mod_revision, value) = v.value();
                Entry {
                    key: key.clone(),
                    value: value.to_vec(),
                    mod_revision,
                }
            }))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(backend)?;
            let kv = read.open_table(KV).map_err(backend)?;
            let meta = read.open_table(META).map_err(backend)?;
            let revision = meta
                .get(REVISION)
                .map_err(backend)?
                .map_or(0, |v| v.value());
            let mut entries = Vec::new();
            for item in kv.range(prefix.as_str()..).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                let (mod_revision, value) = v.value();
                entries.push(Entry {
                    key: key.to_owned(),
                    value: value.to_vec(),
                    mod_revision,
                });
            }
            Ok(Listing { entries, revision })
        })
        .await
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        match self.blocking(move |db| commit_blocking(db, txn)).await? {
            Some(revision) => {
                self.handle.revision_tx.send_replace(revision);
                Ok(revision)
            }
            None => Ok(*self.handle.revision_tx.borrow()),
        }
    }

    async fn changes_since(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.blocking(move |db| {
            let read = db.begin_read().map_err(backend)?;
            let meta = read.open_table(META).map_err(backend)?;
            let compacted = meta
                .get(COMPACTED)
                .map_err(backend)?
                .map_or(0, |v| v.value());
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    oldest: compacted + 1,
                });
            }
            let log = read.open_table(LOG).map_err(backend)?;
            let mut out: Vec<Event> = Vec::new();
            for item in log.range((after + 1, 0)..).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (revision, _) = k.value();
                if out.len() >= limit && out.last().is_some_and(|l| l.revision != revision) {
                    break;
                }
                let (key, value) = v.value();
                out.push(Event {
                    revision,
                    key: key.to_owned(),
                    value: value.map(<[u8]>::to_vec),
                });
            }
            Ok(out)
        })
        .await
    }

    fn revision_watch(&self) -> watch::Receiver<Revision> {
        self.handle.revision_tx.subscribe()
    }

    fn watch(self: Arc<Self>, after: Revision) -> Watch {
        follow_log(self, after)
    }
}
