//! Plan renewals (issue 15): each due period of an account's plan is charged once, in advance,
//! as a `plan_fee` debit from the balance (a debit that always posts: at the floor the account
//! suspends like at any other).
//!
//! Exactly once by construction: the fee's source id names the period's first day
//! (`plan:YYYY-MM-DD`, per account), and the plan moves to its next renewal only after the fee
//! posted, by a version-checked write that moves it only from the period it charged. A crash
//! between the two, an overlapping run or a redelivered job re-posts the same source id
//! (nothing changes) and moves the plan on. Missed periods (the sweep did not run) are each
//! charged, oldest first. A change of terms takes effect at the renewal; a cancellation ends the
//! plan there, charging nothing more.
//!
//! A plan with direct charge is not debited here: its due period is handed to the payments
//! worker (`payment_flow::plan`), which charges the cards and moves the plan on.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use documents::plan::fee_source_id;
use ledger::docs::DocStore;
use ledger::{AccountId, BillingItem, LedgerStore, Posting, PostingResult, SourceId};
use serde_json::json;

use crate::tax::JobError;

/// Periods one run charges at most (a sweep that stopped for years catches up over runs).
pub const MAX_PERIODS_PER_RUN: usize = 24;

/// Charge every period of `id`'s plan that has started by `today`: how many were charged now
/// (not counting ones found already charged).
pub async fn renew(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    today: NaiveDate,
) -> Result<usize, JobError> {
    renew_at(ledger, docs, id, today, Utc::now()).await
}

/// [`renew`], posting the fees at `now` (the sweep's own clock: a run's fees are posted when it
/// runs, never into a month already closed, and so never onto an issued invoice's month).
pub async fn renew_at(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<usize, JobError> {
    let mut charged = 0;
    for _ in 0..MAX_PERIODS_PER_RUN {
        let profile = crate::tax::load_profile(docs, id).await?;
        let Some(plan) = profile.plan.clone().filter(|p| p.next_renewal <= today) else {
            break;
        };
        let start = plan.next_renewal;
        if plan.cancel_at_renewal {
            update_plan(docs, id, |p| {
                if p.plan.as_ref().is_some_and(|p| p.next_renewal == start) {
                    p.plan = None;
                }
                Ok(())
            })
            .await?;
            break;
        }
        if plan.direct_charge {
            // Charged to the card by the payments worker: listed as a pending payment (which
            // raises its event in the same write), once; it moves the plan on when paid.
            // Listed again (a fresh event) from the day after it fell due: a period whose
            // event was lost is worked again, once a day, not at every run of the sweep.
            request_direct_charge(ledger, id, &fee_source_id(start), start < today).await?;
            break;
        }
        let terms = plan.renewing_terms().clone();
        let end = plan.period_end(start, terms.period);
        let at: DateTime<Utc> = start.and_time(NaiveTime::MIN).and_utc();
        let source = SourceId::parse(fee_source_id(start))
            .map_err(|e| JobError::InvalidPosting(e.to_string()))?;
        let posting = Posting::usage(source, BillingItem::PlanFee, terms.price_usd, at)
            .and_then(|p| {
                p.with_details(json!({
                    "plan": terms.name,
                    "period": terms.period.as_str(),
                    "from": start,
                    "to": end.pred_opt().unwrap_or(end),
                }))
            })
            .map_err(|e| JobError::InvalidPosting(e.to_string()))?;
        let posted = ledger.post(id, vec![posting], now).await?;
        if matches!(posted.results.first(), Some(PostingResult::Applied { .. })) {
            charged += 1;
        }
        update_plan(docs, id, |p| {
            if let Some(next) = p.plan.as_ref().and_then(|plan| plan.paid(start, &terms)) {
                p.plan = Some(next);
            }
            Ok(())
        })
        .await?;
    }
    Ok(charged)
}

/// List a direct-charge period's key as a pending payment, which raises its event. A key
/// listed already is, when `raise_again`, taken off and listed again, raising the event anew:
/// a period whose event was lost (or dead-lettered) is worked again, never stranded.
pub(crate) async fn request_direct_charge(
    ledger: &dyn LedgerStore,
    id: &AccountId,
    key: &str,
    raise_again: bool,
) -> Result<(), JobError> {
    let listed = |a: &ledger::Account| a.pending_payments.iter().any(|k| k == key);
    if ledger.account(id).await?.is_some_and(|a| listed(&a)) {
        if !raise_again {
            return Ok(());
        }
        let key = key.to_string();
        ledger
            .modify_account(
                id,
                std::sync::Arc::new(move |a| {
                    a.pending_payments.retain(|k| *k != key);
                    Ok(())
                }),
                Utc::now(),
            )
            .await?;
    }
    let key = key.to_string();
    ledger
        .modify_account(
            id,
            std::sync::Arc::new(move |a| {
                if !a.pending_payments.contains(&key) {
                    a.pending_payments.push(key.clone());
                }
                Ok(())
            }),
            Utc::now(),
        )
        .await?;
    Ok(())
}

/// Change the profile's plan, mapping a document error as the jobs do.
async fn update_plan(
    docs: &dyn DocStore,
    id: &AccountId,
    change: impl FnMut(&mut documents::profile::Profile) -> Result<(), documents::DocumentError>,
) -> Result<(), JobError> {
    documents::profile::update(docs, id, change)
        .await
        .map(|_| ())
        .map_err(|source| JobError::UnreadableProfile { account_id: id.clone(), source })
}
