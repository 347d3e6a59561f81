//! The rating engine: a rate card and the pure pricing of one usage event.
//!
//! Every rated charge is computed exactly and rounded once, here, by the card's rounding rule to
//! the ledger's 4 decimals ([`ledger::Amount::rated`]). No I/O, no clock, no allocation beyond
//! the returned charges.

mod cards;
pub use cards::{RateCards, RateCardsError};
use std::collections::HashMap;

use ledger::{Amount, BillingItem, Rounding};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Upper bound on any single rate, in USD (per minute, per segment, per item).
pub const MAX_RATE_USD: Decimal = Decimal::from_parts(1_000, 0, 0, false, 0);
/// The longest billing increment a card may set.
pub const MAX_INCREMENT_SECONDS: u32 = 3_600;
/// The longest call rated (24 h); longer reports are rejected as malformed.
pub const MAX_CALL_SECONDS: u32 = 86_400;
pub const MAX_SEGMENTS: u32 = 100;
pub const MAX_RING_THROUGH_ATTEMPTS: u32 = 50;
pub const MAX_PREFIXES: usize = 10_000;
/// Included minutes a month cannot exceed a 31-day month of talk.
pub const MAX_INCLUDED_MINUTES_PER_MONTH: u32 = 31 * 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    Local,
    TollFree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PremiumFeature {
    Transcription,
    CallRecording,
    EnhancedCallerId,
}

impl PremiumFeature {
    pub fn as_str(self) -> &'static str {
        match self {
            PremiumFeature::Transcription => "transcription",
            PremiumFeature::CallRecording => "call_recording",
            PremiumFeature::EnhancedCallerId => "enhanced_caller_id",
        }
    }
}

