//! Host → origin: which proxied record of which active zone a request is for, where its
//! origin is, and which origin addresses the edge refuses to reach. No IO: everything comes
//! from the snapshot.

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

/// An IP network: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    /// `192.0.2.0/24`, `2001:db8::/32`, or an address alone (all of its bits).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a network such as \"10.0.0.0/8\" or \"fc00::/7\"");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
            Some(_) => return Err(bad()),
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn leading(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
            let shift = bits - u32::from(prefix);
            shift >= bits || (a >> shift) == (b >> shift)
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => leading(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                leading(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Origin addresses the edge refuses to connect to, whatever a record, an origin rule or a
/// resolver says: anyone who may edit a zone's records could otherwise make the edge fetch,
/// for any visitor, from addresses only the edge's host can reach (a cloud's metadata service
/// at 169.254.169.254), or send requests round to the edge itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    /// The edge's own (anycast) addresses: Cloudflare's error 1000.
    pub own: Vec<IpAddr>,
    /// Networks no origin may be in: error 1002.
    pub denied: Vec<Network>,
}

/// The networks refused by default: "this network", link-local (where most clouds serve
/// instance metadata and credentials), the metadata addresses clouds put elsewhere (AWS's IPv6
/// one, Alibaba's), multicast, reserved and broadcast, and their IPv6 counterparts. Loopback
/// and private networks are allowed: a self-hosted edge often has its origins on its own host
/// or network (an operator hosting others' zones adds them).
pub const DEFAULT_DENIED_ORIGINS: &[&str] = &[
    "0.0.0.0/8",
    "169.254.0.0/16",
    "100.100.100.200",
    "224.0.0.0/3",
    "::/128",
    "fe80::/10",
    "fd00:ec2::254",
    "ff00::/8",
];

impl Default for OriginPolicy {
    fn default() -> Self {
        Self {
            own: Vec::new(),
            denied: DEFAULT_DENIED_ORIGINS
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        }
    }
}

impl OriginPolicy {
    /// Why `ip` may not be an origin, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<EdgeError> {
        let ip = ip.to_canonical();
        if self.own.iter().any(|own| own.to_canonical() == ip) {
            return Some(EdgeError::OriginIsEdge);
        }
        self.denied
            .iter()
            .any(|n| n.contains(ip))
            .then_some(EdgeError::OriginProhibited)
    }

    /// `addrs` without the refused ones; `Err` with the first refusal when none is left.
    pub fn allowed(&self, addrs: Arc<[IpAddr]>) -> Result<Arc<[IpAddr]>, EdgeError> {
        let Some(first) = addrs.iter().find_map(|ip| self.refusal(*ip)) else {
            return Ok(addrs);
        };
        let kept: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|ip| self.refusal(*ip).is_none())
            .collect();
        if kept.is_empty() {
            return Err(first);
        }
        Ok(kept.into())
    }
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
        // A name delegated away is answered by other servers, and a zone not active here
        // (pending, moved) by the servers its delegation names: resolved as outside names are.
        let Some(zone) = snapshot
            .zone_for(&name)
            .filter(|z| z.zone.status == parapet_model::ZoneStatus::Active && !z.delegated(&name))
        else {
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
/// Whether a request for `host` (a `Host` value) came on a TLS connection made for another
/// zone's name (`sni`): Cloudflare's error 1013. Names of one zone share a connection (a
/// browser reuses one its certificate covers); a host in no zone is for routing to refuse.
pub fn misdirected(snapshot: &Snapshot, sni: &str, host: &str) -> bool {
    // The usual case, without a copy: the host is the handshake's name (with a port).
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    if bare.trim_end_matches('.').eq_ignore_ascii_case(sni) {
        return false;
    }
    let Some(host) = host_of(host) else {
        return false;
    };
    if host == sni {
        return false;
    }
    match snapshot.zone_for(&host) {
        Some(for_host) => snapshot
            .zone_for(sni)
            .is_none_or(|for_sni| for_sni.zone.id != for_host.zone.id),
        None => false,
    }
}

pub fn route(
    snapshot: &Snapshot,
    policy: &OriginPolicy,
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
    let addrs = match policy.allowed(addrs) {
        Ok(addrs) => addrs,
        // Names outside remain to be resolved (and their addresses checked in turn).
        Err(_) if !outside.is_empty() => Arc::from(Vec::new()),
        Err(refused) => return Err(refused),
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

    /// A snapshot of `zones` (name, active or not), each with `records` (zone, JSON body).
    fn snapshot_of(zones: &[(&str, bool)], records: &[(&str, serde_json::Value)]) -> Snapshot {
        let mut entries = Vec::new();
        for (name, active) in zones {
            let mut z = parapet_model::Zone::new(
                format!("id-{name}"),
                (*name).to_owned(),
                vec!["ns1.parapet.test".into()],
                "a".into(),
                String::new(),
                1,
            );
            if *active {
                z.status = parapet_model::ZoneStatus::Active;
            }
            entries.push((
                format!("zones/id-{name}"),
                serde_json::to_vec(&z).expect("zone"),
            ));
        }
        for (i, (zone, body)) in records.iter().enumerate() {
            let r = parapet_model::RecordDraft::from_json(zone, body)
                .expect("record")
                .into_record(format!("r{i}"), format!("id-{zone}").as_str(), "", "");
            entries.push((
                format!("records/id-{zone}/r{i}"),
                serde_json::to_vec(&r).expect("record"),
            ));
        }
        parapet_snapshot::compile_snapshot(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            1,
        )
        .expect("compiles")
    }

    #[test]
    fn a_cname_origin_into_a_zone_not_active_here_is_resolved_outside() {
        let snapshot = snapshot_of(
            &[
                ("site.test", true),
                ("backend.test", false),
                ("live.test", true),
            ],
            &[
                (
                    "site.test",
                    serde_json::json!({"type": "CNAME", "name": "www", "content": "app.backend.test", "proxied": true}),
                ),
                (
                    "site.test",
                    serde_json::json!({"type": "CNAME", "name": "api", "content": "app.live.test", "proxied": true}),
                ),
                (
                    "backend.test",
                    serde_json::json!({"type": "A", "name": "app", "content": "192.0.2.10"}),
                ),
                (
                    "live.test",
                    serde_json::json!({"type": "A", "name": "app", "content": "192.0.2.20"}),
                ),
            ],
        );
        let policy = OriginPolicy::default();
        let www = route(&snapshot, &policy, Some("www.site.test"), "/").expect("routed");
        assert!(www.addrs.is_empty(), "{:?}", www.addrs);
        assert_eq!(www.outside, ["app.backend.test"]);
        let api = route(&snapshot, &policy, Some("api.site.test"), "/").expect("routed");
        assert_eq!(
            api.addrs.as_ref(),
            &["192.0.2.20".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn networks_parse_and_hold_their_addresses() {
        let net = |s: &str| s.parse::<Network>().expect(s);
        let ip = |s: &str| s.parse::<IpAddr>().expect(s);
        assert!(net("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7").contains(ip("192.0.2.6")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.1")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(net("fe80::/10").contains(ip("febf::1")));
        assert!(!net("fe80::/10").contains(ip("fec0::1")));
        // An IPv4 address written as IPv6 is the IPv4 address.
        assert!(net("169.254.0.0/16").contains(ip("::ffff:169.254.169.254")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "ten/8",
            "",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        assert_eq!(net("fc00::/7").to_string(), "fc00::/7");
    }

    #[test]
    fn the_default_policy_refuses_metadata_multicast_and_the_edge_itself() {
        let ip = |s: &str| s.parse::<IpAddr>().expect(s);
        let mut policy = OriginPolicy::default();
        policy.own.push(ip("192.0.2.1"));
        for refused in [
            "169.254.169.254",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "fe80::1",
            "ff02::1",
        ] {
            assert_eq!(
                policy.refusal(ip(refused)),
                Some(EdgeError::OriginProhibited),
                "{refused}"
            );
        }
        assert_eq!(
            policy.refusal(ip("192.0.2.1")),
            Some(EdgeError::OriginIsEdge)
        );
        // Loopback and private origins are a self-hosted edge's own business.
        for allowed in [
            "127.0.0.1",
            "10.0.0.5",
            "192.168.1.2",
            "fd00::5",
            "::1",
            "198.51.100.7",
        ] {
            assert_eq!(policy.refusal(ip(allowed)), None, "{allowed}");
        }
        let mixed: Arc<[IpAddr]> = Arc::from(vec![ip("169.254.1.1"), ip("198.51.100.7")]);
        assert_eq!(
            policy.allowed(mixed).expect("one left").as_ref(),
            &[ip("198.51.100.7")]
        );
        let none: Arc<[IpAddr]> = Arc::from(vec![ip("192.0.2.1")]);
        assert_eq!(policy.allowed(none), Err(EdgeError::OriginIsEdge));
    }

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
