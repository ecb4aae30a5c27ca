//! `/user/tokens`: verify, create, list, delete; and the bootstrap token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use parapet_model::token::secret_digest;
use parapet_model::{ApiToken, Grant, Need, Permission, ZoneScope, ids};
use parapet_snapshot::{keys, token_key};
use parapet_store::{Store, StoreError, Txn};
use serde_json::{Value, json};

use crate::envelope::{ApiResult, now_timestamp, ok, parse_body};
use crate::listing::{Params, page_response, short};
use crate::{ApiError, ApiState, Auth};

/// Stores a new token and returns it with its secret (shown once, never stored).
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    grants: Vec<Grant>,
) -> Result<(ApiToken, String), StoreError> {
    let secret = ids::new_secret();
    let token = ApiToken {
        id: ids::new_id(),
        name: name.to_owned(),
        grants,
        issued_on: now_timestamp(),
    };
    let value = serde_json::to_vec(&token).map_err(|e| StoreError::Backend(e.to_string()))?;
    let key = token_key(&secret_digest(&secret));
    store
        .commit(Txn::new().expect(key.clone(), 0).put(key, value))
        .await?;
    Ok((token, secret))
}

/// Whether any token has been created (for the first-start bootstrap token).
pub async fn has_stored_tokens(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(!store.list(keys::TOKENS).await?.entries.is_empty())
}

fn policies_json(token: &ApiToken, account_id: &str) -> Value {
    let policies: Vec<Value> = token
        .grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let resources = match &g.zones {
                ZoneScope::All => json!({format!("com.cloudflare.api.account.{account_id}"): "*"}),
                ZoneScope::Listed(ids) => Value::Object(
                    ids.iter().map(|id| (format!("com.cloudflare.api.account.zone.{id}"), json!("*"))).collect(),
                ),
            };
            json!({
                "id": policy_id(&token.id, i),
                "effect": "allow",
                "resources": resources,
                "permission_groups": [{"id": g.permission.group_id(), "name": g.permission.group_name()}],
            })
        })
        .collect();
    json!(policies)
}

/// The id of a token's `index`th policy: the same on every read (clients that compare what
/// they read with what they wrote, as Terraform does, see no change).
fn policy_id(token_id: &str, index: usize) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{token_id}/policy/{index}"));
    hex::encode(&digest[..16])
}

/// `GET /user/tokens/permission_groups`: the permission groups a token's policies may name.
pub async fn permission_groups(_auth: Auth) -> ApiResult {
    let groups: Vec<Value> = Permission::EVERY
        .iter()
        .map(|p| {
            let scope = if *p == Permission::All {
                "com.cloudflare.api.account"
            } else {
                "com.cloudflare.api.account.zone"
            };
            json!({"id": p.group_id(), "name": p.group_name(), "scopes": [scope]})
        })
        .collect();
    Ok(ok(Value::Array(groups)))
}

fn token_json(token: &ApiToken, account_id: &str) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "status": "active",
        "issued_on": token.issued_on,
        "modified_on": token.issued_on,
        "not_before": null,
        "expires_on": null,
        "policies": policies_json(token, account_id),
        "condition": {},
    })
}

pub async fn verify(auth: Auth) -> ApiResult {
    Ok(ok(
        json!({"id": auth.0.id, "status": "active", "not_before": null, "expires_on": null}),
    ))
}

