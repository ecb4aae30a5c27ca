//! HTTPS at the edge end to end: uploaded certificates are served by SNI without a restart,
//! over HTTP/1.1 and HTTP/2; zone settings choose TLS versions, redirects and HSTS; and each SSL
//! mode reaches the origin as Cloudflare's does. Visitors are curl; origins are real TLS servers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parapet_testkit::http::{curl, curl_https, lasting_fields, start_origin, start_tls_origin};
use parapet_testkit::{Node, NodeOptions, eventually, free_port};
use parapet_tls::certgen::{Authority, Issued, Usage};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn upload(node: &Node, zone: &str, issued: &Issued) -> (u16, serde_json::Value) {
    node.call(
        "POST",
        &format!("/zones/{zone}/custom_certificates"),
        Some(json!({"certificate": issued.cert_pem, "private_key": issued.key_pem})),
    )
}

fn set(node: &Node, zone: &str, setting: &str, value: serde_json::Value) {
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/settings/{setting}"),
        Some(json!({"value": value})),
    );
}

#[test]
fn uploaded_certificates_are_served_by_sni_over_http1_and_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, https) = (free_port(), free_port());
    let origin = start_origin("127.0.0.2", https);
    let _plain = start_origin("127.0.0.2", http);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--https-listen",
        &format!("127.0.0.1:{https}"),
        "--acme-directory",
        "",
    ]));
    let zone = node.create_zone("shop.test");
    node.proxied_a(&zone, "www.shop.test", "127.0.0.2");
    node.proxied_a(&zone, "api.shop.test", "127.0.0.2");
    let ca = Authority::new("Test Roots", 30).expect("ca");
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let leaf = ca
        .issue(&hosts(&["www.shop.test", "*.shop.test"]), 30, Usage::Server)
        .expect("leaf");

    // No certificate yet: the handshake fails cleanly.
    let (status, _, _) = curl_https(https, "www.shop.test", &ca_file, &[]);
    assert_eq!(status, 0, "no certificate, no handshake");

    // Bad uploads are refused with every problem named, and nothing is stored.
    let (status, body) = node.call(
        "POST",
        &format!("/zones/{zone}/custom_certificates"),
        Some(json!({"certificate": "garbage", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"})),
    );
    assert_eq!(status, 400, "{body}");
    let messages = body["errors"].to_string();
    assert!(
        messages.contains("certificate:") && messages.contains("private_key:"),
        "{body}"
    );
    // Cloudflare's codes: an unusable certificate 1002, an unusable key 2106.
    let codes: Vec<u64> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["code"].as_u64())
        .collect();
    assert!(codes.contains(&1002) && codes.contains(&2106), "{body}");
    let (status, body) = node.call(
        "POST",
        &format!("/zones/{zone}/custom_certificates"),
        Some(json!({"certificate": leaf.cert_pem,
            "private_key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("encrypted"), "{body}");
    let other_key = ca
        .issue(&hosts(&["www.shop.test"]), 30, Usage::Server)
        .expect("other");
    let (status, body) = upload(
        &node,
        &zone,
        &Issued {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: other_key.key_pem.clone(),
        },
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["code"], 2200, "{body}");
    assert!(body.to_string().contains("does not match"), "{body}");
    let foreign = ca
        .issue(&hosts(&["www.elsewhere.test"]), 30, Usage::Server)
        .expect("foreign");
    let (status, body) = upload(&node, &zone, &foreign);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("names no host of zone"), "{body}");
    assert_eq!(body["errors"][0]["code"], 2103, "{body}");
    let listed = node.ok("GET", &format!("/zones/{zone}/custom_certificates"), None);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    // A valid upload is served at once: HTTP/1.1 and HTTP/2, and the origin hears "https".
    let (status, body) = upload(&node, &zone, &leaf);
    assert_eq!(status, 200, "{body}");
    let cert_id = body["result"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        body["result"]["hosts"],
        json!(["*.shop.test", "www.shop.test"])
    );
    assert!(body["result"].get("private_key").is_none(), "{body}");
    eventually(
        Duration::from_secs(5),
        "the certificate to be served",
        || curl_https(https, "www.shop.test", &ca_file, &[]).0 == 200,
    );
    while origin.try_recv().is_ok() {}
    let (status, head, _) = curl_https(https, "www.shop.test", &ca_file, &["--http1.1"]);
    assert_eq!(status, 200, "{head}");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("origin got it")
        .to_ascii_lowercase();
    assert!(seen.contains("x-forwarded-proto: https"), "{seen}");
    assert!(
        seen.contains("cf-visitor: {\"scheme\":\"https\"}"),
        "{seen}"
    );
    let (status, head, _) = curl_https(https, "api.shop.test", &ca_file, &["--http2"]);
    assert_eq!(status, 200, "the wildcard covers api: {head}");
    assert!(head.starts_with("http/2 200"), "ALPN chose h2: {head}");

    // Names without a certificate, and no SNI at all, fail the handshake.
    let (status, _, _) = curl_https(https, "a.b.shop.test", &ca_file, &[]);
    assert_eq!(status, 0, "a wildcard covers one label only");
    let no_sni = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-k",
            "--max-time",
            "5",
        ])
        .arg(format!("https://127.0.0.1:{https}/"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&no_sni.stdout), "000");

    // A request for a host of another zone than the TLS connection was made for gets
    // Cloudflare's 1013, as 421 Misdirected Request (a browser asks again on a new
    // connection); names of one zone share connections.
    let other = node.create_zone("other.test");
    node.proxied_a(&other, "www.other.test", "127.0.0.2");
    let other_leaf = ca
        .issue(&hosts(&["www.other.test"]), 30, Usage::Server)
        .expect("other leaf");
    let (status, body) = upload(&node, &other, &other_leaf);
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(5),
        "the other zone's certificate",
        || curl_https(https, "www.other.test", &ca_file, &[]).0 == 200,
    );
    for version in ["--http1.1", "--http2"] {
        let fronted = [version, "-H", "Host: www.shop.test"];
        let (status, head, body) = curl_https(https, "www.other.test", &ca_file, &fronted);
        assert_eq!(status, 421, "{version}: {head}");
        assert!(body.contains("1013"), "{version}: {body}");
        let same_zone = [version, "-H", "Host: www.shop.test"];
        let (status, head, _) = curl_https(https, "api.shop.test", &ca_file, &same_zone);
        assert_eq!(status, 200, "{version}: {head}");
    }

    // Zone settings: TLS 1.3 minimum, HSTS, Always Use HTTPS.
    let (status, _, _) = curl_https(https, "www.shop.test", &ca_file, &["--tls-max", "1.2"]);
    assert_eq!(status, 200, "TLS 1.2 is allowed by default");
    set(&node, &zone, "min_tls_version", json!("1.3"));
    set(
        &node,
        &zone,
        "security_header",
        json!({"strict_transport_security": {"enabled": true, "max_age": 31536000, "include_subdomains": true, "nosniff": true}}),
    );
    set(&node, &zone, "always_use_https", json!("on"));
    eventually(Duration::from_secs(5), "TLS 1.2 to be refused", || {
        curl_https(https, "www.shop.test", &ca_file, &["--tls-max", "1.2"]).0 == 0
    });
    let hsts = |head: &str| {
        head.contains("strict-transport-security: max-age=31536000; includesubdomains")
            && head.contains("x-content-type-options: nosniff")
    };
    let (status, head, _) = curl_https(https, "www.shop.test", &ca_file, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(hsts(&head), "{head}");
    // The TLS 1.3 minimum holds for a handshake made for another zone's name, too.
    let (status, head, _) = curl_https(
        https,
        "www.other.test",
        &ca_file,
        &["--tls-max", "1.2", "-H", "Host: www.shop.test"],
    );
    assert_eq!(status, 421, "{head}");

    // A stored response over HTTPS: answered from memory without the HTTP engine, with the
    // zone's HSTS, as the engine answers it (`If-Match` sends a request there).
    node.ok(
        "PUT",
        &format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint"),
        Some(
            json!({"rules": [{"expression": "true", "action": "set_cache_settings",
            "action_parameters": {"cache": true,
                "edge_ttl": {"mode": "override_origin", "default": 60}}}]}),
        ),
    );
    let direct = || {
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("{}/metrics", node.base)])
            .output()
            .expect("curl metrics");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("parapet_edge_direct_hits_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("direct hits metric")
    };
    eventually(Duration::from_secs(5), "the rule in force", || {
        curl_https(https, "www.shop.test", &ca_file, &["--http1.1"])
            .1
            .contains("cf-cache-status: hit")
    });
    // Over HTTP/1.1 and HTTP/2 (ALPN): answered by the edge, HSTS included, as the engine
    // answers.
    for (version, status_line) in [("--http1.1", "http/1.1 200"), ("--http2", "http/2 200")] {
        let before = direct();
        let (status, head, body) = curl_https(https, "www.shop.test", &ca_file, &[version]);
        assert_eq!(direct(), before + 1, "{head}");
        assert!(head.starts_with(status_line), "{head}");
        let engine = [version, "-H", "If-Match: *"];
        let (status2, head2, body2) = curl_https(https, "www.shop.test", &ca_file, &engine);
        assert_eq!(direct(), before + 1, "{head2}");
        assert_eq!((status, status2), (200, 200));
        assert_eq!(lasting_fields(&head).0, lasting_fields(&head2).0);
        assert_eq!(body, body2);
        assert!(hsts(&head), "{head}");
    }
    node.ok(
        "PUT",
        &format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint"),
        Some(json!({"rules": []})),
    );

    let (status, head, _) = curl(http, "www.shop.test", &[]);
    assert_eq!(status, 301, "{head}");
    assert!(
        head.contains(&format!("location: https://www.shop.test:{https}/path?q=1")),
        "{head}"
    );
    assert!(
        !head.contains("strict-transport-security"),
        "no HSTS over plain HTTP: {head}"
    );

    // A new certificate replaces the old one without a restart; deleting it stops HTTPS.
    let second = Authority::new("Second Roots", 30).expect("ca");
    let second_file = write(dir.path(), "second.pem", &second.cert_pem);
    let renewed = second
        .issue(&hosts(&["www.shop.test"]), 30, Usage::Server)
        .expect("renewed");
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/custom_certificates/{cert_id}"),
        Some(json!({"certificate": renewed.cert_pem, "private_key": renewed.key_pem})),
    );
    eventually(Duration::from_secs(5), "the new certificate", || {
        curl_https(https, "www.shop.test", &second_file, &[]).0 == 200
    });
    assert_eq!(
        curl_https(https, "www.shop.test", &ca_file, &[]).0,
        0,
        "the old certificate is gone"
    );
    node.ok(
        "DELETE",
        &format!("/zones/{zone}/custom_certificates/{cert_id}"),
        None,
    );
    eventually(Duration::from_secs(5), "HTTPS to stop", || {
        curl_https(https, "www.shop.test", &second_file, &[]).0 == 0
    });
    let metrics = std::process::Command::new("curl")
        .args(["-s", &format!("{}/metrics", node.base)])
        .output()
        .expect("curl metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("parapet_edge_tls_handshakes_failed_total"),
        "{metrics}"
    );
}

