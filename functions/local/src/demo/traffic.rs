//! A day of telephony traffic for the demo: usage messages of schema v1 (the platform's wire
//! format, `docs/usage-events.md`), built from types and serialized as the platform sends them.

use chrono::{DateTime, Duration, Utc};
use ledger::AccountId;
use serde::Serialize;

/// One usage message (schema v1).
#[derive(Serialize)]
struct UsageMessage<'a> {
    version: u32,
    event_id: String,
    account_id: &'a AccountId,
    occurred_at: String,
    #[serde(flatten)]
    usage: Usage,
}

/// The event's `type` and its `data`.
#[derive(Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Usage {
    Call(Call),
    SmsIn(Sms),
    SmsOut(Sms),
    NumberPurchase(Number),
    NumberRenewal(Number),
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Premium {
    CallRecording,
    EnhancedCallerId,
    Transcription,
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum NumberType {
    Local,
    TollFree,
}

#[derive(Serialize)]
struct Call {
    direction: Direction,
    from: String,
    to: String,
    answered: bool,
    duration_seconds: u64,
    #[serde(skip_serializing_if = "is_zero")]
    ring_through_attempts: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    premium: Vec<Premium>,
    #[serde(skip_serializing_if = "is_false")]
    internal: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Call {
    fn answered(direction: Direction, from: &str, to: &str, duration_seconds: u64) -> Self {
        Call {
            direction,
            from: from.to_string(),
            to: to.to_string(),
            answered: true,
            duration_seconds,
            ring_through_attempts: 0,
            premium: Vec::new(),
            internal: false,
        }
    }

    fn with_premium(mut self, premium: Option<Premium>) -> Self {
        self.premium.extend(premium);
        self
    }
}

#[derive(Serialize)]
struct Sms {
    from: String,
    to: String,
    segments: u64,
}

#[derive(Serialize)]
struct Number {
    number: &'static str,
    number_type: NumberType,
}

/// A small deterministic generator (xorshift64*): the same day every run.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn percent(&mut self) -> u64 {
        self.below(100)
    }
    /// A number in the area `prefix`.
    fn number(&mut self, prefix: &str) -> String {
        format!("{prefix}{:04}", self.below(10_000))
    }
}

/// Calls per hour of the UTC day, relative: quiet nights, a business-day peak.
const HOURLY_WEIGHT: [u64; 24] =
    [2, 1, 1, 1, 1, 2, 4, 8, 12, 15, 16, 15, 12, 13, 15, 15, 13, 10, 7, 5, 4, 3, 3, 2];

/// The account's main number, and its toll-free number.
const OURS: &str = "+14155550100";
const TOLL_FREE: &str = "+18005550100";
const AREAS: [&str; 6] = ["+1415555", "+1212555", "+1312555", "+1617555", "+1206555", "+1512555"];

/// `count` usage messages (schema v1) spread over `day`, in time order: mostly calls (local,
/// long-distance, international, toll-free, unanswered with ring-through attempts, internal,
/// some with premium services), SMS both ways, a number renewal and a number purchase.
pub fn day_of_traffic(id: &AccountId, stamp: i64, day: DateTime<Utc>, count: usize) -> Vec<String> {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let total_weight: u64 = HOURLY_WEIGHT.iter().sum();
    let mut times: Vec<DateTime<Utc>> = (0..count)
        .map(|_| {
            let mut pick = dice.below(total_weight);
            let mut hour = 0;
            while pick >= HOURLY_WEIGHT[hour] {
                pick -= HOURLY_WEIGHT[hour];
                hour += 1;
            }
            let micros = dice.below(3_600_000_000) as i64;
            day + Duration::hours(hour as i64) + Duration::microseconds(micros)
        })
        .collect();
    times.sort();
    times
        .into_iter()
        .enumerate()
        .map(|(i, at)| {
            let usage = if i == 0 {
                Usage::NumberRenewal(Number {
                    number: TOLL_FREE,
                    number_type: NumberType::TollFree,
                })
            } else if i == count / 3 {
                Usage::NumberPurchase(Number {
                    number: "+14155550142",
                    number_type: NumberType::Local,
                })
            } else {
                traffic(&mut dice)
            };
            let message = UsageMessage {
                version: usage::events::SCHEMA_VERSION,
                event_id: format!("day-{stamp}-{i:05}"),
                account_id: id,
                occurred_at: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                usage,
            };
            serde_json::to_string(&message).expect("a usage message serializes")
        })
        .collect()
}

