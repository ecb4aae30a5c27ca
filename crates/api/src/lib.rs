//! Parapet's REST API, in Cloudflare's v4 shapes at `/client/v4`, so that existing Cloudflare
//! clients work by changing only their base URL.
//!
//! Every write is validated by the model, then committed to the store in one compare-and-set
//! transaction that also bumps the zone's serial; the API answers only after the store made
//! the write durable. The API never touches a snapshot's data plane: it reads the store.

mod auth;
mod certificates;
mod envelope;
mod listing;
mod multipart;
mod purge;
mod records;
mod rulesets;
mod secondary;
mod settings;
mod stored;
mod tokens;
mod zones;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{get, post, put};
use parapet_activation::Activator;
use parapet_snapshot::Published;
use parapet_store::Store;

pub use auth::{Auth, plausible_secret};
pub use envelope::{ApiError, ApiErrorItem, ResultInfo, now_timestamp};
pub use tokens::{create_token, has_stored_tokens};

/// Largest zone file import body.
const IMPORT_LIMIT: usize = 64 * 1024 * 1024;

/// What the API needs to know about this installation.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Host names assigned as nameservers to every zone.
    pub nameservers: Vec<String>,
    pub account_id: String,
    pub account_name: String,
    /// A token secret valid with every right (from `PARAPET_API_TOKEN`).
    pub env_token: Option<String>,
    /// Zone settings whose default is this node's configuration (e.g. `proxy_read_timeout`).
    pub setting_defaults: std::collections::HashMap<&'static str, serde_json::Value>,
    /// The most DNS records a zone may hold: a change that would add records past it is refused
    /// (error 81045), and nothing of it is stored.
    pub max_records_per_zone: usize,
}

/// Removes cached objects of a zone (`zone id`, what to purge); the number removed, or why the
/// purge, in force, could not be saved for a restart.
pub type PurgeFn =
    Arc<dyn Fn(&str, &parapet_model::purge::Purge) -> Result<usize, String> + Send + Sync>;

/// Prometheus text from a data plane, served at `/metrics`.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub config: ApiConfig,
    pub activator: Arc<Activator>,
    pub published: Arc<Published>,
    pub metrics: Vec<MetricsSource>,
    /// The edge cache's purge (`None`: this node caches nothing).
    pub purge: Option<PurgeFn>,
    /// Parapet's Origin CA (`/certificates`; `None`: not offered).
    pub origin_ca: Option<Arc<parapet_tls::certgen::Authority>>,
}

