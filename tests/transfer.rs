//! Outgoing zone transfers against a real secondary: Knot transfers the zone from Parapet with
//! TSIG, answers identically, and follows a change through NOTIFY and IXFR; zones and changes of
//! hundreds of kilobytes go whole, in signed messages none of which is truncated; ordinary
//! queries signed with TSIG (a secondary's refresh) get signed answers or the TSIG error.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use parapet_testkit::dns::{Mode, build, serving_node, tcp};
use parapet_testkit::{Knot, Node, eventually, free_port};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");
const SECRET: &str = "c2VjcmV0LXNoYXJlZC13aXRoLXRoZS1zZWNvbmRhcnkK";

fn answers(server: std::net::SocketAddr, name: &str, qtype: RecordType) -> Vec<String> {
    let m = tcp(server, &build(name, qtype, Mode::Tcp, 1)).expect("answer");
    let mut v: Vec<String> = m
        .answers
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name.to_ascii().to_lowercase(),
                r.record_type(),
                r.ttl,
                r.data
            )
        })
        .collect();
    v.sort();
    v
}

/// Knot and Parapet give the same answers to these questions.
fn same_answers(knot: &Knot, dns: std::net::SocketAddr, questions: &[(&str, RecordType)]) {
    for &(name, qtype) in questions {
        assert_eq!(
            answers(knot.addr, name, qtype),
            answers(dns, name, qtype),
            "{name} {qtype}"
        );
    }
}

/// Waits for Knot to serve `serial`; on timeout the failure shows Knot's log.
fn wait_serial(knot: &Knot, serial: u32) {
    wait_for_serial("Knot", serial, || knot.serial(), || knot.log());
}

