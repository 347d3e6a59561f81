//! The card processor's webhook: `POST /v1/webhooks/stripe`. Not behind the JWT check: Stripe
//! signs each delivery instead, and a delivery whose signature does not verify (wrong secret,
//! changed body, a timestamp outside the tolerance: a replay) answers 400 and changes nothing.
//!
//! A verified event is stored once by its id (a document of the processor's pseudo-account),
//! handed to the event sink (the worker that applies it: in process locally), and marked handed
//! on. A redelivery of an event already handed on answers 200 and does nothing; one whose hand-off
//! failed is handed on again (applying is idempotent, so a second hand-off is harmless, a lost
//! one is not). Stripe retries a delivery that did not get a 2xx.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use chrono::Utc;
use ledger::docs::{DocError, DocKind, PROCESSOR_EVENTS_ACCOUNT};
use ledger::AccountId;
use payments::stripe_events::{parse_event, verify_signature, EventAction, ProcessorEvent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::Store;

/// The webhook's path.
pub const STRIPE_WEBHOOK_PATH: &str = "/v1/webhooks/stripe";
/// The webhook's routes, as `(METHOD, path)` (the template deploys them, without an authorizer).
pub const ROUTES: &[(&str, &str)] = &[("POST", STRIPE_WEBHOOK_PATH)];
/// The largest delivery read (Stripe's events are a few kilobytes).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Where verified events that move money go (the worker that applies them).
#[async_trait]
pub trait ProcessorEventSink: Send + Sync {
    async fn publish(
        &self,
        event: &ProcessorEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

pub struct WebhookState {
    pub store: Arc<dyn Store>,
    /// The endpoint's signing secret (`whsec_...`); `None`: the webhook answers 503.
    pub secret: Option<String>,
    pub sink: Arc<dyn ProcessorEventSink>,
}

/// The webhook's route with its documentation.
pub fn api() -> OpenApiRouter<Arc<WebhookState>> {
    OpenApiRouter::default().routes(routes!(receive))
}

pub fn router(state: Arc<WebhookState>) -> Router {
    Router::from(api()).with_state(state)
}

/// What is kept of a received event.
#[derive(Debug, Serialize, Deserialize)]
struct Received {
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    received_at: chrono::DateTime<Utc>,
    /// Handed to the sink (nothing more to do on a redelivery).
    handed_on: bool,
}

/// The event was received (now or before).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReply {
    pub event_id: String,
    /// Already received and handed on: nothing was done again.
    pub duplicate: bool,
}

#[utoipa::path(
    post, path = "/v1/webhooks/stripe",
    summary = "The card processor's events (Stripe webhooks; signed, no bearer token)",
    description = "The body is Stripe's event JSON, checked byte for byte against the \
        `Stripe-Signature` header (HMAC-SHA256 of `t.body` with the endpoint's signing secret, \
        `t` within 5 minutes) before it is read. Each event is stored once by its id and handed \
        on once; `charge.dispute.*` events move the ledger (see the dispute lifecycle in the \
        README), others are kept.",
    security(()),
    params(
        ("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256>`"),
    ),
    responses(
        (status = 200, description = "Received (or received before: `duplicate`)", body = WebhookReply),
        (status = 400, description = "The signature does not verify (wrong secret, changed body, outside the tolerance) or the event cannot be read: nothing was stored", body = ApiError),
        (status = 503, description = "Not handed on (or no secret configured): the processor delivers it again", body = ApiError),
    )
)]
async fn receive(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReply>, ApiError> {
    let Some(secret) = state.secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_not_configured",
            "no webhook signing secret is configured",
        ));
    };
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::bad_request("too_large", "the event is too large"));
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    verify_signature(secret, signature, &body, Utc::now())
        .map_err(|e| ApiError::bad_request("bad_signature", e.to_string()))?;
    let event =
        parse_event(&body).map_err(|e| ApiError::bad_request("unreadable_event", e.to_string()))?;
    let account = AccountId::parse(PROCESSOR_EVENTS_ACCOUNT)
        .map_err(|e| ApiError::internal(&std::io::Error::other(e.to_string())))?;
    let received = Received {
        kind: event.kind.clone(),
        created: event.created,
        received_at: ledger::truncate_to_micros(Utc::now()),
        handed_on: false,
    };
    let body = serde_json::to_string(&received).map_err(|e| ApiError::internal(&e))?;
    let docs: &dyn ledger::docs::DocStore = &*state.store;
    let version = match docs
        .put_doc(&account, DocKind::ProcessorEvent, &event.id, &body, None)
        .await
    {
        Ok(version) => version,
        Err(DocError::Conflict) => {
            let doc = docs
                .get_doc(&account, DocKind::ProcessorEvent, &event.id)
                .await
                .map_err(ApiError::from_store)?
                .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "retry"))?;
            let stored: Received =
                serde_json::from_str(&doc.body).map_err(|e| ApiError::internal(&e))?;
            if stored.handed_on {
                return Ok(Json(WebhookReply { event_id: event.id, duplicate: true }));
            }
            doc.version
        }
        Err(DocError::TooLarge(_)) => {
            return Err(ApiError::bad_request("too_large", "the event is too large"))
        }
        Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
    };
    if !matches!(event.action, EventAction::Ignore) {
        state.sink.publish(&event).await.map_err(|error| {
            tracing::warn!(%error, event = %event.id, "processor event not handed on");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_handed_on",
                "the event was received but not handed on; the processor will deliver it again",
            )
        })?;
    }
    let handed = Received { handed_on: true, ..received };
    let body = serde_json::to_string(&handed).map_err(|e| ApiError::internal(&e))?;
    // A lost race means another delivery marked it; either way it was handed on.
    let _ = docs.put_doc(&account, DocKind::ProcessorEvent, &event.id, &body, Some(version)).await;
    Ok(Json(WebhookReply { event_id: event.id, duplicate: false }))
}

