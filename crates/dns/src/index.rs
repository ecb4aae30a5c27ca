//! The DNS view of a snapshot: per zone, every owner name with its RRsets in wire-ready form,
//! empty non-terminals, delegation points, and the apex SOA/NS Parapet serves.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, MX, NS, NULL, PTR, SVCB, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use parapet_model::zonefile::soa_rdata;
use parapet_model::{DnsRecord, RecordType as Kind, Zone, ZoneStatus};
use parapet_snapshot::{Snapshot, ZoneSnapshot};

use crate::wire;

/// TTL served for records with automatic TTL (`ttl: 1`) and for proxied answers, as Cloudflare.
pub const AUTO_TTL: u32 = 300;
const SOA_TTL: u32 = 3600;
const APEX_NS_TTL: u32 = 86_400;
/// The SOA minimum field Parapet serves (see `soa_rdata`).
const SOA_MINIMUM: u32 = 1800;

/// The addresses answered for proxied names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeAddrs {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// One record's data. Addresses, most of a large zone, are held inline in 24 bytes; anything
/// else is boxed (hickory's `RData` takes 184).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Other(Box<RData>),
}

impl From<RData> for Rdata {
    fn from(rdata: RData) -> Self {
        match rdata {
            RData::A(a) => Self::A(a.0),
            RData::AAAA(a) => Self::Aaaa(a.0),
            other => Self::Other(Box::new(other)),
        }
    }
}

impl Rdata {
    /// The data as hickory writes it.
    pub fn to_rdata(&self) -> RData {
        match self {
            Self::A(ip) => RData::A(A(*ip)),
            Self::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            Self::Other(rdata) => rdata.as_ref().clone(),
        }
    }

    /// The data of any type but A and AAAA.
    pub fn other(&self) -> Option<&RData> {
        match self {
            Self::Other(rdata) => Some(rdata),
            _ => None,
        }
    }
}

/// The records of one type at one name.
#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: RecordType,
    pub ttl: u32,
    pub rdatas: Vec<Rdata>,
}

/// One owner name. No RRsets: an empty non-terminal.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub rrsets: Vec<RRset>,
}

impl Node {
    pub fn get(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }
}

/// A zone's owner names: as built, and the names changed since. A change to a large zone
/// builds only the names it touches, and shares the rest with the index before it.
#[derive(Debug, Default)]
pub struct Nodes {
    base: Arc<HashMap<String, Node>>,
    /// Names built again since `base`: `None` for a name that no longer exists.
    changed: HashMap<String, Option<Node>>,
}

impl Nodes {
    fn new(nodes: HashMap<String, Node>) -> Self {
        Self {
            base: Arc::new(nodes),
            changed: HashMap::new(),
        }
    }

    pub fn get_key_value(&self, name: &str) -> Option<(&String, &Node)> {
        if !self.changed.is_empty()
            && let Some((key, node)) = self.changed.get_key_value(name)
        {
            return node.as_ref().map(|n| (key, n));
        }
        self.base.get_key_value(name)
    }

    pub fn get(&self, name: &str) -> Option<&Node> {
        self.get_key_value(name).map(|(_, n)| n)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every owner name with its node.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        let kept = self
            .base
            .iter()
            .filter(|(k, _)| self.changed.is_empty() || !self.changed.contains_key(k.as_str()));
        let changed = self
            .changed
            .iter()
            .filter_map(|(k, n)| n.as_ref().map(|n| (k, n)));
        kept.chain(changed)
    }

