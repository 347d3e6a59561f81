//! Business metrics: counts emitted as `tracing` events with the target [`METRIC_TARGET`]. The
//! Lambda runtime turns them into one CloudWatch embedded-metric-format line per invocation;
//! locally they are log lines. The domain and the services count without knowing CloudWatch.

/// The `tracing` target of metric events.
pub const METRIC_TARGET: &str = "ringledger::metric";
/// The CloudWatch namespace of every metric (the template's alarms and dashboard read it).
pub const NAMESPACE: &str = "ringledger";

/// Card charges that succeeded (auto-recharge and Pay Now).
pub const CHARGES: &str = "Charges";
/// Card charges the processor declined.
pub const DECLINES: &str = "Declines";
/// Charges whose outcome the processor did not tell (timeouts, processing): recovered later.
pub const UNKNOWN_OUTCOMES: &str = "UnknownChargeOutcomes";
/// Recharge requests the auto-recharge worker took up.
pub const RECHARGE_REQUESTS: &str = "RechargeRequests";
/// Notices and statements sent by email.
pub const NOTICES_SENT: &str = "NoticesSent";
/// Critical billing texts (SMS) sent to the critical phone.
pub const TEXTS_SENT: &str = "TextsSent";
/// Billing addresses marked undeliverable by a bounce or complaint.
pub const UNDELIVERABLE_ADDRESSES: &str = "UndeliverableAddresses";
/// Usage events posted to the ledger.
pub const USAGE_EVENTS: &str = "UsageEventsPosted";
/// Store commits retried because another writer changed the account first.
pub const CONTENTION_RETRIES: &str = "ContentionRetries";
/// Queue messages sent back for another try (they reach the DLQ after the queue's limit).
pub const MESSAGES_RETRIED: &str = "MessagesRetried";
/// Messages dropped for good because no retry can fix them (logged at error).
pub const MESSAGES_DROPPED: &str = "MessagesDropped";
/// The outbox relay: events relayed, left pending after a failed publish, and unreadable items.
pub const OUTBOX_RELAYED: &str = "OutboxRelayed";
pub const OUTBOX_PUBLISH_FAILED: &str = "OutboxPublishFailed";
pub const OUTBOX_UNREADABLE: &str = "OutboxUnreadable";
/// A dispute (chargeback) moved in the ledger: opened, funds withdrawn, won or lost.
pub const DISPUTE_STEPS: &str = "DisputeSteps";
/// A card registration or a payment refused by the card-testing limits (429).
pub const CARD_TESTING_LIMITED: &str = "CardTestingLimited";

/// Every metric name, for the runtime (which emits each one, zeros included) and the dashboard.
pub const ALL: &[&str] = &[
    CHARGES,
    DECLINES,
    UNKNOWN_OUTCOMES,
    RECHARGE_REQUESTS,
    NOTICES_SENT,
    TEXTS_SENT,
    UNDELIVERABLE_ADDRESSES,
    USAGE_EVENTS,
    CONTENTION_RETRIES,
    MESSAGES_RETRIED,
    MESSAGES_DROPPED,
    OUTBOX_RELAYED,
    OUTBOX_PUBLISH_FAILED,
    OUTBOX_UNREADABLE,
    DISPUTE_STEPS,
    CARD_TESTING_LIMITED,
];

/// Count `value` of the business metric `name` (one of [`ALL`]).
pub fn count(name: &'static str, value: u64) {
    if value > 0 {
        tracing::info!(target: METRIC_TARGET, metric = name, value);
    }
}
