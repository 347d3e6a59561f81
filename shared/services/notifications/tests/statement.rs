//! Statements by email: snapshots of the rendering and the CSV (under `tests/snapshots/`,
//! regenerated with `UPDATE_SNAPSHOTS=1 cargo test -p ringledger-notifications --test
//! statement`, then reviewed), the limits of the email, and sending once per request on the
//! memory store with a recording mailer and the `.eml` folder mailer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, Utc};

use ledger::memory::MemoryStore;
use ledger::statement::{statement_for, Statement};
use ledger::{
    Account, AccountId, Amount, BillingItem, Entry, EntryKind, LedgerStore, NewAccount, Posting,
    PostingRule, SourceId, TermsAcceptance,
};
use mailers::FileMailer;
use messaging::mail::{Email, MailError, Mailer};
use notifications::error::DeliveryError;
use notifications::statement::{
    render_statement, send_statement, statement_csv, AccountInfo, ServiceAddress, StatementRequest,
    CSV_COLUMNS, MAX_EMAIL_LINES,
};
use notifications::templates::Rendered;
use notifications::worker::{delivery_record, Delivery, Outcome};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;

const FROM: &str = "Ringledger Billing <billing@ringledger.example>";

fn day(value: &str) -> NaiveDate {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").unwrap()
}

fn at(value: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value).unwrap().to_utc()
}

fn acme() -> AccountId {
    AccountId::parse("acme").unwrap()
}

/// Entries with running balances from `opening`, numbered from `first_seq`.
fn chain(
    opening: Decimal,
    first_seq: u64,
    specs: Vec<(&str, EntryKind, BillingItem, Decimal, &str, serde_json::Value)>,
) -> Vec<Entry> {
    let mut balance = opening;
    specs
        .into_iter()
        .enumerate()
        .map(|(index, (posted_at, kind, item, amount, source, details))| {
            let amount_usd = Amount::new(amount).unwrap();
            balance += kind.signed(amount_usd);
            Entry {
                account_id: acme(),
                seq: first_seq + index as u64,
                kind,
                item,
                amount_usd,
                balance_after_usd: balance,
                posted_at: at(posted_at),
                occurred_at: at(posted_at) - Duration::seconds(2),
                source_id: SourceId::parse(source).unwrap(),
                details,
                grants: Vec::new(),
            }
        })
        .collect()
}

fn october() -> Statement {
    use BillingItem::*;
    use EntryKind::*;
    let call = json!({"event": "call", "direction": "outbound", "to": "+15551230000",
        "seconds": 180, "billed_seconds": 180, "included_seconds": 60});
    let entries = chain(
        dec!(14.5),
        41,
        vec![
            (
                "2026-10-01T00:00:05Z",
                Debit,
                SalesTax,
                dec!(1.2345),
                "tax:acme:2026-09",
                json!({"month": "2026-09"}),
            ),
            (
                "2026-10-01T09:12:00Z",
                Credit,
                FundsAdded,
                dec!(100),
                "pay:key-1",
                json!({"trigger": "manual", "card": "visa 4242", "payment_id": "pay_1"}),
            ),
            ("2026-10-03T14:00:02Z", Debit, PhoneCall, dec!(1.20), "evt-1", call.clone()),
            (
                "2026-10-03T14:00:02Z",
                Credit,
                IncludedMinutes,
                dec!(0.40),
                "evt-1#included",
                call.clone(),
            ),
            (
                "2026-10-03T14:00:02Z",
                Debit,
                CarrierSurcharge,
                dec!(0.0125),
                "evt-1#surcharge",
                call,
            ),
            (
                "2026-10-05T08:00:00Z",
                Debit,
                PhoneNumber,
                dec!(1.15),
                "evt-2",
                json!({"event": "number_renewal", "number": "+15550001111",
                    "number_type": "local"}),
            ),
            (
                "2026-10-10T10:30:00Z",
                Debit,
                OutgoingSms,
                dec!(0.0079),
                "=evt-3",
                json!({"event": "sms_out", "from": "+15550001111", "to": "+15557654321",
                    "segments": 2}),
            ),
            (
                "2026-10-12T16:45:10Z",
                Debit,
                PremiumService,
                dec!(0.10),
                "evt-4#transcription",
                json!({"event": "call", "direction": "inbound", "seconds": 45}),
            ),
            (
                "2026-10-15T12:00:00Z",
                Credit,
                Refund,
                dec!(5),
                "adj:key-2",
                json!({"reason": "Dropped calls on Oct 3, \"sorry\"", "by": "ops@ringledger"}),
            ),
            (
                "2026-10-20T03:14:15Z",
                Credit,
                FundsAdded,
                dec!(50),
                "rr-acme-7",
                json!({"trigger": "auto", "card": "mastercard 9995"}),
            ),
            (
                "2026-10-31T23:59:59.999999Z",
                Debit,
                Adjustment,
                dec!(2),
                "adj:key-3",
                json!({"reason": "=1+1 late fee", "by": "ops@ringledger"}),
            ),
        ],
    );
    Statement::build(acme(), day("2026-10-01"), day("2026-10-31"), dec!(14.5), &entries).unwrap()
}

