//! Zone settings (`/zones/{id}/settings/{name}`), as Cloudflare names and shapes them, plus the
//! few Parapet adds for what Cloudflare does not let a customer change.
//!
//! A zone stores only the settings someone changed; every other setting has its default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ModelError;

/// What values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// A whole number of seconds in `min..=max`.
    Seconds { min: u64, max: u64 },
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// Cloudflare's `security_header`: `{"strict_transport_security": {...}}`.
    SecurityHeader,
}

/// One setting a zone has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDef {
    pub id: &'static str,
    pub kind: SettingKind,
    /// The value when nobody changed it (`None`: the node's configured default; JSON for
    /// [`SettingKind::SecurityHeader`]).
    pub default: Option<&'static str>,
}

/// Every zone setting, in the order the API lists them.
pub const SETTINGS: &[SettingDef] = &[
    // Cloudflare's 0-RTT: Parapet takes no early data.
    SettingDef {
        id: "0rtt",
        kind: SettingKind::Choice(&["off"]),
        default: Some("off"),
    },
    // Parapet's: how the ACME CA validates the zone's names for automatic certificates
    // (wildcards always use dns-01).
    SettingDef {
        id: "acme_challenge",
        kind: SettingKind::Choice(&["dns-01", "http-01", "tls-alpn-01"]),
        default: Some("dns-01"),
    },
    // Cloudflare's Always Online: Parapet keeps no archive of a site to show while its origin
    // is down (stale answers aside, as cache rules and `stale-if-error` allow).
    SettingDef {
        id: "always_online",
        kind: SettingKind::Choice(&["off"]),
        default: Some("off"),
    },
    // Cloudflare's: plain-HTTP requests are redirected (301) to HTTPS.
    SettingDef {
        id: "always_use_https",
        kind: SettingKind::Choice(&["on", "off"]),
        default: Some("off"),
    },
    // Cloudflare's: Parapet does not rewrite links in HTML bodies.
    SettingDef {
        id: "automatic_https_rewrites",
        kind: SettingKind::Choice(&["off"]),
        default: Some("off"),
    },
    // Cloudflare's: a compressible answer goes in brotli to a visitor that accepts it (else in
    // zstd or gzip), always.
    SettingDef {
        id: "brotli",
        kind: SettingKind::Choice(&["on"]),
        default: Some("on"),
    },
    // Cloudflare's Browser Cache TTL: 0, "respect existing headers" (the origin's
    // Cache-Control reaches the browser); cache rules set browser TTLs per path.
    SettingDef {
        id: "browser_cache_ttl",
        kind: SettingKind::Seconds { min: 0, max: 0 },
        default: Some("0"),
    },
    // Cloudflare's Caching Level: "aggressive" (its "Standard": the query string is part of
    // the cache key); cache rules change the key per path.
    SettingDef {
        id: "cache_level",
        kind: SettingKind::Choice(&["aggressive"]),
        default: Some("aggressive"),
    },
    // Cloudflare's: bypass the cache for the whole zone while its site is being worked on.
    SettingDef {
        id: "development_mode",
        kind: SettingKind::Choice(&["on", "off"]),
        default: Some("off"),
    },
    // Cloudflare's: HTTP/2 for visitors, always (over TLS by ALPN; h2c by prior knowledge);
    // no HTTP/3.
    SettingDef {
        id: "http2",
        kind: SettingKind::Choice(&["on"]),
        default: Some("on"),
    },
    SettingDef {
        id: "http3",
        kind: SettingKind::Choice(&["off"]),
        default: Some("off"),
    },
    // Cloudflare's: a proxied name answers with the edge's IPv6 addresses too (those
    // `--edge-ipv6` gives); a record's `settings.ipv4_only` leaves them out.
    SettingDef {
        id: "ipv6",
        kind: SettingKind::Choice(&["on"]),
        default: Some("on"),
    },
    // Cloudflare's: the lowest TLS version visitors may use. Parapet speaks TLS 1.2 and 1.3
    // only, so "1.0" and "1.1" allow what "1.2" allows.
    SettingDef {
        id: "min_tls_version",
        kind: SettingKind::Choice(&["1.0", "1.1", "1.2", "1.3"]),
        default: Some("1.0"),
    },
    // Cloudflare's: Parapet does not advertise HTTP/2 over TLS to plain-HTTP visitors.
    SettingDef {
        id: "opportunistic_encryption",
        kind: SettingKind::Choice(&["off"]),
        default: Some("off"),
    },
    SettingDef {
        id: "origin_max_http_version",
        kind: SettingKind::Choice(&["1", "2"]),
        default: Some("1"),
    },
    // Parapet's: how long to wait for a connection to the origin (the node's
    // `edge_connect_timeout` unless set).
    SettingDef {
        id: "proxy_connect_timeout",
        kind: SettingKind::Seconds { min: 1, max: 100 },
        default: None,
    },
    // Parapet's: how long an unused connection to the origin stays open for reuse.
    SettingDef {
        id: "proxy_idle_timeout",
        kind: SettingKind::Seconds { min: 1, max: 900 },
        default: Some("90"),
    },
    SettingDef {
        id: "proxy_read_timeout",
        kind: SettingKind::Seconds { min: 1, max: 6000 },
        default: None,
    },
    // Cloudflare's HSTS setting.
    SettingDef {
        id: "security_header",
        kind: SettingKind::SecurityHeader,
        default: Some(
            r#"{"strict_transport_security":{"enabled":false,"max_age":0,"include_subdomains":false,"preload":false,"nosniff":false}}"#,
        ),
    },
    // Cloudflare's Security Level: Parapet challenges no visitor (its protections are limits
    // and refusals, not challenges).
    SettingDef {
        id: "security_level",
        kind: SettingKind::Choice(&["off"]),
        default: Some("off"),
    },
    // Cloudflare's Authenticated Origin Pulls: the edge presents its client certificate to
    // the origin over TLS.
    SettingDef {
        id: "tls_client_auth",
        kind: SettingKind::Choice(&["on", "off"]),
        default: Some("off"),
    },
    // Cloudflare's: TLS 1.3 for visitors. Parapet always offers it (without 0-RTT, "zrt").
    SettingDef {
        id: "tls_1_3",
        kind: SettingKind::Choice(&["on"]),
        default: Some("on"),
    },
    // Cloudflare's SSL mode: how the edge reaches the origin for HTTPS visitors ("off": no
    // HTTPS for visitors at all; "flexible": plain HTTP to the origin; "full": HTTPS without
    // checking the origin's certificate; "strict": HTTPS with a valid certificate).
    SettingDef {
        id: "ssl",
        kind: SettingKind::Choice(&["off", "flexible", "full", "strict"]),
        default: Some("flexible"),
    },
    // Cloudflare's: WebSocket upgrades pass to the origin, always.
    SettingDef {
        id: "websockets",
        kind: SettingKind::Choice(&["on"]),
        default: Some("on"),
    },
];

