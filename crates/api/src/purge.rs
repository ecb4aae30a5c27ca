//! `POST /zones/{id}/purge_cache`, in Cloudflare's shape. A URL is purged by the cache key a
//! request for it gets at the edge.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use parapet_model::purge::Purge;
use serde_json::json;

use crate::envelope::{ApiResult, ok, parse_body};
use crate::zones::{Access, authorized_zone};
use crate::{ApiError, ApiState, Auth};

pub async fn purge_cache(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
    Path(zone_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let zone = authorized_zone(&state, &auth, &zone_id, Access::Purge).await?;
    let purges = Purge::from_json(&parse_body(&body)?).map_err(|e| ApiError::fields(1012, &e))?;
    // Files are purged by the keys the edge gives requests for them: the cache rules it
    // applies (the node configuration's for the zone, then the zone's own, as served now)
    // shape their queries.
    let snapshot = state.published.load();
    let edge = snapshot.edge_of(&zone.id);
    let rules: Vec<_> = state
        .published
        .configured_cache_rules(&zone.name)
        .iter()
        .chain(&edge.cache_rules)
        .collect();
    let purges: Vec<Purge> = purges.into_iter().map(|p| p.keyed_by(&rules)).collect();
    // A large purge deletes files for a while: off the runtime's threads.
    let removed = match state.purge.clone() {
        Some(purge_fn) => {
            let zone_id = zone.id.clone();
            tokio::task::spawn_blocking(move || {
                purges.iter().try_fold(0, |removed, purge| {
                    purge_fn(&zone_id, purge).map(|n| removed + n)
                })
            })
            .await
            .map_err(|e| ApiError::Internal(format!("purging the cache: {e}")))?
            // In force, but a restart could bring the objects back: the caller should know
            // (and may send it again once the disk has room).
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "the purge is in force, but it could not be saved for a restart ({e}); send it again"
                ))
            })?
        }
        None => 0,
    };
    tracing::info!(zone = %zone.id, removed, "cache purged");
    Ok(ok(json!({"id": zone.id})))
}
