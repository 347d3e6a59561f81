//! The auto-recharge worker.
//!
//! One recharge request (raised by the ledger when a posting leaves the balance below the
//! threshold, delivered through the recharge queue) leads to at most one successful charge:
//!
//! - the request is only worked while it is the account's `recharge_in_flight` (a settled,
//!   cancelled or superseded request is acknowledged and dropped);
//! - before each charge the attempt is written down (write-ahead, conditional on the state's
//!   version), and the processor's idempotency key is derived from the request, the attempt
//!   and the card, so a retry after a crash finds the same payment instead of charging again;
//! - the credit's source id is the request id, so it posts once and clears the in-flight
//!   marker in the same write (the ledger's rule), reactivating a suspended account;
//! - when every card declines, the failure is recorded per card, a notice goes out, and the
//!   request waits for its backoff (1 h, then 6 h; after [`MAX_ATTEMPTS`] attempts auto-recharge
//!   turns itself off until someone acts); a declined card is never charged again before then.

//!
//! On the queue (see [`verdicts`]): a request that must wait is held until then by the queue
//! ([`REDELIVERY`]); an unreadable message is rejected and reaches the dead-letter queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use card_processor::{CardProcessor, ChargeOutcome, ChargeRequest, CustomerId, ProcessorError};
use chrono::{DateTime, Duration, Utc};
use documents::payment::{save_payment, PaymentRecord, PaymentStatus, Trigger};
use documents::profile::{self, StoredCard};
use documents::Store;
use ledger::docs::{DocError, DocKind};
use ledger::{
    AccountId, Amount, BillingItem, LedgerEvent, LedgerEventKind, Posting, RechargeMode, Rounding,
    SourceId, StoreError,
};
use messaging::queue::{Message, Redelivery, Verdict};
use notifications::notice::{CardFailure, Notice, NoticeKind, NoticeSink, PaymentTrigger};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Attempts before auto-recharge gives up on a request and turns itself off until someone acts
/// (a card change, a manual payment, new settings or an operator's re-arm start a fresh one;
/// the month ending does not).
pub const MAX_ATTEMPTS: u32 = ledger::MAX_FAILED_ATTEMPTS;
/// Why a stop that turns auto-recharge off was made.
pub const OUT_OF_ATTEMPTS: &str = "out of attempts";
/// Recharges a month's spend record counts; a month with more stops auto-recharge as the cap
/// would (the record stays small; see decision 29).
pub const MAX_COUNTED_RECHARGES_PER_MONTH: usize = documents::spend::MAX_COUNTED_PER_MONTH;
/// Why a stop for the rest of the day was made.
pub const DAILY_CAP_REACHED: &str = "daily cap reached";
/// Why a stop for the rest of the month was made.
pub const MONTHLY_CAP_REACHED: &str = "monthly cap reached";

/// The stop reason a recorded cap stop names (an unknown one is read as the monthly cap's,
/// which ends soonest of what is left, never as "out of attempts", which does not end).
fn cap_reason(reason: &str) -> &'static str {
    if reason == DAILY_CAP_REACHED {
        DAILY_CAP_REACHED
    } else {
        MONTHLY_CAP_REACHED
    }
}
/// How long an unknown outcome (`processing`, timeout) waits before the processor is asked again.
pub const UNKNOWN_OUTCOME_RETRY_MINUTES: i64 = 15;
/// How long an ACH debit still `processing` waits before the processor is asked again.
pub const BANK_PROCESSING_RETRY_HOURS: i64 = 6;
/// The processor's smallest charge (Stripe: $0.50).
pub const MIN_CHARGE_USD: Decimal = Decimal::from_parts(50, 0, 0, false, 2);

