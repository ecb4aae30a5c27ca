//! Outgoing zone transfers to secondaries, in the shapes of Cloudflare's Secondary DNS API:
//! TSIG keys and peers belong to the account; a zone lists the peers allowed to transfer it
//! (the transfer ACL), which are also sent a NOTIFY on every change.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::name::{NameKind, normalize, printable};
use crate::{FieldError, ModelError};

/// The only TSIG algorithm accepted (RFC 8945 recommends it).
pub const HMAC_SHA256: &str = "hmac-sha256.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsigKey {
    pub id: String,
    /// The key name, a domain name, lowercase without the trailing dot.
    pub name: String,
    /// Base64.
    pub secret: String,
}

impl TsigKey {
    /// Reads `{name, algo, secret}`.
    pub fn from_json(id: String, body: &Value) -> Result<Self, ModelError> {
        let mut errors = Vec::new();
        let name = match body.get("name").and_then(Value::as_str) {
            Some(n) => normalize(n, NameKind::Target, "name")
                .map_err(|e| errors.push(e))
                .ok(),
            None => {
                errors.push(FieldError::new(
                    "name",
                    "is required (a key name such as transfer-key.)",
                ));
                None
            }
        };
        match body.get("algo").and_then(Value::as_str) {
            Some(a) if a.trim_end_matches('.').eq_ignore_ascii_case("hmac-sha256") => {}
            Some(a) => errors.push(FieldError::new(
                "algo",
                format!("'{}' is not supported: use hmac-sha256.", printable(a)),
            )),
            None => errors.push(FieldError::new("algo", "is required (hmac-sha256.)")),
        }
        let secret = match body.get("secret").and_then(Value::as_str) {
            Some(s) => match data_encoding::BASE64.decode(s.trim().as_bytes()) {
                Ok(bytes) if bytes.len() >= 16 => Some(s.trim().to_owned()),
                Ok(_) => {
                    errors.push(FieldError::new(
                        "secret",
                        "must be at least 16 bytes (base64)",
                    ));
                    None
                }
                Err(_) => {
                    errors.push(FieldError::new("secret", "must be base64"));
                    None
                }
            },
            None => {
                errors.push(FieldError::new("secret", "is required (base64)"));
                None
            }
        };
        match (name, secret) {
            (Some(name), Some(secret)) if errors.is_empty() => Ok(Self { id, name, secret }),
            _ => Err(ModelError::Invalid(errors)),
        }
    }

    pub fn secret_bytes(&self) -> Vec<u8> {
        data_encoding::BASE64
            .decode(self.secret.as_bytes())
            .unwrap_or_default()
    }

    pub fn to_api_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "algo": HMAC_SHA256, "secret": self.secret})
    }
}

/// A secondary server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: String,
    pub name: String,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub tsig_id: Option<String>,
    pub ixfr_enable: bool,
}

impl Peer {
    /// Reads `{name, ip, port, tsig_id, ixfr_enable}` over `base` (for updates).
    pub fn from_json(id: String, body: &Value, base: Option<&Peer>) -> Result<Self, ModelError> {
        let mut errors = Vec::new();
        let name = match body.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 100 => n.trim().to_owned(),
            None if base.is_some() => base.map(|b| b.name.clone()).unwrap_or_default(),
            _ => {
                errors.push(FieldError::new(
                    "name",
                    "is required (at most 100 characters)",
                ));
                String::new()
            }
        };
        let ip = match body.get("ip") {
            None => base.and_then(|b| b.ip),
            Some(Value::Null) => None,
            Some(Value::String(s)) => match s.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errors.push(FieldError::new(
                        "ip",
                        format!("'{}' is not an IP address", printable(s)),
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("ip", "must be a string"));
                None
            }
        };
        let port = match body.get("port") {
            None | Some(Value::Null) => base.map_or(53, |b| b.port),
            Some(v) => match v
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
            {
                Some(p) => p,
                None => {
                    errors.push(FieldError::new("port", "must be between 1 and 65535"));
                    53
                }
            },
        };
        let tsig_id = match body.get("tsig_id") {
            None => base.and_then(|b| b.tsig_id.clone()),
            Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) if crate::ids::is_id(s) => Some(s.clone()),
            Some(_) => {
                errors.push(FieldError::new("tsig_id", "must be the id of a TSIG key"));
                None
            }
        };
        let ixfr_enable = match body.get("ixfr_enable") {
            None | Some(Value::Null) => base.is_none_or(|b| b.ixfr_enable),
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(FieldError::new("ixfr_enable", "must be true or false"));
                true
            }
        };
        if errors.is_empty() {
            Ok(Self {
                id,
                name,
                ip,
                port,
                tsig_id,
                ixfr_enable,
            })
        } else {
            Err(ModelError::Invalid(errors))
        }
    }

    pub fn to_api_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "ip": self.ip.map(|i| i.to_string()), "port": self.port, "tsig_id": self.tsig_id, "ixfr_enable": self.ixfr_enable})
    }
}

/// A zone's outgoing transfer settings: which peers may transfer it and are notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    pub zone_id: String,
    pub name: String,
    pub peers: Vec<String>,
    /// Whether peers may transfer the zone and are notified (Cloudflare's `outgoing/enable`
    /// and `disable`). Settings stored before this existed allowed transfers, so they read
    /// as enabled.
    #[serde(default = "enabled_before_the_switch")]
    pub enabled: bool,
    /// Counts `force_notify` requests: each change sends the peers a NOTIFY, whatever the
    /// serial.
    #[serde(default)]
    pub notifies: u64,
}

fn enabled_before_the_switch() -> bool {
    true
}

impl Outgoing {
    /// Reads `{name, peers}`. `name` may be left out, and otherwise must be the zone's name.
    /// New settings start disabled, as Cloudflare's do (transfers begin with `enable`); a
    /// replacement keeps `current`'s state.
    pub fn from_json(
        zone_id: String,
        zone_name: &str,
        body: &Value,
        current: Option<&Outgoing>,
    ) -> Result<Self, ModelError> {
        let mut errors = Vec::new();
        let peers = match body.get("peers") {
            Some(Value::Array(items)) => {
                let ids: Option<Vec<String>> = items
                    .iter()
                    .map(|p| {
                        p.as_str()
                            .filter(|s| crate::ids::is_id(s))
                            .map(str::to_owned)
                    })
                    .collect();
                ids.unwrap_or_else(|| {
                    errors.push(FieldError::new("peers", "must be an array of peer ids"));
                    Vec::new()
                })
            }
            _ => {
                errors.push(FieldError::new(
                    "peers",
                    "is required (an array of peer ids)",
                ));
                Vec::new()
            }
        };
        match body.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) => match normalize(n, NameKind::Zone, "name") {
                Ok(n) if n == zone_name => {}
                Ok(n) => errors.push(FieldError::new(
                    "name",
                    format!("{} is not this zone's name ({zone_name})", printable(&n)),
                )),
                Err(e) => errors.push(e),
            },
            Some(_) => errors.push(FieldError::new("name", "must be the zone's name")),
        }
        if !errors.is_empty() {
            return Err(ModelError::Invalid(errors));
        }
        Ok(Self {
            zone_id,
            name: zone_name.to_owned(),
            peers,
            enabled: current.is_some_and(|c| c.enabled),
            notifies: current.map_or(0, |c| c.notifies),
        })
    }
}
