//! The commands that talk to a running Parapet through its REST API: readable tables for
//! people, `--json` for scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Base URL of a running Parapet's API (the token comes from PARAPET_API_TOKEN).
    #[arg(
        long,
        env = "PARAPET_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ZoneCommand {
    /// List zones.
    List {
        /// Only the zone of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only zones in this status (active, pending, ...).
        #[arg(long)]
        status: Option<String>,
    },
    /// Create a zone: pending until its nameservers are Parapet's (active at once when the
    /// server runs with `--activation auto`).
    Create {
        /// The zone's name, e.g. example.com.
        name: String,
    },
    /// Delete a zone and all its records.
    #[command(alias = "rm")]
    Delete {
        /// The zone's name.
        name: String,
    },
    /// Import a BIND zone file; creates the zone if needed. Nothing is imported unless every line is good.
    Import {
        /// The zone file to read.
        file: PathBuf,
        /// Zone name [default: the SOA's owner, else the first $ORIGIN but ".", else the file name]
        #[arg(long)]
        zone: Option<String>,
        /// Proxy the file's A/AAAA/CNAME records (unless a cf_tags comment says otherwise).
        #[arg(long)]
        proxied: bool,
    },
    /// Print a zone as a BIND zone file (`--json` changes nothing here).
    Export {
        /// The zone's name.
        name: String,
    },
    /// Check the zone's delegation now.
    Check {
        /// The zone's name.
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RecordCommand {
    /// List a zone's records.
    List {
        /// The zone's name.
        zone: String,
        /// Only records of this type (A, MX, ...).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only records at this name: relative to the zone (`www`, `@`) or whole.
        #[arg(long)]
        name: Option<String>,
    },
    /// Add a record, e.g. `parapet record add example.com A www 192.0.2.1 --proxied`.
    Add {
        /// The zone's name.
        zone: String,
        /// The record's type: A, AAAA, CNAME, MX, TXT, ...
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Its name: relative to the zone (`www`, `@` for the zone itself) or whole.
        name: String,
        /// Its content, as Cloudflare's API takes it (an address, a target name, a text).
        content: String,
        /// Seconds, or 1 for automatic.
        #[arg(long, default_value_t = 1)]
        ttl: u32,
        /// Answer with the edge's addresses and proxy HTTP to the content (A, AAAA, CNAME).
        #[arg(long)]
        proxied: bool,
        /// Priority (MX, SRV, URI).
        #[arg(long)]
        priority: Option<u16>,
        /// A note kept with the record.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Change a record by id: only the fields given.
    Edit {
        /// The zone's name.
        zone: String,
        /// The record's id (see `record list`).
        id: String,
        /// A new name (relative to the zone, or whole).
        #[arg(long)]
        name: Option<String>,
        /// New content.
        #[arg(long)]
        content: Option<String>,
        /// New TTL: seconds, or 1 for automatic.
        #[arg(long)]
        ttl: Option<u32>,
        /// Proxied or not: true or false.
        #[arg(long)]
        proxied: Option<bool>,
        /// New priority (MX, SRV, URI).
        #[arg(long)]
        priority: Option<u16>,
        /// A new note (empty: none).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove a record by id.
    #[command(alias = "delete")]
    Rm {
        /// The zone's name.
        zone: String,
        /// The record's id (see `record list`).
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create {
        /// A name to tell the token by in `token list`.
        #[arg(long)]
        name: String,
        /// all, zone-read, dns-edit, cache-purge or zone-settings-write.
        #[arg(long, default_value = "all")]
        permission: String,
        /// Limit the token to these zones (repeatable); default: every zone.
        #[arg(long = "zone")]
        zones: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id: it is refused from now on.
    #[command(alias = "rm")]
    Delete {
        /// The token's id (see `token list`).
        id: String,
    },
}

struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    json: bool,
}

/// Writes `text` to standard output. A reader that went away (`| head`) ends the program
/// quietly, as other command-line tools end; another failure ends it with the reason.
pub fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("parapet: writing to standard output: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

impl Client {
    fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        if !(args.api.starts_with("http://") || args.api.starts_with("https://")) {
            bail!(
                "--api must be a URL such as http://127.0.0.1:8080, not '{}'",
                args.api
            );
        }
        let token = std::env::var("PARAPET_API_TOKEN").ok().filter(|t| !t.is_empty()).context(
            "set PARAPET_API_TOKEN to an API token (serve prints one on first start; `parapet token create` makes more)",
        )?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        // The API's address, or its base URL as Cloudflare clients are given it.
        let api = args.api.trim_end_matches('/');
        let api = api.strip_suffix("/client/v4").unwrap_or(api);
        Ok(Self {
            base: format!("{api}/client/v4"),
            token,
            agent,
            json: args.json,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("PUT", b) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b.unwrap_or(json!({}))),
            ("PATCH", b) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(b.unwrap_or(json!({}))),
            (_, b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b.unwrap_or(json!({}))),
        };
        self.envelope(response, &url)
    }

    fn envelope(
        &self,
        response: Result<http::Response<ureq::Body>, ureq::Error>,
        url: &str,
    ) -> anyhow::Result<Value> {
        let mut response = response.with_context(|| {
            format!("cannot reach the API at {url} (is `parapet serve` running? see --api)")
        })?;
        let text = response
            .body_mut()
            .read_to_string()
            .context("reading the API response")?;
        let Ok(body) = serde_json::from_str::<Value>(&text) else {
            bail!(
                "{url} answered {} without JSON: is --api the address of Parapet's API (`api listening on` at start), not another server or the edge?",
                response.status()
            );
        };
        if body["success"] != json!(true) {
            let errors: Vec<String> = body["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            format!("{} ({})", e["message"].as_str().unwrap_or("?"), e["code"])
                        })
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "{}",
                if errors.is_empty() {
                    format!("the API answered {}", response.status())
                } else {
                    errors.join("\n")
                }
            );
        }
        Ok(body)
    }

    fn text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("cannot reach the API at {url}"))?;
        let text = response.body_mut().read_to_string()?;
        if !response.status().is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            bail!(
                "{}",
                body["errors"][0]["message"]
                    .as_str()
                    .unwrap_or("request failed")
            );
        }
        Ok(text)
    }

    /// Every page of a list.
    fn all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        for page in 1.. {
            let body = self.call("GET", &format!("{path}{sep}page={page}&per_page=100"), None)?;
            let items = body["result"].as_array().cloned().unwrap_or_default();
            out.extend(items);
            let pages = body["result_info"]["total_pages"].as_u64().unwrap_or(0);
            if page >= pages {
                break;
            }
        }
        Ok(out)
    }

    fn zone_id(&self, name: &str) -> anyhow::Result<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.find_zone(&name)?
            .with_context(|| format!("no zone named {name}"))
    }

    /// The id of the zone named `name`, `None` when there is none (an error when the API could
    /// not be asked).
    fn find_zone(&self, name: &str) -> anyhow::Result<Option<String>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let zones = self.all(&format!("/zones?name={}", encode(&name)))?;
        Ok(zones
            .first()
            .and_then(|z| z["id"].as_str())
            .map(str::to_owned))
    }

    fn print(&self, value: &Value, columns: &[(&str, &str)]) {
        if self.json {
            out(&format!("{value}\n"));
            return;
        }
        let rows: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|(_, key)| match &r[*key] {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        Value::Array(a) => a
                            .iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(","),
                        v => v.to_string(),
                    })
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cols: Vec<String>| {
            cols.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut table = line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
        for c in cells {
            table.push('\n');
            table.push_str(&line(c));
        }
        table.push('\n');
        out(&table);
    }
}

