//! The DNS server end to end: proxied answers as Cloudflare gives them, and robustness against
//! malformed queries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parapet_testkit::dns::{Mode, ask, build, serving_node, tcp, udp, udp_raw};
use parapet_testkit::{Node, NodeOptions, eventually};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

fn edge_node(activation: &str) -> Node {
    Node::start(NodeOptions::new(BIN).args([
        "--activation",
        activation,
        "--dns-listen",
        "127.0.0.1:0",
        "--edge-ipv4",
        "203.0.113.10",
        "--edge-ipv4",
        "203.0.113.11",
        "--edge-ipv6",
        "2001:db8:e::10",
        "--dns-rrl-rate",
        "0",
    ]))
}

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            RData::CNAME(c) => Some(format!("CNAME {}", c.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn wait_served(dns: SocketAddr, name: &str) {
    eventually(Duration::from_secs(5), "the DNS index to catch up", || {
        ask(dns, name, RecordType::A).metadata.response_code != ResponseCode::NXDomain
    });
}

#[test]
fn proxied_records_answer_with_edge_addresses_and_hide_the_origin() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("shop.example");
    let rec = |body: serde_json::Value| {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body))
    };
    rec(json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true}));
    rec(json!({"type": "AAAA", "name": "v6only", "content": "2001:db8::99", "proxied": true}));
    rec(
        json!({"type": "CNAME", "name": "app", "content": "origin.hosting.example", "proxied": true}),
    );
    rec(json!({"type": "A", "name": "direct", "content": "192.0.2.2", "ttl": 120}));
    rec(json!({"type": "MX", "name": "@", "content": "direct.shop.example", "priority": 10}));
    rec(json!({"type": "TXT", "name": "www", "content": "verification=1"}));
    // The last record served means every earlier one is (changes are published in order).
    eventually(Duration::from_secs(5), "the DNS index to catch up", || {
        !ask(dns, "www.shop.example", RecordType::TXT)
            .answers
            .is_empty()
    });

    let a = ask(dns, "www.shop.example", RecordType::A);
    assert!(a.metadata.authoritative);
    assert_eq!(addresses(&a), ["203.0.113.10", "203.0.113.11"]);
    assert!(
        a.answers.iter().all(|r| r.ttl == 300),
        "proxied answers have TTL 300"
    );
    assert_eq!(
        addresses(&ask(dns, "www.shop.example", RecordType::AAAA)),
        ["2001:db8:e::10"],
        "both families, whatever the origin's"
    );
    assert_eq!(
        addresses(&ask(dns, "v6only.shop.example", RecordType::A)),
        ["203.0.113.10", "203.0.113.11"]
    );
    // A proxied CNAME is flattened: the edge's addresses, never the target.
    let app = ask(dns, "app.shop.example", RecordType::A);
    assert_eq!(addresses(&app), ["203.0.113.10", "203.0.113.11"]);
    let app_cname = ask(dns, "app.shop.example", RecordType::CNAME);
    assert!(
        app_cname.answers.is_empty(),
        "the CNAME target stays hidden"
    );
    // Non-proxied and non-proxiable records answer normally.
    let direct = ask(dns, "direct.shop.example", RecordType::A);
    assert_eq!(
        (addresses(&direct), direct.answers[0].ttl),
        (vec!["192.0.2.2".to_owned()], 120)
    );
    assert_eq!(
        ask(dns, "www.shop.example", RecordType::TXT).answers.len(),
        1
    );
    // The origin never appears, over UDP or TCP, in any section.
    for qtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::CNAME,
    ] {
        for name in [
            "www.shop.example",
            "app.shop.example",
            "v6only.shop.example",
        ] {
            let m = tcp(dns, &build(name, qtype, Mode::Tcp, 1)).expect("tcp answer");
            let text = format!("{:?}", m);
            for origin in ["192.0.2.1", "2001:db8::99", "origin.hosting.example"] {
                assert!(!text.contains(origin), "{origin} leaked for {name} {qtype}");
            }
        }
    }
}

#[test]
fn pending_zone_answers_proxied_records_with_their_origin() {
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "nameservers",
        "--parent-ns",
        "127.0.0.1:9",
        "--dns-listen",
        "127.0.0.1:0",
        "--edge-ipv4",
        "203.0.113.10",
        "--dns-rrl-rate",
        "0",
    ]));
    let dns = node.dns_addr();
    let zone = node.create_zone("pending.example");
    assert_eq!(
        node.ok("GET", &format!("/zones/{zone}"), None)["status"],
        "pending"
    );
    node.proxied_a(&zone, "www", "192.0.2.1");
    wait_served(dns, "www.pending.example");
    assert_eq!(
        addresses(&ask(dns, "www.pending.example", RecordType::A)),
        ["192.0.2.1"]
    );
}

#[test]
fn new_edge_addresses_move_the_serials_of_active_zones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |edge: &str| {
        Node::start(NodeOptions::new(BIN).data_dir(dir.path()).args([
            "--activation",
            "auto",
            "--dns-listen",
            "127.0.0.1:0",
            "--edge-ipv4",
            edge,
            "--dns-rrl-rate",
            "0",
        ]))
    };
    let serial = |dns: SocketAddr| match ask(dns, "moved.example", RecordType::SOA)
        .answers
        .first()
        .map(|r| &r.data)
    {
        Some(RData::SOA(soa)) => soa.serial,
        _ => 0,
    };
    let node = start("203.0.113.20");
    let zone = node.create_zone("moved.example");
    node.proxied_a(&zone, "www", "192.0.2.1");
    let dns = node.dns_addr();
    eventually(Duration::from_secs(10), "the edge's address", || {
        addresses(&ask(dns, "www.moved.example", RecordType::A)) == ["203.0.113.20"]
    });
    let first = serial(dns);
    drop(node);
    // The same addresses: the serial stays.
    let node = start("203.0.113.20");
    let dns = node.dns_addr();
    eventually(Duration::from_secs(10), "the zone served again", || {
        serial(dns) != 0
    });
    assert_eq!(serial(dns), first);
    drop(node);
    // Other addresses: secondaries must see a new serial to transfer the new answers.
    let node = start("203.0.113.21");
    let dns = node.dns_addr();
    eventually(Duration::from_secs(10), "the new address", || {
        addresses(&ask(dns, "www.moved.example", RecordType::A)) == ["203.0.113.21"]
    });
    eventually(Duration::from_secs(5), "a new serial", || {
        serial(dns) > first
    });
}