/// Waits for `secondary` (named for the failure) to serve `serial`, as `current` tells; on
/// timeout the failure shows its `log`.
fn wait_for_serial(
    secondary: &str,
    serial: u32,
    current: impl Fn() -> Option<u32>,
    log: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while current() != Some(serial) {
        assert!(
            std::time::Instant::now() < deadline,
            "{secondary} did not reach serial {serial}; its log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Full transfers Knot completed. An attempt it makes before the zone lists it as a secondary
/// is refused and is not a transfer.
fn full_transfers(knot: &Knot) -> usize {
    knot.log()
        .lines()
        .filter(|l| l.contains("AXFR, incoming") && l.contains("finished"))
        .count()
}

fn require_knot() {
    assert!(
        Knot::available(),
        "knotd is required (install Debian's knot; .ci/run does)"
    );
}

/// A node serving DNS on loopback, unlimited, with the edge address 203.0.113.10.
fn edge_dns_node() -> Node {
    serving_node(BIN, 0, &["--edge-ipv4", "203.0.113.10"])
}

fn account_of(node: &Node) -> String {
    node.ok("GET", "/accounts", None)[0]["id"]
        .as_str()
        .expect("account")
        .to_owned()
}

/// Adds the TSIG key `xfr-key` with the test's secret to the node's account.
fn add_tsig_key(node: &Node) -> serde_json::Value {
    node.ok(
        "POST",
        &format!("/accounts/{}/secondary_dns/tsigs", account_of(node)),
        Some(json!({"name": "xfr-key.", "algo": "hmac-sha256.", "secret": SECRET})),
    )
}

/// Adds `peer` to the account, makes it the secondary of `zone` (whose id is `zone_id`) and
/// enables outgoing transfers.
fn list_secondary(node: &Node, zone_id: &str, zone: &str, peer: serde_json::Value) {
    let peer = node.ok(
        "POST",
        &format!("/accounts/{}/secondary_dns/peers", account_of(node)),
        Some(peer),
    );
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/secondary_dns/outgoing"),
        Some(json!({"name": zone, "peers": [peer["id"]]})),
    );
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/secondary_dns/outgoing/enable"),
        None,
    );
}

/// Knot as the secondary of `zone` (whose id is `zone_id`) with the key `xfr-key` and IXFR,
/// outgoing transfers enabled.
fn knot_secondary(node: &Node, zone_id: &str, zone: &str) -> Knot {
    let key = add_tsig_key(node);
    // Knot's port is chosen when it starts; create the peer after, then point the zone at it.
    let knot = Knot::start_secondary(zone, node.dns_addr(), ("xfr-key", SECRET));
    list_secondary(
        node,
        zone_id,
        zone,
        json!({"name": "knot", "ip": "127.0.0.1", "port": knot.addr.port(), "tsig_id": key["id"], "ixfr_enable": true}),
    );
    knot
}

fn zone_id_of(node: &Node, zone: &str) -> String {
    node.ok("GET", &format!("/zones?name={zone}"), None)[0]["id"]
        .as_str()
        .expect("zone")
        .to_owned()
}

fn zone_serial(node: &Node, zone_id: &str) -> u32 {
    node.ok("GET", &format!("/zones/{zone_id}"), None)["serial"]
        .as_u64()
        .expect("serial") as u32
}

/// An unsigned AXFR of `zone`, as from a secondary that is not listed, is refused (NOTAUTH).
fn assert_unlisted_transfer_refused(dns: std::net::SocketAddr, zone: &str) {
    let refused = tcp(dns, &build(zone, RecordType::AXFR, Mode::Tcp, 2)).expect("answer");
    assert_eq!(
        refused.metadata.response_code,
        hickory_proto::op::ResponseCode::NotAuth
    );
}

#[test]
fn knot_secondary_transfers_with_tsig_and_follows_notify_and_ixfr() {
    require_knot();
    let node = edge_dns_node();
    let dns = node.dns_addr();
    let zone = node.create_zone("xfr.test");
    for body in [
        json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true}),
        json!({"type": "A", "name": "direct", "content": "192.0.2.2", "ttl": 120}),
        json!({"type": "MX", "name": "@", "content": "direct.xfr.test", "priority": 10}),
        json!({"type": "TXT", "name": "txt", "content": "hello secondary"}),
        json!({"type": "SRV", "name": "_sip._tcp", "content": "10 5 5060 direct.xfr.test"}),
    ] {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body));
    }
    // A secondary we did not list is refused.
    assert_unlisted_transfer_refused(dns, "xfr.test");

    let knot = knot_secondary(&node, &zone, "xfr.test");
    let serial = || zone_serial(&node, &zone);
    let primary_serial = serial();
    wait_serial(&knot, primary_serial);
    // Full transfers Knot completed: the first one, and another one it may have started before
    // the first was applied (a retry of its refused attempt racing the NOTIFY); both are done
    // once it has settled (no new one for a second; on a loaded machine the second can come
    // well after the first).
    let mut initial = full_transfers(&knot);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let now = full_transfers(&knot);
        if now == initial {
            break;
        }
        initial = now;
    }
    assert!((1..=2).contains(&initial), "{}", knot.log());

    same_answers(
        &knot,
        dns,
        &[
            ("www.xfr.test", RecordType::A),
            ("www.xfr.test", RecordType::AAAA),
            ("direct.xfr.test", RecordType::A),
            ("xfr.test", RecordType::MX),
            ("xfr.test", RecordType::NS),
            ("txt.xfr.test", RecordType::TXT),
            ("_sip._tcp.xfr.test", RecordType::SRV),
        ],
    );
    assert!(
        answers(knot.addr, "www.xfr.test", RecordType::A)
            .iter()
            .all(|a| a.contains("203.0.113.10")),
        "the secondary serves the edge, not the origin"
    );

    // A change reaches the secondary by NOTIFY and an incremental transfer.
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "new", "content": "192.0.2.9"})),
    );
    let changed = serial();
    assert!(changed > primary_serial);
    wait_serial(&knot, changed);
    assert_eq!(
        answers(knot.addr, "new.xfr.test", RecordType::A),
        answers(dns, "new.xfr.test", RecordType::A)
    );
    // A removal and a replacement travel the same way.
    let records = node.ok(
        "GET",
        &format!("/zones/{zone}/dns_records?per_page=100"),
        None,
    );
    let id_of = |name: &str| {
        records
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["id"].as_str())
            .expect("record")
            .to_owned()
    };
    node.ok(
        "DELETE",
        &format!("/zones/{zone}/dns_records/{}", id_of("direct.xfr.test")),
        None,
    );
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/dns_records/{}", id_of("txt.xfr.test")),
        Some(json!({"content": "changed by ixfr"})),
    );
    let later = serial();
    wait_serial(&knot, later);
    same_answers(
        &knot,
        dns,
        &[
            ("direct.xfr.test", RecordType::A),
            ("txt.xfr.test", RecordType::TXT),
            ("new.xfr.test", RecordType::A),
        ],
    );
    assert!(answers(dns, "direct.xfr.test", RecordType::A).is_empty());
    // Every change after the first transfer applies as an IXFR: Knot neither fell back to AXFR
    // nor got the whole zone for its IXFR. (A full transfer Knot starts on its own, such as a
    // late retry of its first, refused attempt, says nothing of Parapet's IXFR.)
    let log = knot.log();
    assert!(
        !log.contains("fallback to AXFR") && !log.contains("AXFR-style IXFR"),
        "no fallback to AXFR:\n{log}"
    );
    assert!(
        log.contains("IXFR, incoming") && log.contains("notify"),
        "Knot should have been notified and used IXFR:\n{log}"
    );
}

