//! Configuration: a TOML file (`--config`) with flags that override it. Every mistake in the
//! file is reported at once, unknown keys included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use parapet_model::name::{NameKind, normalize};

/// The `serve` flags; each overrides the file's value.
#[derive(Debug, Default, clap::Args)]
pub struct ServeFlags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the store and the last good snapshot live [default: ./parapet-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST API address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// DNS address, UDP and TCP (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Vec<SocketAddr>,
    /// Edge HTTP address (repeatable); an IP address alone listens on Cloudflare's HTTP ports
    /// (80, 8080, 8880, 2052, 2082, 2086, 2095).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Vec<String>,
    /// Edge HTTPS address (repeatable); an IP address alone listens on Cloudflare's HTTPS ports
    /// (443, 2053, 2083, 2087, 2096, 8443).
    #[arg(long, value_name = "ADDR")]
    pub https_listen: Vec<String>,
    /// IPv4 address answered for proxied records (repeatable).
    #[arg(long, value_name = "IP")]
    pub edge_ipv4: Vec<Ipv4Addr>,
    /// IPv6 address answered for proxied records (repeatable).
    #[arg(long, value_name = "IP")]
    pub edge_ipv6: Vec<Ipv6Addr>,
    /// Nameserver host name assigned to every zone (repeatable).
    #[arg(long = "nameserver", value_name = "NAME")]
    pub nameservers: Vec<String>,
    /// How zones become active: when delegated to our nameservers, or at once.
    #[arg(long, value_enum)]
    pub activation: Option<ActivationFlag>,
    /// DNS responses per second per client prefix and response kind; 0 turns rate limiting off [default: 20]
    #[arg(long, value_name = "N")]
    pub dns_rrl_rate: Option<u32>,
    /// Recursive resolver for apex CNAME targets outside Parapet's zones [default: the system's]
    #[arg(long, value_name = "HOST:PORT")]
    pub resolver: Option<String>,
    /// Ask this server for parent-zone delegations instead of finding them via the system resolver.
    #[arg(long, value_name = "HOST:PORT")]
    pub parent_ns: Option<String>,
    /// ACME directory URL for automatic certificates; "" turns them off [default: Let's Encrypt]
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Take over the listening sockets of the parapet running on this data directory, without
    /// dropping a connection; it finishes its requests and exits.
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActivationFlag {
    Nameservers,
    Auto,
}

/// The resolved configuration of `serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub dns_listen: Vec<SocketAddr>,
    pub http_listen: Vec<SocketAddr>,
    pub https_listen: Vec<SocketAddr>,
    /// The edge addresses that an IP given alone stood for (its port set), while loading.
    pub edge_port_sets: Vec<SocketAddr>,
    pub edge_ipv4: Vec<Ipv4Addr>,
    pub edge_ipv6: Vec<Ipv6Addr>,
    pub nameservers: Vec<String>,
    pub activation: ActivationFlag,
    pub parent_ns: Option<SocketAddr>,
    /// First background activation re-check interval (doubles while a zone stays pending).
    pub activation_interval: Duration,
    /// Largest DNS response over UDP with EDNS.
    pub dns_udp_payload: u16,
    /// Recursive resolver for flattening apex CNAMEs to names outside Parapet's zones.
    pub resolver: Option<SocketAddr>,
    /// Edge: time to connect to an origin (then 522) and to wait for its answer (then 524).
    pub edge_connect_timeout: Duration,
    pub edge_read_timeout: Duration,
    /// Edge: how long a request body may go without a byte arriving (then the request ends).
    pub edge_body_timeout: Duration,
    /// Edge: largest request body accepted (then 413).
    pub edge_max_body_bytes: u64,
    /// Edge: open connections allowed per client address (IPv6: per /64); 0: no limit.
    pub edge_max_connections_per_ip: u32,
    /// Edge: networks no origin may be in, whatever records, origin rules or resolvers say
    /// (error 1002); the edge's own addresses are refused too (error 1000).
    pub origin_denied_networks: Vec<parapet_edge::route::Network>,
    /// Edge: worker threads, each with its own sockets, connections and origin pools (as
    /// nginx's `worker_processes`); `None`: one per core.
    pub edge_workers: Option<usize>,
    /// Edge cache: bytes of objects kept in memory (with `cache_disk_bytes` 0 too: nothing is
    /// cached).
    pub cache_memory_bytes: usize,
    /// Edge cache: bytes of objects kept on disk (under `cache_dir`); 0: memory only.
    pub cache_disk_bytes: u64,
    /// Edge cache: the disk tier's directory (default: `cache` in the data directory).
    pub cache_dir: Option<PathBuf>,
    /// Edge cache: the largest response stored (larger ones than the memory tier takes are
    /// written to disk as they arrive).
    pub cache_max_object_bytes: u64,
    /// Edge cache: cache rules by zone name (`[[cache_rules]]`), applied before the zone's
    /// rules from the API (which win where both set something).
    pub cache_rules: std::collections::BTreeMap<String, Vec<parapet_model::rules::CompiledRule>>,
    /// Edge: extra roots (PEM) that origins' certificates may chain to in `strict` mode,
    /// besides the system's.
    pub origin_ca_file: Option<PathBuf>,
    /// Edge: the client certificate and key (PEM) presented to origins of zones with
    /// Authenticated Origin Pulls (default: made in the data directory on first start).
    pub origin_pull_certificate: Option<PathBuf>,
    pub origin_pull_key: Option<PathBuf>,
    /// Automatic certificates for proxied names (with HTTPS listeners): the ACME directory
    /// (`None`: off), a PEM root for its HTTPS, and a contact e-mail.
    pub acme_directory: Option<String>,
    pub acme_ca_file: Option<PathBuf>,
    pub acme_email: Option<String>,
    /// The longest one ACME order may take (a CA that stalls is given up on, and retried later).
    pub acme_order_timeout: Duration,
    /// DNS response rate limit per client prefix and response kind (0: off).
    pub dns_rrl_rate: u32,
    /// Every n-th rate-limited response is sent truncated instead of dropped (0: drop all).
    pub dns_rrl_slip: u32,
    /// DNS cookie secrets: the first makes server cookies, all are accepted (a rollover). Empty:
    /// one made on first start and kept in the data directory.
    pub dns_cookie_secrets: Vec<[u8; 16]>,
    /// The most DNS records a zone may hold (a change that would go past it is refused).
    pub max_records_per_zone: usize,
    /// The name this node gives when asked which it is (CH TXT `id.server` and
    /// `hostname.bind`, the NSID option): nodes behind one anycast address told apart.
    /// `None`: not said (REFUSED, no NSID).
    pub dns_identity: Option<String>,
}