#[test]
fn changes_through_the_api_are_answered_at_once_and_serial_increases() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("live.example");
    let serial = |m: &Message| match m.answers.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        _ => 0,
    };
    eventually(Duration::from_secs(5), "zone served", || {
        ask(dns, "live.example", RecordType::SOA).answers.len() == 1
    });
    let before = serial(&ask(dns, "live.example", RecordType::SOA));
    let r = node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "new", "content": "192.0.2.5"})),
    );
    eventually(Duration::from_secs(2), "new record answered", || {
        addresses(&ask(dns, "new.live.example", RecordType::A)) == ["192.0.2.5"]
    });
    assert!(serial(&ask(dns, "live.example", RecordType::SOA)) > before);
    node.ok(
        "PATCH",
        &format!(
            "/zones/{zone}/dns_records/{}",
            r["id"].as_str().expect("id")
        ),
        Some(json!({"proxied": true})),
    );
    eventually(Duration::from_secs(2), "proxied answer", || {
        addresses(&ask(dns, "new.live.example", RecordType::A)) == ["203.0.113.10", "203.0.113.11"]
    });
    // Paused zones answer with the origin (DNS only), as on Cloudflare.
    node.ok(
        "PATCH",
        &format!("/zones/{zone}"),
        Some(json!({"paused": true})),
    );
    eventually(
        Duration::from_secs(2),
        "paused zone answers the origin",
        || addresses(&ask(dns, "new.live.example", RecordType::A)) == ["192.0.2.5"],
    );
}

#[test]
fn names_are_case_insensitive_and_the_question_case_is_echoed() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("case.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    wait_served(dns, "www.case.example");
    let m = ask(dns, "WwW.CaSe.ExAmPlE", RecordType::A);
    assert_eq!(addresses(&m), ["192.0.2.1"]);
    assert_eq!(m.queries[0].name().to_ascii(), "WwW.CaSe.ExAmPlE.");
    let outside = ask(dns, "www.not-ours.example", RecordType::A);
    assert_eq!(
        (
            outside.metadata.response_code,
            outside.metadata.authoritative
        ),
        (ResponseCode::Refused, false)
    );
}

#[test]
fn malformed_queries_get_formerr_or_are_dropped_and_the_server_keeps_answering() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("robust.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    wait_served(dns, "www.robust.example");
    let short = Duration::from_millis(300);
    // Runts and responses are dropped.
    assert!(udp_raw(dns, &[1, 2, 3], short).is_none());
    let mut response_bit = build("www.robust.example", RecordType::A, Mode::NoEdns, 9);
    response_bit[2] |= 0x80;
    assert!(udp_raw(dns, &response_bit, short).is_none());
    // A readable question followed by garbage: FORMERR with the same id.
    let mut trailing = build("www.robust.example", RecordType::A, Mode::NoEdns, 0xabcd);
    trailing.extend_from_slice(&[0xff; 40]);
    let reply = udp_raw(dns, &trailing, Duration::from_secs(2)).expect("FORMERR");
    assert_eq!((&reply[..2], reply[3] & 0x0f), (&[0xab, 0xcd][..], 1));
    // No question: FORMERR.
    let empty = [0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    let reply = udp_raw(dns, &empty, Duration::from_secs(2)).expect("FORMERR");
    assert_eq!(reply[3] & 0x0f, 1);
    // An unreadable question (a compression loop) or two questions: dropped, as Knot does.
    let looped = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01,
    ];
    assert!(udp_raw(dns, &looped, short).is_none());
    // The same with an additional record counted: not read as a signed query gone wrong.
    let mut looped_more = looped;
    looped_more[11] = 1;
    assert!(udp_raw(dns, &looped_more, short).is_none());
    let mut two = Message::from_vec(&build("www.robust.example", RecordType::A, Mode::NoEdns, 3))
        .expect("parse");
    two.queries.push(two.queries[0].clone());
    assert!(udp_raw(dns, &two.to_vec().expect("encode"), short).is_none());
    // Unknown opcode: NOTIMP. NOTIFY: NOTAUTH. EDNS version 1: BADVERS.
    let mut status = build("www.robust.example", RecordType::A, Mode::NoEdns, 4);
    status[2] = (status[2] & 0x87) | (2 << 3);
    let reply = Message::from_vec(&udp_raw(dns, &status, Duration::from_secs(2)).expect("reply"))
        .expect("parse");
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    // NOTIFY and UPDATE: nobody may notify or update this primary's zones, as Knot answers.
    for opcode in [OpCode::Notify, OpCode::Update] {
        let mut message =
            Message::from_vec(&build("robust.example", RecordType::SOA, Mode::NoEdns, 6))
                .expect("parse");
        message.metadata.op_code = opcode;
        let packet = message.to_vec().expect("encode");
        let reply =
            Message::from_vec(&udp_raw(dns, &packet, Duration::from_secs(2)).expect("reply"))
                .expect("parse");
        assert_eq!(
            (reply.metadata.op_code, reply.metadata.response_code),
            (opcode, ResponseCode::NotAuth)
        );
    }
    // Records in a query's answer and authority sections mean nothing to it: it is answered
    // (as Knot answers it).
    let mut carrying = Message::from_vec(&build(
        "www.robust.example",
        RecordType::A,
        Mode::Edns(1232),
        7,
    ))
    .expect("parse");
    let stray = Record::from_rdata(
        Name::from_ascii("www.robust.example.").expect("name"),
        300,
        RData::A(A::new(198, 51, 100, 9)),
    );
    carrying.answers.push(stray.clone());
    carrying.authorities.push(stray);
    let packet = carrying.to_vec().expect("encode");
    let reply = Message::from_vec(&udp_raw(dns, &packet, Duration::from_secs(2)).expect("reply"))
        .expect("parse");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&reply), ["192.0.2.1"]);
    let mut v1 = Message::from_vec(&build(
        "www.robust.example",
        RecordType::A,
        Mode::Edns(1232),
        5,
    ))
    .expect("parse");
    if let Some(e) = v1.edns.as_mut() {
        e.set_version(1);
    }
    let reply = Message::from_vec(
        &udp_raw(dns, &v1.to_vec().expect("encode"), Duration::from_secs(2)).expect("reply"),
    )
    .expect("parse");
    // BADVERS and BADSIG share code 16 (RFC 6891/8945); the OPT carries the upper bits.
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert!(reply.answers.is_empty());
    // Random packets (and random bytes after a valid header) never crash the server.
    let flood = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..5000 {
        let len = (next() % 300) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
        if i % 2 == 0 && packet.len() > 12 {
            packet[2] &= 0x7f;
            packet[4..6].copy_from_slice(&[0, 1]);
        }
        let _ = flood.send_to(&packet, dns);
    }
    assert_eq!(
        addresses(&ask(dns, "www.robust.example", RecordType::A)),
        ["192.0.2.1"],
        "still answering"
    );
}

