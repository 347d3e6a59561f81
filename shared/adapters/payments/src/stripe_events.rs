//! Stripe's webhook events: the `Stripe-Signature` check and the events ringledger acts on.
//!
//! Stripe signs each delivery with the endpoint's secret: the header carries `t=<unix
//! seconds>` and one or more `v1=<hex HMAC-SHA256 of "<t>.<body>">` (several while a secret is
//! being rolled). A delivery is accepted only if one `v1` matches (compared in constant time)
//! and `t` is within [`SIGNATURE_TOLERANCE_SECONDS`] of now, so a captured delivery cannot be
//! replayed later. The body is checked as received, byte for byte, before it is parsed.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::stripe::{dispute_state, DisputeBody};
use crate::DisputeState;

/// How far a signature's timestamp may be from now (Stripe's libraries use 5 minutes).
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;
/// The longest `Stripe-Signature` header read.
const MAX_HEADER_CHARS: usize = 2_048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the Stripe-Signature header is missing or malformed")]
    MalformedHeader,
    #[error("no v1 signature in the Stripe-Signature header matches the body")]
    BadSignature,
    #[error(
        "the signature's timestamp is {age_seconds} s from now, outside the \
         {SIGNATURE_TOLERANCE_SECONDS} s tolerance"
    )]
    OutsideTolerance { age_seconds: i64 },
    #[error("the event cannot be read: {0}")]
    Unreadable(String),
}

/// Check a delivery's `Stripe-Signature` against the endpoint `secret` and the raw `body`.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), WebhookError> {
    if header.is_empty() || header.len() > MAX_HEADER_CHARS {
        return Err(WebhookError::MalformedHeader);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(WebhookError::MalformedHeader);
        };
        match key {
            "t" if timestamp.is_none() => {
                timestamp = Some(value.parse().map_err(|_| WebhookError::MalformedHeader)?);
            }
            "t" => return Err(WebhookError::MalformedHeader),
            // A v1 that is not hex cannot match; the others may still.
            "v1" => signatures.extend(hex::decode(value).ok()),
            // v0 (test mode's old scheme) and future schemes are not trusted.
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return Err(WebhookError::MalformedHeader) };
    if signatures.is_empty() {
        return Err(WebhookError::BadSignature);
    }
    let matches = signatures.iter().any(|signature| {
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(signature).is_ok()
    });
    if !matches {
        return Err(WebhookError::BadSignature);
    }
    let age_seconds = now.timestamp() - timestamp;
    if age_seconds.abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(WebhookError::OutsideTolerance { age_seconds });
    }
    Ok(())
}

/// A verified delivery's event (also the processor-events queue's message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorEvent {
    /// Stripe's event id (`evt_...`): the same event delivered twice has the same id.
    pub id: String,
    /// Stripe's event type (`charge.dispute.created`, ...).
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    pub action: EventAction,
}

/// What ringledger does with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum EventAction {
    /// `charge.dispute.*`: apply the dispute's state (`payment_flow::dispute`).
    Dispute { dispute: DisputeState },
    /// `charge.refund.updated` to `failed` or `canceled`: a refund the processor had taken did
    /// not reach the card after all (`payment_flow::refund::refund_failed_later`).
    RefundFailed {
        payment_intent_id: String,
        /// The refund's idempotency key (our `refund:<account>:...`), from its metadata.
        idempotency_key: String,
        reason: String,
    },
    /// `payment_intent.succeeded`, `.payment_failed` or `.processing` for a Pay Now (our key
    /// `pay:<account>:<key>` in its metadata): settle the payment now rather than at the
    /// reconciler's next look (`payment_flow::reconcile_pending_payment`, which also serves a
    /// stale or repeated event).
    PayNowOutcome { account_id: String, key: String },
    /// `payment_method.updated` or `.automatically_updated` (the card networks' updater gave the
    /// card a new expiry or number): the stored card is brought up to date.
    CardUpdated { customer: String, card: card_processor::CardDetails },
    /// `charge.refunded`, or `charge.refund.updated` for a refund that is not ours: refunds
    /// made at the processor outside this system (its dashboard) are followed
    /// (`payment_flow::refund::sync_external_refunds`).
    ExternalRefunds { payment_intent_id: String },
    /// `customer.source.expiring`: the card expires at the end of next month; the primary's
    /// contacts get the expiry notice (once, shared with the daily sweep's).
    CardExpiring { customer: String, card: card_processor::CardDetails },
    /// Nothing (yet): acknowledged and kept.
    Ignore,
}

