//! An in-memory store for tests: same semantics as the durable ones, nothing survives the process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{
    Entry, Event, LOG_RETAINED, Listing, Op, Revision, Store, StoreError, Txn, Watch, follow_log,
};

#[derive(Default)]
struct State {
    data: BTreeMap<String, (Vec<u8>, Revision)>,
    log: VecDeque<Event>,
    revision: Revision,
    /// Revisions up to and including this one are no longer in `log`.
    compacted: Revision,
}

pub struct MemoryStore {
    state: Mutex<State>,
    revision_tx: watch::Sender<Revision>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            revision_tx: watch::channel(0).0,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (every mutation is
        // completed before the guard drops), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.lock().data.get(key).map(|(v, r)| Entry {
            key: key.to_owned(),
            value: v.clone(),
            mod_revision: *r,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let state = self.lock();
        let entries = state
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r))| Entry {
                key: k.clone(),
                value: v.clone(),
                mod_revision: *r,
            })
            .collect();
        Ok(Listing {
            entries,
            revision: state.revision,
        })
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let mut state = self.lock();
        for c in &txn.compares {
            let current = state.data.get(&c.key).map_or(0, |(_, r)| *r);
            if current != c.mod_revision {
                return Err(StoreError::Conflict);
            }
        }
        if txn.ops.is_empty() {
            return Ok(state.revision);
        }
        let revision = state.revision + 1;
        state.revision = revision;
        for op in txn.ops {
            let event = match op {
                Op::Put { key, value } => {
                    state.data.insert(key.clone(), (value.clone(), revision));
                    Event {
                        revision,
                        key,
                        value: Some(value),
                    }
                }
                Op::Delete { key } => {
                    state.data.remove(&key);
                    Event {
                        revision,
                        key,
                        value: None,
                    }
                }
            };
            state.log.push_back(event);
        }
        let keep_from = revision.saturating_sub(LOG_RETAINED);
        while state.log.front().is_some_and(|e| e.revision <= keep_from) {
            if let Some(e) = state.log.pop_front() {
                state.compacted = e.revision;
            }
        }
        drop(state);
        self.revision_tx.send_replace(revision);
        Ok(revision)
    }

    async fn changes_since(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        let state = self.lock();
        if after < state.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: state.compacted + 1,
            });
        }
        let mut out: Vec<Event> = Vec::new();
        for e in state.log.iter().filter(|e| e.revision > after) {
            if out.len() >= limit && out.last().is_some_and(|l| l.revision != e.revision) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn revision_watch(&self) -> watch::Receiver<Revision> {
        self.revision_tx.subscribe()
    }

    fn watch(self: Arc<Self>, after: Revision) -> Watch {
        follow_log(self, after)
    }
}
