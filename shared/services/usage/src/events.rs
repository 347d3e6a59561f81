//! The telephony usage event schema, version 1 (documented in `docs/usage-events.md`, examples
//! in `tests/fixtures/usage/`). Parsed strictly: unknown fields, types and versions are errors.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use ledger::{AccountId, SourceId};
use rating::{Direction, NumberType, PremiumFeature, Usage};

pub const SCHEMA_VERSION: u32 = 1;
/// Event ids leave room for the charge suffixes (`#surcharge`, `#enhanced_caller_id`, ...)
/// within the ledger's 128-character source ids.
pub const MAX_EVENT_ID_LEN: usize = 96;
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// How far an event's `occurred_at` may lie after the moment the worker received it: the
/// platform's and the worker's clocks differ a little, never by more than this.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 5 * 60;
/// How long before its receipt an event may have occurred: a year of late records, a month
/// of dead-letter re-drives and slack. Older events are refused as garbage (an epoch-0 time).
pub const MAX_EVENT_AGE_DAYS: i64 = 400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("message is {0} bytes; the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("not a usage event: {0}")]
    Malformed(String),
    #[error("unsupported schema version {0}; this worker reads version {SCHEMA_VERSION}")]
    UnsupportedVersion(u32),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{field}: {reason}")]
    BadField { field: &'static str, reason: String },
    /// A future occurrence would make every later event of the account "late" (no included
    /// minutes), so it is refused instead of posted.
    #[error(
        "occurred_at {occurred_at} is more than {MAX_CLOCK_SKEW_SECONDS} s after the event was received ({received_at})"
    )]
    OccursInTheFuture { occurred_at: DateTime<Utc>, received_at: DateTime<Utc> },
    #[error(
        "occurred_at {occurred_at} is more than {MAX_EVENT_AGE_DAYS} days before the event was received ({received_at})"
    )]
    OccurredTooLongAgo { occurred_at: DateTime<Utc>, received_at: DateTime<Utc> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// Checked before the strict parse; declared so the strict parse accepts it.
    #[allow(dead_code)]
    version: u32,
    event_id: String,
    account_id: String,
    occurred_at: DateTime<Utc>,
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub answered: bool,
    pub duration_seconds: u32,
    #[serde(default)]
    pub ring_through_attempts: u32,
    #[serde(default)]
    pub premium: Vec<PremiumFeature>,
    /// Both ends are numbers of the same account.
    #[serde(default)]
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sms {
    pub from: String,
    pub to: String,
    pub segments: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Number {
    pub number: String,
    pub number_type: NumberType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageKind {
    Call(Call),
    SmsIn(Sms),
    SmsOut(Sms),
    NumberPurchase(Number),
    NumberRenewal(Number),
}

impl UsageKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            UsageKind::Call(_) => "call",
            UsageKind::SmsIn(_) => "sms_in",
            UsageKind::SmsOut(_) => "sms_out",
            UsageKind::NumberPurchase(_) => "number_purchase",
            UsageKind::NumberRenewal(_) => "number_renewal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub event_id: SourceId,
    pub account_id: AccountId,
    pub occurred_at: DateTime<Utc>,
    pub kind: UsageKind,
}

fn phone(field: &'static str, value: &str) -> Result<(), EventError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    let valid = (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(EventError::BadField {
            field,
            reason: "must be an E.164 number (+ and 3-15 digits)".into(),
        })
    }
}

fn data<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, EventError> {
    serde_json::from_value(value).map_err(|e| EventError::Malformed(format!("data: {e}")))
}

