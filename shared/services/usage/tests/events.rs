//! The usage event schema (version 1, `docs/usage-events.md`): every fixture parses to the kind
//! it names, and every way a message can be wrong gives one precise `EventError`.

mod common;

use common::*;
use rating::{Direction, NumberType, PremiumFeature};
use usage::events::{
    Call, EventError, Number, Sms, UsageEvent, UsageKind, MAX_CLOCK_SKEW_SECONDS,
    MAX_EVENT_AGE_DAYS, MAX_EVENT_ID_LEN, MAX_MESSAGE_BYTES,
};

fn parse(body: &str) -> UsageEvent {
    UsageEvent::parse(body).unwrap_or_else(|e| panic!("{body} should parse: {e}"))
}

fn error(body: &str) -> EventError {
    match UsageEvent::parse(body) {
        Ok(event) => panic!("{body} should not parse, got {event:?}"),
        Err(error) => error,
    }
}

/// An outbound call envelope with `data` swapped in.
fn call_with(data: &str) -> String {
    envelope("evt-1", "acme", "2026-11-03T14:05:09Z", "call", data)
}

fn bad_field(error: EventError) -> &'static str {
    match error {
        EventError::BadField { field, .. } => field,
        other => panic!("expected a BadField error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The fixtures
// ---------------------------------------------------------------------------------------------

#[test]
fn the_outbound_call_fixture_parses_to_a_call_with_its_defaults() {
    let event = parse(CALL_OUTBOUND);
    assert_eq!(event.event_id.as_str(), "evt-call-out-1");
    assert_eq!(event.account_id.as_str(), "acme");
    assert_eq!(event.occurred_at, at("2026-11-03T14:05:09Z"));
    assert_eq!(event.month().to_string(), "2026-11");
    assert_eq!(
        event.kind,
        UsageKind::Call(Call {
            direction: Direction::Outbound,
            from: "+14155550100".into(),
            to: "+14155550123".into(),
            answered: true,
            duration_seconds: 187,
            ring_through_attempts: 0,
            premium: vec![],
            internal: false,
        })
    );
    assert_eq!(event.kind.type_name(), "call");
}

#[test]
fn the_uk_call_fixture_parses_with_its_explicit_optional_fields() {
    let UsageKind::Call(call) = parse(CALL_OUTBOUND_UK).kind else { panic!("not a call") };
    assert_eq!(call.to, "+447700900123");
    assert_eq!(call.duration_seconds, 61);
    assert_eq!((call.ring_through_attempts, call.premium.len(), call.internal), (0, 0, false));
}

#[test]
fn the_inbound_toll_free_fixture_parses_to_a_transcribed_inbound_call() {
    let UsageKind::Call(call) = parse(CALL_INBOUND_TOLLFREE_TRANSCRIBED).kind else {
        panic!("not a call")
    };
    assert_eq!(call.direction, Direction::Inbound);
    assert_eq!(call.to, "+18005550100");
    assert_eq!(call.premium, vec![PremiumFeature::Transcription]);
}

#[test]
fn the_unanswered_fixture_parses_to_a_call_with_ring_through_attempts() {
    let UsageKind::Call(call) = parse(CALL_UNANSWERED_RING_THROUGH).kind else {
        panic!("not a call")
    };
    assert!(!call.answered);
    assert_eq!((call.duration_seconds, call.ring_through_attempts), (0, 2));
}

#[test]
fn the_sms_fixtures_parse_to_sms_in_and_sms_out() {
    assert_eq!(
        parse(SMS_IN).kind,
        UsageKind::SmsIn(Sms {
            from: "+14155550123".into(),
            to: "+14155550100".into(),
            segments: 1
        })
    );
    assert_eq!(
        parse(SMS_OUT).kind,
        UsageKind::SmsOut(Sms {
            from: "+14155550100".into(),
            to: "+14155550123".into(),
            segments: 2
        })
    );
}

#[test]
fn the_number_fixtures_parse_to_a_local_purchase_and_a_toll_free_renewal() {
    assert_eq!(
        parse(NUMBER_PURCHASE).kind,
        UsageKind::NumberPurchase(Number {
            number: "+14155550100".into(),
            number_type: NumberType::Local
        })
    );
    let renewal = parse(NUMBER_RENEWAL);
    assert_eq!(
        renewal.kind,
        UsageKind::NumberRenewal(Number {
            number: "+18005550100".into(),
            number_type: NumberType::TollFree
        })
    );
    assert_eq!(renewal.kind.type_name(), "number_renewal");
}

#[test]
fn every_usage_fixture_parses_to_the_type_its_envelope_names() {
    let fixtures = [
        (CALL_OUTBOUND, "call"),
        (CALL_OUTBOUND_UK, "call"),
        (CALL_INBOUND_TOLLFREE_TRANSCRIBED, "call"),
        (CALL_UNANSWERED_RING_THROUGH, "call"),
        (CALL_OUTBOUND_HELD, "call"),
        (SMS_IN, "sms_in"),
        (SMS_OUT, "sms_out"),
        (NUMBER_PURCHASE, "number_purchase"),
        (NUMBER_RENEWAL, "number_renewal"),
    ];
    for (body, expected) in fixtures {
        let declared: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(declared["type"], expected, "fixture table is wrong for {body}");
        assert_eq!(parse(body).kind.type_name(), expected, "{body}");
    }
}

#[test]
fn an_authorization_id_is_carried_and_a_bad_one_is_refused_by_name() {
    assert_eq!(parse(CALL_OUTBOUND_HELD).authorization_id.as_deref(), Some("call-7f3a"));
    assert_eq!(parse(CALL_OUTBOUND).authorization_id, None, "it is optional");
    for bad in ["", "has space", &"x".repeat(65), "call/7"] {
        let mut body: serde_json::Value = serde_json::from_str(CALL_OUTBOUND_HELD).unwrap();
        body["authorization_id"] = serde_json::json!(bad);
        match error(&body.to_string()) {
            EventError::BadField { field, .. } => assert_eq!(field, "authorization_id", "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Poison messages
// ---------------------------------------------------------------------------------------------

#[test]
fn the_truncated_poison_fixture_is_malformed() {
    let EventError::Malformed(reason) = error(POISON_MALFORMED) else {
        panic!("expected Malformed")
    };
    assert!(reason.contains("EOF"), "{reason}");
}

#[test]
fn the_fax_poison_fixture_is_an_unknown_type() {
    assert_eq!(error(POISON_UNKNOWN_TYPE), EventError::UnknownType("fax".into()));
    assert_eq!(error(POISON_UNKNOWN_TYPE).to_string(), r#"unknown event type "fax""#);
}

#[test]
fn the_unknown_account_poison_fixture_is_well_formed_and_fails_only_at_the_ledger() {
    let event = parse(POISON_UNKNOWN_ACCOUNT);
    assert_eq!(event.account_id.as_str(), "ghost");
    assert_eq!(event.kind.type_name(), "sms_out");
}

// ---------------------------------------------------------------------------------------------
// Strictness
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_envelope_field_is_malformed_and_named() {
    let body = CALL_OUTBOUND.replacen("{", r#"{"priority": "high", "#, 1);
    let EventError::Malformed(reason) = error(&body) else { panic!("expected Malformed") };
    assert!(reason.contains("unknown field `priority`"), "{reason}");
}

#[test]
fn an_unknown_data_field_is_malformed_and_blamed_on_data() {
    let body = call_with(
        r#"{"direction": "outbound", "from": "+14155550100", "to": "+14155550123", "answered": true, "duration_seconds": 10, "codec": "opus"}"#,
    );
    let EventError::Malformed(reason) = error(&body) else { panic!("expected Malformed") };
    assert!(reason.starts_with("data: "), "{reason}");
    assert!(reason.contains("unknown field `codec`"), "{reason}");
}

#[test]
fn an_unknown_field_in_sms_or_number_data_is_malformed_too() {
    let sms = SMS_OUT.replace(r#""segments": 2"#, r#""segments": 2, "encoding": "ucs2""#);
    assert!(matches!(error(&sms), EventError::Malformed(r) if r.contains("`encoding`")));
    let number = NUMBER_PURCHASE.replace(r#""number_type""#, r#""area": "415", "number_type""#);
    assert!(matches!(error(&number), EventError::Malformed(r) if r.contains("`area`")));
}

#[test]
fn a_missing_required_data_field_is_malformed() {
    let body = call_with(
        r#"{"direction": "outbound", "from": "+14155550100", "to": "+14155550123", "duration_seconds": 10}"#,
    );
    let EventError::Malformed(reason) = error(&body) else { panic!("expected Malformed") };
    assert!(reason.contains("missing field `answered`"), "{reason}");
}

#[test]
fn an_unknown_premium_feature_or_number_type_is_malformed() {
    let body = call_with(
        r#"{"direction": "outbound", "from": "+14155550100", "to": "+14155550123", "answered": true, "duration_seconds": 10, "premium": ["voicemail"]}"#,
    );
    assert!(matches!(error(&body), EventError::Malformed(r) if r.contains("voicemail")));
    let number = NUMBER_PURCHASE.replace(r#""local""#, r#""mobile""#);
    assert!(matches!(error(&number), EventError::Malformed(r) if r.contains("mobile")));
}

#[test]
fn schema_version_2_is_unsupported() {
    let body = CALL_OUTBOUND.replace(r#""version": 1"#, r#""version": 2"#);
    assert_eq!(error(&body), EventError::UnsupportedVersion(2));
    assert_eq!(
        error(&body).to_string(),
        "unsupported schema version 2; this worker reads version 1"
    );
}

#[test]
fn schema_version_0_is_unsupported() {
    let body = CALL_OUTBOUND.replace(r#""version": 1"#, r#""version": 0"#);
    assert_eq!(error(&body), EventError::UnsupportedVersion(0));
}

#[test]
fn an_event_id_of_96_characters_is_accepted() {
    let id = "e".repeat(MAX_EVENT_ID_LEN);
    let event = parse(&CALL_OUTBOUND.replace("evt-call-out-1", &id));
    assert_eq!(event.event_id.as_str(), id);
}

#[test]
fn an_event_id_of_97_characters_is_a_bad_event_id() {
    let body = CALL_OUTBOUND.replace("evt-call-out-1", &"e".repeat(97));
    assert_eq!(
        error(&body),
        EventError::BadField { field: "event_id", reason: "longer than 96 characters".into() }
    );
}

#[test]
fn an_event_id_with_a_space_is_a_bad_event_id() {
    let body = CALL_OUTBOUND.replace("evt-call-out-1", "evt call 1");
    assert_eq!(bad_field(error(&body)), "event_id");
}

#[test]
fn an_empty_or_non_ascii_event_id_is_a_bad_event_id() {
    assert_eq!(bad_field(error(&CALL_OUTBOUND.replace("evt-call-out-1", ""))), "event_id");
    assert_eq!(bad_field(error(&CALL_OUTBOUND.replace("evt-call-out-1", "évt-1"))), "event_id");
}

#[test]
fn an_account_id_outside_the_key_safe_alphabet_is_a_bad_account_id() {
    for bad in ["acme corp", "acme#1", "", &"a".repeat(65)] {
        let body = CALL_OUTBOUND.replace(r#""acme""#, &format!("\"{bad}\""));
        assert_eq!(bad_field(error(&body)), "account_id", "{bad:?}");
    }
}

#[test]
fn bad_phone_numbers_are_rejected_with_the_field_that_holds_them() {
    let bad_numbers = [
        "+12",
        "12",
        "+1234567890123456",
        "+1-415-555-0100",
        "+",
        "",
        "tel:+14155550100",
        "++14155550100",
    ];
    for bad in bad_numbers {
        let to = CALL_OUTBOUND.replace("+14155550123", bad);
        assert_eq!(
            error(&to),
            EventError::BadField {
                field: "data.to",
                reason: "must be an E.164 number (+ and 3-15 digits)".into()
            },
            "{bad:?}"
        );
        let from = SMS_OUT.replace("+14155550100", bad);
        assert_eq!(bad_field(error(&from)), "data.from", "{bad:?}");
        let number = NUMBER_PURCHASE.replace("+14155550100", bad);
        assert_eq!(bad_field(error(&number)), "data.number", "{bad:?}");
    }
}

#[test]
fn phone_numbers_of_3_and_15_digits_with_or_without_plus_are_accepted() {
    for good in ["+123", "123", "+123456789012345", "123456789012345"] {
        let UsageKind::Call(call) = parse(&CALL_OUTBOUND.replace("+14155550123", good)).kind else {
            panic!("not a call")
        };
        assert_eq!(call.to, good);
    }
}

#[test]
fn a_body_over_16_kib_is_too_large_before_it_is_parsed() {
    // Not JSON at all: the size check comes first.
    let body = "x".repeat(MAX_MESSAGE_BYTES + 1);
    assert_eq!(error(&body), EventError::TooLarge(16_385));
    assert_eq!(error(&body).to_string(), "message is 16385 bytes; the limit is 16384");
}

#[test]
fn a_valid_event_padded_to_exactly_16_kib_still_parses() {
    let mut body = CALL_OUTBOUND.trim_end().to_string();
    body.push_str(&" ".repeat(MAX_MESSAGE_BYTES - body.len()));
    assert_eq!(body.len(), 16 * 1024);
    assert_eq!(parse(&body).event_id.as_str(), "evt-call-out-1");
    body.push(' ');
    assert_eq!(error(&body), EventError::TooLarge(16 * 1024 + 1));
}

#[test]
fn occurred_at_with_nanoseconds_is_truncated_to_microseconds() {
    let body = CALL_OUTBOUND.replace("2026-11-03T14:05:09Z", "2026-11-03T14:05:09.123456789Z");
    let event = parse(&body);
    assert_eq!(event.occurred_at, at("2026-11-03T14:05:09.123456Z"));
    assert_eq!(event.occurred_at.timestamp_subsec_nanos(), 123_456_000);
}

#[test]
fn occurred_at_that_is_not_rfc_3339_is_malformed() {
    let body = CALL_OUTBOUND.replace("2026-11-03T14:05:09Z", "03/11/2026 14:05");
    assert!(matches!(error(&body), EventError::Malformed(_)));
}

// ---------------------------------------------------------------------------------------------
// When an event may have occurred
// ---------------------------------------------------------------------------------------------

fn occurring_at(occurred_at: &str) -> String {
    CALL_OUTBOUND.replace("2026-11-03T14:05:09Z", occurred_at)
}

#[test]
fn an_event_dated_in_2099_is_refused_with_both_times_in_the_reason() {
    let received_at = at("2026-11-03T14:05:09Z");
    let error = UsageEvent::parse_received(&occurring_at("2099-01-01T00:00:00Z"), received_at)
        .expect_err("a 2099 event must be refused");
    assert_eq!(
        error,
        EventError::OccursInTheFuture { occurred_at: at("2099-01-01T00:00:00Z"), received_at }
    );
    assert_eq!(
        error.to_string(),
        "occurred_at 2099-01-01 00:00:00 UTC is more than 300 s after the event was received \
         (2026-11-03 14:05:09 UTC)"
    );
}

#[test]
fn occurred_at_may_lead_the_receipt_by_the_clock_skew_and_not_a_microsecond_more() {
    assert_eq!(MAX_CLOCK_SKEW_SECONDS, 300);
    let received_at = at("2026-11-03T14:00:00Z");
    let at_skew = UsageEvent::parse_received(&occurring_at("2026-11-03T14:05:00Z"), received_at);
    assert_eq!(at_skew.expect("within the skew").occurred_at, at("2026-11-03T14:05:00Z"));
    let past_skew =
        UsageEvent::parse_received(&occurring_at("2026-11-03T14:05:00.000001Z"), received_at);
    assert!(matches!(past_skew, Err(EventError::OccursInTheFuture { .. })), "{past_skew:?}");
}

#[test]
fn occurred_at_may_trail_the_receipt_by_400_days_and_not_a_microsecond_more() {
    assert_eq!(MAX_EVENT_AGE_DAYS, 400);
    // 2025-09-29 is 400 days before 2026-11-03.
    let received_at = at("2026-11-03T14:05:09Z");
    let oldest = UsageEvent::parse_received(&occurring_at("2025-09-29T14:05:09Z"), received_at);
    assert!(oldest.is_ok(), "{oldest:?}");
    let older =
        UsageEvent::parse_received(&occurring_at("2025-09-29T14:05:08.999999Z"), received_at);
    assert_eq!(
        older.unwrap_err(),
        EventError::OccurredTooLongAgo {
            occurred_at: at("2025-09-29T14:05:08.999999Z"),
            received_at
        }
    );
    let epoch = UsageEvent::parse_received(&occurring_at("1970-01-01T00:00:00Z"), received_at);
    assert!(matches!(epoch, Err(EventError::OccurredTooLongAgo { .. })));
}

#[test]
fn the_month_of_an_event_is_its_utc_calendar_month() {
    let body = CALL_OUTBOUND.replace("2026-11-03T14:05:09Z", "2026-11-30T23:59:59.999999Z");
    assert_eq!(parse(&body).month().to_string(), "2026-11");
    let body = CALL_OUTBOUND.replace("2026-11-03T14:05:09Z", "2026-12-01T00:00:00Z");
    assert_eq!(parse(&body).month().to_string(), "2026-12");
}