/// `/metrics`: the served snapshot's revision and every data plane's metrics.
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> impl axum::response::IntoResponse {
    let snapshot = state.published.load();
    let mut text = format!(
        "# HELP parapet_snapshot_revision Store revision of the snapshot being served.\n# TYPE parapet_snapshot_revision gauge\nparapet_snapshot_revision {}\n# HELP parapet_zones Zones in the served snapshot.\n# TYPE parapet_zones gauge\nparapet_zones {}\n",
        snapshot.revision,
        snapshot.zones.len()
    );
    for source in &state.metrics {
        text.push_str(&source());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// The whole API as one router.
pub fn router(state: Arc<ApiState>) -> Router {
    let v4 = Router::new()
        .route("/user/tokens/verify", get(tokens::verify))
        .route("/user/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/user/tokens/permission_groups",
            get(tokens::permission_groups),
        )
        .route(
            "/user/tokens/{token_id}",
            get(tokens::get_one).delete(tokens::delete),
        )
        .route("/accounts", get(zones::list_accounts))
        .route("/accounts/{account_id}", get(zones::get_account))
        .route(
            "/accounts/{account_id}/secondary_dns/tsigs",
            get(secondary::list_tsigs).post(secondary::create_tsig),
        )
        .route(
            "/accounts/{account_id}/secondary_dns/tsigs/{tsig_id}",
            get(secondary::get_tsig)
                .put(secondary::update_tsig)
                .delete(secondary::delete_tsig),
        )
        .route(
            "/accounts/{account_id}/secondary_dns/peers",
            get(secondary::list_peers).post(secondary::create_peer),
        )
        .route(
            "/accounts/{account_id}/secondary_dns/peers/{peer_id}",
            get(secondary::get_peer)
                .put(secondary::update_peer)
                .patch(secondary::update_peer)
                .delete(secondary::delete_peer),
        )
        .route(
            "/zones/{zone_id}/secondary_dns/outgoing",
            get(secondary::get_outgoing)
                .post(secondary::set_outgoing)
                .put(secondary::set_outgoing)
                .delete(secondary::delete_outgoing),
        )
        .route(
            "/zones/{zone_id}/secondary_dns/outgoing/status",
            get(secondary::outgoing_status),
        )
        .route(
            "/zones/{zone_id}/secondary_dns/outgoing/enable",
            post(secondary::enable_outgoing),
        )
        .route(
            "/zones/{zone_id}/secondary_dns/outgoing/disable",
            post(secondary::disable_outgoing),
        )
        .route(
            "/zones/{zone_id}/secondary_dns/outgoing/force_notify",
            post(secondary::force_notify),
        )
        .route(
            "/zones/{zone_id}/settings",
            get(settings::list).patch(settings::patch_many),
        )
        .route(
            "/zones/{zone_id}/settings/{setting}",
            get(settings::get_one).patch(settings::patch_one),
        )
        .route(
            "/zones/{zone_id}/rulesets/phases/{phase}/entrypoint",
            get(settings::get_entrypoint).put(settings::put_entrypoint),
        )
        .route(
            "/zones/{zone_id}/rulesets",
            get(rulesets::list).post(rulesets::create),
        )
        .route(
            "/zones/{zone_id}/rulesets/{ruleset_id}",
            get(rulesets::get_one)
                .put(rulesets::replace)
                .delete(rulesets::delete),
        )
        .route(
            "/zones/{zone_id}/rulesets/{ruleset_id}/rules",
            post(rulesets::add_rule),
        )
        .route(
            "/zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}",
            axum::routing::patch(rulesets::edit_rule).delete(rulesets::delete_rule),
        )
        // (DELETE too: Cloudflare's WordPress plugin purges with it.)
        .route(
            "/zones/{zone_id}/purge_cache",
            post(purge::purge_cache).delete(purge::purge_cache),
        )
        .route(
            "/zones/{zone_id}/custom_certificates",
            get(certificates::list_certs).post(certificates::create_cert),
        )
        .route(
            "/zones/{zone_id}/origin_tls_client_auth",
            get(certificates::list_pull_certs).post(certificates::create_pull_cert),
        )
        .route(
            "/zones/{zone_id}/origin_tls_client_auth/settings",
            get(settings::get_origin_pull).put(settings::put_origin_pull),
        )
        .route(
            "/zones/{zone_id}/origin_tls_client_auth/{cert_id}",
            get(certificates::get_pull_cert).delete(certificates::delete_pull_cert),
        )
        .route(
            "/zones/{zone_id}/acm/custom_trust_store",
            get(certificates::list_trusted).post(certificates::add_trusted),
        )
        .route(
            "/zones/{zone_id}/acm/custom_trust_store/{id}",
            get(certificates::get_trusted).delete(certificates::delete_trusted),
        )
        .route(
            "/certificates",
            get(certificates::list_origin_certs).post(certificates::create_origin_cert),
        )
        .route(
            "/certificates/{cert_id}",
            get(certificates::get_origin_cert).delete(certificates::revoke_origin_cert),
        )
        .route(
            "/zones/{zone_id}/ssl/certificate_packs",
            get(certificates::certificate_packs),
        )
        .route(
            "/zones/{zone_id}/custom_certificates/prioritize",
            put(certificates::prioritize),
        )
        .route(
            "/zones/{zone_id}/custom_certificates/{cert_id}",
            get(certificates::get_cert)
                .patch(certificates::patch_cert)
                .delete(certificates::delete_cert),
        )
        .route(
            "/zones/{zone_id}/pagerules",
            get(rulesets::page_rules).post(rulesets::page_rule_refused),
        )
        .route(
            "/zones/{zone_id}/pagerules/{rule_id}",
            get(rulesets::page_rule_refused)
                .put(rulesets::page_rule_refused)
                .patch(rulesets::page_rule_refused)
                .delete(rulesets::page_rule_refused),
        )
        .route("/zones", get(zones::list).post(zones::create))
        .route(
            "/zones/{zone_id}",
            get(zones::get_one)
                .patch(zones::patch)
                .delete(zones::delete),
        )
        .route(
            "/zones/{zone_id}/activation_check",
            put(zones::activation_check),
        )
        .route(
            "/zones/{zone_id}/dns_records",
            get(records::list).post(records::create),
        )
        .route("/zones/{zone_id}/dns_records/export", get(records::export))
        .route(
            "/zones/{zone_id}/dns_records/import",
            post(records::import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/zones/{zone_id}/dns_records/batch", post(records::batch))
        .route(
            "/zones/{zone_id}/dns_records/{record_id}",
            get(records::get_one)
                .put(records::replace)
                .patch(records::patch)
                .delete(records::delete),
        );
    let v4 = v4.layer(axum::middleware::map_response(envelope::envelope_refusals));
    let routed = Router::new()
        .nest("/client/v4", v4)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/parapet/status", get(zones::status))
        .fallback(|uri: Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state);
    // A path with a trailing slash is routed as the path without it, as Cloudflare's API
    // takes `zones/` (its WordPress plugin looks zones up so).
    Router::new().fallback_service(tower::ServiceExt::map_request(routed, without_slash))
}

/// `request` with its path's trailing slashes taken off (but the root's).
fn without_slash<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let uri = request.uri();
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rewritten = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(path_and_query) = rewritten.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(path_and_query);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}
