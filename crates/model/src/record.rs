//! DNS records: the record types Parapet serves, and turning an API body or zone-file line into
//! a checked [`DnsRecord`].
//!
//! Records are stored with Cloudflare's fields. `content` is always the canonical presentation
//! form of the record data (without the priority for MX, SRV and URI, which lives in
//! `priority`), so that identical records compare equal however they were entered. Types whose
//! data Cloudflare also exposes as a `data` object (SRV, CAA, TLSA, ...) accept either form.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::HTTPS;
use hickory_proto::rr::rdata::svcb::{Alpn, Mandatory, SvcParamKey, SvcParamValue};
use hickory_proto::rr::{RData, RecordType as WireType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::name::{self, NameKind, printable};
use crate::{FieldError, ModelError};

/// Longest `content` accepted, in bytes (Cloudflare's TXT limit is 2048 characters of content;
/// other types are far shorter).
const MAX_CONTENT: usize = 4096;
pub const MAX_COMMENT: usize = 500;
const MAX_TAGS: usize = 20;

macro_rules! record_types {
    ($($t:ident),* $(,)?) => {
        /// The record types Parapet accepts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum RecordType { $($t),* }

        impl RecordType {
            pub const ALL: &'static [RecordType] = &[$(RecordType::$t),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$t => stringify!($t)),* }
            }

            /// Parses a type mnemonic, case-insensitively.
            pub fn parse(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case(stringify!($t)) { return Some(Self::$t); })*
                None
            }
        }
    };
}

record_types!(
    A, AAAA, CNAME, MX, TXT, NS, SRV, CAA, PTR, HTTPS, SVCB, TLSA, SSHFP, NAPTR, DS, CERT, LOC,
    URI, DNSKEY, SMIMEA, OPENPGPKEY
);

impl RecordType {
    /// Only these can be proxied through the edge, as on Cloudflare.
    pub fn proxiable(self) -> bool {
        matches!(self, Self::A | Self::AAAA | Self::CNAME)
    }

    /// Types with a separate `priority` field.
    pub fn has_priority(self) -> bool {
        matches!(self, Self::MX | Self::SRV | Self::URI)
    }

    /// The `data` fields of types Cloudflare exposes structured, in presentation order.
    fn data_fields(self) -> Option<&'static [(&'static str, Field)]> {
        use Field::*;
        Some(match self {
            Self::SRV => &[("weight", U16), ("port", U16), ("target", Host)],
            Self::URI => &[("weight", U16), ("target", Quoted)],
            Self::CAA => &[("flags", U8), ("tag", Tag), ("value", Quoted)],
            Self::HTTPS | Self::SVCB => &[("priority", U16), ("target", Host), ("value", Rest)],
            Self::DNSKEY => &[
                ("flags", U16),
                ("protocol", U8),
                ("algorithm", U8),
                ("public_key", Base64),
            ],
            Self::TLSA | Self::SMIMEA => &[
                ("usage", U8),
                ("selector", U8),
                ("matching_type", U8),
                ("certificate", Hex),
            ],
            Self::SSHFP => &[("algorithm", U8), ("type", U8), ("fingerprint", Hex)],
            Self::NAPTR => &[
                ("order", U16),
                ("preference", U16),
                ("flags", Quoted),
                ("service", Quoted),
                ("regex", Quoted),
                ("replacement", Host),
            ],
            Self::DS => &[
                ("key_tag", U16),
                ("algorithm", U8),
                ("digest_type", U8),
                ("digest", Hex),
            ],
            Self::CERT => &[
                ("type", U16),
                ("key_tag", U16),
                ("algorithm", U8),
                ("certificate", Base64),
            ],
            Self::LOC => &[
                ("lat_degrees", Degrees(90)),
                ("lat_minutes", Minutes),
                ("lat_seconds", Seconds),
                ("lat_direction", Direction("N", "S")),
                ("long_degrees", Degrees(180)),
                ("long_minutes", Minutes),
                ("long_seconds", Seconds),
                ("long_direction", Direction("E", "W")),
                ("altitude", Meters(-100_000.0, 42_849_672.95)),
                ("size", Meters(0.0, 90_000_000.0)),
                ("precision_horz", Meters(0.0, 90_000_000.0)),
                ("precision_vert", Meters(0.0, 90_000_000.0)),
            ],
            _ => return None,
        })
    }

    /// The wire-format library's type; every Parapet type has one.
    fn wire(self) -> Option<WireType> {
        self.as_str().parse().ok()
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one `data` field is read and written.
#[derive(Clone, Copy)]
enum Field {
    U8,
    U16,
    /// A CAA tag: letters and digits.
    Tag,
    /// A character string, quoted in presentation form.
    Quoted,
    /// A host name, or `.` for none.
    Host,
    /// Everything to the end (SVCB parameters).
    Rest,
    Hex,
    Base64,
    Degrees(u32),
    Minutes,
    Seconds,
    Direction(&'static str, &'static str),
    Meters(f64, f64),
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub id: String,
    /// Shared by the records of a zone in the snapshot (as are equal timestamps): a large zone
    /// holds each once.
    pub zone_id: Arc<str>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RecordType,
    pub content: String,
    pub ttl: u32,
    pub proxied: bool,
    pub priority: Option<u16>,
    pub comment: Option<String>,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "RecordSettings::is_empty")]
    pub settings: RecordSettings,
    pub created_on: Arc<str>,
    pub modified_on: Arc<str>,
}

/// Cloudflare's per-record `settings`: for a proxied name, answer with the edge's IPv4 or
/// IPv6 addresses only. (`flatten_cname` is taken only as `false`: below the apex a CNAME is
/// answered as one, and at the apex it is always flattened.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatten_cname: Option<bool>,
}

impl RecordSettings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Reads a body's `settings` (absent or null: none) for a `kind` record.
    fn from_json(value: Option<&Value>, kind: Option<RecordType>) -> Result<Self, Vec<FieldError>> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(Self::default());
        };
        let Some(obj) = value.as_object() else {
            return Err(vec![FieldError::new("settings", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        let mut settings = Self::default();
        for (key, v) in obj {
            let flag = match v {
                Value::Null => None,
                Value::Bool(b) => Some(*b),
                _ => {
                    errors.push(FieldError::new(
                        format!("settings.{key}"),
                        "must be true or false",
                    ));
                    continue;
                }
            };
            match key.as_str() {
                "ipv4_only" => settings.ipv4_only = flag,
                "ipv6_only" => settings.ipv6_only = flag,
                "flatten_cname" => settings.flatten_cname = flag,
                other => errors.push(FieldError::new(
                    format!("settings.{}", printable(other)),
                    "is not a record setting (ipv4_only, ipv6_only, flatten_cname)",
                )),
            }
        }
        if settings.ipv4_only == Some(true) && settings.ipv6_only == Some(true) {
            errors.push(FieldError::new(
                "settings",
                "ipv4_only and ipv6_only cannot both be true",
            ));
        }
        if settings.flatten_cname == Some(true) {
            errors.push(FieldError::new(
                "settings.flatten_cname",
                "is not supported: a CNAME below the apex is answered as one (the apex's is always flattened)",
            ));
        }
        let addresses = settings.ipv4_only.is_some() || settings.ipv6_only.is_some();
        if addresses && kind.is_some_and(|k| !k.proxiable()) {
            errors.push(FieldError::new(
                "settings",
                "ipv4_only and ipv6_only are for A, AAAA and CNAME records",
            ));
        }
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }
}

/// The checked, user-settable part of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordDraft {
    pub name: String,
    pub kind: RecordType,
    pub content: String,
    pub ttl: u32,
    pub proxied: bool,
    pub priority: Option<u16>,
    pub comment: Option<String>,
    pub tags: Vec<String>,
    pub settings: RecordSettings,
}

/// A rule of the zone that a new or changed record breaks, with Cloudflare's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub code: u32,
    pub message: String,
}

