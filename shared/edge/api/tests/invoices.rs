//! Postpaid invoices through the API (issue 17), in process, over HTTP and as API Gateway
//! events: a postpaid account's month is invoiced once, numbered, reconciles with the activity
//! export of the same range to the cent, and manual payments pay the oldest invoice first,
//! once each; bad input changes nothing.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use common::{Mode, TestApp};
use conformance::{credit, open, usage};
use ledger::{Amount, BillingItem, LedgerStore, Posting, SourceId};
use rust_decimal::Decimal;

const NOVEMBER: &str = "2026-11";

fn day(text: &str) -> DateTime<Utc> {
    format!("{text}T12:00:00Z").parse().unwrap()
}

fn usd(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// `acme`, postpaid with a $500 credit limit, whose November 2026 is: a $20 payment, calls
/// of $12.3456 and $0.0025 (a surcharge-sized debit), a $29 plan fee, and a $5 call on 1
/// December 00:00:00 exactly (next month's).
async fn november(app: &TestApp) -> (String, String) {
    let id = open(&*app.store, "acme", Some("500")).await;
    app.store.post(&id, vec![credit("pay:n1", "20")], day("2026-11-02")).await.unwrap();
    app.store
        .post(
            &id,
            vec![usage("use:c1#call", "12.3456"), usage("use:c2#call", "0.0025")],
            day("2026-11-10"),
        )
        .await
        .unwrap();
    let fee = Posting::usage(
        SourceId::parse("plan:2026-11-15").unwrap(),
        BillingItem::PlanFee,
        Amount::new(usd("29")).unwrap(),
        day("2026-11-15"),
    )
    .unwrap();
    app.store.post(&id, vec![fee], day("2026-11-15")).await.unwrap();
    let first_of_december: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    app.store.post(&id, vec![usage("use:c3#call", "5")], first_of_december).await.unwrap();
    let operator = app.operator();
    let mode = app
        .send(
            "PUT",
            "/v1/operator/accounts/acme/billing-mode",
            &operator,
            r#"{"mode": "postpaid"}"#,
        )
        .await;
    assert_eq!(mode.status, StatusCode::OK, "{}", mode.text);
    assert_eq!(mode.json["mode"], "postpaid");
    (app.admin("acme"), operator)
}

async fn a_month_is_invoiced_once_and_reconciles_with_the_export(app: TestApp) {
    let (admin, operator) = november(&app).await;
    let body = format!(r#"{{"month": "{NOVEMBER}"}}"#);
    let issued = app.send("POST", "/v1/operator/accounts/acme/invoices", &operator, &body).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let invoice = issued.json.clone();
    assert_eq!(invoice["number"], "RL-000001");
    assert_eq!(invoice["month"], NOVEMBER);
    assert_eq!(invoice["opening_balance_usd"], "0");
    // 20 - 12.3456 - 0.0025 - 29: the December call is not November's.
    assert_eq!(invoice["closing_balance_usd"], "-21.3481");
    // Due to the cent; the balance keeps the exact figure.
    assert_eq!(invoice["amount_due_usd"], "21.35");
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["charges_usd"], "41.3481");
    assert_eq!(invoice["credits_usd"], "20");
    // Its email is queued once per issue request; the job sends it once per invoice.
    let queued = app.statement_jobs.take();
    assert!(
        matches!(&queued[..], [jobs::Job::Invoice { month, .. }] if month.to_string() == NOVEMBER),
        "{queued:?}"
    );

    // Issued again (a re-run): the same invoice, nothing new, the same number.
    let again = app.send("POST", "/v1/operator/accounts/acme/invoices", &operator, &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json, invoice);

    // It reconciles to the cent with the export of the same range.
    let csv =
        app.get("/v1/activity.csv?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z", &admin).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.text);
    let rows: Vec<Vec<&str>> = csv
        .text
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let mut by_line: BTreeMap<(String, String), (u64, Decimal)> = BTreeMap::new();
    for row in &rows {
        let entry = by_line.entry((row[3].to_string(), row[4].to_string())).or_default();
        entry.0 += 1;
        entry.1 += usd(row[5]);
    }
    let lines = invoice["lines"].as_array().unwrap();
    assert_eq!(lines.len(), by_line.len(), "{lines:?} against {by_line:?}");
    for line in lines {
        let key = (
            line["kind"].as_str().unwrap().to_string(),
            line["item"].as_str().unwrap().to_string(),
        );
        let (count, amount) = by_line[&key];
        assert_eq!(line["count"], count, "{key:?}");
        assert_eq!(usd(line["amount_usd"].as_str().unwrap()), amount, "{key:?}");
    }
    let last_balance = rows.last().unwrap()[6];
    assert_eq!(usd(last_balance), usd(invoice["closing_balance_usd"].as_str().unwrap()));
    assert_eq!(invoice["first_seq"], 1);
    assert_eq!(invoice["last_seq"], 4);

    // The customer sees it, and why the balance is not what it said.
    let list = app.get("/v1/invoices", &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json["billing_mode"], "postpaid");
    assert_eq!(list.json["invoices"].as_array().unwrap().len(), 1);
    assert_eq!(list.json["outstanding_usd"], "21.35");
    assert_eq!(list.json["balance_usd"], "-26.3481");
    assert_eq!(list.json["since_last_invoice_usd"], "-5");
    assert!(list.json["explanation"].as_str().unwrap().contains("RL-000001"));
    let shown = app.get("/v1/invoices/2026-11", &admin).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json, invoice);
}

