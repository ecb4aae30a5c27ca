//! The additional section: addresses of the names an answer points to, when the zone has them
//! (MX, NS, SRV, and SVCB and HTTPS targets as RFC 9460 §4.1 asks).

mod common;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use parapet_dns::{DnsIndex, EdgeAddrs, Limits, Transport, answer_query};
use serde_json::json;

fn index() -> DnsIndex {
    let bodies = vec![
        json!({"type": "SVCB", "name": "_8443._https.api", "content": "1 host.svc.test port=8443"}),
        json!({"type": "HTTPS", "name": "www", "content": "1 host.svc.test. alpn=h2"}),
        json!({"type": "HTTPS", "name": "self", "content": "1 . alpn=h2"}),
        json!({"type": "A", "name": "self", "content": "10.0.0.9"}),
        json!({"type": "MX", "name": "mail", "content": "host.svc.test", "priority": 10}),
        json!({"type": "A", "name": "host", "content": "10.0.0.6"}),
        json!({"type": "AAAA", "name": "host", "content": "2001:db8::6"}),
    ];
    common::index_of("svc.test", &bodies, &EdgeAddrs::default())
}

fn additional_of(index: &DnsIndex, name: &str, qtype: RecordType) -> Vec<(String, RecordType)> {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    query.set_edns(Edns::new());
    let packet = query.to_vec().expect("query");
    let answered =
        answer_query(index, &packet, Transport::Udp, Limits::default(), None).expect("answer");
    let response = Message::from_vec(&answered.bytes).expect("response");
    assert_eq!(response.answers.len(), 1, "{name} {qtype}");
    let mut found: Vec<_> = response
        .additionals
        .iter()
        .map(|r| (r.name.to_ascii(), r.record_type()))
        .collect();
    found.sort();
    found
}

#[test]
fn svcb_and_https_targets_in_the_zone_come_with_their_addresses() {
    let index = index();
    let host = vec![
        ("host.svc.test.".to_owned(), RecordType::A),
        ("host.svc.test.".to_owned(), RecordType::AAAA),
    ];
    assert_eq!(
        additional_of(&index, "mail.svc.test.", RecordType::MX),
        host
    );
    assert_eq!(
        additional_of(&index, "_8443._https.api.svc.test.", RecordType::SVCB),
        host
    );
    assert_eq!(
        additional_of(&index, "www.svc.test.", RecordType::HTTPS),
        host
    );
    // "." is the owner itself: nothing more, as Knot answers.
    assert!(additional_of(&index, "self.svc.test.", RecordType::HTTPS).is_empty());
}

/// What rate limiting and the answer cache count an answer to `name` `qtype` as.
fn kind_of(index: &DnsIndex, name: &str, qtype: RecordType) -> parapet_dns::ResponseKind {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let packet = query.to_vec().expect("query");
    answer_query(index, &packet, Transport::Udp, Limits::default(), None)
        .expect("answer")
        .kind
}

#[test]
fn a_cname_answering_types_its_target_lacks_counts_once_per_name_not_per_type() {
    let bodies = vec![
        json!({"type": "CNAME", "name": "www", "content": "elsewhere.example.net"}),
        json!({"type": "CNAME", "name": "app", "content": "host.svc.test"}),
        json!({"type": "A", "name": "host", "content": "10.0.0.6"}),
    ];
    let index = common::index_of("svc.test", &bodies, &EdgeAddrs::default());
    // Any of 65,536 types gets the CNAME alone: one kind for them all, and not data (the
    // answer cache holds such answers within the share of made-up ones).
    let kinds: Vec<_> = [1000u16, 1001, 65_000]
        .iter()
        .map(|&t| kind_of(&index, "www.svc.test.", RecordType::from(t)))
        .collect();
    assert!(kinds.iter().all(|k| *k == kinds[0]), "{kinds:?}");
    assert!(!kinds[0].is_data());
    assert_eq!(
        kind_of(&index, "app.svc.test.", RecordType::TXT),
        kind_of(&index, "app.svc.test.", RecordType::MX)
    );
    // A chain that ends in data of the type asked is an answer with data, per type; so is the
    // CNAME asked for itself.
    let a = kind_of(&index, "app.svc.test.", RecordType::A);
    assert!(a.is_data());
    assert_ne!(a, kind_of(&index, "app.svc.test.", RecordType::TXT));
    assert!(kind_of(&index, "www.svc.test.", RecordType::CNAME).is_data());
}
