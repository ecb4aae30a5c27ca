//! Zone rulesets, in Cloudflare's shapes (`/zones/{id}/rulesets/phases/{phase}/entrypoint`):
//!
//! - `http_request_origin` (Origin Rules): action `route` overrides, for matching requests, the
//!   port the edge connects to, the `Host` header the origin sees, and the origin host itself.
//! - `http_request_cache_settings` (Cache Rules): action `set_cache_settings` makes matching
//!   requests eligible or not, and sets edge and browser TTLs, the query part of the cache key,
//!   and serving stale while updating.
//!
//! Expressions are in Cloudflare's rules language ([`crate::expr`]); anything outside what the
//! edge evaluates is refused with an error that names it, never silently ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expr::{Expr, RequestFacts};
use crate::name::{NameKind, normalize};
use crate::{FieldError, ModelError, ids};

pub const ORIGIN_PHASE: &str = "http_request_origin";
pub const CACHE_PHASE: &str = "http_request_cache_settings";
/// The phases a zone may have an entrypoint ruleset for.
pub const PHASES: &[&str] = &[ORIGIN_PHASE, CACHE_PHASE];
/// Cloudflare's limit on rules per phase entrypoint (Enterprise); lower plans have fewer.
const MAX_RULES: usize = 125;

/// Where a matching request goes instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginOverride>,
    /// The server name sent to an HTTPS origin (SNI, and the name its certificate must have
    /// in `strict` mode); Cloudflare's `{"sni": {"value": ...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<SniOverride>,
}

/// Cloudflare's shape for an origin rule's server name: `{"value": "name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SniOverride {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub version: String,
    pub action: String,
    /// As given, once checked against the phase's action (see [`RuleAction`]).
    pub action_parameters: Value,
    pub expression: String,
    pub description: String,
    pub enabled: bool,
    pub last_updated: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

/// A zone's origin-phase entrypoint ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub id: String,
    pub zone_id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub phase: String,
    pub version: String,
    pub last_updated: String,
    pub rules: Vec<Rule>,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    Route(RouteParameters),
    /// Boxed: far larger than a route's.
    Cache(Box<CacheParameters>),
}

/// A rule ready for the edge: whom it matches and what it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    pub expr: Expr,
    pub action: RuleAction,
}

impl CompiledRule {
    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        self.expr.matches(request)
    }
}

/// The cache rules among `rules` (in the order the edge applies them) that match `request`,
/// merged, a later one's settings over an earlier one's (`None`: none matched). Boxed: the
/// result travels with the request.
pub fn matching_cache_parameters<'r>(
    rules: impl IntoIterator<Item = &'r CompiledRule>,
    request: &RequestFacts<'_>,
) -> Option<Box<CacheParameters>> {
    let mut merged: Option<Box<CacheParameters>> = None;
    for rule in rules.into_iter().filter(|r| r.matches(request)) {
        if let RuleAction::Cache(params) = &rule.action {
            merged.get_or_insert_with(Box::default).merge(params);
        }
    }
    merged
}

/// The action of each phase.
fn phase_action(phase: &str) -> &'static str {
    if phase == CACHE_PHASE {
        "set_cache_settings"
    } else {
        "route"
    }
}

/// Checks a rule's parameters for its phase.
fn check_parameters(phase: &str, p: &Value, at: &str) -> Result<RuleAction, Vec<FieldError>> {
    if phase == CACHE_PHASE {
        parse_cache_parameters(p, at).map(|c| RuleAction::Cache(Box::new(c)))
    } else {
        parse_route_parameters(p, at).map(RuleAction::Route)
    }
}

impl Ruleset {
    /// A ruleset from a `PUT` body (`{"rules": [...]}`, optional `name`, `description`),
    /// replacing `previous` (whose id it keeps and whose version it increments). Rules keep
    /// their ids when the body names them. Every bad field of every rule is listed.
    pub fn from_json(
        zone_id: &str,
        phase: &str,
        body: &Value,
        previous: Option<&Ruleset>,
        now: &str,
    ) -> Result<Self, ModelError> {
        let mut errors = Vec::new();
        let Some(obj) = body.as_object() else {
            return Err(ModelError::field("body", "must be a JSON object"));
        };
        let text = |key: &str, errors: &mut Vec<FieldError>| match obj.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                errors.push(FieldError::new(key, "must be a string"));
                String::new()
            }
        };
        let name = text("name", &mut errors);
        let description = text("description", &mut errors);
        let rules_json = match obj.get("rules") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                errors.push(FieldError::new("rules", "must be an array"));
                Vec::new()
            }
        };
        if rules_json.len() > MAX_RULES {
            errors.push(FieldError::new(
                "rules",
                format!("at most {MAX_RULES} rules per phase"),
            ));
        }
        let version = previous
            .and_then(|p| p.version.parse::<u64>().ok())
            .map_or(1, |v| v + 1)
            .to_string();
        let mut rules = Vec::with_capacity(rules_json.len());
        for (i, r) in rules_json.iter().enumerate() {
            match Rule::from_json(phase, r, &format!("rules[{i}]"), previous, &version, now) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.extend(e.errors().iter().cloned()),
            }
        }
        if !errors.is_empty() {
            return Err(ModelError::Invalid(errors));
        }
        Ok(Self {
            id: previous.map_or_else(ids::new_id, |p| p.id.clone()),
            zone_id: zone_id.to_owned(),
            name: if name.is_empty() {
                "default".to_owned()
            } else {
                name
            },
            description,
            kind: "zone".to_owned(),
            phase: phase.to_owned(),
            version,
            last_updated: now.to_owned(),
            rules,
        })
    }

    /// The enabled rules, compiled, in order (a later match overrides an earlier one).
    pub fn compile(&self) -> Result<Vec<CompiledRule>, ModelError> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let expr = crate::expr::parse(&r.expression)
                .map_err(|m| ModelError::field(format!("{at}.expression"), m))?;
            let action = check_parameters(&self.phase, &r.action_parameters, &at)
                .map_err(ModelError::Invalid)?;
            if r.enabled {
                out.push(CompiledRule { expr, action });
            }
        }
        Ok(out)
    }
}