#[derive(Deserialize)]
struct IntentObject {
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct ChargeObject {
    #[serde(default)]
    payment_intent: Option<String>,
}

#[derive(Deserialize)]
struct Owner {
    customer: Option<String>,
}

/// A legacy card object (`customer.source.expiring`).
#[derive(Deserialize)]
struct SourceCard {
    id: String,
    brand: String,
    last4: String,
    exp_month: u8,
    exp_year: u16,
}

/// A card event's customer and card, or `Ignore` for one that names no customer (a detached
/// payment method).
fn card_event(
    object: serde_json::Value,
    kind: &str,
) -> Result<Option<(String, card_processor::CardDetails)>, WebhookError> {
    let unreadable = |e: String| WebhookError::Unreadable(format!("{kind}: {e}"));
    let owner: Owner =
        serde_json::from_value(object.clone()).map_err(|e| unreadable(e.to_string()))?;
    let Some(customer) = owner.customer.filter(|c| c.starts_with("cus_")) else { return Ok(None) };
    let card = if kind == "customer.source.expiring" {
        let card: SourceCard =
            serde_json::from_value(object).map_err(|e| unreadable(e.to_string()))?;
        let object = serde_json::json!({
            "id": card.id, "type": "card",
            "card": {"brand": card.brand.to_lowercase(), "last4": card.last4,
                     "exp_month": card.exp_month, "exp_year": card.exp_year},
        });
        let method: crate::stripe::PaymentMethodBody =
            serde_json::from_value(object).map_err(|e| unreadable(e.to_string()))?;
        crate::stripe::card_details(method)
    } else {
        let method: crate::stripe::PaymentMethodBody =
            serde_json::from_value(object).map_err(|e| unreadable(e.to_string()))?;
        crate::stripe::card_details(method)
    };
    card.map(|card| Some((customer, card))).map_err(|e| unreadable(e.to_string()))
}

#[derive(Deserialize)]
struct RefundObject {
    status: String,
    payment_intent: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct EventEnvelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// Read a verified delivery's body.
pub fn parse_event(body: &[u8]) -> Result<ProcessorEvent, WebhookError> {
    let envelope: EventEnvelope =
        serde_json::from_slice(body).map_err(|e| WebhookError::Unreadable(e.to_string()))?;
    if !envelope.id.starts_with("evt_") || envelope.id.len() > 255 {
        return Err(WebhookError::Unreadable(format!("{:?} is not an event id", envelope.id)));
    }
    let action = if envelope.kind.starts_with("charge.dispute.") {
        let dispute: DisputeBody = serde_json::from_value(envelope.data.object)
            .map_err(|e| WebhookError::Unreadable(format!("dispute: {e}")))?;
        EventAction::Dispute {
            dispute: dispute_state(dispute).map_err(|e| WebhookError::Unreadable(e.to_string()))?,
        }
    } else if matches!(
        envelope.kind.as_str(),
        "payment_intent.succeeded"
            | "payment_intent.payment_failed"
            | "payment_intent.processing"
            | "payment_intent.canceled"
    ) {
        let intent: IntentObject = serde_json::from_value(envelope.data.object)
            .map_err(|e| WebhookError::Unreadable(format!("payment intent: {e}")))?;
        let pay_now = intent.metadata.get("idempotency_key").and_then(|key| {
            let rest = key.strip_prefix("pay:")?;
            let (account, key) = rest.split_once(':')?;
            (!account.is_empty() && !key.is_empty())
                .then(|| EventAction::PayNowOutcome { account_id: account.into(), key: key.into() })
        });
        // A plan period's direct charge (`plan:<account>:<period>/<attempt>/<card>`): the
        // period's pending key, which settles that period's charges.
        let plan = intent.metadata.get("idempotency_key").and_then(|key| {
            let rest = key.strip_prefix("plan:")?;
            let (account, claim) = rest.split_once(':')?;
            let (period, _) = claim.split_once('/')?;
            (!account.is_empty() && !period.is_empty()).then(|| EventAction::PayNowOutcome {
                account_id: account.into(),
                key: format!("plan:{period}"),
            })
        });
        // Auto-recharge's own payments are settled by their request (the recharge queue).
        pay_now.or(plan).unwrap_or(EventAction::Ignore)
    } else if matches!(
        envelope.kind.as_str(),
        "payment_method.updated" | "payment_method.automatically_updated"
    ) {
        match card_event(envelope.data.object, &envelope.kind)? {
            Some((customer, card)) => EventAction::CardUpdated { customer, card },
            None => EventAction::Ignore,
        }
    } else if envelope.kind == "charge.refunded" {
        let charge: ChargeObject = serde_json::from_value(envelope.data.object)
            .map_err(|e| WebhookError::Unreadable(format!("charge: {e}")))?;
        match charge.payment_intent {
            Some(payment_intent_id) => EventAction::ExternalRefunds { payment_intent_id },
            None => EventAction::Ignore,
        }
    } else if envelope.kind == "customer.source.expiring" {
        match card_event(envelope.data.object, &envelope.kind)? {
            Some((customer, card)) => EventAction::CardExpiring { customer, card },
            None => EventAction::Ignore,
        }
    } else if envelope.kind == "charge.refund.updated" {
        let refund: RefundObject = serde_json::from_value(envelope.data.object)
            .map_err(|e| WebhookError::Unreadable(format!("refund: {e}")))?;
        let ours = refund.metadata.get("idempotency_key").filter(|k| k.starts_with("refund:"));
        match (refund.status.as_str(), refund.payment_intent, ours) {
            // Made outside this system: followed as the processor has it.
            (_, Some(payment_intent_id), None) => {
                EventAction::ExternalRefunds { payment_intent_id }
            }
            ("failed" | "canceled", Some(payment_intent_id), Some(key)) => {
                EventAction::RefundFailed {
                    payment_intent_id,
                    idempotency_key: key.clone(),
                    reason: refund
                        .failure_reason
                        .map(|r| crate::redact_card_numbers(&r))
                        .unwrap_or_else(|| format!("the processor {} the refund", refund.status)),
                }
            }
            _ => EventAction::Ignore,
        }
    } else {
        EventAction::Ignore
    };
    Ok(ProcessorEvent { id: envelope.id, kind: envelope.kind, created: envelope.created, action })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    /// HMAC-SHA256("whsec_test", "1700000000.{\"id\":\"evt_1\"}"), computed independently
    /// (Python's `hmac`), as Stripe computes it.
    const SIGNATURE: &str = "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).single().unwrap()
    }

