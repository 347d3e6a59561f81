//! A calendar month (UTC), the unit of plan minutes, month totals, sales tax and the
//! auto-recharge cap. Written `YYYY-MM` everywhere it leaves the program (stored documents, queue
//! messages, ids such as `tax:2026-10`), so the serde form is that string.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One calendar month (UTC). Orders by time; `Display` and serde write `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    // Field order is the ordering: year first, then the month's number.
    year: i32,
    /// 1 to 12.
    number: u32,
}

/// Text that is not a `YYYY-MM` month.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a month; use YYYY-MM, such as 2026-10")]
pub struct MonthError {
    /// The first 20 characters of what was given.
    pub value: String,
}

impl Month {
    /// The month `number` (1 to 12) of a four-digit `year` (0 to 9999).
    pub fn new(year: i32, number: u32) -> Option<Month> {
        ((0..=9999).contains(&year) && (1..=12).contains(&number)).then_some(Month { year, number })
    }

    /// The month (UTC) `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Month {
        Month { year: at.year(), number: at.month() }
    }

    /// The month a (UTC) day falls in.
    pub fn of_date(day: chrono::NaiveDate) -> Month {
        Month { year: day.year(), number: day.month() }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    /// 1 (January) to 12 (December).
    pub fn number(self) -> u32 {
        self.number
    }

    pub fn previous(self) -> Month {
        if self.number == 1 {
            Month { year: self.year - 1, number: 12 }
        } else {
            Month { year: self.year, number: self.number - 1 }
        }
    }

    pub fn next(self) -> Month {
        if self.number == 12 {
            Month { year: self.year + 1, number: 1 }
        } else {
            Month { year: self.year, number: self.number + 1 }
        }
    }

    /// The month's first day. Saturates at chrono's last date for a month past it (only the
    /// month after chrono's last one is).
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.number, 1).unwrap_or(if self.year < 0 {
            NaiveDate::MIN
        } else {
            NaiveDate::MAX
        })
    }

    /// The month's first instant (midnight UTC of its first day).
    pub fn start(self) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.first_day().and_time(chrono::NaiveTime::MIN))
    }

    /// The first instant after the month: the next month's start. The month is
    /// `start()..end()`.
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    /// Does `at` fall in this month (UTC).
    pub fn contains(self, at: DateTime<Utc>) -> bool {
        Month::of(at) == self
    }
}

impl fmt::Display for Month {
    /// `YYYY-MM`. A year outside 0 to 9999 (only [`Month::of`] a time that far away makes one)
    /// is written as chrono writes it, with its sign, and does not parse back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (0..=9999).contains(&self.year) {
            write!(f, "{:04}-{:02}", self.year, self.number)
        } else {
            write!(f, "{:+}-{:02}", self.year, self.number)
        }
    }
}

impl FromStr for Month {
    type Err = MonthError;

