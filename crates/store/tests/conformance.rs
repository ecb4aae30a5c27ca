use std::sync::Arc;

use parapet_store::{MemoryStore, RedbStore, Store, StoreError, Txn, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(|| Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(RedbStore::open(&dir.path().join(format!("store-{n}.redb"))).expect("open"))
    })
    .await;
}

#[tokio::test]
async fn redb_store_keeps_data_and_revision_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path).expect("open");
        store
            .commit(Txn::new().put("a", b"1".to_vec()))
            .await
            .expect("commit");
        store
            .commit(Txn::new().put("b", b"2".to_vec()))
            .await
            .expect("commit");
    }
    let store = Arc::new(RedbStore::open(&path).expect("reopen"));
    let listing = store.list("").await.expect("list");
    assert_eq!(listing.revision, 2);
    assert_eq!(listing.entries.len(), 2);
    let mut watch = Arc::clone(&store).watch(1);
    let batch = watch.next().await.expect("open").expect("ok");
    assert_eq!((batch.revision, batch.events[0].key.as_str()), (2, "b"));
}

#[tokio::test]
async fn watch_from_a_compacted_revision_says_so() {
    let store = Arc::new(MemoryStore::new());
    for i in 0..(parapet_store::LOG_RETAINED + 5) {
        store
            .commit(Txn::new().put("k", i.to_le_bytes().to_vec()))
            .await
            .expect("commit");
    }
    let mut watch = Arc::clone(&store).watch(1);
    assert!(matches!(
        watch.next().await,
        Some(Err(StoreError::Compacted { .. }))
    ));
}

#[test]
fn redb_store_reports_an_unusable_path() {
    let err = RedbStore::open(std::path::Path::new(
        "/proc/parapet-cannot-write-here/store.redb",
    ));
    assert!(err.is_err());
}

#[test]
fn the_store_file_is_its_owners_alone_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let _store = RedbStore::open(&path).expect("open");
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
