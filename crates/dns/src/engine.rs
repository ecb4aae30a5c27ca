//! The answer engine: one query packet in, one response packet out (or nothing, for packets
//! that must be dropped). Pure: no IO, no store, no clocks.

use std::collections::HashSet;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::index::{DnsIndex, Node, RRset, ZoneIndex};

/// How the query arrived: UDP answers are bounded by the payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Response size policy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest UDP response with EDNS (the client's size is honoured only below this).
    pub max_udp_payload: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_udp_payload: 1232,
        }
    }
}

/// The sections of an answer before encoding.
#[derive(Debug, Default)]
pub struct Answer {
    pub rcode: Option<ResponseCode>,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// Longest CNAME chain followed inside a zone.
const MAX_CHAIN: usize = 16;

fn key_of(name: &Name) -> String {
    let mut s = name.to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s.make_ascii_lowercase();
    s
}

fn records<'s>(owner: &Name, set: &'s RRset) -> impl Iterator<Item = Record> + 's {
    let owner = owner.clone();
    set.rdatas
        .iter()
        .map(move |rd| Record::from_rdata(owner.clone(), set.ttl, rd.clone()))
}

fn negative(zone: &ZoneIndex, out: &mut Answer) {
    if let Some(soa) = zone.soa() {
        let origin = zone.origin_name.clone();
        out.authorities.extend(
            soa.rdatas
                .iter()
                .map(|rd| Record::from_rdata(origin.clone(), zone.negative_ttl, rd.clone())),
        );
    }
}

/// In-zone addresses of `target`, for the additional section.
fn addresses(zone: &ZoneIndex, target: &Name, out: &mut Vec<Record>) {
    let key = key_of(target);
    if let Some(node) = zone.node(&key) {
        for t in [RecordType::A, RecordType::AAAA] {
            if let Some(set) = node.get(t) {
                out.extend(records(target, set));
            }
        }
    }
}

fn additional_targets(rrset: &RRset) -> Vec<Name> {
    rrset
        .rdatas
        .iter()
        .filter_map(|rd| match rd {
            RData::MX(mx) => Some(mx.exchange.clone()),
            RData::NS(ns) => Some(ns.0.clone()),
            RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect()
}

/// The delegation point on the way from the apex to `key`, if any (DS at the cut itself is
/// answered from the parent side).
fn delegation<'z>(
    zone: &'z ZoneIndex,
    key: &str,
    qtype: RecordType,
) -> Option<(&'z str, &'z Node)> {
    let relative = key
        .strip_suffix(zone.origin.as_str())?
        .trim_end_matches('.');
    if relative.is_empty() {
        return None;
    }
    let labels: Vec<&str> = relative.split('.').collect();
    for depth in (0..labels.len()).rev() {
        let start: usize = labels[..depth].iter().map(|l| l.len() + 1).sum();
        let candidate = &key[start..];
        if let Some((name, node)) = zone.nodes.get_key_value(candidate)
            && node.get(RecordType::NS).is_some()
            && !(depth == 0 && qtype == RecordType::DS)
        {
            return Some((name.as_str(), node));
        }
    }
    None
}

fn referral(zone: &ZoneIndex, cut: &str, node: &Node, out: &mut Answer) {
    out.authoritative = false;
    let Some(ns) = node.get(RecordType::NS) else {
        return;
    };
    let owner = Name::from_ascii(format!("{cut}.")).unwrap_or_else(|_| Name::root());
    out.authorities.extend(records(&owner, ns));
    for target in additional_targets(ns) {
        addresses(zone, &target, &mut out.additionals);
    }
}

/// The closest encloser's wildcard node for a name that does not exist.
fn wildcard<'z>(zone: &'z ZoneIndex, key: &str) -> Option<&'z Node> {
    let mut candidate = key;
    while let Some((_, parent)) = candidate.split_once('.') {
        if parent.len() < zone.origin.len() {
            return None;
        }
        if zone.node(parent).is_some() {
            return zone.node(&format!("*.{parent}"));
        }
        candidate = parent;
    }
    None
}

