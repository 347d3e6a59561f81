//! Money: exact decimal USD, never floats.
//!
//! Every place that rounds names its strategy through [`Rounding`].

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// The most decimal places a ledger amount may carry (rated charges are rounded to 4).
pub const MAX_AMOUNT_SCALE: u32 = 4;

/// The largest single ledger amount, in USD. Anything bigger is a bug or an attack.
pub const MAX_AMOUNT_USD: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// A rounding rule. Rate cards carry one; every rounding in the code names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Half away from zero (the product's default: 0.00005 -> 0.0001).
    #[default]
    HalfUp,
    /// Banker's rounding.
    HalfEven,
    /// Always away from zero (never under-charges).
    Up,
    /// Always toward zero (never over-charges).
    Down,
}

impl Rounding {
    pub fn round(self, value: Decimal, places: u32) -> Decimal {
        let strategy = match self {
            Rounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::Up => RoundingStrategy::AwayFromZero,
            Rounding::Down => RoundingStrategy::ToZero,
        };
        value.round_dp_with_strategy(places, strategy).normalize()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount has more than {MAX_AMOUNT_SCALE} decimal places")]
    TooPrecise,
    #[error("amount must be whole cents (at most 2 decimal places)")]
    NotWholeCents,
    #[error("amount exceeds the limit of {MAX_AMOUNT_USD} USD")]
    TooLarge,
    #[error("amount is not a decimal number")]
    NotANumber,
}

/// A strictly positive USD amount with at most [`MAX_AMOUNT_SCALE`] decimals and at most
/// [`MAX_AMOUNT_USD`]. Direction (debit or credit) is carried by the entry kind, never by a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "Decimal")]
pub struct Amount(Decimal);

impl Amount {
    pub fn new(value: Decimal) -> Result<Self, AmountError> {
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        if value > MAX_AMOUNT_USD {
            return Err(AmountError::TooLarge);
        }
        let value = value.normalize();
        if value.scale() > MAX_AMOUNT_SCALE {
            return Err(AmountError::TooPrecise);
        }
        Ok(Amount(value))
    }

    /// A card payment amount: whole cents only.
    pub fn whole_cents(value: Decimal) -> Result<Self, AmountError> {
        let amount = Self::new(value)?;
        if amount.0.scale() > 2 {
            return Err(AmountError::NotWholeCents);
        }
        Ok(amount)
    }

    /// Round a rated charge once, by the named rule, to `MAX_AMOUNT_SCALE` places.
    /// Returns `None` when the charge rounds to zero (nothing to post).
    pub fn rated(value: Decimal, rounding: Rounding) -> Result<Option<Self>, AmountError> {
        let rounded = rounding.round(value, MAX_AMOUNT_SCALE);
        if rounded.is_zero() {
            return Ok(None);
        }
        Self::new(rounded).map(Some)
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

/// Amounts arrive as decimal strings (`"12.34"`): a JSON number may already have been through
/// a float, so numbers are refused.
impl TryFrom<String> for Amount {
    type Error = AmountError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl TryFrom<Decimal> for Amount {
    type Error = AmountError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Amount::new(value)
    }
}

impl From<Amount> for Decimal {
    fn from(value: Amount) -> Self {
        value.0
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = Decimal::from_str_exact(s.trim()).map_err(|_| AmountError::NotANumber)?;
        Amount::new(value)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Show a balance to the cent (half-up), keeping the stored value exact.
pub fn display_usd(value: Decimal) -> String {
    let cents = Rounding::HalfUp.round(value, 2);
    let sign = if cents.is_sign_negative() && !cents.is_zero() { "-" } else { "" };
    format!("{sign}${:.2}", cents.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amount_rejects_zero_negative_too_precise_and_huge_values() {
        assert_eq!(Amount::new(dec!(0)), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(dec!(-1)), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(dec!(0.00001)), Err(AmountError::TooPrecise));
        assert_eq!(Amount::new(dec!(1000000.0001)), Err(AmountError::TooLarge));
        assert_eq!(Amount::new(dec!(1000000)).map(Amount::value), Ok(dec!(1000000)));
        assert_eq!(Amount::new(dec!(0.0001)).map(Amount::value), Ok(dec!(0.0001)));
    }

    #[test]
    fn trailing_zeros_do_not_count_as_precision() {
        assert_eq!(Amount::new(dec!(1.500000)).map(Amount::value), Ok(dec!(1.5)));
        assert!(Amount::whole_cents(dec!(10.100)).is_ok());
        assert_eq!(Amount::whole_cents(dec!(10.001)), Err(AmountError::NotWholeCents));
    }

    #[test]
    fn rounding_rules_differ_exactly_at_the_midpoint() {
        assert_eq!(Rounding::HalfUp.round(dec!(0.00005), 4), dec!(0.0001));
        assert_eq!(Rounding::HalfEven.round(dec!(0.00005), 4), dec!(0));
        assert_eq!(Rounding::HalfEven.round(dec!(0.00015), 4), dec!(0.0002));
        assert_eq!(Rounding::Up.round(dec!(0.00001), 4), dec!(0.0001));
        assert_eq!(Rounding::Down.round(dec!(0.00019), 4), dec!(0.0001));
    }

    #[test]
    fn rated_charges_round_once_and_zero_means_nothing_to_post() {
        assert_eq!(Amount::rated(dec!(0.00004), Rounding::HalfUp), Ok(None));
        assert_eq!(
            Amount::rated(dec!(0.012345), Rounding::HalfUp).unwrap().map(Amount::value),
            Some(dec!(0.0123))
        );
    }

    #[test]
    fn amounts_parse_exactly_from_strings_and_reject_garbage() {
        assert_eq!("12.34".parse::<Amount>().map(Amount::value), Ok(dec!(12.34)));
        assert_eq!("1e3".parse::<Amount>(), Err(AmountError::NotANumber));
        assert_eq!("NaN".parse::<Amount>(), Err(AmountError::NotANumber));
    }

    #[test]
    fn balances_display_to_the_cent() {
        assert_eq!(display_usd(dec!(14.995)), "$15.00");
        assert_eq!(display_usd(dec!(-0.004)), "$0.00");
        assert_eq!(display_usd(dec!(-2.5)), "-$2.50");
    }
}