#[test]
fn tcp_answers_pipelined_queries_in_order_and_truncated_udp_retries_over_tcp() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("tcp.example");
    for i in 0..30 {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(json!({"type": "TXT", "name": "big", "content": format!("{i:02} {}", "t".repeat(150))})));
    }
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    wait_served(dns, "www.tcp.example");
    eventually(Duration::from_secs(5), "all TXT records served", || {
        tcp(
            dns,
            &build("big.tcp.example", RecordType::TXT, Mode::Tcp, 1),
        )
        .is_some_and(|m| m.answers.len() == 30)
    });
    let udp_reply = udp(
        dns,
        &build("big.tcp.example", RecordType::TXT, Mode::Edns(1232), 2),
    )
    .expect("udp");
    assert!(
        udp_reply.metadata.truncation,
        "a 4.5 KB answer does not fit 1232 bytes"
    );
    // Three queries written at once on one connection, answered in order; a message that is
    // no query (QR set) among them is skipped, as Knot skips it, not the connection's end.
    let mut s = TcpStream::connect(dns).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut batch = Vec::new();
    let mut response = build("www.tcp.example", RecordType::A, Mode::Tcp, 10);
    response[2] |= 0x80;
    batch.extend_from_slice(&u16::try_from(response.len()).expect("len").to_be_bytes());
    batch.extend_from_slice(&response);
    for (id, name) in [
        (11u16, "www.tcp.example"),
        (12, "big.tcp.example"),
        (13, "nx.tcp.example"),
    ] {
        let q = build(
            name,
            if id == 12 {
                RecordType::TXT
            } else {
                RecordType::A
            },
            Mode::Tcp,
            id,
        );
        batch.extend_from_slice(&u16::try_from(q.len()).expect("len").to_be_bytes());
        batch.extend_from_slice(&q);
    }
    s.write_all(&batch).expect("write");
    for (id, answers, rcode) in [
        (11u16, 1usize, ResponseCode::NoError),
        (12, 30, ResponseCode::NoError),
        (13, 0, ResponseCode::NXDomain),
    ] {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).expect("len");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut buf).expect("body");
        let m = Message::from_vec(&buf).expect("parse");
        assert_eq!(
            (m.metadata.id, m.answers.len(), m.metadata.response_code),
            (id, answers, rcode)
        );
    }
}

#[test]
fn rate_limiting_cuts_amplification_from_a_flooding_prefix_and_spares_others() {
    let node = serving_node(BIN, 10, &[]);
    let dns = node.dns_addr();
    let zone = node.create_zone("amp.example");
    for i in 0..12 {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(json!({"type": "TXT", "name": "big", "content": format!("{i:02} {}", "a".repeat(80))})));
    }
    wait_tcp_answers(dns, "big.amp.example", RecordType::TXT, 12);
    // Spoofed-source flood from one /24 (127.0.0.0/24, many addresses) asking for a large answer.
    let query = build("big.amp.example", RecordType::TXT, Mode::Edns(1232), 99);
    let sockets: Vec<std::net::UdpSocket> = (2..50u8)
        .map(|last| {
            let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, last), 0))
                .expect("bind flooder");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let (mut sent, mut received) = (0usize, 0usize);
    let mut buf = [0u8; 4096];
    let started = std::time::Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(2) && round < 400 {
        for s in &sockets {
            if s.send_to(&query, dns).is_ok() {
                sent += query.len();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        for s in &sockets {
            while let Ok(n) = s.recv(&mut buf) {
                received += n;
            }
        }
        round += 1;
    }
    std::thread::sleep(Duration::from_millis(100));
    for s in &sockets {
        while let Ok(n) = s.recv(&mut buf) {
            received += n;
        }
    }
    let amplification = received as f64 / sent as f64;
    eprintln!(
        "RRL: flood of {sent} bytes from 127.0.0.0/24 drew {received} bytes: amplification {amplification:.3}"
    );
    assert!(sent > 20_000, "flood too small: {sent} bytes");
    assert!(
        amplification < 1.0,
        "amplification {amplification:.2} ({received} bytes out for {sent} in)"
    );
    // Another prefix still gets full answers meanwhile.
    let other = std::net::UdpSocket::bind("127.0.1.1:0").expect("bind other prefix");
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    other.send_to(&query, dns).expect("send");
    let n = other.recv(&mut buf).expect("answer for another prefix");
    let reply = Message::from_vec(&buf[..n]).expect("parse");
    assert_eq!(
        (reply.answers.len(), reply.metadata.truncation),
        (12, false)
    );
}

/// `n` queries with EDNS (payload 1232), the one with id `i` asking `question(i)`.
fn edns_queries(n: u16, question: impl Fn(u16) -> (String, RecordType)) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let (name, qtype) = question(i);
            build(&name, qtype, Mode::Edns(1232), i)
        })
        .collect()
}