impl Rule {
    fn from_json(
        phase: &str,
        r: &Value,
        at: &str,
        previous: Option<&Ruleset>,
        version: &str,
        now: &str,
    ) -> Result<Self, ModelError> {
        let mut errors = Vec::new();
        let field = |f: &str| format!("{at}.{f}");
        let Some(obj) = r.as_object() else {
            return Err(ModelError::field(at, "must be an object"));
        };
        let expression = match obj.get("expression") {
            Some(Value::String(s)) => {
                if let Err(m) = crate::expr::parse(s) {
                    errors.push(FieldError::new(field("expression"), m));
                }
                s.clone()
            }
            _ => {
                errors.push(FieldError::new(
                    field("expression"),
                    "is required (a string)",
                ));
                String::new()
            }
        };
        let action = phase_action(phase);
        match obj.get("action") {
            Some(Value::String(a)) if a == action => {}
            Some(Value::String(a)) => errors.push(FieldError::new(
                field("action"),
                format!(
                    "'{}' is not an action of the {phase} phase (only '{action}')",
                    crate::name::printable(a)
                ),
            )),
            _ => errors.push(FieldError::new(
                field("action"),
                format!("is required: '{action}'"),
            )),
        }
        let params = match obj.get("action_parameters") {
            Some(p) => match check_parameters(phase, p, &field("action_parameters")) {
                Ok(RuleAction::Route(r)) => serde_json::to_value(r).unwrap_or(Value::Null),
                Ok(RuleAction::Cache(c)) => serde_json::to_value(c).unwrap_or(Value::Null),
                Err(e) => {
                    errors.extend(e);
                    Value::Null
                }
            },
            None => {
                errors.push(FieldError::new(field("action_parameters"), "is required"));
                Value::Null
            }
        };
        let enabled = match obj.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(FieldError::new(field("enabled"), "must be true or false"));
                true
            }
        };
        let description = match obj.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                errors.push(FieldError::new(field("description"), "must be a string"));
                String::new()
            }
        };
        // A rule named by id keeps it (and its ref); an unknown id is an error, as Cloudflare's.
        let kept = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => {
                match previous.and_then(|p| p.rules.iter().find(|r| &r.id == id)) {
                    Some(rule) => Some(rule),
                    None => {
                        errors.push(FieldError::new(
                            field("id"),
                            "no rule with this id in the ruleset",
                        ));
                        None
                    }
                }
            }
            Some(_) => {
                errors.push(FieldError::new(field("id"), "must be a string"));
                None
            }
        };
        if !errors.is_empty() {
            return Err(ModelError::Invalid(errors));
        }
        let id = kept.map_or_else(ids::new_id, |r| r.id.clone());
        let reference = match obj.get("ref") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => kept.map_or_else(|| id.clone(), |r| r.reference.clone()),
        };
        Ok(Self {
            id,
            version: version.to_owned(),
            action: action.to_owned(),
            action_parameters: params,
            expression,
            description,
            enabled,
            last_updated: now.to_owned(),
            reference,
        })
    }
}

