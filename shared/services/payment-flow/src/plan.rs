//! A plan period charged to the card ("Opt-in direct charge for plan subscription", issue 15):
//! the period's fee is paid by the account's cards and never touches the balance.
//!
//! How it runs: the daily sweep (`jobs::plans::renew`) finds the period due and lists its key
//! (`plan:YYYY-MM-DD`, the fee's source id) as a pending payment on the account, which raises a
//! `PaymentPending` event in the same write; the payments worker (auto-recharge's queue) works
//! it here. An attempt tries each card in charge order (the primary, then the backups; expired
//! cards are skipped), each as its own Pay Now claim (`plan:YYYY-MM-DD/<attempt>/<card>`,
//! off session) with the plan period fixed in the claim. A success posts the payment's credit
//! and the period's `plan_fee` debit together (one store call: the balance does not move, the
//! statement and the tax job see the fee as always) and moves the plan to its next period.
//!
//! Failure model:
//! - an unknown outcome (timeout, `processing`) leaves that card's claim pending: nothing else
//!   is tried until the claim is settled (by a retry of the same key, which looks the payment up
//!   first), so a period is never charged to two cards;
//! - a crash anywhere is replayed from the claims: each (attempt, card) key answers what it
//!   answered before, and the fee's source id posts once;
//! - an attempt in which every card declined (or there is none) notifies the billing contacts
//!   once per attempt and waits (1 h, then 6 h); after [`MAX_DIRECT_ATTEMPTS`], or once the
//!   next period has started (slow bank debits that all come back), the fee is debited from
//!   the balance instead (the same source id), so the period is paid once either
//!   way and a dead card never means unpaid service. A declined intent is cancelled before it is
//!   recorded, so no later capture can pay a period the balance paid.
//! - redelivered or reordered events run the same steps; a period already paid (the plan moved
//!   on, or direct charge was turned off and the sweep debited the balance) ends the event.

use chrono::{DateTime, NaiveDate, Utc};
use documents::plan::{direct_backoff_after, DirectAttempts, Plan, PlanTerms, MAX_DIRECT_ATTEMPTS};
use ledger::{AccountId, BillingItem, Posting, SourceId};
use notifications::notice::{CardFailure, Notice, NoticeKind};
use serde_json::json;

use crate::{
    claim, clear_pending, mark_pending, settle_claim, Claim, ClaimedCharge, IdempotencyRecord,
    PayNowAnswer, PayNowError, PaymentPorts, PlanFeeCharge, Reconciled, RECONCILE_RETRY_MINUTES,
    STALE_IN_PROGRESS_SECONDS,
};
use ledger::docs::DocKind;

/// The claim key of one card in one attempt at a period.
pub fn attempt_key(period: NaiveDate, attempt: u32, card_id: &str) -> String {
    format!("{}/{attempt}/{card_id}", documents::plan::fee_source_id(period))
}