/// The records of a TXT-heavy zone: 30 names holding 10 TXT records of about 400 bytes each,
/// `tag` telling one generation from another.
fn long_txt_bodies(tag: &str, names: std::ops::Range<usize>) -> Vec<serde_json::Value> {
    let mut bodies = Vec::new();
    for i in names {
        for j in 0..10 {
            bodies.push(json!({
                "type": "TXT",
                "name": format!("t{i}"),
                "content": format!("{tag} {i:02}-{j:02} {}", "x".repeat(390)),
            }));
        }
    }
    bodies
}

/// The records `kdig` lists in an AXFR or IXFR from `server` signed with the test's key, as
/// "name type data" lines; panics when kdig reports an error (a bad signature, a truncated or
/// broken transfer).
fn kdig_transfer(server: std::net::SocketAddr, zone: &str, kind: &str) -> Vec<String> {
    let out = std::process::Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-y")
        .arg(format!("hmac-sha256:xfr-key:{SECRET}"))
        .args(["+tcp", "+time=5", "+retry=0", "+nomultiline"])
        .arg(kind)
        .arg(format!("{zone}."))
        .output()
        .expect("kdig");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains(";; ERROR") && !stderr.contains("error"),
        "kdig {kind} failed: {text}{stderr}"
    );
    assert!(
        !text.contains("flags: qr aa tc") && !text.contains(" tc"),
        "{text}"
    );
    text.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name ttl class type data…
            format!("{} {} {}", f[0], f[3], f[4..].join(" "))
        })
        .filter(|l| !l.contains(" TSIG "))
        .collect()
}

#[test]
fn large_zones_and_large_changes_transfer_whole_with_tsig() {
    require_knot();
    let node = edge_dns_node();
    let dns = node.dns_addr();
    let zone = node.create_zone("big.test");
    // 300 TXT records of about 400 bytes (about 130 KB of records) and 200 A records.
    let mut posts = long_txt_bodies("first", 0..30);
    for i in 0..200 {
        posts.push(
            json!({"type": "A", "name": format!("h{i}"), "content": format!("192.0.2.{}", i + 1)}),
        );
    }
    let created = node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records/batch"),
        Some(json!({ "posts": posts })),
    );
    let txt_ids: Vec<String> = created["posts"]
        .as_array()
        .expect("posts")
        .iter()
        .filter(|r| r["type"] == "TXT")
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(txt_ids.len(), 300);
    let knot = knot_secondary(&node, &zone, "big.test");
    let serial = || zone_serial(&node, &zone);
    let first = serial();

    // The secondary gets the zone (and so Parapet has its ACL).
    wait_serial(&knot, first);
    // A full transfer carries every record, in messages kdig accepts (signed, none truncated).
    let axfr = kdig_transfer(dns, "big.test", "AXFR");
    let count = |records: &[String], kind: &str| {
        records
            .iter()
            .filter(|r| r.split(' ').nth(1) == Some(kind))
            .count()
    };
    assert_eq!(count(&axfr, "TXT"), 300, "every TXT record is transferred");
    assert_eq!(count(&axfr, "A"), 200, "every A record is transferred");
    assert_eq!(count(&axfr, "SOA"), 2);

    // So does the secondary.
    let mut questions: Vec<(String, RecordType)> = (0..30)
        .map(|i| (format!("t{i}.big.test"), RecordType::TXT))
        .collect();
    questions.extend((0..200).map(|i| (format!("h{i}.big.test"), RecordType::A)));
    let questions: Vec<(&str, RecordType)> =
        questions.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    same_answers(&knot, dns, &questions);
    assert_eq!(
        answers(knot.addr, "t29.big.test", RecordType::TXT).len(),
        10
    );

    // A change of about 130 KB (150 TXT records replaced by 150 others) travels by IXFR.
    std::thread::sleep(Duration::from_millis(500));
    let initial = full_transfers(&knot);
    let deletes: Vec<_> = txt_ids[..150].iter().map(|id| json!({"id": id})).collect();
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records/batch"),
        Some(json!({"deletes": deletes, "posts": long_txt_bodies("second", 0..15)})),
    );
    let changed = serial();
    assert!(changed > first);
    wait_serial(&knot, changed);
    // An incremental transfer (four SOA records) of 150 removals and 150 additions.
    let ixfr = kdig_transfer(dns, "big.test", &format!("IXFR={first}"));
    assert_eq!(count(&ixfr, "SOA"), 4, "{:?}", &ixfr[..ixfr.len().min(5)]);
    assert_eq!(count(&ixfr, "TXT"), 300);
    assert_eq!(ixfr.iter().filter(|r| r.contains("\"second ")).count(), 150);
    same_answers(&knot, dns, &questions);
    assert!(
        answers(knot.addr, "t0.big.test", RecordType::TXT)
            .iter()
            .all(|a| a.contains("second")),
        "{:?}",
        answers(knot.addr, "t0.big.test", RecordType::TXT)
    );
    assert_eq!(
        full_transfers(&knot),
        initial,
        "the change applies as an IXFR:\n{}",
        knot.log()
    );
}

