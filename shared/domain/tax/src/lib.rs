//! Monthly sales tax: the jurisdiction table, taxability per billing item, the assessment and
//! the ledger posting it becomes. Pure: no clock, no store; the monthly job supplies the
//! account's service address, its tax-exempt flag and its [`ledger::MonthTotals`].
//!
//! # The rules
//!
//! - **Combined rates.** Each row of the jurisdiction table ([`TaxTable`], bundled from
//!   `data/jurisdictions.csv`) is the *full combined* rate for its place. The most specific
//!   place with a row in effect wins: city, then region, then country. A city row therefore
//!   *replaces* its region's rate rather than adding to it (New York City's 8.875 % already
//!   includes New York State's 4 %). A place with no row at any level is not taxed.
//! - **Effective dates are the 1st of a month.** Tax is assessed once a month on the month's
//!   totals per billing item, which carry no dates inside the month, so a rate that changed on
//!   the 15th could not be applied exactly to the usage on either side of the change. The table
//!   refuses such dates. A later row for the same place supersedes the earlier one from its
//!   date; a rate of 0 ends a tax.
//! - **Taxability per billing item** ([`Taxability`], bundled from `data/taxability.csv`).
//!   Every billing item is listed, so a new item cannot be taxed or left untaxed by accident.
//!   Funds added are never taxed (adding money to a prepaid balance is not a sale), and the tax
//!   itself is never taxed; the table refuses to say otherwise.
//! - **Included minutes** are the plan's credit against call minutes. They follow
//!   `phone_call`'s taxability, so when calls are taxed the tax is on what the customer paid
//!   for calls beyond the plan, not on the list price of covered minutes.
//! - **The taxable amount** is the sum of the month's net (debits minus credits) of the taxable
//!   items, so taxable credits reduce it; it is clamped at zero, because a credit-heavy month
//!   does not produce a negative tax.
//! - **Rounding.** `tax = taxable × rate / 100` is computed exactly in decimal (never floats)
//!   and rounded once, half-up to whole cents ([`ledger::Rounding::HalfUp`]). A tax that rounds
//!   to zero is no assessment and no entry.
//! - **One posting per account and month**, with source id `tax:<YYYY-MM>`: the ledger dedupes
//!   source ids per account, so a re-run of the monthly job posts nothing twice. The entry is
//!   dated the last microsecond of the taxed month.
//!
//! Tax-exempt accounts are the caller's concern: it does not call [`assess`] for them.

mod assess;
mod countries;
mod records;
mod table;
mod taxability;

use std::path::PathBuf;

use chrono::{Datelike, NaiveDate};
use ledger::BillingItem;

pub use assess::{assess, tax_posting, tax_source_id, taxable_amount, Assessment};
pub use table::{Jurisdiction, Level, TaxTable, MAX_NAME_CHARS, MAX_TABLE_ROWS};
pub use taxability::Taxability;

/// Everything that can be wrong with the tax tables or a month. Messages are written for the
/// operator who edits the CSV files: each names the line and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TaxError {
    #[error("could not read the tax file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// An error inside a named file (a loaded path, or a bundled file).
    #[error("{file}: {error}")]
    InFile { file: String, error: Box<TaxError> },
    #[error("line {line}: not readable as CSV: {message}")]
    Csv { line: u64, message: String },
    #[error("line {line}: the first row must be the header `{expected}`; found `{found}`")]
    BadHeader { line: u64, expected: &'static str, found: String },
    #[error("line {line}: expected {expected} columns ({header}); found {found}")]
    WrongColumnCount { line: u64, expected: usize, found: usize, header: &'static str },
    #[error("line {line}: more than {max} rows; split or prune the table")]
    TooManyRows { line: u64, max: usize },
    #[error("line {line}: country {value:?} is not an ISO 3166-1 alpha-2 code{hint}")]
    BadCountry { line: u64, value: String, hint: &'static str },
    #[error(
        "line {line}: region {value:?} is not an ISO 3166-2 subdivision code without the \
         country (1 to 3 capital letters or digits, such as CA, NY or ON)"
    )]
    BadRegion { line: u64, value: String },
    #[error("line {line}: city {city:?} has no region; a city row needs its region")]
    CityWithoutRegion { line: u64, city: String },
    #[error("line {line}: rate_percent {value:?} {problem}")]
    BadRate { line: u64, value: String, problem: &'static str },
    #[error("line {line}: effective_from {value:?} is not a date in the form YYYY-MM-DD")]
    BadDate { line: u64, value: String },
    #[error(
        "line {line}: effective_from {date} is not the 1st of a month; tax is assessed on each \
         month's totals, so a mid-month change could not be applied exactly: use {} or {}",
        first_of_month(*date),
        first_of_next_month(*date)
    )]
    NotFirstOfMonth { line: u64, date: NaiveDate },
    #[error("line {line}: name {problem}")]
    BadName { line: u64, problem: &'static str },
    #[error(
        "line {line}: {place} already has a row effective {date} (line {first_line}); \
         one row per place and date"
    )]
    DuplicatePlace { line: u64, first_line: u64, place: String, date: NaiveDate },
    #[error(
        "line {line}: {value:?} is not a billing item (the billing items are: {})",
        item_names()
    )]
    UnknownItem { line: u64, value: String },
    #[error(
        "line {line}: included_minutes cannot be listed: it always follows phone_call's \
         taxability (it is the plan's credit against call minutes); remove this row"
    )]
    IncludedMinutesListed { line: u64 },
    #[error("line {line}: {} is already listed (line {first_line}); list each item once", item.as_str())]
    DuplicateItem { line: u64, first_line: u64, item: BillingItem },
    #[error("line {line}: taxable must be true or false; found {value:?}")]
    BadTaxableFlag { line: u64, value: String },
    #[error("line {line}: {} must be false: {}", item.as_str(), never_taxable_reason(*item))]
    NeverTaxable { line: u64, item: BillingItem },
    #[error(
        "not every billing item is listed: add a row (true or false) for {}; every item needs \
         a decision so a new one cannot be taxed or left untaxed by accident",
        items.iter().map(|item| item.as_str()).collect::<Vec<_>>().join(", ")
    )]
    MissingItems { items: Vec<BillingItem> },
}

fn first_of_month(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

fn first_of_next_month(date: NaiveDate) -> NaiveDate {
    ledger::Month::new(date.year(), date.month()).map_or(date, |month| month.next().first_day())
}

fn item_names() -> String {
    BillingItem::ALL
        .iter()
        .filter(|item| **item != BillingItem::IncludedMinutes)
        .map(|item| item.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn never_taxable_reason(item: BillingItem) -> &'static str {
    match item {
        BillingItem::FundsAdded => "adding funds to a prepaid balance is not a sale",
        BillingItem::SalesTax => "tax is not taxed",
        _ => "this item is never taxed",
    }
}
