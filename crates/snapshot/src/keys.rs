//! Where each kind of object lives in the store.

pub const ZONES: &str = "zones/";
pub const ZONE_NAMES: &str = "zone-names/";
pub const RECORDS: &str = "records/";
pub const TOKENS: &str = "tokens/";
pub const TSIGS: &str = "tsigs/";
pub const PEERS: &str = "peers/";
pub const OUTGOING: &str = "outgoing/";
pub const SETTINGS: &str = "settings/";
pub const RULESETS: &str = "rulesets/";
pub const CUSTOM_CERTS: &str = "custom-certs/";
/// Certificates Parapet obtained by ACME, by host name.
pub const AUTO_CERTS: &str = "auto-certs/";
/// DNS-01 challenge answers (TXT records) while an ACME order is validated.
pub const ACME_CHALLENGES: &str = "acme-challenges/";
/// Zones' custom origin trust stores: CA certificates `strict` accepts for their origins.
pub const TRUST_STORE: &str = "trust-store/";

pub fn trusted_ca_key(zone_id: &str, id: &str) -> String {
    format!("{TRUST_STORE}{zone_id}/{id}")
}

/// Zones' own client certificates for Authenticated Origin Pulls.
pub const ORIGIN_PULL_CERTS: &str = "origin-pull-certs/";

pub fn origin_pull_cert_key(zone_id: &str, cert_id: &str) -> String {
    format!("{ORIGIN_PULL_CERTS}{zone_id}/{cert_id}")
}

/// Certificates issued by the Origin CA, by id (read by the API only).
pub const ORIGIN_CERTS: &str = "origin-certs/";
/// Revoked Origin CA certificates, by the SHA-256 of their DER form.
pub const ORIGIN_REVOKED: &str = "origin-revoked/";

/// HTTP-01 answers by token, and TLS-ALPN-01 certificates by host name.
pub const ACME_HTTP: &str = "acme-http/";
pub const ACME_ALPN: &str = "acme-alpn/";

/// The last SOA serial of a deleted zone, by zone name: a zone made again under the name
/// starts above it (secondaries ignore a serial that goes back).
pub const LAST_SERIALS: &str = "last-serials/";

pub fn last_serial_key(zone_name: &str) -> String {
    format!("{LAST_SERIALS}{zone_name}")
}

/// The ACME account's credentials.
pub const ACME_ACCOUNT: &str = "acme/account";
/// Which node of a fleet orders certificates, until when.
pub const ACME_LEASE: &str = "acme/lease";

pub fn auto_cert_key(hostname: &str) -> String {
    format!("{AUTO_CERTS}{hostname}")
}

/// A challenge TXT record of a zone, stored as a DNS record.
pub fn acme_challenge_key(zone_id: &str, record_id: &str) -> String {
    format!("{ACME_CHALLENGES}{zone_id}/{record_id}")
}

/// A zone's uploaded certificate.
pub fn custom_cert_key(zone_id: &str, cert_id: &str) -> String {
    format!("{CUSTOM_CERTS}{zone_id}/{cert_id}")
}

pub fn custom_cert_prefix(zone_id: &str) -> String {
    format!("{CUSTOM_CERTS}{zone_id}/")
}

/// A zone's changed settings.
pub fn settings_key(zone_id: &str) -> String {
    format!("{SETTINGS}{zone_id}")
}

/// A zone's entrypoint ruleset of one phase.
pub fn ruleset_key(zone_id: &str, phase: &str) -> String {
    format!("{RULESETS}{zone_id}/{phase}")
}

pub fn tsig_key(id: &str) -> String {
    format!("{TSIGS}{id}")
}

pub fn peer_key(id: &str) -> String {
    format!("{PEERS}{id}")
}

/// A zone's outgoing transfer settings.
pub fn outgoing_key(zone_id: &str) -> String {
    format!("{OUTGOING}{zone_id}")
}

pub fn zone_key(zone_id: &str) -> String {
    format!("{ZONES}{zone_id}")
}

/// Maps a zone name to its id, so that two zones cannot share a name.
pub fn zone_name_key(name: &str) -> String {
    format!("{ZONE_NAMES}{name}")
}

pub fn record_prefix(zone_id: &str) -> String {
    format!("{RECORDS}{zone_id}/")
}

pub fn record_key(zone_id: &str, record_id: &str) -> String {
    format!("{RECORDS}{zone_id}/{record_id}")
}