/// kdig's output for `args` asked of `server` with the TSIG key `key` ("name:secret"), and
/// whether kdig succeeded.
fn kdig_signed(server: std::net::SocketAddr, key: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-y")
        .arg(format!("hmac-sha256:{key}"))
        .args(["+time=5", "+retry=0"])
        .args(args)
        .output()
        .expect("kdig");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = out.status.success()
        && !text.contains(";; ERROR")
        && !text.to_lowercase().contains("warning");
    (clean, text)
}

/// A node serving `zone` with a secondary that has the key `xfr-key`, transfers enabled;
/// NOTIFYs go to the returned socket, which answers only when a test makes it.
fn node_with_keyed_secondary(zone: &str) -> (Node, std::net::UdpSocket) {
    let node = edge_dns_node();
    let zone_id = node.create_zone(zone);
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    let key = add_tsig_key(&node);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    list_secondary(
        &node,
        &zone_id,
        zone,
        json!({"name": "secondary", "ip": "127.0.0.1", "port": port, "tsig_id": key["id"]}),
    );
    (node, silent)
}

#[test]
fn of_two_secondaries_at_one_address_the_one_whose_key_signed_transfers() {
    let node = edge_dns_node();
    let zone_id = node.create_zone("two.test");
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    let account = account_of(&node);
    let first = add_tsig_key(&node);
    let second_secret = "c2Vjb25kLXNlY3JldC1mb3ItdGhlLXNlY29uZC1wZWVy";
    let second = node.ok(
        "POST",
        &format!("/accounts/{account}/secondary_dns/tsigs"),
        Some(json!({"name": "xfr-two.", "algo": "hmac-sha256.", "secret": second_secret})),
    );
    // Both at one address, as a secondary's views chosen by key are.
    let views = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = views.local_addr().expect("addr").port();
    let peers: Vec<_> = [("one", &first), ("two", &second)]
        .into_iter()
        .map(|(name, key)| {
            node.ok(
                "POST",
                &format!("/accounts/{account}/secondary_dns/peers"),
                Some(json!({"name": name, "ip": "127.0.0.1", "port": port, "tsig_id": key["id"]})),
            )["id"]
                .clone()
        })
        .collect();
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/secondary_dns/outgoing"),
        Some(json!({"name": "two.test", "peers": peers})),
    );
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/secondary_dns/outgoing/enable"),
        None,
    );
    let dns = node.dns_addr();
    for key in [
        format!("xfr-key:{SECRET}"),
        format!("xfr-two:{second_secret}"),
    ] {
        let mut last = String::new();
        eventually(Duration::from_secs(10), "a signed transfer", || {
            let (clean, text) = kdig_signed(dns, &key, &["+tcp", "two.test.", "AXFR"]);
            last = text;
            clean && last.contains("192.0.2.1")
        });
        assert!(!last.contains("NOTAUTH"), "{key}: {last}");
    }
    // Enabling transfers notified each of them, signed with its own key.
    views
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut signers = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = views.recv_from(&mut buf) {
        let packet = &buf[..n];
        for name in [&b"\x07xfr-key\x00"[..], &b"\x07xfr-two\x00"[..]] {
            if packet.windows(name.len()).any(|w| w == name) && !signers.contains(&name) {
                signers.push(name);
            }
        }
    }
    assert_eq!(signers.len(), 2, "a NOTIFY for each key's peer");
}