/// How the ACME CA validates a zone's names (the `acme_challenge` setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A TXT record Parapet's DNS serves.
    #[default]
    Dns01,
    /// A file the edge serves over plain HTTP.
    Http01,
    /// A certificate the edge presents for ALPN `acme-tls/1`.
    TlsAlpn01,
}

/// How the edge reaches the origin for HTTPS visitors (the `ssl` setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    /// No HTTPS for visitors: HTTPS requests are redirected to HTTP.
    Off,
    /// Plain HTTP to the origin.
    #[default]
    Flexible,
    /// HTTPS to the origin, any certificate.
    Full,
    /// HTTPS to the origin with a certificate valid for the origin's name.
    Strict,
}

/// HTTP Strict Transport Security for a zone's HTTPS responses (`security_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
    /// Also send `X-Content-Type-Options: nosniff`.
    pub nosniff: bool,
}

impl Hsts {
    /// The `Strict-Transport-Security` header value.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// The longest HSTS max-age Cloudflare offers (12 months).
const HSTS_MAX_AGE: u64 = 31_536_000;

/// The canonical form of a `security_header` value, or why it is not one.
fn check_security_header(value: &Value) -> Result<Value, ModelError> {
    let bad = |m: &str| ModelError::field("value", format!("security_header: {m}"));
    let Some(sts) = value
        .as_object()
        .and_then(|o| o.get("strict_transport_security"))
        .and_then(Value::as_object)
    else {
        return Err(bad(
            "must be {\"strict_transport_security\": {\"enabled\": ..., \"max_age\": ..., ...}}",
        ));
    };
    let known = [
        "enabled",
        "max_age",
        "include_subdomains",
        "preload",
        "nosniff",
    ];
    if let Some(k) = sts.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(&format!(
            "unknown field strict_transport_security.{}",
            crate::name::printable(k)
        )));
    }
    let flag = |k: &str| match sts.get(k) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(&format!(
            "strict_transport_security.{k} must be true or false"
        ))),
    };
    let max_age = match sts.get("max_age") {
        None => 0,
        Some(v) => match v.as_number().and_then(whole) {
            Some(n) if n <= HSTS_MAX_AGE => n,
            _ => {
                return Err(bad(&format!(
                    "strict_transport_security.max_age must be a whole number of seconds up to {HSTS_MAX_AGE}"
                )));
            }
        },
    };
    Ok(json!({"strict_transport_security": {
        "enabled": flag("enabled")?,
        "max_age": max_age,
        "include_subdomains": flag("include_subdomains")?,
        "preload": flag("preload")?,
        "nosniff": flag("nosniff")?,
    }}))
}

