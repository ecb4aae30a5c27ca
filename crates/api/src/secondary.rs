//! Outgoing zone transfers, in Cloudflare's Secondary DNS shapes: account TSIG keys and peers
//! (`/accounts/{id}/secondary_dns/tsigs|peers`) and each zone's transfer ACL
//! (`/zones/{id}/secondary_dns/outgoing`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use parapet_model::transfer::{Outgoing, Peer, TsigKey};
use parapet_model::{Need, ids};
use parapet_snapshot::keys::{PEERS, TSIGS};
use parapet_snapshot::zone_key;
use parapet_snapshot::{outgoing_key, peer_key, tsig_key};
use parapet_store::{Entry, StoreError, Txn};
use serde_json::{Value, json};

use crate::envelope::{ApiResult, ok, parse_body};
use crate::listing::page_response;
use crate::stored::{WRITE_ATTEMPTS, encode, list as all, load, put};
use crate::zones::{Access, authorized_zone, load_zone};
use crate::{ApiError, ApiState, Auth};

/// Account-level secondary DNS settings need an admin token and this installation's account.
fn check_account(state: &ApiState, auth: &Auth, account_id: &str) -> Result<(), ApiError> {
    auth.require(Need::Admin)?;
    if account_id == state.config.account_id {
        Ok(())
    } else {
        Err(ApiError::NotFound {
            code: 7003,
            message: "Could not route to this account: the identifier is invalid.".into(),
        })
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound {
        code: 1000,
        message: format!("{what} not found"),
    }
}

/// A signed request names its key, and the key is found by that name: two keys of one name
/// would fail every transfer of one of their peers (BIND and Knot refuse such a configuration).
async fn name_free(state: &ApiState, key: &TsigKey) -> Result<(), ApiError> {
    let taken = all::<TsigKey>(state, TSIGS)
        .await?
        .iter()
        .any(|other| other.id != key.id && other.name.eq_ignore_ascii_case(&key.name));
    if taken {
        return Err(ApiError::bad(
            1061,
            format!("a TSIG key named {} already exists", key.name),
        ));
    }
    Ok(())
}

pub async fn list_tsigs(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(account): Path<String>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let items = all::<TsigKey>(&state, TSIGS)
        .await?
        .iter()
        .map(TsigKey::to_api_json)
        .collect();
    Ok(page_response(items, 1, 1000))
}

pub async fn create_tsig(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(account): Path<String>,
    body: Bytes,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let key = TsigKey::from_json(ids::new_id(), &parse_body(&body)?)
        .map_err(|e| ApiError::fields(1004, &e))?;
    name_free(&state, &key).await?;
    put(&state, &tsig_key(&key.id), 0, &key).await?;
    Ok(ok(key.to_api_json()))
}

pub async fn get_tsig(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let (key, _) = load::<TsigKey>(&state, &tsig_key(&id))
        .await?
        .ok_or_else(|| not_found("TSIG key"))?;
    Ok(ok(key.to_api_json()))
}

pub async fn update_tsig(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let (_, rev) = load::<TsigKey>(&state, &tsig_key(&id))
        .await?
        .ok_or_else(|| not_found("TSIG key"))?;
    let key = TsigKey::from_json(id.clone(), &parse_body(&body)?)
        .map_err(|e| ApiError::fields(1004, &e))?;
    name_free(&state, &key).await?;
    put(&state, &tsig_key(&id), rev, &key).await?;
    Ok(ok(key.to_api_json()))
}

pub async fn delete_tsig(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let key = tsig_key(&id);
    for _ in 0..WRITE_ATTEMPTS {
        let entry = state
            .store
            .get(&key)
            .await?
            .ok_or_else(|| not_found("TSIG key"))?;
        // Listed after the key's revision was read: a peer written since to name the key also
        // rewrote the key (see `hold`), so the delete below conflicts and checks again.
        if all::<Peer>(&state, PEERS)
            .await?
            .iter()
            .any(|p| p.tsig_id.as_deref() == Some(id.as_str()))
        {
            return Err(ApiError::bad(
                1004,
                "the TSIG key is used by a peer; change the peer first",
            ));
        }
        match delete_at(&state, &key, entry.mod_revision).await {
            Err(StoreError::Conflict) => {}
            done => return done.map(|_| ok(json!({"id": id}))).map_err(Into::into),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// Deletes `key` if it is still at revision `rev`.
async fn delete_at(state: &ApiState, key: &str, rev: u64) -> Result<u64, StoreError> {
    state
        .store
        .commit(Txn::new().expect(key, rev).delete(key))
        .await
}

/// Rewrites each entry in `held` as it is, if it is still at the revision read. A write that
/// names a peer or a TSIG key holds it so: a delete that checked for users before this write
/// then conflicts and checks again, and this write conflicts with a delete that came first.
fn hold(mut txn: Txn, held: Vec<Entry>) -> Txn {
    for e in held {
        txn = txn.expect(&e.key, e.mod_revision).put(e.key, e.value);
    }
    txn
}

/// The TSIG key `peer` names, to [`hold`]; a 400 if there is none.
async fn tsig_of(state: &ApiState, peer: &Peer) -> Result<Vec<Entry>, ApiError> {
    let Some(t) = &peer.tsig_id else {
        return Ok(Vec::new());
    };
    match state.store.get(&tsig_key(t)).await? {
        Some(entry) => Ok(vec![entry]),
        None => Err(ApiError::bad(1004, format!("tsig_id: no TSIG key {t}"))),
    }
}

/// Writes `peer` if its key is still at revision `rev` (0: absent), holding its TSIG key.
async fn write_peer(state: &ApiState, peer: &Peer, rev: u64) -> Result<(), ApiError> {
    let key = peer_key(&peer.id);
    let txn = Txn::new().expect(&key, rev).put(&key, encode(peer)?);
    let txn = hold(txn, tsig_of(state, peer).await?);
    state.store.commit(txn).await?;
    Ok(())
}

pub async fn list_peers(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(account): Path<String>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let items = all::<Peer>(&state, PEERS)
        .await?
        .iter()
        .map(Peer::to_api_json)
        .collect();
    Ok(page_response(items, 1, 1000))
}

pub async fn create_peer(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(account): Path<String>,
    body: Bytes,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let peer = Peer::from_json(ids::new_id(), &parse_body(&body)?, None)
        .map_err(|e| ApiError::fields(1004, &e))?;
    for _ in 0..WRITE_ATTEMPTS {
        match write_peer(&state, &peer, 0).await {
            Err(ApiError::Store(StoreError::Conflict)) => {}
            done => return done.map(|()| ok(peer.to_api_json())),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

pub async fn get_peer(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let (peer, _) = load::<Peer>(&state, &peer_key(&id))
        .await?
        .ok_or_else(|| not_found("peer"))?;
    Ok(ok(peer.to_api_json()))
}

pub async fn update_peer(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let body = parse_body(&body)?;
    for _ in 0..WRITE_ATTEMPTS {
        let (current, rev) = load::<Peer>(&state, &peer_key(&id))
            .await?
            .ok_or_else(|| not_found("peer"))?;
        let peer = Peer::from_json(id.clone(), &body, Some(&current))
            .map_err(|e| ApiError::fields(1004, &e))?;
        match write_peer(&state, &peer, rev).await {
            Err(ApiError::Store(StoreError::Conflict)) => {}
            done => return done.map(|()| ok(peer.to_api_json())),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

pub async fn delete_peer(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    let key = peer_key(&id);
    for _ in 0..WRITE_ATTEMPTS {
        let entry = state
            .store
            .get(&key)
            .await?
            .ok_or_else(|| not_found("peer"))?;
        // Listed after the peer's revision was read: outgoing settings written since to name
        // the peer also rewrote the peer (see `hold`), so the delete below conflicts and checks
        // again.
        let used = all::<Outgoing>(&state, parapet_snapshot::keys::OUTGOING).await?;
        if let Some(o) = used.iter().find(|o| o.peers.contains(&id)) {
            return Err(ApiError::bad(
                1004,
                format!(
                    "the peer is used by zone {}; change its outgoing transfers first",
                    o.name
                ),
            ));
        }
        match delete_at(&state, &key, entry.mod_revision).await {
            Err(StoreError::Conflict) => {}
            done => return done.map(|_| ok(json!({"id": id}))).map_err(Into::into),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

fn outgoing_json(o: &Outgoing, serial: u32) -> Value {
    json!({"id": o.zone_id, "name": o.name, "peers": o.peers, "soa_serial": serial, "checked_time": null, "created_time": null, "last_transferred_time": null})
}

pub async fn get_outgoing(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (o, _) = load::<Outgoing>(&state, &outgoing_key(&zone.id))
        .await?
        .ok_or_else(|| not_found("outgoing transfer settings"))?;
    Ok(ok(outgoing_json(&o, zone.serial)))
}

/// Cloudflare's names for the two states of outgoing transfers.
fn status_name(o: &Outgoing) -> &'static str {
    if o.enabled { "Enabled" } else { "Disabled" }
}

/// `GET /zones/{id}/secondary_dns/outgoing/status`: "Enabled" or "Disabled".
pub async fn outgoing_status(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (o, _) = load::<Outgoing>(&state, &outgoing_key(&zone.id))
        .await?
        .ok_or_else(|| not_found("outgoing transfer settings"))?;
    Ok(ok(json!(status_name(&o))))
}

/// Rewrites the zone's outgoing settings with `change` applied, if they and the zone are
/// still at the revisions read.
async fn change_outgoing(
    state: &ApiState,
    zone_id: &str,
    change: impl Fn(&mut Outgoing) -> Result<(), ApiError>,
) -> Result<Outgoing, ApiError> {
    let key = outgoing_key(zone_id);
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(state, zone_id).await?;
        let (mut o, rev) = load::<Outgoing>(state, &key)
            .await?
            .ok_or_else(|| not_found("outgoing transfer settings"))?;
        change(&mut o)?;
        let txn = Txn::new()
            .expect(zone_key(zone_id), zone_rev)
            .expect(&key, rev)
            .put(&key, encode(&o)?);
        match state.store.commit(txn).await {
            Ok(_) => return Ok(o),
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// `POST .../outgoing/enable`: peers may transfer the zone and are notified of changes.
pub async fn enable_outgoing(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    set_outgoing_enabled(&state, &auth, &zone_id, true).await
}

/// `POST .../outgoing/disable`: transfers are refused and no NOTIFY is sent; the peers stay
/// listed for a later `enable`.
pub async fn disable_outgoing(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    set_outgoing_enabled(&state, &auth, &zone_id, false).await
}

/// Turns a zone's outgoing transfers on or off; answers with their status.
async fn set_outgoing_enabled(
    state: &ApiState,
    auth: &Auth,
    zone_id: &str,
    enabled: bool,
) -> ApiResult {
    let zone = authorized_zone(state, auth, zone_id, Access::EditZone).await?;
    let o = change_outgoing(state, &zone.id, |o| {
        o.enabled = enabled;
        Ok(())
    })
    .await?;
    Ok(ok(json!(status_name(&o))))
}

/// `POST .../outgoing/force_notify`: every peer is sent a NOTIFY now, whatever the serial.
pub async fn force_notify(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    change_outgoing(&state, &zone.id, |o| {
        if !o.enabled {
            return Err(ApiError::bad(
                1004,
                "outgoing transfers are disabled; enable them first",
            ));
        }
        o.notifies = o.notifies.wrapping_add(1);
        Ok(())
    })
    .await?;
    Ok(ok(json!("OK")))
}

/// POST (create) and PUT (replace) of a zone's outgoing transfer settings.
pub async fn set_outgoing(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let key = outgoing_key(&zone.id);
    for _ in 0..WRITE_ATTEMPTS {
        let (zone, zone_rev) = load_zone(&state, &zone.id).await?;
        let current = load::<Outgoing>(&state, &key).await?;
        let o = Outgoing::from_json(
            zone.id.clone(),
            &zone.name,
            &body,
            current.as_ref().map(|(o, _)| o),
        )
        .map_err(|e| ApiError::fields(1004, &e))?;
        let mut peers: Vec<Entry> = Vec::with_capacity(o.peers.len());
        for p in &o.peers {
            let Some(entry) = state.store.get(&peer_key(p)).await? else {
                return Err(ApiError::bad(1004, format!("peers: no peer {p}")));
            };
            if !peers.iter().any(|held| held.key == entry.key) {
                peers.push(entry);
            }
        }
        let rev = current.map_or(0, |(_, rev)| rev);
        // The zone at the revision read: settings written after the zone's delete would
        // outlive it.
        let txn = Txn::new()
            .expect(zone_key(&zone.id), zone_rev)
            .expect(&key, rev)
            .put(&key, encode(&o)?);
        match state.store.commit(hold(txn, peers)).await {
            Ok(_) => return Ok(ok(outgoing_json(&o, zone.serial))),
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

pub async fn delete_outgoing(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    state
        .store
        .commit(Txn::new().delete(outgoing_key(&zone.id)))
        .await?;
    Ok(ok(json!({"id": zone.id})))
}
