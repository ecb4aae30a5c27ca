//! Origin Rules: a zone's ruleset for the `http_request_origin` phase, in Cloudflare's shapes
//! (`/zones/{id}/rulesets/phases/http_request_origin/entrypoint`).
//!
//! Each rule matches visitor host names and overrides, for those hosts, the port the edge
//! connects to, the `Host` header the origin sees, and the origin host itself. Expressions use
//! Cloudflare's rules language, limited to what routing by host needs: `http.host eq "…"`,
//! `http.host in {"…" "…"}`, `true`, parentheses and `or`; anything else is refused with an
//! error that names it, never silently ignored.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::name::{NameKind, normalize};
use crate::{FieldError, ModelError, ids};

pub const ORIGIN_PHASE: &str = "http_request_origin";
/// Cloudflare's limit on rules per phase entrypoint (Enterprise); lower plans have fewer.
const MAX_RULES: usize = 125;
const MAX_EXPRESSION: usize = 4096;

/// Which visitor hosts a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Hosts(BTreeSet<String>),
}

impl HostMatch {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Hosts(hosts) => hosts.contains(host),
        }
    }
}

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub version: String,
    pub action: String,
    pub action_parameters: RouteParameters,
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

/// A rule ready for the edge: whom it matches and what it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    pub hosts: HostMatch,
    pub params: RouteParameters,
}

impl Ruleset {
    /// A ruleset from a `PUT` body (`{"rules": [...]}`, optional `name`, `description`),
    /// replacing `previous` (whose id it keeps and whose version it increments). Rules keep
    /// their ids when the body names them. Every bad field of every rule is listed.
    pub fn from_json(
        zone_id: &str,
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
            match Rule::from_json(r, &format!("rules[{i}]"), previous, &version, now) {
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
            phase: ORIGIN_PHASE.to_owned(),
            version,
            last_updated: now.to_owned(),
            rules,
        })
    }

    /// The enabled rules, compiled, in order (a later match overrides an earlier one).
    pub fn compile(&self) -> Result<Vec<CompiledRule>, ModelError> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let hosts = parse_expression(&r.expression)
                .map_err(|m| ModelError::field(format!("rules[{i}].expression"), m))?;
            if r.enabled {
                out.push(CompiledRule {
                    hosts,
                    params: r.action_parameters.clone(),
                });
            }
        }
        Ok(out)
    }
}

