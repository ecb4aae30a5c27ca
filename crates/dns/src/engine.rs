//! The answer engine: one query packet in, one response packet out (or nothing, for packets
//! that must be dropped). Pure: no IO, no store, no clocks.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};

use crate::compress::Writer;
use crate::cookies::{COOKIE, CookieCheck, Cookies};
use crate::fast::{COOKIE_ROOM, Fit, PlainQuery, append_cookie, without_cookie};
use crate::index::{DnsIndex, Node, RRset, ZoneIndex};
use crate::rrl::ResponseKind;

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

impl Limits {
    /// Bytes a response may take: a TCP message's most, else the client's EDNS payload size
    /// within 512 and our own largest (512 without EDNS).
    fn response_room(&self, edns_payload: Option<u16>, transport: Transport) -> usize {
        match (edns_payload, transport) {
            (_, Transport::Tcp) => usize::from(u16::MAX),
            (Some(payload), Transport::Udp) => {
                usize::from(payload.clamp(512, self.max_udp_payload.max(512)))
            }
            (None, Transport::Udp) => 512,
        }
    }
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
    /// Bytes the response may take: an RRset that cannot fit in them whatever its names
    /// compress to is never made into records (a name may hold a million).
    pub room: usize,
    /// An RRset of the answer or authority section could not fit: the response ends before it.
    pub overflow: bool,
    /// Glue of a referral was left out: the response is truncated, and ends before it.
    pub glue_cut: bool,
    /// Glue records in the additional section.
    pub glue_held: usize,
    /// An additional RRset other than glue was left out (no TC): the response is not the
    /// whole answer a larger limit would get.
    pub additional_cut: bool,
    /// The question's name was answered from a wildcard, or referred to a delegation: rate
    /// limiting counts the answer under that wildcard or delegation, not the name.
    pub rrl_kind: Option<ResponseKind>,
}

/// The fewest bytes a record takes on the wire: a one-byte owner (the shortest a name can be
/// written), type, class, TTL, data length, and no data.
const MIN_RECORD: usize = 11;

impl Answer {
    /// Whether `set` could fit in the response at all.
    fn could_fit(&self, set: &RRset) -> bool {
        set.rdatas.len().saturating_mul(MIN_RECORD) <= self.room
    }

    /// Adds `set` at `owner` to the answer or authority section, unless it cannot fit (then
    /// the response ends before it); false once it has so ended.
    fn add(&mut self, section: Section, owner: &Name, set: &RRset) -> bool {
        self.add_with_ttl(section, owner, set, set.ttl)
    }

    fn add_with_ttl(&mut self, section: Section, owner: &Name, set: &RRset, ttl: u32) -> bool {
        if self.overflow || !self.could_fit(set) {
            self.overflow = true;
            return false;
        }
        let records = records(owner, set, ttl);
        match section {
            Section::Answer => self.answers.extend(records),
            Section::Authority => self.authorities.extend(records),
        }
        true
    }

    /// Adds `set` at `owner` to the additional section unless it could not fit (the section
    /// holds what fits and drops the rest; `truncate` decides). Glue is refused only when it
    /// cannot fit beside the glue before it, which truncation keeps or stops at: then the
    /// response is truncated, as truncation would leave it, and the section ends. Other sets
    /// are refused past what could fit besides the glue, so the section holds at most twice
    /// what a response can.
    fn add_additional(&mut self, owner: &Name, set: &RRset, glue: bool) {
        if self.overflow || self.glue_cut {
            return;
        }
        let n = set.rdatas.len();
        let others = self.additionals.len() - self.glue_held;
        let before = if glue { self.glue_held } else { others };
        if before.saturating_add(n).saturating_mul(MIN_RECORD) > self.room {
            if glue {
                self.glue_cut = true;
            } else {
                self.additional_cut = true;
            }
            return;
        }
        if glue {
            self.glue_held += n;
        }
        self.additionals.extend(records(owner, set, set.ttl));
    }
}

#[derive(Clone, Copy)]
enum Section {
    Answer,
    Authority,
}