    /// Exactly `YYYY-MM`: four digits, a hyphen, two digits from 01 to 12.
    fn from_str(s: &str) -> Result<Month, MonthError> {
        let bad = || MonthError { value: s.chars().take(20).collect() };
        let bytes = s.as_bytes();
        let shaped = bytes.len() == 7
            && bytes[4] == b'-'
            && bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit);
        if !shaped {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let number: u32 = s[5..].parse().map_err(|_| bad())?;
        Month::new(year, number).ok_or_else(bad)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Month, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for an `Option<Month>` stored as a string that is empty for `None`: the form records
/// written before the type existed have ("" meant "no month yet"), kept so they read and are
/// written byte for byte as before.
pub mod empty_is_none {
    use super::Month;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        month: &Option<Month>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match month {
            Some(month) => serializer.collect_str(month),
            None => serializer.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Month>, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        if text.is_empty() {
            Ok(None)
        } else {
            text.parse().map(Some).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month(s: &str) -> Month {
        s.parse().unwrap()
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn only_the_yyyy_mm_form_parses() {
        assert_eq!(month("2026-10"), Month::new(2026, 10).unwrap());
        assert_eq!(month("0999-01"), Month::new(999, 1).unwrap());
        assert_eq!(month("0000-12").year(), 0);
        for bad in [
            "",
            "2026",
            "2026-1",
            "2026-00",
            "2026-13",
            "26-10",
            "2026/10",
            "2026-10-01",
            " 2026-10",
            "2026-10 ",
            "+202-10",
            "2026-+1",
            "abcd-ef",
            "-999-01",
            "２０２６-10",
            "soon",
        ] {
            let error = bad.parse::<Month>().unwrap_err();
            assert_eq!(error.value, bad, "{bad:?}");
            assert_eq!(
                error.to_string(),
                format!("{bad:?} is not a month; use YYYY-MM, such as 2026-10")
            );
        }
        let long = "x".repeat(100).parse::<Month>().unwrap_err();
        assert_eq!(long.value.len(), 20, "the error keeps only the start of long text");
        assert_eq!(Month::new(2026, 0), None);
        assert_eq!(Month::new(2026, 13), None);
        assert_eq!(Month::new(10_000, 1), None);
        assert_eq!(Month::new(-1, 1), None);
    }

    #[test]
    fn display_writes_what_parses_back() {
        for text in ["2026-10", "2026-01", "0001-12", "9999-12", "0000-01"] {
            assert_eq!(month(text).to_string(), text);
        }
        assert_eq!(Month::new(7, 3).unwrap().to_string(), "0007-03");
        let far = Month::of(Utc.with_ymd_and_hms(10_000, 1, 15, 0, 0, 0).unwrap());
        assert_eq!(far.to_string(), "+10000-01", "as chrono's %Y-%m writes it");
        assert!(far.to_string().parse::<Month>().is_err());
    }

    #[test]
    fn of_is_the_utc_calendar_month() {
        assert_eq!(Month::of(at("2026-10-01T00:00:00Z")), month("2026-10"));
        assert_eq!(Month::of(at("2026-10-31T23:59:59.999999Z")), month("2026-10"));
        assert_eq!(Month::of(at("2026-11-01T00:30:00+01:00")), month("2026-10"), "UTC, not local");
        assert_eq!(Month::of(at("2027-01-01T00:00:00Z")), month("2027-01"));
        let now = at("2026-11-17T09:30:00Z");
        assert_eq!(Month::of(now).to_string(), now.format("%Y-%m").to_string());
    }

    #[test]
    fn previous_and_next_cross_year_boundaries() {
        assert_eq!(month("2027-01").previous(), month("2026-12"));
        assert_eq!(month("2026-12").next(), month("2027-01"));
        assert_eq!(month("2026-11").previous(), month("2026-10"));
        assert_eq!(month("2026-10").next(), month("2026-11"));
        assert_eq!(month("2026-03").previous(), month("2026-02"));
        for text in ["2026-01", "2026-06", "2026-12", "0001-01"] {
            assert_eq!(month(text).next().previous(), month(text));
            assert_eq!(month(text).previous().next(), month(text));
        }
        let now = |text: &str| Month::of(at(text)).previous();
        assert_eq!(now("2026-11-01T00:00:00Z"), month("2026-10"));
        assert_eq!(now("2027-01-01T00:00:00Z"), month("2026-12"));
        assert_eq!(now("2026-03-31T00:00:00Z"), month("2026-02"));
        let last_instant_of_january = at("2026-01-31T23:59:59.999999Z");
        assert_eq!(Month::of(last_instant_of_january).previous(), month("2025-12"));
    }

    #[test]
    fn a_month_runs_from_its_start_to_the_next_months_start() {
        let october = month("2026-10");
        assert_eq!(october.first_day(), NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
        assert_eq!(october.start(), at("2026-10-01T00:00:00Z"));
        assert_eq!(october.end(), at("2026-11-01T00:00:00Z"));
        assert_eq!(month("2026-12").end(), at("2027-01-01T00:00:00Z"));
        assert!(october.contains(october.start()));
        assert!(october.contains(october.end() - chrono::Duration::microseconds(1)));
        assert!(!october.contains(october.end()));
        assert!(!october.contains(october.start() - chrono::Duration::microseconds(1)));
    }

    #[test]
    fn months_order_by_time() {
        let mut months: Vec<Month> =
            ["2027-01", "2026-10", "2026-12", "2025-12", "2026-02"].map(month).to_vec();
        months.sort();
        let sorted: Vec<String> = months.iter().map(Month::to_string).collect();
        assert_eq!(sorted, ["2025-12", "2026-02", "2026-10", "2026-12", "2027-01"]);
        assert!(month("2026-09") < month("2026-10"));
        assert!(month("2026-12") < month("2027-01"));
        assert!(month("2026-10").previous() < month("2026-10"));
    }

    #[test]
    fn serde_is_the_yyyy_mm_string() {
        let october = month("2026-10");
        assert_eq!(serde_json::to_string(&october).unwrap(), r#""2026-10""#);
        assert_eq!(serde_json::from_str::<Month>(r#""2026-10""#).unwrap(), october);
        let error = serde_json::from_str::<Month>(r#""2026-13""#).unwrap_err().to_string();
        assert!(error.contains("is not a month"), "{error}");
        assert!(serde_json::from_str::<Month>("202610").is_err());
        // Through an owned string too (a `serde_json::Value`, as documents are read).
        let value = serde_json::json!("2026-10");
        assert_eq!(serde_json::from_value::<Month>(value).unwrap(), october);
    }

    #[test]
    fn an_optional_month_stored_empty_reads_as_none() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Record {
            #[serde(with = "empty_is_none")]
            month: Option<Month>,
        }
        let none = Record { month: None };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"month":""}"#);
        assert_eq!(serde_json::from_str::<Record>(r#"{"month":""}"#).unwrap(), none);
        let some = Record { month: Some(month("2026-11")) };
        assert_eq!(serde_json::to_string(&some).unwrap(), r#"{"month":"2026-11"}"#);
        assert_eq!(serde_json::from_str::<Record>(r#"{"month":"2026-11"}"#).unwrap(), some);
        assert!(serde_json::from_str::<Record>(r#"{"month":"November"}"#).is_err());
    }
}
