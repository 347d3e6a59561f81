//! Snapshot tests of every template: the expected renderings are committed under
//! `tests/snapshots/` (`<case>.txt` is the subject line and the plain-text part, `<case>.html`
//! the HTML part) and compared exactly.
//!
//! After a deliberate change of wording, regenerate them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p ringledger-notifications --test templates`
//! and review the diff before committing.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ledger::{AccountId, Amount, BillingItem, Refusal};
use notifications::notice::{CardFailure, Notice, NoticeKind, PaymentTrigger};
use notifications::templates::{render, Rendered};
use rust_decimal_macros::dec;

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

fn usd(value: &str) -> Amount {
    Amount::from_str(value).unwrap()
}

fn notice(id: &str, kind: NoticeKind) -> Notice {
    Notice {
        id: id.into(),
        account_id: AccountId::parse("acme").unwrap(),
        raised_at: at("2026-11-04T10:15:00Z"),
        kind,
    }
}

fn receipt(trigger: PaymentTrigger) -> NoticeKind {
    NoticeKind::PaymentReceipt {
        payment_id: "pay_20261104_0001".into(),
        amount_usd: usd("50"),
        card_brand: "visa".into(),
        card_last4: "4242".into(),
        balance_after_usd: dec!(64.8767),
        trigger,
        paid_at: at("2026-11-04T10:14:59Z"),
    }
}

fn declines() -> Vec<CardFailure> {
    vec![
        CardFailure {
            card_brand: "visa".into(),
            card_last4: "0002".into(),
            reason: "Your card was declined.".into(),
        },
        CardFailure {
            card_brand: "mastercard".into(),
            card_last4: "9995".into(),
            reason: "Your card has insufficient funds.".into(),
        },
    ]
}

