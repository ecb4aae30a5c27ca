//! Store contents → [`Snapshot`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use std::net::SocketAddr;

use parapet_model::certificate::{
    AcmeResponse, AutoCertificate, CustomCertificate, OriginPullCertificate,
    RevokedOriginCertificate, TrustedCa,
};
use parapet_model::record::SameName;
use parapet_model::rules::{CACHE_PHASE, CompiledRule, ORIGIN_PHASE, Ruleset};
use parapet_model::settings::{EdgeZoneSettings, ZoneSettings};
use parapet_model::transfer::{Outgoing, Peer, TsigKey};
use parapet_model::{DnsRecord, RecordDraft, RecordType, Zone, ZoneStatus};
use parapet_store::Revision;

use crate::keys::StoreKey;

/// One reason a store state does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A zone with its records.
#[derive(Debug, Clone)]
pub struct ZoneSnapshot {
    pub zone: Zone,
    /// The zone's stored records, sorted by (name, type, content). Shared with the next
    /// snapshot when a change leaves them as they are.
    pub records: Vec<Arc<DnsRecord>>,
    /// ACME challenge answers served at names of the zone (Parapet's own short-lived records).
    pub challenges: Vec<DnsRecord>,
    /// Its names without records of their own, and its delegations.
    pub shape: ZoneShape,
}

/// Which of a zone's names exist in DNS without records of their own, and where the zone
/// delegates: what finding a wildcard's closest encloser needs (RFC 4592 §3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneShape {
    /// Names below the apex with no records but records below them (empty non-terminals).
    pub empty_non_terminals: HashSet<String>,
    /// Names below the apex holding NS records: the zone answers for what lies below them
    /// with referrals.
    pub delegations: HashSet<String>,
}

impl ZoneShape {
    /// The shape of zone `apex` with `records` sorted by name and `challenges`. Costs one
    /// comparison per record in a flat zone: only names deeper than the apex's children look
    /// further.
    fn of(apex: &str, records: &[Arc<DnsRecord>], challenges: &[DnsRecord]) -> Self {
        let mut shape = Self::default();
        let has_records = |name: &str| {
            !named(records, name).is_empty() || challenges.iter().any(|c| c.name == name)
        };
        let mut previous: Option<&str> = None;
        let names = records.iter().map(Arc::as_ref).chain(challenges.iter());
        for r in names {
            if r.kind == RecordType::NS && r.name != apex {
                shape.delegations.insert(r.name.clone());
            }
            if previous == Some(r.name.as_str()) {
                continue;
            }
            previous = Some(r.name.as_str());
            let mut at = r.name.as_str();
            while let Some((_, parent)) = at.split_once('.') {
                if parent.len() <= apex.len()
                    || shape.empty_non_terminals.contains(parent)
                    || has_records(parent)
                {
                    break;
                }
                shape.empty_non_terminals.insert(parent.to_owned());
                at = parent;
            }
        }
        shape
    }
}

impl ZoneSnapshot {
    /// A zone with `records` (sorted by name) and the ACME challenge answers it serves.
    pub fn new(zone: Zone, records: Vec<Arc<DnsRecord>>, challenges: Vec<DnsRecord>) -> Self {
        let shape = ZoneShape::of(&zone.name, &records, &challenges);
        Self {
            zone,
            records,
            challenges,
            shape,
        }
    }

    /// Whether `name` (of this zone) exists in DNS: the apex, a name with records, or an empty
    /// non-terminal.
    pub fn exists(&self, name: &str) -> bool {
        name == self.zone.name
            || self.records_at(name).next().is_some()
            || self.shape.empty_non_terminals.contains(name)
    }

    /// Whether `name` is one of the zone's delegations or lies below one: DNS answers for it
    /// with a referral (records there, if any, are glue, not answers).
    pub fn delegated(&self, name: &str) -> bool {
        if self.shape.delegations.is_empty() {
            return false;
        }
        let mut at = name;
        while at.len() > self.zone.name.len() {
            if self.shape.delegations.contains(at) {
                return true;
            }
            match at.split_once('.') {
                Some((_, parent)) => at = parent,
                None => break,
            }
        }
        false
    }