/// Apply one verified event: the worker behind the sink (the processor-events function in AWS,
/// in process locally). An event that can never apply (a dispute or refund of a payment that
/// is not ours, or not recorded yet: the reconciliation catches those up) is done, so the
/// processor or the queue does not redeliver it for days; anything else is an error to retry.
pub async fn apply_event(
    ports: &payment_flow::PaymentPorts<'_>,
    event: &ProcessorEvent,
    now: chrono::DateTime<Utc>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use payment_flow::dispute::{apply_dispute, DisputeError};
    use payment_flow::refund::{refund_failed_later, RefundError};
    let id = &event.id;
    match &event.action {
        EventAction::Dispute { dispute } => match apply_dispute(ports, dispute, now).await {
            Ok(applied) => {
                tracing::info!(event = %id, posted = applied.posted, "dispute applied");
                Ok(())
            }
            Err(
                error @ (DisputeError::UnknownPayment(_) | DisputeError::NoPaymentRecord { .. }),
            ) => {
                tracing::warn!(%error, event = %id, "dispute left to the reconciliation");
                Ok(())
            }
            Err(error) => Err(Box::new(error)),
        },
        EventAction::RefundFailed { payment_intent_id, idempotency_key, reason } => {
            match refund_failed_later(ports, payment_intent_id, idempotency_key, reason, now).await
            {
                Ok(_) => Ok(()),
                Err(error @ (RefundError::NoSuchPayment(_) | RefundError::NoSuchRefund(_))) => {
                    tracing::warn!(%error, event = %id, "refund event for no refund of ours");
                    Ok(())
                }
                Err(error) => Err(Box::new(error)),
            }
        }
        EventAction::PayNowOutcome { account_id, key } => {
            let Ok(account) = AccountId::parse(account_id.as_str()) else { return Ok(()) };
            match payment_flow::reconcile_pending_payment(ports, &account, key, now).await {
                // Settled, or its owner is still at it (its own pending event finishes it).
                Ok(_) => Ok(()),
                Err(error) => Err(Box::new(error)),
            }
        }
        EventAction::ExternalRefunds { payment_intent_id } => {
            match payment_flow::refund::sync_external_refunds(ports, payment_intent_id, now).await {
                Ok(changed) => {
                    tracing::info!(event = %id, changed, "refunds at the processor followed");
                    Ok(())
                }
                Err(error @ RefundError::NoSuchPayment(_)) => {
                    tracing::warn!(%error, event = %id, "refund event left to the reconciliation");
                    Ok(())
                }
                Err(error) => Err(Box::new(error)),
            }
        }
        EventAction::CardUpdated { customer, card } => {
            let outcome = payment_flow::cards::card_updated(ports, customer, card).await?;
            tracing::info!(event = %id, ?outcome, "card update applied");
            Ok(())
        }
        EventAction::CardExpiring { customer, card } => {
            let outcome = payment_flow::cards::card_expiring(ports, customer, card, now).await?;
            tracing::info!(event = %id, ?outcome, "card expiry applied");
            Ok(())
        }
        EventAction::Ignore => Ok(()),
    }
}
