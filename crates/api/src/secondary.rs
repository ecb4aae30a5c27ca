//! Outgoing zone transfers, in Cloudflare's Secondary DNS shapes: account TSIG keys and peers
//! (`/accounts/{id}/secondary_dns/tsigs|peers`) and each zone's transfer ACL
//! (`/zones/{id}/secondary_dns/outgoing`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use parapet_model::transfer::{Outgoing, Peer, TsigKey};
use parapet_model::{Need, ids};
use parapet_snapshot::keys::{PEERS, TSIGS};
use parapet_snapshot::{outgoing_key, peer_key, tsig_key};
use parapet_store::Txn;
use serde_json::{Value, json};

use crate::envelope::{ApiResult, ok, parse_body};
use crate::listing::page_response;
use crate::stored::{list as all, load, put};
use crate::zones::{Access, authorized_zone};
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
    put(&state, &tsig_key(&id), rev, &key).await?;
    Ok(ok(key.to_api_json()))
}

pub async fn delete_tsig(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    load::<TsigKey>(&state, &tsig_key(&id))
        .await?
        .ok_or_else(|| not_found("TSIG key"))?;
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
    state.store.commit(Txn::new().delete(tsig_key(&id))).await?;
    Ok(ok(json!({"id": id})))
}

async fn check_tsig_exists(state: &ApiState, peer: &Peer) -> Result<(), ApiError> {
    if let Some(t) = &peer.tsig_id
        && load::<TsigKey>(state, &tsig_key(t)).await?.is_none()
    {
        return Err(ApiError::bad(1004, format!("tsig_id: no TSIG key {t}")));
    }
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
    check_tsig_exists(&state, &peer).await?;
    put(&state, &peer_key(&peer.id), 0, &peer).await?;
    Ok(ok(peer.to_api_json()))
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
    let (current, rev) = load::<Peer>(&state, &peer_key(&id))
        .await?
        .ok_or_else(|| not_found("peer"))?;
    let peer = Peer::from_json(id.clone(), &parse_body(&body)?, Some(&current))
        .map_err(|e| ApiError::fields(1004, &e))?;
    check_tsig_exists(&state, &peer).await?;
    put(&state, &peer_key(&id), rev, &peer).await?;
    Ok(ok(peer.to_api_json()))
}

pub async fn delete_peer(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((account, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &auth, &account)?;
    load::<Peer>(&state, &peer_key(&id))
        .await?
        .ok_or_else(|| not_found("peer"))?;
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
    state.store.commit(Txn::new().delete(peer_key(&id))).await?;
    Ok(ok(json!({"id": id})))
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

/// POST (create) and PUT (replace) of a zone's outgoing transfer settings.
pub async fn set_outgoing(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let o = Outgoing::from_json(zone.id.clone(), &zone.name, &parse_body(&body)?)
        .map_err(|e| ApiError::fields(1004, &e))?;
    for p in &o.peers {
        if load::<Peer>(&state, &peer_key(p)).await?.is_none() {
            return Err(ApiError::bad(1004, format!("peers: no peer {p}")));
        }
    }
    let rev = state
        .store
        .get(&outgoing_key(&zone.id))
        .await?
        .map_or(0, |e| e.mod_revision);
    put(&state, &outgoing_key(&zone.id), rev, &o).await?;
    Ok(ok(outgoing_json(&o, zone.serial)))
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
