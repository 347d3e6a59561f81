//! Refunds of a card payment to its card, in full or in part, asked for by an operator.
//!
//! Failure model. A refund crosses two systems that can each fail midway: the ledger (the
//! balance goes down) and the card processor (the money goes back). The steps, each
//! idempotent and each recorded before the next starts:
//!
//! 1. **Written down.** The account first lists the refund as pending (`payment_id/refund_id`),
//!    which raises `RefundPending` for the payments reconciler in the same write; then the
//!    refund is added to the payment record as `requested`, with a version-checked write that
//!    also checks what is left of the payment, so refunds racing for the same payment cannot
//!    together exceed it. From the first write on, a crash anywhere is finished by the
//!    reconciler: it forgets a pending entry whose refund was never written, and takes a
//!    written one through the steps below.
//! 2. **Debited.** A `card_refund` debit, source id per payment and refund id, posts whatever
//!    the balance (the money leaves whatever happens; at the floor the account suspends like any
//!    debit). The ledger's source id makes a replay post nothing twice.
//! 3. **Sent.** The processor is asked for the refund under an idempotency key per account,
//!    payment and refund id, looked up first on every replay (so a refund whose answer was lost
//!    is found, even after the key's lifetime). `sent` or `pending`: done. A definite refusal:
//!    a `card_refund` credit returns the debit (its own source id, once) and the refund is
//!    `failed`. No answer (timeout, 5xx): it stays `requested`, and the reconciler asks again.
//!
//! The debit comes before the processor call so that money never leaves at the processor while
//! the balance still shows it: the worst a crash can leave is a debit whose refund is not yet
//! sent, which the reconciler finishes.

use std::sync::Arc;

use card_processor::{ProcessorError, RefundOutcome, RefundRequest};
use chrono::{DateTime, Utc};
use documents::payment::{
    load_payment_version, save_payment_version, PaymentRecord, PaymentStatus, RefundLine,
    RefundStatus,
};
use documents::DocumentError;
use ledger::{AccountId, Amount, BillingItem, EntryKind, Posting, PostingResult, PostingRule};
use ledger::{SourceId, StoreError};
use rust_decimal::Decimal;
use serde_json::json;

use crate::{PaymentPorts, Reconciled, RECONCILE_RETRY_MINUTES};

/// The longest refund id (the operator's Idempotency-Key).
pub const MAX_REFUND_ID_CHARS: usize = 64;
/// The longest reason kept with a refund.
pub const MAX_REASON_CHARS: usize = 500;

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct RefundAsk {
    pub payment_id: String,
    /// The operator's Idempotency-Key: one refund per id and payment.
    pub refund_id: String,
    /// Whole cents, at least $0.01.
    pub amount: Amount,
    pub reason: String,
    /// The operator's user, kept with the refund.
    pub by: Option<String>,
}

/// Where a refund stands after the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAnswer {
    /// This call wrote the refund down (a first request); `false` for a repeat.
    pub created: bool,
    pub payment: PaymentRecord,
    pub refund: RefundLine,
    /// The balance after the refund's debit (and its reversal, if the processor refused it).
    pub balance_usd: Option<Decimal>,
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("no payment {0} on this account")]
    NoSuchPayment(String),
    #[error("no refund {0} of this payment")]
    NoSuchRefund(String),
    #[error("payment {payment_id} cannot be refunded: {why}")]
    NotRefundable { payment_id: String, why: &'static str },
    #[error(
        "a refund of ${asked} is more than is left of the payment (${left} of ${paid}); nothing \
         was refunded"
    )]
    TooMuch { asked: Decimal, left: Decimal, paid: Decimal },
    #[error(
        "refund {refund_id} of this payment was already asked for with another amount or reason \
         (${amount}: {reason}); nothing changed: use a new Idempotency-Key for a new refund"
    )]
    KeyReused { refund_id: String, amount: Decimal, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{}", ledger::LedgerError::TooManyPendingPayments)]
    TooManyPending,
    #[error("the payment record is being written by someone else; retry")]
    Busy,
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Checks a refund id: 1 to [`MAX_REFUND_ID_CHARS`] of `A-Z a-z 0-9 . _ -`.
pub fn check_refund_id(id: &str) -> Result<(), RefundError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_REFUND_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(RefundError::Invalid(format!(
            "a refund's Idempotency-Key must be 1 to {MAX_REFUND_ID_CHARS} characters of A-Z, \
             a-z, 0-9, '.', '_' or '-'"
        )))
    }
}

