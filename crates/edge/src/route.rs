//! Host → origin: which proxied record of which active zone a request is for, and where its
//! origin is. No IO: everything comes from the snapshot.

use std::net::IpAddr;

use parapet_model::RecordType;
use parapet_model::expr::RequestFacts;
use parapet_model::rules::RuleAction;
use parapet_snapshot::Snapshot;
use parapet_snapshot::ZoneEdge;
use std::sync::Arc;

use crate::errors::EdgeError;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub zone_id: Arc<str>,
    /// The visitor's host name, lowercase, without port.
    pub host: String,
    /// Origin addresses, in record order.
    pub addrs: Arc<[IpAddr]>,
    /// Origin host names outside Parapet's zones (proxied CNAMEs to other providers, directly or
    /// at the end of a CNAME chain inside Parapet's zones).
    pub outside: Vec<String>,
    /// The port to connect to, when an origin rule sets it (else the visitor's port).
    pub port: Option<u16>,
    /// The `Host` header the origin gets, when an origin rule sets it (else the visitor's).
    pub host_header: Option<String>,
    /// The server name for an HTTPS origin, when an origin rule sets it (else the Host's).
    pub sni: Option<String>,
    /// The zone's settings (timeouts, protocol to the origin) and rules, as the snapshot that
    /// routed the request had them.
    pub edge: Arc<ZoneEdge>,
    /// The request path as rules see it ([`parapet_model::expr::normalize_path`]).
    pub rule_path: String,
}

/// The host name of a `Host` header or `:authority`: lowercase, no port, no trailing dot.
pub fn host_of(header: &str) -> Option<String> {
    let h = header.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        // An IPv6 literal is never one of our hosts.
        return rest.split(']').next().map(|s| s.to_ascii_lowercase());
    } else {
        h.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(host, _)| host)
    };
    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    ok.then_some(h)
}

/// The proxied host entry for `host`: exact name first, then the wildcard of its closest
/// encloser, as DNS finds it (RFC 4592): a name that exists (with records or below which there
/// are records) is not covered by a wildcard, and only the wildcard at the nearest existing
/// ancestor may answer. Names at or below a delegation are never proxied (compiled out).
fn lookup<'s>(snapshot: &'s Snapshot, host: &str) -> Option<&'s parapet_snapshot::ProxiedHost> {
    if let Some(h) = snapshot.proxied_hosts.get(host) {
        return Some(h);
    }
    let zone = snapshot.zone_for(host)?;
    let encloser = closest_encloser(zone, host)?;
    snapshot.proxied_hosts.get(&format!("*.{encloser}"))
}

/// The nearest existing ancestor of `name`, which does not exist itself, within `zone`; `None`
/// when `name` exists or lies at or below a delegation (no wildcard answers for it then).
fn closest_encloser<'n>(zone: &parapet_snapshot::ZoneSnapshot, name: &'n str) -> Option<&'n str> {
    if zone.exists(name) || zone.delegated(name) {
        return None;
    }
    let mut at = name;
    while let Some((_, parent)) = at.split_once('.') {
        if parent.len() < zone.zone.name.len() {
            break;
        }
        if zone.exists(parent) {
            return Some(parent);
        }
        at = parent;
    }
    None
}

/// Where a name inside Parapet's zones leads.
enum Inside {
    /// The addresses at the end of the chain (none when it ends in nothing or goes on too long).
    Addresses(Vec<IpAddr>),
    /// The first name outside every zone the chain reaches: resolved as a proxied CNAME straight
    /// to it would be.
    Outside(String),
}

/// The records of the wildcard that answers for `name` (see [`closest_encloser`]).
fn wildcard_records<'z>(
    zone: &'z parapet_snapshot::ZoneSnapshot,
    name: &str,
) -> Vec<&'z parapet_model::DnsRecord> {
    let Some(encloser) = closest_encloser(zone, name) else {
        return Vec::new();
    };
    zone.stored_at(&format!("*.{encloser}")).collect()
}

