//! Custom certificates (`/zones/{id}/custom_certificates`), in Cloudflare's shapes: a zone
//! uploads a chain and its key; the edge serves them by SNI ahead of automatic certificates.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use parapet_model::Zone;
use parapet_model::certificate::{BUNDLE_METHODS, CERTIFICATE_TYPES, CustomCertificate};
use parapet_snapshot::{custom_cert_key, custom_cert_prefix};
use parapet_store::{StoreError, Txn};
use parapet_tls::{TlsError, unix_now};
use serde_json::{Value, json};

use crate::envelope::{ApiErrorItem, ApiResult, now_timestamp, ok, parse_body};
use crate::listing::{Params, page_response};
use crate::stored::{
    WRITE_ATTEMPTS, conflicted, create_in_zone, encode, list, load, put, put_in_zone,
};
use crate::zones::{Access, authorized_zone, load_zone};
use crate::{ApiError, ApiState, Auth};

/// The most custom certificates one zone may hold.
const MAX_PER_ZONE: usize = 100;

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: 1401,
        message: "Custom certificate not found.".into(),
    }
}

fn invalid(errors: &[TlsError]) -> ApiError {
    ApiError::BadRequest(
        errors
            .iter()
            .map(|e| ApiErrorItem {
                code: e.code(),
                message: e.to_string(),
            })
            .collect(),
    )
}

/// Refuses one more of a zone's `what` (stored under `prefix`) when it holds the most it may.
async fn ensure_room(state: &ApiState, prefix: &str, what: &str) -> Result<(), ApiError> {
    if state.store.list(prefix).await?.entries.len() >= MAX_PER_ZONE {
        return Err(ApiError::bad(
            1212,
            format!("a zone holds at most {MAX_PER_ZONE} {what}"),
        ));
    }
    Ok(())
}

/// A string field of `body` that must be one of `allowed` (or absent: `default`).
fn choice(body: &Value, field: &str, allowed: &[&str], default: &str) -> Result<String, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad(
            1003,
            format!("{field} must be one of: {}", allowed.join(", ")),
        )),
    }
}

fn priority(body: &Value) -> Result<Option<i64>, ApiError> {
    match body.get("priority") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|p| (0..=1_000_000).contains(p))
            .map(Some)
            .ok_or_else(|| ApiError::bad(1003, "priority must be a whole number from 0")),
    }
}

/// Checks `certificate` and `private_key` for `zone` and fills in what the leaf says.
fn checked(
    state: &ApiState,
    zone: &Zone,
    certificate: &str,
    private_key: &str,
    cert: &mut CustomCertificate,
) -> Result<(), ApiError> {
    let chain = parapet_tls::parse_chain(certificate, private_key).map_err(|e| invalid(&e))?;
    let problems = parapet_tls::check_for_zone(&chain.leaf, &zone.name, unix_now());
    if !problems.is_empty() {
        return Err(invalid(&problems));
    }
    // A name of a zone nested inside this one belongs to that zone, not to this one.
    let snapshot = state.published.load();
    let owned = chain.leaf.hosts.iter().any(|h| {
        snapshot
            .zone_for(h.strip_prefix("*.").unwrap_or(h))
            .is_none_or(|z| z.zone.id == zone.id)
    });
    if !owned {
        return Err(invalid(&[TlsError::Certificate(format!(
            "names only hosts of other zones nested in {} ({})",
            zone.name,
            chain.leaf.hosts.join(", ")
        ))]));
    }
    cert.certificate = certificate.to_owned();
    cert.private_key = private_key.to_owned();
    cert.hosts = chain.leaf.hosts;
    cert.issuer = chain.leaf.issuer;
    cert.signature = chain.leaf.signature;
    cert.serial_number = chain.leaf.serial_number;
    cert.expires_on = parapet_tls::chain::rfc3339(chain.leaf.not_after);
    Ok(())
}

fn pem_field<'b>(body: &'b Value, field: &str) -> Result<Option<&'b str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(1003, format!("{field} must be a PEM string"))),
    }
}

/// The `certificate` and `private_key` an upload must have.
fn required_pair(body: &Value) -> Result<(&str, &str), ApiError> {
    match (
        pem_field(body, "certificate")?,
        pem_field(body, "private_key")?,
    ) {
        (Some(certificate), Some(private_key)) => Ok((certificate, private_key)),
        _ => Err(ApiError::bad(
            1003,
            "certificate and private_key are required (PEM)",
        )),
    }
}

