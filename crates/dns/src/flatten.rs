//! Addresses of names outside Parapet's zones, for CNAME flattening at the apex: looked up
//! through the configured resolver, kept for their TTL, refreshed in the background. The index
//! build only reads this cache (it never waits on the network); a lookup that changes an
//! answer wakes the index builder.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::sync::Notify;

/// Lowest and highest time an answer is kept, whatever its TTL says.
#[cfg(not(test))]
const MIN_TTL: u32 = 5;
#[cfg(test)]
const MIN_TTL: u32 = 1;
const MAX_TTL: u32 = 3600;
/// Longest time an answer without addresses is kept (a name not resolving yet, while its
/// DNS is set up, is asked again soon).
#[cfg(not(test))]
const NEGATIVE_TTL: u32 = 30;
#[cfg(test)]
const NEGATIVE_TTL: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub ttl: u32,
}

#[derive(Debug)]
struct Cached {
    answer: External,
    expires: Instant,
}

/// Longest wait before a name whose lookups fail is asked again (RFC 9520 §3.2: resolution
/// failures are cached, at most 5 minutes).
const MAX_FAILURE_WAIT: Duration = Duration::from_secs(300);

/// A name whose lookups fail: not asked again before `retry_at` (the wait doubling with each
/// failure in a row), and meanwhile answered from what is cached, or not at all, at once.
#[derive(Debug)]
struct Failing {
    retry_at: Instant,
    in_a_row: u32,
}

/// The cache and the names the index wants resolved.
#[derive(Debug, Default)]
pub struct Flattener {
    resolver: Option<SocketAddr>,
    cache: Mutex<HashMap<String, Cached>>,
    failing: Mutex<HashMap<String, Failing>>,
    wanted: Mutex<HashSet<String>>,
    /// Woken when a lookup changed an answer, so the index is rebuilt.
    pub changed: Notify,
}

impl Flattener {
    pub fn new(resolver: Option<SocketAddr>) -> Self {
        Self {
            resolver,
            ..Self::default()
        }
    }

    /// The cached addresses of `name` (possibly stale, while a refresh is due); registers the
    /// name for background lookups.
    pub fn addresses(&self, name: &str) -> Option<External> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone());
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .map(|c| c.answer.clone())
    }

    /// The addresses of `name`: cached while fresh, else looked up now through the resolver
    /// (for the edge, which needs an answer for the request in hand). When the lookup fails,
    /// the last answer, stale, serves on, as nginx's and Cloudflare's resolvers do; a name
    /// whose lookups fail is not asked again for a while ([`Failing`]), and is answered from
    /// the cache (or not at all) meanwhile, without waiting.
    pub async fn resolve_now(&self, name: &str) -> Option<External> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone());
        let cached = || {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .map(|c| (c.answer.clone(), c.expires > Instant::now()))
        };
        match cached() {
            Some((answer, true)) => return Some(answer),
            stale if self.failing_now(&name) => return stale.map(|(answer, _)| answer),
            _ => {}
        }
        let resolver = self.resolver?;
        let answer = match resolve(resolver, &name).await {
            Ok(answer) => answer,
            Err(e) => {
                self.failed(&name, resolver, &e);
                return cached().map(|(answer, _)| answer);
            }
        };
        self.keep(&name, &answer);
        Some(answer)
    }

    /// Looks up every wanted name whose answer is missing or expired, forever.
    pub async fn run(&self) {
        let Some(resolver) = self.resolver else {
            return;
        };
        loop {
            let due: Vec<String> = {
                let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                self.wanted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .filter(|n| cache.get(*n).is_none_or(|c| c.expires <= now))
                    .filter(|n| !self.failing_now(n))
                    .cloned()
                    .collect()
            };
            for name in due {
                match resolve(resolver, &name).await {
                    Ok(answer) => {
                        let previous = self.keep(&name, &answer);
                        if previous
                            .is_none_or(|p| p.answer.v4 != answer.v4 || p.answer.v6 != answer.v6)
                        {
                            tracing::info!(%name, ?answer, "outside name resolved");
                            self.changed.notify_one();
                        }
                    }
                    // The last answer serves on; asked again once the failure's wait is over.
                    Err(e) => self.failed(&name, resolver, &e),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A lookup of `name` succeeded with `answer`: kept for its TTL (within bounds), and the
    /// name fails no more. Returns what was kept before.
    fn keep(&self, name: &str, answer: &External) -> Option<Cached> {
        self.resolved(name);
        let ttl = answer.ttl.clamp(MIN_TTL, MAX_TTL);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.to_owned(),
                Cached {
                    answer: answer.clone(),
                    expires: Instant::now() + Duration::from_secs(u64::from(ttl)),
                },
            )
    }

    /// Whether `name`'s lookups failed and it is not to be asked again yet.
    fn failing_now(&self, name: &str) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|f| f.retry_at > Instant::now())
    }

    /// A lookup of `name` through `resolver` failed (`e`): it waits twice as long as after the
    /// failure before, from 1 s up to [`MAX_FAILURE_WAIT`]. Logged when the name begins to
    /// fail; the failures after it, until it resolves again, at debug level.
    fn failed(&self, name: &str, resolver: SocketAddr, e: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = failing.entry(name.to_owned()).or_insert(Failing {
            retry_at: Instant::now(),
            in_a_row: 0,
        });
        entry.in_a_row = entry.in_a_row.saturating_add(1);
        let wait = Duration::from_secs(1 << (entry.in_a_row - 1).min(9)).min(MAX_FAILURE_WAIT);
        entry.retry_at = Instant::now() + wait;
        if entry.in_a_row == 1 {
            tracing::warn!(%name, "resolving an outside name through {resolver} failed: {e}; the last answer (if any) serves, and the name is asked again after growing waits");
        } else {
            tracing::debug!(%name, failures = entry.in_a_row, "resolving an outside name failed again: {e}");
        }
    }

    /// A lookup of `name` succeeded.
    fn resolved(&self, name: &str) {
        let was = self
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let Some(was) = was {
            tracing::info!(%name, failures = was.in_a_row, "outside name resolves again");
        }
    }
}

