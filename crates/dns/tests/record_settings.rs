//! Per-record settings, as Cloudflare applies them: a proxied name whose record says
//! `ipv4_only` (or `ipv6_only`) answers with the edge's addresses of that family alone.

mod common;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use parapet_dns::{EdgeAddrs, Limits, Transport, answer_query};
use serde_json::json;

#[test]
fn a_proxied_name_answers_only_the_family_its_setting_keeps() {
    let edge = EdgeAddrs {
        v4: vec!["203.0.113.1".parse().expect("ip")],
        v6: vec!["2001:db8::1".parse().expect("ip")],
    };
    let records = [
        json!({"type": "A", "name": "four", "content": "192.0.2.1", "proxied": true,
               "settings": {"ipv4_only": true}}),
        json!({"type": "AAAA", "name": "six", "content": "2001:db8::9", "proxied": true,
               "settings": {"ipv6_only": true}}),
        json!({"type": "A", "name": "both", "content": "192.0.2.2", "proxied": true}),
    ];
    let index = common::index_of("set.test", &records, &edge);
    let answers = |name: &str, qtype: RecordType| -> usize {
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        let packet = query.to_vec().expect("query");
        let answered =
            answer_query(&index, &packet, Transport::Udp, Limits::default(), None).expect("answer");
        Message::from_vec(&answered.bytes)
            .expect("response")
            .answers
            .len()
    };
    assert_eq!(answers("four.set.test.", RecordType::A), 1);
    assert_eq!(answers("four.set.test.", RecordType::AAAA), 0);
    assert_eq!(answers("six.set.test.", RecordType::A), 0);
    assert_eq!(answers("six.set.test.", RecordType::AAAA), 1);
    assert_eq!(answers("both.set.test.", RecordType::A), 1);
    assert_eq!(answers("both.set.test.", RecordType::AAAA), 1);
}
