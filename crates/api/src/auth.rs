//! Bearer-token authentication and scope checks.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use parapet_model::token::secret_digest;
use parapet_model::{ApiToken, Need};
use parapet_snapshot::token_key;

use crate::{ApiError, ApiState};

/// The token a request authenticated with.
#[derive(Debug, Clone)]
pub struct Auth(pub ApiToken);

impl Auth {
    pub fn require(&self, need: Need<'_>) -> Result<(), ApiError> {
        if self.0.allows(need) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Whether `s` can be a token's secret at all (what `Authorization: Bearer` is read as).
pub fn plausible_secret(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl FromRequestParts<Arc<ApiState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            // A Global API Key (X-Auth-Email and X-Auth-Key) is not a missing credential: it
            // is one this API does not take.
            if parts.headers.contains_key("x-auth-key") {
                return Err(ApiError::GlobalKey);
            }
            return Err(ApiError::MissingAuth);
        };
        let header = header.to_str().map_err(|_| ApiError::MalformedAuth)?;
        let Some((scheme, secret)) = header.trim().split_once(' ') else {
            return Err(ApiError::MalformedAuth);
        };
        let secret = secret.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || !plausible_secret(secret) {
            return Err(ApiError::MalformedAuth);
        }
        let digest = secret_digest(secret);
        if let Some(env) = &state.config.env_token
            && secret_digest(env) == digest
        {
            return Ok(Self(env_token(env)));
        }
        let entry = state
            .store
            .get(&token_key(&digest))
            .await?
            .ok_or(ApiError::InvalidToken)?;
        let token: ApiToken = serde_json::from_slice(&entry.value)
            .map_err(|e| ApiError::Internal(format!("stored token unreadable: {e}")))?;
        Ok(Self(token))
    }
}

/// The token given by `PARAPET_API_TOKEN`: every right, with a stable id derived from it.
pub fn env_token(secret: &str) -> ApiToken {
    let id = secret_digest(&format!("parapet-env-token:{secret}"))[..32].to_owned();
    ApiToken::admin(id, "PARAPET_API_TOKEN".into(), String::new())
}