/// The ports Cloudflare proxies HTTP on: an edge listen address given without a port takes
/// them all.
pub const HTTP_PORTS: [u16; 7] = [80, 8080, 8880, 2052, 2082, 2086, 2095];
/// The ports Cloudflare proxies HTTPS on.
pub const HTTPS_PORTS: [u16; 6] = [443, 2053, 2083, 2087, 2096, 8443];

/// Reads an edge listen address: `IP:PORT` (`[IPv6]:PORT`) is that one address, and an IP
/// alone (`IPv6` bare or in brackets) is that IP on each of `ports`.
pub fn listen_addresses(s: &str, ports: &[u16]) -> Result<Vec<SocketAddr>, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(s);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(ports.iter().map(|&p| SocketAddr::new(ip, p)).collect()),
        Err(_) => Err(format!(
            "'{s}' is not an address such as \"127.0.0.1:8081\" or an IP alone (every port \
             Cloudflare proxies)"
        )),
    }
}

/// Whether edge address `edge` would take the port of the API's `api`: the same IP, a wildcard
/// of the same family, or an API on the IPv6 wildcard (which takes IPv4 too, as the API binds
/// it; the edge binds IPv6 alone).
fn overlaps(edge: SocketAddr, api: SocketAddr) -> bool {
    let dual_api = api.is_ipv6() && api.ip().is_unspecified();
    edge.port() == api.port()
        && (edge.ip() == api.ip()
            || dual_api
            || (edge.is_ipv4() == api.is_ipv4()
                && (edge.ip().is_unspecified() || api.ip().is_unspecified())))
}