/// CNAMEs followed inside a zone for one answer (as Knot: a longer chain is cut there).
const MAX_CNAMES: usize = 5;

/// What a label byte that no stored name can hold becomes in a key (see [`key_of`]).
const FOREIGN: char = '\0';

/// The index key of `name`: its labels, lowercased and joined by dots, as owner names are
/// stored. Built from the labels' bytes, never from hickory's escaped text (which writes a
/// label starting with `-` as `\-`, so such a name would never be found). A `.` inside a label,
/// and any byte past ASCII, becomes [`FOREIGN`], which no stored name holds (they are checked
/// host names): a dot inside a label never reads as a label boundary, and a name with such a
/// label matches nothing at or below it. It is answered from its ancestors on real label
/// boundaries: the zone that holds them, their delegations and the closest encloser's
/// wildcard, or NXDOMAIN (as Knot does). One allocation, as large as the name.
fn key_of(name: &Name) -> String {
    let mut key = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|&b| match b {
            b'.' | 0x80.. => FOREIGN,
            _ => char::from(b.to_ascii_lowercase()),
        }));
    }
    key
}

fn records<'s>(owner: &Name, set: &'s RRset, ttl: u32) -> impl Iterator<Item = Record> + 's {
    let owner = owner.clone();
    set.rdatas
        .iter()
        .map(move |rd| Record::from_rdata(owner.clone(), ttl, rd.to_rdata()))
}

fn negative(zone: &ZoneIndex, out: &mut Answer) {
    if let Some(soa) = zone.soa() {
        out.add_with_ttl(
            Section::Authority,
            &zone.origin_name,
            soa,
            zone.negative_ttl,
        );
    }
}

