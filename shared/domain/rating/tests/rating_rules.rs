//! The rating rules, through the crate's public API. Every expected amount is worked out by hand
//! in the comment beside it; nothing here asks the engine's own helpers what to expect.

use std::collections::HashMap;

use ledger::{Amount, BillingItem, Rounding};
use rating::{
    rate, CallRates, Charge, ChargeRule, Direction, DirectionRates, NumberRates, NumberType,
    PremiumFeature, PremiumRates, RateCard, RateCardError, Rated, RatingError, SmsRates, Usage,
    MAX_CALL_SECONDS, MAX_PREFIXES, MAX_RING_THROUGH_ATTEMPTS, MAX_SEGMENTS,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A US number that matches none of the test card's prefixes.
const US: &str = "+15555550100";
const UK_MOBILE: &str = "+447700900123";
const UK_GEOGRAPHIC: &str = "+441632960000";
const US_TOLL_FREE: &str = "+18005550100";

/// The card every test starts from. Prices are deliberately distinct from one another (and from
/// `RateCard::standard()`) so a charge taken from the wrong rate shows up.
fn card() -> RateCard {
    RateCard {
        rounding: Rounding::HalfUp,
        calls: CallRates {
            inbound: DirectionRates {
                per_minute_usd: dec!(0.01),
                by_prefix: HashMap::from([("1800".to_string(), dec!(0.03))]),
            },
            outbound: DirectionRates {
                per_minute_usd: dec!(0.014),
                by_prefix: HashMap::from([
                    ("44".to_string(), dec!(0.04)),
                    ("447".to_string(), dec!(0.12)),
                ]),
            },
            initial_increment_seconds: 60,
            subsequent_increment_seconds: 6,
            minimum_charge_usd: dec!(0),
            surcharge_per_call_usd: dec!(0),
            internal_calls_free: true,
        },
        sms: SmsRates {
            inbound_per_segment_usd: dec!(0.0075),
            outbound_per_segment_usd: dec!(0.0079),
            surcharge_per_message_usd: dec!(0),
        },
        numbers: NumberRates {
            local_purchase_usd: dec!(1.00),
            local_monthly_usd: dec!(1.15),
            toll_free_purchase_usd: dec!(2.00),
            toll_free_monthly_usd: dec!(2.15),
        },
        ring_through_attempt_usd: dec!(0.002),
        premium: PremiumRates {
            transcription_per_minute_usd: dec!(0.05),
            call_recording_per_minute_usd: dec!(0.0025),
            enhanced_caller_id_per_minute_usd: dec!(0.01),
        },
        included_minutes_per_month: 0,
    }
}

/// The test card with one flat outbound rate (no prefixes) and the given increments.
fn flat_card(per_minute_usd: Decimal, initial: u32, subsequent: u32) -> RateCard {
    let mut card = card();
    card.calls.outbound = DirectionRates { per_minute_usd, by_prefix: HashMap::new() };
    card.calls.initial_increment_seconds = initial;
    card.calls.subsequent_increment_seconds = subsequent;
    card
}

fn usd(value: Decimal) -> Amount {
    Amount::new(value).expect("a valid test amount")
}

fn completed(item: BillingItem, value: Decimal, suffix: &'static str) -> Charge {
    Charge { item, amount: usd(value), suffix, rule: ChargeRule::Completed }
}

fn phone_call(value: Decimal) -> Charge {
    completed(BillingItem::PhoneCall, value, "")
}

fn ring(value: Decimal) -> Charge {
    completed(BillingItem::RingThroughAttempt, value, "ring")
}

fn surcharge(value: Decimal) -> Charge {
    completed(BillingItem::CarrierSurcharge, value, "surcharge")
}

fn rated(charges: Vec<Charge>, billed_seconds: u32, included_seconds_used: u32) -> Rated {
    Rated { charges, billed_seconds, included_seconds_used }
}

/// A call event, built with struct-update syntax from one of the constructors.
#[derive(Debug, Clone, Copy)]
struct Call {
    direction: Direction,
    to: &'static str,
    answered: bool,
    duration_seconds: u32,
    ring_through_attempts: u32,
    premium: &'static [PremiumFeature],
    internal: bool,
}

impl Call {
    /// An answered outbound call to a number no prefix matches.
    fn outbound(duration_seconds: u32) -> Self {
        Call {
            direction: Direction::Outbound,
            to: US,
            answered: true,
            duration_seconds,
            ring_through_attempts: 0,
            premium: &[],
            internal: false,
        }
    }

    fn usage(self) -> Usage<'static> {
        Usage::Call {
            direction: self.direction,
            to: self.to,
            answered: self.answered,
            duration_seconds: self.duration_seconds,
            ring_through_attempts: self.ring_through_attempts,
            premium: self.premium,
            internal: self.internal,
        }
    }
}

fn rate_call(
    card: &RateCard,
    call: Call,
    included_seconds_left: u32,
) -> Result<Rated, RatingError> {
    rate(card, &call.usage(), included_seconds_left)
}

// ---------------------------------------------------------------------------------------------
// Billing increments
// ---------------------------------------------------------------------------------------------

