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
//! with the number of clients.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rustc_hash::FxHasher;

const SLOTS: usize = 1 << 16;
const SHARDS: usize = 64;

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
        // Never `ERROR`'s value.
        Self(h.finish() | 1)
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
    hasher: BuildHasherDefault<FxHasher>,
}

impl RateLimiter {
    pub fn new(config: RrlConfig) -> Self {
        Self {
            config,
            start: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![Slot::default(); SLOTS / SHARDS]))
                .collect(),
            hasher: BuildHasherDefault::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.rate > 0
    }

    /// The prefix a client is counted under.
    fn prefix(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
            IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | (1 << 127),
        }
    }

    /// Counts one response of `kind` to `client`.
    pub fn check(&self, client: IpAddr, kind: ResponseKind) -> Verdict {
        if !self.enabled() {
            return Verdict::Send;
        }
        let key = self.hasher.hash_one((Self::prefix(client), kind)) | 1;
        let now_ms = self.start.elapsed().as_millis() as u64;
        let shard = &self.shards[(key as usize >> 7) % SHARDS];
        let mut slots = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let index = (key as usize) % slots.len();
        let slot = &mut slots[index];
        let burst = u64::from(self.config.rate) * 1000;
        if slot.key != key {
            // A new pair (or a colliding one taking the slot over) starts with a full budget.
            *slot = Slot {
                key,
                milli_tokens: burst,
                at_ms: now_ms,
                limited: 0,
            };
        } else {
            // Another thread may have counted a later moment while this one waited for the
            // lock: time never runs backwards for a slot.
            let refill = now_ms
                .saturating_sub(slot.at_ms)
                .saturating_mul(u64::from(self.config.rate));
            slot.milli_tokens = slot.milli_tokens.saturating_add(refill).min(burst);
            slot.at_ms = slot.at_ms.max(now_ms);
        }
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
}

/// The empty, truncated version of `response`: header with TC set, question, and OPT if any.
pub fn slipped(response: &[u8], query: &[u8]) -> Option<Vec<u8>> {
    let plain = crate::fast::PlainQuery::parse(query)?;
    let question_end = 12 + plain.qname.len() + 4;
    let mut out = response.get(..question_end)?.to_vec();
    out[2] |= 0x02;
    out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if plain.edns.is_some() && response.len() >= question_end + 11 {
        out.extend_from_slice(&response[response.len() - 11..]);
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
    fn rate_zero_turns_rrl_off() {
        let rrl = RateLimiter::new(RrlConfig { rate: 0, slip: 2 });
        let ip: IpAddr = "198.51.100.7".parse().expect("ip");
        assert!((0..1000).all(|_| rrl.check(ip, ResponseKind::ERROR) == Verdict::Send));
    }
}