/// RFC 1034 §4.3.2 over one zone, following CNAMEs inside it.
fn resolve(zone: &ZoneIndex, qname: &Name, qtype: RecordType, out: &mut Answer) {
    let mut name = qname.clone();
    let mut seen = HashSet::new();
    for _ in 0..MAX_CHAIN {
        let key = key_of(&name);
        if !seen.insert(key.clone()) {
            return; // CNAME loop: answer what we have.
        }
        if let Some((cut, node)) = delegation(zone, &key, qtype) {
            if out.answers.is_empty() {
                referral(zone, cut, node, out);
            }
            return;
        }
        let node = match zone.node(&key) {
            Some(n) => n,
            None => match wildcard(zone, &key) {
                Some(n) => n,
                None => {
                    out.rcode = Some(ResponseCode::NXDomain);
                    negative(zone, out);
                    return;
                }
            },
        };
        if qtype == RecordType::ANY {
            // RFC 8482: one RRset is enough: the lowest type code's (the index keeps that order).
            match node.rrsets.first() {
                Some(set) => out.answers.extend(records(&name, set)),
                None => negative(zone, out),
            }
            return;
        }
        if let Some(set) = node.get(qtype) {
            out.answers.extend(records(&name, set));
            for target in additional_targets(set) {
                addresses(zone, &target, &mut out.additionals);
            }
            return;
        }
        match node.get(RecordType::CNAME) {
            Some(cname) => {
                out.answers.extend(records(&name, cname));
                let Some(RData::CNAME(target)) = cname.rdatas.first() else {
                    return;
                };
                let target_key = key_of(&target.0);
                if !parapet_model::name::is_within(&target_key, &zone.origin) {
                    return;
                }
                name = target.0.clone();
            }
            None => {
                negative(zone, out);
                return;
            }
        }
    }
}

/// A response with only a header (and the question, when there is one).
fn error_response(request: &Message, rcode: ResponseCode) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.response_code = rcode;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.queries = request.queries.clone();
    response
}

/// A FORMERR for a packet whose header could be read but not the rest.
fn formerr_header(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&packet[..2]);
    out[2] = 0x80 | (packet[2] & 0x79); // QR, opcode and RD copied.
    out[3] = ResponseCode::FormErr.low();
    out
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!("DNS response could not be encoded: {e}");
            None
        }
    }
}

/// Answers one query packet. `None` means drop (responses, runts).
pub fn answer_query(
    index: &DnsIndex,
    packet: &[u8],
    transport: Transport,
    limits: Limits,
) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let Ok(request) = Message::from_vec(packet) else {
        return Some(formerr_header(packet));
    };
    let response = respond(index, &request, transport);
    let mut response = match response {
        Ok(r) => r,
        Err(rcode) => error_response(&request, rcode),
    };
    let udp_limit = match (&request.edns, transport) {
        (_, Transport::Tcp) => usize::from(u16::MAX),
        (Some(edns), Transport::Udp) => {
            usize::from(edns.max_payload().clamp(512, limits.max_udp_payload))
        }
        (None, Transport::Udp) => 512,
    };
    if let Some(edns) = &request.edns {
        let mut opt = Edns::new();
        opt.set_max_payload(limits.max_udp_payload);
        opt.set_version(0);
        opt.set_dnssec_ok(edns.flags().dnssec_ok);
        if response.metadata.response_code.high() != 0 {
            opt.set_rcode_high(response.metadata.response_code.high());
        }
        response.set_edns(opt);
    }
    let bytes = encode(&response)?;
    if bytes.len() <= udp_limit {
        return Some(bytes);
    }
    // Too big for UDP: drop the additional section first, then truncate.
    response.additionals.clear();
    let bytes = encode(&response)?;
    if bytes.len() <= udp_limit {
        return Some(bytes);
    }
    response.metadata.truncation = true;
    response.answers.clear();
    response.authorities.clear();
    encode(&response)
}

fn respond(
    index: &DnsIndex,
    request: &Message,
    transport: Transport,
) -> Result<Message, ResponseCode> {
    if request.metadata.message_type != MessageType::Query {
        return Err(ResponseCode::FormErr);
    }
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let [query]: &[Query; 1] = request
        .queries
        .as_slice()
        .try_into()
        .map_err(|_| ResponseCode::FormErr)?;
    if let Some(edns) = &request.edns
        && edns.version() > 0
    {
        return Err(ResponseCode::BADVERS);
    }
    if !request.answers.is_empty() || !request.authorities.is_empty() {
        return Err(ResponseCode::FormErr);
    }
    let qtype = query.query_type();
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        return Err(ResponseCode::Refused);
    }
    let key = key_of(query.name());
    let Some(zone) = index.zone_for(&key) else {
        return Err(ResponseCode::Refused);
    };
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // Zone transfers to secondaries are configured per zone; none are allowed yet.
        return Err(if transport == Transport::Udp {
            ResponseCode::FormErr
        } else {
            ResponseCode::Refused
        });
    }
    if matches!(qtype, RecordType::OPT | RecordType::TSIG) {
        return Err(ResponseCode::FormErr);
    }
    let mut answer = Answer {
        authoritative: true,
        ..Answer::default()
    };
    resolve(zone, query.name(), qtype, &mut answer);
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.authoritative = answer.authoritative;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.response_code = answer.rcode.unwrap_or(ResponseCode::NoError);
    response.queries = request.queries.clone();
    response.answers = answer.answers;
    response.authorities = answer.authorities;
    response.additionals = answer.additionals;
    Ok(response)
}
