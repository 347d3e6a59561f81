//! Usage events rated into postings inside the store's atomic write, so included plan minutes
//! are used exactly once per event whatever the concurrency or redelivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ledger::{
    Account, Amount, AppliedEntry, BillingItem, EntryKind, LedgerError, PlanUsage, Posting,
    PostingRule, PostingSource, SourceId,
};
use rating::{rate, ChargeRule, RateCard, Rated, RatingError};
use serde_json::json;

use crate::events::{UsageEvent, UsageKind};

/// The suffixes an event's charges can carry: only these are looked up for duplicates (each is
/// a strongly consistent read on DynamoDB, two for an event that may have legacy ids). A superset of what rating produces; the store
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

/// Usage source ids are `use:<event id>` and `use:<event id>#<charge>`: the namespace keeps a
/// telephony event id such as `rch:acme:5` from ever meeting a recharge's (`rch:`), a payment's
/// (`pay:`), an adjustment's (`adj:`) or a month's tax (`tax:`) source id on the same account.
pub const SOURCE_ID_PREFIX: &str = "use:";

/// Events that occurred before this instant (UTC) may have been posted under their bare event
/// id, before usage ids had a namespace: their bare ids are looked up as well, so a redelivery
/// across the upgrade is still a duplicate (`docs/decisions.md`, decision 31). Deploy before
/// it; once it is [`crate::events::MAX_EVENT_AGE_DAYS`] in the past, no such event is accepted
/// any more and the legacy lookup can go.
pub const LEGACY_SOURCE_IDS_BEFORE: &str = "2027-01-01T00:00:00Z";

fn legacy_ids_before() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(LEGACY_SOURCE_IDS_BEFORE)
        .expect("LEGACY_SOURCE_IDS_BEFORE is RFC 3339")
        .to_utc()
}

/// The source id of one of the event's charges (`suffix` empty for the main charge).
pub fn charge_source_id(event: &UsageEvent, suffix: &str) -> SourceId {
    // Event ids are at most 96 characters, so prefix and the longest suffix still fit in 128.
    let id = if suffix.is_empty() {
        format!("{SOURCE_ID_PREFIX}{}", event.event_id)
    } else {
        format!("{SOURCE_ID_PREFIX}{}#{suffix}", event.event_id)
    };
    SourceId::parse(id).expect("a prefixed, suffixed event id fits")
}

/// The id a charge had before usage ids were prefixed.
fn legacy_charge_source_id(event: &UsageEvent, suffix: &str) -> SourceId {
    if suffix.is_empty() {
        return event.event_id.clone();
    }
    SourceId::parse(format!("{}#{suffix}", event.event_id)).expect("suffixed event id fits")
}

/// Namespaces of the ledger's other source ids. An event id that starts with one of them is
/// never looked up bare: that lookup would find the payment, adjustment, recharge or tax entry
/// and take the event for applied (the collision the prefix exists to end).
pub const OTHER_NAMESPACES: [&str; 5] = ["pay:", "adj:", "rch:", "tax:", SOURCE_ID_PREFIX];

fn may_have_legacy_ids(event: &UsageEvent) -> bool {
    let id = event.event_id.as_str();
    event.occurred_at < legacy_ids_before()
        && !OTHER_NAMESPACES.iter().any(|namespace| id.starts_with(namespace))
}

/// Checks an event rates at all (limits, repeated features) before it joins a batch, so a bad
/// event fails alone instead of failing its account's batch.
pub fn check_rates(card: &RateCard, event: &UsageEvent) -> Result<(), RatingError> {
    rate(card, &event.usage(), 0).map(|_| ())
}

/// A batch of one account's events, rated with the card the account names as the store reads
/// it (inside the atomic write), so the caller need not read the account first. Events the card
/// cannot rate are left out and named ([`AccountRatedEvents::unrateable`]); an unknown card
/// leaves them all out.
pub struct AccountRatedEvents {
    pub cards: rating::RateCards,
    pub events: Vec<UsageEvent>,
    /// Filled by each `postings` call (the store may call it again on a retry): the index of
    /// every event left out, and why.
    unrateable: std::sync::Mutex<Vec<(usize, String)>>,
}

impl AccountRatedEvents {
    pub fn new(cards: rating::RateCards, events: Vec<UsageEvent>) -> Self {
        AccountRatedEvents { cards, events, unrateable: std::sync::Mutex::new(Vec::new()) }
    }

