//! Automatic certificates end to end, against Debian's `pebble` ACME server on loopback: a
//! proxied name gets a certificate by DNS-01 answered by Parapet's own DNS, a newly proxied
//! name (and a wildcard) gets one without a restart, and a CA that fails leaves a clear state
//! in the API while uploaded certificates keep serving.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parapet_testkit::http::{curl_https, start_origin};
use parapet_testkit::{Node, NodeOptions, eventually, free_port};
use parapet_tls::certgen::{Authority, Usage};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

struct Pebble {
    child: Child,
    directory: String,
    management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts pebble on loopback with a certificate from `roots`, validating DNS-01 against `dns`,
/// HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of the names' addresses.
fn start_pebble(
    dir: &Path,
    roots: &Authority,
    dns: std::net::SocketAddr,
    http_port: u16,
    tls_port: u16,
) -> Pebble {
    let (port, management) = (free_port(), free_port());
    let tls = roots
        .issue(&["127.0.0.1".to_owned()], 30, Usage::Server)
        .expect("pebble certificate");
    std::fs::write(dir.join("pebble-cert.pem"), &tls.cert_pem).expect("write");
    std::fs::write(dir.join("pebble-key.pem"), &tls.key_pem).expect("write");
    let config = json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).expect("write");
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config_path)
        .arg("-dnsserver")
        .arg(dns.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble is installed (apt-get install pebble)");
    let pebble = Pebble {
        child,
        directory: format!("https://127.0.0.1:{port}/dir"),
        management,
    };
    eventually(Duration::from_secs(10), "pebble to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    pebble
}

/// Pebble's root for the certificates it issues (random on every start).
fn pebble_root(pebble: &Pebble, dir: &Path) -> PathBuf {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5"])
        .arg(format!("https://127.0.0.1:{}/roots/0", pebble.management))
        .output()
        .expect("curl");
    let path = dir.join("pebble-root.pem");
    std::fs::write(&path, &out.stdout).expect("write");
    path
}

/// The certificate pack of `host` in zone `zone`.
fn pack(node: &Node, zone: &str, host: &str) -> Option<Value> {
    let packs = node.ok("GET", &format!("/zones/{zone}/ssl/certificate_packs"), None);
    packs
        .as_array()?
        .iter()
        .find(|p| p["hosts"][0] == host)
        .cloned()
}

#[test]
fn proxied_names_get_certificates_from_the_ca_by_dns01_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = Authority::new("Test ACME Roots", 30).expect("roots");
    let roots_file = dir.path().join("acme-roots.pem");
    std::fs::write(&roots_file, &roots.cert_pem).expect("write");
    let (http, https) = (free_port(), free_port());
    let _origin = start_origin("127.0.0.2", https);
    // Pebble asks the node's DNS server for the challenge records and the names' addresses
    // (the edge's: 127.0.0.1), where it checks HTTP-01 and TLS-ALPN-01 answers.
    let dns = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let pebble = start_pebble(dir.path(), &roots, dns, http, https);
    let node = Node::start(
        NodeOptions::new(BIN)
            .args([
                "--activation",
                "auto",
                "--edge-ipv4",
                "127.0.0.1",
                "--dns-listen",
                &dns.to_string(),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
                "--https-listen",
                &format!("127.0.0.1:{https}"),
                "--acme-directory",
                &pebble.directory,
            ])
            .config(format!("acme_ca_file = \"{}\"\n", roots_file.display())),
    );
    let zone = node.create_zone("shop.test");
    node.proxied_a(&zone, "www.shop.test", "127.0.0.2");
    eventually(Duration::from_secs(60), "a certificate for www", || {
        pack(&node, &zone, "www.shop.test").is_some_and(|p| p["status"] == "active")
    });
    let root = pebble_root(&pebble, dir.path());
    let (status, head, _) = curl_https(https, "www.shop.test", &root, &[]);
    assert_eq!(status, 200, "{head}");
    let www = pack(&node, &zone, "www.shop.test").expect("pack");
    assert_eq!(www["certificates"][0]["hosts"], json!(["www.shop.test"]));
    assert!(www["certificates"][0]["expires_on"].is_string(), "{www}");

    // New proxied names, a wildcard among them, get theirs without a restart. The challenge
    // records are changes of the zone: its serial moves on with them (for its secondaries).
    node.proxied_a(&zone, "new.shop.test", "127.0.0.2");
    node.proxied_a(&zone, "*.shop.test", "127.0.0.2");
    let serial = || {
        let out = std::process::Command::new("dig")
            .args(["+short", "SOA", "shop.test", "@127.0.0.1", "-p"])
            .arg(dns.port().to_string())
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let before = serial();
    eventually(
        Duration::from_secs(60),
        "certificates for the new names",
        || {
            curl_https(https, "new.shop.test", &root, &[]).0 == 200
                && curl_https(https, "any.shop.test", &root, &[]).0 == 200
        },
    );
    assert_eq!(
        pack(&node, &zone, "*.shop.test").expect("wildcard pack")["status"],
        "active"
    );
    assert!(before > 0);
    assert!(serial() > before, "the serial stayed at {before}");
    // HTTP-01 and TLS-ALPN-01, when the zone asks for them.
    for (method, name) in [
        ("http-01", "web.shop.test"),
        ("tls-alpn-01", "alpn.shop.test"),
    ] {
        node.ok(
            "PATCH",
            &format!("/zones/{zone}/settings/acme_challenge"),
            Some(json!({"value": method})),
        );
        node.proxied_a(&zone, name, "127.0.0.2");
        eventually(
            Duration::from_secs(60),
            &format!("{method} for {name}"),
            || pack(&node, &zone, name).is_some_and(|p| p["status"] == "active"),
        );
    }

    // The challenge records are gone from DNS once the orders are done.
    let challenges = node
        .call("GET", &format!("/zones/{zone}/dns_records?type=TXT"), None)
        .1;
    assert_eq!(challenges["result"], json!([]), "{challenges}");
}

#[test]
fn a_failing_ca_is_reported_and_uploaded_certificates_keep_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let https = free_port();
    let _origin = start_origin("127.0.0.2", https);
    // Nothing listens at this directory: every order fails.
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--https-listen",
        &format!("127.0.0.1:{https}"),
        "--acme-directory",
        &dead,
    ]));
    let zone = node.create_zone("shop.test");
    node.proxied_a(&zone, "www.shop.test", "127.0.0.2");
    node.proxied_a(&zone, "api.shop.test", "127.0.0.2");
    let ca = Authority::new("Upload Roots", 30).expect("ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).expect("write");
    let upload = ca
        .issue(&["api.shop.test".to_owned()], 30, Usage::Server)
        .expect("cert");
    node.ok(
        "POST",
        &format!("/zones/{zone}/custom_certificates"),
        Some(json!({"certificate": upload.cert_pem, "private_key": upload.key_pem})),
    );
    eventually(
        Duration::from_secs(30),
        "the failure to be reported",
        || {
            pack(&node, &zone, "www.shop.test").is_some_and(|p| {
                p["status"] == "pending_validation"
                    && p["validation_errors"][0]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("registering with"))
                    && p["next_attempt_on"].is_string()
            })
        },
    );
    assert!(
        pack(&node, &zone, "api.shop.test").is_none(),
        "a name an upload covers needs no automatic certificate"
    );
    assert_eq!(curl_https(https, "api.shop.test", &ca_file, &[]).0, 200);
    assert_eq!(
        curl_https(https, "www.shop.test", &ca_file, &[]).0,
        0,
        "no certificate yet: a clean handshake failure"
    );
}

#[test]
fn a_ca_that_stalls_is_given_up_on_and_reported() {
    let https = free_port();
    // Accepts connections and never answers.
    let ca_port = free_port();
    parapet_testkit::http::start_silent_origin("127.0.0.1", ca_port);
    let node = Node::start(
        NodeOptions::new(BIN)
            .args([
                "--activation",
                "auto",
                "--https-listen",
                &format!("127.0.0.1:{https}"),
                "--acme-directory",
                &format!("https://127.0.0.1:{ca_port}/dir"),
            ])
            .config("acme_order_timeout = \"2s\"\n"),
    );
    let zone = node.create_zone("shop.test");
    node.proxied_a(&zone, "www.shop.test", "127.0.0.2");
    eventually(Duration::from_secs(20), "the stall to be reported", || {
        pack(&node, &zone, "www.shop.test").is_some_and(|p| {
            p["status"] == "pending_validation"
                && p["validation_errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("did not finish within 2s"))
        })
    });
    // The API still answers while the CA stalls.
    assert!(node.call("GET", "/zones", None).0 == 200);
}
