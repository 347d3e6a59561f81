//! The telephony usage event schema, version 1 (documented in `docs/usage-events.md`, examples
//! in `tests/fixtures/usage/`). Parsed strictly: unknown fields, types and versions are errors.
//!
//! A queue message holds one event ([`UsageEvent`]) or a batch envelope of up to
//! [`MAX_EVENTS_PER_BATCH`] of them ([`UsageMessage`]).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use ledger::{AccountId, SourceId};
use rating::{Direction, NumberType, PremiumFeature, Usage};

pub const SCHEMA_VERSION: u32 = 1;
/// Event ids leave room for the charge suffixes (`#surcharge`, `#enhanced_caller_id`, ...)
/// within the ledger's 128-character source ids.
pub const MAX_EVENT_ID_LEN: usize = 96;
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// A batch envelope's limit: one 64 KiB chunk, which SQS bills as one request (a larger message
/// is billed per started 64 KiB, so it would save nothing per event), well inside SQS's message
/// limit, and a full Lambda batch of 100 such messages stays near the 6 MB invocation payload.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Events in one batch envelope: at most one store call per account for a whole envelope
/// (`worker::MAX_EVENTS_PER_POST`), and a Lambda batch of 100 envelopes stays a bounded amount of
/// work for one invocation.
pub const MAX_EVENTS_PER_BATCH: usize = 100;
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
    #[error(
        "message is {0} bytes; the limit is {MAX_BATCH_BYTES} for a batch envelope ({MAX_MESSAGE_BYTES} for a single event)"
    )]
    BatchTooLarge(usize),
    #[error("batch holds {0} events; a batch holds 1 to {MAX_EVENTS_PER_BATCH}")]
    BatchCount(usize),
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
    /// The authorization (hold) this event reports, when the platform took one.
    #[serde(default)]
    authorization_id: Option<String>,
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
    /// The hold `POST /v1/authorizations` placed for this call, message or purchase: posting
    /// the event settles it.
    pub authorization_id: Option<String>,
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

/// The longest authorization id the platform may use.
pub const MAX_AUTHORIZATION_ID_LEN: usize = 64;

/// An authorization id: 1 to 64 of `A-Z a-z 0-9 - _ . :` (the platform's call or message id).
pub fn check_authorization_id(id: &str) -> Result<String, &'static str> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    if id.is_empty() || id.len() > MAX_AUTHORIZATION_ID_LEN || !id.bytes().all(allowed) {
        return Err("must be 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.', ':'");
    }
    Ok(id.to_string())
}

fn check_version(loose: &serde_json::Value) -> Result<(), EventError> {
    match loose.get("version").and_then(serde_json::Value::as_u64) {
        Some(version) if version != u64::from(SCHEMA_VERSION) => {
            Err(EventError::UnsupportedVersion(u32::try_from(version).unwrap_or(u32::MAX)))
        }
        _ => Ok(()),
    }
}

fn data<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, EventError> {
    serde_json::from_value(value).map_err(|e| EventError::Malformed(format!("data: {e}")))
}

impl UsageEvent {
    /// Parse a single-event message (a batch envelope is [`UsageMessage::parse`]'s).
    pub fn parse(body: &str) -> Result<Self, EventError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(EventError::TooLarge(body.len()));
        }
        let loose: serde_json::Value =
            serde_json::from_str(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        Self::from_value(loose)
    }

    /// One event from its loosely parsed JSON: a message's body or one element of a batch.
    fn from_value(loose: serde_json::Value) -> Result<Self, EventError> {
        // The version decides the schema, so it is read before the strict parse: a newer
        // message with new fields reports its version, not an unknown field.
        check_version(&loose)?;
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
        let authorization_id = match envelope.authorization_id {
            None => None,
            Some(id) => Some(check_authorization_id(&id).map_err(|reason| {
                EventError::BadField { field: "authorization_id", reason: reason.into() }
            })?),
        };
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
            authorization_id,
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

/// The batch envelope: `{"version": 1, "batch": [<event>, ...]}`, each element exactly what a
/// single-event message holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope {
    /// Checked before the strict parse; declared so the strict parse accepts it.
    #[allow(dead_code)]
    version: u32,
    batch: Vec<serde_json::Value>,
}

/// One event of a batch envelope that cannot be used, and which one it is.
/// How reasons and logs name the event at `index` of a batch envelope: `batch[3] (event "e-1")`.
pub fn batch_event_label(index: usize, event_id: Option<&str>) -> String {
    match event_id {
        Some(id) => format!("batch[{index}] (event {id:?})"),
        None => format!("batch[{index}]"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {error}", batch_event_label(*index, event_id.as_deref()))]
pub struct BatchEventError {
    /// The event's position in the envelope, from 0.
    pub index: usize,
    /// Its `event_id`, when it has a string one (even an invalid one: it is for the logs).
    pub event_id: Option<String>,
    pub error: EventError,
}

/// What one queue message holds: one event, or a batch envelope of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageMessage {
    Event(UsageEvent),
    /// The envelope's events in order, each parsed and checked on its own: one bad event does
    /// not hide the others, but it fails the message (see the worker).
    Batch(Vec<Result<UsageEvent, BatchEventError>>),
}

impl UsageMessage {
    /// Parse a message body. An `Err` is the message as a whole: not JSON, a single event that
    /// is wrong, or an envelope that is (too large, another version, unknown fields, no events
    /// or too many). A well-formed envelope is `Ok` even when some of its events are not.
    pub fn parse(body: &str) -> Result<Self, EventError> {
        Self::parse_with(body, |_| Ok(()))
    }

    /// [`UsageMessage::parse`], then every event checked against the moment the message was
    /// received ([`UsageEvent::check_occurred_at`]): what the worker does with every message.
    pub fn parse_received(body: &str, received_at: DateTime<Utc>) -> Result<Self, EventError> {
        Self::parse_with(body, |event| event.check_occurred_at(received_at))
    }

    fn parse_with(
        body: &str,
        check: impl Fn(&UsageEvent) -> Result<(), EventError>,
    ) -> Result<Self, EventError> {
        if body.len() > MAX_BATCH_BYTES {
            return Err(EventError::BatchTooLarge(body.len()));
        }
        let loose: serde_json::Value =
            serde_json::from_str(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        if loose.get("batch").is_none() {
            if body.len() > MAX_MESSAGE_BYTES {
                return Err(EventError::TooLarge(body.len()));
            }
            let event = UsageEvent::from_value(loose)?;
            check(&event)?;
            return Ok(UsageMessage::Event(event));
        }
        check_version(&loose)?;
        let envelope: BatchEnvelope = serde_json::from_value(loose)
            .map_err(|e| EventError::Malformed(format!("batch envelope: {e}")))?;
        if envelope.batch.is_empty() || envelope.batch.len() > MAX_EVENTS_PER_BATCH {
            return Err(EventError::BatchCount(envelope.batch.len()));
        }
        let events = envelope
            .batch
            .into_iter()
            .enumerate()
            .map(|(index, element)| {
                let event_id =
                    element.get("event_id").and_then(serde_json::Value::as_str).map(str::to_owned);
                UsageEvent::from_value(element)
                    .and_then(|event| check(&event).map(|()| event))
                    .map_err(|error| BatchEventError { index, event_id, error })
            })
            .collect();
        Ok(UsageMessage::Batch(events))
    }
}
