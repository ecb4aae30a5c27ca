//! Queries carrying a DNS cookie (as BIND and dig send by default) are answered from the answer
//! cache, with the server cookie for their client, byte for byte as the engine answers them.

mod common;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RecordType};
use parapet_dns::{Client, Cookies, DnsIndex, EdgeAddrs, Limits, Transport, answer_query};
use serde_json::{Value, json};

fn records() -> Vec<Value> {
    vec![
        json!({"type": "A", "name": "www", "content": "192.0.2.1"}),
        json!({"type": "A", "name": "shop", "content": "192.0.2.7", "proxied": true}),
        json!({"type": "TXT", "name": "big", "content": "x".repeat(250)}),
        json!({"type": "TXT", "name": "big", "content": "y".repeat(250)}),
        json!({"type": "TXT", "name": "big", "content": "z".repeat(250)}),
        json!({"type": "TXT", "name": "big", "content": "w".repeat(250)}),
        json!({"type": "CNAME", "name": "alias", "content": "www.example.test"}),
        json!({"type": "A", "name": "*.wild", "content": "192.0.2.2"}),
        json!({"type": "NS", "name": "sub", "content": "ns.sub.example.test"}),
        json!({"type": "A", "name": "ns.sub", "content": "192.0.2.3"}),
    ]
}

fn index() -> DnsIndex {
    let edge = EdgeAddrs {
        v4: vec!["203.0.113.1".parse().expect("ip")],
        v6: vec!["2001:db8::1".parse().expect("ip")],
    };
    common::index_of("example.test", &records(), &edge)
}

const NOW: u32 = 1_700_000_000;

fn client(cookies: &Cookies) -> Client<'_> {
    Client {
        ip: "198.51.100.20".parse().expect("ip"),
        cookies,
        now: NOW,
        identity: None,
    }
}

/// A query for `name` `qtype`: without EDNS (`payload` `None`), or with that payload, the DO
/// bit and a COOKIE option of `cookie`.
fn query(name: &str, qtype: RecordType, payload: Option<u16>, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(size) = payload {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(size % 2 == 0);
        if let Some(data) = cookie {
            e.options_mut()
                .insert(EdnsOption::Unknown(10, data.to_vec()));
        }
        m.set_edns(e);
    }
    m.to_vec().expect("query")
}

#[test]
fn a_query_with_a_cookie_is_answered_from_the_cache_as_the_engine_answers_it() {
    let cookies = Cookies::new([3; 16], &[]);
    let client = client(&cookies);
    let client_cookie = [1, 2, 3, 4, 5, 6, 7, 8];
    let returned = cookies
        .answer(&client_cookie, client.ip, NOW - 60)
        .expect("server cookie");
    let mut forged = returned;
    forged[23] ^= 1;
    let mut long = returned.to_vec();
    long.extend_from_slice(&[0; 16]);
    // (cookie, whether it proves the client's address)
    let cookie_shapes: [(Option<&[u8]>, bool); 5] = [
        (None, false),
        (Some(&client_cookie), false),
        (Some(&returned), true),
        (Some(&forged), false),
        (Some(&long), false),
    ];
    let questions = [
        ("www.example.test.", RecordType::A),
        ("WwW.Example.TEST.", RecordType::A),
        ("shop.example.test.", RecordType::AAAA),
        ("big.example.test.", RecordType::TXT),
        ("alias.example.test.", RecordType::A),
        ("x.wild.example.test.", RecordType::A),
        ("host.sub.example.test.", RecordType::A),
        ("missing.example.test.", RecordType::A),
        ("www.example.test.", RecordType::MX),
    ];
    let payloads = [None, Some(512), Some(1232), Some(1233), Some(4096)];
    // One index answers everything, its cache filled by whichever shape came first; a new one
    // per query answers from the engine.
    let warm = index();
    for round in 0..2 {
        for (name, qtype) in questions {
            for payload in payloads {
                for (cookie, proves) in cookie_shapes {
                    if payload.is_none() && cookie.is_some() {
                        continue;
                    }
                    let packet = query(name, qtype, payload, cookie);
                    for transport in [Transport::Udp, Transport::Tcp] {
                        let limits = Limits::default();
                        let expected =
                            answer_query(&index(), &packet, transport, limits, Some(&client))
                                .expect("answer");
                        let got = answer_query(&warm, &packet, transport, limits, Some(&client))
                            .expect("answer");
                        let what = format!("{name} {qtype} {payload:?} {cookie:?} {transport:?}");
                        assert_eq!(got.bytes, expected.bytes, "round {round}: {what}");
                        assert_eq!(got.verified, proves, "{what}");
                        assert_eq!(got.kind, expected.kind, "{what}");
                        if cookie.is_some() {
                            let response = Message::from_vec(&got.bytes).expect("response");
                            let option = response
                                .edns
                                .as_ref()
                                .and_then(|e| e.options().get(10.into()).cloned());
                            let Some(EdnsOption::Unknown(10, data)) = option else {
                                panic!("no cookie in the answer to {what}");
                            };
                            assert_eq!(data.len(), 24, "{what}");
                            assert_eq!(data[..8], client_cookie, "{what}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn answers_with_and_without_a_cookie_share_one_cache_entry() {
    let cookies = Cookies::new([3; 16], &[]);
    let client = client(&cookies);
    let index = index();
    let ask = |cookie: Option<&[u8]>| {
        let packet = query("www.example.test.", RecordType::A, Some(1232), cookie);
        answer_query(
            &index,
            &packet,
            Transport::Udp,
            Limits::default(),
            Some(&client),
        )
        .expect("answer")
    };
    let first = ask(Some(&[9; 8]));
    assert_eq!(
        index.cached_responses(),
        1,
        "kept from a query with a cookie"
    );
    let plain = ask(None);
    let again = ask(Some(&[9; 8]));
    assert_eq!(index.cached_responses(), 1, "one entry for both shapes");
    // (Each query has an id of its own.)
    assert_eq!(again.bytes[2..], first.bytes[2..]);
    assert_eq!(
        plain.bytes.len() + 28,
        first.bytes.len(),
        "the cookie option is the only difference"
    );
}