impl RecordDraft {
    /// Reads an API body (a JSON object) for a record in `zone`, reporting every bad field.
    pub fn from_json(zone: &str, body: &Value) -> Result<Self, ModelError> {
        let Some(obj) = body.as_object() else {
            return Err(ModelError::field("body", "must be a JSON object"));
        };
        let mut errors = Vec::new();
        let kind = match obj.get("type") {
            Some(Value::String(t)) => match RecordType::parse(t) {
                Some(k) => Some(k),
                None => {
                    errors.push(FieldError::new(
                        "type",
                        format!("unsupported record type '{}'", printable(t)),
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("type", "must be a string"));
                None
            }
            None => {
                errors.push(FieldError::new("type", "is required"));
                None
            }
        };
        let name = match obj.get("name") {
            Some(Value::String(n)) => name::owner_in_zone(n, zone, "name")
                .map_err(|e| errors.push(e))
                .ok(),
            Some(_) => {
                errors.push(FieldError::new("name", "must be a string"));
                None
            }
            None => {
                errors.push(FieldError::new("name", "is required"));
                None
            }
        };
        let ttl = match obj.get("ttl") {
            None | Some(Value::Null) => 1,
            Some(v) => match v.as_u64().and_then(|t| u32::try_from(t).ok()) {
                Some(t) if t == 1 || (30..=86_400).contains(&t) => t,
                _ if !v.is_number() => {
                    errors.push(FieldError::new(
                        "ttl",
                        "must be a number of seconds (30 to 86400, or 1 for automatic), not a string or another JSON type",
                    ));
                    1
                }
                _ => {
                    errors.push(FieldError::new(
                        "ttl",
                        "must be between 30 and 86400 seconds, or 1 for automatic",
                    ));
                    1
                }
            },
        };
        let proxied = match obj.get("proxied") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(FieldError::new("proxied", "must be true or false"));
                false
            }
        };
        let mut priority = match obj.get("priority") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()) {
                Some(p) => Some(p),
                None => {
                    errors.push(FieldError::new("priority", "must be between 0 and 65535"));
                    None
                }
            },
        };
        let comment = match obj.get("comment") {
            None | Some(Value::Null) => None,
            Some(Value::String(c))
                if c.len() <= MAX_COMMENT && !c.chars().any(char::is_control) =>
            {
                Some(c.clone())
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "comment",
                    format!(
                        "must be a string of at most {MAX_COMMENT} characters, without line breaks or other control characters"
                    ),
                ));
                None
            }
        };
        let tags = match obj.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_TAGS => {
                let tags: Option<Vec<String>> = items
                    .iter()
                    .map(|t| t.as_str().filter(|s| valid_tag(s)).map(str::to_owned))
                    .collect();
                tags.unwrap_or_else(|| {
                    errors.push(FieldError::new(
                        "tags",
                        "each tag must be a string 'name' or 'name:value' of printable characters",
                    ));
                    Vec::new()
                })
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "tags",
                    format!("must be an array of at most {MAX_TAGS} strings"),
                ));
                Vec::new()
            }
        };
        let settings = RecordSettings::from_json(obj.get("settings"), kind).unwrap_or_else(|e| {
            errors.extend(e);
            RecordSettings::default()
        });
        let mut content = None;
        if let Some(kind) = kind {
            let data = obj.get("data").filter(|d| !d.is_null());
            let raw = obj.get("content").filter(|c| !c.is_null());
            match (kind.data_fields(), data, raw) {
                (Some(fields), Some(data), _) => {
                    if (kind == RecordType::SRV || kind == RecordType::URI)
                        && let Some(p) = data.get("priority").filter(|p| !p.is_null())
                    {
                        // A number, or a number in a string, as the other data fields.
                        let read = match p {
                            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                            Value::String(t) => t.trim().parse::<u16>().ok(),
                            _ => None,
                        };
                        match read {
                            Some(p) => priority = Some(p),
                            None => errors.push(FieldError::new(
                                "data.priority",
                                "must be a whole number between 0 and 65535",
                            )),
                        }
                    }
                    match content_from_data(fields, data) {
                        Ok(c) => content = Some(c),
                        Err(e) => errors.extend(e),
                    }
                }
                (_, _, Some(Value::String(c))) => match canonical_content(kind, c, &mut priority) {
                    Ok(c) => content = Some(c),
                    Err(e) => errors.push(e),
                },
                (_, _, Some(_)) => errors.push(FieldError::new("content", "must be a string")),
                (Some(_), None, None) => {
                    errors.push(FieldError::new("data", "is required (or give content)"))
                }
                (None, _, None) => errors.push(FieldError::new("content", "is required")),
            }
            // A line break in a value would end its line in an exported zone file, and what
            // followed would be read as records of their own.
            if kind != RecordType::TXT
                && content
                    .as_deref()
                    .is_some_and(|c| c.chars().any(|ch| ch.is_control() && ch != '\t'))
            {
                errors.push(FieldError::new(
                    "content",
                    format!("{kind} data must not hold control characters such as line breaks"),
                ));
                content = None;
            }
            if let Some(c) = &mut content
                && let Err(e) = decimal_escapes(kind, c)
            {
                errors.push(e);
                content = None;
            }
            if let Some(c) = &mut content
                && let Err(e) = alpn_lists(kind, c)
            {
                errors.push(e);
                content = None;
            }
            if let Some(c) = &content
                && let Err(e) = check_wire(kind, c, priority)
            {
                errors.push(e);
                content = None;
            }
            if proxied && !kind.proxiable() {
                errors.push(FieldError::new(
                    "proxied",
                    format!("{kind} records cannot be proxied"),
                ));
            }
            // (A priority given out of range is reported as such, not as missing.)
            let priority_given = !matches!(obj.get("priority"), None | Some(Value::Null));
            if kind.has_priority() && priority.is_none() && !priority_given {
                errors.push(FieldError::new(
                    "priority",
                    format!("is required for {kind} records"),
                ));
            }
            if !kind.has_priority() {
                priority = None;
            }
            if (kind == RecordType::SRV || kind == RecordType::URI)
                && let Some(n) = &name
            {
                let labels: Vec<&str> = n.split('.').collect();
                let ok = kind == RecordType::URI && labels[0].starts_with('_')
                    || labels.len() > 2 && labels[0].starts_with('_') && labels[1].starts_with('_');
                if !ok {
                    errors.push(FieldError::new(
                        "name",
                        format!("a {kind} record name must start with _service._proto"),
                    ));
                }
            }
        }
        match (errors.is_empty(), name, kind, content) {
            (true, Some(name), Some(kind), Some(content)) => Ok(Self {
                name,
                kind,
                content,
                ttl,
                proxied,
                priority,
                comment,
                tags,
                settings,
            }),
            _ => Err(ModelError::Invalid(errors)),
        }
    }

    /// The rules a record must keep with the other records of its zone (`others` excludes the
    /// record being replaced, if any); `apex`: whether the record's name is the zone's.
    pub fn check_against<'a>(
        &self,
        others: impl IntoIterator<Item = &'a DnsRecord>,
        apex: bool,
    ) -> Result<(), Conflict> {
        self.check_apex(apex)?;
        for other in others {
            if other.name != self.name {
                continue;
            }
            if self.is_identical(other) {
                return Err(Conflict {
                    code: 81058,
                    message: "An identical record already exists.".into(),
                });
            }
            if self.kind == RecordType::CNAME && other.kind == RecordType::CNAME {
                return Err(Conflict {
                    code: 81053,
                    message: "A CNAME record with that host already exists.".into(),
                });
            }
            // At the apex a CNAME is flattened into addresses (as Cloudflare does): it stands
            // beside any record but the addresses it takes the place of.
            if self.kind == RecordType::CNAME && (!apex || is_address(other.kind)) {
                return Err(Conflict {
                    code: 81053,
                    message: if apex {
                        "An A or AAAA record with that host already exists. A CNAME at the apex cannot share its name with addresses.".into()
                    } else {
                        "A record with that host already exists. A CNAME cannot share its name with other records.".into()
                    },
                });
            }
            if other.kind == RecordType::CNAME && (!apex || is_address(self.kind)) {
                return Err(Conflict {
                    code: 81054,
                    message: "A CNAME record with that host already exists.".into(),
                });
            }
            // A name with NS records below the apex is a delegation: data beside them would
            // never be answered (but the parent's DS for it). NS records at the apex are kept
            // beside the apex's data and not served (Parapet's nameservers are), as Cloudflare
            // keeps them.
            let beside_ns = |a: RecordType, b: RecordType| {
                !apex && a == RecordType::NS && !matches!(b, RecordType::NS | RecordType::DS)
            };
            if beside_ns(self.kind, other.kind) || beside_ns(other.kind, self.kind) {
                return Err(Conflict {
                    code: 81053,
                    message:
                        "NS records cannot share their name with records of another type (but DS)."
                            .into(),
                });
            }
        }
        Ok(())
    }

    /// A DS record belongs in the parent zone: at a zone's apex no resolver asks this zone for
    /// it, and BIND refuses to load the zone.
    fn check_apex(&self, apex: bool) -> Result<(), Conflict> {
        if apex && self.kind == RecordType::DS {
            return Err(Conflict {
                code: 1004,
                message: "A DS record cannot be at the zone's apex: it belongs in the parent zone."
                    .into(),
            });
        }
        Ok(())
    }

    /// Whether `other` holds the same data (type, content, priority): a second copy the zone
    /// rules refuse.
    fn is_identical(&self, other: &DnsRecord) -> bool {
        other.kind == self.kind
            && other.priority == self.priority
            && same_data(self.kind, &self.content, &other.content)
    }

    /// The stored record for this draft.
    pub fn into_record(
        self,
        id: String,
        zone_id: impl Into<Arc<str>>,
        created_on: impl Into<Arc<str>>,
        now: impl Into<Arc<str>>,
    ) -> DnsRecord {
        DnsRecord {
            id,
            zone_id: zone_id.into(),
            name: self.name,
            kind: self.kind,
            content: self.content,
            ttl: self.ttl,
            proxied: self.proxied,
            priority: self.priority,
            comment: self.comment,
            tags: self.tags,
            settings: self.settings,
            created_on: created_on.into(),
            modified_on: now.into(),
        }
    }
}

/// Whether two contents of type `kind` are the same data: equal, or contents kept as written
/// that say the same (TXT contents sending the same strings; SVCB or HTTPS values quoted or
/// not).
fn same_data(kind: RecordType, a: &str, b: &str) -> bool {
    a == b || compared(kind, a) == compared(kind, b)
}

/// The form of a content that [`same_data`] compares: TXT content's canonical form; an SVCB or
/// HTTPS content without the quotes around its values.
fn compared(kind: RecordType, content: &str) -> std::borrow::Cow<'_, str> {
    match kind {
        RecordType::TXT => {
            if let Ok(canonical) = crate::txt::canonical(content) {
                return std::borrow::Cow::Owned(canonical);
            }
        }
        RecordType::SVCB | RecordType::HTTPS if content.contains('"') => {
            let mut out = String::with_capacity(content.len());
            let mut chars = content.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        out.push(c);
                        out.extend(chars.next());
                    }
                    '"' => {}
                    c => out.push(c),
                }
            }
            return std::borrow::Cow::Owned(out);
        }
        _ => {}
    }
    std::borrow::Cow::Borrowed(content)
}

/// A record's identity for the zone rules' indexes: a keyed hash of (type, content as
/// [`same_data`] compares it, priority).
fn identity<S: std::hash::BuildHasher>(keys: &S, record: &DnsRecord) -> u64 {
    let content = compared(record.kind, &record.content);
    keys.hash_one((record.kind, content.as_ref(), record.priority))
}

/// `draft.check_against(others)` from an index of `others` (positions in order; `at` gives the
/// record at one): a CNAME draft meets the first of them; otherwise the first record identical
/// to the draft (`first_with` its hash) or the first CNAME decides, and a record that only
/// shares the draft's hash makes it scan.
fn check_indexed<'a, S: std::hash::BuildHasher>(
    (draft, apex): (&RecordDraft, bool),
    keys: &S,
    mut others: impl Iterator<Item = usize>,
    first_with: impl FnOnce(u64) -> Option<usize>,
    firsts: KindFirsts,
    at: impl Fn(usize) -> &'a DnsRecord,
) -> Result<(), Conflict> {
    draft.check_apex(apex)?;
    if draft.kind == RecordType::CNAME {
        if !apex {
            return draft.check_against(others.next().map(&at), apex);
        }
        // At the apex, the first CNAME or address decides.
        return match firsts.cname.into_iter().chain(firsts.address).min() {
            Some(decisive) => draft.check_against([at(decisive)], apex),
            None => Ok(()),
        };
    }
    let content = compared(draft.kind, &draft.content);
    let first = first_with(keys.hash_one((draft.kind, content.as_ref(), draft.priority)));
    if let Some(i) = first
        && !draft.is_identical(at(i))
    {
        // Another record with the same hash: scan.
        return draft.check_against(others.map(&at), apex);
    }
    // The first record the NS rule sets against the draft.
    let beside = match draft.kind {
        _ if apex => None,
        RecordType::NS => firsts.not_ns,
        RecordType::DS => None,
        _ => firsts.ns,
    };
    // At the apex, a CNAME is set against addresses only.
    let cname = firsts.cname.filter(|_| !apex || is_address(draft.kind));
    match first.into_iter().chain(cname).chain(beside).min() {
        Some(decisive) => draft.check_against([at(decisive)], apex),
        None => Ok(()),
    }
}

/// The first positions (but the one checked) of the kinds the zone rules set against others:
/// a CNAME, an NS, a record neither NS nor DS, and an address (A or AAAA).
#[derive(Clone, Copy, Default)]
struct KindFirsts {
    cname: Option<usize>,
    ns: Option<usize>,
    not_ns: Option<usize>,
    address: Option<usize>,
}

/// How many kinds [`KindFirsts`] has.
const KINDS: usize = 4;

/// Which of [`KindFirsts`]' kinds `kind` is: CNAME, NS, neither NS nor DS, address.
fn kinds_of(kind: RecordType) -> [bool; KINDS] {
    [
        kind == RecordType::CNAME,
        kind == RecordType::NS,
        !matches!(kind, RecordType::NS | RecordType::DS),
        is_address(kind),
    ]
}

/// Whether `kind` is an address type (what a flattened CNAME at the apex takes the place of).
fn is_address(kind: RecordType) -> bool {
    matches!(kind, RecordType::A | RecordType::AAAA)
}