/// Waits until `name` is answered over TCP with `count` records of `qtype`.
fn wait_tcp_answers(dns: SocketAddr, name: &str, qtype: RecordType, count: usize) {
    eventually(Duration::from_secs(5), "zone served", || {
        tcp(dns, &build(name, qtype, Mode::Tcp, 1)).is_some_and(|m| m.answers.len() == count)
    });
}

/// A node limiting responses to `rate` a second and serving `zone` with `www` A 192.0.2.1.
fn node_serving_www(zone: &str, rate: u32) -> Node {
    let node = serving_node(BIN, rate, &[]);
    let zone_id = node.create_zone(zone);
    node.ok(
        "POST",
        &format!("/zones/{zone_id}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    wait_tcp_answers(node.dns_addr(), &format!("www.{zone}"), RecordType::A, 1);
    node
}

/// What a burst of UDP queries from one address drew.
#[derive(Debug, Default)]
struct Drawn {
    /// Responses that were not truncated.
    full: usize,
    /// Truncated (slipped) responses.
    truncated: usize,
    /// The COOKIE option of each truncated response.
    truncated_cookies: Vec<Option<Vec<u8>>>,
    /// Seconds from the first query sent to the last answer awaited.
    seconds: f64,
}

/// Sends `queries` from `from` as fast as the socket takes them and gathers the answers until
/// none has come for 300 ms.
fn burst_from(dns: SocketAddr, from: std::net::Ipv4Addr, queries: &[Vec<u8>]) -> Drawn {
    let s = std::net::UdpSocket::bind((from, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let started = std::time::Instant::now();
    for q in queries {
        s.send_to(q, dns).expect("send");
    }
    let mut drawn = Drawn::default();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.recv(&mut buf) {
        let m = Message::from_vec(&buf[..n]).expect("parse");
        if m.metadata.truncation {
            drawn.truncated += 1;
            drawn.truncated_cookies.push(cookie_of(&m));
        } else {
            drawn.full += 1;
        }
    }
    drawn.seconds = started.elapsed().as_secs_f64();
    drawn
}

#[test]
fn floods_of_random_names_under_a_wildcard_nodata_types_and_refused_names_share_one_budget() {
    let rate = 5u32;
    let node = serving_node(BIN, rate, &[]);
    let dns = node.dns_addr();
    let zone = node.create_zone("wild.example");
    let bodies: Vec<_> = (0..12)
        .map(|i| json!({"type": "TXT", "name": "*.w", "content": format!("{i:02} {}", "a".repeat(80))}))
        .chain([json!({"type": "A", "name": "www", "content": "192.0.2.1"})])
        .collect();
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records/batch"),
        Some(json!({ "posts": bodies })),
    );
    wait_tcp_answers(dns, "x.w.wild.example", RecordType::TXT, 12);
    // Each flood comes from its own /24, so each starts with a full budget; the allowance is
    // the burst plus what the rate refills meanwhile.
    let allowed = |d: &Drawn| (f64::from(rate) * (1.0 + d.seconds)).ceil() as usize + 1;
    let n = 120u16;
    // Random names under the wildcard, each answered with ~1 kB of TXT records.
    let wildcard = edns_queries(n, |i| {
        (
            format!("r{i}x{}.w.wild.example", u32::from(i) * 7919),
            RecordType::TXT,
        )
    });
    let drawn = burst_from(dns, std::net::Ipv4Addr::new(127, 0, 20, 1), &wildcard);
    eprintln!("wildcard flood: {drawn:?}");
    assert!(
        drawn.full <= allowed(&drawn),
        "wildcard answers for random names are limited as one name: {drawn:?}"
    );
    assert!(drawn.truncated > 0, "and slipped: {drawn:?}");
    // NODATA for one name, the type rotating.
    let types = [
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::CAA,
        RecordType::NAPTR,
        RecordType::SSHFP,
        RecordType::TLSA,
    ];
    let nodata = edns_queries(n, |i| {
        (
            "www.wild.example".to_owned(),
            types[usize::from(i) % types.len()],
        )
    });
    let drawn = burst_from(dns, std::net::Ipv4Addr::new(127, 0, 21, 1), &nodata);
    eprintln!("NODATA flood: {drawn:?}");
    assert!(
        drawn.full <= allowed(&drawn),
        "NODATA answers are limited whatever the type: {drawn:?}"
    );
    // Names of zones served elsewhere: REFUSED, one budget whatever the name.
    let refused = edns_queries(n, |i| (format!("n{i}.other{i}.example"), RecordType::A));
    let drawn = burst_from(dns, std::net::Ipv4Addr::new(127, 0, 22, 1), &refused);
    eprintln!("REFUSED flood: {drawn:?}");
    assert!(
        drawn.full <= allowed(&drawn),
        "errors are limited whatever the name: {drawn:?}"
    );
    // Two existing names still have a budget each.
    let names = edns_queries(20u16, |i| {
        let name = if i % 2 == 0 { "www" } else { "x.w" };
        (format!("{name}.wild.example"), RecordType::A)
    });
    let drawn = burst_from(dns, std::net::Ipv4Addr::new(127, 0, 23, 1), &names);
    assert!(
        drawn.full >= 2 * rate as usize,
        "an existing name and a wildcard each have their own budget: {drawn:?}"
    );
}

fn with_cookie(name: &str, id: u16, cookie: &[u8]) -> Vec<u8> {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let mut m =
        Message::from_vec(&build(name, RecordType::A, Mode::Edns(1232), id)).expect("parse");
    if let Some(e) = m.edns.as_mut() {
        e.options_mut()
            .insert(EdnsOption::Unknown(10, cookie.to_vec()));
    }
    m.to_vec().expect("encode")
}

fn cookie_of(m: &Message) -> Option<Vec<u8>> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.edns.as_ref()?.options().get(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

#[test]
fn dns_cookies_are_answered_and_a_valid_server_cookie_lifts_rate_limits() {
    let node = node_serving_www("cookie.example", 2);
    let dns = node.dns_addr();
    let sock = std::net::UdpSocket::bind("127.0.0.7:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let exchange = |packet: &[u8]| -> Option<Message> {
        sock.send_to(packet, dns).ok()?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    };
    // A client cookie gets the client cookie back with a 16-byte server cookie.
    let client_cookie = [9u8, 8, 7, 6, 5, 4, 3, 2];
    let first = exchange(&with_cookie("www.cookie.example", 1, &client_cookie)).expect("answer");
    let cookie = cookie_of(&first).expect("COOKIE in the response");
    assert_eq!((cookie.len(), &cookie[..8]), (24, &client_cookie[..]));
    // Made as RFC 9018 says (other servers of an anycast set verify it), with the secret kept
    // in the data directory (a restart or an upgrade keeps it).
    let kept = std::fs::read_to_string(node.data_dir.join("dns-cookie-secret")).expect("secret");
    let secret = parapet_dns::parse_secret(&kept).expect("32 hexadecimal digits");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as u32;
    assert_eq!(
        parapet_dns::Cookies::new(secret, &[]).check(
            Some(&cookie),
            "127.0.0.7".parse().expect("ip"),
            now
        ),
        parapet_dns::CookieCheck::Verified
    );
    // With the server cookie returned, every query is answered despite a 2/s limit ...
    let answered = (0..40)
        .filter(|i| {
            exchange(&with_cookie("www.cookie.example", 100 + i, &cookie))
                .is_some_and(|m| m.answers.len() == 1)
        })
        .count();
    assert_eq!(answered, 40, "verified clients are not rate limited");
    // ... while without a cookie the same client is limited.
    let plain = (0..40)
        .filter(|i| {
            exchange(&build(
                "www.cookie.example",
                RecordType::A,
                Mode::Edns(1232),
                200 + i,
            ))
            .is_some_and(|m| !m.metadata.truncation && m.answers.len() == 1)
        })
        .count();
    assert!(
        plain < 40,
        "unverified queries are limited ({plain} of 40 answered in full)"
    );
    // A malformed COOKIE option is a FORMERR, with the question and an OPT (without one, the
    // client would take the server for one that does not speak EDNS).
    let bad = exchange(&with_cookie("www.cookie.example", 300, &[1, 2, 3])).expect("FORMERR");
    assert_eq!(bad.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(bad.queries.len(), 1);
    assert!(bad.edns.is_some() && cookie_of(&bad).is_none(), "{bad:?}");

    // From clients not limited (each its own /24): a query with no question but a client
    // cookie learns the server cookie (RFC 7873 §5.4); without a cookie it is a FORMERR; with
    // another opcode, NOTIMP.
    let clients = std::sync::atomic::AtomicU8::new(1);
    let exchange = |packet: &[u8]| -> Option<Message> {
        let n = clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let other = std::net::UdpSocket::bind(format!("127.0.{n}.8:0")).ok()?;
        other
            .set_read_timeout(Some(Duration::from_millis(300)))
            .ok()?;
        other.send_to(packet, dns).ok()?;
        let mut buf = [0u8; 4096];
        let n = other.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    };
    let header = |opcode: u8, additional: u8| {
        vec![0x12, 0x34, opcode << 3, 0, 0, 0, 0, 0, 0, 0, 0, additional]
    };
    let mut cookie_only = header(0, 1);
    cookie_only.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8]);
    cookie_only.extend_from_slice(&client_cookie);
    let learnt = exchange(&cookie_only).expect("an answer");
    assert_eq!(learnt.metadata.response_code, ResponseCode::NoError);
    assert!(learnt.queries.is_empty() && learnt.answers.is_empty());
    let cookie = cookie_of(&learnt).expect("COOKIE in the response");
    assert_eq!((cookie.len(), &cookie[..8]), (24, &client_cookie[..]));
    let nothing = exchange(&header(0, 0)).expect("an answer");
    assert_eq!(nothing.metadata.response_code, ResponseCode::FormErr);
    let dso = exchange(&header(6, 0)).expect("an answer");
    assert_eq!(dso.metadata.response_code, ResponseCode::NotImp);
    // A DSO request as RFC 8490 writes it: TLVs after the header.
    let mut dso_tlv = header(6, 0);
    dso_tlv.extend_from_slice(&[0, 1, 0, 8, 0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30]);
    let dso = exchange(&dso_tlv).expect("an answer");
    assert_eq!(dso.metadata.response_code, ResponseCode::NotImp);
    // With an OPT, the NOTIMP carries one (RFC 6891 §7).
    let mut dso_edns = header(6, 1);
    dso_edns.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let dso = exchange(&dso_edns).expect("an answer");
    assert_eq!(dso.metadata.response_code, ResponseCode::NotImp);
    assert!(dso.edns.is_some(), "{dso:?}");
}

#[test]
fn a_limited_query_with_a_client_cookie_is_slipped_with_a_server_cookie_that_lifts_the_limit() {
    // (The default slip: every other limited answer is sent truncated.)
    let node = node_serving_www("slip.example", 2);
    let dns = node.dns_addr();
    let client_cookie = [1u8, 3, 5, 7, 9, 11, 13, 15];
    let queries: Vec<Vec<u8>> = (0..40)
        .map(|i| with_cookie("www.slip.example", i, &client_cookie))
        .collect();
    let from = std::net::Ipv4Addr::new(127, 0, 30, 1);
    let drawn = burst_from(dns, from, &queries);
    eprintln!(
        "cookie flood: {} full, {} truncated in {:.2} s",
        drawn.full, drawn.truncated, drawn.seconds
    );
    // Every other limited answer is slipped, not dropped.
    let limited = queries.len() - drawn.full;
    assert!(
        drawn.truncated.abs_diff(limited / 2) <= 1,
        "{} of {limited} limited answers slipped",
        drawn.truncated
    );
    // Each slipped answer carries the client cookie and a server cookie for this address ...
    for cookie in &drawn.truncated_cookies {
        let cookie = cookie.as_ref().expect("COOKIE in a slipped answer");
        assert_eq!((cookie.len(), &cookie[..8]), (24, &client_cookie[..]));
    }
    // ... with which the client is answered in full despite the limit.
    let cookie = drawn.truncated_cookies[0].clone().expect("cookie");
    let sock = std::net::UdpSocket::bind((from, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    for i in 0..10 {
        sock.send_to(&with_cookie("www.slip.example", 100 + i, &cookie), dns)
            .expect("send");
        let mut buf = [0u8; 4096];
        let n = sock
            .recv(&mut buf)
            .expect("an answer with the server cookie");
        let m = Message::from_vec(&buf[..n]).expect("parse");
        assert_eq!((m.metadata.truncation, m.answers.len()), (false, 1));
    }
}

#[test]
fn an_apex_cname_is_flattened_to_the_addresses_of_its_target() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let target = node.create_zone("hosting.example");
    node.ok(
        "POST",
        &format!("/zones/{target}/dns_records"),
        Some(json!({"type": "CNAME", "name": "lb", "content": "pool.hosting.example", "ttl": 600})),
    );
    node.ok(
        "POST",
        &format!("/zones/{target}/dns_records"),
        Some(json!({"type": "A", "name": "pool", "content": "192.0.2.80", "ttl": 900})),
    );
    node.ok(
        "POST",
        &format!("/zones/{target}/dns_records"),
        Some(json!({"type": "AAAA", "name": "pool", "content": "2001:db8::80", "ttl": 900})),
    );
    let zone = node.create_zone("customer.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "CNAME", "name": "@", "content": "lb.hosting.example", "ttl": 3600})),
    );
    // Mail and TXT records stand beside it (addresses cannot: the CNAME takes their place).
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "MX", "name": "@", "content": "mx.hosting.example", "priority": 10})),
    );
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "TXT", "name": "@", "content": "v=spf1 -all"})),
    );
    let (status, refused) = node.call(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "@", "content": "192.0.2.1"})),
    );
    assert_eq!(
        (status, &refused["errors"][0]["code"]),
        (400, &json!(81054)),
        "{refused}"
    );
    eventually(Duration::from_secs(5), "flattened apex", || {
        addresses(&ask(dns, "customer.example", RecordType::A)) == ["192.0.2.80"]
    });
    let a = ask(dns, "customer.example", RecordType::A);
    assert!(
        a.answers
            .iter()
            .all(|r| r.record_type() == RecordType::A && r.ttl == 600),
        "addresses only, lowest TTL of the chain"
    );
    assert_eq!(
        addresses(&ask(dns, "customer.example", RecordType::AAAA)),
        ["2001:db8::80"]
    );
    assert_eq!(
        ask(dns, "customer.example", RecordType::SOA).answers.len(),
        1,
        "the apex keeps its SOA"
    );
    assert_eq!(
        ask(dns, "customer.example", RecordType::NS).answers.len(),
        2
    );
    assert!(
        ask(dns, "customer.example", RecordType::CNAME)
            .answers
            .is_empty()
    );
    let mx = ask(dns, "customer.example", RecordType::MX);
    assert_eq!(mx.answers.len(), 1, "{mx:?}");
    assert_eq!(mx.answers[0].record_type(), RecordType::MX);
    let txt = ask(dns, "customer.example", RecordType::TXT);
    assert_eq!(txt.answers.len(), 1, "{txt:?}");
}