fn address() -> AccountInfo {
    AccountInfo {
        service_address: Some(ServiceAddress {
            line1: "1 Main St".into(),
            line2: Some("Suite 200".into()),
            city: "Springfield".into(),
            region: Some("IL".into()),
            postal_code: "62701".into(),
            country: "US".into(),
        }),
    }
}

fn hostile() -> (Statement, AccountInfo) {
    let entries = chain(
        dec!(0),
        1,
        vec![(
            "2026-10-02T00:00:00Z",
            EntryKind::Credit,
            BillingItem::Adjustment,
            dec!(1),
            "<img/src=x>",
            json!({"reason": "<script>alert('x')</script> & \"quotes\""}),
        )],
    );
    let statement =
        Statement::build(acme(), day("2026-10-01"), day("2026-10-07"), dec!(0), &entries).unwrap();
    let info = AccountInfo {
        service_address: Some(ServiceAddress {
            line1: "<b>Evil & Co</b>".into(),
            line2: None,
            city: "'Quote'".into(),
            region: None,
            postal_code: "\"0\"".into(),
            country: "US".into(),
        }),
    };
    (statement, info)
}

fn cases() -> Vec<(&'static str, Statement, Option<AccountInfo>)> {
    let quiet =
        Statement::build(acme(), day("2026-11-01"), day("2026-11-30"), dec!(-3.5), &[]).unwrap();
    let (escaping, info) = hostile();
    vec![
        ("statement_month", october(), Some(address())),
        ("statement_empty", quiet, None),
        ("statement_escaping", escaping, Some(info)),
    ]
}

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn text_file(rendered: &Rendered) -> String {
    format!("Subject: {}\n\n{}", rendered.subject, rendered.text)
}

