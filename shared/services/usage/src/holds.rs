//! Holds for authorized calls, messages and number purchases (see `ledger::hold`).
//!
//! Each request is one account change through the store's optimistic concurrency
//! (`modify_account`), so concurrent authorizations on one account are decided one after
//! another against the available balance (balance − active holds − floor) and can never grant,
//! together, more than it. Every request is idempotent by the platform's authorization id:
//!
//! - **place**: a replay finds its hold and answers from it; nothing is written;
//! - **extend** `n`: applies only as the hold's `n`-th extension; a replay answers from the hold;
//! - **release** (the call never connected): settles the hold; a replay changes nothing.
//!
//! The usage event that reports the call carries the authorization id and settles the hold in
//! the posting's own write ([`crate::source`]).
//!
//! Failure model: a timeout with an unknown outcome is retried by the platform with the same id
//! (a replay, or the first write); a crash between deciding and writing wrote nothing (the
//! change is one conditional write); a hold whose report never comes releases itself at
//! `expires_at`; a report after that debits once and settles nothing.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use ledger::{
    Account, AccountId, HeldCall, Hold, HoldPurpose, LedgerError, LedgerStore, StoreError,
};
use rating::{Direction, NumberType, RateCard, RateCards, Usage};
use rust_decimal::Decimal;

use crate::authorize::{self, Action, Decision, Denial};

/// A call is granted this much at a time (or less, when the balance covers less); the platform
/// extends before it runs out.
pub const CALL_SLICE_SECONDS: u32 = 300;
/// A hold outlives what it granted by this much before it releases itself (the report's way
/// through the queue).
pub const GRACE_SECONDS: i64 = 120;
/// How long a message's hold waits for its report.
pub const SMS_HOLD_SECONDS: i64 = 600;
/// How long a number purchase's hold waits for the purchase.
pub const PURCHASE_HOLD_SECONDS: i64 = 3_600;

/// The answer to a hold request.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldAnswer {
    pub decision: Decision,
    /// The hold as it stands after the request (`None` when refused before any was placed).
    pub hold: Option<Hold>,
    /// What the account has left for new authorizations.
    pub available_usd: Decimal,
    /// The request had been applied before: nothing changed now.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("no such account")]
    UnknownAccount,
    #[error("account {0} has an unknown rate card")]
    UnknownRateCard(AccountId),
    #[error("no active hold {0} on this account")]
    NoSuchHold(String),
    #[error("hold {0} is settled or expired: it cannot be extended")]
    NotActive(String),
    #[error("hold {id} expects extension {expected}")]
    OutOfOrder { id: String, expected: u32 },
    #[error("hold {0} was placed for another action")]
    Mismatch(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for HoldError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AccountNotFound(_) => HoldError::UnknownAccount,
            other => HoldError::Store(other),
        }
    }
}

/// What the closure decided, carried out of the store's retry loop.
type Slot = Arc<Mutex<Option<Result<HoldAnswer, HoldError>>>>;

fn answer(
    account: &Account,
    decision: Decision,
    hold: Option<Hold>,
    at: DateTime<Utc>,
) -> HoldAnswer {
    HoldAnswer { decision, hold, available_usd: account.available_usd(at), replayed: false }
}

fn replay(account: &Account, hold: &Hold, at: DateTime<Utc>) -> HoldAnswer {
    let decision = Decision::allow(hold.granted_seconds);
    HoldAnswer { replayed: true, ..answer(account, decision, Some(hold.clone()), at) }
}

/// Run `decide` as one account change; it returns the answer and whether to write.
async fn change(
    store: &dyn LedgerStore,
    id: &AccountId,
    now: DateTime<Utc>,
    decide: impl Fn(&mut Account) -> Result<(HoldAnswer, bool), HoldError> + Send + Sync + 'static,
) -> Result<HoldAnswer, HoldError> {
    let slot: Slot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let result = store
        .modify_account(
            id,
            Arc::new(move |account: &mut Account| {
                let decided = decide(account);
                let write = matches!(decided, Ok((_, true)));
                *out.lock().expect("hold slot") = Some(decided.map(|(answer, _)| answer));
                if write {
                    Ok(())
                } else {
                    Err(LedgerError::Unchanged)
                }
            }),
            now,
        )
        .await;
    let decided = slot.lock().expect("hold slot").take();
    match (result, decided) {
        (Ok(account), Some(Ok(mut answer))) => {
            // The store's copy, after the write: what the platform is told is what was stored.
            answer.available_usd = account.available_usd(now);
            if let Some(hold) = &answer.hold {
                answer.hold = account.hold(&hold.id).cloned();
            }
            Ok(answer)
        }
        (Err(StoreError::Rejected(LedgerError::Unchanged)), Some(decided)) => decided,
        (Err(error), _) => Err(error.into()),
        (Ok(_), _) => unreachable!("a write happens only after a decision"),
    }
}