/// The records at one name, indexed so that a record is checked against all of them in
/// constant time: the verdict is [`RecordDraft::check_against`]'s over them in order, so that
/// a name holding many records (a zone file may put a million at one) is checked in linear
/// time. Hashes are keyed per process, and a collision falls back to the scan itself.
pub struct SameName<S = std::collections::hash_map::RandomState> {
    keys: S,
    /// The first two positions of each (type, content, priority), by its hash.
    first_of: std::collections::HashMap<u64, (usize, Option<usize>)>,
    /// The first two positions of each of [`KindFirsts`]' kinds.
    first_kinds: [[Option<usize>; 2]; KINDS],
    len: usize,
}

impl Default for SameName {
    fn default() -> Self {
        Self::with_keys(std::collections::hash_map::RandomState::new())
    }
}

impl<S: std::hash::BuildHasher> SameName<S> {
    /// An empty index hashing with `keys`.
    pub fn with_keys(keys: S) -> Self {
        Self {
            keys,
            first_of: std::collections::HashMap::new(),
            first_kinds: [[None; 2]; KINDS],
            len: 0,
        }
    }

    /// Forgets every record, for the next name (keeping the memory).
    pub fn clear(&mut self) {
        self.first_of.clear();
        self.first_kinds = [[None; 2]; KINDS];
        self.len = 0;
    }

    /// Adds the name's next record (every record added must be at the same name).
    pub fn push(&mut self, record: &DnsRecord) {
        let position = self.len;
        for (firsts, is) in self.first_kinds.iter_mut().zip(kinds_of(record.kind)) {
            if let Some(slot) = firsts.iter_mut().find(|p| p.is_none()).filter(|_| is) {
                *slot = Some(position);
            }
        }
        let identity = identity(&self.keys, record);
        self.first_of
            .entry(identity)
            .and_modify(|(_, second)| {
                second.get_or_insert(position);
            })
            .or_insert((position, None));
        self.len += 1;
    }

    /// `draft.check_against(others, apex)`, where `others` are the records added, in order,
    /// less the one at position `except` (the record being checked, when it is among them);
    /// `at` gives the record added at a position.
    pub fn check<'a>(
        &self,
        (draft, apex): (&RecordDraft, bool),
        except: Option<usize>,
        at: impl Fn(usize) -> &'a DnsRecord,
    ) -> Result<(), Conflict> {
        let first_with = |identity: u64| {
            let &(first, second) = self.first_of.get(&identity)?;
            if Some(first) == except {
                second
            } else {
                Some(first)
            }
        };
        let first = |kind: usize| {
            self.first_kinds[kind]
                .into_iter()
                .flatten()
                .find(|&i| Some(i) != except)
        };
        check_indexed(
            (draft, apex),
            &self.keys,
            (0..self.len).filter(|&i| Some(i) != except),
            first_with,
            KindFirsts {
                cname: first(0),
                ns: first(1),
                not_ns: first(2),
                address: first(3),
            },
            at,
        )
    }
}

/// The records at one name while a change adds and removes them, indexed as [`SameName`] is:
/// a record is checked against those the change leaves in constant time (and logarithmic
/// bookkeeping), so that a batch of writes to a name holding many records costs what it
/// writes. Positions are given in the order records are added; a record written again is
/// removed and added anew, at the end, as the scan in a change sees it.
pub struct ChangingName<S = std::collections::hash_map::RandomState> {
    keys: S,
    /// The positions of each (type, content, priority) present, by its hash, in order.
    positions_of: std::collections::HashMap<u64, Vec<usize>>,
    /// The positions of each of [`KindFirsts`]' kinds.
    kinds: [std::collections::BTreeSet<usize>; KINDS],
    present: std::collections::BTreeSet<usize>,
    next: usize,
}

impl Default for ChangingName {
    fn default() -> Self {
        Self::with_keys(std::collections::hash_map::RandomState::new())
    }
}

impl<S: std::hash::BuildHasher> ChangingName<S> {
    /// An empty index hashing with `keys`.
    pub fn with_keys(keys: S) -> Self {
        Self {
            keys,
            positions_of: std::collections::HashMap::new(),
            kinds: Default::default(),
            present: std::collections::BTreeSet::new(),
            next: 0,
        }
    }

    /// Adds a record at the name, returning its position.
    pub fn add(&mut self, record: &DnsRecord) -> usize {
        let position = self.next;
        self.next += 1;
        for (positions, is) in self.kinds.iter_mut().zip(kinds_of(record.kind)) {
            if is {
                positions.insert(position);
            }
        }
        let identity = identity(&self.keys, record);
        self.positions_of
            .entry(identity)
            .or_default()
            .push(position);
        self.present.insert(position);
        position
    }

    /// Removes the record added at `position` (`record` is that record).
    pub fn remove(&mut self, position: usize, record: &DnsRecord) {
        if !self.present.remove(&position) {
            return;
        }
        for positions in &mut self.kinds {
            positions.remove(&position);
        }
        let identity = identity(&self.keys, record);
        if let Some(positions) = self.positions_of.get_mut(&identity) {
            positions.retain(|&p| p != position);
            if positions.is_empty() {
                self.positions_of.remove(&identity);
            }
        }
    }

    /// `draft.check_against(others, apex)`, where `others` are the records present, in order,
    /// less the one at position `except`; `at` gives the record at a position.
    pub fn check<'a>(
        &self,
        (draft, apex): (&RecordDraft, bool),
        except: Option<usize>,
        at: impl Fn(usize) -> &'a DnsRecord,
    ) -> Result<(), Conflict> {
        let first_with = |identity: u64| {
            let positions = self.positions_of.get(&identity)?;
            positions.iter().copied().find(|&i| Some(i) != except)
        };
        let first = |kind: usize| {
            self.kinds[kind]
                .iter()
                .copied()
                .find(|&i| Some(i) != except)
        };
        check_indexed(
            (draft, apex),
            &self.keys,
            self.present.iter().copied().filter(|&i| Some(i) != except),
            first_with,
            KindFirsts {
                cname: first(0),
                ns: first(1),
                not_ns: first(2),
                address: first(3),
            },
            at,
        )
    }
}

impl DnsRecord {
    /// The record's settable fields as a draft, trusted as they are (for a record already
    /// validated, to check it against its neighbours).
    pub fn to_draft(&self) -> RecordDraft {
        RecordDraft {
            name: self.name.clone(),
            kind: self.kind,
            content: self.content.clone(),
            ttl: self.ttl,
            proxied: self.proxied,
            priority: self.priority,
            comment: self.comment.clone(),
            tags: self.tags.clone(),
            settings: self.settings,
        }
    }

    /// The fields a client may set, as JSON: the base a PATCH merges into.
    pub fn editable_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.kind.as_str()));
        m.insert("content".into(), json!(self.content));
        m.insert("ttl".into(), json!(self.ttl));
        m.insert("proxied".into(), json!(self.proxied));
        if let Some(p) = self.priority {
            m.insert("priority".into(), json!(p));
        }
        m.insert("comment".into(), json!(self.comment));
        m.insert("tags".into(), json!(self.tags));
        if !self.settings.is_empty() {
            m.insert("settings".into(), json!(self.settings));
        }
        m
    }

    /// The record in Cloudflare's API shape.
    pub fn to_api_json(&self, zone_name: &str) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("zone_id".into(), json!(self.zone_id));
        m.insert("zone_name".into(), json!(zone_name));
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.kind.as_str()));
        m.insert("content".into(), json!(self.content));
        m.insert("proxiable".into(), json!(self.kind.proxiable()));
        m.insert("proxied".into(), json!(self.proxied));
        m.insert("ttl".into(), json!(self.ttl));
        if let Some(p) = self.priority {
            m.insert("priority".into(), json!(p));
        }
        if let Some(data) = self.data() {
            m.insert("data".into(), data);
        }
        m.insert("settings".into(), json!(self.settings));
        m.insert(
            "meta".into(),
            json!({"auto_added": false, "managed_by_apps": false, "managed_by_argo_tunnel": false, "source": "primary"}),
        );
        m.insert("comment".into(), json!(self.comment));
        m.insert("tags".into(), json!(self.tags));
        m.insert("locked".into(), json!(false));
        m.insert("created_on".into(), json!(self.created_on));
        m.insert("modified_on".into(), json!(self.modified_on));
        Value::Object(m)
    }

    /// The structured `data` object, for types Cloudflare exposes that way.
    pub fn data(&self) -> Option<Value> {
        let fields = self.kind.data_fields()?;
        let tokens = tokenize(&self.content).ok()?;
        let mut m = Map::new();
        for (i, (key, field)) in fields.iter().enumerate() {
            let value = match field {
                Field::Rest => json!(tokens.get(i..).map(join_rest).unwrap_or_default()),
                _ => field_json(*field, tokens.get(i).map(|t| t.text.as_str()).unwrap_or("")),
            };
            m.insert((*key).into(), value);
        }
        if matches!(self.kind, RecordType::SRV | RecordType::URI)
            && let Some(p) = self.priority
        {
            m.insert("priority".into(), json!(p));
        }
        Some(Value::Object(m))
    }

    /// The order of a zone's records in the snapshot: by name, type, then content.
    pub fn order_key(&self) -> (&str, RecordType, &str) {
        (&self.name, self.kind, &self.content)
    }

    /// The record data in zone-file presentation form, with the priority where it belongs.
    pub fn rdata_text(&self) -> String {
        match (self.kind, self.priority) {
            (RecordType::TXT, _) => txt_presentation(&self.content),
            (RecordType::CNAME | RecordType::NS | RecordType::PTR | RecordType::MX, p) => {
                let target = if self.content == "." {
                    ".".to_owned()
                } else {
                    format!("{}.", self.content)
                };
                match p {
                    Some(p) => format!("{p} {target}"),
                    None => target,
                }
            }
            (RecordType::SRV, Some(p)) => format!("{p} {}", absolute_last(&self.content)),
            (RecordType::SRV, None) => absolute_last(&self.content),
            (RecordType::URI, Some(p)) => format!("{p} {}", self.content),
            (RecordType::HTTPS | RecordType::SVCB, _) => absolute_second(&self.content),
            (RecordType::NAPTR, _) => absolute_last(&self.content),
            _ => self.content.clone(),
        }
    }
}

fn absolute_last(content: &str) -> String {
    match content.rsplit_once(' ') {
        Some((head, last)) if last != "." => format!("{head} {last}."),
        _ => content.to_owned(),
    }
}

fn absolute_second(content: &str) -> String {
    let mut parts = content.splitn(3, ' ');
    let (Some(prio), Some(target)) = (parts.next(), parts.next()) else {
        return content.to_owned();
    };
    let target = if target == "." {
        ".".to_owned()
    } else {
        format!("{target}.")
    };
    match parts.next() {
        Some(rest) => format!("{prio} {target} {rest}"),
        None => format!("{prio} {target}"),
    }
}

fn valid_tag(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| !c.is_control())
}

/// A TXT record's content in zone-file presentation form (see [`crate::txt`]).
pub fn txt_presentation(content: &str) -> String {
    crate::txt::presentation(content)
}

/// A token of presentation-form record data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub text: String,
    pub quoted: bool,
}

