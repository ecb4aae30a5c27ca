//! Names holding more records than a message can carry: answered as Knot answers them (UDP:
//! truncated; TCP: whatever fits, or SERVFAIL when the answer itself cannot), and in time that
//! does not grow with the number of records.

mod common;

use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use parapet_dns::{DnsIndex, EdgeAddrs, Limits, Transport, answer_query};
use serde_json::{Value, json};

fn index() -> DnsIndex {
    let mut bodies: Vec<Value> = Vec::new();
    for i in 0..20_000 {
        bodies.push(json!({"type": "TXT", "name": "huge", "content": format!("v{i:05}")}));
    }
    bodies.push(json!({"type": "CNAME", "name": "tohuge", "content": "huge.big.test"}));
    // More mail hosts (and their addresses) than a message holds, every name compressed.
    for i in 0..1500 {
        let host = format!("mx{i}.many");
        bodies.push(json!({"type": "MX", "name": "many", "content": format!("{host}.big.test"), "priority": i}));
        bodies.push(
            json!({"type": "A", "name": host, "content": format!("10.1.{}.{}", i / 256, i % 256)}),
        );
        bodies.push(json!({"type": "AAAA", "name": host, "content": format!("2001:db8:1::{i:x}")}));
    }
    // A delegation whose second nameserver's glue cannot fit.
    bodies.push(json!({"type": "NS", "name": "deleg", "content": "ns1.deleg.big.test"}));
    bodies.push(json!({"type": "NS", "name": "deleg", "content": "ns2.deleg.big.test"}));
    bodies.push(json!({"type": "A", "name": "ns1.deleg", "content": "10.2.0.1"}));
    for i in 0..6000 {
        bodies.push(json!({"type": "A", "name": "ns2.deleg", "content": format!("10.3.{}.{}", i / 250, i % 250 + 1)}));
    }
    // A delegation whose glue comes after a large set of addresses outside the cut.
    bodies.push(json!({"type": "NS", "name": "deleg2", "content": "a.other.big.test"}));
    bodies.push(json!({"type": "NS", "name": "deleg2", "content": "ns.deleg2.big.test"}));
    bodies.push(json!({"type": "A", "name": "ns.deleg2", "content": "10.4.0.1"}));
    for i in 0..46 {
        bodies
            .push(json!({"type": "A", "name": "a.other", "content": format!("10.5.0.{}", i + 1)}));
    }
    // A mail exchanger whose addresses do not fit a UDP answer's additional section.
    bodies.push(
        json!({"type": "MX", "name": "wide", "content": "mail.wide.big.test", "priority": 10}),
    );
    for i in 0..120 {
        bodies.push(
            json!({"type": "A", "name": "mail.wide", "content": format!("10.6.0.{}", i + 1)}),
        );
    }
    // Service parameters given out of key order (the wire wants them in order).
    bodies.push(json!({"type": "HTTPS", "name": "svc", "content": "1 . port=443 alpn=h2"}));
    common::index_of("big.test", &bodies, &EdgeAddrs::default())
}

fn ask(index: &DnsIndex, name: &str, qtype: RecordType, transport: Transport) -> Message {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    query.set_edns(Edns::new());
    let packet = query.to_vec().expect("query");
    let answered =
        answer_query(index, &packet, transport, Limits::default(), None).expect("answer");
    Message::from_vec(&answered.bytes).expect("response")
}

#[test]
fn names_with_more_records_than_a_message_holds_are_answered_as_knot_answers_them() {
    let index = index();
    // UDP: nothing of the RRset, truncated (a CNAME before it is kept).
    let r = ask(&index, "huge.big.test.", RecordType::TXT, Transport::Udp);
    assert!(r.metadata.truncation && r.metadata.authoritative && r.answers.is_empty());
    let r = ask(&index, "tohuge.big.test.", RecordType::TXT, Transport::Udp);
    assert!(r.metadata.truncation);
    assert_eq!(r.answers.len(), 1, "the CNAME");
    // TCP: an RRset larger than any message is a server failure, as Knot answers it.
    for name in ["huge.big.test.", "tohuge.big.test."] {
        let r = ask(&index, name, RecordType::TXT, Transport::Tcp);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{name}");
        assert!(!r.metadata.authoritative && r.answers.is_empty());
    }
    let r = ask(&index, "huge.big.test.", RecordType::ANY, Transport::Tcp);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // TCP: an answer that fits is whole; the addresses of its mail hosts that do not fit are
    // left out, without truncation.
    let r = ask(&index, "many.big.test.", RecordType::MX, Transport::Tcp);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 1500);
    let addresses = r.additionals.len();
    assert!(
        addresses > 1000 && addresses < 3000,
        "{addresses} addresses"
    );
    // A referral whose glue does not fit is truncated, over TCP too (not a failure), with the
    // glue that fits.
    for transport in [Transport::Udp, Transport::Tcp] {
        let r = ask(&index, "x.deleg.big.test.", RecordType::A, transport);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.truncation && !r.metadata.authoritative);
        assert_eq!(r.authorities.len(), 2);
        assert_eq!(r.additionals.len(), 1, "ns1's address");
    }
}

#[test]
fn glue_after_a_set_that_does_not_fit_is_kept_without_truncation() {
    let index = index();
    let r = ask(&index, "x.deleg2.big.test.", RecordType::A, Transport::Udp);
    assert!(!r.metadata.truncation, "{:?}", r.metadata);
    assert_eq!(r.authorities.len(), 2);
    let glue: Vec<String> = r.additionals.iter().map(|a| a.name.to_string()).collect();
    assert_eq!(glue, ["ns.deleg2.big.test."]);
}

#[test]
fn service_parameters_given_out_of_order_are_answered_in_order() {
    let index = index();
    let r = ask(&index, "svc.big.test.", RecordType::HTTPS, Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    let text = r.answers[0].data.to_string();
    assert!(
        text.find("alpn")
            .is_some_and(|a| text.find("port").is_some_and(|p| a < p)),
        "{text}"
    );
}

#[test]
fn a_name_with_twenty_thousand_records_costs_no_more_than_a_small_one() {
    let index = index();
    let time = |name: &str, qtype: RecordType| {
        let started = Instant::now();
        for transport in [Transport::Udp, Transport::Tcp] {
            for _ in 0..100 {
                ask(&index, name, qtype, transport);
            }
        }
        started.elapsed()
    };
    let small = time("mx1.many.big.test.", RecordType::A);
    let huge = time("huge.big.test.", RecordType::TXT);
    // Building all 20,000 records for each answer made it about 80 times slower.
    assert!(
        huge < small * 10 + Duration::from_millis(100),
        "200 answers: {huge:?} for the large name, {small:?} for a small one"
    );
}

#[test]
fn an_answer_that_left_additional_records_out_is_not_reused_for_a_larger_limit() {
    let index = index();
    let udp = ask(&index, "wide.big.test", RecordType::MX, Transport::Udp);
    assert_eq!(udp.answers.len(), 1);
    assert!(udp.additionals.len() < 120, "the addresses cannot all fit");
    assert!(
        !udp.metadata.truncation,
        "additional data is left out without TC"
    );
    // Over TCP the addresses fit: the UDP answer, cached, must not stand in for it.
    let tcp = ask(&index, "wide.big.test", RecordType::MX, Transport::Tcp);
    let addresses = tcp
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .count();
    assert_eq!(addresses, 120);
}
