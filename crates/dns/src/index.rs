//! The DNS view of a snapshot: per zone, every owner name with its RRsets in wire-ready form,
//! empty non-terminals, delegation points, and the apex SOA/NS Parapet serves.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, PTR, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use parapet_model::zonefile::soa_rdata;
use parapet_model::{DnsRecord, RecordType as Kind, ZoneStatus};
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

/// One zone ready to answer from.
#[derive(Debug)]
pub struct ZoneIndex {
    /// Lowercase, without the trailing dot.
    pub origin: String,
    pub origin_name: Name,
    /// By lowercase owner name without the trailing dot.
    pub nodes: HashMap<String, Node>,
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
            let mut zone = build_zone(z, edge, &mut warnings);
            zone.transfer_peers = peers;
            zone.source = Some(Arc::clone(z));
            zone.apex_cname = zone
                .nodes
                .get(&zone.origin)
                .is_some_and(|apex| apex.get(RecordType::CNAME).is_some());
            fresh.insert(z.zone.name.clone(), zone);
        }
        let mut zones = flatten_apex_cnames(fresh, &reused, external, &mut warnings);
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
    }
    zones.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

fn fqdn(name: &str) -> Result<Name, String> {
    if name == "." {
        return Ok(Name::root());
    }
    Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())
}

/// Converts one stored record to wire data.
pub fn record_rdata(r: &DnsRecord) -> Result<RData, String> {
    let parse =
        |kind: RecordType| RData::try_from_str(kind, &r.rdata_text()).map_err(|e| e.to_string());
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
        Kind::HTTPS => parse(RecordType::HTTPS)?,
        Kind::SVCB => parse(RecordType::SVCB)?,
        Kind::TLSA => parse(RecordType::TLSA)?,
        Kind::SSHFP => parse(RecordType::SSHFP)?,
        Kind::NAPTR => parse(RecordType::NAPTR)?,
        Kind::CERT => parse(RecordType::CERT)?,
        Kind::DS => unknown(43, wire::ds(&r.content)?),
        Kind::LOC => unknown(29, wire::loc(&r.content)?),
        Kind::URI => unknown(256, wire::uri(r)?),
    })
}

fn wire_type(kind: Kind) -> RecordType {
    match kind {
        Kind::DS => RecordType::from(43),
        Kind::LOC => RecordType::from(29),
        Kind::URI => RecordType::from(256),
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
            // An RRset has one TTL (RFC 2181 §5.2): the lowest given wins.
            set.ttl = set.ttl.min(ttl);
            if !set.rdatas.contains(&rdata) {
                set.rdatas.push(rdata);
            }
        }
        None => node.rrsets.push(RRset {
            rtype,
            ttl,
            rdatas: vec![rdata],
        }),
    }
}

fn build_zone(z: &ZoneSnapshot, edge: &EdgeAddrs, warnings: &mut Vec<String>) -> ZoneIndex {
    let zone = &z.zone;
    let origin = zone.name.clone();
    let mut nodes: HashMap<String, Node> = HashMap::new();
    match RData::try_from_str(RecordType::SOA, &soa_rdata(zone)) {
        Ok(soa) => push(&mut nodes, &origin, RecordType::SOA, SOA_TTL, soa),
        Err(e) => warnings.push(format!("zone {origin}: SOA: {e}")),
    }
    for ns in &zone.name_servers {
        match fqdn(ns) {
            Ok(n) => push(
                &mut nodes,
                &origin,
                RecordType::NS,
                APEX_NS_TTL,
                RData::NS(NS(n)),
            ),
            Err(e) => warnings.push(format!("zone {origin}: nameserver {ns}: {e}")),
        }
    }
    let serving_edge = zone.status == ZoneStatus::Active && !zone.paused;
    let proxied_names: std::collections::HashSet<&str> = z
        .all_records()
        .filter(|r| serving_edge && r.proxied && r.kind.proxiable())
        .map(|r| r.name.as_str())
        .collect();
    for name in &proxied_names {
        for ip in &edge.v4 {
            push(&mut nodes, name, RecordType::A, AUTO_TTL, RData::A(A(*ip)));
        }
        for ip in &edge.v6 {
            push(
                &mut nodes,
                name,
                RecordType::AAAA,
                AUTO_TTL,
                RData::AAAA(AAAA(*ip)),
            );
        }
    }
    for r in z.all_records() {
        if r.kind == Kind::NS && r.name == origin {
            continue; // The apex NS set is Parapet's nameservers.
        }
        if r.kind.proxiable() && proxied_names.contains(r.name.as_str()) {
            continue; // Answered with the edge's addresses; the origin stays hidden.
        }
        match record_rdata(r) {
            Ok(rdata) => {
                let ttl = if r.ttl == 1 { AUTO_TTL } else { r.ttl };
                push(&mut nodes, &r.name, wire_type(r.kind), ttl, rdata);
            }
            Err(e) => warnings.push(format!("{} record {} ({}): {e}", r.kind, r.name, r.id)),
        }
    }
    // RRsets in type-code order: ANY answers with the first (as Knot does); records inside an
    // RRset in canonical order (RFC 4034 §6.3), so answers are stable whatever the input order.
    for node in nodes.values_mut() {
        node.rrsets.sort_by_key(|set| u16::from(set.rtype));
        for set in &mut node.rrsets {
            if set.rdatas.len() > 1 {
                set.rdatas
                    .sort_by_cached_key(|rd| rd.to_rdata().to_bytes().unwrap_or_default());
            }
        }
    }
    // Empty non-terminals: every ancestor of an owner name up to the apex exists.
    let mut missing = std::collections::HashSet::new();
    for owner in nodes.keys() {
        let mut name = owner.as_str();
        while let Some((_, parent)) = name.split_once('.') {
            if parent.len() < origin.len() {
                break;
            }
            if !nodes.contains_key(parent) && !missing.contains(parent) {
                missing.insert(parent.to_owned());
            }
            if parent == origin {
                break;
            }
            name = parent;
        }
    }
    nodes.extend(missing.into_iter().map(|name| (name, Node::default())));
    let origin_name = fqdn(&origin).unwrap_or_else(|_| Name::root());
    ZoneIndex {
        origin,
        origin_name,
        nodes,
        negative_ttl: SOA_TTL.min(SOA_MINIMUM),
        serial: zone.serial,
        transfer_peers: Vec::new(),
        source: None,
        apex_cname: false,
    }
}