    /// Every record served: the stored ones, then the ACME challenge answers.
    pub fn all_records(&self) -> impl Iterator<Item = &DnsRecord> {
        self.records
            .iter()
            .map(Arc::as_ref)
            .chain(self.challenges.iter())
    }

    /// The records served at `name` (lowercase, no trailing dot).
    pub fn records_at<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a DnsRecord> {
        self.stored_at(name)
            .chain(self.challenges.iter().filter(move |r| r.name == name))
    }

    /// The stored records at `name`, without ACME challenge answers.
    pub fn stored_at<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a DnsRecord> {
        named(&self.records, name).iter().map(Arc::as_ref)
    }
}

/// The run of `records` (sorted by name) at `name`.
fn named<'r>(records: &'r [Arc<DnsRecord>], name: &str) -> &'r [Arc<DnsRecord>] {
    let start = records.partition_point(|r| r.name.as_str() < name);
    let len = records[start..].partition_point(|r| r.name == name);
    &records[start..start + len]
}

/// A proxied host name: where the edge sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedHost {
    pub zone_id: Arc<str>,
    /// The zone is active: DNS answers with the edge, and the edge serves the name.
    pub active: bool,
    /// The proxied A/AAAA/CNAME contents at this name.
    pub origins: Vec<String>,
    /// The origins' addresses, when every origin is an address.
    pub addresses: Option<Arc<[std::net::IpAddr]>>,
}

/// A secondary allowed to transfer a zone, and notified when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPeer {
    pub addr: SocketAddr,
    /// The TSIG key its transfers and notifies are signed with.
    pub tsig: Option<TsigKey>,
    pub ixfr: bool,
    /// The zone's count of forced NOTIFYs: when it changes, the peer is notified again.
    pub notifies: u64,
}

/// What the edge applies to one zone's requests beyond routing: its settings and origin rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneEdge {
    pub settings: EdgeZoneSettings,
    /// Enabled origin rules in order; a later match overrides an earlier one.
    pub origin_rules: Vec<CompiledRule>,
    /// Enabled cache rules in order; a later match overrides an earlier one.
    pub cache_rules: Vec<CompiledRule>,
    /// The zone's own client certificate for Authenticated Origin Pulls (the newest upload).
    pub origin_pull: Option<Arc<OriginPullCertificate>>,
    /// CA certificates the zone trusts for its origins in `strict` mode, sorted by id.
    pub trust_store: Vec<Arc<TrustedCa>>,
}

impl Default for ZoneEdge {
    fn default() -> Self {
        Self {
            settings: ZoneSettings::default().edge(),
            origin_rules: Vec::new(),
            cache_rules: Vec::new(),
            origin_pull: None,
            trust_store: Vec::new(),
        }
    }
}

/// Everything the data planes read, at one store revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: Revision,
    /// Outgoing transfer peers by zone name.
    pub transfers: HashMap<String, Vec<TransferPeer>>,
    /// By zone name.
    pub zones: BTreeMap<String, Arc<ZoneSnapshot>>,
    /// By host name (wildcards included as `*.name`).
    pub proxied_hosts: HashMap<String, ProxiedHost>,
    /// By zone id, for zones with changed settings or origin rules.
    pub zone_edge: HashMap<String, Arc<ZoneEdge>>,
    /// Uploaded certificates, by zone id.
    pub custom_certs: HashMap<String, Vec<Arc<CustomCertificate>>>,
    /// Certificates obtained by ACME (and their issuance state), by host name.
    pub auto_certs: HashMap<String, Arc<AutoCertificate>>,
    /// ACME challenge answers the edge serves: HTTP-01 by token, TLS-ALPN-01 by host name.
    pub acme_http: HashMap<String, Arc<AcmeResponse>>,
    pub acme_alpn: HashMap<String, Arc<AcmeResponse>>,
    /// The SHA-256 of every revoked Origin CA certificate (`strict` zones refuse origins that
    /// present one).
    pub revoked_origin_certs: HashSet<[u8; 32]>,
}