/// Wait after the n-th failed attempt (1-based): 1 h, 6 h, then 12 h (SQS's longest
/// visibility timeout, which is what holds the message until then).
pub fn backoff_after(attempt: u32) -> Duration {
    match attempt {
        0 | 1 => Duration::hours(1),
        2 => Duration::hours(6),
        _ => Duration::hours(12),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAttempt {
    pub attempt: u32,
    pub card_id: String,
    pub card_brand: String,
    pub card_last4: String,
    pub succeeded: bool,
    pub reason: Option<String>,
    pub processor_payment_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// The write-ahead state of one request (`DocKind::Recharge`, id = request id).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RechargeState {
    /// Attempts started (1-based once the first begins).
    pub attempt: u32,
    /// The charge in progress: card and amount, fixed for the attempt so a retry replays it.
    pub charging: Option<Charging>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub given_up: bool,
    pub settled_payment_id: Option<String>,
    /// A card change or a manual payment dropped this request while it waited (written
    /// conditionally on the version, so never while an attempt is being charged).
    #[serde(default)]
    pub cancelled: bool,
    pub history: Vec<CardAttempt>,
    /// A reached cap gave the request up: why (`daily cap reached`, `monthly cap reached`) and
    /// the notice saying so, written with `given_up` so a redelivery after a crash or a failed
    /// notice replays the same stop and notice (absent: out of attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_stop: Option<(String, Notice)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charging {
    /// The card being charged: kept with its brand and last 4 so that a replay can settle and
    /// record it even after the card was deleted from the account.
    pub card_id: String,
    #[serde(default)]
    pub card_brand: String,
    #[serde(default)]
    pub card_last4: String,
    pub amount_usd: Amount,
    /// When the attempt began: names its payment records so history lists newest first.
    #[serde(default = "Utc::now")]
    pub started_at: DateTime<Utc>,
    /// Cards of this attempt already declined (not charged again in it).
    pub declined: Vec<String>,
    /// The charge of `card_id` may have reached the processor: a worker that finds this must
    /// replay it before anything else. (Records from before this field existed were all sent.)
    #[serde(default = "sent_by_default")]
    pub sent: bool,
    /// The processor customer charged (the agency's for a client account): a replay looks the
    /// charge up there even if the account changed agency since. Older records: the payer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// An ACH debit of a bank account (settles in days) rather than a card charge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bank_account: bool,
}

fn sent_by_default() -> bool {
    true
}

impl Charging {
    /// The processor's idempotency key of this attempt on this card.
    pub fn idempotency_key(&self, request_id: &str, attempt: u32) -> String {
        format!("{request_id}:a{attempt}:{}", self.card_id)
    }

    /// The payment record's id: sorts newest first in the history, stable per attempt and card.
    pub fn payment_id(&self, request_id: &str, attempt: u32) -> String {
        ledger::docs::newest_first_id(
            self.started_at,
            &format!("{:016x}", ledger::stable_hash(&self.idempotency_key(request_id, attempt))),
        )
    }

    /// The payment history's record of this card's charge (status-specific fields left empty).
    fn payment_record(
        &self,
        payment_id: String,
        status: PaymentStatus,
        processor_payment_id: Option<String>,
        at: DateTime<Utc>,
    ) -> PaymentRecord {
        PaymentRecord {
            payment_id,
            amount_usd: self.amount_usd,
            card_id: self.card_id.clone(),
            card_brand: self.card_brand.clone(),
            card_last4: self.card_last4.clone(),
            status,
            trigger: Trigger::Auto,
            created_at: ledger::truncate_to_micros(at),
            processor_payment_id,
            failure_code: None,
            failure_reason: None,
            entry_seq: None,
            balance_after_usd: None,
            pending_reason: None,
            refunds: Vec::new(),
            disputes: Vec::new(),
        }
    }

    /// The request's own history line for this card's charge, as recorded in `record`.
    fn history_line(&self, attempt: u32, record: &PaymentRecord) -> CardAttempt {
        CardAttempt {
            attempt,
            card_id: self.card_id.clone(),
            card_brand: self.card_brand.clone(),
            card_last4: self.card_last4.clone(),
            succeeded: record.status == PaymentStatus::Succeeded,
            reason: record.failure_reason.clone(),
            processor_payment_id: record.processor_payment_id.clone(),
            at: record.created_at,
        }
    }

    fn charge_request(
        &self,
        request_id: &str,
        attempt: u32,
        customer: String,
    ) -> Result<ChargeRequest, RechargeError> {
        let cents = (self.amount_usd.value() * Decimal::ONE_HUNDRED)
            .trunc()
            .to_string()
            .parse::<u64>()
            .map_err(RechargeError::Cents)?;
        Ok(ChargeRequest {
            method: if self.bank_account {
                card_processor::MethodKind::UsBankAccount
            } else {
                card_processor::MethodKind::Card
            },
            customer: CustomerId(customer),
            payment_method_id: self.card_id.clone(),
            amount_cents: cents,
            idempotency_key: self.idempotency_key(request_id, attempt),
            description: format!("ringledger auto-recharge {request_id}"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Charged and credited.
    Settled { payment_id: String, amount_usd: Amount, card_last4: String },
    /// Nothing to do: settled already, superseded, disabled, or the balance is fine.
    NotNeeded(&'static str),
    /// Every card failed; the next attempt is due then.
    RetryAt(DateTime<Utc>),
    /// The request arrived before its backoff ended.
    NotYet(DateTime<Utc>),
    /// Out of attempts, or the monthly cap is reached: waits for a card change, a manual
    /// payment or a settings change.
    Stopped(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum RechargeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Document(#[from] documents::DocumentError),
    #[error(transparent)]
    PaymentFlow(#[from] payment_flow::PayNowError),
    #[error(transparent)]
    Refund(#[from] payment_flow::refund::RefundError),
    #[error("the card processor is unavailable")]
    Processor(#[source] ProcessorError),
    #[error("the recharge state kept changing under concurrent workers")]
    Contention,
    #[error("publishing a notice failed: {0}")]
    Notice(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Data that cannot be (the following variants too): a charge for an account whose profile
    /// names no processor customer (`what` says which step found it).
    #[error("{what} without a processor customer")]
    NoProcessorCustomer { what: &'static str },
    /// An amount the rules would never compute (not whole cents, not positive).
    #[error(transparent)]
    Amount(#[from] ledger::AmountError),
    /// A request id that is not a valid source id.
    #[error(transparent)]
    Id(#[from] ledger::IdError),
    /// The credit's posting breaks a ledger rule.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// The charge's cents do not fit a `u64`.
    #[error("{0}")]
    Cents(#[source] std::num::ParseIntError),
    #[error("simulated crash at {0:?}")]
    SimulatedCrash(Fault),
}

/// A deliberate fault for crash tests: behave as if the process died there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The attempt is written down; the charge was never sent.
    BeforeCharge,
    /// The processor charged the card; the credit was never posted.
    AfterChargeBeforeCredit,
    /// The credit is posted; the payment record, spend and receipt were never written.
    AfterCreditBeforeBookkeeping,
    /// A reached cap is written down; its notice and stop never happened.
    AfterCapRecorded,
}

pub struct RechargeWorker {
    pub store: Arc<dyn Store>,
    pub processor: Arc<dyn CardProcessor>,
    pub notices: Arc<dyn NoticeSink>,
    fault: Mutex<Option<Fault>>,
}

impl RechargeWorker {
    pub fn new(
        store: Arc<dyn Store>,
        processor: Arc<dyn CardProcessor>,
        notices: Arc<dyn NoticeSink>,
    ) -> Self {
        RechargeWorker { store, processor, notices, fault: Mutex::new(None) }
    }

    pub fn inject_fault_once(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    fn crash_at(&self, point: Fault) -> Result<(), RechargeError> {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if *fault == Some(point) {
            *fault = None;
            return Err(RechargeError::SimulatedCrash(point));
        }
        Ok(())
    }

    async fn load_state(
        &self,
        account: &AccountId,
        request_id: &str,
    ) -> Result<(RechargeState, Option<u64>), RechargeError> {
        match self.store.get_doc(account, DocKind::Recharge, request_id).await? {
            None => Ok((RechargeState::default(), None)),
            Some(doc) => {
                let state = serde_json::from_str(&doc.body)
                    .map_err(|e| StoreError::Corrupt(format!("recharge state: {e}")))?;
                Ok((state, Some(doc.version)))
            }
        }
    }

    /// Write `state` if nobody wrote since `version`; `Ok(None)` on a lost race.
    async fn save_state(
        &self,
        account: &AccountId,
        request_id: &str,
        state: &RechargeState,
        version: Option<u64>,
    ) -> Result<Option<u64>, RechargeError> {
        let body = serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        match self.store.put_doc(account, DocKind::Recharge, request_id, &body, version).await {
            Ok(version) => Ok(Some(version)),
            Err(DocError::Conflict) => Ok(None),
            Err(DocError::TooLarge(size)) => {
                Err(StoreError::Corrupt(format!("recharge state of {size} bytes")).into())
            }
            Err(DocError::Store(error)) => Err(error.into()),
        }
    }

    async fn notify(&self, notice: Notice) -> Result<(), RechargeError> {
        self.notices.publish(&notice).await.map_err(RechargeError::Notice)
    }

    /// Cancel a request that is no longer needed (the balance recovered, auto-recharge off).
    async fn cancel(
        &self,
        account: &AccountId,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RechargeError> {
        let request_id = request_id.to_string();
        self.store
            .modify_account(
                account,
                Arc::new(move |a| {
                    if a.recharge_in_flight.as_deref() == Some(request_id.as_str()) {
                        a.recharge_in_flight = None;
                    }
                    Ok(())
                }),
                now,
            )
            .await?;
        Ok(())
    }

    /// The payment services' ports: this worker's store, processor and notices.
    fn ports(&self) -> payment_flow::PaymentPorts<'_> {
        payment_flow::PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        }
    }

    /// Settle a Pay Now whose outcome was unknown (see `payment_flow::pay_now_with`).
    pub async fn reconcile_payment(
        &self,
        account_id: &AccountId,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, RechargeError> {
        let ports = self.ports();
        match payment_flow::reconcile_pending_payment(&ports, account_id, key, now).await? {
            payment_flow::Reconciled::Final => Ok(Outcome::NotNeeded("payment settled")),
            payment_flow::Reconciled::NotYet(at) => Ok(Outcome::NotYet(at)),
        }
    }

    /// Finish a card refund that was written down and not yet final (see
    /// `payment_flow::refund`).
    pub async fn reconcile_refund(
        &self,
        account_id: &AccountId,
        pending: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, RechargeError> {
        let ports = self.ports();
        match payment_flow::refund::reconcile_pending_refund(&ports, account_id, pending, now)
            .await?
        {
            payment_flow::Reconciled::Final => Ok(Outcome::NotNeeded("refund settled")),
            payment_flow::Reconciled::NotYet(at) => Ok(Outcome::NotYet(at)),
        }
    }

    /// Work one recharge request event (or a pending payment's or refund's event).
    pub async fn handle(
        &self,
        event: &LedgerEvent,
        now: DateTime<Utc>,
    ) -> Result<Outcome, RechargeError> {
        let request_id = match &event.kind {
            LedgerEventKind::RechargeRequested { request_id } => request_id,
            LedgerEventKind::PaymentPending { key } => {
                return self.reconcile_payment(&event.account_id, key, now).await;
            }
            LedgerEventKind::RefundPending { refund } => {
                return self.reconcile_refund(&event.account_id, refund, now).await;
            }
            _ => return Ok(Outcome::NotNeeded("not a recharge request")),
        };
        let account_id = &event.account_id;
        for _ in 0..16 {
            match self.step(account_id, request_id, now).await? {
                Some(outcome) => return Ok(outcome),
                None => continue, // lost a race on the state; look again
            }
        }
        Err(RechargeError::Contention)
    }

    async fn step(
        &self,
        account_id: &AccountId,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, RechargeError> {
        let Some(account) = self.store.account(account_id).await? else {
            return Ok(Some(Outcome::NotNeeded("no such account")));
        };
        let (mut state, version) = self.load_state(account_id, request_id).await?;
        if state.settled_payment_id.is_some() {
            return Ok(Some(Outcome::NotNeeded("already settled")));
        }
        let (profile, _) = profile::load(&*self.store, account_id).await?;
        // The cards: the account's own, or its agency's for a client account.
        let payer = match profile.agency_id.clone() {
            Some(agency) => profile::load(&*self.store, &agency).await?.0,
            None => profile.clone(),
        };

        // Recovery first: an attempt written down and not yet decided is replayed exactly (its
        // key, card and amount) and settled before anything else is looked at, whatever has
        // changed since: the settings, the cards, the card's expiry or the request's standing.
        if let Some(charging) = state.charging.clone().filter(|c| !c.declined.contains(&c.card_id))
        {
            if charging.sent {
                let Some(version) = version else {
                    return Err(
                        StoreError::Corrupt("recharge state without a version".into()).into()
                    );
                };
                let customer = charging
                    .customer
                    .clone()
                    .or_else(|| payer.processor_customer_id.clone())
                    .ok_or(RechargeError::NoProcessorCustomer { what: "an attempt" })?;
                let request = charging.charge_request(request_id, state.attempt, customer)?;
                let outcome = match self
                    .processor
                    .find_charge(&request.customer, &request.idempotency_key)
                    .await
                {
                    Ok(Some(outcome)) => Ok(outcome),
                    Ok(None) => self.processor.charge(&request).await,
                    // A failed lookup says nothing about the payment: unknown, never a decline.
                    Err(error) => {
                        Err(ProcessorError::Unexpected(format!("payment lookup failed: {error}")))
                    }
                };
                return self
                    .decide(account_id, request_id, state, version, &charging, outcome, now)
                    .await;
            }
        }

        if state.cancelled {
            // The canceller may have died before it cleared the marker: finish its work.
            self.cancel(account_id, request_id, now).await?;
            return Ok(Some(Outcome::NotNeeded("cancelled by a card change or a payment")));
        }
        if account.recharge_in_flight.as_deref() != Some(request_id) {
            return Ok(Some(Outcome::NotNeeded("settled, cancelled or superseded")));
        }
        let Some(settings) = account.recharge.clone().filter(|s| s.enabled()) else {
            self.cancel(account_id, request_id, now).await?;
            return Ok(Some(Outcome::NotNeeded("auto-recharge is off")));
        };
        if state.given_up {
            let reason = match state.cap_stop.clone() {
                Some((reason, notice)) => {
                    self.notify(notice).await?;
                    cap_reason(&reason)
                }
                None => OUT_OF_ATTEMPTS,
            };
            self.stop(account_id, request_id, reason, now).await?;
            return Ok(Some(Outcome::Stopped(reason)));
        }
        if state.charging.is_none() {
            if let Some(next) = state.next_attempt_at.filter(|next| *next > now) {
                return Ok(Some(Outcome::NotYet(next)));
            }
        }
        // Checked against the balance now, in both modes: a payment or a credit since the
        // request was raised may have made it unnecessary. Like the request itself, it counts
        // active holds: judged on the balance alone, a request raised while calls hold money
        // would be cancelled, and the cancellation raise it again, for as long as they last.
        let unreserved = account.unreserved_usd(now);
        if unreserved >= settings.threshold_usd().value() {
            self.cancel(account_id, request_id, now).await?;
            return Ok(Some(Outcome::NotNeeded("the balance is back above the threshold")));
        }

        // The attempt's amount is fixed when it starts, so every card of it is asked for the
        // same charge and a replay after a crash asks for exactly that.
        let charging = match state.charging.clone() {
            Some(charging) => charging,
            None => {
                let amount = match settings.mode() {
                    RechargeMode::Add => settings.amount_usd().value(),
                    RechargeMode::TopUpTo => {
                        Rounding::Up.round(settings.amount_usd().value() - unreserved, 2)
                    }
                };
                if amount <= Decimal::ZERO {
                    self.cancel(account_id, request_id, now).await?;
                    return Ok(Some(Outcome::NotNeeded("the balance is already at the target")));
                }
                let amount = Amount::whole_cents(amount.max(MIN_CHARGE_USD))?;
                let month = ledger::Month::of(now);
                let today = now.date_naive();
                let caps = profile.auto_recharge_monthly_cap_usd.is_some()
                    || profile.auto_recharge_daily_cap_usd.is_some();
                let spend = if caps {
                    documents::spend::load(&*self.store, account_id, month).await?
                } else {
                    documents::spend::Spend::default()
                };
                // The daily cap first: it is the tighter bound on a runaway (toll fraud on a
                // stolen account), and it ends sooner.
                if let Some(cap) = profile.auto_recharge_daily_cap_usd {
                    let spent = spend.on(today);
                    if spend.full() || spent + amount.value() > cap.value() {
                        let notice = Notice {
                            id: format!("recharge_daily_cap:{account_id}:{today}"),
                            account_id: account_id.clone(),
                            raised_at: now,
                            kind: NoticeKind::RechargeDailyCapReached {
                                day: today,
                                cap_usd: cap,
                                spent_usd: spent,
                            },
                        };
                        return self
                            .cap_reached(
                                account_id,
                                request_id,
                                state,
                                version,
                                DAILY_CAP_REACHED,
                                notice,
                                now,
                            )
                            .await;
                    }
                }
                if let Some(cap) = profile.auto_recharge_monthly_cap_usd {
                    if spend.full() || spend.total_usd + amount.value() > cap.value() {
                        let notice = Notice {
                            id: format!("recharge_cap:{account_id}:{month}"),
                            account_id: account_id.clone(),
                            raised_at: now,
                            kind: NoticeKind::RechargeCapReached {
                                month,
                                cap_usd: cap,
                                spent_usd: spend.total_usd,
                            },
                        };
                        return self
                            .cap_reached(
                                account_id,
                                request_id,
                                state,
                                version,
                                MONTHLY_CAP_REACHED,
                                notice,
                                now,
                            )
                            .await;
                    }
                }
                if payer.charge_order().is_empty() {
                    return self
                        .all_failed(account_id, request_id, state, version, amount, Vec::new(), now)
                        .await;
                }
                state.attempt += 1;
                Charging {
                    card_id: String::new(),
                    card_brand: String::new(),
                    card_last4: String::new(),
                    amount_usd: amount,
                    started_at: ledger::truncate_to_micros(now),
                    declined: Vec::new(),
                    sent: false,
                    customer: None,
                    bank_account: false,
                }
            }
        };
        // The next card of the attempt not yet declined, expired cards skipped (recorded as
        // declined without asking the processor).
        let cards: Vec<StoredCard> = payer
            .charge_order()
            .into_iter()
            .filter(|c| !charging.declined.contains(&c.id))
            .cloned()
            .collect();
        let Some(card) = cards.first().cloned() else {
            let failures = self.failures_of(&state, state.attempt);
            return self
                .all_failed(
                    account_id,
                    request_id,
                    state,
                    version,
                    charging.amount_usd,
                    failures,
                    now,
                )
                .await;
        };
        let charging = Charging {
            card_id: card.id.clone(),
            card_brand: card.brand.clone(),
            card_last4: card.last4.clone(),
            sent: !card.expired(now.date_naive()),
            customer: payer.processor_customer_id.clone(),
            bank_account: card.kind == profile::MethodKind::UsBankAccount,
            ..charging
        };
        state.charging = Some(charging.clone());
        state.next_attempt_at = None;
        // The write-ahead record: from here on a crash replays exactly this charge.
        let Some(version) = self.save_state(account_id, request_id, &state, version).await? else {
            return Ok(None);
        };
        self.crash_at(Fault::BeforeCharge)?;
        let outcome = if card.expired(now.date_naive()) {
            Err(ProcessorError::Declined(card_processor::Decline::new(
                card_processor::DeclineCode::ExpiredCard,
                "the card has expired",
            )))
        } else {
            let customer = charging
                .customer
                .clone()
                .ok_or(RechargeError::NoProcessorCustomer { what: "cards" })?;
            let request = charging.charge_request(request_id, state.attempt, customer)?;
            self.processor.charge(&request).await
        };
        self.decide(account_id, request_id, state, version, &charging, outcome, now).await
    }

    /// Act on what the processor said about the attempt's current card.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        account_id: &AccountId,
        request_id: &str,
        state: RechargeState,
        version: u64,
        charging: &Charging,
        outcome: Result<ChargeOutcome, ProcessorError>,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, RechargeError> {
        let payment_id = charging.payment_id(request_id, state.attempt);
        card_processor::count_outcome(&outcome);
        match outcome {
            Ok(ChargeOutcome::Succeeded { payment_intent_id }) => {
                self.crash_at(Fault::AfterChargeBeforeCredit)?;
                self.settle(
                    account_id,
                    request_id,
                    state,
                    version,
                    charging,
                    payment_id,
                    payment_intent_id,
                    now,
                )
                .await
                .map(Some)
            }
            Ok(ChargeOutcome::Declined { payment_intent_id, decline }) => {
                let reason = decline.code.reason().to_string();
                self.record_decline(
                    account_id,
                    request_id,
                    state,
                    version,
                    charging,
                    payment_id,
                    payment_intent_id,
                    reason,
                    now,
                )
                .await
            }
            Err(ProcessorError::Declined(decline)) => {
                let reason = decline.code.reason().to_string();
                self.record_decline(
                    account_id, request_id, state, version, charging, payment_id, None, reason, now,
                )
                .await
            }
            // A definite refusal (no such card, detached, bad parameters): nothing was charged.
            Err(ProcessorError::InvalidRequest(message)) => {
                self.record_decline(
                    account_id, request_id, state, version, charging, payment_id, None, message,
                    now,
                )
                .await
            }
            // Off session nobody can authenticate a payment (Stripe declines these with
            // `authentication_required`; a processor that leaves one waiting gets it cancelled):
            // a decline, unless it went through before the cancel.
            Ok(ChargeOutcome::RequiresAction { payment_intent_id, .. }) => {
                match self
                    .processor
                    .cancel_charge(&payment_intent_id)
                    .await
                    .map_err(RechargeError::Processor)?
                {
                    ChargeOutcome::Succeeded { payment_intent_id } => self
                        .settle(
                            account_id,
                            request_id,
                            state,
                            version,
                            charging,
                            payment_id,
                            payment_intent_id,
                            now,
                        )
                        .await
                        .map(Some),
                    // Not decided yet: asked again later, never taken for a decline (the next
                    // card could then be charged beside it).
                    ChargeOutcome::Processing { .. } | ChargeOutcome::RequiresAction { .. } => {
                        Ok(Some(Outcome::NotYet(
                            now + Duration::minutes(UNKNOWN_OUTCOME_RETRY_MINUTES),
                        )))
                    }
                    ChargeOutcome::Declined { .. } => {
                        let reason = "the card requires authentication by its holder".to_string();
                        self.record_decline(
                            account_id,
                            request_id,
                            state,
                            version,
                            charging,
                            payment_id,
                            Some(payment_intent_id),
                            reason,
                            now,
                        )
                        .await
                    }
                }
            }
            // Unknown: the attempt stays written down and is asked about again later (an ACH
            // debit, which takes days, every few hours).
            Ok(ChargeOutcome::Processing { .. }) if charging.bank_account => {
                Ok(Some(Outcome::NotYet(now + Duration::hours(BANK_PROCESSING_RETRY_HOURS))))
            }
            Ok(ChargeOutcome::Processing { .. }) => {
                Ok(Some(Outcome::NotYet(now + Duration::minutes(UNKNOWN_OUTCOME_RETRY_MINUTES))))
            }
            Err(error) => Err(RechargeError::Processor(error)),
        }
    }

    /// A stopped request clears what it held: the in-flight marker goes, and the account
    /// remembers that auto-recharge stopped this month (so the ledger does not raise a new
    /// request at once) until a new month, a settings change, a card change, a payment or an
    /// operator re-arms it.
    /// A cap stops the request: written down first (with its reason and notice, so a
    /// redelivery replays exactly this), then the notice, then the stop.
    #[allow(clippy::too_many_arguments)]
    async fn cap_reached(
        &self,
        account_id: &AccountId,
        request_id: &str,
        mut state: RechargeState,
        version: Option<u64>,
        reason: &'static str,
        notice: Notice,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, RechargeError> {
        state.given_up = true;
        state.cap_stop = Some((reason.to_string(), notice.clone()));
        if self.save_state(account_id, request_id, &state, version).await?.is_none() {
            return Ok(None);
        }
        self.crash_at(Fault::AfterCapRecorded)?;
        self.notify(notice).await?;
        self.stop(account_id, request_id, reason, now).await?;
        Ok(Some(Outcome::Stopped(reason)))
    }

    async fn stop(
        &self,
        account: &AccountId,
        request_id: &str,
        reason: &'static str,
        now: DateTime<Utc>,
    ) -> Result<(), RechargeError> {
        let request_id = request_id.to_string();
        let month = ledger::Month::of(now);
        // Out of attempts turns auto-recharge off until someone acts; a reached cap ends with
        // the month.
        let until_lifted = reason == OUT_OF_ATTEMPTS;
        // A reached daily cap ends with its day.
        let day = (reason == DAILY_CAP_REACHED).then(|| now.date_naive());
        self.store
            .modify_account(
                account,
                Arc::new(move |a| {
                    if a.recharge_in_flight.as_deref() == Some(request_id.as_str()) {
                        a.recharge_in_flight = None;
                        a.recharge_stopped = Some(ledger::RechargeStop {
                            month,
                            reason: reason.to_string(),
                            until_lifted,
                            day,
                        });
                    }
                    Ok(())
                }),
                now,
            )
            .await?;
        Ok(())
    }

    fn failures_of(&self, state: &RechargeState, attempt: u32) -> Vec<CardFailure> {
        state
            .history
            .iter()
            .filter(|h| h.attempt == attempt && !h.succeeded)
            .map(|h| CardFailure {
                card_brand: h.card_brand.clone(),
                card_last4: h.card_last4.clone(),
                reason: h.reason.clone().unwrap_or_default(),
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_decline(
        &self,
        account_id: &AccountId,
        request_id: &str,
        mut state: RechargeState,
        version: u64,
        charging: &Charging,
        payment_id: String,
        processor_payment_id: Option<String>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, RechargeError> {
        warn!(account_id = %account_id, card = %charging.card_last4, %reason, "auto-recharge declined");
        let record = PaymentRecord {
            failure_code: Some("card_declined".into()),
            failure_reason: Some(reason),
            ..charging.payment_record(payment_id, PaymentStatus::Failed, processor_payment_id, now)
        };
        save_payment(&*self.store, account_id, &record).await?;
        state.history.push(charging.history_line(state.attempt, &record));
        let mut declined = charging.declined.clone();
        declined.push(charging.card_id.clone());
        state.charging = Some(Charging { declined, sent: false, ..charging.clone() });
        // Saved; the next step tries the next card, or records that every card failed.
        match self.save_state(account_id, request_id, &state, Some(version)).await? {
            Some(_) | None => Ok(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn all_failed(
        &self,
        account_id: &AccountId,
        request_id: &str,
        mut state: RechargeState,
        version: Option<u64>,
        amount: Amount,
        failures: Vec<CardFailure>,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, RechargeError> {
        let attempt = state.attempt.max(1);
        state.attempt = attempt;
        state.charging = None;
        let outcome = if attempt >= MAX_ATTEMPTS {
            state.given_up = true;
            state.next_attempt_at = None;
            Outcome::Stopped(OUT_OF_ATTEMPTS)
        } else {
            let next = now + backoff_after(attempt);
            state.next_attempt_at = Some(next);
            Outcome::RetryAt(next)
        };
        if self.save_state(account_id, request_id, &state, version).await?.is_none() {
            return Ok(None);
        }
        self.notify(Notice {
            id: format!("recharge_failed:{request_id}:{attempt}"),
            account_id: account_id.clone(),
            raised_at: ledger::truncate_to_micros(now),
            kind: NoticeKind::RechargeFailed {
                request_id: request_id.to_string(),
                attempt,
                amount_usd: amount,
                failures,
                next_attempt_at: state.next_attempt_at,
            },
        })
        .await?;
        info!(account_id = %account_id, attempt, "auto-recharge failed on every card");
        if state.given_up {
            self.stop(account_id, request_id, OUT_OF_ATTEMPTS, now).await?;
        }
        Ok(Some(outcome))
    }

    /// Credit a successful charge and do its bookkeeping. Every step is idempotent (the credit
    /// by source id, the payment record by id, the spend by request, the receipt by notice id)
    /// and the attempt stays written down until the last one is done, so a crash anywhere
    /// here replays the whole settlement on redelivery and loses none of it.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        account_id: &AccountId,
        request_id: &str,
        mut state: RechargeState,
        version: u64,
        charging: &Charging,
        payment_id: String,
        processor_payment_id: String,
        now: DateTime<Utc>,
    ) -> Result<Outcome, RechargeError> {
        let amount = charging.amount_usd;
        let card_label = format!("{} {}", charging.card_brand, charging.card_last4);
        let source = SourceId::parse(request_id)?;
        let posting =
            Posting::credit(source, BillingItem::FundsAdded, amount, now).and_then(|p| {
                p.with_details(serde_json::json!({
                    "payment_id": payment_id,
                    "processor_payment_id": processor_payment_id,
                    "card": card_label,
                    "trigger": "auto",
                }))
            })?;
        // Counted toward the caps before the credit: the credit settles the request and frees
        // the account to raise the next one, whose cap check must already see this charge (a
        // store fault after the credit, before the count, let a second request pass a daily cap
        // in the simulation). Counted once per request, so a replay changes nothing.
        documents::spend::add(
            &*self.store,
            account_id,
            charging.started_at.date_naive(),
            request_id,
            amount,
        )
        .await
        .map_err(|error| match error {
            documents::spend::SpendError::Store(error) => RechargeError::from(error),
            documents::spend::SpendError::Busy => RechargeError::Contention,
        })?;
        let posted = self.store.post(account_id, vec![posting], now).await?;
        // It pays the account's open invoices (postpaid accounts), once by its source id.
        documents::invoice::apply_payment(
            &*self.store,
            account_id,
            request_id,
            amount.value(),
            now,
        )
        .await
        .map_err(|error| match error {
            documents::DocumentError::Store(error) => RechargeError::from(error),
            _ => RechargeError::Contention,
        })?;
        let seq = match posted.results.first() {
            Some(
                ledger::PostingResult::Applied { seq, .. }
                | ledger::PostingResult::Duplicate { seq },
            ) => Some(*seq),
            _ => None,
        };
        self.crash_at(Fault::AfterCreditBeforeBookkeeping)?;
        let record = PaymentRecord {
            entry_seq: seq,
            balance_after_usd: Some(posted.account.balance_usd.normalize().to_string()),
            ..charging.payment_record(
                payment_id.clone(),
                PaymentStatus::Succeeded,
                Some(processor_payment_id.clone()),
                charging.started_at,
            )
        };
        save_payment(&*self.store, account_id, &record).await?;
        state.charging = None;
        state.next_attempt_at = None;
        state.settled_payment_id = Some(payment_id.clone());
        state.history.push(charging.history_line(state.attempt, &record));
        // The receipt goes out before the request is marked settled: a failure to send leaves
        // it unsettled, and the retry replays the same charge (same key), the same credit
        // (same source id) and the same receipt id (sent once).
        self.notify(Notice {
            id: format!("receipt:{account_id}:{payment_id}"),
            account_id: account_id.clone(),
            raised_at: record.created_at,
            kind: NoticeKind::PaymentReceipt {
                payment_id: payment_id.clone(),
                amount_usd: amount,
                card_brand: charging.card_brand.clone(),
                card_last4: charging.card_last4.clone(),
                balance_after_usd: posted.account.balance_usd,
                trigger: PaymentTrigger::Auto,
                paid_at: record.created_at,
            },
        })
        .await?;
        // A lost race here only means another worker recorded the same settlement.
        let _ = self.save_state(account_id, request_id, &state, Some(version)).await?;
        info!(account_id = %account_id, amount = %amount, "auto-recharge settled");
        Ok(Outcome::Settled {
            payment_id,
            amount_usd: amount,
            card_last4: charging.card_last4.clone(),
        })
    }
}

/// A request received this many times that must still wait or retry is sent again as a fresh
/// message and the old one deleted, so a long backoff or a long processor outage never
/// dead-letters a request whose state is durable (the queue's `maxReceiveCount` is 8; the
/// backoff schedule needs at most 5 holds). Only unreadable messages reach the DLQ.
pub const REQUEUE_AFTER_RECEIVES: u32 = 6;

/// How the recharge queue brings back requests: held until their time, requeued fresh after
/// [`REQUEUE_AFTER_RECEIVES`].
pub const REDELIVERY: Redelivery =
    Redelivery { retry_after: None, requeue_after_receives: Some(REQUEUE_AFTER_RECEIVES) };

/// What to do with one recharge-queue message (a ledger event).
pub async fn verdict(worker: &RechargeWorker, body: &str, now: DateTime<Utc>) -> Verdict {
    let event: LedgerEvent = match serde_json::from_str(body) {
        Ok(event) => event,
        Err(error) => return Verdict::Reject(format!("not a ledger event: {error}")),
    };
    if matches!(event.kind, LedgerEventKind::RechargeRequested { .. }) {
        messaging::metrics::count(messaging::metrics::RECHARGE_REQUESTS, 1);
    }
    match worker.handle(&event, now).await {
        Ok(Outcome::RetryAt(at) | Outcome::NotYet(at)) => Verdict::Wait(at),
        Ok(outcome) => {
            info!(event = %event.id, ?outcome, "recharge request handled");
            Verdict::Done
        }
        Err(error) => {
            warn!(event = %event.id, %error, "recharge request failed; will retry");
            Verdict::Retry(error.to_string())
        }
    }
}

/// A batch's verdicts by message id: one task per message, so a panic (a bug) fails only its
/// own message.
pub async fn verdicts(
    worker: Arc<RechargeWorker>,
    messages: Vec<Message>,
) -> HashMap<String, Verdict> {
    let mut verdicts = HashMap::with_capacity(messages.len());
    for message in messages {
        let task_worker = worker.clone();
        let body = message.body;
        let verdict = tokio::spawn(async move { verdict(&task_worker, &body, Utc::now()).await })
            .await
            .unwrap_or_else(|panic| Verdict::Retry(format!("worker panicked: {panic}")));
        verdicts.insert(message.id, verdict);
    }
    verdicts
}