pub async fn list_certs(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let params = Params::parse(query.as_deref());
    let (page, per_page) = params.paging(20, 50)?;
    let mut certs: Vec<CustomCertificate> = list(&state, &custom_cert_prefix(&zone.id)).await?;
    certs.sort_by(|a, b| (a.priority, &a.uploaded_on).cmp(&(b.priority, &b.uploaded_on)));
    let now = SystemTime::now();
    let items = certs.iter().map(|c| c.public_json(now)).collect();
    Ok(page_response(items, page, per_page))
}

pub async fn get_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, cert_id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (cert, _) = load::<CustomCertificate>(&state, &custom_cert_key(&zone.id, &cert_id))
        .await?
        .ok_or_else(not_found)?;
    Ok(ok(cert.public_json(SystemTime::now())))
}

/// `POST`: `{"certificate": PEM, "private_key": PEM, "bundle_method"?, "type"?, "priority"?}`.
pub async fn create_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let (certificate, private_key) = required_pair(&body)?;
    let now = now_timestamp();
    let mut cert = CustomCertificate {
        id: parapet_model::ids::new_id(),
        zone_id: zone.id.clone(),
        certificate: String::new(),
        private_key: String::new(),
        bundle_method: choice(&body, "bundle_method", BUNDLE_METHODS, "ubiquitous")?,
        kind: choice(&body, "type", CERTIFICATE_TYPES, "sni_custom")?,
        hosts: Vec::new(),
        issuer: String::new(),
        signature: String::new(),
        serial_number: String::new(),
        expires_on: String::new(),
        uploaded_on: now.clone(),
        modified_on: now,
        priority: priority(&body)?.unwrap_or(0),
    };
    checked(&state, &zone, certificate, private_key, &mut cert)?;
    ensure_room(&state, &custom_cert_prefix(&zone.id), "custom certificates").await?;
    create_in_zone(
        &state,
        &zone.id,
        &custom_cert_key(&zone.id, &cert.id),
        &cert,
    )
    .await?;
    Ok(ok(cert.public_json(SystemTime::now())))
}

/// `PATCH`: a new `certificate` (with a new `private_key`, or the stored one), and/or
/// `bundle_method`, `priority`.
pub async fn patch_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, cert_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let key = custom_cert_key(&zone.id, &cert_id);
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(&state, &zone.id).await?;
        let (mut cert, rev) = load::<CustomCertificate>(&state, &key)
            .await?
            .ok_or_else(not_found)?;
        let new_key = pem_field(&body, "private_key")?;
        match (pem_field(&body, "certificate")?, new_key) {
            (Some(certificate), key) => {
                let key = key.map_or_else(|| cert.private_key.clone(), str::to_owned);
                checked(&state, &zone, certificate, &key, &mut cert)?;
            }
            (None, Some(_)) => {
                return Err(ApiError::bad(
                    1003,
                    "a new private_key needs its certificate",
                ));
            }
            (None, None) => {}
        }
        if body.get("bundle_method").is_some() {
            cert.bundle_method = choice(&body, "bundle_method", BUNDLE_METHODS, "ubiquitous")?;
        }
        if let Some(p) = priority(&body)? {
            cert.priority = p;
        }
        cert.modified_on = now_timestamp();
        let written = put_in_zone(&state, (&zone.id, zone_rev), &key, rev, &cert).await;
        if !conflicted(&written) {
            return written.map(|()| ok(cert.public_json(SystemTime::now())));
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

pub async fn delete_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, cert_id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    delete_entry(&state, &custom_cert_key(&zone.id, &cert_id)).await?;
    Ok(ok(json!({"id": cert_id})))
}

/// Deletes the certificate stored at `key` (404 when there is none).
async fn delete_entry(state: &ApiState, key: &str) -> Result<(), ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let Some(entry) = state.store.get(key).await? else {
            return Err(not_found());
        };
        match state
            .store
            .commit(Txn::new().expect(key, entry.mod_revision).delete(key))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// `PUT /custom_certificates/prioritize`: `{"certificates": [{"id", "priority"}, ...]}`, all or
