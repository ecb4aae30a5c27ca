//! The DNS index follows snapshot changes zone by zone: an untouched zone is reused as it was
//! built, a changed one is built again, and an apex CNAME is flattened again every time (its
//! target may live in another zone).

use std::collections::HashSet;
use std::sync::Arc;

use parapet_dns::{DnsIndex, EdgeAddrs};
use parapet_model::{RecordDraft, Zone, ZoneStatus};
use parapet_snapshot::{RecordChanges, Reuse, Snapshot, compile_snapshot, compile_snapshot_with};
use serde_json::{Value, json};

fn zone(id: &str, name: &str) -> (String, Vec<u8>) {
    let mut z = Zone::new(
        id.into(),
        name.into(),
        vec!["ns1.parapet.test".into()],
        "a".into(),
        String::new(),
        1,
    );
    z.status = ZoneStatus::Active;
    (format!("zones/{id}"), serde_json::to_vec(&z).expect("zone"))
}

fn record(zone_id: &str, zone_name: &str, id: &str, body: Value) -> (String, Vec<u8>) {
    let r = RecordDraft::from_json(zone_name, &body)
        .expect("record")
        .into_record(id.into(), zone_id, "", "");
    (
        format!("records/{zone_id}/{id}"),
        serde_json::to_vec(&r).expect("record"),
    )
}

fn compile(entries: &[(String, Vec<u8>)], revision: u64, reuse: Option<Reuse<'_>>) -> Snapshot {
    let entries = entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
    match reuse {
        None => compile_snapshot(entries, revision),
        Some(r) => compile_snapshot_with(entries, revision, Some(r)),
    }
    .expect("compiles")
}

#[test]
fn only_changed_zones_and_flattened_apexes_are_built_again() {
    let edge = EdgeAddrs::default();
    let mut entries = vec![
        zone("z1", "one.test"),
        zone("z2", "two.test"),
        zone("z3", "three.test"),
        record(
            "z1",
            "one.test",
            "a",
            json!({"type": "A", "name": "www", "content": "192.0.2.1"}),
        ),
        record(
            "z2",
            "two.test",
            "b",
            json!({"type": "A", "name": "www", "content": "192.0.2.2"}),
        ),
        record(
            "z3",
            "three.test",
            "c",
            json!({"type": "CNAME", "name": "@", "content": "www.two.test"}),
        ),
    ];
    let first = compile(&entries, 1, None);
    let (before, _) = DnsIndex::build(&first, &edge, None, None);
    // A change: the entries besides records, and the record written.
    entries.retain(|(key, _)| !key.starts_with("records/"));
    let (_, written) = record(
        "z2",
        "two.test",
        "b2",
        json!({"type": "A", "name": "www", "content": "192.0.2.3"}),
    );
    let mut records = RecordChanges::default();
    records.write("z2", "b2", Some(&written));
    let second = compile(
        &entries,
        2,
        Some(Reuse {
            previous: &first,
            changed_zones: &HashSet::new(),
            records: &records,
        }),
    );
    assert!(Arc::ptr_eq(
        &first.zones["one.test"],
        &second.zones["one.test"]
    ));
    let (after, _) = DnsIndex::build(&second, &edge, None, Some(&before));
    assert!(
        Arc::ptr_eq(&before.zones["one.test"], &after.zones["one.test"]),
        "the untouched zone's index is reused"
    );
    assert!(!Arc::ptr_eq(
        &before.zones["two.test"],
        &after.zones["two.test"]
    ));
    let www = after.zones["two.test"].node("www.two.test").expect("node");
    assert_eq!(
        www.rrsets[0].rdatas.len(),
        2,
        "the change is in the new index"
    );
    // The apex CNAME of three.test points into two.test: flattened again, with both addresses.
    assert!(!Arc::ptr_eq(
        &before.zones["three.test"],
        &after.zones["three.test"]
    ));
    let apex = after.zones["three.test"].node("three.test").expect("apex");
    let a = apex
        .get(hickory_proto::rr::RecordType::A)
        .expect("flattened A");
    assert_eq!(a.rdatas.len(), 2);
}

/// The serial a zone's index serves, and the one in its SOA record.
fn served_serials(index: &DnsIndex, zone: &str) -> (u32, u32) {
    let z = &index.zones[zone];
    let soa = z.soa().expect("SOA");
    let serial = match soa.rdatas[0].other() {
        Some(hickory_proto::rr::RData::SOA(soa)) => soa.serial,
        other => panic!("not a SOA: {other:?}"),
    };
    (z.serial, serial)
}

