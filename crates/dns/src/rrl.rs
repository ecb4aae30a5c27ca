//! Response rate limiting (RRL) for UDP, the defence against reflection and amplification.
//!
//! Responses are counted per (client prefix — /24 for IPv4, /56 for IPv6 — and response kind,
//! see [`ResponseKind`]: as Knot, NSD and BIND do, only answers with data count per name and
//! type; the answers a flood can vary without end — names under a wildcard, NXDOMAIN and
//! NODATA, errors — count per wildcard, zone or not at all, so that random names share one
//! budget). Each pair gets `rate` responses per second with a burst of the same
//! size. Over the budget, a response is dropped, except every `slip`-th one, which is replaced by
//! an empty truncated answer (TC=1) so that a real client behind a spoofed prefix retries over
//! TCP, where nothing can be spoofed. Counters live in a fixed-size table: memory does not grow
//! with the number of clients. The table is set-associative under a keyed hash: a new pair takes
//! the way of its set with the most budget left, so pairs an attacker makes up cannot push out
//! one that is being limited (and hand it a full budget again).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rustc_hash::FxHasher;

const SLOTS: usize = 1 << 16;
/// Locks over the table; a shard is chosen by the top bits of a pair's hash.
const SHARDS: usize = 64;
/// Slots a pair may take, chosen by other bits of its hash.
const WAYS: usize = 4;
const SETS_PER_SHARD: usize = SLOTS / SHARDS / WAYS;

/// RRL settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per (prefix, kind); 0 turns RRL off.
    pub rate: u32,
    /// Every `slip`-th limited response is sent truncated instead of dropped; 0 drops all.
    pub slip: u32,
}

impl Default for RrlConfig {
    fn default() -> Self {
        Self { rate: 20, slip: 2 }
    }
}

/// What RRL counts a response as, told by the engine (which knows how it answered): pairs of
/// a prefix and a kind share one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseKind(u64);

impl ResponseKind {
    /// Every error (REFUSED, FORMERR, SERVFAIL, NOTIMP, NOTAUTH, BADVERS, ...), whatever the
    /// name and type asked.
    pub const ERROR: Self = Self(0);

    fn of(class: u8, key: &str, qtype: u16) -> Self {
        use std::hash::Hasher;
        let mut h = FxHasher::default();
        h.write_u8(class);
        h.write(key.as_bytes());
        h.write_u16(qtype);
        // The class in the low bits (never `ERROR`'s value).
        Self((h.finish() << 3) | u64::from(class))
    }

    /// Whether this is an answer with data at an existing name, of which a zone has a known
    /// number; every other kind of answer is given for names anyone can make up.
    pub fn is_data(self) -> bool {
        self.0 & 7 == 1
    }

    /// An answer with data (or a CNAME) at an existing name `key` (lowercase index key), for
    /// `qtype`.
    pub fn answer(key: &str, qtype: u16) -> Self {
        Self::of(1, key, qtype)
    }

    /// An answer synthesised from the wildcard owned by `owner`, whatever name was asked.
    pub fn wildcard(owner: &str) -> Self {
        Self::of(2, owner, 0)
    }

    /// A referral to the delegation at `cut`.
    pub fn referral(cut: &str) -> Self {
        Self::of(3, cut, 0)
    }

    /// An NXDOMAIN from zone `origin`, whatever name was asked.
    pub fn nxdomain(origin: &str) -> Self {
        Self::of(4, origin, 0)
    }

    /// A NODATA (no error, no answer) from zone `origin`, whatever name and type were asked.
    pub fn nodata(origin: &str) -> Self {
        Self::of(5, origin, 0)
    }

    /// An answer of the CNAME (chain) at `key` alone, whatever type was asked: as many as
    /// there are types, so counted as made up, not as data.
    pub fn alias(key: &str) -> Self {
        Self::of(6, key, 0)
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send an empty truncated answer instead.
    Slip,
    Drop,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// Budget left, in thousandths of a response.
    milli_tokens: u64,
    /// Milliseconds since the limiter started, at the last refill.
    at_ms: u64,
    limited: u32,
}

pub struct RateLimiter {
    config: RrlConfig,
    start: Instant,
    shards: Vec<Mutex<Vec<Slot>>>,
    /// Keyed (SipHash with a random key): no one outside can aim pairs at one set.
    hasher: RandomState,
}

/// The prefix a client is counted under, by RRL and by the TCP per-client limit: /24 for IPv4,
/// /56 for IPv6 (IPv6 prefixes have the top bit set, so they never equal an IPv4 one).
pub(crate) fn client_prefix(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | (1 << 127),
    }
}