    /// Every owner name.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(k, _)| k)
    }

    /// Names built again since the zone was last built whole.
    pub fn changed_len(&self) -> usize {
        self.changed.len()
    }

    /// The names whose nodes may differ between `self` and `other`, when both were built from
    /// the same whole build (names outside both overlays are that build's, shared); `None`
    /// otherwise.
    pub(crate) fn differing_names<'a>(
        &'a self,
        other: &'a Nodes,
    ) -> Option<std::collections::BTreeSet<&'a str>> {
        Arc::ptr_eq(&self.base, &other.base).then(|| {
            self.changed
                .keys()
                .chain(other.changed.keys())
                .map(String::as_str)
                .collect()
        })
    }

    /// A node of an index being built (not shared yet).
    fn get_mut(&mut self, name: &str) -> Option<&mut Node> {
        if let Some(node) = self.changed.get_mut(name) {
            return node.as_mut();
        }
        Arc::get_mut(&mut self.base)?.get_mut(name)
    }
}

/// One zone ready to answer from.
#[derive(Debug)]
pub struct ZoneIndex {
    /// Lowercase, without the trailing dot.
    pub origin: String,
    pub origin_name: Name,
    /// By lowercase owner name without the trailing dot.
    pub nodes: Nodes,
    /// TTL of negative answers: min(SOA TTL, SOA minimum).
    pub negative_ttl: u32,
    /// The zone's SOA serial.
    pub serial: u32,
    /// Secondaries allowed to transfer the zone, notified when it changes.
    pub transfer_peers: Vec<parapet_snapshot::TransferPeer>,
    /// The snapshot zone this was built from: the next index reuses it while the snapshot
    /// still holds the same zone.
    source: Option<Arc<parapet_snapshot::ZoneSnapshot>>,
    /// The apex has a CNAME (flattened with data from other zones or a resolver, so never
    /// reused).
    apex_cname: bool,
}

impl ZoneIndex {
    pub fn node(&self, key: &str) -> Option<&Node> {
        self.nodes.get(key)
    }

    pub fn soa(&self) -> Option<&RRset> {
        self.nodes
            .get(&self.origin)
            .and_then(|n| n.get(RecordType::SOA))
    }
}

/// Every zone, by lowercase name, and the responses already computed from them.
#[derive(Debug, Default)]
pub struct DnsIndex {
    pub revision: u64,
    pub zones: HashMap<String, Arc<ZoneIndex>>,
    pub(crate) cache: crate::fast::ResponseCache,
}

impl DnsIndex {
    /// How many responses the answer cache holds.
    pub fn cached_responses(&self) -> usize {
        self.cache.len()
    }

    /// The zone `key` (lowercase, no trailing dot) belongs to: the longest enclosing zone.
    pub fn zone_for(&self, key: &str) -> Option<&Arc<ZoneIndex>> {
        let mut candidate = key;
        loop {
            if let Some(z) = self.zones.get(candidate) {
                return Some(z);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }

    /// Builds the index; records that cannot be encoded are skipped and reported. A zone of
    /// `previous` built from the same snapshot zone (and with the same secondaries) is reused
    /// as it is, so a change costs in proportion to the zones it touches.
    pub fn build(
        snapshot: &Snapshot,
        edge: &EdgeAddrs,
        external: Option<&crate::flatten::Flattener>,
        previous: Option<&DnsIndex>,
    ) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut reused: HashMap<String, Arc<ZoneIndex>> = HashMap::new();
        let mut fresh: HashMap<String, ZoneIndex> = HashMap::new();
        for z in snapshot.zones.values() {
            let peers = snapshot
                .transfers
                .get(&z.zone.name)
                .cloned()
                .unwrap_or_default();
            if let Some(old) = previous.and_then(|p| p.zones.get(&z.zone.name))
                && !old.apex_cname
                && old.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, z))
                && old.transfer_peers == peers
            {
                reused.insert(z.zone.name.clone(), Arc::clone(old));
                continue;
            }
            let old = previous.and_then(|p| p.zones.get(&z.zone.name));
            let mut zone = match old.and_then(|old| update_zone(old, z, edge, &mut warnings)) {
                Some(updated) => updated,
                None => build_zone(z, edge, &mut warnings),
            };
            zone.transfer_peers = peers;
            zone.source = Some(Arc::clone(z));
            zone.apex_cname = zone
                .nodes
                .get(&zone.origin)
                .is_some_and(|apex| apex.get(RecordType::CNAME).is_some());
            fresh.insert(z.zone.name.clone(), zone);
        }
        let mut zones = flatten_apex_cnames(fresh, &reused, external, previous, &mut warnings);
        zones.extend(reused);
        (
            Self {
                revision: snapshot.revision,
                zones,
                cache: crate::fast::ResponseCache::default(),
            },
            warnings,
        )
    }
}