/// One call or SMS. The draws happen in a fixed order, so the day is the same every run.
fn traffic(dice: &mut Dice) -> Usage {
    use Direction::{Inbound, Outbound};
    let area = AREAS[dice.below(AREAS.len() as u64) as usize];
    let short = 15 + dice.below(180);
    let long = 300 + dice.below(1_500);
    let duration = if dice.percent() < 15 { long } else { short };
    match dice.percent() {
        0..=33 => Usage::Call(Call::answered(Outbound, OURS, &dice.number(area), duration)),
        34..=41 => {
            let to = dice.number(area);
            Usage::Call(Call {
                answered: false,
                duration_seconds: 0,
                ring_through_attempts: 1 + dice.below(3),
                ..Call::answered(Outbound, OURS, &to, 0)
            })
        }
        42..=45 => {
            let country = if dice.percent() < 70 { "+447700900" } else { "+5255123" };
            let to = format!("{country}{:03}", dice.below(1_000));
            let duration = 60 + dice.below(840);
            let recording = (dice.percent() < 40).then_some(Premium::CallRecording);
            Usage::Call(Call::answered(Outbound, OURS, &to, duration).with_premium(recording))
        }
        46..=59 => {
            let from = dice.number(area);
            let caller_id = (dice.percent() < 10).then_some(Premium::EnhancedCallerId);
            Usage::Call(Call::answered(Inbound, &from, OURS, duration).with_premium(caller_id))
        }
        60..=63 => {
            let from = dice.number(area);
            let duration = 45 + dice.below(400);
            let call = Call::answered(Inbound, &from, TOLL_FREE, duration);
            Usage::Call(call.with_premium(Some(Premium::Transcription)))
        }
        64..=65 => Usage::Call(Call {
            internal: true,
            ..Call::answered(Outbound, OURS, "+14155550101", duration)
        }),
        66..=84 => {
            let to = dice.number(area);
            let segments = if dice.percent() < 80 { 1 } else { 2 + dice.below(2) };
            Usage::SmsOut(Sms { from: OURS.to_string(), to, segments })
        }
        _ => {
            let from = dice.number(area);
            let segments = if dice.percent() < 85 { 1 } else { 2 };
            Usage::SmsIn(Sms { from, to: OURS.to_string(), segments })
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use ledger::AccountId;
    use usage::events::{UsageEvent, UsageKind};

    use super::day_of_traffic;

    #[test]
    fn every_message_of_the_day_is_a_valid_usage_event_of_every_kind() {
        let id = AccountId::parse("demo-1").unwrap();
        let day = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let bodies = day_of_traffic(&id, 1, day, 600);
        assert_eq!(bodies.len(), 600);
        let events: Vec<UsageEvent> =
            bodies.iter().map(|body| UsageEvent::parse(body).expect(body)).collect();
        assert!(events.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at), "time order");
        assert!(events.iter().all(|e| e.account_id == id));
        let kinds: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e.kind.type_name()).collect();
        let all = ["call", "number_purchase", "number_renewal", "sms_in", "sms_out"];
        assert_eq!(kinds, all.into_iter().collect());
        let call = |test: fn(&usage::events::Call) -> bool| {
            events.iter().any(|e| matches!(&e.kind, UsageKind::Call(c) if test(c)))
        };
        assert!(call(|c| c.internal), "an internal call");
        assert!(call(|c| !c.answered && c.ring_through_attempts > 0), "ring-through attempts");
        assert!(call(|c| !c.premium.is_empty()), "a premium service");
        assert_eq!(day_of_traffic(&id, 1, day, 600), bodies, "the same day every run");
    }
}
