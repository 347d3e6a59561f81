//! A postpaid invoice charged to the pre-authorized cards on its issue date (issue 17).
//!
//! How it runs: issuing an invoice of an account whose profile records the customer's
//! pre-authorization lists its key (`inv:YYYY-MM`) as a pending payment on the account, which
//! raises a `PaymentPending` event in the same write; the payments worker works it here. An
//! attempt tries each card in charge order (the primary, then the backups; expired cards are
//! skipped), each as its own Pay Now claim (`inv:YYYY-MM/<attempt>/<card>`, its amount, what
//! is outstanding then, fixed in the claim). A success credits the payment (`funds_added`,
//! source id `pay:<claim key>`) and applies it to the invoice.
//!
//! Failure model:
//! - an unknown outcome (timeout, `processing`) leaves that card's claim pending: nothing else
//!   is tried until it is settled (a retry of the same key looks the payment up first), so an
//!   invoice is never charged to two cards at once;
//! - a crash anywhere is replayed from the claims: each key answers what it answered before;
//!   the credit posts once (its source id) and is applied to the invoice once (by that id);
//! - an attempt in which every card declined (or there is none) notifies the recharge-failure
//!   address and the billing contacts once per attempt and waits (6 h, then a day); after
//!   [`MAX_AUTOPAY_ATTEMPTS`] no card is tried again, and the invoice waits for a payment by
//!   hand;
//! - redelivered or reordered events run the same steps; an invoice already paid (by hand,
//!   meanwhile) or void ends the event, and a claim still unsettled is settled first even then.

use chrono::{DateTime, Utc};
use documents::invoice::{
    autopay_backoff_after, autopay_key, AutopayAttempts, Invoice, MAX_AUTOPAY_ATTEMPTS,
};
use ledger::{AccountId, Amount, Month};
use notifications::notice::{Notice, NoticeKind};
use rust_decimal::Decimal;

use crate::plan::{charge_card, charge_in_order, claims_with_prefix, failure_summary, InOrder};
use crate::{clear_pending, PayNowAnswer, PayNowError, PaymentPorts, Reconciled};

/// The claim key of one card in one attempt at an invoice.
pub fn attempt_key(month: Month, attempt: u32, card_id: &str) -> String {
    format!("{}/{attempt}/{card_id}", autopay_key(month))
}

