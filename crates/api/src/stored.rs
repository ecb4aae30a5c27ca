//! Typed reads and writes of the JSON values the API keeps in the store.

use parapet_snapshot::zone_key;
use parapet_store::{StoreError, Txn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::zones::load_zone;
use crate::{ApiError, ApiState};

/// How many times a write re-reads and tries again when another writer got there first.
pub const WRITE_ATTEMPTS: usize = 16;

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(value)
        .map_err(|e| ApiError::Internal(format!("stored value {key}: {e}")))
}

/// The value at `key` and the revision that wrote it.
pub async fn load<T: DeserializeOwned>(
    state: &ApiState,
    key: &str,
) -> Result<Option<(T, u64)>, ApiError> {
    let Some(entry) = state.store.get(key).await? else {
        return Ok(None);
    };
    Ok(Some((decode(key, &entry.value)?, entry.mod_revision)))
}

/// Every value under `prefix`, with its key.
pub async fn list_entries<T: DeserializeOwned>(
    state: &ApiState,
    prefix: &str,
) -> Result<Vec<(String, T)>, ApiError> {
    let listing = state.store.list(prefix).await?;
    listing
        .entries
        .into_iter()
        .map(|e| decode(&e.key, &e.value).map(|v| (e.key, v)))
        .collect()
}

/// Every value under `prefix`.
pub async fn list<T: DeserializeOwned>(state: &ApiState, prefix: &str) -> Result<Vec<T>, ApiError> {
    Ok(list_entries(state, prefix)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// A value as stored.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    // The serialiser grows its buffer by doubling, so a value could hold up to twice its
    // length until it is written; a large import holds a million of them at once.
    Ok(if bytes.capacity() > bytes.len() {
        bytes.as_slice().to_vec()
    } else {
        bytes
    })
}

/// Writes `value` at `key` if the key is still at revision `expect` (0: absent).
pub async fn put<T: Serialize>(
    state: &ApiState,
    key: &str,
    expect: u64,
    value: &T,
) -> Result<(), ApiError> {
    let bytes = encode(value)?;
    state
        .store
        .commit(Txn::new().expect(key, expect).put(key, bytes))
        .await?;
    Ok(())
}

/// Whether `result` failed only because another writer got there first.
pub fn conflicted<T>(result: &Result<T, ApiError>) -> bool {
    matches!(result, Err(ApiError::Store(StoreError::Conflict)))
}

/// Writes `value` at `key`, a key of zone `zone_id`, if the key is still at revision `expect`
/// (0: absent) and the zone still at `zone_rev`. A zone's delete removes the keys it sees: a
/// key written under the zone after that would outlive it, so the write conflicts instead.
pub async fn put_in_zone<T: Serialize>(
    state: &ApiState,
    (zone_id, zone_rev): (&str, u64),
    key: &str,
    expect: u64,
    value: &T,
) -> Result<(), ApiError> {
    let bytes = encode(value)?;
    state
        .store
        .commit(
            Txn::new()
                .expect(zone_key(zone_id), zone_rev)
                .expect(key, expect)
                .put(key, bytes),
        )
        .await?;
    Ok(())
}

/// Creates `key` under zone `zone_id` with `value`, as [`put_in_zone`] does, trying again when
/// the zone changed meanwhile; a 404 once the zone is gone.
pub async fn create_in_zone<T: Serialize>(
    state: &ApiState,
    zone_id: &str,
    key: &str,
    value: &T,
) -> Result<(), ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let (_, zone_rev) = load_zone(state, zone_id).await?;
        let result = put_in_zone(state, (zone_id, zone_rev), key, 0, value).await;
        if !conflicted(&result) {
            return result;
        }
    }
    Err(ApiError::Store(StoreError::Conflict))
}
