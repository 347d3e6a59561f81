//! Pay Now, its reconciliation, and re-arming auto-recharge: the payment services the HTTP API
//! and the recharge worker share. No HTTP here: answers and errors are typed, and the API maps
//! them to status codes.
//!
//! Failure model of Pay Now: the claim (with the charge it will make) is written before the
//! processor is called; the account then lists the key as pending, which raises a
//! `PaymentPending` event for the reconciler. A definite answer (success, decline, refusal)
//! settles the claim; an unknown one (timeout, 5xx, `processing`) leaves it pending, and a
//! retry with the same key or the reconciler settles it later by looking the payment up (after
//! the processor's key lifetime a resend would be a new charge) or replaying the same key.

use std::sync::Arc;
use std::time::Duration;

use card_processor::{ChargeOutcome, ChargeRequest, CustomerId, ProcessorError};
use chrono::{DateTime, Utc};
use documents::payment::{load_payment, save_payment, PaymentRecord, PaymentStatus, Trigger};
use documents::profile::StoredCard;
use documents::{DocumentError, Store};
use ledger::docs::{newest_first_id, DocError, DocKind};
use ledger::{AccountId, Amount, BillingItem, Posting, PostingResult, SourceId, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An in-progress Pay Now older than this may be taken over by a retry with the same key (the
/// processor's idempotency key and the ledger's source id keep it to one charge, one credit).
pub const STALE_IN_PROGRESS_SECONDS: i64 = 60;
/// How long a Pay Now waits for its holder to authenticate it (3-D Secure) before it is
/// cancelled at the processor and marked failed: a customer who left the page never will.
pub const AUTHENTICATION_WINDOW_MINUTES: i64 = 60;

/// What the client must do next for a pending payment: complete 3-D Secure in the customer's
/// browser with the processor's script (Stripe.js `handleNextAction` with `client_secret`).
/// Given to the caller only; never stored or logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAction {
    /// `use_stripe_sdk`.
    #[serde(rename = "type")]
    pub kind: String,
    pub client_secret: String,
}

/// What a Pay Now came to (stored with the claim and replayed to a retry with the same key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PayNowAnswer {
    /// Charged and credited once.
    Credited { payment: PaymentRecord },
    /// The card was declined: nothing charged, nothing credited.
    Declined { message: String, payment: PaymentRecord },
    /// The processor refused the request (no such card, ...): nothing charged.
    Rejected { message: String, payment: PaymentRecord },
    /// The processor has not answered, or waits for the holder to authenticate the payment
    /// (`next_action`): credited once or marked failed when it is decided.
    Pending {
        payment: PaymentRecord,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_action: Option<NextAction>,
    },
}

impl PayNowAnswer {
    pub fn payment(&self) -> &PaymentRecord {
        match self {
            PayNowAnswer::Credited { payment }
            | PayNowAnswer::Declined { payment, .. }
            | PayNowAnswer::Rejected { payment, .. }
            | PayNowAnswer::Pending { payment, .. } => payment,
        }
    }
}

/// Why a Pay Now was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PayNowError {
    #[error("this Idempotency-Key was used for a different amount; nothing was charged")]
    KeyReused,
    #[error("a payment with this Idempotency-Key is in progress; retry shortly")]
    InProgress,
    #[error("{}", ledger::LedgerError::TooManyPendingPayments)]
    TooManyPending,
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl PayNowError {
    fn internal(error: impl std::fmt::Display) -> Self {
        PayNowError::Internal(error.to_string())
    }
}

/// A card change or a manual payment resets auto-recharge's backoff and lifts a stop: a
/// request that is waiting out its backoff is dropped, a stopped auto-recharge is re-armed, and
/// when the balance is still below the threshold the ledger raises a fresh request at once
/// (`settle_settings_change`). Dropping a waiting request is tied to the version of its
/// write-ahead record: it is marked cancelled only if nobody wrote it since it was read, so a
/// worker that has just written down an attempt is never raced into a second request.
/// Drops only a request waiting out its backoff. `Ok(true)`
/// when something was re-armed.
pub async fn rearm_auto_recharge(
    store: &dyn Store,
    id: &AccountId,
) -> Result<bool, ledger::StoreError> {
    Ok(rearm(store, id, MayDrop::Waiting).await? == Rearm::Rearmed)
}

