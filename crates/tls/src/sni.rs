//! SNI → certificate, from the snapshot, and the TLS server configurations visitors meet.
//!
//! The table of names is rebuilt when a handshake finds a newer snapshot whose certificates
//! differ from the ones it was built from (a change elsewhere only checks that, which costs a
//! comparison per certificate); certificates unchanged since the previous table are reused as
//! they were parsed, so a change to one zone parses at most that zone's new certificates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use parapet_snapshot::{Published, Snapshot};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

use crate::chain::{covers, parse_chain};

/// A certificate's version (`modified_on` or `issued_on`) and its parsed key (`None` when it
/// does not parse).
type Parsed = (String, Option<Arc<CertifiedKey>>);

/// A certificate served for a name, and the id of the zone the name belongs to.
type Served = (Arc<CertifiedKey>, Arc<str>);

/// Certificates by the name patterns they serve.
#[derive(Default)]
struct CertTable {
    revision: u64,
    /// Host name or `*.parent` → the certificate served for it and the zone it belongs to.
    names: Arc<HashMap<String, Served>>,
    /// Certificate id (`auto:` and the host name for automatic ones) → (its `modified_on` or
    /// `issued_on`, the parsed key, or `None` when it does not parse).
    parsed: Arc<HashMap<String, Parsed>>,
    /// The zones the table was built for (which zone owns a name depends on them all).
    zones: u64,
    /// When the first upload it serves as valid expires: the table is built again then (an
    /// expired upload gives way to any other certificate for its names).
    expires: Option<std::time::SystemTime>,
}

/// The zones of a snapshot, as one number that changes when a zone comes or goes.
fn zones_fingerprint(snapshot: &Snapshot) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    snapshot
        .zones
        .values()
        .fold(snapshot.zones.len() as u64, |acc, z| {
            acc.wrapping_add(hasher.hash_one(&z.zone.id))
        })
}

/// Whether the zone that owns `name` (the longest enclosing zone) is `zone_id`: a certificate
/// of one zone never serves the names of another, nested, zone.
fn owns(snapshot: &Snapshot, zone_id: &str, name: &str) -> bool {
    snapshot
        .zone_for(name.strip_prefix("*.").unwrap_or(name))
        .is_some_and(|z| z.zone.id == zone_id)
}

impl CertTable {
    fn build(snapshot: &Snapshot, previous: &CertTable) -> Self {
        let now = std::time::SystemTime::now();
        let mut parsed = HashMap::new();
        // name → (rank, key, zone); the lowest rank is served.
        let mut best: HashMap<String, ((i64, i64), Served)> = HashMap::new();
        // Expired uploads: served only for names nothing else covers (see below).
        let mut expired: Vec<(String, Served)> = Vec::new();
        let mut expires = None;
        for (zone_id, certs) in &snapshot.custom_certs {
            let zone: Arc<str> = Arc::from(zone_id.as_str());
            for cert in certs {
                let key = reuse_or_parse(
                    previous,
                    &cert.id,
                    &cert.modified_on,
                    &cert.certificate,
                    &cert.private_key,
                );
                parsed.insert(cert.id.clone(), (cert.modified_on.clone(), key.clone()));
                let Some(key) = key else {
                    continue;
                };
                let owned = cert.hosts.iter().filter(|h| owns(snapshot, zone_id, h));
                if cert.expired(now) {
                    expired.extend(owned.map(|h| (h.clone(), (key.clone(), Arc::clone(&zone)))));
                    continue;
                }
                if let Some(at) = cert.expires_at() {
                    expires = Some(expires.map_or(at, |e: std::time::SystemTime| e.min(at)));
                }
                // Lower priority numbers first; then the later upload.
                let rank = (cert.priority, -upload_order(&cert.uploaded_on));
                for host in cert.hosts.iter().filter(|h| owns(snapshot, zone_id, h)) {
                    match best.get(host) {
                        Some((r, _)) if *r <= rank => {}
                        _ => {
                            best.insert(host.clone(), (rank, (key.clone(), Arc::clone(&zone))));
                        }
                    }
                }
            }
        }
        // Certificates Parapet obtained come after every uploaded one.
        for auto in snapshot.auto_certs.values().filter(|c| c.issued()) {
            let id = format!("auto:{}", auto.hostname);
            let key = reuse_or_parse(
                previous,
                &id,
                &auto.issued_on,
                &auto.certificate,
                &auto.private_key,
            );
            parsed.insert(id, (auto.issued_on.clone(), key.clone()));
            if let Some(key) = key
                && owns(snapshot, &auto.zone_id, &auto.hostname)
            {
                best.entry(auto.hostname.clone())
                    .or_insert(((i64::MAX, 0), (key, Arc::from(auto.zone_id.as_str()))));
            }
        }
        // An expired upload serves a name only when no other certificate covers it, by its
        // name or by a wildcard (as Cloudflare falls back to Universal SSL): a handshake with
        // it fails in the browser, but says why.
        for (host, served) in expired {
            let wildcard = host
                .split_once('.')
                .map(|(_, parent)| format!("*.{parent}"));
            let covered =
                best.contains_key(&host) || wildcard.is_some_and(|w| best.contains_key(&w));
            if !covered {
                best.entry(host).or_insert(((i64::MAX, 1), served));
            }
        }
        Self {
            revision: snapshot.revision,
            names: Arc::new(
                best.into_iter()
                    .map(|(name, (_, served))| (name, served))
                    .collect(),
            ),
            parsed: Arc::new(parsed),
            zones: zones_fingerprint(snapshot),
            expires,
        }
    }

