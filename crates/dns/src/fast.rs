//! The hot path. Most queries are plain (one IN question, at most an OPT with no option but a
//! DNS cookie), and their answer depends only on the lowercase name, the type and whether EDNS
//! was used. The first such query is answered by the engine; its response is kept without its
//! cookie, and later ones get a copy with their own id, RD bit, question bytes (so the name's
//! case is echoed) and DO bit, and the server cookie for them appended to the OPT. The cache
//! belongs to one [`crate::DnsIndex`], so a new snapshot starts with an empty cache.

use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use hashbrown::HashTable;

const SHARDS: usize = 32;
/// Responses kept per index; beyond this, queries are answered by the engine without caching.
const MAX_ENTRIES: usize = 1 << 20;
/// Of which answers for names anyone can make up (NXDOMAIN, wildcards, referrals, NODATA):
/// a flood of random names must not fill the cache with answers asked once.
const MAX_MADE_UP: usize = 1 << 16;

use crate::rrl::ResponseKind;

/// One kept response with its key, in one allocation (key length in two bytes, key, response):
/// a lookup reads the table's slot and this, nothing else.
struct Entry {
    bytes: Box<[u8]>,
    kind: ResponseKind,
}

impl Entry {
    fn new(key: &[u8], response: &[u8], kind: ResponseKind) -> Self {
        let mut bytes = Vec::with_capacity(2 + key.len() + response.len());
        // Keys are at most KEY_MAX bytes.
        bytes.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(response);
        Self {
            bytes: bytes.into_boxed_slice(),
            kind,
        }
    }

    fn key_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[0], self.bytes[1]]))
    }

    fn key(&self) -> &[u8] {
        &self.bytes[2..2 + self.key_len()]
    }

    fn response(&self) -> &[u8] {
        &self.bytes[2 + self.key_len()..]
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Entry>,
    /// Entries that are not [`ResponseKind::is_data`].
    made_up: usize,
    /// The hashes of those entries, oldest first (some may be gone since).
    made_up_order: std::collections::VecDeque<u64>,
}

impl Shard {
    /// Removes the oldest entry that is not data; whether there was one.
    fn evict_made_up(&mut self, hasher: &std::collections::hash_map::RandomState) -> bool {
        while let Some(hash) = self.made_up_order.pop_front() {
            let found = self.table.find_entry(hash, |e| {
                !e.kind.is_data() && hasher.hash_one(e.key()) == hash
            });
            if let Ok(entry) = found {
                entry.remove();
                self.made_up -= 1;
                return true;
            }
        }
        false
    }
}

/// A plain query, read without allocating.
pub struct PlainQuery<'a> {
    pub packet: &'a [u8],
    /// The question name in wire form (offset 12).
    pub qname: &'a [u8],
    pub edns: Option<PlainEdns>,
    /// The COOKIE option's data, of a length RFC 7873 allows (8, or 16 to 40 bytes).
    pub cookie: Option<&'a [u8]>,
}

#[derive(Clone, Copy)]
pub struct PlainEdns {
    pub payload: u16,
    pub dnssec_ok: bool,
}

