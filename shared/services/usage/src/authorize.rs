//! Call, SMS and number-purchase authorization for the telephony platform: may this account do
//! this, and for a call, the longest duration its balance above the floor covers.

use chrono::{DateTime, Utc};
use ledger::{Account, AccountStatus, InboundGrace};
use rating::{Direction, NumberType, RateCard};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The longest call ever authorized, whatever the balance (4 hours).
pub const DEFAULT_MAX_CALL_SECONDS: u32 = 4 * 3_600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Call { direction: Direction, to: String },
    Sms { direction: Direction, segments: u32 },
    NumberPurchase { number_type: NumberType },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    TermsNotAccepted,
    /// At or below the floor (for postpaid accounts: at the credit limit).
    Suspended,
    /// Active, but the balance above the floor does not cover this.
    InsufficientBalance,
    /// The balance would cover it, but holds for calls, messages and purchases in progress
    /// have reserved what is left.
    InsufficientAvailableBalance,
    /// Suspended, and the inbound grace the operator set (an amount below the floor, or a
    /// period after the suspension) is used up.
    GraceExhausted,
    /// A dispute (chargeback) of one of the account's payments is open, and the operator stops
    /// outbound service while one is.
    DisputeOpen,
    /// Blocked: an invoice is unpaid past the days overdue the operator allows (postpaid).
    InvoiceOverdue,
}

