//! An account's software plan (issue 15): a name, a price and a period, charged in advance at
//! each renewal. Kept on the billing profile ([`crate::profile::Profile::plan`]); the renewal
//! job (`jobs::plans`) posts each period's `plan_fee` once.
//!
//! A change of plan made mid-period takes effect at the next renewal (the period already paid
//! for runs on the old terms), and so does a cancellation.

use chrono::{Datelike, Months, NaiveDate};
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
}

impl Plan {
    pub fn starting(terms: PlanTerms, on: NaiveDate) -> Plan {
        Plan {
            terms,
            next_renewal: on,
            anchor_day: on.day(),
            change: None,
            cancel_at_renewal: false,
        }
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
pub fn fee_source_id(start: NaiveDate) -> String {
    format!("plan:{start}")
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
