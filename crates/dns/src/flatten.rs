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
const MIN_TTL: u32 = 5;
const MAX_TTL: u32 = 3600;

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

/// The cache and the names the index wants resolved.
#[derive(Debug, Default)]
pub struct Flattener {
    resolver: Option<SocketAddr>,
    cache: Mutex<HashMap<String, Cached>>,
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
    /// (for the edge, which needs an answer for the request in hand).
    pub async fn resolve_now(&self, name: &str) -> Option<External> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.wanted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone());
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.get(&name).filter(|c| c.expires > Instant::now()) {
                return Some(c.answer.clone());
            }
        }
        let answer = resolve(self.resolver?, &name).await.ok()?;
        let ttl = answer.ttl.clamp(MIN_TTL, MAX_TTL);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name,
                Cached {
                    answer: answer.clone(),
                    expires: Instant::now() + Duration::from_secs(u64::from(ttl)),
                },
            );
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
                    .cloned()
                    .collect()
            };
            for name in due {
                match resolve(resolver, &name).await {
                    Ok(answer) => {
                        let ttl = answer.ttl.clamp(MIN_TTL, MAX_TTL);
                        let previous = self
                            .cache
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(
                                name.clone(),
                                Cached {
                                    answer: answer.clone(),
                                    expires: Instant::now() + Duration::from_secs(u64::from(ttl)),
                                },
                            );
                        if previous
                            .is_none_or(|p| p.answer.v4 != answer.v4 || p.answer.v6 != answer.v6)
                        {
                            tracing::info!(%name, ?answer, "apex CNAME target resolved");
                            self.changed.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%name, "resolving an apex CNAME target through {resolver} failed: {e}");
                        // Try again soon without hammering the resolver.
                        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(c) = cache.get_mut(&name) {
                            c.expires = Instant::now() + Duration::from_secs(u64::from(MIN_TTL));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
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