#[test]
fn every_statement_renders_exactly_as_its_snapshot() {
    let update = std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    let dir = snapshot_dir();
    let mut mismatches = Vec::new();
    for (name, statement, info) in cases() {
        let rendered = render_statement(&statement, info.as_ref());
        for (extension, actual) in [
            ("txt", text_file(&rendered)),
            ("html", rendered.html.clone()),
            ("csv", statement_csv(&statement)),
        ] {
            let path = dir.join(format!("{name}.{extension}"));
            if update {
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
         ringledger-notifications --test statement",
        mismatches.join("\n\n")
    );
}

#[test]
fn the_summary_shows_each_figure_to_the_cent() {
    let statement = october();
    assert!(statement.reconciles());
    let rendered = render_statement(&statement, Some(&address()));
    assert_eq!(rendered.subject, "Your ringledger statement, 1\u{2013}31 Oct 2026");
    for part in [&rendered.text, &rendered.html] {
        for expected in [
            "Opening balance, 1 Oct 2026",
            "$14.50",
            "Card payments",
            "+$150.00",
            "Other credits",
            "+$5.00",
            "Phone call charge",
            "-$1.20",
            "Included plan minutes",
            "+$0.40",
            "-$1.23",
            "-$2.00",
            "Closing balance, 31 Oct 2026",
            "$164.20",
            "1 Main St, Suite 200, Springfield, IL 62701, US",
        ] {
            assert!(part.contains(expected), "{expected:?} missing from\n{part}");
        }
    }
    assert_eq!(statement.closing_balance_usd, dec!(164.1951));
    for line in rendered.text.lines() {
        assert!(line.chars().count() <= 72, "{line:?}");
    }
    // No amount with more than two decimals reaches a customer.
    for part in [&rendered.subject, &rendered.text, &rendered.html] {
        for (index, _) in part.match_indices('$') {
            let rest = &part[index + 1..];
            let whole = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let decimals = rest[whole..]
                .strip_prefix('.')
                .map_or(0, |d| d.chars().take_while(char::is_ascii_digit).count());
            assert_eq!(decimals, 2, "{}", &rest[..rest.len().min(12)]);
        }
    }
}

#[test]
fn html_escapes_every_value_and_uses_only_the_templates_tags() {
    let (statement, info) = hostile();
    let html = render_statement(&statement, Some(&info)).html;
    for raw in ["<script>", "<img", "<b>", "\"quotes\"", "'Quote'", "Evil & Co"] {
        assert!(!html.contains(raw), "{raw:?} reached the HTML unescaped");
    }
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;")
    );
    assert!(html.contains("&lt;b&gt;Evil &amp; Co&lt;/b&gt;"));
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

/// A minimal RFC 4180 reader for the tests: quoted fields, doubled quotes, CRLF records.
fn parse_csv(csv: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = csv.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && record.is_empty(), "the CSV ends with CRLF");
    records
}

#[test]
fn the_csv_has_every_line_exactly_and_reads_back() {
    let statement = october();
    let csv = statement_csv(&statement);
    let records = parse_csv(&csv);
    assert_eq!(records[0], CSV_COLUMNS);
    assert_eq!(records.len(), statement.lines.len() + 1);
    for (record, line) in records[1..].iter().zip(&statement.lines) {
        assert_eq!(record[0], line.seq.to_string());
        assert_eq!(DateTime::parse_from_rfc3339(&record[1]).unwrap(), line.posted_at);
        assert_eq!(DateTime::parse_from_rfc3339(&record[2]).unwrap(), line.occurred_at);
        assert_eq!(record[3], line.kind.as_str());
        assert_eq!(record[4], line.item.as_str());
        let description = record[5].strip_prefix('\'').unwrap_or(&record[5]);
        assert_eq!(description, line.description);
        assert_eq!(Decimal::from_str_exact(&record[6]).unwrap(), line.amount_usd);
        assert_eq!(Decimal::from_str_exact(&record[7]).unwrap(), line.balance_after_usd);
        let source_id = record[8].strip_prefix('\'').unwrap_or(&record[8]);
        assert_eq!(source_id, line.source_id);
    }
    let sum: Decimal = records[1..].iter().map(|r| Decimal::from_str_exact(&r[6]).unwrap()).sum();
    assert_eq!(sum, statement.closing_balance_usd - statement.opening_balance_usd);
    assert!(csv.contains(",-0.0125,"), "exact, signed amounts: {csv}");
    assert!(csv.contains(",Adjustment: =1+1 late fee,"), "{csv}");
    assert!(csv.contains(",'=evt-3\r\n"), "a formula-like source id is defused: {csv}");
    assert!(csv.contains("\"Refund: Dropped calls on Oct 3, \"\"sorry\"\"\""), "{csv}");
    assert!(csv.contains(",2026-10-31T23:59:59.999999Z,"), "{csv}");
}

#[test]
fn a_busy_period_is_summed_up_by_day_and_attaches_every_line() {
    let specs = (0..MAX_EMAIL_LINES + 50)
        .map(|n| {
            (
                if n < 120 { "2026-10-02T00:00:00Z" } else { "2026-10-03T08:00:00Z" },
                EntryKind::Debit,
                BillingItem::IncomingSms,
                dec!(0.0075),
                "x",
                json!({"event": "sms_in", "segments": n % 3 + 1}),
            )
        })
        .collect();
    let mut entries = chain(dec!(10), 1, specs);
    for (n, entry) in entries.iter_mut().enumerate() {
        entry.source_id = SourceId::parse(format!("sms-{n}")).unwrap();
    }
    let statement =
        Statement::build(acme(), day("2026-10-01"), day("2026-10-31"), dec!(10), &entries).unwrap();
    let rendered = render_statement(&statement, None);
    assert_eq!(rendered.html.matches("sms-").count(), 0, "source ids are not in the email");
    let rows = rendered.html.matches("<tr>").count();
    let (facts_rows, summary_rows, days) = (2, 8, 2);
    assert_eq!(rows, facts_rows + summary_rows + 1 + days, "facts, summary, and one row a day");
    let note = "The period has 150 entries: this email sums them up by day. The attached CSV \
                file lists every one.";
    assert!(rendered.html.contains(note), "{}", rendered.html);
    assert!(rendered.text.replace('\n', " ").contains(note));
    // 120 SMS of $0.0075 on the 2nd (-$0.90), 30 on the 3rd (-$0.225, rounded to -$0.23).
    assert!(rendered.text.contains("2026-10-02"), "{}", rendered.text);
    assert!(
        rendered.text.contains("-$0.90") && rendered.text.contains("$9.10"),
        "{}",
        rendered.text
    );
    assert!(
        rendered.text.contains("-$0.23") && rendered.text.contains("$8.88"),
        "{}",
        rendered.text
    );
    assert_eq!(statement_csv(&statement).matches("\r\n").count(), 151);
}

#[test]
fn statement_requests_are_queue_messages() {
    let request = StatementRequest {
        id: "statement:monthly:2026-10-01:2026-10-31".into(),
        account_id: acme(),
        from: day("2026-10-01"),
        to: day("2026-10-31"),
        recipients: None,
        requested_at: at("2026-11-01T00:05:00Z"),
    };
    let json = serde_json::to_value(&request).unwrap();
    assert_eq!(json["from"], "2026-10-01");
    assert_eq!(json["account_id"], "acme");
    assert_eq!(serde_json::from_value::<StatementRequest>(json).unwrap(), request);
    let without_recipients = r#"{"id": "s1", "account_id": "acme", "from": "2026-10-01",
        "to": "2026-10-31", "requested_at": "2026-11-01T00:05:00Z"}"#;
    let parsed: StatementRequest = serde_json::from_str(without_recipients).unwrap();
    assert_eq!(parsed.recipients, None);
}

