//! The monthly jobs end to end, as they run in AWS: the planner walks the accounts on DynamoDB
//! Local and publishes one job per account to a real SQS queue (moto); a poller that behaves
//! like Lambda's event source mapping hands the messages to the job worker. The tax run goes
//! twice (and every message is redelivered once more) and still posts the hand-computed tax
//! once; an exempt account gets none; a statement's totals equal the ledger's; the scheduled
//! statement reaches moto's SES mailbox with its CSV attached.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use jobs::job::QueueJobs;
use jobs::statements::{Cadence, StatementJob};
use jobs::tax::TaxJob;
use jobs::worker::Workers;
use jobs::Job;

use ledger::statement::statement_for;
use ledger::store::all_entries;
use ledger::{
    AccountId, Amount, BillingItem, EntryKind, EntryQuery, LedgerStore, NewAccount, Posting,
    SourceId,
};
use mailers::SesMailer;
use messaging::mail::Mailer;
use messaging::queue::Redelivery;
use rust_decimal::Decimal;
use sqs::{poll_once, SqsQueue};
use store_dynamodb::DynamoStore;

fn oct(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, day, hour, 0, 0).unwrap()
}

fn usd(value: &str) -> Decimal {
    Decimal::from_str_exact(value).unwrap()
}

fn posting(source: &str, kind: EntryKind, item: BillingItem, amount: &str) -> Posting {
    let (source, amount) = (SourceId::parse(source).unwrap(), amount.parse::<Amount>().unwrap());
    match kind {
        EntryKind::Debit => Posting::usage(source, item, amount, oct(1, 0)),
        EntryKind::Credit => Posting::credit(source, item, amount, oct(1, 0)),
    }
    .unwrap()
}

/// An account with a profile: New York City, billing contact, monthly statements.
async fn account(store: &DynamoStore, name: &str, exempt: bool, email: &str) -> AccountId {
    let id = AccountId::parse(name).unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, oct(1, 0))
        .await
        .unwrap();
    let profile = serde_json::json!({
        "billing_emails": [email],
        "service_address": {"line1": "1 Broadway", "city": "New York", "region": "NY",
                            "postal_code": "10004", "country": "US"},
        "tax_exempt": exempt,
        "statement_schedule": "monthly",
    });
    let profile: documents::profile::Profile = serde_json::from_value(profile).unwrap();
    documents::profile::store(store, &id, &profile).await.unwrap();
    id
}

/// October: $50 paid by card; calls 20.1234 of which 4.00 included; SMS 1.50; a number 1.15;
/// an operator refund of 2 (not taxable). Taxable: 20.1234 - 4 + 1.50 + 1.15 = 18.7734;
/// at New York City's 8.875%: 1.66613925 -> $1.67.
async fn october(store: &DynamoStore, id: &AccountId) {
    use BillingItem::*;
    use EntryKind::*;
    store.post(id, vec![posting("pay-1", Credit, FundsAdded, "50")], oct(2, 9)).await.unwrap();
    store
        .post(
            id,
            vec![
                posting("call-1", Debit, PhoneCall, "20.1234"),
                posting("call-1#included", Credit, IncludedMinutes, "4"),
                posting("sms-1", Debit, OutgoingSms, "1.5"),
            ],
            oct(14, 18),
        )
        .await
        .unwrap();
    store.post(id, vec![posting("num-1", Debit, PhoneNumber, "1.15")], oct(20, 8)).await.unwrap();
    store.post(id, vec![posting("refund-1", Credit, Refund, "2")], oct(31, 23)).await.unwrap();
}