#[test]
fn signed_queries_get_signed_answers_and_bad_signatures_tsig_errors() {
    let (node, _silent) = node_with_keyed_secondary("sig.test");
    let dns = node.dns_addr();
    let good = format!("xfr-key:{SECRET}");
    // The index has the secondary's key once the zone's secondaries are published.
    eventually(Duration::from_secs(10), "the key to be known", || {
        kdig_signed(dns, &good, &["sig.test.", "SOA"]).0
    });
    // A secondary's refresh query, over UDP and TCP: kdig verifies the signed answer.
    for transport in ["+notcp", "+tcp"] {
        let (clean, text) = kdig_signed(dns, &good, &[transport, "sig.test.", "SOA"]);
        assert!(clean, "{transport}: {text}");
        assert!(text.contains("status: NOERROR"), "{text}");
        assert!(text.contains("TSIG PSEUDOSECTION"), "{text}");
        assert!(text.contains("sig.test.") && text.contains("SOA"), "{text}");
    }
    // Other questions of the zone too, and a name it does not have.
    let (clean, text) = kdig_signed(dns, &good, &["www.sig.test.", "A"]);
    assert!(clean && text.contains("192.0.2.1"), "{text}");
    let (clean, text) = kdig_signed(dns, &good, &["none.sig.test.", "A"]);
    assert!(clean && text.contains("status: NXDOMAIN"), "{text}");

    // An answer that fits a 512-byte UDP message unsigned but not signed is truncated to fit
    // with its signature.
    let zone_id = zone_id_of(&node, "sig.test");
    for i in 0..2 {
        node.ok(
            "POST",
            &format!("/zones/{zone_id}/dns_records"),
            Some(json!({"type": "TXT", "name": "long", "content": format!("{i}{}", "x".repeat(199))})),
        );
    }
    // (Served once the change reaches DNS, a moment after the API answers.)
    eventually(Duration::from_secs(10), "both records served", || {
        let (clean, text) = kdig_signed(dns, &good, &["+tcp", "long.sig.test.", "TXT"]);
        clean && text.contains("ANSWER: 2;")
    });
    let (clean, text) = kdig_signed(
        dns,
        &good,
        &["+notcp", "+noedns", "+ignore", "long.sig.test.", "TXT"],
    );
    assert!(clean && text.contains("Flags: qr aa tc"), "{text}");
    let received: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(";; Received ")?
                .strip_suffix(" B")?
                .parse()
                .ok()
        })
        .expect("size");
    assert!(received <= 512, "{received} bytes: {text}");

    // A wrong secret: NOTAUTH with an unsigned TSIG record holding BADSIG (kdig shows the
    // rcode and the TSIG error together as the status).
    let refused_with = |text: &str, error: &str| {
        text.contains(&format!("status: {error}"))
            && text
                .lines()
                .any(|l| l.split_whitespace().nth(3) == Some("TSIG") && l.contains(error))
    };
    let wrong = "xfr-key:d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZwo=";
    let (_, text) = kdig_signed(dns, wrong, &["sig.test.", "SOA"]);
    assert!(refused_with(&text, "BADSIG"), "{text}");
    // A key the zone does not have: BADKEY.
    let (_, text) = kdig_signed(
        dns,
        &format!("other-key:{SECRET}"),
        &["+tcp", "sig.test.", "SOA"],
    );
    assert!(refused_with(&text, "BADKEY"), "{text}");
    // So does a transfer signed with the wrong secret.
    let (_, text) = kdig_signed(dns, wrong, &["+tcp", "sig.test.", "AXFR"]);
    assert!(text.contains("replied with error 'BADSIG'"), "{text}");
}