/// What an operator's re-arm did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rearm {
    /// The stop was lifted and/or the request dropped; the ledger raised a fresh request if the
    /// balance is below the threshold.
    Rearmed,
    /// Auto-recharge is neither stopped nor holding a request it may drop.
    NothingToDo,
    /// An attempt was written down and may have reached the processor: recovery owns it (it is
    /// replayed until its outcome is known), so it is not dropped.
    ChargeInProgress,
}

/// The operator's re-drive: like [`rearm_auto_recharge`], and it also drops a request that has
/// not started charging (never picked up, or its message dead-lettered before its first
/// attempt): nothing can have been charged for it. A request with an attempt that may have
/// reached the processor is never dropped.
pub async fn operator_rearm(
    store: &dyn Store,
    id: &AccountId,
) -> Result<Rearm, ledger::StoreError> {
    rearm(store, id, MayDrop::Unstarted).await
}

/// Which in-flight request a re-arm may drop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MayDrop {
    /// Only one waiting out its backoff or given up (a customer's card change or payment).
    Waiting,
    /// Also one never picked up or between cards (an operator's re-drive).
    Unstarted,
}

async fn rearm(
    store: &dyn Store,
    id: &AccountId,
    may_drop: MayDrop,
) -> Result<Rearm, ledger::StoreError> {
    let Some(account) = store.account(id).await? else { return Ok(Rearm::NothingToDo) };
    let mut dropped = None;
    if let Some(request) = account.recharge_in_flight.clone() {
        match store.get_doc(id, DocKind::Recharge, &request).await? {
            // Raised and not yet picked up: a customer's change leaves it to run; an operator
            // may drop it, as nothing was charged for it.
            None if may_drop == MayDrop::Waiting => return Ok(Rearm::NothingToDo),
            None => {}
            Some(doc) => {
                let mut recharge: Value = serde_json::from_str(&doc.body)
                    .map_err(|e| ledger::StoreError::Corrupt(format!("recharge state: {e}")))?;
                let charging = &recharge["charging"];
                let waiting = charging.is_null()
                    && (recharge["given_up"] == true || recharge["next_attempt_at"].is_string());
                let card = charging["card_id"].as_str().unwrap_or_default();
                let declined = charging["declined"]
                    .as_array()
                    .is_some_and(|cards| cards.iter().any(|c| c.as_str() == Some(card)));
                let sent = !charging.is_null() && charging["sent"].as_bool().unwrap_or(true);
                match may_drop {
                    MayDrop::Waiting if !waiting => return Ok(Rearm::NothingToDo),
                    MayDrop::Unstarted if sent && !declined => return Ok(Rearm::ChargeInProgress),
                    _ => {}
                }
                recharge["cancelled"] = Value::Bool(true);
                let body = recharge.to_string();
                match store.put_doc(id, DocKind::Recharge, &request, &body, Some(doc.version)).await
                {
                    Ok(_) => {}
                    // The worker moved on (an attempt is being charged): leave it alone.
                    Err(DocError::Conflict) => return Ok(Rearm::ChargeInProgress),
                    Err(DocError::TooLarge(size)) => {
                        return Err(ledger::StoreError::Corrupt(format!(
                            "recharge state of {size} bytes"
                        )))
                    }
                    Err(DocError::Store(error)) => return Err(error),
                }
            }
        }
        dropped = Some(request);
    } else if account.recharge_stopped.is_none() {
        return Ok(Rearm::NothingToDo);
    }
    store
        .modify_account(
            id,
            Arc::new(move |a| {
                if dropped.is_some() && a.recharge_in_flight == dropped {
                    a.recharge_in_flight = None;
                }
                a.recharge_stopped = None;
                Ok(())
            }),
            Utc::now(),
        )
        .await?;
    Ok(Rearm::Rearmed)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    state: String,
    amount_usd: Amount,
    payment_id: String,
    started_at: DateTime<Utc>,
    /// The final answer, replayed to a retry with the same key.
    #[serde(default)]
    answer: Option<Box<PayNowAnswer>>,
    /// The answer as versions before `answer` kept it (HTTP status and body).
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    response: Option<Value>,
    /// The charge, fixed when the key is claimed (the write-ahead record): whoever settles the
    /// claim later replays exactly this, even if the card was deleted or replaced since.
    #[serde(default)]
    charge: Option<ClaimedCharge>,
    /// A plan period charged to the card (opt-in direct charge): the success posts the payment
    /// and the period's fee together, so the balance does not move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan_fee: Option<PlanFeeCharge>,
}

/// The plan period a direct charge pays for, fixed when its key is claimed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanFeeCharge {
    plan: String,
    period: String,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
}