/// nothing.
pub async fn prioritize(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let Some(items) = body.get("certificates").and_then(Value::as_array) else {
        return Err(ApiError::bad(
            1003,
            "certificates is required: [{\"id\": ..., \"priority\": ...}]",
        ));
    };
    let mut wanted = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match (item.get("id").and_then(Value::as_str), priority(item)?) {
            (Some(id), Some(p)) => wanted.push((id.to_owned(), p)),
            _ => {
                return Err(ApiError::bad(
                    1003,
                    format!("certificates[{i}] needs an id and a priority"),
                ));
            }
        }
    }
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(&state, &zone.id).await?;
        let mut txn = Txn::new().expect(parapet_snapshot::zone_key(&zone.id), zone_rev);
        let mut updated = Vec::with_capacity(wanted.len());
        let now = now_timestamp();
        for (id, p) in &wanted {
            let key = custom_cert_key(&zone.id, id);
            let (mut cert, rev) = load::<CustomCertificate>(&state, &key)
                .await?
                .ok_or_else(not_found)?;
            cert.priority = *p;
            cert.modified_on = now.clone();
            let bytes = encode(&cert)?;
            txn = txn.expect(&key, rev).put(&key, bytes);
            updated.push(cert);
        }
        match state.store.commit(txn).await {
            Ok(_) => {
                let now = SystemTime::now();
                return Ok(ok(Value::Array(
                    updated.iter().map(|c| c.public_json(now)).collect(),
                )));
            }
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// `GET /zones/{id}/ssl/certificate_packs`: one pack per proxied name with the state of its
/// automatic certificate (Cloudflare's Universal SSL packs).
pub async fn certificate_packs(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    use sha2::Digest;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let snapshot = state.published.load();
    let now = unix_now();
    let mut packs: Vec<_> = parapet_tls::acme::zone_states(&snapshot, &zone.id)
        .into_iter()
        .collect();
    packs.sort_by(|a, b| a.0.cmp(&b.0));
    let items = packs
        .into_iter()
        .map(|(host, cert)| {
            let id = hex::encode(&sha2::Sha256::digest(host.as_bytes())[..16]);
            let mut pack = json!({
                "id": id,
                "type": "universal",
                "hosts": [host],
                "validation_method": "txt",
                "status": "initializing",
                "certificates": [],
            });
            if let Some(cert) = cert {
                pack["status"] = json!(match (cert.issued(), cert.not_after <= now) {
                    (true, false) => "active",
                    (true, true) => "expired",
                    (false, _) => "pending_validation",
                });
                if cert.issued() {
                    pack["certificate_authority"] = json!(cert.issuer);
                    pack["certificates"] = json!([{
                        "id": id,
                        "hosts": [cert.hostname],
                        "issuer": cert.issuer,
                        "status": if cert.not_after <= now { "expired" } else { "active" },
                        "expires_on": parapet_tls::chain::rfc3339(cert.not_after),
                        "uploaded_on": cert.issued_on,
                    }]);
                }
                if let Some(error) = &cert.error {
                    pack["validation_errors"] = json!([{"message": error}]);
                    pack["next_attempt_on"] = json!(parapet_tls::chain::rfc3339(cert.next_attempt));
                }
            }
            pack
        })
        .collect();
    Ok(ok(Value::Array(items)))
}

/// The zone `name` (a host name or wildcard) belongs to, if the token may edit it.
async fn zone_of_host(state: &ApiState, auth: &Auth, name: &str) -> Result<Zone, ApiError> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let zone_id = state
        .published
        .load()
        .zone_for(bare)
        .map(|z| z.zone.id.clone())
        .ok_or_else(|| {
            ApiError::bad(
                1010,
                format!(
                    "{} is not in any zone of this account",
                    parapet_model::name::printable(name)
                ),
            )
        })?;
    authorized_zone(state, auth, &zone_id, Access::EditZone).await
}

