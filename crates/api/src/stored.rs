//! Typed reads and writes of the JSON values the API keeps in the store.

use parapet_store::{StoreError, Txn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ApiError, ApiState};

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
    match state
        .store
        .commit(Txn::new().expect(key, expect).put(key, bytes))
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict) => Err(ApiError::Store(StoreError::Conflict)),
        Err(e) => Err(e.into()),
    }
}
