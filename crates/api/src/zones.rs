//! `/zones` and `/accounts`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use parapet_activation::ActivationMode;
use parapet_model::name::{NameKind, normalize};
use parapet_model::{ModelError, Need, Zone, ZoneStatus, ids};
use parapet_snapshot::{record_prefix, zone_key, zone_name_key};
use parapet_store::{StoreError, Txn};
use serde_json::{Value, json};

use crate::envelope::{ApiResult, now_timestamp, ok, parse_body};
use crate::listing::{Params, TextFilter, page_response, short};
use crate::{ApiError, ApiState, Auth};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Cloudflare's zone `development_mode`: seconds until development mode turns off (positive),
/// since it turned itself off (negative), or 0 when it is not on. Read from the served
/// snapshot: a setting changed moments ago may not show yet.
fn development_mode_secs(zone: &Zone, state: &ApiState) -> i64 {
    let until = state
        .published
        .load()
        .zone_edge
        .get(&zone.id)
        .and_then(|e| e.settings.development_mode_until);
    until.map_or(0, |until| {
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        until.saturating_sub(now)
    })
}

pub fn zone_json(zone: &Zone, state: &ApiState) -> Value {
    json!({
        "id": zone.id,
        "name": zone.name,
        "status": zone.status.as_str(),
        "paused": zone.paused,
        "type": "full",
        "development_mode": development_mode_secs(zone, state),
        "name_servers": zone.name_servers,
        "original_name_servers": zone.original_name_servers,
        "original_registrar": null,
        "original_dnshost": null,
        "vanity_name_servers": [],
        "created_on": zone.created_on,
        "modified_on": zone.modified_on,
        "activated_on": zone.activated_on,
        "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": false},
        "owner": {"id": null, "type": "user", "email": null},
        "account": {"id": state.config.account_id, "name": state.config.account_name},
        "tenant": {"id": null, "name": null},
        "tenant_unit": {"id": null},
        "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
        "plan": {"id": PLAN_ID, "name": "Parapet", "price": 0, "currency": "USD", "frequency": "", "is_subscribed": false, "can_subscribe": false, "legacy_id": "free", "legacy_discount": false, "externally_managed": false},
        "serial": zone.serial,
    })
}

/// Loads a zone by id, or 404.
pub async fn load_zone(state: &ApiState, zone_id: &str) -> Result<(Zone, u64), ApiError> {
    if !ids::is_id(zone_id) {
        return Err(ApiError::zone_not_found());
    }
    crate::stored::load(state, &zone_key(zone_id))
        .await?
        .ok_or_else(ApiError::zone_not_found)
}

/// What a zone-scoped request does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    EditZone,
    EditDns,
    Purge,
    EditSettings,
}

/// The zone `zone_id`, if the request's token allows `access` to it (a missing zone is a 404
/// before any 403).
pub async fn authorized_zone(
    state: &ApiState,
    auth: &Auth,
    zone_id: &str,
    access: Access,
) -> Result<Zone, ApiError> {
    let (zone, _) = load_zone(state, zone_id).await?;
    auth.require(match access {
        Access::Read => Need::ZoneRead(&zone.id),
        Access::EditZone => Need::ZoneEdit(&zone.id),
        Access::EditDns => Need::DnsEdit(&zone.id),
        Access::Purge => Need::CachePurge(&zone.id),
        Access::EditSettings => Need::SettingsEdit(&zone.id),
    })?;
    Ok(zone)
}

