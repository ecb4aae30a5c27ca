//! Automatic certificates: every proxied host name of an active zone gets one from an ACME CA
//! (RFC 8555), validated by DNS-01 answered by Parapet's own DNS server, and renewed well before
//! it expires. Issuance state lives in the store, so every edge of a fleet serves the result and
//! the API reports it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use parapet_model::certificate::{AcmeResponse, AutoCertificate};
use parapet_model::settings::AcmeChallenge;
use parapet_model::{DnsRecord, RecordDraft, ZoneStatus};
use parapet_snapshot::keys::{ACME_ACCOUNT, ACME_ALPN, ACME_HTTP, ACME_LEASE, AUTO_CERTS};
use parapet_snapshot::{Published, Snapshot, acme_challenge_key, auto_cert_key};
use parapet_store::{Store, Txn};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::chain::{covers, parse_chain, rfc3339};
use crate::unix_now;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the node obtains certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// A PEM root the directory's HTTPS certificate chains to (`None`: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Contact URIs for the account (`mailto:...`).
    pub contact: Vec<String>,
    /// Renew when a certificate has less than this left (Let's Encrypt's advice: a third of its
    /// 90 days).
    pub renew_before: Duration,
    /// How often states are looked at when nothing changes.
    pub recheck: Duration,
    /// The longest one order may take, from creation to certificate.
    pub order_timeout: Duration,
    /// The wait after a first failure; it doubles with each failure in a row, up to a day.
    pub retry_after: Duration,
}

impl AcmeConfig {
    pub fn new(directory: impl Into<String>) -> Self {
        Self {
            directory: directory.into(),
            ca_file: None,
            contact: Vec::new(),
            renew_before: Duration::from_secs(30 * 86_400),
            recheck: Duration::from_secs(60),
            order_timeout: Duration::from_secs(180),
            retry_after: Duration::from_secs(60),
        }
    }
}

/// The node of a fleet that orders certificates (one at a time, so the CA sees one client), and
/// until when; any node takes the lease over once it has expired.
#[derive(Serialize, Deserialize)]
struct Lease {
    holder: String,
    expires: i64,
}

/// The stored account: its credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Every proxied host name of an active zone that needs a certificate from the CA: those no
/// uploaded certificate that has not expired covers. Name → zone id.
pub fn wanted_hosts(snapshot: &Snapshot) -> BTreeMap<String, String> {
    let now = std::time::SystemTime::now();
    let mut wanted = BTreeMap::new();
    for (host, proxied) in &snapshot.proxied_hosts {
        if !proxied.active {
            continue;
        }
        let custom = snapshot.custom_certs.get(&*proxied.zone_id);
        let covered = custom.is_some_and(|certs| {
            certs
                .iter()
                .filter(|c| !c.expired(now))
                .any(|c| c.hosts.iter().any(|pattern| covers(pattern, host)))
        });
        if !covered {
            wanted.insert(host.clone(), proxied.zone_id.to_string());
        }
    }
    wanted
}

/// Whether `host`, now a name of zone `zone_id`, needs an attempt now. A certificate the name
/// got while another zone held it is not served for this one (the names' zone decides): a
/// new one is due at once.
fn due(state: Option<&AutoCertificate>, zone_id: &str, now: i64, renew_before: Duration) -> bool {
    let Some(state) = state else {
        return true;
    };
    if state.zone_id != zone_id {
        return true;
    }
    if state.next_attempt > now {
        return false;
    }
    let renew_at = state.not_after - i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
    !state.issued() || state.error.is_some() || now >= renew_at
}

/// Obtains and renews certificates until `shutdown`.
pub struct AcmeManager {
    config: AcmeConfig,
    store: Arc<dyn Store>,
    published: Arc<Published>,
    account: Option<Account>,
    /// The store revision of this manager's last write: states are read from a snapshot that
    /// includes it, so an attempt just recorded is not repeated.
    written: u64,
    /// This manager's name in the lease.
    id: String,
    /// The states this manager wrote, by host name: decisions never rest on a snapshot that
    /// is behind them (one that is rejected, say), so nothing is ordered twice.
    states: HashMap<String, AutoCertificate>,
}

impl AcmeManager {
    pub fn new(config: AcmeConfig, store: Arc<dyn Store>, published: Arc<Published>) -> Self {
        Self {
            config,
            store,
            published,
            account: None,
            written: 0,
            id: parapet_model::ids::new_id(),
            states: HashMap::new(),
        }
    }

