//! An account's software plan (issue 15): a name, a price and a period, charged in advance at
//! each renewal. Kept on the billing profile ([`crate::profile::Profile::plan`]); the renewal
//! job (`jobs::plans`) posts each period's `plan_fee` once.
//!
//! A change of plan made mid-period takes effect at the next renewal (the period already paid
//! for runs on the old terms), and so does a cancellation.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use ledger::Amount;
use serde::{Deserialize, Serialize};

/// How often a plan renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanPeriod {
    Monthly,
    Annual,
}

impl PlanPeriod {
    fn months(self) -> u32 {
        match self {
            PlanPeriod::Monthly => 1,
            PlanPeriod::Annual => 12,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlanPeriod::Monthly => "monthly",
            PlanPeriod::Annual => "annual",
        }
    }

    /// The period [`PlanPeriod::as_str`] names.
    pub fn parse(text: &str) -> Option<PlanPeriod> {
        match text {
            "monthly" => Some(PlanPeriod::Monthly),
            "annual" => Some(PlanPeriod::Annual),
            _ => None,
        }
    }
}

/// A plan's terms: what each renewal charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTerms {
    pub name: String,
    pub price_usd: Amount,
    pub period: PlanPeriod,
}

/// The account's plan and where its renewals stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub terms: PlanTerms,
    /// The next period starts (and is charged) on this UTC day.
    pub next_renewal: NaiveDate,
    /// The day of the month renewals fall on (a plan started on the 31st renews on the last
    /// day of shorter months, and on the 31st again when there is one).
    pub anchor_day: u32,
    /// Terms that take effect at the next renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<PlanTerms>,
    /// The plan ends at the next renewal: nothing more is charged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_at_renewal: bool,
    /// "Opt-in direct charge for plan subscription": each period is charged to the account's
    /// cards (the primary, then the backups) and never touches the balance; only after
    /// [`MAX_DIRECT_ATTEMPTS`] attempts in which every card declined is the fee taken from the
    /// balance instead. Off: the fee is debited from the balance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct_charge: bool,
    /// The direct charge of the period due now, while its attempts have failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_attempts: Option<DirectAttempts>,
}

/// Failed direct-charge attempts of one period (reset when the period is paid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectAttempts {
    /// The period's first day.
    pub period: NaiveDate,
    /// Attempts in which every card declined.
    pub failed: u32,
    /// The next attempt is not made before this.
    pub next_attempt_at: DateTime<Utc>,
    pub last_failure: String,
}

/// Attempts (each tries every card) before a direct-charge period's fee is taken from the
/// balance: the three-failure rule of auto-recharge.
pub const MAX_DIRECT_ATTEMPTS: u32 = 3;

/// Wait after the n-th failed direct-charge attempt (1-based), as auto-recharge waits.
pub fn direct_backoff_after(failed: u32) -> chrono::Duration {
    match failed {
        0 | 1 => chrono::Duration::hours(1),
        _ => chrono::Duration::hours(6),
    }
}

impl Plan {
    pub fn starting(terms: PlanTerms, on: NaiveDate) -> Plan {
        Plan {
            terms,
            next_renewal: on,
            anchor_day: on.day(),
            change: None,
            cancel_at_renewal: false,
            direct_charge: false,
            direct_attempts: None,
        }
    }

    /// The plan after the period starting on `start` was paid on `charged` (the terms its fee
    /// was charged on): the next renewal follows that period, and a change made after the
    /// charge stays pending for the next one; attempts are cleared. `None`: the plan moved on
    /// already (paid before).
    pub fn paid(&self, start: NaiveDate, charged: &PlanTerms) -> Option<Plan> {
        if self.next_renewal != start {
            return None;
        }
        let next_renewal = self.period_end(start, charged.period);
        let change = self.change.clone().filter(|change| change != charged);
        Some(Plan {
            terms: charged.clone(),
            next_renewal,
            change,
            direct_attempts: None,
            ..self.clone()
        })
    }

    /// The day after the period that starts on `start` under `period` ends (the next renewal).
    pub fn period_end(&self, start: NaiveDate, period: PlanPeriod) -> NaiveDate {
        let first = start.with_day(1).unwrap_or(start);
        let next_month = first.checked_add_months(Months::new(period.months())).unwrap_or(first);
        let last_day = next_month
            .checked_add_months(Months::new(1))
            .and_then(|d| d.pred_opt())
            .map_or(28, |d| d.day());
        next_month.with_day(self.anchor_day.min(last_day)).unwrap_or(next_month)
    }

    /// The terms the period starting at the next renewal is charged on.
    pub fn renewing_terms(&self) -> &PlanTerms {
        self.change.as_ref().unwrap_or(&self.terms)
    }
}

/// The ledger source id of the fee for the period starting on `start` (per account, so once).
/// A direct-charge period's pending-payment key is the same text.
pub fn fee_source_id(start: NaiveDate) -> String {
    format!("{PLAN_KEY_PREFIX}{start}")
}

/// What the fee's source id and a direct charge's keys begin with (reserved: a client's
/// `Idempotency-Key` may not begin with it).
pub const PLAN_KEY_PREFIX: &str = "plan:";

/// The period a direct-charge pending key (`plan:YYYY-MM-DD`) names.
pub fn period_of_key(key: &str) -> Option<NaiveDate> {
    key.strip_prefix(PLAN_KEY_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn plan(on: &str, period: PlanPeriod) -> Plan {
        let terms =
            PlanTerms { name: "Pro".into(), price_usd: Amount::from_str("29").unwrap(), period };
        Plan::starting(terms, day(on))
    }

    #[test]
    fn renewals_keep_their_day_through_short_months() {
        let p = plan("2026-01-31", PlanPeriod::Monthly);
        assert_eq!(p.period_end(day("2026-01-31"), PlanPeriod::Monthly), day("2026-02-28"));
        assert_eq!(p.period_end(day("2026-02-28"), PlanPeriod::Monthly), day("2026-03-31"));
        assert_eq!(p.period_end(day("2026-12-31"), PlanPeriod::Monthly), day("2027-01-31"));
        let leap = plan("2028-02-29", PlanPeriod::Annual);
        assert_eq!(leap.period_end(day("2028-02-29"), PlanPeriod::Annual), day("2029-02-28"));
        let mid = plan("2026-11-15", PlanPeriod::Annual);
        assert_eq!(mid.period_end(day("2026-11-15"), PlanPeriod::Annual), day("2027-11-15"));
    }
}