async fn all_zones(state: &ApiState) -> Result<Vec<Zone>, ApiError> {
    crate::stored::list(state, parapet_snapshot::keys::ZONES).await
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    let (page, per_page) = params.paging(20, 1000)?;
    let any = params.match_any()?;
    let descending = params.descending()?;
    // Cloudflare's zone name filter takes an operator prefix: `equal:` (the default),
    // `not_equal:`, `contains:`, `starts_with:`, `ends_with:`, the last three also
    // `..._case_sensitive:` (zone names are stored in lower case: a needle in upper case
    // matches none of them case-sensitively).
    let name_filter = match params.get("name") {
        None => None,
        Some(v) => Some(zone_name_filter(v).ok_or_else(|| {
            ApiError::bad(
                1004,
                format!("name has an unknown operator: '{}'", short(v)),
            )
        })?),
    };
    // (`initializing`, a status of Cloudflare's no zone here ever has, matches none.)
    let status = match params.get("status") {
        None => None,
        Some("initializing") => Some(None),
        Some(s) => Some(Some(ZoneStatus::parse(s).ok_or_else(|| {
            ApiError::bad(
                1004,
                format!(
                    "status must be initializing, pending, active or moved, not '{}'",
                    short(s)
                ),
            )
        })?)),
    };
    let account = params.get("account.id").map(str::to_owned);
    let account_name = params.get("account.name").map(str::to_owned);
    let order = params.get("order").unwrap_or("name");
    // (Every zone here has the one account and plan: those orders are the name's.)
    if !matches!(
        order,
        "name" | "status" | "account.id" | "account.name" | "plan.id"
    ) {
        return Err(ApiError::bad(
            1004,
            format!(
                "order must be name, status, account.id, account.name or plan.id, not '{}'",
                short(order)
            ),
        ));
    }
    let mut zones: Vec<Zone> = all_zones(&state)
        .await?
        .into_iter()
        .filter(|z| auth.0.allows(Need::ZoneRead(&z.id)))
        .filter(|z| {
            let tests = [
                name_filter
                    .as_ref()
                    .map(|(f, negated)| f.matches(&z.name) != *negated),
                status.map(|s| s == Some(z.status)),
                account.as_ref().map(|a| *a == state.config.account_id),
                account_name
                    .as_ref()
                    .map(|a| *a == state.config.account_name),
            ];
            let mut given = tests.iter().flatten().peekable();
            if given.peek().is_none() {
                return true;
            }
            if any {
                given.any(|t| *t)
            } else {
                given.all(|t| *t)
            }
        })
        .collect();
    zones.sort_by(|a, b| match order {
        "status" => (a.status.as_str(), &a.name).cmp(&(b.status.as_str(), &b.name)),
        _ => a.name.cmp(&b.name),
    });
    if descending {
        zones.reverse();
    }
    let items = zones.iter().map(|z| zone_json(z, &state)).collect();
    Ok(page_response(items, page, per_page))
}

/// A zone list's `name` filter, and whether it is negated (`not_equal:`); `None` for an
/// operator Cloudflare does not have.
fn zone_name_filter(value: &str) -> Option<(TextFilter, bool)> {
    let Some((op, needle)) = value
        .split_once(':')
        .filter(|(op, _)| op.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !op.is_empty())
    else {
        return Some((exact_name(value), false));
    };
    // Names are in lower case: a needle compared as given is compared case-sensitively.
    let sensitive = |needle: &str, make: fn(String) -> TextFilter| make(needle.to_owned());
    let insensitive = |needle: &str| needle.to_ascii_lowercase();
    Some(match op {
        "equal" => (exact_name(needle), false),
        "not_equal" => (exact_name(needle), true),
        "contains" => (TextFilter::Contains(insensitive(needle)), false),
        "starts_with" => (TextFilter::StartsWith(insensitive(needle)), false),
        "ends_with" => (TextFilter::EndsWith(insensitive(needle)), false),
        "contains_case_sensitive" => (sensitive(needle, TextFilter::Contains), false),
        "starts_with_case_sensitive" => (sensitive(needle, TextFilter::StartsWith), false),
        "ends_with_case_sensitive" => (sensitive(needle, TextFilter::EndsWith), false),
        _ => return None,
    })
}

fn exact_name(name: &str) -> TextFilter {
    TextFilter::Exact(name.to_ascii_lowercase().trim_end_matches('.').to_owned())
}

pub async fn create(State(state): State<Arc<ApiState>>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Need::Admin)?;
    let body = parse_body(&body)?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad(1004, "body: must be a JSON object"));
    };
    let mut errors = Vec::new();
    let name = match obj.get("name") {
        Some(Value::String(n)) => match normalize(n, NameKind::Zone, "name") {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Some(_) => {
            errors.push(parapet_model::FieldError::new("name", "must be a string"));
            None
        }
        None => {
            errors.push(parapet_model::FieldError::new("name", "is required"));
            None
        }
    };
    if let Some(account) = obj.get("account").filter(|a| !a.is_null()) {
        match account.get("id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if *id == state.config.account_id => {}
            Some(_) => errors.push(parapet_model::FieldError::new(
                "account.id",
                format!(
                    "is not this installation's account ({})",
                    state.config.account_id
                ),
            )),
        }
    }
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "full" => {}
        Some(_) => errors.push(parapet_model::FieldError::new(
            "type",
            "only 'full' zones are supported",
        )),
    }
    let (Some(name), true) = (name, errors.is_empty()) else {
        return Err(ApiError::fields(1099, &ModelError::Invalid(errors)));
    };
    let mut zone = Zone::new(
        ids::new_id(),
        name.clone(),
        state.config.nameservers.clone(),
        state.config.account_id.clone(),
        now_timestamp(),
        unix_now(),
    );
    // A zone made again under a deleted one's name starts above that one's last serial
    // (which may run ahead of the clock): secondaries ignore a serial that goes back.
    let last_serial_key = parapet_snapshot::keys::last_serial_key(&name);
    let last = state.store.get(&last_serial_key).await?;
    if let Some(last) = last
        .as_ref()
        .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u32>().ok())
    {
        zone.serial = zone.serial.max(last.wrapping_add(1)).max(1);
    }
    let value = serde_json::to_vec(&zone).map_err(|e| ApiError::Internal(e.to_string()))?;
    let txn = Txn::new()
        .expect(zone_name_key(&name), 0)
        .put(zone_name_key(&name), zone.id.as_bytes().to_vec())
        .put(zone_key(&zone.id), value)
        .delete(last_serial_key);
    match state.store.commit(txn).await {
        Ok(_) => {}
        Err(StoreError::Conflict) => {
            return Err(ApiError::bad(1061, format!("{name} already exists")));
        }
        Err(e) => return Err(e.into()),
    }
    let zone = check_now(&state, &zone).await;
    Ok(ok(zone_json(&zone, &state)))
}