#[test]
fn ssl_modes_reach_the_origin_as_cloudflare_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let roots = Authority::new("Origin Roots", 30).expect("ca");
    let roots_file = write(dir.path(), "origin-roots.pem", &roots.cert_pem);
    // 127.0.0.2: plain HTTP. 127.0.0.3: a certificate from the trusted roots. 127.0.0.4: a
    // self-signed certificate. 127.0.0.5 (below): requires the edge's client certificate.
    let plain = start_origin("127.0.0.2", port);
    let valid = roots
        .issue(&hosts(&["www.shop.test"]), 30, Usage::Server)
        .expect("valid");
    let trusted = start_tls_origin("127.0.0.3", port, &valid.cert_pem, &valid.key_pem, None);
    let selfsigned =
        parapet_tls::certgen::self_signed(&hosts(&["www.shop.test"]), 30).expect("self-signed");
    let _untrusted = start_tls_origin(
        "127.0.0.4",
        port,
        &selfsigned.cert_pem,
        &selfsigned.key_pem,
        None,
    );
    let node = Node::start(
        NodeOptions::new(BIN)
            .args([
                "--activation",
                "auto",
                "--https-listen",
                &format!("127.0.0.1:{port}"),
                "--acme-directory",
                "",
            ])
            .config(format!("origin_ca_file = \"{}\"\n", roots_file.display())),
    );
    let pull_ca = std::fs::read_to_string(node.data_dir.join("origin-pull/ca.pem"))
        .expect("the edge made its origin-pull CA");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(
            mode(node.data_dir.clone()),
            0o700,
            "the data dir holds private keys"
        );
        assert_eq!(mode(node.data_dir.join("origin-ca/key.pem")), 0o600);
        assert_eq!(mode(node.data_dir.join("origin-pull/key.pem")), 0o600);
    }
    let pulled = start_tls_origin(
        "127.0.0.5",
        port,
        &valid.cert_pem,
        &valid.key_pem,
        Some(&pull_ca),
    );
    let zone = node.create_zone("shop.test");
    let edge_ca = Authority::new("Edge Roots", 30).expect("ca");
    let edge_ca_file = write(dir.path(), "edge.pem", &edge_ca.cert_pem);
    let edge_cert = edge_ca
        .issue(&hosts(&["www.shop.test"]), 30, Usage::Server)
        .expect("edge cert");
    assert_eq!(upload(&node, &zone, &edge_cert).0, 200);
    let record = node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "127.0.0.2", "proxied": true})),
    );
    let record_id = record["id"].as_str().expect("id").to_owned();
    let point = |ip: &str| {
        node.ok(
            "PATCH",
            &format!("/zones/{zone}/dns_records/{record_id}"),
            Some(json!({"content": ip})),
        );
    };
    let get = || curl_https(port, "www.shop.test", &edge_ca_file, &[]);

    // flexible (the default): plain HTTP to the origin.
    eventually(
        Duration::from_secs(5),
        "flexible to reach the plain origin",
        || get().0 == 200,
    );
    assert!(plain.try_recv().is_ok());

    // full: TLS to the origin, any certificate.
    set(&node, &zone, "ssl", json!("full"));
    point("127.0.0.4");
    eventually(
        Duration::from_secs(5),
        "full to accept a self-signed origin",
        || get().0 == 200,
    );
    // strict: only a certificate that chains to a trusted root and names the host.
    set(&node, &zone, "ssl", json!("strict"));
    eventually(Duration::from_secs(5), "strict to refuse it", || {
        get().0 == 526
    });
    point("127.0.0.3");
    eventually(
        Duration::from_secs(5),
        "strict to accept a valid one",
        || get().0 == 200,
    );
    let seen = trusted
        .recv_timeout(Duration::from_secs(5))
        .expect("the trusted origin was reached");
    assert!(
        seen.head
            .to_ascii_lowercase()
            .contains("host: www.shop.test"),
        "{seen:?}"
    );
    assert!(
        !seen.client_certificate,
        "no client certificate unless asked"
    );
    // An origin rule's server name is what strict checks the certificate against.
    let rules = |rules: serde_json::Value| {
        node.ok(
            "PUT",
            &format!("/zones/{zone}/rulesets/phases/http_request_origin/entrypoint"),
            Some(json!({ "rules": rules })),
        );
    };
    rules(
        json!([{"expression": "http.host eq \"www.shop.test\"", "action": "route",
        "action_parameters": {"sni": {"value": "other.shop.test"}}}]),
    );
    eventually(Duration::from_secs(5), "another SNI to fail strict", || {
        get().0 == 526
    });
    rules(json!([]));
    eventually(Duration::from_secs(5), "the Host's name again", || {
        get().0 == 200
    });

    // Authenticated Origin Pulls: the origin demands the edge's client certificate.
    point("127.0.0.5");
    eventually(
        Duration::from_secs(5),
        "an origin that needs a client certificate to fail",
        || get().0 == 525,
    );
    set(&node, &zone, "tls_client_auth", json!("on"));
    eventually(
        Duration::from_secs(5),
        "the edge to present its certificate",
        || get().0 == 200,
    );
    let seen = pulled
        .recv_timeout(Duration::from_secs(5))
        .expect("reached");
    assert!(seen.client_certificate, "{seen:?}");

    // A zone's custom trust store: an origin certificate from a CA only this zone trusts.
    let zone_roots = Authority::new("Zone Trust CA", 30).expect("ca");
    let zone_signed = zone_roots
        .issue(&hosts(&["www.shop.test"]), 30, Usage::Server)
        .expect("cert");
    let _zone_trusted = start_tls_origin(
        "127.0.0.8",
        port,
        &zone_signed.cert_pem,
        &zone_signed.key_pem,
        None,
    );
    point("127.0.0.8");
    eventually(
        Duration::from_secs(5),
        "an unknown CA to fail strict",
        || get().0 == 526,
    );
    let (status, body) = node.call(
        "POST",
        &format!("/zones/{zone}/acm/custom_trust_store"),
        Some(json!({"certificate": zone_signed.cert_pem})),
    );
    assert_eq!(status, 400, "a leaf is not a CA: {body}");
    let trusted = node.ok(
        "POST",
        &format!("/zones/{zone}/acm/custom_trust_store"),
        Some(json!({"certificate": zone_roots.cert_pem})),
    );
    eventually(
        Duration::from_secs(5),
        "the zone's CA to be trusted",
        || get().0 == 200,
    );
    node.ok(
        "DELETE",
        &format!(
            "/zones/{zone}/acm/custom_trust_store/{}",
            trusted["id"].as_str().expect("id")
        ),
        None,
    );
    eventually(
        Duration::from_secs(5),
        "the CA to be untrusted again",
        || get().0 == 526,
    );

    // A zone's own client certificate replaces the node's.
    let zone_ca = Authority::new("Zone Pull CA", 30).expect("ca");
    let zone_client = zone_ca
        .issue(&hosts(&["client.shop.test"]), 30, Usage::Client)
        .expect("client");
    let zone_pulled = start_tls_origin(
        "127.0.0.7",
        port,
        &valid.cert_pem,
        &valid.key_pem,
        Some(&zone_ca.cert_pem),
    );
    point("127.0.0.7");
    eventually(
        Duration::from_secs(5),
        "the node's certificate to be refused",
        || get().0 == 525,
    );
    let (status, body) = node.call(
        "POST",
        &format!("/zones/{zone}/origin_tls_client_auth"),
        Some(json!({"certificate": zone_client.cert_pem, "private_key": valid.key_pem})),
    );
    assert_eq!(status, 400, "a key that is not the certificate's: {body}");
    node.ok(
        "POST",
        &format!("/zones/{zone}/origin_tls_client_auth"),
        Some(json!({"certificate": zone_client.cert_pem, "private_key": zone_client.key_pem})),
    );
    eventually(
        Duration::from_secs(5),
        "the zone's certificate to be presented",
        || get().0 == 200,
    );
    assert!(zone_pulled.try_iter().any(|seen| seen.client_certificate));
    let aop = node.ok(
        "GET",
        &format!("/zones/{zone}/origin_tls_client_auth/settings"),
        None,
    );
    assert_eq!(aop["enabled"], true, "{aop}");
    node.ok(
        "PUT",
        &format!("/zones/{zone}/origin_tls_client_auth/settings"),
        Some(json!({"enabled": false})),
    );

    // Origin CA: a certificate Parapet signs for the origin's own key is trusted by strict.
    let key_file = dir.path().join("origin-key.pem");
    let csr_file = dir.path().join("origin.csr");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&csr_file)
        .args(["-subj", "/CN=whatever.example"])
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let csr = std::fs::read_to_string(&csr_file).expect("csr");
    let (status, body) = node.call(
        "POST",
        "/certificates",
        Some(json!({"csr": "garbage", "hostnames": ["www.shop.test"]})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = node.call(
        "POST",
        "/certificates",
        Some(json!({"csr": csr, "hostnames": ["www.elsewhere.test"]})),
    );
    assert_eq!(status, 400, "a name outside the account's zones: {body}");
    let (status, body) = node.call(
        "POST",
        "/certificates",
        Some(json!({"csr": csr, "hostnames": ["www.shop.test"], "request_type": "origin-rsa"})),
    );
    assert_eq!(status, 400, "request type and key disagree: {body}");
    let issued = node.ok(
        "POST",
        "/certificates",
        Some(json!({"csr": csr, "hostnames": ["www.shop.test", "*.shop.test"], "requested_validity": 90})),
    );
    assert_eq!(issued["request_type"], "origin-ecc", "{issued}");
    let origin_cert = issued["certificate"].as_str().expect("pem").to_owned();
    let listed = node.ok("GET", &format!("/certificates?zone_id={zone}"), None);
    assert_eq!(listed[0]["id"], issued["id"], "{listed}");
    // A certificate for names in two zones is revoked only by someone who may edit both (as
    // issuing it required), not through one of them.
    let side = node.create_zone("side.test");
    let both = node.ok(
        "POST",
        "/certificates",
        Some(json!({"csr": csr, "hostnames": ["www.shop.test", "www.side.test"]})),
    );
    let scoped = node.ok(
        "POST",
        "/user/tokens",
        Some(json!({"name": "side only", "policies": [{"effect": "allow",
            "resources": {format!("com.cloudflare.api.account.zone.{side}"): "*"},
            "permission_groups": [{"name": "Administrator"}]}]})),
    );
    let scoped = scoped["value"].as_str().expect("token value");
    let both_path = format!("/certificates/{}", both["id"].as_str().expect("id"));
    assert_eq!(node.call_as(scoped, "GET", &both_path, None).0, 200);
    let (status, body) = node.call_as(scoped, "DELETE", &both_path, None);
    assert_eq!(status, 403, "{body}");
    assert!(node.ok("GET", &both_path, None)["revoked_at"].is_null());
    node.ok("DELETE", &both_path, None);
    // Deleting a zone revokes the certificates for it alone: left valid, one would be trusted
    // by a zone made again under that name. One that still covers a live zone stays, and can
    // still be revoked through the zones left.
    let side_only = node.ok(
        "POST",
        "/certificates",
        Some(json!({"csr": csr, "hostnames": ["www.side.test"]})),
    );
    let side_only_path = format!("/certificates/{}", side_only["id"].as_str().expect("id"));
    let again = node.ok(
        "POST",
        "/certificates",
        Some(json!({"csr": csr, "hostnames": ["www.shop.test", "www.side.test"]})),
    );
    let again_path = format!("/certificates/{}", again["id"].as_str().expect("id"));
    node.ok("DELETE", &format!("/zones/{side}"), None);
    assert!(
        node.ok("GET", &side_only_path, None)["revoked_at"].is_string(),
        "revoked with its zone"
    );
    assert!(node.ok("GET", &again_path, None)["revoked_at"].is_null());
    assert!(node.ok("DELETE", &again_path, None)["revoked_at"].is_string());
    let origin_key = std::fs::read_to_string(&key_file).expect("key");
    let signed = start_tls_origin("127.0.0.6", port, &origin_cert, &origin_key, None);
    point("127.0.0.6");
    eventually(
        Duration::from_secs(5),
        "strict to trust the Origin CA",
        || get().0 == 200,
    );
    assert!(signed.try_recv().is_ok());

    // Revoked: strict refuses the origin from the next request on, pooled connection or not;
    // the certificate stays listed with its revocation time.
    let cert_path = format!("/certificates/{}", issued["id"].as_str().expect("id"));
    let revoked = node.ok("DELETE", &cert_path, None);
    let revoked_at = revoked["revoked_at"]
        .as_str()
        .expect("revoked_at")
        .to_owned();
    assert_eq!(revoked["id"], issued["id"], "{revoked}");
    eventually(
        Duration::from_secs(5),
        "strict to refuse a revoked certificate",
        || get().0 == 526,
    );
    assert_eq!(
        node.ok("GET", &cert_path, None)["revoked_at"],
        revoked_at.as_str()
    );
    assert_eq!(
        node.ok("DELETE", &cert_path, None)["revoked_at"],
        revoked_at.as_str(),
        "revoking again changes nothing"
    );
    set(&node, &zone, "ssl", json!("full"));
    eventually(
        Duration::from_secs(5),
        "full not to check revocation",
        || get().0 == 200,
    );
    let (status, _) = node.call(
        "DELETE",
        "/certificates/0123456789abcdef0123456789abcdef",
        None,
    );
    assert_eq!(status, 404);

    // off: no HTTPS for the zone; visitors are sent to plain HTTP.
    set(&node, &zone, "ssl", json!("off"));
    eventually(Duration::from_secs(5), "HTTPS to redirect to HTTP", || {
        let (status, head, _) = get();
        status == 301 && head.contains("location: http://www.shop.test/path?q=1")
    });
}

#[test]
fn malformed_client_hellos_end_their_connection_and_nothing_else() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let https = free_port();
    let _origin = start_origin("127.0.0.2", https);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--https-listen",
        &format!("127.0.0.1:{https}"),
        "--acme-directory",
        "",
    ]));
    let zone = node.create_zone("shop.test");
    node.proxied_a(&zone, "www.shop.test", "127.0.0.2");
    let ca = Authority::new("Test Roots", 30).expect("ca");
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let leaf = ca
        .issue(&hosts(&["www.shop.test"]), 30, Usage::Server)
        .expect("leaf");
    assert_eq!(upload(&node, &zone, &leaf).0, 200);
    eventually(Duration::from_secs(5), "HTTPS", || {
        curl_https(https, "www.shop.test", &ca_file, &[]).0 == 200
    });
    let huge_sni = format!("{}.shop.test", "a".repeat(250));
    let mut hello_huge_sni = Vec::new();
    {
        // A ClientHello whose server_name extension holds a 260-byte name.
        let name = huge_sni.as_bytes();
        let mut sni = Vec::new();
        let list_len = u16::try_from(name.len() + 3).expect("len");
        sni.extend_from_slice(&list_len.to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&u16::try_from(name.len()).expect("len").to_be_bytes());
        sni.extend_from_slice(name);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&u16::try_from(sni.len()).expect("len").to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&u16::try_from(ext.len()).expect("len").to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        hello_huge_sni.extend_from_slice(&[22, 3, 1]);
        hello_huge_sni.extend_from_slice(&u16::try_from(hs.len()).expect("len").to_be_bytes());
        hello_huge_sni.extend_from_slice(&hs);
    }
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "not TLS at all",
            b"GET / HTTP/1.1\r\nHost: www.shop.test\r\n\r\n".to_vec(),
        ),
        ("a record claiming 64 KiB", {
            let mut r = vec![22, 3, 1, 0xff, 0xff];
            r.extend(std::iter::repeat_n(0x41, 70_000));
            r
        }),
        (
            "a truncated hello",
            vec![22, 3, 1, 0, 40, 1, 0, 0, 36, 3, 3],
        ),
        (
            "garbage",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("a 260-byte SNI", hello_huge_sni),
    ];
    for (what, bytes) in attacks {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", https)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(12)))
            .expect("timeout");
        let _ = s.write_all(&bytes);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        // Either nothing or a TLS alert record (content type 21); never a server hello.
        assert!(
            answer.is_empty() || answer[0] == 21,
            "{what}: answered {:?}",
            &answer[..answer.len().min(16)]
        );
        assert_eq!(
            curl_https(https, "www.shop.test", &ca_file, &[]).0,
            200,
            "still serving after {what}"
        );
    }
}