/// Per-minute rates for one call direction: a default and longest-prefix overrides keyed by
/// the destination number in E.164 without the `+` (e.g. `44` for the UK, `1800` toll-free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionRates {
    pub per_minute_usd: Decimal,
    #[serde(default)]
    pub by_prefix: HashMap<String, Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRates {
    pub inbound: DirectionRates,
    pub outbound: DirectionRates,
    /// Billing increments: the first `initial` seconds are billed whole, then blocks of
    /// `subsequent` seconds (60/6, 1/1, 60/60, ...).
    pub initial_increment_seconds: u32,
    pub subsequent_increment_seconds: u32,
    /// The least a charged call costs (after included minutes), before rounding.
    #[serde(default)]
    pub minimum_charge_usd: Decimal,
    /// Carrier surcharge per answered call.
    #[serde(default)]
    pub surcharge_per_call_usd: Decimal,
    /// Calls between two numbers of the same account cost nothing.
    #[serde(default = "yes")]
    pub internal_calls_free: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsRates {
    pub inbound_per_segment_usd: Decimal,
    pub outbound_per_segment_usd: Decimal,
    /// Carrier surcharge per message (not per segment).
    #[serde(default)]
    pub surcharge_per_message_usd: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRates {
    pub local_purchase_usd: Decimal,
    pub local_monthly_usd: Decimal,
    pub toll_free_purchase_usd: Decimal,
    pub toll_free_monthly_usd: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PremiumRates {
    pub transcription_per_minute_usd: Decimal,
    pub call_recording_per_minute_usd: Decimal,
    pub enhanced_caller_id_per_minute_usd: Decimal,
}

/// An account's rate card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCard {
    #[serde(default)]
    pub rounding: Rounding,
    pub calls: CallRates,
    pub sms: SmsRates,
    pub numbers: NumberRates,
    #[serde(default)]
    pub ring_through_attempt_usd: Decimal,
    pub premium: PremiumRates,
    /// Call minutes included in the plan each calendar month (UTC), inbound and outbound alike.
    #[serde(default)]
    pub included_minutes_per_month: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateCardError {
    #[error("{field} must be between 0 and {MAX_RATE_USD} USD with at most 6 decimals")]
    BadRate { field: String },
    #[error("billing increments must be between 1 and {MAX_INCREMENT_SECONDS} seconds")]
    BadIncrement,
    #[error("prefix {prefix:?} must be 1 to 15 digits")]
    BadPrefix { prefix: String },
    #[error("at most {MAX_PREFIXES} prefixes per direction")]
    TooManyPrefixes,
    #[error("included minutes per month must be at most {MAX_INCLUDED_MINUTES_PER_MONTH}")]
    TooManyIncludedMinutes,
}

fn check_rate(field: &str, value: Decimal) -> Result<(), RateCardError> {
    if value < Decimal::ZERO || value > MAX_RATE_USD || value.normalize().scale() > 6 {
        return Err(RateCardError::BadRate { field: field.to_string() });
    }
    Ok(())
}

impl RateCard {
    /// Check every rate and increment; a card that passes cannot make the engine misbehave.
    pub fn validate(&self) -> Result<(), RateCardError> {
        let c = &self.calls;
        for (name, direction) in [("inbound", &c.inbound), ("outbound", &c.outbound)] {
            check_rate(&format!("calls.{name}.per_minute_usd"), direction.per_minute_usd)?;
            if direction.by_prefix.len() > MAX_PREFIXES {
                return Err(RateCardError::TooManyPrefixes);
            }
            for (prefix, rate) in &direction.by_prefix {
                let digits = !prefix.is_empty()
                    && prefix.len() <= 15
                    && prefix.bytes().all(|b| b.is_ascii_digit());
                if !digits {
                    return Err(RateCardError::BadPrefix { prefix: prefix.clone() });
                }
                check_rate(&format!("calls.{name}.by_prefix.{prefix}"), *rate)?;
            }
        }
        for increment in [c.initial_increment_seconds, c.subsequent_increment_seconds] {
            if increment == 0 || increment > MAX_INCREMENT_SECONDS {
                return Err(RateCardError::BadIncrement);
            }
        }
        let rates = [
            ("calls.minimum_charge_usd", c.minimum_charge_usd),
            ("calls.surcharge_per_call_usd", c.surcharge_per_call_usd),
            ("sms.inbound_per_segment_usd", self.sms.inbound_per_segment_usd),
            ("sms.outbound_per_segment_usd", self.sms.outbound_per_segment_usd),
            ("sms.surcharge_per_message_usd", self.sms.surcharge_per_message_usd),
            ("numbers.local_purchase_usd", self.numbers.local_purchase_usd),
            ("numbers.local_monthly_usd", self.numbers.local_monthly_usd),
            ("numbers.toll_free_purchase_usd", self.numbers.toll_free_purchase_usd),
            ("numbers.toll_free_monthly_usd", self.numbers.toll_free_monthly_usd),
            ("ring_through_attempt_usd", self.ring_through_attempt_usd),
            ("premium.transcription_per_minute_usd", self.premium.transcription_per_minute_usd),
            ("premium.call_recording_per_minute_usd", self.premium.call_recording_per_minute_usd),
            (
                "premium.enhanced_caller_id_per_minute_usd",
                self.premium.enhanced_caller_id_per_minute_usd,
            ),
        ];
        for (field, value) in rates {
            check_rate(field, value)?;
        }
        if self.included_minutes_per_month > MAX_INCLUDED_MINUTES_PER_MONTH {
            return Err(RateCardError::TooManyIncludedMinutes);
        }
        Ok(())
    }

    /// The per-minute rate for a call to `destination` (digits, optionally with a leading `+`):
    /// the longest matching prefix, else the direction's default.
    pub fn per_minute_usd(&self, direction: Direction, destination: &str) -> Decimal {
        let rates = match direction {
            Direction::Inbound => &self.calls.inbound,
            Direction::Outbound => &self.calls.outbound,
        };
        if rates.by_prefix.is_empty() {
            return rates.per_minute_usd;
        }
        let digits = destination.strip_prefix('+').unwrap_or(destination);
        let longest = digits.len().min(15);
        for length in (1..=longest).rev() {
            if let Some(rate) = digits.get(..length).and_then(|p| rates.by_prefix.get(p)) {
                return *rate;
            }
        }
        rates.per_minute_usd
    }

    /// Seconds billed for a call of `duration_seconds` under the card's increments.
    pub fn billed_seconds(&self, duration_seconds: u32) -> u32 {
        let initial = self.calls.initial_increment_seconds;
        let subsequent = self.calls.subsequent_increment_seconds;
        if duration_seconds == 0 {
            0
        } else if duration_seconds <= initial {
            initial
        } else {
            initial + (duration_seconds - initial).div_ceil(subsequent) * subsequent
        }
    }

    /// A card a new account gets until an operator sets one (list prices).
    pub fn standard() -> Self {
        let d = |s: &str| Decimal::from_str_exact(s).expect("valid literal");
        RateCard {
            rounding: Rounding::HalfUp,
            calls: CallRates {
                inbound: DirectionRates {
                    per_minute_usd: d("0.0085"),
                    by_prefix: HashMap::from([
                        ("1800".into(), d("0.022")),
                        ("1888".into(), d("0.022")),
                        ("1877".into(), d("0.022")),
                    ]),
                },
                outbound: DirectionRates {
                    per_minute_usd: d("0.014"),
                    by_prefix: HashMap::from([("44".into(), d("0.04")), ("52".into(), d("0.09"))]),
                },
                initial_increment_seconds: 60,
                subsequent_increment_seconds: 6,
                minimum_charge_usd: Decimal::ZERO,
                surcharge_per_call_usd: d("0.0025"),
                internal_calls_free: true,
            },
            sms: SmsRates {
                inbound_per_segment_usd: d("0.0079"),
                outbound_per_segment_usd: d("0.0079"),
                surcharge_per_message_usd: d("0.003"),
            },
            numbers: NumberRates {
                local_purchase_usd: d("1.15"),
                local_monthly_usd: d("1.15"),
                toll_free_purchase_usd: d("2.15"),
                toll_free_monthly_usd: d("2.15"),
            },
            ring_through_attempt_usd: d("0.002"),
            premium: PremiumRates {
                transcription_per_minute_usd: d("0.05"),
                call_recording_per_minute_usd: d("0.0025"),
                enhanced_caller_id_per_minute_usd: d("0.01"),
            },
            included_minutes_per_month: 0,
        }
    }
}

/// What a usage event is, for rating. (The wire format lives with the usage worker.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage<'a> {
    Call {
        direction: Direction,
        to: &'a str,
        answered: bool,
        duration_seconds: u32,
        ring_through_attempts: u32,
        premium: &'a [PremiumFeature],
        internal: bool,
    },
    Sms {
        direction: Direction,
        segments: u32,
    },
    NumberPurchase {
        number_type: NumberType,
    },
    NumberRenewal {
        number_type: NumberType,
    },
}

/// Why a posting of this charge is refused below the floor or always posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeRule {
    /// Completed usage: always posts.
    Completed,
    /// Asked for in advance (a number purchase): refused below the floor.
    InAdvance,
}

/// One rated charge: what to debit, how much (rounded once), and a suffix that makes its source
/// id unique within the event (`""` for the main charge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub item: BillingItem,
    pub amount: Amount,
    pub suffix: &'static str,
    pub rule: ChargeRule,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rated {
    pub charges: Vec<Charge>,
    /// Seconds billed for the call (after increments), 0 for anything else.
    pub billed_seconds: u32,
    /// Included plan seconds this event used up.
    pub included_seconds_used: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("call duration {0} s exceeds the {MAX_CALL_SECONDS} s limit")]
    CallTooLong(u32),
    #[error("{0} segments exceed the limit of {MAX_SEGMENTS}")]
    TooManySegments(u32),
    #[error("{0} ring-through attempts exceed the limit of {MAX_RING_THROUGH_ATTEMPTS}")]
    TooManyAttempts(u32),
    #[error("a message has at least one segment")]
    NoSegments,
    #[error("a charge of {0} USD exceeds the ledger's single-amount limit")]
    ChargeTooLarge(Decimal),
    #[error("the same premium feature is listed twice")]
    RepeatedPremiumFeature,
}