    #[test]
    fn refunds_not_ours_are_followed_and_ours_that_fail_are_reversed() {
        let event = |kind: &str, object: serde_json::Value| {
            let body = serde_json::json!({"id": "evt_r", "type": kind, "created": 1,
                "data": {"object": object}});
            parse_event(body.to_string().as_bytes()).unwrap().action
        };
        let refunded =
            event("charge.refunded", serde_json::json!({"id": "ch_1", "payment_intent": "pi_1"}));
        assert_eq!(refunded, EventAction::ExternalRefunds { payment_intent_id: "pi_1".into() });
        let theirs = event(
            "charge.refund.updated",
            serde_json::json!({"id": "re_1", "status": "failed", "payment_intent": "pi_1"}),
        );
        assert_eq!(theirs, EventAction::ExternalRefunds { payment_intent_id: "pi_1".into() });
        let ours = event(
            "charge.refund.updated",
            serde_json::json!({"id": "re_2", "status": "failed", "payment_intent": "pi_1",
                "metadata": {"idempotency_key": "refund:acme:00ff:r-1"}}),
        );
        assert!(matches!(ours, EventAction::RefundFailed { .. }), "{ours:?}");
        let no_intent = event("charge.refunded", serde_json::json!({"id": "ch_2"}));
        assert_eq!(no_intent, EventAction::Ignore);
    }

    #[test]
    fn a_stripe_signature_verifies_within_the_tolerance() {
        let header = format!("t=1700000000,v1={SIGNATURE}");
        assert_eq!(verify_signature(SECRET, &header, BODY, at(1_700_000_000)), Ok(()));
        assert_eq!(verify_signature(SECRET, &header, BODY, at(1_700_000_299)), Ok(()));
        // Several v1 (a secret being rolled) and a v0: one match is enough.
        let rolled = format!("t=1700000000, v1=00ff, v0=abc, v1={SIGNATURE}");
        assert_eq!(verify_signature(SECRET, &rolled, BODY, at(1_700_000_010)), Ok(()));
    }

