//! Cache keys. The key names the zone, scheme, host, port, path and query, so that no two
//! sites, schemes or ports can ever share an object (a key without them is how cache poisoning
//! across hosts happens). Headers such as `X-Forwarded-Host` never enter it.

use pingora::cache::CacheKey;

/// The primary key of a URL in a zone: `zone\nscheme://host:port/path?query` (a newline cannot
/// occur in a zone id, a host name or a request target, so the parts cannot run together).
pub fn primary(zone_id: &str, https: bool, host: &str, port: u16, path_and_query: &str) -> String {
    let scheme = if https { "https://" } else { "http://" };
    // Written piece by piece: this runs for every request that may touch the cache.
    let mut key =
        String::with_capacity(zone_id.len() + scheme.len() + host.len() + path_and_query.len() + 8);
    key.push_str(zone_id);
    key.push('\n');
    key.push_str(scheme);
    let start = key.len();
    key.push_str(host);
    key[start..].make_ascii_lowercase();
    key.push(':');
    key.push_str(itoa::Buffer::new().format(port));
    key.push_str(path_and_query);
    key
}

/// The engine's key for a request.
pub fn cache_key(
    zone_id: &str,
    https: bool,
    host: &str,
    port: u16,
    path_and_query: &str,
) -> CacheKey {
    key_of(primary(zone_id, https, host, port, path_and_query), zone_id)
}

/// An object's id in the store: the hex of its key's hash, variance included (the engine's
/// `combined()`, written without its formatting machinery: this runs on every hit).
pub fn object_id(key: &impl pingora::cache::key::CacheHashKey) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let hash = key.combined_bin();
    let mut id = String::with_capacity(hash.len() * 2);
    for byte in hash {
        id.push(char::from(DIGITS[usize::from(byte >> 4)]));
        id.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    id
}

/// The engine's key for a primary key: its hash is computed here once (the engine asks for it
/// several times per request).
pub fn key_of(primary: String, zone_id: &str) -> CacheKey {
    use pingora::cache::key::CacheHashKey as _;
    let mut key = CacheKey::new(primary, zone_id);
    let hash = key.primary_bin();
    key.set_primary_bin_override(hash);
    key
}

/// A primary key taken apart again (for the purge index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub zone: String,
    /// The whole primary key, shared by every Vary variant of the URL.
    pub url: String,
    pub host: String,
    /// Path and query.
    pub path: String,
}

impl ParsedKey {
    pub fn parse(primary: &str) -> Option<Self> {
        let (zone, url) = primary.split_once('\n')?;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))?;
        let slash = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(slash);
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        Some(Self {
            zone: zone.to_owned(),
            url: primary.to_owned(),
            host: host.to_owned(),
            path: if path.is_empty() { "/" } else { path }.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::key::CacheHashKey;

    #[test]
    fn keys_separate_zones_schemes_hosts_ports_and_queries() {
        let base = cache_key("z1", false, "www.example.com", 80, "/a.css?v=1").combined();
        for other in [
            cache_key("z2", false, "www.example.com", 80, "/a.css?v=1"),
            cache_key("z1", true, "www.example.com", 80, "/a.css?v=1"),
            cache_key("z1", false, "api.example.com", 80, "/a.css?v=1"),
            cache_key("z1", false, "www.example.com", 8080, "/a.css?v=1"),
            cache_key("z1", false, "www.example.com", 80, "/a.css?v=2"),
        ] {
            assert_ne!(other.combined(), base);
        }
        assert_eq!(
            cache_key("z1", false, "WWW.example.com", 80, "/a.css?v=1").combined(),
            base,
            "host names compare without case"
        );
    }

    #[test]
    fn primary_keys_keep_their_written_form() {
        // Stored objects are found by these keys: their form must not change.
        for port in [0u16, 7, 80, 443, 8080, 65535] {
            for (https, scheme) in [(false, "http"), (true, "https")] {
                assert_eq!(
                    primary("z1", https, "WWW.Example.COM", port, "/A.css?Q=1"),
                    format!("z1\n{scheme}://www.example.com:{port}/A.css?Q=1")
                );
            }
        }
    }

    #[test]
    fn a_precomputed_hash_is_the_engines_own() {
        let url = primary("z1", true, "www.example.com", 443, "/a.css");
        let plain = CacheKey::new(url.clone(), "z1");
        let key = key_of(url, "z1");
        assert_eq!(key.primary_bin(), plain.primary_bin());
        assert_eq!(key.combined(), plain.combined());
    }

    #[test]
    fn object_ids_are_the_engines_combined_hex_with_and_without_variance() {
        // Files of the disk tier are named by these ids: they must not change.
        let mut key = cache_key("z1", false, "www.example.com", 80, "/a.css");
        assert_eq!(object_id(&key), key.combined());
        let mut variance = pingora::cache::VarianceBuilder::new();
        variance.add_value("accept-encoding", "gzip");
        key.set_variance_key(variance.finalize().expect("a variance"));
        assert_eq!(object_id(&key), key.combined());
        assert_eq!(object_id(&key).len(), 32);
    }

    #[test]
    fn primary_keys_parse_back() {
        let p = primary("z1", true, "www.example.com", 443, "/img/a.png?x=1");
        let parsed = ParsedKey::parse(&p).expect("parses");
        assert_eq!(parsed.zone, "z1");
        assert_eq!(parsed.host, "www.example.com");
        assert_eq!(parsed.path, "/img/a.png?x=1");
        assert_eq!(parsed.url, p);
    }
}