fn per_minute(rate_usd: Decimal, seconds: u32) -> Decimal {
    rate_usd * Decimal::from(seconds) / Decimal::from(60)
}

/// Rate one event. `included_seconds_left` is what remains of the month's plan minutes.
pub fn rate(
    card: &RateCard,
    usage: &Usage<'_>,
    included_seconds_left: u32,
) -> Result<Rated, RatingError> {
    let mut rated = Rated::default();
    let mut overflow = None;
    let mut charge = |item, value: Decimal, suffix, rule| {
        // Each charge is rounded once, here, by the card's rule; zero rounds to nothing.
        match Amount::rated(value, card.rounding) {
            Ok(Some(amount)) => rated.charges.push(Charge { item, amount, suffix, rule }),
            Ok(None) => {}
            Err(_) => overflow = Some(value),
        }
    };
    match *usage {
        Usage::Call {
            direction,
            to,
            answered,
            duration_seconds,
            ring_through_attempts,
            premium,
            internal,
        } => {
            if duration_seconds > MAX_CALL_SECONDS {
                return Err(RatingError::CallTooLong(duration_seconds));
            }
            if ring_through_attempts > MAX_RING_THROUGH_ATTEMPTS {
                return Err(RatingError::TooManyAttempts(ring_through_attempts));
            }
            for (i, feature) in premium.iter().enumerate() {
                if premium[..i].contains(feature) {
                    return Err(RatingError::RepeatedPremiumFeature);
                }
            }
            if internal && card.calls.internal_calls_free {
                return Ok(rated);
            }
            let attempts = Decimal::from(ring_through_attempts);
            charge(
                BillingItem::RingThroughAttempt,
                card.ring_through_attempt_usd * attempts,
                "ring",
                ChargeRule::Completed,
            );
            let billed = if answered { card.billed_seconds(duration_seconds) } else { 0 };
            if billed == 0 {
                return match overflow {
                    Some(value) => Err(RatingError::ChargeTooLarge(value)),
                    None => Ok(rated),
                };
            }
            let included = billed.min(included_seconds_left);
            let charged_seconds = billed - included;
            if charged_seconds > 0 {
                let raw = per_minute(card.per_minute_usd(direction, to), charged_seconds);
                let value = raw.max(card.calls.minimum_charge_usd);
                charge(BillingItem::PhoneCall, value, "", ChargeRule::Completed);
            }
            charge(
                BillingItem::CarrierSurcharge,
                card.calls.surcharge_per_call_usd,
                "surcharge",
                ChargeRule::Completed,
            );
            for feature in premium {
                let rate_usd = match feature {
                    PremiumFeature::Transcription => card.premium.transcription_per_minute_usd,
                    PremiumFeature::CallRecording => card.premium.call_recording_per_minute_usd,
                    PremiumFeature::EnhancedCallerId => {
                        card.premium.enhanced_caller_id_per_minute_usd
                    }
                };
                charge(
                    BillingItem::PremiumService,
                    per_minute(rate_usd, billed),
                    feature.as_str(),
                    ChargeRule::Completed,
                );
            }
            rated.billed_seconds = billed;
            rated.included_seconds_used = included;
        }
        Usage::Sms { direction, segments } => {
            if segments == 0 {
                return Err(RatingError::NoSegments);
            }
            if segments > MAX_SEGMENTS {
                return Err(RatingError::TooManySegments(segments));
            }
            let (item, per_segment) = match direction {
                Direction::Inbound => (BillingItem::IncomingSms, card.sms.inbound_per_segment_usd),
                Direction::Outbound => {
                    (BillingItem::OutgoingSms, card.sms.outbound_per_segment_usd)
                }
            };
            charge(item, per_segment * Decimal::from(segments), "", ChargeRule::Completed);
            charge(
                BillingItem::CarrierSurcharge,
                card.sms.surcharge_per_message_usd,
                "surcharge",
                ChargeRule::Completed,
            );
        }
        Usage::NumberPurchase { number_type } => {
            let price = match number_type {
                NumberType::Local => card.numbers.local_purchase_usd,
                NumberType::TollFree => card.numbers.toll_free_purchase_usd,
            };
            charge(BillingItem::PhoneNumber, price, "", ChargeRule::InAdvance);
        }
        Usage::NumberRenewal { number_type } => {
            let price = match number_type {
                NumberType::Local => card.numbers.local_monthly_usd,
                NumberType::TollFree => card.numbers.toll_free_monthly_usd,
            };
            charge(BillingItem::PhoneNumber, price, "", ChargeRule::Completed);
        }
    }
    if let Some(value) = overflow {
        return Err(RatingError::ChargeTooLarge(value));
    }
    Ok(rated)
}
