//! The month's assessment and the ledger posting it becomes.

use chrono::{DateTime, Duration, Utc};
use ledger::{Amount, BillingItem, LedgerError, Month, MonthTotals, Posting, Rounding, SourceId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Jurisdiction, Taxability};

/// The tax of one account for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// The taxed month.
    pub month: Month,
    pub taxable_usd: Decimal,
    pub rate_percent: Decimal,
    /// Whole cents, greater than zero.
    pub tax_usd: Decimal,
    pub jurisdiction: Jurisdiction,
}

/// The sum of the month's net (debits minus credits) of the taxable billing items, clamped at
/// zero. `included_minutes` (a credit) counts when `phone_call` is taxable, so it reduces the
/// amount; funds added never count.
pub fn taxable_amount(totals: &MonthTotals, taxability: &Taxability) -> Decimal {
    let sum: Decimal = totals
        .by_item
        .iter()
        .filter(|(item, _)| taxability.is_taxable(**item))
        .map(|(_, net)| *net)
        .sum();
    sum.max(Decimal::ZERO).normalize()
}

/// The month's tax at the jurisdiction's rate: `taxable × rate / 100`, exact, rounded once
/// half-up to cents ([`Rounding::HalfUp`]). `None` when that rounds to zero: no taxable usage,
/// no entry.
pub fn assess(
    account_month: &MonthTotals,
    taxability: &Taxability,
    jurisdiction: &Jurisdiction,
) -> Option<Assessment> {
    let taxable_usd = taxable_amount(account_month, taxability);
    let rate_percent = jurisdiction.rate_percent.normalize();
    // Exact: the amounts have at most 4 decimals and the rate at most 4, so the product has at
    // most 10 and fits a Decimal's 28 without rounding.
    let exact_tax_usd = taxable_usd * rate_percent / Decimal::ONE_HUNDRED;
    let tax_usd = Rounding::HalfUp.round(exact_tax_usd, 2);
    if tax_usd <= Decimal::ZERO {
        return None;
    }
    Some(Assessment {
        month: account_month.month,
        taxable_usd,
        rate_percent,
        tax_usd,
        jurisdiction: jurisdiction.clone(),
    })
}

/// The source id of an account's tax for `month`: `tax:<YYYY-MM>`. The ledger dedupes source
/// ids per account, so one month's tax posts once however often the job runs.
pub fn tax_source_id(month: Month) -> SourceId {
    SourceId::parse(format!("tax:{month}")).expect("tax:YYYY-MM is a valid source id")
}

/// The sales tax debit for an assessment: source id `tax:<YYYY-MM>`, always posts (it is for
/// usage already consumed), dated the last microsecond of the taxed month, with the basis of
/// the tax in its details.
pub fn tax_posting(assessment: &Assessment) -> Result<Posting, LedgerError> {
    let occurred_at = last_microsecond_of(assessment.month);
    let amount_usd = Amount::whole_cents(assessment.tax_usd)?;
    let details = serde_json::json!({
        "month": assessment.month,
        "taxable_usd": assessment.taxable_usd.to_string(),
        "rate_percent": assessment.rate_percent.to_string(),
        "jurisdiction": assessment.jurisdiction.name,
        "level": assessment.jurisdiction.level.as_str(),
    });
    Posting::usage(tax_source_id(assessment.month), BillingItem::SalesTax, amount_usd, occurred_at)?
        .with_details(details)
}