/// Expands edge listen entries; the addresses an IP alone stood for are noted in `from_sets`.
fn edge_listen(
    items: &[String],
    ports: &[u16],
    key: &str,
    from_sets: &mut Vec<SocketAddr>,
    errors: &mut Vec<String>,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    // An address named outright is not one a port set stood for, even if a set holds it too.
    let named: Vec<SocketAddr> = items.iter().filter_map(|i| i.parse().ok()).collect();
    for item in items {
        match listen_addresses(item, ports) {
            Ok(addrs) => {
                if item.parse::<SocketAddr>().is_err() {
                    from_sets.extend(addrs.iter().filter(|a| !named.contains(a)));
                }
                for a in addrs {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) => errors.push(format!("{key}: {e}")),
        }
    }
    out
}

/// Leaves to the API any edge port that an IP alone stood for and the API listens on too,
/// with a notice. One named outright stays, and the start reports the clash.
fn leave_api_port(c: &mut Config) {
    let (api, sets) = (c.api_listen, std::mem::take(&mut c.edge_port_sets));
    for list in [&mut c.http_listen, &mut c.https_listen] {
        list.retain(|&a| {
            let clash = sets.contains(&a) && overlaps(a, api);
            if clash {
                eprintln!("parapet: edge port {a} left to the API, which listens on {api}");
            }
            !clash
        });
    }
}

pub const DEFAULT_NAMESERVERS: [&str; 2] = ["ns1.parapet.localhost", "ns2.parapet.localhost"];

impl Config {
    /// The settings in effect (file and flags together), as a configuration file that says
    /// them, which `serve --config` reads back to the same settings. The DNS cookie secrets and
    /// the cache rules are left out: the caller says how many there are.
    pub fn effective_toml(&self) -> String {
        use toml::Value;
        let text = |s: &str| Value::String(s.to_owned());
        let list =
            |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
        let addresses = |a: &[SocketAddr]| list(a.iter().map(ToString::to_string).collect());
        let number = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let duration = |d: Duration| {
            Value::String(if d.subsec_nanos() == 0 {
                format!("{}s", d.as_secs())
            } else {
                humantime::format_duration(d).to_string()
            })
        };
        let path = |p: &std::path::Path| Value::String(p.display().to_string());
        let mut t = toml::Table::new();
        let mut put = |key: &str, value: Value| {
            t.insert(key.to_owned(), value);
        };
        put("data_dir", path(&self.data_dir));
        put("api_listen", text(&self.api_listen.to_string()));
        put("dns_listen", addresses(&self.dns_listen));
        put("dns_udp_payload", number(self.dns_udp_payload.into()));
        put("dns_rrl_rate", number(self.dns_rrl_rate.into()));
        put("dns_rrl_slip", number(self.dns_rrl_slip.into()));
        put(
            "max_records_per_zone",
            number(self.max_records_per_zone as u64),
        );
        if let Some(identity) = &self.dns_identity {
            put("dns_identity", text(identity));
        }
        put("http_listen", addresses(&self.http_listen));
        put("https_listen", addresses(&self.https_listen));
        put(
            "edge_ipv4",
            list(self.edge_ipv4.iter().map(ToString::to_string).collect()),
        );
        put(
            "edge_ipv6",
            list(self.edge_ipv6.iter().map(ToString::to_string).collect()),
        );
        put("nameservers", list(self.nameservers.clone()));
        let activation = match self.activation {
            ActivationFlag::Nameservers => "nameservers",
            ActivationFlag::Auto => "auto",
        };
        put("activation", text(activation));
        if let Some(parent) = self.parent_ns {
            put("parent_ns", text(&parent.to_string()));
        }
        put("activation_interval", duration(self.activation_interval));
        if let Some(resolver) = self.resolver {
            put("resolver", text(&resolver.to_string()));
        }
        put(
            "acme_directory",
            text(self.acme_directory.as_deref().unwrap_or("")),
        );
        if let Some(file) = &self.acme_ca_file {
            put("acme_ca_file", path(file));
        }
        if let Some(email) = &self.acme_email {
            put("acme_email", text(email));
        }
        put("acme_order_timeout", duration(self.acme_order_timeout));
        if let Some(file) = &self.origin_ca_file {
            put("origin_ca_file", path(file));
        }
        if let (Some(certificate), Some(key)) =
            (&self.origin_pull_certificate, &self.origin_pull_key)
        {
            put("origin_pull_certificate", path(certificate));
            put("origin_pull_key", path(key));
        }
        put("edge_connect_timeout", duration(self.edge_connect_timeout));
        put("edge_read_timeout", duration(self.edge_read_timeout));
        put("edge_body_timeout", duration(self.edge_body_timeout));
        put("edge_max_body_bytes", number(self.edge_max_body_bytes));
        put(
            "edge_max_connections_per_ip",
            number(self.edge_max_connections_per_ip.into()),
        );
        put(
            "origin_denied_networks",
            list(
                self.origin_denied_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
        );
        if let Some(workers) = self.edge_workers {
            put("edge_workers", number(workers as u64));
        }
        put("cache_memory_bytes", number(self.cache_memory_bytes as u64));
        put("cache_disk_bytes", number(self.cache_disk_bytes));
        if let Some(dir) = &self.cache_dir {
            put("cache_dir", path(dir));
        }
        put(
            "cache_max_object_bytes",
            number(self.cache_max_object_bytes),
        );
        t.to_string()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./parapet-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dns_listen: Vec::new(),
            http_listen: Vec::new(),
            https_listen: Vec::new(),
            edge_port_sets: Vec::new(),
            edge_ipv4: Vec::new(),
            edge_ipv6: Vec::new(),
            nameservers: DEFAULT_NAMESERVERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            activation: ActivationFlag::Nameservers,
            parent_ns: None,
            activation_interval: Duration::from_secs(60),
            dns_udp_payload: 1232,
            resolver: None,
            edge_connect_timeout: Duration::from_secs(15),
            edge_read_timeout: Duration::from_secs(100),
            edge_body_timeout: Duration::from_secs(60),
            edge_max_body_bytes: 100_000_000,
            edge_max_connections_per_ip: 1024,
            origin_denied_networks: parapet_edge::route::OriginPolicy::default().denied,
            edge_workers: None,
            cache_memory_bytes: 256 * 1024 * 1024,
            cache_disk_bytes: 10 * 1024 * 1024 * 1024,
            cache_dir: None,
            cache_max_object_bytes: 512 * 1024 * 1024,
            cache_rules: std::collections::BTreeMap::new(),
            dns_rrl_rate: 20,
            dns_rrl_slip: 2,
            dns_cookie_secrets: Vec::new(),
            dns_identity: None,
            max_records_per_zone: 2_000_000,
            origin_ca_file: None,
            origin_pull_certificate: None,
            origin_pull_key: None,
            acme_directory: Some(parapet_tls::acme::LETS_ENCRYPT.to_owned()),
            acme_ca_file: None,
            acme_email: None,
            acme_order_timeout: Duration::from_secs(180),
        }
    }
}

/// The most edge worker threads a configuration may ask for.
const MAX_EDGE_WORKERS: usize = 1024;

const KEYS: &[&str] = &[
    "data_dir",
    "api_listen",
    "dns_listen",
    "http_listen",
    "https_listen",
    "edge_ipv4",
    "edge_ipv6",
    "nameservers",
    "activation",
    "parent_ns",
    "activation_interval",
    "dns_udp_payload",
    "dns_rrl_rate",
    "dns_rrl_slip",
    "dns_cookie_secrets",
    "dns_identity",
    "max_records_per_zone",
    "resolver",
    "edge_connect_timeout",
    "edge_read_timeout",
    "edge_body_timeout",
    "edge_max_body_bytes",
    "edge_max_connections_per_ip",
    "origin_denied_networks",
    "edge_workers",
    "cache_memory_bytes",
    "cache_disk_bytes",
    "cache_dir",
    "cache_max_object_bytes",
    "cache_rules",
    "origin_ca_file",
    "origin_pull_certificate",
    "origin_pull_key",
    "acme_directory",
    "acme_ca_file",
    "acme_email",
    "acme_order_timeout",
];

/// `[[cache_rules]]`: `zone`, `expression` (default `"true"`), `description`, and
/// `action_parameters` as the API's `set_cache_settings` takes them. Compiled here, so that a
/// mistake stops the start with every problem listed.
fn cache_rules(
    items: &[toml::Value],
) -> Result<std::collections::BTreeMap<String, Vec<parapet_model::rules::CompiledRule>>, Vec<String>>
{
    use parapet_model::rules::{CACHE_PHASE, Ruleset};
    const KEYS: &[&str] = &["zone", "expression", "description", "action_parameters"];
    let mut errors = Vec::new();
    let mut by_zone: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("cache_rules[{i}]");
        let Some(table) = item.as_table() else {
            errors.push(format!("{at}: must be a table"));
            continue;
        };
        for key in table.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            errors.push(format!(
                "{at}: unknown key '{key}' (known: {})",
                KEYS.join(", ")
            ));
        }
        let zone = match table.get("zone").and_then(toml::Value::as_str) {
            Some(z) => match normalize(z, NameKind::Zone, "") {
                Ok(z) => z,
                Err(e) => {
                    errors.push(format!("{at}.zone: {e}"));
                    continue;
                }
            },
            None => {
                errors.push(format!("{at}.zone: must be a zone name"));
                continue;
            }
        };
        let mut rule = serde_json::json!({
            "expression": table.get("expression").and_then(toml::Value::as_str).unwrap_or("true"),
            "action": "set_cache_settings",
            "action_parameters": table
                .get("action_parameters")
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or_else(|| serde_json::json!({})),
        });
        if let Some(d) = table.get("description").and_then(toml::Value::as_str) {
            rule["description"] = serde_json::json!(d);
        }
        by_zone.entry(zone).or_default().push(rule);
    }
    let mut compiled = std::collections::BTreeMap::new();
    for (zone, rules) in by_zone {
        let body = serde_json::json!({ "rules": rules });
        match Ruleset::from_json("config", CACHE_PHASE, &body, None, "").and_then(|r| r.compile()) {
            Ok(rules) => {
                compiled.insert(zone, rules);
            }
            Err(e) => errors.push(format!("cache_rules of zone {zone}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// Resolves `HOST:PORT` (a literal address, or a name through the system resolver).
pub fn resolve_host_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("'{s}' has no address"))
}

fn check_nameservers(names: &[String], errors: &mut Vec<String>, origin: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        match normalize(n, NameKind::Target, origin) {
            Ok(n) if n.contains('.') => out.push(n),
            Ok(_) => errors.push(format!(
                "{origin}: '{n}' must be a fully qualified host name"
            )),
            Err(e) => errors.push(e.to_string()),
        }
    }
    out
}

/// Parses a configuration file's text over the defaults, reporting every error.
pub fn parse_file(text: &str, base: Config) -> Result<Config, Vec<String>> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![e.to_string()])?;
    let mut c = base;
    let mut errors = Vec::new();
    for (key, value) in &table {
        let want = |kind: &str| format!("{key}: must be {kind}");
        let string = || value.as_str().map(str::to_owned);
        let list = || -> Option<Vec<String>> {
            value
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        fn addrs<T: std::str::FromStr>(
            items: Vec<String>,
            key: &str,
            errors: &mut Vec<String>,
        ) -> Vec<T> {
            items
                .into_iter()
                .filter_map(|s| match s.parse() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        errors.push(format!("{key}: '{s}' is not a valid address"));
                        None
                    }
                })
                .collect()
        }
        match key.as_str() {
            "data_dir" => match string() {
                Some(s) if !s.is_empty() => c.data_dir = PathBuf::from(s),
                _ => errors.push(want("a directory path")),
            },
            "api_listen" => match string().map(|s| s.parse::<SocketAddr>()) {
                Some(Ok(a)) => c.api_listen = a,
                _ => errors.push(want("an address such as \"127.0.0.1:8080\"")),
            },
            "dns_listen" => match list() {
                Some(items) => c.dns_listen = addrs::<SocketAddr>(items, key, &mut errors),
                None => errors.push(want("a list of addresses such as [\"127.0.0.1:53\"]")),
            },
            "http_listen" | "https_listen" => match list() {
                Some(items) => {
                    let (sets, errors) = (&mut c.edge_port_sets, &mut errors);
                    if key == "http_listen" {
                        c.http_listen = edge_listen(&items, &HTTP_PORTS, key, sets, errors);
                    } else {
                        c.https_listen = edge_listen(&items, &HTTPS_PORTS, key, sets, errors);
                    }
                }
                None => errors.push(want(
                    "a list of addresses such as [\"127.0.0.1:80\"], or IPs alone",
                )),
            },
            "edge_ipv4" => match list() {
                Some(items) => c.edge_ipv4 = addrs(items, key, &mut errors),
                None => errors.push(want("a list of IPv4 addresses")),
            },
            "edge_ipv6" => match list() {
                Some(items) => c.edge_ipv6 = addrs(items, key, &mut errors),
                None => errors.push(want("a list of IPv6 addresses")),
            },
            "nameservers" => match list() {
                Some(items) if !items.is_empty() => {
                    c.nameservers = check_nameservers(&items, &mut errors, key)
                }
                _ => errors.push(want("a non-empty list of host names")),
            },
            "activation" => match string().as_deref() {
                Some("nameservers") => c.activation = ActivationFlag::Nameservers,
                Some("auto") => c.activation = ActivationFlag::Auto,
                _ => errors.push(want("\"nameservers\" or \"auto\"")),
            },
            "parent_ns" => match string().map(|s| resolve_host_port(&s)) {
                Some(Ok(a)) => c.parent_ns = Some(a),
                Some(Err(e)) => errors.push(format!("{key}: {e}")),
                None => errors.push(want("\"HOST:PORT\"")),
            },
            "activation_interval" => match string().map(|s| humantime::parse_duration(&s)) {
                Some(Ok(d)) if d >= Duration::from_secs(1) => c.activation_interval = d,
                _ => errors.push(want("a duration of at least 1s, such as \"60s\"")),
            },
            "dns_udp_payload" => match value.as_integer().and_then(|n| u16::try_from(n).ok()) {
                Some(n) if n >= 512 => c.dns_udp_payload = n,
                _ => errors.push(want("a UDP payload size from 512 to 65535")),
            },
            "dns_rrl_rate" | "dns_rrl_slip" => {
                match value.as_integer().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if key == "dns_rrl_rate" => c.dns_rrl_rate = n,
                    Some(n) => c.dns_rrl_slip = n,
                    None => errors.push(want("a whole number, 0 or more")),
                }
            }
            "max_records_per_zone" => {
                match value.as_integer().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n >= 1 => c.max_records_per_zone = n,
                    _ => errors.push(want("a whole number, 1 or more")),
                }
            }
            "dns_identity" => match value.as_str() {
                Some(id)
                    if (1..=255).contains(&id.len())
                        && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
                {
                    c.dns_identity = Some(id.to_owned())
                }
                _ => errors.push(want(
                    "1 to 255 printable ASCII characters, such as \"edge-ams-1\"",
                )),
            },
            "dns_cookie_secrets" => {
                let secrets: Option<Vec<[u8; 16]>> = list()
                    .and_then(|items| items.iter().map(|s| parapet_dns::parse_secret(s)).collect());
                match secrets {
                    Some(secrets) if (1..=4).contains(&secrets.len()) => {
                        c.dns_cookie_secrets = secrets
                    }
                    _ => errors.push(want(
                        "a list of 1 to 4 secrets of 32 hexadecimal digits (the first makes cookies)",
                    )),
                }
            }
            "resolver" => match string().map(|s| resolve_host_port(&s)) {
                Some(Ok(a)) => c.resolver = Some(a),
                Some(Err(e)) => errors.push(format!("{key}: {e}")),
                None => errors.push(want("\"HOST:PORT\"")),
            },
            "edge_connect_timeout" | "edge_read_timeout" | "edge_body_timeout" => {
                match string().map(|s| humantime::parse_duration(&s)) {
                    Some(Ok(d)) if d >= Duration::from_millis(100) => match key.as_str() {
                        "edge_connect_timeout" => c.edge_connect_timeout = d,
                        "edge_read_timeout" => c.edge_read_timeout = d,
                        _ => c.edge_body_timeout = d,
                    },
                    _ => errors.push(want("a duration of at least 100ms, such as \"15s\"")),
                }
            }
            "edge_max_body_bytes" => match value.as_integer().and_then(|n| u64::try_from(n).ok()) {
                Some(n) if n > 0 => c.edge_max_body_bytes = n,
                _ => errors.push(want("a positive number of bytes")),
            },
            "cache_memory_bytes" => {
                match value.as_integer().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) => c.cache_memory_bytes = n,
                    _ => errors.push(want("a number of bytes (0: nothing in memory)")),
                }
            }
            "cache_disk_bytes" => match value.as_integer().and_then(|n| u64::try_from(n).ok()) {
                Some(n) => c.cache_disk_bytes = n,
                _ => errors.push(want("a number of bytes (0: no disk tier)")),
            },
            "cache_max_object_bytes" => {
                match value.as_integer().and_then(|n| u64::try_from(n).ok()) {
                    Some(n) if n > 0 => c.cache_max_object_bytes = n,
                    _ => errors.push(want("a positive number of bytes")),
                }
            }
            "cache_rules" => match value.as_array() {
                Some(items) => match cache_rules(items) {
                    Ok(rules) => c.cache_rules = rules,
                    Err(mut e) => errors.append(&mut e),
                },
                None => errors.push(want("an array of tables ([[cache_rules]])")),
            },
            "cache_dir" => match string() {
                Some(s) if !s.is_empty() => c.cache_dir = Some(PathBuf::from(s)),
                _ => errors.push(want("a directory path")),
            },
            "edge_workers" => match value.as_integer().and_then(|n| usize::try_from(n).ok()) {
                Some(n @ 1..=MAX_EDGE_WORKERS) => c.edge_workers = Some(n),
                _ => errors.push(want(&format!(
                    "a number of worker threads from 1 to {MAX_EDGE_WORKERS}"
                ))),
            },
            "edge_max_connections_per_ip" => {
                match value.as_integer().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => c.edge_max_connections_per_ip = n,
                    _ => errors.push(want("a number of connections (0: no limit)")),
                }
            }
            "origin_denied_networks" => match list() {
                Some(items) => {
                    let mut networks = Vec::new();
                    for item in items {
                        match item.parse() {
                            Ok(n) => networks.push(n),
                            Err(e) => errors.push(format!("{key}: {e}")),
                        }
                    }
                    c.origin_denied_networks = networks;
                }
                None => errors.push(want("a list of networks such as [\"10.0.0.0/8\"]")),
            },
            "origin_ca_file" | "origin_pull_certificate" | "origin_pull_key" => match string() {
                Some(s) if !s.is_empty() => {
                    let path = Some(PathBuf::from(s));
                    match key.as_str() {
                        "origin_ca_file" => c.origin_ca_file = path,
                        "origin_pull_certificate" => c.origin_pull_certificate = path,
                        _ => c.origin_pull_key = path,
                    }
                }
                _ => errors.push(want("a file path")),
            },
            "acme_directory" => match string() {
                Some(s) if s.is_empty() => c.acme_directory = None,
                Some(s) if s.starts_with("https://") || s.starts_with("http://") => {
                    c.acme_directory = Some(s)
                }
                _ => errors.push(want("an https:// directory URL, or \"\" for no ACME")),
            },
            "acme_ca_file" => match string() {
                Some(s) if !s.is_empty() => c.acme_ca_file = Some(PathBuf::from(s)),
                _ => errors.push(want("a file path")),
            },
            "acme_order_timeout" => match string().map(|s| humantime::parse_duration(&s)) {
                Some(Ok(d)) if d >= Duration::from_secs(1) => c.acme_order_timeout = d,
                _ => errors.push(want("a duration of at least 1s, such as \"180s\"")),
            },
            "acme_email" => match string() {
                Some(s) if s.contains('@') && !s.contains(char::is_whitespace) => {
                    c.acme_email = Some(s)
                }
                _ => errors.push(want("an e-mail address")),
            },
            _ => errors.push(format!(
                "{key}: unknown key (known keys: {})",
                KEYS.join(", ")
            )),
        }
    }
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(errors)
    }
}