fn parse_route_parameters(p: &Value, at: &str) -> Result<RouteParameters, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = p.as_object() else {
        return Err(vec![FieldError::new(at, "must be an object")]);
    };
    let mut out = RouteParameters::default();
    for key in obj.keys() {
        if !matches!(key.as_str(), "host_header" | "origin" | "sni") {
            errors.push(FieldError::new(
                format!("{at}.{key}"),
                "is not a parameter of the route action",
            ));
        }
    }
    match obj.get("host_header") {
        None | Some(Value::Null) => {}
        Some(Value::String(h)) => {
            match normalize(h, NameKind::Target, &format!("{at}.host_header")) {
                Ok(h) => out.host_header = Some(h),
                Err(e) => errors.push(e),
            }
        }
        Some(_) => errors.push(FieldError::new(
            format!("{at}.host_header"),
            "must be a host name",
        )),
    }
    match obj.get("sni") {
        None | Some(Value::Null) => {}
        Some(Value::Object(s)) if s.len() == 1 && s.get("value").is_some_and(Value::is_string) => {
            let value = s.get("value").and_then(Value::as_str).unwrap_or_default();
            match normalize(value, NameKind::Target, &format!("{at}.sni.value")) {
                Ok(value) => out.sni = Some(SniOverride { value }),
                Err(e) => errors.push(e),
            }
        }
        Some(_) => errors.push(FieldError::new(
            format!("{at}.sni"),
            "must be {\"value\": a host name}",
        )),
    }
    match obj.get("origin") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            let mut origin = OriginOverride::default();
            match o.get("host") {
                None | Some(Value::Null) => {}
                Some(Value::String(h)) => {
                    match normalize(h, NameKind::Target, &format!("{at}.origin.host")) {
                        Ok(h) => origin.host = Some(h),
                        Err(e) => errors.push(e),
                    }
                }
                Some(_) => errors.push(FieldError::new(
                    format!("{at}.origin.host"),
                    "must be a host name",
                )),
            }
            match o.get("port") {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(port) if port > 0 => origin.port = Some(port),
                    _ => errors.push(FieldError::new(
                        format!("{at}.origin.port"),
                        "must be a port number between 1 and 65535",
                    )),
                },
            }
            if origin.host.is_none() && origin.port.is_none() && errors.is_empty() {
                errors.push(FieldError::new(
                    format!("{at}.origin"),
                    "needs a host or a port",
                ));
            }
            out.origin = Some(origin);
        }
        Some(_) => errors.push(FieldError::new(
            format!("{at}.origin"),
            "must be an object with host and/or port",
        )),
    }
    if out.host_header.is_none() && out.origin.is_none() && out.sni.is_none() && errors.is_empty() {
        errors.push(FieldError::new(at, "needs host_header, origin and/or sni"));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// What the matching cache rules say of storing one response at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeTtlRule {
    /// Nothing: the origin's headers decide.
    Origin,
    /// Not stored.
    NoStore,
    /// Stored, but stale at once: revalidated with the origin before every use.
    Revalidate,
    /// Stored and fresh for these seconds.
    Fresh(u32),
}

/// Cache Rules' `set_cache_settings` parameters (the subset the edge applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheParameters {
    /// Eligible for cache (`true`) or bypass (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_ttl: Option<EdgeTtl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_ttl: Option<BrowserTtl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<CacheKeyParameters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_stale: Option<ServeStale>,
    /// Cloudflare's "Respect strong ETags": a response with a strong `ETag` is passed on and
    /// stored byte for byte (never compressed), so that its validator stays strong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respect_strong_etags: Option<bool>,
    /// Settings Cloudflare clients (Terraform, cloudflare-go) send that ask for what the edge
    /// always does, kept as given: `origin_error_page_passthru` (the edge never puts a page of
    /// its own in place of an origin's answer), `additional_cacheable_ports` (it caches on
    /// every port it listens on), `origin_cache_control: true` (it follows the origin's
    /// `Cache-Control` as RFC 9111 asks) and `cache_reserve` (its disk tier keeps what memory
    /// cannot). What would ask for anything else is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_error_page_passthru: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_cacheable_ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_cache_control: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_reserve: Option<CacheReserve>,
}

/// Cloudflare's `cache_reserve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheReserve {
    pub eligible: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_file_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeTtl {
    /// `respect_origin`, `override_origin` or `bypass_by_default`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_code_ttl: Vec<StatusCodeTtl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeTtl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code_range: Option<StatusRange>,
    /// Seconds; `0`: stored but revalidated on every request (Cloudflare's no-cache); less:
    /// not stored.
    pub value: i64,
}

impl StatusCodeTtl {
    /// Whether this value is for `status`.
    pub fn names(&self, status: u16) -> bool {
        match (self.status_code, &self.status_code_range) {
            (Some(c), _) => c == status,
            (None, Some(r)) => (r.from..=r.to).contains(&status),
            _ => false,
        }
    }
}

/// Statuses `from..=to`; as on Cloudflare, either end may be left out (`from` alone: up to
/// 599; `to` alone: from 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    #[serde(default = "lowest_status")]
    pub from: u16,
    #[serde(default = "highest_status")]
    pub to: u16,
}

fn lowest_status() -> u16 {
    100
}

fn highest_status() -> u16 {
    599
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserTtl {
    /// `respect_origin`, `override_origin`, `bypass` or `bypass_by_default` (the origin's
    /// headers apply; this edge adds nothing when it sends none).
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheKeyParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_query_strings_order: Option<bool>,
    /// Cloudflare's Cache Deception Armor: an answer whose `Content-Type` is not one the URL's
    /// extension names is not stored (`/account.php/x.css` answered with a page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_deception_armor: Option<bool>,
    /// Cloudflare's device-type cache split (as `custom_key.user.device_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_by_device_type: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key: Option<CustomKey>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_string: Option<QueryStringKey>,
    /// Request headers whose values (`include`) or presence (`check_presence`) enter the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedKeyParts>,
    /// The same for cookies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<NamedKeyParts>,
    /// Visitor traits in the key: not supported, only all `false` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserKey>,
    /// The host in the key: the requested one; `resolved: true` is not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostKey>,
}

/// Cloudflare's `custom_key.user`: each trait must be `false` (or left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<bool>,
}