/// The last microsecond (UTC) of a month: the instant before the next month starts.
fn last_microsecond_of(month: Month) -> DateTime<Utc> {
    month.end() - Duration::microseconds(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Level;
    use chrono::TimeZone;
    use ledger::{EntryKind, PostingRule};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn month(text: &str) -> Month {
        text.parse().unwrap()
    }

    fn totals(month_text: &str, items: &[(BillingItem, Decimal)]) -> MonthTotals {
        MonthTotals { month: month(month_text), by_item: items.iter().copied().collect() }
    }

    fn jurisdiction(rate_percent: Decimal) -> Jurisdiction {
        Jurisdiction {
            name: "Sample".to_string(),
            rate_percent,
            level: Level::Region,
            effective_from: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        }
    }

    fn defaults() -> Taxability {
        Taxability::bundled().unwrap()
    }

    fn tax_of(taxable_usd: Decimal, rate_percent: Decimal) -> Option<Decimal> {
        let month = totals("2026-10", &[(BillingItem::OutgoingSms, taxable_usd)]);
        assess(&month, &defaults(), &jurisdiction(rate_percent)).map(|a| a.tax_usd)
    }

    #[test]
    fn tax_rounds_half_up_to_the_cent() {
        // 0.730075: below the half cent, down.
        assert_eq!(tax_of(dec!(10.07), dec!(7.25)), Some(dec!(0.73)));
        // 0.1775: above the half cent, up.
        assert_eq!(tax_of(dec!(2.00), dec!(8.875)), Some(dec!(0.18)));
        // 0.725 exactly on the half cent: up (banker's rounding would give 0.72).
        assert_eq!(tax_of(dec!(10.00), dec!(7.25)), Some(dec!(0.73)));
        // 0.005 exactly: the smallest tax there is.
        assert_eq!(tax_of(dec!(0.10), dec!(5)), Some(dec!(0.01)));
        // 0.004999995: just below the half cent, nothing.
        assert_eq!(tax_of(dec!(0.0999), dec!(5.005)), None);
        assert_eq!(tax_of(dec!(123.4567), dec!(14.975)), Some(dec!(18.49)));
    }

    #[test]
    fn the_assessment_carries_its_basis() {
        let month = totals(
            "2026-10",
            &[(BillingItem::PhoneCall, dec!(12.5000)), (BillingItem::PlanFee, dec!(20))],
        );
        let found = assess(&month, &defaults(), &jurisdiction(dec!(8.8750))).unwrap();
        assert_eq!(found.month.to_string(), "2026-10");
        assert_eq!(found.taxable_usd, dec!(32.5));
        assert_eq!(found.rate_percent.to_string(), "8.875");
        assert_eq!(found.tax_usd, dec!(2.88)); // 2.884375
        assert_eq!(found.jurisdiction, jurisdiction(dec!(8.8750)));
    }

    #[test]
    fn included_minutes_reduce_the_taxable_amount_when_calls_are_taxed() {
        let month = totals(
            "2026-10",
            &[
                (BillingItem::PhoneCall, dec!(30)),
                (BillingItem::IncludedMinutes, dec!(-25)),
                (BillingItem::OutgoingSms, dec!(1.5)),
            ],
        );
        assert_eq!(taxable_amount(&month, &defaults()), dec!(6.5));
        let text = Taxability::BUNDLED_CSV.replace("phone_call,true", "phone_call,false");
        let untaxed_calls = Taxability::from_csv(&text).unwrap();
        assert_eq!(taxable_amount(&month, &untaxed_calls), dec!(1.5));
    }

    #[test]
    fn taxable_credits_reduce_the_amount_and_it_never_goes_below_zero() {
        let text = Taxability::BUNDLED_CSV.replace("adjustment,false", "adjustment,true");
        let taxed_adjustments = Taxability::from_csv(&text).unwrap();
        let month = totals(
            "2026-10",
            &[(BillingItem::OutgoingSms, dec!(10)), (BillingItem::Adjustment, dec!(-4))],
        );
        assert_eq!(taxable_amount(&month, &taxed_adjustments), dec!(6));
        // The default does not tax adjustments, so a credit one does not reduce the amount.
        assert_eq!(taxable_amount(&month, &defaults()), dec!(10));

        let month = totals(
            "2026-10",
            &[(BillingItem::OutgoingSms, dec!(10)), (BillingItem::Adjustment, dec!(-14))],
        );
        assert_eq!(taxable_amount(&month, &taxed_adjustments), Decimal::ZERO);
        assert_eq!(assess(&month, &taxed_adjustments, &jurisdiction(dec!(7.25))), None);
        let month = totals(
            "2026-10",
            &[(BillingItem::PhoneCall, dec!(3)), (BillingItem::IncludedMinutes, dec!(-3.5))],
        );
        assert_eq!(taxable_amount(&month, &defaults()), Decimal::ZERO);
    }

    #[test]
    fn funds_refunds_and_tax_never_count_by_default() {
        let month = totals(
            "2026-10",
            &[
                (BillingItem::FundsAdded, dec!(-100)),
                (BillingItem::Refund, dec!(-5)),
                (BillingItem::SalesTax, dec!(3)),
                (BillingItem::PhoneNumber, dec!(2)),
            ],
        );
        assert_eq!(taxable_amount(&month, &defaults()), dec!(2));
    }

    #[test]
    fn no_tax_means_no_assessment() {
        assert_eq!(
            assess(&MonthTotals::empty(month("2026-10")), &defaults(), &jurisdiction(dec!(7.25))),
            None
        );
        // 0.06 × 7.25 % = 0.00435 rounds to nothing.
        assert_eq!(tax_of(dec!(0.06), dec!(7.25)), None);
        assert_eq!(tax_of(dec!(1000), Decimal::ZERO), None);
        let funds_only = totals("2026-10", &[(BillingItem::FundsAdded, dec!(-50))]);
        assert_eq!(assess(&funds_only, &defaults(), &jurisdiction(dec!(20))), None);
    }

    #[test]
    fn the_posting_is_a_sales_tax_debit_dated_the_end_of_the_month() {
        let month = totals("2026-10", &[(BillingItem::PhoneCall, dec!(10.07))]);
        let mut place = jurisdiction(dec!(7.25));
        place.name = "California".to_string();
        let assessment = assess(&month, &defaults(), &place).unwrap();
        let posting = tax_posting(&assessment).unwrap();
        assert_eq!(posting.source_id.as_str(), "tax:2026-10");
        assert_eq!(posting.kind, EntryKind::Debit);
        assert_eq!(posting.item, BillingItem::SalesTax);
        assert_eq!(posting.rule, PostingRule::Always);
        assert_eq!(posting.amount_usd.value(), dec!(0.73));
        let end = Utc.with_ymd_and_hms(2026, 10, 31, 23, 59, 59).unwrap()
            + Duration::microseconds(999_999);
        assert_eq!(posting.occurred_at, end);
        assert_eq!(
            posting.details,
            serde_json::json!({
                "month": "2026-10",
                "taxable_usd": "10.07",
                "rate_percent": "7.25",
                "jurisdiction": "California",
                "level": "region"
            })
        );
        assert_eq!(posting.validate(), Ok(()));
    }

    #[test]
    fn the_last_microsecond_handles_december_and_leap_years() {
        let end = |y, m, d| {
            Utc.with_ymd_and_hms(y, m, d, 23, 59, 59).unwrap() + Duration::microseconds(999_999)
        };
        assert_eq!(last_microsecond_of(month("2026-12")), end(2026, 12, 31));
        assert_eq!(last_microsecond_of(month("2028-02")), end(2028, 2, 29));
        assert_eq!(last_microsecond_of(month("2026-02")), end(2026, 2, 28));
        assert_eq!(last_microsecond_of(month("2026-04")), end(2026, 4, 30));
    }

    #[test]
    fn a_bad_amount_is_a_ledger_error_not_a_panic() {
        // A bad month cannot reach an assessment: `Month` parses only `YYYY-MM`.
        assert!("2026-13".parse::<Month>().is_err());
        assert!("".parse::<Month>().is_err());
        let mut assessment = Assessment {
            month: month("2026-10"),
            taxable_usd: dec!(10),
            rate_percent: dec!(7.25),
            tax_usd: dec!(0.73),
            jurisdiction: jurisdiction(dec!(7.25)),
        };
        assert_eq!(tax_posting(&assessment).map(|p| p.amount_usd.value()), Ok(dec!(0.73)));
        assessment.tax_usd = dec!(0.725);
        assert_eq!(
            tax_posting(&assessment),
            Err(LedgerError::Amount(ledger::AmountError::NotWholeCents))
        );
        assessment.tax_usd = Decimal::ZERO;
        assert_eq!(
            tax_posting(&assessment),
            Err(LedgerError::Amount(ledger::AmountError::NotPositive))
        );
    }

    #[test]
    fn tax_source_ids_are_per_month() {
        assert_eq!(tax_source_id(month("2026-10")).as_str(), "tax:2026-10");
        assert_ne!(tax_source_id(month("2026-10")), tax_source_id(month("2026-11")));
    }

    proptest! {
        #[test]
        fn tax_is_whole_cents_non_negative_and_within_half_a_cent(
            taxable_units in 0i64..100_000_000_000,
            rate_units in 0i64..1_000_000,
        ) {
            let taxable_usd = Decimal::new(taxable_units, 4);
            let rate_percent = Decimal::new(rate_units, 4);
            let exact = taxable_usd * rate_percent / Decimal::ONE_HUNDRED;
            let half_cent = dec!(0.005);
            match tax_of(taxable_usd, rate_percent) {
                Some(tax_usd) => {
                    prop_assert!(tax_usd > Decimal::ZERO);
                    prop_assert!(tax_usd.scale() <= 2, "{tax_usd}");
                    prop_assert!((tax_usd - exact).abs() <= half_cent, "{tax_usd} vs {exact}");
                    // Half-up: exactly on the half cent always goes up.
                    prop_assert!(tax_usd - exact != -half_cent);
                }
                None => prop_assert!(exact < half_cent, "{exact} taxed nothing"),
            }
        }

        #[test]
        fn every_assessment_becomes_a_valid_posting(
            taxable_units in 1i64..10_000_000_000,
            rate_units in 1i64..1_000_000,
            year in 2000i32..2100,
            month_number in 1u32..=12,
        ) {
            let month = Month::new(year, month_number).unwrap();
            let month_totals = totals(&month.to_string(), &[(BillingItem::PlanFee, Decimal::new(taxable_units, 4))]);
            if let Some(assessment) = assess(&month_totals, &defaults(), &jurisdiction(Decimal::new(rate_units, 4))) {
                let posting = tax_posting(&assessment).unwrap();
                prop_assert_eq!(posting.amount_usd.value(), assessment.tax_usd);
                prop_assert_eq!(Month::of(posting.occurred_at), month);
                prop_assert_ne!(Month::of(posting.occurred_at + Duration::microseconds(1)), month);
                prop_assert_eq!(posting.validate(), Ok(()));
            }
        }
    }
}
