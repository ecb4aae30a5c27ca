//! Outgoing zone transfers: AXFR and IXFR over TCP to the zone's configured peers (the transfer
//! ACL), TSIG-signed when the peer has a key; a journal of changes by serial for IXFR; and
//! NOTIFY to the peers whenever a zone's serial changes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::DnsError;
use crate::index::{DnsIndex, ZoneIndex};
use crate::tsig::{self, Key, Signed};

/// Changes kept per zone for IXFR; older serials get a full transfer.
const JOURNAL_DEPTH: usize = 100;
/// Records a zone's journal holds at most, over all its deltas (as BIND's `max-journal-size`
/// and Knot's `journal-max-usage` bound it by size): older deltas go first; a secondary behind
/// them gets the zone whole.
const JOURNAL_RECORDS: usize = 200_000;
/// Bytes of records per transfer message, counted with no name compressed (so at least what they
/// take in the message): far below [`MESSAGE_MAX`], whatever the question and the signature.
const MESSAGE_BUDGET: usize = 16_000;
/// Longest message of a transfer, its TSIG record included: a TCP frame's length is 16 bits.
const MESSAGE_MAX: usize = u16::MAX as usize;

/// One change of a zone: the records removed and added between two serials.
#[derive(Debug, Clone)]
pub struct Delta {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<Record>,
    pub added: Vec<Record>,
}

/// Changes by zone, newest last; and the NOTIFYs being sent for them.
#[derive(Debug, Default)]
pub struct Journal {
    zones: Mutex<HashMap<String, VecDeque<Delta>>>,
    notices: Notices,
    /// Changes from an index of a snapshot older than this revision are not journaled: what
    /// its serials stood for is not known ([`Journal::forget_changes_before`]).
    forget_before: std::sync::atomic::AtomicU64,
}

/// The NOTIFY each peer of each zone is being sent, by a number taken when it started: a newer
/// change's NOTIFY supersedes the one for an older change, which stops retrying (one pending
/// NOTIFY per zone and peer, as BIND and Knot keep). Peers at one address are told apart by
/// the key they sign with (a secondary's views, chosen by key): each is notified.
#[derive(Debug, Default)]
struct Notices {
    sending: Mutex<HashMap<(String, Peer), u64>>,
    started: std::sync::atomic::AtomicU64,
}

/// A peer as NOTIFYs tell it apart: its address and the name of the key it signs with.
type Peer = (SocketAddr, Option<String>);

impl Notices {
    fn begin(&self, zone: &str, peer: &Peer) -> u64 {
        let number = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((zone.to_owned(), peer.clone()), number);
        number
    }

    fn current(&self, zone: &str, peer: &Peer, number: u64) -> bool {
        self.sending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(zone.to_owned(), peer.clone()))
            == Some(&number)
    }

    fn end(&self, zone: &str, peer: &Peer, number: u64) {
        let mut sending = self.sending.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (zone.to_owned(), peer.clone());
        if sending.get(&key) == Some(&number) {
            sending.remove(&key);
        }
    }
}

fn all_records(zone: &ZoneIndex) -> Vec<Record> {
    let mut keys: Vec<&str> = zone.nodes.keys().map(String::as_str).collect();
    keys.sort();
    records_at(zone, keys)
}

/// The records at `names` (in that order), SOA aside.
fn records_at<'a>(zone: &ZoneIndex, names: impl IntoIterator<Item = &'a str>) -> Vec<Record> {
    let mut out = Vec::new();
    for key in names {
        let Some(node) = zone.nodes.get(key) else {
            continue;
        };
        let Ok(owner) = Name::from_ascii(format!("{key}.")) else {
            continue;
        };
        for set in &node.rrsets {
            if set.rtype == RecordType::SOA {
                continue;
            }
            for rd in &set.rdatas {
                out.push(Record::from_rdata(owner.clone(), set.ttl, rd.to_rdata()));
            }
        }
    }
    out
}

fn soa_record(zone: &ZoneIndex, serial: u32) -> Option<Record> {
    let set = zone.soa()?;
    let RData::SOA(soa) = set.rdatas.first()?.other()? else {
        return None;
    };
    let soa = SOA::new(
        soa.mname.clone(),
        soa.rname.clone(),
        serial,
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum,
    );
    Some(Record::from_rdata(
        zone.origin_name.clone(),
        set.ttl,
        RData::SOA(soa),
    ))
}

/// What tells two records apart in a journal: owner, type, TTL and the data's wire form (its
/// text form may say two different data the same way: TXT strings are printed joined).
fn journal_key(r: &Record) -> (String, RecordType, u32, Vec<u8>) {
    use hickory_proto::serialize::binary::BinEncodable as _;
    let data = r
        .data
        .to_bytes()
        .unwrap_or_else(|_| r.data.to_string().into_bytes());
    (r.name.to_ascii(), r.record_type(), r.ttl, data)
}

