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
}

/// One setting a zone has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDef {
    pub id: &'static str,
    pub kind: SettingKind,
    /// The value when nobody changed it (`None`: the node's configured default).
    pub default: Option<&'static str>,
}

/// Every zone setting, in the order the API lists them.
pub const SETTINGS: &[SettingDef] = &[
    // Cloudflare's: bypass the cache for the whole zone while its site is being worked on.
    SettingDef {
        id: "development_mode",
        kind: SettingKind::Choice(&["on", "off"]),
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
];

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
    /// The canonical stored form of `value`, or why it is not one this setting takes.
    /// Numbers may come as JSON numbers or numeric strings, as Cloudflare's clients send both.
    pub fn check(&self, value: &Value) -> Result<Value, ModelError> {
        let field = "value";
        match self.kind {
            SettingKind::Seconds { min, max } => {
                let n = match value {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if (min..=max).contains(&n) => Ok(json!(n)),
                    _ => Err(ModelError::field(
                        field,
                        format!(
                            "{} must be a whole number of seconds between {min} and {max}",
                            self.id
                        ),
                    )),
                }
            }
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
    /// Nothing is cached (`development_mode` = "on").
    pub development_mode: bool,
}

impl ZoneSettings {
    /// The effective value of setting `id`: set, or the default (`None`: the node's default).
    pub fn value(&self, id: &str) -> Option<Value> {
        if let Some(v) = self.values.get(id) {
            return Some(v.value.clone());
        }
        let def = setting_def(id)?;
        let default = def.default?;
        match def.kind {
            SettingKind::Seconds { .. } => default.parse::<u64>().ok().map(|n| json!(n)),
            SettingKind::Choice(_) => Some(json!(default)),
        }
    }

    pub fn edge(&self) -> EdgeZoneSettings {
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
            origin_h2: self
                .value("origin_max_http_version")
                .as_ref()
                .and_then(Value::as_str)
                == Some("2"),
            development_mode: self
                .value("development_mode")
                .as_ref()
                .and_then(Value::as_str)
                == Some("on"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_numbers_and_numeric_strings_within_range() {
        let def = setting_def("proxy_read_timeout").expect("accepted");
        assert_eq!(def.check(&json!(30)).expect("accepted"), json!(30));
        assert_eq!(def.check(&json!("45")).expect("accepted"), json!(45));
        for bad in [
            json!(0),
            json!(6001),
            json!("soon"),
            json!(1.5),
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
}