impl<'a> PlainQuery<'a> {
    /// `None` for anything but a plain query; the engine handles those.
    pub fn parse(packet: &'a [u8]) -> Option<Self> {
        let header = packet.get(..12)?;
        // QR=0, opcode QUERY, TC=0; one question, no answers or authority, at most one additional.
        if header[2] & 0xfa != 0
            || header[4..10] != [0, 1, 0, 0, 0, 0]
            || header[10] != 0
            || header[11] > 1
        {
            return None;
        }
        let mut i = 12;
        loop {
            let len = usize::from(*packet.get(i)?);
            if len == 0 {
                i += 1;
                break;
            }
            if len > 63 {
                return None;
            }
            i += 1 + len;
            // A name is at most 255 bytes, its root label included.
            if i - 12 > 254 {
                return None;
            }
        }
        let qname = &packet[12..i];
        // Class IN only.
        if packet.get(i + 2..i + 4)? != [0, 1] {
            return None;
        }
        let end = i + 4;
        let mut cookie = None;
        let edns = if header[11] == 1 {
            // Root owner, type OPT, payload, extended rcode 0, version 0, flags, and either no
            // options or one COOKIE.
            let opt = packet.get(end..end + 11)?;
            if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 {
                return None;
            }
            let options = &packet[end + 11..];
            if usize::from(u16::from_be_bytes([opt[9], opt[10]])) != options.len() {
                return None;
            }
            if !options.is_empty() {
                let data = options.get(4..)?;
                if options[..2] != COOKIE_CODE
                    || usize::from(u16::from_be_bytes([options[2], options[3]])) != data.len()
                    || !(data.len() == 8 || (16..=40).contains(&data.len()))
                {
                    return None;
                }
                cookie = Some(data);
            }
            Some(PlainEdns {
                payload: u16::from_be_bytes([opt[3], opt[4]]),
                dnssec_ok: opt[7] & 0x80 != 0,
            })
        } else {
            if packet.len() != end {
                return None;
            }
            None
        };
        Some(Self {
            packet,
            qname,
            edns,
            cookie,
        })
    }

    /// The cache key: lowercase name, type, EDNS or not, and for a response that had to be
    /// fitted to a size limit, that limit (one shortened for 512 bytes must not serve a
    /// 1232-byte query); a whole response is kept once, for every limit it fits (`None`), so
    /// that queries varying their EDNS size do not make an entry each. Built on the stack:
    /// looking up takes no allocation.
    fn key(&self, limit: Option<usize>) -> Key {
        let end = 12 + self.qname.len();
        let mut key = Key {
            bytes: [0; KEY_MAX],
            len: 0,
        };
        let mut put = |b: u8| {
            key.bytes[key.len] = b;
            key.len += 1;
        };
        // The name without case; the type as it is (HTTPS is 0x0041, 'A' as a byte: in lower
        // case it would be type 97's key).
        self.packet[12..end]
            .iter()
            .for_each(|b| put(b.to_ascii_lowercase()));
        self.packet[end..end + 2].iter().for_each(|&b| put(b));
        put(u8::from(self.edns.is_some()));
        if let Some(limit) = limit {
            (limit as u32).to_be_bytes().into_iter().for_each(put);
        }
        key
    }
}

/// The COOKIE option's code, as it is on the wire.
const COOKIE_CODE: [u8; 2] = crate::cookies::COOKIE.to_be_bytes();

/// What a server cookie adds to a response's OPT: the option's code and length, the client
/// cookie and the server cookie.
pub const COOKIE_ROOM: usize = 4 + crate::cookies::ANSWER_LEN;

/// Appends the COOKIE option `answer` to `response`, whose OPT (last) has no options.
pub fn append_cookie(response: &mut Vec<u8>, answer: &[u8; crate::cookies::ANSWER_LEN]) {
    let rdlen = response.len() - 2;
    response[rdlen..].copy_from_slice(&(COOKIE_ROOM as u16).to_be_bytes());
    response.extend_from_slice(&COOKIE_CODE);
    response.extend_from_slice(&(answer.len() as u16).to_be_bytes());
    response.extend_from_slice(answer);
}

/// `response` without the COOKIE option that ends it (its OPT's only option), as the cache
/// keeps it; `None` if it does not end so.
pub fn without_cookie(response: &[u8]) -> Option<Vec<u8>> {
    let n = response.len();
    let opt = n.checked_sub(11 + COOKIE_ROOM).filter(|&at| at >= 12)?;
    let ends_so = response[opt..opt + 3] == [0, 0, 41]
        && response[opt + 9..opt + 11] == (COOKIE_ROOM as u16).to_be_bytes()
        && response[opt + 11..opt + 13] == COOKIE_CODE
        && response[opt + 13..opt + 15] == (crate::cookies::ANSWER_LEN as u16).to_be_bytes();
    if !ends_so {
        return None;
    }
    let mut bare = response[..opt + 11].to_vec();
    bare[opt + 9..].copy_from_slice(&[0, 0]);
    Some(bare)
}