#[test]
fn silent_tcp_connections_are_limited_per_client_and_closed_when_idle() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("tcpidle.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    wait_served(dns, "www.tcpidle.example");
    // 40 connections that never send: the ones past the per-client limit are closed at once.
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect_timeout(&dns, Duration::from_secs(2)).expect("connect"))
        .collect();
    let mut closed_at_once = 0;
    for s in &silent {
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut b = [0u8; 1];
        if matches!((&*s).read(&mut b), Ok(0)) {
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, 8,
        "32 silent connections per client are kept, the rest closed"
    );
    // A client of another prefix (127.0.1.0/24) is still served over TCP meanwhile.
    let other = tcp_from(dns, [127, 0, 1, 2]);
    assert!(
        answers_over(&other, "www.tcpidle.example"),
        "answer for another client"
    );
    // Idle connections are closed after the idle timeout (10 s).
    std::thread::sleep(Duration::from_secs(11));
    let still_open = silent
        .iter()
        .filter(|s| {
            let mut b = [0u8; 1];
            !matches!((&**s).read(&mut b), Ok(0))
        })
        .count();
    assert_eq!(still_open, 0, "idle connections are closed");
}

/// A TCP connection to `dns` from `ip`.
fn tcp_from(dns: SocketAddr, ip: [u8; 4]) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from((ip, 0)).into())
        .expect("bind a loopback address");
    socket.connect(&dns.into()).expect("connect");
    TcpStream::from(socket)
}