/// The configuration of `serve`: defaults, then the file, then the flags.
pub fn load(flags: &ServeFlags) -> anyhow::Result<Config> {
    let mut c = Config::default();
    if let Some(path) = &flags.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --config {}", path.display()))?;
        c = parse_file(&text, c).map_err(|errors| {
            anyhow::anyhow!(
                "{} has {} error(s):\n  {}",
                path.display(),
                errors.len(),
                errors.join("\n  ")
            )
        })?;
    }
    let mut errors = Vec::new();
    if let Some(d) = &flags.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(a) = flags.api_listen {
        c.api_listen = a;
    }
    if !flags.dns_listen.is_empty() {
        c.dns_listen = flags.dns_listen.clone();
    }
    if !flags.http_listen.is_empty() {
        c.edge_port_sets.retain(|a| !HTTP_PORTS.contains(&a.port()));
        let (items, sets) = (&flags.http_listen, &mut c.edge_port_sets);
        c.http_listen = edge_listen(items, &HTTP_PORTS, "--http-listen", sets, &mut errors);
    }
    if !flags.https_listen.is_empty() {
        c.edge_port_sets
            .retain(|a| !HTTPS_PORTS.contains(&a.port()));
        let (items, sets) = (&flags.https_listen, &mut c.edge_port_sets);
        c.https_listen = edge_listen(items, &HTTPS_PORTS, "--https-listen", sets, &mut errors);
    }
    match flags.acme_directory.as_deref() {
        Some("") => c.acme_directory = None,
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            c.acme_directory = Some(url.to_owned())
        }
        Some(url) => errors.push(format!("--acme-directory: '{url}' is not an http(s) URL")),
        None => {}
    }
    if c.origin_pull_certificate.is_some() != c.origin_pull_key.is_some() {
        errors.push(
            "origin_pull_certificate and origin_pull_key go together: give both or neither".into(),
        );
    }
    if !flags.edge_ipv4.is_empty() {
        c.edge_ipv4 = flags.edge_ipv4.clone();
    }
    if !flags.edge_ipv6.is_empty() {
        c.edge_ipv6 = flags.edge_ipv6.clone();
    }
    if !flags.nameservers.is_empty() {
        c.nameservers = check_nameservers(&flags.nameservers, &mut errors, "--nameserver");
    }
    if let Some(r) = flags.dns_rrl_rate {
        c.dns_rrl_rate = r;
    }
    if let Some(a) = flags.activation {
        c.activation = a;
    }
    if let Some(r) = &flags.resolver {
        match resolve_host_port(r) {
            Ok(a) => c.resolver = Some(a),
            Err(e) => errors.push(format!("--resolver: {e}")),
        }
    }
    if let Some(p) = &flags.parent_ns {
        match resolve_host_port(p) {
            Ok(a) => c.parent_ns = Some(a),
            Err(e) => errors.push(format!("--parent-ns: {e}")),
        }
    }
    c.nameservers.dedup();
    leave_api_port(&mut c);
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(c)
}