/// `POST /certificates`: `{"csr": PEM, "hostnames": [...], "request_type"?, "requested_validity"?}`
/// signed by Parapet's Origin CA, which `strict` zones trust.
pub async fn create_origin_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    body: Bytes,
) -> ApiResult {
    use parapet_model::certificate::OriginCertificate;
    let Some(ca) = state.origin_ca.clone() else {
        return Err(ApiError::bad(1010, "this node has no Origin CA"));
    };
    let body = parse_body(&body)?;
    let csr_pem = pem_field(&body, "csr")?
        .ok_or_else(|| ApiError::bad(1010, "csr is required (PEM certificate request)"))?;
    let hostnames: Vec<String> = match body.get("hostnames").and_then(Value::as_array) {
        Some(list) if !list.is_empty() && list.len() <= 100 => list
            .iter()
            .map(|h| {
                h.as_str()
                    .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
            })
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad(1010, "hostnames must be strings"))?,
        _ => {
            return Err(ApiError::bad(
                1010,
                "hostnames is required: 1 to 100 host names or wildcards",
            ));
        }
    };
    let validity = match body.get("requested_validity") {
        None | Some(Value::Null) => 5475,
        Some(v) => v
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .filter(|d| parapet_tls::origin_ca::VALIDITIES.contains(d))
            .ok_or_else(|| {
                ApiError::bad(
                    1010,
                    format!(
                        "requested_validity must be one of {:?} (days)",
                        parapet_tls::origin_ca::VALIDITIES
                    ),
                )
            })?,
    };
    let key = parapet_tls::origin_ca::parse_csr(csr_pem).map_err(|e| invalid(&[e]))?;
    match body.get("request_type").and_then(Value::as_str) {
        None => {}
        Some(t) if t == key.request_type => {}
        Some(t) => {
            return Err(ApiError::bad(
                1010,
                format!(
                    "request_type {} does not match the CSR's key ({})",
                    parapet_model::name::printable(t),
                    key.request_type
                ),
            ));
        }
    }
    let mut zone_ids = Vec::new();
    for host in &hostnames {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if parapet_model::name::normalize(bare, parapet_model::name::NameKind::Target, "hostnames")
            .is_err()
        {
            return Err(ApiError::bad(
                1010,
                format!(
                    "{} is not a host name",
                    parapet_model::name::printable(host)
                ),
            ));
        }
        let zone = zone_of_host(&state, &auth, host).await?;
        if !zone_ids.contains(&zone.id) {
            zone_ids.push(zone.id);
        }
    }
    let certificate = ca
        .sign(&hostnames, validity, &key)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let leaf = parapet_tls::chain::describe_pem(&certificate)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let cert = OriginCertificate {
        id: parapet_model::ids::new_id(),
        certificate,
        hostnames,
        zone_ids,
        expires_on: parapet_tls::chain::rfc3339(leaf.not_after),
        request_type: key.request_type.to_owned(),
        requested_validity: validity,
        csr: csr_pem.to_owned(),
        revoked_at: None,
    };
    let key = format!("{}{}", parapet_snapshot::keys::ORIGIN_CERTS, cert.id);
    put(&state, &key, 0, &cert).await?;
    Ok(ok(cert.api_json()))
}

/// `GET /certificates?zone_id=...`.
pub async fn list_origin_certs(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    RawQuery(query): RawQuery,
) -> ApiResult {
    use parapet_model::certificate::OriginCertificate;
    let params = Params::parse(query.as_deref());
    let zone_id = params
        .get("zone_id")
        .ok_or_else(|| ApiError::bad(1010, "zone_id is required"))?;
    let zone = authorized_zone(&state, &auth, zone_id, Access::Read).await?;
    let (page, per_page) = params.paging(20, 50)?;
    let certs: Vec<OriginCertificate> = list(&state, parapet_snapshot::keys::ORIGIN_CERTS).await?;
    let items = certs
        .iter()
        .filter(|c| c.zone_ids.contains(&zone.id))
        .map(OriginCertificate::api_json)
        .collect();
    Ok(page_response(items, page, per_page))
}