impl Snapshot {
    /// The zone that `name` belongs to: the longest zone name it lies within.
    pub fn zone_for(&self, name: &str) -> Option<&Arc<ZoneSnapshot>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut candidate = name.as_str();
        loop {
            if let Some(z) = self.zones.get(candidate) {
                return Some(z);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }

    /// The settings and origin rules of zone `zone_id` (defaults when it has none).
    pub fn edge_of(&self, zone_id: &str) -> Arc<ZoneEdge> {
        static DEFAULT: std::sync::OnceLock<Arc<ZoneEdge>> = std::sync::OnceLock::new();
        self.zone_edge
            .get(zone_id)
            .cloned()
            .unwrap_or_else(|| DEFAULT.get_or_init(Arc::default).clone())
    }

    pub fn record_count(&self) -> usize {
        self.zones
            .values()
            .map(|z| z.records.len() + z.challenges.len())
            .sum()
    }
}

/// Compiles the snapshot from every store entry (`key → value`) at `revision`.
pub fn compile_snapshot<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    revision: Revision,
) -> Result<Snapshot, Vec<CompileError>> {
    compile_snapshot_with(entries, revision, None)
}

/// Record writes by zone id, then record id. Each stored value is decoded as it is noted, so a
/// large change is not held both as stored bytes and as records: the records decoded here are
/// the ones the next snapshot holds.
#[derive(Default)]
pub struct RecordChanges {
    zones: HashMap<String, HashSet<RecordWrite>>,
    shared: Shared,
}

/// A record write, found by the record's id: a written record is its own key, so a large
/// change holds no second copy of a million ids.
enum RecordWrite {
    Deleted(Box<str>),
    Written(Arc<DnsRecord>),
    /// A stored value that is not a record of its key: the compile reports it.
    Invalid {
        id: Box<str>,
        message: String,
    },
}

impl RecordWrite {
    fn id(&self) -> &str {
        match self {
            Self::Deleted(id) | Self::Invalid { id, .. } => id,
            Self::Written(record) => &record.id,
        }
    }
}

impl std::borrow::Borrow<str> for RecordWrite {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl std::hash::Hash for RecordWrite {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the id's own hash, so that a lookup by id finds it.
        self.id().hash(state);
    }
}

impl PartialEq for RecordWrite {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for RecordWrite {}

impl RecordChanges {
    /// Notes that record `record_id` of zone `zone_id` was written as `value` (`None`: deleted).
    pub fn write(&mut self, zone_id: &str, record_id: &str, value: Option<&[u8]>) {
        let write = match value {
            None => RecordWrite::Deleted(record_id.into()),
            Some(value) => match parse_record(zone_id, record_id, value, &mut self.shared) {
                Ok(record) => RecordWrite::Written(record),
                Err(message) => RecordWrite::Invalid {
                    id: record_id.into(),
                    message,
                },
            },
        };
        let zone = match self.zones.get_mut(zone_id) {
            Some(zone) => zone,
            None => self.zones.entry(zone_id.to_owned()).or_default(),
        };
        zone.replace(write);
    }
}

/// What a compile takes from the previous good snapshot: the zones that did not change since,
/// as they are, and the records of those that did, with `records` applied.
pub struct Reuse<'a> {
    pub previous: &'a Snapshot,
    /// Zones (by id) whose zone entry or ACME challenges changed; zones in `records` changed too.
    pub changed_zones: &'a HashSet<String>,
    /// Every record write since `previous` was compiled.
    pub records: &'a RecordChanges,
}

/// Equal strings of the records compiled, held once.
#[derive(Default)]
struct Shared(HashSet<Arc<str>>);

impl Shared {
    fn share(&mut self, s: &mut Arc<str>) {
        match self.0.get(s) {
            Some(held) => *s = Arc::clone(held),
            None => {
                self.0.insert(Arc::clone(s));
            }
        }
    }
}

/// A record to compile, and whether an earlier compile already validated it.
struct Candidate {
    record: Arc<DnsRecord>,
    validated: bool,
}