fn refused(account: &Account, reason: Denial, at: DateTime<Utc>) -> (HoldAnswer, bool) {
    let decision = Decision::deny(reason);
    (answer(account, decision, None, at), false)
}

/// What `seconds` of a call cost on `card` with `included_left` plan seconds (premium features
/// are not known in advance: a call that uses them may overrun its hold, and is debited in full).
fn call_cost(
    card: &RateCard,
    call: &HeldCall,
    seconds: u32,
    included_left: u64,
) -> Option<Decimal> {
    let direction = if call.inbound { Direction::Inbound } else { Direction::Outbound };
    let usage = Usage::Call {
        direction,
        to: &call.to,
        answered: true,
        duration_seconds: seconds,
        ring_through_attempts: 0,
        premium: &[],
        internal: false,
    };
    let included = u32::try_from(included_left).unwrap_or(u32::MAX);
    let rated = rating::rate(card, &usage, included).ok()?;
    Some(rated.charges.iter().map(|c| c.amount.value()).sum())
}

fn included_left(
    card: &RateCard,
    account: &Account,
    at: DateTime<Utc>,
    except: Option<&str>,
) -> u64 {
    let total = u64::from(card.included_minutes_per_month) * 60;
    total
        .saturating_sub(account.plan_usage.used_in(ledger::Month::of(at)))
        .saturating_sub(account.held_call_seconds(at, except))
}

/// The longest total of seconds up to `wanted`, and beyond what `own` (the hold being
/// extended) already granted, whose cost over what `own` holds fits `available`:
/// `(seconds, cost)`, or `None` when not even one more increment does.
fn fit_call(
    card: &RateCard,
    call: &HeldCall,
    account: &Account,
    at: DateTime<Utc>,
    wanted: u32,
    own: Option<&Hold>,
    available: Decimal,
) -> Option<(u32, Decimal)> {
    let granted = own.and_then(|hold| hold.granted_seconds).unwrap_or(0);
    let held = own.map_or(Decimal::ZERO, |hold| hold.amount_usd);
    let included = included_left(card, account, at, own.map(|hold| hold.id.as_str()));
    let step = card.calls.subsequent_increment_seconds.max(1);
    let mut seconds = card.billed_seconds(wanted);
    while seconds > granted {
        let cost = call_cost(card, call, seconds, included)?;
        if cost - held <= available {
            return Some((seconds, cost));
        }
        if seconds <= card.calls.initial_increment_seconds {
            return None;
        }
        seconds -= step;
    }
    None
}

/// The account as it stands and the rate card it names.
async fn account_and_card(
    store: &dyn LedgerStore,
    cards: &RateCards,
    account_id: &AccountId,
) -> Result<(Account, std::sync::Arc<RateCard>), HoldError> {
    let account = store.account(account_id).await?.ok_or(HoldError::UnknownAccount)?;
    let card = cards
        .card(account.rate_card.as_deref())
        .ok_or_else(|| HoldError::UnknownRateCard(account_id.clone()))?;
    Ok((account, card))
}

/// Place a hold for `action` under the platform's `authorization_id`.
#[allow(clippy::too_many_arguments)]
pub async fn place(
    store: &dyn LedgerStore,
    cards: &RateCards,
    account_id: &AccountId,
    authorization_id: &str,
    action: &Action,
    now: DateTime<Utc>,
    max_call_seconds: u32,
) -> Result<HoldAnswer, HoldError> {
    let (account, card) = account_and_card(store, cards, account_id).await?;
    if let Some(hold) = account.hold(authorization_id) {
        return Ok(replay(&account, hold, now));
    }
    let id = authorization_id.to_string();
    let action = action.clone();
    change(store, account_id, now, move |account| {
        account.prune_holds(now);
        if let Some(hold) = account.hold(&id) {
            return Ok((replay(account, hold, now), false));
        }
        let budget = match authorize::budget(account, &action, now) {
            Ok(budget) => budget,
            Err(reason) => return Ok(refused(account, reason, now)),
        };
        let short = authorize::short_of(account, &action, now);
        let (purpose, amount, granted, call, lasts) = match &action {
            Action::Call { direction, to } => {
                let call = HeldCall { inbound: *direction == Direction::Inbound, to: to.clone() };
                let wanted = CALL_SLICE_SECONDS.min(max_call_seconds);
                let fit = fit_call(&card, &call, account, now, wanted, None, budget);
                let Some((seconds, cost)) = fit else {
                    return Ok(refused(account, short, now));
                };
                (
                    HoldPurpose::Call,
                    cost,
                    Some(seconds),
                    Some(call),
                    i64::from(seconds) + GRACE_SECONDS,
                )
            }
            Action::Sms { direction, segments } => {
                let usage = Usage::Sms { direction: *direction, segments: *segments };
                let cost: Decimal = rating::rate(&card, &usage, 0)
                    .map(|r| r.charges.iter().map(|c| c.amount.value()).sum())
                    .unwrap_or(Decimal::MAX);
                if cost > budget {
                    return Ok(refused(account, short, now));
                }
                (HoldPurpose::Sms, cost, None, None, SMS_HOLD_SECONDS)
            }
            Action::NumberPurchase { number_type } => {
                let price = match number_type {
                    NumberType::Local => card.numbers.local_purchase_usd,
                    NumberType::TollFree => card.numbers.toll_free_purchase_usd,
                };
                if price > budget {
                    return Ok(refused(account, short, now));
                }
                (HoldPurpose::NumberPurchase, price, None, None, PURCHASE_HOLD_SECONDS)
            }
        };
        // Kept to the second, as stored, so a replay answers exactly what this answer says.
        let created_at = now.trunc_subsecs(0);
        let hold = Hold {
            id: id.clone(),
            purpose,
            amount_usd: amount,
            granted_seconds: granted,
            call,
            extensions: 0,
            created_at,
            expires_at: created_at + Duration::seconds(lasts),
            settled: false,
        };
        account.holds.push(hold.clone());
        let decision = Decision::allow(granted);
        Ok((answer(account, decision, Some(hold), now), true))
    })
    .await
}

