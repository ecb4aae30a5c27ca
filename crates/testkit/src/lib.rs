//! Test kit: start a real `parapet` process on `127.0.0.1:0`, talk to its API, and start real
//! peers (Knot) on loopback, so that an end-to-end test reads like a spec. Every process
//! started here is killed by PID when its handle drops. Panics are the point: this is for tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod dns;
pub mod h2;
pub mod http;
pub mod zones;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `parapet serve`.
pub struct Node {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    /// Lines printed on stdout before the ready line (e.g. the bootstrap token).
    pub banner: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
    _config_dir: Option<tempfile::TempDir>,
    agent: ureq::Agent,
}

/// How to start a node.
pub struct NodeOptions {
    pub binary: PathBuf,
    pub data_dir: Option<PathBuf>,
    pub args: Vec<String>,
    /// `Some` sets `PARAPET_API_TOKEN`.
    pub env_token: Option<String>,
    /// A configuration file's text, passed with `--config`.
    pub config: Option<String>,
    /// `PARAPET_LOG` (default `warn`).
    pub log: Option<String>,
    /// A file the node's standard error goes to (default: the test's).
    pub stderr: Option<PathBuf>,
}

impl NodeOptions {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            data_dir: None,
            args: Vec::new(),
            env_token: Some(random_token()),
            config: None,
            log: None,
            stderr: None,
        }
    }

    /// Starts the node with this `PARAPET_LOG`.
    pub fn log(mut self, filter: impl Into<String>) -> Self {
        self.log = Some(filter.into());
        self
    }

    /// Sends the node's standard error to the file at `path`.
    pub fn stderr_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr = Some(path.into());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, items: I) -> Self {
        self.args.extend(items.into_iter().map(Into::into));
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Starts the node with this configuration file (TOML).
    pub fn config(mut self, toml: impl Into<String>) -> Self {
        self.config = Some(toml.into());
        self
    }

    pub fn env_token(mut self, token: Option<String>) -> Self {
        self.env_token = token;
        self
    }
}

