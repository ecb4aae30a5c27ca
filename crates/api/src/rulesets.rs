//! Zone rulesets by id, in Cloudflare's shapes: `/zones/{id}/rulesets` (list, create),
//! `/zones/{id}/rulesets/{ruleset_id}` (get, replace, delete) and its rules
//! (`.../rules` add, `.../rules/{rule_id}` edit, delete).
//!
//! A zone has at most one ruleset per phase Parapet serves: its entrypoint, the same one
//! `/rulesets/phases/{phase}/entrypoint` shows, stored at the (zone, phase) key. A ruleset keeps
//! its id for as long as it exists. Every write re-reads the ruleset, checks the whole result
//! with the model and commits it in one transaction conditioned on the zone's and the
//! ruleset's revisions; a refused write stores nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use parapet_model::ids;
use parapet_model::name::printable;
use parapet_model::rules::{PHASES, Rule, Ruleset};
use parapet_snapshot::ruleset_key;
use parapet_store::{StoreError, Txn};
use serde_json::{Map, Value, json};

use crate::envelope::{ApiErrorItem, ApiResult, now_timestamp, ok, parse_body};
use crate::stored::{WRITE_ATTEMPTS, conflicted, load, put_in_zone};
use crate::zones::{Access, authorized_zone, load_zone};
use crate::{ApiError, ApiState, Auth};

/// Cloudflare's code for an invalid ruleset request.
const INVALID: u32 = 20021;

fn ruleset_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        code: 10003,
        message: format!("could not find ruleset '{}'", printable(id)),
    }
}

fn rule_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        code: 10003,
        message: format!("could not find rule '{}' in the ruleset", printable(id)),
    }
}

/// The zone's rulesets (one per phase at most) with the revisions that wrote them.
async fn zone_rulesets(state: &ApiState, zone_id: &str) -> Result<Vec<(Ruleset, u64)>, ApiError> {
    let mut out = Vec::new();
    for phase in PHASES {
        if let Some(found) = load::<Ruleset>(state, &ruleset_key(zone_id, phase)).await? {
            out.push(found);
        }
    }
    Ok(out)
}

/// The zone's ruleset `ruleset_id` and the revision that wrote it.
async fn find_ruleset(
    state: &ApiState,
    zone_id: &str,
    ruleset_id: &str,
) -> Result<(Ruleset, u64), ApiError> {
    if !ids::is_id(ruleset_id) {
        return Err(ruleset_not_found(ruleset_id));
    }
    zone_rulesets(state, zone_id)
        .await?
        .into_iter()
        .find(|(r, _)| r.id == ruleset_id)
        .ok_or_else(|| ruleset_not_found(ruleset_id))
}

/// A ruleset as a list shows it: everything but its rules.
fn summary_json(ruleset: &Ruleset) -> Value {
    let mut v = json!(ruleset);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("rules");
    }
    v
}

