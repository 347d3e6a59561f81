//! Helpers shared by the usage crate's tests: an in-process ledger, a recording event sink and a
//! rate card whose prices are distinct from `RateCard::standard()`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use ledger::memory::MemoryStore;
use ledger::{
    Account, AccountId, Amount, BillingItem, LedgerEvent, LedgerStore, NewAccount, Posting,
    Rounding, SourceId, TermsAcceptance,
};
use messaging::outbox::{EventSink, RelayError};
use rating::{CallRates, DirectionRates, NumberRates, PremiumRates, RateCard, SmsRates};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// Every usage fixture, by file name.
pub const CALL_OUTBOUND: &str =
    include_str!("../../../../../tests/fixtures/usage/call_outbound.json");
pub const CALL_OUTBOUND_UK: &str =
    include_str!("../../../../../tests/fixtures/usage/call_outbound_uk.json");
pub const CALL_INBOUND_TOLLFREE_TRANSCRIBED: &str =
    include_str!("../../../../../tests/fixtures/usage/call_inbound_tollfree_transcribed.json");
pub const CALL_UNANSWERED_RING_THROUGH: &str =
    include_str!("../../../../../tests/fixtures/usage/call_unanswered_ring_through.json");
pub const CALL_OUTBOUND_HELD: &str =
    include_str!("../../../../../tests/fixtures/usage/call_outbound_held.json");
pub const SMS_IN: &str = include_str!("../../../../../tests/fixtures/usage/sms_in.json");
pub const SMS_OUT: &str = include_str!("../../../../../tests/fixtures/usage/sms_out.json");
pub const NUMBER_PURCHASE: &str =
    include_str!("../../../../../tests/fixtures/usage/number_purchase.json");
pub const NUMBER_RENEWAL: &str =
    include_str!("../../../../../tests/fixtures/usage/number_renewal.json");

pub const POISON_MALFORMED: &str =
    include_str!("../../../../../tests/fixtures/poison/malformed.json");
pub const POISON_UNKNOWN_TYPE: &str =
    include_str!("../../../../../tests/fixtures/poison/unknown_type.json");
pub const POISON_UNKNOWN_ACCOUNT: &str =
    include_str!("../../../../../tests/fixtures/poison/unknown_account.json");

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).expect("test time").with_timezone(&Utc)
}

/// The time the tests post at (after every fixture's `occurred_at`).
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 3, 17, 0, 0).unwrap()
}

pub fn account_id(id: &str) -> AccountId {
    AccountId::parse(id).expect("test account id")
}

pub fn usd(value: Decimal) -> Amount {
    Amount::new(value).expect("test amount")
}

/// A card with 2 included minutes a month and round prices, so amounts are easy to work out:
/// outbound $0.02/min, inbound $0.01/min, 60/6 increments, $0.0025 per answered call.
pub fn plan_card() -> RateCard {
    RateCard {
        rounding: Rounding::HalfUp,
        calls: CallRates {
            inbound: DirectionRates { per_minute_usd: dec!(0.01), by_prefix: HashMap::new() },
            outbound: DirectionRates { per_minute_usd: dec!(0.02), by_prefix: HashMap::new() },
            initial_increment_seconds: 60,
            subsequent_increment_seconds: 6,
            minimum_charge_usd: dec!(0),
            surcharge_per_call_usd: dec!(0.0025),
            internal_calls_free: true,
        },
        sms: SmsRates {
            inbound_per_segment_usd: dec!(0.005),
            outbound_per_segment_usd: dec!(0.006),
            surcharge_per_message_usd: dec!(0.001),
        },
        numbers: NumberRates {
            local_purchase_usd: dec!(1.00),
            local_monthly_usd: dec!(1.15),
            toll_free_purchase_usd: dec!(2.00),
            toll_free_monthly_usd: dec!(2.15),
        },
        ring_through_attempt_usd: dec!(0.002),
        premium: PremiumRates {
            transcription_per_minute_usd: dec!(0.05),
            call_recording_per_minute_usd: dec!(0.0025),
            enhanced_caller_id_per_minute_usd: dec!(0.01),
        },
        included_minutes_per_month: 2,
    }
}

