//! A cache purge request (`POST /zones/{id}/purge_cache`), in Cloudflare's shape:
//! `purge_everything` alone, or any of `files`, `tags`, `hosts` and `prefixes` (flarectl sends
//! several in one request).

use std::borrow::Cow;

use serde_json::Value;

use crate::ModelError;
use crate::expr::{RequestFacts, normalized_target};
use crate::name::{NameKind, normalize};
use crate::rules::{CompiledRule, matching_cache_parameters};

/// Items per kind in one purge request (Cloudflare's largest plan's limit).
pub const MAX_ITEMS: usize = 500;

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
    /// Whether the URL named its port (else `port` is its scheme's default, and the URL stands
    /// for every port the edge serves that scheme on: see [`Purge::on_ports`]).
    pub port_given: bool,
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
        let (host, port, port_given) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port '{}'", crate::name::printable(p)))?,
                true,
            ),
            None => (authority, if https { 443 } else { 80 }, false),
        };
        let host = normalize(host, NameKind::Target, "host").map_err(|e| e.message)?;
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("path has spaces or control characters".into());
        }
        Ok(Self {
            https,
            host,
            port,
            port_given,
            path: path.to_owned(),
        })
    }

    /// This URL with the bytes of its path and query outside ASCII percent-encoded, as browsers
    /// send them; `None` when there are none.
    fn encoded(&self) -> Option<Self> {
        if self.path.is_ascii() {
            return None;
        }
        let mut path = String::with_capacity(self.path.len() * 2);
        for b in self.path.bytes() {
            if b.is_ascii() {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        Some(Self {
            path,
            ..self.clone()
        })
    }

    /// The path and query under which the edge keys a request for this URL: the path in its
    /// normal form (`/%61pp.js` is `/app.js`), the query shaped
    /// as the zone's cache rules that match the URL's host and path have it (`rules`: the
    /// zone's cache rules, in the order the edge applies them). Rules look at nothing else of
    /// a request, and request headers or cookies a rule puts in the key only tell variants of
    /// this key apart, so this is the one key a request for the URL can have.
    pub fn key_target<'r>(
        &self,
        rules: impl IntoIterator<Item = &'r CompiledRule>,
    ) -> Cow<'_, str> {
        // The path in the normal form the edge keys requests on.
        let normal = normalized_target(&self.path);
        let target = normal.as_deref().unwrap_or(&self.path);
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let request = RequestFacts {
            host: &self.host,
            path,
        };
        match matching_cache_parameters(rules, &request) {
            Some(params) => Cow::Owned(params.key_target(target).into_owned()),
            None => normal.map_or(Cow::Borrowed(&self.path), Cow::Owned),
        }
    }
}

impl Purge {
    /// This purge with each file keyed as the edge keys a request for it under `rules` (the
    /// zone's cache rules, in the order the edge applies them), as Cloudflare purges the cache
    /// key a URL maps to. The URL as given is purged too when its key differs: an object
    /// stored before a rule shaped its query is still under it.
    ///
    /// A URL written with characters outside ASCII (`/café.png`) is purged as browsers send
    /// it too, percent-encoded (`/caf%C3%A9.png`).
    pub fn keyed_by(self, rules: &[&CompiledRule]) -> Self {
        let Self::Files(urls) = self else {
            return self;
        };
        let mut keyed = Vec::with_capacity(urls.len());
        for url in urls {
            let encoded = url.encoded();
            for url in encoded.into_iter().chain([url]) {
                let target = url.key_target(rules.iter().copied());
                if target != url.path {
                    let shaped = PurgeUrl {
                        path: target.into_owned(),
                        ..url.clone()
                    };
                    keyed.push(shaped);
                }
                keyed.push(url);
            }
        }
        Self::Files(keyed)
    }

