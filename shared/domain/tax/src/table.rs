//! The jurisdiction table: which combined sales tax rate applies to a service address in a
//! month.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{countries, records, TaxError};

/// The most rows the table may have (one per place and effective date).
pub const MAX_TABLE_ROWS: usize = 10_000;
/// The longest jurisdiction name, in characters; it is copied into every tax entry's details.
pub const MAX_NAME_CHARS: usize = 100;
/// The highest rate (exclusive), in percent.
const MAX_RATE_PERCENT: Decimal = Decimal::ONE_HUNDRED;
const MAX_RATE_SCALE: u32 = 4;

const HEADER: &str = "country,region,city,rate_percent,effective_from,name";
const BUNDLED_FILE: &str = "data/jurisdictions.csv (bundled)";

/// How specific the row that matched is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Country,
    Region,
    City,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Country => "country",
            Level::Region => "region",
            Level::City => "city",
        }
    }
}

/// The row of the table that governs an address in a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jurisdiction {
    pub name: String,
    /// The full combined rate for the place (a city's rate replaces its region's).
    pub rate_percent: Decimal,
    pub level: Level,
    /// The 1st of the month the row took effect.
    pub effective_from: NaiveDate,
}

/// A place of the table: a country, a region of it, or a city of a region.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    country: String,
    region: Option<String>,
    /// Trimmed, inner whitespace collapsed, lowercased.
    city: Option<String>,
}

