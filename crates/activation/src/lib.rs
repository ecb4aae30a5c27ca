//! Zone activation: a zone is `pending` until its delegation in the parent zone names exactly
//! Parapet's nameservers, then `active`; an active zone whose delegation stays elsewhere for
//! [`MOVED_AFTER`] checks in a row becomes `moved`.
//!
//! The delegation is read from the parent zone's own authoritative servers (never a recursive
//! resolver's cache): either the configured `--parent-ns`, or the parent's servers found
//! through the system resolver. Checks run at creation, on request, and in the background
//! with growing intervals. This is control-plane work; it never runs on a data-plane path.

mod client;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parapet_model::{Zone, ZoneStatus};
use parapet_snapshot::zone_key;
use parapet_store::{Store, StoreError, Txn};

pub use client::{DnsClient, LookupError};

/// Failed checks in a row after which an active zone is `moved`.
pub const MOVED_AFTER: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("zone not found")]
    ZoneNotFound,
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored zone is unreadable: {0}")]
    Corrupt(String),
}

/// How zones become active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationMode {
    /// Active at once: the operator controls delegation.
    Auto,
    /// Active once the parent delegates to Parapet's nameservers. `parent_ns` overrides where
    /// the parent zone is asked.
    Nameservers { parent_ns: Option<SocketAddr> },
}

pub struct Activator {
    store: Arc<dyn Store>,
    mode: ActivationMode,
    client: DnsClient,
    /// First background retry interval; it doubles with each failed check.
    base_interval: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// The zone's new state after a check that found `found` (the delegation's NS names; empty for
/// no delegation). Pure, so the rules are tested without a network.
pub fn apply_check(zone: &Zone, found: Option<&[String]>, now: u64, now_text: &str) -> Zone {
    let mut next = zone.clone();
    next.last_check = Some(now);
    let wanted: BTreeSet<&str> = zone.name_servers.iter().map(String::as_str).collect();
    let matches = found.is_some_and(|ns| {
        let got: BTreeSet<&str> = ns.iter().map(String::as_str).collect();
        !got.is_empty() && got == wanted
    });
    if let Some(ns) = found.filter(|ns| !ns.is_empty() && !matches) {
        next.original_name_servers = Some(ns.to_vec());
    }
    if matches {
        next.failed_checks = 0;
        if zone.status != ZoneStatus::Active {
            next.status = ZoneStatus::Active;
            next.activated_on = Some(now_text.to_owned());
        }
    } else {
        next.failed_checks = zone.failed_checks.saturating_add(1);
        if zone.status == ZoneStatus::Active && next.failed_checks >= MOVED_AFTER {
            next.status = ZoneStatus::Moved;
        }
    }
    if next.status != zone.status {
        next.serial = zone.next_serial(now);
        next.modified_on = now_text.to_owned();
    }
    next
}

impl Activator {
    pub fn new(store: Arc<dyn Store>, mode: ActivationMode, base_interval: Duration) -> Self {
        Self {
            store,
            mode,
            client: DnsClient::new(Duration::from_secs(2)),
            base_interval,
        }
    }

    pub fn mode(&self) -> &ActivationMode {
        &self.mode
    }

    /// The NS names the parent zone delegates `zone` to (empty: no delegation).
    pub async fn lookup_delegation(&self, zone: &str) -> Result<Vec<String>, LookupError> {
        match &self.mode {
            ActivationMode::Auto => Ok(Vec::new()),
            ActivationMode::Nameservers {
                parent_ns: Some(server),
            } => self.client.delegation_at(*server, zone).await,
            ActivationMode::Nameservers { parent_ns: None } => {
                self.client.delegation_via_system(zone).await
            }
        }
    }

