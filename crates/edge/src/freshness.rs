//! How long a stored response stays fresh, read as RFC 9111 and RFC 9213 say, where the engine's
//! reading is looser: directives are split outside quoted strings (a `max-age` inside another
//! directive's quoted value is not one), a `max-age` or `s-maxage` whose value is not a number
//! makes the response stale, `Expires` counts from the origin's `Date`, and the origin's `Age`
//! is time already spent. A CDN-targeted field (`Cloudflare-CDN-Cache-Control`, then
//! `CDN-Cache-Control`, then `Surrogate-Control`) replaces `Cache-Control` for the edge.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// What the edge tells origins it understands (`Surrogate-Capability`): directives targeted at
/// `parapet` are its own.
pub const SURROGATE_CAPABILITY: &str = "parapet=\"Surrogate/1.0\"";
const TARGET: &str = "parapet";

/// One directive: its name (lower case) and value (unquoted), if it has one.
type Directive = (String, Option<String>);

/// The directives of a list-valued cache header (every line), split outside quoted strings.
/// Surrogate-Control's `;target` suffixes are kept in the name (`max-age;other`): a directive
/// for another target is then not one this edge reads.
fn directives(headers: &HeaderMap, name: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let Ok(text) = value.to_str() else { continue };
        let mut parts = Vec::new();
        let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
        for c in text.chars() {
            match c {
                _ if escaped => {
                    escaped = false;
                    current.push(c);
                }
                '\\' if quoted => escaped = true,
                '"' => {
                    quoted = !quoted;
                    current.push(c);
                }
                ',' if !quoted => parts.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        parts.push(current);
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (part, None),
            };
            let (name, target) = match (name, value) {
                (n, None) => match n.split_once(';') {
                    Some((n, t)) => (n, Some(t)),
                    None => (n, None),
                },
                (n, Some(_)) => (n, None),
            };
            let value = value.map(|v| match v.split_once(';') {
                Some((v, t)) if !v.starts_with('"') => (v, Some(t)),
                _ => (v, None),
            });
            let target = target.or(value.and_then(|(_, t)| t));
            let name = match target.map(str::trim) {
                Some(t) if !t.eq_ignore_ascii_case(TARGET) => {
                    format!("{};{t}", name.to_ascii_lowercase())
                }
                _ => name.to_ascii_lowercase(),
            };
            let value = value.map(|(v, _)| {
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
                    .to_owned()
            });
            out.push((name, value));
        }
    }
    out
}

/// A delta-seconds value: digits only (a large one is capped, as RFC 9111 §1.2.2 allows).
fn seconds(value: Option<&str>) -> Option<u64> {
    let value = value?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        value
            .parse()
            .map_or(u64::from(u32::MAX), |n: u64| n.min(u64::from(u32::MAX))),
    )
}

/// The lifetime a list of directives gives: the first of `names` present decides, and one
/// whose value is not a number gives none (stale).
fn lifetime_of(directives: &[Directive], names: &[&str]) -> Option<Duration> {
    names.iter().find_map(|name| {
        let (_, value) = directives.iter().find(|(n, _)| n == name)?;
        Some(Duration::from_secs(seconds(value.as_deref()).unwrap_or(0)))
    })
}

/// What a CDN-targeted field says, if the response has one: its directives mean what they
/// mean in `Cache-Control` (RFC 9213 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targeted {
    /// Not to be stored (`no-store`, `private`).
    NoStore,
    /// Fresh this long (less the response's age; zero with `no-cache`: every use is
    /// revalidated), then usable stale for `stale` seconds while revalidating and on errors
    /// (none with `no-cache`, `must-revalidate`, `proxy-revalidate` or `s-maxage`).
    Fresh {
        lifetime: Duration,
        stale: (u32, u32),
    },
    /// Present, with no lifetime for this edge (the engine's reading stands).
    Silent,
}

/// The CDN-targeted fields, the first present applying.
pub const TARGETED: [&str; 3] = [
    "cloudflare-cdn-cache-control",
    "cdn-cache-control",
    "surrogate-control",
];

