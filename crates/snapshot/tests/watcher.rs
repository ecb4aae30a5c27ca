use std::sync::Arc;
use std::time::{Duration, Instant};

use parapet_model::{DnsRecord, Zone, ZoneStatus};
use parapet_snapshot::{LastGood, Published, record_key, run_snapshot_watcher, zone_key};
use parapet_store::{MemoryStore, Store, Txn};

fn zone(id: &str, name: &str) -> Zone {
    let mut z = Zone::new(
        id.into(),
        name.into(),
        vec!["ns1.parapet.test".into()],
        "a".into(),
        String::new(),
        1,
    );
    z.status = ZoneStatus::Active;
    z
}

fn a_record(zone_id: &str, id: &str, name: &str, ip: &str, proxied: bool) -> DnsRecord {
    DnsRecord {
        id: id.into(),
        zone_id: zone_id.into(),
        name: name.into(),
        kind: parapet_model::RecordType::A,
        content: ip.into(),
        ttl: 1,
        proxied,
        priority: None,
        comment: None,
        tags: vec![],
        settings: Default::default(),
        created_on: "".into(),
        modified_on: "".into(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

async fn wait(published: &Published, revision: u64) {
    tokio::time::timeout(Duration::from_secs(5), published.wait_for(revision))
        .await
        .expect("snapshot within 5 s");
}

#[tokio::test]
async fn store_change_is_published_within_milliseconds() {
    let (store, published) = watched();
    let rev = store
        .commit(Txn::new().put(zone_key("z1"), json(&zone("z1", "example.com"))))
        .await
        .expect("commit");
    wait(&published, rev).await;
    let started = Instant::now();
    let rev = store
        .commit(Txn::new().put(
            record_key("z1", "r1"),
            json(&a_record("z1", "r1", "www.example.com", "192.0.2.1", true)),
        ))
        .await
        .expect("commit");
    wait(&published, rev).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "published after {took:?}"
    );
    let snap = published.load();
    assert_eq!(snap.record_count(), 1);
    let host = snap
        .proxied_hosts
        .get("www.example.com")
        .expect("proxied host");
    assert_eq!(host.origins, ["192.0.2.1"]);
    assert!(host.active);
    assert_eq!(
        snap.zone_for("WWW.Example.com.")
            .map(|z| z.zone.id.as_str()),
        Some("z1")
    );
}

/// An empty store and what its snapshot watcher publishes.
fn watched() -> (Arc<MemoryStore>, Arc<Published>) {
    let store = Arc::new(MemoryStore::new());
    let published = Arc::new(Published::new());
    tokio::spawn(run_snapshot_watcher(store.clone(), published.clone(), None));
    (store, published)
}

/// A watched store serving zone z1 (example.com) with one A record `id` at `name`; the
/// revision it is served at.
async fn serving_one_record(id: &str, name: &str) -> (Arc<MemoryStore>, Arc<Published>, u64) {
    let (store, published) = watched();
    let rev = store
        .commit(
            Txn::new()
                .put(zone_key("z1"), json(&zone("z1", "example.com")))
                .put(
                    record_key("z1", id),
                    json(&a_record("z1", id, name, "192.0.2.1", false)),
                ),
        )
        .await
        .expect("commit");
    wait(&published, rev).await;
    (store, published, rev)
}

#[tokio::test]
async fn bad_snapshot_keeps_previous() {
    let (store, published, good) = serving_one_record("r1", "a.example.com").await;
    // Written behind the API's back: a record that is not valid, and one for a missing zone.
    store
        .commit(
            Txn::new()
                .put(
                    record_key("z1", "r2"),
                    json(&a_record("z1", "r2", "b.example.com", "not-an-ip", false)),
                )
                .put(
                    record_key("zx", "r3"),
                    json(&a_record("zx", "r3", "c.example.org", "192.0.2.3", false)),
                ),
        )
        .await
        .expect("commit");
    tokio::time::timeout(Duration::from_secs(5), async {
        while published.rejected().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("rejection reported");
    let errors = published.rejected();
    assert_eq!(errors.len(), 2, "every error listed: {errors:?}");
    assert_eq!(
        published.load().revision,
        good,
        "previous snapshot keeps serving"
    );
    assert_eq!(published.load().record_count(), 1);
    // Fixing the store compiles again.
    let fixed = store
        .commit(
            Txn::new()
                .delete(record_key("z1", "r2"))
                .delete(record_key("zx", "r3")),
        )
        .await
        .expect("commit");
    wait(&published, fixed).await;
    assert!(published.rejected().is_empty());
}

/// A store followed by a watcher that saves the last good state at `path`.
fn watched_saving_to(
    path: &std::path::Path,
) -> (
    Arc<MemoryStore>,
    Arc<Published>,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(MemoryStore::new());
    let published = Arc::new(Published::new());
    let task = tokio::spawn(run_snapshot_watcher(
        store.clone(),
        published.clone(),
        Some(LastGood::new(path)),
    ));
    (store, published, task)
}

#[tokio::test]
async fn last_good_snapshot_serves_before_the_store_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot.json");
    {
        let (store, published, task) = watched_saving_to(&path);
        let rev = store
            .commit(Txn::new().put(zone_key("z1"), json(&zone("z1", "example.com"))))
            .await
            .expect("commit");
        wait(&published, rev).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("saved");
        task.abort();
    }
    let (revision, entries) = LastGood::new(&path).load().expect("load").expect("exists");
    assert_eq!(revision, 1);
    assert!(entries.contains_key(&zone_key("z1")));
}

#[tokio::test]
async fn the_saved_state_holds_the_records_as_changed_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot.json");
    let (store, published, task) = watched_saving_to(&path);
    let record =
        |id: &str, ip: &str| json(&a_record("z1", id, &format!("{id}.example.com"), ip, false));
    store
        .commit(
            Txn::new()
                .put(zone_key("z1"), json(&zone("z1", "example.com")))
                .put(record_key("z1", "kept"), record("kept", "192.0.2.1"))
                .put(record_key("z1", "changed"), record("changed", "192.0.2.2"))
                .put(record_key("z1", "gone"), record("gone", "192.0.2.3")),
        )
        .await
        .expect("commit");
    let last = store
        .commit(
            Txn::new()
                .put(record_key("z1", "changed"), record("changed", "192.0.2.4"))
                .put(record_key("z1", "added"), record("added", "192.0.2.5"))
                .delete(record_key("z1", "gone")),
        )
        .await
        .expect("commit");
    wait(&published, last).await;
    let entries = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Some((revision, entries))) = LastGood::new(&path).load()
                && revision == last
            {
                break entries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the latest state is saved");
    task.abort();
    let keys: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "records/z1/added",
            "records/z1/changed",
            "records/z1/kept",
            "zones/z1"
        ]
    );
    let saved: DnsRecord =
        serde_json::from_slice(&entries[&record_key("z1", "changed")]).expect("a record");
    assert_eq!(saved.content, "192.0.2.4");
    // The saved state compiles to the snapshot served.
    let compiled = parapet_snapshot::compile_snapshot(
        entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        last,
    )
    .expect("compiles");
    let served = published.load();
    let contents = |s: &parapet_snapshot::Snapshot| -> Vec<String> {
        s.zones["example.com"]
            .records
            .iter()
            .map(|r| format!("{} {}", r.name, r.content))
            .collect()
    };
    assert_eq!(contents(&compiled), contents(&served));
}

