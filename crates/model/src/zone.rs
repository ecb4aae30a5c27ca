//! Zones: a domain Parapet is authoritative for, and its activation state.

use serde::{Deserialize, Serialize};

/// Where a zone is in its life, with Cloudflare's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneStatus {
    /// Created; its delegation does not yet name Parapet's nameservers.
    Pending,
    /// Delegated to Parapet: proxied records answer with the edge addresses.
    Active,
    /// Was active, but its delegation no longer names Parapet's nameservers.
    Moved,
}

impl ZoneStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Moved => "moved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            "moved" => Some(Self::Moved),
            _ => None,
        }
    }
}

/// A zone as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
    pub status: ZoneStatus,
    pub paused: bool,
    pub name_servers: Vec<String>,
    /// The nameservers the parent delegated to when the zone was last checked, if known.
    pub original_name_servers: Option<Vec<String>>,
    pub account_id: String,
    pub created_on: String,
    pub modified_on: String,
    pub activated_on: Option<String>,
    /// SOA serial: increases with every change to the zone or its records.
    pub serial: u32,
    /// Activation checks in a row that found the delegation elsewhere (for `moved`).
    #[serde(default)]
    pub failed_checks: u32,
    /// Unix seconds of the last activation check.
    #[serde(default)]
    pub last_check: Option<u64>,
}

impl Zone {
    /// A new zone as created: pending, served by `name_servers`, its serial taken from the clock
    /// (`unix_now`, seconds) so that it is above anything a previous zone of that name served.
    pub fn new(
        id: String,
        name: String,
        name_servers: Vec<String>,
        account_id: String,
        now: String,
        unix_now: u64,
    ) -> Self {
        Self {
            id,
            name,
            status: ZoneStatus::Pending,
            paused: false,
            name_servers,
            original_name_servers: None,
            account_id,
            created_on: now.clone(),
            modified_on: now,
            activated_on: None,
            serial: u32::try_from(unix_now).unwrap_or(u32::MAX).max(1),
            failed_checks: 0,
            last_check: None,
        }
    }

    /// The next serial after a change at `now` (Unix seconds): strictly increasing, and close to
    /// the clock so serials stay meaningful across restores.
    pub fn next_serial(&self, now: u64) -> u32 {
        let clock = u32::try_from(now).unwrap_or(u32::MAX);
        clock.max(self.serial.wrapping_add(1))
    }
}