/// The size a response was made for.
#[derive(Clone, Copy)]
pub struct Fit {
    /// What the query allowed.
    pub limit: usize,
    /// Of which an option appended after the kept response (a server cookie) takes this much.
    pub room: usize,
    /// The server's own largest UDP payload.
    pub server_max: u16,
}

/// The limits a response fitted to one is kept for: no EDNS, the DNS Flag Day's size, a
/// common Ethernet-safe one, the usual largest, and TCP's.
const FITTED_LIMITS: [usize; 5] = [512, 1232, 1400, 4096, 65_535];

/// The longest key: a 255-byte name, the type, the EDNS flag and the limit.
const KEY_MAX: usize = 255 + 2 + 1 + 4;

struct Key {
    bytes: [u8; KEY_MAX],
    len: usize,
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Responses of plain queries, in shards.
pub struct ResponseCache {
    shards: Vec<Mutex<Shard>>,
    /// Keys are hashed with a secret key, so that no one can send names that collide in one
    /// bucket. One hash per lookup picks the shard (bits the table does not use) and the slot.
    hasher: std::collections::hash_map::RandomState,
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseCache")
    }
}

impl ResponseCache {
    /// The key's hash, and its shard (from middle bits: the table takes a slot from the low
    /// bits and a tag from the top ones).
    fn locate(&self, key: &[u8]) -> (u64, &Mutex<Shard>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// How many responses are kept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).table.len())
            .sum()
    }

    /// A copy of the response kept under `key` if it has at most `limit` bytes, copied while
    /// the shard is held (nothing shared is counted or freed per query).
    fn copy(&self, key: &[u8], limit: usize) -> Option<(Vec<u8>, ResponseKind)> {
        let (hash, shard) = self.locate(key);
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = shard.table.find(hash, |e| e.key() == key)?;
        let response = entry.response();
        (response.len() <= limit).then(|| (response.to_vec(), entry.kind))
    }

    /// A cached response adapted to `query`: the whole response if it fits `limit`, else one
    /// fitted to that very limit; and what rate limiting counts it as.
    pub fn answer(&self, query: &PlainQuery<'_>, limit: usize) -> Option<(Vec<u8>, ResponseKind)> {
        let (mut out, kind) = self
            .copy(&query.key(None), limit)
            .or_else(|| self.copy(&query.key(Some(limit)), usize::MAX))?;
        out[..2].copy_from_slice(&query.packet[..2]);
        out[2] = (out[2] & !0x01) | (query.packet[2] & 0x01);
        let qend = 12 + query.qname.len();
        out[12..qend].copy_from_slice(query.qname);
        if let Some(edns) = query.edns {
            // The OPT is the last record: its flags' high byte holds DO.
            let flags = out.len() - 4;
            out[flags] = (out[flags] & 0x7f) | if edns.dnssec_ok { 0x80 } else { 0 };
        }
        Some((out, kind))
    }