#[test]
fn a_flattened_apex_that_changes_moves_its_zones_serial() {
    let edge = EdgeAddrs::default();
    let target = |id: &str, ip: &str| {
        record(
            "z2",
            "two.test",
            id,
            json!({"type": "A", "name": "www", "content": ip}),
        )
    };
    let mut entries = vec![
        zone("z2", "two.test"),
        zone("z3", "three.test"),
        target("b", "192.0.2.2"),
        record(
            "z3",
            "three.test",
            "c",
            json!({"type": "CNAME", "name": "@", "content": "www.two.test"}),
        ),
    ];
    let first = compile(&entries, 1, None);
    let (one, _) = DnsIndex::build(&first, &edge, None, None);
    let (serial, in_soa) = served_serials(&one, "three.test");
    assert_eq!(serial, in_soa);
    // Nothing changed: the same serial.
    let (again, _) = DnsIndex::build(&first, &edge, None, Some(&one));
    assert_eq!(served_serials(&again, "three.test"), (serial, serial));
    // The target, in another zone, changes: three.test's data changes, so does its serial,
    // though its own stored serial did not move.
    entries.retain(|(key, _)| key != "records/z2/b");
    entries.push(target("b2", "192.0.2.3"));
    let second = compile(&entries, 2, None);
    assert_eq!(
        second.zones["three.test"].zone.serial,
        first.zones["three.test"].zone.serial
    );
    let (two, _) = DnsIndex::build(&second, &edge, None, Some(&again));
    let (moved, moved_in_soa) = served_serials(&two, "three.test");
    assert_eq!(moved, moved_in_soa);
    assert!(
        moved.wrapping_sub(serial) > 0 && moved.wrapping_sub(serial) < 1 << 31,
        "serial {serial} then {moved}"
    );
    // And stays there while nothing changes.
    let (three, _) = DnsIndex::build(&second, &edge, None, Some(&two));
    assert_eq!(served_serials(&three, "three.test"), (moved, moved));
    // A zone without a flattened apex serves its stored serial.
    let two_test = served_serials(&three, "two.test");
    assert_eq!(two_test.0, second.zones["two.test"].zone.serial);
}

/// The edge's addresses, one of each family.
fn edge() -> EdgeAddrs {
    EdgeAddrs {
        v4: vec!["203.0.113.1".parse().expect("ip")],
        v6: vec!["2001:db8:e::1".parse().expect("ip")],
    }
}