/// Reads Cloudflare's `policies` into grants, reporting every problem.
fn parse_policies(body: &Value, account_id: &str) -> Result<Vec<Grant>, ApiError> {
    let Some(policies) = body.get("policies").and_then(Value::as_array) else {
        return Err(ApiError::bad(
            1004,
            "policies: an array of policies is required",
        ));
    };
    let mut grants = Vec::new();
    let mut errors = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        if p.get("effect").and_then(Value::as_str).unwrap_or("allow") != "allow" {
            errors.push(format!("policies[{i}].effect: only 'allow' is supported"));
            continue;
        }
        let mut zones = Vec::new();
        let mut all = false;
        match p.get("resources").and_then(Value::as_object) {
            Some(resources) if !resources.is_empty() => {
                let account_key = format!("com.cloudflare.api.account.{account_id}");
                // Cloudflare's forms: `{zone key: "*"}`, `{account key: "*"}` (every zone),
                // and an account key holding its zone keys (`{account key: {zone key: "*"}}`).
                let mut entries: Vec<(&String, &Value)> = Vec::new();
                for (key, value) in resources {
                    match value {
                        Value::Object(inner)
                            if key == &account_key || key == "com.cloudflare.api.account.*" =>
                        {
                            if inner.is_empty() {
                                errors.push(format!(
                                    "policies[{i}].resources: '{}' names no zones",
                                    short(key)
                                ));
                            }
                            for (inner_key, inner_value) in inner {
                                if inner_key.starts_with("com.cloudflare.api.account.zone.") {
                                    entries.push((inner_key, inner_value));
                                } else {
                                    errors.push(format!(
                                        "policies[{i}].resources: '{}' holds '{}', which is no zone",
                                        short(key),
                                        short(inner_key)
                                    ));
                                }
                            }
                        }
                        other => entries.push((key, other)),
                    }
                }
                for (key, value) in entries {
                    if value.as_str() != Some("*") {
                        errors.push(format!(
                            "policies[{i}].resources: '{}' must be \"*\"",
                            short(key)
                        ));
                        continue;
                    }
                    if let Some(zone) = key.strip_prefix("com.cloudflare.api.account.zone.") {
                        if zone == "*" {
                            all = true;
                        } else if ids::is_id(zone) {
                            zones.push(zone.to_owned());
                        } else {
                            errors.push(format!(
                                "policies[{i}].resources: '{}' is not a zone id",
                                short(zone)
                            ));
                        }
                    } else if key == "com.cloudflare.api.account.*" || key == &account_key {
                        all = true;
                    } else {
                        errors.push(format!(
                            "policies[{i}].resources: unknown resource '{}'",
                            short(key)
                        ));
                    }
                }
            }
            _ => errors.push(format!(
                "policies[{i}].resources: an object of resources is required"
            )),
        }
        let groups = p
            .get("permission_groups")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if groups.is_empty() {
            errors.push(format!(
                "policies[{i}].permission_groups: at least one is required"
            ));
        }
        for g in groups {
            let by_id = g
                .get("id")
                .and_then(Value::as_str)
                .and_then(Permission::from_group_id);
            let label = g
                .get("name")
                .or_else(|| g.get("id"))
                .and_then(Value::as_str)
                .unwrap_or("");
            match by_id.or_else(|| Permission::parse(label)) {
                Some(permission) => grants.push(Grant {
                    permission,
                    zones: if all { ZoneScope::All } else { ZoneScope::Listed(zones.clone()) },
                }),
                None => errors.push(format!(
                    "policies[{i}].permission_groups: unknown permission '{}' (use Administrator, Zone Read, DNS Write, Cache Purge, Zone Settings Write)",
                    short(label)
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(grants)
    } else {
        Err(ApiError::BadRequest(
            errors
                .into_iter()
                .map(|m| crate::ApiErrorItem {
                    code: 1004,
                    message: m,
                })
                .collect(),
        ))
    }
}

pub async fn create(State(state): State<Arc<ApiState>>, auth: Auth, body: Bytes) -> ApiResult {
    auth.require(Need::Admin)?;
    let body = parse_body(&body)?;
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 120 => n.trim().to_owned(),
        _ => {
            return Err(ApiError::bad(
                1004,
                "name: a token name of at most 120 characters is required",
            ));
        }
    };
    let grants = parse_policies(&body, &state.config.account_id)?;
    let (token, secret) = create_token(state.store.as_ref(), &name, grants).await?;
    let mut out = token_json(&token, &state.config.account_id);
    out["value"] = json!(secret);
    Ok(ok(out))
}

async fn stored_tokens(state: &ApiState) -> Result<Vec<(String, ApiToken)>, ApiError> {
    crate::stored::list_entries(state, keys::TOKENS).await
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    auth.require(Need::Admin)?;
    let (page, per_page) = Params::parse(raw.as_deref()).paging(20, 1000)?;
    let items = stored_tokens(&state)
        .await?
        .iter()
        .map(|(_, t)| token_json(t, &state.config.account_id))
        .collect();
    Ok(page_response(items, page, per_page))
}

fn token_not_found() -> ApiError {
    ApiError::NotFound {
        code: 1003,
        message: "Token does not exist.".into(),
    }
}

pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(token_id): Path<String>,
) -> ApiResult {
    auth.require(Need::Admin)?;
    let tokens = stored_tokens(&state).await?;
    let (_, token) = tokens
        .iter()
        .find(|(_, t)| t.id == token_id)
        .ok_or_else(token_not_found)?;
    Ok(ok(token_json(token, &state.config.account_id)))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(token_id): Path<String>,
) -> ApiResult {
    auth.require(Need::Admin)?;
    let tokens = stored_tokens(&state).await?;
    let (key, _) = tokens
        .iter()
        .find(|(_, t)| t.id == token_id)
        .ok_or_else(token_not_found)?;
    state.store.commit(Txn::new().delete(key.clone())).await?;
    Ok(ok(json!({"id": token_id})))
}