/// In-zone addresses of `target`, for the additional section (`glue`: of a referral, at or
/// below its cut).
fn addresses(zone: &ZoneIndex, target: &Name, glue: bool, out: &mut Answer) {
    let key = key_of(target);
    if let Some(node) = zone.node(&key) {
        for t in [RecordType::A, RecordType::AAAA] {
            if let Some(set) = node.get(t) {
                out.add_additional(target, set, glue);
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
            // RFC 9460 §4.1 (as Knot answers: the target name, when it is not ".").
            RData::SVCB(svcb) => Some(svcb.target_name.clone()).filter(|t| !t.is_root()),
            RData::HTTPS(https) => Some(https.0.target_name.clone()).filter(|t| !t.is_root()),
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
    // From the stored labels: hickory's text parser refuses a label starting with '-'.
    let owner =
        Name::from_labels(cut.split('.').map(str::as_bytes)).unwrap_or_else(|_| Name::root());
    // Glue, as truncation judges it: of a referral that answers nothing itself (a CNAME chain
    // into the delegation stays authoritative).
    let referral = out.answers.is_empty();
    if out.add(Section::Authority, &owner, ns) {
        for target in additional_targets(ns) {
            addresses(zone, &target, referral && owner.zone_of(&target), out);
        }
    }
}

/// The closest encloser's wildcard (owner and node) for a name that does not exist.
fn wildcard<'z>(zone: &'z ZoneIndex, key: &str) -> Option<(&'z str, &'z Node)> {
    let mut candidate = key;
    while let Some((_, parent)) = candidate.split_once('.') {
        if parent.len() < zone.origin.len() {
            return None;
        }
        if zone.node(parent).is_some() {
            return zone
                .nodes
                .get_key_value(&format!("*.{parent}"))
                .map(|(owner, node)| (owner.as_str(), node));
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
            out.rrl_kind = Some(ResponseKind::referral(cut));
            referral(zone, cut, node, out);
            out.authoritative = authoritative;
            return;
        }
        let node = match zone.node(&key) {
            Some(n) => n,
            None => match wildcard(zone, &key) {
                Some((owner, n)) => {
                    if followed == 0 {
                        out.rrl_kind = Some(ResponseKind::wildcard(owner));
                    }
                    n
                }
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
                Some(set) => {
                    out.add(Section::Answer, &name, set);
                }
                None => negative(zone, out),
            }
            return;
        }
        if let Some(set) = node.get(qtype) {
            if out.add(Section::Answer, &name, set) {
                for target in additional_targets(set) {
                    addresses(zone, &target, false, out);
                }
            }
            return;
        }
        // RRSIG and NSEC may sit beside a CNAME (RFC 2181 §10.1, RFC 4035 §2.5): a query for
        // them asks about the alias itself, not its target, as Knot and BIND answer it.
        let beside_alias = matches!(qtype, RecordType::RRSIG | RecordType::NSEC);
        match node.get(RecordType::CNAME).filter(|_| !beside_alias) {
            Some(_) if followed == MAX_CNAMES => return,
            Some(cname) => {
                if !out.add(Section::Answer, &name, cname) {
                    return;
                }
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

/// What the EDNS options of a query say before it is parsed whole.
#[derive(Debug, PartialEq, Eq)]
enum OptionsCheck {
    /// Nothing to do (no OPT, well-formed options, or a packet the parser will judge).
    Fine,
    /// An option runs past the end of the OPT's data: FORMERR (RFC 6891 §7).
    Malformed,
    /// The packet without its client-subnet options, which this server does not use and so
    /// ignores (RFC 6891 §6.1.2; the parser would refuse one it cannot read).
    Stripped(Vec<u8>),
}

/// [`OptionsCheck`] of `packet`, read by offsets (names skipped, not decoded).
fn check_options(packet: &[u8]) -> OptionsCheck {
    const CLIENT_SUBNET: u16 = 8;
    fn count(packet: &[u8], at: usize) -> usize {
        usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]))
    }
    use crate::tsig::skip_name;
    let word = |at: usize| -> Option<usize> {
        let bytes = packet.get(at..at + 2)?;
        Some(usize::from(u16::from_be_bytes([bytes[0], bytes[1]])))
    };
    if packet.len() < 12 {
        return OptionsCheck::Fine;
    }
    let mut at = 12;
    for _ in 0..count(packet, 4) {
        let Some(end) = skip_name(packet, at) else {
            return OptionsCheck::Fine;
        };
        at = end + 4;
    }
    let records = count(packet, 6) + count(packet, 8) + count(packet, 10);
    for _ in 0..records {
        let Some(fixed) = skip_name(packet, at) else {
            return OptionsCheck::Fine;
        };
        let (Some(rtype), Some(rdlen)) = (word(fixed), word(fixed + 8)) else {
            return OptionsCheck::Fine;
        };
        let data = fixed + 10;
        let end = data + rdlen;
        if end > packet.len() {
            return OptionsCheck::Fine;
        }
        if rtype == 41 {
            let mut subnets = Vec::new();
            let mut option = data;
            while option < end {
                let (Some(code), Some(len)) = (word(option), word(option + 2)) else {
                    return OptionsCheck::Malformed;
                };
                let next = option + 4 + len;
                if option + 4 > end || next > end {
                    return OptionsCheck::Malformed;
                }
                if code == usize::from(CLIENT_SUBNET) {
                    subnets.push(option..next);
                }
                option = next;
            }
            if !subnets.is_empty() {
                let removed: usize = subnets.iter().map(|r| r.len()).sum();
                let mut out = Vec::with_capacity(packet.len() - removed);
                let mut from = 0;
                for range in &subnets {
                    out.extend_from_slice(&packet[from..range.start]);
                    from = range.end;
                }
                out.extend_from_slice(&packet[from..]);
                let rdlen = u16::try_from(rdlen - removed).unwrap_or(0).to_be_bytes();
                out[fixed + 8..fixed + 10].copy_from_slice(&rdlen);
                return OptionsCheck::Stripped(out);
            }
        }
        at = end;
    }
    OptionsCheck::Fine
}

/// The NSID option's code (RFC 5001).
const NSID: u16 = 3;

/// The answer to CH TXT `id.server` or `hostname.bind` (or ANY), as Knot and NSD give it: the
/// node's identity, TTL 0; `None` for any other query, or when the node says no identity.
fn identity_answer(request: &Message, identity: Option<&str>) -> Option<Message> {
    let identity = identity?;
    let [query] = request.queries.as_slice() else {
        return None;
    };
    let name = query.name().to_ascii().to_ascii_lowercase();
    let asked = matches!(name.as_str(), "id.server." | "hostname.bind.")
        && query.query_class() == DNSClass::CH
        && matches!(query.query_type(), RecordType::TXT | RecordType::ANY);
    if !asked {
        return None;
    }
    let txt = hickory_proto::rr::rdata::TXT::new(vec![identity.to_owned()]);
    let mut record = Record::from_rdata(query.name().clone(), 0, RData::TXT(txt));
    record.dns_class = DNSClass::CH;
    let mut response = error_response(request, ResponseCode::NoError);
    response.metadata.authoritative = true;
    response.answers.push(record);
    Some(response)
}

/// A FORMERR for a query whose OPT is malformed: its question and an OPT of this server's
/// (`None` when the question cannot be read: dropped).
fn formerr_with_opt(packet: &[u8], payload: u16) -> Option<Vec<u8>> {
    if u16::from_be_bytes([packet[4], packet[5]]) != 1 {
        return None;
    }
    let question_end = crate::tsig::skip_name(packet, 12)? + 4;
    let question = packet.get(12..question_end)?;
    let mut out = formerr_header(packet);
    out[5] = 1;
    out[11] = 1;
    out.extend_from_slice(question);
    // The root owner, type OPT, the payload size as class, version 0 and no flags, no data.
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Some(out)
}

/// A FORMERR for a packet whose header could be read but not the rest.
fn formerr_header(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&packet[..2]);
    out[2] = 0x80 | (packet[2] & 0x79); // QR, opcode and RD copied.
    out[3] = ResponseCode::FormErr.low();
    out
}

/// The message's bytes, every name compressed ([`crate::compress`]); `None` (and a warning)
/// when stored data cannot be written.
fn encode(message: &Message) -> Option<Vec<u8>> {
    let written = (|| {
        let mut writer = Writer::new(header_of(message)?);
        let mut counts = [0u16; 4];
        for query in &message.queries {
            writer.query(query)?;
            counts[0] = counts[0].checked_add(1)?;
        }
        for (section, records) in [
            (1, &message.answers),
            (2, &message.authorities),
            (3, &message.additionals),
        ] {
            for record in records {
                writer.record(record)?;
                counts[section] = counts[section].checked_add(1)?;
            }
        }
        if let Some(opt) = opt_record(message) {
            writer.record(&opt)?;
            counts[3] = counts[3].checked_add(1)?;
        }
        Some(with_counts(writer.out, counts, false))
    })();
    if written.is_none() {
        tracing::warn!("DNS response could not be encoded");
    }
    written
}

/// The header `message` starts with, counts left at zero.
fn header_of(message: &Message) -> Option<[u8; 12]> {
    let mut head = Message::new(
        message.metadata.id,
        message.metadata.message_type,
        message.metadata.op_code,
    );
    head.metadata = message.metadata;
    let bytes = head.to_vec().ok()?;
    bytes.get(..12)?.try_into().ok()
}

/// The OPT record of `message`'s EDNS, with the high bits of its response code.
fn opt_record(message: &Message) -> Option<Record> {
    message.edns.as_ref().map(|edns| {
        let mut edns = edns.clone();
        edns.set_rcode_high(message.metadata.response_code.high());
        Record::from(&edns)
    })
}

/// `out` with its header's counts set (and TC, if `truncated`).
fn with_counts(mut out: Vec<u8>, counts: [u16; 4], truncated: bool) -> Vec<u8> {
    if truncated {
        out[2] |= 0x02;
    }
    for (i, count) in counts.iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
    }
    out
}

/// Who asked, for DNS cookies.
pub struct Client<'a> {
    pub ip: IpAddr,
    pub cookies: &'a Cookies,
    /// Unix seconds.
    pub now: u32,
    /// The name this node gives when asked which it is (CH TXT `id.server`, NSID).
    pub identity: Option<&'a str>,
}