/// A token is stored under the SHA-256 of its secret.
pub fn token_key(secret_digest: &str) -> String {
    format!("{TOKENS}{secret_digest}")
}

/// What a store key holds.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreKey<'a> {
    Zone(&'a str),
    ZoneName(&'a str),
    Record {
        zone_id: &'a str,
        record_id: &'a str,
    },
    Token(&'a str),
    Tsig(&'a str),
    Peer(&'a str),
    Outgoing(&'a str),
    Settings(&'a str),
    Ruleset {
        zone_id: &'a str,
        phase: &'a str,
    },
    CustomCert {
        zone_id: &'a str,
        cert_id: &'a str,
    },
    AutoCert(&'a str),
    AcmeHttp(&'a str),
    AcmeAlpn(&'a str),
    OriginPullCert {
        zone_id: &'a str,
        cert_id: &'a str,
    },
    TrustedCa {
        zone_id: &'a str,
        id: &'a str,
    },
    AcmeChallenge {
        zone_id: &'a str,
        record_id: &'a str,
    },
    OriginRevoked(&'a str),
    Other,
}

impl<'a> StoreKey<'a> {
    pub fn parse(key: &'a str) -> Self {
        if let Some(id) = key.strip_prefix(ZONES) {
            Self::Zone(id)
        } else if let Some(name) = key.strip_prefix(ZONE_NAMES) {
            Self::ZoneName(name)
        } else if let Some(rest) = key.strip_prefix(RECORDS) {
            match rest.split_once('/') {
                Some((zone_id, record_id)) => Self::Record { zone_id, record_id },
                None => Self::Other,
            }
        } else if let Some(digest) = key.strip_prefix(TOKENS) {
            Self::Token(digest)
        } else if let Some(id) = key.strip_prefix(TSIGS) {
            Self::Tsig(id)
        } else if let Some(id) = key.strip_prefix(PEERS) {
            Self::Peer(id)
        } else if let Some(id) = key.strip_prefix(OUTGOING) {
            Self::Outgoing(id)
        } else if let Some(id) = key.strip_prefix(SETTINGS) {
            Self::Settings(id)
        } else if let Some(rest) = key.strip_prefix(RULESETS) {
            match rest.split_once('/') {
                Some((zone_id, phase)) => Self::Ruleset { zone_id, phase },
                None => Self::Other,
            }
        } else if let Some(rest) = key.strip_prefix(TRUST_STORE) {
            match rest.split_once('/') {
                Some((zone_id, id)) => Self::TrustedCa { zone_id, id },
                None => Self::Other,
            }
        } else if let Some(rest) = key.strip_prefix(ORIGIN_PULL_CERTS) {
            match rest.split_once('/') {
                Some((zone_id, cert_id)) => Self::OriginPullCert { zone_id, cert_id },
                None => Self::Other,
            }
        } else if let Some(digest) = key.strip_prefix(ORIGIN_REVOKED) {
            Self::OriginRevoked(digest)
        } else if let Some(token) = key.strip_prefix(ACME_HTTP) {
            Self::AcmeHttp(token)
        } else if let Some(host) = key.strip_prefix(ACME_ALPN) {
            Self::AcmeAlpn(host)
        } else if let Some(host) = key.strip_prefix(AUTO_CERTS) {
            Self::AutoCert(host)
        } else if let Some(rest) = key.strip_prefix(ACME_CHALLENGES) {
            match rest.split_once('/') {
                Some((zone_id, record_id)) => Self::AcmeChallenge { zone_id, record_id },
                None => Self::Other,
            }
        } else if let Some(rest) = key.strip_prefix(CUSTOM_CERTS) {
            match rest.split_once('/') {
                Some((zone_id, cert_id)) => Self::CustomCert { zone_id, cert_id },
                None => Self::Other,
            }
        } else {
            Self::Other
        }
    }

    /// Whether the snapshot is built from this key.
    pub fn feeds_snapshot(&self) -> bool {
        matches!(
            self,
            Self::Zone(_)
                | Self::Record { .. }
                | Self::Tsig(_)
                | Self::Peer(_)
                | Self::Outgoing(_)
                | Self::Settings(_)
                | Self::Ruleset { .. }
                | Self::CustomCert { .. }
                | Self::AutoCert(_)
                | Self::AcmeHttp(_)
                | Self::OriginRevoked(_)
                | Self::AcmeAlpn(_)
                | Self::OriginPullCert { .. }
                | Self::TrustedCa { .. }
                | Self::AcmeChallenge { .. }
        )
    }
}