/// The account's pending-refund entry for a refund.
fn pending_entry(payment_id: &str, refund_id: &str) -> String {
    format!("{payment_id}/{refund_id}")
}

/// Which payment and refund a pending-refund entry names.
pub fn parse_pending(entry: &str) -> Option<(&str, &str)> {
    entry.rsplit_once('/')
}

fn source(prefix: &str, payment_id: &str, refund_id: &str) -> Result<SourceId, RefundError> {
    // The payment id is hashed so the source id stays within the ledger's 128 characters
    // whatever the payment id's length; the entry's details keep it whole.
    SourceId::parse(format!("{prefix}:{:016x}:{refund_id}", ledger::stable_hash(payment_id)))
        .map_err(|e| RefundError::Internal(e.to_string()))
}

fn cents(amount: Amount) -> Result<u64, RefundError> {
    (amount.value() * Decimal::ONE_HUNDRED)
        .normalize()
        .to_string()
        .parse::<u64>()
        .map_err(|_| RefundError::Invalid("a refund is in whole cents".into()))
}

/// Refund part or all of a succeeded card payment to its card: once per refund id, never more
/// than is left of the payment (see the module's failure model).
pub async fn refund_payment(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    ask: RefundAsk,
    now: DateTime<Utc>,
) -> Result<RefundAnswer, RefundError> {
    let now = ledger::truncate_to_micros(now);
    check_refund_id(&ask.refund_id)?;
    let reason = ask.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(RefundError::Invalid(format!(
            "reason must be 1 to {MAX_REASON_CHARS} characters"
        )));
    }
    if ask.amount.value() <= Decimal::ZERO || ask.amount.value().scale() > 2 {
        return Err(RefundError::Invalid("amount_usd must be whole cents, at least 0.01".into()));
    }
    // Checked before anything is written: a refund that cannot be taken changes nothing.
    let Some((payment, _)) = load_payment_version(ports.store, id, &ask.payment_id).await? else {
        return Err(RefundError::NoSuchPayment(ask.payment_id.clone()));
    };
    let existing = match payment.refund(&ask.refund_id) {
        Some(line) if line.amount_usd != ask.amount || line.reason != reason => {
            return Err(RefundError::KeyReused {
                refund_id: ask.refund_id.clone(),
                amount: line.amount_usd.value(),
                reason: line.reason.clone(),
            });
        }
        Some(_) => true,
        None => {
            check_refundable(&payment, &ask)?;
            false
        }
    };
    // Pending on the account before the refund exists: whatever happens from here on, the
    // reconciler looks at it (and forgets an entry whose refund was never written).
    mark_pending(ports, id, &ask.payment_id, &ask.refund_id).await?;
    let mut created = false;
    let mut written = existing;
    for _ in 0..8 {
        if written {
            break;
        }
        let Some((mut payment, version)) =
            load_payment_version(ports.store, id, &ask.payment_id).await?
        else {
            return Err(RefundError::NoSuchPayment(ask.payment_id.clone()));
        };
        if payment.refund(&ask.refund_id).is_some() {
            written = true;
            break;
        }
        if let Err(refused) = check_refundable(&payment, &ask) {
            // Nothing was written under this id: the entry has nothing to wait for.
            let _ = clear_pending(ports, id, &ask.payment_id, &ask.refund_id).await;
            return Err(refused);
        }
        payment.refunds.push(RefundLine {
            refund_id: ask.refund_id.clone(),
            amount_usd: ask.amount,
            reason: reason.clone(),
            status: RefundStatus::Requested,
            requested_at: now,
            by: ask.by.clone(),
            processor_refund_id: None,
            entry_seq: None,
            reversal_seq: None,
            failure_reason: None,
        });
        if save_payment_version(ports.store, id, &payment, version).await? {
            created = true;
            written = true;
        }
    }
    if !written {
        return Err(RefundError::Busy);
    }
    // The same refund id asked for again with other terms: the first one stands.
    let (payment, _) = load_payment_version(ports.store, id, &ask.payment_id)
        .await?
        .ok_or_else(|| RefundError::NoSuchPayment(ask.payment_id.clone()))?;
    if let Some(line) = payment.refund(&ask.refund_id) {
        if line.amount_usd != ask.amount || line.reason != reason {
            return Err(RefundError::KeyReused {
                refund_id: ask.refund_id.clone(),
                amount: line.amount_usd.value(),
                reason: line.reason.clone(),
            });
        }
    }
    // A reconciler that ran between the two writes above may have forgotten the entry.
    mark_pending(ports, id, &ask.payment_id, &ask.refund_id).await?;
    let mut answer = settle_refund(ports, id, &ask.payment_id, &ask.refund_id, now).await?;
    answer.created = created;
    Ok(answer)
}