/// A BIND `named` acting as a secondary of one zone, on loopback; stopped when dropped.
struct Bind {
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Bind {
    fn named() -> Option<std::path::PathBuf> {
        ["/usr/sbin/named", "/usr/bin/named"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    }

    /// Starts `named` on `port` as a secondary of `zone` from `primary`, signing everything it
    /// sends the primary with the key `(name, secret)`.
    fn start_secondary(
        zone: &str,
        port: u16,
        primary: std::net::SocketAddr,
        key: (&str, &str),
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("parapet-bind-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let d = dir.display();
        let (key_name, secret) = key;
        let ip = primary.ip();
        let primary_port = primary.port();
        let conf = format!(
            r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
server {ip} {{ keys {{ {key_name}; }}; }};
zone "{zone}" {{
    type secondary;
    primaries port {primary_port} {{ {ip} key {key_name}; }};
    file "{d}/{zone}.db";
}};
"#
        );
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf).expect("config");
        let log = std::fs::File::create(dir.join("named.log")).expect("log");
        let child = std::process::Command::new(Self::named().expect("named installed"))
            .arg("-g")
            .arg("-4")
            .arg("-n")
            .arg("1")
            .arg("-c")
            .arg(&conf_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("named starts");
        Self {
            addr: ([127, 0, 0, 1], port).into(),
            dir,
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    /// The serial of `zone` BIND serves, if it serves it.
    fn serial(&self, zone: &str) -> Option<u32> {
        let m = tcp(self.addr, &build(zone, RecordType::SOA, Mode::Tcp, 7))?;
        m.answers.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
    }

    /// Waits for BIND to serve `serial`; on timeout the failure shows BIND's log.
    fn wait_serial(&self, zone: &str, serial: u32) {
        wait_for_serial("BIND", serial, || self.serial(zone), || self.log());
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn bind_secondary_refreshes_with_tsig() {
    assert!(
        Bind::named().is_some(),
        "named is required (install Debian's bind9; .ci/run does)"
    );
    let node = edge_dns_node();
    let dns = node.dns_addr();
    let zone = node.create_zone("bind.test");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    let key = add_tsig_key(&node);
    let port = free_port();
    list_secondary(
        &node,
        &zone,
        "bind.test",
        json!({"name": "bind", "ip": "127.0.0.1", "port": port, "tsig_id": key["id"], "ixfr_enable": true}),
    );
    let serial = || zone_serial(&node, &zone);
    // BIND asks for the SOA (signed) before every transfer, and takes only a signed answer.
    let bind = Bind::start_secondary("bind.test", port, dns, ("xfr-key", SECRET));
    bind.wait_serial("bind.test", serial());
    assert_eq!(
        answers(bind.addr, "www.bind.test", RecordType::A),
        answers(dns, "www.bind.test", RecordType::A)
    );
    // A change: NOTIFY, then BIND's refresh query and a transfer.
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "new", "content": "192.0.2.9"})),
    );
    bind.wait_serial("bind.test", serial());
    assert_eq!(
        answers(bind.addr, "new.bind.test", RecordType::A),
        answers(dns, "new.bind.test", RecordType::A)
    );
    let log = bind.log();
    assert!(
        !log.contains("expected a TSIG") && !log.contains("tsig verify failure"),
        "{log}"
    );
}

/// The opcode of a DNS message received on `socket`, if one comes within two seconds; it is
/// acknowledged (echoed as a response), so a NOTIFY is not sent again.
fn answer_next(socket: &std::net::UdpSocket) -> Option<u8> {
    reply_next(socket, signed_answer)
}

/// Waits up to 2 s for a message on `socket`, answers it with what `answer` makes of it, and
/// returns its opcode (`None`: nothing came).
fn reply_next(socket: &std::net::UdpSocket, answer: fn(&[u8]) -> Vec<u8>) -> Option<u8> {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    if n < 12 {
        return None;
    }
    socket
        .send_to(&answer(&buf[..n]), from)
        .expect("acknowledge");
    Some((buf[2] >> 3) & 0x0f)
}

/// `request` echoed as its answer (QR set), its TSIG as it came: no valid answer's signature.
fn echoed(request: &[u8]) -> Vec<u8> {
    let mut answer = request.to_vec();
    answer[2] |= 0x80;
    answer
}

/// `request` (signed with `xfr-key`) answered as a secondary holding the key answers (RFC
/// 8945 §5.3): QR set, and its TSIG replaced by one over the request's MAC, the answer and
/// the TSIG variables. Written here from the RFC, apart from the server's own signing.
fn signed_answer(request: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    const ALGORITHM: &[u8] = b"\x0bhmac-sha256\x00";
    // The secret SECRET encodes in base64.
    const SECRET_BYTES: &[u8] = b"secret-shared-with-the-secondary\n";
    let owner = b"\x07xfr-key\x00";
    let record = [&owner[..], &[0, 250, 0, 255]].concat();
    let Some(start) = request.windows(record.len()).rposition(|w| w == record) else {
        return echoed(request);
    };
    let rdata = &request[start + owner.len() + 10..];
    let at = ALGORITHM.len() + 8;
    let mac_len = usize::from(u16::from_be_bytes([rdata[at], rdata[at + 1]]));
    let request_mac = &rdata[at + 2..at + 2 + mac_len];
    let mut answer = request[..start].to_vec();
    answer[2] |= 0x80;
    let arcount = u16::from_be_bytes([answer[10], answer[11]]);
    answer[10..12].copy_from_slice(&(arcount - 1).to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let timers = [&now.to_be_bytes()[2..], &300u16.to_be_bytes()].concat();
    let variables = [
        &owner[..],
        &[0, 255, 0, 0, 0, 0],
        ALGORITHM,
        &timers,
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut hmac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET_BYTES).expect("key");
    hmac.update(&(mac_len as u16).to_be_bytes());
    hmac.update(request_mac);
    hmac.update(&answer);
    hmac.update(&variables);
    let mac = hmac.finalize().into_bytes();
    let rdata = [
        ALGORITHM,
        &timers,
        &32u16.to_be_bytes(),
        &mac,
        &answer[..2],
        &[0, 0, 0, 0],
    ]
    .concat();
    answer.extend_from_slice(&record);
    answer.extend_from_slice(&[0, 0, 0, 0]);
    answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    answer.extend_from_slice(&rdata);
    answer[10..12].copy_from_slice(&arcount.to_be_bytes());
    answer
}

#[test]
fn force_notify_notifies_now_and_disable_refuses_transfers() {
    const NOTIFY: u8 = 4;
    let (node, silent) = node_with_keyed_secondary("switch.test");
    let dns = node.dns_addr();
    let good = format!("xfr-key:{SECRET}");
    let zone_id = zone_id_of(&node, "switch.test");
    let out = format!("/zones/{zone_id}/secondary_dns/outgoing");
    eventually(Duration::from_secs(10), "transfers to be allowed", || {
        kdig_signed(dns, &good, &["+tcp", "switch.test.", "AXFR"])
            .1
            .contains("192.0.2.1")
    });
    // Enabling notified the peer.
    assert_eq!(answer_next(&silent), Some(NOTIFY));
    while answer_next(&silent).is_some() {}

    // Same serial, yet the peer is told now.
    assert_eq!(node.ok("POST", &format!("{out}/force_notify"), None), "OK");
    assert_eq!(answer_next(&silent), Some(NOTIFY));

    assert_eq!(node.ok("POST", &format!("{out}/disable"), None), "Disabled");
    // Refused as a secondary that is not listed: its key is not known, and an unsigned
    // request is not authorized.
    eventually(Duration::from_secs(10), "transfers to be refused", || {
        let (_, text) = kdig_signed(dns, &good, &["+tcp", "switch.test.", "AXFR"]);
        text.contains("BADKEY") && !text.contains("192.0.2.1")
    });
    assert_unlisted_transfer_refused(dns, "switch.test");
    while answer_next(&silent).is_some() {}
    // A change while disabled notifies nobody.
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/dns_records"),
        Some(json!({"type": "A", "name": "new", "content": "192.0.2.9"})),
    );
    assert_eq!(answer_next(&silent), None);
    assert_eq!(node.ok("GET", &format!("{out}/status"), None), "Disabled");
}

#[test]
fn notifies_leave_from_the_address_dns_listens_on() {
    let node = Node::start(parapet_testkit::NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--dns-listen",
        "127.0.0.9:0",
        "--dns-rrl-rate",
        "0",
    ]));
    let zone_id = node.create_zone("from.test");
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    // The secondary, on another loopback address: the system would send from 127.0.0.1.
    let secondary = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    secondary
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let port = secondary.local_addr().expect("addr").port();
    list_secondary(
        &node,
        &zone_id,
        "from.test",
        json!({"name": "secondary", "ip": "127.0.0.1", "port": port}),
    );
    let mut buf = [0u8; 512];
    let (_, from) = secondary.recv_from(&mut buf).expect("a NOTIFY");
    assert_eq!(buf[2] & 0x78, 4 << 3, "a NOTIFY");
    assert_eq!(from.ip().to_string(), "127.0.0.9");
}

#[test]
fn new_edge_addresses_at_a_restart_reach_the_secondary_whole() {
    require_knot();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let node_with = |edge: &str| {
        Node::start(
            parapet_testkit::NodeOptions::new(BIN)
                .data_dir(dir.path().join("data"))
                .args([
                    "--activation",
                    "auto",
                    "--dns-listen",
                    &format!("127.0.0.1:{port}"),
                    "--dns-rrl-rate",
                    "0",
                    "--edge-ipv4",
                    edge,
                ]),
        )
    };
    let mut node = node_with("203.0.113.10");
    let zone = node.create_zone("moved.test");
    node.proxied_a(&zone, "www", "192.0.2.1");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "TXT", "name": "txt", "content": "stays"})),
    );
    let knot = knot_secondary(&node, &zone, "moved.test");
    wait_serial(&knot, zone_serial(&node, &zone));
    let www = |server| answers(server, "www.moved.test", RecordType::A).join(" ");
    assert!(
        www(knot.addr).ends_with(" 203.0.113.10"),
        "{}",
        www(knot.addr)
    );
    // The last good snapshot, which the next start serves first, is written 2 s after a
    // change.
    std::thread::sleep(Duration::from_secs(3));
    node.terminate();

    // Restarted with another edge address, and nothing else done: the secondary is told at
    // start, and the change it transfers holds the new address (the serial the secondary had
    // stood for the old one).
    let node = node_with("203.0.113.20");
    let dns = node.dns_addr();
    eventually(Duration::from_secs(10), "the new address served", || {
        www(dns).ends_with(" 203.0.113.20")
    });
    wait_serial(&knot, zone_serial(&node, &zone));
    same_answers(
        &knot,
        dns,
        &[
            ("www.moved.test", RecordType::A),
            ("txt.moved.test", RecordType::TXT),
        ],
    );
}