/// Poll until the queue is empty. Failed messages come back after the queue's 1 s visibility
/// timeout; `max_failures` says how many retries are expected (a statement delivered twice in
/// one batch: the second waits for the first's claim, then finds it sent).
async fn run_queue(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    workers: &Workers,
    max_failures: usize,
) -> usize {
    let (mut handled, mut failed, mut idle) = (0, 0, 0);
    for _ in 0..200 {
        let queue = SqsQueue::new(client.clone(), queue_url);
        let stats = poll_once(&queue, 0, Redelivery::QUEUE_DEFAULT, |messages| async {
            let failures = workers.process_batch(messages).await;
            for failure in &failures {
                eprintln!("retried: {}", failure.reason);
            }
            sqs::verdicts_of(&failures)
        })
        .await
        .expect("poll");
        failed += stats.failed;
        handled += stats.deleted;
        if stats.received == 0 {
            idle += 1;
            if idle > 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        } else {
            idle = 0;
        }
    }
    assert!(failed <= max_failures, "{failed} retries; at most {max_failures} expected");
    handled
}

#[tokio::test]
async fn the_tax_run_twice_posts_the_hand_computed_tax_once_and_skips_exempt_accounts() {
    let store = Arc::new(e2e::fresh_dynamo_store().await);
    let taxed = account(&store, "nyc-taxed", false, "taxed@example.com").await;
    let exempt = account(&store, "nyc-exempt", true, "exempt@example.com").await;
    october(&store, &taxed).await;
    october(&store, &exempt).await;

    let sqs = e2e::sqs_client().await;
    let queue_url = e2e::create_queue(&sqs, "tax", None).await;
    let sink = QueueJobs(Arc::new(SqsQueue::new(sqs.clone(), &queue_url)));
    let workers = Workers {
        tax: Some(TaxJob {
            ledger: store.clone(),
            docs: store.clone(),
            table: Arc::new(tax::TaxTable::bundled().unwrap()),
            taxability: Arc::new(tax::Taxability::bundled().unwrap()),
        }),
        statements: None,
    };
    // Two overlapping runs: both plans land on the queue before any worker runs.
    for _ in 0..2 {
        let report = jobs::plan::plan(
            &*store,
            &sink,
            |account_id| Some(Job::Tax { account_id, month: "2026-10".parse().unwrap() }),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.accounts, 2);
    }
    assert_eq!(run_queue(&sqs, &queue_url, &workers, 0).await, 4);
    // And one more full run after the first finished.
    jobs::plan::plan(
        &*store,
        &sink,
        |account_id| Some(Job::Tax { account_id, month: "2026-10".parse().unwrap() }),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(run_queue(&sqs, &queue_url, &workers, 0).await, 2);

    let entries = all_entries(&*store, &taxed, EntryQuery::default()).await.unwrap();
    let taxes: Vec<_> = entries.iter().filter(|e| e.item == BillingItem::SalesTax).collect();
    assert_eq!(taxes.len(), 1, "one tax entry for the account and month");
    assert_eq!(taxes[0].amount_usd.value(), usd("1.67"));
    assert_eq!(taxes[0].kind, EntryKind::Debit);
    assert_eq!(taxes[0].source_id.as_str(), "tax:2026-10");
    assert_eq!(taxes[0].details["taxable_usd"], "18.7734");
    let balance = store.account(&taxed).await.unwrap().unwrap().balance_usd;
    assert_eq!(
        balance,
        usd("50") - usd("20.1234") + usd("4") - usd("1.5") - usd("1.15") + usd("2") - usd("1.67")
    );

    let exempt_entries = all_entries(&*store, &exempt, EntryQuery::default()).await.unwrap();
    assert!(exempt_entries.iter().all(|e| e.item != BillingItem::SalesTax), "exempt: no tax");
    assert_eq!(exempt_entries.len(), 6);
}

#[tokio::test]
async fn statements_match_the_ledger_and_the_scheduled_one_reaches_the_mailbox_with_its_csv() {
    let store = Arc::new(e2e::fresh_dynamo_store().await);
    let email = format!("owner-{}@example.com", std::process::id());
    let id = account(&store, &format!("stmt-{}", std::process::id()), false, &email).await;
    let quiet =
        account(&store, &format!("quiet-{}", std::process::id()), false, "q@example.com").await;
    // Quiet asks for weekly statements only.
    documents::profile::update(&*store, &quiet, |p| {
        p.service_address = None;
        p.statement_schedule = documents::profile::StatementSchedule::Weekly;
        Ok(())
    })
    .await
    .unwrap();
    // September: one payment (before the statement's period); then October.
    store
        .post(
            &id,
            vec![posting("pay-0", EntryKind::Credit, BillingItem::FundsAdded, "10")],
            Utc.with_ymd_and_hms(2026, 9, 30, 12, 0, 0).unwrap(),
        )
        .await
        .unwrap();
    october(&store, &id).await;

    // The statement's totals equal the ledger's.
    let (from, to) = (
        NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
    );
    let statement = statement_for(&*store, &id, from, to).await.unwrap();
    let all = all_entries(&*store, &id, EntryQuery::default()).await.unwrap();
    let in_period: Vec<_> =
        all.iter().filter(|e| ledger::Month::of(e.posted_at).to_string() == "2026-10").collect();
    assert_eq!(statement.opening_balance_usd, usd("10"));
    assert_eq!(statement.closing_balance_usd, in_period.last().unwrap().balance_after_usd);
    assert_eq!(
        statement.closing_balance_usd,
        store.account(&id).await.unwrap().unwrap().balance_usd
    );
    assert_eq!(statement.card_payments_usd, usd("50"));
    assert_eq!(statement.other_credits_usd, usd("2"));
    let usage: Decimal = in_period
        .iter()
        .filter(|e| {
            !matches!(
                e.item,
                BillingItem::FundsAdded
                    | BillingItem::Refund
                    | BillingItem::Adjustment
                    | BillingItem::SalesTax
            )
        })
        .map(|e| -e.signed_amount_usd())
        .sum();
    assert_eq!(statement.usage_usd, usage);
    assert_eq!(statement.usage_usd, usd("18.7734"));
    assert_eq!(statement.lines.len(), in_period.len());
    assert!(statement.reconciles());
    let month = store.month_totals(&id, "2026-10".parse().unwrap()).await.unwrap();
    let by_month: Decimal = month
        .by_item
        .iter()
        .filter(|(item, _)| **item != BillingItem::FundsAdded && **item != BillingItem::Refund)
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(by_month, statement.usage_usd, "month totals agree with the statement");

    // The scheduled run, through a real queue, to moto's SES.
    let sqs = e2e::sqs_client().await;
    let queue_url = e2e::create_queue(&sqs, "statements", None).await;
    let sink = QueueJobs(Arc::new(SqsQueue::new(sqs.clone(), &queue_url)));
    let ses = e2e::ses_client().await;
    ses.create_email_identity()
        .email_identity("billing@example.com")
        .send()
        .await
        .expect("verify sender");
    let mailer: Arc<dyn Mailer> = Arc::new(SesMailer::new(ses));
    let workers = Workers {
        tax: None,
        statements: Some(StatementJob {
            ledger: store.clone(),
            docs: store.clone(),
            mailer,
            from_address: "billing@example.com".into(),
        }),
    };
    let today = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let (from, to) = Cadence::Monthly.previous_period(today);
    assert_eq!((from.to_string(), to.to_string()), ("2026-10-01".into(), "2026-10-31".into()));
    for _ in 0..2 {
        jobs::plan::plan(
            &*store,
            &sink,
            |account_id| {
                Some(Job::ScheduledStatement { account_id, cadence: Cadence::Monthly, from, to })
            },
            |_| {},
        )
        .await
        .unwrap();
    }
    assert_eq!(run_queue(&sqs, &queue_url, &workers, 2).await, 4);

    let url = format!("{}/moto-api/data.json", e2e::moto_endpoint());
    let data: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let raw: Vec<String> = data["ses"]["RawMessage"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m["destinations"].as_array().is_some_and(|d| d.iter().any(|a| a == email.as_str()))
        })
        .map(|m| m["raw_data"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(raw.len(), 1, "the monthly statement is sent once, to the billing contact");
    let message = &raw[0];
    assert!(message.contains("multipart/mixed"), "a MIME message with an attachment");
    assert!(message.contains("Content-Disposition: attachment"), "{message}");
    assert!(message.contains(".csv"), "the CSV is attached");
    let expected_csv = notifications::statement::statement_csv(&statement);
    assert!(
        decoded_attachments(message).iter().any(|a| a == &expected_csv),
        "the attachment is the statement's CSV"
    );
    let none_for_quiet = data["ses"]["RawMessage"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m["destinations"].as_array().is_some_and(|d| d.iter().any(|a| a == "q@example.com"))
        })
        .count();
    assert_eq!(none_for_quiet, 0, "a weekly account gets no monthly statement");
}

#[tokio::test]
async fn a_failed_job_comes_back_in_moments_not_after_the_queues_long_timeout() {
    use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
    use aws_sdk_sqs::types::QueueAttributeName;
    let store = Arc::new(e2e::fresh_dynamo_store().await);
    let id =
        account(&store, &format!("retry-{}", std::process::id()), false, "r@example.com").await;
    october(&store, &id).await;
    let sqs = e2e::sqs_client().await;
    // The deployed queues' visibility timeout: far longer than this test waits.
    let queue_url = sqs
        .create_queue()
        .queue_name(e2e::unique_table("long-visibility"))
        .attributes(QueueAttributeName::VisibilityTimeout, "600")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let request = notifications::statement::StatementRequest {
        id: "statement:retry".into(),
        account_id: id.clone(),
        from: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        to: NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
        recipients: None,
        requested_at: Utc::now(),
    };
    let sink = QueueJobs(Arc::new(SqsQueue::new(sqs.clone(), &queue_url)));
    jobs::JobSink::publish(&sink, &[Job::Statement(request)]).await.unwrap();
    // The sender is not verified in SES: the send fails in a way worth retrying.
    let workers = Workers {
        tax: None,
        statements: Some(StatementJob {
            ledger: store.clone(),
            docs: store.clone(),
            mailer: Arc::new(SesMailer::new(e2e::ses_client().await)),
            from_address: format!("unverified-{}@example.com", std::process::id()),
        }),
    };
    let received = sqs.receive_message().queue_url(&queue_url).send().await.unwrap();
    let message = received.messages.unwrap_or_default().pop().expect("the job");
    let mut record = SqsMessage::default();
    record.message_id = message.message_id.clone();
    record.receipt_handle = message.receipt_handle.clone();
    record.body = message.body.clone();
    let mut event = SqsEvent::default();
    event.records = vec![record];
    // What the job functions do (`runtime::jobs`), with a 1 s retry instead of a minute.
    let retry = Redelivery {
        retry_after: Some(std::time::Duration::from_secs(1)),
        requeue_after_receives: None,
    };
    let batch = sqs::LambdaBatch::new(event);
    let failures = workers.process_batch(batch.messages()).await;
    let queue = SqsQueue::new(sqs.clone(), &queue_url);
    let response = batch.settle(&queue, &sqs::verdicts_of(&failures), retry).await;
    assert_eq!(response.batch_item_failures.len(), 1, "the job failed and goes back");
    let mut back = None;
    for _ in 0..10 {
        let again =
            sqs.receive_message().queue_url(&queue_url).wait_time_seconds(1).send().await.unwrap();
        if let Some(message) = again.messages.unwrap_or_default().pop() {
            back = Some(message);
            break;
        }
    }
    let back = back.expect("the failed job is visible again long before the queue's 600 s");
    assert_eq!(back.body, message.body);
}

/// The decoded attachments of a raw MIME message (`multipart/mixed`: the body, then each file).
fn decoded_attachments(message: &str) -> Vec<String> {
    use e2e::mime::{boundary, decode_base64, header, parts, split_entity};
    let (head, body) = split_entity(message);
    parts(body, &boundary(&header(head, "Content-Type")))
        .into_iter()
        .map(split_entity)
        .filter(|(head, _)| head.contains("Content-Disposition: attachment"))
        .map(|(_, body)| {
            String::from_utf8(decode_base64(&body.split("\r\n").collect::<String>())).unwrap()
        })
        .collect()
}