/// Whether `name` is answered over `stream` within 2 s.
fn answers_over(stream: &TcpStream, name: &str) -> bool {
    let q = build(name, RecordType::A, Mode::Tcp, 5);
    let mut framed = u16::try_from(q.len()).expect("len").to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut len = [0u8; 2];
    let mut stream = stream;
    stream.write_all(&framed).is_ok() && stream.read_exact(&mut len).is_ok()
}

#[test]
fn tcp_connections_are_limited_per_prefix_not_per_address() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("tcpprefix.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    wait_served(dns, "www.tcpprefix.example");
    // 40 silent connections from 40 addresses of 127.0.5.0/24: one client, 32 kept.
    let silent: Vec<TcpStream> = (1..=40).map(|i| tcp_from(dns, [127, 0, 5, i])).collect();
    let closed_at_once = silent
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut b = [0u8; 1];
            matches!((&**s).read(&mut b), Ok(0))
        })
        .count();
    assert_eq!(
        closed_at_once, 8,
        "32 connections per prefix are kept, the rest closed"
    );
    // Another address of the prefix has no slot left; another prefix does.
    assert!(!answers_over(
        &tcp_from(dns, [127, 0, 5, 99]),
        "www.tcpprefix.example"
    ));
    assert!(answers_over(
        &tcp_from(dns, [127, 0, 6, 1]),
        "www.tcpprefix.example"
    ));
    // A slot freed in the prefix is taken again.
    drop(silent);
    eventually(Duration::from_secs(5), "the prefix's slots freed", || {
        answers_over(&tcp_from(dns, [127, 0, 5, 99]), "www.tcpprefix.example")
    });
}

