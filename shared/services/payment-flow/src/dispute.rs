//! Disputes (chargebacks): the processor takes a disputed payment's amount and its fee back from
//! us, and gives them back if we win. The ledger follows each dispute exactly once.
//!
//! Failure model. What arrives is the dispute's *state* (a processor event's object, or the
//! scheduled reconciliation's listing), not a change: states of one dispute may arrive
//! duplicated, out of order, late, or not at all (a lost webhook). Applying a state posts every
//! money step that state shows and that has not been posted, each under its own source id —
//! `dsp:<dispute>:funds` and `dsp:<dispute>:fee` (debits, once the funds are withdrawn),
//! `dsp:<dispute>:funds-back` and `dsp:<dispute>:fee-back` (credits, once reinstated) — in one
//! ledger write, so a crash leaves all of a step or none, and a replay posts nothing twice. An
//! old state arriving after a newer one posts nothing new (its steps are already there), and the
//! dispute's record on the payment only ever moves forward (open → won / lost). A missed state
//! is caught up by the next one or by the reconciliation, which applies every recent dispute as
//! the processor has it now.

use card_processor::{DisputeState, DisputeStatus};
use chrono::{DateTime, Utc};
use documents::payment::{
    load_payment_version, save_payment_version, DisputeLine, DisputeOutcome, PaymentRecord,
};
use documents::DocumentError;
use ledger::{AccountId, Amount, BillingItem, EntryKind, Posting, PostingResult, PostingRule};
use ledger::{SourceId, StoreError};
use rust_decimal::Decimal;
use serde_json::json;

use crate::PaymentPorts;