/// Drops a zone's oldest deltas until it holds at most `depth` of them and `most` records over
/// all (the newest delta stays, whatever its size).
fn trim_journal(deltas: &mut std::collections::VecDeque<Delta>, depth: usize, most: usize) {
    let records = |d: &Delta| d.removed.len() + d.added.len();
    let mut held: usize = deltas.iter().map(records).sum();
    while deltas.len() > depth || (held > most && deltas.len() > 1) {
        if let Some(oldest) = deltas.pop_front() {
            held -= records(&oldest);
        }
    }
}

impl Journal {
    /// Changes from an index of a snapshot older than `revision` are not journaled, and the
    /// zones they change lose their journal: their secondaries get the whole zone. For serials
    /// that stood for other contents in the process before this one (the edge addresses its
    /// proxied names answer with changed at a restart, and the first index, from the last
    /// good snapshot, already answers with the new ones under the old serial).
    pub fn forget_changes_before(&self, revision: u64) {
        self.forget_before
            .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records what changed in every zone between two indexes.
    pub fn record(&self, old: &DnsIndex, new: &DnsIndex) {
        let forget = old.revision
            < self
                .forget_before
                .load(std::sync::atomic::Ordering::Relaxed);
        let mut zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        zones.retain(|name, _| new.zones.contains_key(name));
        for (name, zone) in &new.zones {
            // Only zones with secondaries need a journal.
            if zone.transfer_peers.is_empty() {
                continue;
            }
            let Some(before) = old.zones.get(name) else {
                continue;
            };
            if before.serial == zone.serial {
                continue;
            }
            if forget {
                zones.remove(name);
                continue;
            }
            let key = journal_key;
            // A zone updated name by name differs only at the names it built again.
            let (old_records, new_records) = match before.nodes.differing_names(&zone.nodes) {
                Some(names) => (
                    records_at(before, names.iter().copied()),
                    records_at(zone, names.iter().copied()),
                ),
                None => (all_records(before), all_records(zone)),
            };
            let old_set: HashSet<_> = old_records.iter().map(key).collect();
            let new_set: HashSet<_> = new_records.iter().map(key).collect();
            let removed = old_records
                .into_iter()
                .filter(|r| !new_set.contains(&key(r)))
                .collect();
            let added = new_records
                .into_iter()
                .filter(|r| !old_set.contains(&key(r)))
                .collect();
            let deltas = zones.entry(name.clone()).or_default();
            deltas.push_back(Delta {
                from: before.serial,
                to: zone.serial,
                removed,
                added,
            });
            trim_journal(deltas, JOURNAL_DEPTH, JOURNAL_RECORDS);
        }
    }

    /// The deltas that take a secondary from `serial` to `current`, if the journal has them all.
    fn path(&self, zone: &str, serial: u32, current: u32) -> Option<Vec<Delta>> {
        let zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        let deltas = zones.get(zone)?;
        let start = deltas.iter().position(|d| d.from == serial)?;
        // Up to the change to the serial served: the journal may already hold the next one,
        // journaled before its index is served.
        let mut path: Vec<Delta> = Vec::new();
        for d in deltas.iter().skip(start) {
            if path.last().is_some_and(|last| last.to != d.from) {
                return None;
            }
            path.push(d.clone());
            if d.to == current {
                return Some(path);
            }
        }
        None
    }
}

fn refusal(request: &Message, rcode: ResponseCode) -> Vec<Vec<u8>> {
    let mut r = Message::response(request.metadata.id, request.metadata.op_code);
    r.metadata.response_code = rcode;
    r.queries = request.queries.clone();
    answer_opt(request, &mut r);
    r.to_vec().map(|b| vec![b]).unwrap_or_default()
}

/// An OPT in the response to a request that had one (RFC 6891 §6.1.1; for a transfer, in its
/// first message, RFC 5936 §2.2.5).
fn answer_opt(request: &Message, response: &mut Message) {
    if let Some(asked) = &request.edns {
        let mut opt = hickory_proto::op::Edns::new();
        opt.set_max_payload(1232);
        opt.set_version(0);
        opt.set_dnssec_ok(asked.flags().dnssec_ok);
        opt.set_rcode_high(response.metadata.response_code.high());
        response.set_edns(opt);
    }
}

/// A refusal, signed when the request was.
fn signed_refusal(
    request: &Message,
    rcode: ResponseCode,
    signed: Option<&Signed>,
    now: u64,
) -> Vec<Vec<u8>> {
    let mut out = refusal(request, rcode);
    if let (Some(s), Some(bytes)) = (signed, out.first_mut()) {
        tsig::sign(bytes, &s.key, Some(&s.mac), true, now);
    }
    out
}

/// The messages answering a transfer request, and, for a signed transfer, what signs each one
/// as it is sent (RFC 8945 §5.3.1: each message carries the time it was signed; a secondary
/// checks it on every message of a long transfer).
#[derive(Debug, Default)]
pub struct Transfer {
    pub messages: Vec<Vec<u8>>,
    pub signer: Option<Signer>,
    /// The transfer's slot among those that may run at once, held while it is sent.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<Vec<Vec<u8>>> for Transfer {
    fn from(messages: Vec<Vec<u8>>) -> Self {
        Self {
            messages,
            signer: None,
            slot: None,
        }
    }
}

/// Signs a transfer's messages in turn, each MAC chained to the one before (the request's
/// first), the first with every TSIG variable and the others with the timers alone.
#[derive(Debug)]
pub struct Signer {
    key: Key,
    prior: Vec<u8>,
    first: bool,
}

impl Signer {
    /// Signs the next message, at `now`.
    pub fn sign(&mut self, message: &mut Vec<u8>, now: u64) {
        self.prior = tsig::sign(message, &self.key, Some(&self.prior), self.first, now);
        self.first = false;
    }
}

/// Answers an AXFR or IXFR query from `client` with the messages of the transfer (a refusal
/// is signed at `now`; the transfer's messages are signed as they are sent). A transfer the
/// ACL allows takes one of `slots` (those that may run at once) for as long as it is sent;
/// when none is free it gets SERVFAIL, and the secondary tries again later. Requests the ACL
/// refuses never take one.
pub fn transfer(
    index: &DnsIndex,
    journal: &Journal,
    packet: &[u8],
    client: IpAddr,
    (now, slots): (u64, &Arc<tokio::sync::Semaphore>),
) -> Transfer {
    let Ok(request) = Message::from_vec(packet) else {
        return Transfer::default();
    };
    let Some(query) = request.queries.first() else {
        return Transfer::default();
    };
    // An EDNS version this server does not speak gets BADVERS, as any query does (RFC 6891
    // §6.1.3).
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return refusal(&request, ResponseCode::BADVERS).into();
    }
    // An IXFR names the secondary's version by an SOA in its authority section (RFC 1995 §3):
    // one without is malformed (FORMERR, as Knot answers), not a request for the whole zone.
    if query.query_type() == RecordType::IXFR
        && !request
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    {
        return refusal(&request, ResponseCode::FormErr).into();
    }
    let mut key = query.name().to_ascii().to_ascii_lowercase();
    if key.ends_with('.') {
        key.pop();
    }
    let zone = index.zones.get(&key);
    // A signed request is verified with the keys of the zone's peers; one that fails gets its
    // TSIG error (RFC 8945 §5.2).
    let signed: Option<Signed> = match tsig::read_request(packet) {
        Ok(tsig_request) => {
            let keys: Vec<Key> = zone
                .iter()
                .flat_map(|z| z.transfer_peers.iter())
                .filter_map(|p| p.tsig.as_ref())
                .map(|k| Key {
                    name: k.name.to_ascii_lowercase(),
                    secret: k.secret_bytes(),
                })
                .collect();
            match tsig_request.verify(packet, now, |name| {
                keys.iter().find(|k| k.name == name).cloned()
            }) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(%client, zone = %key, "zone transfer refused: TSIG error {}", e.error);
                    let mut out = refusal(&request, ResponseCode::NotAuth);
                    if let Some(bytes) = out.first_mut() {
                        tsig_request.append_error(bytes, &e, now);
                    }
                    return out.into();
                }
            }
        }
        Err(tsig::TsigFailure::Malformed) => {
            return refusal(&request, ResponseCode::FormErr).into();
        }
        Err(_) => None,
    };
    let refuse = |rcode| signed_refusal(&request, rcode, signed.as_ref(), now).into();
    let Some(zone) = zone else {
        tracing::info!(%client, zone = %key, "zone transfer refused: no such zone here");
        return refuse(ResponseCode::NotAuth);
    };
    // The transfer ACL: only the zone's peers, and with their key when they have one.
    // (Addresses compared in their canonical form: an IPv4 peer may come as `::ffff:a.b.c.d`.)
    // Of several peers at one address, the one whose key signed the request (else the first).
    let client = client.to_canonical();
    let at_client = || {
        zone.transfer_peers
            .iter()
            .filter(|p| p.addr.ip().to_canonical() == client)
    };
    let signed_by = |p: &&parapet_snapshot::TransferPeer| matches!((&p.tsig, &signed), (Some(k), Some(s)) if s.key.name.eq_ignore_ascii_case(&k.name));
    let Some(peer) = at_client().find(signed_by).or_else(|| at_client().next()) else {
        tracing::info!(%client, zone = %zone.origin, "zone transfer refused: not a secondary of the zone");
        return refuse(ResponseCode::NotAuth);
    };
    if let Some(k) = &peer.tsig
        && signed
            .as_ref()
            .is_none_or(|s| !s.key.name.eq_ignore_ascii_case(&k.name))
    {
        tracing::warn!(%client, zone = %zone.origin, "zone transfer refused: not signed with the peer's key");
        return refuse(ResponseCode::NotAuth);
    }
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
        tracing::warn!(%client, zone = %zone.origin, "zone transfer refused for now: as many are running as may");
        return refuse(ResponseCode::ServFail);
    };
    let Some(current_soa) = soa_record(zone, zone.serial) else {
        return Transfer::default();
    };
    let mut records: Vec<Record> = Vec::new();
    if query.query_type() == RecordType::IXFR {
        let client_serial = request.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        });
        match client_serial {
            // Up to date (or ahead): the current SOA alone.
            Some(s) if s == zone.serial || crate::serial_after(s, zone.serial) => {
                records.push(current_soa.clone())
            }
            Some(s) if peer.ixfr => {
                if let Some(path) = journal.path(&zone.origin, s, zone.serial) {
                    records.push(current_soa.clone());
                    for d in path {
                        records.extend(soa_record(zone, d.from));
                        records.extend(d.removed);
                        records.extend(soa_record(zone, d.to));
                        records.extend(d.added);
                    }
                    records.push(current_soa.clone());
                }
            }
            _ => {}
        }
    }
    if records.is_empty() {
        // AXFR, or an IXFR the journal cannot serve: the whole zone.
        records.push(current_soa.clone());
        records.extend(all_records(zone));
        records.push(current_soa);
    }
    // Room for the signature each message gets.
    let room = signed.as_ref().map_or(0, |s| tsig::signature_len(&s.key));
    let messages = match encode_messages(&request, records, MESSAGE_MAX - room) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(%client, zone = %zone.origin, "zone transfer failed: {e}");
            return refuse(ResponseCode::ServFail);
        }
    };
    Transfer {
        messages,
        signer: signed.map(|s| Signer {
            key: s.key,
            prior: s.mac,
            first: true,
        }),
        slot: Some(slot),
    }
}