fn encode(s: &str) -> String {
    form_encode(s)
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const ZONE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("NAME SERVERS", "name_servers"),
];
const RECORD_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("TYPE", "type"),
    ("NAME", "name"),
    ("CONTENT", "content"),
    ("PRIORITY", "priority"),
    ("TTL", "ttl"),
    ("PROXIED", "proxied"),
];

/// `name` as a whole name in `zone`: `@` is the zone, a name ending in a dot or in the zone
/// is whole already, anything else is relative to the zone (as `record add` takes names).
fn whole_name(name: &str, zone: &str) -> String {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let lower = name.to_ascii_lowercase();
    if name == "@" {
        zone
    } else if let Some(whole) = lower.strip_suffix('.') {
        whole.to_owned()
    } else if lower == zone || lower.ends_with(&format!(".{zone}")) {
        lower
    } else {
        format!("{lower}.{zone}")
    }
}

/// The zone a file is for: its first `$ORIGIN`, else its file name without a `.zone`/`db.` wrapper.
fn zone_of_file(path: &std::path::Path, text: &str) -> Option<String> {
    // The SOA's owner (against the `$ORIGIN` at that line), else the first `$ORIGIN` other than
    // the root, else the file's name.
    let mut origin: Option<String> = None;
    let mut first_origin: Option<String> = None;
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.eq_ignore_ascii_case("$ORIGIN") {
            let o = words.next().map(|o| o.trim_end_matches('.').to_owned());
            if first_origin.is_none() {
                first_origin = o.clone().filter(|o| !o.is_empty());
            }
            origin = o;
            continue;
        }
        let starts_blank = line.starts_with([' ', '\t']);
        if !starts_blank
            && line
                .split_whitespace()
                .any(|w| w.eq_ignore_ascii_case("SOA"))
        {
            let owner = match (first, origin.as_deref()) {
                ("@", Some(o)) => o.to_owned(),
                (name, _) if name.ends_with('.') => name.trim_end_matches('.').to_owned(),
                (name, Some(o)) if !o.is_empty() => format!("{name}.{o}"),
                (name, _) => name.to_owned(),
            };
            if !owner.is_empty() && owner != "@" {
                return Some(owner.to_ascii_lowercase());
            }
        }
    }
    if first_origin.is_some() {
        return first_origin;
    }
    let name = path.file_name()?.to_str()?;
    let name = name.strip_prefix("db.").unwrap_or(name);
    let name = name
        .strip_suffix(".zone")
        .or_else(|| name.strip_suffix(".db"))
        .unwrap_or(name);
    Some(name.to_owned())
}