/// The CDN-targeted field that applies, and what it says.
pub fn targeted(headers: &HeaderMap) -> Option<Targeted> {
    let name = TARGETED.into_iter().find(|n| headers.contains_key(*n))?;
    let directives = directives(headers, name);
    let has = |name: &str| directives.iter().any(|(n, _)| n == name);
    // `private` with field names too: the edge does not store parts of a response.
    if has("no-store") || has("private") {
        return Some(Targeted::NoStore);
    }
    // `no-cache` with field names too: those fields may not be repeated without revalidation
    // (RFC 9111 §5.2.2.4), and the edge does not strip them from what this field lets it
    // keep, so every use is revalidated, as caches commonly treat the qualified form.
    let no_cache = has("no-cache");
    let lifetime = if no_cache {
        Some(Duration::ZERO)
    } else {
        lifetime_of(&directives, &["s-maxage", "max-age"])
    };
    let Some(lifetime) = lifetime else {
        return Some(Targeted::Silent);
    };
    let strict = no_cache || has("must-revalidate") || has("proxy-revalidate") || has("s-maxage");
    let window = |name: &str| {
        let (_, value) = directives.iter().find(|(n, _)| n == name)?;
        u32::try_from(seconds(value.as_deref())?).ok()
    };
    let stale = if strict {
        (0, 0)
    } else {
        (
            window("stale-while-revalidate").unwrap_or(0),
            window("stale-if-error").unwrap_or(0),
        )
    };
    Some(Targeted::Fresh { lifetime, stale })
}

/// Whether the response says `no-cache` without field names: every use of it is revalidated
/// first, stale or not (RFC 9111 §5.2.2.4), so it is never served stale either (§4.2.4).
pub fn says_no_cache(headers: &HeaderMap) -> bool {
    unqualified_no_cache(&directives(headers, "cache-control"))
}

/// Whether the response says `private` without field names, in any of its `Cache-Control`
/// fields: a shared cache must not store it (RFC 9111 §5.2.2.7), whatever else a later
/// `private="…"` says.
pub fn says_private(headers: &HeaderMap) -> bool {
    directives(headers, "cache-control")
        .iter()
        .any(|(n, v)| n == "private" && v.is_none())
}

fn unqualified_no_cache(cc: &[Directive]) -> bool {
    cc.iter().any(|(n, v)| n == "no-cache" && v.is_none())
}

/// The response's explicit freshness lifetime for a shared cache: none with `no-cache` (every
/// use is revalidated), else `s-maxage`, else `max-age`, else `Expires` less `Date`; `None`
/// when it gives none (heuristics may apply).
pub fn explicit_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let cc = directives(headers, "cache-control");
    if unqualified_no_cache(&cc) {
        return Some(Duration::ZERO);
    }
    if let Some(lifetime) = lifetime_of(&cc, &["s-maxage", "max-age"]) {
        return Some(lifetime);
    }
    let expires = headers.get("expires")?;
    // An invalid Expires means already expired (RFC 9111 §5.3).
    let Some(expires) = expires.to_str().ok().and_then(http_date) else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .get("date")
        .and_then(|d| d.to_str().ok())
        .and_then(http_date)
        .unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// The origin's `Age` (time the response already spent in caches before this one): zero when
/// absent, `None` when it is not one number on one line (the response is then taken as stale).
pub fn age(headers: &HeaderMap) -> Option<Duration> {
    let mut lines = headers.get_all("age").iter();
    let Some(first) = lines.next() else {
        return Some(Duration::ZERO);
    };
    if lines.next().is_some() {
        return None;
    }
    let value = first.to_str().ok()?.trim();
    seconds(Some(value)).map(Duration::from_secs)
}