async fn manual_payments_pay_the_oldest_invoice_first_once(app: TestApp) {
    let (admin, operator) = november(&app).await;
    let body = format!(r#"{{"month": "{NOVEMBER}"}}"#);
    let issued = app.send("POST", "/v1/operator/accounts/acme/invoices", &operator, &body).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let pay = |key: &'static str, amount: &'static str| {
        let app = &app;
        let operator = operator.clone();
        async move {
            let body = format!(
                r#"{{"method": "cheque", "amount_usd": "{amount}", "reference": "chq {key}", "received_on": "2026-12-02"}}"#
            );
            app.call(
                "POST",
                "/v1/operator/accounts/acme/manual-payments",
                Some(&operator),
                &[("Idempotency-Key", key)],
                Some(&body),
            )
            .await
        }
    };
    let first = pay("p-1", "10").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["applied"][0]["month"], NOVEMBER);
    assert_eq!(first.json["applied"][0]["amount_usd"], "10");
    // Sent again: recorded once.
    let resent = pay("p-1", "10").await;
    assert_eq!(resent.status, StatusCode::OK, "{}", resent.text);
    assert_eq!(resent.json["entry_seq"], first.json["entry_seq"]);
    assert_eq!(resent.json["balance_usd"], first.json["balance_usd"]);
    let shown = app.get("/v1/invoices/2026-11", &admin).await;
    assert_eq!(shown.json["status"], "open");
    assert_eq!(shown.json["outstanding_usd"], "11.35");
    assert_eq!(shown.json["payments"].as_array().unwrap().len(), 1);

    // More than is owed: the invoice is paid, the rest stays on the balance.
    let second = pay("p-2", "30").await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert_eq!(second.json["applied"][0]["amount_usd"], "11.35");
    let shown = app.get("/v1/invoices/2026-11", &admin).await;
    assert_eq!(shown.json["status"], "paid");
    assert_eq!(shown.json["outstanding_usd"], "0");
    // The balance is not zero after paying: December's usage is not on this invoice.
    let list = app.get("/v1/invoices", &admin).await;
    assert_eq!(list.json["balance_usd"], "13.6519");
    assert_eq!(list.json["outstanding_usd"], "0");
    let activity = app.get("/v1/activity?show=credits", &admin).await;
    let manual: Vec<_> = activity.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source_id"].as_str().unwrap().starts_with("man:"))
        .collect();
    assert_eq!(manual.len(), 2);
    assert_eq!(manual[0]["details"]["method"], "cheque");
    assert_eq!(manual[0]["details"]["reference"], "chq p-1");
}