/// A response, whether the client proved its address with a valid server cookie, and what
/// rate limiting counts it as.
pub struct Answered {
    pub bytes: Vec<u8>,
    pub verified: bool,
    pub kind: ResponseKind,
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
    let plain = PlainQuery::parse(packet).and_then(|q| {
        let limit = limits.response_room(q.edns.map(|e| e.payload), transport);
        // A client cookie (when cookies are in use) is answered with a server cookie appended
        // to the kept response, as the engine would write it.
        let cookie = match (q.cookie, client) {
            (Some(data), Some(c)) => Some((
                c.cookies.answer(data, c.ip, c.now)?,
                c.cookies.check(Some(data), c.ip, c.now) == CookieCheck::Verified,
            )),
            _ => None,
        };
        let fit = Fit {
            limit,
            room: if cookie.is_some() { COOKIE_ROOM } else { 0 },
            server_max: limits.max_udp_payload,
        };
        Some((q, fit, cookie))
    });
    if let Some((q, fit, cookie)) = &plain
        && let Some((mut bytes, kind)) = index.cache.answer(q, fit.limit - fit.room)
    {
        if let Some((answer, _)) = cookie {
            append_cookie(&mut bytes, answer);
        }
        return Some(Answered {
            bytes,
            verified: cookie.is_some_and(|(_, verified)| verified),
            kind,
        });
    }
    let mut complete = false;
    let answered = answer_slow(index, packet, transport, limits, client, 0, &mut complete)?;
    if let Some((q, fit, cookie)) = &plain {
        let bare = match cookie {
            Some(_) => without_cookie(&answered.bytes).map(std::borrow::Cow::Owned),
            None => Some(std::borrow::Cow::Borrowed(&answered.bytes)),
        };
        if let Some(bare) = bare {
            index.cache.insert(q, *fit, complete, &bare, answered.kind);
        }
    }
    Some(answered)
}