impl RateLimiter {
    pub fn new(config: RrlConfig) -> Self {
        Self {
            config,
            start: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![Slot::default(); SLOTS / SHARDS]))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.rate > 0
    }

    /// Counts one response of `kind` to `client`.
    pub fn check(&self, client: IpAddr, kind: ResponseKind) -> Verdict {
        if !self.enabled() {
            return Verdict::Send;
        }
        let now_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(client, kind, now_ms)
    }

    /// [`Self::check`] at `now_ms` milliseconds since the limiter started.
    fn check_at(&self, client: IpAddr, kind: ResponseKind, now_ms: u64) -> Verdict {
        let hash = self.hasher.hash_one((client_prefix(client), kind.0));
        // Top bits for the shard, bits 8 and up for the set: independent. The key kept is
        // never 0, which marks an empty way.
        let shard = &self.shards[(hash >> 58) as usize % SHARDS];
        let set = (hash >> 8) as usize % SETS_PER_SHARD;
        let key = hash | 1;
        let rate = u64::from(self.config.rate);
        let burst = rate * 1000;
        let mut slots = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let ways = &mut slots[set * WAYS..(set + 1) * WAYS];
        // Budget left after refilling up to now. Another thread may have counted a later
        // moment while this one waited for the lock: time never runs backwards for a slot.
        let refilled = |slot: &Slot| {
            let refill = now_ms.saturating_sub(slot.at_ms).saturating_mul(rate);
            slot.milli_tokens.saturating_add(refill).min(burst)
        };
        let slot = match ways.iter().position(|s| s.key == key) {
            Some(way) => {
                let slot = &mut ways[way];
                slot.milli_tokens = refilled(slot);
                slot.at_ms = slot.at_ms.max(now_ms);
                slot
            }
            None => {
                // A new pair starts with a full budget, in an empty way or the one with the
                // most budget left (a full one is as good as empty); among exhausted ones, the
                // one counted longest ago. A pair being limited keeps its way.
                let way = (0..WAYS)
                    .max_by_key(|&w| {
                        let s = &ways[w];
                        let budget = if s.key == 0 { u64::MAX } else { refilled(s) };
                        (budget, std::cmp::Reverse(s.at_ms))
                    })
                    .unwrap_or(0);
                ways[way] = Slot {
                    key,
                    milli_tokens: burst,
                    at_ms: now_ms,
                    limited: 0,
                };
                &mut ways[way]
            }
        };
        if slot.milli_tokens >= 1000 {
            slot.milli_tokens -= 1000;
            return Verdict::Send;
        }
        slot.limited = slot.limited.wrapping_add(1);
        if self.config.slip > 0 && slot.limited.is_multiple_of(self.config.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Slots holding a pair.
    #[cfg(test)]
    fn occupied(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let slots = s.lock().unwrap_or_else(PoisonError::into_inner);
                slots.iter().filter(|slot| slot.key != 0).count()
            })
            .sum()
    }
}

/// Where the name starting at `at` in `message` ends (after its last label or its pointer).
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *message.get(at)?;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + usize::from(len),
            0xc0.. => return Some(at + 2),
            _ => return None,
        }
    }
}

