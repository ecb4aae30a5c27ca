//! Header policy, as Cloudflare applies it: what the origin is told about the visitor, what is
//! stripped on the way, and what the visitor sees added.

use std::net::IpAddr;

/// The CDN-Loop token of this edge (RFC 8586).
pub const CDN_LOOP_TOKEN: &str = "parapet";

pub const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1), besides those named in
/// `Connection`. Framing headers are the HTTP engine's, and `Upgrade` stays for WebSockets.
pub const HOP_BY_HOP: [http::HeaderName; 4] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    http::header::TE,
    http::header::TRAILER,
];

/// A request's ray id: 16 hex digits and the edge's tag, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RayId([u8; 20]);

impl RayId {
    pub fn as_str(&self) -> &str {
        // Built from ASCII only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for RayId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A new ray id.
pub fn ray_id() -> RayId {
    thread_local! {
        /// Seeded once per thread from the OS; each id is the next step of splitmix64, so ids
        /// are unique per thread and unpredictable without a system call per request.
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed)
        });
    }
    let next = STATE.with(|state| {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"0000000000000000-PPT";
    for (digit, shift) in id.iter_mut().zip((0..16).rev()) {
        *digit = HEX[((next >> (shift * 4)) & 0xf) as usize];
    }
    RayId(id)
}

/// The `Date` value for `now`, an instant the caller has just read: the wall clock is read
/// again only once the second it showed has passed (by the monotonic clock).
pub fn with_date<T>(now: std::time::Instant, f: impl FnOnce(&[u8]) -> T) -> T {
    thread_local! {
        /// The date, and until when it stands.
        static DATE: std::cell::RefCell<(Option<std::time::Instant>, String)> =
            const { std::cell::RefCell::new((None, String::new())) };
    }
    DATE.with_borrow_mut(|(until, text)| {
        if until.is_none_or(|until| now >= until) {
            let wall = std::time::SystemTime::now();
            let into_second = wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(std::time::Duration::ZERO, |d| {
                    std::time::Duration::from_nanos(u64::from(d.subsec_nanos()))
                });
            *text = httpdate::fmt_http_date(wall);
            *until = now.checked_add(std::time::Duration::from_secs(1) - into_second);
        }
        f(text.as_bytes())
    })
}

/// Whether a `CDN-Loop` value shows the request already went through this edge.
pub fn is_loop(cdn_loop: &str) -> bool {
    cdn_loop.split(',').any(|item| {
        item.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(CDN_LOOP_TOKEN))
    })
}

/// Adds `value` to a comma-separated field list (several fields of one name read as one,
/// RFC 9110 §5.3).
pub fn extend_list(list: &mut Option<String>, value: &str) {
    match list {
        Some(list) => {
            list.push_str(", ");
            list.push_str(value);
        }
        None => *list = Some(value.to_owned()),
    }
}

/// `X-Forwarded-For` with the client appended.
pub fn forwarded_for(existing: Option<&str>, client: IpAddr) -> String {
    match existing.map(str::trim).filter(|s| !s.is_empty()) {
        Some(e) => format!("{e}, {client}"),
        None => client.to_string(),
    }
}