/// Answers one query packet as [`answer_query`] does, leaving `reserve` bytes free within the
/// size the response may take (for a signature added after), and without the cache.
pub fn answer_query_reserving(
    index: &DnsIndex,
    packet: &[u8],
    transport: Transport,
    limits: Limits,
    client: Option<&Client<'_>>,
    reserve: usize,
) -> Option<Answered> {
    answer_slow(
        index, packet, transport, limits, client, reserve, &mut false,
    )
}

/// The engine proper, for every query the cache cannot answer; the response leaves `reserve`
/// bytes free. `complete` is set when the answer is the whole response, nothing left out to
/// fit it.
fn answer_slow(
    index: &DnsIndex,
    packet: &[u8],
    transport: Transport,
    limits: Limits,
    client: Option<&Client<'_>>,
    reserve: usize,
    complete: &mut bool,
) -> Option<Answered> {
    // Errors and FORMERRs: one kind for rate limiting.
    let unverified = |bytes| Answered {
        bytes,
        verified: false,
        kind: ResponseKind::ERROR,
    };
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([packet[4], packet[5]]);
    if questions > 1 {
        return None;
    }
    // No question: only a cookie exchange (a QUERY with a COOKIE option) means something;
    // another opcode is not implemented (as Knot answers), with an OPT when it came with one.
    let not_implemented = questions == 0 && (packet[2] >> 3) & 0x0f != 0;
    let options = check_options(packet);
    let stripped;
    let packet = match &options {
        OptionsCheck::Stripped(without) => {
            stripped = without;
            stripped.as_slice()
        }
        _ => packet,
    };
    let mut decoder = BinDecoder::new(packet);
    let read = Message::read(&mut decoder);
    let whole = decoder.is_empty();
    let request = match read {
        Ok(m) if whole => m,
        // An option that runs past its OPT's data: FORMERR with the question and an OPT, as
        // for any malformed OPT the parser can read (RFC 6891 §7).
        Err(_) if options == OptionsCheck::Malformed => {
            return formerr_with_opt(packet, limits.max_udp_payload).map(unverified);
        }
        // A DSO request (RFC 8490: no sections, TLVs after the header) or another opcode
        // whose message this does not read.
        _ if not_implemented => {
            let mut header = formerr_header(packet);
            header[3] = ResponseCode::NotImp.low();
            return Some(unverified(header));
        }
        Ok(_) => return Some(unverified(formerr_header(packet))),
        Err(_) if questions == 0 => return Some(unverified(formerr_header(packet))),
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
    let limit = limits
        .response_room(request.edns.as_ref().map(Edns::max_payload), transport)
        .saturating_sub(reserve);
    let malformed = check == CookieCheck::Malformed || options == OptionsCheck::Malformed;
    let mut additional_cut = false;
    let (mut response, answer_cut, kind) = match check {
        // With the question and an OPT, as any answer to a query with one (RFC 6891 §7): a
        // FORMERR without an OPT tells the client the server does not speak EDNS.
        _ if not_implemented => (
            error_response(&request, ResponseCode::NotImp),
            false,
            ResponseKind::ERROR,
        ),
        _ if malformed => (
            error_response(&request, ResponseCode::FormErr),
            false,
            ResponseKind::ERROR,
        ),
        // A cookie alone, to learn the server cookie (RFC 7873 §5.4).
        CookieCheck::Unverified | CookieCheck::Verified if request.queries.is_empty() => (
            error_response(&request, ResponseCode::NoError),
            false,
            ResponseKind::ERROR,
        ),
        _ if request.queries.is_empty() => (
            error_response(&request, ResponseCode::FormErr),
            false,
            ResponseKind::ERROR,
        ),
        _ => match identity_answer(&request, client.and_then(|c| c.identity)) {
            Some(told) => (told, false, ResponseKind::answer("id.server", 16)),
            None => match respond(index, &request, transport, limit, &mut additional_cut) {
                Ok(answered) => answered,
                Err(rcode) => (error_response(&request, rcode), false, ResponseKind::ERROR),
            },
        },
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
            && !malformed
            && let Some(answer) = c.cookies.answer(data, c.ip, c.now)
        {
            opt.options_mut()
                .insert(EdnsOption::Unknown(COOKIE, answer.to_vec()));
        }
        // The node's identity, to a client that asks for it (RFC 5001).
        if let Some(identity) = client.and_then(|c| c.identity)
            && edns.options().get(EdnsCode::NSID).is_some()
        {
            opt.options_mut()
                .insert(EdnsOption::Unknown(NSID, identity.as_bytes().to_vec()));
        }
        response.set_edns(opt);
    }
    let verified = check == CookieCheck::Verified;
    let Some(bytes) = encode(&response) else {
        // Stored data the wire cannot carry: a failure, never silence.
        let mut failed = error_response(&request, ResponseCode::ServFail);
        failed.edns = response.edns.clone();
        return encode(&failed).map(|bytes| Answered {
            bytes,
            verified,
            kind: ResponseKind::ERROR,
        });
    };
    // (The encoder flags a message it could not write whole as truncated.)
    if bytes.len() <= limit && bytes[2] & 0x02 == 0 {
        *complete = !additional_cut;
        return Some(Answered {
            bytes,
            verified,
            kind,
        });
    }
    let edns = response.edns.clone();
    let (bytes, cut) = truncate(response, limit)?;
    // Over TCP an answer or authority section too large for any message is a failure, as Knot
    // answers it (glue left out only truncates).
    if transport == Transport::Tcp && (answer_cut || cut) {
        let mut failed = error_response(&request, ResponseCode::ServFail);
        if let Some(edns) = edns {
            failed.set_edns(edns);
        }
        return encode(&failed).map(|bytes| Answered {
            bytes,
            verified,
            kind: ResponseKind::ERROR,
        });
    }
    Some(Answered {
        bytes,
        verified,
        kind,
    })
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
/// they fit (dropping the rest; referral glue that does not fit also sets TC). The message is
/// written once, RRset by RRset; one that does not fit is taken back out (with the names it
/// added for compression), so the cost is linear in the response. Also says whether an answer
/// or authority RRset was cut.
fn truncate(response: Message, limit: usize) -> Option<(Vec<u8>, bool)> {
    let referral = !response.metadata.authoritative && !response.authorities.is_empty();
    let opt = opt_record(&response);
    let opt_len = match &opt {
        Some(opt) => opt.to_bytes().ok()?.len(),
        None => 0,
    };
    let mut writer = Writer::new(header_of(&response)?);
    let mut counts = [0u16; 4];
    let mut truncated = response.metadata.truncation;
    let mut answer_cut = false;
    for query in &response.queries {
        writer.query(query)?;
        counts[0] += 1;
    }
    // Writes `set`, or takes it back out when the message would pass `limit`.
    let fits = |set: &[Record], writer: &mut Writer| {
        let least = set.len().saturating_mul(MIN_RECORD);
        if writer.len() + opt_len + least > limit {
            return false;
        }
        let mark = writer.len();
        let written = set.iter().try_for_each(|r| writer.record(r));
        if written.is_some() && writer.len() + opt_len <= limit {
            return true;
        }
        writer.rewind(mark);
        false
    };
    let answers = rrsets_of(response.answers);
    let authorities = rrsets_of(response.authorities);
    let sections = answers
        .iter()
        .map(|s| (1, s))
        .chain(authorities.iter().map(|s| (2, s)));
    for (section, set) in sections {
        if !fits(set, &mut writer) {
            truncated = true;
            answer_cut = true;
            break;
        }
        counts[section] += u16::try_from(set.len()).ok()?;
    }
    if !answer_cut {
        let mut glue_left_out = false;
        let additionals = rrsets_of(response.additionals);
        for set in &additionals {
            if fits(set, &mut writer) {
                counts[3] += u16::try_from(set.len()).ok()?;
            } else if referral && is_glue_of(&authorities, &set[0].name) {
                glue_left_out = true;
                break;
            }
        }
        truncated |= glue_left_out;
    }
    if let Some(opt) = &opt {
        writer.record(opt)?;
        counts[3] += 1;
    }
    Some((with_counts(writer.out, counts, truncated), answer_cut))
}

/// Whether `name` lies at or below a delegation among the authority section's RRsets.
fn is_glue_of(authorities: &[Vec<Record>], name: &Name) -> bool {
    authorities.iter().flatten().any(|ns| ns.name.zone_of(name))
}

/// The zone that answers DS at `key`. DS belongs to the parent side of a zone cut (RFC 4035
/// §3.1.4.1), so the zone is looked for without the name's first label, as Knot does: at the
/// apex of a hosted zone whose parent zone is hosted too, the parent answers. A name whose
/// parent no hosted zone holds is answered by its own zone, if any.
fn zone_for_ds<'i>(index: &'i DnsIndex, key: &str) -> Option<&'i std::sync::Arc<ZoneIndex>> {
    key.split_once('.')
        .and_then(|(_, parent)| index.zone_for(parent))
        .or_else(|| index.zone_for(key))
}