async fn ask(resolver: SocketAddr, name: &Name, rtype: RecordType) -> Result<Message, String> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name.clone(), rtype));
    let bytes = q.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = if resolver.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(resolver).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        socket.send(&bytes).await.map_err(|e| e.to_string())?;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await
            && let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == q.metadata.id
        {
            return Ok(m);
        }
    }
    Err("no answer".into())
}

/// A and AAAA of `name` through `resolver`, with the lowest TTL of the answers (CNAME chain
/// included).
async fn resolve(resolver: SocketAddr, name: &str) -> Result<External, String> {
    let fqdn = Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?;
    let mut out = External {
        v4: Vec::new(),
        v6: Vec::new(),
        ttl: MAX_TTL,
    };
    for rtype in [RecordType::A, RecordType::AAAA] {
        let m = ask(resolver, &fqdn, rtype).await?;
        if !matches!(
            m.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ) {
            return Err(format!(
                "{} answered {}",
                resolver, m.metadata.response_code
            ));
        }
        for r in &m.answers {
            out.ttl = out.ttl.min(r.ttl);
            match &r.data {
                RData::A(a) => out.v4.push(a.0),
                RData::AAAA(a) => out.v6.push(a.0),
                _ => {}
            }
        }
    }
    out.v4.sort();
    out.v6.sort();
    if out.v4.is_empty() && out.v6.is_empty() {
        out.ttl = out.ttl.min(NEGATIVE_TTL);
    }
    Ok(out)
}

/// The first nameserver of /etc/resolv.conf, the default resolver.
pub fn system_resolver() -> Option<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()?
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver answering each query with the next of `answers` (an address with TTL 1, no
    /// address, or a server failure); the last one for all after.
    fn stub_resolver(answers: Vec<Option<Option<Ipv4Addr>>>) -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut n = 0;
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.queries = query.queries.clone();
                let step = answers[n.min(answers.len() - 1)];
                let qtype = query.queries.first().map(Query::query_type);
                match step {
                    None => reply.metadata.response_code = ResponseCode::ServFail,
                    Some(Some(ip)) if qtype == Some(RecordType::A) => {
                        let name = query.queries[0].name().clone();
                        reply.answers.push(hickory_proto::rr::Record::from_rdata(
                            name,
                            1,
                            RData::A(ip.into()),
                        ));
                    }
                    Some(_) => {}
                }
                // One step per name lookup (A then AAAA).
                if qtype == Some(RecordType::AAAA) {
                    n += 1;
                }
                let _ = socket.send_to(&reply.to_vec().expect("encode"), from);
            }
        });
        addr
    }

    #[tokio::test]
    async fn no_address_is_asked_again_soon_and_a_failed_lookup_keeps_the_last_answer() {
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let resolver = stub_resolver(vec![Some(None), Some(Some(ip)), None]);
        let flattener = Flattener::new(Some(resolver));
        let first = flattener
            .resolve_now("origin.other.test")
            .await
            .expect("an answer");
        assert!(first.v4.is_empty());
        // Not kept an hour: asked again once its short time passed.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = flattener
            .resolve_now("origin.other.test")
            .await
            .expect("an answer");
        assert_eq!(second.v4, [ip]);
        // The resolver fails: the last answer serves on.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let third = flattener.resolve_now("origin.other.test").await;
        assert_eq!(third.map(|e| e.v4), Some(vec![ip]));
    }

    #[tokio::test]
    async fn a_name_whose_lookups_fail_is_not_asked_again_at_once_nor_waited_for() {
        // A resolver that fails every query, counting them.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let resolver = socket.local_addr().expect("addr");
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&asked);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.queries = query.queries.clone();
                reply.metadata.response_code = ResponseCode::ServFail;
                let _ = socket.send_to(&reply.to_vec().expect("encode"), from);
            }
        });
        let count = || asked.load(std::sync::atomic::Ordering::SeqCst);
        let flattener = Flattener::new(Some(resolver));
        assert_eq!(flattener.resolve_now("down.other.test").await, None);
        assert_eq!(count(), 1);
        // Within the failure's wait (1 s): answered at once, the resolver not asked.
        let started = Instant::now();
        assert_eq!(flattener.resolve_now("down.other.test").await, None);
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(count(), 1);
        // After it: asked again, and the next wait is longer (2 s).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(flattener.resolve_now("down.other.test").await, None);
        assert_eq!(count(), 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(flattener.resolve_now("down.other.test").await, None);
        assert_eq!(count(), 2, "still waiting after the second failure");
    }
}
