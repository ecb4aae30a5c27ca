//! API tokens and what each may do.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Everything: zones, records, tokens.
    All,
    /// Read zones and their records.
    ZoneRead,
    /// Read zones, and create, change and delete their DNS records.
    DnsEdit,
    /// Purge zones' cached content (and nothing else, reading included).
    CachePurge,
    /// Read zones, and change their settings.
    ZoneSettingsEdit,
}

impl Permission {
    /// Every permission, as the permission groups list them.
    pub const EVERY: [Self; 5] = [
        Self::All,
        Self::ZoneRead,
        Self::DnsEdit,
        Self::CachePurge,
        Self::ZoneSettingsEdit,
    ];

    /// Cloudflare permission-group names, and the CLI's names, for each permission.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
            "all" | "administrator" => Some(Self::All),
            "zone-read" | "dns-read" => Some(Self::ZoneRead),
            "dns-edit" | "dns-write" => Some(Self::DnsEdit),
            "cache-purge" | "cache-purge:edit" | "purge" => Some(Self::CachePurge),
            "zone-settings-write" | "zone-settings-edit" => Some(Self::ZoneSettingsEdit),
            _ => None,
        }
    }

    /// Cloudflare's permission-group ids, so that scripts written for Cloudflare work.
    pub fn from_group_id(id: &str) -> Option<Self> {
        match id {
            "parapet-administrator" => Some(Self::All),
            "4755a26eedb94da69e1066d98aa820be" => Some(Self::DnsEdit),
            "e17beae8b8cb423a99b1730f21238bed" => Some(Self::CachePurge),
            "28f4b596e7d643029c524985477ae49a" => Some(Self::ZoneSettingsEdit),
            "c8fed203ed3043cba015a93ad1616f1f" | "82e64a83756745bbbb1c9c2701bf816b" => {
                Some(Self::ZoneRead)
            }
            _ => None,
        }
    }

    /// The permission-group id shown in token policies (Cloudflare's where it has one).
    pub fn group_id(self) -> &'static str {
        match self {
            Self::All => "parapet-administrator",
            Self::ZoneRead => "c8fed203ed3043cba015a93ad1616f1f",
            Self::DnsEdit => "4755a26eedb94da69e1066d98aa820be",
            Self::CachePurge => "e17beae8b8cb423a99b1730f21238bed",
            Self::ZoneSettingsEdit => "28f4b596e7d643029c524985477ae49a",
        }
    }

    pub fn group_name(self) -> &'static str {
        match self {
            Self::All => "Administrator",
            Self::ZoneRead => "Zone Read",
            Self::DnsEdit => "DNS Write",
            Self::CachePurge => "Cache Purge",
            Self::ZoneSettingsEdit => "Zone Settings Write",
        }
    }
}

/// Which zones a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneScope {
    All,
    /// Zone ids.
    Listed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub permission: Permission,
    pub zones: ZoneScope,
}

/// What a request needs its token to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Account-wide changes: create or delete zones, manage tokens.
    Admin,
    ZoneRead(&'a str),
    ZoneEdit(&'a str),
    DnsEdit(&'a str),
    CachePurge(&'a str),
    SettingsEdit(&'a str),
}

/// A stored API token. The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub grants: Vec<Grant>,
    pub issued_on: String,
}

impl ApiToken {
    /// A token with every right (the bootstrap and `PARAPET_API_TOKEN` token).
    pub fn admin(id: String, name: String, issued_on: String) -> Self {
        Self {
            id,
            name,
            grants: vec![Grant {
                permission: Permission::All,
                zones: ZoneScope::All,
            }],
            issued_on,
        }
    }

    pub fn allows(&self, need: Need<'_>) -> bool {
        self.grants.iter().any(|g| {
            let covers = |zone: &str| match &g.zones {
                ZoneScope::All => true,
                ZoneScope::Listed(ids) => ids.iter().any(|z| z == zone),
            };
            match (g.permission, need) {
                (Permission::All, Need::Admin) => g.zones == ZoneScope::All,
                (
                    Permission::All,
                    Need::ZoneRead(z)
                    | Need::ZoneEdit(z)
                    | Need::DnsEdit(z)
                    | Need::CachePurge(z)
                    | Need::SettingsEdit(z),
                ) => covers(z),
                (Permission::DnsEdit, Need::ZoneRead(z) | Need::DnsEdit(z)) => covers(z),
                (Permission::ZoneRead, Need::ZoneRead(z)) => covers(z),
                (Permission::CachePurge, Need::CachePurge(z)) => covers(z),
                (Permission::ZoneSettingsEdit, Need::ZoneRead(z) | Need::SettingsEdit(z)) => {
                    covers(z)
                }
                _ => false,
            }
        })
    }
}

/// The store key of a token secret: its SHA-256, hex.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_edit_on_one_zone_allows_only_that_zone() {
        let t = ApiToken {
            id: "t".into(),
            name: "n".into(),
            grants: vec![Grant {
                permission: Permission::DnsEdit,
                zones: ZoneScope::Listed(vec!["z1".into()]),
            }],
            issued_on: String::new(),
        };
        assert!(t.allows(Need::DnsEdit("z1")));
        assert!(t.allows(Need::ZoneRead("z1")));
        assert!(!t.allows(Need::DnsEdit("z2")));
        assert!(!t.allows(Need::ZoneEdit("z1")));
        assert!(!t.allows(Need::Admin));
    }

    #[test]
    fn a_purge_token_purges_and_does_nothing_else() {
        let t = ApiToken {
            id: "t".into(),
            name: "n".into(),
            grants: vec![Grant {
                permission: Permission::parse("Cache Purge").expect("a permission"),
                zones: ZoneScope::Listed(vec!["z1".into()]),
            }],
            issued_on: String::new(),
        };
        assert!(t.allows(Need::CachePurge("z1")));
        assert!(!t.allows(Need::CachePurge("z2")));
        for need in [
            Need::ZoneRead("z1"),
            Need::ZoneEdit("z1"),
            Need::DnsEdit("z1"),
            Need::SettingsEdit("z1"),
            Need::Admin,
        ] {
            assert!(!t.allows(need), "{need:?}");
        }
        let settings = ApiToken {
            grants: vec![Grant {
                permission: Permission::ZoneSettingsEdit,
                zones: ZoneScope::All,
            }],
            ..t
        };
        assert!(settings.allows(Need::SettingsEdit("z1")) && settings.allows(Need::ZoneRead("z1")));
        assert!(!settings.allows(Need::CachePurge("z1")) && !settings.allows(Need::ZoneEdit("z1")));
    }

    #[test]
    fn zone_read_cannot_edit() {
        let t = ApiToken {
            id: "t".into(),
            name: "n".into(),
            grants: vec![Grant {
                permission: Permission::ZoneRead,
                zones: ZoneScope::All,
            }],
            issued_on: String::new(),
        };
        assert!(t.allows(Need::ZoneRead("any")));
        assert!(!t.allows(Need::DnsEdit("any")));
    }
}