/// The response to `request` (or the rcode of an error), whether an RRset of its answer or
/// authority section could not fit, and what rate limiting counts it as; `additional_cut` is
/// set when an additional RRset was left out.
fn respond(
    index: &DnsIndex,
    request: &Message,
    transport: Transport,
    limit: usize,
    additional_cut: &mut bool,
) -> Result<(Message, bool, ResponseKind), ResponseCode> {
    if request.metadata.message_type != MessageType::Query {
        return Err(ResponseCode::FormErr);
    }
    match request.metadata.op_code {
        OpCode::Query => {}
        // Nobody may notify a primary or update its zones (changes come through the API):
        // NOTAUTH, as Knot answers where no ACL allows them.
        OpCode::Notify | OpCode::Update => return Err(ResponseCode::NotAuth),
        _ => return Err(ResponseCode::NotImp),
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
    let qtype = query.query_type();
    // An IXFR carries the secondary's SOA in its authority section (RFC 1995 §3): one without
    // is malformed, as over TCP. Records in another query's answer or authority section mean
    // nothing to it: they are ignored, as Knot ignores them.
    let ixfr = qtype == RecordType::IXFR
        && matches!(request.authorities.as_slice(), [r] if r.record_type() == RecordType::SOA);
    if qtype == RecordType::IXFR && !ixfr {
        return Err(ResponseCode::FormErr);
    }
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        return Err(ResponseCode::Refused);
    }
    // The reserved type 0 is not implemented, as Knot answers (for names in no zone too);
    // meta and pseudo types (OPT, TSIG) get what any type no name holds gets.
    if qtype == RecordType::ZERO {
        return Err(ResponseCode::NotImp);
    }
    let key = key_of(query.name());
    let zone = if qtype == RecordType::DS {
        zone_for_ds(index, &key)
    } else {
        index.zone_for(&key)
    };
    let Some(zone) = zone else {
        return Err(ResponseCode::Refused);
    };
    // Transfers over TCP are the transfer path's (its ACLs and TSIG); here, only what UDP
    // gets: no AXFR (as Knot answers), and for an IXFR of a zone's apex the current SOA
    // alone, which tells a secondary that is current that it is, and another to ask over TCP
    // (RFC 1995 §2). (The SOA is anybody's to ask for.)
    let soa_only =
        ixfr && transport == Transport::Udp && key == zone.origin && zone.soa().is_some();
    match qtype {
        RecordType::AXFR if transport == Transport::Udp => return Err(ResponseCode::NotImp),
        RecordType::AXFR | RecordType::IXFR if !soa_only => return Err(ResponseCode::Refused),
        _ => {}
    }
    let mut answer = Answer {
        authoritative: true,
        room: limit,
        ..Answer::default()
    };
    match zone.soa() {
        Some(soa) if soa_only => {
            answer.add(Section::Answer, query.name(), soa);
        }
        _ => resolve(zone, query.name(), qtype, &mut answer),
    }
    // As Knot, NSD and BIND count them: a flood can vary the name of an NXDOMAIN or of a
    // wildcard's answer, and the name or type of a NODATA, without end, so those are counted
    // per zone (or wildcard); only an answer from an existing name counts per name and type.
    let kind = if answer.rcode == Some(ResponseCode::NXDomain) {
        ResponseKind::nxdomain(&zone.origin)
    } else if answer.authoritative && answer.answers.is_empty() && !answer.overflow {
        ResponseKind::nodata(&zone.origin)
    } else if qtype != RecordType::CNAME
        && answer.rrl_kind.is_none()
        && !answer.answers.is_empty()
        && answer
            .answers
            .iter()
            .all(|r| r.record_type() == RecordType::CNAME)
    {
        // A CNAME (chain) alone answers every type its target lacks, any of 65,536: counted
        // per name, whatever the type.
        ResponseKind::alias(&key)
    } else {
        answer
            .rrl_kind
            .unwrap_or_else(|| ResponseKind::answer(&key, u16::from(qtype)))
    };
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    // An RRset that cannot fit ends the response there, flagged truncated (as `truncate`).
    response.metadata.truncation = answer.overflow || answer.glue_cut;
    response.metadata.authoritative = answer.authoritative;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.response_code = answer.rcode.unwrap_or(ResponseCode::NoError);
    response.queries = request.queries.clone();
    response.answers = answer.answers;
    response.authorities = answer.authorities;
    response.additionals = answer.additionals;
    *additional_cut = answer.additional_cut;
    Ok((response, answer.overflow, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_built_from_label_bytes_and_keep_dots_inside_labels_apart() {
        let name = |labels: &[&[u8]]| Name::from_labels(labels.iter().copied()).expect("name");
        assert_eq!(
            key_of(&name(&[b"-Foo", b"Example", b"COM"])),
            "-foo.example.com"
        );
        assert_eq!(
            key_of(&name(&[b"a.B", b"example", b"com"])),
            "a\0b.example.com"
        );
        assert_eq!(key_of(&name(&[b"\xc3\xa9", b"com"])), "\0\0.com");
        assert_eq!(key_of(&Name::root()), "");
    }
}
