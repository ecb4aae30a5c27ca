//! Writes that race a delete: a request reads what it checks, another request changes it, then
//! the first one commits. Nothing may be left in the store that names something gone (such a
//! key makes every node's snapshot skip it, and the API cannot reach it to remove it).
//!
//! The store here runs the other request just before the first one's commit that touches a
//! chosen key, so each interleaving happens on every run.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use parapet_model::rules::ORIGIN_PHASE;
use parapet_snapshot::{outgoing_key, peer_key, ruleset_key, settings_key, tsig_key};
use parapet_store::{
    Entry, Event, Listing, MemoryStore, Op, Revision, Store, StoreError, Txn, Watch, follow_log,
};
use serde_json::{Value, json};

use common::ACCOUNT;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Interlude = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A memory store that runs an interlude once, just before the first commit that writes or
/// deletes a given key.
struct InterleavingStore {
    inner: Arc<MemoryStore>,
    before: Mutex<Option<(String, Interlude)>>,
}

impl InterleavingStore {
    fn interlude_for(&self, txn: &Txn) -> Option<Interlude> {
        let mut before = self.before.lock().expect("lock");
        let touches = before.as_ref().is_some_and(|(key, _)| {
            txn.ops.iter().any(|op| match op {
                Op::Put { key: k, .. } | Op::Delete { key: k } => k == key,
            })
        });
        if touches {
            before.take().map(|(_, interlude)| interlude)
        } else {
            None
        }
    }
}

impl Store for InterleavingStore {
    fn get<'life0, 'life1, 'async_trait>(
        &'life0 self,
        key: &'life1 str,
    ) -> BoxFuture<'async_trait, Result<Option<Entry>, StoreError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.get(key)
    }

    fn list<'life0, 'life1, 'async_trait>(
        &'life0 self,
        prefix: &'life1 str,
    ) -> BoxFuture<'async_trait, Result<Listing, StoreError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.list(prefix)
    }

    fn commit<'life0, 'async_trait>(
        &'life0 self,
        txn: Txn,
    ) -> BoxFuture<'async_trait, Result<Revision, StoreError>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if let Some(interlude) = self.interlude_for(&txn) {
                interlude().await;
            }
            self.inner.commit(txn).await
        })
    }

    fn changes_since<'life0, 'async_trait>(
        &'life0 self,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'async_trait, Result<Vec<Event>, StoreError>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.changes_since(after, limit)
    }

    fn revision_watch(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.inner.revision_watch()
    }

    fn watch(self: Arc<Self>, after: Revision) -> Watch {
        follow_log(self, after)
    }
}

type Api = common::Api<InterleavingStore>;

impl Api {
    fn new() -> Self {
        Self::over(Arc::new(InterleavingStore {
            inner: Arc::new(MemoryStore::new()),
            before: Mutex::new(None),
        }))
    }

    /// Runs `method path body` just before the next commit that writes or deletes `key`.
    fn before_writing(&self, key: String, method: &'static str, path: String, body: Value) {
        let api = self.clone();
        let interlude: Interlude = Box::new(move || {
            Box::pin(async move {
                let (status, v) = api.call(method, &path, Some(body)).await;
                assert_eq!(status, StatusCode::OK, "{method} {path} meanwhile: {v}");
            })
        });
        *self.store.before.lock().expect("lock") = Some((key, interlude));
    }