/// The request's cookies (`Cookie` lines split at `;`), name and value, in order.
pub fn cookies(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Header names listed in a `Connection` value, as given, except `upgrade` (kept for
/// WebSockets) and the connection options `close` and `keep-alive`.
pub fn connection_listed(connection: &str) -> impl Iterator<Item = &str> {
    connection.split(',').map(str::trim).filter(|t| {
        !t.is_empty()
            && !["upgrade", "close", "keep-alive"]
                .iter()
                .any(|option| t.eq_ignore_ascii_case(option))
    })
}

/// Refuses requests whose body framing two parsers could read differently (RFC 9112 §6):
/// both `Content-Length` and `Transfer-Encoding`, or a `Content-Length` that is not exactly one
/// decimal number. (The HTTP engine already refuses other transfer codings, obs-fold, bare CR,
/// bad header names and differing duplicate lengths.)
pub fn check_framing(headers: &pingora::http::HMap) -> Result<(), &'static str> {
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (first, second) = (lengths.next(), lengths.next());
    if first.is_some() && headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if second.is_some() {
        return Err("more than one Content-Length");
    }
    // The only transfer coding a request may carry here is `chunked`, alone (RFC 9112 §6.1: a
    // server that does not understand a coding answers 501; coded bodies the origin would take
    // as plain are refused): all fields together make one list, empty elements aside.
    let mut codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && !(codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none())
    {
        return Err("a transfer coding other than chunked");
    }
    if let Some(v) = first {
        let ok = !v.is_empty() && v.len() <= 19 && v.as_bytes().iter().all(u8::is_ascii_digit);
        if !ok {
            return Err("Content-Length is not a decimal number");
        }
    }
    Ok(())
}

/// The codings an `Accept-Encoding` value lists, with their weights (a weight that is not a
/// number counts as 1).
fn weighted_codings(value: &[u8]) -> impl Iterator<Item = (&[u8], f32)> {
    value.split(|&b| b == b',').filter_map(|item| {
        let mut parts = item.split(|&b| b == b';');
        let coding = parts.next()?.trim_ascii();
        let weight = parts
            .filter_map(|p| {
                let (name, value) = p.trim_ascii().split_at_checked(2)?;
                name.eq_ignore_ascii_case(b"q=")
                    .then(|| std::str::from_utf8(value).ok()?.trim().parse::<f32>().ok())
                    .flatten()
            })
            .next_back()
            .unwrap_or(1.0);
        (!coding.is_empty()).then_some((coding, weight))
    })
}

/// Whether an `Accept-Encoding` value accepts `coding`: it lists it with a weight above 0, or
/// does not list it and accepts `*` (RFC 9110 §12.5.3).
pub fn accepts_coding(value: &[u8], coding: &[u8]) -> bool {
    let mut any = false;
    for (c, weight) in weighted_codings(value) {
        if c.eq_ignore_ascii_case(coding) {
            return weight > 0.0;
        }
        any |= c == b"*" && weight > 0.0;
    }
    any
}

/// Whether an `Accept-Encoding` value says more than a list of codings (weights, or `*`): the
/// edge reads it as [`codings_by_weight`] writes it.
pub fn weighs_codings(value: &[u8]) -> bool {
    value.contains(&b';') || value.contains(&b'*')
}

/// The codings the edge makes, which `*` stands for when a value does not list them.
const EDGE_CODINGS: [&[u8]; 3] = [b"br", b"zstd", b"gzip"];

/// An `Accept-Encoding` value with its weights applied: the codings it accepts (weight above
/// 0), highest weight first (ties in their order), without parameters, `*` as the edge's own
/// codings it does not list; `identity` when it accepts none.
pub fn codings_by_weight(value: &[u8]) -> Vec<u8> {
    let listed: Vec<(&[u8], f32)> = weighted_codings(value).collect();
    let mut codings: Vec<(&[u8], f32)> = Vec::new();
    for &(coding, weight) in &listed {
        if coding == b"*" {
            codings.extend(
                EDGE_CODINGS
                    .iter()
                    .filter(|c| !listed.iter().any(|(l, _)| l.eq_ignore_ascii_case(c)))
                    .map(|c| (*c, weight)),
            );
        } else {
            codings.push((coding, weight));
        }
    }
    codings.retain(|(_, weight)| *weight > 0.0);
    codings.sort_by(|a, b| b.1.total_cmp(&a.1));
    if codings.is_empty() {
        return b"identity".to_vec();
    }
    codings
        .iter()
        .map(|(coding, _)| *coding)
        .collect::<Vec<_>>()
        .join(&b", "[..])
}

/// The fields about the client that Cloudflare writes to origins.
const CLIENT_FIELDS: [&str; 8] = [
    "x-forwarded-for",
    "cf-connecting-ip",
    "x-forwarded-proto",
    "cf-visitor",
    "cf-ray",
    "cdn-loop",
    "cf-ipcountry",
    "cf-connecting-ipv6",
];

/// Whether a visitor's field must not reach the origin because it passes for one of the
/// edge's: a field Cloudflare writes about the client that this edge does not (`CF-IPCountry`,
/// `CF-Connecting-IPv6`), or one it writes spelled with underscores (`CF_Connecting_IP`, which
/// servers reading fields as CGI variables take for `CF-Connecting-IP`).
pub fn impersonates_edge(name: &[u8]) -> bool {
    if name.eq_ignore_ascii_case(b"cf-ipcountry")
        || name.eq_ignore_ascii_case(b"cf-connecting-ipv6")
    {
        return true;
    }
    CLIENT_FIELDS.iter().any(|field| underscored(field, name))
}

/// Whether `name` is `field` (lower case) spelled with some of its hyphens as underscores
/// (`X_Forwarded_Host`), which servers that read fields as CGI variables (Rack, PHP) take for
/// `field`.
pub(crate) fn underscored(field: &str, name: &[u8]) -> bool {
    name.contains(&b'_')
        && field.len() == name.len()
        && field.bytes().zip(name).all(|(f, &n)| {
            f == if n == b'_' {
                b'-'
            } else {
                n.to_ascii_lowercase()
            }
        })
}

/// Whether a `Host` value is a host and an optional port (RFC 9110 §7.2, RFC 3986 §3.2.2):
/// an IP literal in brackets or a name of unreserved characters, sub-delimiters and
/// percent-escapes, then `:` and digits. Anything else is a 400 (RFC 9112 §3.2), not a host this
/// edge does not serve.
pub fn host_field_ok(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            let ok = !literal.is_empty()
                && literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            if !ok {
                return false;
            }
            (&b""[..], &rest[end + 1..])
        }
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &b""[..]),
        },
    };
    let mut name_ok = true;
    let mut i = 0;
    while name_ok && i < host.len() {
        let b = host[i];
        if b == b'%' {
            name_ok = host
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            i += 3;
        } else {
            name_ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
            i += 1;
        }
    }
    let port_ok = match port.strip_prefix(b":") {
        Some(digits) => digits.iter().all(u8::is_ascii_digit),
        None => port.is_empty(),
    };
    name_ok && port_ok
}