/// What a new refund of `payment` must satisfy: a succeeded card payment with enough left.
fn check_refundable(payment: &PaymentRecord, ask: &RefundAsk) -> Result<(), RefundError> {
    if payment.status != PaymentStatus::Succeeded {
        return Err(RefundError::NotRefundable {
            payment_id: payment.payment_id.clone(),
            why: "only a succeeded payment can be refunded",
        });
    }
    if payment.processor_payment_id.is_none() {
        return Err(RefundError::NotRefundable {
            payment_id: payment.payment_id.clone(),
            why: "the processor's payment id is not known",
        });
    }
    let left = payment.refundable_usd();
    if ask.amount.value() > left {
        return Err(RefundError::TooMuch {
            asked: ask.amount.value(),
            left,
            paid: payment.amount_usd.value(),
        });
    }
    Ok(())
}

async fn mark_pending(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
) -> Result<(), RefundError> {
    set_pending(ports, id, &pending_entry(payment_id, refund_id), true).await
}

async fn clear_pending(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
) -> Result<(), RefundError> {
    set_pending(ports, id, &pending_entry(payment_id, refund_id), false).await
}

/// List (`pending`) or unlist a refund on the account; an account already so writes nothing.
async fn set_pending(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    entry: &str,
    pending: bool,
) -> Result<(), RefundError> {
    let Some(account) = ports.store.account(id).await? else { return Ok(()) };
    if account.pending_refunds.iter().any(|e| e == entry) == pending {
        return Ok(());
    }
    let entry = entry.to_string();
    ports
        .store
        .modify_account(
            id,
            Arc::new(move |a| {
                if a.pending_refunds.contains(&entry) == pending {
                    return Err(ledger::LedgerError::Unchanged);
                }
                if pending {
                    a.pending_refunds.push(entry.clone());
                } else {
                    a.pending_refunds.retain(|e| *e != entry);
                }
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .map(|_| ())
        .or_else(|error| match error {
            StoreError::Rejected(ledger::LedgerError::Unchanged) => Ok(()),
            StoreError::Rejected(ledger::LedgerError::TooManyPendingPayments) => {
                Err(RefundError::TooManyPending)
            }
            other => Err(RefundError::Store(other)),
        })
}

/// Change one refund line of the payment record (version-checked, retried on a lost race);
/// the record and line as written.
async fn update_line(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
    change: impl Fn(&mut RefundLine),
) -> Result<(PaymentRecord, RefundLine), RefundError> {
    for _ in 0..8 {
        let Some((mut payment, version)) =
            load_payment_version(ports.store, id, payment_id).await?
        else {
            return Err(RefundError::NoSuchPayment(payment_id.to_string()));
        };
        let Some(line) = payment.refunds.iter_mut().find(|r| r.refund_id == refund_id) else {
            return Err(RefundError::Internal(format!("refund {refund_id} vanished")));
        };
        let before = line.clone();
        change(line);
        let after = line.clone();
        if before == after || save_payment_version(ports.store, id, &payment, version).await? {
            return Ok((payment, after));
        }
    }
    Err(RefundError::Busy)
}

/// Take a written-down refund as far as it can go now: debit it (once), send it (once) and
/// record the outcome. Safe to run any number of times, concurrently, after any crash.
pub async fn settle_refund(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
    now: DateTime<Utc>,
) -> Result<RefundAnswer, RefundError> {
    let Some((payment, _)) = load_payment_version(ports.store, id, payment_id).await? else {
        clear_pending(ports, id, payment_id, refund_id).await?;
        return Err(RefundError::NoSuchPayment(payment_id.to_string()));
    };
    let Some(line) = payment.refund(refund_id).cloned() else {
        // Taken back before anything happened.
        clear_pending(ports, id, payment_id, refund_id).await?;
        return Err(RefundError::NoSuchRefund(refund_id.to_string()));
    };
    if line.status == RefundStatus::Failed && line.reversal_seq.is_none() {
        // Decided failed, its reversal not recorded yet (a crash in between): finish it.
        let answer = finish_failed(ports, id, payment, line, now).await?;
        clear_pending(ports, id, payment_id, refund_id).await?;
        return Ok(answer);
    }
    if line.status != RefundStatus::Requested {
        clear_pending(ports, id, payment_id, refund_id).await?;
        return Ok(RefundAnswer { created: false, payment, refund: line, balance_usd: None });
    }
    let Some(intent) = payment.processor_payment_id.clone() else {
        return Err(RefundError::Internal(format!("payment {payment_id} has no processor id")));
    };
    let card = format!("{} {}", payment.card_brand, payment.card_last4);
    let details = json!({
        "payment_id": payment_id,
        "refund_id": refund_id,
        "processor_payment_id": intent,
        "card": card,
        "reason": line.reason,
    });

    // 2. The debit, whatever the balance.
    let debit = Posting::new(
        source("rf", payment_id, refund_id)?,
        EntryKind::Debit,
        BillingItem::CardRefund,
        line.amount_usd,
        PostingRule::Always,
        now,
    )
    .and_then(|p| p.with_details(details.clone()))
    .map_err(|e| RefundError::Internal(e.to_string()))?;
    let posted = ports.store.post(id, vec![debit], now).await?;
    let debit_seq = applied_seq(posted.results.first())?;
    let balance = posted.account.balance_usd;
    if line.entry_seq != Some(debit_seq) {
        update_line(ports, id, payment_id, refund_id, |l| l.entry_seq = Some(debit_seq)).await?;
    }

    // 3. The processor: looked up first, so a lost answer is found rather than resent.
    let request = RefundRequest {
        payment_intent_id: intent.clone(),
        amount_cents: cents(line.amount_usd)?,
        idempotency_key: format!(
            "refund:{id}:{:016x}:{refund_id}",
            ledger::stable_hash(payment_id)
        ),
    };
    let outcome = match ports.processor.find_refund(&intent, &request.idempotency_key).await {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => ports.processor.refund(&request).await,
        Err(error) => Err(ProcessorError::Unexpected(format!("refund lookup failed: {error}"))),
    };
    let (status, processor_refund_id, failure) = match outcome {
        Ok(RefundOutcome::Sent { refund_id }) => (RefundStatus::Sent, Some(refund_id), None),
        Ok(RefundOutcome::Pending { refund_id }) => (RefundStatus::Pending, Some(refund_id), None),
        Ok(RefundOutcome::Failed { refund_id, reason }) => {
            (RefundStatus::Failed, refund_id, Some(reason))
        }
        // The processor refused the request outright (more than it has left, a payment it
        // does not know): nothing was returned.
        Err(ProcessorError::InvalidRequest(message)) => (RefundStatus::Failed, None, Some(message)),
        Err(error) => {
            tracing::warn!(%error, payment_id, refund_id, "refund outcome unknown");
            let (payment, refund) = update_line(ports, id, payment_id, refund_id, |_| {}).await?;
            return Ok(RefundAnswer {
                created: false,
                payment,
                refund,
                balance_usd: Some(balance),
            });
        }
    };
    // The outcome is written down before anything follows from it: a refusal is final once
    // recorded (its reversal is finished from the record, whatever the processor says later),
    // so a crash between the reversal and the record cannot turn into a refund that is both
    // returned to the balance and sent.
    let (payment, refund) = update_line(ports, id, payment_id, refund_id, |l| {
        l.status = status;
        l.processor_refund_id = processor_refund_id.clone();
        l.entry_seq = Some(debit_seq);
        l.failure_reason = failure.clone();
    })
    .await?;
    if refund.status == RefundStatus::Failed {
        let answer = finish_failed(ports, id, payment, refund, now).await?;
        clear_pending(ports, id, payment_id, refund_id).await?;
        return Ok(answer);
    }
    clear_pending(ports, id, payment_id, refund_id).await?;
    receipt(ports, id, &payment, &refund, balance, now).await;
    Ok(RefundAnswer { created: false, payment, refund, balance_usd: Some(balance) })
}

/// A refund recorded as failed: post its reversal credit (once, by its source id), record it,
/// and tell the billing contacts.
async fn finish_failed(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment: PaymentRecord,
    line: RefundLine,
    now: DateTime<Utc>,
) -> Result<RefundAnswer, RefundError> {
    let (payment_id, refund_id) = (payment.payment_id.clone(), line.refund_id.clone());
    let details = json!({
        "payment_id": payment_id,
        "refund_id": refund_id,
        "processor_payment_id": payment.processor_payment_id,
        "card": format!("{} {}", payment.card_brand, payment.card_last4),
        "reason": line.reason,
    });
    let (seq, balance) =
        reverse(ports, id, &payment_id, &refund_id, line.amount_usd, &details, now).await?;
    let (payment, refund) =
        update_line(ports, id, &payment_id, &refund_id, |l| l.reversal_seq = Some(seq)).await?;
    receipt(ports, id, &payment, &refund, balance, now).await;
    Ok(RefundAnswer { created: false, payment, refund, balance_usd: Some(balance) })
}

/// The `card_refund` credit that returns a refused refund's debit to the balance (once).
async fn reverse(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
    amount: Amount,
    details: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(u64, Decimal), RefundError> {
    let credit = Posting::new(
        source("rfx", payment_id, refund_id)?,
        EntryKind::Credit,
        BillingItem::CardRefund,
        amount,
        PostingRule::Always,
        now,
    )
    .and_then(|p| p.with_details(details.clone()))
    .map_err(|e| RefundError::Internal(e.to_string()))?;
    let posted = ports.store.post(id, vec![credit], now).await?;
    Ok((applied_seq(posted.results.first())?, posted.account.balance_usd))
}

/// The refund's receipt (or its refusal) to the billing contacts; a lost one is logged.
async fn receipt(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment: &PaymentRecord,
    refund: &RefundLine,
    balance: Decimal,
    now: DateTime<Utc>,
) {
    let (payment_id, refund_id) = (&payment.payment_id, &refund.refund_id);
    if let Some(notices) = ports.notices {
        let notice = notifications::notice::Notice {
            // A refusal after a receipt is a notice of its own.
            id: match refund.status {
                RefundStatus::Failed if refund.processor_refund_id.is_some() => {
                    format!("refund:{id}:{payment_id}:{refund_id}:failed")
                }
                _ => format!("refund:{id}:{payment_id}:{refund_id}"),
            },
            account_id: id.clone(),
            raised_at: now,
            kind: notifications::notice::NoticeKind::RefundReceipt {
                payment_id: payment_id.to_string(),
                refund_id: refund_id.to_string(),
                amount_usd: refund.amount_usd,
                card_brand: payment.card_brand.clone(),
                card_last4: payment.card_last4.clone(),
                reason: refund.reason.clone(),
                returned: refund.status != RefundStatus::Failed,
                failure_reason: refund.failure_reason.clone(),
                balance_after_usd: balance,
                refunded_at: now,
            },
        };
        // The refund stands either way; a lost receipt is logged.
        if let Err(error) = notices.publish(&notice).await {
            tracing::warn!(%error, %payment_id, %refund_id, "refund receipt not queued");
        }
    }
}

fn applied_seq(result: Option<&PostingResult>) -> Result<u64, RefundError> {
    match result {
        Some(PostingResult::Applied { seq, .. } | PostingResult::Duplicate { seq }) => Ok(*seq),
        other => Err(RefundError::Internal(format!("refund posting came to {other:?}"))),
    }
}

/// Finish a refund announced by a `RefundPending` event (`payment_id/refund_id`).
pub async fn reconcile_pending_refund(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    pending: &str,
    now: DateTime<Utc>,
) -> Result<Reconciled, RefundError> {
    let Some((payment_id, refund_id)) = parse_pending(pending) else {
        return Err(RefundError::Internal(format!("unreadable pending refund {pending:?}")));
    };
    match settle_refund(ports, id, payment_id, refund_id, now).await {
        Ok(answer) if answer.refund.status == RefundStatus::Requested => {
            Ok(Reconciled::NotYet(now + chrono::Duration::minutes(RECONCILE_RETRY_MINUTES)))
        }
        Ok(_) => Ok(Reconciled::Final),
        // Nothing left to do for a refund that is gone.
        Err(RefundError::NoSuchPayment(_) | RefundError::NoSuchRefund(_)) => Ok(Reconciled::Final),
        Err(error) => Err(error),
    }
}

/// The account and refund id our processor key for a refund names
/// (`refund:<account>:<hash of the payment id>:<refund id>`).
pub fn parse_refund_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("refund:")?;
    let (account, rest) = rest.split_once(':')?;
    let (_, refund_id) = rest.split_once(':')?;
    (!account.is_empty() && !refund_id.is_empty()).then_some((account, refund_id))
}

/// A refund the processor had taken (`sent` or `pending`) failed afterwards, as its event says:
/// the debit is returned to the balance once (the same `rfx:` credit a refusal posts), the
/// refund is `failed` with the reason, and its amount is refundable again. Repeats change
/// nothing; a refund still `requested` is settled as usual (the processor now says it failed).
/// `Ok(None)` when the key is not one of our refunds.
pub async fn refund_failed_later(
    ports: &PaymentPorts<'_>,
    payment_intent_id: &str,
    idempotency_key: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<RefundAnswer>, RefundError> {
    let now = ledger::truncate_to_micros(now);
    let Some((account, refund_id)) = parse_refund_key(idempotency_key) else { return Ok(None) };
    let Ok(id) = AccountId::parse(account) else { return Ok(None) };
    let payment = crate::payment_by_processor_id(ports.store, &id, payment_intent_id)
        .await?
        .ok_or_else(|| RefundError::NoSuchPayment(payment_intent_id.to_string()))?;
    let payment_id = payment.payment_id.clone();
    let Some(line) = payment.refund(refund_id).cloned() else {
        return Err(RefundError::NoSuchRefund(refund_id.to_string()));
    };
    match line.status {
        RefundStatus::Failed if line.reversal_seq.is_some() => {
            return Ok(Some(RefundAnswer {
                created: false,
                payment,
                refund: line,
                balance_usd: None,
            }))
        }
        RefundStatus::Failed => {
            return finish_failed(ports, &id, payment, line, now).await.map(Some)
        }
        RefundStatus::Requested => {
            return settle_refund(ports, &id, &payment_id, refund_id, now).await.map(Some)
        }
        RefundStatus::Sent | RefundStatus::Pending => {}
    }
    // The failure is recorded first; its reversal follows from the record.
    let reason = reason.to_string();
    let (payment, refund) = update_line(ports, &id, &payment_id, refund_id, |l| {
        l.status = RefundStatus::Failed;
        l.failure_reason = Some(reason.clone());
    })
    .await?;
    finish_failed(ports, &id, payment, refund, now).await.map(Some)
}

/// How far back the scheduled reconciliation looks for refunds made at the processor (a refund
/// fails, if it does, within days; a month and a margin).
pub const EXTERNAL_REFUND_LOOKBACK_DAYS: i64 = 35;

/// Who made a refund at the processor outside this system, as its line records it.
pub const AT_THE_PROCESSOR: &str = "card processor";

/// Follow the refunds of one payment made at the processor outside this system (its dashboard):
/// each becomes a refund line of the payment (id: the processor's refund id) and a `card_refund`
/// debit, once; one that fails later is reversed once, as ours are. State, not events: whatever
/// arrives, late, twice or never, the payment ends as the processor has it. Our own refunds
/// (our key in their metadata) are left to the refund flow. How many refunds changed.
///
/// Order, so a crash anywhere is finished by the next run: the line is written first (what is
/// to be debited), then the debit (its source id makes it once), then the line records the
/// debit's entry; a failure is recorded on a line only once its debit is, and its reversal
/// follows from the record (`finish_failed`).
pub async fn sync_external_refunds(
    ports: &PaymentPorts<'_>,
    payment_intent_id: &str,
    now: DateTime<Utc>,
) -> Result<usize, RefundError> {
    let now = ledger::truncate_to_micros(now);
    let missing = || RefundError::NoSuchPayment(payment_intent_id.to_string());
    let account = ports.processor.payment_account(payment_intent_id).await.map_err(processor)?;
    let Some(id) = account.and_then(|a| AccountId::parse(a).ok()) else { return Err(missing()) };
    let Some(payment) = crate::payment_by_processor_id(ports.store, &id, payment_intent_id).await?
    else {
        return Err(missing());
    };
    let payment_id = payment.payment_id.clone();
    let external: Vec<card_processor::ProcessorRefund> = ports
        .processor
        .refunds_of(payment_intent_id)
        .await
        .map_err(processor)?
        .into_iter()
        .filter(|r| r.idempotency_key.as_deref().and_then(parse_refund_key).is_none())
        .collect();
    let mut changed = 0;
    for refund in &external {
        let (refund_id, failed) = match &refund.outcome {
            RefundOutcome::Sent { refund_id } | RefundOutcome::Pending { refund_id } => {
                (refund_id.clone(), None)
            }
            RefundOutcome::Failed { refund_id: Some(refund_id), reason } => {
                (refund_id.clone(), Some(reason.clone()))
            }
            RefundOutcome::Failed { refund_id: None, .. } => continue,
        };
        if check_refund_id(&refund_id).is_err() {
            tracing::warn!(refund = %refund_id, "a processor refund id we cannot keep; skipped");
            continue;
        }
        let Ok(amount) = Amount::whole_cents(Decimal::new(refund.amount_cents as i64, 2)) else {
            continue;
        };
        // 1. The line (a refund that failed before we ever saw it moved no money: no line).
        let line = match load_line(ports, &id, &payment_id, &refund_id).await? {
            Some(line) => line,
            None if failed.is_some() => continue,
            None => {
                let status = match refund.outcome {
                    RefundOutcome::Pending { .. } => RefundStatus::Pending,
                    _ => RefundStatus::Sent,
                };
                changed += 1;
                add_external_line(ports, &id, &payment_id, &refund_id, amount, status, now).await?
            }
        };
        // A refund on its way that has arrived.
        if line.status == RefundStatus::Pending
            && matches!(refund.outcome, RefundOutcome::Sent { .. })
        {
            update_line(ports, &id, &payment_id, &refund_id, |l| l.status = RefundStatus::Sent)
                .await?;
        }
        // 2. Its debit, once, and the entry on the line.
        if line.entry_seq.is_none() {
            let details = json!({
                "payment_id": payment_id,
                "refund_id": refund_id,
                "processor_payment_id": payment_intent_id,
                "card": format!("{} {}", payment.card_brand, payment.card_last4),
                "reason": line.reason,
            });
            let debit = Posting::new(
                source("rf", &payment_id, &refund_id)?,
                EntryKind::Debit,
                BillingItem::CardRefund,
                line.amount_usd,
                PostingRule::Always,
                now,
            )
            .and_then(|p| p.with_details(details))
            .map_err(|e| RefundError::Internal(e.to_string()))?;
            let posted = ports.store.post(&id, vec![debit], now).await?;
            let seq = applied_seq(posted.results.first())?;
            update_line(ports, &id, &payment_id, &refund_id, |l| l.entry_seq = Some(seq)).await?;
        }
        // 3. A failure: recorded, then reversed from the record.
        let Some(reason) = failed else { continue };
        let line = load_line(ports, &id, &payment_id, &refund_id).await?.ok_or_else(missing)?;
        if line.status == RefundStatus::Failed && line.reversal_seq.is_some() {
            continue;
        }
        changed += 1;
        let (payment, line) = update_line(ports, &id, &payment_id, &refund_id, |l| {
            l.status = RefundStatus::Failed;
            l.failure_reason.get_or_insert_with(|| reason.clone());
        })
        .await?;
        finish_failed(ports, &id, payment, line, now).await?;
    }
    if changed > 0 {
        tracing::info!(account = %id, payment = %payment_id, changed, "refunds made at the processor followed");
    }
    Ok(changed)
}

/// Follow every refund the processor made since `since` (the scheduled reconciliation): the
/// payments with refunds made outside this system are synced. How many refunds changed.
pub async fn reconcile_external_refunds(
    ports: &PaymentPorts<'_>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, RefundError> {
    let listed = ports.processor.recent_refunds(since).await.map_err(processor)?;
    let mut intents: Vec<&str> = listed
        .iter()
        .filter(|r| r.idempotency_key.as_deref().and_then(parse_refund_key).is_none())
        .map(|r| r.payment_intent_id.as_str())
        .collect();
    intents.sort_unstable();
    intents.dedup();
    let mut changed = 0;
    for intent in intents {
        match sync_external_refunds(ports, intent, now).await {
            Ok(n) => changed += n,
            // A payment that is not ours, or not recorded yet: the next run sees it again.
            Err(RefundError::NoSuchPayment(_)) => {}
            // One payment's trouble never starves the others: logged, retried next run.
            Err(error) => {
                tracing::warn!(%error, payment_intent = %intent, "refunds not followed; next run")
            }
        }
    }
    Ok(changed)
}

fn processor(error: ProcessorError) -> RefundError {
    RefundError::Internal(format!("card processor: {error}"))
}

async fn load_line(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
) -> Result<Option<RefundLine>, RefundError> {
    let Some((payment, _)) = load_payment_version(ports.store, id, payment_id).await? else {
        return Err(RefundError::NoSuchPayment(payment_id.to_string()));
    };
    Ok(payment.refunds.into_iter().find(|r| r.refund_id == refund_id))
}

/// Write a refund made at the processor onto its payment (version-checked; a line already there
/// is kept as it is).
async fn add_external_line(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    refund_id: &str,
    amount: Amount,
    status: RefundStatus,
    now: DateTime<Utc>,
) -> Result<RefundLine, RefundError> {
    for _ in 0..8 {
        let Some((mut payment, version)) =
            load_payment_version(ports.store, id, payment_id).await?
        else {
            return Err(RefundError::NoSuchPayment(payment_id.to_string()));
        };
        if let Some(line) = payment.refunds.iter().find(|r| r.refund_id == refund_id) {
            return Ok(line.clone());
        }
        let line = RefundLine {
            refund_id: refund_id.to_string(),
            amount_usd: amount,
            reason: "refunded at the card processor".into(),
            status,
            requested_at: now,
            by: Some(AT_THE_PROCESSOR.into()),
            processor_refund_id: Some(refund_id.to_string()),
            entry_seq: None,
            reversal_seq: None,
            failure_reason: None,
        };
        payment.refunds.push(line.clone());
        if save_payment_version(ports.store, id, &payment, version).await? {
            return Ok(line);
        }
    }
    Err(RefundError::Busy)
}
