//! A postpaid (RingOffice) account played through two months end to end (issue 17): the API
//! router on loopback over DynamoDB Local sets it up (credit limit, terms, a card registered at
//! localstripe, postpaid with a pre-authorized card); usage, the monthly tax job and the plan
//! fee post to DynamoDB Local; on each 1st the monthly run issues the month's invoice, emails
//! it through SES (moto) with its page and CSV attached, and the payments worker charges it to
//! the card at localstripe. Re-runs issue, email and charge nothing twice; the second invoice
//! shows the first month's tax and the plan fee and does not bill the first month again.

use std::sync::Arc;

use api::auth::{LocalJwt, Role};
use api::state::AppState;
use chrono::{DateTime, Datelike, Utc};
use jobs::statements::StatementJob;
use jobs::tax::TaxJob;
use ledger::{AccountId, Amount, BillingItem, EntryKind, EntryQuery, LedgerStore, Month, Posting};
use mailers::SesMailer;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use usage::worker::RateCards;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn usd(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn debit(source: &str, item: BillingItem, amount: &str, when: &str) -> Posting {
    let source = ledger::SourceId::parse(source).unwrap();
    Posting::usage(source, item, amount.parse::<Amount>().unwrap(), at(when)).unwrap()
}

struct Api {
    base_url: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        (status, response.text().await.expect("a body"))
    }
}

/// Invoice emails moto's SES accepted for `address`: (subject line, raw MIME).
async fn invoice_emails_to(address: &str) -> Vec<String> {
    let url = format!("{}/moto-api/data.json", e2e::moto_endpoint());
    let data: serde_json::Value =
        reqwest::get(&url).await.expect("moto data").json().await.expect("moto json");
    data["ses"]["RawMessage"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m["destinations"]
                .as_array()
                .is_some_and(|d| d.iter().any(|to| to.as_str() == Some(address)))
        })
        .map(|m| m["raw_data"].as_str().unwrap_or_default().to_string())
        .filter(|raw| raw.contains("invoice-RL-"))
        .collect()
}