#[tokio::test]
async fn a_written_record_is_checked_against_the_records_kept_at_its_name() {
    let (store, published, rev) = serving_one_record("a", "www.example.com").await;
    let mut cname = a_record("z1", "c", "www.example.com", "", false);
    cname.kind = parapet_model::RecordType::CNAME;
    cname.content = "elsewhere.example.net".into();
    store
        .commit(Txn::new().put(record_key("z1", "c"), json(&cname)))
        .await
        .expect("commit");
    let deadline = Instant::now() + Duration::from_secs(5);
    while published.rejected().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rejected = published.rejected();
    assert!(
        rejected.iter().any(|e| e.key == "records/z1/c"),
        "a CNAME beside the kept A record is refused: {rejected:?}"
    );
    assert_eq!(
        published.load().revision,
        rev,
        "the previous snapshot serves"
    );
    // Removing the kept record makes the CNAME valid.
    let fixed = store
        .commit(Txn::new().delete(record_key("z1", "a")))
        .await
        .expect("commit");
    wait(&published, fixed).await;
    let ids: Vec<String> = published.load().zones["example.com"]
        .records
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids, ["c"]);
}

#[tokio::test]
async fn a_change_recompiles_only_the_zone_it_touches() {
    let (store, published) = watched();
    let mut txn = Txn::new()
        .put(zone_key("z1"), json(&zone("z1", "one.example")))
        .put(zone_key("z2"), json(&zone("z2", "two.example")));
    for i in 0..50 {
        txn = txn
            .put(
                record_key("z1", &format!("a{i}")),
                json(&a_record(
                    "z1",
                    &format!("a{i}"),
                    &format!("h{i}.one.example"),
                    "192.0.2.1",
                    true,
                )),
            )
            .put(
                record_key("z2", &format!("b{i}")),
                json(&a_record(
                    "z2",
                    &format!("b{i}"),
                    &format!("h{i}.two.example"),
                    "192.0.2.2",
                    true,
                )),
            );
    }
    let rev = store.commit(txn).await.expect("commit");
    wait(&published, rev).await;
    let before = published.load();
    let rev = store
        .commit(Txn::new().put(
            record_key("z2", "new"),
            json(&a_record("z2", "new", "new.two.example", "192.0.2.3", true)),
        ))
        .await
        .expect("commit");
    wait(&published, rev).await;
    let after = published.load();
    let (one_before, one_after) = (&before.zones["one.example"], &after.zones["one.example"]);
    assert!(
        Arc::ptr_eq(one_before, one_after),
        "the untouched zone is the previous snapshot's, not compiled again"
    );
    assert!(!Arc::ptr_eq(
        &before.zones["two.example"],
        &after.zones["two.example"]
    ));
    assert_eq!(after.zones["two.example"].records.len(), 51);
    assert_eq!(after.record_count(), 101);
    assert_eq!(
        after.proxied_hosts.len(),
        101,
        "proxied names of both zones"
    );
    assert_eq!(&*after.proxied_hosts["h7.one.example"].zone_id, "z1");
    // A change to the zone itself (here: paused) is a change of the zone.
    let mut paused = zone("z1", "one.example");
    paused.paused = true;
    let rev = store
        .commit(Txn::new().put(zone_key("z1"), json(&paused)))
        .await
        .expect("commit");
    wait(&published, rev).await;
    let last = published.load();
    assert!(!last.proxied_hosts["h7.one.example"].active);
    assert!(last.proxied_hosts["h7.two.example"].active);
    // A bad change is rejected; the next good one still sees every change since.
    let rev = store
        .commit(Txn::new().put(record_key("z1", "bad"), b"not json".to_vec()))
        .await
        .expect("commit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!published.rejected().is_empty());
    let rev2 = store
        .commit(Txn::new().delete(record_key("z1", "bad")).put(
            record_key("z1", "late"),
            json(&a_record(
                "z1",
                "late",
                "late.one.example",
                "192.0.2.9",
                false,
            )),
        ))
        .await
        .expect("commit");
    assert!(rev2 > rev);
    wait(&published, rev2).await;
    let fixed = published.load();
    assert!(published.rejected().is_empty());
    assert_eq!(fixed.zones["one.example"].records.len(), 51);
}

#[tokio::test]
async fn after_a_failed_first_compile_no_zone_is_taken_from_an_older_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot.json");
    // The last good state on disk has www at .1; the store has moved on to .2, and holds a bad
    // record in another zone.
    let old: parapet_snapshot::Entries = [
        (zone_key("z1"), json(&zone("z1", "one.example"))),
        (
            record_key("z1", "r1"),
            json(&a_record("z1", "r1", "www.one.example", "192.0.2.1", true)),
        ),
    ]
    .into_iter()
    .collect();
    LastGood::new(&path).save(1, &old, None).expect("saved");
    let store = Arc::new(MemoryStore::new());
    store
        .commit(
            Txn::new()
                .put(zone_key("z1"), json(&zone("z1", "one.example")))
                .put(
                    record_key("z1", "r1"),
                    json(&a_record("z1", "r1", "www.one.example", "192.0.2.2", true)),
                )
                .put(zone_key("z2"), json(&zone("z2", "two.example")))
                .put(record_key("z2", "bad"), b"not json".to_vec()),
        )
        .await
        .expect("commit");
    let published = Arc::new(Published::new());
    tokio::spawn(run_snapshot_watcher(
        store.clone(),
        published.clone(),
        Some(LastGood::new(&path)),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !published.rejected().is_empty(),
        "the store state is rejected"
    );
    assert_eq!(
        published.load().proxied_hosts["www.one.example"].origins,
        ["192.0.2.1"],
        "the last good state serves meanwhile"
    );
    // Fixing the other zone publishes the store's state, one.example included.
    let rev = store
        .commit(Txn::new().delete(record_key("z2", "bad")))
        .await
        .expect("commit");
    wait(&published, rev).await;
    assert_eq!(
        published.load().proxied_hosts["www.one.example"].origins,
        ["192.0.2.2"]
    );
}

#[test]
fn a_proxied_names_origins_are_parsed_once_when_all_are_addresses() {
    let record = |id: &str, name: &str, kind, content: &str| DnsRecord {
        kind,
        ..a_record("z1", id, name, content, true)
    };
    use parapet_model::RecordType::{A, AAAA, CNAME};
    let records = [
        record("r1", "ips.example.com", A, "192.0.2.1"),
        record("r2", "ips.example.com", AAAA, "2001:db8::1"),
        record("r3", "ips.example.com", A, "192.0.2.3"),
        record("r5", "inside.example.com", CNAME, "ips.example.com"),
        record("r6", "named.example.com", CNAME, "origin.elsewhere.test"),
    ];
    let mut entries = vec![(zone_key("z1"), json(&zone("z1", "example.com")))];
    entries.extend(records.iter().map(|r| (record_key("z1", &r.id), json(r))));
    let snapshot = parapet_snapshot::compile_snapshot(
        entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        1,
    )
    .expect("compiles");
    let addresses = |name: &str| {
        snapshot.proxied_hosts[name]
            .addresses
            .as_deref()
            .map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    // In the origins' order.
    let ips = &snapshot.proxied_hosts["ips.example.com"].origins;
    assert_eq!(ips.len(), 3);
    assert_eq!(addresses("ips.example.com").as_ref(), Some(ips));
    // A name is resolved per request (inside Parapet's zones or out).
    assert_eq!(addresses("inside.example.com"), None);
    assert_eq!(addresses("named.example.com"), None);
}

#[test]
fn acme_challenge_records_that_do_not_fit_are_left_out_not_fatal() {
    let txt = |zone_id: &str, id: &str, name: &str| {
        let mut r = a_record(zone_id, id, name, "", false);
        r.kind = parapet_model::RecordType::TXT;
        r.content = "\"token\"".into();
        r
    };
    let mut cname = a_record("z1", "c1", "_acme-challenge.www.one.example", "", false);
    cname.kind = parapet_model::RecordType::CNAME;
    cname.content = "challenges.elsewhere.example".into();
    let entries: Vec<(String, Vec<u8>)> = vec![
        (zone_key("z1"), json(&zone("z1", "one.example"))),
        (record_key("z1", "c1"), json(&cname)),
        (
            parapet_snapshot::acme_challenge_key("z1", "t1"),
            json(&txt("z1", "t1", "_acme-challenge.www.one.example")),
        ),
        (
            parapet_snapshot::acme_challenge_key("z1", "t2"),
            json(&txt("z1", "t2", "_acme-challenge.api.one.example")),
        ),
        (
            parapet_snapshot::acme_challenge_key("gone", "t3"),
            json(&txt("gone", "t3", "_acme-challenge.www.gone.example")),
        ),
    ];
    let snapshot = parapet_snapshot::compile_snapshot(
        entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        1,
    )
    .expect("challenge records never reject a snapshot");
    let served: Vec<(&str, parapet_model::RecordType)> = snapshot.zones["one.example"]
        .all_records()
        .map(|r| (r.name.as_str(), r.kind))
        .collect();
    assert_eq!(
        served,
        [
            (
                "_acme-challenge.www.one.example",
                parapet_model::RecordType::CNAME
            ),
            (
                "_acme-challenge.api.one.example",
                parapet_model::RecordType::TXT
            ),
        ],
        "the CNAME stays, the TXT beside it is left out, the other TXT is served"
    );
}

/// What a snapshot serves, in a form two snapshots can be compared by.
fn served(s: &parapet_snapshot::Snapshot) -> String {
    let mut out = String::new();
    for (name, z) in &s.zones {
        out.push_str(&format!(
            "zone {name} {} paused={}\n",
            z.zone.id, z.zone.paused
        ));
        let line = |r: &DnsRecord| {
            format!(
                "  {} {} {} {} {}\n",
                r.id, r.name, r.kind, r.content, r.proxied
            )
        };
        // Stored records in the snapshot's order, which lookups by name rely on.
        out.extend(z.records.iter().map(|r| line(r)));
        let mut challenges: Vec<String> = z.challenges.iter().map(line).collect();
        challenges.sort();
        out.extend(challenges);
    }
    let mut hosts: Vec<String> = s
        .proxied_hosts
        .iter()
        .map(|(host, h)| {
            let mut origins = h.origins.clone();
            origins.sort();
            format!("host {host} {} {} {origins:?}\n", h.zone_id, h.active)
        })
        .collect();
    hosts.sort();
    out.extend(hosts);
    out
}

#[tokio::test]
async fn random_changes_serve_what_a_full_compile_of_the_store_gives() {
    let (store, published) = watched();
    // A fixed-seed generator: the same run every time.
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut zones = Txn::new();
    for z in 0..3 {
        zones = zones.put(
            zone_key(&format!("z{z}")),
            json(&zone(&format!("z{z}"), &format!("z{z}.example"))),
        );
    }
    store.commit(zones).await.expect("commit");
    let (mut good, mut bad) = (0, 0);
    // Keys of the last rejected state's errors: half the time, the next change repairs them.
    let mut broken: Vec<String> = Vec::new();
    for _ in 0..300 {
        let mut txn = Txn::new();
        if next(2) == 0 {
            for key in broken.drain(..) {
                txn = match key.strip_prefix("records/").and_then(|k| k.split_once('/')) {
                    Some((zone_id, "")) => {
                        let name = format!("{zone_id}.example");
                        txn.put(zone_key(zone_id), json(&zone(zone_id, &name)))
                    }
                    _ => txn.delete(key),
                };
            }
        }
        for _ in 0..=next(3) {
            let z = next(3);
            let (zone_id, zone_name) = (format!("z{z}"), format!("z{z}.example"));
            let id = format!("r{}", next(12));
            txn = match next(10) {
                0..=4 => {
                    let name = ["www", "api", "a.b", "*.w", "mail"][next(5) as usize];
                    let mut r = a_record(
                        &zone_id,
                        &id,
                        &format!("{name}.{zone_name}"),
                        &format!("192.0.2.{}", next(4)),
                        next(2) == 0,
                    );
                    match next(4) {
                        0 => {
                            r.kind = parapet_model::RecordType::CNAME;
                            r.content = format!("t{}.example.net", next(3));
                        }
                        1 => {
                            r.kind = parapet_model::RecordType::AAAA;
                            r.content = format!("2001:db8::{}", next(4));
                        }
                        _ => {}
                    }
                    txn.put(record_key(&zone_id, &id), json(&r))
                }
                5..=6 => txn.delete(record_key(&zone_id, &id)),
                7 => {
                    let mut zone = zone(&zone_id, &zone_name);
                    zone.paused = next(2) == 0;
                    txn.put(zone_key(&zone_id), json(&zone))
                }
                8 if next(4) == 0 => txn.delete(zone_key(&zone_id)),
                _ => {
                    let mut c = a_record(
                        &zone_id,
                        &id,
                        &format!("_acme-challenge.www.{zone_name}"),
                        "",
                        false,
                    );
                    c.kind = parapet_model::RecordType::TXT;
                    c.content = "\"token\"".into();
                    let key = parapet_snapshot::acme_challenge_key(&zone_id, &id);
                    if next(2) == 0 {
                        txn.put(key, json(&c))
                    } else {
                        txn.delete(key)
                    }
                }
            };
        }
        let rev = store.commit(txn).await.expect("commit");
        let listing = store.list("").await.expect("list");
        let full = parapet_snapshot::compile_snapshot(
            listing
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_slice())),
            rev,
        );
        match full {
            Ok(full) => {
                good += 1;
                wait(&published, rev).await;
                assert!(published.rejected().is_empty());
                assert_eq!(
                    served(&published.load()),
                    served(&full),
                    "at revision {rev}"
                );
            }
            Err(errors) => {
                bad += 1;
                broken = errors.iter().map(|e| e.key.clone()).collect();
                let deadline = Instant::now() + Duration::from_secs(5);
                while published.rejected().as_slice() != errors.as_slice() {
                    assert!(Instant::now() < deadline, "at revision {rev}: {errors:?}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    assert!(
        good > 50 && bad > 50,
        "both kinds of state are met: {good} good, {bad} bad"
    );
}

/// Keys that name something gone: settings, rules and outgoing transfers of a missing zone,
/// outgoing transfers naming a missing peer, a peer naming a missing TSIG key.
fn orphans() -> Vec<(String, Vec<u8>)> {
    use parapet_model::rules::{ORIGIN_PHASE, Ruleset};
    use parapet_model::settings::{SetValue, ZoneSettings};
    use parapet_model::transfer::{Outgoing, Peer};
    let settings = ZoneSettings {
        zone_id: "zx".into(),
        values: [(
            "ssl".to_owned(),
            SetValue {
                value: serde_json::json!("strict"),
                modified_on: String::new(),
            },
        )]
        .into(),
    };
    let rules = Ruleset::from_json(
        "zx",
        ORIGIN_PHASE,
        &serde_json::json!({"rules": []}),
        None,
        "",
    )
    .expect("ruleset");
    let peer = |id: &str, ip: &str, tsig: Option<&str>| Peer {
        id: id.into(),
        name: id.into(),
        ip: Some(ip.parse().expect("ip")),
        port: 53,
        tsig_id: tsig.map(str::to_owned),
        ixfr_enable: true,
    };
    let outgoing = |zone_id: &str, peers: &[&str]| Outgoing {
        zone_id: zone_id.into(),
        name: format!("{zone_id}.example"),
        peers: peers.iter().map(|p| (*p).to_owned()).collect(),
        enabled: true,
        notifies: 0,
    };
    vec![
        (parapet_snapshot::settings_key("zx"), json(&settings)),
        (
            parapet_snapshot::ruleset_key("zx", ORIGIN_PHASE),
            json(&rules),
        ),
        (
            parapet_snapshot::outgoing_key("zx"),
            json(&outgoing("zx", &["p1"])),
        ),
        (
            parapet_snapshot::outgoing_key("z1"),
            json(&outgoing("z1", &["p1", "p-gone", "p-unkeyed"])),
        ),
        (
            parapet_snapshot::peer_key("p1"),
            json(&peer("p1", "192.0.2.53", None)),
        ),
        (
            parapet_snapshot::peer_key("p-unkeyed"),
            json(&peer("p-unkeyed", "192.0.2.54", Some("key-gone"))),
        ),
    ]
}

#[test]
fn keys_naming_what_is_gone_are_left_out_not_fatal() {
    let mut entries = vec![
        (zone_key("z1"), json(&zone("z1", "one.example"))),
        (
            record_key("z1", "r1"),
            json(&a_record("z1", "r1", "www.one.example", "192.0.2.1", true)),
        ),
    ];
    entries.extend(orphans());
    let snapshot = parapet_snapshot::compile_snapshot(
        entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        7,
    )
    .expect("a key naming something gone never rejects a snapshot");
    assert_eq!(snapshot.zones["one.example"].records.len(), 1);
    assert!(!snapshot.zone_edge.contains_key("zx"));
    assert!(!snapshot.transfers.contains_key("zx.example"));
    let peers: Vec<String> = snapshot.transfers["one.example"]
        .iter()
        .map(|p| p.addr.to_string())
        .collect();
    assert_eq!(
        peers,
        ["192.0.2.53:53"],
        "only the peer that exists, and never one unsigned that expects a key"
    );
}

#[tokio::test]
async fn an_orphan_key_does_not_stop_later_changes() {
    let (store, published, _) = serving_one_record("r1", "a.example.com").await;
    let mut txn = Txn::new();
    for (key, value) in orphans() {
        txn = txn.put(key, value);
    }
    let orphaned = store.commit(txn).await.expect("commit");
    wait(&published, orphaned).await;
    let later = store
        .commit(Txn::new().put(
            record_key("z1", "r2"),
            json(&a_record("z1", "r2", "b.example.com", "192.0.2.2", false)),
        ))
        .await
        .expect("commit");
    wait(&published, later).await;
    assert!(
        published.rejected().is_empty(),
        "{:?}",
        published.rejected()
    );
    assert_eq!(published.load().record_count(), 2);
}

#[tokio::test]
async fn a_name_inside_a_child_zone_is_proxied_by_the_child_alone() {
    let (store, published) = watched();
    let rev = store
        .commit(
            Txn::new()
                .put(zone_key("parent"), json(&zone("parent", "example.com")))
                .put(zone_key("child"), json(&zone("child", "shop.example.com")))
                // Left over in the parent, for names the child holds now.
                .put(
                    record_key("parent", "old"),
                    json(&a_record(
                        "parent",
                        "old",
                        "www.shop.example.com",
                        "198.51.100.20",
                        true,
                    )),
                )
                .put(
                    record_key("parent", "gone"),
                    json(&a_record(
                        "parent",
                        "gone",
                        "only.shop.example.com",
                        "198.51.100.21",
                        true,
                    )),
                )
                .put(
                    record_key("child", "new"),
                    json(&a_record(
                        "child",
                        "new",
                        "www.shop.example.com",
                        "192.0.2.10",
                        true,
                    )),
                )
                .put(
                    record_key("parent", "own"),
                    json(&a_record(
                        "parent",
                        "own",
                        "www.example.com",
                        "192.0.2.1",
                        true,
                    )),
                ),
        )
        .await
        .expect("commit");
    wait(&published, rev).await;
    let snap = published.load();
    let host = &snap.proxied_hosts["www.shop.example.com"];
    assert_eq!(host.origins, ["192.0.2.10"]);
    assert_eq!(&*host.zone_id, "child");
    assert!(!snap.proxied_hosts.contains_key("only.shop.example.com"));
    assert_eq!(snap.proxied_hosts["www.example.com"].origins, ["192.0.2.1"]);
}

#[test]
fn the_saved_snapshot_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot.json");
    LastGood::new(&path)
        .save(1, &std::collections::BTreeMap::new(), None)
        .expect("saved");
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