/// Follows `name` through Parapet's zones, CNAME by CNAME (at most 8).
fn follow_inside(snapshot: &Snapshot, name: &str) -> Inside {
    let mut name = name.to_ascii_lowercase();
    for _ in 0..8 {
        // A name delegated away is answered by other servers: resolved as outside names are.
        let Some(zone) = snapshot.zone_for(&name).filter(|z| !z.delegated(&name)) else {
            return Inside::Outside(name);
        };
        let mut at: Vec<_> = zone.records_at(&name).collect();
        if at.is_empty() {
            at = wildcard_records(zone, &name);
        }
        if let Some(cname) = at.iter().find(|r| r.kind == RecordType::CNAME) {
            name = cname.content.to_ascii_lowercase();
            continue;
        }
        return Inside::Addresses(
            at.iter()
                .filter(|r| matches!(r.kind, RecordType::A | RecordType::AAAA))
                .filter_map(|r| r.content.parse().ok())
                .collect(),
        );
    }
    Inside::Addresses(Vec::new())
}

/// Routes a request for `host_header` to its origin, or to the error the visitor gets. Origin
/// names outside Parapet's zones are left in `Origin::outside` for the caller to resolve.
pub fn route(
    snapshot: &Snapshot,
    host_header: Option<&str>,
    path: &str,
) -> Result<Origin, EdgeError> {
    let host = host_header
        .and_then(host_of)
        .ok_or(EdgeError::UnknownHost)?;
    // A site is reached by its name (Cloudflare's 1003).
    if host.parse::<IpAddr>().is_ok() {
        return Err(EdgeError::DirectIp);
    }
    let Some(proxied) = lookup(snapshot, &host) else {
        return Err(if snapshot.zone_for(&host).is_some() {
            EdgeError::NotProxied
        } else {
            EdgeError::UnknownHost
        });
    };
    if !proxied.active {
        return Err(EdgeError::ZoneNotActive);
    }
    // The zone's origin rules, in order: a later match overrides what an earlier one set.
    let edge = snapshot.edge_of(&proxied.zone_id);
    let (mut port, mut host_header, mut origin_host, mut sni) = (None, None, None, None);
    let rule_path = parapet_model::expr::normalize_path(path);
    let facts = RequestFacts {
        host: &host,
        path: &rule_path,
    };
    for rule in edge.origin_rules.iter().filter(|r| r.matches(&facts)) {
        let RuleAction::Route(params) = &rule.action else {
            continue;
        };
        if let Some(h) = &params.host_header {
            host_header = Some(h.clone());
        }
        if let Some(s) = &params.sni {
            sni = Some(s.value.clone());
        }
        if let Some(o) = &params.origin {
            port = o.port.or(port);
            origin_host = o.host.clone().or(origin_host);
        }
    }
    let mut outside = Vec::new();
    let addrs = match (&origin_host, &proxied.addresses) {
        (None, Some(addresses)) => Arc::clone(addresses),
        _ => {
            let origins = match &origin_host {
                Some(h) => std::slice::from_ref(h),
                None => proxied.origins.as_slice(),
            };
            let mut addrs = Vec::new();
            for content in origins {
                match content.parse::<IpAddr>() {
                    Ok(ip) => addrs.push(ip),
                    Err(_) if snapshot.zone_for(content).is_some() => {
                        match follow_inside(snapshot, content) {
                            Inside::Addresses(found) => addrs.extend(found),
                            Inside::Outside(name) => outside.push(name),
                        }
                    }
                    Err(_) => outside.push(content.clone()),
                }
            }
            Arc::from(addrs)
        }
    };
    if addrs.is_empty() && outside.is_empty() {
        return Err(EdgeError::OriginDns);
    }
    Ok(Origin {
        zone_id: Arc::clone(&proxied.zone_id),
        host,
        addrs,
        outside,
        port,
        host_header,
        sni,
        edge,
        rule_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_are_normalised() {
        assert_eq!(
            host_of("WWW.Example.com:8080").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            host_of("www.example.com.").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(host_of("bad host"), None);
        assert_eq!(host_of(""), None);
    }
}