/// The HSTS a canonical `security_header` value asks for, if enabled.
fn hsts_of(value: &Value) -> Option<Hsts> {
    let sts = value.get("strict_transport_security")?;
    let flag = |k: &str| sts.get(k).and_then(Value::as_bool).unwrap_or(false);
    flag("enabled").then(|| Hsts {
        max_age: sts.get("max_age").and_then(Value::as_u64).unwrap_or(0),
        include_subdomains: flag("include_subdomains"),
        preload: flag("preload"),
        nosniff: flag("nosniff"),
    })
}

/// How long `development_mode` stays on once turned on, as on Cloudflare (three hours).
pub const DEVELOPMENT_MODE_SECS: u64 = 3 * 60 * 60;

pub fn setting_def(id: &str) -> Option<&'static SettingDef> {
    SETTINGS.iter().find(|s| s.id == id)
}

/// A value someone set, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetValue {
    pub value: Value,
    pub modified_on: String,
}

/// A zone's changed settings, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSettings {
    pub zone_id: String,
    pub values: BTreeMap<String, SetValue>,
}

impl SettingDef {
    /// Whether a customer can change it: not when it takes a single value.
    pub fn editable(&self) -> bool {
        !matches!(self.kind, SettingKind::Choice(choices) if choices.len() == 1)
            && !matches!(self.kind, SettingKind::Seconds { min, max } if min == max)
    }

    /// The canonical stored form of `value`, or why it is not one this setting takes.
    /// (A whole number written as a float, `100.0`, is that number: SDKs type these as
    /// numbers.)
    /// Numbers may come as JSON numbers or numeric strings, as Cloudflare's clients send both.
    pub fn check(&self, value: &Value) -> Result<Value, ModelError> {
        let field = "value";
        match self.kind {
            SettingKind::Seconds { min, max } => {
                let n = match value {
                    Value::Number(n) => whole(n),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if (min..=max).contains(&n) => Ok(json!(n)),
                    _ if min == max => Err(ModelError::field(
                        field,
                        format!("{} must be {min} (the one value Parapet takes)", self.id),
                    )),
                    _ => Err(ModelError::field(
                        field,
                        format!(
                            "{} must be a whole number of seconds between {min} and {max}",
                            self.id
                        ),
                    )),
                }
            }
            SettingKind::SecurityHeader => check_security_header(value),
            SettingKind::Choice(choices) => {
                let s = match value {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                match s {
                    Some(s) if choices.contains(&s.as_str()) => Ok(json!(s)),
                    _ => Err(ModelError::field(
                        field,
                        format!("{} must be one of: {}", self.id, choices.join(", ")),
                    )),
                }
            }
        }
    }
}

/// The settings the edge reads per zone, typed; `None` means the node's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeZoneSettings {
    pub connect_timeout_secs: Option<u64>,
    pub read_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    /// HTTP/2 to the origin (`origin_max_http_version` = "2").
    pub origin_h2: bool,
    /// Nothing is cached (`development_mode` = "on"), as of when the settings were compiled;
    /// [`Self::development_mode_at`] tells for a later time.
    pub development_mode: bool,
    /// When development mode turns itself off (Unix seconds), if it was turned on.
    pub development_mode_until: Option<u64>,
    pub ssl: SslMode,
    /// Visitors need TLS 1.3 (`min_tls_version` = "1.3").
    pub tls13_only: bool,
    pub always_use_https: bool,
    pub hsts: Option<Hsts>,
    /// Present the edge's client certificate to the origin (`tls_client_auth` = "on").
    pub origin_pull: bool,
    pub acme_challenge: AcmeChallenge,
}