// ---------------------------------------------------------------------------------------------
// Sending once
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct RecordingMailer {
    sent: Mutex<Vec<Email>>,
    fail_next: Mutex<Option<MailError>>,
}

impl RecordingMailer {
    fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        if let Some(error) = self.fail_next.lock().unwrap().take() {
            return Err(error);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(email.clone());
        Ok(format!("ses-{}", sent.len()))
    }
}

struct Rig {
    store: Arc<MemoryStore>,
    mailer: Arc<RecordingMailer>,
}

impl Rig {
    /// An account with billing contacts, a service address and a few entries in October 2026.
    async fn new() -> Rig {
        let store = Arc::new(MemoryStore::new());
        let created = at("2026-09-01T00:00:00Z");
        store
            .create_account(NewAccount { id: acme(), credit_limit_usd: None }, created)
            .await
            .unwrap();
        store
            .modify_account(
                &acme(),
                Arc::new(move |account: &mut Account| {
                    account.terms = Some(TermsAcceptance {
                        version: "2026-01".into(),
                        accepted_by: "owner@acme.example".into(),
                        accepted_at: created,
                    });
                    Ok(())
                }),
                created,
            )
            .await
            .unwrap();
        let profile = json!({
            "billing_emails": ["ops@acme.example", "CFO@acme.example", "ops@ACME.example"],
            "recharge_failure_email": "cards@acme.example",
            "service_address": {"line1": "1 Main St", "city": "Springfield", "region": "IL",
                "postal_code": "62701", "country": "US"},
            "tax_exempt": false,
        });
        let profile: documents::profile::Profile = serde_json::from_value(profile).unwrap();
        documents::profile::store(&*store, &acme(), &profile).await.unwrap();
        let rig = Rig { store, mailer: Arc::new(RecordingMailer::default()) };
        rig.post(
            "pay-1",
            EntryKind::Credit,
            BillingItem::FundsAdded,
            dec!(50),
            "2026-10-01T10:00:00Z",
        )
        .await;
        rig.post(
            "call-1",
            EntryKind::Debit,
            BillingItem::PhoneCall,
            dec!(0.42),
            "2026-10-07T10:00:00Z",
        )
        .await;
        rig.post(
            "sms-1",
            EntryKind::Debit,
            BillingItem::OutgoingSms,
            dec!(0.0079),
            "2026-10-08T10:00:00Z",
        )
        .await;
        rig.post(
            "call-2",
            EntryKind::Debit,
            BillingItem::PhoneCall,
            dec!(3),
            "2026-11-02T10:00:00Z",
        )
        .await;
        rig
    }

    async fn post(
        &self,
        source: &str,
        kind: EntryKind,
        item: BillingItem,
        amount: Decimal,
        now: &str,
    ) {
        let posting = Posting::new(
            SourceId::parse(source).unwrap(),
            kind,
            item,
            Amount::new(amount).unwrap(),
            PostingRule::Always,
            at(now),
        )
        .unwrap();
        self.store.post(&acme(), vec![posting], at(now)).await.unwrap();
    }