/// Refuses a ruleset in which two rules have the same id or the same ref, as Cloudflare does.
pub(crate) fn refuse_duplicate_rules(ruleset: &Ruleset) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut refs: HashMap<&str, usize> = HashMap::new();
    for (i, rule) in ruleset.rules.iter().enumerate() {
        if let Some(first) = ids.insert(&rule.id, i) {
            // A rule named twice has its ref twice too: one error says it.
            errors.push(ApiErrorItem {
                code: INVALID,
                message: format!(
                    "rules[{i}].id: '{}' is also the id of rules[{first}]; rule ids must be unique",
                    printable(&rule.id)
                ),
            });
        } else if let Some(first) = refs.insert(&rule.reference, i) {
            errors.push(ApiErrorItem {
                code: INVALID,
                message: format!(
                    "rules[{i}].ref: '{}' is also the ref of rules[{first}]; rule refs must be unique",
                    printable(&rule.reference)
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(errors))
    }
}

/// A rule that a write leaves as it was keeps its version and its time of last change.
fn keep_unchanged_rule_versions(next: &mut Ruleset, previous: &Ruleset) {
    for rule in &mut next.rules {
        let Some(before) = previous.rules.iter().find(|r| r.id == rule.id) else {
            continue;
        };
        let unchanged = Rule {
            version: before.version.clone(),
            last_updated: before.last_updated.clone(),
            ..rule.clone()
        } == *before;
        if unchanged {
            rule.version.clone_from(&before.version);
            rule.last_updated.clone_from(&before.last_updated);
        }
    }
}

/// Re-reads the zone and its ruleset `ruleset_id`, applies `change` (given the ruleset and the
/// time) and commits the result if neither changed meanwhile, trying again if one did.
async fn change_ruleset(
    state: &ApiState,
    zone_id: &str,
    ruleset_id: &str,
    change: impl Fn(&Ruleset, &str) -> Result<Ruleset, ApiError>,
) -> Result<Ruleset, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(state, zone_id).await?;
        let (previous, rev) = find_ruleset(state, zone_id, ruleset_id).await?;
        let mut next = change(&previous, &now_timestamp())?;
        keep_unchanged_rule_versions(&mut next, &previous);
        refuse_duplicate_rules(&next)?;
        let key = ruleset_key(zone_id, &previous.phase);
        let written = put_in_zone(state, (zone_id, zone_rev), &key, rev, &next).await;
        if !conflicted(&written) {
            return written.map(|()| next);
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// `previous` with `rules` (rule objects; those naming an id of `previous` keep it), checked
/// by the model as a whole.
fn with_rules(previous: &Ruleset, rules: Vec<Value>, now: &str) -> Result<Ruleset, ApiError> {
    let body = json!({
        "name": previous.name,
        "description": previous.description,
        "rules": rules,
    });
    Ruleset::from_json(
        &previous.zone_id,
        &previous.phase,
        &body,
        Some(previous),
        now,
    )
    .map_err(|e| ApiError::fields(INVALID, &e))
}

fn rules_json(ruleset: &Ruleset) -> Vec<Value> {
    ruleset.rules.iter().map(|r| json!(r)).collect()
}

/// A body's string field (`None` when absent or null).
pub(crate) fn optional_text<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(INVALID, format!("{key}: must be a string"))),
    }
}

pub(crate) fn check_kind(body: &Value) -> Result<(), ApiError> {
    match optional_text(body, "kind")? {
        None | Some("zone") => Ok(()),
        Some(kind) => Err(ApiError::bad(
            INVALID,
            format!(
                "kind: '{}' is not a kind of ruleset Parapet serves (only 'zone')",
                printable(kind)
            ),
        )),
    }
}

fn unsupported_phase(phase: &str) -> ApiError {
    ApiError::bad(
        INVALID,
        format!(
            "phase: '{}' is not one Parapet serves ({})",
            printable(phase),
            PHASES.join(", ")
        ),
    )
}

/// `GET /zones/{id}/rulesets`: the zone's rulesets, without their rules.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let items = zone_rulesets(&state, &zone.id)
        .await?
        .iter()
        .map(|(r, _)| summary_json(r))
        .collect();
    Ok(ok(Value::Array(items)))
}

