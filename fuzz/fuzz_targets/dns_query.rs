//! Fuzzes the DNS answer path with arbitrary packets over UDP and TCP rules.
//! Run with `cargo +nightly fuzz run dns_query` from this directory.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use parapet_dns::{Client, Cookies, DnsIndex, EdgeAddrs, Limits, Transport, answer_query};
use parapet_model::{RecordDraft, Zone, ZoneStatus};

fn index() -> &'static Arc<DnsIndex> {
    static INDEX: OnceLock<Arc<DnsIndex>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let zone = {
            let mut z = Zone::new("z".into(), "example.test".into(), vec!["ns1.parapet.test".into()], "a".into(), String::new(), 1);
            z.status = ZoneStatus::Active;
            z
        };
        let mut entries = vec![("zones/z".to_owned(), serde_json::to_vec(&zone).unwrap())];
        let bodies = [
            serde_json::json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true}),
            serde_json::json!({"type": "TXT", "name": "www", "content": "x".repeat(900)}),
            serde_json::json!({"type": "CNAME", "name": "alias", "content": "www.example.test"}),
            serde_json::json!({"type": "A", "name": "*.wild", "content": "192.0.2.2"}),
            serde_json::json!({"type": "NS", "name": "sub", "content": "ns.sub.example.test"}),
        ];
        for (i, body) in bodies.iter().enumerate() {
            let id = format!("r{i}");
            let record = RecordDraft::from_json("example.test", body).unwrap().into_record(id.clone(), "z".into(), String::new(), String::new());
            entries.push((format!("records/z/{id}"), serde_json::to_vec(&record).unwrap()));
        }
        let snapshot = parapet_snapshot::compile_snapshot(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())), 1).unwrap();
        let edge = EdgeAddrs { v4: vec!["203.0.113.1".parse().unwrap()], v6: vec![] };
        Arc::new(DnsIndex::build(&snapshot, &edge, None).0)
    })
}

fuzz_target!(|packet: &[u8]| {
    let cookies = Cookies::new([3; 16], &[]);
    for transport in [Transport::Udp, Transport::Tcp] {
        let client = Client { ip: "192.0.2.9".parse().unwrap(), cookies: &cookies, now: 1_000_000 };
        if let Some(out) = answer_query(index(), packet, transport, Limits::default(), Some(&client)) {
            assert!(out.bytes.len() >= 12);
            assert_eq!(out.bytes[..2], packet[..2]);
        }
    }
});