#[test]
fn billing_increments_bill_the_initial_block_whole_then_round_up_to_subsequent_blocks() {
    // At 0.06 USD/min a billed second costs exactly 0.001 USD, so amount = billed * 0.001.
    // (initial, subsequent, duration, billed seconds, amount)
    let table: &[(u32, u32, u32, u32, Option<Decimal>)] = &[
        // 60/6
        (60, 6, 0, 0, None),                       // nothing to bill
        (60, 6, 1, 60, Some(dec!(0.06))),          // 1 <= 60 -> 60 s; 60 * 0.001
        (60, 6, 59, 60, Some(dec!(0.06))),         // 59 <= 60 -> 60 s
        (60, 6, 60, 60, Some(dec!(0.06))),         // exactly the initial block
        (60, 6, 61, 66, Some(dec!(0.066))),        // 60 + ceil(1/6)*6 = 66; 66 * 0.001
        (60, 6, 66, 66, Some(dec!(0.066))),        // 60 + ceil(6/6)*6 = 66
        (60, 6, 67, 72, Some(dec!(0.072))),        // 60 + ceil(7/6)*6 = 72
        (60, 6, 72, 72, Some(dec!(0.072))),        // 60 + ceil(12/6)*6 = 72
        (60, 6, 73, 78, Some(dec!(0.078))),        // 60 + ceil(13/6)*6 = 78
        (60, 6, 187, 192, Some(dec!(0.192))),      // 60 + ceil(127/6)*6 = 60 + 22*6 = 192
        (60, 6, 86_400, 86_400, Some(dec!(86.4))), // 60 + ceil(86340/6)*6 = 86400
        // 1/1
        (1, 1, 0, 0, None),                  // nothing to bill
        (1, 1, 1, 1, Some(dec!(0.001))),     // exactly the initial block
        (1, 1, 2, 2, Some(dec!(0.002))),     // 1 + ceil(1/1)*1 = 2
        (1, 1, 61, 61, Some(dec!(0.061))),   // 1 + 60 = 61
        (1, 1, 187, 187, Some(dec!(0.187))), // 1 + 186 = 187
        // 60/60
        (60, 60, 0, 0, None),                 // nothing to bill
        (60, 60, 1, 60, Some(dec!(0.06))),    // 1 <= 60 -> 60 s
        (60, 60, 60, 60, Some(dec!(0.06))),   // exactly the initial block
        (60, 60, 61, 120, Some(dec!(0.12))),  // 60 + ceil(1/60)*60 = 120
        (60, 60, 120, 120, Some(dec!(0.12))), // 60 + ceil(60/60)*60 = 120
        (60, 60, 121, 180, Some(dec!(0.18))), // 60 + ceil(61/60)*60 = 180
        // 30/6
        (30, 6, 0, 0, None),                // nothing to bill
        (30, 6, 1, 30, Some(dec!(0.03))),   // 1 <= 30 -> 30 s
        (30, 6, 30, 30, Some(dec!(0.03))),  // exactly the initial block
        (30, 6, 31, 36, Some(dec!(0.036))), // 30 + ceil(1/6)*6 = 36
        (30, 6, 36, 36, Some(dec!(0.036))), // 30 + ceil(6/6)*6 = 36
        (30, 6, 37, 42, Some(dec!(0.042))), // 30 + ceil(7/6)*6 = 42
        (30, 6, 61, 66, Some(dec!(0.066))), // 30 + ceil(31/6)*6 = 30 + 36 = 66
        // the largest increments a card may set
        (3_600, 3_600, 1, 3_600, Some(dec!(3.6))), // 1 <= 3600 -> 3600 s
        (3_600, 3_600, 3_601, 7_200, Some(dec!(7.2))), // 3600 + ceil(1/3600)*3600 = 7200
    ];
    for &(initial, subsequent, duration, billed, amount) in table {
        let card = flat_card(dec!(0.06), initial, subsequent);
        let expected = rated(amount.map(phone_call).into_iter().collect(), billed, 0);
        assert_eq!(
            rate_call(&card, Call::outbound(duration), 0),
            Ok(expected),
            "{duration} s at {initial}/{subsequent}"
        );
    }
}