fn cases() -> Vec<(&'static str, Notice)> {
    vec![
        (
            "payment_receipt_manual",
            notice("receipt:pay_20261104_0001", receipt(PaymentTrigger::Manual)),
        ),
        (
            "payment_receipt_auto",
            notice("receipt:pay_20261104_0001", receipt(PaymentTrigger::Auto)),
        ),
        (
            "payment_failed",
            notice(
                "payment_failed:acme:pay_20261104_0001",
                NoticeKind::PaymentFailed {
                    payment_id: "pay_20261104_0001".into(),
                    amount_usd: usd("50"),
                    card_brand: "visa".into(),
                    card_last4: "4242".into(),
                    reason: "Your card was declined.".into(),
                },
            ),
        ),
        (
            "payment_receipt_plan",
            notice("receipt:pay_20261104_0001", receipt(PaymentTrigger::Plan)),
        ),
        (
            "plan_charge_failed_will_retry",
            notice(
                "plan_charge_failed:acme:2026-11-04:1",
                NoticeKind::PlanChargeFailed {
                    plan: "Pro".into(),
                    period_from: "2026-11-04".parse().unwrap(),
                    amount_usd: usd("29"),
                    attempt: 1,
                    failures: declines(),
                    next_attempt_at: Some(at("2026-11-04T11:15:00Z")),
                },
            ),
        ),
        (
            "plan_charge_failed_from_balance",
            notice(
                "plan_charge_failed:acme:2026-11-04:3",
                NoticeKind::PlanChargeFailed {
                    plan: "Pro".into(),
                    period_from: "2026-11-04".parse().unwrap(),
                    amount_usd: usd("29"),
                    attempt: 3,
                    failures: vec![],
                    next_attempt_at: None,
                },
            ),
        ),
        (
            "invoice_payment_failed_will_retry",
            notice(
                "invoice_payment_failed:acme:2026-11:1",
                NoticeKind::InvoicePaymentFailed {
                    number: "RL-000042".into(),
                    month: "2026-11".parse().unwrap(),
                    amount_usd: usd("21.35"),
                    attempt: 1,
                    failures: declines(),
                    next_attempt_at: Some(at("2026-12-01T06:05:00Z")),
                },
            ),
        ),
        (
            "invoice_payment_failed_last",
            notice(
                "invoice_payment_failed:acme:2026-11:3",
                NoticeKind::InvoicePaymentFailed {
                    number: "RL-000042".into(),
                    month: "2026-11".parse().unwrap(),
                    amount_usd: usd("21.35"),
                    attempt: 3,
                    failures: vec![],
                    next_attempt_at: None,
                },
            ),
        ),
        (
            "recharge_failed_will_retry",
            notice(
                "recharge_failed:rr-acme-7:1",
                NoticeKind::RechargeFailed {
                    request_id: "rr-acme-7".into(),
                    attempt: 1,
                    amount_usd: usd("50"),
                    failures: declines(),
                    next_attempt_at: Some(at("2026-11-04T11:15:00Z")),
                },
            ),
        ),
        (
            "recharge_failed_stopped",
            notice(
                "recharge_failed:rr-acme-7:3",
                NoticeKind::RechargeFailed {
                    request_id: "rr-acme-7".into(),
                    attempt: 3,
                    amount_usd: usd("50"),
                    failures: declines()[..1].to_vec(),
                    next_attempt_at: None,
                },
            ),
        ),
        (
            "recharge_failed_no_card",
            notice(
                "recharge_failed:rr-acme-8:1",
                NoticeKind::RechargeFailed {
                    request_id: "rr-acme-8".into(),
                    attempt: 1,
                    amount_usd: usd("75.5"),
                    failures: vec![],
                    next_attempt_at: Some(at("2026-11-05T10:15:00Z")),
                },
            ),
        ),
        (
            "recharge_cap_reached",
            notice(
                "recharge_cap:acme:2026-11",
                NoticeKind::RechargeCapReached {
                    month: "2026-11".parse().unwrap(),
                    cap_usd: usd("500"),
                    spent_usd: dec!(500.00),
                },
            ),
        ),
        (
            "recharge_daily_cap_reached",
            notice(
                "recharge_daily_cap:acme:2026-11-05",
                NoticeKind::RechargeDailyCapReached {
                    day: "2026-11-05".parse().unwrap(),
                    cap_usd: usd("150"),
                    spent_usd: dec!(100.00),
                },
            ),
        ),
        (
            "card_expiring",
            notice(
                "card_expiring:acme:pm_1:2026-12",
                NoticeKind::CardExpiring {
                    card_brand: "Visa".into(),
                    card_last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2026,
                    card_manager_email: Some("cards@acme.example".into()),
                    backup: Some("Mastercard 4444".into()),
                },
            ),
        ),
        (
            "low_balance",
            notice("acme:low_balance:42", NoticeKind::LowBalance { balance_usd: dec!(4.1249) }),
        ),
        (
            "suspended",
            notice("acme:suspended:57", NoticeKind::Suspended { balance_usd: dec!(-42.7258) }),
        ),
        (
            "reactivated",
            notice("acme:reactivated:58", NoticeKind::Reactivated { balance_usd: dec!(57.2742) }),
        ),
        (
            "invoice_overdue_block",
            notice(
                "acme:invoice_overdue_block:301:v77",
                NoticeKind::InvoiceOverdueBlock {
                    month: "2026-10".parse().unwrap(),
                    balance_usd: dec!(-412.3025),
                },
            ),
        ),
        (
            "purchase_refused",
            notice(
                "acme:purchase_refused:use:evt-num-buy-1",
                NoticeKind::PurchaseRefused {
                    item: BillingItem::PhoneNumber,
                    amount_usd: usd("1.15"),
                    refusal: Refusal::InsufficientBalance {
                        balance_usd: dec!(0.5),
                        floor_usd: dec!(0),
                    },
                    number: Some("+14155550100".into()),
                    balance_usd: dec!(0.5),
                },
            ),
        ),
        (
            "purchase_refused_terms",
            notice(
                "acme:purchase_refused:num-7",
                NoticeKind::PurchaseRefused {
                    item: BillingItem::PhoneNumber,
                    amount_usd: usd("2"),
                    refusal: Refusal::TermsNotAccepted,
                    number: None,
                    balance_usd: dec!(25),
                },
            ),
        ),
        (
            "numbers_release_warning",
            notice(
                "acme:numbers_release_warning:12:v40:7d",
                NoticeKind::NumbersReleaseWarning {
                    release_at: at("2026-12-03T09:30:00Z"),
                    days_left: 7,
                    balance_usd: dec!(-0.42),
                },
            ),
        ),
        (
            "numbers_release_due",
            notice(
                "acme:numbers_release_due:12:v42",
                NoticeKind::NumbersReleaseDue {
                    release_at: at("2026-12-03T09:30:00Z"),
                    balance_usd: dec!(-0.42),
                },
            ),
        ),
        (
            "refund_receipt",
            notice(
                "refund:acme:09221477664414775807-08be0707b5621729:r-1",
                NoticeKind::RefundReceipt {
                    payment_id: "09221477664414775807-08be0707b5621729".into(),
                    refund_id: "r-1".into(),
                    amount_usd: usd("12.50"),
                    card_brand: "visa".into(),
                    card_last4: "4242".into(),
                    reason: "duplicate order".into(),
                    returned: true,
                    failure_reason: None,
                    balance_after_usd: dec!(37.5),
                    refunded_at: at("2026-11-04T10:15:00Z"),
                },
            ),
        ),
        (
            "refund_refused",
            notice(
                "refund:acme:09221477664414775807-08be0707b5621729:r-2:failed",
                NoticeKind::RefundReceipt {
                    payment_id: "09221477664414775807-08be0707b5621729".into(),
                    refund_id: "r-2".into(),
                    amount_usd: usd("5"),
                    card_brand: "visa".into(),
                    card_last4: "4242".into(),
                    reason: "goodwill".into(),
                    returned: false,
                    failure_reason: Some("expired_or_canceled_card".into()),
                    balance_after_usd: dec!(42.5),
                    refunded_at: at("2026-11-09T08:00:00Z"),
                },
            ),
        ),
        (
            "dispute_funds_withdrawn",
            notice(
                "dispute:acme:dp_1:funds_withdrawn",
                NoticeKind::Dispute {
                    payment_id: "09221477664414775807-08be0707b5621729".into(),
                    dispute_id: "dp_1".into(),
                    stage: "funds_withdrawn".into(),
                    amount_usd: usd("40"),
                    fee_usd: dec!(15),
                    card_brand: "visa".into(),
                    card_last4: "4242".into(),
                    balance_after_usd: dec!(-5),
                },
            ),
        ),
        (
            "dispute_won",
            notice(
                "dispute:acme:dp_1:won",
                NoticeKind::Dispute {
                    payment_id: "09221477664414775807-08be0707b5621729".into(),
                    dispute_id: "dp_1".into(),
                    stage: "won".into(),
                    amount_usd: usd("40"),
                    fee_usd: dec!(15),
                    card_brand: "visa".into(),
                    card_last4: "4242".into(),
                    balance_after_usd: dec!(50),
                },
            ),
        ),
        (
            "escaping",
            notice(
                "recharge_failed:<b>&\"'</b>:1",
                NoticeKind::RechargeFailed {
                    request_id: "<script>alert('x')</script>".into(),
                    attempt: 2,
                    amount_usd: usd("50"),
                    failures: vec![CardFailure {
                        card_brand: "<img src=x onerror=alert(1)>".into(),
                        card_last4: "\"&<>".into(),
                        reason: "Declined <b>by</b> \"bank\" & 'issuer'".into(),
                    }],
                    next_attempt_at: Some(at("2026-11-04T11:15:00Z")),
                },
            ),
        ),
    ]
}

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn text_file(rendered: &Rendered) -> String {
    format!("Subject: {}\n\n{}", rendered.subject, rendered.text)
}

