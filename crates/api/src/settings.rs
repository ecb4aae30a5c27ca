//! Zone settings (`/zones/{id}/settings[/{setting}]`) and the origin-rules entrypoint ruleset
//! (`/zones/{id}/rulesets/phases/http_request_origin/entrypoint`), in Cloudflare's shapes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use parapet_model::rules::{PHASES, Ruleset};
use parapet_model::settings::{SETTINGS, SetValue, ZoneSettings, setting_def};
use parapet_snapshot::{ruleset_key, settings_key};
use serde_json::{Value, json};

use crate::envelope::{ApiResult, now_timestamp, ok, parse_body};
use crate::stored::{WRITE_ATTEMPTS, conflicted, load, put_in_zone};
use crate::zones::{Access, authorized_zone, load_zone};
use crate::{ApiError, ApiState, Auth};

fn unknown_setting(id: &str) -> ApiError {
    ApiError::NotFound {
        code: 1003,
        message: format!(
            "Invalid or missing zone setting: '{}'",
            parapet_model::name::printable(id)
        ),
    }
}

/// One setting as the API shows it. Development mode reads "off" once its three hours are
/// up, and shows the seconds it has left (`time_remaining`), as Cloudflare's does.
fn setting_json(state: &ApiState, settings: &ZoneSettings, id: &str) -> Value {
    let now = crate::zones::unix_now();
    let value = settings
        .value_at(id, now)
        .or_else(|| state.config.setting_defaults.get(id).cloned())
        .unwrap_or(Value::Null);
    let mut shown = json!({
        "id": id,
        "value": value,
        "editable": setting_def(id).is_some_and(|d| d.editable()),
        "modified_on": settings.values.get(id).map(|v| v.modified_on.clone()),
    });
    if id == "development_mode" {
        let left = settings
            .development_mode_until()
            .map_or(0, |until| until.saturating_sub(now));
        shown["time_remaining"] = json!(left);
    }
    shown
}

async fn load_settings(state: &ApiState, zone_id: &str) -> Result<(ZoneSettings, u64), ApiError> {
    Ok(load::<ZoneSettings>(state, &settings_key(zone_id))
        .await?
        .unwrap_or_else(|| {
            (
                ZoneSettings {
                    zone_id: zone_id.to_owned(),
                    ..ZoneSettings::default()
                },
                0,
            )
        }))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (settings, _) = load_settings(&state, &zone.id).await?;
    let items = SETTINGS
        .iter()
        .map(|d| setting_json(&state, &settings, d.id))
        .collect::<Vec<_>>();
    Ok(ok(Value::Array(items)))
}

pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, setting)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    if setting_def(&setting).is_none() {
        return Err(unknown_setting(&setting));
    }
    let (settings, _) = load_settings(&state, &zone.id).await?;
    Ok(ok(setting_json(&state, &settings, &setting)))
}

/// Applies `(id, value)` edits all together or not at all.
async fn edit(
    state: &ApiState,
    zone_id: &str,
    edits: &[(String, Value)],
) -> Result<ZoneSettings, ApiError> {
    let mut checked = Vec::with_capacity(edits.len());
    let mut errors = Vec::new();
    for (id, value) in edits {
        // Every mistake of a bulk edit is named at once, as Cloudflare's are.
        let Some(def) = setting_def(id) else {
            errors.push(crate::envelope::ApiErrorItem {
                code: 1006,
                message: format!(
                    "Unrecognized zone setting name: {}",
                    parapet_model::name::printable(id)
                ),
            });
            continue;
        };
        match def.check(value) {
            Ok(v) => checked.push((id.clone(), v)),
            Err(e) => errors.extend(e.errors().iter().map(|f| crate::envelope::ApiErrorItem {
                code: 1007,
                message: format!("Invalid value for zone setting {id}: {}", f.message),
            })),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors));
    }
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(state, zone_id).await?;
        let (mut settings, rev) = load_settings(state, zone_id).await?;
        let now = now_timestamp();
        for (id, value) in &checked {
            settings.values.insert(
                id.clone(),
                SetValue {
                    value: value.clone(),
                    modified_on: now.clone(),
                },
            );
        }
        let written = put_in_zone(
            state,
            (zone_id, zone_rev),
            &settings_key(zone_id),
            rev,
            &settings,
        )
        .await;
        if !conflicted(&written) {
            return written.map(|()| settings);
        }
    }
    Err(ApiError::Store(parapet_store::StoreError::Conflict))
}