#[test]
fn billed_seconds_are_priced_at_the_per_minute_rate_and_rounded_once() {
    // 60/6 at the test card's outbound default of 0.014 USD/min.
    let table: &[(u32, u32, Decimal)] = &[
        (1, 60, dec!(0.014)),     // 60 s; 60/60 * 0.014 = 0.014
        (61, 66, dec!(0.0154)),   // 66 s; 66/60 * 0.014 = 0.0154
        (67, 72, dec!(0.0168)),   // 72 s; 72/60 * 0.014 = 0.0168
        (187, 192, dec!(0.0448)), // 60 + ceil(127/6)*6 = 192 s; 192/60 * 0.014 = 0.0448
        (200, 204, dec!(0.0476)), // 60 + ceil(140/6)*6 = 204 s; 204/60 * 0.014 = 0.0476
    ];
    for &(duration, billed, amount) in table {
        assert_eq!(
            rate_call(&card(), Call::outbound(duration), 0),
            Ok(rated(vec![phone_call(amount)], billed, 0)),
            "{duration} s"
        );
    }
    // 1/1: 61 s; 61/60 * 0.014 = 0.854/60 = 0.014233.. -> half-up 0.0142
    let one_one = flat_card(dec!(0.014), 1, 1);
    assert_eq!(
        rate_call(&one_one, Call::outbound(61), 0),
        Ok(rated(vec![phone_call(dec!(0.0142))], 61, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Unanswered calls and ring-through attempts
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unanswered_call_costs_only_its_ring_through_attempts() {
    let mut card = card();
    card.calls.surcharge_per_call_usd = dec!(0.0025);
    card.calls.minimum_charge_usd = dec!(0.05);
    // (attempts, ring charge)
    let table: &[(u32, Option<Decimal>)] = &[
        (0, None),              // 0 * 0.002 = 0 -> nothing
        (1, Some(dec!(0.002))), // 1 * 0.002
        (3, Some(dec!(0.006))), // 3 * 0.002
        (50, Some(dec!(0.1))),  // 50 * 0.002
    ];
    for &(attempts, ring_usd) in table {
        let call = Call {
            answered: false,
            duration_seconds: 45,
            ring_through_attempts: attempts,
            premium: &[PremiumFeature::Transcription, PremiumFeature::CallRecording],
            ..Call::outbound(0)
        };
        // No call charge, no minimum, no surcharge, no premium, no included minutes used.
        let expected = rated(ring_usd.map(ring).into_iter().collect(), 0, 0);
        assert_eq!(rate_call(&card, call, 600), Ok(expected), "{attempts} attempts");
    }
}

#[test]
fn an_answered_call_of_zero_seconds_costs_only_its_ring_through_attempts() {
    let mut card = card();
    card.calls.surcharge_per_call_usd = dec!(0.0025);
    card.calls.minimum_charge_usd = dec!(0.05);
    let silent = Call { premium: &[PremiumFeature::Transcription], ..Call::outbound(0) };
    assert_eq!(rate_call(&card, silent, 600), Ok(rated(vec![], 0, 0)));

    let rung = Call { ring_through_attempts: 2, ..silent };
    // 2 * 0.002 = 0.004; nothing billed, so no surcharge or premium either
    assert_eq!(rate_call(&card, rung, 600), Ok(rated(vec![ring(dec!(0.004))], 0, 0)));
}

#[test]
fn ring_through_attempts_are_charged_per_attempt_alongside_an_answered_call() {
    let mut card = card();
    card.calls.surcharge_per_call_usd = dec!(0.0025);
    let call = Call { ring_through_attempts: 4, ..Call::outbound(60) };
    let expected = rated(
        vec![
            ring(dec!(0.008)),       // 4 * 0.002
            phone_call(dec!(0.014)), // 60 s; 60/60 * 0.014
            surcharge(dec!(0.0025)), // once per answered call
        ],
        60,
        0,
    );
    assert_eq!(rate_call(&card, call, 0), Ok(expected));
}

// ---------------------------------------------------------------------------------------------
// Per-minute rates: direction and destination prefix
// ---------------------------------------------------------------------------------------------

#[test]
fn the_per_minute_rate_depends_on_the_call_direction() {
    // All 90 s at 60/6: 60 + ceil(30/6)*6 = 90 s = 1.5 min.
    let table: &[(Direction, &str, Decimal)] = &[
        (Direction::Inbound, US, dec!(0.015)), // inbound default: 1.5 * 0.01
        (Direction::Outbound, US, dec!(0.021)), // outbound default: 1.5 * 0.014
        (Direction::Inbound, US_TOLL_FREE, dec!(0.045)), // inbound 1800: 1.5 * 0.03
        (Direction::Outbound, US_TOLL_FREE, dec!(0.021)), // no outbound 1800: 1.5 * 0.014
        (Direction::Inbound, UK_MOBILE, dec!(0.015)), // no inbound 447: 1.5 * 0.01
    ];
    for &(direction, to, amount) in table {
        let call = Call { direction, to, ..Call::outbound(90) };
        assert_eq!(
            rate_call(&card(), call, 0),
            Ok(rated(vec![phone_call(amount)], 90, 0)),
            "{direction:?} to {to}"
        );
    }
}

#[test]
fn the_longest_matching_destination_prefix_sets_the_rate_with_or_without_a_plus() {
    // Outbound prefixes 44 -> 0.04 and 447 -> 0.12, default 0.014; 90 s = 1.5 min billed.
    let table: &[(&str, Decimal)] = &[
        (UK_MOBILE, dec!(0.18)),       // "447" beats "44": 1.5 * 0.12
        ("447700900123", dec!(0.18)),  // same without the plus
        (UK_GEOGRAPHIC, dec!(0.06)),   // only "44" matches: 1.5 * 0.04
        ("441632960000", dec!(0.06)),  // same without the plus
        ("+44", dec!(0.06)),           // the number is exactly the prefix: 1.5 * 0.04
        ("+447", dec!(0.18)),          // exactly the longer prefix: 1.5 * 0.12
        (US, dec!(0.021)),             // no prefix matches: default 1.5 * 0.014
        ("15555550100", dec!(0.021)),  // same without the plus
        ("+4", dec!(0.021)),           // shorter than every prefix: default
        ("", dec!(0.021)),             // empty: default
        ("+33144556677", dec!(0.021)), // France: default
    ];
    for &(to, amount) in table {
        let call = Call { to, ..Call::outbound(90) };
        assert_eq!(
            rate_call(&card(), call, 0),
            Ok(rated(vec![phone_call(amount)], 90, 0)),
            "to {to:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Minimum charge
// ---------------------------------------------------------------------------------------------

#[test]
fn the_minimum_charge_raises_a_short_call_but_not_a_longer_one() {
    // 1/1 at 0.06 USD/min = 0.001 USD/s; minimum 0.005.
    let mut card = flat_card(dec!(0.06), 1, 1);
    card.calls.minimum_charge_usd = dec!(0.005);
    let table: &[(u32, Decimal)] = &[
        (1, dec!(0.005)), // 0.001 < 0.005 -> 0.005
        (4, dec!(0.005)), // 0.004 < 0.005 -> 0.005
        (5, dec!(0.005)), // 0.005 = minimum
        (6, dec!(0.006)), // 0.006 > minimum
        (60, dec!(0.06)), // 0.06 > minimum
    ];
    for &(duration, amount) in table {
        assert_eq!(
            rate_call(&card, Call::outbound(duration), 0),
            Ok(rated(vec![phone_call(amount)], duration, 0)),
            "{duration} s"
        );
    }
}

#[test]
fn the_minimum_charge_does_not_apply_when_included_minutes_cover_the_whole_call() {
    let mut card = flat_card(dec!(0.06), 1, 1);
    card.calls.minimum_charge_usd = dec!(0.005);
    // 4 s billed, 100 s left: all 4 included, nothing charged, no minimum.
    assert_eq!(rate_call(&card, Call::outbound(4), 100), Ok(rated(vec![], 4, 4)));
}

#[test]
fn the_minimum_charge_applies_to_what_is_left_after_included_minutes() {
    let mut card = flat_card(dec!(0.06), 1, 1);
    card.calls.minimum_charge_usd = dec!(0.005);
    // 10 s billed, 8 included, 2 charged: 2 * 0.001 = 0.002 < 0.005 -> 0.005
    assert_eq!(
        rate_call(&card, Call::outbound(10), 8),
        Ok(rated(vec![phone_call(dec!(0.005))], 10, 8))
    );
}

// ---------------------------------------------------------------------------------------------
// Carrier surcharges
// ---------------------------------------------------------------------------------------------

#[test]
fn the_carrier_surcharge_is_charged_once_per_answered_call() {
    let mut card = card();
    card.calls.surcharge_per_call_usd = dec!(0.0025);
    // 187 s -> 192 s; 192/60 * 0.014 = 0.0448; plus one 0.0025 surcharge
    assert_eq!(
        rate_call(&card, Call::outbound(187), 0),
        Ok(rated(vec![phone_call(dec!(0.0448)), surcharge(dec!(0.0025))], 192, 0))
    );
    // A 10-minute call still has one surcharge: 600/60 * 0.014 = 0.14
    assert_eq!(
        rate_call(&card, Call::outbound(600), 0),
        Ok(rated(vec![phone_call(dec!(0.14)), surcharge(dec!(0.0025))], 600, 0))
    );
    // Included minutes cover the minutes, not the carrier's surcharge.
    assert_eq!(
        rate_call(&card, Call::outbound(187), 600),
        Ok(rated(vec![surcharge(dec!(0.0025))], 192, 192))
    );
    // Unanswered: no surcharge.
    let unanswered = Call { answered: false, ..Call::outbound(30) };
    assert_eq!(rate_call(&card, unanswered, 0), Ok(rated(vec![], 0, 0)));
}

#[test]
fn the_sms_carrier_surcharge_is_charged_once_per_message_not_per_segment() {
    let mut card = card();
    card.sms.surcharge_per_message_usd = dec!(0.003);
    let table: &[(u32, Decimal)] = &[
        (1, dec!(0.0079)), // 1 * 0.0079
        (3, dec!(0.0237)), // 3 * 0.0079
        (100, dec!(0.79)), // 100 * 0.0079
    ];
    for &(segments, amount) in table {
        let sms = Usage::Sms { direction: Direction::Outbound, segments };
        let expected = rated(
            vec![
                completed(BillingItem::OutgoingSms, amount, ""),
                surcharge(dec!(0.003)), // once, not segments * 0.003
            ],
            0,
            0,
        );
        assert_eq!(rate(&card, &sms, 0), Ok(expected), "{segments} segments");
    }
}

// ---------------------------------------------------------------------------------------------
// SMS
// ---------------------------------------------------------------------------------------------

#[test]
fn sms_is_charged_per_segment_by_direction() {
    let table: &[(Direction, u32, BillingItem, Decimal)] = &[
        (Direction::Inbound, 1, BillingItem::IncomingSms, dec!(0.0075)), // 1 * 0.0075
        (Direction::Inbound, 2, BillingItem::IncomingSms, dec!(0.015)),  // 2 * 0.0075
        (Direction::Inbound, 100, BillingItem::IncomingSms, dec!(0.75)), // 100 * 0.0075
        (Direction::Outbound, 1, BillingItem::OutgoingSms, dec!(0.0079)), // 1 * 0.0079
        (Direction::Outbound, 7, BillingItem::OutgoingSms, dec!(0.0553)), // 7 * 0.0079
        (Direction::Outbound, 100, BillingItem::OutgoingSms, dec!(0.79)), // 100 * 0.0079
    ];
    for &(direction, segments, item, amount) in table {
        let sms = Usage::Sms { direction, segments };
        assert_eq!(
            rate(&card(), &sms, 600),
            Ok(rated(vec![completed(item, amount, "")], 0, 0)),
            "{direction:?} {segments} segments"
        );
    }
}

#[test]
fn an_sms_without_segments_is_rejected() {
    for direction in [Direction::Inbound, Direction::Outbound] {
        let sms = Usage::Sms { direction, segments: 0 };
        assert_eq!(rate(&card(), &sms, 0), Err(RatingError::NoSegments), "{direction:?}");
    }
}

#[test]
fn an_sms_with_more_than_the_maximum_segments_is_rejected() {
    assert_eq!(MAX_SEGMENTS, 100);
    for segments in [MAX_SEGMENTS + 1, u32::MAX] {
        for direction in [Direction::Inbound, Direction::Outbound] {
            let sms = Usage::Sms { direction, segments };
            assert_eq!(rate(&card(), &sms, 0), Err(RatingError::TooManySegments(segments)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phone numbers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_number_purchase_is_charged_in_advance_and_a_renewal_as_completed_usage() {
    let table: &[(Usage<'static>, Decimal, ChargeRule)] = &[
        (Usage::NumberPurchase { number_type: NumberType::Local }, dec!(1), ChargeRule::InAdvance),
        (
            Usage::NumberPurchase { number_type: NumberType::TollFree },
            dec!(2),
            ChargeRule::InAdvance,
        ),
        (
            Usage::NumberRenewal { number_type: NumberType::Local },
            dec!(1.15),
            ChargeRule::Completed,
        ),
        (
            Usage::NumberRenewal { number_type: NumberType::TollFree },
            dec!(2.15),
            ChargeRule::Completed,
        ),
    ];
    for (usage, amount, rule) in table {
        let charge = Charge {
            item: BillingItem::PhoneNumber,
            amount: usd(*amount),
            suffix: "",
            rule: *rule,
        };
        assert_eq!(rate(&card(), usage, 600), Ok(rated(vec![charge], 0, 0)), "{usage:?}");
    }
}

#[test]
fn a_free_number_produces_no_charge() {
    let mut card = card();
    card.numbers.local_purchase_usd = dec!(0);
    card.numbers.local_monthly_usd = dec!(0);
    for usage in [
        Usage::NumberPurchase { number_type: NumberType::Local },
        Usage::NumberRenewal { number_type: NumberType::Local },
    ] {
        assert_eq!(rate(&card, &usage, 0), Ok(rated(vec![], 0, 0)), "{usage:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Premium features
// ---------------------------------------------------------------------------------------------

#[test]
fn each_premium_feature_is_its_own_charge_per_minute_of_billed_seconds() {
    let call = Call {
        premium: &[
            PremiumFeature::Transcription,
            PremiumFeature::CallRecording,
            PremiumFeature::EnhancedCallerId,
        ],
        ..Call::outbound(87)
    };
    // 87 s at 60/6 -> 60 + ceil(27/6)*6 = 90 s = 1.5 min
    let expected = rated(
        vec![
            phone_call(dec!(0.021)), // 1.5 * 0.014
            completed(BillingItem::PremiumService, dec!(0.075), "transcription"), // 1.5 * 0.05
            // 1.5 * 0.0025 = 0.00375 -> half-up 0.0038
            completed(BillingItem::PremiumService, dec!(0.0038), "call_recording"),
            // 1.5 * 0.01 = 0.015
            completed(BillingItem::PremiumService, dec!(0.015), "enhanced_caller_id"),
        ],
        90,
        0,
    );
    assert_eq!(rate_call(&card(), call, 0), Ok(expected));
}

#[test]
fn premium_charges_follow_the_order_the_features_were_listed_in() {
    let call = Call {
        premium: &[PremiumFeature::EnhancedCallerId, PremiumFeature::Transcription],
        ..Call::outbound(187)
    };
    // 187 s -> 192 s = 3.2 min
    let expected = rated(
        vec![
            phone_call(dec!(0.0448)), // 3.2 * 0.014
            completed(BillingItem::PremiumService, dec!(0.032), "enhanced_caller_id"), // 3.2 * 0.01
            completed(BillingItem::PremiumService, dec!(0.16), "transcription"), // 3.2 * 0.05
        ],
        192,
        0,
    );
    assert_eq!(rate_call(&card(), call, 0), Ok(expected));
}

#[test]
fn premium_features_are_charged_on_billed_seconds_even_when_included_minutes_cover_the_call() {
    let call = Call { premium: &[PremiumFeature::Transcription], ..Call::outbound(187) };
    // 192 s all included: no call charge; transcription 3.2 * 0.05 = 0.16
    let expected =
        rated(vec![completed(BillingItem::PremiumService, dec!(0.16), "transcription")], 192, 192);
    assert_eq!(rate_call(&card(), call, 1_000), Ok(expected));
}

#[test]
fn a_premium_feature_listed_twice_is_rejected() {
    const TWICE: &[PremiumFeature] = &[
        PremiumFeature::Transcription,
        PremiumFeature::CallRecording,
        PremiumFeature::Transcription,
    ];
    let calls = [
        Call { premium: TWICE, ..Call::outbound(60) },
        Call { premium: TWICE, answered: false, ..Call::outbound(0) },
        Call { premium: TWICE, internal: true, ..Call::outbound(60) },
        Call {
            premium: &[PremiumFeature::CallRecording, PremiumFeature::CallRecording],
            ..Call::outbound(60)
        },
    ];
    for call in calls {
        assert_eq!(
            rate_call(&card(), call, 0),
            Err(RatingError::RepeatedPremiumFeature),
            "{call:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Included plan minutes
// ---------------------------------------------------------------------------------------------

#[test]
fn included_minutes_that_cover_the_whole_call_leave_no_call_charge() {
    // 187 s -> 192 s billed.
    for left in [192, 193, 600, u32::MAX] {
        assert_eq!(
            rate_call(&card(), Call::outbound(187), left),
            Ok(rated(vec![], 192, 192)),
            "{left} s left"
        );
    }
    // Inbound calls use included minutes too.
    let inbound = Call { direction: Direction::Inbound, ..Call::outbound(187) };
    assert_eq!(rate_call(&card(), inbound, 600), Ok(rated(vec![], 192, 192)));
}

#[test]
fn a_call_that_runs_out_of_included_minutes_is_charged_only_for_the_remainder() {
    // 187 s -> 192 s billed at 0.014 USD/min.
    // (seconds left, included used, charge)
    let table: &[(u32, u32, Option<Decimal>)] = &[
        (191, 191, Some(dec!(0.0002))), // 1 s charged: 1/60 * 0.014 = 0.000233.. -> 0.0002
        (120, 120, Some(dec!(0.0168))), // 72 s charged: 72/60 * 0.014 = 0.0168
        (60, 60, Some(dec!(0.0308))),   // 132 s charged: 132/60 * 0.014 = 0.0308
        (0, 0, Some(dec!(0.0448))),     // none left: 192/60 * 0.014 = 0.0448
    ];
    for &(left, used, amount) in table {
        assert_eq!(
            rate_call(&card(), Call::outbound(187), left),
            Ok(rated(amount.map(phone_call).into_iter().collect(), 192, used)),
            "{left} s left"
        );
    }
}

#[test]
fn unanswered_calls_use_no_included_minutes() {
    let unanswered = Call { answered: false, ring_through_attempts: 1, ..Call::outbound(30) };
    // 1 * 0.002
    assert_eq!(rate_call(&card(), unanswered, 600), Ok(rated(vec![ring(dec!(0.002))], 0, 0)));
}

// ---------------------------------------------------------------------------------------------
// Internal calls
// ---------------------------------------------------------------------------------------------

#[test]
fn internal_calls_are_free_when_the_card_says_so() {
    let mut card = card();
    card.calls.surcharge_per_call_usd = dec!(0.0025);
    card.calls.minimum_charge_usd = dec!(0.05);
    let call = Call {
        internal: true,
        ring_through_attempts: 3,
        premium: &[PremiumFeature::Transcription],
        ..Call::outbound(187)
    };
    // Nothing at all: no ring fees, minutes, surcharge or premium; no included minutes used.
    assert_eq!(rate_call(&card, call, 600), Ok(rated(vec![], 0, 0)));
    let inbound = Call { direction: Direction::Inbound, ..call };
    assert_eq!(rate_call(&card, inbound, 600), Ok(rated(vec![], 0, 0)));
}

#[test]
fn internal_calls_are_charged_like_any_other_call_when_the_card_does_not_make_them_free() {
    let mut card = card();
    card.calls.internal_calls_free = false;
    card.calls.surcharge_per_call_usd = dec!(0.0025);
    let call = Call {
        internal: true,
        ring_through_attempts: 3,
        premium: &[PremiumFeature::Transcription],
        ..Call::outbound(187)
    };
    // 187 s -> 192 s = 3.2 min
    let expected = rated(
        vec![
            ring(dec!(0.006)),        // 3 * 0.002
            phone_call(dec!(0.0448)), // 3.2 * 0.014
            surcharge(dec!(0.0025)),
            completed(BillingItem::PremiumService, dec!(0.16), "transcription"), // 3.2 * 0.05
        ],
        192,
        0,
    );
    assert_eq!(rate_call(&card, call, 0), Ok(expected));
    // And they use included minutes like any other call: 192 - 120 = 72 s; 72/60 * 0.014.
    let plain = Call { internal: true, ..Call::outbound(187) };
    assert_eq!(
        rate_call(&card, plain, 120),
        Ok(rated(vec![phone_call(dec!(0.0168)), surcharge(dec!(0.0025))], 192, 120))
    );
}

// ---------------------------------------------------------------------------------------------
// Rounding
// ---------------------------------------------------------------------------------------------

#[test]
fn rounding_rules_differ_at_an_exact_midpoint_in_the_fifth_decimal() {
    // Inbound SMS at 0.00005 USD a segment: 1, 3 and 5 segments are exact midpoints.
    // (rounding, segments, charge)
    let sms_table: &[(Rounding, u32, Option<Decimal>)] = &[
        (Rounding::HalfUp, 1, Some(dec!(0.0001))), // 0.00005 -> away from zero
        (Rounding::HalfEven, 1, None),             // 0.00005 -> 0.0000 (0 is even)
        (Rounding::Up, 1, Some(dec!(0.0001))),     // 0.00005 -> up
        (Rounding::Down, 1, None),                 // 0.00005 -> 0.0000
        (Rounding::HalfUp, 3, Some(dec!(0.0002))), // 0.00015 -> 0.0002
        (Rounding::HalfEven, 3, Some(dec!(0.0002))), // 0.00015 -> 0.0002 (1 is odd)
        (Rounding::Up, 3, Some(dec!(0.0002))),     // 0.00015 -> 0.0002
        (Rounding::Down, 3, Some(dec!(0.0001))),   // 0.00015 -> 0.0001
        (Rounding::HalfUp, 5, Some(dec!(0.0003))), // 0.00025 -> 0.0003
        (Rounding::HalfEven, 5, Some(dec!(0.0002))), // 0.00025 -> 0.0002 (2 is even)
        (Rounding::Up, 5, Some(dec!(0.0003))),     // 0.00025 -> 0.0003
        (Rounding::Down, 5, Some(dec!(0.0002))),   // 0.00025 -> 0.0002
    ];
    for &(rounding, segments, amount) in sms_table {
        let mut card = card();
        card.rounding = rounding;
        card.sms.inbound_per_segment_usd = dec!(0.00005);
        let sms = Usage::Sms { direction: Direction::Inbound, segments };
        let expected = amount.map(|a| completed(BillingItem::IncomingSms, a, ""));
        assert_eq!(
            rate(&card, &sms, 0),
            Ok(rated(expected.into_iter().collect(), 0, 0)),
            "{rounding:?} {segments} segments"
        );
    }

    // A call at 0.0003 USD/min, 1/1: 10 s -> 10/60 * 0.0003 = 0.00005 exactly.
    let call_table: &[(Rounding, Option<Decimal>)] = &[
        (Rounding::HalfUp, Some(dec!(0.0001))), // 0.00005 -> away from zero
        (Rounding::HalfEven, None),             // 0.00005 -> 0.0000: no charge
        (Rounding::Up, Some(dec!(0.0001))),     // 0.00005 -> up
        (Rounding::Down, None),                 // 0.00005 -> 0.0000: no charge
    ];
    for &(rounding, amount) in call_table {
        let mut card = flat_card(dec!(0.0003), 1, 1);
        card.rounding = rounding;
        assert_eq!(
            rate_call(&card, Call::outbound(10), 0),
            Ok(rated(amount.map(phone_call).into_iter().collect(), 10, 0)),
            "{rounding:?}"
        );
    }

    // Off the midpoint: 61 s at 1/1, 0.014 USD/min -> 0.854/60 = 0.0142333..
    let off_table: &[(Rounding, Decimal)] = &[
        (Rounding::HalfUp, dec!(0.0142)), // 0.01423.. below the midpoint -> down
        (Rounding::HalfEven, dec!(0.0142)), // 0.01423.. below the midpoint -> down
        (Rounding::Up, dec!(0.0143)),     // any remainder -> up
        (Rounding::Down, dec!(0.0142)),   // truncate
    ];
    for &(rounding, amount) in off_table {
        let mut card = flat_card(dec!(0.014), 1, 1);
        card.rounding = rounding;
        assert_eq!(
            rate_call(&card, Call::outbound(61), 0),
            Ok(rated(vec![phone_call(amount)], 61, 0)),
            "{rounding:?}"
        );
    }
}

#[test]
fn a_charge_that_rounds_to_zero_produces_no_charge() {
    // 1 s at 1/1 and 0.0024 USD/min: 1/60 * 0.0024 = 0.00004 -> half-up 0.0000: no charge, but
    // the second is still billed.
    let card = flat_card(dec!(0.0024), 1, 1);
    assert_eq!(rate_call(&card, Call::outbound(1), 0), Ok(rated(vec![], 1, 0)));

    // The same under Up: 0.00004 -> 0.0001.
    let mut up = card.clone();
    up.rounding = Rounding::Up;
    assert_eq!(
        rate_call(&up, Call::outbound(1), 0),
        Ok(rated(vec![phone_call(dec!(0.0001))], 1, 0))
    );

    // A zero-priced call with a surcharge keeps only the surcharge.
    let mut free_minutes = flat_card(dec!(0), 60, 6);
    free_minutes.calls.surcharge_per_call_usd = dec!(0.0025);
    assert_eq!(
        rate_call(&free_minutes, Call::outbound(187), 0),
        Ok(rated(vec![surcharge(dec!(0.0025))], 192, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_call_longer_than_the_maximum_duration_is_rejected() {
    assert_eq!(MAX_CALL_SECONDS, 86_400);
    for duration in [MAX_CALL_SECONDS + 1, u32::MAX] {
        for answered in [true, false] {
            let call = Call { answered, ..Call::outbound(duration) };
            assert_eq!(rate_call(&card(), call, 0), Err(RatingError::CallTooLong(duration)));
        }
    }
    // Exactly the limit rates: 86400/60 * 0.014 = 1440 * 0.014 = 20.16
    assert_eq!(
        rate_call(&card(), Call::outbound(MAX_CALL_SECONDS), 0),
        Ok(rated(vec![phone_call(dec!(20.16))], 86_400, 0))
    );
}

#[test]
fn more_than_the_maximum_ring_through_attempts_are_rejected() {
    assert_eq!(MAX_RING_THROUGH_ATTEMPTS, 50);
    for attempts in [MAX_RING_THROUGH_ATTEMPTS + 1, u32::MAX] {
        for answered in [true, false] {
            let call = Call { answered, ring_through_attempts: attempts, ..Call::outbound(60) };
            assert_eq!(rate_call(&card(), call, 0), Err(RatingError::TooManyAttempts(attempts)));
        }
    }
    // Exactly the limit: 50 * 0.002 = 0.1, then 60/60 * 0.014 = 0.014
    let call = Call { ring_through_attempts: MAX_RING_THROUGH_ATTEMPTS, ..Call::outbound(60) };
    assert_eq!(
        rate_call(&card(), call, 0),
        Ok(rated(vec![ring(dec!(0.1)), phone_call(dec!(0.014))], 60, 0))
    );
}

#[test]
fn a_charge_above_the_ledger_limit_is_an_error_and_never_dropped() {
    // The most a card may charge per minute: 1000 USD.
    let max_rate = flat_card(dec!(1000), 60, 6);
    // 60000 s = 1000 min * 1000 = 1,000,000 exactly: the ledger's limit, still allowed.
    assert_eq!(
        rate_call(&max_rate, Call::outbound(60_000), 0),
        Ok(rated(vec![phone_call(dec!(1000000))], 60_000, 0))
    );
    // 60001 s -> 60 + ceil(59941/6)*6 = 60006 s = 1000.1 min * 1000 = 1,000,100
    assert_eq!(
        rate_call(&max_rate, Call::outbound(60_001), 0),
        Err(RatingError::ChargeTooLarge(dec!(1000100)))
    );
    // 86400 s = 1440 min * 1000 = 1,440,000
    assert_eq!(
        rate_call(&max_rate, Call::outbound(86_400), 0),
        Err(RatingError::ChargeTooLarge(dec!(1440000)))
    );
    // Included minutes bring the charged part back under the limit: 60006 - 6 = 60000 s charged.
    assert_eq!(
        rate_call(&max_rate, Call::outbound(60_001), 6),
        Ok(rated(vec![phone_call(dec!(1000000))], 60_006, 6))
    );

    // A premium feature over the limit fails the whole event, even when the minutes are cheap
    // or included: 86400 s = 1440 min * 1000 = 1,440,000.
    let mut premium_card = card();
    premium_card.premium.transcription_per_minute_usd = dec!(1000);
    let call = Call { premium: &[PremiumFeature::Transcription], ..Call::outbound(86_400) };
    for left in [0, u32::MAX] {
        assert_eq!(
            rate_call(&premium_card, call, left),
            Err(RatingError::ChargeTooLarge(dec!(1440000))),
            "{left} s left"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rate card validation
// ---------------------------------------------------------------------------------------------

fn bad_rate(field: &str) -> Result<(), RateCardError> {
    Err(RateCardError::BadRate { field: field.to_string() })
}

#[test]
fn validate_rejects_rates_that_are_negative_too_precise_or_too_large() {
    type Edit = fn(&mut RateCard);
    let table: &[(Edit, &str)] = &[
        // negative
        (|c| c.calls.outbound.per_minute_usd = dec!(-0.01), "calls.outbound.per_minute_usd"),
        (|c| c.calls.inbound.per_minute_usd = dec!(-0.000001), "calls.inbound.per_minute_usd"),
        (|c| c.sms.surcharge_per_message_usd = dec!(-1), "sms.surcharge_per_message_usd"),
        (|c| c.ring_through_attempt_usd = dec!(-0.002), "ring_through_attempt_usd"),
        (
            |c| {
                c.calls.outbound.by_prefix.insert("52".to_string(), dec!(-0.09));
            },
            "calls.outbound.by_prefix.52",
        ),
        // 7 decimals
        (|c| c.sms.inbound_per_segment_usd = dec!(0.0000001), "sms.inbound_per_segment_usd"),
        (|c| c.calls.minimum_charge_usd = dec!(0.0050001), "calls.minimum_charge_usd"),
        (
            |c| c.premium.call_recording_per_minute_usd = dec!(0.0025001),
            "premium.call_recording_per_minute_usd",
        ),
        (
            |c| {
                c.calls.inbound.by_prefix.insert("1800".to_string(), dec!(0.0300001));
            },
            "calls.inbound.by_prefix.1800",
        ),
        // above MAX_RATE_USD (1000)
        (
            |c| c.numbers.toll_free_purchase_usd = dec!(1000.000001),
            "numbers.toll_free_purchase_usd",
        ),
        (|c| c.numbers.local_monthly_usd = dec!(1001), "numbers.local_monthly_usd"),
        (
            |c| c.premium.transcription_per_minute_usd = dec!(5000),
            "premium.transcription_per_minute_usd",
        ),
        (
            |c| c.premium.enhanced_caller_id_per_minute_usd = dec!(1000.1),
            "premium.enhanced_caller_id_per_minute_usd",
        ),
        (|c| c.calls.surcharge_per_call_usd = dec!(1000.01), "calls.surcharge_per_call_usd"),
        (|c| c.sms.outbound_per_segment_usd = dec!(1000.5), "sms.outbound_per_segment_usd"),
        (|c| c.numbers.local_purchase_usd = dec!(99999), "numbers.local_purchase_usd"),
        (|c| c.numbers.toll_free_monthly_usd = dec!(-2.15), "numbers.toll_free_monthly_usd"),
    ];
    for (edit, field) in table {
        let mut card = card();
        edit(&mut card);
        assert_eq!(card.validate(), bad_rate(field), "{field}");
    }
}

#[test]
fn validate_accepts_rates_at_their_edges() {
    type Edit = fn(&mut RateCard);
    let table: &[Edit] = &[
        |c| c.calls.outbound.per_minute_usd = dec!(0), // zero is a rate
        |c| c.calls.outbound.per_minute_usd = dec!(1000), // exactly MAX_RATE_USD
        |c| c.calls.outbound.per_minute_usd = dec!(1000.000000), // trailing zeros
        |c| c.sms.inbound_per_segment_usd = dec!(0.000001), // 6 decimals
        |c| c.sms.inbound_per_segment_usd = dec!(0.0000010), // 7 digits, 6 significant
        |c| c.calls.minimum_charge_usd = dec!(999.999999), // under the max, 6 decimals
    ];
    for (i, edit) in table.iter().enumerate() {
        let mut card = card();
        edit(&mut card);
        assert_eq!(card.validate(), Ok(()), "row {i}");
    }
}

#[test]
fn validate_rejects_zero_and_too_large_billing_increments() {
    let table: &[(u32, u32, Result<(), RateCardError>)] = &[
        (0, 6, Err(RateCardError::BadIncrement)),
        (60, 0, Err(RateCardError::BadIncrement)),
        (0, 0, Err(RateCardError::BadIncrement)),
        (3_601, 6, Err(RateCardError::BadIncrement)),
        (60, 3_601, Err(RateCardError::BadIncrement)),
        (u32::MAX, 6, Err(RateCardError::BadIncrement)),
        (1, 1, Ok(())),
        (3_600, 3_600, Ok(())),
    ];
    for &(initial, subsequent, ref expected) in table {
        let mut card = card();
        card.calls.initial_increment_seconds = initial;
        card.calls.subsequent_increment_seconds = subsequent;
        assert_eq!(&card.validate(), expected, "{initial}/{subsequent}");
    }
}

#[test]
fn validate_rejects_prefixes_that_are_not_1_to_15_ascii_digits() {
    let bad = ["", "+44", "44a", "4 4", "١٢", "1234567890123456"];
    for prefix in bad {
        for direction in [Direction::Inbound, Direction::Outbound] {
            let mut card = card();
            let rates = match direction {
                Direction::Inbound => &mut card.calls.inbound,
                Direction::Outbound => &mut card.calls.outbound,
            };
            rates.by_prefix.insert(prefix.to_string(), dec!(0.02));
            assert_eq!(
                card.validate(),
                Err(RateCardError::BadPrefix { prefix: prefix.to_string() }),
                "{direction:?} {prefix:?}"
            );
        }
    }
    for prefix in ["1", "123456789012345"] {
        let mut card = card();
        card.calls.outbound.by_prefix.insert(prefix.to_string(), dec!(0.02));
        assert_eq!(card.validate(), Ok(()), "{prefix:?}");
    }
}

#[test]
fn validate_rejects_more_than_the_maximum_prefixes_per_direction() {
    let mut card = card();
    card.calls.inbound.by_prefix =
        (0..MAX_PREFIXES).map(|i| (format!("9{i}"), dec!(0.01))).collect();
    assert_eq!(card.validate(), Ok(()));
    card.calls.inbound.by_prefix.insert("8".to_string(), dec!(0.01));
    assert_eq!(card.validate(), Err(RateCardError::TooManyPrefixes));
}

#[test]
fn the_standard_card_and_the_test_card_validate() {
    assert_eq!(RateCard::standard().validate(), Ok(()));
    assert_eq!(card().validate(), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rate_card_round_trips_through_json() {
    let mut custom = card();
    custom.rounding = Rounding::HalfEven;
    custom.calls.minimum_charge_usd = dec!(0.005);
    custom.calls.internal_calls_free = false;
    custom.included_minutes_per_month = 500;
    for original in [custom, RateCard::standard()] {
        let json = serde_json::to_string(&original).expect("a card serializes");
        let back: RateCard = serde_json::from_str(&json).expect("a card deserializes");
        assert_eq!(back, original, "{json}");
    }
}

#[test]
fn unknown_fields_in_a_rate_card_are_rejected() {
    let json = serde_json::to_value(card()).expect("a card serializes");
    let paths: &[&[&str]] = &[
        &[],
        &["calls"],
        &["calls", "inbound"],
        &["calls", "outbound"],
        &["sms"],
        &["numbers"],
        &["premium"],
    ];
    for path in paths {
        let mut value = json.clone();
        let mut object = &mut value;
        for key in *path {
            object = object.get_mut(*key).expect("the path exists");
        }
        object
            .as_object_mut()
            .expect("an object")
            .insert("discount_percent".to_string(), serde_json::json!("10"));
        let error = serde_json::from_value::<RateCard>(value).expect_err("unknown field");
        assert!(
            error.to_string().contains("unknown field `discount_percent`"),
            "{path:?}: {error}"
        );
    }
}

#[test]
fn omitted_optional_fields_take_their_defaults() {
    let json = r#"{
        "calls": {
            "inbound": { "per_minute_usd": "0.01" },
            "outbound": { "per_minute_usd": "0.014" },
            "initial_increment_seconds": 60,
            "subsequent_increment_seconds": 6
        },
        "sms": { "inbound_per_segment_usd": "0.0075", "outbound_per_segment_usd": "0.0079" },
        "numbers": {
            "local_purchase_usd": "1.00",
            "local_monthly_usd": "1.15",
            "toll_free_purchase_usd": "2.00",
            "toll_free_monthly_usd": "2.15"
        },
        "premium": {
            "transcription_per_minute_usd": "0.05",
            "call_recording_per_minute_usd": "0.0025",
            "enhanced_caller_id_per_minute_usd": "0.01"
        }
    }"#;
    let parsed: RateCard = serde_json::from_str(json).expect("a minimal card parses");
    let mut expected = card();
    expected.calls.inbound.by_prefix.clear();
    expected.calls.outbound.by_prefix.clear();
    expected.ring_through_attempt_usd = dec!(0);
    assert_eq!(parsed, expected);
    assert_eq!(parsed.rounding, Rounding::HalfUp);
    assert!(parsed.calls.internal_calls_free);
    assert_eq!(parsed.included_minutes_per_month, 0);
}