/// Whether an HTTP/1 request target has a form RFC 9112 §3.2 allows: origin form (`/path`),
/// absolute form (`http://host/path`), or `*` for OPTIONS (CONNECT's authority form is refused
/// before). The HTTP engine reads anything else as `/` and would send it on as it came: a cache
/// key for `/` over an answer for something else.
pub fn target_form_ok(method: &http::Method, target: &[u8]) -> bool {
    let scheme = |s: &[u8]| {
        target
            .get(..s.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(s))
    };
    // Spaces and control characters are refused, not corrected (RFC 9112 §3.2).
    let clean = !target.iter().any(|&b| b <= b' ' || b == 0x7f);
    clean
        && (target.starts_with(b"/")
            || (target == b"*" && method == http::Method::OPTIONS)
            || scheme(b"http://")
            || scheme(b"https://"))
}

/// What a `Range` value asks of a body of some length (RFC 9110 §14.1.1).
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// Not a valid byte range set: ignored.
    Ignored,
    /// None of its ranges selects a byte (a range starting at or past the end, a suffix of no
    /// bytes, any range of an empty body): 416.
    Nothing,
    /// Every range selects something.
    All,
    /// Some do: the set of those that do, to be answered as if it had been asked.
    Some(String),
}

/// Reads `range` (a `Range` value) against a body of `length` bytes.
pub fn range_ask(range: &[u8], length: u64) -> RangeAsk {
    let Some(set) = range
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .and_then(|_| range.get(6..))
    else {
        return RangeAsk::Ignored;
    };
    let number = |digits: &[u8]| -> Option<Option<u64>> {
        if digits.is_empty() {
            return Some(None);
        }
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // Past u64: as large as any body, and larger.
        Some(Some(
            std::str::from_utf8(digits)
                .ok()?
                .parse()
                .unwrap_or(u64::MAX),
        ))
    };
    let (mut selecting, mut dropped) = (Vec::new(), 0);
    for spec in set.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if spec.is_empty() {
            continue;
        }
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return RangeAsk::Ignored;
        };
        let (Some(first), Some(last)) = (number(&spec[..dash]), number(&spec[dash + 1..])) else {
            return RangeAsk::Ignored;
        };
        let selects = match (first, last) {
            (Some(first), last) => {
                if last.is_some_and(|last| last < first) {
                    return RangeAsk::Ignored;
                }
                first < length
            }
            (None, Some(suffix)) => suffix > 0 && length > 0,
            (None, None) => return RangeAsk::Ignored,
        };
        if selects {
            selecting.push(spec);
        } else {
            dropped += 1;
        }
    }
    match (selecting.is_empty(), dropped) {
        (true, 0) => RangeAsk::Ignored,
        (true, _) => RangeAsk::Nothing,
        (false, 0) => RangeAsk::All,
        (false, _) => {
            let specs: Vec<String> = selecting
                .iter()
                .map(|spec| String::from_utf8_lossy(spec).into_owned())
                .collect();
            RangeAsk::Some(format!("bytes={}", specs.join(",")))
        }
    }
}