/// Splits presentation-form data into tokens, honouring quotes and backslash escapes (escapes
/// are kept as written so the token can be written back unchanged). A word may hold a quoted
/// part, kept with its quotes: an SVCB parameter's value (RFC 9460 §2.1: `alpn="h3,h2"`).
pub(crate) fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let quoted = c == '"';
        if quoted {
            chars.next();
        }
        let mut text = String::new();
        let mut closed = !quoted;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    text.push('\\');
                    match chars.next() {
                        Some(n) => text.push(n),
                        None => return Err("ends with a lone backslash".into()),
                    }
                }
                '"' if quoted => {
                    closed = true;
                    break;
                }
                c if !quoted && c.is_whitespace() => break,
                '"' => {
                    // A quoted part of a word, to its closing quote.
                    text.push('"');
                    loop {
                        match chars.next() {
                            Some('\\') => {
                                text.push('\\');
                                match chars.next() {
                                    Some(n) => text.push(n),
                                    None => return Err("ends with a lone backslash".into()),
                                }
                            }
                            Some('"') => break,
                            Some(c) => text.push(c),
                            None => return Err("has an unterminated quoted string".into()),
                        }
                    }
                    text.push('"');
                }
                c => text.push(c),
            }
        }
        if !closed {
            return Err("has an unterminated quoted string".into());
        }
        tokens.push(Token { text, quoted });
    }
    Ok(tokens)
}

fn join_rest(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| {
            if t.quoted {
                format!("\"{}\"", t.text)
            } else {
                t.text.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn field_json(field: Field, text: &str) -> Value {
    match field {
        Field::U8 | Field::U16 | Field::Degrees(_) | Field::Minutes => {
            text.parse::<u64>().map(Value::from).unwrap_or(json!(text))
        }
        Field::Seconds | Field::Meters(..) => text
            .trim_end_matches('m')
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or(json!(text)),
        Field::Quoted => json!(unescape(text)),
        _ => json!(text),
    }
}

/// Presentation text with each `"` not already escaped written `\"`, its escapes kept.
fn escape_bare_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut escaped = false;
    for c in text.chars() {
        if c == '"' && !escaped {
            out.push('\\');
        }
        escaped = c == '\\' && !escaped;
        out.push(c);
    }
    out
}

/// `x` rounded to `1 / per` (e.g. thousandths), without a negative zero.
fn rounded(x: f64, per: f64) -> f64 {
    (x * per).round() / per + 0.0
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn quote(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// Builds canonical content from a `data` object, checking every field.
fn content_from_data(fields: &[(&str, Field)], data: &Value) -> Result<String, Vec<FieldError>> {
    let Some(obj) = data.as_object() else {
        return Err(vec![FieldError::new("data", "must be a JSON object")]);
    };
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    for (key, field) in fields {
        let path = format!("data.{key}");
        let text = match obj.get(*key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) if matches!(field, Field::Rest) => String::new(),
            None | Some(Value::Null) => {
                errors.push(FieldError::new(path, "is required"));
                continue;
            }
            Some(_) => {
                errors.push(FieldError::new(path, "must be a string or number"));
                continue;
            }
        };
        match check_field(*field, &text, true) {
            Ok(t) if t.is_empty() => {}
            Ok(t) => parts.push(t),
            Err(m) => errors.push(FieldError::new(path, m)),
        }
    }
    if errors.is_empty() {
        Ok(parts.join(" "))
    } else {
        Err(errors)
    }
}

/// Checks one field and returns its canonical presentation text. `raw` means the value came
/// from a `data` object (so quoted strings still need quoting).
fn check_field(field: Field, text: &str, raw: bool) -> Result<String, String> {
    let number = |max: u64| -> Result<String, String> {
        text.parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .map(|n| n.to_string())
            .ok_or_else(|| {
                format!(
                    "'{}' must be a whole number from 0 to {max}",
                    printable(text)
                )
            })
    };
    match field {
        Field::U8 => number(255),
        Field::U16 => number(65_535),
        Field::Degrees(max) => number(u64::from(max)),
        Field::Minutes => number(59),
        // Checked as written after rounding (the wire holds thousandths of a second and
        // centimetres): 59.9999 would be written 60.000, which no zone file reader accepts.
        Field::Seconds => match text.parse::<f64>().map(|s| rounded(s, 1000.0)) {
            Ok(s) if (0.0..60.0).contains(&s) => Ok(format!("{s:.3}")),
            _ => Err("must be a number of seconds from 0 to 59.999".into()),
        },
        Field::Meters(lo, hi) => match text
            .trim_end_matches('m')
            .parse::<f64>()
            .map(|m| rounded(m, 100.0))
        {
            Ok(m) if (lo..=hi).contains(&m) => Ok(format!("{m:.2}m")),
            _ => Err(format!("must be a number of meters from {lo} to {hi}")),
        },
        Field::Direction(a, b) => {
            let up = text.to_ascii_uppercase();
            if up == a || up == b {
                Ok(up)
            } else {
                Err(format!("must be {a} or {b}"))
            }
        }
        Field::Tag => {
            if !text.is_empty()
                && text.len() <= 15
                && text.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                Ok(text.to_ascii_lowercase())
            } else {
                Err("must be a tag of letters and digits, such as issue, issuewild or iodef".into())
            }
        }
        Field::Quoted => {
            if text.len() > 2048 {
                return Err("is too long".into());
            }
            Ok(if raw {
                quote(text)
            } else {
                format!("\"{text}\"")
            })
        }
        Field::Host => {
            if text == "." {
                return Ok(".".into());
            }
            name::normalize(text, NameKind::Target, "target").map_err(|e| e.message)
        }
        Field::Rest => Ok(text.trim().to_owned()),
        Field::Hex => {
            let t: String = text.split_whitespace().collect();
            if !t.is_empty()
                && t.len().is_multiple_of(2)
                && t.bytes().all(|b| b.is_ascii_hexdigit())
            {
                Ok(t.to_ascii_lowercase())
            } else {
                Err("must be an even number of hexadecimal digits".into())
            }
        }
        Field::Base64 => {
            let t: String = text.split_whitespace().collect();
            if !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            {
                Ok(t)
            } else {
                Err("must be base64".into())
            }
        }
    }
}

/// Canonical content from a `content` string. For MX, SRV and URI a leading priority in the
/// content (zone-file style) is moved into `priority`.
pub(crate) fn canonical_content(
    kind: RecordType,
    raw: &str,
    priority: &mut Option<u16>,
) -> Result<String, FieldError> {
    let bad = |m: String| FieldError::new("content", m);
    if raw.len() > MAX_CONTENT {
        return Err(bad(format!("is longer than {MAX_CONTENT} bytes")));
    }
    if kind == RecordType::TXT {
        // A TXT record's text is its data, spaces at the edges included.
        return crate::txt::check(raw).map_err(bad);
    }
    let raw = raw.trim();
    match kind {
        RecordType::A => raw
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| bad(format!("'{}' is not a valid IPv4 address", printable(raw)))),
        RecordType::AAAA => raw
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| bad(format!("'{}' is not a valid IPv6 address", printable(raw)))),
        RecordType::CNAME | RecordType::NS | RecordType::PTR => {
            let target = name::normalize(raw, NameKind::Target, "content")?;
            name::no_address(&target, "content")?;
            Ok(target)
        }
        // One base64 key, which zone files may split over several words (RFC 7929 §2.3).
        RecordType::OPENPGPKEY => check_field(Field::Base64, raw, false)
            .and_then(|key| {
                data_encoding::BASE64
                    .decode(key.as_bytes())
                    .map(|_| key)
                    .map_err(|_| "must be base64".to_owned())
            })
            .map_err(|m| bad(format!("the key {m}"))),
        RecordType::MX => {
            let mut words = raw.split_whitespace();
            let (first, second) = (words.next(), words.next());
            let target = match (first, second, words.next()) {
                (Some(p), Some(t), None) => {
                    *priority =
                        Some(p.parse().map_err(|_| {
                            bad(format!("'{}' is not an MX priority", printable(p)))
                        })?);
                    t
                }
                (Some(t), None, None) => t,
                _ => return Err(bad("must be a mail server host name".into())),
            };
            if target == "." {
                return Ok(".".into());
            }
            let target = name::normalize(target, NameKind::Target, "content")?;
            name::no_address(&target, "content")?;
            Ok(target)
        }
        _ => {
            let Some(fields) = kind.data_fields() else {
                return Err(bad(format!("{kind} is not supported")));
            };
            let mut tokens = tokenize(raw).map_err(|m| bad(format!("'{}' {m}", printable(raw))))?;
            let fixed = fields
                .iter()
                .filter(|(_, f)| !matches!(f, Field::Rest))
                .count();
            if matches!(kind, RecordType::SRV | RecordType::URI) && tokens.len() == fixed + 1 {
                let p = tokens.remove(0);
                *priority = Some(
                    p.text
                        .parse()
                        .map_err(|_| bad(format!("'{}' is not a priority", printable(&p.text))))?,
                );
            }
            if kind == RecordType::LOC {
                loc_full_form(&mut tokens);
            }
            let has_rest = fixed < fields.len();
            // A hex or base64 value at the end may be split over several words (as BIND
            // writes long ones).
            let split_last = matches!(fields.last(), Some((_, Field::Hex | Field::Base64)));
            let count_ok = if has_rest || split_last {
                tokens.len() >= fixed
            } else {
                tokens.len() == fixed
            };
            if !count_ok {
                let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
                return Err(bad(format!(
                    "a {kind} record's content must be: {}",
                    names.join(" ")
                )));
            }
            // Hex and base64 values may be split over several words in zone files.
            let mut parts = Vec::new();
            for (i, (key, field)) in fields.iter().enumerate() {
                let text = match field {
                    Field::Rest => join_rest(&tokens[i..]),
                    Field::Hex | Field::Base64 if i == fields.len() - 1 => tokens[i..]
                        .iter()
                        .map(|t| t.text.as_str())
                        .collect::<String>(),
                    _ => mnemonic(kind, key, &tokens[i].text)
                        .map_or_else(|| tokens[i].text.clone(), |n| n.to_string()),
                };
                if matches!(field, Field::Quoted) && !tokens[i].quoted {
                    // Unquoted character strings are allowed in zone files; quoted as they
                    // are, their escapes kept (`a\\b` is the three characters a\b).
                    let inner = escape_bare_quotes(&text);
                    parts.push(
                        check_field(*field, &inner, false)
                            .map_err(|m| bad(format!("{key} {m}")))?,
                    );
                    continue;
                }
                let t = check_field(*field, &text, false).map_err(|m| bad(format!("{key} {m}")))?;
                if !t.is_empty() {
                    parts.push(t);
                }
            }
            if !has_rest && tokens.len() > fields.len() {
                let last = fields[fields.len() - 1].1;
                if !matches!(last, Field::Hex | Field::Base64) {
                    return Err(bad(format!("has too many values for a {kind} record")));
                }
            }
            Ok(parts.join(" "))
        }
    }
}