async fn bad_requests_are_refused_and_change_nothing(app: TestApp) {
    let operator = app.operator();
    let admin = app.ready_account("prepaid", "pm_card_visa").await;
    // Postpaid needs a credit limit.
    let refused = app
        .send(
            "PUT",
            "/v1/operator/accounts/prepaid/billing-mode",
            &operator,
            r#"{"mode": "postpaid"}"#,
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.json["code"], "credit_limit_required");
    let unknown = app
        .send(
            "PUT",
            "/v1/operator/accounts/prepaid/billing-mode",
            &operator,
            r#"{"mode": "later"}"#,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    // A prepaid account gets statements, not invoices.
    let body = format!(r#"{{"month": "{NOVEMBER}"}}"#);
    let prepaid =
        app.send("POST", "/v1/operator/accounts/prepaid/invoices", &operator, &body).await;
    assert_eq!(prepaid.status, StatusCode::CONFLICT, "{}", prepaid.text);
    assert_eq!(prepaid.json["code"], "not_postpaid");
    for (month, status) in [
        ("2026-13", StatusCode::BAD_REQUEST),
        ("next", StatusCode::BAD_REQUEST),
        ("2999-01", StatusCode::CONFLICT),
    ] {
        let body = format!(r#"{{"month": "{month}"}}"#);
        let reply =
            app.send("POST", "/v1/operator/accounts/prepaid/invoices", &operator, &body).await;
        assert_eq!(reply.status, status, "{month}: {}", reply.text);
        assert_eq!(reply.json["field"], "month", "{}", reply.text);
    }
    // Customers cannot use the operator routes.
    assert_eq!(
        app.send("POST", "/v1/operator/accounts/prepaid/invoices", &admin, &body).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get("/v1/invoices/2026-13", &admin).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/v1/invoices/2026-11", &admin).await.status, StatusCode::NOT_FOUND);
    // Manual payments: whole cents, a reference, a day not in the future, a key.
    for (body, field) in [
        (
            r#"{"method": "eft", "amount_usd": "1.001", "reference": "r", "received_on": "2026-12-01"}"#,
            "amount_usd",
        ),
        (
            r#"{"method": "eft", "amount_usd": "1", "reference": " ", "received_on": "2026-12-01"}"#,
            "reference",
        ),
        (
            r#"{"method": "eft", "amount_usd": "1", "reference": "r", "received_on": "2999-12-01"}"#,
            "received_on",
        ),
    ] {
        let reply = app
            .call(
                "POST",
                "/v1/operator/accounts/prepaid/manual-payments",
                Some(&operator),
                &[("Idempotency-Key", "k-1")],
                Some(body),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(reply.json["field"], field, "{}", reply.text);
    }
    let keyless = app
        .send(
            "POST",
            "/v1/operator/accounts/prepaid/manual-payments",
            &operator,
            r#"{"method": "eft", "amount_usd": "1", "reference": "r", "received_on": "2026-12-01"}"#,
        )
        .await;
    assert_eq!(keyless.status, StatusCode::BAD_REQUEST);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "0", "nothing was credited: {}", overview.text);
    assert!(app.statement_jobs.take().is_empty());
}

/// The payments worker's turn at a pending payment, `after` from now.
async fn settle(app: &TestApp, key: &str, after: chrono::Duration) -> payment_flow::Reconciled {
    let ports = payment_flow::PaymentPorts {
        store: &*app.store,
        processor: &*app.processor,
        notices: Some(&*app.notices),
    };
    let later = Utc::now() + after;
    app.processor.set_now(later);
    let id = ledger::AccountId::parse("acme").unwrap();
    payment_flow::reconcile_pending_payment(&ports, &id, key, later).await.unwrap()
}

/// `november`, with a card on file and the invoices pre-authorized.
async fn pre_authorized(app: &TestApp, token: &str) -> (String, String) {
    let (admin, operator) = november(app).await;
    let card = app
        .send(
            "POST",
            "/v1/cards",
            &admin,
            &format!(
                r#"{{"payment_method_token": "{token}", "card_manager_email": "cards@acme.example", "role": "primary"}}"#
            ),
        )
        .await;
    assert_eq!(card.status, StatusCode::CREATED, "{}", card.text);
    let body = r#"{"mode": "postpaid", "pre_authorized_payment": true}"#;
    let mode = app.send("PUT", "/v1/operator/accounts/acme/billing-mode", &operator, body).await;
    assert_eq!(mode.json["pre_authorized_payment"], true, "{}", mode.text);
    let body = format!(r#"{{"month": "{NOVEMBER}"}}"#);
    let issued = app.send("POST", "/v1/operator/accounts/acme/invoices", &operator, &body).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    (admin, operator)
}

async fn pending_keys(app: &TestApp) -> Vec<String> {
    let id = ledger::AccountId::parse("acme").unwrap();
    app.store.account(&id).await.unwrap().unwrap().pending_payments
}

async fn a_pre_authorized_card_pays_the_invoice_once_on_its_issue_date(app: TestApp) {
    let (admin, _) = pre_authorized(&app, "pm_card_visa").await;
    assert_eq!(pending_keys(&app).await, vec!["inv:2026-11".to_string()]);
    assert_eq!(
        settle(&app, "inv:2026-11", chrono::Duration::zero()).await,
        payment_flow::Reconciled::Final
    );
    let shown = app.get("/v1/invoices/2026-11", &admin).await;
    assert_eq!(shown.json["status"], "paid", "{}", shown.text);
    let paid_by = shown.json["payments"][0]["source_id"].as_str().unwrap().to_string();
    assert!(paid_by.starts_with("pay:inv:2026-11/1/"), "{paid_by}");
    assert_eq!(shown.json["payments"][0]["amount_usd"], "21.35");
    assert!(pending_keys(&app).await.is_empty());
    assert_eq!(app.charges(&admin).await, 1);
    // Redelivered and reordered events, and a re-run of the issue: nothing charged twice.
    assert_eq!(
        settle(&app, "inv:2026-11", chrono::Duration::hours(1)).await,
        payment_flow::Reconciled::Final
    );
    let body = format!(r#"{{"month": "{NOVEMBER}"}}"#);
    let operator = app.operator();
    let again = app.send("POST", "/v1/operator/accounts/acme/invoices", &operator, &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(pending_keys(&app).await.is_empty(), "a paid invoice is not charged again");
    assert_eq!(app.charges(&admin).await, 1);
    // The card's payment is on the balance; the sub-cent remainder carries on.
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "-4.9981", "{}", overview.text);
}

async fn declined_cards_are_retried_twice_then_left_for_a_payment_by_hand(app: TestApp) {
    let (admin, _) = pre_authorized(&app, "pm_card_chargeDeclined").await;
    let key = "inv:2026-11";
    let first = settle(&app, key, chrono::Duration::zero()).await;
    assert!(matches!(first, payment_flow::Reconciled::NotYet(_)), "{first:?}");
    let shown = app.get("/v1/invoices/2026-11", &admin).await;
    assert_eq!(shown.json["autopay"]["failed"], 1, "{}", shown.text);
    // Too early: nothing tried.
    assert!(matches!(
        settle(&app, key, chrono::Duration::hours(1)).await,
        payment_flow::Reconciled::NotYet(_)
    ));
    assert_eq!(app.charges(&admin).await, 1);
    assert!(matches!(
        settle(&app, key, chrono::Duration::hours(7)).await,
        payment_flow::Reconciled::NotYet(_)
    ));
    assert_eq!(
        settle(&app, key, chrono::Duration::hours(32)).await,
        payment_flow::Reconciled::Final
    );
    assert_eq!(app.charges(&admin).await, 3);
    let failures: Vec<(u32, bool)> = app
        .notices
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|n| match &n.kind {
            notifications::notice::NoticeKind::InvoicePaymentFailed {
                attempt,
                next_attempt_at,
                number,
                ..
            } => {
                assert_eq!(number, "RL-000001");
                Some((*attempt, next_attempt_at.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures, vec![(1, true), (2, true), (3, false)]);
    let shown = app.get("/v1/invoices/2026-11", &admin).await;
    assert_eq!(shown.json["status"], "open");
    assert_eq!(shown.json["autopay"]["failed"], 3);
    assert!(pending_keys(&app).await.is_empty());
    // Nothing more is tried, whatever arrives.
    assert_eq!(settle(&app, key, chrono::Duration::days(5)).await, payment_flow::Reconciled::Final);
    assert_eq!(app.charges(&admin).await, 3);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "-26.3481", "nothing was credited");
}

/// A credit note corrects an issued invoice (which itself never changes), numbered per
/// invoice, once per key; more than the invoice asked for is refused and changes nothing. A
/// blocked account (an invoice overdue past the operator's limit) says so in the list, with
/// what lifts it, and a payment of that much lifts it at once.
async fn credit_notes_correct_an_invoice_and_a_payment_lifts_a_block(app: TestApp) {
    let (admin, operator) = november(&app).await;
    let body = format!(r#"{{"month": "{NOVEMBER}"}}"#);
    let issued = app.send("POST", "/v1/operator/accounts/acme/invoices", &operator, &body).await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let path = "/v1/operator/accounts/acme/invoices/2026-11/credit-notes";
    let note = |key: &'static str, amount: &'static str| {
        let app = &app;
        let operator = operator.clone();
        async move {
            let body = format!(r#"{{"amount_usd": "{amount}", "reason": "dropped calls"}}"#);
            app.call("POST", path, Some(&operator), &[("Idempotency-Key", key)], Some(&body)).await
        }
    };
    let balance = || {
        let admin = admin.clone();
        let app = &app;
        async move { app.get("/v1/overview", &admin).await.json["balance_usd"].clone() }
    };
    let before = balance().await;
    let first = note("cn-1", "1.35").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["credit_note"]["number"], "RL-000001-CN-01");
    assert_eq!(first.json["invoice"]["amount_due_usd"], "21.35", "unchanged");
    assert_eq!(first.json["invoice"]["credited_usd"], "1.35");
    assert_eq!(first.json["invoice"]["outstanding_usd"], "20");
    let again = note("cn-1", "1.35").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json["credit_note"]["number"], "RL-000001-CN-01");
    let too_much = note("cn-2", "20.01").await;
    assert_eq!(too_much.status, StatusCode::BAD_REQUEST, "{}", too_much.text);
    let after = balance().await;
    assert_eq!(
        Decimal::from_str(after.as_str().unwrap()).unwrap()
            - Decimal::from_str(before.as_str().unwrap()).unwrap(),
        usd("1.35"),
        "credited once"
    );
    let credits = app.get("/v1/activity?show=credits", &admin).await;
    let notes: Vec<_> = credits.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source_id"] == "cn:RL-000001-CN-01")
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["details"]["reason"], "dropped calls");

    // Long overdue: the daily sweep blocks the account; the list says what lifts it.
    let id = ledger::AccountId::parse("acme").unwrap();
    let (invoice, _) = documents::invoice::load(&*app.store, &id, NOVEMBER.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let late =
        (invoice.due_on + chrono::Duration::days(40)).and_hms_opt(2, 0, 0).unwrap().and_utc();
    let blocked = jobs::invoices::block_or_lift(&*app.store, &*app.store, &id, late).await.unwrap();
    assert_eq!(blocked, jobs::invoices::BlockOutcome::Blocked(NOVEMBER.parse().unwrap()));
    let list = app.get("/v1/invoices", &admin).await;
    assert_eq!(list.json["blocked"]["month"], NOVEMBER, "{}", list.text);
    assert_eq!(list.json["blocked"]["pay_usd"], "20");
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["status"], "suspended", "{}", overview.text);
    let body = r#"{"method": "eft", "amount_usd": "20", "reference": "EFT 1", "received_on": "2026-12-02"}"#;
    let paid = app
        .call(
            "POST",
            "/v1/operator/accounts/acme/manual-payments",
            Some(&operator),
            &[("Idempotency-Key", "eft-1")],
            Some(body),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let list = app.get("/v1/invoices", &admin).await;
    assert!(list.json["blocked"].is_null(), "{}", list.text);
    assert_eq!(list.json["invoices"][0]["status"], "paid");
}

common::in_every_mode!(
    credit_notes_correct_an_invoice_and_a_payment_lifts_a_block,
    a_pre_authorized_card_pays_the_invoice_once_on_its_issue_date,
    declined_cards_are_retried_twice_then_left_for_a_payment_by_hand,
    a_month_is_invoiced_once_and_reconciles_with_the_export,
    manual_payments_pay_the_oldest_invoice_first_once,
    bad_requests_are_refused_and_change_nothing,
);