fn http_date(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn max_age_is_read_outside_quoted_strings_and_must_be_a_number() {
        let secs = |cc: &'static str| explicit_lifetime(&headers(&[("cache-control", cc)]));
        assert_eq!(secs("max-age=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(secs("MAX-AGE=60, public"), Some(Duration::from_secs(60)));
        assert_eq!(
            secs("max-age=\"1\", extension=\"max-age=3600\""),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            secs("extension=\"max-age=3600\", max-age=1"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(secs("max-age=-3600"), Some(Duration::ZERO));
        assert_eq!(secs("max-age='3600'"), Some(Duration::ZERO));
        assert_eq!(
            secs("s-maxage=10, max-age=3600"),
            Some(Duration::from_secs(10))
        );
        for huge in [
            "max-age=99999999999999999999",
            "max-age=9999999999999999999",
        ] {
            assert_eq!(
                secs(huge),
                Some(Duration::from_secs(u64::from(u32::MAX))),
                "{huge}"
            );
        }
        assert_eq!(secs("public"), None);
        assert_eq!(secs("max-age=10000, no-cache"), Some(Duration::ZERO));
        assert_eq!(
            secs("max-age=60, no-cache=\"set-cookie\""),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn expires_counts_from_the_origins_date_and_age_is_read() {
        let h = headers(&[
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
            ("age", "120"),
        ]);
        assert_eq!(explicit_lifetime(&h), Some(Duration::from_secs(3600)));
        assert_eq!(age(&h), Some(Duration::from_secs(120)));
        let h = headers(&[("expires", "0")]);
        assert_eq!(explicit_lifetime(&h), Some(Duration::ZERO));
        for bad in ["-5", "abc", "7200.0", "0, 0", "7200;foo=bar"] {
            assert_eq!(age(&headers(&[("age", bad)])), None, "{bad}");
        }
        assert_eq!(age(&headers(&[("age", "0"), ("age", "0")])), None);
        assert_eq!(age(&HeaderMap::new()), Some(Duration::ZERO));
    }

    #[test]
    fn targeted_fields_replace_cache_control_for_the_edge() {
        let t = |pairs: &[(&'static str, &'static str)]| targeted(&headers(pairs));
        assert_eq!(t(&[("cache-control", "max-age=60")]), None);
        assert_eq!(
            t(&[
                ("surrogate-control", "max-age=3600"),
                ("cache-control", "no-store")
            ]),
            Some(fresh(3600, (0, 0)))
        );
        assert_eq!(
            t(&[("surrogate-control", "no-store")]),
            Some(Targeted::NoStore)
        );
        // Cache-Control's meanings: private is not stored, no-cache is revalidated on every
        // use, stale windows are the field's own unless revalidation is required.
        for private in [
            "private",
            "private, max-age=600",
            "private=\"set-cookie\", max-age=60",
        ] {
            let h = headers(&[
                ("cdn-cache-control", private),
                ("cache-control", "max-age=10000"),
            ]);
            assert_eq!(targeted(&h), Some(Targeted::NoStore), "{private}");
        }
        assert_eq!(
            t(&[(
                "cdn-cache-control",
                "no-cache, max-age=600, stale-while-revalidate=60"
            )]),
            Some(fresh(0, (0, 0)))
        );
        assert_eq!(
            t(&[(
                "cdn-cache-control",
                "max-age=600, no-cache=\"x-user-id\", stale-if-error=90"
            )]),
            Some(fresh(0, (0, 0)))
        );
        assert_eq!(
            t(&[(
                "cdn-cache-control",
                "max-age=600, stale-while-revalidate=60, stale-if-error=90"
            )]),
            Some(fresh(600, (60, 90)))
        );
        for strict in ["must-revalidate", "proxy-revalidate", "s-maxage=600"] {
            let value: &'static str =
                Box::leak(format!("max-age=600, {strict}, stale-if-error=90").into_boxed_str());
            assert_eq!(
                t(&[("cdn-cache-control", value)]),
                Some(fresh(600, (0, 0))),
                "{strict}"
            );
        }
        assert_eq!(
            t(&[("surrogate-control", "max-age=3600;not-for-you")]),
            Some(Targeted::Silent)
        );
        assert_eq!(
            t(&[("surrogate-control", "max-age=60;parapet")]),
            Some(fresh(60, (0, 0)))
        );
        assert_eq!(
            t(&[
                ("cdn-cache-control", "max-age=5"),
                ("surrogate-control", "max-age=9")
            ]),
            Some(fresh(5, (0, 0)))
        );
    }

    fn fresh(seconds: u64, stale: (u32, u32)) -> Targeted {
        Targeted::Fresh {
            lifetime: Duration::from_secs(seconds),
            stale,
        }
    }
}
