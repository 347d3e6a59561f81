//! What an account keeps at its floor: the operator's tiers of suspension (issue 13).
//!
//! At the floor, outbound calls, outbound messages and number purchases stop. Inbound calls and
//! messages may keep working for a grace amount below the floor or a grace period after the
//! suspension, so the customer's own customers still reach them while they top up. After
//! `release_after_days` suspended, the account's numbers are due for release: notices go out
//! 7 days and 1 day before, then a `numbers_release_due` event the platform acts on. A credit
//! that lifts the balance above the floor cancels all of it.
//!
//! A postpaid account whose invoice stays unpaid `block_after_days_overdue` days past its due
//! date is blocked the same way (`Account::overdue_block`, status `Suspended`), whatever its
//! balance, until payments cover what was overdue.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Account, AccountStatus};

/// Days suspended before numbers are due for release, unless the operator says otherwise.
pub const DEFAULT_RELEASE_AFTER_DAYS: u32 = 30;
/// The longest grace period (a week) and release delay (a year) an operator may set.
pub const MAX_GRACE_HOURS: u32 = 168;
pub const MAX_RELEASE_AFTER_DAYS: u32 = 365;
/// Days past an invoice's due date before the account is blocked, unless the operator says
/// otherwise (after the last reminder, at 14 days); at most [`MAX_RELEASE_AFTER_DAYS`].
pub const DEFAULT_BLOCK_AFTER_DAYS_OVERDUE: u32 = 21;

/// The operator's rules for an account below its floor. The default: no grace, numbers due for
/// release after 30 days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    /// Inbound calls and messages keep working until the balance is this much below the floor
    /// (0: no grace by amount).
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub inbound_grace_usd: Decimal,
    /// Inbound calls and messages keep working for this many hours after the suspension, at
    /// any cost (no grace by time when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_grace_hours: Option<u32>,
    #[serde(default = "default_release_after_days")]
    pub release_after_days: u32,
    /// Outbound calls, messages and number purchases stop while a dispute (chargeback) of one
    /// of the account's payments is open, whatever the balance; inbound traffic keeps running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend_while_disputed: bool,
    /// A postpaid account is blocked as at its floor once an invoice is this many days past
    /// its due date unpaid (issue 17), until it is paid.
    #[serde(default = "default_block_after_days_overdue")]
    pub block_after_days_overdue: u32,
}

fn default_block_after_days_overdue() -> u32 {
    DEFAULT_BLOCK_AFTER_DAYS_OVERDUE
}

fn default_release_after_days() -> u32 {
    DEFAULT_RELEASE_AFTER_DAYS
}

impl Default for ServicePolicy {
    fn default() -> Self {
        ServicePolicy {
            inbound_grace_usd: Decimal::ZERO,
            inbound_grace_hours: None,
            release_after_days: DEFAULT_RELEASE_AFTER_DAYS,
            suspend_while_disputed: false,
            block_after_days_overdue: DEFAULT_BLOCK_AFTER_DAYS_OVERDUE,
        }
    }
}

/// How far a suspended account's numbers are on their way to release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReleaseStage {
    None = 0,
    /// The 7-days-before notice went out.
    WeekBefore = 1,
    /// The 1-day-before notice went out.
    DayBefore = 2,
    /// `numbers_release_due` was raised.
    Due = 3,
}

impl ReleaseStage {
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => ReleaseStage::None,
            1 => ReleaseStage::WeekBefore,
            2 => ReleaseStage::DayBefore,
            _ => ReleaseStage::Due,
        }
    }
}

impl Account {
    /// The operator's rules, or the defaults.
    pub fn service_policy(&self) -> ServicePolicy {
        self.service.clone().unwrap_or_default()
    }

    /// When this suspension's numbers are due for release (`None` while active, or for an
    /// account that never crossed to its floor from above, such as a new one never funded).
    pub fn release_at(&self) -> Option<DateTime<Utc>> {
        let since = self.suspended_since.filter(|_| self.status == AccountStatus::Suspended)?;
        Some(since + Duration::days(i64::from(self.service_policy().release_after_days)))
    }

    /// The stage the release should have reached at `at`.
    pub fn release_stage_due(&self, at: DateTime<Utc>) -> ReleaseStage {
        match self.release_at() {
            None => ReleaseStage::None,
            Some(release) if at >= release => ReleaseStage::Due,
            Some(release) if at >= release - Duration::days(1) => ReleaseStage::DayBefore,
            Some(release) if at >= release - Duration::days(7) => ReleaseStage::WeekBefore,
            Some(_) => ReleaseStage::None,
        }
    }

    /// Inbound calls and messages may still run at `at` although the account is suspended:
    /// `Some(limit)` is how far below the floor they may take the balance (`None` inside a
    /// grace period: any cost), or the grace is over.
    pub fn inbound_grace(&self, at: DateTime<Utc>) -> InboundGrace {
        let policy = self.service_policy();
        let in_period = match (policy.inbound_grace_hours, self.suspended_since) {
            (Some(hours), Some(since)) => at < since + Duration::hours(i64::from(hours)),
            _ => false,
        };
        if in_period {
            InboundGrace::Period
        } else if policy.inbound_grace_usd > Decimal::ZERO {
            InboundGrace::Amount(self.floor_usd() - policy.inbound_grace_usd)
        } else if policy.inbound_grace_hours.is_some() {
            InboundGrace::Over
        } else {
            InboundGrace::None
        }
    }
}

/// What a suspended account's inbound traffic may still do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundGrace {
    /// No grace configured: inbound stops with everything else.
    None,
    /// Inside the grace period: inbound runs at any cost.
    Period,
    /// Inbound runs while its cost keeps the balance (less holds) at or above this.
    Amount(Decimal),
    /// A grace was configured and is used up.
    Over,
}
