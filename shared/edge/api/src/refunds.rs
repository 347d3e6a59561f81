//! Refunds of a card payment to its card (operator). Served with the payment routes: it needs
//! the card processor. The flow and its failure model are `payment_flow::refund`'s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use ledger::Amount;
use payment_flow::refund::{refund_payment, RefundAsk, RefundError};
use payment_flow::PaymentPorts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::account_or_404;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::{SignedUsd, Usd};
use crate::operator::{path_account, AccountPath};
use crate::payments::{PaymentView, RefundView};
use crate::state::AppState;
use documents::payment::RefundStatus;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default().routes(routes!(refund))
}

/// Part or all of a payment, back to its card.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RefundRequest)]
pub struct RefundBody {
    /// Whole cents, at least 0.01, at most what is left of the payment.
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// The refund, its payment (with every refund and what is left) and the balance after.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundReply {
    pub refund: RefundView,
    pub payment: PaymentView,
    #[schema(value_type = Option<SignedUsd>)]
    pub balance_usd: Option<String>,
    pub message: String,
}

impl From<RefundError> for ApiError {
    fn from(error: RefundError) -> Self {
        let text = error.to_string();
        match error {
            RefundError::NoSuchPayment(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "no_such_payment", text)
            }
            RefundError::NoSuchRefund(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "no_such_refund", text)
            }
            RefundError::NotRefundable { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_refundable", text)
            }
            RefundError::TooMuch { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refund_exceeds_payment", text)
                    .on_field("amount_usd")
            }
            RefundError::KeyReused { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", text)
                    .on_field("Idempotency-Key")
            }
            RefundError::Invalid(_) => ApiError::bad_request("invalid_request", text),
            RefundError::TooManyPending => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_pending_payments", text)
            }
            RefundError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", text),
            RefundError::Document(error) => error.into(),
            RefundError::Store(error) => ApiError::from_store(error),
            internal @ RefundError::Internal(_) => ApiError::internal(&internal),
        }
    }
}

/// The payment in a refund route's path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path.
struct PaymentPath {
    /// The payment's id, as the payment history lists it.
    #[param(max_length = 200)]
    payment_id: String,
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/payments/{payment_id}/refunds",
    summary = "Refund part or all of a payment to its card, with a reason (operator; Idempotency-Key required)",
    params(
        AccountPath,
        PaymentPath,
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$",
            description = "The refund's id: a resend refunds nothing twice"),
    ),
    request_body = RefundBody,
    responses(
        (status = 200, description = "Already asked for with this key (the same amount and reason): where it stands, nothing changed", body = RefundReply),
        (status = 201, description = "Refunded: debited from the balance and returned to the card (`sent` or `pending`)", body = RefundReply),
        (status = 202, description = "Debited; the processor has not answered: it is finished once in the background (see the payment history)", body = RefundReply),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or payment", body = ApiError),
        (status = 409, description = "The payment cannot be refunded (not succeeded)", body = ApiError),
        (status = 422, description = "More than is left of the payment, or the key was used for another refund: nothing changed", body = ApiError),
        (status = 429, description = "Too many payments and refunds are still pending; retry later", body = ApiError),
        (status = 502, description = "The processor refused the refund: the debit was returned to the balance (`failed`)", body = RefundReply),
        (status = 503, description = "Busy: retry with the same key", body = ApiError),
    )
)]
async fn refund(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((account_id, payment_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<RefundReply>), ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::bad_request("missing_idempotency_key", "an Idempotency-Key header is required")
            .on_field("Idempotency-Key")
    })?;
    payment_flow::refund::check_refund_id(key)
        .map_err(|e| ApiError::from(e).on_field("Idempotency-Key"))?;
    let request: RefundBody = crate::body::json(&raw)?;
    if ledger::docs::check_doc_id(&payment_id).is_err() {
        return Err(ApiError::bad_request("invalid_field", "payment_id is not a payment id")
            .on_field("payment_id"));
    }
    account_or_404(&state, &id).await?;
    let ports = PaymentPorts {
        store: &*state.store,
        processor: &*state.processor,
        notices: state.notices.as_deref(),
    };
    let ask = RefundAsk {
        payment_id,
        refund_id: key.to_string(),
        amount: request.amount_usd,
        reason: request.reason,
        by: Some(identity.user.clone()),
    };
    let answer = refund_payment(&ports, &id, ask, Utc::now()).await?;
    let (status, message) = match (answer.refund.status, answer.created) {
        (RefundStatus::Requested, _) => (
            StatusCode::ACCEPTED,
            "Debited from the balance; the card processor has not confirmed the refund yet. It is \
             sent once (or returned to the balance if the processor refuses it) in the \
             background; nothing is refunded twice.",
        ),
        (RefundStatus::Failed, _) => (
            StatusCode::BAD_GATEWAY,
            "The card processor refused the refund; the amount was returned to the balance.",
        ),
        (_, true) => (StatusCode::CREATED, "Refunded to the card and debited from the balance."),
        (_, false) => (StatusCode::OK, "Already refunded with this Idempotency-Key."),
    };
    Ok((
        status,
        Json(RefundReply {
            refund: (&answer.refund).into(),
            payment: (&answer.payment).into(),
            balance_usd: answer.balance_usd.map(|b| b.normalize().to_string()),
            message: message.to_string(),
        }),
    ))
}
