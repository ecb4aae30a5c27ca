//! Cloudflare's v4 response envelope, and the one place API errors become statuses and codes.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use parapet_model::{FieldError, ModelError};
use parapet_store::StoreError;
use serde::Serialize;
use serde_json::{Value, json};

/// `result_info` of a paged list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResultInfo {
    pub page: usize,
    pub per_page: usize,
    pub count: usize,
    pub total_count: usize,
    pub total_pages: usize,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A failure in the envelope, with `status` as it is.
pub fn error_response(status: StatusCode, code: u32, message: &str) -> Response {
    json_response(
        status,
        &json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
    )
}

/// The web framework's own refusals (a body over the limit, a multipart body that is none, a
/// path that does not decode), which it writes as plain text, in the envelope: clients parse
/// every answer of the API as JSON.
pub async fn envelope_refusals(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("Request refused")
            .to_owned()
    } else {
        parapet_model::name::printable(&text)
    };
    error_response(status, 9207, &message)
}

/// A successful single result.
pub fn ok(result: Value) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"success": true, "errors": [], "messages": [], "result": result}),
    )
}

/// A successful page of a list.
pub fn ok_page(result: Vec<Value>, info: ResultInfo) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"success": true, "errors": [], "messages": [], "result": result, "result_info": info}),
    )
}

/// One error as Cloudflare reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiErrorItem {
    pub code: u32,
    pub message: String,
}

/// Every way an API request fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing authorization")]
    MissingAuth,
    #[error("malformed authorization header")]
    MalformedAuth,
    /// A Global API Key was sent: only API tokens are taken.
    #[error("a Global API Key instead of an API token")]
    GlobalKey,
    #[error("invalid API token")]
    InvalidToken,
    #[error("the token may not do this")]
    Forbidden,
    #[error("{message}")]
    NotFound { code: u32, message: String },
    #[error("bad request")]
    BadRequest(Vec<ApiErrorItem>),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    /// The request was carried out in part for a reason the caller may act on (storage full):
    /// 503, the message shown.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad(code: u32, message: impl Into<String>) -> Self {
        Self::BadRequest(vec![ApiErrorItem {
            code,
            message: message.into(),
        }])
    }

    pub fn zone_not_found() -> Self {
        Self::NotFound {
            code: 7003,
            message: "Could not route to this zone: the zone identifier is invalid or the zone does not exist.".into(),
        }
    }

    pub fn record_not_found() -> Self {
        Self::NotFound {
            code: 81044,
            message: "Record does not exist.".into(),
        }
    }

    /// Field errors of a DNS record, each with the code Cloudflare uses for that field.
    pub fn record_fields(err: &ModelError) -> Self {
        Self::BadRequest(err.errors().iter().map(record_field_item).collect())
    }

    /// Field errors of anything else.
    pub fn fields(code: u32, err: &ModelError) -> Self {
        Self::BadRequest(
            err.errors()
                .iter()
                .map(|e| ApiErrorItem {
                    code,
                    message: e.to_string(),
                })
                .collect(),
        )
    }

    fn status_and_items(&self) -> (StatusCode, Vec<ApiErrorItem>) {
        let item = |code: u32, message: &str| {
            vec![ApiErrorItem {
                code,
                message: message.to_owned(),
            }]
        };
        match self {
            Self::MissingAuth => (
                StatusCode::UNAUTHORIZED,
                item(
                    9106,
                    "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
                ),
            ),
            Self::GlobalKey => (
                StatusCode::UNAUTHORIZED,
                item(
                    9103,
                    "Global API Keys (X-Auth-Email, X-Auth-Key) are not accepted: use an API token (Authorization: Bearer)",
                ),
            ),
            Self::MalformedAuth => (
                StatusCode::UNAUTHORIZED,
                item(6111, "Invalid format for Authorization header"),
            ),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, item(1000, "Invalid API Token")),
            Self::Forbidden => (StatusCode::FORBIDDEN, item(10000, "Authentication error")),
            Self::NotFound { code, message } => (StatusCode::NOT_FOUND, item(*code, message)),
            Self::BadRequest(items) => (StatusCode::BAD_REQUEST, items.clone()),
            // Both of Cloudflare's errors, in its order.
            Self::NoRoute(path) => (
                StatusCode::NOT_FOUND,
                [
                    item(
                        7003,
                        &format!(
                            "Could not route to {path}, perhaps your object identifier is invalid?"
                        ),
                    ),
                    item(7000, "No route for that URI"),
                ]
                .concat(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                item(10405, "Method not allowed for this URI"),
            ),
            Self::Store(StoreError::Conflict) => (
                StatusCode::SERVICE_UNAVAILABLE,
                item(
                    10001,
                    "The zone is being changed by another request; try again",
                ),
            ),
            Self::Store(StoreError::Storage(cause)) => {
                tracing::error!("store storage failure: {cause}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    item(
                        10001,
                        &format!(
                            "The store's storage failed ({cause}); a change this request made was most likely not written: read it back before trying again once the storage works"
                        ),
                    ),
                )
            }
            Self::Store(e) => {
                tracing::error!("store failure: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    item(10001, "Internal store error"),
                )
            }
            Self::Unavailable(m) => {
                tracing::error!("{m}");
                (StatusCode::SERVICE_UNAVAILABLE, item(10001, m))
            }
            Self::Internal(m) => {
                tracing::error!("internal error: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    item(10001, "Internal error"),
                )
            }
        }
    }
}

fn record_field_item(e: &FieldError) -> ApiErrorItem {
    let field = e.field.split('.').next().unwrap_or("");
    let code = match field {
        "name" => 9000,
        "type" => 9008,
        "content" | "data" => 9005,
        "ttl" => 9021,
        "proxied" => 9004,
        "priority" => 9100,
        "body" => 9207,
        _ => 9005,
    };
    ApiErrorItem {
        code,
        message: e.to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, items) = self.status_and_items();
        let errors: Vec<Value> = items
            .iter()
            .map(|i| json!({"code": i.code, "message": i.message}))
            .collect();
        json_response(
            status,
            &json!({"success": false, "errors": errors, "messages": [], "result": null}),
        )
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Reads a JSON request body: malformed JSON is a 400 with code 9207, never a 500.
pub fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            9207,
            "Request body is empty; a JSON object is required",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad(9207, format!("Request body is not valid JSON: {e}")))
}

/// Now, in Cloudflare's timestamp format.
pub fn now_timestamp() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