/// `PATCH /zones/{id}/settings/{setting}` with `{"value": ...}`.
pub async fn patch_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, setting)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditSettings).await?;
    let body = parse_body(&body)?;
    if setting_def(&setting).is_none() {
        return Err(unknown_setting(&setting));
    }
    let Some(value) = body.get("value") else {
        return Err(ApiError::bad(1007, "value is required"));
    };
    let settings = edit(&state, &zone.id, &[(setting.clone(), value.clone())]).await?;
    Ok(ok(setting_json(&state, &settings, &setting)))
}

/// `PATCH /zones/{id}/settings` with `{"items": [{"id": ..., "value": ...}, ...]}`.
pub async fn patch_many(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditSettings).await?;
    let body = parse_body(&body)?;
    let Some(items) = body.get("items").and_then(Value::as_array) else {
        return Err(ApiError::bad(
            1007,
            "items is required: [{\"id\": ..., \"value\": ...}]",
        ));
    };
    let mut edits = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match (item.get("id").and_then(Value::as_str), item.get("value")) {
            (Some(id), Some(v)) => edits.push((id.to_owned(), v.clone())),
            _ => {
                return Err(ApiError::bad(
                    1007,
                    format!("items[{i}] needs an id and a value"),
                ));
            }
        }
    }
    let settings = edit(&state, &zone.id, &edits).await?;
    let items = edits
        .iter()
        .map(|(id, _)| setting_json(&state, &settings, id))
        .collect::<Vec<_>>();
    Ok(ok(Value::Array(items)))
}

/// `GET /zones/{id}/origin_tls_client_auth/settings`: `{"enabled": bool}`, Cloudflare's view of
/// the `tls_client_auth` setting.
pub async fn get_origin_pull(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (settings, _) = load_settings(&state, &zone.id).await?;
    Ok(ok(json!({"enabled": settings.edge().origin_pull})))
}

/// `PUT /zones/{id}/origin_tls_client_auth/settings` with `{"enabled": bool}`.
pub async fn put_origin_pull(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    let Some(enabled) = body.get("enabled").and_then(Value::as_bool) else {
        return Err(ApiError::bad(1007, "enabled must be true or false"));
    };
    let value = json!(if enabled { "on" } else { "off" });
    let settings = edit(&state, &zone.id, &[("tls_client_auth".to_owned(), value)]).await?;
    Ok(ok(json!({"enabled": settings.edge().origin_pull})))
}

fn check_phase(phase: &str) -> Result<(), ApiError> {
    if PHASES.contains(&phase) {
        Ok(())
    } else {
        Err(ApiError::NotFound {
            code: 10003,
            message: format!(
                "phase '{}' is not one Parapet serves ({})",
                parapet_model::name::printable(phase),
                PHASES.join(", ")
            ),
        })
    }
}

pub async fn get_entrypoint(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, phase)): Path<(String, String)>,
) -> ApiResult {
    check_phase(&phase)?;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (ruleset, _) = load::<Ruleset>(&state, &ruleset_key(&zone.id, &phase))
        .await?
        .ok_or_else(|| ApiError::NotFound {
            code: 10003,
            message: format!("could not find entrypoint ruleset in the {phase} phase"),
        })?;
    Ok(ok(json!(ruleset)))
}

/// `PUT` replaces the whole entrypoint ruleset (creating it if needed).
pub async fn put_entrypoint(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, phase)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    check_phase(&phase)?;
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    // A body naming its kind or phase (as a ruleset read back does) names this one's.
    crate::rulesets::check_kind(&body)?;
    if let Some(named) = crate::rulesets::optional_text(&body, "phase")?
        && named != phase
    {
        return Err(ApiError::bad(
            20021,
            format!("phase: the body names {named}, the path {phase}"),
        ));
    }
    let key = ruleset_key(&zone.id, &phase);
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(&state, &zone.id).await?;
        let previous = load::<Ruleset>(&state, &key).await?;
        let ruleset = Ruleset::from_json(
            &zone.id,
            &phase,
            &body,
            previous.as_ref().map(|(r, _)| r),
            &now_timestamp(),
        )
        .map_err(|e| ApiError::fields(20021, &e))?;
        crate::rulesets::refuse_duplicate_rules(&ruleset)?;
        let expect = previous.map_or(0, |(_, rev)| rev);
        let written = put_in_zone(&state, (&zone.id, zone_rev), &key, expect, &ruleset).await;
        if !conflicted(&written) {
            return written.map(|()| ok(json!(ruleset)));
        }
    }
    Err(ApiError::Store(parapet_store::StoreError::Conflict))
}