    async fn id_of(&self, path: &str, body: Value) -> String {
        self.ok("POST", path, Some(body)).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    async fn tsig(&self) -> String {
        self.id_of(
            &format!("/accounts/{ACCOUNT}/secondary_dns/tsigs"),
            json!({"name": "k.", "algo": "hmac-sha256.", "secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQ="}),
        )
        .await
    }

    async fn peer(&self, tsig: Option<&str>) -> String {
        self.id_of(
            &format!("/accounts/{ACCOUNT}/secondary_dns/peers"),
            json!({"name": "secondary", "ip": "192.0.2.53", "tsig_id": tsig}),
        )
        .await
    }

    async fn stored(&self, key: &str) -> Option<Value> {
        self.store
            .get(key)
            .await
            .expect("get")
            .map(|e| serde_json::from_slice(&e.value).expect("json"))
    }

    /// Every key holding the zone's id: none may outlive its zone.
    async fn keys_naming(&self, id: &str) -> Vec<String> {
        let listing = self.store.list("").await.expect("list");
        listing
            .entries
            .into_iter()
            .map(|e| e.key)
            .filter(|k| k.contains(id))
            .collect()
    }
}

#[tokio::test]
async fn settings_patch_racing_zone_delete_writes_nothing() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    api.before_writing(
        settings_key(&zone),
        "DELETE",
        format!("/zones/{zone}"),
        Value::Null,
    );
    let (status, v) = api
        .call(
            "PATCH",
            &format!("/zones/{zone}/settings/ssl"),
            Some(json!({"value": "strict"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.keys_naming(&zone).await, Vec::<String>::new());
}

#[tokio::test]
async fn ruleset_put_racing_zone_delete_writes_nothing() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    api.before_writing(
        ruleset_key(&zone, ORIGIN_PHASE),
        "DELETE",
        format!("/zones/{zone}"),
        Value::Null,
    );
    let (status, v) = api
        .call(
            "PUT",
            &format!("/zones/{zone}/rulesets/phases/{ORIGIN_PHASE}/entrypoint"),
            Some(json!({"rules": []})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.keys_naming(&zone).await, Vec::<String>::new());
}

#[tokio::test]
async fn outgoing_write_racing_zone_delete_writes_nothing() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    let peer = api.peer(None).await;
    api.before_writing(
        outgoing_key(&zone),
        "DELETE",
        format!("/zones/{zone}"),
        Value::Null,
    );
    let (status, v) = api
        .call(
            "PUT",
            &format!("/zones/{zone}/secondary_dns/outgoing"),
            Some(json!({"peers": [peer]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.keys_naming(&zone).await, Vec::<String>::new());
}

#[tokio::test]
async fn peer_delete_racing_outgoing_write_is_refused() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    let peer = api.peer(None).await;
    // The delete found no zone using the peer; the zone names it before the delete commits.
    api.before_writing(
        peer_key(&peer),
        "PUT",
        format!("/zones/{zone}/secondary_dns/outgoing"),
        json!({"peers": [peer]}),
    );
    let (status, v) = api
        .call(
            "DELETE",
            &format!("/accounts/{ACCOUNT}/secondary_dns/peers/{peer}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(api.stored(&peer_key(&peer)).await.is_some());
    let outgoing = api.stored(&outgoing_key(&zone)).await.expect("outgoing");
    assert_eq!(outgoing["peers"], json!([peer]));
}

#[tokio::test]
async fn outgoing_write_racing_peer_delete_fails() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    let peer = api.peer(None).await;
    // The write found the peer; the peer is deleted before the write commits.
    api.before_writing(
        outgoing_key(&zone),
        "DELETE",
        format!("/accounts/{ACCOUNT}/secondary_dns/peers/{peer}"),
        Value::Null,
    );
    let (status, v) = api
        .call(
            "PUT",
            &format!("/zones/{zone}/secondary_dns/outgoing"),
            Some(json!({"peers": [peer]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(api.stored(&peer_key(&peer)).await.is_none());
    assert!(api.stored(&outgoing_key(&zone)).await.is_none());
}

#[tokio::test]
async fn tsig_delete_racing_peer_write_is_refused() {
    let api = Api::new();
    let tsig = api.tsig().await;
    let peer = api.peer(None).await;
    api.before_writing(
        tsig_key(&tsig),
        "PATCH",
        format!("/accounts/{ACCOUNT}/secondary_dns/peers/{peer}"),
        json!({"tsig_id": tsig}),
    );
    let (status, v) = api
        .call(
            "DELETE",
            &format!("/accounts/{ACCOUNT}/secondary_dns/tsigs/{tsig}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(api.stored(&tsig_key(&tsig)).await.is_some());
    let stored = api.stored(&peer_key(&peer)).await.expect("peer");
    assert_eq!(stored["tsig_id"], json!(tsig));
}

#[tokio::test]
async fn peer_write_racing_tsig_delete_fails() {
    let api = Api::new();
    let tsig = api.tsig().await;
    let peer = api.peer(None).await;
    api.before_writing(
        peer_key(&peer),
        "DELETE",
        format!("/accounts/{ACCOUNT}/secondary_dns/tsigs/{tsig}"),
        Value::Null,
    );
    let (status, v) = api
        .call(
            "PATCH",
            &format!("/accounts/{ACCOUNT}/secondary_dns/peers/{peer}"),
            Some(json!({"tsig_id": tsig})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(api.stored(&tsig_key(&tsig)).await.is_none());
    let stored = api.stored(&peer_key(&peer)).await.expect("peer");
    assert_eq!(stored["tsig_id"], Value::Null);
}

#[tokio::test]
async fn ruleset_create_racing_zone_delete_writes_nothing() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    api.before_writing(
        ruleset_key(&zone, ORIGIN_PHASE),
        "DELETE",
        format!("/zones/{zone}"),
        Value::Null,
    );
    let (status, v) = api
        .call(
            "POST",
            &format!("/zones/{zone}/rulesets"),
            Some(json!({"name": "o", "kind": "zone", "phase": ORIGIN_PHASE})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.keys_naming(&zone).await, Vec::<String>::new());
}

#[tokio::test]
async fn rule_add_racing_another_keeps_both_and_racing_zone_delete_writes_nothing() {
    let api = Api::new();
    let zone = api.zone("race.test").await;
    let id = api
        .id_of(
            &format!("/zones/{zone}/rulesets"),
            json!({"name": "o", "kind": "zone", "phase": ORIGIN_PHASE}),
        )
        .await;
    let rules = format!("/zones/{zone}/rulesets/{id}/rules");
    let rule = |port: u16| {
        json!({"expression": "true", "action": "route",
               "action_parameters": {"origin": {"port": port}}})
    };
    api.before_writing(
        ruleset_key(&zone, ORIGIN_PHASE),
        "POST",
        rules.clone(),
        rule(8001),
    );
    let ruleset = api.ok("POST", &rules, Some(rule(8002))).await;
    let ports: Vec<&Value> = ruleset["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| &r["action_parameters"]["origin"]["port"])
        .collect();
    assert_eq!(ports, [&json!(8001), &json!(8002)]);
    assert_eq!(ruleset["version"], json!("3"));

    api.before_writing(
        ruleset_key(&zone, ORIGIN_PHASE),
        "DELETE",
        format!("/zones/{zone}"),
        Value::Null,
    );
    let (status, v) = api.call("POST", &rules, Some(rule(8003))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(api.keys_naming(&zone).await, Vec::<String>::new());
}
