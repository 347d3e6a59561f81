//! The card processor's events in AWS: the `webhook` function verifies and stores each delivery
//! and publishes it to the processor-events queue; the `processor-events` function applies
//! them from the queue, and runs the dispute reconciliation when EventBridge Scheduler invokes
//! it with `{"run": "reconcile_disputes"}`.

use std::sync::Arc;

use api::webhooks::{router, ProcessorEventSink, WebhookState};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use messaging::queue::{Failure, Message, QueueSender};
use payment_flow::dispute::{reconcile_disputes, DISPUTE_LOOKBACK_DAYS};
use payment_flow::PaymentPorts;
use payments::stripe_events::ProcessorEvent;
use serde_json::{json, Value};
use sqs::{LambdaBatch, SqsQueue};

use crate::{env, telemetry, Aws, Error};

/// Verified events to the processor-events queue (the body is the event's JSON).
pub struct QueueProcessorEvents(pub Arc<SqsQueue>);

#[async_trait::async_trait]
impl ProcessorEventSink for QueueProcessorEvents {
    async fn publish(
        &self,
        event: &ProcessorEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = serde_json::to_string(event)?;
        self.0
            .send(
                &messaging::queue::Outgoing::new(body).with_attribute("event_id", event.id.clone()),
            )
            .await
    }
}

/// The `webhook` function: `POST /v1/webhooks/stripe` behind API Gateway (no authorizer: the
/// signature is the check).
pub async fn serve_webhook() -> Result<(), Error> {
    let aws = Aws::load().await;
    let state = WebhookState {
        store: aws.store().await?,
        secret: Some(env::required(env::STRIPE_WEBHOOK_SECRET)?),
        sink: Arc::new(QueueProcessorEvents(aws.queue(env::PROCESSOR_EVENTS_QUEUE_URL)?)),
    };
    crate::run_router(router(Arc::new(state))).await
}

/// Apply one queued event (`api::webhooks::apply_event`): what can never apply is done, anything
/// else is retried.
pub async fn apply(ports: &PaymentPorts<'_>, message: &Message) -> Result<(), Failure> {
    let fail = |reason: String| Failure { message_id: message.id.clone(), reason };
    let event: ProcessorEvent =
        serde_json::from_str(&message.body).map_err(|e| fail(format!("unreadable: {e}")))?;
    api::webhooks::apply_event(ports, &event, chrono::Utc::now())
        .await
        .map_err(|error| fail(error.to_string()))
}

/// The `processor-events` function: SQS batches from the processor-events queue, or the
/// scheduler's `{"run": "reconcile_disputes"}`.
pub async fn serve_worker() -> Result<(), Error> {
    let aws = Aws::load().await;
    let store = aws.store().await?;
    let processor = env::card_processor()?;
    let notices = aws.notices()?;
    let (store, processor, notices) = (&store, &processor, &notices);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let ports =
            PaymentPorts { store: &**store, processor: &**processor, notices: Some(&**notices) };
        let payload = event.payload;
        let answer = if payload.get("Records").is_some() {
            let batch = LambdaBatch::new(serde_json::from_value::<SqsEvent>(payload)?);
            let mut failures = Vec::new();
            for message in batch.messages() {
                if let Err(failure) = apply(&ports, &message).await {
                    tracing::warn!(reason = %failure.reason, "processor event retried");
                    failures.push(failure);
                }
            }
            serde_json::to_value(LambdaBatch::response(&failures))?
        } else if payload.get("run").and_then(Value::as_str) == Some("reconcile_disputes") {
            let now = chrono::Utc::now();
            let since = now - chrono::Duration::days(DISPUTE_LOOKBACK_DAYS);
            let applied = reconcile_disputes(&ports, since, now).await?;
            tracing::info!(applied, "dispute reconciliation");
            // Refunds made at the processor outside this system, on the same schedule.
            use payment_flow::refund::{reconcile_external_refunds, EXTERNAL_REFUND_LOOKBACK_DAYS};
            let since = now - chrono::Duration::days(EXTERNAL_REFUND_LOOKBACK_DAYS);
            let refunds = reconcile_external_refunds(&ports, since, now).await?;
            tracing::info!(refunds, "external refund reconciliation");
            json!({ "reconciled_disputes": applied, "reconciled_refunds": refunds })
        } else {
            return Err(Error::from(format!("unknown payload: {payload}")));
        };
        telemetry::flush();
        Ok::<_, Error>(answer)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::memory::MemoryStore;
    use payments::stripe_events::EventAction;
    use payments::{DisputeState, DisputeStatus, SimulatedProcessor};

    fn message(body: &str) -> Message {
        Message { id: "m-1".into(), body: body.into() }
    }

    fn event(action: EventAction) -> String {
        serde_json::to_string(&ProcessorEvent {
            id: "evt_1".into(),
            kind: "charge.dispute.created".into(),
            created: 1,
            action,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn unreadable_events_are_retried_and_unplaceable_disputes_are_left_to_the_reconciliation()
    {
        let store = MemoryStore::new();
        let processor = SimulatedProcessor::new();
        let ports = PaymentPorts { store: &store, processor: &processor, notices: None };
        let failure = apply(&ports, &message("not json")).await.unwrap_err();
        assert_eq!(failure.message_id, "m-1");
        assert!(failure.reason.starts_with("unreadable"), "{}", failure.reason);
        assert_eq!(apply(&ports, &message(&event(EventAction::Ignore))).await, Ok(()));
        let dispute = DisputeState {
            dispute_id: "dp_1".into(),
            payment_intent_id: "pi_unknown".into(),
            amount_cents: 100,
            fee_cents: 1500,
            status: DisputeStatus::Open,
            funds_withdrawn: true,
            funds_reinstated: false,
        };
        let body = event(EventAction::Dispute { dispute });
        assert_eq!(apply(&ports, &message(&body)).await, Ok(()), "not ours: acknowledged");
        // The processor down is not the dispute's fault: retried.
        processor.set_unavailable(true);
        assert!(apply(&ports, &message(&body)).await.is_err());
    }
}
