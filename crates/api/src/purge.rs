//! `POST /zones/{id}/purge_cache`, in Cloudflare's shape.

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
    let zone = authorized_zone(&state, &auth, &zone_id, Access::EditZone).await?;
    let purge = Purge::from_json(&parse_body(&body)?).map_err(|e| ApiError::fields(1012, &e))?;
    let removed = state.purge.as_ref().map_or(0, |p| p(&zone.id, &purge));
    tracing::info!(zone = %zone.id, removed, "cache purged");
    Ok(ok(json!({"id": zone.id})))
}