/// [`compile_snapshot`] of a change. With `reuse`, the entries hold no records (any given are
/// ignored): a zone that did not change is taken from the previous snapshot as it is, and a
/// changed zone keeps the previous snapshot's records that were not written since. Those are
/// not validated again, and only the names with a written record are checked against their
/// neighbours, so a change costs in proportion to what it touches. Entries given by value are
/// dropped as soon as they are read.
pub fn compile_snapshot_with<K: AsRef<str>, V: AsRef<[u8]>>(
    entries: impl IntoIterator<Item = (K, V)>,
    revision: Revision,
    reuse: Option<Reuse<'_>>,
) -> Result<Snapshot, Vec<CompileError>> {
    // Zones of the previous snapshot by id, and the changed ones among them.
    let previous: HashMap<&str, &Arc<ZoneSnapshot>> = reuse
        .as_ref()
        .map(|r| {
            r.previous
                .zones
                .values()
                .map(|z| (z.zone.id.as_str(), z))
                .collect()
        })
        .unwrap_or_default();
    let changed = |id: &str| {
        reuse
            .as_ref()
            .is_some_and(|r| r.changed_zones.contains(id) || r.records.zones.contains_key(id))
    };
    let reusable: HashMap<&str, &Arc<ZoneSnapshot>> = previous
        .iter()
        .filter(|(id, _)| !changed(id))
        .map(|(id, z)| (*id, *z))
        .collect();
    let mut errors = Vec::new();
    let mut zones: HashMap<String, Zone> = HashMap::new();
    let mut records: HashMap<String, Vec<Candidate>> = HashMap::new();
    let mut shared = Shared::default();
    let mut challenges: HashMap<String, Vec<DnsRecord>> = HashMap::new();
    let mut tsigs: HashMap<String, TsigKey> = HashMap::new();
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut outgoing: Vec<(String, Outgoing)> = Vec::new();
    let mut zone_edge: HashMap<String, ZoneEdge> = HashMap::new();
    let mut custom_certs: HashMap<String, Vec<Arc<CustomCertificate>>> = HashMap::new();
    let mut auto_certs: HashMap<String, Arc<AutoCertificate>> = HashMap::new();
    let mut acme_http: HashMap<String, Arc<AcmeResponse>> = HashMap::new();
    let mut acme_alpn: HashMap<String, Arc<AcmeResponse>> = HashMap::new();
    let mut revoked_origin_certs = HashSet::new();
    for (key, value) in entries {
        let (key, value) = (key.as_ref(), value.as_ref());
        let err = |m: String| CompileError {
            key: key.to_owned(),
            message: m,
        };
        match StoreKey::parse(key) {
            StoreKey::Zone(id) => match serde_json::from_slice::<Zone>(value) {
                Ok(z) if z.id == id => {
                    zones.insert(z.id.clone(), z);
                }
                Ok(z) => errors.push(err(format!("holds zone {} under another id", z.id))),
                Err(e) => errors.push(err(format!("not a zone: {e}"))),
            },
            StoreKey::Record { .. } if reuse.is_some() => {}
            StoreKey::AcmeChallenge { zone_id, .. } if reusable.contains_key(zone_id) => {}
            StoreKey::Record { zone_id, record_id } => {
                match parse_record(zone_id, record_id, value, &mut shared) {
                    Ok(record) => records
                        .entry(zone_id.to_owned())
                        .or_default()
                        .push(Candidate {
                            record,
                            validated: false,
                        }),
                    Err(message) => errors.push(err(message)),
                }
            }
            // ACME challenge answers are Parapet's own, short-lived records: one that does not
            // fit (its zone is gone, a CNAME holds its name) is left out, never a reason to
            // reject the whole snapshot.
            StoreKey::AcmeChallenge { zone_id, record_id } => {
                match serde_json::from_slice::<DnsRecord>(value) {
                    Ok(r) if r.id == record_id && *r.zone_id == *zone_id => {
                        challenges.entry(zone_id.to_owned()).or_default().push(r);
                    }
                    _ => tracing::warn!(
                        key,
                        "ACME challenge record left out: not a record of its zone"
                    ),
                }
            }
            StoreKey::Tsig(_) => match serde_json::from_slice::<TsigKey>(value) {
                Ok(t) => {
                    tsigs.insert(t.id.clone(), t);
                }
                Err(e) => errors.push(err(format!("not a TSIG key: {e}"))),
            },
            StoreKey::Peer(_) => match serde_json::from_slice::<Peer>(value) {
                Ok(p) => {
                    peers.insert(p.id.clone(), p);
                }
                Err(e) => errors.push(err(format!("not a peer: {e}"))),
            },
            StoreKey::Outgoing(_) => match serde_json::from_slice::<Outgoing>(value) {
                Ok(o) => outgoing.push((key.to_owned(), o)),
                Err(e) => errors.push(err(format!("not outgoing transfer settings: {e}"))),
            },
            StoreKey::Settings(zone_id) => match serde_json::from_slice::<ZoneSettings>(value) {
                Ok(s) if s.zone_id == zone_id => match s.validate() {
                    Ok(()) => zone_edge.entry(s.zone_id.clone()).or_default().settings = s.edge(),
                    Err(e) => errors.push(err(e.to_string())),
                },
                Ok(_) => errors.push(err("zone id does not match its key".into())),
                Err(e) => errors.push(err(format!("not zone settings: {e}"))),
            },
            StoreKey::Ruleset { zone_id, phase }
                if phase == ORIGIN_PHASE || phase == CACHE_PHASE =>
            {
                match serde_json::from_slice::<Ruleset>(value) {
                    Ok(r) if r.zone_id == zone_id && r.phase == phase => match r.compile() {
                        Ok(rules) => {
                            let edge = zone_edge.entry(r.zone_id.clone()).or_default();
                            if phase == CACHE_PHASE {
                                edge.cache_rules = rules;
                            } else {
                                edge.origin_rules = rules;
                            }
                        }
                        Err(e) => errors.push(err(e.to_string())),
                    },
                    Ok(_) => errors.push(err("zone id does not match its key".into())),
                    Err(e) => errors.push(err(format!("not a ruleset: {e}"))),
                }
            }
            StoreKey::TrustedCa { zone_id, id } => match serde_json::from_slice::<TrustedCa>(value)
            {
                Ok(c) if c.zone_id == zone_id && c.id == id => {
                    let edge = zone_edge.entry(c.zone_id.clone()).or_default();
                    edge.trust_store.push(Arc::new(c));
                    edge.trust_store.sort_by(|a, b| a.id.cmp(&b.id));
                }
                Ok(_) => errors.push(err("certificate or zone id does not match its key".into())),
                Err(e) => errors.push(err(format!("not a trusted CA certificate: {e}"))),
            },
            StoreKey::OriginPullCert { zone_id, cert_id } => {
                match serde_json::from_slice::<OriginPullCertificate>(value) {
                    Ok(c) if c.zone_id == zone_id && c.id == cert_id => {
                        let edge = zone_edge.entry(c.zone_id.clone()).or_default();
                        let newer = edge
                            .origin_pull
                            .as_ref()
                            .is_none_or(|old| old.uploaded_on < c.uploaded_on);
                        if newer {
                            edge.origin_pull = Some(Arc::new(c));
                        }
                    }
                    Ok(_) => {
                        errors.push(err("certificate or zone id does not match its key".into()))
                    }
                    Err(e) => errors.push(err(format!("not an origin pull certificate: {e}"))),
                }
            }
            StoreKey::AcmeHttp(token) => match serde_json::from_slice::<AcmeResponse>(value) {
                Ok(r) if r.token == token => {
                    acme_http.insert(r.token.clone(), Arc::new(r));
                }
                Ok(_) => errors.push(err("token does not match its key".into())),
                Err(e) => errors.push(err(format!("not an ACME challenge answer: {e}"))),
            },
            StoreKey::AcmeAlpn(host) => match serde_json::from_slice::<AcmeResponse>(value) {
                Ok(r) if r.hostname == host => {
                    acme_alpn.insert(r.hostname.clone(), Arc::new(r));
                }
                Ok(_) => errors.push(err("host name does not match its key".into())),
                Err(e) => errors.push(err(format!("not an ACME challenge answer: {e}"))),
            },
            StoreKey::OriginRevoked(digest) => {
                match serde_json::from_slice::<RevokedOriginCertificate>(value) {
                    Ok(r) if r.sha256 == digest => match <[u8; 32]>::try_from(
                        hex::decode(digest).unwrap_or_default().as_slice(),
                    ) {
                        Ok(bytes) => {
                            revoked_origin_certs.insert(bytes);
                        }
                        Err(_) => errors.push(err("not a SHA-256 digest in hex".into())),
                    },
                    Ok(_) => errors.push(err("digest does not match its key".into())),
                    Err(e) => errors.push(err(format!("not a revoked certificate: {e}"))),
                }
            }
            StoreKey::AutoCert(host) => match serde_json::from_slice::<AutoCertificate>(value) {
                Ok(c) if c.hostname == host => {
                    auto_certs.insert(c.hostname.clone(), Arc::new(c));
                }
                Ok(_) => errors.push(err("host name does not match its key".into())),
                Err(e) => errors.push(err(format!("not an automatic certificate: {e}"))),
            },
            StoreKey::CustomCert { zone_id, cert_id } => {
                match serde_json::from_slice::<CustomCertificate>(value) {
                    Ok(c) if c.zone_id == zone_id && c.id == cert_id => {
                        custom_certs
                            .entry(c.zone_id.clone())
                            .or_default()
                            .push(Arc::new(c));
                    }
                    Ok(_) => {
                        errors.push(err("certificate or zone id does not match its key".into()))
                    }
                    Err(e) => errors.push(err(format!("not a custom certificate: {e}"))),
                }
            }
            _ => {}
        }
    }
    // A key that names something gone (its zone, a peer, a TSIG key) is left out with a
    // warning, never a reason to reject the whole snapshot: the API does not write one, but a
    // node that refused every later change over one stale key would serve none of them.
    let mut transfers: HashMap<String, Vec<TransferPeer>> = HashMap::new();
    for (key, o) in &outgoing {
        let Some(zone) = zones.get(&o.zone_id) else {
            tracing::warn!(key, "outgoing transfers left out: the zone does not exist");
            continue;
        };
        // Disabled: no peer may transfer the zone or is notified.
        if !o.enabled {
            continue;
        }
        for peer_id in &o.peers {
            let Some(peer) = peers.get(peer_id) else {
                tracing::warn!(key, peer_id, "transfer peer left out: it does not exist");
                continue;
            };
            let tsig = match &peer.tsig_id {
                Some(t) => match tsigs.get(t) {
                    Some(k) => Some(k.clone()),
                    None => {
                        // Never transferred unsigned: the peer expects its key.
                        tracing::warn!(
                            key,
                            peer_id,
                            tsig_id = %t,
                            "transfer peer left out: its TSIG key does not exist"
                        );
                        continue;
                    }
                },
                None => None,
            };
            // A peer without an address cannot transfer yet; it is kept but unused.
            if let Some(ip) = peer.ip {
                transfers
                    .entry(zone.name.clone())
                    .or_default()
                    .push(TransferPeer {
                        addr: SocketAddr::new(ip, peer.port),
                        tsig,
                        ixfr: peer.ixfr_enable,
                        notifies: o.notifies,
                    });
            }
        }
    }
    if let Some(reuse) = &reuse {
        // The records of changed zones: the previous snapshot's, with the writes since applied.
        for (zone_id, z) in &previous {
            if reusable.contains_key(zone_id) && zones.get(*zone_id) == Some(&z.zone) {
                continue; // Taken as it is below.
            }
            let written = reuse.records.zones.get(*zone_id);
            // Records were validated for the zone's name: a renamed zone validates them again.
            let validated = zones
                .get(*zone_id)
                .is_some_and(|now| now.name == z.zone.name);
            let kept = records.entry((*zone_id).to_owned()).or_default();
            kept.reserve(z.records.len());
            kept.extend(
                z.records
                    .iter()
                    .filter(|r| written.is_none_or(|w| !w.contains(r.id.as_str())))
                    .map(|r| Candidate {
                        record: Arc::clone(r),
                        validated,
                    }),
            );
        }
        for (zone_id, written) in &reuse.records.zones {
            for write in written {
                match write {
                    RecordWrite::Deleted(_) => {}
                    RecordWrite::Written(record) => {
                        records.entry(zone_id.clone()).or_default().push(Candidate {
                            record: Arc::clone(record),
                            validated: false,
                        })
                    }
                    RecordWrite::Invalid { id, message } => errors.push(CompileError {
                        key: crate::keys::record_key(zone_id, id),
                        message: message.clone(),
                    }),
                }
            }
        }
    }
    let mut by_name = BTreeMap::new();
    let mut proxied_hosts: HashMap<String, ProxiedHost> = HashMap::new();
    records.retain(|zone_id, zone_records| {
        if zones.contains_key(zone_id) {
            sort_candidates(zone_records);
            return true;
        }
        if !zone_records.is_empty() {
            errors.push(CompileError {
                key: format!("records/{zone_id}/"),
                message: format!(
                    "{} records belong to a zone that does not exist",
                    zone_records.len()
                ),
            });
        }
        false
    });
    // A name belongs to the most specific zone that holds it (as DNS answers it): a record a
    // parent zone keeps for a name inside a child zone is not proxied.
    let zone_names: std::collections::HashSet<String> =
        zones.values().map(|z| z.name.clone()).collect();
    let in_a_child_zone = |name: &str, zone_name: &str| {
        let mut at = name;
        while at.len() > zone_name.len() {
            if zone_names.contains(at) {
                return true;
            }
            match at.split_once('.') {
                Some((_, parent)) => at = parent,
                None => break,
            }
        }
        false
    };
    for (zone_id, zone) in zones {
        let active = zone.status == ZoneStatus::Active && !zone.paused;
        let shared_id: Arc<str> = Arc::from(zone_id.as_str());
        let zone_name = zone.name.clone();
        // A name at or below a delegation is answered with a referral, not proxied.
        let mut add_proxied = |r: &DnsRecord, zone: &ZoneSnapshot| {
            if r.proxied
                && matches!(r.kind, RecordType::A | RecordType::AAAA | RecordType::CNAME)
                && !in_a_child_zone(&r.name, &zone_name)
                && !zone.delegated(&r.name)
            {
                proxied_hosts
                    .entry(r.name.clone())
                    .or_insert_with(|| ProxiedHost {
                        zone_id: Arc::clone(&shared_id),
                        active,
                        origins: Vec::new(),
                        addresses: None,
                    })
                    .origins
                    .push(r.content.clone());
            }
        };
        if let Some(previous) = reusable.get(zone_id.as_str())
            && previous.zone == zone
        {
            // Unchanged: the previous snapshot's zone, with its proxied names.
            previous
                .records
                .iter()
                .for_each(|r| add_proxied(r, previous));
            if let Some(other) = by_name.insert(zone.name.clone(), Arc::clone(previous)) {
                errors.push(CompileError {
                    key: format!("zones/{zone_id}"),
                    message: format!(
                        "zone name {} is also used by zone {}",
                        zone.name, other.zone.id
                    ),
                });
            }
            continue;
        }
        let candidates = records.remove(&zone_id).unwrap_or_default();
        // Records are sorted by name: the records sharing a name are one contiguous run. A run
        // of records validated together before is still valid: only the runs holding a record
        // not validated yet are checked.
        let mut checked_to = 0;
        let mut same_name = SameName::default();
        for at in (0..candidates.len()).filter(|&i| !candidates[i].validated) {
            if at < checked_to {
                continue;
            }
            let name = &candidates[at].record.name;
            let same = |i: &usize| candidates[*i].record.name == *name;
            let start = (0..at).rev().take_while(same).last().unwrap_or(at);
            let end = (at..candidates.len()).take_while(same).last().unwrap_or(at) + 1;
            let run = &candidates[start..end];
            same_name.clear();
            for c in run {
                same_name.push(&c.record);
            }
            for (i, c) in run.iter().enumerate() {
                check_record(&zone, c, (i, run, &same_name), &mut errors);
            }
            checked_to = end;
        }
        let zone_records: Vec<Arc<DnsRecord>> = candidates.into_iter().map(|c| c.record).collect();
        let challenges: Vec<DnsRecord> = match challenges.remove(&zone_id) {
            Some(answers) => {
                let taken: HashSet<&str> = zone_records
                    .iter()
                    .filter(|r| r.kind == RecordType::CNAME)
                    .map(|r| r.name.as_str())
                    .collect();
                answers
                    .into_iter()
                    .filter(|c| !taken.contains(c.name.as_str()))
                    .collect()
            }
            None => Vec::new(),
        };
        let compiled = Arc::new(ZoneSnapshot::new(zone.clone(), zone_records, challenges));
        compiled
            .records
            .iter()
            .for_each(|r| add_proxied(r, &compiled));
        if let Some(previous) = by_name.insert(zone.name.clone(), compiled) {
            errors.push(CompileError {
                key: format!("zones/{zone_id}"),
                message: format!(
                    "zone name {} is also used by zone {}",
                    zone.name, previous.zone.id
                ),
            });
        }
    }
    let mut edges = HashMap::with_capacity(zone_edge.len());
    let zone_ids: std::collections::HashSet<&str> =
        by_name.values().map(|z| z.zone.id.as_str()).collect();
    for (zone_id, edge) in zone_edge {
        if !zone_ids.contains(zone_id.as_str()) {
            tracing::warn!(
                zone_id,
                "settings, rules and certificates left out: the zone does not exist"
            );
            continue;
        }
        edges.insert(zone_id, Arc::new(edge));
    }
    custom_certs.retain(|zone_id, certs| {
        let kept = zone_ids.contains(zone_id.as_str());
        if !kept {
            tracing::warn!(
                zone_id,
                count = certs.len(),
                "custom certificates left out: the zone does not exist"
            );
        }
        kept
    });
    for host in proxied_hosts.values_mut() {
        host.addresses = host
            .origins
            .iter()
            .map(|o| o.parse().ok())
            .collect::<Option<Vec<_>>>()
            .map(Arc::from);
    }
    if errors.is_empty() {
        Ok(Snapshot {
            revision,
            transfers,
            zones: by_name,
            proxied_hosts,
            zone_edge: edges,
            custom_certs,
            auto_certs,
            acme_http,
            acme_alpn,
            revoked_origin_certs,
        })
    } else {
        errors.sort_by(|a, b| a.key.cmp(&b.key));
        Err(errors)
    }
}

