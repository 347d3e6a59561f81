//! The monthly job's path through the crate with the bundled tables: address to posting.

use ledger::{BillingItem, Month, MonthTotals};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tax::{assess, tax_posting, Level, TaxTable, Taxability};

fn m(text: &str) -> Month {
    text.parse().unwrap()
}

fn october(items: &[(BillingItem, Decimal)]) -> MonthTotals {
    MonthTotals { month: m("2026-10"), by_item: items.iter().copied().collect() }
}

#[test]
fn a_new_york_city_month_posts_the_city_rate_on_usage_net_of_included_minutes() {
    let table = TaxTable::bundled().unwrap();
    let taxability = Taxability::bundled().unwrap();
    let now = "2026-11-01T00:05:00Z".parse().unwrap();
    let month = Month::of(now).previous();
    assert_eq!(month.to_string(), "2026-10");

    let jurisdiction = table.jurisdiction("US", Some("NY"), " new york ", month).unwrap();
    assert_eq!(jurisdiction.level, Level::City);
    let totals = october(&[
        (BillingItem::PlanFee, dec!(20)),
        (BillingItem::PhoneCall, dec!(14.2)),
        (BillingItem::IncludedMinutes, dec!(-12.2)),
        (BillingItem::FundsAdded, dec!(-100)),
        (BillingItem::Refund, dec!(-1)),
    ]);
    let assessment = assess(&totals, &taxability, &jurisdiction).unwrap();
    assert_eq!(assessment.taxable_usd, dec!(22));
    // 22 × 8.875 % = 1.9525, half-up to 1.95.
    assert_eq!(assessment.tax_usd, dec!(1.95));

    let posting = tax_posting(&assessment).unwrap();
    assert_eq!(posting.source_id.as_str(), "tax:2026-10");
    assert_eq!(posting.amount_usd.value(), dec!(1.95));
    assert_eq!(posting.details["jurisdiction"], "New York, NY (state and city)");
    assert_eq!(posting.details["level"], "city");
    assert_eq!(posting.details["rate_percent"], "8.875");
    assert_eq!(posting.details["taxable_usd"], "22");
    // Re-running the job builds the same posting, which the ledger dedupes by source id.
    assert_eq!(
        tax_posting(&assess(&totals, &taxability, &jurisdiction).unwrap()).unwrap(),
        posting
    );
}

#[test]
fn washington_is_taxed_at_the_rate_in_effect_for_the_taxed_month() {
    let table = TaxTable::bundled().unwrap();
    let taxability = Taxability::bundled().unwrap();
    let usage = [(BillingItem::OutgoingSms, dec!(100))];
    let tax_in = |month: &str| {
        let month = m(month);
        let jurisdiction = table.jurisdiction("US", Some("WA"), "Seattle", month).unwrap();
        let totals = MonthTotals { month, by_item: usage.into_iter().collect() };
        assess(&totals, &taxability, &jurisdiction).unwrap().tax_usd
    };
    assert_eq!(tax_in("2026-09"), dec!(6.5));
    assert_eq!(tax_in("2026-10"), dec!(6.75));
}

#[test]
fn an_address_with_no_row_is_not_taxed() {
    let table = TaxTable::bundled().unwrap();
    // There is deliberately no US country row: only listed states are taxed.
    assert_eq!(table.jurisdiction("US", Some("OR"), "Portland", m("2026-10")), None);
    assert_eq!(table.jurisdiction("FR", None, "Paris", m("2026-10")), None);
}