/// An address is loopback or unspecified: used to warn about edge addresses nobody can reach.
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(http: &[&str], https: &[&str]) -> ServeFlags {
        ServeFlags {
            http_listen: http.iter().map(|s| (*s).to_owned()).collect(),
            https_listen: https.iter().map(|s| (*s).to_owned()).collect(),
            ..ServeFlags::default()
        }
    }

    #[test]
    fn an_edge_ip_alone_stands_for_cloudflares_ports_but_the_apis() {
        let c = load(&flags(
            &["192.0.2.1", "[2001:db8::1]", "127.0.0.1"],
            &["::1"],
        ))
        .expect("valid");
        let http: Vec<String> = c.http_listen.iter().map(ToString::to_string).collect();
        assert_eq!(http.len(), 7 + 7 + 6, "{http:?}");
        assert_eq!(http[0], "192.0.2.1:80");
        assert!(http.contains(&"[2001:db8::1]:2095".to_owned()));
        // 127.0.0.1:8080 is the API's.
        assert!(!http.contains(&"127.0.0.1:8080".to_owned()), "{http:?}");
        assert!(http.contains(&"127.0.0.1:8880".to_owned()));
        assert_eq!(c.https_listen.len(), 6);
        assert_eq!(c.https_listen[0].to_string(), "[::1]:443");
        assert!(c.edge_port_sets.is_empty());

        // A wildcard overlaps the API's address too; an address named outright is kept.
        let c = load(&flags(&["0.0.0.0", "127.0.0.1:8080"], &[])).expect("valid");
        assert!(
            !c.http_listen
                .contains(&"0.0.0.0:8080".parse().expect("addr"))
        );
        assert!(
            c.http_listen
                .contains(&"127.0.0.1:8080".parse().expect("addr"))
        );

        let err = load(&flags(&["www.example.com", "127.0.0.1:99999"], &[])).expect_err("bad");
        let text = err.to_string();
        assert!(text.contains("--http-listen: 'www.example.com'"), "{text}");
        assert!(text.contains("'127.0.0.1:99999'"), "{text}");

        let c = parse_file(
            "http_listen = [\"127.0.0.7\", \"127.0.0.8:81\"]\n",
            Config::default(),
        )
        .expect("valid");
        assert_eq!(c.http_listen.len(), 8);
    }

    #[test]
    fn an_address_named_outright_stays_and_the_ipv6_wildcard_api_takes_ipv4_too() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let c = load(&flags(&["127.0.0.1", "127.0.0.1:8080"], &[])).expect("valid");
        assert!(c.http_listen.contains(&addr("127.0.0.1:8080")));
        let mut both = flags(&["0.0.0.0"], &[]);
        both.api_listen = Some(addr("[::]:8080"));
        let c = load(&both).expect("valid");
        assert!(!c.http_listen.contains(&addr("0.0.0.0:8080")));
        assert!(c.http_listen.contains(&addr("0.0.0.0:8880")));
        // The edge binds IPv6 alone: its IPv6 wildcard keeps a port an IPv4 API holds.
        let c = load(&flags(&["::"], &[])).expect("valid");
        assert!(c.http_listen.contains(&addr("[::]:8080")));
    }

    #[test]
    fn the_settings_in_effect_read_back_as_the_same_settings() {
        let text = "data_dir = \"/tmp/p q\"\napi_listen = \"127.0.0.1:9000\"\nnameservers = [\"ns1.example.net\"]\nactivation = \"auto\"\nparent_ns = \"127.0.0.1:5353\"\nactivation_interval = \"90s\"\ndns_identity = \"edge \\\"one\\\"\"\nedge_read_timeout = \"1500ms\"\nedge_workers = 3\norigin_denied_networks = [\"10.0.0.0/8\", \"::1\"]\nacme_directory = \"\"\ncache_disk_bytes = 0\n";
        let mut flags = flags(&["127.0.0.1"], &[]);
        flags.dns_listen = vec!["127.0.0.1:5300".parse().expect("addr")];
        let path =
            std::env::temp_dir().join(format!("parapet-effective-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write");
        flags.config = Some(path.clone());
        let mut loaded = load(&flags).expect("valid");
        let _ = std::fs::remove_file(&path);
        let printed = loaded.effective_toml();
        let mut again = parse_file(&printed, Config::default()).expect(&printed);
        // (Which addresses an IP given alone stood for is known while loading only.)
        loaded.edge_port_sets.clear();
        again.edge_port_sets.clear();
        assert_eq!(again, loaded, "{printed}");
        assert!(
            printed.contains("edge_read_timeout = \"1s 500ms\""),
            "{printed}"
        );
    }

    #[test]
    fn every_file_error_is_reported_at_once() {
        let text = "api_listen = \"nowhere\"\nbogus = 1\nactivation = \"sometimes\"\nedge_ipv4 = [\"1.2.3.999\"]\n";
        let errors = parse_file(text, Config::default()).expect_err("invalid");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("bogus: unknown key")));
    }

    #[test]
    fn valid_file_overrides_defaults() {
        let text = "data_dir = \"/tmp/p\"\napi_listen = \"127.0.0.1:9000\"\nnameservers = [\"NS1.Example.net.\", \"ns2.example.net\"]\nactivation = \"auto\"\nparent_ns = \"127.0.0.1:5353\"\nactivation_interval = \"2s\"\n";
        let c = parse_file(text, Config::default()).expect("valid");
        assert_eq!(c.api_listen.port(), 9000);
        assert_eq!(c.nameservers, ["ns1.example.net", "ns2.example.net"]);
        assert_eq!(c.activation, ActivationFlag::Auto);
        assert_eq!(c.activation_interval, Duration::from_secs(2));
    }

    #[test]
    fn a_dns_identity_is_printable_text_of_a_txt_strings_length() {
        assert_eq!(Config::default().dns_identity, None);
        let c = parse_file("dns_identity = \"edge-ams-1\"\n", Config::default()).expect("valid");
        assert_eq!(c.dns_identity.as_deref(), Some("edge-ams-1"));
        for bad in [
            "\"\"",
            "\"tab\\there\"",
            "7",
            &format!("\"{}\"", "x".repeat(256)),
        ] {
            let errors = parse_file(&format!("dns_identity = {bad}\n"), Config::default())
                .expect_err("invalid");
            assert!(errors[0].starts_with("dns_identity"), "{bad}: {errors:?}");
        }
    }

    #[test]
    fn dns_cookie_secrets_are_read_as_hexadecimal_and_mistakes_named() {
        assert!(Config::default().dns_cookie_secrets.is_empty());
        let text = "dns_cookie_secrets = [\"e5e973e5a6b2a43f48e7dc849e37bfcf\", \"dd3bdf9344b678b185a6f5cb60fca715\"]\n";
        let c = parse_file(text, Config::default()).expect("valid");
        assert_eq!(c.dns_cookie_secrets.len(), 2);
        assert_eq!(c.dns_cookie_secrets[0][0], 0xe5);
        for bad in ["[]", "[\"e5e9\"]", "\"e5e973e5a6b2a43f48e7dc849e37bfcf\""] {
            let errors = parse_file(&format!("dns_cookie_secrets = {bad}\n"), Config::default())
                .expect_err(bad);
            assert!(
                errors.join("\n").contains("dns_cookie_secrets"),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn edge_workers_are_one_per_core_unless_set_within_bounds() {
        assert_eq!(Config::default().edge_workers, None);
        let c = parse_file("edge_workers = 3\n", Config::default()).expect("valid");
        assert_eq!(c.edge_workers, Some(3));
        for bad in ["0", "-1", "1025", "\"auto\""] {
            let errors = parse_file(&format!("edge_workers = {bad}\n"), Config::default())
                .expect_err("out of bounds");
            assert!(errors[0].starts_with("edge_workers: must be"), "{errors:?}");
        }
    }

    #[test]
    fn cache_rules_are_compiled_per_zone_and_mistakes_listed() {
        let text = r#"
[[cache_rules]]
zone = "Example.COM."
expression = 'http.request.uri.path.extension eq "html"'
action_parameters = { cache = true, edge_ttl = { mode = "override_origin", default = 60 } }

[[cache_rules]]
zone = "example.com"
description = "everything else respects the origin"
"#;
        let c = parse_file(text, Config::default()).expect("valid");
        assert_eq!(c.cache_rules.len(), 1);
        assert_eq!(c.cache_rules["example.com"].len(), 2);

        let bad = r#"
[[cache_rules]]
zone = "example.com"
expression = 'http.cookie eq "x"'
action_parameters = { edge_ttl = { mode = "sometimes" } }

[[cache_rules]]
zone = "not a zone"
colour = "blue"
"#;
        let errors = parse_file(bad, Config::default()).expect_err("invalid");
        let all = errors.join("\n");
        for says in [
            "cache_rules[1].zone",
            "unknown key 'colour'",
            "cache_rules of zone example.com",
        ] {
            assert!(all.contains(says), "{says} missing from {all}");
        }
    }

    #[test]
    fn the_record_quota_is_a_whole_number_of_at_least_one() {
        assert_eq!(Config::default().max_records_per_zone, 2_000_000);
        let c = parse_file("max_records_per_zone = 3500\n", Config::default()).expect("valid");
        assert_eq!(c.max_records_per_zone, 3500);
        for bad in ["0", "-1", "\"many\""] {
            let errors = parse_file(
                &format!("max_records_per_zone = {bad}\n"),
                Config::default(),
            )
            .expect_err(bad);
            assert!(
                errors[0].starts_with("max_records_per_zone: must be"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn shipped_example_config_parses() {
        let text = include_str!("../parapet.example.toml");
        parse_file(text, Config::default()).expect("example config is valid");
    }
}