#[test]
fn a_zone_certificate_never_serves_the_names_of_a_zone_nested_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let https = free_port();
    let _origin = start_origin("127.0.0.2", https);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--https-listen",
        &format!("127.0.0.1:{https}"),
        "--acme-directory",
        "",
    ]));
    let parent = node.create_zone("shop.test");
    let nested = node.create_zone("sub.shop.test");
    node.proxied_a(&parent, "www.shop.test", "127.0.0.2");
    node.proxied_a(&nested, "sub.shop.test", "127.0.0.2");
    node.proxied_a(&nested, "www.sub.shop.test", "127.0.0.2");
    let ca = Authority::new("Test Roots", 30).expect("ca");
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let only_nested = ca
        .issue(&hosts(&["*.sub.shop.test"]), 30, Usage::Server)
        .expect("cert");
    let (status, body) = upload(&node, &parent, &only_nested);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("other zones"), "{body}");
    let both = ca
        .issue(
            &hosts(&["www.shop.test", "*.shop.test", "*.sub.shop.test"]),
            30,
            Usage::Server,
        )
        .expect("cert");
    assert_eq!(upload(&node, &parent, &both).0, 200);
    eventually(
        Duration::from_secs(5),
        "the parent's name to be served",
        || curl_https(https, "www.shop.test", &ca_file, &[]).0 == 200,
    );
    for host in ["www.sub.shop.test", "sub.shop.test"] {
        assert_eq!(
            curl_https(https, host, &ca_file, &[]).0,
            0,
            "{host} belongs to the nested zone"
        );
    }
}