/// Opens `id` with `funds_usd` added (if any) and the outbox drained, so tests see only the
/// events their own postings raise.
pub async fn open(store: &MemoryStore, id: &str, funds_usd: Decimal) -> AccountId {
    let id = account_id(id);
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, now())
        .await
        .unwrap();
    if funds_usd > Decimal::ZERO {
        let funding = Posting::credit(
            SourceId::parse(format!("fund-{id}")).unwrap(),
            BillingItem::FundsAdded,
            usd(funds_usd),
            now(),
        )
        .unwrap();
        store.post(&id, vec![funding], now()).await.unwrap();
    }
    drain_outbox(store).await;
    id
}

pub async fn drain_outbox(store: &MemoryStore) {
    for event in store.pending_events(1_000).await.unwrap() {
        store.ack_event(&event).await.unwrap();
    }
}

pub async fn set_rate_card(store: &MemoryStore, id: &AccountId, card: &str) {
    let card = card.to_string();
    store
        .modify_account(
            id,
            Arc::new(move |account: &mut Account| {
                account.rate_card = Some(card.clone());
                Ok(())
            }),
            now(),
        )
        .await
        .unwrap();
}

pub async fn accept_terms(store: &MemoryStore, id: &AccountId) {
    store
        .modify_account(
            id,
            Arc::new(|account: &mut Account| {
                account.terms = Some(TermsAcceptance {
                    version: "2026-01".into(),
                    accepted_by: "owner@example.com".into(),
                    accepted_at: now(),
                });
                Ok(())
            }),
            now(),
        )
        .await
        .unwrap();
}

pub async fn account(store: &MemoryStore, id: &AccountId) -> Account {
    store.account(id).await.unwrap().expect("account exists")
}

/// An `EventSink` that records what it is given and the size of each batch (and can be told to
/// fail, for every event or for one account's).
#[derive(Default)]
pub struct RecordingSink {
    pub published: Mutex<Vec<LedgerEvent>>,
    pub batches: Mutex<Vec<usize>>,
    pub fail: bool,
    pub fail_for_account: Option<String>,
}

impl RecordingSink {
    pub fn failing() -> Self {
        RecordingSink { fail: true, ..Default::default() }
    }

    pub fn failing_for(account: &str) -> Self {
        RecordingSink { fail_for_account: Some(account.to_string()), ..Default::default() }
    }

    pub fn events(&self) -> Vec<LedgerEvent> {
        self.published.lock().unwrap().clone()
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        let mut sizes = self.batches.lock().unwrap().clone();
        sizes.sort_unstable();
        sizes
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the sink is down")]
struct SinkDown;

#[async_trait]
impl EventSink for RecordingSink {
    async fn publish(&self, event: &LedgerEvent) -> Result<(), RelayError> {
        if self.fail || self.fail_for_account.as_deref() == Some(event.account_id.as_str()) {
            return Err(RelayError::Publish(Box::new(SinkDown)));
        }
        self.published.lock().unwrap().push(event.clone());
        Ok(())
    }

    async fn publish_batch(&self, events: &[LedgerEvent]) -> Vec<Result<(), RelayError>> {
        self.batches.lock().unwrap().push(events.len());
        let mut results = Vec::new();
        for event in events {
            results.push(self.publish(event).await);
        }
        results
    }
}

/// A usage event envelope around `data`, as the platform sends it.
pub fn envelope(
    event_id: &str,
    account: &str,
    occurred_at: &str,
    kind: &str,
    data: &str,
) -> String {
    format!(
        r#"{{"version": 1, "event_id": "{event_id}", "account_id": "{account}", "occurred_at": "{occurred_at}", "type": "{kind}", "data": {data}}}"#
    )
}

/// An answered outbound call of `seconds` to a US number.
pub fn call(event_id: &str, account: &str, occurred_at: &str, seconds: u32) -> String {
    envelope(
        event_id,
        account,
        occurred_at,
        "call",
        &format!(
            r#"{{"direction": "outbound", "from": "+14155550100", "to": "+14155550123", "answered": true, "duration_seconds": {seconds}}}"#
        ),
    )
}