#[test]
fn a_process_that_takes_over_notifies_every_zones_secondaries() {
    const NOTIFY: u8 = 4;
    let (mut old, silent) = node_with_keyed_secondary("told.test");
    // Listing the secondary notified it.
    assert_eq!(answer_next(&silent), Some(NOTIFY));
    while answer_next(&silent).is_some() {}

    // Nothing changed, yet the secondary is told once the new process answers alone: the
    // serial it last checked may have come from the old one.
    let _new = Node::start(
        parapet_testkit::NodeOptions::new(BIN)
            .data_dir(old.data_dir.clone())
            .env_token(Some(old.token.clone()))
            .args([
                "--activation",
                "auto",
                "--dns-listen",
                "127.0.0.1:0",
                "--dns-rrl-rate",
                "0",
                "--edge-ipv4",
                "203.0.113.10",
                "--upgrade",
            ]),
    );
    old.wait_exit(Duration::from_secs(20))
        .expect("the old process exits after handing over");
    assert_eq!(answer_next(&silent), Some(NOTIFY));
}

#[test]
fn a_notify_answer_not_signed_with_the_peers_key_is_no_acknowledgement() {
    const NOTIFY: u8 = 4;
    let (node, silent) = node_with_keyed_secondary("signed.test");
    // Listing the secondary notified it; a signed answer acknowledges: nothing comes again.
    assert_eq!(answer_next(&silent), Some(NOTIFY));
    assert_eq!(answer_next(&silent), None);

    // The request's own TSIG echoed back is no answer's signature: the NOTIFY is sent again.
    let zone_id = zone_id_of(&node, "signed.test");
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/secondary_dns/outgoing/force_notify"),
        None,
    );
    assert_eq!(reply_next(&silent, echoed), Some(NOTIFY));
    assert_eq!(answer_next(&silent), Some(NOTIFY), "sent again");
    assert_eq!(answer_next(&silent), None);
}