/// A LOC record's words in their full form (RFC 1876 §3): minutes and seconds after the
/// degrees may be left out (0), and so may the size (1m) and the precisions (10000m, 10m)
/// after the altitude. Words that do not read as LOC are left as they are for the field checks
/// to report.
fn loc_full_form(tokens: &mut Vec<Token>) {
    let word = |t: &str| Token {
        text: t.to_owned(),
        quoted: false,
    };
    let mut full = Vec::with_capacity(12);
    let mut rest = tokens.iter();
    for directions in [["N", "S"], ["E", "W"]] {
        let mut angle = Vec::new();
        loop {
            let Some(t) = rest.next() else {
                return;
            };
            if directions.iter().any(|d| t.text.eq_ignore_ascii_case(d)) {
                if angle.is_empty() || angle.len() > 3 {
                    return;
                }
                angle.resize_with(3, || word("0"));
                full.append(&mut angle);
                full.push(t.clone());
                break;
            }
            angle.push(t.clone());
        }
    }
    let mut after: Vec<Token> = rest.cloned().collect();
    if after.is_empty() || after.len() > 4 {
        return;
    }
    for default in ["1m", "10000m", "10m"].iter().skip(after.len() - 1) {
        after.push(word(default));
    }
    full.append(&mut after);
    *tokens = full;
}

/// The number a mnemonic stands for in field `key` of a `kind` record (BIND and Knot write
/// CERT types and DNSSEC algorithms so): `CERT PKIX 0 RSASHA256 …`, `DS 60485 RSASHA1 1 …`.
fn mnemonic(kind: RecordType, key: &str, text: &str) -> Option<u16> {
    const CERT_TYPES: &[(&str, u16)] = &[
        ("PKIX", 1),
        ("SPKI", 2),
        ("PGP", 3),
        ("IPKIX", 4),
        ("ISPKI", 5),
        ("IPGP", 6),
        ("ACPKIX", 7),
        ("IACPKIX", 8),
        ("URI", 253),
        ("OID", 254),
    ];
    const ALGORITHMS: &[(&str, u16)] = &[
        ("RSAMD5", 1),
        ("DH", 2),
        ("DSA", 3),
        ("RSASHA1", 5),
        ("DSA-NSEC3-SHA1", 6),
        ("RSASHA1-NSEC3-SHA1", 7),
        ("RSASHA256", 8),
        ("RSASHA512", 10),
        ("ECC-GOST", 12),
        ("ECDSAP256SHA256", 13),
        ("ECDSAP384SHA384", 14),
        ("ED25519", 15),
        ("ED448", 16),
        ("INDIRECT", 252),
        ("PRIVATEDNS", 253),
        ("PRIVATEOID", 254),
    ];
    let table = match (kind, key) {
        (RecordType::CERT, "type") => CERT_TYPES,
        (RecordType::CERT | RecordType::DS | RecordType::DNSKEY, "algorithm") => ALGORITHMS,
        _ => return None,
    };
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, n)| *n)
}

/// A DNSKEY's protocol is 3 (RFC 4034 §2.1.2) and its key is base64 that decodes.
fn check_dnskey(kind: RecordType, content: &str) -> Result<(), FieldError> {
    if kind != RecordType::DNSKEY {
        return Ok(());
    }
    let words: Vec<&str> = content.split_whitespace().collect();
    if words.get(1) != Some(&"3") {
        return Err(FieldError::new(
            "content",
            "a DNSKEY's protocol must be 3 (RFC 4034)",
        ));
    }
    let key: String = words.get(3..).unwrap_or_default().concat();
    if data_encoding::BASE64.decode(key.as_bytes()).is_err() {
        return Err(FieldError::new(
            "content",
            "a DNSKEY's public key must be base64",
        ));
    }
    Ok(())
}

/// A LOC latitude of 90° or longitude of 180° has no minutes or seconds beyond it (RFC 1876).
fn check_loc_extremes(kind: RecordType, content: &str) -> Result<(), FieldError> {
    if kind != RecordType::LOC {
        return Ok(());
    }
    let words: Vec<&str> = content.split_whitespace().collect();
    for (at, max, what) in [(0, "90", "latitude"), (4, "180", "longitude")] {
        let beyond = |w: &str| w.parse::<f64>().is_ok_and(|x| x != 0.0);
        if words.get(at) == Some(&max)
            && (words.get(at + 1).copied().is_some_and(beyond)
                || words.get(at + 2).copied().is_some_and(beyond))
        {
            return Err(FieldError::new(
                "content",
                format!("a {what} of {max} degrees can have no minutes or seconds beyond it"),
            ));
        }
    }
    Ok(())
}

/// A DS digest, an SSHFP fingerprint or a TLSA association whose type says how long it is
/// must be that long (a DS that can never match makes the child zone bogus to validating
/// resolvers).
fn check_digest_length(kind: RecordType, content: &str) -> Result<(), FieldError> {
    let words: Vec<&str> = content.split_whitespace().collect();
    // (The type's position among the fields, the digest's from there on.)
    let (at, lengths): (usize, &[(u8, usize)]) = match kind {
        RecordType::DS => (2, &[(1, 20), (2, 32), (3, 32), (4, 48)]),
        RecordType::SSHFP => (1, &[(1, 20), (2, 32)]),
        RecordType::TLSA | RecordType::SMIMEA => (2, &[(1, 32), (2, 64)]),
        _ => return Ok(()),
    };
    let Some(digest_type) = words.get(at).and_then(|w| w.parse::<u8>().ok()) else {
        return Ok(());
    };
    let Some(&(_, want)) = lengths.iter().find(|(t, _)| *t == digest_type) else {
        return Ok(());
    };
    let hex: usize = words
        .get(at + 1..)
        .unwrap_or_default()
        .iter()
        .map(|w| w.len())
        .sum();
    if hex == want * 2 {
        return Ok(());
    }
    let what = match kind {
        RecordType::DS => "digest type",
        RecordType::SSHFP => "fingerprint type",
        _ => "matching type",
    };
    Err(FieldError::new(
        "content",
        format!(
            "{kind} {what} {digest_type} takes {want} bytes ({} hex digits), not {hex} hex digits",
            want * 2
        ),
    ))
}

/// Writes the `\DDD` escapes (RFC 1035 §5.1) of the content of a type the DNS wire-format
/// library reads from text (which takes the digits for something else) as the characters they
/// stand for: `"ca\059x"` is kept as `"ca;x"`, `\034` as `\"`. Bytes that are no printable
/// text (control bytes, or not UTF-8 together) are refused, as are escapes of a space or a
/// delimiter outside quotes.
pub fn decimal_escapes(kind: RecordType, content: &mut String) -> Result<(), FieldError> {
    let applies = matches!(
        kind,
        RecordType::CAA
            | RecordType::HTTPS
            | RecordType::SVCB
            | RecordType::NAPTR
            | RecordType::CERT
            | RecordType::URI
    );
    if !applies || !content.contains('\\') {
        return Ok(());
    }
    let refuse = |why: String| FieldError::new("content", format!("invalid {kind} data: {why}"));
    let bytes = content.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let (mut i, mut quoted, mut changed) = (0, false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'\\' => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit));
                let Some(digits) = digits else {
                    // `\X`: kept as it is, for the library.
                    out.extend_from_slice(bytes.get(i..i + 2).unwrap_or(&bytes[i..]));
                    i += 2;
                    continue;
                };
                let value = digits
                    .iter()
                    .fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
                let byte = u8::try_from(value)
                    .map_err(|_| refuse(format!("the escape \\{value:03} is over 255")))?;
                if byte.is_ascii_control() {
                    return Err(refuse(format!(
                        "the escape \\{value:03} is a control byte, which is not supported"
                    )));
                }
                if !quoted && matches!(byte, b' ' | b';' | b'(' | b')') {
                    return Err(refuse(format!(
                        "the escape \\{value:03} outside quotes: put the value in quotes"
                    )));
                }
                if matches!(byte, b'"' | b'\\') {
                    out.push(b'\\');
                }
                out.push(byte);
                changed = true;
                i += 4;
                continue;
            }
            _ => {}
        }
        out.push(bytes[i]);
        i += 1;
    }
    if changed {
        *content = String::from_utf8(out)
            .map_err(|_| refuse("its \\DDD escapes do not spell UTF-8 text".into()))?;
    }
    Ok(())
}

/// Writes an SVCB or HTTPS content's `alpn` list as the protocol ids it names, read as RFC 9460
/// Appendix A reads it: the value's escapes first (`\DDD`, `\X`), then the list's (`\,` a comma
/// within an id, `\\` a backslash). So `alpn=h2\,h3` names `h2` and `h3` and is kept as
/// `alpn=h2,h3`, as BIND and Knot read it; the wire-format library reads one level of escapes
/// only. An id holding a comma, a backslash, a quote, a space or a control byte is refused.
pub fn alpn_lists(kind: RecordType, content: &mut String) -> Result<(), FieldError> {
    if !matches!(kind, RecordType::SVCB | RecordType::HTTPS) {
        return Ok(());
    }
    let refuse = |why: &str| FieldError::new("content", format!("invalid {kind} data: {why}"));
    // Words: runs outside quotes split by white space; a backslash takes the next character.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut quoted, mut escaped) = (None, false, false);
    for (i, c) in content.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    words.push((s, i));
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        words.push((s, content.len()));
    }
    let mut changed = false;
    let mut out = String::with_capacity(content.len());
    let mut last = 0;
    for (from, to) in words {
        let word = &content[from..to];
        let Some(value) = word.strip_prefix("alpn=") else {
            continue;
        };
        let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        let quote = if unquoted.is_some() { "\"" } else { "" };
        let value = unquoted.unwrap_or(value);
        // The value's escapes.
        let mut text = Vec::with_capacity(value.len());
        let mut bytes = value.as_bytes().iter();
        while let Some(&b) = bytes.next() {
            if b != b'\\' {
                text.push(b);
                continue;
            }
            let rest = bytes.as_slice();
            match rest.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit)) {
                Some(d) => {
                    let v = d.iter().fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
                    text.push(u8::try_from(v).map_err(|_| refuse("an escape over 255"))?);
                    bytes.nth(2);
                }
                None => text.push(*bytes.next().ok_or_else(|| refuse("a lone backslash"))?),
            }
        }
        // The list's.
        let (mut ids, mut id) = (Vec::new(), Vec::new());
        let mut list = text.iter().copied();
        while let Some(b) = list.next() {
            match b {
                b',' => ids.push(std::mem::take(&mut id)),
                b'\\' => id.push(list.next().ok_or_else(|| refuse("a lone backslash"))?),
                b => id.push(b),
            }
        }
        ids.push(id);
        let plain = |id: &Vec<u8>| {
            id.iter().all(|b| {
                b.is_ascii_graphic() && !matches!(b, b',' | b'\\' | b'"' | b';' | b'(' | b')')
            })
        };
        if !ids.iter().all(plain) {
            return Err(refuse(
                "an alpn protocol id holding a comma, a backslash, a quote, a space or a control byte is not supported",
            ));
        }
        // Quotes, as Cloudflare writes values, are kept.
        let ids: Vec<_> = ids.iter().map(|id| String::from_utf8_lossy(id)).collect();
        let canonical = format!("alpn={quote}{}{quote}", ids.join(","));
        if canonical != word {
            out.push_str(&content[last..from]);
            out.push_str(&canonical);
            last = to;
            changed = true;
        }
    }
    if changed {
        out.push_str(&content[last..]);
        *content = out;
    }
    Ok(())
}