impl Place {
    fn level(&self) -> Level {
        match (&self.region, &self.city) {
            (_, Some(_)) => Level::City,
            (Some(_), None) => Level::Region,
            (None, None) => Level::Country,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rate {
    effective_from: NaiveDate,
    rate_percent: Decimal,
    name: String,
    line: u64,
}

/// The jurisdiction table (see the crate docs for the rules). Load the bundled sample with
/// [`TaxTable::bundled`], the operator's file with [`TaxTable::load`].
///
/// The CSV has the header `country,region,city,rate_percent,effective_from,name`; lines starting
/// with `#` and blank lines are ignored; fields are trimmed and may be quoted (a name with a
/// comma must be).
/// - `country`: an ISO 3166-1 alpha-2 code (`US`, `GB`).
/// - `region`: an ISO 3166-2 subdivision code without the country (`CA`, `NY`, `ON`); blank for
///   a row covering the whole country.
/// - `city`: free text; blank for a row covering the whole region. A city row needs a region.
/// - `rate_percent`: the full combined rate of the place, `0 <= rate < 100`, at most 4
///   decimals. It replaces the rate of the region or country around it, it does not add to it.
/// - `effective_from`: `YYYY-MM-DD`, the 1st of a month. A later row for the same place
///   supersedes the earlier one from that date; a rate of 0 ends a tax.
/// - `name`: shown on the tax entry, 1 to [`MAX_NAME_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxTable {
    /// Each place's rates, sorted by `effective_from`.
    places: BTreeMap<Place, Vec<Rate>>,
}

impl TaxTable {
    /// The sample table shipped in `data/jurisdictions.csv`, embedded at build time.
    pub const BUNDLED_CSV: &'static str = include_str!("../data/jurisdictions.csv");

    /// The bundled sample table. The tests load it, so an error here means the file was edited
    /// without running them.
    pub fn bundled() -> Result<Self, TaxError> {
        Self::from_csv(Self::BUNDLED_CSV).map_err(|error| TaxError::InFile {
            file: BUNDLED_FILE.to_string(),
            error: Box::new(error),
        })
    }

    /// The table in the CSV file at `path`. Errors name the file and the line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TaxError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| TaxError::Read { path: path.to_path_buf(), error })?;
        Self::from_csv(&text).map_err(|error| TaxError::InFile {
            file: path.display().to_string(),
            error: Box::new(error),
        })
    }

    /// The table in CSV text. Errors name the line.
    pub fn from_csv(text: &str) -> Result<Self, TaxError> {
        let mut places: BTreeMap<Place, Vec<Rate>> = BTreeMap::new();
        for record in records::read(text, HEADER, MAX_TABLE_ROWS)? {
            let line = record.line;
            let [country, region, city, rate, effective_from, name] = &record.fields[..] else {
                unreachable!("records::read checks the column count");
            };
            let place = parse_place(line, country, region, city)?;
            let rate_percent = parse_rate(line, rate)?;
            let effective_from = parse_effective_from(line, effective_from)?;
            let name = parse_name(line, name)?;
            let rates = places.entry(place).or_default();
            if let Some(earlier) = rates.iter().find(|r| r.effective_from == effective_from) {
                return Err(TaxError::DuplicatePlace {
                    line,
                    first_line: earlier.line,
                    place: describe_place(country, region, city),
                    date: effective_from,
                });
            }
            rates.push(Rate { effective_from, rate_percent, name, line });
        }
        for rates in places.values_mut() {
            rates.sort_by_key(|rate| rate.effective_from);
        }
        Ok(TaxTable { places })
    }

    /// The row that governs an address in `month` (`YYYY-MM`): the most specific level with a
    /// row in effect on the 1st of the month (city, then region, then country), and within it
    /// the row with the latest `effective_from` on or before that day.
    ///
    /// `country` and `region` are compared trimmed and case-insensitively; `city` trimmed, with
    /// inner runs of whitespace as one space, and case-insensitively. A blank `region` or `city`
    /// skips that level. `None` when no level has a row in effect. A row with rate 0 still governs: the
    /// place is untaxed from its date, whatever the levels around it say.
    pub fn jurisdiction(
        &self,
        country: &str,
        region: Option<&str>,
        city: &str,
        month: ledger::Month,
    ) -> Option<Jurisdiction> {
        let first_day = month.first_day();
        let country = country.trim().to_ascii_uppercase();
        let region = region.map(|r| r.trim().to_ascii_uppercase()).filter(|r| !r.is_empty());
        let city = Some(city_key(city)).filter(|c| !c.is_empty());

        let mut candidates = Vec::with_capacity(3);
        if let (Some(region), Some(city)) = (&region, &city) {
            candidates.push(Place {
                country: country.clone(),
                region: Some(region.clone()),
                city: Some(city.clone()),
            });
        }
        if let Some(region) = &region {
            candidates.push(Place {
                country: country.clone(),
                region: Some(region.clone()),
                city: None,
            });
        }
        candidates.push(Place { country, region: None, city: None });

        candidates.into_iter().find_map(|place| {
            let rates = self.places.get(&place)?;
            let rate = rates.iter().rev().find(|rate| rate.effective_from <= first_day)?;
            Some(Jurisdiction {
                name: rate.name.clone(),
                rate_percent: rate.rate_percent,
                level: place.level(),
                effective_from: rate.effective_from,
            })
        })
    }

    /// How many rows the table has.
    pub fn len(&self) -> usize {
        self.places.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

fn city_key(city: &str) -> String {
    city.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn describe_place(country: &str, region: &str, city: &str) -> String {
    [country, region, city]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

fn parse_place(line: u64, country: &str, region: &str, city: &str) -> Result<Place, TaxError> {
    if !countries::is_country_code(country) {
        return Err(TaxError::BadCountry {
            line,
            value: country.to_string(),
            hint: countries::hint(country),
        });
    }
    let region_valid = (1..=3).contains(&region.len())
        && region.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !region.is_empty() && !region_valid {
        return Err(TaxError::BadRegion { line, value: region.to_string() });
    }
    if region.is_empty() && !city.is_empty() {
        return Err(TaxError::CityWithoutRegion { line, city: city.to_string() });
    }
    Ok(Place {
        country: country.to_string(),
        region: Some(region.to_string()).filter(|r| !r.is_empty()),
        city: Some(city_key(city)).filter(|c| !c.is_empty()),
    })
}

fn parse_rate(line: u64, value: &str) -> Result<Decimal, TaxError> {
    let bad = |problem| TaxError::BadRate { line, value: value.to_string(), problem };
    // Plain decimal notation only: the parser would also take `1_000` and `7e0`.
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("is not a decimal number such as 7.25 (no % sign)"));
    }
    let rate = Decimal::from_str_exact(value)
        .map_err(|_| bad("is not a decimal number such as 7.25 (no % sign)"))?;
    if rate < Decimal::ZERO || rate >= MAX_RATE_PERCENT {
        return Err(bad("must be at least 0 and below 100"));
    }
    let rate = if rate.is_zero() { Decimal::ZERO } else { rate.normalize() };
    if rate.scale() > MAX_RATE_SCALE {
        return Err(bad("has more than 4 decimal places"));
    }
    Ok(rate)
}

fn parse_effective_from(line: u64, value: &str) -> Result<NaiveDate, TaxError> {
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|_| shaped)
        .ok_or_else(|| TaxError::BadDate { line, value: value.to_string() })?;
    if date.day() != 1 {
        return Err(TaxError::NotFirstOfMonth { line, date });
    }
    Ok(date)
}

fn parse_name(line: u64, value: &str) -> Result<String, TaxError> {
    if value.is_empty() {
        return Err(TaxError::BadName { line, problem: "is empty; every row needs one" });
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(TaxError::BadName { line, problem: "is longer than 100 characters" });
    }
    if value.chars().any(char::is_control) {
        return Err(TaxError::BadName {
            line,
            problem: "contains a line break or control character",
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const HEAD: &str = "country,region,city,rate_percent,effective_from,name\n";

    fn m(text: &str) -> ledger::Month {
        text.parse().unwrap()
    }

    fn table(rows: &str) -> TaxTable {
        TaxTable::from_csv(&format!("{HEAD}{rows}")).unwrap()
    }

    fn error(rows: &str) -> TaxError {
        TaxTable::from_csv(&format!("{HEAD}{rows}")).unwrap_err()
    }

    fn date(y: i32, m: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, 1).unwrap()
    }

    #[test]
    fn the_bundled_table_loads_with_the_sample_rows() {
        let table = TaxTable::bundled().unwrap();
        assert_eq!(table.len(), 10);
        let nyc = table.jurisdiction("US", Some("NY"), "New York", m("2026-10")).unwrap();
        assert_eq!(nyc.name, "New York, NY (state and city)");
        assert_eq!(nyc.rate_percent, dec!(8.875));
        assert_eq!(nyc.level, Level::City);
        let gb = table.jurisdiction("GB", None, "London", m("2026-10")).unwrap();
        assert_eq!((gb.rate_percent, gb.level), (dec!(20), Level::Country));
        assert_eq!(table.jurisdiction("US", Some("OR"), "Portland", m("2026-10")), None);
    }

    #[test]
    fn a_city_row_beats_its_region_and_a_region_row_beats_its_country() {
        let table = table(
            "US,NY,,4,2024-01-01,New York State\n\
             US,NY,New York,8.875,2024-01-01,New York City\n\
             GB,,,20,2024-01-01,UK VAT\n\
             GB,SCT,,21,2024-01-01,Scotland (sample)\n",
        );
        let city = table.jurisdiction("US", Some("NY"), "New York", m("2026-10")).unwrap();
        assert_eq!((city.level, city.rate_percent), (Level::City, dec!(8.875)));
        let region = table.jurisdiction("US", Some("NY"), "Buffalo", m("2026-10")).unwrap();
        assert_eq!((region.level, region.rate_percent), (Level::Region, dec!(4)));
        assert_eq!(region.name, "New York State");
        let region = table.jurisdiction("GB", Some("SCT"), "Glasgow", m("2026-10")).unwrap();
        assert_eq!((region.level, region.rate_percent), (Level::Region, dec!(21)));
        let country = table.jurisdiction("GB", Some("WLS"), "Cardiff", m("2026-10")).unwrap();
        assert_eq!((country.level, country.rate_percent), (Level::Country, dec!(20)));
        let country = table.jurisdiction("GB", None, "", m("2026-10")).unwrap();
        assert_eq!(country.level, Level::Country);
    }

    #[test]
    fn cities_match_trimmed_and_case_insensitively_but_only_in_their_region() {
        let table = table(
            "US,NY,,4,2024-01-01,New York State\n\
             US,NY,New York,8.875,2024-01-01,New York City\n",
        );
        for city in ["new york", "  NEW YORK ", "New  York", "nEw YoRk"] {
            let found = table.jurisdiction("US", Some("NY"), city, m("2026-10")).unwrap();
            assert_eq!(found.level, Level::City, "{city:?}");
        }
        assert_eq!(
            table.jurisdiction("us", Some(" ny "), "new york", m("2026-10")).unwrap().level,
            Level::City
        );
        // The same city name in another region, or without a region, is not that city.
        assert_eq!(table.jurisdiction("US", Some("NJ"), "New York", m("2026-10")), None);
        assert_eq!(table.jurisdiction("US", None, "New York", m("2026-10")), None);
        assert_eq!(table.jurisdiction("US", Some(""), "New York", m("2026-10")), None);
        assert_eq!(
            table.jurisdiction("US", Some("NY"), "", m("2026-10")).unwrap().level,
            Level::Region
        );
    }

    #[test]
    fn a_later_row_supersedes_from_its_effective_month() {
        let table = TaxTable::bundled().unwrap();
        let rate =
            |month| table.jurisdiction("US", Some("WA"), "Seattle", month).map(|j| j.rate_percent);
        assert_eq!(rate(m("2026-09")), Some(dec!(6.5)));
        assert_eq!(rate(m("2026-10")), Some(dec!(6.75)));
        assert_eq!(rate(m("2027-03")), Some(dec!(6.75)));
        let before = table.jurisdiction("US", Some("WA"), "Seattle", m("2026-09")).unwrap();
        assert_eq!(before.effective_from, date(2024, 1));
        let after = table.jurisdiction("US", Some("WA"), "Seattle", m("2026-10")).unwrap();
        assert_eq!(after.effective_from, date(2026, 10));
        // Before the first row there is nothing in effect.
        assert_eq!(rate(m("2023-12")), None);
    }

    #[test]
    fn rows_in_any_order_are_sorted_by_date() {
        let table = table(
            "US,WA,,6.75,2026-10-01,Washington (new)\n\
             US,WA,,6.5,2024-01-01,Washington\n",
        );
        let rate = |month| table.jurisdiction("US", Some("WA"), "", month).unwrap().rate_percent;
        assert_eq!(rate(m("2026-09")), dec!(6.5));
        assert_eq!(rate(m("2026-10")), dec!(6.75));
    }

    #[test]
    fn a_city_row_not_yet_in_effect_falls_back_to_the_region() {
        let table = table(
            "US,NY,,4,2024-01-01,New York State\n\
             US,NY,New York,8.875,2026-10-01,New York City\n",
        );
        let september = table.jurisdiction("US", Some("NY"), "New York", m("2026-09")).unwrap();
        assert_eq!((september.level, september.rate_percent), (Level::Region, dec!(4)));
        let october = table.jurisdiction("US", Some("NY"), "New York", m("2026-10")).unwrap();
        assert_eq!((october.level, october.rate_percent), (Level::City, dec!(8.875)));
    }

    #[test]
    fn a_zero_rate_ends_a_tax_and_still_governs_the_place() {
        let table = table(
            "US,TX,,6.25,2024-01-01,Texas\n\
             US,TX,,0,2026-07-01,Texas (repealed)\n",
        );
        let june = table.jurisdiction("US", Some("TX"), "Austin", m("2026-06")).unwrap();
        assert_eq!(june.rate_percent, dec!(6.25));
        let july = table.jurisdiction("US", Some("TX"), "Austin", m("2026-07")).unwrap();
        assert_eq!(july.rate_percent, Decimal::ZERO);
        assert_eq!(july.name, "Texas (repealed)");
    }

    #[test]
    fn no_row_at_any_level_finds_nothing() {
        let table = TaxTable::bundled().unwrap();
        assert_eq!(table.jurisdiction("US", None, "Chicago", m("2026-10")), None);
        assert_eq!(table.jurisdiction("DE", Some("BE"), "Berlin", m("2026-10")), None);
        assert!(table.jurisdiction("US", Some("CA"), "", m("2026-10")).is_some());
    }

    #[test]
    fn quoted_names_keep_their_commas() {
        let table = table("CA,BC,,12,2024-01-01,\"British Columbia (GST 5%, PST 7%)\"\n");
        let found = table.jurisdiction("CA", Some("BC"), "Vancouver", m("2026-01")).unwrap();
        assert_eq!(found.name, "British Columbia (GST 5%, PST 7%)");
    }

    #[test]
    fn jurisdictions_serialize_with_the_rate_as_a_string() {
        let found = table("US,CA,,7.25,2024-01-01,California\n")
            .jurisdiction("US", Some("CA"), "", m("2026-10"))
            .unwrap();
        assert_eq!(
            serde_json::to_value(&found).unwrap(),
            serde_json::json!({
                "name": "California",
                "rate_percent": "7.25",
                "level": "region",
                "effective_from": "2024-01-01"
            })
        );
    }

    #[test]
    fn bad_country_codes_are_rejected_with_their_line() {
        let rows = "# a comment\nUS,CA,,7.25,2024-01-01,California\nUK,,,20,2024-01-01,UK VAT\n";
        let found = error(rows);
        assert!(matches!(&found, TaxError::BadCountry { line: 4, value, .. } if value == "UK"));
        let message = found.to_string();
        assert!(message.starts_with("line 4: country \"UK\""), "{message}");
        assert!(message.contains("GB"), "{message}");
        assert!(matches!(error("USA,,,1,2024-01-01,x\n"), TaxError::BadCountry { line: 2, .. }));
        assert!(matches!(error("us,,,1,2024-01-01,x\n"), TaxError::BadCountry { line: 2, .. }));
        assert!(matches!(error(",CA,,1,2024-01-01,x\n"), TaxError::BadCountry { line: 2, .. }));
    }

    #[test]
    fn bad_regions_and_cities_without_a_region_are_rejected() {
        let found = error("US,US-CA,,7.25,2024-01-01,California\n");
        assert!(matches!(&found, TaxError::BadRegion { line: 2, value } if value == "US-CA"));
        assert!(found.to_string().contains("without the country"), "{found}");
        assert!(matches!(error("US,ca,,7.25,2024-01-01,x\n"), TaxError::BadRegion { line: 2, .. }));
        assert!(matches!(error("US,CALI,,7.25,2024-01-01,x\n"), TaxError::BadRegion { .. }));
        let found = error("US,,Chicago,10.25,2024-01-01,Chicago\n");
        assert!(
            matches!(&found, TaxError::CityWithoutRegion { line: 2, city } if city == "Chicago")
        );
    }

    #[test]
    fn bad_rates_are_rejected_with_the_reason() {
        let cases = [
            ("abc", "not a decimal number"),
            ("7.25%", "not a decimal number"),
            ("", "not a decimal number"),
            ("7e0", "not a decimal number"),
            ("1_0", "not a decimal number"),
            ("1.2.3", "not a decimal number"),
            ("-1", "at least 0 and below 100"),
            ("100", "at least 0 and below 100"),
            ("150.5", "at least 0 and below 100"),
            ("7.12345", "more than 4 decimal places"),
        ];
        for (rate, problem) in cases {
            let found = error(&format!("\nUS,CA,,{rate},2024-01-01,California\n"));
            assert!(
                matches!(&found, TaxError::BadRate { line: 3, value, .. } if value == rate),
                "{rate}: {found:?}"
            );
            assert!(found.to_string().contains(problem), "{rate}: {found}");
        }
        // Trailing zeros are not precision, and the edges of the range are fine.
        let table = table(
            "US,CA,,7.250000,2024-01-01,a\nUS,TX,,0,2024-01-01,b\nUS,NY,,99.9999,2024-01-01,c\n",
        );
        assert_eq!(
            table
                .jurisdiction("US", Some("CA"), "", m("2024-01"))
                .unwrap()
                .rate_percent
                .to_string(),
            "7.25"
        );
        assert_eq!(
            table.jurisdiction("US", Some("NY"), "", m("2024-01")).unwrap().rate_percent,
            dec!(99.9999)
        );
    }

    #[test]
    fn effective_dates_must_be_real_dates_on_the_first_of_a_month() {
        for value in [
            "2026-02-30",
            "2026/10/01",
            "01-10-2026",
            "2026-10",
            "",
            "2026-1-01",
            "2026-10-01T00:00",
        ] {
            let found = error(&format!("US,CA,,7.25,{value},California\n"));
            assert!(
                matches!(&found, TaxError::BadDate { line: 2, value: v } if v == value),
                "{value}: {found:?}"
            );
        }
        let found = error("US,WA,,6.5,2024-01-01,Washington\nUS,WA,,6.75,2026-10-15,Washington\n");
        assert!(matches!(found, TaxError::NotFirstOfMonth { line: 3, .. }), "{found:?}");
        let message = found.to_string();
        assert!(
            message.starts_with("line 3: effective_from 2026-10-15 is not the 1st of a month"),
            "{message}"
        );
        assert!(message.contains("mid-month change"), "{message}");
        assert!(message.contains("2026-10-01") && message.contains("2026-11-01"), "{message}");
        let december = error("US,WA,,6.75,2026-12-31,Washington\n").to_string();
        assert!(december.contains("2027-01-01"), "{december}");
    }

    #[test]
    fn one_row_per_place_and_date() {
        let found = error(
            "US,NY,New York,8.875,2024-01-01,NYC\n\
             US,NY,,4,2024-01-01,New York State\n\
             US,NY, new york ,9,2024-01-01,NYC again\n",
        );
        assert!(
            matches!(&found, TaxError::DuplicatePlace { line: 4, first_line: 2, place, .. } if place == "US/NY/new york"),
            "{found:?}"
        );
        let message = found.to_string();
        assert!(
            message.contains("line 4")
                && message.contains("(line 2)")
                && message.contains("2024-01-01"),
            "{message}"
        );
        // The same place on another date, and the same date in other places, are fine.
        table("US,NY,,4,2024-01-01,a\nUS,NY,,4.5,2025-01-01,b\nUS,,,1,2024-01-01,c\nUS,NJ,,6,2024-01-01,d\n");
    }

    #[test]
    fn names_are_required_and_bounded() {
        let found = error("US,CA,,7.25,2024-01-01,\n");
        assert!(matches!(found, TaxError::BadName { line: 2, .. }));
        assert!(found.to_string().contains("empty"));
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert!(matches!(
            error(&format!("US,CA,,7.25,2024-01-01,{long}\n")),
            TaxError::BadName { line: 2, .. }
        ));
        let found = error("US,CA,,7.25,2024-01-01,\"two\nlines\"\n");
        assert!(matches!(found, TaxError::BadName { line: 2, .. }), "{found:?}");
        table(&format!("US,CA,,7.25,2024-01-01,{}\n", "é".repeat(MAX_NAME_CHARS)));
    }

    #[test]
    fn the_header_and_column_count_are_checked() {
        let found = TaxTable::from_csv("US,CA,,7.25,2024-01-01,California\n").unwrap_err();
        assert!(matches!(found, TaxError::BadHeader { line: 1, .. }));
        let found =
            TaxTable::from_csv("country,region,city,rate,effective_from,name\n").unwrap_err();
        assert!(found.to_string().contains("rate_percent"), "{found}");
        let found = error("US,CA,7.25,2024-01-01,California\n");
        assert!(matches!(found, TaxError::WrongColumnCount { line: 2, expected: 6, found: 5, .. }));
        // A header alone is an empty table, not an error.
        assert!(TaxTable::from_csv(HEAD).unwrap().is_empty());
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.csv");
        std::fs::write(&good, format!("{HEAD}US,CA,,7.25,2024-01-01,California\n")).unwrap();
        let table = TaxTable::load(&good).unwrap();
        assert_eq!(
            table.jurisdiction("US", Some("CA"), "", m("2026-01")).unwrap().rate_percent,
            dec!(7.25)
        );

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, format!("{HEAD}US,CA,,7.25,2024-01-02,California\n")).unwrap();
        let found = TaxTable::load(&bad).unwrap_err();
        let message = found.to_string();
        assert!(message.contains("bad.csv: line 2: effective_from"), "{message}");
        assert!(
            matches!(found, TaxError::InFile { error, .. } if matches!(*error, TaxError::NotFirstOfMonth { line: 2, .. }))
        );

        let missing = dir.path().join("missing.csv");
        let found = TaxTable::load(&missing).unwrap_err();
        assert!(matches!(found, TaxError::Read { .. }));
        assert!(found.to_string().contains("missing.csv"), "{found}");
    }
}
