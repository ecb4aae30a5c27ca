//! Outgoing zone transfers against a real secondary: Knot transfers the zone from Parapet with
//! TSIG, answers identically, and follows a change through NOTIFY and IXFR.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use parapet_testkit::dns::{Mode, build, tcp};
use parapet_testkit::{Knot, Node, NodeOptions};
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while knot.serial() != Some(serial) {
        assert!(
            std::time::Instant::now() < deadline,
            "Knot did not reach serial {serial}; its log:\n{}",
            knot.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn knot_secondary_transfers_with_tsig_and_follows_notify_and_ixfr() {
    assert!(
        Knot::available(),
        "knotd is required (install Debian's knot; .ci/run does)"
    );
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--dns-listen",
        "127.0.0.1:0",
        "--dns-rrl-rate",
        "0",
        "--edge-ipv4",
        "203.0.113.10",
    ]));
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
    let account = node.ok("GET", "/accounts", None)[0]["id"]
        .as_str()
        .expect("account")
        .to_owned();
    // A secondary we did not list is refused.
    let refused = tcp(dns, &build("xfr.test", RecordType::AXFR, Mode::Tcp, 2)).expect("answer");
    assert_eq!(
        refused.metadata.response_code,
        hickory_proto::op::ResponseCode::NotAuth
    );

    let key = node.ok(
        "POST",
        &format!("/accounts/{account}/secondary_dns/tsigs"),
        Some(json!({"name": "xfr-key.", "algo": "hmac-sha256.", "secret": SECRET})),
    );
    // Knot's port is chosen when it starts; create the peer after, then point the zone at it.
    let knot = Knot::start_secondary("xfr.test", dns, ("xfr-key", SECRET));
    let peer = node.ok(
        "POST",
        &format!("/accounts/{account}/secondary_dns/peers"),
        Some(json!({"name": "knot", "ip": "127.0.0.1", "port": knot.addr.port(), "tsig_id": key["id"], "ixfr_enable": true})),
    );
    node.ok(
        "POST",
        &format!("/zones/{zone}/secondary_dns/outgoing"),
        Some(json!({"name": "xfr.test", "peers": [peer["id"]]})),
    );
    let serial = || {
        node.ok("GET", &format!("/zones/{zone}"), None)["serial"]
            .as_u64()
            .expect("serial") as u32
    };
    let primary_serial = serial();
    wait_serial(&knot, primary_serial);
    // Full transfers Knot completed: the first one, and another one it may have started before
    // the first was applied (a retry of its refused attempt racing the NOTIFY); both are done
    // once it has settled.
    let full_transfers = || {
        knot.log()
            .lines()
            // Completed ones: an attempt Knot makes before the zone lists it as a secondary is
            // refused and is not a transfer.
            .filter(|l| l.contains("AXFR, incoming") && l.contains("finished"))
            .count()
    };
    std::thread::sleep(Duration::from_millis(500));
    let initial = full_transfers();
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
    assert_eq!(
        full_transfers(),
        initial,
        "every change after the first transfer applies as an IXFR (no fallback to AXFR)"
    );
    let log = knot.log();
    assert!(
        log.contains("IXFR, incoming") && log.contains("notify"),
        "Knot should have been notified and used IXFR:\n{log}"
    );
}