    async fn send(&self, request: &StatementRequest) -> Result<Outcome, DeliveryError> {
        send_statement(&*self.store, &*self.store, &*self.mailer, FROM, request).await
    }
}

fn request(id: &str) -> StatementRequest {
    StatementRequest {
        id: id.into(),
        account_id: acme(),
        from: day("2026-10-01"),
        to: day("2026-10-31"),
        recipients: None,
        requested_at: at("2026-11-01T00:05:00Z"),
    }
}

#[tokio::test]
async fn a_statement_is_sent_once_per_request_with_its_csv_attached() {
    let rig = Rig::new().await;
    let first = rig.send(&request("statement:monthly:2026-10-01:2026-10-31")).await.unwrap();
    assert_eq!(first, Outcome::Sent { message_id: "ses-1".into() });
    let again = rig.send(&request("statement:monthly:2026-10-01:2026-10-31")).await.unwrap();
    assert_eq!(again, Outcome::AlreadySent);

    let sent = rig.mailer.sent();
    assert_eq!(sent.len(), 1, "sent once");
    let email = &sent[0];
    assert_eq!(email.notice_id, "statement:monthly:2026-10-01:2026-10-31");
    assert_eq!(email.from, FROM);
    assert_eq!(email.to, ["ops@acme.example", "CFO@acme.example"], "the billing contacts");
    assert_eq!(email.subject, "Your ringledger statement, 1\u{2013}31 Oct 2026");
    let statement =
        statement_for(&*rig.store, &acme(), day("2026-10-01"), day("2026-10-31")).await.unwrap();
    assert_eq!(statement.lines.len(), 3, "November's call is not in October's statement");
    assert_eq!(
        email.html,
        render_statement(
            &statement,
            Some(&AccountInfo {
                service_address: Some(ServiceAddress {
                    line1: "1 Main St".into(),
                    line2: None,
                    city: "Springfield".into(),
                    region: Some("IL".into()),
                    postal_code: "62701".into(),
                    country: "US".into(),
                }),
            })
        )
        .html
    );
    assert_eq!(email.attachments.len(), 1);
    let attachment = &email.attachments[0];
    assert_eq!(attachment.filename, "statement-acme-2026-10-01-2026-10-31.csv");
    assert_eq!(attachment.content_type, "text/csv; charset=utf-8");
    assert_eq!(attachment.data, statement_csv(&statement).into_bytes());

    let record = delivery_record(&*rig.store, &acme(), "statement:monthly:2026-10-01:2026-10-31")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.notice_kind, "statement");
    assert_eq!(record.recipients, ["ops@acme.example", "CFO@acme.example"]);
    assert!(matches!(record.delivery, Delivery::Sent { attempts: 1, .. }), "{record:?}");

    // Another request id for the same period is another statement (asked for again).
    let on_demand = rig.send(&request("statement:ondemand:key-1")).await.unwrap();
    assert!(matches!(on_demand, Outcome::Sent { .. }), "{on_demand:?}");
    assert_eq!(rig.mailer.sent().len(), 2);
}

#[tokio::test]
async fn recipients_given_in_the_request_replace_the_billing_contacts() {
    let rig = Rig::new().await;
    let mut asked = request("statement:ondemand:key-2");
    asked.recipients =
        Some(vec![" accountant@books.example ".into(), "ACCOUNTANT@books.example".into()]);
    assert!(matches!(rig.send(&asked).await.unwrap(), Outcome::Sent { .. }));
    assert_eq!(rig.mailer.sent()[0].to, ["accountant@books.example"]);
    let mut nobody = request("statement:ondemand:key-3");
    nobody.recipients = Some(vec![]);
    assert_eq!(rig.send(&nobody).await.unwrap(), Outcome::NoRecipients);
    assert_eq!(rig.mailer.sent().len(), 1);
}