/// The bytes `record` takes in a message at most: its encoding with no name compressed.
fn uncompressed_len(record: &Record, scratch: &mut Vec<u8>) -> Result<usize, DnsError> {
    scratch.clear();
    let mut encoder = BinEncoder::new(scratch);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    record.emit(&mut encoder).map_err(|e| {
        DnsError::Transfer(format!("{} {}: {e}", record.name, record.record_type()))
    })?;
    Ok(scratch.len())
}

/// Encodes a transfer's records as the messages answering `request` (the first one repeats the
/// question): each holds up to [`MESSAGE_BUDGET`] bytes of records (a larger record goes
/// alone), none is truncated and none is longer than `limit`.
fn encode_messages(
    request: &Message,
    records: Vec<Record>,
    limit: usize,
) -> Result<Vec<Vec<u8>>, DnsError> {
    let encode = |answers: Vec<Record>, first: bool| {
        let mut m = Message::response(request.metadata.id, OpCode::Query);
        m.metadata.authoritative = true;
        if first {
            m.queries = request.queries.clone();
            answer_opt(request, &mut m);
        }
        m.answers = answers;
        let bytes = m.to_vec().map_err(|e| DnsError::Transfer(e.to_string()))?;
        // The encoder drops the records that do not fit and sets TC: a secondary would take
        // the rest for the whole zone.
        let truncated = bytes.get(2).is_some_and(|flags| flags & 0x02 != 0);
        if truncated || bytes.len() > limit {
            return Err(DnsError::Transfer(format!(
                "{} records do not fit a message of {limit} bytes",
                m.answers.len()
            )));
        }
        Ok(bytes)
    };
    let mut messages = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut size = 0;
    let mut scratch = Vec::new();
    for r in records {
        let len = uncompressed_len(&r, &mut scratch)?;
        if size + len > MESSAGE_BUDGET && !chunk.is_empty() {
            messages.push(encode(std::mem::take(&mut chunk), messages.is_empty())?);
            size = 0;
        }
        size += len;
        chunk.push(r);
    }
    if !chunk.is_empty() {
        messages.push(encode(chunk, messages.is_empty())?);
    }
    Ok(messages)
}