/// The empty, truncated version of `response`: its header with TC set, its question, and its
/// OPT record if it has one — whatever options that carries, so a client that sent a cookie
/// gets its server cookie and can come back with it, and be spared. Read from the response
/// only: it holds an OPT exactly when the query had one, and the query may hold options.
pub fn slipped(response: &[u8]) -> Option<Vec<u8>> {
    let header = response.get(..12)?;
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(response, at)? + 4;
    }
    let question_end = at;
    let additional_from = count(6) + count(8);
    let mut opt = None;
    for i in 0..additional_from + count(10) {
        let start = at;
        let name_end = skip_name(response, start)?;
        let fixed = response.get(name_end..name_end + 10)?;
        at = name_end + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if at > response.len() {
            return None;
        }
        if i >= additional_from && response[start] == 0 && fixed[..2] == [0, 41] {
            opt = Some(&response[start..at]);
        }
    }
    let mut out = Vec::with_capacity(question_end + opt.map_or(0, <[u8]>::len));
    out.extend_from_slice(response.get(..question_end)?);
    out[2] |= 0x02;
    out[6..12].fill(0);
    if let Some(opt) = opt {
        out.extend_from_slice(opt);
        out[11] = 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_over_its_budget_is_limited_with_slip_and_others_are_not() {
        let rrl = RateLimiter::new(RrlConfig { rate: 5, slip: 2 });
        let attacker: IpAddr = "198.51.100.7".parse().expect("ip");
        let neighbour: IpAddr = "198.51.100.200".parse().expect("ip");
        let other: IpAddr = "203.0.113.9".parse().expect("ip");
        let verdicts: Vec<Verdict> = (0..20)
            .map(|_| rrl.check(attacker, ResponseKind::answer("big.example", 16)))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Send).count(), 5);
        assert!(verdicts.contains(&Verdict::Slip) && verdicts.contains(&Verdict::Drop));
        assert_ne!(
            rrl.check(neighbour, ResponseKind::answer("big.example", 16)),
            Verdict::Send,
            "the same /24 shares the budget"
        );
        assert_eq!(
            rrl.check(other, ResponseKind::answer("big.example", 16)),
            Verdict::Send
        );
        assert_eq!(
            rrl.check(attacker, ResponseKind::answer("other.example", 1)),
            Verdict::Send,
            "another kind has its own budget"
        );
    }

    #[test]
    fn threads_counting_one_prefix_at_once_never_go_back_in_time() {
        // Each thread reads the clock before taking the slot's lock, so a slot can already hold
        // a later moment than the one a thread brings.
        let rrl = std::sync::Arc::new(RateLimiter::new(RrlConfig { rate: 5, slip: 2 }));
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let rrl = std::sync::Arc::clone(&rrl);
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        rrl.check(ip, ResponseKind::ERROR);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread panicked");
        }
    }

    #[test]
    fn a_slipped_answer_keeps_the_question_and_the_opt_with_its_options() {
        use hickory_proto::op::{Edns, Message, Query};
        use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
        use hickory_proto::rr::rdata::{A, TXT};
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let name = Name::from_ascii("big.example.").expect("name");
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.queries.push(Query::query(name.clone(), RecordType::TXT));
        for i in 0..5 {
            m.answers.push(Record::from_rdata(
                name.clone(),
                60,
                RData::TXT(TXT::new(vec![format!("{i} {}", "t".repeat(100))])),
            ));
        }
        m.additionals.push(Record::from_rdata(
            Name::from_ascii("ns.example.").expect("name"),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        opt.options_mut()
            .insert(EdnsOption::Unknown(10, vec![9; 24]));
        m.set_edns(opt);
        let bytes = m.to_vec().expect("encode");
        let out = Message::from_vec(&slipped(&bytes).expect("slipped")).expect("parse");
        assert!(out.metadata.truncation);
        assert_eq!(out.metadata.id, 7);
        assert_eq!(out.queries, m.queries);
        assert!(out.answers.is_empty() && out.additionals.is_empty());
        let edns = out.edns.expect("OPT kept");
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(
            edns.options().get(EdnsCode::Cookie),
            Some(&EdnsOption::Unknown(10, vec![9; 24]))
        );
        // A FORMERR with neither question nor OPT stays a bare header; a cut message is dropped.
        let formerr = [0, 7, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let out = slipped(&formerr).expect("slipped");
        assert_eq!(out[..], [0, 7, 0x82, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(slipped(&bytes[..bytes.len() - 3]).is_none());
    }

    #[test]
    fn pairs_spread_over_every_slot_of_the_table() {
        let rrl = RateLimiter::new(RrlConfig { rate: 5, slip: 2 });
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        for kind in 1..=(4 * SLOTS as u64) {
            rrl.check_at(ip, ResponseKind(kind), 0);
        }
        let occupied = rrl.occupied();
        assert!(
            occupied > SLOTS * 99 / 100,
            "{occupied} of {SLOTS} slots used"
        );
    }

    #[test]
    fn a_limited_pair_stays_limited_while_many_others_are_counted() {
        let rrl = RateLimiter::new(RrlConfig { rate: 5, slip: 0 });
        let attacker: IpAddr = "198.51.100.7".parse().expect("ip");
        let target = ResponseKind::answer("big.example", 16);
        let sent = (0..10)
            .filter(|_| rrl.check_at(attacker, target, 0) == Verdict::Send)
            .count();
        assert_eq!(sent, 5);
        // Junk pairs from the same prefix and from others, many times the table's size.
        for (i, kind) in (1..=(4 * SLOTS as u64)).enumerate() {
            let ip = IpAddr::from([198, 51, (i % 200) as u8, 7]);
            rrl.check_at(ip, ResponseKind(kind << 1), 0);
            rrl.check_at(attacker, ResponseKind((kind << 1) | 1), 0);
        }
        assert_eq!(rrl.check_at(attacker, target, 0), Verdict::Drop);
        // Its budget comes back with time, not with others' pairs.
        assert_eq!(rrl.check_at(attacker, target, 1000), Verdict::Send);
    }

    #[test]
    fn rate_zero_turns_rrl_off() {
        let rrl = RateLimiter::new(RrlConfig { rate: 0, slip: 2 });
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        assert!((0..1000).all(|_| rrl.check(ip, ResponseKind::ERROR) == Verdict::Send));
    }
}