/// Work the pre-authorized charge of `month`'s invoice: `Final` when it is paid, void, out of
/// attempts or not this flow's to pay.
pub async fn charge_invoice(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    month: Month,
    now: DateTime<Utc>,
) -> Result<Reconciled, PayNowError> {
    let key = autopay_key(month);
    // Every claim made for this invoice: one still unsettled is settled first (a card deleted
    // since may have been charged), and a credited one is applied.
    let claims = claims_with_prefix(ports, id, &format!("{key}/")).await?;
    let claimed: Vec<(String, Amount)> =
        claims.iter().map(|(card_key, record)| (card_key.clone(), record.amount_usd)).collect();
    for (card_key, record) in claims {
        let answer = match record.done_answer() {
            Some(answer) if record.state == "done" => answer,
            _ => {
                let Some(charge) = record.charge.clone() else { continue };
                match charge_card(ports, id, &card_key, record.amount_usd, (charge, None), now)
                    .await?
                {
                    Ok(answer) => answer,
                    Err(wait) => return Ok(wait),
                }
            }
        };
        let bank = record.charge.as_ref().is_some_and(|c| c.bank_account);
        let decided = paid_or_waiting(ports, id, month, &card_key, &answer, bank, now).await?;
        if let Some(decided) = decided {
            return Ok(decided);
        }
    }
    let invoice = match documents::invoice::load(ports.store, id, month).await? {
        Some((invoice, _)) if invoice.number.is_some() => invoice,
        _ => return finish(ports, id, month).await,
    };
    let (profile, _) = documents::profile::load(ports.store, id).await?;
    let owed = invoice.outstanding_usd();
    let failed = invoice.autopay.as_ref().map_or(0, |a| a.failed);
    if owed <= Decimal::ZERO || !profile.pre_authorized_payment || failed >= MAX_AUTOPAY_ATTEMPTS {
        return finish(ports, id, month).await;
    }
    if let Some(next) = invoice.autopay.as_ref().and_then(|a| a.next_attempt_at) {
        if next > now {
            return Ok(Reconciled::NotYet(next));
        }
    }
    let attempt = failed + 1;
    // An attempt's amount is fixed by its first claim: a card tried again in the same attempt
    // (a replay) must present the same claim. A payment by hand meanwhile may leave less owed
    // than that; what the charge brings beyond it stays on the balance as credit.
    let prefix = format!("{key}/{attempt}/");
    let amount = match claimed.iter().find(|(card_key, _)| card_key.starts_with(&prefix)) {
        Some((_, amount)) => *amount,
        None => Amount::new(owed).map_err(PayNowError::internal)?,
    };
    let key_of = |card: &str| attempt_key(month, attempt, card);
    let failures = match charge_in_order(ports, id, key_of, amount, None, now).await? {
        InOrder::Answered { card_key, answer, bank } => {
            return match paid_or_waiting(ports, id, month, &card_key, &answer, bank, now).await? {
                Some(decided) => Ok(decided),
                None => Err(PayNowError::Internal("a decline stopped the charging".into())),
            };
        }
        InOrder::Wait(wait) => return Ok(wait),
        InOrder::AllDeclined(failures) => failures,
    };
    // Every card declined (or there was none): said once per attempt, then a wait or, out of
    // attempts, nothing more (the invoice waits for a payment by hand).
    let next_attempt_at =
        (attempt < MAX_AUTOPAY_ATTEMPTS).then(|| now + autopay_backoff_after(attempt));
    if let Some(notices) = ports.notices {
        let notice = Notice {
            id: format!("invoice_payment_failed:{id}:{month}:{attempt}"),
            account_id: id.clone(),
            raised_at: now,
            kind: NoticeKind::InvoicePaymentFailed {
                number: invoice.number.clone().unwrap_or_default(),
                month,
                amount_usd: amount,
                attempt,
                failures: failures.clone(),
                next_attempt_at,
            },
        };
        notices.publish(&notice).await.map_err(PayNowError::internal)?;
    }
    let last_failure = failure_summary(&failures);
    documents::invoice::update_autopay(ports.store, id, month, |invoice: &mut Invoice| {
        // Only forwards: a replay of an older attempt changes nothing.
        if invoice.autopay.as_ref().is_none_or(|a| a.failed < attempt) {
            invoice.autopay = Some(AutopayAttempts {
                failed: attempt,
                next_attempt_at,
                last_failure: last_failure.clone(),
            });
        }
    })
    .await?;
    match next_attempt_at {
        Some(next) => Ok(Reconciled::NotYet(next)),
        None => finish(ports, id, month).await,
    }
}

/// What a card's answer means for the invoice: paid (applied, finished), or unknown (ask again
/// later); `None` for a decline (the next card).
async fn paid_or_waiting(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    month: Month,
    card_key: &str,
    answer: &PayNowAnswer,
    bank: bool,
    now: DateTime<Utc>,
) -> Result<Option<Reconciled>, PayNowError> {
    match answer {
        PayNowAnswer::Credited { payment } => {
            let source = format!("pay:{card_key}");
            documents::invoice::apply_payment_to(
                ports.store,
                id,
                Some(month),
                &source,
                payment.amount_usd.value(),
                now,
            )
            .await?;
            Ok(Some(finish(ports, id, month).await?))
        }
        // An ACH debit takes days: asked again every few hours.
        PayNowAnswer::Pending { .. } => {
            let wait = if bank {
                chrono::Duration::hours(crate::BANK_RECONCILE_RETRY_HOURS)
            } else {
                chrono::Duration::minutes(crate::RECONCILE_RETRY_MINUTES)
            };
            Ok(Some(Reconciled::NotYet(now + wait)))
        }
        PayNowAnswer::Declined { .. } | PayNowAnswer::Rejected { .. } => Ok(None),
    }
}

async fn finish(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    month: Month,
) -> Result<Reconciled, PayNowError> {
    clear_pending(ports.store, id, &autopay_key(month)).await?;
    Ok(Reconciled::Final)
}
