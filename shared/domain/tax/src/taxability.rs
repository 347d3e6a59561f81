//! Which billing items are subject to sales tax.

use std::collections::BTreeMap;
use std::path::Path;

use ledger::BillingItem;

use crate::{records, TaxError};

const HEADER: &str = "item,taxable";
const BUNDLED_FILE: &str = "data/taxability.csv (bundled)";
/// Items that are never taxed, whatever the file would like.
const NEVER_TAXABLE: [BillingItem; 2] = [BillingItem::FundsAdded, BillingItem::SalesTax];

/// Taxability per billing item, from a CSV with the header `item,taxable` and one row per
/// billing item (`phone_call,true`). Lines starting with `#` and blank lines are ignored.
///
/// Every billing item except `included_minutes` must be listed exactly once, so adding a
/// billing item to the ledger makes the file fail to load until someone decides. `funds_added`
/// and `sales_tax` must be `false`. `included_minutes` is not listed: it follows `phone_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taxability {
    /// Every item but `included_minutes`.
    taxable: BTreeMap<BillingItem, bool>,
}

impl Taxability {
    /// The defaults shipped in `data/taxability.csv`, embedded at build time.
    pub const BUNDLED_CSV: &'static str = include_str!("../data/taxability.csv");

    /// The bundled defaults. The tests load them, so an error here means the file was edited
    /// without running them.
    pub fn bundled() -> Result<Self, TaxError> {
        Self::from_csv(Self::BUNDLED_CSV).map_err(|error| TaxError::InFile {
            file: BUNDLED_FILE.to_string(),
            error: Box::new(error),
        })
    }