/// A and AAAA data for a flattened name, and their TTL.
type Flattened = (Vec<Rdata>, Vec<Rdata>, u32);

/// The A and AAAA records `target` resolves to inside Parapet's zones, following CNAMEs, with
/// the lowest TTL met on the way; `None` if the chain leaves Parapet's zones or loops.
fn resolve_inside(
    zones: &HashMap<String, ZoneIndex>,
    others: &HashMap<String, Arc<ZoneIndex>>,
    target: &str,
) -> Option<Flattened> {
    let mut name = target.trim_end_matches('.').to_ascii_lowercase();
    let mut ttl = u32::MAX;
    for _ in 0..8 {
        let zone = {
            let mut candidate = name.as_str();
            loop {
                if let Some(z) = zones
                    .get(candidate)
                    .or_else(|| others.get(candidate).map(Arc::as_ref))
                {
                    break z;
                }
                candidate = candidate.split_once('.')?.1;
            }
        };
        let node = zone.nodes.get(&name)?;
        if let Some(cname) = node.get(RecordType::CNAME) {
            let RData::CNAME(next) = cname.rdatas.first()?.other()? else {
                return None;
            };
            ttl = ttl.min(cname.ttl);
            name = next.0.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            continue;
        }
        let v4 = node
            .get(RecordType::A)
            .map(|s| {
                ttl = ttl.min(s.ttl);
                s.rdatas.clone()
            })
            .unwrap_or_default();
        let v6 = node
            .get(RecordType::AAAA)
            .map(|s| {
                ttl = ttl.min(s.ttl);
                s.rdatas.clone()
            })
            .unwrap_or_default();
        return Some((v4, v6, ttl));
    }
    None
}