/// Whether a query is a well-formed zone transfer request: a query (not a response), opcode
/// QUERY, one IN question of type AXFR or IXFR (RFC 5936 §2.1). Any other message, a transfer
/// type among them, is the answer engine's, which gives it its error (FORMERR, NOTIMP,
/// REFUSED).
pub fn is_transfer(packet: &[u8]) -> bool {
    let Ok(m) = Message::from_vec(packet) else {
        return false;
    };
    m.metadata.message_type == MessageType::Query
        && m.metadata.op_code == OpCode::Query
        && matches!(m.queries.as_slice(), [q]
            if q.query_class() == DNSClass::IN
                && matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR))
}

/// Tells every peer of every zone whose serial or peers changed between two indexes (RFC
/// 1996), with retries, in the background: transfers just enabled and a forced NOTIFY (a
/// new count in the peers) are notified too.
/// NOTIFYs leave from `from`'s address of the peer's family (the addresses DNS listens on,
/// which secondaries know as the primary's), else from the one the system picks.
pub fn notify_changes(
    old: &DnsIndex,
    new: &DnsIndex,
    from: &[std::net::IpAddr],
    journal: &Arc<Journal>,
) {
    for (name, zone) in &new.zones {
        if zone.transfer_peers.is_empty()
            || old
                .zones
                .get(name)
                .is_some_and(|z| z.serial == zone.serial && z.transfer_peers == zone.transfer_peers)
        {
            continue;
        }
        notify_peers(zone, from, journal);
    }
}

