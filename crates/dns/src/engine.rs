//! The answer engine: one query packet in, one response packet out (or nothing, for packets
//! that must be dropped). Pure: no IO, no store, no clocks.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::cookies::{COOKIE, CookieCheck, Cookies};
use crate::fast::PlainQuery;
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

/// CNAMEs followed inside a zone for one answer (as Knot: a longer chain is cut there).
const MAX_CNAMES: usize = 5;

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
        .map(move |rd| Record::from_rdata(owner.clone(), set.ttl, rd.to_rdata()))
}

fn negative(zone: &ZoneIndex, out: &mut Answer) {
    if let Some(soa) = zone.soa() {
        let origin = zone.origin_name.clone();
        out.authorities.extend(
            soa.rdatas
                .iter()
                .map(|rd| Record::from_rdata(origin.clone(), zone.negative_ttl, rd.to_rdata())),
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
        .filter_map(|rd| match rd.other()? {
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
    for followed in 0..=MAX_CNAMES {
        let key = key_of(&name);
        if !seen.insert(key.clone()) {
            return; // CNAME loop: answer what we have.
        }
        if let Some((cut, node)) = delegation(zone, &key, qtype) {
            // A chain that enters a delegation stays authoritative for what it answered.
            let authoritative = !out.answers.is_empty();
            referral(zone, cut, node, out);
            out.authoritative = authoritative;
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
            Some(_) if followed == MAX_CNAMES => return,
            Some(cname) => {
                out.answers.extend(records(&name, cname));
                let Some(RData::CNAME(target)) = cname.rdatas.first().and_then(|rd| rd.other())
                else {
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

/// Who asked, for DNS cookies.
pub struct Client<'a> {
    pub ip: IpAddr,
    pub cookies: &'a Cookies,
    /// Unix seconds.
    pub now: u32,
}

/// A response, and whether the client proved its address with a valid server cookie.
pub struct Answered {
    pub bytes: Vec<u8>,
    pub verified: bool,
}

/// Answers one query packet. `None` means drop: runts, responses, several questions, and
/// questions that cannot be read (as Knot does). Without `client`, COOKIE options are ignored.
pub fn answer_query(
    index: &DnsIndex,
    packet: &[u8],
    transport: Transport,
    limits: Limits,
    client: Option<&Client<'_>>,
) -> Option<Answered> {
    let plain = PlainQuery::parse(packet).map(|q| {
        let limit = match (q.edns, transport) {
            (_, Transport::Tcp) => usize::from(u16::MAX),
            (Some(e), Transport::Udp) => {
                usize::from(e.payload.clamp(512, limits.max_udp_payload.max(512)))
            }
            (None, Transport::Udp) => 512,
        };
        (q, limit)
    });
    if let Some((q, limit)) = &plain
        && let Some(bytes) = index.cache.answer(q, *limit)
    {
        return Some(Answered {
            bytes,
            verified: false,
        });
    }
    let answered = answer_slow(index, packet, transport, limits, client)?;
    if let Some((q, limit)) = &plain {
        index.cache.insert(q, *limit, &answered.bytes);
    }
    Some(answered)
}

/// The engine proper, for every query the cache cannot answer.
fn answer_slow(
    index: &DnsIndex,
    packet: &[u8],
    transport: Transport,
    limits: Limits,
    client: Option<&Client<'_>>,
) -> Option<Answered> {
    let unverified = |bytes| Answered {
        bytes,
        verified: false,
    };
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    match u16::from_be_bytes([packet[4], packet[5]]) {
        0 => return Some(unverified(formerr_header(packet))),
        1 => {}
        _ => return None,
    }
    let mut decoder = BinDecoder::new(packet);
    let request = match Message::read(&mut decoder) {
        Ok(_) if !decoder.is_empty() => return Some(unverified(formerr_header(packet))),
        Ok(m) => m,
        Err(_) => {
            // The question alone readable: the rest is malformed (FORMERR); else drop.
            let mut decoder = BinDecoder::new(&packet[12..]);
            return Query::read(&mut decoder)
                .ok()
                .map(|_| unverified(formerr_header(packet)));
        }
    };
    let cookie = request
        .edns
        .as_ref()
        .and_then(|e| match e.options().get(EdnsCode::Cookie) {
            Some(EdnsOption::Unknown(_, data)) => Some(data.clone()),
            _ => None,
        });
    let check = match client {
        Some(c) => c.cookies.check(cookie.as_deref(), c.ip, c.now),
        None => CookieCheck::Absent,
    };
    let mut response = match check {
        CookieCheck::Malformed => {
            let mut r = error_response(&request, ResponseCode::FormErr);
            r.queries.clear();
            return encode(&r).map(unverified);
        }
        _ => match respond(index, &request, transport) {
            Ok(r) => r,
            Err(rcode) => error_response(&request, rcode),
        },
    };
    let limit = match (&request.edns, transport) {
        (_, Transport::Tcp) => usize::from(u16::MAX),
        (Some(edns), Transport::Udp) => usize::from(
            edns.max_payload()
                .clamp(512, limits.max_udp_payload.max(512)),
        ),
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
        if let (Some(c), Some(data)) = (client, &cookie)
            && let Some(answer) = c.cookies.answer(data, c.ip, c.now)
        {
            opt.options_mut()
                .insert(EdnsOption::Unknown(COOKIE, answer));
        }
        response.set_edns(opt);
    }
    let verified = check == CookieCheck::Verified;
    let bytes = encode(&response)?;
    if bytes.len() <= limit {
        return Some(Answered { bytes, verified });
    }
    truncate(response, limit).map(|bytes| Answered { bytes, verified })
}

/// Records grouped into RRsets (consecutive records with the same owner and type).
fn rrsets_of(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    for r in records {
        match out.last_mut() {
            Some(set) if set[0].name == r.name && set[0].record_type() == r.record_type() => {
                set.push(r)
            }
            _ => out.push(vec![r]),
        }
    }
    out
}

/// Fits a response into `limit` bytes as Knot does: whole RRsets of the answer and authority
/// sections in order until one does not fit (then TC), and of the additional section while
/// they fit (dropping the rest; referral glue that does not fit also sets TC).
fn truncate(mut response: Message, limit: usize) -> Option<Vec<u8>> {
    let answers = rrsets_of(std::mem::take(&mut response.answers));
    let authorities = rrsets_of(std::mem::take(&mut response.authorities));
    let additionals = rrsets_of(std::mem::take(&mut response.additionals));
    let referral = !response.metadata.authoritative && !authorities.is_empty();
    let fits = |m: &Message| m.to_vec().map(|b| b.len() <= limit).unwrap_or(false);
    // Answer, then authority: the first RRset that does not fit ends the response with TC.
    for (in_answer, set) in answers
        .into_iter()
        .map(|s| (true, s))
        .chain(authorities.into_iter().map(|s| (false, s)))
    {
        let section = if in_answer {
            &mut response.answers
        } else {
            &mut response.authorities
        };
        section.extend(set.iter().cloned());
        if !fits(&response) {
            let section = if in_answer {
                &mut response.answers
            } else {
                &mut response.authorities
            };
            section.truncate(section.len() - set.len());
            response.metadata.truncation = true;
            return encode(&response);
        }
    }
    for set in additionals {
        response.additionals.extend(set.iter().cloned());
        if !fits(&response) {
            response
                .additionals
                .truncate(response.additionals.len() - set.len());
            if referral && is_glue(&response, &set[0].name) {
                response.metadata.truncation = true;
                return encode(&response);
            }
        }
    }
    encode(&response)
}

/// Whether `name` lies at or below the delegation in the response's authority section.
fn is_glue(response: &Message, name: &Name) -> bool {
    response.authorities.iter().any(|ns| ns.name.zone_of(name))
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
    response.metadata.response_code = answer.rcode.unwrap_or(ResponseCode::NoError);
    response.queries = request.queries.clone();
    response.answers = answer.answers;
    response.authorities = answer.authorities;
    response.additionals = answer.additionals;
    Ok(response)
}