/// The Origin CA certificate `cert_id` and its revision, if `auth` may read one of its zones,
/// or (to change it: `Access::EditZone`) edit every one of them, as issuing it required.
async fn origin_cert(
    state: &ApiState,
    auth: &Auth,
    cert_id: &str,
    access: Access,
) -> Result<(parapet_model::certificate::OriginCertificate, u64), ApiError> {
    let key = format!("{}{cert_id}", parapet_snapshot::keys::ORIGIN_CERTS);
    let (cert, revision) = load::<parapet_model::certificate::OriginCertificate>(state, &key)
        .await?
        .ok_or_else(not_found)?;
    // Zones deleted since do not count: an administrator (rights on every zone) may still
    // read and revoke a certificate all of whose zones are gone.
    let (mut allowed, mut existing) = (0, 0);
    for zone_id in &cert.zone_ids {
        if load_zone(state, zone_id).await.is_err() {
            continue;
        }
        existing += 1;
        if authorized_zone(state, auth, zone_id, access).await.is_ok() {
            allowed += 1;
            if access == Access::Read {
                break;
            }
        }
    }
    if existing == 0 {
        return match auth.require(parapet_model::Need::Admin) {
            Ok(()) => Ok((cert, revision)),
            Err(_) => Err(not_found()),
        };
    }
    match allowed {
        0 => Err(not_found()),
        _ if access == Access::Read || allowed == existing => Ok((cert, revision)),
        // Seen through one of its zones, not changeable through it alone.
        _ => Err(ApiError::Forbidden),
    }
}

/// `GET /certificates/{id}`.
pub async fn get_origin_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(cert_id): Path<String>,
) -> ApiResult {
    let (cert, _) = origin_cert(&state, &auth, &cert_id, Access::Read).await?;
    Ok(ok(cert.api_json()))
}

/// `DELETE /certificates/{id}`: revokes the certificate (kept, with `revoked_at`); from the next
/// request on, `strict` zones refuse an origin that presents it (526). Revoking again answers
/// with the first revocation's time.
pub async fn revoke_origin_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(cert_id): Path<String>,
) -> ApiResult {
    for _ in 0..WRITE_ATTEMPTS {
        let (cert, revision) = origin_cert(&state, &auth, &cert_id, Access::EditZone).await?;
        if let Some(at) = &cert.revoked_at {
            return Ok(ok(json!({"id": cert.id, "revoked_at": at})));
        }
        let id = cert.id.clone();
        let (txn, revoked_at) = revoke(Txn::new(), cert, revision)?;
        match state.store.commit(txn).await {
            Ok(_) => return Ok(ok(json!({"id": id, "revoked_at": revoked_at}))),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// `txn` with the Origin CA certificate `cert` (stored at `revision`) revoked: marked so, and
/// its leaf's digest put where strict zones look for revoked certificates; and when.
pub(crate) fn revoke(
    txn: Txn,
    mut cert: parapet_model::certificate::OriginCertificate,
    revision: u64,
) -> Result<(Txn, String), ApiError> {
    use parapet_model::certificate::RevokedOriginCertificate;
    use sha2::Digest as _;
    let leaf = parapet_tls::chain::bundle_der(&cert.certificate)
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("stored certificate is not PEM".into()))?;
    let revoked = RevokedOriginCertificate {
        id: cert.id.clone(),
        sha256: hex::encode(sha2::Sha256::digest(&leaf)),
        revoked_at: now_timestamp(),
        expires_on: cert.expires_on.clone(),
    };
    cert.revoked_at = Some(revoked.revoked_at.clone());
    let cert_key = format!("{}{}", parapet_snapshot::keys::ORIGIN_CERTS, cert.id);
    let revoked_key = format!(
        "{}{}",
        parapet_snapshot::keys::ORIGIN_REVOKED,
        revoked.sha256
    );
    let txn = txn
        .expect(&cert_key, revision)
        .put(&cert_key, encode(&cert)?)
        .put(&revoked_key, encode(&revoked)?);
    Ok((txn, revoked.revoked_at))
}

fn pull_prefix(zone_id: &str) -> String {
    parapet_snapshot::origin_pull_cert_key(zone_id, "")
}

/// `GET /zones/{id}/origin_tls_client_auth`: the zone's client certificates for Authenticated
/// Origin Pulls (the newest is presented).
pub async fn list_pull_certs(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    use parapet_model::certificate::OriginPullCertificate;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let mut certs: Vec<OriginPullCertificate> = list(&state, &pull_prefix(&zone.id)).await?;
    certs.sort_by(|a, b| b.uploaded_on.cmp(&a.uploaded_on));
    let now = SystemTime::now();
    Ok(ok(Value::Array(
        certs.iter().map(|c| c.public_json(now)).collect(),
    )))
}

/// `POST /zones/{id}/origin_tls_client_auth`: `{"certificate": PEM, "private_key": PEM}`.
pub async fn create_pull_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    use parapet_model::certificate::OriginPullCertificate;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let (certificate, private_key) = required_pair(&body)?;
    let chain = parapet_tls::parse_chain(certificate, private_key).map_err(|e| invalid(&e))?;
    let problems = parapet_tls::chain::check_dates(&chain.leaf, unix_now());
    if !problems.is_empty() {
        return Err(invalid(&problems));
    }
    ensure_room(&state, &pull_prefix(&zone.id), "origin pull certificates").await?;
    let cert = OriginPullCertificate {
        id: parapet_model::ids::new_id(),
        zone_id: zone.id.clone(),
        certificate: certificate.to_owned(),
        private_key: private_key.to_owned(),
        issuer: chain.leaf.issuer,
        signature: chain.leaf.signature,
        serial_number: chain.leaf.serial_number,
        expires_on: parapet_tls::chain::rfc3339(chain.leaf.not_after),
        uploaded_on: now_timestamp(),
    };
    create_in_zone(
        &state,
        &zone.id,
        &parapet_snapshot::origin_pull_cert_key(&zone.id, &cert.id),
        &cert,
    )
    .await?;
    Ok(ok(cert.public_json(SystemTime::now())))
}

pub async fn get_pull_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, cert_id)): Path<(String, String)>,
) -> ApiResult {
    use parapet_model::certificate::OriginPullCertificate;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let key = parapet_snapshot::origin_pull_cert_key(&zone.id, &cert_id);
    let (cert, _) = load::<OriginPullCertificate>(&state, &key)
        .await?
        .ok_or_else(not_found)?;
    Ok(ok(cert.public_json(SystemTime::now())))
}