    /// The taxability in the CSV file at `path`. Errors name the file and the line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TaxError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| TaxError::Read { path: path.to_path_buf(), error })?;
        Self::from_csv(&text).map_err(|error| TaxError::InFile {
            file: path.display().to_string(),
            error: Box::new(error),
        })
    }

    /// The taxability in CSV text. Errors name the line.
    pub fn from_csv(text: &str) -> Result<Self, TaxError> {
        // One row per item is all a valid file has; a few more let the duplicate be reported.
        let max_rows = BillingItem::ALL.len() * 4;
        let mut taxable = BTreeMap::new();
        let mut lines = BTreeMap::new();
        for record in records::read(text, HEADER, max_rows)? {
            let line = record.line;
            let [name, flag] = &record.fields[..] else {
                unreachable!("records::read checks the column count");
            };
            let item = BillingItem::parse(name)
                .ok_or_else(|| TaxError::UnknownItem { line, value: name.clone() })?;
            if item == BillingItem::IncludedMinutes {
                return Err(TaxError::IncludedMinutesListed { line });
            }
            if let Some(&first_line) = lines.get(&item) {
                return Err(TaxError::DuplicateItem { line, first_line, item });
            }
            let is_taxable = match flag.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(TaxError::BadTaxableFlag { line, value: flag.clone() }),
            };
            if is_taxable && NEVER_TAXABLE.contains(&item) {
                return Err(TaxError::NeverTaxable { line, item });
            }
            lines.insert(item, line);
            taxable.insert(item, is_taxable);
        }
        let missing: Vec<BillingItem> = BillingItem::ALL
            .into_iter()
            .filter(|item| *item != BillingItem::IncludedMinutes && !taxable.contains_key(item))
            .collect();
        if !missing.is_empty() {
            return Err(TaxError::MissingItems { items: missing });
        }
        Ok(Taxability { taxable })
    }

    /// Whether the month's net of `item` counts toward the taxable amount. `included_minutes`
    /// follows `phone_call`; `funds_added` and `sales_tax` are never taxable.
    pub fn is_taxable(&self, item: BillingItem) -> bool {
        let item = match item {
            BillingItem::IncludedMinutes => BillingItem::PhoneCall,
            other => other,
        };
        !NEVER_TAXABLE.contains(&item) && self.taxable.get(&item).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete file with `overrides` replacing the bundled rows for their items.
    fn csv_with(overrides: &[(&str, &str)]) -> String {
        let mut text = String::from("item,taxable\n");
        for item in BillingItem::ALL {
            if item == BillingItem::IncludedMinutes {
                continue;
            }
            let default = Taxability::bundled().unwrap().is_taxable(item);
            let flag = overrides
                .iter()
                .find(|(name, _)| *name == item.as_str())
                .map_or(default.to_string(), |(_, flag)| flag.to_string());
            text.push_str(&format!("{},{flag}\n", item.as_str()));
        }
        text
    }

    #[test]
    fn the_bundled_defaults_load() {
        let taxability = Taxability::bundled().unwrap();
        let taxable = [
            BillingItem::PhoneNumber,
            BillingItem::PhoneCall,
            BillingItem::OutgoingSms,
            BillingItem::IncomingSms,
            BillingItem::RingThroughAttempt,
            BillingItem::CarrierSurcharge,
            BillingItem::PremiumService,
            BillingItem::PlanFee,
            BillingItem::IncludedMinutes,
        ];
        for item in BillingItem::ALL {
            assert_eq!(taxability.is_taxable(item), taxable.contains(&item), "{}", item.as_str());
        }
    }

    #[test]
    fn included_minutes_follow_phone_calls() {
        let untaxed_calls = Taxability::from_csv(&csv_with(&[("phone_call", "false")])).unwrap();
        assert!(!untaxed_calls.is_taxable(BillingItem::PhoneCall));
        assert!(!untaxed_calls.is_taxable(BillingItem::IncludedMinutes));
        assert!(untaxed_calls.is_taxable(BillingItem::OutgoingSms));
        let taxed_calls = Taxability::from_csv(&csv_with(&[])).unwrap();
        assert!(taxed_calls.is_taxable(BillingItem::IncludedMinutes));
    }

    #[test]
    fn every_item_must_be_listed() {
        let text =
            csv_with(&[]).replace("\nplan_fee,true\n", "\n").replace("\nrefund,false\n", "\n");
        let found = Taxability::from_csv(&text).unwrap_err();
        assert!(
            matches!(&found, TaxError::MissingItems { items } if items == &[BillingItem::PlanFee, BillingItem::Refund]),
            "{found:?}"
        );
        let message = found.to_string();
        assert!(message.contains("plan_fee, refund"), "{message}");
        let found = Taxability::from_csv("item,taxable\n").unwrap_err();
        assert!(
            matches!(found, TaxError::MissingItems { items } if items.len() == BillingItem::ALL.len() - 1)
        );
    }

    #[test]
    fn items_are_listed_once() {
        let text = format!("{}phone_call,false\n", csv_with(&[]));
        let found = Taxability::from_csv(&text).unwrap_err();
        assert!(
            matches!(
                found,
                TaxError::DuplicateItem { line: 17, first_line: 3, item: BillingItem::PhoneCall }
            ),
            "{found:?}"
        );
        assert!(found.to_string().starts_with("line 17: phone_call is already listed (line 3)"));
    }

    #[test]
    fn unknown_items_and_flags_are_rejected() {
        let text = csv_with(&[]).replace("outgoing_sms", "sms");
        let found = Taxability::from_csv(&text).unwrap_err();
        assert!(
            matches!(&found, TaxError::UnknownItem { line: 4, value } if value == "sms"),
            "{found:?}"
        );
        assert!(found.to_string().contains("outgoing_sms"), "{found}");
        let found = Taxability::from_csv(&csv_with(&[("plan_fee", "yes")])).unwrap_err();
        assert!(
            matches!(&found, TaxError::BadTaxableFlag { line: 10, value } if value == "yes"),
            "{found:?}"
        );
        let found =
            Taxability::from_csv(&format!("{}included_minutes,true\n", csv_with(&[]))).unwrap_err();
        assert!(matches!(found, TaxError::IncludedMinutesListed { line: 17 }), "{found:?}");
        assert!(found.to_string().contains("follows phone_call"));
    }

    #[test]
    fn funds_added_and_sales_tax_cannot_be_taxable() {
        let found = Taxability::from_csv(&csv_with(&[("funds_added", "true")])).unwrap_err();
        assert!(
            matches!(found, TaxError::NeverTaxable { line: 11, item: BillingItem::FundsAdded }),
            "{found:?}"
        );
        assert!(found.to_string().contains("funds_added must be false"), "{found}");
        let found = Taxability::from_csv(&csv_with(&[("sales_tax", "true")])).unwrap_err();
        assert!(
            matches!(found, TaxError::NeverTaxable { line: 9, item: BillingItem::SalesTax }),
            "{found:?}"
        );
        assert!(found.to_string().contains("tax is not taxed"), "{found}");
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taxability.csv");
        std::fs::write(&path, csv_with(&[("refund", "true")])).unwrap();
        assert!(Taxability::load(&path).unwrap().is_taxable(BillingItem::Refund));
        std::fs::write(&path, "item,taxable\nphone_call,maybe\n").unwrap();
        let message = Taxability::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("taxability.csv: line 2: taxable must be true or false"),
            "{message}"
        );
    }
}