/// Work the direct charge of the period starting on `period`: `Final` when it is paid (by a
/// card or, out of attempts, by the balance) or no longer this flow's to pay.
pub async fn charge_period(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    period: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Reconciled, PayNowError> {
    let key = documents::plan::fee_source_id(period);
    let (profile, _) = documents::profile::load(ports.store, id).await?;
    // Every claim this period has made, whatever the cards are now: one still unsettled is
    // settled first (a card deleted since may have been charged), and a paid one ends it.
    let claims = period_claims(ports, id, period).await?;
    for (card_key, record) in &claims {
        let (card_key, record) = (card_key.as_str(), record.clone());
        let charged = record.plan_fee.as_ref().and_then(|fee| fee.terms(record.amount_usd));
        let answer = match record.done_answer() {
            Some(answer) if record.state == "done" => answer,
            _ => {
                let Some(charge) = record.charge.clone() else { continue };
                let fixed = (charge, record.plan_fee.clone());
                match charge_card(ports, id, card_key, record.amount_usd, fixed, now).await? {
                    Ok(answer) => answer,
                    Err(wait) => return Ok(wait),
                }
            }
        };
        let bank = record.charge.as_ref().is_some_and(|c| c.bank_account);
        let decided = paid_or_waiting(ports, id, period, charged, &answer, bank, now).await?;
        if let Some(done) = decided {
            return Ok(done);
        }
    }
    let Some(plan) = profile.plan.clone().filter(|p| p.next_renewal == period) else {
        // Paid already (the plan moved on), or the plan ended: nothing to charge.
        clear_pending(ports.store, id, &key).await?;
        return Ok(Reconciled::Final);
    };
    if !plan.direct_charge || plan.cancel_at_renewal {
        // Direct charge was turned off (or the plan ends here): the sweep pays or ends it.
        clear_pending(ports.store, id, &key).await?;
        return Ok(Reconciled::Final);
    }
    let waiting = plan.direct_attempts.as_ref().filter(|a| a.period == period);
    if let Some(wait) = waiting.filter(|a| a.next_attempt_at > now) {
        return Ok(Reconciled::NotYet(wait.next_attempt_at));
    }
    let attempt = waiting.map_or(0, |a| a.failed) + 1;
    // The period's terms are the ones its first claim fixed (a change of plan made while it is
    // retried waits for the next renewal); the renewing terms for a period not tried yet.
    let first = claims.iter().find_map(|(_, r)| r.plan_fee.as_ref()?.terms(r.amount_usd));
    let terms = first.unwrap_or_else(|| plan.renewing_terms().clone());
    let fee = PlanFeeCharge {
        plan: terms.name.clone(),
        period: terms.period.as_str().to_string(),
        from: period,
        to: {
            let end = plan.period_end(period, terms.period);
            end.pred_opt().unwrap_or(end)
        },
    };
    // Never a whole period behind: once the next period has started, this one (every claim of
    // it settled above, none paid) is taken from the balance, as after the last attempt.
    // Slow methods (bank debits of three days each, all returned) could otherwise push every
    // later period further back for ever.
    let behind = plan.period_end(period, terms.period) <= now.date_naive();
    let failures = if behind {
        Vec::new()
    } else {
        let key_of = |card: &str| attempt_key(period, attempt, card);
        let fixed = Some(fee.clone());
        match charge_in_order(ports, id, key_of, terms.price_usd, fixed, now).await? {
            InOrder::Answered { answer, bank, .. } => {
                let charged = Some(terms.clone());
                return match paid_or_waiting(ports, id, period, charged, &answer, bank, now).await?
                {
                    Some(done) => Ok(done),
                    None => Err(PayNowError::Internal("a decline stopped the charging".into())),
                };
            }
            InOrder::Wait(wait) => return Ok(wait),
            InOrder::AllDeclined(failures) => failures,
        }
    };
    // Every card declined (or there was none): say so once per attempt, then wait or, out of
    // attempts, take the fee from the balance.
    let out_of_attempts = attempt >= MAX_DIRECT_ATTEMPTS || behind;
    let next_attempt_at = (!out_of_attempts).then(|| now + direct_backoff_after(attempt));
    if let Some(notices) = ports.notices {
        let notice = Notice {
            id: format!("plan_charge_failed:{id}:{period}:{attempt}"),
            account_id: id.clone(),
            raised_at: now,
            kind: NoticeKind::PlanChargeFailed {
                plan: terms.name.clone(),
                period_from: period,
                amount_usd: terms.price_usd,
                attempt,
                failures: failures.clone(),
                next_attempt_at,
            },
        };
        notices.publish(&notice).await.map_err(PayNowError::internal)?;
    }
    let Some(next) = next_attempt_at else {
        let source = SourceId::parse(key.clone()).map_err(PayNowError::internal)?;
        let at = period.and_time(chrono::NaiveTime::MIN).and_utc();
        let posting = Posting::usage(source, BillingItem::PlanFee, terms.price_usd, at)
            .and_then(|p| {
                p.with_details(json!({
                    "plan": fee.plan,
                    "period": fee.period,
                    "from": fee.from,
                    "to": fee.to,
                    "paid_by": "balance",
                    "reason": if behind {
                        "the next period started before a card paid this one".to_string()
                    } else {
                        format!("every card declined {attempt} times")
                    },
                }))
            })
            .map_err(PayNowError::internal)?;
        ports.store.post(id, vec![posting], now).await?;
        return finish_period(ports, id, period, Some(terms), now).await;
    };
    let last_failure = failure_summary(&failures);
    update_plan(ports, id, move |plan| {
        if plan.next_renewal == period
            && plan
                .direct_attempts
                .as_ref()
                .is_none_or(|a| a.period != period || a.failed < attempt)
        {
            plan.direct_attempts = Some(DirectAttempts {
                period,
                failed: attempt,
                next_attempt_at: next,
                last_failure: last_failure.clone(),
            });
        }
    })
    .await?;
    Ok(Reconciled::NotYet(next))
}

/// What charging the payer's methods in charge order came to.
pub(crate) enum InOrder {
    /// A method's answer that is not a decline (credited, or an unknown outcome): the charging
    /// stopped there.
    Answered { card_key: String, answer: Box<PayNowAnswer>, bank: bool },
    /// Someone else is charging one of them right now: ask again then.
    Wait(Reconciled),
    /// Every method declined (or there was none to charge).
    AllDeclined(Vec<CardFailure>),
}

/// Charge `amount` to the payer's methods (the account's own, or its agency's for a client
/// account) in charge order, expired cards skipped, each under its own claim `key_of(card)`
/// with `plan_fee` fixed in it, until one answers other than with a decline.
pub(crate) async fn charge_in_order(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key_of: impl Fn(&str) -> String,
    amount: ledger::Amount,
    plan_fee: Option<PlanFeeCharge>,
    now: DateTime<Utc>,
) -> Result<InOrder, PayNowError> {
    let payer = documents::profile::load_payer(ports.store, id).await?.profile;
    let customer = payer.processor_customer_id.clone().unwrap_or_default();
    let mut failures = Vec::new();
    if customer.is_empty() {
        return Ok(InOrder::AllDeclined(failures));
    }
    for card in payer.charge_order().into_iter().filter(|c| !c.expired(now.date_naive())) {
        let bank = card.kind == documents::profile::MethodKind::UsBankAccount;
        let charge = ClaimedCharge {
            customer: customer.clone(),
            card_id: card.id.clone(),
            card_brand: card.brand.clone(),
            card_last4: card.last4.clone(),
            bank_account: bank,
        };
        let card_key = key_of(&card.id);
        let fixed = (charge, plan_fee.clone());
        let answer = match charge_card(ports, id, &card_key, amount, fixed, now).await? {
            Ok(answer) => answer,
            Err(wait) => return Ok(InOrder::Wait(wait)),
        };
        match answer {
            PayNowAnswer::Declined { message, payment }
            | PayNowAnswer::Rejected { message, payment } => failures.push(CardFailure {
                card_brand: payment.card_brand,
                card_last4: payment.card_last4,
                reason: message,
            }),
            answer => {
                let answer = Box::new(answer);
                return Ok(InOrder::Answered { card_key, answer, bank });
            }
        }
    }
    Ok(InOrder::AllDeclined(failures))
}

/// One line naming every method that declined and why ("no card on file" for none).
pub(crate) fn failure_summary(failures: &[CardFailure]) -> String {
    let reason = failures
        .iter()
        .map(|f| format!("{} {}: {}", f.card_brand, f.card_last4, f.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if reason.is_empty() {
        "no card on file".to_string()
    } else {
        reason
    }
}

/// Claim `card_key` (or find what it came to) and charge it: the answer, or (`Err`) when to
/// ask again because someone else is charging it right now.
pub(crate) async fn charge_card(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    card_key: &str,
    amount: ledger::Amount,
    fixed: (ClaimedCharge, Option<PlanFeeCharge>),
    now: DateTime<Utc>,
) -> Result<Result<PayNowAnswer, Reconciled>, PayNowError> {
    Ok(match claim(ports.store, id, card_key, amount, fixed, now).await? {
        Claim::Done(answer) => Ok(*answer),
        Claim::Busy { .. } => {
            Err(Reconciled::NotYet(now + chrono::Duration::seconds(STALE_IN_PROGRESS_SECONDS)))
        }
        Claim::Mine { record, version, replay } => {
            Ok(settle_claim(ports, id, card_key, *record, version, replay, now).await?)
        }
    })
}

/// What a card's answer means for the period: paid (finished), or unknown (ask again later);
/// `None` for a decline (the next card).
async fn paid_or_waiting(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    period: NaiveDate,
    charged: Option<PlanTerms>,
    answer: &PayNowAnswer,
    bank: bool,
    now: DateTime<Utc>,
) -> Result<Option<Reconciled>, PayNowError> {
    match answer {
        PayNowAnswer::Credited { .. } => {
            Ok(Some(finish_period(ports, id, period, charged, now).await?))
        }
        // An ACH debit takes days: asked again every few hours.
        PayNowAnswer::Pending { .. } if bank => Ok(Some(Reconciled::NotYet(
            now + chrono::Duration::hours(crate::BANK_RECONCILE_RETRY_HOURS),
        ))),
        PayNowAnswer::Pending { .. } => {
            Ok(Some(Reconciled::NotYet(now + chrono::Duration::minutes(RECONCILE_RETRY_MINUTES))))
        }
        PayNowAnswer::Declined { .. } | PayNowAnswer::Rejected { .. } => Ok(None),
    }
}

/// The claims made for `period` (every attempt, every card), by key.
async fn period_claims(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    period: NaiveDate,
) -> Result<Vec<(String, IdempotencyRecord)>, PayNowError> {
    claims_with_prefix(ports, id, &format!("{}/", documents::plan::fee_source_id(period))).await
}

/// Every claim whose key starts with `prefix`, by key.
pub(crate) async fn claims_with_prefix(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    prefix: &str,
) -> Result<Vec<(String, IdempotencyRecord)>, PayNowError> {
    let prefix = prefix.to_string();
    let mut after = prefix.clone();
    let mut claims = Vec::new();
    loop {
        let page = ports
            .store
            .list_docs(id, DocKind::Idempotency, Some(&after), ledger::docs::MAX_DOCS_PER_LIST)
            .await?;
        let full = page.len() == ledger::docs::MAX_DOCS_PER_LIST as usize;
        for doc in page {
            if !doc.id.starts_with(&prefix) {
                return Ok(claims);
            }
            let record: IdempotencyRecord =
                serde_json::from_str(&doc.body).map_err(PayNowError::internal)?;
            after = doc.id.clone();
            claims.push((doc.id, record));
        }
        if !full {
            return Ok(claims);
        }
    }
}

/// The period is paid on `charged`: the plan moves to its next period (only from this one), a
/// next period already due (a sweep that did not run) is listed at once, and this one's key is
/// cleared.
async fn finish_period(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    period: NaiveDate,
    charged: Option<PlanTerms>,
    now: DateTime<Utc>,
) -> Result<Reconciled, PayNowError> {
    update_plan(ports, id, move |plan| {
        let terms = charged.clone().unwrap_or_else(|| plan.renewing_terms().clone());
        if let Some(next) = plan.paid(period, &terms) {
            *plan = next;
        }
    })
    .await?;
    let (profile, _) = documents::profile::load(ports.store, id).await?;
    if let Some(plan) = profile.plan.filter(|p| p.direct_charge && !p.cancel_at_renewal) {
        if plan.next_renewal > period && plan.next_renewal <= now.date_naive() {
            mark_pending(ports.store, id, &documents::plan::fee_source_id(plan.next_renewal))
                .await?;
        }
    }
    clear_pending(ports.store, id, &documents::plan::fee_source_id(period)).await?;
    Ok(Reconciled::Final)
}

async fn update_plan(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    change: impl Fn(&mut Plan) + Send + Sync,
) -> Result<(), PayNowError> {
    documents::profile::update(ports.store, id, |p| {
        if let Some(plan) = p.plan.as_mut() {
            change(plan);
        }
        Ok(())
    })
    .await?;
    Ok(())
}
