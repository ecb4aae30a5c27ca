//! The REST API in-process for the API's tests: a client that sends requests through the
//! router as the admin token, over the in-memory store or one a test wraps around it.

// Each test file uses part of this.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use parapet_activation::{ActivationMode, Activator};
use parapet_api::{ApiConfig, ApiState, PurgeFn, router};
use parapet_snapshot::{Published, Snapshot, run_snapshot_watcher};
use parapet_store::{MemoryStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-secret-token";
pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
/// The most records a zone may hold in these tests.
pub const RECORD_QUOTA: usize = 3500;

pub struct Api<S: ?Sized = dyn Store> {
    pub app: axum::Router,
    pub store: Arc<S>,
    pub published: Arc<Published>,
}

impl<S: ?Sized> Clone for Api<S> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
            store: Arc::clone(&self.store),
            published: Arc::clone(&self.published),
        }
    }
}

impl Api {
    /// The API as `parapet serve` runs it: record writes read the zone from the served snapshot.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// With no snapshot served: record writes read the zone from the store.
    pub fn without_snapshots() -> Self {
        Self::build(false)
    }

    pub fn build(snapshots: bool) -> Self {
        Self::build_with(snapshots, None)
    }

    /// With snapshots served and this cache purge.
    pub fn with_purge(purge: PurgeFn) -> Self {
        Self::build_with(true, Some(purge))
    }

    fn build_with(snapshots: bool, purge: Option<PurgeFn>) -> Self {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let published = Arc::new(Published::new());
        if snapshots {
            tokio::spawn(run_snapshot_watcher(
                Arc::clone(&store),
                Arc::clone(&published),
                None,
            ));
        }
        Self {
            app: router_over(Arc::clone(&store), &published, purge),
            store,
            published,
        }
    }
}

impl<S: Store> Api<S> {
    /// Over `store`, with no snapshot served.
    pub fn over(store: Arc<S>) -> Self {
        let published = Arc::new(Published::new());
        Self {
            app: router_over(Arc::clone(&store) as Arc<dyn Store>, &published, None),
            store,
            published,
        }
    }
}

fn router_over(
    store: Arc<dyn Store>,
    published: &Arc<Published>,
    purge: Option<PurgeFn>,
) -> axum::Router {
    let state = Arc::new(ApiState {
        activator: Arc::new(Activator::new(
            Arc::clone(&store),
            ActivationMode::Auto,
            Duration::from_secs(60),
        )),
        store,
        config: ApiConfig {
            nameservers: vec!["ns1.parapet.test".into(), "ns2.parapet.test".into()],
            account_id: ACCOUNT.into(),
            account_name: "Test".into(),
            env_token: Some(ADMIN.into()),
            setting_defaults: [("proxy_read_timeout", serde_json::json!(100))].into(),
            max_records_per_zone: RECORD_QUOTA,
        },
        published: Arc::clone(published),
        metrics: Vec::new(),
        purge,
        origin_ca: None,
    });
    router(state)
}

impl<S: Store + ?Sized> Api<S> {
    /// Status, parsed body (`Null` when empty or not JSON) and raw body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/client/v4{path}"))
            .header("content-type", content_type);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (status, bytes) = self
            .send(req.body(Body::from(body)).expect("request"))
            .await;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    /// A GET with these header fields only (no token of the test's).
    pub async fn get_with(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method("GET")
            .uri(format!("/client/v4{path}"));
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        let (status, bytes) = self.send(req.body(Body::empty()).expect("request")).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The router's answer to `req`: its status and whole body.
    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::body::Bytes) {
        let response = self.app.clone().oneshot(req).await.expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, bytes)
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).expect("json"))
            .unwrap_or_default();
        let (s, v, _) = self
            .raw(method, path, Some(token), "application/json", bytes)
            .await;
        (s, v)
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(ADMIN, method, path, body).await
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, StatusCode::OK, "{method} {path}: {v}");
        assert_eq!(v["success"], true);
        v["result"].clone()
    }

    pub async fn zone(&self, name: &str) -> String {
        self.ok("POST", "/zones", Some(json!({"name": name}))).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// The snapshot served once every write so far is applied.
    pub async fn served(&self) -> Arc<Snapshot> {
        let rev = *self.store.revision_watch().borrow();
        self.published.wait_for(rev).await;
        self.published.load()
    }
}

/// The codes of a response's errors.
pub fn codes(v: &Value) -> Vec<u64> {
    v["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["code"].as_u64()).collect())
        .unwrap_or_default()
}