/// Every name of every zone with its RRsets, to compare two indexes by. With `any_serial`, SOA
/// serials are left out: a zone whose apex is flattened serves one that depends on what was
/// served before.
fn dump(index: &DnsIndex, any_serial: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (zone_name, zone) in &index.zones {
        for key in zone.nodes.keys() {
            let node = zone.nodes.get(key).expect("listed");
            let mut line = format!("{zone_name} {key} {:?}", node.rrsets);
            if any_serial && let Some(at) = line.find("serial: ") {
                let digits = line[at + 8..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count();
                line.replace_range(at + 8..at + 8 + digits, "_");
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

#[test]
fn a_zone_changed_name_by_name_answers_as_if_built_whole() {
    let edge = edge();
    let mut entries = vec![zone("z1", "big.test")];
    for i in 0..3000 {
        entries.push(record(
            "z1",
            "big.test",
            &format!("base{i}"),
            json!({"type": "A", "name": format!("h{i}.s{}", i % 7), "content": "192.0.2.1"}),
        ));
    }
    let mut snapshot = compile(&entries, 1, None);
    let (mut index, _) = DnsIndex::build(&snapshot, &edge, None, None);
    // The zone's serial moves with every change, as the API writes it.
    let zone_at = |serial: u32| {
        let (key, value) = zone("z1", "big.test");
        let mut z: Zone = serde_json::from_slice(&value).expect("zone");
        z.serial = serial;
        (key, serde_json::to_vec(&z).expect("zone"))
    };
    let mut seed: u64 = 0xd15;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let names = [
        "www",
        "a.b.c",
        "b.c",
        "c",
        "*.w",
        "x.w",
        "h1.s1",
        "deep.h2.s2",
        "s3",
        "@",
        "sub",
        "ns.sub",
        "_acme-challenge.www",
    ];
    let mut applied = 0;
    for revision in 2..400 {
        let mut written = std::collections::HashMap::new();
        for _ in 0..=next(3) {
            let id = format!("r{}", next(20));
            let value = match next(6) {
                0 | 1 => None,
                k => {
                    let name = names[next(names.len() as u64) as usize];
                    let body = match k {
                        2 => {
                            json!({"type": "A", "name": name, "content": format!("192.0.2.{}", next(3)), "proxied": next(2) == 0})
                        }
                        3 if next(2) == 0 => {
                            json!({"type": "NS", "name": name, "content": "ns.sub.big.test"})
                        }
                        3 => json!({"type": "AAAA", "name": name, "content": "2001:db8::5"}),
                        4 => {
                            json!({"type": "TXT", "name": name, "content": format!("\"v{}\"", next(3))})
                        }
                        _ => {
                            json!({"type": "CNAME", "name": name, "content": "target.example.net"})
                        }
                    };
                    Some(record("z1", "big.test", &id, body).1)
                }
            };
            written.insert(id, value);
        }
        // Now and then a large change: the zone is built whole again.
        let large = revision % 97 == 0;
        if large {
            for i in 0..1500 {
                let body = json!({"type": "A", "name": format!("bulk{i}"), "content": "192.0.2.9"});
                written.insert(
                    format!("bulk{i}"),
                    Some(record("z1", "big.test", &format!("bulk{i}"), body).1),
                );
            }
        }
        let mut records = RecordChanges::default();
        for (id, value) in &written {
            records.write("z1", id, value.as_deref());
        }
        let mut entries = vec![zone_at(revision as u32)];
        // An ACME challenge answer comes and goes.
        if next(3) == 0 {
            let mut c = RecordDraft::from_json(
                "big.test",
                &json!({"type": "TXT", "name": "_acme-challenge.www", "content": "\"token\""}),
            )
            .expect("challenge")
            .into_record("c1".to_owned(), "z1", "", "");
            c.proxied = false;
            entries.push((
                parapet_snapshot::acme_challenge_key("z1", "c1"),
                serde_json::to_vec(&c).expect("challenge"),
            ));
        }
        let changed_zones: HashSet<String> = ["z1".to_owned()].into();
        let Ok(next_snapshot) = compile_snapshot_with(
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            revision,
            Some(Reuse {
                previous: &snapshot,
                changed_zones: &changed_zones,
                records: &records,
            }),
        ) else {
            continue; // A change the zone rules refuse (a CNAME beside other data).
        };
        let before = std::mem::replace(&mut snapshot, next_snapshot);
        let (updated, _) = DnsIndex::build(&snapshot, &edge, None, Some(&index));
        let (whole, _) = DnsIndex::build(&snapshot, &edge, None, None);
        let apex_cname = snapshot.zones["big.test"]
            .records_at("big.test")
            .any(|r| r.kind == parapet_model::RecordType::CNAME);
        assert_eq!(
            dump(&updated, apex_cname),
            dump(&whole, apex_cname),
            "at revision {revision}"
        );
        let changed = updated.zones["big.test"].nodes.changed_len();
        let flattened = |s: &Snapshot| {
            s.zones["big.test"]
                .records_at("big.test")
                .any(|r| r.kind == parapet_model::RecordType::CNAME)
        };
        if large || flattened(&snapshot) || flattened(&before) {
            assert_eq!(changed, 0, "built whole at revision {revision}");
        } else {
            assert!(
                changed > 0 && changed < 200,
                "built name by name at revision {revision}: {changed} names"
            );
        }
        index = updated;
        applied += 1;
    }
    assert!(applied > 200, "{applied} changes applied");
}

#[test]
fn every_rrset_holds_each_datum_once_in_canonical_order_however_many_records_a_name_has() {
    let edge = edge();
    let mut entries = vec![zone("z", "many.test")];
    // Three proxied origins at one name: the edge's address once.
    for (i, origin) in ["192.0.2.1", "192.0.2.2", "198.51.100.7"]
        .iter()
        .enumerate()
    {
        entries.push(record(
            "z",
            "many.test",
            &format!("p{i}"),
            json!({"type": "A", "name": "www", "content": origin, "proxied": true}),
        ));
    }
    // An ACME challenge answer with the same data as a stored record: served once.
    entries.push(record(
        "z",
        "many.test",
        "own",
        json!({"type": "TXT", "name": "_acme-challenge", "content": "token"}),
    ));
    let (_, challenge) = record(
        "z",
        "many.test",
        "c1",
        json!({"type": "TXT", "name": "_acme-challenge", "content": "token"}),
    );
    entries.push(("acme-challenges/z/c1".into(), challenge));
    // Thousands of records at one name, given in reverse order.
    let texts: Vec<String> = (0..5000).rev().map(|i| format!("v{i:05}")).collect();
    for (i, text) in texts.iter().enumerate() {
        entries.push(record(
            "z",
            "many.test",
            &format!("t{i}"),
            json!({"type": "TXT", "name": "bulk", "content": text}),
        ));
    }
    let snapshot = compile(&entries, 1, None);
    let (index, _) = DnsIndex::build(&snapshot, &edge, None, None);
    let zone = &index.zones["many.test"];
    let www = zone.node("www.many.test").expect("www");
    let a = www.get(hickory_proto::rr::RecordType::A).expect("A");
    assert_eq!(a.rdatas.len(), 1, "the edge's address once: {:?}", a.rdatas);
    assert_eq!(
        www.get(hickory_proto::rr::RecordType::AAAA)
            .expect("AAAA")
            .rdatas
            .len(),
        1
    );
    let acme = zone
        .node("_acme-challenge.many.test")
        .expect("challenge name");
    let token = acme.get(hickory_proto::rr::RecordType::TXT).expect("TXT");
    assert_eq!(token.rdatas.len(), 1, "{:?}", token.rdatas);
    let bulk = zone.node("bulk.many.test").expect("bulk");
    let txt = bulk.get(hickory_proto::rr::RecordType::TXT).expect("TXT");
    let got: Vec<String> = txt
        .rdatas
        .iter()
        .map(|rd| rd.to_rdata().to_string())
        .collect();
    let mut want = texts.clone();
    want.sort();
    assert!(
        got == want,
        "{} TXT data, want {}; first {:?}",
        got.len(),
        want.len(),
        got.first()
    );
}