    /// The events the last `postings` call left out: their index in `events` and the reason.
    pub fn unrateable(&self) -> Vec<(usize, String)> {
        self.unrateable.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl PostingSource for AccountRatedEvents {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        RatedEvents::candidate_ids(&self.events)
    }

    fn postings(
        &self,
        account: &Account,
        already_applied: &HashMap<SourceId, AppliedEntry>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
        let mut left_out = self.unrateable.lock().unwrap_or_else(|p| p.into_inner());
        left_out.clear();
        let Some(card) = self.cards.card(account.rate_card.as_deref()) else {
            let reason =
                format!("account {} has unknown rate card {:?}", account.id, account.rate_card);
            left_out.extend((0..self.events.len()).map(|i| (i, reason.clone())));
            return Ok((Vec::new(), account.plan_usage.clone()));
        };
        let mut good = Vec::with_capacity(self.events.len());
        for (index, event) in self.events.iter().enumerate() {
            match check_rates(&card, event) {
                Ok(()) => good.push(event.clone()),
                Err(error) => left_out.push((index, error.to_string())),
            }
        }
        drop(left_out);
        RatedEvents { card, events: good }.postings(account, already_applied)
    }
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

impl RatedEvents {
    /// Every source id `events` may post under.
    fn candidate_ids(events: &[UsageEvent]) -> Vec<SourceId> {
        let mut ids = Vec::with_capacity(events.len() * 3);
        for event in events {
            for suffix in suffixes_for(event) {
                ids.push(charge_source_id(event, suffix));
                if may_have_legacy_ids(event) {
                    ids.push(legacy_charge_source_id(event, suffix));
                }
            }
        }
        ids
    }
}

impl PostingSource for RatedEvents {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        Self::candidate_ids(&self.events)
    }

    fn postings(
        &self,
        account: &Account,
        already_applied: &HashMap<SourceId, AppliedEntry>,
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
            // An event posted before usage ids had a namespace is proposed again under its old
            // ids, so the ledger sees the duplicate.
            let legacy = may_have_legacy_ids(event)
                && suffixes_for(event).iter().any(|suffix| {
                    already_applied.contains_key(&legacy_charge_source_id(event, suffix))
                });
            let id_of = |suffix: &str| {
                if legacy {
                    legacy_charge_source_id(event, suffix)
                } else {
                    charge_source_id(event, suffix)
                }
            };
            let applied = legacy
                || suffixes_for(event)
                    .iter()
                    .any(|suffix| already_applied.contains_key(&charge_source_id(event, suffix)));
            let first_in_batch = rated_events.insert(event.event_id.clone());
            let late = plan.month.is_some_and(|plan_month| month < plan_month);
            let left = if applied || !first_in_batch || late {
                0
            } else {
                included_per_month.saturating_sub(plan.used_in(month))
            };
            let left = u32::try_from(left).unwrap_or(u32::MAX);
            // Checked before the batch was formed (`check_rates`); a failure here is a bug.
            let unrateable = |e: RatingError| LedgerError::Unrateable(e.to_string());
            let rated = rate(card, &event.usage(), left).map_err(unrateable)?;
            let mut details = Self::details(event, &rated);
            if let Some(id) = &event.authorization_id {
                details["authorization_id"] = json!(id);
                // Longer than authorized: the platform could not cut it. Debited in full.
                let charged: rust_decimal::Decimal =
                    rated.charges.iter().map(|c| c.amount.value()).sum();
                if let Some(hold) = account.hold(id) {
                    if charged > hold.amount_usd {
                        details["hold_overrun_usd"] = json!(charged - hold.amount_usd);
                    }
                }
            }
            let first_posting = postings.len();
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
                        id_of(""),
                        BillingItem::PhoneCall,
                        gross.amount,
                        ChargeRule::Completed,
                        &details,
                    )?);
                    if let Ok(credit) = Amount::new(gross.amount.value() - charged_usd) {
                        postings.push(
                            Posting::credit(
                                id_of("included"),
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
                    id_of(charge.suffix),
                    charge.item,
                    charge.amount,
                    charge.rule,
                    &details,
                )?);
            }
            for posting in &mut postings[first_posting..] {
                posting.settles = event.authorization_id.clone();
            }
            if included_used > 0 {
                if plan.month != Some(month) {
                    plan = PlanUsage { month: Some(month), included_seconds_used: 0 };
                }
                plan.included_seconds_used += u64::from(included_used);
            }
        }
        Ok((postings, plan))
    }
}

fn debit(
    event: &UsageEvent,
    source_id: SourceId,
    item: BillingItem,
    amount: Amount,
    rule: ChargeRule,
    details: &serde_json::Value,
) -> Result<Posting, LedgerError> {
    let rule = match rule {
        ChargeRule::Completed => PostingRule::Always,
        ChargeRule::InAdvance => PostingRule::RefuseBelowFloor,
    };
    Posting::new(source_id, EntryKind::Debit, item, amount, rule, event.occurred_at)?
        .with_details(details.clone())
}