impl UsageEvent {
    pub fn parse(body: &str) -> Result<Self, EventError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(EventError::TooLarge(body.len()));
        }
        // The version decides the schema, so it is read before the strict parse: a newer
        // message with new fields reports its version, not an unknown field.
        let loose: serde_json::Value =
            serde_json::from_str(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        match loose.get("version").and_then(serde_json::Value::as_u64) {
            Some(version) if version != u64::from(SCHEMA_VERSION) => {
                return Err(EventError::UnsupportedVersion(
                    u32::try_from(version).unwrap_or(u32::MAX),
                ));
            }
            _ => {}
        }
        let envelope: Envelope =
            serde_json::from_value(loose).map_err(|e| EventError::Malformed(e.to_string()))?;
        if envelope.event_id.len() > MAX_EVENT_ID_LEN {
            return Err(EventError::BadField {
                field: "event_id",
                reason: format!("longer than {MAX_EVENT_ID_LEN} characters"),
            });
        }
        let event_id = SourceId::parse(envelope.event_id)
            .map_err(|e| EventError::BadField { field: "event_id", reason: e.to_string() })?;
        let account_id = AccountId::parse(envelope.account_id)
            .map_err(|e| EventError::BadField { field: "account_id", reason: e.to_string() })?;
        let kind = match envelope.event_type.as_str() {
            "call" => {
                let call: Call = data(envelope.data)?;
                phone("data.from", &call.from)?;
                phone("data.to", &call.to)?;
                UsageKind::Call(call)
            }
            "sms_in" | "sms_out" => {
                let sms: Sms = data(envelope.data)?;
                phone("data.from", &sms.from)?;
                phone("data.to", &sms.to)?;
                if envelope.event_type == "sms_in" {
                    UsageKind::SmsIn(sms)
                } else {
                    UsageKind::SmsOut(sms)
                }
            }
            "number_purchase" | "number_renewal" => {
                let number: Number = data(envelope.data)?;
                phone("data.number", &number.number)?;
                if envelope.event_type == "number_purchase" {
                    UsageKind::NumberPurchase(number)
                } else {
                    UsageKind::NumberRenewal(number)
                }
            }
            other => return Err(EventError::UnknownType(other.to_string())),
        };
        Ok(UsageEvent {
            event_id,
            account_id,
            occurred_at: ledger::truncate_to_micros(envelope.occurred_at),
            kind,
        })
    }

    /// Parse `body` and check its occurrence against the moment it was received
    /// ([`UsageEvent::check_occurred_at`]): what the worker does with every message.
    pub fn parse_received(body: &str, received_at: DateTime<Utc>) -> Result<Self, EventError> {
        let event = Self::parse(body)?;
        event.check_occurred_at(received_at)?;
        Ok(event)
    }

    /// An event may have occurred at most [`MAX_CLOCK_SKEW_SECONDS`] after `received_at` and at
    /// most [`MAX_EVENT_AGE_DAYS`] before it.
    pub fn check_occurred_at(&self, received_at: DateTime<Utc>) -> Result<(), EventError> {
        let (occurred_at, received_at) = (self.occurred_at, received_at);
        if occurred_at > received_at + TimeDelta::seconds(MAX_CLOCK_SKEW_SECONDS) {
            return Err(EventError::OccursInTheFuture { occurred_at, received_at });
        }
        if occurred_at < received_at - TimeDelta::days(MAX_EVENT_AGE_DAYS) {
            return Err(EventError::OccurredTooLongAgo { occurred_at, received_at });
        }
        Ok(())
    }

    /// The event as the rating engine sees it.
    pub fn usage(&self) -> Usage<'_> {
        match &self.kind {
            UsageKind::Call(call) => Usage::Call {
                direction: call.direction,
                to: &call.to,
                answered: call.answered,
                duration_seconds: call.duration_seconds,
                ring_through_attempts: call.ring_through_attempts,
                premium: &call.premium,
                internal: call.internal,
            },
            UsageKind::SmsIn(sms) => {
                Usage::Sms { direction: Direction::Inbound, segments: sms.segments }
            }
            UsageKind::SmsOut(sms) => {
                Usage::Sms { direction: Direction::Outbound, segments: sms.segments }
            }
            UsageKind::NumberPurchase(n) => Usage::NumberPurchase { number_type: n.number_type },
            UsageKind::NumberRenewal(n) => Usage::NumberRenewal { number_type: n.number_type },
        }
    }

    /// The month of the occurrence (UTC): the month whose included minutes it uses.
    pub fn month(&self) -> ledger::Month {
        ledger::Month::of(self.occurred_at)
    }
}
