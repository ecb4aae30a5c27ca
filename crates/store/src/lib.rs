//! The store behind Parapet's control plane: a versioned key-value map with compare-and-set
//! transactions and a watch that replays every change after a given revision.
//!
//! Every committed transaction gets the next revision; a watch from revision `r` yields each
//! later revision exactly once, in order. Backends: [`RedbStore`] (embedded, durable, the
//! default) and [`MemoryStore`] (tests). Both pass [`conformance`]. Only the control plane
//! touches a store; data planes read snapshots.

pub mod conformance;
mod log;
mod memory;
mod redb_store;

use std::sync::Arc;

use async_trait::async_trait;

pub use log::{Watch, follow_log};
pub use memory::MemoryStore;
pub use redb_store::RedbStore;

/// A store revision. `0` is "before anything was written".
pub type Revision = u64;

/// How many revisions of change log a local store keeps for watchers that fall behind.
pub const LOG_RETAINED: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare in a transaction failed: someone else wrote first. Re-read and retry.
    #[error("the store changed since it was read")]
    Conflict,
    /// A watch asked for changes the store no longer keeps; reload from a full listing.
    #[error("revision {requested} is compacted (oldest kept is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("store backend: {0}")]
    Backend(String),
    /// The store's storage failed (a full disk, a read or write error): nothing was written.
    /// The store recovers by itself once the storage works again.
    #[error("store storage: {0}")]
    Storage(String),
}

/// A key with its value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: Revision,
}

/// Entries under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// A condition of a transaction: `key` was last written at `mod_revision` (`0`: it is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub mod_revision: Revision,
}

/// All compares hold, then all ops apply as one revision; or nothing happens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn expect(mut self, key: impl Into<String>, mod_revision: Revision) -> Self {
        self.compares.push(Compare {
            key: key.into(),
            mod_revision,
        });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

/// One change: `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// The changes of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Every entry whose key starts with `prefix`, sorted by key, at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Applies `txn` atomically and durably; returns the new revision (or the current one for a
    /// transaction without ops). [`StoreError::Conflict`] if a compare fails.
    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError>;

    /// Changes in revisions after `after`, oldest first, at most about `limit` events (whole
    /// revisions only).
    async fn changes_since(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// A receiver that sees the latest committed revision.
    fn revision_watch(&self) -> tokio::sync::watch::Receiver<Revision>;

    /// Every change after `after`, one [`Batch`] per revision.
    fn watch(self: Arc<Self>, after: Revision) -> Watch;
}