/// Checks content with the DNS wire-format library, for the types it can encode, so that
/// nothing is stored that the DNS server could not serve.
fn check_wire(kind: RecordType, content: &str, priority: Option<u16>) -> Result<(), FieldError> {
    check_digest_length(kind, content)?;
    check_loc_extremes(kind, content)?;
    check_dnskey(kind, content)?;
    let text = match kind {
        RecordType::SRV => format!("{} {}", priority.unwrap_or(0), content),
        RecordType::CAA
        | RecordType::HTTPS
        | RecordType::SVCB
        | RecordType::TLSA
        | RecordType::SSHFP
        | RecordType::NAPTR
        | RecordType::CERT => content.to_owned(),
        _ => return Ok(()),
    };
    let Some(wire) = kind.wire() else {
        return Ok(());
    };
    let data = RData::try_from_str(wire, &text)
        .map_err(|e| FieldError::new("content", format!("invalid {kind} data: {e}")))?;
    let params = match &data {
        RData::SVCB(svcb) | RData::HTTPS(HTTPS(svcb)) => svcb.svc_params.as_slice(),
        RData::NAPTR(naptr) => return check_naptr(&naptr.regexp, naptr.replacement.is_root()),
        _ => return Ok(()),
    };
    // RFC 9460 §2.2: a key given twice makes the record malformed.
    // Compared by number: `key1` and `alpn` are the same key.
    let mut keys: Vec<(u16, _)> = params
        .iter()
        .map(|(key, _)| (u16::from(*key), *key))
        .collect();
    keys.sort_unstable_by_key(|(number, _)| *number);
    match keys.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        Some([(_, key), _]) => Err(FieldError::new(
            "content",
            format!("invalid {kind} data: the service parameter {key} is given twice"),
        )),
        _ => check_svc_params(kind, params),
    }
}

/// The rules of RFC 9460 §7-8 a record's service parameters keep, beyond what the wire-format
/// library reads: without them the answer is malformed to resolvers (or refused by BIND).
fn check_svc_params(
    kind: RecordType,
    params: &[(SvcParamKey, SvcParamValue)],
) -> Result<(), FieldError> {
    let refuse = |m: String| {
        Err(FieldError::new(
            "content",
            format!("invalid {kind} data: {m}"),
        ))
    };
    let has = |key: SvcParamKey| params.iter().any(|(k, _)| *k == key);
    for (key, value) in params {
        let number = u16::from(*key);
        match value {
            // A key the library knows, written as `keyN`, is read as opaque bytes, which are
            // not its wire form.
            SvcParamValue::Unknown(_) if number <= 6 => {
                const NAMES: [&str; 7] = [
                    "mandatory",
                    "alpn",
                    "no-default-alpn",
                    "port",
                    "ipv4hint",
                    "ech",
                    "ipv6hint",
                ];
                let name = NAMES[usize::from(number)];
                return refuse(format!("write key{number} by its name, {name}"));
            }
            _ if *key == SvcParamKey::Key65535 => {
                return refuse("key65535 is reserved".into());
            }
            SvcParamValue::Mandatory(Mandatory(keys)) => {
                if keys.is_empty() {
                    return refuse("mandatory lists no key".into());
                }
                for (i, k) in keys.iter().enumerate() {
                    if *k == SvcParamKey::Mandatory {
                        return refuse("mandatory cannot list itself".into());
                    }
                    if keys[..i].contains(k) {
                        return refuse(format!("mandatory lists {k} twice"));
                    }
                    if !has(*k) {
                        return refuse(format!("mandatory lists {k}, which is not given"));
                    }
                }
            }
            SvcParamValue::Alpn(Alpn(ids))
                if ids.is_empty() || ids.iter().any(|id| id.is_empty() || id.len() > 255) =>
            {
                return refuse("alpn needs protocol ids of 1 to 255 bytes".into());
            }
            _ => {}
        }
    }
    if has(SvcParamKey::NoDefaultAlpn) && !has(SvcParamKey::Alpn) {
        return refuse("no-default-alpn needs alpn".into());
    }
    Ok(())
}