/// Runs an activation check now; on failure the zone is returned as it was.
async fn check_now(state: &ApiState, zone: &Zone) -> Zone {
    match state.activator.check_zone(&zone.id).await {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(zone = %zone.name, "activation check failed: {e}");
            zone.clone()
        }
    }
}

pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    Ok(ok(zone_json(&zone, &state)))
}

/// The id of the plan every zone has.
const PLAN_ID: &str = "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

pub async fn patch(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad(1004, "body: must be a JSON object"));
    };
    let paused = match obj.get("paused") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::bad(1004, "paused: must be true or false")),
    };
    // The other fields Cloudflare takes are accepted as they are, and refused as anything
    // else (never taken and left undone).
    let mut refused = Vec::new();
    match obj.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "full" => {}
        Some(_) => refused.push("type: only 'full' zones are supported"),
    }
    match obj.get("vanity_name_servers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(names)) if names.is_empty() => {}
        Some(_) => refused.push(
            "vanity_name_servers: not supported: a zone's nameservers are the node's (--nameserver)",
        ),
    }
    match obj.get("plan") {
        None | Some(Value::Null) => {}
        Some(plan) if plan.get("id").and_then(Value::as_str) == Some(PLAN_ID) => {}
        Some(_) => refused.push("plan: every zone has the one plan; its id is the zone's plan.id"),
    }
    if !refused.is_empty() {
        return Err(ApiError::BadRequest(
            refused
                .into_iter()
                .map(|message| crate::envelope::ApiErrorItem {
                    code: 1004,
                    message: message.to_owned(),
                })
                .collect(),
        ));
    }
    for _ in 0..crate::stored::WRITE_ATTEMPTS {
        let (mut zone, rev) = load_zone(&state, &zone_id).await?;
        let Some(p) = paused.filter(|p| *p != zone.paused) else {
            return Ok(ok(zone_json(&zone, &state)));
        };
        zone.paused = p;
        zone.serial = zone.next_serial(unix_now());
        zone.modified_on = now_timestamp();
        let value = serde_json::to_vec(&zone).map_err(|e| ApiError::Internal(e.to_string()))?;
        match state
            .store
            .commit(
                Txn::new()
                    .expect(zone_key(&zone_id), rev)
                    .put(zone_key(&zone_id), value),
            )
            .await
        {
            Ok(_) => return Ok(ok(zone_json(&zone, &state))),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let (_, _) = load_zone(&state, &zone_id).await?;
    auth.require(Need::Admin)?;
    for _ in 0..crate::stored::WRITE_ATTEMPTS {
        let (zone, rev) = load_zone(&state, &zone_id).await?;
        let records = state.store.list(&record_prefix(&zone_id)).await?;
        // Origin CA certificates for this zone alone, or whose other zones are gone too, are
        // revoked with it: one left valid would be trusted by a zone made again under the
        // name. One that still covers a live zone stays (its origins keep working); an
        // administrator can revoke it.
        let mut revoked_with_zone = Vec::new();
        for e in state
            .store
            .list(parapet_snapshot::keys::ORIGIN_CERTS)
            .await?
            .entries
        {
            let cert: parapet_model::certificate::OriginCertificate =
                match serde_json::from_slice(&e.value) {
                    Ok(cert) => cert,
                    Err(err) => {
                        tracing::warn!(key = %e.key, "unreadable Origin CA certificate: {err}");
                        continue;
                    }
                };
            if cert.revoked_at.is_some() || !cert.zone_ids.contains(&zone_id) {
                continue;
            }
            let mut others_live = false;
            for other in cert.zone_ids.iter().filter(|z| **z != zone_id) {
                others_live |= load_zone(&state, other).await.is_ok();
            }
            if !others_live {
                revoked_with_zone.push((cert, e.mod_revision));
            }
        }
        let certs = state
            .store
            .list(&parapet_snapshot::custom_cert_prefix(&zone_id))
            .await?;
        let trust = state
            .store
            .list(&parapet_snapshot::trusted_ca_key(&zone_id, ""))
            .await?;
        let pull_certs = state
            .store
            .list(&parapet_snapshot::origin_pull_cert_key(&zone_id, ""))
            .await?;
        let challenges = state
            .store
            .list(&format!(
                "{}{zone_id}/",
                parapet_snapshot::keys::ACME_CHALLENGES
            ))
            .await?;
        let mut txn = Txn::new()
            .expect(zone_key(&zone_id), rev)
            .delete(zone_key(&zone_id))
            .delete(zone_name_key(&zone.name))
            .put(
                parapet_snapshot::keys::last_serial_key(&zone.name),
                zone.serial.to_string().into_bytes(),
            )
            .delete(parapet_snapshot::outgoing_key(&zone_id))
            .delete(parapet_snapshot::settings_key(&zone_id))
            .delete(parapet_snapshot::ruleset_key(
                &zone_id,
                parapet_model::rules::ORIGIN_PHASE,
            ))
            .delete(parapet_snapshot::ruleset_key(
                &zone_id,
                parapet_model::rules::CACHE_PHASE,
            ));
        for e in records
            .entries
            .into_iter()
            .chain(certs.entries)
            .chain(challenges.entries)
            .chain(pull_certs.entries)
            .chain(trust.entries)
        {
            txn = txn.delete(e.key);
        }
        for (cert, revision) in revoked_with_zone {
            let id = cert.id.clone();
            txn = match crate::certificates::revoke(txn.clone(), cert, revision) {
                Ok((txn, _)) => txn,
                Err(e) => {
                    tracing::warn!(%id, "cannot revoke an Origin CA certificate: {e}");
                    txn
                }
            };
        }
        match state.store.commit(txn).await {
            Ok(_) => return Ok(ok(json!({"id": zone_id}))),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

pub async fn activation_check(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let checked = state
        .activator
        .check_zone(&zone.id)
        .await
        .map_err(|e| match e {
            parapet_activation::ActivationError::ZoneNotFound => ApiError::zone_not_found(),
            other => ApiError::Internal(other.to_string()),
        })?;
    let mode = match state.activator.mode() {
        ActivationMode::Auto => "auto",
        ActivationMode::Nameservers { .. } => "nameservers",
    };
    Ok(ok(
        json!({"id": checked.id, "status": checked.status.as_str(), "activation": mode}),
    ))
}

fn account_json(state: &ApiState) -> Value {
    json!({"id": state.config.account_id, "name": state.config.account_name, "type": "standard", "settings": {}, "created_on": null})
}

pub async fn list_accounts(
    State(state): State<Arc<ApiState>>,
    _auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let (page, per_page) = Params::parse(raw.as_deref()).paging(20, 50)?;
    Ok(page_response(vec![account_json(&state)], page, per_page))
}

pub async fn get_account(
    State(state): State<Arc<ApiState>>,
    _auth: Auth,
    Path(id): Path<String>,
) -> ApiResult {
    if id != state.config.account_id {
        return Err(ApiError::NotFound {
            code: 7003,
            message: "Could not route to this account: the identifier is invalid.".into(),
        });
    }
    Ok(ok(account_json(&state)))
}

/// `/parapet/status`: what this node serves.
pub async fn status(State(state): State<Arc<ApiState>>, auth: Auth) -> ApiResult {
    auth.require(Need::Admin)?;
    let snapshot = state.published.load();
    let store_revision = *state.store.revision_watch().borrow();
    let rejected: Vec<Value> = state
        .published
        .rejected()
        .iter()
        .map(|e| json!({"key": e.key, "message": e.message}))
        .collect();
    Ok(ok(json!({
        "store_revision": store_revision,
        "snapshot_revision": snapshot.revision,
        "zones": snapshot.zones.len(),
        "records": snapshot.record_count(),
        "proxied_hosts": snapshot.proxied_hosts.len(),
        "rejected": rejected,
    })))
}