    /// How long a lease lasts: an order's whole time and a recheck, with room to spare.
    fn lease_time(&self) -> i64 {
        i64::try_from((self.config.order_timeout * 2 + self.config.recheck).as_secs())
            .unwrap_or(3_600)
    }

    /// Takes or renews the fleet's ordering lease; false when another node holds it.
    pub async fn hold_lease(&mut self) -> bool {
        let now = unix_now();
        let current = match self.store.get(ACME_LEASE).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!("reading the ACME lease: {e}");
                return false;
            }
        };
        let revision = current.as_ref().map_or(0, |e| e.mod_revision);
        if let Some(lease) = current
            .as_ref()
            .and_then(|e| serde_json::from_slice::<Lease>(&e.value).ok())
            && lease.expires > now
        {
            if lease.holder != self.id {
                return false;
            }
            if lease.expires - now > self.lease_time() / 2 {
                // Ours for a while yet: no write (each one is a new store revision).
                return true;
            }
        }
        let lease = Lease {
            holder: self.id.clone(),
            expires: now + self.lease_time(),
        };
        let Ok(bytes) = serde_json::to_vec(&lease) else {
            return false;
        };
        // Compare-and-set: of two nodes taking an expired lease at once, one wins.
        match self
            .store
            .commit(
                Txn::new()
                    .expect(ACME_LEASE, revision)
                    .put(ACME_LEASE, bytes),
            )
            .await
        {
            Ok(revision) => {
                self.written = revision;
                true
            }
            Err(_) => false,
        }
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                self.published.wait_for(self.written),
            )
            .await;
            let snapshot = self.published.load();
            if !self.hold_lease().await {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.recheck) => continue,
                    _ = shutdown.wait_for(|stopping| *stopping) => return,
                }
            }
            let wanted = wanted_hosts(&snapshot);
            let zones: HashMap<&str, (&str, ZoneStatus)> = snapshot
                .zones
                .values()
                .map(|z| (z.zone.id.as_str(), (z.zone.name.as_str(), z.zone.status)))
                .collect();
            let mut holding = true;
            for (host, zone_id) in &wanted {
                if *shutdown.borrow() {
                    return;
                }
                let state = self
                    .states
                    .get(host)
                    .cloned()
                    .or_else(|| snapshot.auto_certs.get(host).map(|s| (**s).clone()));
                if !due(
                    state.as_ref(),
                    zone_id,
                    unix_now(),
                    self.config.renew_before,
                ) {
                    continue;
                }
                if !self.hold_lease().await {
                    holding = false;
                    break;
                }
                let Some(&(zone_name, ZoneStatus::Active)) = zones.get(zone_id.as_str()) else {
                    continue;
                };
                // Wildcards can only be validated through DNS (RFC 8555 §7.1.3).
                let kind = if host.starts_with("*.") {
                    AcmeChallenge::Dns01
                } else {
                    snapshot.edge_of(zone_id).settings.acme_challenge
                };
                tracing::info!(%host, ?kind, "requesting a certificate");
                let outcome = tokio::time::timeout(
                    self.config.order_timeout,
                    self.issue(host, zone_id, zone_name, kind),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the CA did not finish within {}s",
                        self.config.order_timeout.as_secs()
                    ))
                });
                self.remove_challenges(zone_id, host).await;
                self.record(host, zone_id, state.as_ref(), outcome).await;
            }
            if holding {
                self.forget_unwanted(&snapshot).await;
            }
            let next = snapshot.revision + 1;
            tokio::select! {
                _ = self.published.wait_for(next) => {}
                _ = tokio::time::sleep(self.config.recheck) => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// The account, loaded from the store or registered with the CA (and stored).
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let builder = || match &self.config.ca_file {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        };
        let stored = self
            .store
            .get(ACME_ACCOUNT)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|e| serde_json::from_slice::<StoredAccount>(&e.value).ok())
            .filter(|a| a.directory == self.config.directory);
        let account = match stored {
            Some(stored) => builder()
                .map_err(|e| format!("ACME client: {e}"))?
                .from_credentials(stored.credentials)
                .await
                .map_err(|e| format!("ACME account: {e}"))?,
            None => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()
                    .map_err(|e| format!("ACME client: {e}"))?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("registering with {}: {e}", self.config.directory))?;
                let stored = StoredAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                };
                let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
                self.store
                    .commit(Txn::new().put(ACME_ACCOUNT, bytes))
                    .await
                    .map_err(|e| e.to_string())?;
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order for `host`: the challenge answered through the store (a TXT record, an HTTP
    /// answer or a TLS-ALPN certificate), then the certificate.
    async fn issue(
        &mut self,
        host: &str,
        zone_id: &str,
        zone_name: &str,
        kind: AcmeChallenge,
    ) -> Result<(String, String), String> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(host.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let (kind_name, challenge_type) = match kind {
                AcmeChallenge::Dns01 => ("dns-01", ChallengeType::Dns01),
                AcmeChallenge::Http01 => ("http-01", ChallengeType::Http01),
                AcmeChallenge::TlsAlpn01 => ("tls-alpn-01", ChallengeType::TlsAlpn01),
            };
            let mut challenge = authz
                .challenge(challenge_type)
                .ok_or_else(|| format!("the CA offers no {kind_name} challenge"))?;
            let name = match &challenge.identifier().identifier {
                Identifier::Dns(name) => name.clone(),
                other => return Err(format!("cannot validate identifier {other:?}")),
            };
            let key_authorization = challenge.key_authorization();
            let mut answer = AcmeResponse {
                hostname: name.clone(),
                token: String::new(),
                key_authorization: String::new(),
                certificate: String::new(),
                private_key: String::new(),
            };
            match kind {
                AcmeChallenge::Dns01 => {
                    let txt = key_authorization.dns_value();
                    self.publish_challenge(
                        zone_id,
                        zone_name,
                        &format!("_acme-challenge.{name}"),
                        &txt,
                    )
                    .await?;
                }
                AcmeChallenge::Http01 => {
                    answer.token = challenge.token.clone();
                    answer.key_authorization = key_authorization.as_str().to_owned();
                    self.publish_answer(format!("{ACME_HTTP}{}", answer.token), &answer)
                        .await?;
                }
                AcmeChallenge::TlsAlpn01 => {
                    let issued = crate::certgen::acme_alpn_certificate(
                        &name,
                        key_authorization.digest().as_ref(),
                    )
                    .map_err(|e| e.to_string())?;
                    answer.certificate = issued.cert_pem;
                    answer.private_key = issued.key_pem;
                    self.publish_answer(format!("{ACME_ALPN}{name}"), &answer)
                        .await?;
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let poll = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.config.order_timeout);
        let status = order
            .poll_ready(&poll)
            .await
            .map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("the order is {status:?} after validation"));
        }
        let key = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&poll)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((chain, key))
    }

    /// Stores the TXT record `name` → `value` and waits until this node's DNS serves it.
    async fn publish_challenge(
        &self,
        zone_id: &str,
        zone_name: &str,
        name: &str,
        value: &str,
    ) -> Result<(), String> {
        let draft = RecordDraft::from_json(
            zone_name,
            &serde_json::json!({"type": "TXT", "name": name, "content": value, "ttl": 60}),
        )
        .map_err(|e| format!("challenge record: {e}"))?;
        let now = rfc3339(unix_now());
        let record: DnsRecord = draft.into_record(
            parapet_model::ids::new_id(),
            zone_id.to_owned(),
            now.clone(),
            now,
        );
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let key = acme_challenge_key(zone_id, &record.id);
        let revision = commit_zone_change(&*self.store, zone_id, || {
            Txn::new().put(key.clone(), bytes.clone())
        })
        .await
        .map_err(|e| format!("storing the challenge: {e}"))?;
        tokio::time::timeout(Duration::from_secs(30), self.published.wait_for(revision))
            .await
            .map_err(|_| "the challenge record was not served within 30s".to_owned())
    }

    /// Stores an HTTP-01 or TLS-ALPN-01 answer at `key` and waits until this node serves it.
    async fn publish_answer(&self, key: String, answer: &AcmeResponse) -> Result<(), String> {
        let bytes = serde_json::to_vec(answer).map_err(|e| e.to_string())?;
        let revision = self
            .store
            .commit(Txn::new().put(key, bytes))
            .await
            .map_err(|e| format!("storing the challenge answer: {e}"))?;
        tokio::time::timeout(Duration::from_secs(30), self.published.wait_for(revision))
            .await
            .map_err(|_| "the challenge answer was not served within 30s".to_owned())
    }

    /// Removes every challenge answer left for `host` (and the zone's TXT records).
    async fn remove_challenges(&mut self, zone_id: &str, host: &str) {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let mut keys: Vec<String> = Vec::new();
        if let Ok(listing) = self.store.list(&acme_challenge_key(zone_id, "")).await {
            keys.extend(listing.entries.into_iter().map(|e| e.key));
        }
        if let Ok(listing) = self.store.list(ACME_HTTP).await {
            keys.extend(
                listing
                    .entries
                    .into_iter()
                    .filter(|e| {
                        serde_json::from_slice::<AcmeResponse>(&e.value)
                            .is_ok_and(|a| a.hostname == bare)
                    })
                    .map(|e| e.key),
            );
        }
        let alpn = format!("{ACME_ALPN}{bare}");
        if self.store.get(&alpn).await.ok().flatten().is_some() {
            keys.push(alpn);
        }
        let records = keys
            .iter()
            .any(|k| k.starts_with(&acme_challenge_key(zone_id, "")));
        if !keys.is_empty() {
            let txn = || keys.iter().fold(Txn::new(), |txn, k| txn.delete(k.clone()));
            let committed = if records {
                commit_zone_change(&*self.store, zone_id, txn).await
            } else {
                self.store.commit(txn()).await
            };
            match committed {
                Ok(revision) => self.written = revision,
                Err(e) => tracing::warn!("removing ACME challenge records: {e}"),
            }
        }
    }

    /// Stores the outcome of an attempt: the new certificate, or the failure with the time of
    /// the next attempt (the previous certificate, if any, keeps serving).
    async fn record(
        &mut self,
        host: &str,
        zone_id: &str,
        previous: Option<&AutoCertificate>,
        outcome: Result<(String, String), String>,
    ) {
        let now = unix_now();
        let mut state = previous.cloned().unwrap_or_else(|| AutoCertificate {
            hostname: host.to_owned(),
            zone_id: zone_id.to_owned(),
            certificate: String::new(),
            private_key: String::new(),
            not_after: 0,
            issued_on: String::new(),
            issuer: String::new(),
            error: None,
            failures: 0,
            next_attempt: 0,
        });
        state.zone_id = zone_id.to_owned();
        let checked = outcome.and_then(|(chain, key)| {
            parse_chain(&chain, &key)
                .map(|parsed| (chain, key, parsed))
                .map_err(|e| {
                    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
                    format!("the CA's certificate is unusable: {}", e.join("; "))
                })
        });
        match checked {
            Ok((chain, key, parsed)) => {
                tracing::info!(%host, "certificate issued");
                state.certificate = chain;
                state.private_key = key;
                state.not_after = parsed.leaf.not_after;
                state.issuer = parsed.leaf.issuer;
                state.issued_on = rfc3339(now);
                state.error = None;
                state.failures = 0;
                state.next_attempt = 0;
            }
            Err(e) => {
                tracing::warn!(%host, "certificate not issued: {e}");
                state.failures = state.failures.saturating_add(1);
                let wait = self
                    .config
                    .retry_after
                    .saturating_mul(1 << state.failures.saturating_sub(1).min(16))
                    .min(Duration::from_secs(86_400));
                state.next_attempt = now + i64::try_from(wait.as_secs()).unwrap_or(86_400);
                state.error = Some(e);
            }
        }
        match serde_json::to_vec(&state) {
            Ok(bytes) => {
                match self
                    .store
                    .commit(Txn::new().put(auto_cert_key(host), bytes))
                    .await
                {
                    Ok(revision) => self.written = revision,
                    Err(e) => tracing::warn!(%host, "storing the certificate state: {e}"),
                }
            }
            Err(e) => tracing::warn!(%host, "{e}"),
        }
        self.states.insert(host.to_owned(), state);
    }

    /// Drops the certificates of names no longer proxied at all (a paused zone or an inactive
    /// one keeps them, so that resuming it orders nothing).
    async fn forget_unwanted(&mut self, snapshot: &Snapshot) {
        let gone: Vec<&String> = snapshot
            .auto_certs
            .keys()
            .filter(|h| !snapshot.proxied_hosts.contains_key(*h))
            .collect();
        for host in &gone {
            self.states.remove(*host);
        }
        if gone.is_empty() {
            return;
        }
        let txn = gone
            .iter()
            .fold(Txn::new(), |txn, h| txn.delete(format!("{AUTO_CERTS}{h}")));
        match self.store.commit(txn).await {
            Ok(revision) => self.written = revision,
            Err(e) => tracing::warn!("removing certificates of names no longer proxied: {e}"),
        }
    }
}