    /// Keeps `response` (the engine's answer to `query` within `fit`, without the option the
    /// room was kept for, and counted by rate limiting as `kind`) for later queries of the same
    /// shape. `whole`: nothing had to be left out to fit it, so it serves any limit it fits.
    pub fn insert(
        &self,
        query: &PlainQuery<'_>,
        fit: Fit,
        whole: bool,
        response: &[u8],
        kind: ResponseKind,
    ) {
        // NOERROR or NXDOMAIN answers (truncated ones too: the limit is part of the key), whose
        // OPT (if any) is last and bare.
        if response.len() < 12 || !matches!(response[3] & 0x0f, 0 | 3) {
            return;
        }
        if query.edns.is_some()
            && (response.len() < 23
                || response[response.len() - 11..response.len() - 8] != [0, 0, 41])
        {
            return;
        }
        // A response fitted to a limit is kept for the common limits alone (and the server's
        // own largest, which every larger request is held to): one entry per size a client
        // could ask for would let queries of every size fill the cache.
        // (A response fitted for a cookie is kept for the room left without it.)
        let Fit {
            limit,
            room,
            server_max,
        } = fit;
        if !whole && !FITTED_LIMITS.contains(&limit) && limit != usize::from(server_max) {
            return;
        }
        let key = query.key((!whole).then_some(limit.saturating_sub(room)));
        let (hash, shard) = self.locate(&key);
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let made_up = !kind.is_data();
        if shard.table.len() >= MAX_ENTRIES / SHARDS {
            return;
        }
        // Once made-up answers fill their share, each new one takes the place of the oldest:
        // a flood of random names churns that share, and answers asked again still get in.
        if made_up && shard.made_up >= MAX_MADE_UP / SHARDS && !shard.evict_made_up(&self.hasher) {
            return;
        }
        let entry = Entry::new(&key, response, kind);
        let hasher = |e: &Entry| self.hasher.hash_one(e.key());
        match shard.table.entry(hash, |e| e.key() == &*key, hasher) {
            hashbrown::hash_table::Entry::Occupied(mut old) => {
                let was_made_up = !old.get().kind.is_data();
                *old.get_mut() = entry;
                shard.made_up -= usize::from(was_made_up);
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
        if made_up {
            shard.made_up += 1;
            shard.made_up_order.push_back(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(limit: usize, server_max: u16) -> Fit {
        Fit {
            limit,
            room: 0,
            server_max,
        }
    }

    fn query(id: u16, name: &[u8], edns: Option<bool>) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for label in name.split(|b| *b == b'.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        if let Some(dnssec_ok) = edns {
            p.extend_from_slice(&[
                0,
                0,
                41,
                4,
                0xd0,
                0,
                0,
                if dnssec_ok { 0x80 } else { 0 },
                0,
                0,
                0,
            ]);
        }
        p
    }

    #[test]
    fn only_plain_queries_take_the_fast_path() {
        assert!(PlainQuery::parse(&query(1, b"www.example.com", None)).is_some());
        assert!(PlainQuery::parse(&query(1, b"www.example.com", Some(true))).is_some());
        let mut response = query(1, b"www.example.com", None);
        response[2] |= 0x80;
        assert!(PlainQuery::parse(&response).is_none());
        let mut trailing = query(1, b"www.example.com", None);
        trailing.push(0);
        assert!(PlainQuery::parse(&trailing).is_none());
        let mut chaos = query(1, b"www.example.com", None);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(PlainQuery::parse(&chaos).is_none());
        assert!(PlainQuery::parse(&query(1, &[b'a'; 64], None)).is_none());
    }

    /// `query` with an EDNS option `code` of `data` (its length as `len`).
    fn with_option(code: u16, len: u16, data: &[u8]) -> Vec<u8> {
        let mut p = query(1, b"www.example.com", Some(false));
        let rdlen = p.len() - 2;
        let total = u16::try_from(4 + data.len()).expect("short");
        p[rdlen..].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn a_cookie_is_the_one_option_a_plain_query_may_carry() {
        for n in [8u16, 16, 24, 40] {
            let packet = with_option(10, n, &vec![7; usize::from(n)]);
            let q = PlainQuery::parse(&packet).expect("plain with a cookie");
            assert_eq!(q.cookie.map(<[u8]>::len), Some(usize::from(n)));
        }
        assert!(
            PlainQuery::parse(&query(1, b"www.example.com", Some(false)))
                .expect("plain")
                .cookie
                .is_none()
        );
        // Lengths RFC 7873 does not allow are the engine's to answer (FORMERR).
        for n in [0u16, 7, 9, 15, 41] {
            let packet = with_option(10, n, &vec![7; usize::from(n)]);
            assert!(PlainQuery::parse(&packet).is_none(), "{n} bytes");
        }
        // Another option, an option length that disagrees with the data, two options.
        assert!(PlainQuery::parse(&with_option(3, 0, &[])).is_none());
        assert!(PlainQuery::parse(&with_option(10, 9, &[7; 8])).is_none());
        let mut two = with_option(10, 8, &[7; 8]);
        let rdlen = two.len() - 14;
        two[rdlen..rdlen + 2].copy_from_slice(&16u16.to_be_bytes());
        two.extend_from_slice(&[0, 3, 0, 0]);
        assert!(PlainQuery::parse(&two).is_none());
        let mut short = with_option(10, 8, &[7; 8]);
        short.pop();
        assert!(PlainQuery::parse(&short).is_none());
    }

    #[test]
    fn a_cookie_option_is_appended_and_taken_off_whole() {
        let bare = query(1, b"www.example.com", Some(false));
        let mut with = bare.clone();
        append_cookie(&mut with, &[9; crate::cookies::ANSWER_LEN]);
        assert_eq!(with.len(), bare.len() + COOKIE_ROOM);
        assert_eq!(without_cookie(&with), Some(bare.clone()));
        assert_eq!(without_cookie(&bare), None);
        // Another option of the same size is not a cookie.
        let mut other = with.clone();
        other[bare.len() + 1] = 3;
        assert_eq!(without_cookie(&other), None);
    }

    #[test]
    fn types_whose_bytes_are_letters_have_keys_of_their_own() {
        let typed = |qtype: u16| {
            let mut q = query(1, b"WWW.example.com", None);
            let at = q.len() - 4;
            q[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
            q
        };
        let key = |q: &[u8]| PlainQuery::parse(q).expect("plain").key(None).to_vec();
        // HTTPS (65) and type 97, SPF (99) and 67: one byte apart by case.
        assert_ne!(key(&typed(65)), key(&typed(97)));
        assert_ne!(key(&typed(67)), key(&typed(99)));
        // The name's case still makes no difference.
        let mut lower = typed(65);
        lower[13..16].copy_from_slice(b"www");
        assert_eq!(key(&typed(65)), key(&lower));
    }

    #[test]
    fn names_up_to_the_longest_have_keys() {
        let cache = ResponseCache::default();
        // Three labels of 63 bytes and one of `last`: 255 bytes in all when `last` is 61.
        for last in [60usize, 61, 62] {
            let mut name = [[b'a'; 63].as_slice(); 3].join(&b'.');
            name.push(b'.');
            name.extend(std::iter::repeat_n(b'b', last));
            let packet = query(1, &name, Some(false));
            let parsed = PlainQuery::parse(&packet);
            assert_eq!(parsed.is_some(), last <= 61, "last label {last}");
            if let Some(q) = parsed {
                assert!(cache.answer(&q, 1232).is_none());
                // Kept and found again, whole and fitted to a limit (the longest keys).
                let mut response = packet.clone();
                response[2] = 0x84;
                for (whole, limit) in [(true, 1232), (false, 1400)] {
                    let cache = ResponseCache::default();
                    cache.insert(&q, fit(limit, 1232), whole, &response, ResponseKind::ERROR);
                    assert!(cache.answer(&q, limit).is_some(), "{last} {whole}");
                }
            }
        }
    }

    #[test]
    fn cached_response_takes_the_new_id_case_rd_and_do_bit() {
        let cache = ResponseCache::default();
        let first = query(1, b"www.example.com", Some(false));
        // A response: the query with QR/AA set and its OPT unchanged.
        let mut response = first.clone();
        response[2] = 0x84;
        cache.insert(
            &PlainQuery::parse(&first).expect("plain"),
            fit(1232, 1232),
            false,
            &response,
            ResponseKind::ERROR,
        );
        let mut second = query(0xbeef, b"WWW.Example.COM", Some(true));
        second[2] = 0x00; // RD clear
        let q = PlainQuery::parse(&second).expect("plain");
        let (out, _) = cache.answer(&q, 1232).expect("cached");
        assert_eq!(&out[..2], &[0xbe, 0xef]);
        assert_eq!(out[2], 0x84);
        assert_eq!(&out[12..12 + q.qname.len()], q.qname);
        assert_eq!(out[out.len() - 4] & 0x80, 0x80);
        assert!(
            cache.answer(&q, 512).is_none(),
            "a response is reused only for the same size limit"
        );
    }

    #[test]
    fn a_whole_answer_is_kept_once_for_every_limit_it_fits() {
        let cache = ResponseCache::default();
        let asked = query(1, b"www.example.com", Some(false));
        let mut response = asked.clone();
        response[2] = 0x84;
        cache.insert(
            &PlainQuery::parse(&asked).expect("plain"),
            fit(1232, 1232),
            true,
            &response,
            ResponseKind::ERROR,
        );
        // Any EDNS size the answer fits gets it, and no entry of its own.
        for limit in [response.len(), 600, 1232, 4096, 65535] {
            let q = query(2, b"www.example.com", Some(false));
            let q = PlainQuery::parse(&q).expect("plain");
            assert!(cache.answer(&q, limit).is_some(), "limit {limit}");
        }
        let q = query(3, b"www.example.com", Some(false));
        let q = PlainQuery::parse(&q).expect("plain");
        assert!(cache.answer(&q, response.len() - 1).is_none(), "too large");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn answers_for_made_up_names_take_a_share_of_the_cache_only() {
        let cache = ResponseCache::default();
        let keep = |name: &[u8], kind: ResponseKind| {
            let asked = query(1, name, None);
            let mut response = asked.clone();
            response[2] = 0x84;
            response[3] = 3;
            cache.insert(
                &PlainQuery::parse(&asked).expect("plain"),
                fit(512, 1232),
                true,
                &response,
                kind,
            );
        };
        let cached = |name: &[u8]| {
            cache
                .answer(
                    &PlainQuery::parse(&query(2, name, None)).expect("plain"),
                    512,
                )
                .is_some()
        };
        let nxdomain = ResponseKind::nxdomain("example.com");
        let flood = 2 * MAX_MADE_UP;
        for i in 0..flood {
            keep(format!("r{i}.example.com").as_bytes(), nxdomain);
        }
        let kept = (0..flood)
            .filter(|i| cached(format!("r{i}.example.com").as_bytes()))
            .count();
        assert!(
            kept <= MAX_MADE_UP && kept > MAX_MADE_UP / 2,
            "{kept} of {flood} random names kept"
        );
        // The newest are kept, the oldest made room: a name asked after the flood is kept too.
        assert!(cached(format!("r{}.example.com", flood - 1).as_bytes()));
        assert!(!cached(b"r0.example.com"));
        keep(b"asked-again.example.com", nxdomain);
        assert!(cached(b"asked-again.example.com"));
        // Answers with data at existing names still find room.
        keep(
            b"www.example.com",
            ResponseKind::answer("www.example.com", 1),
        );
        assert!(cached(b"www.example.com"));
    }

    #[test]
    fn a_truncated_answer_is_reused_for_the_same_limit_and_stays_truncated() {
        let cache = ResponseCache::default();
        let first = query(1, b"big.example.com", None);
        let mut response = first.clone();
        response[2] = 0x86; // QR, AA, TC
        cache.insert(
            &PlainQuery::parse(&first).expect("plain"),
            fit(512, 1232),
            false,
            &response,
            ResponseKind::ERROR,
        );
        let second = query(2, b"big.example.com", None);
        let q = PlainQuery::parse(&second).expect("plain");
        let (out, _) = cache.answer(&q, 512).expect("cached");
        assert_eq!(out[2] & 0x02, 0x02, "TC kept");
        assert!(cache.answer(&q, 1232).is_none());
        // Fitted to an odd size: not kept (every size a client could ask for would be an
        // entry).
        let odd = query(5, b"odd.example.com", None);
        let mut fitted = odd.clone();
        fitted[2] = 0x86;
        let q = PlainQuery::parse(&odd).expect("plain");
        cache.insert(&q, fit(777, 1232), false, &fitted, ResponseKind::ERROR);
        assert!(cache.answer(&q, 777).is_none());
        // The server's own largest size (every larger request is held to it) is kept.
        cache.insert(&q, fit(1452, 1452), false, &fitted, ResponseKind::ERROR);
        assert!(cache.answer(&q, 1452).is_some());
        // Failures are not kept.
        let asked = query(3, b"fail.example.com", None);
        let mut failed = asked.clone();
        failed[2] = 0x80;
        failed[3] = 2;
        cache.insert(
            &PlainQuery::parse(&asked).expect("plain"),
            fit(512, 1232),
            true,
            &failed,
            ResponseKind::ERROR,
        );
        let q = query(4, b"fail.example.com", None);
        assert!(
            cache
                .answer(&PlainQuery::parse(&q).expect("plain"), 512)
                .is_none()
        );
    }
}
