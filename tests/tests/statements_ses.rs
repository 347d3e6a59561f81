//! Statements end to end: entries posted to DynamoDB Local, the statement built from them,
//! rendered, its CSV attached, and sent through `SesMailer` to moto's SES v2 API as a raw MIME
//! message (`SendEmail` with `Content.Raw`). What SES received is read back from moto
//! (`GET /moto-api/data.json`, key `ses` → `RawMessage`) and taken apart: one message to the
//! billing contacts, whose CSV attachment decodes to exactly `statement_csv` and whose HTML
//! part shows the closing balance. A second delivery of the same request sends nothing.

use std::str::FromStr;
use std::sync::Arc;

use api::profile::Email as ProfileEmail;
use chrono::{DateTime, NaiveDate, Utc};
use ledger::docs::DocStore;
use ledger::statement::statement_for;
use ledger::{
    display_usd, Account, AccountId, Amount, BillingItem, EntryKind, LedgerStore, NewAccount,
    Posting, PostingRule, SourceId, TermsAcceptance,
};
use mailers::SesMailer;
use notifications::statement::{send_statement, statement_csv, StatementRequest};
use notifications::worker::{delivery_record, Delivery, Outcome};
use rust_decimal::Decimal;
use store_dynamodb::DynamoStore;

use e2e::mime::{boundary, decode_base64, decode_quoted_printable, header, parts, split_entity};

async fn ses_client() -> aws_sdk_sesv2::Client {
    e2e::ses_client().await
}

fn at(value: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value).expect("a valid time").to_utc()
}

fn day(value: &str) -> NaiveDate {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").expect("a valid date")
}

/// A raw message SES accepted, as moto reports it.
#[derive(Debug, Clone)]
struct RawReceived {
    id: String,
    source: String,
    /// The request's destinations, then the addresses of the message's own `To` header.
    destinations: Vec<String>,
    raw: String,
}