/// `POST /zones/{id}/rulesets` with `{"name", "description", "kind": "zone", "phase",
/// "rules"}`: the phase's entrypoint ruleset, if the zone has none yet.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    if !body.is_object() {
        return Err(ApiError::bad(INVALID, "body: must be a JSON object"));
    }
    check_kind(&body)?;
    let Some(phase) = optional_text(&body, "phase")? else {
        return Err(ApiError::bad(
            INVALID,
            format!("phase: is required (one of {})", PHASES.join(", ")),
        ));
    };
    if !PHASES.contains(&phase) {
        return Err(unsupported_phase(phase));
    }
    let key = ruleset_key(&zone.id, phase);
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(&state, &zone.id).await?;
        if load::<Ruleset>(&state, &key).await?.is_some() {
            return Err(ApiError::bad(
                20217,
                format!(
                    "'zone' is not a valid value for kind because exceeded maximum number of zone rulesets for phase {phase}"
                ),
            ));
        }
        let ruleset = Ruleset::from_json(&zone.id, phase, &body, None, &now_timestamp())
            .map_err(|e| ApiError::fields(INVALID, &e))?;
        refuse_duplicate_rules(&ruleset)?;
        let written = put_in_zone(&state, (&zone.id, zone_rev), &key, 0, &ruleset).await;
        if !conflicted(&written) {
            return written.map(|()| ok(json!(ruleset)));
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// `GET /zones/{id}/rulesets/{ruleset_id}`.
pub async fn get_one(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    let (ruleset, _) = find_ruleset(&state, &zone.id, &ruleset_id).await?;
    Ok(ok(json!(ruleset)))
}

/// `PUT /zones/{id}/rulesets/{ruleset_id}`: replaces the rules (and the name and description
/// when given); `kind` and `phase`, when given, must be the ruleset's.
pub async fn replace(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let body = parse_body(&body)?;
    if !body.is_object() {
        return Err(ApiError::bad(INVALID, "body: must be a JSON object"));
    }
    check_kind(&body)?;
    let phase = optional_text(&body, "phase")?;
    let ruleset = change_ruleset(&state, &zone.id, &ruleset_id, |previous, now| {
        if phase.is_some_and(|p| p != previous.phase) {
            return Err(ApiError::bad(
                INVALID,
                format!(
                    "phase: a ruleset's phase cannot change (this one is {})",
                    previous.phase
                ),
            ));
        }
        let mut body = body.clone();
        if let Some(obj) = body.as_object_mut() {
            for (key, kept) in [
                ("name", &previous.name),
                ("description", &previous.description),
            ] {
                if obj.get(key).is_none_or(Value::is_null) {
                    obj.insert(key.to_owned(), json!(kept));
                }
            }
        }
        Ruleset::from_json(
            &previous.zone_id,
            &previous.phase,
            &body,
            Some(previous),
            now,
        )
        .map_err(|e| ApiError::fields(INVALID, &e))
    })
    .await?;
    Ok(ok(json!(ruleset)))
}

/// `DELETE /zones/{id}/rulesets/{ruleset_id}`: 204 with no body, as Cloudflare answers.
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(&state, &zone.id).await?;
        let (ruleset, rev) = find_ruleset(&state, &zone.id, &ruleset_id).await?;
        let key = ruleset_key(&zone.id, &ruleset.phase);
        let txn = Txn::new()
            .expect(parapet_snapshot::zone_key(&zone.id), zone_rev)
            .expect(key.clone(), rev)
            .delete(key);
        let written: Result<(), ApiError> = state
            .store
            .commit(txn)
            .await
            .map(|_| ())
            .map_err(Into::into);
        if !conflicted(&written) {
            return written.map(|()| StatusCode::NO_CONTENT.into_response());
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}

/// Where a rule goes: Cloudflare's `position`, `{"before": id}` (`""`: first),
/// `{"after": id}` (`""`: last) or `{"index": n}` (from 1).
enum Position {
    Before(String),
    After(String),
    Index(u64),
}

/// The `position` of a rule body (removed from it).
fn take_position(rule: &mut Map<String, Value>) -> Result<Option<Position>, ApiError> {
    let bad = || {
        ApiError::bad(
            INVALID,
            "position: must be {\"before\": rule id}, {\"after\": rule id} or {\"index\": n} (from 1)",
        )
    };
    let Some(position) = rule.remove("position") else {
        return Ok(None);
    };
    if position.is_null() {
        return Ok(None);
    }
    let Some(obj) = position.as_object().filter(|o| o.len() == 1) else {
        return Err(bad());
    };
    match obj.iter().next() {
        Some((k, Value::String(id))) if k == "before" => Ok(Some(Position::Before(id.clone()))),
        Some((k, Value::String(id))) if k == "after" => Ok(Some(Position::After(id.clone()))),
        Some((k, Value::Number(n))) if k == "index" => n
            .as_u64()
            .filter(|&i| i >= 1)
            .map(Position::Index)
            .map(Some)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Puts `rule` into `rules` at `position` (`None`: last).
fn insert_at(
    rules: &mut Vec<Value>,
    rule: Value,
    position: Option<&Position>,
) -> Result<(), ApiError> {
    let index_of = |id: &str| {
        rules
            .iter()
            .position(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .ok_or_else(|| {
                ApiError::bad(
                    INVALID,
                    format!(
                        "position: no other rule with id '{}' in the ruleset",
                        printable(id)
                    ),
                )
            })
    };
    let at = match position {
        None => rules.len(),
        Some(Position::Before(id)) if id.is_empty() => 0,
        Some(Position::After(id)) if id.is_empty() => rules.len(),
        Some(Position::Before(id)) => index_of(id)?,
        Some(Position::After(id)) => index_of(id)? + 1,
        Some(Position::Index(n)) => {
            let at = usize::try_from(*n - 1).unwrap_or(usize::MAX);
            if at > rules.len() {
                return Err(ApiError::bad(
                    INVALID,
                    format!(
                        "position.index: {n} is past the end (at most {})",
                        rules.len() + 1
                    ),
                ));
            }
            at
        }
    };
    rules.insert(at, rule);
    Ok(())
}

fn rule_body(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::bad(
            INVALID,
            "body: must be a JSON object (a rule)",
        )),
    }
}

/// `POST /zones/{id}/rulesets/{ruleset_id}/rules`: adds a rule (last, or at `position`);
/// answers with the whole ruleset.
pub async fn add_rule(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let mut rule = rule_body(parse_body(&body)?)?;
    let position = take_position(&mut rule)?;
    let rule = Value::Object(rule);
    let ruleset = change_ruleset(&state, &zone.id, &ruleset_id, |previous, now| {
        let mut rules = rules_json(previous);
        insert_at(&mut rules, rule.clone(), position.as_ref())?;
        with_rules(previous, rules, now)
    })
    .await?;
    Ok(ok(json!(ruleset)))
}

/// `PATCH /zones/{id}/rulesets/{ruleset_id}/rules/{rule_id}`: a whole definition (one with an
/// `action`) replaces the rule, its id and (unless one is given) its `ref` kept, as Cloudflare's
/// update takes it: a field left out takes its default (`enabled` true, no description). Other
/// fields given alone replace the rule's; `position` moves it. Answers with the whole ruleset.
pub async fn edit_rule(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, ruleset_id, rule_id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let mut edit = rule_body(parse_body(&body)?)?;
    let position = take_position(&mut edit)?;
    match edit.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if *id == rule_id => {}
        Some(_) => {
            return Err(ApiError::bad(
                INVALID,
                "id: a rule's id cannot change (it must be the one in the path)",
            ));
        }
    }
    let ruleset = change_ruleset(&state, &zone.id, &ruleset_id, |previous, now| {
        let mut rules = rules_json(previous);
        let at = rule_position(previous, &rule_id)?;
        let mut rule = rules.remove(at);
        if edit.contains_key("action") {
            let mut replaced = edit.clone();
            replaced.insert("id".into(), json!(rule_id));
            if let Some(kept) = rule.get("ref").filter(|_| !edit.contains_key("ref")) {
                replaced.insert("ref".into(), kept.clone());
            }
            rule = Value::Object(replaced);
        } else if let Some(obj) = rule.as_object_mut() {
            for (k, v) in &edit {
                obj.insert(k.clone(), v.clone());
            }
        }
        match &position {
            None => rules.insert(at, rule),
            Some(p) => insert_at(&mut rules, rule, Some(p))?,
        }
        with_rules(previous, rules, now)
    })
    .await?;
    Ok(ok(json!(ruleset)))
}

/// Where the rule `rule_id` is in `ruleset`.
fn rule_position(ruleset: &Ruleset, rule_id: &str) -> Result<usize, ApiError> {
    ruleset
        .rules
        .iter()
        .position(|r| r.id == rule_id)
        .ok_or_else(|| rule_not_found(rule_id))
}

/// `DELETE /zones/{id}/rulesets/{ruleset_id}/rules/{rule_id}`: answers with the whole ruleset.
pub async fn delete_rule(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path((zone_id, ruleset_id, rule_id)): Path<(String, String, String)>,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let ruleset = change_ruleset(&state, &zone.id, &ruleset_id, |previous, now| {
        let mut rules = rules_json(previous);
        let at = rule_position(previous, &rule_id)?;
        rules.remove(at);
        with_rules(previous, rules, now)
    })
    .await?;
    Ok(ok(json!(ruleset)))
}

/// `GET /zones/{id}/pagerules`: Cloudflare's Page Rules, which Parapet does not keep (their
/// cache and origin settings are rulesets here): none. Clients that read them as part of a
/// zone (octodns, for its URL forwards) see an empty list.
pub async fn page_rules(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
) -> ApiResult {
    authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    Ok(ok(Value::Array(Vec::new())))
}

/// A write to Page Rules, or a read of one: refused, saying what to use instead.
pub async fn page_rule_refused(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(path): Path<Vec<String>>,
) -> ApiResult {
    let zone_id = path.first().cloned().unwrap_or_default();
    authorized_zone(&state, &auth, &zone_id, Access::Read).await?;
    if path.len() > 1 {
        return Err(ApiError::NotFound {
            code: 1002,
            message: "No page rule has this identifier: this zone has no page rules.".into(),
        });
    }
    Err(ApiError::bad(
        1004,
        format!(
            "Page Rules are not kept here: use rulesets (phases {})",
            PHASES.join(", ")
        ),
    ))
}
