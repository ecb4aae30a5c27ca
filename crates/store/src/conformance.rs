//! The behaviour every [`Store`] backend must have. Each backend's tests call [`run_all`].

use std::sync::Arc;
use std::time::Duration;

use crate::{Store, StoreError, Txn};

/// Runs every conformance check against fresh stores made by `make`.
pub async fn run_all<S: Store, F: Fn() -> Arc<S>>(make: F) {
    revisions_increase_once_per_transaction(make()).await;
    compare_and_set_rejects_stale_writers(make()).await;
    prefix_list_is_sorted_and_bounded(make()).await;
    watch_replays_every_change_once_in_order(make()).await;
    concurrent_writers_lose_nothing(make()).await;
}

async fn revisions_increase_once_per_transaction<S: Store>(store: Arc<S>) {
    assert_eq!(store.list("").await.expect("list").revision, 0);
    let r1 = store
        .commit(Txn::new().put("a", b"1".to_vec()).put("b", b"2".to_vec()))
        .await
        .expect("commit");
    assert_eq!(r1, 1);
    let r2 = store.commit(Txn::new().delete("a")).await.expect("commit");
    assert_eq!(r2, 2);
    assert_eq!(
        store.commit(Txn::new()).await.expect("empty"),
        2,
        "a transaction without ops makes no revision"
    );
    let b = store.get("b").await.expect("get").expect("b exists");
    assert_eq!((b.value.as_slice(), b.mod_revision), (&b"2"[..], 1));
    assert!(store.get("a").await.expect("get").is_none());
}

async fn compare_and_set_rejects_stale_writers<S: Store>(store: Arc<S>) {
    let r = store
        .commit(Txn::new().expect("k", 0).put("k", b"v1".to_vec()))
        .await
        .expect("create");
    let err = store
        .commit(Txn::new().expect("k", 0).put("k", b"again".to_vec()))
        .await;
    assert!(
        matches!(err, Err(StoreError::Conflict)),
        "create-if-absent must fail when present"
    );
    let err = store
        .commit(Txn::new().expect("k", r + 5).put("k", b"stale".to_vec()))
        .await;
    assert!(matches!(err, Err(StoreError::Conflict)));
    store
        .commit(Txn::new().expect("k", r).put("k", b"v2".to_vec()))
        .await
        .expect("cas");
    assert_eq!(store.get("k").await.expect("get").expect("k").value, b"v2");
    let failed = store
        .commit(Txn::new().expect("k", r).put("other", b"x".to_vec()))
        .await;
    assert!(failed.is_err());
    assert!(
        store.get("other").await.expect("get").is_none(),
        "a failed transaction writes nothing"
    );
}

async fn prefix_list_is_sorted_and_bounded<S: Store>(store: Arc<S>) {
    store
        .commit(
            Txn::new()
                .put("zones/b", vec![2])
                .put("zones/a", vec![1])
                .put("zonesx", vec![3])
                .put("records/a", vec![4]),
        )
        .await
        .expect("commit");
    let listing = store.list("zones/").await.expect("list");
    let keys: Vec<&str> = listing.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["zones/a", "zones/b"]);
    assert_eq!(listing.revision, 1);
    assert_eq!(store.list("").await.expect("all").entries.len(), 4);
}

async fn watch_replays_every_change_once_in_order<S: Store>(store: Arc<S>) {
    store
        .commit(Txn::new().put("w/0", vec![0]))
        .await
        .expect("commit");
    let mut watch = Arc::clone(&store).watch(1);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 1..=200u8 {
                let txn = if i % 10 == 0 {
                    Txn::new().delete(format!("w/{}", i - 1))
                } else {
                    Txn::new()
                        .put(format!("w/{i}"), vec![i])
                        .put("w/last", vec![i])
                };
                store.commit(txn).await.expect("commit");
            }
        })
    };
    let mut expected = 2;
    while expected <= 201 {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch delivers within 10 s")
            .expect("watch open")
            .expect("no error");
        assert_eq!(batch.revision, expected, "no revision missed or repeated");
        let i = u8::try_from(expected - 1).expect("small");
        let want = if i % 10 == 0 { 1 } else { 2 };
        assert_eq!(batch.events.len(), want);
        assert!(batch.events.iter().all(|e| e.revision == expected));
        expected += 1;
    }
    writer.await.expect("writer");
    let late = Arc::clone(&store).watch(150);
    drop(late);
    let mut from_middle = Arc::clone(&store).watch(150);
    let first = from_middle.next().await.expect("open").expect("ok");
    assert_eq!(
        first.revision, 151,
        "a watch starts right after the revision it was given"
    );
}

async fn concurrent_writers_lose_nothing<S: Store>(store: Arc<S>) {
    // Eight writers increment one counter with compare-and-set and retry on conflict.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let current = store.get("counter").await.expect("get");
                    let (n, rev) = current.map_or((0u32, 0), |e| {
                        (
                            u32::from_le_bytes(e.value.try_into().expect("4 bytes")),
                            e.mod_revision,
                        )
                    });
                    match store
                        .commit(
                            Txn::new()
                                .expect("counter", rev)
                                .put("counter", (n + 1).to_le_bytes().to_vec()),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict) => continue,
                        Err(e) => panic!("commit: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let v = store
        .get("counter")
        .await
        .expect("get")
        .expect("counter")
        .value;
    assert_eq!(u32::from_le_bytes(v.try_into().expect("4 bytes")), 200);
}