    /// Whether an upload it serves as valid has expired since it was built.
    fn outlived(&self, now: std::time::SystemTime) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    /// Whether `snapshot` holds exactly the certificates this table was built from.
    fn serves_the_certificates_of(&self, snapshot: &Snapshot) -> bool {
        let custom = snapshot.custom_certs.values().flatten();
        let auto = snapshot.auto_certs.values().filter(|c| c.issued());
        let count =
            snapshot.custom_certs.values().map(Vec::len).sum::<usize>() + auto.clone().count();
        count == self.parsed.len()
            && self.zones == zones_fingerprint(snapshot)
            && custom.into_iter().all(|c| {
                self.parsed
                    .get(&c.id)
                    .is_some_and(|(modified, _)| *modified == c.modified_on)
            })
            && auto.into_iter().all(|c| {
                self.parsed
                    .get(&format!("auto:{}", c.hostname))
                    .is_some_and(|(issued, _)| *issued == c.issued_on)
            })
    }

    /// The certificate for `host`: one naming it exactly, else a wildcard covering it (when
    /// the wildcard's zone owns `host`: not the apex of a zone nested under it).
    fn lookup(&self, snapshot: &Snapshot, host: &str) -> Option<Arc<CertifiedKey>> {
        if let Some((k, _)) = self.names.get(host) {
            return Some(k.clone());
        }
        let (_, parent) = host.split_once('.')?;
        let pattern = format!("*.{parent}");
        self.names
            .get(&pattern)
            .filter(|(_, zone)| covers(&pattern, host) && owns(snapshot, zone, host))
            .map(|(k, _)| k.clone())
    }
}