/// CNAME flattening at the apex, as Cloudflare does: a CNAME cannot sit beside the zone's SOA
/// and NS, so the apex answers with the addresses the target resolves to instead.
fn flatten_apex_cnames(
    mut zones: HashMap<String, ZoneIndex>,
    others: &HashMap<String, Arc<ZoneIndex>>,
    external: Option<&crate::flatten::Flattener>,
    previous: Option<&DnsIndex>,
    warnings: &mut Vec<String>,
) -> HashMap<String, Arc<ZoneIndex>> {
    let apexes: Vec<(String, String)> = zones
        .iter()
        .filter_map(|(name, z)| {
            let cname = z.nodes.get(name)?.get(RecordType::CNAME)?;
            match cname.rdatas.first().and_then(Rdata::other) {
                Some(RData::CNAME(t)) => Some((name.clone(), t.0.to_ascii())),
                _ => None,
            }
        })
        .collect();
    let resolved: Vec<(String, Option<Flattened>)> = apexes
        .iter()
        .map(|(zone, target)| {
            let inside = resolve_inside(&zones, others, target);
            // Outside Parapet's zones: the resolver's cached answer, if there is one yet.
            let outside = || {
                let e = external?.addresses(target)?;
                let v4 = e.v4.into_iter().map(Rdata::A).collect();
                let v6 = e.v6.into_iter().map(Rdata::Aaaa).collect();
                Some((v4, v6, e.ttl))
            };
            (zone.clone(), inside.or_else(outside))
        })
        .collect();
    for (zone, addresses) in resolved {
        let Some(z) = zones.get_mut(&zone) else {
            continue;
        };
        let Some(apex) = z.nodes.get_mut(&zone) else {
            continue;
        };
        apex.rrsets.retain(|set| set.rtype != RecordType::CNAME);
        match addresses {
            Some((v4, v6, ttl)) => {
                for (rtype, rdatas) in [(RecordType::A, v4), (RecordType::AAAA, v6)] {
                    if !rdatas.is_empty() && apex.get(rtype).is_none() {
                        apex.rrsets.push(RRset { rtype, ttl, rdatas });
                    }
                }
                apex.rrsets.sort_by_key(|set| u16::from(set.rtype));
            }
            None => warnings.push(format!(
                "zone {zone}: the apex CNAME's target is not resolved yet; the apex has no addresses until it is"
            )),
        }
        let before = previous.and_then(|p| p.zones.get(&zone)).map(Arc::as_ref);
        keep_serial_honest(z, before, crate::unix_now(), warnings);
    }
    zones.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// A flattened apex changes with data from elsewhere (another zone, a resolver), which the
/// stored serial does not follow. Secondaries fetch a zone only when its serial grows (RFC
/// 1996), so the served serial moves past the last one served whenever the data may differ
/// from what was served under it: when the flattened addresses or the stored serial changed,
/// and on the first build (a restart), when what was served before is unknown.
fn keep_serial_honest(
    z: &mut ZoneIndex,
    before: Option<&ZoneIndex>,
    now: u32,
    warnings: &mut Vec<String>,
) {
    let addresses = |zone: &ZoneIndex| -> Vec<(RecordType, u32, Vec<Rdata>)> {
        zone.node(&zone.origin)
            .map(|apex| {
                apex.rrsets
                    .iter()
                    .filter(|set| matches!(set.rtype, RecordType::A | RecordType::AAAA))
                    .map(|set| (set.rtype, set.ttl, set.rdatas.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let stored = z.serial;
    let stored_before = before
        .and_then(|b| b.source.as_ref())
        .map(|s| s.zone.serial);
    let served = match before {
        Some(b) if stored_before == Some(stored) && addresses(b) == addresses(z) => b.serial,
        Some(b) => later_serial(stored, b.serial.wrapping_add(1)),
        None => later_serial(stored, now),
    };
    if served == z.serial {
        return;
    }
    let Some(source) = z.source.as_ref() else {
        return;
    };
    let mut zone = source.zone.clone();
    zone.serial = served;
    let soa = match RData::try_from_str(RecordType::SOA, &soa_rdata(&zone)) {
        Ok(soa) => Rdata::from(soa),
        Err(e) => {
            warnings.push(format!("zone {}: SOA: {e}", zone.name));
            return;
        }
    };
    let origin = z.origin.clone();
    if let Some(set) = z
        .nodes
        .get_mut(&origin)
        .and_then(|apex| apex.rrsets.iter_mut().find(|s| s.rtype == RecordType::SOA))
    {
        set.rdatas = vec![soa];
        z.serial = served;
    }
}

/// The later of two serials in serial-number arithmetic (RFC 1982).
fn later_serial(a: u32, b: u32) -> u32 {
    if crate::serial_after(b, a) { b } else { a }
}

fn fqdn(name: &str) -> Result<Name, String> {
    if name == "." {
        return Ok(Name::root());
    }
    Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())
}

/// Service parameters in key order, as the wire wants them (RFC 9460 §2.2; the presentation
/// form may give them in any order); a key given twice makes the record invalid.
fn svc_params_in_order(mut svcb: SVCB) -> Result<SVCB, String> {
    svcb.svc_params.sort_by_key(|(key, _)| *key);
    // Compared by number: `key1` and `alpn` are the same key.
    if svcb
        .svc_params
        .windows(2)
        .any(|w| u16::from(w[0].0) == u16::from(w[1].0))
    {
        return Err("a service parameter key is given twice".into());
    }
    Ok(svcb)
}

/// Converts one stored record to wire data.
pub fn record_rdata(r: &DnsRecord) -> Result<RData, String> {
    // Records stored before their `\DDD` escapes were written out are read as they are now
    // (those whose escapes are refused now are read as before, not dropped).
    let parse = |kind: RecordType| {
        let mut text = r.rdata_text();
        if parapet_model::record::decimal_escapes(r.kind, &mut text).is_err() {
            text = r.rdata_text();
        }
        RData::try_from_str(kind, &text).map_err(|e| e.to_string())
    };
    let unknown = |code: u16, bytes: Vec<u8>| RData::Unknown {
        code: RecordType::from(code),
        rdata: NULL::with(bytes),
    };
    Ok(match r.kind {
        Kind::A => RData::A(A(r
            .content
            .parse::<Ipv4Addr>()
            .map_err(|e| e.to_string())?)),
        Kind::AAAA => RData::AAAA(AAAA(
            r.content.parse::<Ipv6Addr>().map_err(|e| e.to_string())?,
        )),
        Kind::CNAME => RData::CNAME(CNAME(fqdn(&r.content)?)),
        Kind::NS => RData::NS(NS(fqdn(&r.content)?)),
        Kind::PTR => RData::PTR(PTR(fqdn(&r.content)?)),
        Kind::MX => RData::MX(MX::new(r.priority.unwrap_or(0), fqdn(&r.content)?)),
        Kind::TXT => {
            let strings = wire::txt_strings(&r.content);
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        Kind::SRV => parse(RecordType::SRV)?,
        Kind::CAA => parse(RecordType::CAA)?,
        Kind::HTTPS => match parse(RecordType::HTTPS)? {
            RData::HTTPS(HTTPS(svcb)) => RData::HTTPS(HTTPS(svc_params_in_order(svcb)?)),
            other => other,
        },
        Kind::SVCB => match parse(RecordType::SVCB)? {
            RData::SVCB(svcb) => RData::SVCB(svc_params_in_order(svcb)?),
            other => other,
        },
        Kind::TLSA => parse(RecordType::TLSA)?,
        Kind::SSHFP => parse(RecordType::SSHFP)?,
        Kind::NAPTR => parse(RecordType::NAPTR)?,
        Kind::CERT => parse(RecordType::CERT)?,
        Kind::DS => unknown(43, wire::ds(&r.content)?),
        Kind::LOC => unknown(29, wire::loc(&r.content)?),
        Kind::URI => unknown(256, wire::uri(r)?),
        Kind::DNSKEY => unknown(48, wire::dnskey(&r.content)?),
        Kind::SMIMEA => unknown(53, wire::smimea(&r.content)?),
        Kind::OPENPGPKEY => unknown(61, wire::base64(&r.content)?),
    })
}

fn wire_type(kind: Kind) -> RecordType {
    match kind {
        Kind::DS => RecordType::from(43),
        Kind::LOC => RecordType::from(29),
        Kind::URI => RecordType::from(256),
        Kind::DNSKEY => RecordType::from(48),
        Kind::SMIMEA => RecordType::from(53),
        Kind::OPENPGPKEY => RecordType::from(61),
        other => RecordType::from(other.as_str().parse::<RecordType>().map_or(0, u16::from)),
    }
}

fn push(nodes: &mut HashMap<String, Node>, owner: &str, rtype: RecordType, ttl: u32, rdata: RData) {
    let rdata = Rdata::from(rdata);
    let node = match nodes.get_mut(owner) {
        Some(node) => node,
        // Most names hold one RRset of one record: allocated at their size.
        None => nodes.entry(owner.to_owned()).or_insert_with(|| Node {
            rrsets: Vec::with_capacity(1),
        }),
    };
    match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
        Some(set) => {
            // An RRset has one TTL (RFC 2181 §5.2): the lowest given wins. Repeated data is
            // dropped once the set is sorted (`finish`): a name may hold many records.
            set.ttl = set.ttl.min(ttl);
            set.rdatas.push(rdata);
        }
        None => node.rrsets.push(RRset {
            rtype,
            ttl,
            rdatas: vec![rdata],
        }),
    }
}

/// Adds the RRsets of the apex that come from the zone itself: the SOA and Parapet's NS set.
fn add_apex(nodes: &mut HashMap<String, Node>, zone: &Zone, warnings: &mut Vec<String>) {
    let origin = zone.name.as_str();
    match RData::try_from_str(RecordType::SOA, &soa_rdata(zone)) {
        Ok(soa) => push(nodes, origin, RecordType::SOA, SOA_TTL, soa),
        Err(e) => warnings.push(format!("zone {origin}: SOA: {e}")),
    }
    for ns in &zone.name_servers {
        match fqdn(ns) {
            Ok(n) => push(nodes, origin, RecordType::NS, APEX_NS_TTL, RData::NS(NS(n))),
            Err(e) => warnings.push(format!("zone {origin}: nameserver {ns}: {e}")),
        }
    }
}

/// Adds the RRsets of the records at one name (`at`, all of them).
fn add_name(
    nodes: &mut HashMap<String, Node>,
    zone: &Zone,
    at: &[&DnsRecord],
    edge: &EdgeAddrs,
    warnings: &mut Vec<String>,
) {
    let Some(first) = at.first() else { return };
    let name = first.name.as_str();
    let serving_edge = zone.status == ZoneStatus::Active && !zone.paused;
    // Any proxied A/AAAA/CNAME makes the name proxied: it answers with the edge's addresses,
    // and its origin stays hidden.
    let proxied = serving_edge && at.iter().any(|r| r.proxied && r.kind.proxiable());
    if proxied {
        // A proxied record's `ipv4_only` / `ipv6_only` setting keeps the other family out.
        let only = |v4: bool| {
            at.iter().any(|r| {
                r.proxied
                    && if v4 {
                        r.settings.ipv4_only == Some(true)
                    } else {
                        r.settings.ipv6_only == Some(true)
                    }
            })
        };
        let (v4, v6) = (!only(false), !only(true));
        for ip in edge.v4.iter().filter(|_| v4) {
            push(nodes, name, RecordType::A, AUTO_TTL, RData::A(A(*ip)));
        }
        for ip in edge.v6.iter().filter(|_| v6) {
            push(
                nodes,
                name,
                RecordType::AAAA,
                AUTO_TTL,
                RData::AAAA(AAAA(*ip)),
            );
        }
    }
    for r in at {
        if r.kind == Kind::NS && r.name == zone.name {
            continue; // The apex NS set is Parapet's nameservers.
        }
        if proxied && r.kind.proxiable() {
            continue;
        }
        match record_rdata(r) {
            Ok(rdata) => {
                let ttl = if r.ttl == 1 { AUTO_TTL } else { r.ttl };
                push(nodes, &r.name, wire_type(r.kind), ttl, rdata);
            }
            Err(e) => warnings.push(format!("{} record {} ({}): {e}", r.kind, r.name, r.id)),
        }
    }
}

/// RRsets in type-code order: ANY answers with the first (as Knot does); records inside an
/// RRset in canonical order (RFC 4034 §6.3), so answers are stable whatever the input order,
/// and each once (two proxied records at a name both give the edge's addresses).
fn finish(node: &mut Node) {
    node.rrsets.sort_by_key(|set| u16::from(set.rtype));
    for set in &mut node.rrsets {
        if set.rdatas.len() > 1 {
            set.rdatas.sort_by_cached_key(canonical_bytes);
            set.rdatas.dedup();
        }
    }
}

/// A datum in canonical form (RFC 4034 §6.2: names uncompressed and lowercase), by which an
/// RRset is ordered; equal data (names compare without case) are equal here.
fn canonical_bytes(rdata: &Rdata) -> Vec<u8> {
    match rdata {
        Rdata::A(a) => return a.octets().to_vec(),
        Rdata::Aaaa(a) => return a.octets().to_vec(),
        Rdata::Other(_) => {}
    }
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    encoder.set_canonical_form(true);
    encoder.set_name_encoding(NameEncoding::UncompressedLowercase);
    if rdata.to_rdata().emit(&mut encoder).is_err() {
        out.clear();
    }
    // (The encoder reserves room: the keys of a large set are kept until it is sorted.)
    out.shrink_to_fit();
    out
}

/// The ancestors of `name` strictly below it, up to and including `origin`.
fn ancestors<'a>(name: &'a str, origin: &'a str) -> impl Iterator<Item = &'a str> {
    let mut rest = name;
    std::iter::from_fn(move || {
        if rest == origin {
            return None;
        }
        let (_, parent) = rest.split_once('.')?;
        if parent.len() < origin.len() {
            return None;
        }
        rest = parent;
        Some(parent)
    })
}

fn zone_index(zone: &Zone, nodes: Nodes) -> ZoneIndex {
    ZoneIndex {
        origin: zone.name.clone(),
        origin_name: fqdn(&zone.name).unwrap_or_else(|_| Name::root()),
        nodes,
        negative_ttl: SOA_TTL.min(SOA_MINIMUM),
        serial: zone.serial,
        transfer_peers: Vec::new(),
        source: None,
        apex_cname: false,
    }
}

fn build_zone(z: &ZoneSnapshot, edge: &EdgeAddrs, warnings: &mut Vec<String>) -> ZoneIndex {
    let zone = &z.zone;
    let mut nodes: HashMap<String, Node> = HashMap::new();
    add_apex(&mut nodes, zone, warnings);
    // Stored records are sorted by name; ACME challenge answers join the names they are at.
    let mut challenges: HashMap<&str, Vec<&DnsRecord>> = HashMap::new();
    for c in &z.challenges {
        challenges.entry(c.name.as_str()).or_default().push(c);
    }
    let mut at: Vec<&DnsRecord> = Vec::new();
    for run in z.records.chunk_by(|a, b| a.name == b.name) {
        at.clear();
        at.extend(run.iter().map(Arc::as_ref));
        if let Some(extra) = challenges.remove(run[0].name.as_str()) {
            at.extend(extra);
        }
        add_name(&mut nodes, zone, &at, edge, warnings);
    }
    for (_, at) in challenges {
        add_name(&mut nodes, zone, &at, edge, warnings);
    }
    nodes.values_mut().for_each(finish);
    // Empty non-terminals: every ancestor of an owner name up to the apex exists.
    let mut missing = std::collections::HashSet::new();
    for owner in nodes.keys() {
        for parent in ancestors(owner, &zone.name) {
            if !nodes.contains_key(parent) && !missing.contains(parent) {
                missing.insert(parent.to_owned());
            }
        }
    }
    nodes.extend(missing.into_iter().map(|name| (name, Node::default())));
    zone_index(zone, Nodes::new(nodes))
}

/// Names a change may build again before the whole zone is built instead (with at least
/// [`MIN_REBUILD`] names, a hundredth of the zone's).
const MIN_REBUILD: usize = 1024;
/// Names left without records a change may handle before the whole zone is built instead
/// (finding what remains below them looks through every name).
const MAX_EMPTIED: usize = 16;

/// `old` brought up to `z` by building again only the names whose records changed; `None` when
/// the whole zone must be built (the zone itself changed beyond its serial, its apex is
/// flattened, or the change is large).
fn update_zone(
    old: &ZoneIndex,
    z: &ZoneSnapshot,
    edge: &EdgeAddrs,
    warnings: &mut Vec<String>,
) -> Option<ZoneIndex> {
    let before = old.source.as_ref()?;
    let same_zone = {
        let (mut a, mut b) = (before.zone.clone(), z.zone.clone());
        (a.serial, b.serial) = (0, 0);
        (a.modified_on, b.modified_on) = (String::new(), String::new());
        a == b
    };
    let apex_cname = |s: &ZoneSnapshot| s.records_at(&s.zone.name).any(|r| r.kind == Kind::CNAME);
    if !same_zone || old.apex_cname || apex_cname(z) {
        return None;
    }
    let limit = MIN_REBUILD.max(old.nodes.base.len() / 100);
    // Records are shared between snapshots: a record not shared by both changed. Both lists
    // are sorted by (name, type, content).
    let mut names: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let (mut i, mut j) = (0, 0);
    let (a, b) = (&before.records, &z.records);
    loop {
        // The record only one side holds next, in order: the old one when it comes first.
        let old_first = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if Arc::ptr_eq(x, y) => {
                (i, j) = (i + 1, j + 1);
                continue;
            }
            (Some(x), Some(y)) => x.order_key() <= y.order_key(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if old_first {
            names.insert(&a[i].name);
            i += 1;
        } else {
            names.insert(&b[j].name);
            j += 1;
        }
        if names.len() > limit {
            return None;
        }
    }
    let challenge = |r: &DnsRecord| (r.name.clone(), r.kind, r.content.clone(), r.proxied);
    let old_challenges: std::collections::HashSet<_> =
        before.challenges.iter().map(challenge).collect();
    let new_challenges: std::collections::HashSet<_> = z.challenges.iter().map(challenge).collect();
    names.extend(
        old_challenges
            .symmetric_difference(&new_challenges)
            .map(|c| c.0.as_str()),
    );
    // The apex carries the SOA, whose serial changed.
    names.insert(&z.zone.name);
    if names.len() > limit {
        return None;
    }
    let mut nodes = Nodes {
        base: Arc::clone(&old.nodes.base),
        changed: old.nodes.changed.clone(),
    };
    let mut emptied = Vec::new();
    for name in &names {
        let mut built: HashMap<String, Node> = HashMap::new();
        if *name == z.zone.name {
            add_apex(&mut built, &z.zone, warnings);
        }
        let at: Vec<&DnsRecord> = z.records_at(name).collect();
        add_name(&mut built, &z.zone, &at, edge, warnings);
        match built.remove(*name) {
            Some(mut node) => {
                finish(&mut node);
                for parent in ancestors(name, &z.zone.name) {
                    if !nodes.contains_key(parent) {
                        nodes
                            .changed
                            .insert(parent.to_owned(), Some(Node::default()));
                    }
                }
                nodes.changed.insert((*name).to_owned(), Some(node));
            }
            None if nodes.contains_key(name) => emptied.push(*name),
            None => {}
        }
    }
    if emptied.len() > MAX_EMPTIED {
        return None;
    }
    // A name left without records stays as an empty non-terminal while a name with records
    // exists below it; otherwise it goes, and so do the empty non-terminals above it that only
    // it needed.
    for name in &emptied {
        nodes.changed.insert((*name).to_owned(), None);
    }
    let holds_records = |nodes: &Nodes, n: &str| nodes.get(n).is_some_and(|n| !n.rrsets.is_empty());
    let mut candidates: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for name in emptied {
        for candidate in std::iter::once(name).chain(ancestors(name, &z.zone.name)) {
            if candidate == z.zone.name || (candidate != name && holds_records(&nodes, candidate)) {
                break;
            }
            candidates.insert(candidate);
        }
    }
    // One pass over the names with records: which candidates still have one below them.
    let mut needed: std::collections::HashSet<&str> = std::collections::HashSet::new();
    if !candidates.is_empty() {
        for (key, node) in nodes.iter() {
            if node.rrsets.is_empty() {
                continue;
            }
            for parent in ancestors(key, &z.zone.name) {
                if let Some(c) = candidates.get(parent) {
                    needed.insert(c);
                }
            }
        }
    }
    for candidate in candidates {
        let node = needed.contains(candidate).then(Node::default);
        nodes.changed.insert(candidate.to_owned(), node);
    }
    // Past the limit the zone is built whole: its names are one map again, one probe each.
    if nodes.changed.len() > limit {
        return None;
    }
    Some(zone_index(&z.zone, nodes))
}