impl EdgeZoneSettings {
    /// Whether nothing is cached at `now` (Unix seconds): development mode turns itself off
    /// after [`DEVELOPMENT_MODE_SECS`].
    pub fn development_mode_at(&self, now: u64) -> bool {
        self.development_mode_until.is_some_and(|until| now < until)
    }
}

/// Now, in Unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ZoneSettings {
    /// When development mode turns itself off (Unix seconds): [`DEVELOPMENT_MODE_SECS`] after
    /// it was turned on, if it is set "on" (expired or not).
    pub fn development_mode_until(&self) -> Option<u64> {
        let set = self.values.get("development_mode")?;
        if set.value.as_str() != Some("on") {
            return None;
        }
        // A time that does not parse (a store written by hand) counts as turned on at the
        // epoch: off, rather than on forever.
        let on = humantime::parse_rfc3339_weak(&set.modified_on)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Some(on.saturating_add(DEVELOPMENT_MODE_SECS))
    }

    /// The effective value of setting `id` at `now` (Unix seconds): as [`Self::value`], with
    /// development mode "off" once it has run its time.
    pub fn value_at(&self, id: &str, now: u64) -> Option<Value> {
        if id == "development_mode" && self.development_mode_until().is_some_and(|u| now >= u) {
            return Some(json!("off"));
        }
        self.value(id)
    }

    /// The effective value of setting `id`: set, or the default (`None`: the node's default).
    /// Development mode reads as set, even once expired: see [`Self::value_at`].
    pub fn value(&self, id: &str) -> Option<Value> {
        if let Some(v) = self.values.get(id) {
            return Some(v.value.clone());
        }
        let def = setting_def(id)?;
        let default = def.default?;
        match def.kind {
            SettingKind::Seconds { .. } => default.parse::<u64>().ok().map(|n| json!(n)),
            SettingKind::Choice(_) => Some(json!(default)),
            SettingKind::SecurityHeader => serde_json::from_str(default).ok(),
        }
    }

    pub fn edge(&self) -> EdgeZoneSettings {
        let choices: BTreeMap<&str, Option<Value>> =
            SETTINGS.iter().map(|d| (d.id, self.value(d.id))).collect();
        let choice = |id: &str| {
            choices
                .get(id)
                .and_then(|v| v.as_ref())
                .and_then(Value::as_str)
        };
        let secs = |id: &str| {
            self.values
                .get(id)
                .and_then(|v| v.value.as_u64())
                .or_else(|| {
                    setting_def(id)
                        .and_then(|d| d.default)
                        .and_then(|d| d.parse().ok())
                })
        };
        EdgeZoneSettings {
            connect_timeout_secs: secs("proxy_connect_timeout"),
            read_timeout_secs: secs("proxy_read_timeout"),
            idle_timeout_secs: secs("proxy_idle_timeout"),
            origin_h2: choice("origin_max_http_version") == Some("2"),
            development_mode: self
                .development_mode_until()
                .is_some_and(|until| unix_now() < until),
            development_mode_until: self.development_mode_until(),
            ssl: match choice("ssl") {
                Some("off") => SslMode::Off,
                Some("full") => SslMode::Full,
                Some("strict") => SslMode::Strict,
                _ => SslMode::Flexible,
            },
            tls13_only: choice("min_tls_version") == Some("1.3"),
            always_use_https: choice("always_use_https") == Some("on"),
            hsts: self.value("security_header").as_ref().and_then(hsts_of),
            origin_pull: choice("tls_client_auth") == Some("on"),
            acme_challenge: match choice("acme_challenge") {
                Some("http-01") => AcmeChallenge::Http01,
                Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
                _ => AcmeChallenge::Dns01,
            },
        }
    }

    /// Checks every stored value again (a store written by hand or by an older version).
    pub fn validate(&self) -> Result<(), ModelError> {
        for (id, v) in &self.values {
            let def = setting_def(id).ok_or_else(|| {
                ModelError::field(id.as_str(), "not a zone setting Parapet knows")
            })?;
            if def.check(&v.value)? != v.value {
                return Err(ModelError::field(
                    id.as_str(),
                    "value is not in canonical form",
                ));
            }
        }
        Ok(())
    }
}

