//! What the DNS tests share: an index of one active zone built from records as the API takes
//! them.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use parapet_dns::{DnsIndex, EdgeAddrs};
use parapet_model::{RecordDraft, Zone, ZoneStatus};
use parapet_snapshot::compile_snapshot;
use serde_json::Value;

/// The store entry of the active zone `name` (id `z`).
pub fn active_zone_entry(name: &str) -> (String, Vec<u8>) {
    let mut zone = Zone::new(
        "z".into(),
        name.into(),
        vec!["ns1.parapet.test".into()],
        "a".into(),
        String::new(),
        1,
    );
    zone.status = ZoneStatus::Active;
    (
        "zones/z".to_owned(),
        serde_json::to_vec(&zone).expect("zone"),
    )
}

/// The DNS index of the active zone `name` (id `z`) holding `records` (API record bodies).
pub fn index_of(name: &str, records: &[Value], edge: &EdgeAddrs) -> DnsIndex {
    let mut entries = vec![active_zone_entry(name)];
    for (i, body) in records.iter().enumerate() {
        let id = format!("r{i}");
        let record = RecordDraft::from_json(name, body)
            .expect("record")
            .into_record(id.clone(), "z", "", "");
        entries.push((
            format!("records/z/{id}"),
            serde_json::to_vec(&record).expect("record"),
        ));
    }
    let snapshot = compile_snapshot(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())), 1)
        .expect("compiles");
    DnsIndex::build(&snapshot, edge, None, None).0
}