impl PlanFeeCharge {
    /// The plan terms this charge was made on (at `amount`).
    fn terms(&self, amount: Amount) -> Option<documents::plan::PlanTerms> {
        Some(documents::plan::PlanTerms {
            name: self.plan.clone(),
            price_usd: amount,
            period: documents::plan::PlanPeriod::parse(&self.period)?,
        })
    }
}

impl IdempotencyRecord {
    /// The final answer of a finished claim, also from a record of an earlier version (which
    /// kept the HTTP status and body instead).
    fn done_answer(&self) -> Option<PayNowAnswer> {
        if let Some(answer) = &self.answer {
            return Some(PayNowAnswer::clone(answer));
        }
        let response = self.response.as_ref()?;
        let payment: PaymentRecord = serde_json::from_value(response["payment"].clone()).ok()?;
        let message = response["message"].as_str().unwrap_or_default().to_string();
        match self.status? {
            201 => Some(PayNowAnswer::Credited { payment }),
            402 => Some(PayNowAnswer::Declined { message, payment }),
            400 => Some(PayNowAnswer::Rejected { message, payment }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimedCharge {
    customer: String,
    card_id: String,
    card_brand: String,
    card_last4: String,
    /// An ACH debit of a bank account (settles in days) rather than a card charge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bank_account: bool,
}

/// What a client is told while the processor has not answered.
pub const PENDING_MESSAGE: &str = "The card processor has not confirmed this payment yet. It \
    will be credited once (or marked failed) as soon as the processor answers; nothing is \
    charged twice. See the payment history, or retry with the same Idempotency-Key.";

/// The ports a payment is settled with: the HTTP handler and the reconciler share them.
pub struct PaymentPorts<'a> {
    pub store: &'a dyn Store,
    pub processor: &'a dyn card_processor::CardProcessor,
    pub notices: Option<&'a dyn notifications::notice::NoticeSink>,
}

/// What the reconciler did with a pending payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Final (credited, failed, or settled by someone else): nothing more to do.
    Final,
    /// Still unknown, or its owner may still be working on it: ask again then.
    NotYet(DateTime<Utc>),
}

/// Claim the key, or answer with what it already produced.
enum Claim {
    /// Ours to charge; `replay` when it was started before (its owner died): the recorded
    /// charge is looked up / replayed, never a new one.
    Mine {
        record: Box<IdempotencyRecord>,
        version: u64,
        replay: bool,
    },
    Done(Box<PayNowAnswer>),
    /// Someone else is working on it right now and has not finished.
    Busy {
        payment_id: String,
    },
}

/// Write the claim record: create it (`expected` `None`) or replace the version read.
/// `Ok(None)` when someone else wrote it first.
async fn put_record(
    store: &dyn Store,
    id: &AccountId,
    key: &str,
    record: &IdempotencyRecord,
    expected: Option<u64>,
) -> Result<Option<u64>, PayNowError> {
    let body = serde_json::to_string(record).map_err(PayNowError::internal)?;
    match store.put_doc(id, DocKind::Idempotency, key, &body, expected).await {
        Ok(version) => Ok(Some(version)),
        Err(DocError::Conflict) => Ok(None),
        Err(DocError::TooLarge(_)) => {
            Err(PayNowError::Internal("idempotency record too large".into()))
        }
        Err(DocError::Store(error)) => Err(PayNowError::Store(error)),
    }
}

async fn claim(
    store: &dyn Store,
    id: &AccountId,
    key: &str,
    amount: Amount,
    (charge, plan_fee): (ClaimedCharge, Option<PlanFeeCharge>),
    now: DateTime<Utc>,
) -> Result<Claim, PayNowError> {
    let now = ledger::truncate_to_micros(now);
    let fresh = IdempotencyRecord {
        state: "in_progress".into(),
        amount_usd: amount,
        payment_id: newest_first_id(now, &format!("{:016x}", ledger::stable_hash(key))),
        started_at: now,
        answer: None,
        status: None,
        response: None,
        charge: Some(charge.clone()),
        plan_fee,
    };
    for round in 0..50 {
        if let Some(version) = put_record(store, id, key, &fresh, None).await? {
            return Ok(Claim::Mine { record: Box::new(fresh), version, replay: false });
        }
        let Some(doc) = store.get_doc(id, DocKind::Idempotency, key).await? else {
            continue;
        };
        let existing: IdempotencyRecord =
            serde_json::from_str(&doc.body).map_err(PayNowError::internal)?;
        if existing.amount_usd != amount {
            return Err(PayNowError::KeyReused);
        }
        match (existing.state.as_str(), existing.done_answer()) {
            ("done", Some(answer)) => return Ok(Claim::Done(Box::new(answer))),
            _ if (now - existing.started_at).num_seconds() >= STALE_IN_PROGRESS_SECONDS => {
                // Its owner died or the outcome is unknown: take over the same payment (the
                // recorded charge, looked up first), never a new one.
                let taken = IdempotencyRecord {
                    started_at: now,
                    charge: existing.charge.clone().or(Some(charge.clone())),
                    ..existing
                };
                if let Some(version) = put_record(store, id, key, &taken, Some(doc.version)).await?
                {
                    return Ok(Claim::Mine { record: Box::new(taken), version, replay: true });
                }
            }
            // Someone is paying with this key right now: wait a little for their answer.
            _ if round < 20 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return Ok(Claim::Busy { payment_id: existing.payment_id }),
        }
    }
    Err(PayNowError::InProgress)
}

async fn finish(
    store: &dyn Store,
    id: &AccountId,
    key: &str,
    mut record: IdempotencyRecord,
    version: u64,
    answer: &PayNowAnswer,
) -> Result<(), PayNowError> {
    record.state = "done".into();
    record.answer = Some(Box::new(answer.clone()));
    // A lost race only means another settler recorded the same answer.
    put_record(store, id, key, &record, Some(version)).await.map(|_| ())
}

/// Announce (once) that this key's payment may be pending, so the reconciler will settle it.
async fn mark_pending(store: &dyn Store, id: &AccountId, key: &str) -> Result<(), PayNowError> {
    let account = store.account(id).await?;
    if account.is_some_and(|a| a.pending_payments.iter().any(|k| k == key)) {
        return Ok(());
    }
    let key = key.to_string();
    store
        .modify_account(
            id,
            Arc::new(move |a| {
                if !a.pending_payments.contains(&key) {
                    a.pending_payments.push(key.clone());
                }
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .map_err(|error| match error {
            ledger::StoreError::Rejected(ledger::LedgerError::TooManyPendingPayments) => {
                PayNowError::TooManyPending
            }
            other => PayNowError::Store(other),
        })?;
    Ok(())
}

async fn clear_pending(store: &dyn Store, id: &AccountId, key: &str) -> Result<(), PayNowError> {
    let account = store.account(id).await?;
    if !account.is_some_and(|a| a.pending_payments.iter().any(|k| k == key)) {
        return Ok(());
    }
    let key = key.to_string();
    store
        .modify_account(
            id,
            Arc::new(move |a| {
                a.pending_payments.retain(|k| *k != key);
                Ok(())
            }),
            Utc::now(),
        )
        .await?;
    Ok(())
}

/// Pay Now, after the request was checked: one charge and at most one credit per key,
/// whatever is retried, crashes or goes unanswered.
///
/// Failure model: the claim (with the charge it will make) is written before the processor
/// is called; the account then lists the key as pending, which raises a `PaymentPending`
/// event for the reconciler. A definite answer (success, decline, refusal) settles the claim;
/// an unknown one (timeout, 5xx, `processing`) leaves it pending and answers 202, and a retry
/// with the same key or the reconciler settles it later by looking the payment up (after the
/// processor's key lifetime a resend would be a new charge) or replaying the same key.
#[allow(clippy::too_many_arguments)]
pub async fn pay_now_with(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    amount: Amount,
    card: &StoredCard,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<PayNowAnswer, PayNowError> {
    let charge = ClaimedCharge {
        customer: customer.to_string(),
        card_id: card.id.clone(),
        card_brand: card.brand.clone(),
        card_last4: card.last4.clone(),
        bank_account: card.kind == documents::profile::MethodKind::UsBankAccount,
    };
    let (record, version, replay) =
        match claim(ports.store, id, key, amount, (charge, None), now).await? {
            Claim::Done(answer) => return Ok(*answer),
            Claim::Busy { payment_id } => {
                return match load_payment(ports.store, id, &payment_id).await? {
                    Some(payment) => Ok(PayNowAnswer::Pending { payment, next_action: None }),
                    None => Err(PayNowError::InProgress),
                };
            }
            Claim::Mine { record, version, replay } => (*record, version, replay),
        };
    if let Err(error) = mark_pending(ports.store, id, key).await {
        if !replay {
            // Nothing was charged under this claim: let the key be used again.
            let _ = ports.store.delete_doc(id, DocKind::Idempotency, key, version).await;
        }
        return Err(error);
    }
    settle_claim(ports, id, key, record, version, replay, now).await
}

/// Charge (or, for a replay, look up and then replay) the claim's recorded charge and act on
/// the answer. Final answers finish the claim; an unknown one leaves it in progress.
async fn settle_claim(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    record: IdempotencyRecord,
    version: u64,
    replay: bool,
    now: DateTime<Utc>,
) -> Result<PayNowAnswer, PayNowError> {
    let Some(charge) = record.charge.clone() else {
        return Err(PayNowError::Internal("a claim without its charge".into()));
    };
    let amount = record.amount_usd;
    let mut payment = match load_payment(ports.store, id, &record.payment_id).await? {
        Some(payment) => payment,
        None => PaymentRecord {
            payment_id: record.payment_id.clone(),
            amount_usd: amount,
            card_id: charge.card_id.clone(),
            card_brand: charge.card_brand.clone(),
            card_last4: charge.card_last4.clone(),
            status: PaymentStatus::Pending,
            trigger: if record.plan_fee.is_some() { Trigger::Plan } else { Trigger::Manual },
            created_at: record.started_at,
            processor_payment_id: None,
            failure_code: None,
            failure_reason: None,
            entry_seq: None,
            balance_after_usd: None,
            pending_reason: Some("waiting for the card processor".into()),
            refunds: Vec::new(),
            disputes: Vec::new(),
        },
    };
    if payment.status != PaymentStatus::Pending {
        // Settled before the claim was finished (a crash in between): finish it the same way.
        let answer = match payment.status {
            PaymentStatus::Succeeded => PayNowAnswer::Credited { payment },
            _ => PayNowAnswer::Declined {
                message: payment.failure_reason.clone().unwrap_or_default(),
                payment,
            },
        };
        // A crash may have come between the credit and paying the invoices with it.
        if matches!(answer, PayNowAnswer::Credited { .. }) {
            apply_to_invoices(ports, id, key, &record, now).await?;
        }
        // A crash may have come between recording the failure and emailing it.
        if replay && record.plan_fee.is_none() {
            notify_failed(ports, id, &answer, now).await?;
        }
        finish(ports.store, id, key, record, version, &answer).await?;
        clear_pending(ports.store, id, key).await?;
        return Ok(answer);
    }
    save_payment(ports.store, id, &payment).await?;
    let cents = (amount.value() * rust_decimal::Decimal::ONE_HUNDRED)
        .trunc()
        .to_string()
        .parse::<u64>()
        .map_err(PayNowError::internal)?;
    let request = ChargeRequest {
        method: if charge.bank_account {
            card_processor::MethodKind::UsBankAccount
        } else {
            card_processor::MethodKind::Card
        },
        customer: CustomerId(charge.customer.clone()),
        payment_method_id: charge.card_id.clone(),
        amount_cents: cents,
        // A plan's direct charge is off session (nobody is there to authenticate it).
        idempotency_key: match record.plan_fee {
            Some(_) => format!(
                "plan:{id}:{}",
                key.strip_prefix(documents::plan::PLAN_KEY_PREFIX).unwrap_or(key)
            ),
            None => format!("pay:{id}:{key}"),
        },
        description: match &record.plan_fee {
            Some(fee) => format!("ringledger plan {} from {}", fee.plan, fee.from),
            None => format!("ringledger Pay Now {}", payment.payment_id),
        },
    };
    let outcome = if replay {
        match ports.processor.find_charge(&request.customer, &request.idempotency_key).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => ports.processor.charge(&request).await,
            // A lookup that failed says nothing about the payment: unknown, never a decline.
            Err(error) => {
                Err(ProcessorError::Unexpected(format!("payment lookup failed: {error}")))
            }
        }
    } else {
        ports.processor.charge(&request).await
    };
    // A payment whose holder has not authenticated it within the window is cancelled at the
    // processor; the answer says how it ended (a success that beat the cancel stands).
    let outcome = match outcome {
        Ok(ChargeOutcome::RequiresAction { payment_intent_id, .. })
            if now - payment.created_at
                >= chrono::Duration::minutes(AUTHENTICATION_WINDOW_MINUTES) =>
        {
            ports.processor.cancel_charge(&payment_intent_id).await
        }
        other => other,
    };
    // A declined intent the customer's browser still holds (its client secret) could be
    // confirmed again after we record the failure: cancel it first, so a payment recorded as
    // failed can never be captured. A success that beat the cancel stands; a cancel that gets
    // no answer leaves the payment pending (asked again later).
    let outcome = match outcome {
        Ok(ChargeOutcome::Declined { payment_intent_id: Some(intent), decline }) => {
            match ports.processor.cancel_charge(&intent).await {
                Ok(ChargeOutcome::Succeeded { payment_intent_id }) => {
                    Ok(ChargeOutcome::Succeeded { payment_intent_id })
                }
                Ok(_) => Ok(ChargeOutcome::Declined { payment_intent_id: Some(intent), decline }),
                Err(error) => Err(ProcessorError::Unexpected(format!(
                    "cancelling the declined payment failed: {error}"
                ))),
            }
        }
        other => other,
    };
    card_processor::count_outcome(&outcome);
    let answer = match outcome {
        Ok(ChargeOutcome::Succeeded { payment_intent_id }) => {
            // Counted toward the auto-recharge caps only when the operator says so, before the
            // credit (as auto-recharge counts: a cap check never misses a credited payment);
            // once per key, so a replay counts nothing twice; on the day the payment was first
            // written (a takeover of the claim restarts its clock, not the payment's).
            let (profile, _) = documents::profile::load(ports.store, id).await?;
            if profile.caps_count_manual_payments && record.plan_fee.is_none() {
                let day = payment.created_at.date_naive();
                documents::spend::add(ports.store, id, day, &format!("pay:{key}"), amount)
                    .await
                    .map_err(|error| match error {
                        documents::spend::SpendError::Store(error) => PayNowError::Store(error),
                        busy => PayNowError::internal(busy),
                    })?;
            }
            let source = SourceId::parse(format!("pay:{key}")).map_err(PayNowError::internal)?;
            let posting = Posting::credit(source, BillingItem::FundsAdded, amount, now)
                .and_then(|p| {
                    p.with_details(json!({
                        "payment_id": payment.payment_id,
                        "processor_payment_id": payment_intent_id,
                        "card": format!("{} {}", charge.card_brand, charge.card_last4),
                        "trigger": if record.plan_fee.is_some() { "plan" } else { "manual" },
                    }))
                })
                .map_err(PayNowError::internal)?;
            let mut postings = vec![posting];
            // The period's fee, while the plan still bills that period: a plan that ended
            // meanwhile charges nothing for it, and the card's money is funds on the balance.
            let still_billed = |fee: &PlanFeeCharge| {
                profile.plan.as_ref().is_some_and(|p| p.next_renewal <= fee.from)
            };
            if let Some(fee) = record.plan_fee.as_ref().filter(|fee| still_billed(fee)) {
                postings.push(plan_fee_posting(fee, amount, &payment.payment_id)?);
            }
            let posted = ports.store.post(id, postings, now).await?;
            apply_to_invoices(ports, id, key, &record, now).await?;
            let seq = match posted.results.first() {
                Some(PostingResult::Applied { seq, .. } | PostingResult::Duplicate { seq }) => {
                    Some(*seq)
                }
                _ => None,
            };
            if record.plan_fee.is_none() {
                if let Err(error) = rearm_auto_recharge(ports.store, id).await {
                    tracing::warn!(%error, "auto-recharge backoff not reset");
                }
            }
            payment.status = PaymentStatus::Succeeded;
            payment.pending_reason = None;
            payment.processor_payment_id = Some(payment_intent_id);
            payment.entry_seq = seq;
            payment.balance_after_usd = Some(posted.account.balance_usd.normalize().to_string());
            if let Some(notices) = ports.notices {
                let receipt = notifications::notice::Notice {
                    id: format!("receipt:{id}:{}", payment.payment_id),
                    account_id: id.clone(),
                    raised_at: ledger::truncate_to_micros(now),
                    kind: notifications::notice::NoticeKind::PaymentReceipt {
                        payment_id: payment.payment_id.clone(),
                        amount_usd: amount,
                        card_brand: charge.card_brand.clone(),
                        card_last4: charge.card_last4.clone(),
                        balance_after_usd: posted.account.balance_usd,
                        trigger: match record.plan_fee {
                            Some(_) => notifications::notice::PaymentTrigger::Plan,
                            None => notifications::notice::PaymentTrigger::Manual,
                        },
                        paid_at: ledger::truncate_to_micros(now),
                    },
                };
                // The payment stands either way; a lost receipt is logged, never a failed payment.
                if let Err(error) = notices.publish(&receipt).await {
                    tracing::warn!(%error, payment = %payment.payment_id, "receipt not queued");
                }
            }
            PayNowAnswer::Credited { payment: payment.clone() }
        }
        Ok(ChargeOutcome::Declined { payment_intent_id, decline }) => {
            payment.status = PaymentStatus::Failed;
            payment.pending_reason = None;
            payment.processor_payment_id = payment_intent_id;
            payment.failure_code = Some(decline.code.as_str().to_string());
            payment.failure_reason = Some(decline.code.reason().to_string());
            PayNowAnswer::Declined {
                message: decline.code.reason().to_string(),
                payment: payment.clone(),
            }
        }
        // A definite refusal: nothing was charged. Said in the record, not left pending.
        Err(ProcessorError::InvalidRequest(message))
        | Err(ProcessorError::Declined(card_processor::Decline { message, .. })) => {
            payment.status = PaymentStatus::Failed;
            payment.pending_reason = None;
            payment.failure_code = Some("processor_rejected".into());
            payment.failure_reason = Some(message.clone());
            PayNowAnswer::Rejected { message, payment: payment.clone() }
        }
        // Waiting for the holder (3-D Secure): nothing is charged yet. The client gets the next
        // action; the payment's event, a retry with the same key or the reconciler settles it,
        // and after the window it is cancelled.
        Ok(ChargeOutcome::RequiresAction { payment_intent_id, client_secret }) => {
            payment.processor_payment_id = Some(payment_intent_id);
            payment.pending_reason =
                Some("waiting for the cardholder to authenticate the payment (3-D Secure)".into());
            save_payment(ports.store, id, &payment).await?;
            let next_action = NextAction { kind: "use_stripe_sdk".into(), client_secret };
            return Ok(PayNowAnswer::Pending { payment, next_action: Some(next_action) });
        }
        // Unknown: the card may have been charged. The claim stays; the reconciler or a retry
        // with the same key settles it.
        Ok(ChargeOutcome::Processing { .. }) | Err(_) => {
            let reason = match &outcome {
                Ok(_) => "the card processor is still processing the payment".to_string(),
                Err(error) => {
                    tracing::warn!(%error, payment = %payment.payment_id, "payment outcome unknown");
                    "the card processor did not answer; the payment will be checked again".into()
                }
            };
            payment.pending_reason = Some(reason);
            save_payment(ports.store, id, &payment).await?;
            return Ok(PayNowAnswer::Pending { payment, next_action: None });
        }
    };
    save_payment(ports.store, id, &payment).await?;
    // A replay (the reconciler, the processor's event, a retry) that finds the payment failed:
    // the customer was told it was pending and may be gone, so the failure is emailed, before
    // the claim is finished (a publish that fails retries the step; the notice id makes it once).
    if replay && record.plan_fee.is_none() {
        notify_failed(ports, id, &answer, now).await?;
    }
    finish(ports.store, id, key, record, version, &answer).await?;
    clear_pending(ports.store, id, key).await?;
    Ok(answer)
}

/// A Pay Now credit (`pay:<key>`) pays the account's open invoices, oldest first (postpaid
/// accounts; one empty query for the others). A plan's charge pays its fee, and an invoice's
/// pre-authorized charge pays its own invoice first (`invoice::charge_invoice`). Idempotent by
/// the credit's source id.
async fn apply_to_invoices(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
) -> Result<(), PayNowError> {
    if record.plan_fee.is_some() || key.starts_with(documents::invoice::AUTOPAY_KEY_PREFIX) {
        return Ok(());
    }
    let source = format!("pay:{key}");
    documents::invoice::apply_payment(ports.store, id, &source, record.amount_usd.value(), now)
        .await?;
    Ok(())
}

/// Email that a pending payment ended failed (once per payment: the notice id names it).
async fn notify_failed(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    answer: &PayNowAnswer,
    now: DateTime<Utc>,
) -> Result<(), PayNowError> {
    let (PayNowAnswer::Declined { message, payment } | PayNowAnswer::Rejected { message, payment }) =
        answer
    else {
        return Ok(());
    };
    let Some(notices) = ports.notices else { return Ok(()) };
    let notice = notifications::notice::Notice {
        id: format!("payment_failed:{id}:{}", payment.payment_id),
        account_id: id.clone(),
        raised_at: ledger::truncate_to_micros(now),
        kind: notifications::notice::NoticeKind::PaymentFailed {
            payment_id: payment.payment_id.clone(),
            amount_usd: payment.amount_usd,
            card_brand: payment.card_brand.clone(),
            card_last4: payment.card_last4.clone(),
            reason: message.clone(),
        },
    };
    notices.publish(&notice).await.map_err(PayNowError::internal)
}

/// The period's `plan_fee` debit: the same source id whether the card or the balance pays it,
/// so a period is charged once.
fn plan_fee_posting(
    fee: &PlanFeeCharge,
    amount: Amount,
    payment_id: &str,
) -> Result<Posting, PayNowError> {
    let source =
        SourceId::parse(documents::plan::fee_source_id(fee.from)).map_err(PayNowError::internal)?;
    let at = fee.from.and_time(chrono::NaiveTime::MIN).and_utc();
    Posting::usage(source, BillingItem::PlanFee, amount, at)
        .and_then(|p| {
            p.with_details(json!({
                "plan": fee.plan,
                "period": fee.period,
                "from": fee.from,
                "to": fee.to,
                "paid_by": "card",
                "payment_id": payment_id,
            }))
        })
        .map_err(PayNowError::internal)
}

/// Settle a Pay Now announced by a `PaymentPending` event: nothing if it is final, wait if its
/// owner may still be working on it, otherwise take it over and replay it. A plan period's key
/// (`plan:YYYY-MM-DD`) runs that period's direct charge ([`plan::charge_period`]).
pub async fn reconcile_pending_payment(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Reconciled, PayNowError> {
    let now = ledger::truncate_to_micros(now);
    if let Some(period) = documents::plan::period_of_key(key) {
        return plan::charge_period(ports, id, period, now).await;
    }
    if let Some(month) = documents::invoice::month_of_autopay_key(key) {
        return invoice::charge_invoice(ports, id, month, now).await;
    }
    let Some(doc) = ports.store.get_doc(id, DocKind::Idempotency, key).await? else {
        // Never claimed (or the claim was released before anything was charged).
        clear_pending(ports.store, id, key).await?;
        return Ok(Reconciled::Final);
    };
    let record: IdempotencyRecord =
        serde_json::from_str(&doc.body).map_err(PayNowError::internal)?;
    if record.state == "done" {
        clear_pending(ports.store, id, key).await?;
        return Ok(Reconciled::Final);
    }
    let stale_at = record.started_at + chrono::Duration::seconds(STALE_IN_PROGRESS_SECONDS);
    if now < stale_at {
        return Ok(Reconciled::NotYet(stale_at));
    }
    let taken = IdempotencyRecord { started_at: now, ..record };
    let Some(version) = put_record(ports.store, id, key, &taken, Some(doc.version)).await? else {
        // Someone else took it over just now.
        return Ok(Reconciled::NotYet(now + chrono::Duration::seconds(STALE_IN_PROGRESS_SECONDS)));
    };
    let bank = taken.charge.as_ref().is_some_and(|c| c.bank_account);
    let answer = settle_claim(ports, id, key, taken, version, true, now).await?;
    if matches!(answer, PayNowAnswer::Pending { .. }) {
        // An ACH debit takes days: asked again every few hours, not every few minutes (the
        // processor's event settles it at once when it comes).
        let wait = if bank {
            chrono::Duration::hours(BANK_RECONCILE_RETRY_HOURS)
        } else {
            chrono::Duration::minutes(RECONCILE_RETRY_MINUTES)
        };
        return Ok(Reconciled::NotYet(now + wait));
    }
    Ok(Reconciled::Final)
}

/// How long a payment whose outcome is still unknown waits before the processor is asked again.
pub const RECONCILE_RETRY_MINUTES: i64 = 15;
/// The same for a bank account's ACH debit, which settles in a few business days.
pub const BANK_RECONCILE_RETRY_HOURS: i64 = 6;

pub mod cards;
pub mod dispute;
pub mod invoice;
pub mod plan;
pub mod refund;

/// The account's payment record that the processor's `payment_intent_id` made (disputes and
/// refund events name the processor's payment, not ours): the account's records, page by page.
pub(crate) async fn payment_by_processor_id(
    store: &dyn Store,
    id: &AccountId,
    payment_intent_id: &str,
) -> Result<Option<PaymentRecord>, DocumentError> {
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_docs(id, DocKind::Payment, after.as_deref(), ledger::docs::MAX_DOCS_PER_LIST)
            .await?;
        for doc in &page {
            let record: PaymentRecord = serde_json::from_str(&doc.body)
                .map_err(|source| DocumentError::Unreadable { what: "payment", source })?;
            if record.processor_payment_id.as_deref() == Some(payment_intent_id) {
                return Ok(Some(record));
            }
        }
        if page.len() < ledger::docs::MAX_DOCS_PER_LIST as usize {
            return Ok(None);
        }
        after = page.last().map(|doc| doc.id.clone());
    }
}