#[tokio::test]
async fn unknown_accounts_and_bad_periods_are_recorded_and_not_retried() {
    let rig = Rig::new().await;
    let ghost = StatementRequest {
        account_id: AccountId::parse("ghost").unwrap(),
        recipients: Some(vec!["ops@ghost.example".into()]),
        ..request("statement:ghost")
    };
    let outcome = rig.send(&ghost).await.unwrap();
    assert_eq!(outcome, Outcome::Invalid { reason: "account ghost not found".into() });
    assert_eq!(rig.send(&ghost).await.unwrap(), Outcome::AlreadyFailed);

    let reversed = StatementRequest {
        from: day("2026-10-31"),
        to: day("2026-10-01"),
        ..request("statement:reversed")
    };
    let Outcome::Invalid { reason } = rig.send(&reversed).await.unwrap() else { panic!() };
    assert_eq!(reason, "the statement period ends on 2026-10-01, before it starts on 2026-10-31");
    let record =
        delivery_record(&*rig.store, &acme(), "statement:reversed").await.unwrap().unwrap();
    assert_eq!(record.notice_kind, "statement");
    assert!(
        matches!(record.delivery, Delivery::Failed { ref reason, .. } if reason.contains("before it starts"))
    );
    assert_eq!(rig.send(&reversed).await.unwrap(), Outcome::AlreadyFailed);

    let long = StatementRequest { from: day("2025-01-01"), ..request("statement:long") };
    let Outcome::Invalid { reason } = rig.send(&long).await.unwrap() else { panic!() };
    assert!(reason.contains("at most 366 days"), "{reason}");
    assert!(rig.mailer.sent().is_empty());

    let bad_id = request("has a space");
    let error = rig.send(&bad_id).await.unwrap_err();
    assert!(error.to_string().starts_with("malformed statement request"), "{error}");
    assert!(matches!(error, DeliveryError::BadStatementId { .. }), "{error:?}");
}

#[tokio::test]
async fn an_account_without_billing_contacts_has_nothing_to_send() {
    let rig = Rig::new().await;
    documents::profile::update(&*rig.store, &acme(), |p| {
        p.billing_emails.clear();
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(rig.send(&request("statement:nobody")).await.unwrap(), Outcome::NoRecipients);
    assert_eq!(delivery_record(&*rig.store, &acme(), "statement:nobody").await.unwrap(), None);
}

#[tokio::test]
async fn a_transient_mail_failure_is_retried_and_a_permanent_one_recorded() {
    let rig = Rig::new().await;
    *rig.mailer.fail_next.lock().unwrap() =
        Some(MailError::Throttled { reason: "slow down".into(), source: None });
    let error = rig.send(&request("statement:retry")).await.unwrap_err();
    assert!(error.to_string().contains("will retry"), "{error}");
    assert!(matches!(error, DeliveryError::Send(_)), "{error:?}");
    assert_eq!(delivery_record(&*rig.store, &acme(), "statement:retry").await.unwrap(), None);
    assert!(matches!(rig.send(&request("statement:retry")).await.unwrap(), Outcome::Sent { .. }));

    *rig.mailer.fail_next.lock().unwrap() =
        Some(MailError::Rejected { reason: "Missing final '@domain'".into(), source: None });
    let outcome = rig.send(&request("statement:refused")).await.unwrap();
    assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");
    assert_eq!(rig.send(&request("statement:refused")).await.unwrap(), Outcome::AlreadyFailed);
    assert_eq!(rig.mailer.sent().len(), 1);
}

#[tokio::test]
async fn the_file_mailer_keeps_the_statement_with_its_attachment() {
    let rig = Rig::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mailer = FileMailer::new(dir.path());
    let request = request("statement:monthly:2026-10-01:2026-10-31");
    let outcome = send_statement(&*rig.store, &*rig.store, &mailer, FROM, &request).await.unwrap();
    let Outcome::Sent { message_id } = outcome else { panic!("{outcome:?}") };
    let eml = std::fs::read_to_string(&message_id).unwrap();
    assert!(eml.contains("Content-Type: multipart/mixed;"));
    let (_, attachment) =
        eml.split_once("filename=\"statement-acme-2026-10-01-2026-10-31.csv\"\r\n\r\n").unwrap();
    let encoded: String = attachment.split("\r\n--").next().unwrap().split("\r\n").collect();
    let csv = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let statement =
        statement_for(&*rig.store, &acme(), day("2026-10-01"), day("2026-10-31")).await.unwrap();
    assert_eq!(String::from_utf8(csv).unwrap(), statement_csv(&statement));
    let again = send_statement(&*rig.store, &*rig.store, &mailer, FROM, &request).await.unwrap();
    assert_eq!(again, Outcome::AlreadySent);
}