#[test]
fn every_notice_renders_exactly_as_its_snapshot() {
    let update = std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    let dir = snapshot_dir();
    let mut mismatches = Vec::new();
    for (name, notice) in cases() {
        let rendered = render(&notice);
        for (extension, actual) in [("txt", text_file(&rendered)), ("html", rendered.html.clone())]
        {
            let path = dir.join(format!("{name}.{extension}"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == actual => {}
                Ok(expected) => mismatches.push(format!(
                    "{} differs.\n--- expected\n{expected}\n--- actual\n{actual}",
                    path.display()
                )),
                Err(error) => mismatches.push(format!("{}: {error}", path.display())),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n\nIf the change is intended: UPDATE_SNAPSHOTS=1 cargo test -p \
         ringledger-notifications --test templates",
        mismatches.join("\n\n")
    );
}

#[test]
fn every_kind_of_notice_has_a_snapshot() {
    let kinds: std::collections::BTreeSet<&str> =
        cases().iter().map(|(_, notice)| notice.kind.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "card_expiring",
            "dispute",
            "invoice_overdue_block",
            "invoice_payment_failed",
            "low_balance",
            "numbers_release_due",
            "numbers_release_warning",
            "payment_failed",
            "payment_receipt",
            "plan_charge_failed",
            "purchase_refused",
            "reactivated",
            "recharge_cap_reached",
            "recharge_daily_cap_reached",
            "recharge_failed",
            "refund_receipt",
            "suspended"
        ]
    );
}

#[test]
fn html_parts_escape_every_value() {
    let (_, hostile) = cases().into_iter().find(|(name, _)| *name == "escaping").unwrap();
    let html = render(&hostile).html;
    for raw in ["<script>", "<img", "<b>", "\"bank\"", "'issuer'", "& '"] {
        assert!(!html.contains(raw), "{raw:?} reached the HTML unescaped");
    }
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("Declined &lt;b&gt;by&lt;/b&gt; &quot;bank&quot; &amp; &#39;issuer&#39;"));
    // The markup that is left is the template's own.
    let tags: std::collections::BTreeSet<String> = html
        .split('<')
        .skip(1)
        .map(|t| t.split([' ', '>']).next().unwrap().trim_start_matches('/').to_string())
        .collect();
    let allowed = [
        "!DOCTYPE", "html", "head", "meta", "title", "body", "div", "h1", "h2", "p", "table", "tr",
        "th", "td", "ul", "li",
    ];
    assert!(tags.iter().all(|t| allowed.contains(&t.as_str())), "{tags:?}");
}

#[test]
fn money_is_shown_to_the_cent_and_text_lines_stay_short() {
    for (name, notice) in cases() {
        let rendered = render(&notice);
        for line in rendered.text.lines() {
            assert!(line.chars().count() <= 72, "{name}: {line:?}");
        }
        // No amount with more than two decimals reaches a customer.
        for part in [&rendered.subject, &rendered.text, &rendered.html] {
            for (index, _) in part.match_indices('$') {
                let rest = &part[index + 1..];
                let whole =
                    rest.find(|c: char| !c.is_ascii_digit() && c != ',').unwrap_or(rest.len());
                let decimals = rest[whole..]
                    .strip_prefix('.')
                    .map_or(0, |d| d.chars().take_while(char::is_ascii_digit).count());
                assert_eq!(decimals, 2, "{name}: {}", &rest[..rest.len().min(12)]);
            }
        }
    }
    let suspended = render(&cases().into_iter().find(|(n, _)| *n == "suspended").unwrap().1);
    assert!(suspended.text.contains("-$42.73"));
    let low = render(&cases().into_iter().find(|(n, _)| *n == "low_balance").unwrap().1);
    assert!(low.subject.contains("$4.12"), "{}", low.subject);
}

#[test]
fn a_critical_text_keeps_its_opt_out_line_however_long_the_names() {
    let long = NoticeKind::PlanChargeFailed {
        plan: "P".repeat(100),
        period_from: "2026-11-04".parse().unwrap(),
        amount_usd: usd("29"),
        attempt: 1,
        failures: vec![],
        next_attempt_at: Some(at("2026-11-04T11:15:00Z")),
    };
    let mut notice = notice("plan_charge_failed:x:2026-11-04:1", long);
    notice.account_id = ledger::AccountId::parse("a".repeat(64)).unwrap();
    let text = notifications::templates::critical_text(&notice, true).unwrap();
    assert!(text.ends_with("Reply STOP to opt out."), "{text}");
    assert!(text.contains("bounced"), "{text}");
    assert!(text.chars().count() <= messaging::text::MAX_TEXT_CHARS, "{}", text.chars().count());
    // Receipts are not critical.
    let receipt = notice_for_receipt();
    assert!(notifications::templates::critical_text(&receipt, false).is_none());
}

fn notice_for_receipt() -> Notice {
    notice("receipt:pay_20261104_0001", receipt(PaymentTrigger::Manual))
}
