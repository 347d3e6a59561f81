//! The API's error body: `{code, message, field}`. Internal errors never reach the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Every error answer: a stable machine-readable `code`, a message for people, and the field
/// (body field, query parameter or header) it is about, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
// The body has exactly these fields; the schema says so (`additionalProperties: false`), so it
// is told apart from answers that carry more (a declined payment's).
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    #[schema(value_type = String, example = "invalid_field")]
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds the client should wait (a 429's `Retry-After` header).
    #[serde(skip)]
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after_seconds: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn on_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Log the cause with its chain; answer a bare 500 (or 503 for retryable store trouble).
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    pub fn from_store(error: ledger::StoreError) -> Self {
        use ledger::StoreError;
        match error {
            StoreError::AccountNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", "no such account")
            }
            StoreError::Rejected(rule) => Self::bad_request("invalid_request", rule.to_string()),
            StoreError::Contention(_) | StoreError::Throttled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the ledger is busy; nothing was applied, retry",
            ),
            other => Self::internal(&other),
        }
    }
}

impl From<documents::DocumentError> for ApiError {
    fn from(error: documents::DocumentError) -> Self {
        use documents::DocumentError;
        match error {
            DocumentError::Invalid { field, message } => {
                Self::bad_request("invalid_field", message).on_field(field)
            }
            DocumentError::TooLarge(what) => {
                Self::bad_request("invalid_request", format!("the {what} is too large"))
            }
            DocumentError::Busy(what) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("the {what} is being changed concurrently; retry"),
            ),
            DocumentError::Store(error) => Self::from_store(error),
            unreadable @ DocumentError::Unreadable { .. } => Self::internal(&unreadable),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.retry_after_seconds {
            Some(seconds) => {
                (self.status, [(axum::http::header::RETRY_AFTER, seconds.to_string())], Json(self))
                    .into_response()
            }
            None => (self.status, Json(self)).into_response(),
        }
    }
}