fn by_name_type_content(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    a.record.order_key().cmp(&b.record.order_key())
}

/// Sorts a zone's records by (name, type, content). Records taken from the previous snapshot
/// come first, in its order: the few written since are placed among them by binary search, so
/// that a change to a large zone does not compare every record.
fn sort_candidates(candidates: &mut Vec<Candidate>) {
    const FEW: usize = 256;
    let kept = candidates.iter().take_while(|c| c.validated).count();
    if kept == 0 || candidates.len() - kept > FEW {
        candidates.sort_by(by_name_type_content);
        return;
    }
    let mut written = candidates.split_off(kept);
    written.sort_by(by_name_type_content);
    let places: Vec<usize> = written
        .iter()
        .map(|c| candidates.partition_point(|k| by_name_type_content(k, c).is_le()))
        .collect();
    let mut kept = std::mem::take(candidates).into_iter();
    let mut merged = Vec::with_capacity(kept.len() + written.len());
    let mut taken = 0;
    for (c, place) in written.into_iter().zip(places) {
        merged.extend(kept.by_ref().take(place - taken));
        taken = place;
        merged.push(c);
    }
    merged.extend(kept);
    *candidates = merged;
}

/// A stored record, checked against its key.
fn parse_record(
    zone_id: &str,
    record_id: &str,
    value: &[u8],
    shared: &mut Shared,
) -> Result<Arc<DnsRecord>, String> {
    match serde_json::from_slice::<DnsRecord>(value) {
        Ok(mut r) if r.id == record_id && *r.zone_id == *zone_id => {
            for s in [&mut r.zone_id, &mut r.created_on, &mut r.modified_on] {
                shared.share(s);
            }
            Ok(Arc::new(r))
        }
        Ok(_) => Err("record id or zone id does not match its key".into()),
        Err(e) => Err(format!("not a DNS record: {e}")),
    }
}

/// Checks that `c` is still a record the API would accept, alone (unless validated before) and
/// with the other records at its name (`run`, where `c` is at `position`, indexed in `same_name`).
fn check_record(
    zone: &Zone,
    c: &Candidate,
    (position, run, same_name): (usize, &[Candidate], &SameName),
    errors: &mut Vec<CompileError>,
) {
    let r = &c.record;
    let key = format!("records/{}/{}", zone.id, r.id);
    let draft = if c.validated {
        Ok(r.to_draft())
    } else {
        RecordDraft::from_json(&zone.name, &serde_json::Value::Object(r.editable_json()))
    };
    match draft {
        Ok(d) if d.content == r.content => {
            let apex = d.name == zone.name;
            if let Err(c) = same_name.check((&d, apex), Some(position), |i| run[i].record.as_ref())
            {
                errors.push(CompileError {
                    key,
                    message: c.message,
                });
            }
        }
        Ok(_) => errors.push(CompileError {
            key,
            message: "content is not in canonical form".into(),
        }),
        Err(e) => errors.push(CompileError {
            key,
            message: e.to_string(),
        }),
    }
}