/// Cloudflare's `custom_key.host`: `resolved` must be `false` (or left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<bool>,
}

/// Names whose values, or only whether they are present, enter the cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKeyParts {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check_presence: Vec<String>,
    /// Cloudflare's `header.exclude_origin`: the edge never keys on the `Origin` header (but
    /// where an answer varies on it), so either value is kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_origin: Option<bool>,
}

/// Names a cache key may list per kind, at most.
const MAX_KEY_NAMES: usize = 16;

/// `include` or `exclude`, each `{"list": [...]}` or `{"all": true}` (or as older clients write
/// them, `"*"` or `[...]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryStringKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<QueryList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<QueryList>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "QueryListForm")]
pub struct QueryList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// The forms a query-string list is written in: Cloudflare's object, or the older `"*"` (every
/// parameter) and list of names that cloudflare-go and Terraform's v4 provider send.
#[derive(Deserialize)]
#[serde(untagged)]
enum QueryListForm {
    Object {
        #[serde(default)]
        list: Option<Vec<String>>,
        #[serde(default)]
        all: Option<bool>,
    },
    Names(Vec<String>),
    Star(String),
}

impl TryFrom<QueryListForm> for QueryList {
    type Error = String;

    fn try_from(form: QueryListForm) -> Result<Self, String> {
        match form {
            QueryListForm::Object { list, all } => Ok(Self { list, all }),
            QueryListForm::Names(names) => Ok(Self {
                list: Some(names),
                all: None,
            }),
            QueryListForm::Star(star) if star == "*" => Ok(Self {
                list: None,
                all: Some(true),
            }),
            QueryListForm::Star(_) => {
                Err("must be {\"list\": [...]}, {\"all\": true}, a list of names or \"*\"".into())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeStale {
    /// Left out (as cloudflare-go leaves an unset flag out): stale answers while updating.
    #[serde(default)]
    pub disable_stale_while_updating: bool,
}

/// Entries of an edge TTL's `status_code_ttl`, at most (each answer's status is looked up in
/// them).
const MAX_STATUS_CODE_TTLS: usize = 64;
/// Query parameter names a cache key includes or excludes, at most (each request's parameters
/// are looked up in them).
const MAX_QUERY_NAMES: usize = 64;

/// The longest TTL a rule may set (a year).
const MAX_TTL: u32 = 365 * 24 * 3600;

fn parse_cache_parameters(p: &Value, at: &str) -> Result<CacheParameters, Vec<FieldError>> {
    let mut params: CacheParameters =
        serde_json::from_value(p.clone()).map_err(|e| vec![FieldError::new(at, e.to_string())])?;
    let mut errors = Vec::new();
    if let Some(ttl) = &params.edge_ttl {
        let f = format!("{at}.edge_ttl");
        match ttl.mode.as_str() {
            "respect_origin" | "bypass_by_default" => {}
            "override_origin" => {
                if ttl.default.is_none_or(|d| d == 0 || d > MAX_TTL) {
                    errors.push(FieldError::new(
                        format!("{f}.default"),
                        format!("override_origin needs a default between 1 and {MAX_TTL} seconds"),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                format!("{f}.mode"),
                format!(
                    "'{}' is not respect_origin, override_origin or bypass_by_default",
                    crate::name::printable(other)
                ),
            )),
        }
        if ttl.status_code_ttl.len() > MAX_STATUS_CODE_TTLS {
            errors.push(FieldError::new(
                format!("{f}.status_code_ttl"),
                format!("at most {MAX_STATUS_CODE_TTLS} entries"),
            ));
        }
        for (i, s) in ttl.status_code_ttl.iter().enumerate() {
            let g = format!("{f}.status_code_ttl[{i}]");
            let ok = match (s.status_code, &s.status_code_range) {
                (Some(c), None) => (100..=599).contains(&c),
                (None, Some(r)) => (100..=599).contains(&r.from) && r.from <= r.to && r.to <= 599,
                _ => false,
            };
            if !ok {
                errors.push(FieldError::new(
                    g.clone(),
                    "needs a status_code or a status_code_range within 100-599",
                ));
            }
            if s.value > i64::from(MAX_TTL) {
                errors.push(FieldError::new(
                    format!("{g}.value"),
                    format!("at most {MAX_TTL} seconds"),
                ));
            }
        }
    }
    if let Some(ttl) = &params.browser_ttl {
        let f = format!("{at}.browser_ttl");
        match ttl.mode.as_str() {
            "respect_origin" | "bypass" | "bypass_by_default" => {}
            "override_origin" => {
                if ttl.default.is_none_or(|d| d > MAX_TTL) {
                    errors.push(FieldError::new(
                        format!("{f}.default"),
                        format!("override_origin needs a default of at most {MAX_TTL} seconds"),
                    ));
                }
            }
            other => errors.push(FieldError::new(
                format!("{f}.mode"),
                format!(
                    "'{}' is not respect_origin, override_origin, bypass or bypass_by_default",
                    crate::name::printable(other)
                ),
            )),
        }
    }
    if params.origin_cache_control == Some(false) {
        errors.push(FieldError::new(
            format!("{at}.origin_cache_control"),
            "only true is supported: the edge follows the origin's Cache-Control as RFC 9111 asks",
        ));
    }
    if let Some(ports) = &params.additional_cacheable_ports
        && ports.contains(&0)
    {
        errors.push(FieldError::new(
            format!("{at}.additional_cacheable_ports"),
            "ports are from 1 to 65535",
        ));
    }
    // What a Cloudflare export writes as `false`; `true` asks for what Parapet does not do.
    if let Some(key) = &params.cache_key {
        let f = format!("{at}.cache_key");
        let custom = key.custom_key.as_ref();
        let user = custom.and_then(|c| c.user.as_ref());
        for (name, flag) in [
            ("custom_key.user.geo", user.and_then(|u| u.geo)),
            ("custom_key.user.lang", user.and_then(|u| u.lang)),
            (
                "custom_key.host.resolved",
                custom
                    .and_then(|c| c.host.as_ref())
                    .and_then(|h| h.resolved),
            ),
        ] {
            if flag == Some(true) {
                errors.push(FieldError::new(
                    format!("{f}.{name}"),
                    "is not supported by Parapet: only false is accepted",
                ));
            }
        }
        if custom
            .and_then(|c| c.cookie.as_ref())
            .is_some_and(|c| c.exclude_origin.is_some())
        {
            errors.push(FieldError::new(
                format!("{f}.custom_key.cookie.exclude_origin"),
                "is not a cookie key field",
            ));
        }
    }
    let custom = params
        .cache_key
        .as_mut()
        .and_then(|k| k.custom_key.as_mut());
    for (kind, parts) in custom
        .map(|c| [("header", c.header.as_mut()), ("cookie", c.cookie.as_mut())])
        .into_iter()
        .flatten()
    {
        let Some(parts) = parts else { continue };
        let f = format!("{at}.cache_key.custom_key.{kind}");
        for (list_name, list) in [
            ("include", &mut parts.include),
            ("check_presence", &mut parts.check_presence),
        ] {
            if list.len() > MAX_KEY_NAMES {
                errors.push(FieldError::new(
                    format!("{f}.{list_name}"),
                    format!("at most {MAX_KEY_NAMES} names"),
                ));
            }
            for (i, name) in list.iter_mut().enumerate() {
                let token = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token {
                    errors.push(FieldError::new(
                        format!("{f}.{list_name}[{i}]"),
                        format!("'{}' is not a {kind} name", crate::name::printable(name)),
                    ));
                }
                if kind == "header" {
                    *name = name.to_ascii_lowercase();
                }
            }
        }
    }
    if let Some(q) = params
        .cache_key
        .as_ref()
        .and_then(|k| k.custom_key.as_ref())
        .and_then(|c| c.query_string.as_ref())
    {
        let f = format!("{at}.cache_key.custom_key.query_string");
        if q.include.is_some() && q.exclude.is_some() {
            errors.push(FieldError::new(f.clone(), "include or exclude, not both"));
        }
        for (name, list) in [("include", &q.include), ("exclude", &q.exclude)] {
            if let Some(l) = list
                && l.list.is_some() == (l.all == Some(true))
            {
                errors.push(FieldError::new(
                    format!("{f}.{name}"),
                    "needs either a list of parameter names or all: true",
                ));
            }
            if let Some(names) = list.as_ref().and_then(|l| l.list.as_ref())
                && names.len() > MAX_QUERY_NAMES
            {
                errors.push(FieldError::new(
                    format!("{f}.{name}.list"),
                    format!("at most {MAX_QUERY_NAMES} parameter names"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(params)
    } else {
        Err(errors)
    }
}

impl CacheParameters {
    /// Whether the key holds the visitor's device type (mobile, tablet or desktop).
    pub fn keys_device_type(&self) -> bool {
        self.cache_key.as_ref().is_some_and(|k| {
            k.cache_by_device_type == Some(true)
                || k.custom_key
                    .as_ref()
                    .and_then(|c| c.user.as_ref())
                    .and_then(|u| u.device_type)
                    == Some(true)
        })
    }

    /// `later` applied over `self`: each setting `later` has replaces this one's.
    pub fn merge(&mut self, later: &CacheParameters) {
        if later.cache.is_some() {
            self.cache = later.cache;
        }
        if later.edge_ttl.is_some() {
            self.edge_ttl.clone_from(&later.edge_ttl);
        }
        if later.browser_ttl.is_some() {
            self.browser_ttl.clone_from(&later.browser_ttl);
        }
        if later.cache_key.is_some() {
            self.cache_key.clone_from(&later.cache_key);
        }
        if later.serve_stale.is_some() {
            self.serve_stale.clone_from(&later.serve_stale);
        }
        if later.respect_strong_etags.is_some() {
            self.respect_strong_etags = later.respect_strong_etags;
        }
    }

    /// Whether a response with `etag` is kept byte for byte (a "respect strong ETags" rule and
    /// a strong `ETag`).
    pub fn keeps_bytes_of(&self, etag: Option<&[u8]>) -> bool {
        self.respect_strong_etags == Some(true) && etag.is_some_and(|e| !e.starts_with(b"W/"))
    }

    /// The edge TTL a rule sets for a response with `status` (`None`: the origin decides;
    /// `Some(0)`: not stored). See [`Self::edge_ttl_rule_for`], which tells a status TTL of 0
    /// (stored, always revalidated) from a negative one.
    pub fn edge_ttl_for(&self, status: u16) -> Option<u32> {
        match self.edge_ttl_rule_for(status) {
            EdgeTtlRule::Origin => None,
            EdgeTtlRule::NoStore | EdgeTtlRule::Revalidate => Some(0),
            EdgeTtlRule::Fresh(secs) => Some(secs),
        }
    }

    /// Whether a `status_code_ttl` value names `status` (which then may be stored whatever
    /// it is, as Cloudflare's "cache by status code" does).
    pub fn names_status(&self, status: u16) -> bool {
        self.edge_ttl
            .as_ref()
            .is_some_and(|ttl| ttl.status_code_ttl.iter().any(|s| s.names(status)))
    }

    /// What a rule says of storing a response with `status`, as Cloudflare reads its
    /// `status_code_ttl` values: positive seconds fresh, `0` no-cache (stored, revalidated
    /// before every use), negative no-store.
    pub fn edge_ttl_rule_for(&self, status: u16) -> EdgeTtlRule {
        let Some(ttl) = self.edge_ttl.as_ref() else {
            return EdgeTtlRule::Origin;
        };
        let by_status = ttl.status_code_ttl.iter().find(|s| s.names(status));
        if let Some(s) = by_status {
            return match u32::try_from(s.value) {
                Ok(0) => EdgeTtlRule::Revalidate,
                Ok(secs) => EdgeTtlRule::Fresh(secs),
                Err(_) => EdgeTtlRule::NoStore,
            };
        }
        match (ttl.mode.as_str(), ttl.default) {
            ("override_origin", Some(secs)) => EdgeTtlRule::Fresh(secs),
            _ => EdgeTtlRule::Origin,
        }
    }

    /// `target` (path and query) as the cache key has it: the query shaped by
    /// [`Self::key_query`], and left out with its `?` when nothing of it is kept.
    pub fn key_target<'t>(&self, target: &'t str) -> Cow<'t, str> {
        let Some((path, query)) = target.split_once('?') else {
            return Cow::Borrowed(target);
        };
        let query = self.key_query(query);
        Cow::Owned(if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        })
    }

    /// The query string as the cache key sees it: parameters kept or dropped, maybe sorted.
    pub fn key_query(&self, query: &str) -> String {
        let key = self.cache_key.as_ref();
        let rule = key
            .and_then(|k| k.custom_key.as_ref())
            .and_then(|c| c.query_string.as_ref());
        let sort = key.and_then(|k| k.ignore_query_strings_order) == Some(true);
        if rule.is_none() && !sort {
            return query.to_owned();
        }
        let name_of = |p: &str| p.split('=').next().unwrap_or("").to_owned();
        let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        if let Some(q) = rule {
            if let Some(list) = q.include.as_ref().and_then(|inc| inc.list.as_ref()) {
                params.retain(|p| list.contains(&name_of(p)));
            }
            if let Some(exc) = &q.exclude {
                match &exc.list {
                    Some(list) => params.retain(|p| !list.contains(&name_of(p))),
                    None => params.clear(),
                }
            }
        }
        if sort {
            params.sort_unstable();
        }
        params.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_looked_up_for_every_request_are_bounded() {
        let names: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
        let codes: Vec<Value> = (0..65)
            .map(|i| serde_json::json!({"status_code": 200 + i, "value": 60}))
            .collect();
        for (params, field) in [
            (
                serde_json::json!({"cache_key": {"custom_key": {"query_string": {"include": {"list": names}}}}}),
                "query_string.include.list",
            ),
            (
                serde_json::json!({"edge_ttl": {"mode": "respect_origin", "status_code_ttl": codes}}),
                "edge_ttl.status_code_ttl",
            ),
        ] {
            let errors = parse_cache_parameters(&params, "p").expect_err("too many");
            assert!(
                errors.iter().any(|e| e.field.ends_with(field)),
                "{errors:?}"
            );
        }
        let few = serde_json::json!({"cache_key": {"custom_key": {"query_string": {"include": {"list": ["a", "b"]}}}}});
        assert!(parse_cache_parameters(&few, "p").is_ok());
    }

    #[test]
    fn rulesets_list_every_bad_field_and_keep_ids_on_update() {
        let err = Ruleset::from_json(
            "z",
            ORIGIN_PHASE,
            &json!({"rules": [
                {"expression": "http.host eq \"a.com\"", "action": "block"},
                {"expression": "bogus", "action": "route", "action_parameters": {"origin": {"port": 70000}}}
            ]}),
            None,
            "now",
        )
        .expect_err("refused");
        let fields: Vec<_> = err.errors().iter().map(|e| e.field.clone()).collect();
        assert!(fields.contains(&"rules[0].action".to_owned()), "{fields:?}");
        assert!(
            fields.contains(&"rules[0].action_parameters".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"rules[1].expression".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"rules[1].action_parameters.origin.port".to_owned()),
            "{fields:?}"
        );

        let body = json!({"rules": [{"expression": "http.host eq \"a.com\"", "action": "route",
            "action_parameters": {"host_header": "internal.example.net", "origin": {"port": 8080}}}]});
        let first = Ruleset::from_json("z", ORIGIN_PHASE, &body, None, "t1").expect("accepted");
        assert_eq!(first.version, "1");
        let rule_id = first.rules[0].id.clone();
        let again = json!({"rules": [{"id": rule_id, "expression": "http.host eq \"b.com\"", "action": "route",
            "action_parameters": {"origin": {"port": 81}, "sni": {"value": "Origin.B.com"}}}]});
        let second =
            Ruleset::from_json("z", ORIGIN_PHASE, &again, Some(&first), "t2").expect("accepted");
        assert_eq!(second.id, first.id);
        assert_eq!(second.version, "2");
        assert_eq!(second.rules[0].id, first.rules[0].id);
        let compiled = second.compile().expect("accepted");
        assert!(compiled[0].matches(&RequestFacts {
            host: "b.com",
            path: "/"
        }));
        let RuleAction::Route(route) = &compiled[0].action else {
            panic!("a route rule");
        };
        assert_eq!(route.origin.as_ref().expect("origin").port, Some(81));
        assert_eq!(
            route.sni.as_ref().map(|s| s.value.as_str()),
            Some("origin.b.com"),
            "the stored form compiles again to the same server name"
        );
        let bad_sni = json!({"rules": [{"expression": "true", "action": "route",
            "action_parameters": {"sni": "plain-string.com"}}]});
        assert!(Ruleset::from_json("z", ORIGIN_PHASE, &bad_sni, None, "t3").is_err());
    }

    /// One cache rule's parameters as `from_json` reads them.
    fn cache_params(p: serde_json::Value) -> Result<CacheParameters, String> {
        let set = Ruleset::from_json(
            "z",
            CACHE_PHASE,
            &json!({"rules": [{"expression": "true", "action": "set_cache_settings",
                               "action_parameters": p}]}),
            None,
            "t",
        )
        .map_err(|e| e.to_string())?;
        match &set.compile().map_err(|e| e.to_string())?[0].action {
            RuleAction::Cache(c) => Ok((**c).clone()),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn cloudflare_exports_are_accepted_and_what_they_enable_is_refused_by_name() {
        // As a Cloudflare GET returns a cache rule: defaults written out as false.
        let exported = cache_params(json!({
            "cache": true,
            "edge_ttl": {"mode": "bypass_by_default", "status_code_ttl": [
                {"status_code_range": {"from": 500}, "value": -1},
                {"status_code_range": {"to": 199}, "value": 30},
                {"status_code": 404, "value": 0}
            ]},
            "browser_ttl": {"mode": "bypass_by_default"},
            "cache_key": {
                "cache_deception_armor": false,
                "cache_by_device_type": false,
                "ignore_query_strings_order": false,
                "custom_key": {
                    "user": {"device_type": false, "geo": false, "lang": false},
                    "host": {"resolved": false},
                    "header": {"include": ["X-V"], "exclude_origin": false}
                }
            }
        }))
        .expect("accepted");
        assert_eq!(exported.edge_ttl_rule_for(503), EdgeTtlRule::NoStore);
        assert_eq!(exported.edge_ttl_rule_for(599), EdgeTtlRule::NoStore);
        assert_eq!(exported.edge_ttl_rule_for(101), EdgeTtlRule::Fresh(30));
        assert_eq!(exported.edge_ttl_rule_for(404), EdgeTtlRule::Revalidate);
        assert_eq!(exported.edge_ttl_for(404), Some(0));
        assert_eq!(exported.edge_ttl_rule_for(200), EdgeTtlRule::Origin);

        for (field, p) in [
            (
                "cache_key.custom_key.user.geo",
                json!({"cache_key": {"custom_key": {"user": {"geo": true}}}}),
            ),
            (
                "cache_key.custom_key.host.resolved",
                json!({"cache_key": {"custom_key": {"host": {"resolved": true}}}}),
            ),
        ] {
            let e = cache_params(p).expect_err("refused");
            assert!(
                e.contains(field) && e.contains("not supported"),
                "{field}: {e}"
            );
        }
        let e = cache_params(json!({"edge_ttl": {"mode": "respect_origin",
            "status_code_ttl": [{"status_code_range": {"from": 500, "to": 400}, "value": 1}]}}))
        .expect_err("refused");
        assert!(e.contains("status_code_ttl[0]"), "{e}");
    }

    #[test]
    fn rules_as_cloudflare_go_and_terraform_write_them_are_accepted() {
        // Query-string lists in the older forms, read as the object form.
        let star = cache_params(json!({"cache_key": {"custom_key": {
            "query_string": {"exclude": "*"},
            "header": {"include": ["x-v"], "exclude_origin": true}
        }}}))
        .expect("\"*\"");
        let names = cache_params(json!({"cache_key": {"custom_key": {
            "query_string": {"include": ["a", "b"]}
        }}}))
        .expect("a list of names");
        let query = |p: &CacheParameters| {
            p.cache_key
                .as_ref()
                .and_then(|k| k.custom_key.as_ref())
                .and_then(|c| c.query_string.clone())
                .expect("query_string")
        };
        assert_eq!(query(&star).exclude.and_then(|l| l.all), Some(true));
        assert_eq!(
            query(&names).include.and_then(|l| l.list),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(
            cache_params(json!({"cache_key": {"custom_key": {"query_string": {"exclude": "a"}}}}))
                .is_err()
        );
        // Fields that ask for what the edge always does, and a serve_stale with its flag
        // left out.
        let p = cache_params(json!({
            "cache": true,
            "origin_error_page_passthru": false,
            "origin_cache_control": true,
            "additional_cacheable_ports": [8443, 8080],
            "cache_reserve": {"eligible": true, "minimum_file_size": 1024},
            "serve_stale": {}
        }))
        .expect("accepted");
        assert_eq!(
            p.serve_stale.map(|s| s.disable_stale_while_updating),
            Some(false)
        );
        for bad in [
            json!({"origin_cache_control": false}),
            json!({"additional_cacheable_ports": [0]}),
        ] {
            assert!(cache_params(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_rules_validate_merge_and_shape_the_key() {
        let bad = Ruleset::from_json(
            "z",
            CACHE_PHASE,
            &json!({"rules": [
                {"expression": "true", "action": "set_cache_settings",
                 "action_parameters": {"edge_ttl": {"mode": "override_origin"}}},
                {"expression": "true", "action": "set_cache_settings",
                 "action_parameters": {"bogus": 1}},
                {"expression": "true", "action": "route", "action_parameters": {}}
            ]}),
            None,
            "t",
        )
        .expect_err("refused");
        let text = bad.to_string();
        assert!(
            text.contains("rules[0].action_parameters.edge_ttl.default"),
            "{text}"
        );
        assert!(text.contains("unknown field `bogus`"), "{text}");
        assert!(text.contains("rules[2].action"), "{text}");

        let set = Ruleset::from_json(
            "z",
            CACHE_PHASE,
            &json!({"rules": [
                {"expression": "true", "action": "set_cache_settings",
                 "action_parameters": {"cache": true, "edge_ttl": {"mode": "override_origin", "default": 60,
                   "status_code_ttl": [{"status_code_range": {"from": 400, "to": 499}, "value": 5}]}}},
                {"expression": "starts_with(http.request.uri.path, \"/api/\")", "action": "set_cache_settings",
                 "action_parameters": {"cache": false}},
                {"expression": "true", "action": "set_cache_settings",
                 "action_parameters": {"cache_key": {"ignore_query_strings_order": true,
                   "custom_key": {"query_string": {"exclude": {"list": ["utm_source"]}}}}}},
                {"expression": "true", "action": "set_cache_settings",
                 "action_parameters": {"respect_strong_etags": true}}
            ]}),
            None,
            "t",
        )
        .expect("accepted");
        let rules = set.compile().expect("compiles");
        let mut merged = CacheParameters::default();
        let api = RequestFacts {
            host: "a.com",
            path: "/api/x",
        };
        for rule in rules.iter().filter(|r| r.matches(&api)) {
            if let RuleAction::Cache(c) = &rule.action {
                merged.merge(c);
            }
        }
        assert_eq!(merged.cache, Some(false), "the later rule wins");
        assert_eq!(merged.edge_ttl_for(200), Some(60));
        assert_eq!(merged.edge_ttl_for(404), Some(5));
        assert_eq!(merged.key_query("b=2&utm_source=x&a=1"), "a=1&b=2");
        assert!(merged.keeps_bytes_of(Some(b"\"v1\"")));
        assert!(!merged.keeps_bytes_of(Some(b"W/\"v1\"")) && !merged.keeps_bytes_of(None));
        assert!(!CacheParameters::default().keeps_bytes_of(Some(b"\"v1\"")));
    }
}