/// A JSON number that is a whole number of at least zero (`100` or `100.0`).
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        // Below 2^53 every whole float is exact.
        (f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_numbers_and_numeric_strings_within_range() {
        let def = setting_def("proxy_read_timeout").expect("accepted");
        assert_eq!(def.check(&json!(30)).expect("accepted"), json!(30));
        assert_eq!(def.check(&json!("45")).expect("accepted"), json!(45));
        assert_eq!(def.check(&json!(100.0)).expect("accepted"), json!(100));
        for bad in [
            json!(0),
            json!(6001),
            json!("soon"),
            json!(1.5),
            json!(-30.0),
            json!(null),
        ] {
            assert!(def.check(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn choices_accept_only_listed_values() {
        let def = setting_def("origin_max_http_version").expect("accepted");
        assert_eq!(def.check(&json!("2")).expect("accepted"), json!("2"));
        assert_eq!(def.check(&json!(1)).expect("accepted"), json!("1"));
        assert!(def.check(&json!("3")).is_err());
    }

    #[test]
    fn edge_view_falls_back_to_defaults() {
        let mut s = ZoneSettings::default();
        assert_eq!(
            s.edge(),
            EdgeZoneSettings {
                connect_timeout_secs: None,
                read_timeout_secs: None,
                idle_timeout_secs: Some(90),
                origin_h2: false,
                development_mode: false,
                development_mode_until: None,
                ssl: SslMode::Flexible,
                tls13_only: false,
                always_use_https: false,
                hsts: None,
                origin_pull: false,
                acme_challenge: AcmeChallenge::Dns01,
            }
        );
        s.values.insert(
            "origin_max_http_version".into(),
            SetValue {
                value: json!("2"),
                modified_on: String::new(),
            },
        );
        s.values.insert(
            "proxy_read_timeout".into(),
            SetValue {
                value: json!(7),
                modified_on: String::new(),
            },
        );
        let e = s.edge();
        assert!(e.origin_h2);
        assert_eq!(e.read_timeout_secs, Some(7));
        s.values.insert(
            "no_such_setting".into(),
            SetValue {
                value: json!(1),
                modified_on: String::new(),
            },
        );
        assert!(s.validate().is_err());
    }

    #[test]
    fn security_header_is_checked_field_by_field_and_turns_into_hsts() {
        let def = setting_def("security_header").expect("known");
        let v = def
            .check(&json!({"strict_transport_security": {"enabled": true, "max_age": 86400, "preload": true}}))
            .expect("accepted");
        assert_eq!(
            v["strict_transport_security"]["include_subdomains"],
            json!(false),
            "missing flags are filled in"
        );
        for bad in [
            json!("on"),
            json!({"strict_transport_security": {"enabled": "yes"}}),
            json!({"strict_transport_security": {"max_age": 40_000_000}}),
            json!({"strict_transport_security": {"max_age": -1}}),
            json!({"strict_transport_security": {"colour": true}}),
        ] {
            assert!(def.check(&bad).is_err(), "{bad} accepted");
        }
        let mut s = ZoneSettings::default();
        assert_eq!(s.edge().hsts, None, "off by default");
        s.values.insert(
            "security_header".into(),
            SetValue {
                value: v,
                modified_on: String::new(),
            },
        );
        let hsts = s.edge().hsts.expect("enabled");
        assert_eq!(hsts.header_value(), "max-age=86400; preload");
        assert!(s.validate().is_ok());
    }

    #[test]
    fn ssl_and_tls_settings_have_cloudflare_defaults() {
        let mut s = ZoneSettings::default();
        let e = s.edge();
        assert_eq!(e.ssl, SslMode::Flexible);
        assert!(!e.tls13_only && !e.always_use_https);
        for (id, value) in [
            ("ssl", "strict"),
            ("min_tls_version", "1.3"),
            ("always_use_https", "on"),
        ] {
            s.values.insert(
                id.into(),
                SetValue {
                    value: json!(value),
                    modified_on: String::new(),
                },
            );
        }
        let e = s.edge();
        assert_eq!(e.ssl, SslMode::Strict);
        assert!(e.tls13_only && e.always_use_https);
        assert!(
            setting_def("opportunistic_encryption")
                .expect("known")
                .check(&json!("on"))
                .is_err()
        );
        // What Parapet always does, or never, is a setting of one value: a bulk edit
        // holding Cloudflare's defaults goes through.
        for (id, value, other) in [
            ("tls_1_3", "on", "zrt"),
            ("automatic_https_rewrites", "off", "on"),
        ] {
            let def = setting_def(id).expect("known");
            assert_eq!(def.check(&json!(value)).expect("taken"), json!(value));
            assert!(def.check(&json!(other)).is_err(), "{id} {other}");
        }
    }
}