/// The automatic certificate states of one zone's names, for the API.
pub fn zone_states(
    snapshot: &Snapshot,
    zone_id: &str,
) -> HashMap<String, Option<Arc<AutoCertificate>>> {
    wanted_hosts(snapshot)
        .into_iter()
        .filter(|(_, z)| z == zone_id)
        .map(|(host, _)| {
            let state = snapshot.auto_certs.get(&host).cloned();
            (host, state)
        })
        .collect()
}

/// Commits `txn` (a change of the zone's challenge records) with the zone's SOA serial moved on
/// in the same transaction: the records are served in the zone, and its secondaries learn of
/// a change by its serial (NOTIFY, IXFR). Tried again when the zone changed meanwhile; a zone
/// gone takes the change alone.
async fn commit_zone_change(
    store: &dyn Store,
    zone_id: &str,
    txn: impl Fn() -> Txn,
) -> Result<parapet_store::Revision, parapet_store::StoreError> {
    let key = parapet_snapshot::keys::zone_key(zone_id);
    loop {
        let Some(entry) = store.get(&key).await? else {
            return store.commit(txn()).await;
        };
        let Ok(mut zone) = serde_json::from_slice::<parapet_model::Zone>(&entry.value) else {
            return store.commit(txn()).await;
        };
        zone.serial = zone.next_serial(u64::try_from(unix_now()).unwrap_or(0));
        let bytes = serde_json::to_vec(&zone)
            .map_err(|e| parapet_store::StoreError::Storage(e.to_string()))?;
        let bumped = txn()
            .expect(key.clone(), entry.mod_revision)
            .put(key.clone(), bytes);
        match store.commit(bumped).await {
            Err(parapet_store::StoreError::Conflict) => continue,
            committed => return committed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(issued: bool, not_after: i64, error: bool, next: i64) -> AutoCertificate {
        AutoCertificate {
            hostname: "www.example.com".into(),
            zone_id: "z".into(),
            certificate: if issued { "PEM".into() } else { String::new() },
            private_key: String::new(),
            not_after,
            issued_on: String::new(),
            issuer: String::new(),
            error: error.then(|| "failed".into()),
            failures: u32::from(error),
            next_attempt: next,
        }
    }

    #[tokio::test]
    async fn one_node_of_a_fleet_orders_at_a_time() {
        let store: Arc<dyn Store> = Arc::new(parapet_store::MemoryStore::new());
        let published = Arc::new(Published::new());
        let config = AcmeConfig::new("https://ca.invalid/dir");
        let mut a = AcmeManager::new(config.clone(), Arc::clone(&store), Arc::clone(&published));
        let mut b = AcmeManager::new(config, Arc::clone(&store), published);
        assert!(a.hold_lease().await, "the first node takes the lease");
        assert!(!b.hold_lease().await, "the second waits");
        assert!(a.hold_lease().await, "the holder renews it");
        // The holder stops renewing: once its lease expires, another node takes over.
        let expired = serde_json::to_vec(&Lease {
            holder: a.id.clone(),
            expires: unix_now() - 1,
        })
        .expect("json");
        store
            .commit(Txn::new().put(ACME_LEASE, expired))
            .await
            .expect("stored");
        assert!(b.hold_lease().await, "an expired lease is taken over");
        assert!(!a.hold_lease().await);
    }

    #[test]
    fn certificates_are_requested_when_missing_failed_or_near_expiry() {
        let day = 86_400;
        let renew = Duration::from_secs(30 * 86_400);
        let now = 1_000 * day;
        assert!(due(None, "z", now, renew), "never requested");
        assert!(!due(
            Some(&state(true, now + 60 * day, false, 0)),
            "z",
            now,
            renew
        ));
        assert!(
            due(
                Some(&state(true, now + 29 * day, false, 0)),
                "z",
                now,
                renew
            ),
            "renewal"
        );
        assert!(
            !due(Some(&state(false, 0, true, now + 60)), "z", now, renew),
            "backing off"
        );
        assert!(
            due(Some(&state(false, 0, true, now - 1)), "z", now, renew),
            "retry"
        );
        // The name moved to another zone (a child zone made since): the certificate it has is
        // not served for that zone, so a new one is due, backing off or not.
        let fresh = state(true, now + 60 * day, false, 0);
        assert!(due(Some(&fresh), "child", now, renew), "moved");
        assert!(due(
            Some(&state(false, 0, true, now + 60)),
            "child",
            now,
            renew
        ));
    }
}