pub fn random_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-token-{nanos:x}-{}", std::process::id())
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl Node {
    pub fn start(options: NodeOptions) -> Self {
        let (tmp, data_dir) = match options.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(&options.binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--api-listen")
            .arg("127.0.0.1:0");
        let config_dir = options.config.as_ref().map(|text| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("parapet.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(&path);
            dir
        });
        cmd.args(&options.args);
        cmd.env_remove("PARAPET_API_TOKEN");
        if let Some(t) = &options.env_token {
            cmd.env("PARAPET_API_TOKEN", t);
        }
        cmd.env("PARAPET_LOG", options.log.as_deref().unwrap_or("warn"));
        let stderr = match &options.stderr {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("stderr file")),
            None => Stdio::inherit(),
        };
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("start parapet");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("parapet: api listening on ") {
                        break url.trim().to_owned();
                    }
                    banner.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "parapet exited before it was ready ({status:?}); stdout: {banner:?} (its stderr is above)"
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("parapet did not become ready within 30 s; stdout so far: {banner:?}");
                }
            }
        };
        let token = options.env_token.clone().unwrap_or_else(|| {
            banner
                .iter()
                .find_map(|l| l.strip_prefix("parapet: PARAPET_API_TOKEN="))
                .map(str::to_owned)
                .unwrap_or_default()
        });
        Self {
            child: Some(child),
            base,
            token,
            data_dir,
            banner,
            _tmp: tmp,
            _config_dir: config_dir,
            agent: agent(),
        }
    }

    /// The value of an unlabelled counter or gauge on the node's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(&format!("{}/metrics", self.base))
            .call()
            .expect("metrics")
            .into_body()
            .read_to_string()
            .expect("body");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `/client/v4` URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/client/v4{path}", self.base)
    }

    /// Calls the API with the node's token; returns the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call_with(&self.agent, method, &self.url(path), &self.token, body)
    }

    /// Calls the API with another token.
    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call_with(&self.agent, method, &self.url(path), token, body)
    }

    /// The DNS address the node printed (`--dns-listen 127.0.0.1:0`).
    pub fn dns_addr(&self) -> SocketAddr {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix("parapet: dns listening on "))
            .expect("node started with --dns-listen")
            .parse()
            .unwrap()
    }

    /// Calls a path outside `/client/v4` (such as `/parapet/status`) with the node's token.
    pub fn call_path(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call_with(
            &self.agent,
            method,
            &format!("{}{path}", self.base),
            &self.token,
            body,
        )
    }

    /// A call that must succeed; returns `result`.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        assert_eq!(v["success"], Value::Bool(true), "{method} {path}: {v}");
        v["result"].clone()
    }

    /// Adds a proxied A record `name` → `ip` to zone `zone_id`.
    pub fn proxied_a(&self, zone_id: &str, name: &str, ip: &str) {
        self.ok(
            "POST",
            &format!("/zones/{zone_id}/dns_records"),
            Some(serde_json::json!({"type": "A", "name": name, "content": ip, "proxied": true})),
        );
    }

    /// Creates a zone and returns its id.
    pub fn create_zone(&self, name: &str) -> String {
        self.ok("POST", "/zones", Some(serde_json::json!({"name": name})))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own (at most `within`).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut()?;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (at most 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("parapet did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn call_with(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    try_call_with(agent, method, url, token, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`call_with`], but a connection failure is an `Err` (for tests that kill the server).
pub fn try_call_with(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let auth = format!("Bearer {token}");
    let response = match method {
        "GET" => agent.get(url).header("Authorization", &auth).call(),
        "DELETE" => agent.delete(url).header("Authorization", &auth).call(),
        "PUT" => agent
            .put(url)
            .header("Authorization", &auth)
            .send_json(body.unwrap_or(Value::Null)),
        "PATCH" => agent
            .patch(url)
            .header("Authorization", &auth)
            .send_json(body.unwrap_or(Value::Null)),
        _ => agent
            .post(url)
            .header("Authorization", &auth)
            .send_json(body.unwrap_or(Value::Null)),
    };
    let mut response = response.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Imports a zone file through the API (multipart, as Cloudflare clients send it); returns the body.
pub fn import_zone(node: &Node, zone_id: &str, text: &str) -> Value {
    let boundary = "parapet-testkit-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"zone.txt\"\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let mut response = node
        .agent
        .post(&node.url(&format!("/zones/{zone_id}/dns_records/import")))
        .header("Authorization", &format!("Bearer {}", node.token))
        .header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .send(body.as_bytes())
        .unwrap();
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

/// The zone exported as a BIND file through the API.
pub fn export_zone(node: &Node, zone_id: &str) -> String {
    let mut response = node
        .agent
        .get(&node.url(&format!("/zones/{zone_id}/dns_records/export")))
        .header("Authorization", &format!("Bearer {}", node.token))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.body_mut().read_to_string().unwrap()
}

/// A UDP and TCP port on 127.0.0.1 (and TCP on 127.0.0.2, where origins listen) that was free a
/// moment ago (for servers that cannot be given port 0, like knotd). Taken below the system's
/// ephemeral range when there is room: a port from that range can be taken at any moment by an
/// outgoing connection (another test's, to an origin on 127.0.0.2), and an origin then fails to
/// bind it.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = ephemeral_low.saturating_sub(10_000) >= 2_000;
    loop {
        let port = if below {
            let spread = u64::from(ephemeral_low - 10_000);
            let n = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
            10_000 + (n % spread) as u16
        } else {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.local_addr().unwrap().port()
        };
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.2", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `within` passes.
pub fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real Knot DNS server on loopback serving one zone from a file the test controls.
pub struct Knot {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    zone: String,
}

fn knotd() -> Option<PathBuf> {
    ["/usr/sbin/knotd", "/usr/bin/knotd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Knot serving `provider.test`, a DNS provider other than Parapet: `app.provider.test` is
/// 127.0.0.2 (TTL 60); `missing.provider.test` does not exist. For `--resolver`.
pub fn other_provider() -> Knot {
    assert!(
        Knot::available(),
        "knotd is required (install Debian's knot; .ci/run does)"
    );
    Knot::start(
        "provider.test",
        "$ORIGIN provider.test.\n$TTL 300\n@ SOA ns.provider.test. h.provider.test. 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\napp 60 A 127.0.0.2\n",
    )
}

impl Knot {
    /// Whether Knot is installed (`.ci/run` installs it).
    pub fn available() -> bool {
        knotd().is_some()
    }

    /// Starts knotd serving `zone` (e.g. `test`) with `zone_text`.
    pub fn start(zone: &str, zone_text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("zone.db"), zone_text).unwrap();
        let conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\ndatabase:\n    storage: {d}\ncontrol:\n    listen: {d}/knot.sock\nlog:\n  - target: stderr\n    any: warning\nzone:\n  - domain: {zone}.\n    file: {d}/zone.db\n    storage: {d}\n    zonefile-load: whole\n    journal-content: none\n"
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let child = Command::new(knotd().expect("knotd installed"))
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start knotd");
        let knot = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            zone: zone.to_owned(),
        };
        knot.wait_serial(None);
        knot
    }

    /// Starts knotd as a secondary of `zone`, transferring from `primary` with the TSIG key
    /// `(name, base64 secret)` and accepting NOTIFY from it. Logs go to a file ([`Knot::log`]).
    pub fn start_secondary(zone: &str, primary: SocketAddr, key: (&str, &str)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let (key_name, secret) = key;
        let conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\ndatabase:\n    storage: {d}\ncontrol:\n    listen: {d}/knot.sock\nlog:\n  - target: {d}/knot.log\n    any: info\nkey:\n  - id: {key_name}\n    algorithm: hmac-sha256\n    secret: {secret}\nremote:\n  - id: primary\n    address: {}@{}\n    key: {key_name}\nacl:\n  - id: from_primary\n    address: {}\n    action: notify\n    key: {key_name}\nzone:\n  - domain: {zone}.\n    master: primary\n    acl: from_primary\n    storage: {d}\n    zonefile-sync: -1\n    journal-content: changes\n",
            primary.ip(),
            primary.port(),
            primary.ip()
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let child = Command::new(knotd().expect("knotd installed"))
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start knotd");
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            zone: zone.to_owned(),
        }
    }

    /// Knot's log, for secondaries started with [`Knot::start_secondary`].
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    /// The zone's SOA serial as Knot serves it, if it serves the zone.
    pub fn serial(&self) -> Option<u32> {
        let out = Command::new("kdig")
            .arg(format!("@{}", self.addr.ip()))
            .arg("-p")
            .arg(self.addr.port().to_string())
            .args(["+short", "+time=1", "+retry=0"])
            .arg(format!("{}.", self.zone))
            .arg("SOA")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("knot.conf")
    }

    /// Replaces the zone's contents (the text must carry a higher SOA serial) and waits until
    /// Knot serves `serial`.
    pub fn set_zone(&self, zone_text: &str, serial: u32) {
        std::fs::write(self.dir.path().join("zone.db"), zone_text).unwrap();
        let status = Command::new("knotc")
            .arg("-c")
            .arg(self.conf())
            .arg("zone-reload")
            .arg(format!("{}.", self.zone))
            .stdout(Stdio::null())
            .status()
            .expect("knotc");
        assert!(status.success(), "knotc zone-reload failed");
        self.wait_serial(Some(serial));
    }

    /// Waits until Knot answers the zone's SOA (with `serial`, if given).
    fn wait_serial(&self, serial: Option<u32>) {
        eventually(Duration::from_secs(15), "knot to serve the zone", || {
            let out = Command::new("kdig")
                .arg(format!("@{}", self.addr.ip()))
                .arg("-p")
                .arg(self.addr.port().to_string())
                .arg("+short")
                .arg("+time=1")
                .arg("+retry=0")
                .arg(format!("{}.", self.zone))
                .arg("SOA")
                .output();
            let Ok(out) = out else { return false };
            let text = String::from_utf8_lossy(&out.stdout);
            match serial {
                None => !text.trim().is_empty(),
                Some(s) => text.split_whitespace().nth(2) == Some(&s.to_string()),
            }
        });
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