/// Checks the request head as received, before the HTTP engine normalised it: no bare LF line
/// ends, and not both `Content-Length` and `Transfer-Encoding` (the engine drops the length and
/// goes on; a request like that is a smuggling attempt and is refused).
pub fn check_raw_head(raw: &[u8]) -> Result<(), &'static str> {
    if memchr::memchr_iter(b'\n', raw).any(|i| i == 0 || raw[i - 1] != b'\r') {
        return Err("bare LF line end");
    }
    // Each line starts at the head's start or after a line end.
    let has = |name: &[u8]| {
        std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', raw).map(|i| i + 1))
            .any(|start| {
                raw.get(start..start + name.len())
                    .is_some_and(|field| field.eq_ignore_ascii_case(name))
                    && raw.len() > start + name.len()
                    && raw[start + name.len()] != b'\n'
            })
    };
    if has(b"content-length:") && has(b"transfer-encoding:") {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(())
}

/// The device type Cloudflare files a `User-Agent` under for its device-type cache split:
/// `mobile` (phones), `tablet`, or `desktop` (anything else).
pub fn device_type(agent: &str) -> &'static str {
    let ua = agent.to_ascii_lowercase();
    // Platforms whose phones say "mobile" after the platform's name, and whose tablets do not.
    let platforms = ["android", "bb10", "meego", "silk", "googlebot"];
    let mobile_after = |platform: &str| {
        ua.find(platform)
            .is_some_and(|at| ua[at + platform.len()..].contains("mobile"))
    };
    let phone = [
        "phone",
        "ipod",
        "blackberry",
        "palm",
        "windows ce",
        "opera mini",
        "avantgo",
        "mobilesafari",
        "docomo",
    ]
    .iter()
    .any(|m| ua.contains(m))
        || platforms.iter().any(|p| mobile_after(p));
    if phone {
        "mobile"
    } else if ua.contains("ipad")
        || ua.contains("playbook")
        || platforms[..4].iter().any(|p| ua.contains(p))
    {
        "tablet"
    } else {
        "desktop"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_field_is_a_host_and_an_optional_port() {
        for good in [
            &b"www.example.com"[..],
            b"WWW.Example.COM.",
            b"www.example.com:8080",
            b"www.example.com:",
            b"127.0.0.1",
            b"[2001:db8::1]:443",
            b"caf%C3%A9.example",
            b"a_b.example",
        ] {
            assert!(host_field_ok(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"www.example.com/x"[..],
            b"www.example .com",
            b"www.example.com:abc",
            b"a, b",
            b"[2001:db8::1",
            b"[]",
            b"[2001:db8::1]x",
            b"a%4",
            b"a%zz",
            b"www.example.com:80:80",
            b"a\"b",
        ] {
            assert!(!host_field_ok(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    use super::*;

    #[test]
    fn user_agents_are_filed_as_phones_tablets_or_desktops() {
        for (agent, kind) in [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
                "mobile",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0 Mobile Safari/537.36",
                "mobile",
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Safari/604.1",
                "tablet",
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) Chrome/120.0 Safari/537.36",
                "tablet",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36",
                "desktop",
            ),
            ("Googlebot/2.1 (+http://www.google.com/bot.html)", "desktop"),
            ("Opera/9.80 (J2ME/MIDP; Opera Mini/9.80)", "mobile"),
            ("", "desktop"),
        ] {
            assert_eq!(device_type(agent), kind, "{agent}");
        }
    }

    /// [`check_raw_head`] as one reads it: every byte, every line.
    fn check_plainly(raw: &[u8]) -> Result<(), &'static str> {
        if raw
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        {
            return Err("bare LF line end");
        }
        let has = |name: &[u8]| {
            raw.split(|b| *b == b'\n').any(|line| {
                line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name)
            })
        };
        if has(b"content-length:") && has(b"transfer-encoding:") {
            return Err("both Content-Length and Transfer-Encoding");
        }
        Ok(())
    }

    #[test]
    fn accepted_codings_are_listed_by_weight_without_the_refused() {
        for (value, plain) in [
            (&b"gzip;q=0, identity"[..], &b"identity"[..]),
            (b"gzip;q=0", b"identity"),
            (b"br;q=0, deflate", b"deflate"),
            (b"gzip;q=0.5, br;q=1.0, zstd", b"br, zstd, gzip"),
            (b"gzip; Q=0.000 ,br", b"br"),
            (b"gzip;q=x, br;q=0.9", b"gzip, br"),
            (b"gzip, br", b"gzip, br"),
            // `*` stands for the codings not listed (RFC 9110 §12.5.3).
            (b"identity;q=0, *", b"br, zstd, gzip"),
            (b"gzip;q=0, *;q=0.5, zstd", b"zstd, br"),
            (b"*;q=0, gzip", b"gzip"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&codings_by_weight(value)),
                String::from_utf8_lossy(plain),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn fields_passing_for_the_edges_are_told() {
        for name in [
            &b"CF_Connecting_IP"[..],
            b"x_forwarded_proto",
            b"X_Forwarded_For",
            b"cf_visitor",
            b"CF-IPCountry",
            b"cf-connecting-ipv6",
        ] {
            assert!(impersonates_edge(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"cf-connecting-ip"[..],
            b"x-forwarded-for",
            b"my_header",
            b"cf_connecting",
        ] {
            assert!(
                !impersonates_edge(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn a_coding_is_accepted_by_name_or_by_a_star() {
        assert!(accepts_coding(b"identity;q=0, *", b"gzip"));
        assert!(!accepts_coding(b"gzip;q=0, *", b"gzip"));
        assert!(accepts_coding(b"gzip;q=0, *", b"br"));
        assert!(!accepts_coding(b"*;q=0, br", b"gzip"));
        assert!(!accepts_coding(b"deflate", b"gzip"));
        assert!(
            weighs_codings(b"*") && weighs_codings(b"gzip;q=1") && !weighs_codings(b"gzip, br")
        );
    }

    #[test]
    fn range_sets_are_read_against_the_length() {
        for (range, length) in [
            (&b"bytes=-0"[..], 10),
            (b"bytes=10-", 10),
            (b"bytes=10-20", 10),
            (b"bytes=-5", 0),
            (b"bytes=0-", 0),
            (b"BYTES=-0, 99999999999999999999999-", 10),
        ] {
            assert_eq!(
                range_ask(range, length),
                RangeAsk::Nothing,
                "{range:?} of {length}"
            );
        }
        for (range, length) in [
            (&b"bytes=5-2"[..], 10),
            (b"bytes=x-", 10),
            (b"items=0-", 0),
            (b"bytes=", 10),
            (b"bytes=-", 10),
        ] {
            assert_eq!(
                range_ask(range, length),
                RangeAsk::Ignored,
                "{range:?} of {length}"
            );
        }
        for (range, length) in [
            (&b"bytes=0-"[..], 10),
            (b"bytes=-1", 10),
            (b"bytes=9-9, 0-1", 10),
        ] {
            assert_eq!(
                range_ask(range, length),
                RangeAsk::All,
                "{range:?} of {length}"
            );
        }
        assert_eq!(
            range_ask(b"bytes=-0, 5-", 10),
            RangeAsk::Some("bytes=5-".into())
        );
        assert_eq!(
            range_ask(b"bytes=0-0,-0, 20-30, 2-3", 10),
            RangeAsk::Some("bytes=0-0,2-3".into())
        );
    }

    #[test]
    fn chunked_alone_is_the_only_transfer_coding_taken() {
        let framing = |fields: &[&str]| {
            let mut headers = pingora::http::HMap::new();
            for field in fields {
                headers.append(
                    http::header::TRANSFER_ENCODING,
                    http::HeaderValue::from_str(field).expect("value"),
                );
            }
            check_framing(&headers)
        };
        for taken in [
            &[][..],
            &["chunked"],
            &[" Chunked "],
            &["chunked, "],
            &["", "chunked"],
        ] {
            assert_eq!(framing(taken), Ok(()), "{taken:?}");
        }
        for refused in [
            &["gzip"][..],
            &["gzip, chunked"],
            &["chunked, gzip"],
            &["chunked, chunked"],
            &["identity", "chunked"],
            &["chunked", "chunked"],
            &[""],
            &["chunked;q=1"],
        ] {
            assert!(framing(refused).is_err(), "{refused:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn raw_heads_are_checked_as_every_line_is_read(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "\r\n", "\n", "\r", "Content-Length:", "content-length:", "Transfer-Encoding:",
                "TRANSFER-ENCODING:", " 1", "chunked", "GET / HTTP/1.1", "X: y",
            ]), 0..12)
        ) {
            let raw = pieces.concat();
            proptest::prop_assert_eq!(check_raw_head(raw.as_bytes()), check_plainly(raw.as_bytes()));
        }
    }

    #[test]
    fn ray_ids_are_sixteen_hex_digits_and_the_tag_and_never_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| ray_id().to_string()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            let (hex, tag) = id.split_at(16);
            assert_eq!(tag, "-PPT", "{id}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
    }

    #[test]
    fn dates_are_the_wall_clocks_second() {
        use std::time::{Duration, Instant, SystemTime};
        let date = |now| with_date(now, |d| String::from_utf8(d.to_vec()).expect("ascii"));
        for _ in 0..3 {
            let before = SystemTime::now();
            let given = date(Instant::now());
            let after = SystemTime::now();
            let parsed = httpdate::parse_http_date(&given).expect("an HTTP date");
            let second = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs()
            };
            assert!(
                (second(before)..=second(after)).contains(&second(parsed)),
                "{given}"
            );
            std::thread::sleep(Duration::from_millis(400));
        }
        // A second later by the monotonic clock, the wall clock is read again.
        let now = Instant::now();
        let first = date(now);
        assert_eq!(date(now), first);
        std::thread::sleep(Duration::from_millis(1100));
        assert_ne!(date(Instant::now()), first);
    }

    #[test]
    fn loops_and_forwarded_for() {
        assert!(is_loop("foo, parapet; v=1"));
        assert!(!is_loop("cloudflare"));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(forwarded_for(Some("10.0.0.1"), ip), "10.0.0.1, 192.0.2.1");
        assert_eq!(forwarded_for(None, ip), "192.0.2.1");
        assert_eq!(
            connection_listed("Keep-Alive, X-Secret, Upgrade,, CLOSE").collect::<Vec<_>>(),
            vec!["X-Secret"]
        );
    }
}
