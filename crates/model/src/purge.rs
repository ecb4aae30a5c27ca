//! A cache purge request (`POST /zones/{id}/purge_cache`), in Cloudflare's shape: exactly one of
//! `purge_everything`, `files`, `tags`, `hosts` or `prefixes`.

use serde_json::Value;

use crate::ModelError;
use crate::name::{NameKind, normalize};

/// Items per purge request (Cloudflare's limit for most plans).
pub const MAX_ITEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Everything,
    /// Absolute URLs, normalised: `(scheme, host, port, path with query)`.
    Files(Vec<PurgeUrl>),
    Tags(Vec<String>),
    /// Host names, lowercase.
    Hosts(Vec<String>),
    /// `host/path-prefix` without scheme, host lowercase.
    Prefixes(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, as requested (`/a/b.css?v=1`).
    pub path: String,
}

impl PurgeUrl {
    /// Parses `http(s)://host[:port]/path?query`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port '{}'", crate::name::printable(p)))?,
            ),
            None => (authority, if https { 443 } else { 80 }),
        };
        let host = normalize(host, NameKind::Target, "host").map_err(|e| e.message)?;
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("path has spaces or control characters".into());
        }
        Ok(Self {
            https,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

fn strings(v: &Value, field: &str) -> Result<Vec<Value>, ModelError> {
    let items = v
        .as_array()
        .ok_or_else(|| ModelError::field(field, "must be an array"))?;
    if items.is_empty() {
        return Err(ModelError::field(field, "is empty"));
    }
    if items.len() > MAX_ITEMS {
        return Err(ModelError::field(
            field,
            format!("at most {MAX_ITEMS} items per request"),
        ));
    }
    Ok(items.clone())
}

impl Purge {
    pub fn from_json(body: &Value) -> Result<Self, ModelError> {
        let Some(obj) = body.as_object() else {
            return Err(ModelError::field("body", "must be a JSON object"));
        };
        let given: Vec<&str> = ["purge_everything", "files", "tags", "hosts", "prefixes"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        let [kind] = given.as_slice() else {
            return Err(ModelError::field(
                "body",
                "needs exactly one of purge_everything, files, tags, hosts, prefixes",
            ));
        };
        let value = &obj[*kind];
        let mut errors = Vec::new();
        let purge = match *kind {
            "purge_everything" => {
                if value != &Value::Bool(true) {
                    return Err(ModelError::field("purge_everything", "must be true"));
                }
                Self::Everything
            }
            "files" => {
                let mut urls = Vec::new();
                for (i, item) in strings(value, "files")?.iter().enumerate() {
                    // A file is a URL, or {"url": ..., "headers": {...}} (the headers pick a
                    // Vary variant; every variant of the URL is purged).
                    let url = item
                        .as_str()
                        .or_else(|| item.get("url").and_then(Value::as_str));
                    match url.map(PurgeUrl::parse) {
                        Some(Ok(u)) => urls.push(u),
                        Some(Err(m)) => {
                            errors.push(crate::FieldError::new(format!("files[{i}]"), m))
                        }
                        None => errors.push(crate::FieldError::new(
                            format!("files[{i}]"),
                            "must be a URL or an object with a url",
                        )),
                    }
                }
                Self::Files(urls)
            }
            "tags" => {
                let mut tags = Vec::new();
                for (i, item) in strings(value, "tags")?.iter().enumerate() {
                    match item.as_str().map(str::trim) {
                        Some(t) if !t.is_empty() && t.len() <= 1024 => tags.push(t.to_owned()),
                        _ => errors.push(crate::FieldError::new(
                            format!("tags[{i}]"),
                            "must be a non-empty string of at most 1024 characters",
                        )),
                    }
                }
                Self::Tags(tags)
            }
            "hosts" => {
                let mut hosts = Vec::new();
                for (i, item) in strings(value, "hosts")?.iter().enumerate() {
                    match item
                        .as_str()
                        .map(|h| normalize(h, NameKind::Target, &format!("hosts[{i}]")))
                    {
                        Some(Ok(h)) => hosts.push(h),
                        Some(Err(e)) => errors.push(e),
                        None => errors.push(crate::FieldError::new(
                            format!("hosts[{i}]"),
                            "must be a host name",
                        )),
                    }
                }
                Self::Hosts(hosts)
            }
            _ => {
                let mut prefixes = Vec::new();
                for (i, item) in strings(value, "prefixes")?.iter().enumerate() {
                    let field = format!("prefixes[{i}]");
                    let Some(p) = item.as_str() else {
                        errors.push(crate::FieldError::new(field, "must be a string"));
                        continue;
                    };
                    let p = p
                        .strip_prefix("https://")
                        .or_else(|| p.strip_prefix("http://"))
                        .unwrap_or(p);
                    let (host, path) = match p.find('/') {
                        Some(i) => (&p[..i], &p[i..]),
                        None => (p, "/"),
                    };
                    match normalize(host, NameKind::Target, &field) {
                        Ok(h) => prefixes.push((h, path.to_owned())),
                        Err(e) => errors.push(e),
                    }
                }
                Self::Prefixes(prefixes)
            }
        };
        if errors.is_empty() {
            Ok(purge)
        } else {
            Err(ModelError::Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn purge_bodies_parse_in_cloudflare_shapes() {
        assert_eq!(
            Purge::from_json(&json!({"purge_everything": true})).expect("everything"),
            Purge::Everything
        );
        let Purge::Files(files) = Purge::from_json(&json!({"files": [
            "https://WWW.example.com/a.css?v=1",
            {"url": "http://www.example.com:8080/b.png", "headers": {"Origin": "x"}}
        ]}))
        .expect("files") else {
            panic!("not files");
        };
        assert_eq!(files[0].host, "www.example.com");
        assert_eq!((files[0].https, files[0].port), (true, 443));
        assert_eq!(files[0].path, "/a.css?v=1");
        assert_eq!((files[1].https, files[1].port), (false, 8080));
        assert_eq!(
            Purge::from_json(&json!({"prefixes": ["www.example.com/img"]})).expect("prefixes"),
            Purge::Prefixes(vec![("www.example.com".into(), "/img".into())])
        );
    }

    #[test]
    fn bad_purge_bodies_are_refused() {
        for bad in [
            json!({}),
            json!({"purge_everything": true, "tags": ["a"]}),
            json!({"purge_everything": false}),
            json!({"files": ["ftp://x.com/a"]}),
            json!({"files": []}),
            json!({"hosts": ["bad host"]}),
            json!({"tags": [""]}),
        ] {
            assert!(Purge::from_json(&bad).is_err(), "{bad}");
        }
    }
}