/// A NAPTR's regexp is empty or a substitution `delim ere delim replacement delim [i]` (RFC 3402
/// §3.2), and it and the replacement are not both given (RFC 3403 §4.1).
fn check_naptr(regexp: &[u8], replacement_is_root: bool) -> Result<(), FieldError> {
    let refuse = |m: &str| {
        Err(FieldError::new(
            "content",
            format!("invalid NAPTR data: {m}"),
        ))
    };
    if regexp.is_empty() {
        return Ok(());
    }
    if !replacement_is_root {
        return refuse("a regexp and a replacement other than . cannot both be given");
    }
    let delim = regexp[0];
    if delim.is_ascii_digit() || delim == b'\\' || delim == b'i' || delim.is_ascii_whitespace() {
        return refuse("the regexp must start with a delimiter (such as !)");
    }
    let body = regexp.strip_suffix(b"i").unwrap_or(regexp);
    // Delimiters not escaped by a backslash.
    let mut delims = 0;
    let mut escaped = false;
    for &b in body {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == delim {
            delims += 1;
        }
    }
    if delims != 3 || body.last() != Some(&delim) {
        return refuse(
            "the regexp must be delimiter, expression, delimiter, replacement, delimiter",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(body: Value) -> Result<RecordDraft, ModelError> {
        RecordDraft::from_json("example.com", &body)
    }

    /// The canonical content of a `kind` record written `content`, or why it is refused.
    fn content_of(kind: &str, content: &str) -> Result<String, String> {
        draft(json!({"type": kind, "name": "x", "content": content}))
            .map(|d| d.content)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn loc_values_are_checked_as_they_are_written_and_short_forms_are_read() {
        let loc = |c: &str| content_of("LOC", c);
        // 59.9999 seconds would be written 60.000: refused, as BIND refuses it.
        assert!(loc("52 22 59.9999 N 4 53 0 E 0m 1m 10000m 10m").is_err());
        assert_eq!(
            loc("52 22 59.9994 N 4 53 -0 E -0m 1m 10000m 10m").as_deref(),
            Ok("52 22 59.999 N 4 53 0.000 E 0.00m 1.00m 10000.00m 10.00m")
        );
        assert!(loc("90 30 0 N 4 53 0 E 0m 1m 10000m 10m").is_err());
        assert!(loc("52 0 0 N 180 0 0.5 E 0m 1m 10000m 10m").is_err());
        assert!(loc("90 0 0 S 180 0 0 W 0m 1m 10000m 10m").is_ok());
        // Minutes, seconds, size and precisions may be left out (RFC 1876 §3).
        assert_eq!(
            loc("52 22 N 4 53 E -2m").as_deref(),
            Ok("52 22 0.000 N 4 53 0.000 E -2.00m 1.00m 10000.00m 10.00m")
        );
        assert_eq!(
            loc("52 N 4 E 10m 20m").as_deref(),
            Ok("52 0 0.000 N 4 0 0.000 E 10.00m 20.00m 10000.00m 10.00m")
        );
        assert!(loc("52 22 N 4 53").is_err());
        // What is written is read back the same (the snapshot checks stored records so).
        for c in [
            "52 22 59.9994 N 4 53 0 E 42849672.949m 1m 10000m 10m",
            "0 0 0.0005 S 0 0 0 W -100000m 0m 0m 0m",
        ] {
            let once = loc(c).expect(c);
            assert_eq!(loc(&once).as_deref(), Ok(once.as_str()), "{c}");
        }
    }

    #[test]
    fn split_hex_and_base64_and_mnemonics_are_read_as_bind_writes_them() {
        let digest = "0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6";
        let (a, b) = digest.split_at(30);
        assert_eq!(
            content_of("TLSA", &format!("3 1 1 {} {b}", a.to_uppercase())),
            Ok(format!("3 1 1 {digest}"))
        );
        let sha1 = "2bb183af5f22588179a53b0a98631fad1a292118";
        assert_eq!(
            content_of(
                "DS",
                &format!("60485 RSASHA1 1 {} {}", &sha1[..20], &sha1[20..])
            ),
            Ok(format!("60485 5 1 {sha1}"))
        );
        assert_eq!(
            content_of("CERT", "PKIX 0 rsasha256 MIIBIjAN BgkqhkiG"),
            Ok("1 0 8 MIIBIjANBgkqhkiG".into())
        );
        assert!(content_of("CERT", "NOPE 0 8 MIIB").is_err());
        assert!(
            content_of("SSHFP", "1 1").is_err(),
            "a value is still needed"
        );
    }

    #[test]
    fn dnskey_smimea_and_openpgpkey_records_are_read_as_cloudflare_takes_them() {
        assert_eq!(
            content_of(
                "DNSKEY",
                "257 3 ECDSAP256SHA256 mdsswUyr3DPW132m Oi8V9xESWE8jTo0d"
            ),
            Ok("257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0d".into())
        );
        let d = draft(json!({"type": "DNSKEY", "name": "@", "data":
            {"flags": 256, "protocol": 3, "algorithm": 13, "public_key": "AwEAAavPt5yJOg4="}}))
        .expect("data form");
        assert_eq!(d.content, "256 3 13 AwEAAavPt5yJOg4=");
        assert!(
            content_of("DNSKEY", "257 2 13 AwEAAavPt5yJOg4=").is_err(),
            "protocol 3"
        );
        assert!(content_of("DNSKEY", "257 3 13 AwEAAa!").is_err());
        let digest = "0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6";
        assert_eq!(
            content_of("SMIMEA", &format!("3 1 1 {digest}")),
            Ok(format!("3 1 1 {digest}"))
        );
        assert!(
            content_of("SMIMEA", "3 1 1 abcd").is_err(),
            "a SHA-256 is 32 bytes"
        );
        assert_eq!(
            content_of("OPENPGPKEY", "mQINBFit 2jsBEADr"),
            Ok("mQINBFit2jsBEADr".into())
        );
        assert!(content_of("OPENPGPKEY", "not base64!").is_err());
        assert!(content_of("OPENPGPKEY", "abc").is_err(), "not whole base64");
    }

    #[test]
    fn record_settings_are_kept_and_bad_ones_refused() {
        let d = draft(
            json!({"type": "A", "name": "x", "content": "192.0.2.1", "proxied": true,
            "settings": {"ipv4_only": true, "ipv6_only": null}}),
        )
        .expect("valid");
        assert_eq!(d.settings.ipv4_only, Some(true));
        let record = d.into_record("r".into(), "z", "t", "t");
        assert_eq!(
            record.to_api_json("example.com")["settings"],
            json!({"ipv4_only": true})
        );
        let again = draft(Value::Object(record.editable_json())).expect("round trip");
        assert_eq!(again.settings, record.settings);
        for bad in [
            json!({"ipv4_only": true, "ipv6_only": true}),
            json!({"ipv4_only": "yes"}),
            json!({"flatten_cname": true}),
            json!({"color": true}),
            json!([]),
        ] {
            let body = json!({"type": "A", "name": "x", "content": "192.0.2.1", "settings": bad});
            assert!(draft(body).is_err(), "{bad}");
        }
        let mx = json!({"type": "MX", "name": "x", "content": "mail.example.com", "priority": 1,
            "settings": {"ipv4_only": true}});
        assert!(draft(mx).is_err(), "not for MX");
        // What Cloudflare returns for a record with no settings is taken back.
        let cname = json!({"type": "CNAME", "name": "x", "content": "a.example.com",
            "settings": {"flatten_cname": false}});
        assert!(draft(cname).is_ok());
    }

    #[test]
    fn service_parameters_that_make_a_malformed_answer_are_refused() {
        for bad in [
            "1 . mandatory=port alpn=h2",
            "1 . mandatory=mandatory alpn=h2",
            "1 . mandatory=alpn,alpn alpn=h2",
            "1 . no-default-alpn",
            "1 . key1=h2",
            "1 . key3=443",
            "1 . alpn=\"\"",
        ] {
            assert!(content_of("HTTPS", bad).is_err(), "{bad}");
            assert!(content_of("SVCB", bad).is_err(), "{bad}");
        }
        for good in [
            "1 . alpn=h2 mandatory=alpn",
            "1 . alpn=h3,h2 no-default-alpn port=8443",
            "1 svc.example.com. key65280=x",
        ] {
            assert!(content_of("HTTPS", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_naptr_regexp_is_a_delimited_substitution_and_excludes_a_replacement() {
        assert!(
            content_of(
                "NAPTR",
                "100 10 \"u\" \"E2U+sip\" \"!^.*$!sip:info@example.com!\" ."
            )
            .is_ok()
        );
        assert!(
            content_of(
                "NAPTR",
                "100 10 \"u\" \"E2U+sip\" \"!^.*$!sip:x@example.com!i\" ."
            )
            .is_ok()
        );
        assert!(
            content_of(
                "NAPTR",
                "100 10 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.com."
            )
            .is_ok()
        );
        for bad in [
            "1 1 \"u\" \"E2U+sip\" \"bad\" .",
            "1 1 \"u\" \"E2U+sip\" \"!^.*$!sip:x!\" _sip._udp.example.com.",
            "1 1 \"u\" \"E2U+sip\" \"!a!b\" .",
        ] {
            assert!(content_of("NAPTR", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ds_record_is_refused_at_the_apex_and_taken_below_it() {
        let ds = |name: &str| {
            draft(json!({"type": "DS", "name": name,
                "content": "60485 5 1 2bb183af5f22588179a53b0a98631fad1a292118"}))
            .expect("DS")
        };
        assert_eq!(
            ds("example.com")
                .check_against([], true)
                .map_err(|c| c.code),
            Err(1004)
        );
        assert!(ds("child.example.com").check_against([], false).is_ok());
        let mut index = SameName::default();
        assert_eq!(
            index
                .check((&ds("example.com"), true), None, |_| unreachable!())
                .map_err(|c| c.code),
            Err(1004)
        );
        index.clear();
    }

    #[test]
    fn a_record_is_parsed_and_relative_name_resolved() {
        let d = draft(json!({"type":"A","name":"www","content":"192.0.2.1","proxied":true}))
            .expect("valid");
        assert_eq!(d.name, "www.example.com");
        assert_eq!(d.ttl, 1);
        assert!(d.proxied);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let err = draft(json!({"type":"A","name":"a..b","content":"300.1.1.1","ttl":5}))
            .expect_err("invalid");
        let fields: Vec<&str> = err.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "ttl", "content"]);
    }

    #[test]
    fn non_proxiable_type_cannot_be_proxied() {
        let err = draft(json!({"type":"TXT","name":"@","content":"x","proxied":true}))
            .expect_err("invalid");
        assert_eq!(err.errors()[0].field, "proxied");
    }

    #[test]
    fn srv_accepts_data_or_content_to_the_same_record() {
        let a = draft(json!({"type":"SRV","name":"_sip._tcp","data":{"priority":10,"weight":5,"port":5060,"target":"SIP.example.com."}}))
            .expect("valid");
        let b = draft(json!({"type":"SRV","name":"_sip._tcp.example.com","content":"10 5 5060 sip.example.com"}))
            .expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.content, "5 5060 sip.example.com");
        assert_eq!(a.priority, Some(10));
    }

    #[test]
    fn decimal_escapes_are_kept_as_the_characters_they_stand_for() {
        let wire = |kind: WireType, content: &str| {
            use hickory_proto::serialize::binary::BinEncodable as _;
            RData::try_from_str(kind, content)
                .expect("parses")
                .to_bytes()
                .expect("encodes")
        };
        let content = |kind: &str, c: &str| {
            draft(json!({"type": kind, "name": "@", "content": c})).map(|d| d.content)
        };
        let caa = content("CAA", "0 iodef \"mailto:ops\\064ca\\059x.example\"").expect("valid");
        assert_eq!(caa, "0 iodef \"mailto:ops@ca;x.example\"");
        assert!(wire(WireType::CAA, &caa).ends_with(b"iodefmailto:ops@ca;x.example"));
        let naptr = "100 10 \"u\" \"E2U\\043sip\" \"!^.*$!sip:a\\064b.example!\" .";
        let naptr = content("NAPTR", naptr).expect("valid");
        assert_eq!(
            naptr,
            "100 10 \"u\" \"E2U+sip\" \"!^.*$!sip:a@b.example!\" ."
        );
        let bytes = wire(WireType::NAPTR, &naptr);
        assert!(bytes.windows(7).any(|w| w == b"E2U+sip"), "{bytes:?}");
        // A quote and a backslash stay escaped; UTF-8 spelt in escapes is read as such.
        assert_eq!(
            content("CAA", "0 issue \"a\\034b\\092c\\195\\169\"").expect("valid"),
            "0 issue \"a\\\"b\\\\c\u{e9}\""
        );
        for bad in [
            "0 issue \"a\\007b\"",
            "0 issue \"\\200\"",
            "0 issue \"\\256\"",
        ] {
            let err = content("CAA", bad).expect_err(bad);
            assert!(format!("{err:?}").contains("escape"), "{bad}: {err:?}");
        }
        assert!(
            content("SVCB", "1 . alpn=h2\\059x").is_err(),
            "outside quotes"
        );
        // Other types and contents without escapes are left as they came.
        assert_eq!(
            content("CAA", "0 issue \"letsencrypt.org\"").expect("valid"),
            "0 issue \"letsencrypt.org\""
        );
    }

    #[test]
    fn caa_data_round_trips() {
        let d = draft(json!({"type":"CAA","name":"@","data":{"flags":0,"tag":"issue","value":"letsencrypt.org"}}))
            .expect("valid");
        assert_eq!(d.content, "0 issue \"letsencrypt.org\"");
        let r = d.into_record("i".into(), "z", "t", "t");
        assert_eq!(
            r.data(),
            Some(json!({"flags":0,"tag":"issue","value":"letsencrypt.org"}))
        );
    }

    #[test]
    fn srv_data_priority_is_read_as_the_other_data_fields_or_refused() {
        let srv = |priority: Value| {
            draft(json!({"type": "SRV", "name": "_sip._tcp", "priority": 5,
                "data": {"priority": priority, "weight": 5, "port": 5060, "target": "x.example.com"}}))
        };
        assert_eq!(srv(json!("10")).expect("valid").priority, Some(10));
        assert_eq!(srv(json!(10)).expect("valid").priority, Some(10));
        for bad in [
            json!(-1),
            json!("abc"),
            json!(70000),
            json!(1.5),
            json!([1]),
        ] {
            let err = srv(bad.clone()).expect_err("invalid");
            assert_eq!(err.errors()[0].field, "data.priority", "{bad}");
        }
    }

    #[test]
    fn structured_types_are_checked() {
        for (t, content) in [
            ("TLSA", "3 1 0 abcdef12"),
            (
                "TLSA",
                "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            (
                "SSHFP",
                "4 2 123456789abcdef67890123456789abcdef67890123456789abcdef123456789",
            ),
            (
                "NAPTR",
                "100 10 \"S\" \"SIP+D2U\" \"\" _sip._udp.example.com",
            ),
            ("DS", DS_1),
            ("DS", "2371 13 1 1F987CC6583E92DF0890718C42A1B2C3D4E5F607"),
            ("HTTPS", "1 . alpn=h2,h3"),
            ("SVCB", "1 svc.example.com port=8443"),
            ("LOC", "37 46 46 N 122 23 35 W 0m 100m 0m 0m"),
            ("URI", "10 1 \"https://example.com/\""),
            ("CERT", "1 12345 8 AQIDBA=="),
        ] {
            let body = json!({"type": t, "name": "_x._tcp", "content": content});
            assert!(
                draft(body).is_ok(),
                "{t} {content}: {:?}",
                draft(json!({"type": t, "name": "_x._tcp", "content": content}))
            );
        }
        assert!(draft(json!({"type":"TLSA","name":"x","content":"3 1 1 xyz"})).is_err());
        // A digest shorter or longer than its type says.
        for (t, content) in [
            ("DS", "2371 13 2 1F987CC6583E92DF0890718C42"),
            ("DS", "2371 13 1 1F987CC6583E92DF0890718C42A1B2C3D4E5F60718"),
            ("TLSA", "3 1 1 abcdef12"),
            ("TLSA", "3 1 2 abcdef12"),
            (
                "SSHFP",
                "4 1 123456789abcdef67890123456789abcdef67890123456789abcdef123456789",
            ),
        ] {
            let err = draft(json!({"type": t, "name": "x", "content": content}))
                .expect_err("a digest of the wrong length");
            assert!(err.errors()[0].message.contains("bytes"), "{t} {content}");
        }
        assert!(
            draft(json!({"type":"LOC","name":"x","content":"97 0 0 N 0 0 0 E 0m 0m 0m 0m"}))
                .is_err()
        );
    }

    #[test]
    fn a_service_parameter_given_twice_is_refused_whatever_the_order() {
        for (t, content) in [
            ("HTTPS", "1 . alpn=h2 alpn=h3"),
            ("SVCB", "1 svc.example.com port=8443 alpn=h2 port=443"),
            ("HTTPS", "1 . alpn=h2 key1=h3"),
            ("SVCB", "1 svc.example.com key3=443 port=443"),
        ] {
            let err = draft(json!({"type": t, "name": "_x._tcp", "content": content}))
                .expect_err("a repeated key is malformed");
            let message = &err.errors()[0].message;
            assert!(message.contains("given twice"), "{t}: {message}");
        }
        assert!(
            draft(json!({"type":"HTTPS","name":"x","content":"1 . port=443 alpn=h2"})).is_ok(),
            "keys in any order, each once, are valid"
        );
    }

    #[test]
    fn alpn_lists_are_read_with_their_values_escapes_then_their_lists() {
        let content =
            |c: &str| draft(json!({"type": "HTTPS", "name": "@", "content": c})).map(|d| d.content);
        // `\,` in the value is a comma once the value is read: two ids, as BIND and Knot read it.
        assert_eq!(content("1 . alpn=h2\\,x").expect("valid"), "1 . alpn=h2,x");
        assert_eq!(
            content("1 . alpn=\"h\\050,h3\" port=443").expect("valid"),
            "1 . alpn=\"h2,h3\" port=443"
        );
        // Ids holding a comma or a backslash (`\\,` and `\\\\` in a value) are refused, not
        // served as other bytes.
        for bad in [
            "1 . alpn=\"h\\\\,2\"",
            "1 . alpn=\"a\\\\\\\\b\"",
            "1 . alpn=\"a b\"",
        ] {
            let err = content(bad).expect_err(bad);
            assert!(
                format!("{err:?}").contains("alpn protocol id"),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(content("1 . alpn=h3,h2").expect("valid"), "1 . alpn=h3,h2");
    }

    #[test]
    fn svcb_values_may_be_quoted_as_cloudflare_writes_them() {
        use hickory_proto::serialize::binary::BinEncodable as _;
        let wire = |content: &str| {
            RData::try_from_str(WireType::HTTPS, content)
                .expect("parses")
                .to_bytes()
                .expect("encodes")
        };
        let quoted = "1 . alpn=\"h3,h2\" port=\"8443\" ipv4hint=\"192.0.2.1,192.0.2.2\"";
        let d = draft(json!({"type":"HTTPS","name":"@","content":quoted})).expect("valid");
        assert_eq!(d.content, quoted, "kept as written");
        assert_eq!(
            wire(&d.content),
            wire("1 . alpn=h3,h2 port=8443 ipv4hint=192.0.2.1,192.0.2.2")
        );
        let data = json!({"type":"HTTPS","name":"@","data":
            {"priority":1,"target":".","value":"alpn=\"h3,h2\" ipv4hint=\"192.0.2.1\""}});
        let d = draft(data).expect("valid");
        assert_eq!(d.content, "1 . alpn=\"h3,h2\" ipv4hint=\"192.0.2.1\"");
        let record = d.into_record("1".into(), "z", "t", "t");
        assert_eq!(
            record.to_api_json("example.com")["data"]["value"],
            "alpn=\"h3,h2\" ipv4hint=\"192.0.2.1\""
        );
        // The same data quoted or not is one record.
        let quoted = draft(json!({"type":"HTTPS","name":"@","content":"1 . alpn=\"h3,h2\""}))
            .expect("valid")
            .into_record("1".into(), "z", "t", "t");
        let bare =
            draft(json!({"type":"HTTPS","name":"@","content":"1 . alpn=h3,h2"})).expect("valid");
        assert_eq!(
            bare.check_against([&quoted], true).map_err(|c| c.code),
            Err(81058)
        );
        for bad in [
            "1 . alpn=\"h3,h2",
            "1 . alpn=\"h3\\",
            "1 . alpn=\"h3\" alpn=h2",
        ] {
            assert!(
                draft(json!({"type":"HTTPS","name":"@","content":bad})).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn identical_and_cname_conflicts_use_cloudflare_codes() {
        let a = draft(json!({"type":"A","name":"www","content":"192.0.2.1"})).expect("valid");
        let stored = a.clone().into_record("1".into(), "z", "t", "t");
        assert_eq!(
            a.check_against([&stored], false).map_err(|c| c.code),
            Err(81058)
        );
        let c =
            draft(json!({"type":"CNAME","name":"www","content":"x.example.net"})).expect("valid");
        assert_eq!(
            c.check_against([&stored], false).map_err(|c| c.code),
            Err(81053)
        );
        let other = draft(json!({"type":"A","name":"www","content":"192.0.2.2"})).expect("valid");
        assert!(other.check_against([&stored], false).is_ok());
        // A delegation's NS records stand alone at their name, but for its DS.
        let ns = draft(json!({"type":"NS","name":"www","content":"ns1.example.net"}));
        let ns = ns.expect("valid");
        assert_eq!(
            ns.check_against([&stored], false).map_err(|c| c.code),
            Err(81053)
        );
        let delegated = ns.clone().into_record("2".into(), "z", "t", "t");
        assert_eq!(
            a.check_against([&delegated], false).map_err(|c| c.code),
            Err(81053)
        );
        let ds = draft(json!({"type":"DS","name":"www","content":DS_1})).expect("valid");
        assert!(ds.check_against([&delegated], false).is_ok());
        let ns2 = draft(json!({"type":"NS","name":"www","content":"ns2.example.net"}));
        assert!(
            ns2.expect("valid")
                .check_against([&delegated], false)
                .is_ok()
        );
        // At the apex, NS records (kept, not served) stand beside the apex's data.
        assert!(ns.check_against([&stored], true).is_ok());
        assert!(a.check_against([&delegated], true).is_ok());
        // At the apex a CNAME is flattened: it stands beside anything but addresses.
        assert!(c.check_against([&delegated], true).is_ok());
        let mx = draft(json!({"type":"MX","name":"www","content":"mx.example.net","priority":10}));
        let mx = mx.expect("valid");
        let mx_stored = mx.clone().into_record("3".into(), "z", "t", "t");
        assert!(c.check_against([&mx_stored, &delegated], true).is_ok());
        assert_eq!(
            c.check_against([&mx_stored, &stored], true)
                .map_err(|c| c.code),
            Err(81053)
        );
        let cname = c.clone().into_record("4".into(), "z", "t", "t");
        assert!(mx.check_against([&cname], true).is_ok());
        assert_eq!(
            a.check_against([&cname], true).map_err(|c| c.code),
            Err(81054)
        );
        assert_eq!(
            mx.check_against([&cname], false).map_err(|c| c.code),
            Err(81054)
        );
    }

    #[test]
    fn long_txt_is_split_into_quoted_strings() {
        let long = "a".repeat(300);
        let p = txt_presentation(&long);
        assert_eq!(p, format!("\"{}\" \"{}\"", "a".repeat(255), "a".repeat(45)));
        assert_eq!(txt_presentation("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
    /// Every verdict of the index equals the scan's, for records added one by one (an import)
    /// and for each record against all the others (a compile), hash collisions included.
    fn same_name_agrees_with_the_scan<S: std::hash::BuildHasher>(
        index: &mut SameName<S>,
        picks: &[(usize, usize)],
        apex: bool,
    ) {
        const KINDS: [(&str, [&str; 3]); 5] = [
            ("A", ["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
            ("TXT", ["one", "two", "three"]),
            ("CNAME", ["a.example.net", "b.example.net", "c.example.net"]),
            (
                "NS",
                ["ns1.example.net", "ns2.example.net", "ns3.example.net"],
            ),
            ("DS", [DS_1, DS_2, DS_3]),
        ];
        let drafts: Vec<RecordDraft> = picks
            .iter()
            .map(|&(k, c)| {
                let (kind, contents) = KINDS[k % KINDS.len()];
                draft(json!({"type": kind, "name": "www", "content": contents[c % 3]}))
                    .expect("valid")
            })
            .collect();
        let verdict = |r: Result<(), Conflict>| r.map_err(|c| (c.code, c.message));
        // One by one, as an import adds them.
        index.clear();
        let mut added: Vec<DnsRecord> = Vec::new();
        for d in &drafts {
            let scanned = verdict(d.check_against(&added, apex));
            assert_eq!(
                verdict(index.check((d, apex), None, |i| &added[i])),
                scanned
            );
            if scanned.is_ok() {
                let r = d
                    .clone()
                    .into_record(added.len().to_string(), "z", "t", "t");
                index.push(&r);
                added.push(r);
            }
        }
        // Each against all the others, duplicates and conflicts included, as a compile checks.
        let all: Vec<DnsRecord> = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| d.clone().into_record(i.to_string(), "z", "t", "t"))
            .collect();
        index.clear();
        for r in &all {
            index.push(r);
        }
        for (i, d) in drafts.iter().enumerate() {
            let others = all.iter().filter(|o| o.id != all[i].id);
            assert_eq!(
                verdict(index.check((d, apex), Some(i), |j| &all[j])),
                verdict(d.check_against(others, apex)),
            );
        }
    }

    /// Every verdict of the changing index equals the scan's over the records a change leaves,
    /// through creations, replacements and deletions (`op` 0, 1 and 2 of `(op, kind, content,
    /// which)`), hash collisions included.
    fn changing_name_agrees_with_the_scan<S: std::hash::BuildHasher>(
        mut index: ChangingName<S>,
        ops: &[(usize, usize, usize, usize)],
        apex: bool,
    ) {
        const KINDS: [(&str, [&str; 3]); 5] = [
            ("A", ["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
            ("TXT", ["one", "two", "three"]),
            ("CNAME", ["a.example.net", "b.example.net", "c.example.net"]),
            (
                "NS",
                ["ns1.example.net", "ns2.example.net", "ns3.example.net"],
            ),
            ("DS", [DS_1, DS_2, DS_3]),
        ];
        let verdict = |r: Result<(), Conflict>| r.map_err(|c| (c.code, c.message));
        // The records by position, `None` once removed: the scan's view, in order.
        let mut records: Vec<Option<DnsRecord>> = Vec::new();
        for &(op, k, c, which) in ops {
            let (kind, contents) = KINDS[k % KINDS.len()];
            let d = draft(json!({"type": kind, "name": "www", "content": contents[c % 3]}))
                .expect("valid");
            let present: Vec<usize> = (0..records.len())
                .filter(|&i| records[i].is_some())
                .collect();
            let target = (!present.is_empty()).then(|| present[which % present.len()]);
            match (op % 3, target) {
                (2, Some(t)) => {
                    let gone = records[t].take().expect("present");
                    index.remove(t, &gone);
                }
                (1, Some(t)) => {
                    let others = records.iter().enumerate().filter(|(i, _)| *i != t);
                    let scanned =
                        verdict(d.check_against(others.filter_map(|(_, r)| r.as_ref()), apex));
                    let at = |i: usize| records[i].as_ref().expect("present");
                    assert_eq!(verdict(index.check((&d, apex), Some(t), at)), scanned);
                    if scanned.is_ok() {
                        let gone = records[t].take().expect("present");
                        index.remove(t, &gone);
                        let r = d.into_record(gone.id, "z", "t", "t");
                        assert_eq!(index.add(&r), records.len());
                        records.push(Some(r));
                    }
                }
                _ => {
                    let scanned = verdict(d.check_against(records.iter().flatten(), apex));
                    let at = |i: usize| records[i].as_ref().expect("present");
                    assert_eq!(verdict(index.check((&d, apex), None, at)), scanned);
                    if scanned.is_ok() {
                        let r = d.into_record(records.len().to_string(), "z", "t", "t");
                        assert_eq!(index.add(&r), records.len());
                        records.push(Some(r));
                    }
                }
            }
        }
    }

    const DS_1: &str = "2371 13 2 1F987CC6583E92DF0890718C42A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3";
    const DS_2: &str = "2371 13 2 2F987CC6583E92DF0890718C42A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3";
    const DS_3: &str = "2372 13 2 3F987CC6583E92DF0890718C42A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3";

    /// Hashes everything to one value.
    #[derive(Default)]
    struct Collide;

    impl std::hash::Hasher for Collide {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    proptest::proptest! {
        #[test]
        fn records_at_one_name_are_checked_as_the_scan_checks_them(
            picks in proptest::collection::vec((0usize..5, 0usize..3), 0..24),
            apex: bool,
        ) {
            same_name_agrees_with_the_scan(&mut SameName::default(), &picks, apex);
            same_name_agrees_with_the_scan(
                &mut SameName::with_keys(std::hash::BuildHasherDefault::<Collide>::default()),
                &picks,
                apex,
            );
        }

        #[test]
        fn records_a_change_adds_and_removes_are_checked_as_the_scan_checks_them(
            ops in proptest::collection::vec((0usize..3, 0usize..5, 0usize..3, 0usize..24), 0..40),
            apex: bool,
        ) {
            changing_name_agrees_with_the_scan(ChangingName::default(), &ops, apex);
            changing_name_agrees_with_the_scan(
                ChangingName::with_keys(std::hash::BuildHasherDefault::<Collide>::default()),
                &ops,
                apex,
            );
        }
    }
}