impl Denial {
    pub fn message(self) -> &'static str {
        match self {
            Denial::TermsNotAccepted => "the account has not accepted the terms of service",
            Denial::Suspended => "the account is suspended: its balance is at or below its floor",
            Denial::InsufficientBalance => "the balance above the floor does not cover this",
            Denial::InsufficientAvailableBalance => {
                "holds for calls, messages and purchases in progress reserve the rest of the balance"
            }
            Denial::GraceExhausted => {
                "the account is suspended and its grace for inbound calls and messages is used up"
            }
            Denial::DisputeOpen => {
                "a payment of the account is disputed: outbound service stops until the dispute is decided"
            }
            Denial::InvoiceOverdue => {
                "an invoice of the account is overdue: service stops until it is paid"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Denial>,
    /// Calls only: the longest duration (seconds) the balance covers, capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u32>,
}

impl Decision {
    pub fn deny(reason: Denial) -> Self {
        Decision { allowed: false, reason: Some(reason), max_duration_seconds: None }
    }

    pub fn allow(max_duration_seconds: Option<u32>) -> Self {
        Decision { allowed: true, reason: None, max_duration_seconds }
    }
}

/// Inside a grace period inbound traffic runs at any cost; this bounds one grant.
pub const GRACE_PERIOD_BUDGET_USD: Decimal = Decimal::from_parts(1_000, 0, 0, false, 0);

impl Action {
    /// Inbound calls and messages (what the account's grace may keep running at its floor).
    pub fn is_inbound(&self) -> bool {
        matches!(
            self,
            Action::Call { direction: Direction::Inbound, .. }
                | Action::Sms { direction: Direction::Inbound, .. }
        )
    }
}

/// What `action` may spend on `account` at `at`, or why it may not run at all (the account's
/// tiers: see `ledger::service`):
/// - outbound calls and messages and number purchases stop at the floor, and otherwise use
///   the available balance (balance − active holds − floor);
/// - inbound calls and messages may go `inbound_grace_usd` below the floor, or run at any cost
///   for `inbound_grace_hours` after the suspension; once that is used up: `GraceExhausted`.
pub fn budget(account: &Account, action: &Action, at: DateTime<Utc>) -> Result<Decimal, Denial> {
    if !account.terms_accepted() {
        return Err(Denial::TermsNotAccepted);
    }
    let suspended = is_suspended(account, at);
    if !action.is_inbound()
        && account.service_policy().suspend_while_disputed
        && !account.open_disputes.is_empty()
    {
        return Err(Denial::DisputeOpen);
    }
    if !action.is_inbound() && account.overdue_block.is_some() {
        return Err(Denial::InvoiceOverdue);
    }
    if !action.is_inbound() {
        return if suspended { Err(Denial::Suspended) } else { Ok(account.available_usd(at)) };
    }
    match account.inbound_grace(at) {
        InboundGrace::Period if suspended => Ok(GRACE_PERIOD_BUDGET_USD),
        InboundGrace::Amount(limit) => {
            let budget = account.unreserved_usd(at) - limit;
            if suspended && budget <= Decimal::ZERO {
                Err(Denial::GraceExhausted)
            } else {
                Ok(budget)
            }
        }
        InboundGrace::Over if suspended => Err(Denial::GraceExhausted),
        _ if suspended => Err(Denial::Suspended),
        _ => Ok(account.available_usd(at)),
    }
}

/// At or below the floor, counting a credit grant that has expired (and is not removed yet) as
/// gone: the account is treated as suspended from the expiry, not from the next write.
fn is_suspended(account: &Account, at: DateTime<Utc>) -> bool {
    account.status == AccountStatus::Suspended
        || account.balance_usd - account.expired_grants_usd(at) <= account.floor_usd()
}

/// Why `action` costing more than its budget is refused.
pub fn short_of(account: &Account, action: &Action, at: DateTime<Utc>) -> Denial {
    let suspended = is_suspended(account, at);
    if suspended && action.is_inbound() {
        Denial::GraceExhausted
    } else if account.held_usd(at, None) > Decimal::ZERO {
        Denial::InsufficientAvailableBalance
    } else {
        Denial::InsufficientBalance
    }
}

/// Decide `action` for `account` rated by `card` at `now`.
pub fn authorize(
    account: &Account,
    card: &RateCard,
    action: &Action,
    now: DateTime<Utc>,
    max_call_seconds: u32,
) -> Decision {
    let available = match budget(account, action, now) {
        Ok(budget) => budget,
        Err(reason) => return Decision::deny(reason),
    };
    let short = short_of(account, action, now);
    match action {
        Action::Call { direction, to } => {
            let month = ledger::Month::of(now);
            let included_total = u64::from(card.included_minutes_per_month) * 60;
            let included_left = included_total
                .saturating_sub(account.plan_usage.used_in(month))
                .saturating_sub(account.held_call_seconds(now, None));
            match longest_call_seconds(card, *direction, to, available, included_left) {
                Some(seconds) if seconds > 0 => {
                    Decision::allow(Some(seconds.min(u64::from(max_call_seconds)) as u32))
                }
                _ => Decision::deny(short),
            }
        }
        Action::Sms { direction, segments } => {
            let per_segment = match direction {
                Direction::Inbound => card.sms.inbound_per_segment_usd,
                Direction::Outbound => card.sms.outbound_per_segment_usd,
            };
            let cost = per_segment * Decimal::from(*segments) + card.sms.surcharge_per_message_usd;
            if cost <= available {
                Decision::allow(None)
            } else {
                Decision::deny(short)
            }
        }
        Action::NumberPurchase { number_type } => {
            let price = match number_type {
                NumberType::Local => card.numbers.local_purchase_usd,
                NumberType::TollFree => card.numbers.toll_free_purchase_usd,
            };
            // The ledger allows a purchase that lands exactly on the floor.
            if price <= available {
                Decision::allow(None)
            } else {
                Decision::deny(short)
            }
        }
    }
}

/// The longest duration whose billed cost (after included seconds, with the per-call surcharge
/// and minimum charge) fits in `available`. `None` when not even the first increment fits.
/// Uncapped: the caller applies its maximum.
pub fn longest_call_seconds(
    card: &RateCard,
    direction: Direction,
    to: &str,
    available: Decimal,
    included_left_seconds: u64,
) -> Option<u64> {
    const UNLIMITED: u64 = 31 * 86_400;
    let budget = available - card.calls.surcharge_per_call_usd;
    if budget < Decimal::ZERO {
        return None;
    }
    let rate = card.per_minute_usd(direction, to);
    let initial = u64::from(card.calls.initial_increment_seconds);
    let subsequent = u64::from(card.calls.subsequent_increment_seconds);
    let billable_seconds = if rate.is_zero() {
        UNLIMITED
    } else {
        // Paid seconds the budget buys (rounded down: never authorize more than is covered).
        let paid = (budget * Decimal::from(60) / rate).floor();
        let mut paid = u64::try_from(paid).unwrap_or(UNLIMITED).min(UNLIMITED);
        if card.calls.minimum_charge_usd > budget {
            // Not even the minimum is covered: only included seconds can be used.
            paid = 0;
        }
        paid.saturating_add(included_left_seconds)
    };
    if billable_seconds < initial {
        return None;
    }
    // Billed seconds are initial + k * subsequent; the longest duration billed within the
    // budget is exactly that boundary.
    let k = (billable_seconds - initial) / subsequent;
    Some(initial + k * subsequent)
}