/// A TCP connection from 127.0.0.1 with small socket buffers, so that a peer that stops reading
/// stops the other side soon.
fn small_buffer_connection(dns: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.set_send_buffer_size(4096).expect("sndbuf");
    socket.connect(&dns.into()).expect("connect");
    TcpStream::from(socket)
}

/// A connection that writes `queries` over and over and reads nothing, returned once the server
/// has stopped taking them (its answers are never read, so its writes block).
fn write_until_blocked(dns: SocketAddr, queries: &[u8]) -> TcpStream {
    let s = small_buffer_connection(dns);
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match (&s).write_all(queries) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return s;
            }
            Err(e) => panic!("the server closed a connection that was busy: {e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server kept taking queries it cannot answer"
        );
    }
}

#[test]
fn clients_that_send_queries_and_never_read_are_closed_and_free_their_slots() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("tcpwrite.example");
    let bodies: Vec<_> = (0..20)
        .map(|i| json!({"type": "TXT", "name": "big", "content": format!("{i:02} {}", "w".repeat(400))}))
        .collect();
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records/batch"),
        Some(json!({ "posts": bodies })),
    );
    let query = build("big.tcpwrite.example", RecordType::TXT, Mode::Tcp, 9);
    eventually(Duration::from_secs(5), "the TXT records served", || {
        tcp(dns, &query).is_some_and(|m| m.answers.len() == 20)
    });
    // 50 queries of an 8 KB answer at a time.
    let mut queries = Vec::new();
    for _ in 0..50 {
        queries.extend_from_slice(&u16::try_from(query.len()).expect("len").to_be_bytes());
        queries.extend_from_slice(&query);
    }
    // As many connections as one client may hold, all stuck at once.
    let started = std::time::Instant::now();
    let stuck: Vec<TcpStream> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..32)
            .map(|_| scope.spawn(|| write_until_blocked(dns, &queries)))
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect()
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connections were stuck in {:?}",
        started.elapsed()
    );
    let stuck_at = std::time::Instant::now();
    // The client's limit is reached: one more connection is closed at once.
    let extra = TcpStream::connect_timeout(&dns, Duration::from_secs(2)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert!(
        matches!((&extra).read(&mut [0u8; 1]), Ok(0)),
        "a 33rd connection is closed at once"
    );
    // Within the idle timeout (10 s) and some slack, the stuck connections are closed and the
    // client is served again.
    let served_again = || {
        let Ok(mut s) = TcpStream::connect_timeout(&dns, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut framed = u16::try_from(query.len())
            .expect("len")
            .to_be_bytes()
            .to_vec();
        framed.extend_from_slice(&query);
        let mut len = [0u8; 2];
        s.write_all(&framed).is_ok() && s.read_exact(&mut len).is_ok()
    };
    while !served_again() {
        assert!(
            stuck_at.elapsed() < Duration::from_secs(14),
            "connections that never read hold their slots"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually(
        Duration::from_secs(14).saturating_sub(stuck_at.elapsed()),
        "every connection that never read to be closed",
        || {
            stuck.iter().all(|s| match (&*s).write(&queries[..2]) {
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            })
        },
    );
}

#[test]
fn an_apex_cname_to_an_outside_name_is_flattened_through_the_resolver_and_follows_its_ttl() {
    assert!(
        parapet_testkit::Knot::available(),
        "knotd is required (install Debian's knot; .ci/run does)"
    );
    let zone_text = |serial: u32, ip: &str| {
        format!(
            "$ORIGIN external.test.\n$TTL 300\n@ SOA ns.external.test. h.external.test. {serial} 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\nwww 5 A {ip}\n"
        )
    };
    let outside = parapet_testkit::Knot::start("external.test", &zone_text(1, "192.0.2.200"));
    let node = serving_node(BIN, 0, &["--resolver", &outside.addr.to_string()]);
    let dns = node.dns_addr();
    let zone = node.create_zone("apex.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "CNAME", "name": "@", "content": "www.external.test"})),
    );
    eventually(
        Duration::from_secs(10),
        "apex flattened through the resolver",
        || addresses(&ask(dns, "apex.example", RecordType::A)) == ["192.0.2.200"],
    );
    assert!(
        ask(dns, "apex.example", RecordType::CNAME)
            .answers
            .is_empty()
    );
    // The answer is cached for its TTL (5 s), then looked up again.
    outside.set_zone(&zone_text(2, "192.0.2.201"), 2);
    eventually(
        Duration::from_secs(20),
        "the new address after the TTL",
        || addresses(&ask(dns, "apex.example", RecordType::A)) == ["192.0.2.201"],
    );
}

/// Asks for the name made of `labels` (hickory's text parser refuses a label starting with
/// '-', which the wire carries).
fn ask_labels(dns: SocketAddr, labels: &[&[u8]], qtype: RecordType) -> Message {
    let mut query =
        Message::from_vec(&build("stand.in", qtype, Mode::Edns(1232), 8)).expect("own query");
    query.queries[0].set_name(Name::from_labels(labels.iter().copied()).expect("name"));
    udp(dns, &query.to_vec().expect("encode")).expect("DNS response")
}

fn soa_owner(m: &Message) -> Option<String> {
    m.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.to_ascii())
}

#[test]
fn names_are_found_by_their_labels_not_their_escaped_text() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let zone = node.create_zone("labels.example");
    let rec = |body: serde_json::Value| {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body))
    };
    rec(json!({"type": "NS", "name": "b", "content": "ns.elsewhere.example"}));
    rec(json!({"type": "A", "name": "*.w", "content": "192.0.2.8"}));
    rec(json!({"type": "A", "name": "-foo", "content": "192.0.2.9"}));
    let hyphen: &[&[u8]] = &[b"-FOO", b"labels", b"example"];
    eventually(Duration::from_secs(5), "the DNS index to catch up", || {
        ask_labels(dns, hyphen, RecordType::A)
            .metadata
            .response_code
            == ResponseCode::NoError
    });

    // A label starting with '-' (hickory writes it `\-` as text).
    let m = ask_labels(dns, hyphen, RecordType::A);
    assert_eq!(
        (m.metadata.response_code, addresses(&m)),
        (ResponseCode::NoError, vec!["192.0.2.9".to_owned()])
    );
    assert_eq!(m.queries[0].name().to_ascii(), "\\-FOO.labels.example.");

    // A dot inside a label is no label boundary: `a.b` is one label under the apex, which is
    // its closest encloser, not a name below the delegation `b`.
    let m = ask(dns, "a\\.b.labels.example", RecordType::A);
    assert_eq!(
        (
            m.metadata.response_code,
            m.metadata.authoritative,
            soa_owner(&m).as_deref()
        ),
        (ResponseCode::NXDomain, true, Some("labels.example."))
    );
    // Nor below `w`, whose wildcard would answer it.
    let m = ask(dns, "a\\.w.labels.example", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Below such a label the wildcard of the closest encloser still answers.
    let m = ask(dns, "a\\.b.w.labels.example", RecordType::A);
    assert_eq!(addresses(&m), ["192.0.2.8"]);
    // And a name whose last labels only read as the zone's is outside it.
    let m = ask(dns, "x.labels\\.example", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn ds_at_the_apex_of_a_nested_zone_is_answered_by_the_parent_zone() {
    let node = edge_node("auto");
    let dns = node.dns_addr();
    let parent = node.create_zone("nest.example");
    let child = node.create_zone("sub.nest.example");
    let ds = "12345 13 2 3490A6806D47F17A34C29E2CE80E8A999FFBE4BE2F3A1C9A96B4F1B3A1D2E0F8";
    for (zone, body) in [
        (
            &parent,
            json!({"type": "NS", "name": "sub", "content": "ns1.parapet.test"}),
        ),
        (&parent, json!({"type": "DS", "name": "sub", "content": ds})),
        (
            &child,
            json!({"type": "A", "name": "www", "content": "192.0.2.7"}),
        ),
    ] {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body));
    }
    wait_served(dns, "www.sub.nest.example");
    eventually(Duration::from_secs(5), "the DS to be served", || {
        !ask(dns, "sub.nest.example", RecordType::DS)
            .answers
            .is_empty()
    });

    let m = ask(dns, "sub.nest.example", RecordType::DS);
    assert_eq!(
        (m.metadata.response_code, m.metadata.authoritative),
        (ResponseCode::NoError, true)
    );
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::DS);
    assert_eq!(m.answers[0].name.to_ascii(), "sub.nest.example.");
    // Other types at the apex are the child's; DS below it too.
    let m = ask(dns, "sub.nest.example", RecordType::SOA);
    assert_eq!(m.answers[0].name.to_ascii(), "sub.nest.example.");
    let m = ask(dns, "www.sub.nest.example", RecordType::DS);
    assert_eq!(soa_owner(&m).as_deref(), Some("sub.nest.example."));
    // A zone whose parent is not hosted answers DS at its apex itself.
    let m = ask(dns, "nest.example", RecordType::DS);
    assert_eq!(
        (m.metadata.response_code, soa_owner(&m).as_deref()),
        (ResponseCode::NoError, Some("nest.example."))
    );
}

#[test]
fn a_node_given_an_identity_tells_which_node_answered() {
    let node = Node::start(
        NodeOptions::new(BIN)
            .args(["--activation", "auto", "--dns-listen", "127.0.0.1:0"])
            .config("dns_identity = \"edge-ams-1\"\n"),
    );
    let dns = node.dns_addr();
    let mut query = Message::query();
    let mut question = hickory_proto::op::Query::query(
        Name::from_ascii("id.server.").expect("name"),
        RecordType::TXT,
    );
    question.set_query_class(hickory_proto::rr::DNSClass::CH);
    query.add_query(question);
    let answer = udp(dns, &query.to_vec().expect("query")).expect("an answer");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
    assert_eq!(answer.answers[0].data.to_string(), "edge-ams-1");
}