#[derive(Debug, thiserror::Error)]
pub enum DisputeError {
    /// The processor does not say which of our accounts made the payment: not ours to book.
    #[error("payment {0} is not one of ours")]
    UnknownPayment(String),
    /// The processor names the account, and the account has no record of the payment.
    #[error("account {account} has no record of payment {payment}")]
    NoPaymentRecord { account: String, payment: String },
    #[error("the card processor could not be asked: {0}")]
    Processor(#[from] card_processor::ProcessorError),
    #[error("the payment record is being written by someone else; retry")]
    Busy,
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// What applying a dispute state did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeApplied {
    pub account_id: AccountId,
    pub payment_id: String,
    /// Entries this call posted (none for a repeat or a stale state).
    pub posted: usize,
    pub line: DisputeLine,
}

fn usd(cents: u64) -> Decimal {
    Decimal::new(cents as i64, 2)
}

fn source(dispute_id: &str, part: &str) -> Result<SourceId, DisputeError> {
    SourceId::parse(format!("dsp:{dispute_id}:{part}"))
        .map_err(|e| DisputeError::Internal(format!("dispute {dispute_id}: {e}")))
}

/// Apply one dispute state: find the account and payment it belongs to, post the money steps
/// it shows that are not posted yet, and move the payment's dispute record forward.
pub async fn apply_dispute(
    ports: &PaymentPorts<'_>,
    state: &DisputeState,
    now: DateTime<Utc>,
) -> Result<DisputeApplied, DisputeError> {
    let now = ledger::truncate_to_micros(now);
    let account = ports
        .processor
        .payment_account(&state.payment_intent_id)
        .await?
        .ok_or_else(|| DisputeError::UnknownPayment(state.payment_intent_id.clone()))?;
    let id = AccountId::parse(account)
        .map_err(|_| DisputeError::UnknownPayment(state.payment_intent_id.clone()))?;
    let Some(payment) =
        crate::payment_by_processor_id(ports.store, &id, &state.payment_intent_id).await?
    else {
        return Err(DisputeError::NoPaymentRecord {
            account: id.to_string(),
            payment: state.payment_intent_id.clone(),
        });
    };
    let amount = Amount::whole_cents(usd(state.amount_cents))
        .map_err(|e| DisputeError::Internal(format!("dispute {}: {e}", state.dispute_id)))?;
    let fee = Amount::whole_cents(usd(state.fee_cents)).ok();
    let details = |part: &str| {
        json!({
            "dispute_id": state.dispute_id,
            "payment_id": payment.payment_id,
            "processor_payment_id": state.payment_intent_id,
            "part": part,
        })
    };
    let mut postings = Vec::new();
    let withdrawn = state.funds_withdrawn || state.funds_reinstated;
    let mut step =
        |part: &str, kind: EntryKind, value: Option<Amount>| -> Result<(), DisputeError> {
            let Some(value) = value else { return Ok(()) };
            let posting = Posting::new(
                source(&state.dispute_id, part)?,
                kind,
                BillingItem::Dispute,
                value,
                PostingRule::Always,
                now,
            )
            .and_then(|p| p.with_details(details(part.trim_end_matches("-back"))))
            .map_err(|e| DisputeError::Internal(e.to_string()))?;
            postings.push(posting);
            Ok(())
        };
    if withdrawn {
        step("funds", EntryKind::Debit, Some(amount))?;
        step("fee", EntryKind::Debit, fee)?;
    }
    if state.funds_reinstated {
        step("funds-back", EntryKind::Credit, Some(amount))?;
        step("fee-back", EntryKind::Credit, fee)?;
    }
    let mut withdrawn_seqs = Vec::new();
    let mut reinstated_seqs = Vec::new();
    let mut posted = 0;
    if !postings.is_empty() {
        let outcome = ports.store.post(&id, postings.clone(), now).await?;
        for (posting, result) in postings.iter().zip(&outcome.results) {
            let seq = match result {
                PostingResult::Applied { seq, .. } => {
                    posted += 1;
                    *seq
                }
                PostingResult::Duplicate { seq } => *seq,
                other => {
                    return Err(DisputeError::Internal(format!(
                        "dispute {} posting came to {other:?}",
                        state.dispute_id
                    )))
                }
            };
            match posting.kind {
                EntryKind::Debit => withdrawn_seqs.push(seq),
                EntryKind::Credit => reinstated_seqs.push(seq),
            }
        }
    }
    let status = match state.status {
        DisputeStatus::Open => DisputeOutcome::Open,
        DisputeStatus::Won => DisputeOutcome::Won,
        DisputeStatus::Lost => DisputeOutcome::Lost,
    };
    let line = record_line(
        ports,
        &id,
        &payment.payment_id,
        state,
        amount,
        status,
        withdrawn_seqs,
        reinstated_seqs,
        now,
    )
    .await?;
    // The account knows which of its disputes are open (the operator may stop outbound service
    // while one is). Taken from the record's line, which only moves forward: a stale "open"
    // arriving after "won" leaves the dispute closed here too.
    sync_open_dispute(ports, &id, &state.dispute_id, line.status == DisputeOutcome::Open, now)
        .await?;
    if posted > 0 || line.updated_at == now {
        notify(ports, &id, &payment, state, &line, now).await;
    }
    Ok(DisputeApplied { account_id: id, payment_id: payment.payment_id, posted, line })
}

/// List or unlist `dispute` among the account's open disputes (no write when it already is).
async fn sync_open_dispute(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    dispute: &str,
    open: bool,
    now: DateTime<Utc>,
) -> Result<(), DisputeError> {
    let account = ports.store.account(id).await?;
    let listed = account.is_some_and(|a| a.open_disputes.iter().any(|d| d == dispute));
    if listed == open {
        return Ok(());
    }
    let dispute = dispute.to_string();
    let change = std::sync::Arc::new(move |a: &mut ledger::Account| {
        let listed = a.open_disputes.contains(&dispute);
        match (listed, open) {
            (false, true) => a.open_disputes.push(dispute.clone()),
            (true, false) => a.open_disputes.retain(|d| *d != dispute),
            _ => return Err(ledger::LedgerError::Unchanged),
        }
        Ok(())
    });
    match ports.store.modify_account(id, change, now).await {
        Ok(_) | Err(ledger::StoreError::Rejected(ledger::LedgerError::Unchanged)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Merge the state into the payment's dispute record, only ever forward.
#[allow(clippy::too_many_arguments)]
async fn record_line(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment_id: &str,
    state: &DisputeState,
    amount: Amount,
    status: DisputeOutcome,
    withdrawn_seqs: Vec<u64>,
    reinstated_seqs: Vec<u64>,
    now: DateTime<Utc>,
) -> Result<DisputeLine, DisputeError> {
    for _ in 0..8 {
        let Some((mut payment, version)) =
            load_payment_version(ports.store, id, payment_id).await?
        else {
            return Err(DisputeError::UnknownPayment(state.payment_intent_id.clone()));
        };
        let index = match payment.disputes.iter().position(|d| d.dispute_id == state.dispute_id) {
            Some(index) => index,
            None => {
                payment.disputes.push(DisputeLine {
                    dispute_id: state.dispute_id.clone(),
                    amount_usd: amount,
                    fee_usd: usd(state.fee_cents),
                    status: DisputeOutcome::Open,
                    withdrawn_seqs: Vec::new(),
                    reinstated_seqs: Vec::new(),
                    opened_at: now,
                    updated_at: now,
                });
                payment.disputes.len() - 1
            }
        };
        let line = &mut payment.disputes[index];
        let before = line.clone();
        if line.status == DisputeOutcome::Open {
            line.status = status;
        }
        if line.withdrawn_seqs.is_empty() {
            line.withdrawn_seqs = withdrawn_seqs.clone();
        }
        if line.reinstated_seqs.is_empty() {
            line.reinstated_seqs = reinstated_seqs.clone();
        }
        if *line == before {
            return Ok(before);
        }
        line.updated_at = now;
        let line = line.clone();
        if save_payment_version(ports.store, id, &payment, version).await? {
            return Ok(line);
        }
    }
    Err(DisputeError::Busy)
}

/// Tell the billing contacts (and count it for the operators' alarm). A lost notice is logged.
async fn notify(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    payment: &PaymentRecord,
    state: &DisputeState,
    line: &DisputeLine,
    now: DateTime<Utc>,
) {
    messaging::metrics::count(messaging::metrics::DISPUTE_STEPS, 1);
    tracing::warn!(
        account = %id,
        dispute = %state.dispute_id,
        status = ?line.status,
        withdrawn = !line.withdrawn_seqs.is_empty(),
        reinstated = !line.reinstated_seqs.is_empty(),
        "dispute moved"
    );
    let Some(notices) = ports.notices else { return };
    let stage = match (line.status, !line.withdrawn_seqs.is_empty()) {
        (DisputeOutcome::Won, _) => "won",
        (DisputeOutcome::Lost, _) => "lost",
        (DisputeOutcome::Open, true) => "funds_withdrawn",
        (DisputeOutcome::Open, false) => "opened",
    };
    let balance = match ports.store.account(id).await {
        Ok(Some(account)) => account.balance_usd,
        _ => return,
    };
    let notice = notifications::notice::Notice {
        id: format!("dispute:{id}:{}:{stage}", state.dispute_id),
        account_id: id.clone(),
        raised_at: now,
        kind: notifications::notice::NoticeKind::Dispute {
            payment_id: payment.payment_id.clone(),
            dispute_id: state.dispute_id.clone(),
            stage: stage.to_string(),
            amount_usd: line.amount_usd,
            fee_usd: line.fee_usd,
            card_brand: payment.card_brand.clone(),
            card_last4: payment.card_last4.clone(),
            balance_after_usd: balance,
        },
    };
    if let Err(error) = notices.publish(&notice).await {
        tracing::warn!(%error, dispute = %state.dispute_id, "dispute notice not queued");
    }
}

/// How far back the scheduled reconciliation looks: card networks allow a cardholder about 120
/// days to dispute a payment, and a dispute can stay open for months after.
pub const DISPUTE_LOOKBACK_DAYS: i64 = 240;

/// The scheduled reconciliation: apply every dispute created since `since` as the processor has
/// it now. Payments that are not ours are skipped. Returns how many disputes were applied.
pub async fn reconcile_disputes(
    ports: &PaymentPorts<'_>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, DisputeError> {
    let mut applied = 0;
    for state in ports.processor.recent_disputes(since).await? {
        match apply_dispute(ports, &state, now).await {
            Ok(_) => applied += 1,
            Err(DisputeError::UnknownPayment(payment)) => {
                tracing::warn!(dispute = %state.dispute_id, %payment, "dispute of a payment that is not ours");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(applied)
}