/// Sends every zone's NOTIFY to its secondaries, as BIND and Knot do once they load their
/// zones: a process that starts (or takes over) cannot know which serials the secondaries
/// hold, and the previous one may have answered their last check.
pub fn notify_all(index: &DnsIndex, from: &[std::net::IpAddr], journal: &Arc<Journal>) {
    for zone in index.zones.values() {
        notify_peers(zone, from, journal);
    }
}

/// Sends `zone`'s NOTIFY to each of its secondaries (superseding one being sent).
fn notify_peers(zone: &Arc<ZoneIndex>, from: &[std::net::IpAddr], journal: &Arc<Journal>) {
    for peer in &zone.transfer_peers {
        let zone = Arc::clone(zone);
        let peer = peer.clone();
        let source = notify_source(from, peer.addr.ip());
        let journal = Arc::clone(journal);
        let told: Peer = (
            peer.addr,
            peer.tsig.as_ref().map(|k| k.name.to_ascii_lowercase()),
        );
        let number = journal.notices.begin(&zone.origin, &told);
        tokio::spawn(async move {
            let notices = Some((&journal.notices, &told, number));
            if let Err(e) = notify(&zone, peer.addr, peer.tsig.as_ref(), source, notices).await {
                tracing::warn!(zone = %zone.origin, peer = %peer.addr, "NOTIFY failed: {e}");
            }
            journal.notices.end(&zone.origin, &told, number);
        });
    }
}

/// The address a NOTIFY to `peer` leaves from: the first of `from` of the peer's family, but a
/// loopback address only for a peer on loopback (the system refuses to send from one to
/// anywhere else); `None` lets the system pick.
fn notify_source(from: &[std::net::IpAddr], peer: std::net::IpAddr) -> Option<std::net::IpAddr> {
    from.iter().copied().find(|ip| {
        ip.is_ipv4() == peer.is_ipv4()
            && !ip.is_unspecified()
            && (!ip.is_loopback() || peer.is_loopback())
    })
}