    /// Checks one zone now and stores the outcome. In `auto` mode the zone becomes active.
    pub async fn check_zone(&self, zone_id: &str) -> Result<Zone, ActivationError> {
        let found = match &self.mode {
            ActivationMode::Auto => None,
            ActivationMode::Nameservers { .. } => {
                let Some(entry) = self.store.get(&zone_key(zone_id)).await? else {
                    return Err(ActivationError::ZoneNotFound);
                };
                let zone: Zone = serde_json::from_slice(&entry.value)
                    .map_err(|e| ActivationError::Corrupt(e.to_string()))?;
                match self.lookup_delegation(&zone.name).await {
                    Ok(ns) => Some(ns),
                    Err(e) => {
                        tracing::info!(zone = %zone.name, "activation check could not read the delegation: {e}");
                        Some(Vec::new())
                    }
                }
            }
        };
        loop {
            let Some(entry) = self.store.get(&zone_key(zone_id)).await? else {
                return Err(ActivationError::ZoneNotFound);
            };
            let zone: Zone = serde_json::from_slice(&entry.value)
                .map_err(|e| ActivationError::Corrupt(e.to_string()))?;
            let next = match (&self.mode, &found) {
                (ActivationMode::Auto, _) => {
                    let auto_ns = zone.name_servers.clone();
                    apply_check(&zone, Some(&auto_ns), unix_now(), &timestamp())
                }
                (_, found) => apply_check(&zone, found.as_deref(), unix_now(), &timestamp()),
            };
            if next.status != zone.status {
                tracing::info!(zone = %zone.name, from = zone.status.as_str(), to = next.status.as_str(), "zone status changed");
            }
            let value =
                serde_json::to_vec(&next).map_err(|e| ActivationError::Corrupt(e.to_string()))?;
            match self
                .store
                .commit(
                    Txn::new()
                        .expect(zone_key(zone_id), entry.mod_revision)
                        .put(zone_key(zone_id), value),
                )
                .await
            {
                Ok(_) => return Ok(next),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// When a zone is next due for a background check.
    fn due(&self, zone: &Zone, now: u64) -> bool {
        let Some(last) = zone.last_check else {
            return true;
        };
        let base = self.base_interval.as_secs().max(1);
        let interval = match zone.status {
            ZoneStatus::Active if zone.failed_checks == 0 => base.saturating_mul(60),
            ZoneStatus::Active => base.saturating_mul(5),
            ZoneStatus::Pending | ZoneStatus::Moved => base
                .saturating_mul(1 << zone.failed_checks.min(6))
                .min(base.saturating_mul(60)),
        };
        now >= last.saturating_add(interval)
    }

    /// Checks every due zone, forever. Only in `nameservers` mode.
    pub async fn run_background(self: Arc<Self>) {
        if self.mode == ActivationMode::Auto {
            return;
        }
        let tick = self
            .base_interval
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(tick).await;
            let listing = match self.store.list(parapet_snapshot::keys::ZONES).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("activation: reading zones failed: {e}");
                    continue;
                }
            };
            let now = unix_now();
            for entry in listing.entries {
                let Ok(zone) = serde_json::from_slice::<Zone>(&entry.value) else {
                    continue;
                };
                if self.due(&zone, now)
                    && let Err(e) = self.check_zone(&zone.id).await
                {
                    tracing::warn!(zone = %zone.name, "activation check failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(status: ZoneStatus, failed: u32) -> Zone {
        Zone {
            id: "z".into(),
            name: "example.test".into(),
            status,
            paused: false,
            name_servers: vec!["ns1.parapet.test".into(), "ns2.parapet.test".into()],
            original_name_servers: None,
            account_id: "a".into(),
            created_on: String::new(),
            modified_on: String::new(),
            activated_on: None,
            serial: 5,
            failed_checks: failed,
            last_check: None,
        }
    }

    fn ns(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exact_delegation_activates_and_bumps_serial() {
        let z = apply_check(
            &zone(ZoneStatus::Pending, 2),
            Some(&ns(&["ns2.parapet.test", "ns1.parapet.test"])),
            100,
            "t",
        );
        assert_eq!(z.status, ZoneStatus::Active);
        assert_eq!(z.failed_checks, 0);
        assert!(z.serial > 5);
        assert_eq!(z.activated_on.as_deref(), Some("t"));
    }

    #[test]
    fn partial_delegation_stays_pending_and_records_original_servers() {
        let z = apply_check(
            &zone(ZoneStatus::Pending, 0),
            Some(&ns(&["ns1.parapet.test", "ns.other.net"])),
            100,
            "t",
        );
        assert_eq!(z.status, ZoneStatus::Pending);
        assert_eq!(
            z.original_name_servers,
            Some(ns(&["ns1.parapet.test", "ns.other.net"]))
        );
    }

    #[test]
    fn active_zone_moves_only_after_repeated_failures() {
        let mut z = zone(ZoneStatus::Active, 0);
        for _ in 0..MOVED_AFTER - 1 {
            z = apply_check(&z, Some(&ns(&["ns.other.net"])), 100, "t");
            assert_eq!(z.status, ZoneStatus::Active);
        }
        z = apply_check(&z, Some(&[]), 100, "t");
        assert_eq!(z.status, ZoneStatus::Moved);
        z = apply_check(
            &z,
            Some(&ns(&["ns1.parapet.test", "ns2.parapet.test"])),
            100,
            "t",
        );
        assert_eq!(z.status, ZoneStatus::Active);
    }
}