fn multipart(file: &str, proxied: bool) -> (String, Vec<u8>) {
    let boundary = format!("parapet-{}", parapet_model::ids::new_id());
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"zone.txt\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes());
    body.extend_from_slice(file.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"proxied\"\r\n\r\n{proxied}\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

pub fn zone(args: &ApiArgs, command: ZoneCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        ZoneCommand::List { name, status } => {
            let mut q = Vec::new();
            if let Some(n) = name {
                q.push(format!("name={}", encode(&n)));
            }
            if let Some(s) = status {
                q.push(format!("status={}", encode(&s)));
            }
            let path = if q.is_empty() {
                "/zones".to_owned()
            } else {
                format!("/zones?{}", q.join("&"))
            };
            c.print(&Value::Array(c.all(&path)?), ZONE_COLUMNS);
        }
        ZoneCommand::Create { name } => {
            let body = c.call("POST", "/zones", Some(json!({"name": name})))?;
            c.print(&body["result"], ZONE_COLUMNS);
        }
        ZoneCommand::Delete { name } => {
            let id = c.zone_id(&name)?;
            let body = c.call("DELETE", &format!("/zones/{id}"), None)?;
            c.print(&body["result"], &[("DELETED", "id")]);
        }
        ZoneCommand::Check { name } => {
            let id = c.zone_id(&name)?;
            c.call("PUT", &format!("/zones/{id}/activation_check"), None)?;
            let body = c.call("GET", &format!("/zones/{id}"), None)?;
            c.print(&body["result"], ZONE_COLUMNS);
        }
        ZoneCommand::Export { name } => {
            let id = c.zone_id(&name)?;
            out(&c.text(&format!("/zones/{id}/dns_records/export"))?);
        }
        ZoneCommand::Import {
            file,
            zone,
            proxied,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let name = zone
                .or_else(|| zone_of_file(&file, &text).filter(|n| n.contains('.')))
                .with_context(|| {
                    format!(
                        "cannot tell the zone of {}: it has no SOA and no $ORIGIN, and its file name is no domain; give --zone",
                        file.display()
                    )
                })?;
            // A zone made for this import goes again if the import fails: nothing is left
            // behind by a file that was refused.
            let (id, made) = match c.find_zone(&name)? {
                Some(id) => (id, false),
                None => {
                    let id = c.call("POST", "/zones", Some(json!({"name": name})))?["result"]["id"]
                        .as_str()
                        .map(str::to_owned)
                        .context("the API did not return the new zone's id")?;
                    (id, true)
                }
            };
            let (boundary, body) = multipart(&text, proxied);
            let url = format!("{}/zones/{id}/dns_records/import", c.base);
            let response = c
                .agent
                .post(&url)
                .header("Authorization", &format!("Bearer {}", c.token))
                .header(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )
                .send(&body[..]);
            let body = match c.envelope(response, &url) {
                Ok(body) => body,
                Err(e) if made => {
                    let removed = c.call("DELETE", &format!("/zones/{id}"), None);
                    return Err(e.context(match removed {
                        Ok(_) => {
                            format!("importing into {name} (the zone made for it was removed)")
                        }
                        Err(_) => format!("importing into {name} (the zone made for it remains)"),
                    }));
                }
                Err(e) => return Err(e),
            };
            c.print(
                &body["result"],
                &[("ADDED", "recs_added"), ("PARSED", "total_records_parsed")],
            );
        }
    }
    Ok(())
}

pub fn record(args: &ApiArgs, command: RecordCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        RecordCommand::List { zone, kind, name } => {
            let id = c.zone_id(&zone)?;
            let mut q = vec![];
            if let Some(k) = kind {
                q.push(format!("type={}", encode(&k)));
            }
            if let Some(n) = name {
                q.push(format!("name={}", encode(&whole_name(&n, &zone))));
            }
            let path = format!("/zones/{id}/dns_records?{}", q.join("&"));
            c.print(&Value::Array(c.all(&path)?), RECORD_COLUMNS);
        }
        RecordCommand::Add {
            zone,
            kind,
            name,
            content,
            ttl,
            proxied,
            priority,
            comment,
        } => {
            let id = c.zone_id(&zone)?;
            let mut body = json!({"type": kind, "name": name, "content": content, "ttl": ttl, "proxied": proxied, "comment": comment});
            if let Some(p) = priority {
                body["priority"] = json!(p);
            }
            let out = c.call("POST", &format!("/zones/{id}/dns_records"), Some(body))?;
            c.print(&out["result"], RECORD_COLUMNS);
        }
        RecordCommand::Edit {
            zone,
            id,
            name,
            content,
            ttl,
            proxied,
            priority,
            comment,
        } => {
            let zone_id = c.zone_id(&zone)?;
            let mut body = serde_json::Map::new();
            let fields = [
                ("name", name.map(|n| json!(n))),
                ("content", content.map(|v| json!(v))),
                ("ttl", ttl.map(|v| json!(v))),
                ("proxied", proxied.map(|v| json!(v))),
                ("priority", priority.map(|v| json!(v))),
                ("comment", comment.map(|v| json!(v))),
            ];
            for (field, value) in fields {
                if let Some(value) = value {
                    body.insert(field.to_owned(), value);
                }
            }
            if body.is_empty() {
                bail!(
                    "nothing to change: give --content, --name, --ttl, --proxied, --priority or --comment"
                );
            }
            let out = c.call(
                "PATCH",
                &format!("/zones/{zone_id}/dns_records/{}", encode(&id)),
                Some(Value::Object(body)),
            )?;
            c.print(&out["result"], RECORD_COLUMNS);
        }
        RecordCommand::Rm { zone, id } => {
            let zone_id = c.zone_id(&zone)?;
            let out = c.call(
                "DELETE",
                &format!("/zones/{zone_id}/dns_records/{}", encode(&id)),
                None,
            )?;
            c.print(&out["result"], &[("DELETED", "id")]);
        }
    }
    Ok(())
}