    /// This purge with each file whose URL names no port purged on every port the edge serves
    /// its scheme on (`http` and `https`: the edge's listening ports), besides the scheme's
    /// default: the edge keys an object by the port a visitor reached it on, and a URL as
    /// visitors write it (`https://www.example.com/a.css`) names none, whatever port the edge
    /// listens on behind a port mapping or a load balancer.
    pub fn on_ports(self, http: &[u16], https: &[u16]) -> Self {
        let Self::Files(urls) = self else {
            return self;
        };
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            if !url.port_given {
                let ports = if url.https { https } else { http };
                let mut others: Vec<u16> =
                    ports.iter().copied().filter(|&p| p != url.port).collect();
                others.sort_unstable();
                others.dedup();
                out.extend(others.into_iter().map(|port| PurgeUrl {
                    port,
                    ..url.clone()
                }));
            }
            out.push(url);
        }
        Self::Files(out)
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
    /// The purges a request body asks for: `purge_everything` alone, or one per kind of
    /// `files`, `tags`, `hosts` and `prefixes` it holds. Every mistake is listed.
    pub fn from_json(body: &Value) -> Result<Vec<Self>, ModelError> {
        let Some(obj) = body.as_object() else {
            return Err(ModelError::field("body", "must be a JSON object"));
        };
        let given: Vec<&str> = ["purge_everything", "files", "tags", "hosts", "prefixes"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if given.is_empty() {
            return Err(ModelError::field(
                "body",
                "needs purge_everything, or one or more of files, tags, hosts, prefixes",
            ));
        }
        if given.len() > 1 && given.contains(&"purge_everything") {
            return Err(ModelError::field(
                "purge_everything",
                "cannot be combined with files, tags, hosts or prefixes",
            ));
        }
        let mut purges = Vec::with_capacity(given.len());
        let mut errors = Vec::new();
        for kind in given {
            match Self::kind_from_json(kind, &obj[kind]) {
                Ok(purge) => purges.push(purge),
                Err(ModelError::Invalid(mut e)) => errors.append(&mut e),
                Err(e) => return Err(e),
            }
        }
        if errors.is_empty() {
            Ok(purges)
        } else {
            Err(ModelError::Invalid(errors))
        }
    }

    /// The purge of one kind (`files`, …) whose items are `value`.
    fn kind_from_json(kind: &str, value: &Value) -> Result<Self, ModelError> {
        let mut errors = Vec::new();
        let purge = match kind {
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
                        // Tags come comma-separated in `Cache-Tag`: one holding a comma could
                        // never match.
                        Some(t) if !t.is_empty() && t.len() <= 1024 && !t.contains(',') => {
                            tags.push(t.to_owned())
                        }
                        _ => errors.push(crate::FieldError::new(
                            format!("tags[{i}]"),
                            "must be a non-empty string of at most 1024 characters, without commas",
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
                    // Cloudflare's rule: a prefix is a path; a query or a fragment purges
                    // nothing a prefix could name.
                    if path.contains(['?', '#']) {
                        errors.push(crate::FieldError::new(
                            field,
                            "a prefix cannot hold a query string or a fragment",
                        ));
                        continue;
                    }
                    if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
                        errors.push(crate::FieldError::new(
                            field,
                            "a prefix cannot hold blanks or control characters (percent-encode them)",
                        ));
                        continue;
                    }
                    // In the normal form the edge keys requests on.
                    let path = normalized_target(path).unwrap_or_else(|| path.to_owned());
                    match normalize(host, NameKind::Target, &field) {
                        Ok(h) => prefixes.push((h, path)),
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
            [Purge::Everything]
        );
        let [Purge::Files(files)] = &Purge::from_json(&json!({"files": [
            "https://WWW.example.com/a.css?v=1",
            {"url": "http://www.example.com:8080/b.png", "headers": {"Origin": "x"}}
        ]}))
        .expect("files")[..] else {
            panic!("not files");
        };
        assert_eq!(files[0].host, "www.example.com");
        assert_eq!((files[0].https, files[0].port), (true, 443));
        assert_eq!(files[0].path, "/a.css?v=1");
        assert_eq!((files[1].https, files[1].port), (false, 8080));
        assert_eq!(
            Purge::from_json(&json!({"prefixes": ["www.example.com/img"]})).expect("prefixes"),
            [Purge::Prefixes(vec![(
                "www.example.com".into(),
                "/img".into()
            )])]
        );
        // Several kinds in one request (as flarectl sends them): one purge each.
        assert_eq!(
            Purge::from_json(&json!({"tags": ["a"], "hosts": ["Www.Example.com"]}))
                .expect("tags and hosts"),
            [
                Purge::Tags(vec!["a".into()]),
                Purge::Hosts(vec!["www.example.com".into()])
            ]
        );
        // A query or a fragment purges nothing by prefix (Cloudflare refuses them).
        for bad in [
            "www.example.com/foo?a=b",
            "www.example.com/foo#bar",
            "www.example.com/a b",
        ] {
            let err = Purge::from_json(&json!({"prefixes": [bad]})).expect_err(bad);
            assert!(err.to_string().contains("prefixes[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn purged_urls_are_keyed_as_the_zones_cache_rules_shape_them() {
        let rules = crate::rules::Ruleset::from_json(
            "z",
            crate::rules::CACHE_PHASE,
            &json!({"rules": [
                {"expression": "starts_with(http.request.uri.path, \"/static/\")",
                 "action": "set_cache_settings",
                 "action_parameters": {"cache_key": {"ignore_query_strings_order": true}}},
                {"expression": "http.request.uri.path eq \"/static/plain.css\"",
                 "action": "set_cache_settings",
                 "action_parameters": {"cache_key": {"custom_key":
                   {"query_string": {"exclude": {"all": true}}}}}},
                {"expression": "http.host eq \"other.example.com\"",
                 "action": "set_cache_settings",
                 "action_parameters": {"cache_key": {"ignore_query_strings_order": true}}}
            ]}),
            None,
            "t",
        )
        .expect("accepted")
        .compile()
        .expect("compiles");
        let rules: Vec<&CompiledRule> = rules.iter().collect();
        let keyed = |url: &str| {
            let url = PurgeUrl::parse(url).expect("url");
            url.key_target(rules.iter().copied()).into_owned()
        };
        assert_eq!(
            keyed("https://www.example.com/static/a.css?b=1&a=2"),
            "/static/a.css?a=2&b=1"
        );
        // Keyed as the edge keys the request: the path in its normal form (encoded unreserved
        // characters decoded, dot segments gone), which the rules see too.
        assert_eq!(
            keyed("https://www.example.com/%73tatic/x/../a.css?b=1&a=2"),
            "/static/a.css?a=2&b=1"
        );
        assert_eq!(
            keyed("https://www.example.com/static/plain.css?v=3&a=1"),
            "/static/plain.css"
        );
        assert_eq!(
            keyed("https://www.example.com/a.css?b=1&a=2"),
            "/a.css?b=1&a=2",
            "no rule"
        );
        assert_eq!(
            keyed("https://other.example.com/a.css?b=1&a=2"),
            "/a.css?a=2&b=1"
        );

        let [purge]: [Purge; 1] = Purge::from_json(&json!({"files": [
            "https://www.example.com/static/a.css?b=1&a=2",
            "https://www.example.com/a.css?b=1&a=2"
        ]}))
        .expect("files")
        .try_into()
        .expect("one purge");
        let Purge::Files(files) = purge.keyed_by(&rules) else {
            panic!("not files");
        };
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/static/a.css?a=2&b=1",
                "/static/a.css?b=1&a=2",
                "/a.css?b=1&a=2"
            ],
            "the key, and the URL as given where it differs"
        );
        let tags = Purge::Tags(vec!["t".into()]);
        assert_eq!(tags.clone().keyed_by(&rules), tags);
    }

    #[test]
    fn a_url_outside_ascii_is_purged_as_browsers_send_it_too() {
        let purge = Purge::Files(vec![
            PurgeUrl::parse("https://ex.test/café.png?q=é").expect("url"),
            PurgeUrl::parse("https://ex.test/plain.png").expect("url"),
        ])
        .keyed_by(&[]);
        let Purge::Files(urls) = purge else {
            panic!("files")
        };
        let paths: Vec<&str> = urls.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/caf%C3%A9.png?q=%C3%A9", "/café.png?q=é", "/plain.png"]
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
            json!({"tags": ["a"], "hosts": ["bad host"]}),
            json!({"tags": ["a,b"]}),
            json!({"files": vec!["https://x.com/a"; MAX_ITEMS + 1]}),
        ] {
            assert!(Purge::from_json(&bad).is_err(), "{bad}");
        }
        // Every mistake of every kind is listed.
        let err = Purge::from_json(&json!({"tags": [""], "hosts": ["bad host"]}))
            .expect_err("two mistakes");
        assert_eq!(err.errors().len(), 2, "{err}");
    }

    #[test]
    fn a_url_without_a_port_is_purged_on_every_port_the_edge_serves_its_scheme_on() {
        let [purge]: [Purge; 1] = Purge::from_json(&json!({"files": [
            "https://www.example.com/a.css",
            "http://www.example.com/b.css",
            "https://www.example.com:2053/c.css"
        ]}))
        .expect("files")
        .try_into()
        .expect("one purge");
        let Purge::Files(urls) = purge.on_ports(&[8080, 80, 8080], &[8443]) else {
            panic!("files")
        };
        let got: Vec<(bool, u16, &str)> = urls
            .iter()
            .map(|u| (u.https, u.port, u.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (true, 8443, "/a.css"),
                (true, 443, "/a.css"),
                (false, 8080, "/b.css"),
                (false, 80, "/b.css"),
                (true, 2053, "/c.css"),
            ]
        );
    }
}