impl Rule {
    fn from_json(
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
                if let Err(m) = parse_expression(s) {
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
        match obj.get("action") {
            Some(Value::String(a)) if a == "route" => {}
            Some(Value::String(a)) => errors.push(FieldError::new(
                field("action"),
                format!(
                    "'{}' is not an action of the {ORIGIN_PHASE} phase (only 'route')",
                    crate::name::printable(a)
                ),
            )),
            _ => errors.push(FieldError::new(field("action"), "is required: 'route'")),
        }
        let params = match obj.get("action_parameters") {
            Some(p) => match parse_route_parameters(p, &field("action_parameters")) {
                Ok(p) => p,
                Err(e) => {
                    errors.extend(e);
                    RouteParameters::default()
                }
            },
            None => {
                errors.push(FieldError::new(
                    field("action_parameters"),
                    "is required: host_header and/or origin",
                ));
                RouteParameters::default()
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
            action: "route".to_owned(),
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
    if out.host_header.is_none() && out.origin.is_none() && errors.is_empty() {
        errors.push(FieldError::new(at, "needs host_header and/or origin"));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    OpenSet,
    CloseSet,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '{' | '}' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '{' => Token::OpenSet,
                    _ => Token::CloseSet,
                });
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => value.push(e),
                            None => return Err("unterminated string".into()),
                        },
                        Some(c) => value.push(c),
                        None => return Err("unterminated string".into()),
                    }
                }
                out.push(Token::Str(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "(){}\"".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

/// Parses a rule expression into the hosts it matches.
pub fn parse_expression(s: &str) -> Result<HostMatch, String> {
    if s.len() > MAX_EXPRESSION {
        return Err(format!("longer than {MAX_EXPRESSION} characters"));
    }
    let tokens = tokenize(s)?;
    if tokens.is_empty() {
        return Err("is empty".into());
    }
    let mut pos = 0;
    let m = parse_or(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("unexpected {} at the end", describe(&tokens[pos])));
    }
    Ok(m)
}

fn describe(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("'{}'", crate::name::printable(w)),
        Token::Str(s) => format!("\"{}\"", crate::name::printable(s)),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::OpenSet => "'{'".into(),
        Token::CloseSet => "'}'".into(),
    }
}

fn union(a: HostMatch, b: HostMatch) -> HostMatch {
    match (a, b) {
        (HostMatch::Hosts(mut x), HostMatch::Hosts(y)) => {
            x.extend(y);
            HostMatch::Hosts(x)
        }
        _ => HostMatch::Any,
    }
}

fn parse_or(t: &[Token], pos: &mut usize) -> Result<HostMatch, String> {
    let mut m = parse_term(t, pos)?;
    while let Some(Token::Word(w)) = t.get(*pos) {
        match w.as_str() {
            "or" | "||" => {
                *pos += 1;
                m = union(m, parse_term(t, pos)?);
            }
            "and" | "&&" | "xor" | "^^" => {
                return Err(format!(
                    "'{w}' is not supported: origin rules here match on http.host joined with 'or'"
                ));
            }
            _ => return Err(format!("unexpected '{}'", crate::name::printable(w))),
        }
    }
    Ok(m)
}

fn host_value(s: &str) -> Result<String, String> {
    normalize(s, NameKind::Owner, "http.host")
        .map_err(|e| e.message)
        .and_then(|h| {
            if h.starts_with('*') {
                Err("http.host compares whole names; '*' is not a pattern here".into())
            } else {
                Ok(h)
            }
        })
}

fn parse_term(t: &[Token], pos: &mut usize) -> Result<HostMatch, String> {
    let Some(token) = t.get(*pos) else {
        return Err("ends where a condition was expected".into());
    };
    *pos += 1;
    match token {
        Token::Open => {
            let m = parse_or(t, pos)?;
            match t.get(*pos) {
                Some(Token::Close) => {
                    *pos += 1;
                    Ok(m)
                }
                _ => Err("a '(' is not closed".into()),
            }
        }
        Token::Word(w) if w == "true" => Ok(HostMatch::Any),
        Token::Word(w) if w == "http.host" => {
            let op = match t.get(*pos) {
                Some(Token::Word(op)) => op.as_str(),
                _ => return Err("http.host must be followed by 'eq' or 'in'".into()),
            };
            *pos += 1;
            match op {
                "eq" | "==" => match t.get(*pos) {
                    Some(Token::Str(s)) => {
                        *pos += 1;
                        Ok(HostMatch::Hosts(BTreeSet::from([host_value(s)?])))
                    }
                    _ => Err(format!("'http.host {op}' needs a quoted host name")),
                },
                "in" => {
                    if t.get(*pos) != Some(&Token::OpenSet) {
                        return Err(
                            "'http.host in' needs a set: {\"a.example\" \"b.example\"}".into()
                        );
                    }
                    *pos += 1;
                    let mut hosts = BTreeSet::new();
                    loop {
                        match t.get(*pos) {
                            Some(Token::Str(s)) => {
                                hosts.insert(host_value(s)?);
                                *pos += 1;
                            }
                            Some(Token::CloseSet) => {
                                *pos += 1;
                                break;
                            }
                            Some(other) => {
                                return Err(format!("unexpected {} in a set", describe(other)));
                            }
                            None => return Err("a '{' is not closed".into()),
                        }
                    }
                    if hosts.is_empty() {
                        return Err("an empty set matches nothing".into());
                    }
                    Ok(HostMatch::Hosts(hosts))
                }
                other => Err(format!(
                    "operator '{}' is not supported on http.host (use 'eq' or 'in')",
                    crate::name::printable(other)
                )),
            }
        }
        Token::Word(w) => Err(format!(
            "field '{}' is not supported: origin rules here match on http.host",
            crate::name::printable(w)
        )),
        other => Err(format!("unexpected {}", describe(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_match_hosts_joined_with_or() {
        let m = parse_expression(
            r#"http.host eq "A.example.com" or (http.host in {"b.example.com" "c.example.com"})"#,
        )
        .expect("accepted");
        assert!(m.matches("a.example.com"));
        assert!(m.matches("c.example.com"));
        assert!(!m.matches("d.example.com"));
        assert_eq!(parse_expression("true").expect("accepted"), HostMatch::Any);
    }

    #[test]
    fn unsupported_expressions_are_refused_by_name() {
        for (expr, says) in [
            (r#"http.request.uri.path eq "/a""#, "http.request.uri.path"),
            (
                r#"http.host eq "a.com" and http.host eq "b.com""#,
                "'and' is not supported",
            ),
            (r#"http.host contains "a""#, "'contains'"),
            (r#"http.host eq "a.com"#, "unterminated"),
            (r#"(http.host eq "a.com""#, "not closed"),
            ("", "empty"),
        ] {
            let err = parse_expression(expr).expect_err("refused");
            assert!(err.contains(says), "{expr}: {err}");
        }
    }

    #[test]
    fn rulesets_list_every_bad_field_and_keep_ids_on_update() {
        let err = Ruleset::from_json(
            "z",
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
        let first = Ruleset::from_json("z", &body, None, "t1").expect("accepted");
        assert_eq!(first.version, "1");
        let rule_id = first.rules[0].id.clone();
        let again = json!({"rules": [{"id": rule_id, "expression": "http.host eq \"b.com\"", "action": "route",
            "action_parameters": {"origin": {"port": 81}}}]});
        let second = Ruleset::from_json("z", &again, Some(&first), "t2").expect("accepted");
        assert_eq!(second.id, first.id);
        assert_eq!(second.version, "2");
        assert_eq!(second.rules[0].id, first.rules[0].id);
        let compiled = second.compile().expect("accepted");
        assert!(compiled[0].hosts.matches("b.com"));
        assert_eq!(
            compiled[0].params.origin.as_ref().expect("accepted").port,
            Some(81)
        );
    }
}
