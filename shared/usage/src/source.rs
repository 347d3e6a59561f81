//! Usage events rated into postings inside the store's atomic write, so included plan minutes
//! are used exactly once per event whatever the concurrency or redelivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ledger::{
    Account, Amount, BillingItem, EntryKind, LedgerError, PlanUsage, Posting, PostingRule,
    PostingSource, SourceId,
};
use rating::{rate, ChargeRule, RateCard, Rated, RatingError};
use serde_json::json;

use crate::events::{UsageEvent, UsageKind};

/// The suffixes an event's charges can carry: only these are looked up for duplicates (each is
/// a strongly consistent read on DynamoDB). A superset of what rating produces; the store
/// refuses a posting whose id was not declared.
fn suffixes_for(event: &UsageEvent) -> Vec<&'static str> {
    match &event.kind {
        UsageKind::Call(call) => {
            let mut suffixes = vec!["", "ring", "surcharge", "included"];
            suffixes.extend(call.premium.iter().map(|feature| feature.as_str()));
            suffixes
        }
        UsageKind::SmsIn(_) | UsageKind::SmsOut(_) => vec!["", "surcharge"],
        UsageKind::NumberPurchase(_) | UsageKind::NumberRenewal(_) => vec![""],
    }
}

pub fn charge_source_id(event: &UsageEvent, suffix: &str) -> SourceId {
    if suffix.is_empty() {
        return event.event_id.clone();
    }
    // Event ids are at most 96 characters, so the longest suffix still fits in 128.
    SourceId::parse(format!("{}#{suffix}", event.event_id)).expect("suffixed event id fits")
}

/// Checks an event rates at all (limits, repeated features) before it joins a batch, so a bad
/// event fails alone instead of failing its account's batch.
pub fn check_rates(card: &RateCard, event: &UsageEvent) -> Result<(), RatingError> {
    rate(card, &event.usage(), 0).map(|_| ())
}

/// A batch of one account's events and the card to rate them with.
pub struct RatedEvents {
    pub card: Arc<RateCard>,
    pub events: Vec<UsageEvent>,
}

impl RatedEvents {
    fn details(event: &UsageEvent, rated: &Rated) -> serde_json::Value {
        match &event.kind {
            UsageKind::Call(call) => json!({
                "event": "call", "direction": call.direction, "to": call.to,
                "seconds": call.duration_seconds, "billed_seconds": rated.billed_seconds,
                "included_seconds": rated.included_seconds_used,
            }),
            UsageKind::SmsIn(sms) | UsageKind::SmsOut(sms) => json!({
                "event": event.kind.type_name(), "from": sms.from, "to": sms.to,
                "segments": sms.segments,
            }),
            UsageKind::NumberPurchase(n) | UsageKind::NumberRenewal(n) => json!({
                "event": event.kind.type_name(), "number": n.number, "number_type": n.number_type,
            }),
        }
    }
}

impl PostingSource for RatedEvents {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        let mut ids = Vec::with_capacity(self.events.len() * 3);
        for event in &self.events {
            for suffix in suffixes_for(event) {
                ids.push(charge_source_id(event, suffix));
            }
        }
        ids
    }

    fn postings(
        &self,
        account: &Account,
        already_applied: &HashMap<SourceId, u64>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
        let card = &*self.card;
        let included_per_month = u64::from(card.included_minutes_per_month) * 60;
        let mut plan = account.plan_usage.clone();
        let mut postings = Vec::with_capacity(self.events.len() * 2);
        let mut rated_events = HashSet::new();
        for event in &self.events {
            let month = event.month();
            // An event whose charges were applied before already used its plan seconds, and an
            // event repeated within the batch is rated once.
            let applied = suffixes_for(event)
                .iter()
                .any(|suffix| already_applied.contains_key(&charge_source_id(event, suffix)));
            let first_in_batch = rated_events.insert(event.event_id.clone());
            let late = !plan.month.is_empty() && month < plan.month;
            let left = if applied || !first_in_batch || late {
                0
            } else {
                included_per_month.saturating_sub(plan.used_in(&month))
            };
            let left = u32::try_from(left).unwrap_or(u32::MAX);
            // Checked before the batch was formed (`check_rates`); a failure here is a bug.
            let unrateable = |e: RatingError| LedgerError::Unrateable(e.to_string());
            let rated = rate(card, &event.usage(), left).map_err(unrateable)?;
            let details = Self::details(event, &rated);
            let mut included_used = 0;
            if rated.included_seconds_used > 0 {
                // Show the call at its full price and credit the included part, so the call
                // leaves an entry (its duplicate marker) even when the plan covers all of it.
                let full = rate(card, &event.usage(), 0).map_err(unrateable)?;
                let gross = full.charges.iter().find(|c| c.item == BillingItem::PhoneCall);
                let charged = rated.charges.iter().find(|c| c.item == BillingItem::PhoneCall);
                if let Some(gross) = gross {
                    let charged_usd =
                        charged.map_or(rust_decimal::Decimal::ZERO, |c| c.amount.value());
                    postings.push(debit(
                        event,
                        "",
                        BillingItem::PhoneCall,
                        gross.amount,
                        ChargeRule::Completed,
                        &details,
                    )?);
                    if let Ok(credit) = Amount::new(gross.amount.value() - charged_usd) {
                        postings.push(
                            Posting::credit(
                                charge_source_id(event, "included"),
                                BillingItem::IncludedMinutes,
                                credit,
                                event.occurred_at,
                            )?
                            .with_details(details.clone())?,
                        );
                    }
                    included_used = rated.included_seconds_used;
                }
            }
            for charge in &rated.charges {
                if charge.item == BillingItem::PhoneCall && included_used > 0 {
                    continue;
                }
                postings.push(debit(
                    event,
                    charge.suffix,
                    charge.item,
                    charge.amount,
                    charge.rule,
                    &details,
                )?);
            }
            if included_used > 0 {
                if plan.month != month {
                    plan = PlanUsage { month, included_seconds_used: 0 };
                }
                plan.included_seconds_used += u64::from(included_used);
            }
        }
        Ok((postings, plan))
    }
}

fn debit(
    event: &UsageEvent,
    suffix: &str,
    item: BillingItem,
    amount: Amount,
    rule: ChargeRule,
    details: &serde_json::Value,
) -> Result<Posting, LedgerError> {
    let rule = match rule {
        ChargeRule::Completed => PostingRule::Always,
        ChargeRule::InAdvance => PostingRule::RefuseBelowFloor,
    };
    Posting::new(
        charge_source_id(event, suffix),
        EntryKind::Debit,
        item,
        amount,
        rule,
        event.occurred_at,
    )?
    .with_details(details.clone())
}