/// Every raw message moto's SES holds that names `address` among its destinations.
async fn raw_received_by(address: &str) -> Vec<RawReceived> {
    let url = format!("{}/moto-api/data.json", e2e::moto_endpoint());
    let data: serde_json::Value =
        reqwest::get(&url).await.expect("moto data").json().await.expect("moto json");
    let messages = data["ses"]["RawMessage"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .map(|m| RawReceived {
            id: m["id"].as_str().unwrap_or_default().into(),
            source: m["source"].as_str().unwrap_or_default().into(),
            destinations: m["destinations"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            raw: m["raw_data"].as_str().unwrap_or_default().into(),
        })
        .filter(|m| m.destinations.iter().any(|to| to == address))
        .collect()
}

/// RFC 2047 `Q` encoded words (as the mailer writes them), decoded and joined.
fn decode_subject(value: &str) -> String {
    if !value.starts_with("=?UTF-8?Q?") {
        return value.to_string();
    }
    value
        .split(' ')
        .map(|word| {
            let inner = word.strip_prefix("=?UTF-8?Q?").and_then(|w| w.strip_suffix("?=")).unwrap();
            decode_quoted_printable(&inner.replace('_', " "))
        })
        .collect()
}

async fn open(store: &DynamoStore, id: &AccountId) {
    let created = at("2026-09-01T00:00:00Z");
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, created)
        .await
        .expect("create the account");
    store
        .modify_account(
            id,
            Arc::new(move |account: &mut Account| {
                account.terms = Some(TermsAcceptance {
                    version: "2026-01".into(),
                    accepted_by: "owner@example.com".into(),
                    accepted_at: created,
                });
                Ok(())
            }),
            created,
        )
        .await
        .expect("accept the terms");
}

async fn post(
    store: &DynamoStore,
    id: &AccountId,
    source: &str,
    kind: EntryKind,
    item: BillingItem,
    amount: &str,
    now: &str,
) {
    let posting = Posting::new(
        SourceId::parse(source).unwrap(),
        kind,
        item,
        Amount::from_str(amount).unwrap(),
        PostingRule::Always,
        at(now),
    )
    .unwrap();
    store.post(id, vec![posting], at(now)).await.expect("post");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_reaches_ses_once_as_mime_with_its_csv_attached() {
    let store = Arc::new(e2e::fresh_dynamo_store().await);
    let account = AccountId::parse(e2e::unique_table("acme")).unwrap();
    let domain = format!("{}.example", account.as_str());
    let (ops, cfo) = (format!("ops@{domain}"), format!("cfo@{domain}"));
    let sender = format!("billing-{}@ringledger-test.example", account.as_str());
    let ses = ses_client().await;
    ses.create_email_identity().email_identity(&sender).send().await.expect("verify sender");
    let from = format!("Ringledger Billing <{sender}>");
    let mailer = SesMailer::new(ses);

    open(&store, &account).await;
    let billing: Vec<ProfileEmail> =
        [&ops, &cfo].iter().map(|a| ProfileEmail::try_from(a.to_string()).unwrap()).collect();
    let docs: &dyn DocStore = &*store;
    api::profile::update(docs, &account, |profile| {
        profile.billing_emails = billing.clone();
        Ok(())
    })
    .await
    .expect("write the profile");
    use BillingItem::*;
    use EntryKind::*;
    post(&store, &account, "pay:e2e-1", Credit, FundsAdded, "100", "2026-10-01T09:00:00Z").await;
    post(&store, &account, "evt-e2e-1", Debit, PhoneCall, "1.2345", "2026-10-05T12:00:00Z").await;
    post(&store, &account, "evt-e2e-2", Debit, OutgoingSms, "0.0079", "2026-10-06T12:00:00Z").await;
    post(&store, &account, "adj:e2e-1", Credit, Refund, "2.5", "2026-10-31T23:59:59Z").await;
    post(&store, &account, "tax:e2e-1", Debit, SalesTax, "0.77", "2026-11-01T00:00:00Z").await;

    let request = StatementRequest {
        id: "statement:monthly:2026-10-01:2026-10-31".into(),
        account_id: account.clone(),
        from: day("2026-10-01"),
        to: day("2026-10-31"),
        recipients: None,
        requested_at: Utc::now(),
    };
    let outcome = send_statement(&*store, &*store, &mailer, &from, &request).await.expect("send");
    let Outcome::Sent { message_id } = outcome else { panic!("{outcome:?}") };
    let again = send_statement(&*store, &*store, &mailer, &from, &request).await.expect("again");
    assert_eq!(again, Outcome::AlreadySent);

    // One raw message, to both billing contacts, from the configured sender.
    let received = raw_received_by(&ops).await;
    assert_eq!(received.len(), 1, "sent once: {received:?}");
    let message = &received[0];
    assert_eq!(message.id, message_id, "the delivery record names what SES accepted");
    assert_eq!(message.source, from);
    assert!(message.destinations.contains(&cfo), "{:?}", message.destinations);
    let record = delivery_record(&*store, &account, &request.id).await.unwrap().unwrap();
    assert_eq!(record.notice_kind, "statement");
    assert!(
        matches!(record.delivery, Delivery::Sent { ref message_id, .. } if *message_id == message.id)
    );

    // Take the MIME message apart.
    let (head, body) = split_entity(&message.raw);
    assert_eq!(header(head, "From"), from);
    assert_eq!(header(head, "To"), format!("{ops}, {cfo}"));
    assert_eq!(
        decode_subject(&header(head, "Subject")),
        "Your ringledger statement, 1\u{2013}31 Oct 2026"
    );
    let content_type = header(head, "Content-Type");
    assert!(content_type.starts_with("multipart/mixed;"), "{content_type}");
    let mixed = parts(body, &boundary(&content_type));
    assert_eq!(mixed.len(), 2, "the text and HTML alternatives, then the CSV");

    let (alternative_head, alternative_body) = split_entity(mixed[0]);
    let alternative_type = header(alternative_head, "Content-Type");
    assert!(alternative_type.starts_with("multipart/alternative;"), "{alternative_type}");
    let alternatives = parts(alternative_body, &boundary(&alternative_type));
    let (html_head, html) = split_entity(alternatives[1]);
    assert_eq!(header(html_head, "Content-Type"), "text/html; charset=utf-8");
    let html = decode_quoted_printable(html.strip_suffix("\r\n").unwrap());

    let (csv_head, csv_base64) = split_entity(mixed[1]);
    assert_eq!(
        header(csv_head, "Content-Disposition"),
        format!("attachment; filename=\"statement-{}-2026-10-01-2026-10-31.csv\"", account)
    );
    assert_eq!(header(csv_head, "Content-Transfer-Encoding"), "base64");
    assert!(csv_base64.split("\r\n").all(|line| line.len() <= 76));
    let csv = decode_base64(&csv_base64.split("\r\n").collect::<String>());
    let csv = String::from_utf8(csv).expect("UTF-8");

    // The statement, read again from DynamoDB Local, is what was sent.
    let statement = statement_for(&*store, &account, request.from, request.to).await.unwrap();
    assert_eq!(csv, statement_csv(&statement));
    assert_eq!(csv.matches("\r\n").count(), 1 + 4, "the header and October's four entries");
    assert!(csv.contains(",-1.2345,98.7655,evt-e2e-1\r\n"), "{csv}");
    let closing = Decimal::from_str("101.2576").unwrap();
    assert_eq!(statement.closing_balance_usd, closing);
    let closing_row = format!(
        "Closing balance, 31 Oct 2026</td><td style=\"padding:4px 0 4px 8px;vertical-align:top;\
         text-align:right;white-space:nowrap;font-weight:bold;border-top:1px solid #d9e2ec;\">{}\
         </td>",
        display_usd(closing)
    );
    assert!(html.contains(&closing_row), "{html}");
    assert!(html.contains("$101.26"));
}