pub fn token(args: &ApiArgs, command: TokenCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        TokenCommand::Create {
            name,
            permission,
            zones,
        } => {
            let Some(p) = parapet_model::Permission::parse(&permission) else {
                bail!(
                    "--permission must be all, zone-read, dns-edit, cache-purge or zone-settings-write, not '{permission}'"
                );
            };
            let resources = if zones.is_empty() {
                json!({"com.cloudflare.api.account.zone.*": "*"})
            } else {
                let mut m = serde_json::Map::new();
                for z in &zones {
                    m.insert(
                        format!("com.cloudflare.api.account.zone.{}", c.zone_id(z)?),
                        json!("*"),
                    );
                }
                Value::Object(m)
            };
            let body = json!({"name": name, "policies": [{"effect": "allow", "resources": resources, "permission_groups": [{"name": p.group_name()}]}]});
            let created = c.call("POST", "/user/tokens", Some(body))?;
            if c.json {
                out(&format!("{}\n", created["result"]));
            } else {
                out(&format!(
                    "token {} created; its secret is shown only now:\n{}\n",
                    created["result"]["id"].as_str().unwrap_or("?"),
                    created["result"]["value"].as_str().unwrap_or("")
                ));
            }
        }
        TokenCommand::Delete { id } => {
            let out = c.call("DELETE", &format!("/user/tokens/{}", encode(&id)), None)?;
            c.print(&out["result"], &[("DELETED", "id")]);
        }
        TokenCommand::List => {
            let out = c.call("GET", "/user/tokens", None)?;
            c.print(
                &out["result"],
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("STATUS", "status"),
                    ("ISSUED", "issued_on"),
                ],
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_taken_relative_to_the_zone_unless_whole() {
        for (given, whole) in [
            ("www", "www.example.org"),
            ("@", "example.org"),
            ("WWW.Example.org", "www.example.org"),
            ("example.org", "example.org"),
            ("www.other.net.", "www.other.net"),
            ("a.b", "a.b.example.org"),
        ] {
            assert_eq!(whole_name(given, "example.org."), whole, "{given}");
        }
    }

    #[test]
    fn the_zone_of_a_file_is_its_soa_owner_then_its_origin_then_its_name() {
        let path = std::path::Path::new("/tmp/db.fallback.test");
        let bind = "$ORIGIN .\n$TTL 86400\nExample.com IN SOA ns1.example.com. h.example.com. 1 2 3 4 5\n$ORIGIN example.com.\nwww A 192.0.2.1\n";
        assert_eq!(zone_of_file(path, bind).as_deref(), Some("example.com"));
        let relative = "$ORIGIN example.org.\n@ 3600 IN SOA ns1 h 1 2 3 4 5 ; the SOA\n";
        assert_eq!(zone_of_file(path, relative).as_deref(), Some("example.org"));
        let no_soa = "$ORIGIN .\n$ORIGIN example.net.\nwww A 192.0.2.1\n";
        assert_eq!(zone_of_file(path, no_soa).as_deref(), Some("example.net"));
        assert_eq!(
            zone_of_file(path, "www A 192.0.2.1\n").as_deref(),
            Some("fallback.test")
        );
    }
}
