//! Property tests of the answer path: whatever bytes arrive, the engine never panics, and any
//! response it sends is a response to that query.

mod common;

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use parapet_dns::{Cookies, DnsIndex, EdgeAddrs, Limits, Transport, answer_query};
use proptest::prelude::*;
use serde_json::json;

fn index() -> Arc<DnsIndex> {
    let records = [
        json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true}),
        json!({"type": "TXT", "name": "www", "content": "x".repeat(900)}),
        json!({"type": "CNAME", "name": "alias", "content": "www.example.test"}),
        json!({"type": "A", "name": "*.wild", "content": "192.0.2.2"}),
        json!({"type": "NS", "name": "sub", "content": "ns.sub.example.test"}),
        json!({"type": "A", "name": "ns.sub", "content": "192.0.2.3"}),
        json!({"type": "MX", "name": "@", "content": "www.example.test", "priority": 10}),
    ];
    let edge = EdgeAddrs {
        v4: vec!["203.0.113.1".parse().expect("ip")],
        v6: vec![],
    };
    Arc::new(common::index_of("example.test", &records, &edge))
}

fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|_| Name::root()),
        RecordType::from(qtype),
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

fn check(index: &DnsIndex, packet: &[u8]) {
    let cookies = Cookies::new([1; 16], &[]);
    for transport in [Transport::Udp, Transport::Tcp] {
        let client = parapet_dns::Client {
            ip: "192.0.2.99".parse().expect("ip"),
            cookies: &cookies,
            now: 1_000_000,
            identity: Some("node-1"),
        };
        if let Some(out) = answer_query(index, packet, transport, Limits::default(), Some(&client))
        {
            let bytes = out.bytes;
            assert!(bytes.len() >= 12, "a response has a header");
            assert_eq!(&bytes[..2], &packet[..2], "same id");
            assert_eq!(bytes[2] & 0x80, 0x80, "QR set");
            if transport == Transport::Udp {
                assert!(
                    bytes.len() <= 1232,
                    "UDP responses fit the limit: {}",
                    bytes.len()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&index(), &packet);
    }

    #[test]
    fn mutated_queries_never_panic(
        name in prop::sample::select(vec!["www.example.test.", "alias.example.test.", "x.wild.example.test.", "a.sub.example.test.", "nope.example.test.", "example.test.", "other.org."]),
        qtype in prop::sample::select(vec![1u16, 2, 5, 6, 15, 16, 28, 33, 41, 250, 251, 252, 255, 0, 65535]),
        edns in prop::option::of(0u16..5000),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut packet = query(name, qtype, edns);
        for (at, byte) in flips {
            let i = at % packet.len();
            packet[i] ^= byte;
        }
        if cut % 4 == 0 {
            packet.truncate(cut % (packet.len() + 1));
        }
        check(&index(), &packet);
    }
}

/// A query for `www.example.test` A with an OPT holding `options` (raw, RDLEN as given).
fn with_options(options: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x43, 0x21, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["www", "example", "test"] {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    packet.extend_from_slice(&(options.len() as u16).to_be_bytes());
    packet.extend_from_slice(options);
    packet
}

#[test]
fn edns_options_are_judged_as_rfc_6891_says() {
    let index = index();
    let ask = |packet: &[u8]| {
        let out = answer_query(&index, packet, Transport::Udp, Limits::default(), None)
            .expect("an answer");
        Message::from_vec(&out.bytes).expect("response")
    };
    // An option running past the OPT's data: FORMERR, with the question and an OPT (also
    // when it claims more than the OPT holds).
    for options in [&[0u8, 10, 0, 8, 1, 2, 3, 4][..], &[0, 10, 0, 9, 1, 2]] {
        let over = ask(&with_options(options));
        assert_eq!(
            over.metadata.response_code,
            hickory_proto::op::ResponseCode::FormErr,
            "{options:?}"
        );
        assert_eq!(over.queries.len(), 1, "{options:?}");
        assert!(over.edns.is_some(), "{options:?}");
    }
    // Client subnet, which this server does not use, is ignored, even one the parser could
    // not read (an unknown family, a prefix longer than the address); other options stay.
    for subnet in [
        &[0u8, 8, 0, 4, 0, 3, 0, 0][..],
        &[0, 8, 0, 8, 0, 1, 33, 0, 10, 0, 0, 1],
    ] {
        let mut options = subnet.to_vec();
        options.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let answered = ask(&with_options(&options));
        assert_eq!(
            answered.metadata.response_code,
            hickory_proto::op::ResponseCode::NoError,
            "{subnet:?}"
        );
        assert_eq!(answered.answers.len(), 1, "{subnet:?}");
    }
}

#[test]
fn transfers_over_udp_get_the_soa_alone_or_not_implemented() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{RData, Record};
    let index = index();
    let ask = |qtype: RecordType, with_soa: bool| {
        let mut m = Message::query();
        let apex = Name::from_ascii("Example.TEST.").expect("name");
        m.add_query(Query::query(apex.clone(), qtype));
        if with_soa {
            let soa = SOA::new(apex.clone(), apex.clone(), 1, 3600, 600, 86400, 300);
            m.authorities
                .push(Record::from_rdata(apex, 0, RData::SOA(soa)));
        }
        let packet = m.to_vec().expect("encode");
        let out = answer_query(&index, &packet, Transport::Udp, Limits::default(), None)
            .expect("an answer");
        Message::from_vec(&out.bytes).expect("response")
    };
    // IXFR from an old serial: the current SOA alone (the secondary then asks over TCP).
    let ixfr = ask(RecordType::IXFR, true);
    assert_eq!(ixfr.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ixfr.answers.len(), 1);
    assert_eq!(ixfr.answers[0].record_type(), RecordType::SOA);
    assert_eq!(
        ixfr.answers[0].name.to_ascii(),
        "Example.TEST.",
        "the query's case"
    );
    assert!(ixfr.metadata.authoritative);
    // AXFR over UDP is not implemented, as Knot answers.
    let axfr = ask(RecordType::AXFR, false);
    assert_eq!(axfr.metadata.response_code, ResponseCode::NotImp);
    // An IXFR without the secondary's SOA is malformed (RFC 1995 §3), as Knot answers.
    let bare = ask(RecordType::IXFR, false);
    assert_eq!(bare.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(bare.queries.len(), 1, "the question is echoed");
}

#[test]
fn a_node_with_an_identity_says_it_when_asked_and_one_without_refuses() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::DNSClass;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let index = index();
    let cookies = Cookies::new([1; 16], &[]);
    let ask = |name: &str, class: DNSClass, qtype: RecordType, nsid: bool, identity| {
        let mut m = Message::query();
        let mut q = Query::query(Name::from_ascii(name).expect("name"), qtype);
        q.set_query_class(class);
        m.add_query(q);
        let mut e = Edns::new();
        if nsid {
            e.options_mut().insert(EdnsOption::Unknown(3, Vec::new()));
        }
        m.set_edns(e);
        let client = parapet_dns::Client {
            ip: "192.0.2.99".parse().expect("ip"),
            cookies: &cookies,
            now: 1_000_000,
            identity,
        };
        let packet = m.to_vec().expect("encode");
        let out = answer_query(
            &index,
            &packet,
            Transport::Udp,
            Limits::default(),
            Some(&client),
        )
        .expect("an answer");
        Message::from_vec(&out.bytes).expect("response")
    };
    for name in ["id.server.", "HOSTNAME.bind."] {
        let told = ask(
            name,
            DNSClass::CH,
            RecordType::TXT,
            false,
            Some("edge-ams-1"),
        );
        assert_eq!(told.metadata.response_code, ResponseCode::NoError);
        assert!(told.metadata.authoritative);
        assert_eq!(told.answers.len(), 1, "{told:?}");
        assert_eq!(told.answers[0].dns_class, DNSClass::CH);
        assert_eq!(told.answers[0].data.to_string(), "edge-ams-1");
        let refused = ask(name, DNSClass::CH, RecordType::TXT, false, None);
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    }
    // Nothing else is answered so: the version, another class.
    for (name, class) in [
        ("version.bind.", DNSClass::CH),
        ("id.server.", DNSClass::IN),
    ] {
        let refused = ask(name, class, RecordType::TXT, false, Some("edge-ams-1"));
        assert_eq!(
            refused.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
    }
    // NSID: with any answer, to a client that asks, when the node has an identity.
    let answered = ask(
        "www.example.test.",
        DNSClass::IN,
        RecordType::A,
        true,
        Some("edge-ams-1"),
    );
    let nsid = answered
        .edns
        .as_ref()
        .and_then(|e| e.options().get(EdnsCode::NSID).cloned());
    // (The codec reads it back as its own NSID type: its bytes are the identity.)
    let bytes = format!("{:?}", b"edge-ams-1".to_vec());
    assert!(
        nsid.as_ref()
            .is_some_and(|o| format!("{o:?}").contains(&bytes)),
        "{nsid:?}"
    );
    for (nsid, identity) in [(false, Some("edge-ams-1")), (true, None)] {
        let answered = ask(
            "www.example.test.",
            DNSClass::IN,
            RecordType::A,
            nsid,
            identity,
        );
        assert!(
            answered
                .edns
                .as_ref()
                .is_some_and(|e| e.options().get(EdnsCode::NSID).is_none())
        );
    }
}
