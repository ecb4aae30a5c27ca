//! The snapshot: everything the data planes need, compiled from the store into one immutable
//! value and swapped in atomically.
//!
//! A [`Snapshot`] is built only from a complete, consistent read of the store. A DNS query or an
//! HTTP request loads one snapshot and uses it for its whole life; nothing here touches the
//! store from a data plane. A store state that does not compile is rejected with every error
//! listed, and the previous snapshot keeps serving. A key that only names something gone
//! (settings, rules, certificates or outgoing transfers of a deleted zone, a missing peer or
//! TSIG key) is left out with a warning instead: one stale key never stops a node's changes. The last good snapshot's source is kept on
//! disk so a node can serve before its store answers.

mod compile;
pub mod keys;
mod watcher;

use std::sync::Arc;

use arc_swap::ArcSwap;
use parapet_store::Revision;
use tokio::sync::watch;

pub use compile::{
    CompileError, ProxiedHost, RecordChanges, Reuse, Snapshot, TransferPeer, ZoneEdge, ZoneShape,
    ZoneSnapshot, compile_snapshot, compile_snapshot_with,
};
pub use keys::{
    StoreKey, acme_challenge_key, auto_cert_key, custom_cert_key, custom_cert_prefix,
    origin_pull_cert_key, outgoing_key, peer_key, record_key, record_prefix, ruleset_key,
    settings_key, token_key, trusted_ca_key, tsig_key, zone_key, zone_name_key,
};
pub use watcher::{Entries, LastGood, publish_last_good, run_snapshot_watcher, save_store_state};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not compile: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Compile(Vec<CompileError>),
    #[error("last good snapshot file {path}: {message}")]
    LastGood { path: String, message: String },
    #[error("reading the store: {0}")]
    Store(#[from] parapet_store::StoreError),
}

/// The snapshot currently served, and what happened to the last one that was rejected.
pub struct Published {
    current: ArcSwap<Snapshot>,
    rejected: ArcSwap<Vec<CompileError>>,
    revision_tx: watch::Sender<Revision>,
    /// A snapshot watcher keeps this in step with a store.
    followed: std::sync::atomic::AtomicBool,
    /// The node configuration's cache rules by zone name, applied before each zone's own.
    configured_cache_rules: std::sync::OnceLock<ConfiguredCacheRules>,
}

/// Cache rules from a node's configuration file, by zone name.
pub type ConfiguredCacheRules =
    std::collections::BTreeMap<String, Vec<parapet_model::rules::CompiledRule>>;

impl Default for Published {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            rejected: ArcSwap::from_pointee(Vec::new()),
            revision_tx: watch::channel(0).0,
            followed: std::sync::atomic::AtomicBool::new(false),
            configured_cache_rules: std::sync::OnceLock::new(),
        }
    }
}

impl Published {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot to use for one query or request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Errors of the last store state that failed to compile (empty once one compiles again).
    pub fn rejected(&self) -> Arc<Vec<CompileError>> {
        self.rejected.load_full()
    }

    pub fn publish(&self, snapshot: Snapshot) {
        let revision = snapshot.revision;
        self.current.store(Arc::new(snapshot));
        self.rejected.store(Arc::new(Vec::new()));
        self.revision_tx.send_replace(revision);
    }

    pub fn reject(&self, errors: Vec<CompileError>) {
        self.rejected.store(Arc::new(errors));
    }

    /// Whether a snapshot watcher follows the store here (the served snapshot catches up with
    /// every change that compiles).
    pub fn followed(&self) -> bool {
        self.followed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_followed(&self, followed: bool) {
        self.followed
            .store(followed, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the node configuration's cache rules, once, at start (a second call is ignored:
    /// the rules of a running node do not change).
    pub fn set_configured_cache_rules(&self, rules: ConfiguredCacheRules) {
        let _ = self.configured_cache_rules.set(rules);
    }

    /// Whether the node configuration has cache rules for any zone.
    pub fn has_configured_cache_rules(&self) -> bool {
        self.configured_cache_rules
            .get()
            .is_some_and(|by_zone| !by_zone.is_empty())
    }

    /// The node configuration's cache rules for the zone named `zone_name`, which the edge
    /// applies before the zone's own (`ZoneEdge::cache_rules`).
    pub fn configured_cache_rules(&self, zone_name: &str) -> &[parapet_model::rules::CompiledRule] {
        self.configured_cache_rules
            .get()
            .and_then(|by_zone| by_zone.get(zone_name))
            .map_or(&[], Vec::as_slice)
    }

    /// Waits until a snapshot at `revision` or later is served.
    pub async fn wait_for(&self, revision: Revision) {
        let mut rx = self.revision_tx.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail here.
        let _ = rx.wait_for(|r| *r >= revision).await;
    }
}