#[tokio::test]
async fn a_postpaid_account_is_invoiced_emailed_and_charged_each_month_once() {
    let store = Arc::new(e2e::fresh_dynamo_store().await);
    let processor = Arc::new(e2e::stripe::processor());
    let state = Arc::new(AppState {
        store: store.clone(),
        cards: RateCards::standard_only(),
        processor: processor.clone(),
        notices: None,
        statements: None,
        portal: None,
    });
    let jwt = LocalJwt::new(b"postpaid-e2e-secret".to_vec());
    let router = api::app::local(state, jwt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let base_url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let api = Api { base_url, http: reqwest::Client::new() };

    // Set up through the API, as the platform and the customer would.
    let name = e2e::unique_table("ro");
    let id = AccountId::parse(&name).unwrap();
    let operator = jwt.issue("ops@ringledger.example", None, Role::Operator, 600);
    let admin = jwt.issue("admin@ringoffice.example", Some(&name), Role::Admin, 600);
    use reqwest::Method;
    let steps: Vec<(Method, String, &String, String)> = vec![
        (
            Method::POST,
            "/v1/operator/accounts".into(),
            &operator,
            format!(r#"{{"account_id": "{name}"}}"#),
        ),
        (
            Method::PUT,
            format!("/v1/operator/accounts/{name}/credit-limit"),
            &operator,
            r#"{"credit_limit_usd": "300"}"#.into(),
        ),
        (Method::POST, "/v1/terms".into(), &admin, r#"{"version": "2026-01"}"#.into()),
    ];
    for (method, path, token, body) in steps {
        let (status, text) = api.call(method, &path, token, &body).await;
        assert!(status.is_success(), "{path}: {status} {text}");
    }
    let exp_year = u16::try_from(Utc::now().year()).unwrap() + 3;
    let token = e2e::stripe::card_token(&api.http, "424242424242424", exp_year).await;
    let card = format!(
        r#"{{"payment_method_token": "{token}", "card_manager_email": "cards@ringoffice.example", "role": "primary"}}"#
    );
    let (status, text) = api.call(Method::POST, "/v1/cards", &admin, &card).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (status, text) = api
        .call(
            Method::PUT,
            &format!("/v1/operator/accounts/{name}/billing-mode"),
            &operator,
            r#"{"mode": "postpaid", "pre_authorized_payment": true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Billing contact, a New York City service address (taxed at 8.875%) and a $29 plan.
    let billing = format!("billing@{name}.example");
    documents::profile::update(&*store, &id, |p| {
        p.billing_emails = vec![documents::profile::Email::try_from(billing.clone()).unwrap()];
        p.service_address = Some(
            serde_json::from_value(serde_json::json!({
                "line1": "1 Broadway", "city": "New York", "region": "NY",
                "postal_code": "10004", "country": "US"
            }))
            .unwrap(),
        );
        let terms = documents::plan::PlanTerms {
            name: "RingOffice Pro".into(),
            price_usd: "29".parse().unwrap(),
            period: documents::plan::PlanPeriod::Monthly,
        };
        p.plan = Some(documents::plan::Plan::starting(terms, "2027-02-01".parse().unwrap()));
        Ok(())
    })
    .await
    .unwrap();

    let sender = format!("billing-{name}@ringledger-test.example");
    let ses = e2e::ses_client().await;
    ses.create_email_identity().email_identity(&sender).send().await.expect("verify sender");
    let statements = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: Arc::new(SesMailer::new(ses)),
        from_address: format!("Ringledger Billing <{sender}>"),
    };
    let tax = TaxJob {
        ledger: store.clone(),
        docs: store.clone(),
        table: Arc::new(tax::TaxTable::bundled().unwrap()),
        taxability: Arc::new(tax::Taxability::bundled().unwrap()),
    };
    let ports =
        payment_flow::PaymentPorts { store: &*store, processor: &*processor, notices: None };
    let (january, february): (Month, Month) =
        ("2027-01".parse().unwrap(), "2027-02".parse().unwrap());

    // January: a call and a text, below zero on the credit limit.
    let calls = vec![
        debit("use:jan-1#call", BillingItem::PhoneCall, "12.3456", "2027-01-10T10:00:00Z"),
        debit("use:jan-2#sms", BillingItem::OutgoingSms, "0.0079", "2027-01-11T10:00:00Z"),
    ];
    store.post(&id, calls, at("2027-01-11T10:00:00Z")).await.unwrap();

    // 1 February: January's tax, February's plan fee, then January's invoice, twice (a re-run).
    let first = at("2027-02-01T00:05:00Z");
    tax.run(&id, january, first).await.unwrap();
    let renewed =
        jobs::plans::renew_at(&*store, &*store, &id, first.date_naive(), first).await.unwrap();
    assert_eq!(renewed, 1, "February's plan fee");
    for _ in 0..2 {
        statements.invoice(&id, january, at("2027-02-01T00:10:00Z")).await.unwrap();
    }
    let (jan, _) = documents::invoice::load(&*store, &id, january).await.unwrap().unwrap();
    let number = jan.number.clone().unwrap();
    assert!(number.starts_with("RL-"), "{number}");
    assert_eq!(jan.closing_balance_usd, usd("-12.3535"), "January only: not the tax of 1 February");
    assert_eq!(jan.amount_due_usd, usd("12.35"));
    // The pre-authorized charge, and its redelivery.
    assert_eq!(store.account(&id).await.unwrap().unwrap().pending_payments, vec!["inv:2027-01"]);
    for _ in 0..2 {
        let done = payment_flow::reconcile_pending_payment(
            &ports,
            &id,
            "inv:2027-01",
            at("2027-02-01T00:15:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(done, payment_flow::Reconciled::Final);
    }
    let (jan, _) = documents::invoice::load(&*store, &id, january).await.unwrap().unwrap();
    assert!(jan.outstanding_usd().is_zero(), "{jan:?}");

    // February: more calls; 1 March: February's invoice.
    let calls = vec![
        debit("use:feb-1#call", BillingItem::PhoneCall, "7.25", "2027-02-14T10:00:00Z"),
        debit(
            "use:feb-1#surcharge",
            BillingItem::CarrierSurcharge,
            "0.0025",
            "2027-02-14T10:00:00Z",
        ),
    ];
    store.post(&id, calls, at("2027-02-14T10:00:00Z")).await.unwrap();
    statements.invoice(&id, february, at("2027-03-01T00:10:00Z")).await.unwrap();
    let (feb, _) = documents::invoice::load(&*store, &id, february).await.unwrap().unwrap();
    let line = |item: BillingItem| {
        feb.lines
            .iter()
            .find(|l| l.item == item && l.kind == EntryKind::Debit)
            .map(|l| l.amount_usd)
    };
    let entries = ledger::store::all_entries(&*store, &id, EntryQuery::default()).await.unwrap();
    let tax_entry = entries.iter().find(|e| e.source_id.as_str() == "tax:2027-01").expect("taxed");
    assert_eq!(line(BillingItem::SalesTax), Some(tax_entry.amount_usd.value()), "January's tax");
    assert_eq!(line(BillingItem::PlanFee), Some(usd("29")));
    assert_eq!(line(BillingItem::PhoneCall), Some(usd("7.25")));
    assert_eq!(line(BillingItem::CarrierSurcharge), Some(usd("0.0025")));
    // Exactly February's entries, to the cent; January (paid) is not billed again.
    let in_february: Decimal = entries
        .iter()
        .filter(|e| e.posted_at >= february.start() && e.posted_at < february.end())
        .map(|e| match e.kind {
            EntryKind::Debit => -e.amount_usd.value(),
            EntryKind::Credit => e.amount_usd.value(),
        })
        .sum();
    assert_eq!(feb.closing_balance_usd - feb.opening_balance_usd, in_february);
    assert_eq!(feb.previous_unpaid_usd, Decimal::ZERO);
    let expected_due = (-feb.closing_balance_usd)
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(feb.amount_due_usd, expected_due);
    assert!(feb.amount_due_usd > usd("36"), "{feb:?}");
    let done = payment_flow::reconcile_pending_payment(
        &ports,
        &id,
        "inv:2027-02",
        at("2027-03-01T00:15:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(done, payment_flow::Reconciled::Final);
    let (feb, _) = documents::invoice::load(&*store, &id, february).await.unwrap().unwrap();
    assert!(feb.outstanding_usd().is_zero(), "{feb:?}");

    // localstripe charged each invoice once, for its amount due.
    let (profile, _) = documents::profile::load(&*store, &id).await.unwrap();
    let customer = profile.processor_customer_id.expect("a processor customer");
    let mut charged: Vec<i64> = e2e::stripe_intents_of(&api.http, &customer)
        .await
        .iter()
        .filter(|i| i["status"] == "succeeded")
        .map(|i| i["amount"].as_i64().unwrap())
        .collect();
    charged.sort();
    let mut expected = vec![1_235, (feb.amount_due_usd * Decimal::ONE_HUNDRED).try_into().unwrap()];
    expected.sort();
    assert_eq!(charged, expected);

    // Each invoice reached the billing address once, with its page and its CSV attached.
    let emails = invoice_emails_to(&billing).await;
    assert_eq!(emails.len(), 2, "one email per invoice, however often the run went");
    for raw in &emails {
        assert!(raw.contains(".html") && raw.contains("-entries.csv"), "{raw}");
    }
    assert!(emails.iter().any(|raw| raw.contains(&number)), "{number}");
}