pub async fn delete_pull_cert(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, cert_id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    delete_entry(
        &state,
        &parapet_snapshot::origin_pull_cert_key(&zone.id, &cert_id),
    )
    .await?;
    Ok(ok(json!({"id": cert_id})))
}

/// `GET /zones/{id}/acm/custom_trust_store`: the CA certificates `strict` accepts for the
/// zone's origins besides the node's roots.
pub async fn list_trusted(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    use parapet_model::certificate::TrustedCa;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let mut cas: Vec<TrustedCa> =
        list(&state, &parapet_snapshot::trusted_ca_key(&zone.id, "")).await?;
    cas.sort_by(|a, b| a.uploaded_on.cmp(&b.uploaded_on));
    let now = SystemTime::now();
    Ok(ok(Value::Array(
        cas.iter().map(|c| c.public_json(now)).collect(),
    )))
}

/// `POST /zones/{id}/acm/custom_trust_store`: `{"certificate": PEM of one CA certificate}`.
pub async fn add_trusted(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    use parapet_model::certificate::TrustedCa;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let certificate = pem_field(&body, "certificate")?
        .ok_or_else(|| ApiError::bad(1003, "certificate is required (PEM)"))?;
    let ca = parapet_tls::chain::parse_ca(certificate).map_err(|e| invalid(&[e]))?;
    if ca.not_after <= unix_now() {
        return Err(invalid(&[TlsError::Certificate(format!(
            "expired at {}",
            parapet_tls::chain::rfc3339(ca.not_after)
        ))]));
    }
    ensure_room(
        &state,
        &parapet_snapshot::trusted_ca_key(&zone.id, ""),
        "trusted CA certificates",
    )
    .await?;
    let trusted = TrustedCa {
        id: parapet_model::ids::new_id(),
        zone_id: zone.id.clone(),
        certificate: certificate.to_owned(),
        issuer: ca.issuer,
        signature: ca.signature,
        expires_on: parapet_tls::chain::rfc3339(ca.not_after),
        uploaded_on: now_timestamp(),
    };
    create_in_zone(
        &state,
        &zone.id,
        &parapet_snapshot::trusted_ca_key(&zone.id, &trusted.id),
        &trusted,
    )
    .await?;
    Ok(ok(trusted.public_json(SystemTime::now())))
}

pub async fn get_trusted(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    use parapet_model::certificate::TrustedCa;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (ca, _) = load::<TrustedCa>(&state, &parapet_snapshot::trusted_ca_key(&zone.id, &id))
        .await?
        .ok_or_else(not_found)?;
    Ok(ok(ca.public_json(SystemTime::now())))
}

pub async fn delete_trusted(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    delete_entry(&state, &parapet_snapshot::trusted_ca_key(&zone.id, &id)).await?;
    Ok(ok(json!({"id": id})))
}