/// Certificate `id` at `version` as the previous table parsed it, or parsed now.
fn reuse_or_parse(
    previous: &CertTable,
    id: &str,
    version: &str,
    certificate_pem: &str,
    key_pem: &str,
) -> Option<Arc<CertifiedKey>> {
    if let Some((parsed_version, key)) = previous.parsed.get(id)
        && parsed_version == version
    {
        return key.clone();
    }
    match parse_chain(certificate_pem, key_pem) {
        Ok(chain) => Some(chain.key),
        Err(e) => {
            // It was checked when it was stored; a store edited by hand can still hold
            // anything.
            tracing::warn!(
                cert = %id,
                "certificate not served: {}",
                e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
            None
        }
    }
}

/// Orders RFC 3339 timestamps of one format (later is larger), without parsing them.
fn upload_order(timestamp: &str) -> i64 {
    let digits: String = timestamp
        .bytes()
        .filter(u8::is_ascii_digit)
        .take(14)
        .map(char::from)
        .collect();
    digits.parse().unwrap_or(0)
}

/// Chooses the certificate for each handshake from the served snapshot.
pub struct SniResolver {
    published: Arc<Published>,
    table: ArcSwap<CertTable>,
    rebuilding: Mutex<()>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl SniResolver {
    pub fn new(published: Arc<Published>) -> Self {
        Self {
            published,
            table: ArcSwap::from_pointee(CertTable::default()),
            rebuilding: Mutex::new(()),
        }
    }

    /// The table for `snapshot` (the served one), rebuilt first if the snapshot changed.
    fn table(&self, snapshot: &Snapshot) -> Arc<CertTable> {
        let now = std::time::SystemTime::now();
        let current = |table: &CertTable| {
            table.revision == snapshot.revision && snapshot.revision != 0 && !table.outlived(now)
        };
        let table = self.table.load_full();
        if current(&table) {
            return table;
        }
        let _one_at_a_time = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = self.table.load_full();
        if current(&table) {
            return table;
        }
        let rebuilt = if table.revision != 0
            && !table.outlived(now)
            && table.serves_the_certificates_of(snapshot)
        {
            Arc::new(CertTable {
                revision: snapshot.revision,
                names: Arc::clone(&table.names),
                parsed: Arc::clone(&table.parsed),
                zones: table.zones,
                expires: table.expires,
            })
        } else {
            Arc::new(CertTable::build(snapshot, &table))
        };
        self.table.store(Arc::clone(&rebuilt));
        rebuilt
    }

    /// The certificate served for `host` (lowercase), if any.
    pub fn certificate_for(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.published.load();
        self.table(&snapshot).lookup(&snapshot, host)
    }

    /// How many names have a certificate.
    pub fn names(&self) -> usize {
        self.table(&self.published.load()).names.len()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI, or a name without a certificate: the handshake fails cleanly.
        let host = hello.server_name()?.to_ascii_lowercase();
        self.certificate_for(host.trim_end_matches('.'))
    }
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Resumption state shared by every listener: enough sessions for a busy node.
const SESSION_CACHE: usize = 64 * 1024;

/// The TLS configurations the edge offers visitors: TLS 1.2 and 1.3, or 1.3 only for zones
/// whose `min_tls_version` is "1.3"; ALPN `h2` and `http/1.1`; session tickets and a session
/// cache for resumption.
pub struct EdgeTls {
    pub resolver: Arc<SniResolver>,
    published: Arc<Published>,
    standard: Arc<ServerConfig>,
    tls13_only: Arc<ServerConfig>,
}

impl EdgeTls {
    pub fn new(published: Arc<Published>) -> Result<Self, crate::TlsError> {
        let resolver = Arc::new(SniResolver::new(Arc::clone(&published)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| crate::TlsError::Generate(format!("session ticket key: {e}")))?;
        let cache = ServerSessionMemoryCache::new(SESSION_CACHE);
        let build = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(versions)
                .map_err(|e| crate::TlsError::Generate(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            config.ticketer = Arc::clone(&ticketer);
            config.session_storage = cache.clone();
            Ok::<_, crate::TlsError>(Arc::new(config))
        };
        Ok(Self {
            standard: build(&[&version::TLS13, &version::TLS12])?,
            tls13_only: build(&[&version::TLS13])?,
            resolver,
            published,
        })
    }

    /// The configuration that answers a TLS-ALPN-01 challenge (ALPN `acme-tls/1`) for `sni`,
    /// while an order for it is being validated.
    pub fn challenge_config(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        let host = sni?.to_ascii_lowercase();
        let answer = self.published.load().acme_alpn.get(&host).cloned()?;
        let key =
            crate::chain::certified_key_as_is(&answer.certificate, &answer.private_key).ok()?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&version::TLS13, &version::TLS12])
                .ok()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Some(Arc::new(config))
    }

    /// The configuration for a handshake naming `sni`: its zone's minimum TLS version decides.
    pub fn config_for(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        let tls13_only = sni.is_some_and(|host| {
            let snapshot = self.published.load();
            let host = host.to_ascii_lowercase();
            snapshot
                .zone_for(host.trim_end_matches('.'))
                .is_some_and(|z| snapshot.edge_of(&z.zone.id).settings.tls13_only)
        });
        if tls13_only {
            Arc::clone(&self.tls13_only)
        } else {
            Arc::clone(&self.standard)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certgen::{Authority, Usage};
    use parapet_model::certificate::CustomCertificate;

    /// A snapshot of zone `example.test` with `certs` uploaded: (hosts, expires_on).
    fn with_uploads(certs: &[(&[&str], String)], ca: &Authority) -> Snapshot {
        let mut zone = parapet_model::Zone::new(
            "z".into(),
            "example.test".into(),
            vec!["ns1.parapet.test".into()],
            "a".into(),
            String::new(),
            1,
        );
        zone.status = parapet_model::ZoneStatus::Active;
        let mut entries = vec![(
            "zones/z".to_owned(),
            serde_json::to_vec(&zone).expect("zone"),
        )];
        for (i, (hosts, expires_on)) in certs.iter().enumerate() {
            let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
            let issued = ca.issue(&hosts, 30, Usage::Server).expect("issued");
            let cert = CustomCertificate {
                id: format!("c{i}"),
                zone_id: "z".into(),
                certificate: issued.cert_pem,
                private_key: issued.key_pem,
                bundle_method: "ubiquitous".into(),
                kind: "sni_custom".into(),
                hosts,
                issuer: String::new(),
                signature: String::new(),
                serial_number: String::new(),
                expires_on: expires_on.clone(),
                uploaded_on: format!("2026-01-0{}T00:00:00Z", i + 1),
                modified_on: format!("2026-01-0{}T00:00:00Z", i + 1),
                priority: 0,
            };
            entries.push((
                parapet_snapshot::keys::custom_cert_key("z", &cert.id),
                serde_json::to_vec(&cert).expect("cert"),
            ));
        }
        parapet_snapshot::compile_snapshot(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            1,
        )
        .expect("compiles")
    }

    #[test]
    fn an_upload_that_expires_while_served_gives_way_without_a_change() {
        let ca = Authority::new("Test Roots", 30).expect("ca");
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        let now = std::time::SystemTime::now();
        let soon = crate::chain::rfc3339(unix(now) + 2);
        let later = crate::chain::rfc3339(unix(now) + 86_400);
        let published = Arc::new(Published::new());
        published.publish(with_uploads(
            &[(&["www.example.test"], soon), (&["*.example.test"], later)],
            &ca,
        ));
        let resolver = SniResolver::new(Arc::clone(&published));
        let wildcard = resolver
            .certificate_for("api.example.test")
            .expect("wildcard");
        let exact = resolver.certificate_for("www.example.test").expect("exact");
        assert!(!Arc::ptr_eq(&exact, &wildcard), "the exact upload first");
        std::thread::sleep(std::time::Duration::from_millis(3100));
        let after = resolver
            .certificate_for("www.example.test")
            .expect("served");
        assert!(
            Arc::ptr_eq(&after, &wildcard),
            "the expired upload still served with no snapshot change"
        );
    }
}