/// Extend the call hold `authorization_id` by another slice, as its `sequence`-th extension.
pub async fn extend(
    store: &dyn LedgerStore,
    cards: &RateCards,
    account_id: &AccountId,
    authorization_id: &str,
    sequence: u32,
    now: DateTime<Utc>,
    max_call_seconds: u32,
) -> Result<HoldAnswer, HoldError> {
    let (_, card) = account_and_card(store, cards, account_id).await?;
    let id = authorization_id.to_string();
    change(store, account_id, now, move |account| {
        let Some(hold) = account.hold(&id).cloned() else {
            return Err(HoldError::NoSuchHold(id.clone()));
        };
        let (Some(call), Some(granted)) = (hold.call.clone(), hold.granted_seconds) else {
            return Err(HoldError::Mismatch(id.clone()));
        };
        if sequence <= hold.extensions {
            return Ok((replay(account, &hold, now), false));
        }
        if !hold.is_active(now) {
            return Err(HoldError::NotActive(id.clone()));
        }
        if sequence != hold.extensions + 1 {
            return Err(HoldError::OutOfOrder { id: id.clone(), expected: hold.extensions + 1 });
        }
        let direction = if call.inbound { Direction::Inbound } else { Direction::Outbound };
        let action = Action::Call { direction, to: call.to.clone() };
        let budget = match authorize::budget(account, &action, now) {
            Ok(budget) => budget,
            Err(reason) => {
                let mut answer = refused(account, reason, now).0;
                answer.hold = Some(hold);
                return Ok((answer, false));
            }
        };
        let wanted = granted.saturating_add(CALL_SLICE_SECONDS).min(max_call_seconds);
        let fit = fit_call(&card, &call, account, now, wanted, Some(&hold), budget);
        let Some((seconds, cost)) = fit else {
            let mut answer = refused(account, authorize::short_of(account, &action, now), now).0;
            answer.hold = Some(hold);
            return Ok((answer, false));
        };
        let held = account.holds.iter_mut().find(|h| h.id == id).expect("found above");
        held.amount_usd = cost;
        held.granted_seconds = Some(seconds);
        held.extensions = sequence;
        held.expires_at = held.created_at + Duration::seconds(i64::from(seconds) + GRACE_SECONDS);
        let hold = held.clone();
        let decision = Decision::allow(Some(seconds));
        Ok((answer(account, decision, Some(hold), now), true))
    })
    .await
}

/// Release the hold `authorization_id` without a report (the call never connected, the
/// message was not sent, the number not bought).
pub async fn release(
    store: &dyn LedgerStore,
    account_id: &AccountId,
    authorization_id: &str,
    now: DateTime<Utc>,
) -> Result<HoldAnswer, HoldError> {
    let id = authorization_id.to_string();
    change(store, account_id, now, move |account| {
        let Some(hold) = account.hold(&id).cloned() else {
            return Err(HoldError::NoSuchHold(id.clone()));
        };
        let decision = Decision::allow(None);
        if !account.settle_hold(&id, now) {
            // Settled or expired already: nothing left to release.
            return Ok((
                HoldAnswer { replayed: true, ..answer(account, decision, Some(hold), now) },
                false,
            ));
        }
        let hold = account.hold(&id).cloned();
        Ok((answer(account, decision, hold, now), true))
    })
    .await
}