/// Sends `zone`'s NOTIFY to `addr` until it is acknowledged (5 tries); with `notices`, stops
/// early once a newer NOTIFY to the same peer has started.
async fn notify(
    zone: &ZoneIndex,
    addr: SocketAddr,
    key: Option<&parapet_model::transfer::TsigKey>,
    source: Option<std::net::IpAddr>,
    notices: Option<(&Notices, &Peer, u64)>,
) -> Result<(), String> {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    let mut q = Query::query(zone.origin_name.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    m.answers.extend(soa_record(zone, zone.serial));
    let mut bytes = m.to_vec().map_err(|e| e.to_string())?;
    // With the peer's key: the key, and the request's MAC its answer must be signed over.
    let signing = key.map(|k| {
        let key = Key {
            name: k.name.clone(),
            secret: k.secret_bytes(),
        };
        let mac = tsig::sign(&mut bytes, &key, None, true, u64::from(crate::unix_now()));
        (key, mac)
    });
    let bind: SocketAddr = match source {
        Some(ip) => (ip, 0).into(),
        None if addr.is_ipv4() => ([0, 0, 0, 0], 0).into(),
        None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut wait = Duration::from_secs(1);
    for _ in 0..5 {
        if notices.is_some_and(|(n, peer, number)| !n.current(&zone.origin, peer, number)) {
            tracing::debug!(zone = %zone.origin, peer = %addr, serial = zone.serial, "NOTIFY superseded by a newer change's");
            return Ok(());
        }
        socket
            .send_to(&bytes, addr)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(Some(rcode)) = tokio::time::timeout(
            wait,
            answer(&socket, &mut buf, addr, &bytes, signing.as_ref(), zone),
        )
        .await
        {
            // A refusal (NOTAUTH for a key or an address it does not take, REFUSED) is an
            // answer, not an acknowledgement: the secondary will not transfer.
            if rcode != 0 {
                return Err(format!(
                    "the peer answered {}",
                    ResponseCode::from_low(rcode)
                ));
            }
            tracing::info!(zone = %zone.origin, peer = %addr, serial = zone.serial, "NOTIFY acknowledged");
            return Ok(());
        }
        wait *= 2;
    }
    Err("no answer after 5 tries".into())
}

/// The rcode of the peer's answer to the NOTIFY `request` once one comes (`None`: reading
/// failed): an answer from `addr` to that request; an acknowledgement must be signed with the
/// peer's key over the request's MAC when `signing` has them. Anything else is read past (RFC
/// 8945 §5.4 has an answer without a valid signature discarded). A refusal need not be signed
/// (a peer that does not take the key cannot sign it): it only ends the tries, and is logged.
async fn answer(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    addr: SocketAddr,
    request: &[u8],
    signing: Option<&(Key, Vec<u8>)>,
    zone: &ZoneIndex,
) -> Option<u8> {
    loop {
        let (n, from) = socket.recv_from(buf).await.ok()?;
        let answer = &buf[..n];
        // A response to a NOTIFY (QR, opcode 4) with the request's id.
        if from != addr
            || n < 12
            || answer[..2] != request[..2]
            || answer[2] & 0xf8 != 0x80 | (4 << 3)
        {
            continue;
        }
        if answer[3] & 0x0f == 0
            && let Some((key, mac)) = signing
            && !tsig::verifies_response(answer, key, mac, u64::from(crate::unix_now()))
        {
            tracing::warn!(zone = %zone.origin, peer = %addr, "NOTIFY answer not signed with the peer's key: ignored");
            continue;
        }
        return Some(answer[3] & 0x0f);
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::{A, TXT};

    use super::*;

    #[test]
    fn a_path_ends_at_the_serial_served_though_the_journal_holds_the_next_change() {
        let journal = Journal::default();
        let delta = |from, to| Delta {
            from,
            to,
            removed: Vec::new(),
            added: Vec::new(),
        };
        journal
            .zones
            .lock()
            .expect("journal")
            .insert("z".into(), [delta(1, 2), delta(2, 3), delta(3, 4)].into());
        let hops = |from, current| journal.path("z", from, current).map(|p| p.len());
        assert_eq!(
            hops(1, 3),
            Some(2),
            "the change to 4 is journaled, not yet served"
        );
        assert_eq!(hops(2, 4), Some(2));
        assert_eq!(
            hops(1, 5),
            None,
            "the journal does not reach the serial served"
        );
        assert_eq!(hops(9, 4), None);
    }

    /// An AXFR request for `notify.test`, with `questions` copies of the question.
    fn axfr(flags: u8, questions: u8, class: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, flags, 0, 0, questions, 0, 0, 0, 0, 0, 0];
        for _ in 0..questions {
            p.extend_from_slice(b"\x06notify\x04test\x00\x00\xfc");
            p.extend_from_slice(&class.to_be_bytes());
        }
        p
    }

    /// What [`transfer`] answers `packet` with, from loopback, holding no zone.
    fn transferred(packet: &[u8]) -> Transfer {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let client = "127.0.0.1".parse().expect("ip");
        transfer(
            &DnsIndex::default(),
            &Journal::default(),
            packet,
            client,
            (0, &slots),
        )
    }

    #[test]
    fn notifies_leave_from_a_listen_address_that_can_reach_the_peer() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
        let from = [ip("127.0.0.1"), ip("0.0.0.0"), ip("203.0.113.5"), ip("::1")];
        assert_eq!(
            notify_source(&from, ip("192.0.2.53")),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(notify_source(&from, ip("127.0.0.9")), Some(ip("127.0.0.1")));
        assert_eq!(notify_source(&from, ip("::1")), Some(ip("::1")));
        assert_eq!(notify_source(&from, ip("2001:db8::53")), None);
        assert_eq!(notify_source(&from[..2], ip("192.0.2.53")), None);
    }

    #[test]
    fn a_transfer_request_with_an_opt_gets_one_back() {
        let mut packet = axfr(0, 1, 1);
        packet[11] = 1;
        packet.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let refused = transferred(&packet);
        let m = Message::from_vec(&refused.messages[0]).expect("a response");
        assert_ne!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.edns.is_some(), "{m:?}");
        let plain = transferred(&axfr(0, 1, 1));
        assert!(
            Message::from_vec(&plain.messages[0])
                .expect("a response")
                .edns
                .is_none()
        );
    }

    #[test]
    fn an_ixfr_without_the_secondarys_soa_gets_formerr() {
        let mut packet = axfr(0, 1, 1);
        // The question's type: IXFR (251).
        let at = packet.len() - 3;
        packet[at] = 251;
        let answered = transferred(&packet);
        assert_eq!(answered.messages.len(), 1);
        let m = Message::from_vec(&answered.messages[0]).expect("a response");
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{m:?}");
        assert_eq!(m.queries.len(), 1, "the question is echoed: {m:?}");
    }

    #[test]
    fn a_transfer_request_of_an_unknown_edns_version_gets_badvers() {
        let mut packet = axfr(0, 1, 1);
        packet[11] = 1;
        // An OPT of version 1.
        packet.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 1, 0, 0, 0, 0]);
        let answered = transferred(&packet);
        assert_eq!(answered.messages.len(), 1);
        let m = Message::from_vec(&answered.messages[0]).expect("a response");
        // (16 reads back as BADSIG, which shares BADVERS's number.)
        assert_eq!(u16::from(m.metadata.response_code), 16, "{m:?}");
        assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    }

    #[test]
    fn each_message_of_a_signed_transfer_carries_the_time_it_was_signed() {
        // Time signed: 6 bytes before the fudge, the MAC's size and a 32-byte MAC, the
        // original id, the error and an empty other data (RFC 8945 §4.2).
        let time_of = |m: &[u8]| {
            let at = m.len() - 48;
            m[at..at + 6]
                .iter()
                .fold(0u64, |t, b| t << 8 | u64::from(*b))
        };
        let mut signer = Signer {
            key: Key {
                name: "xfr-key.".into(),
                secret: b"0123456789abcdef".to_vec(),
            },
            prior: vec![7; 32],
            first: true,
        };
        let mut messages = [axfr(0x84, 1, 1), axfr(0x84, 1, 1)];
        signer.sign(&mut messages[0], 1_000);
        let first_mac = signer.prior.clone();
        signer.sign(&mut messages[1], 1_400);
        assert_eq!(time_of(&messages[0]), 1_000);
        assert_eq!(time_of(&messages[1]), 1_400);
        assert_ne!(signer.prior, first_mac, "each MAC chains on");
    }

    #[test]
    fn only_a_well_formed_transfer_request_is_a_transfer() {
        use crate::engine::{Limits, Transport, answer_query};
        assert!(is_transfer(&axfr(0, 1, 1)));
        let index = DnsIndex::default();
        let limits = Limits {
            max_udp_payload: 1232,
        };
        let rcode = |p: &[u8]| {
            answer_query(&index, p, Transport::Tcp, limits, None).map(|a| a.bytes[3] & 0x0f)
        };
        // Two questions, or a response: dropped, as Knot drops them.
        for p in [axfr(0, 2, 1), axfr(0x80, 1, 1)] {
            assert!(!is_transfer(&p));
            assert_eq!(rcode(&p), None);
        }
        // A NOTIFY: NOTAUTH. An unassigned opcode: NOTIMP. Another class: REFUSED.
        let notify_opcode = axfr(4 << 3, 1, 1);
        assert!(!is_transfer(&notify_opcode));
        assert_eq!(rcode(&notify_opcode), Some(9));
        let unassigned_opcode = axfr(3 << 3, 1, 1);
        assert!(!is_transfer(&unassigned_opcode));
        assert_eq!(rcode(&unassigned_opcode), Some(4));
        let chaos = axfr(0, 1, 3);
        assert!(!is_transfer(&chaos));
        assert_eq!(rcode(&chaos), Some(5));
    }

    #[tokio::test]
    async fn a_notify_the_peer_refuses_is_not_taken_for_acknowledged() {
        let mut zone = parapet_model::Zone::new(
            "z".into(),
            "notify.test".into(),
            vec!["ns1.parapet.test".into()],
            "a".into(),
            String::new(),
            1,
        );
        zone.status = parapet_model::ZoneStatus::Active;
        let entries = [(
            "zones/z".to_owned(),
            serde_json::to_vec(&zone).expect("zone"),
        )];
        let snapshot = parapet_snapshot::compile_snapshot(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            1,
        )
        .expect("compiles");
        let index = DnsIndex::build(&snapshot, &crate::EdgeAddrs::default(), None, None).0;
        let zone = Arc::clone(&index.zones["notify.test"]);
        // A peer answering each NOTIFY with `rcode`.
        let peer = |rcode: u8| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let addr = socket.local_addr().expect("addr");
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let mut reply = buf[..n.min(12)].to_vec();
                    reply[2] |= 0x80;
                    reply[3] = rcode;
                    reply[4..12].fill(0);
                    let _ = socket.send_to(&reply, from);
                }
            });
            addr
        };
        assert_eq!(notify(&zone, peer(0), None, None, None).await, Ok(()));
        let refused = notify(&zone, peer(5), None, None, None).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_ascii_lowercase().contains("refused")),
            "{refused:?}"
        );

        // A peer that never answers: the NOTIFY retries until a newer one to the same peer
        // starts, then stops at its next try.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        silent
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let notices = Arc::new(Notices::default());
        let told: Peer = (addr, None);
        let first = notices.begin("notify.test", &told);
        let sending = {
            let (zone, notices, told) = (Arc::clone(&zone), Arc::clone(&notices), told.clone());
            tokio::spawn(async move {
                notify(
                    &zone,
                    addr,
                    None,
                    None,
                    Some((notices.as_ref(), &told, first)),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Another peer at the address (another key) does not supersede it; a newer NOTIFY
        // to the same peer does.
        notices.begin("notify.test", &(addr, Some("other.".into())));
        assert!(notices.current("notify.test", &told, first));
        notices.begin("notify.test", &told);
        let stopped = tokio::time::timeout(Duration::from_secs(5), sending).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "the superseded NOTIFY went on: {stopped:?}"
        );
        let mut buf = [0u8; 512];
        let mut received = 0;
        while silent.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        assert_eq!(received, 2, "sent at once and after a second, then stopped");
    }

    #[test]
    fn a_journal_keeps_its_newest_deltas_within_its_depth_and_records() {
        let owner = Name::from_ascii("h.example.test.").expect("name");
        let delta = |from: u32, added: usize| Delta {
            from,
            to: from + 1,
            removed: Vec::new(),
            added: (0..added)
                .map(|i| {
                    let ip = u8::try_from(i % 250).expect("small");
                    Record::from_rdata(owner.clone(), 300, RData::A(A::new(192, 0, 2, ip)))
                })
                .collect(),
        };
        let mut deltas: std::collections::VecDeque<Delta> = (0..5).map(|i| delta(i, 10)).collect();
        trim_journal(&mut deltas, 3, 1000);
        assert_eq!(deltas.iter().map(|d| d.from).collect::<Vec<_>>(), [2, 3, 4]);
        deltas.push_back(delta(5, 25));
        trim_journal(&mut deltas, 100, 40);
        assert_eq!(deltas.iter().map(|d| d.from).collect::<Vec<_>>(), [4, 5]);
        deltas.push_back(delta(6, 60));
        trim_journal(&mut deltas, 100, 40);
        assert_eq!(
            deltas.iter().map(|d| d.from).collect::<Vec<_>>(),
            [6],
            "the newest stays"
        );
    }

    #[test]
    fn records_are_told_apart_in_the_journal_by_their_wire_data() {
        let owner = Name::from_ascii("t.example.test.").expect("name");
        let txt = |strings: &[&str]| {
            let strings = strings.iter().map(|s| (*s).to_owned()).collect();
            Record::from_rdata(owner.clone(), 300, RData::TXT(TXT::new(strings)))
        };
        assert_ne!(
            journal_key(&txt(&["a b", "c"])),
            journal_key(&txt(&["a bc"]))
        );
        assert_eq!(journal_key(&txt(&["a bc"])), journal_key(&txt(&["a bc"])));
    }

    #[test]
    fn long_records_are_packed_by_their_size_and_never_truncated() {
        let origin = Name::from_ascii("big.test.").expect("name");
        let mut request = Message::query();
        request.add_query(Query::query(origin.clone(), RecordType::AXFR));
        let mut records = Vec::new();
        for i in 0..300 {
            let owner = Name::from_ascii(format!("t{i}.big.test.")).expect("name");
            let text = vec![format!("{i:03}{}", "x".repeat(250)), "y".repeat(150)];
            records.push(Record::from_rdata(owner, 300, RData::TXT(TXT::new(text))));
        }
        for i in 0..200u8 {
            let owner = Name::from_ascii(format!("h{i}.big.test.")).expect("name");
            records.push(Record::from_rdata(
                owner,
                300,
                RData::A(A::new(192, 0, 2, i)),
            ));
        }
        let messages = encode_messages(&request, records, MESSAGE_MAX - 400).expect("encodes");
        assert!(messages.len() >= 8, "{} messages", messages.len());
        let mut received = 0;
        for (i, bytes) in messages.iter().enumerate() {
            assert!(bytes.len() <= MESSAGE_BUDGET + 512, "{} bytes", bytes.len());
            let m = Message::from_vec(bytes).expect("decodes");
            assert!(!m.metadata.truncation);
            assert_eq!(m.queries.len(), usize::from(i == 0));
            received += m.answers.len();
        }
        assert_eq!(received, 500);
    }

    #[test]
    fn a_record_too_large_for_any_message_fails_the_transfer() {
        let origin = Name::from_ascii("big.test.").expect("name");
        let mut request = Message::query();
        request.add_query(Query::query(origin.clone(), RecordType::AXFR));
        let text = vec!["z".repeat(255); 40];
        let records = vec![Record::from_rdata(origin, 300, RData::TXT(TXT::new(text)))];
        assert!(encode_messages(&request, records.clone(), MESSAGE_MAX).is_ok());
        assert!(matches!(
            encode_messages(&request, records, 8_000),
            Err(DnsError::Transfer(_))
        ));
    }
}