    #[test]
    fn bad_replayed_and_malformed_signatures_are_refused() {
        let header = format!("t=1700000000,v1={SIGNATURE}");
        assert_eq!(
            verify_signature("whsec_other", &header, BODY, at(1_700_000_000)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(SECRET, &header, br#"{"id":"evt_2"}"#, at(1_700_000_000)),
            Err(WebhookError::BadSignature),
            "a changed body"
        );
        assert_eq!(
            verify_signature(SECRET, &header, BODY, at(1_700_000_301)),
            Err(WebhookError::OutsideTolerance { age_seconds: 301 }),
            "a replay"
        );
        let moved = format!("t=1700000001,v1={SIGNATURE}");
        assert_eq!(
            verify_signature(SECRET, &moved, BODY, at(1_700_000_001)),
            Err(WebhookError::BadSignature),
            "the timestamp is signed"
        );
        for malformed in ["", "v1=abc", "t=soon,v1=abc", "t=1,t=2,v1=ab", "garbage"] {
            assert_eq!(
                verify_signature(SECRET, malformed, BODY, at(1)),
                Err(WebhookError::MalformedHeader),
                "{malformed:?}"
            );
        }
        assert_eq!(
            verify_signature(SECRET, "t=1700000000,v0=abc", BODY, at(1_700_000_000)),
            Err(WebhookError::BadSignature),
            "v0 is not trusted"
        );
    }

    #[test]
    fn dispute_events_carry_the_disputes_state_and_others_are_ignored() {
        let body = serde_json::json!({
            "id": "evt_9", "type": "charge.dispute.funds_withdrawn", "created": 1_700_000_000,
            "data": {"object": {
                "id": "dp_1", "object": "dispute", "amount": 2500, "status": "needs_response",
                "payment_intent": "pi_1",
                "balance_transactions": [{"amount": -2500, "fee": 1500}]
            }}
        });
        let event = parse_event(body.to_string().as_bytes()).unwrap();
        assert_eq!(event.id, "evt_9");
        let EventAction::Dispute { dispute: state } = event.action else { panic!("a dispute") };
        assert!(state.funds_withdrawn && !state.funds_reinstated);
        assert_eq!((state.amount_cents, state.fee_cents), (2500, 1500));
        let other = serde_json::json!({
            "id": "evt_10", "type": "customer.created", "created": 1, "data": {"object": {}}
        });
        assert_eq!(parse_event(other.to_string().as_bytes()).unwrap().action, EventAction::Ignore);
        assert!(parse_event(b"{}").is_err());
        let failed = serde_json::json!({
            "id": "evt_11", "type": "charge.refund.updated", "created": 1,
            "data": {"object": {
                "id": "re_1", "object": "refund", "amount": 500, "status": "failed",
                "payment_intent": "pi_1", "failure_reason": "expired_or_canceled_card",
                "metadata": {"idempotency_key": "refund:acme:00ff:r-1"}
            }}
        });
        assert_eq!(
            parse_event(failed.to_string().as_bytes()).unwrap().action,
            EventAction::RefundFailed {
                payment_intent_id: "pi_1".into(),
                idempotency_key: "refund:acme:00ff:r-1".into(),
                reason: "expired_or_canceled_card".into(),
            }
        );
        let succeeded = failed.to_string().replace("\"failed\"", "\"succeeded\"");
        assert_eq!(parse_event(succeeded.as_bytes()).unwrap().action, EventAction::Ignore);
        let intent = |key: &str| {
            serde_json::json!({
                "id": "evt_12", "type": "payment_intent.succeeded", "created": 1,
                "data": {"object": {"id": "pi_1", "status": "succeeded",
                                     "metadata": {"idempotency_key": key}}}
            })
            .to_string()
        };
        assert_eq!(
            parse_event(intent("pay:acme:order-7").as_bytes()).unwrap().action,
            EventAction::PayNowOutcome { account_id: "acme".into(), key: "order-7".into() }
        );
        assert_eq!(
            parse_event(intent("plan:acme:2026-12-01/2/pm_1").as_bytes()).unwrap().action,
            EventAction::PayNowOutcome { account_id: "acme".into(), key: "plan:2026-12-01".into() }
        );
        for not_pay_now in ["rch:acme:3:v4:a1:pm_1", "pay:acme", "other", "plan:acme:x"] {
            assert_eq!(
                parse_event(intent(not_pay_now).as_bytes()).unwrap().action,
                EventAction::Ignore,
                "{not_pay_now}"
            );
        }
        let not_an_event = serde_json::json!({
            "id": "x", "type": "customer.created", "created": 1, "data": {"object": {}}
        });
        assert!(parse_event(not_an_event.to_string().as_bytes()).is_err());
    }
}
