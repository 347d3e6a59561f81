//! Auto-recharge end to end on DynamoDB Local + moto (SQS, SES) + localstripe: usage from the
//! usage queue crosses the threshold, the recharge worker charges the card on localstripe and
//! credits once, and the receipt or failure email reaches moto's SES mailbox.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::profile::{self, CardRole, Email, StoredCard};
use api::state::Store;
use chrono::{Datelike, Utc};
use conformance::{at, credit, usd};
use ledger::docs::DocStore;
use ledger::{
    Account, AccountId, Amount, LedgerStore, NewAccount, RechargeMode, RechargeSettings,
    TermsAcceptance,
};
use mailers::SesMailer;
use messaging::outbox::{EventSink, QueueEventSink};
use messaging::queue::{Redelivery, Verdict};
use notifications::notice::QueueNotices;
use payments::CardProcessor;
use recharge::RechargeWorker;
use sqs::{poll_once, SqsQueue};
use usage::worker::{process_batch, RateCards};

/// What the recharge worker decided for the messages one drain handed it.
#[derive(Debug, Default)]
struct RechargeStats {
    received: usize,
    done: usize,
    waiting: usize,
    retrying: usize,
}

const FROM: &str = "billing@ringledger.example";

struct Rig {
    sqs: aws_sdk_sqs::Client,
    ses: aws_sdk_sesv2::Client,
    store: Arc<store_dynamodb::DynamoStore>,
    stripe: Arc<payments::StripeProcessor>,
    http: reqwest::Client,
    usage_url: String,
    recharge_url: String,
    /// The recharge queue's dead-letter queue, when it has a redrive policy.
    recharge_dlq_url: Option<String>,
    notifications_url: String,
    worker: RechargeWorker,
}

impl Rig {
    async fn new() -> Self {
        Self::with_recharge_redrive(None).await
    }

    /// With `Some(n)`, the recharge queue dead-letters a message after `n` receives.
    async fn with_recharge_redrive(max_receive_count: Option<u32>) -> Self {
        let sqs = e2e::sqs_client().await;
        let dlq = e2e::create_queue(&sqs, "usage-dlq", None).await;
        let usage_url = e2e::create_queue(&sqs, "usage", Some((&dlq, 3))).await;
        let recharge_dlq_url = match max_receive_count {
            Some(_) => Some(e2e::create_queue(&sqs, "recharge-dlq", None).await),
            None => None,
        };
        let redrive = recharge_dlq_url.as_deref().zip(max_receive_count);
        let recharge_url = e2e::create_queue(&sqs, "recharge", redrive).await;
        let notifications_url = e2e::create_queue(&sqs, "notifications", None).await;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(e2e::moto_endpoint())
            .load()
            .await;
        let ses = aws_sdk_sesv2::Client::new(&config);
        ses.create_email_identity()
            .email_identity(FROM)
            .send()
            .await
            .expect("verify sender on moto");
        let store = Arc::new(e2e::fresh_dynamo_store().await);
        let stripe = Arc::new(e2e::stripe::processor());
        let dyn_store: Arc<dyn Store> = store.clone();
        let notices =
            Arc::new(QueueNotices(Arc::new(SqsQueue::new(sqs.clone(), &notifications_url))));
        let worker = RechargeWorker::new(dyn_store, stripe.clone(), notices);
        Rig {
            sqs,
            ses,
            store,
            stripe,
            http: reqwest::Client::new(),
            usage_url,
            recharge_url,
            recharge_dlq_url,
            notifications_url,
            worker,
        }
    }

    /// An account with terms, contacts, cards on localstripe (first primary) and auto-recharge
    /// (threshold $15, top up to $50), funded with `balance`.
    async fn account(&self, name: &str, cards: &[&str], balance: &str) -> AccountId {
        let id = AccountId::parse(name).unwrap();
        let store = &*self.store;
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, at(0))
            .await
            .unwrap();
        store
            .modify_account(
                &id,
                Arc::new(|a: &mut Account| {
                    a.terms = Some(TermsAcceptance {
                        version: "2026-01".into(),
                        accepted_by: "admin".into(),
                        accepted_at: at(0),
                    });
                    Ok(())
                }),
                at(0),
            )
            .await
            .unwrap();
        // Funded before auto-recharge is turned on (on a $0 balance it would recharge at once).
        store.post(&id, vec![credit("initial", balance)], at(1)).await.unwrap();
        store
            .modify_account(
                &id,
                Arc::new(|a: &mut Account| {
                    a.recharge = Some(RechargeSettings::new(
                        true,
                        Amount::from_str("50")?,
                        Amount::from_str("15")?,
                        RechargeMode::TopUpTo,
                    )?);
                    Ok(())
                }),
                at(0),
            )
            .await
            .unwrap();
        let customer = self.stripe.create_customer(name, None).await.unwrap();
        let exp_year = u16::try_from(Utc::now().year()).unwrap() + 3;
        let mut stored = Vec::new();
        for (index, prefix) in cards.iter().enumerate() {
            let token = e2e::stripe::card_token(&self.http, prefix, exp_year).await;
            let details = self.stripe.attach_card(&customer, &token).await.unwrap();
            stored.push(StoredCard {
                kind: Default::default(),
                verified: true,
                id: details.payment_method_id,
                brand: details.brand,
                last4: details.last4,
                exp_month: details.exp_month,
                exp_year: details.exp_year,
                role: if index == 0 { CardRole::Primary } else { CardRole::Backup },
                card_manager_email: Email::try_from(format!("cards@{name}.example")).unwrap(),
                added_at: Utc::now() + chrono::Duration::seconds(index as i64),
            });
        }
        profile::update(store, &id, |p| {
            p.billing_emails = vec![Email::try_from(format!("billing@{name}.example")).unwrap()];
            p.recharge_failure_email =
                Some(Email::try_from(format!("ops@{name}.example")).unwrap());
            p.processor_customer_id = Some(customer.0.clone());
            p.cards = stored.clone();
            Ok(())
        })
        .await
        .unwrap();
        // The reactivation notice of that first credit is not what these tests look at.
        for event in store.pending_events(100).await.unwrap() {
            store.ack_event(&event).await.unwrap();
        }
        id
    }

    /// A toll-free renewal (2.15) and a local number purchase (1.15): 3.30 of usage.
    async fn send_usage(&self, account: &str, tag: &str) {
        for (kind, number_type, price_tag) in
            [("number_renewal", "toll_free", "r"), ("number_purchase", "local", "p")]
        {
            let body = format!(
                r#"{{"version": 1, "event_id": "{tag}-{price_tag}", "account_id": "{account}", "occurred_at": "2026-11-03T10:00:00Z", "type": "{kind}", "data": {{"number": "+18005550100", "number_type": "{number_type}"}}}}"#
            );
            self.sqs
                .send_message()
                .queue_url(&self.usage_url)
                .message_body(body)
                .send()
                .await
                .unwrap();
        }
    }

    async fn drain_usage(&self) {
        let sink: Arc<dyn EventSink> = Arc::new(QueueEventSink {
            recharge: Arc::new(SqsQueue::new(self.sqs.clone(), &self.recharge_url)),
            notifications: Arc::new(SqsQueue::new(self.sqs.clone(), &self.notifications_url)),
        });
        let usage_queue = SqsQueue::new(self.sqs.clone(), &self.usage_url);
        let store: Arc<dyn LedgerStore> = self.store.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while Instant::now() < deadline && quiet < 3 {
            let (store, sink) = (store.clone(), sink.clone());
            let stats =
                poll_once(&usage_queue, 0, Redelivery::QUEUE_DEFAULT, |messages| async move {
                    let report =
                        process_batch(store, &RateCards::standard_only(), Some(sink), messages)
                            .await;
                    sqs::verdicts_of(&report.failures)
                })
                .await
                .unwrap();
            quiet = if stats.received == 0 { quiet + 1 } else { 0 };
        }
    }

    /// Work the recharge queue until it is quiet.
    async fn drain_recharges(&self) -> RechargeStats {
        let total = std::sync::Mutex::new(RechargeStats::default());
        let queue = SqsQueue::new(self.sqs.clone(), &self.recharge_url);
        for _ in 0..20 {
            let stats = poll_once(&queue, 0, recharge::REDELIVERY, |messages| async {
                let mut verdicts = std::collections::HashMap::new();
                for message in messages {
                    let verdict = recharge::verdict(&self.worker, &message.body, Utc::now()).await;
                    let mut total = total.lock().unwrap();
                    match verdict {
                        Verdict::Done => total.done += 1,
                        Verdict::Wait(_) => total.waiting += 1,
                        Verdict::Retry(_) | Verdict::Reject(_) => total.retrying += 1,
                    }
                    verdicts.insert(message.id, verdict);
                }
                verdicts
            })
            .await
            .unwrap();
            if stats.received == 0 {
                break;
            }
            total.lock().unwrap().received += stats.received;
        }
        total.into_inner().unwrap()
    }

    /// One invocation of the recharge Lambda as its SQS event source makes it: receive up to
    /// 10 messages (with their receive counts), hand them to the recharge worker's verdicts and
    /// `sqs::LambdaBatch::settle` (what `runtime::run_sqs_held` does)
    /// as an `SqsEvent`, delete what it did not report as failed, and make the failed ones
    /// visible again at once (the test's stand-in for their visibility timeout). Per record:
    /// (message id, ApproximateReceiveCount, reported failed).
    async fn lambda_round(&self, worker: &Arc<RechargeWorker>) -> Vec<(String, u32, bool)> {
        use aws_sdk_sqs::types::MessageSystemAttributeName;
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.recharge_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .expect("receive from the recharge queue");
        let messages = output.messages.unwrap_or_default();
        let mut received = Vec::new();
        let mut records = Vec::new();
        for message in &messages {
            let id = message.message_id.clone().expect("a message id");
            let receipt = message.receipt_handle.clone().expect("a receipt handle");
            let count = message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse::<u32>().ok())
                .expect("moto answers ApproximateReceiveCount when asked");
            records.push(serde_json::json!({
                "messageId": id, "receiptHandle": receipt,
                "body": message.body.clone().unwrap_or_default(),
                "attributes": {"ApproximateReceiveCount": count.to_string()},
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ringledger-recharge",
                "awsRegion": "us-east-1",
            }));
            received.push((id, receipt, count));
        }
        if records.is_empty() {
            return Vec::new();
        }
        let event: aws_lambda_events::sqs::SqsEvent =
            serde_json::from_value(serde_json::json!({ "Records": records }))
                .expect("a Lambda SQS event");
        let batch = sqs::LambdaBatch::new(event);
        let verdicts = recharge::verdicts(worker.clone(), batch.messages()).await;
        let queue = SqsQueue::new(self.sqs.clone(), &self.recharge_url);
        let response = batch.settle(&queue, &verdicts, recharge::REDELIVERY).await;
        let failed: std::collections::HashSet<String> =
            response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        let mut rounds = Vec::new();
        for (id, receipt, count) in received {
            let is_failed = failed.contains(&id);
            if is_failed {
                self.sqs
                    .change_message_visibility()
                    .queue_url(&self.recharge_url)
                    .receipt_handle(&receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .expect("make the failed message visible again");
            } else {
                self.sqs
                    .delete_message()
                    .queue_url(&self.recharge_url)
                    .receipt_handle(&receipt)
                    .send()
                    .await
                    .expect("delete a handled message");
            }
            rounds.push((id, count, is_failed));
        }
        rounds
    }

    /// Work the notifications queue (emails through SES on moto).
    async fn drain_notifications(&self) {
        let mailer: Arc<dyn messaging::mail::Mailer> = Arc::new(SesMailer::new(self.ses.clone()));
        let queue = SqsQueue::new(self.sqs.clone(), &self.notifications_url);
        let docs: Arc<dyn ledger::docs::DocStore> = self.store.clone();
        for _ in 0..20 {
            let (docs, mailer) = (docs.clone(), mailer.clone());
            let stats = poll_once(&queue, 0, Redelivery::QUEUE_DEFAULT, |messages| async move {
                let failures =
                    notifications::worker::process_batch(docs, mailer, None, FROM, messages).await;
                sqs::verdicts_of(&failures)
            })
            .await
            .unwrap();
            if stats.received == 0 {
                break;
            }
        }
    }

    /// Emails moto's SES received for `address`.
    async fn mailbox(&self, address: &str) -> Vec<serde_json::Value> {
        let data: serde_json::Value = self
            .http
            .get(format!("{}/moto-api/data.json", e2e::moto_endpoint()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["destinations"].to_string().contains(address))
            .collect()
    }

    /// Payment intents localstripe holds for the account's customer.
    async fn intents(&self, account: &AccountId) -> Vec<serde_json::Value> {
        let (profile, _) = profile::load(&*self.store, account).await.unwrap();
        let customer = profile.processor_customer_id.unwrap();
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..200 {
            let mut url = format!("{}/v1/payment_intents?limit=100", e2e::stripe::endpoint());
            if let Some(after) = &after {
                url.push_str(&format!("&starting_after={after}"));
            }
            let page: serde_json::Value = self
                .http
                .get(url)
                .bearer_auth(e2e::stripe::SECRET_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let data = page["data"].as_array().cloned().unwrap_or_default();
            found.extend(data.iter().filter(|pi| pi["customer"] == customer.as_str()).cloned());
            match (page["has_more"].as_bool(), data.last()) {
                (Some(true), Some(last)) => after = last["id"].as_str().map(str::to_string),
                _ => break,
            }
        }
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_to_14_99_recharges_once_back_to_50_and_emails_one_receipt() {
    let rig = Rig::new().await;
    let name = e2e::unique_table("topup");
    let id = rig.account(&name, &[e2e::stripe::VISA_SUCCESS], "18.29").await;
    rig.send_usage(&name, "day1").await;
    rig.drain_usage().await;
    assert_eq!(rig.store.account(&id).await.unwrap().unwrap().balance_usd, usd("14.99"));

    let stats = rig.drain_recharges().await;
    assert_eq!((stats.received, stats.done), (1, 1), "exactly one recharge request");
    let account = conformance::assert_consistent(&*rig.store, &id).await;
    assert_eq!(account.balance_usd, usd("50"), "topped back up to $50.00");
    assert_eq!(account.recharge_in_flight, None);
    let intents = rig.intents(&id).await;
    assert_eq!(intents.len(), 1, "one charge on the card");
    assert_eq!(intents[0]["amount"], 3501);
    assert_eq!(intents[0]["status"], "succeeded");

    rig.drain_notifications().await;
    let receipts = rig.mailbox(format!("billing@{name}.example").as_str()).await;
    assert_eq!(receipts.len(), 1, "one receipt: {receipts:?}");
    assert!(receipts[0].to_string().contains("35.01"));

    // The request redelivered (the queue is at-least-once) charges nothing more.
    let request = serde_json::json!({
        "id": format!("{name}:recharge_requested:again"), "account_id": name,
        "kind": {"kind": "recharge_requested", "request_id": format!("rch:{name}:3")},
        "seq": 3, "version": 5, "balance_usd": "14.99", "raised_at": "2026-11-22T00:00:00Z"
    });
    rig.sqs
        .send_message()
        .queue_url(&rig.recharge_url)
        .message_body(request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(rig.drain_recharges().await.done, 1);
    rig.drain_notifications().await;
    assert_eq!(rig.intents(&id).await.len(), 1);
    assert_eq!(rig.mailbox(format!("billing@{name}.example").as_str()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_primary_is_followed_by_the_backup_card() {
    let rig = Rig::new().await;
    let name = e2e::unique_table("fallback");
    let id = rig
        .account(&name, &[e2e::stripe::CHARGES_DECLINED, e2e::stripe::MASTERCARD_SUCCESS], "18.29")
        .await;
    rig.send_usage(&name, "day1").await;
    rig.drain_usage().await;
    rig.drain_recharges().await;
    assert_eq!(rig.store.account(&id).await.unwrap().unwrap().balance_usd, usd("50"));
    let intents = rig.intents(&id).await;
    let succeeded: Vec<_> = intents.iter().filter(|pi| pi["status"] == "succeeded").collect();
    assert_eq!(succeeded.len(), 1, "{intents:?}");
    let (profile, _) = profile::load(&*rig.store, &id).await.unwrap();
    let backup = profile.cards.iter().find(|c| c.role == CardRole::Backup).unwrap();
    assert_eq!(succeeded[0]["payment_method"], backup.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_both_cards_decline_a_failure_email_goes_out_and_nothing_is_charged_again_within_the_backoff(
) {
    let rig = Rig::new().await;
    let name = e2e::unique_table("declined");
    let id = rig
        .account(&name, &[e2e::stripe::CHARGES_DECLINED, e2e::stripe::CHARGES_DECLINED], "18.29")
        .await;
    rig.send_usage(&name, "day1").await;
    rig.drain_usage().await;
    let stats = rig.drain_recharges().await;
    assert_eq!((stats.received, stats.waiting), (1, 1), "held for its backoff");
    let account = rig.store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, usd("14.99"), "nothing credited");
    assert!(account.recharge_in_flight.is_some(), "still in flight, waiting");
    let intents = rig.intents(&id).await;
    assert_eq!(intents.len(), 2, "each card tried exactly once: {intents:#?}");
    assert!(intents.iter().all(|pi| pi["status"] != "succeeded"), "{intents:#?}");
    let (profile, _) = profile::load(&*rig.store, &id).await.unwrap();
    let mut tried: Vec<_> = intents.iter().filter_map(|pi| pi["payment_method"].as_str()).collect();
    let mut cards: Vec<_> = profile.cards.iter().map(|c| c.id.as_str()).collect();
    tried.sort_unstable();
    cards.sort_unstable();
    assert_eq!(tried, cards, "one declined intent per card");
    let charged_once = intents.len();

    // The held message does not come back within the backoff: no second charge.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rig.drain_recharges().await.received, 0);
    assert_eq!(rig.intents(&id).await.len(), charged_once);

    rig.drain_notifications().await;
    let failures = rig.mailbox(format!("ops@{name}.example").as_str()).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0]["destinations"]
        .to_string()
        .contains(format!("billing@{name}.example").as_str()));
    let history = rig.store.list_docs(&id, ledger::docs::DocKind::Payment, None, 50).await.unwrap();
    assert_eq!(history.len(), 2, "both failed attempts are in the payment history");
    assert!(history.iter().all(|d| d.body.contains("\"failed\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_crossings_raise_one_request_and_one_charge() {
    let rig = Rig::new().await;
    let name = e2e::unique_table("racing");
    let id = rig.account(&name, &[e2e::stripe::VISA_SUCCESS], "18.29").await;
    rig.send_usage(&name, "a").await;
    rig.send_usage(&name, "b").await;
    rig.drain_usage().await;
    // 18.29 - 2 x 3.30 = 11.69: both batches are below the threshold, one request in flight.
    assert_eq!(rig.store.account(&id).await.unwrap().unwrap().balance_usd, usd("11.69"));
    let stats = rig.drain_recharges().await;
    assert_eq!(stats.done, 1);
    assert_eq!(rig.intents(&id).await.len(), 1);
    assert_eq!(rig.store.account(&id).await.unwrap().unwrap().balance_usd, usd("50"));
}

/// A processor outage longer than the recharge queue's `maxReceiveCount` (8, as in
/// infra/template.yaml), played on moto's real redrive policy through the Lambda handler: the
/// request is re-sent as a fresh message before it can reach the DLQ, and once the processor is
/// back the account recharges exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_outage_past_max_receive_count_never_dead_letters_and_recharges_once_after() {
    const MAX_RECEIVE_COUNT: u32 = 8;
    let rig = Rig::with_recharge_redrive(Some(MAX_RECEIVE_COUNT)).await;
    let dlq = rig.recharge_dlq_url.clone().expect("a recharge DLQ");
    let name = e2e::unique_table("outage");
    let id = rig.account(&name, &[e2e::stripe::VISA_SUCCESS], "18.29").await;
    rig.send_usage(&name, "day1").await;
    rig.drain_usage().await;
    assert_eq!(rig.store.account(&id).await.unwrap().unwrap().balance_usd, usd("14.99"));

    let processor = Arc::new(e2e::ControlledProcessor::new(e2e::stripe::processor()));
    processor.set_down(true);
    let notices =
        Arc::new(QueueNotices(Arc::new(SqsQueue::new(rig.sqs.clone(), &rig.notifications_url))));
    let worker = Arc::new(RechargeWorker::new(rig.store.clone(), processor.clone(), notices));

    // The outage: receive, fail, visible again, ... past maxReceiveCount receives in all. The
    // copy re-sent after REQUEUE_AFTER_RECEIVES receives is delayed 60 s by the handler.
    let mut receives = 0;
    let mut copies = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    while receives <= MAX_RECEIVE_COUNT {
        assert!(
            Instant::now() < deadline,
            "only {receives} receives in 150 s (copies: {copies:?})"
        );
        let round = rig.lambda_round(&worker).await;
        if round.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (message_id, count, failed) in round {
            receives += 1;
            copies.insert(message_id.clone());
            assert!(
                count <= recharge::REQUEUE_AFTER_RECEIVES,
                "message {message_id} received {count} times during the outage"
            );
            assert_eq!(
                failed,
                count < recharge::REQUEUE_AFTER_RECEIVES,
                "receive {count} of {message_id}: reported failed until it is re-sent"
            );
        }
        assert_eq!(
            e2e::queue_depth(&rig.sqs, &dlq).await,
            (0, 0),
            "the request reached the DLQ after {receives} receives"
        );
    }
    assert!(copies.len() >= 2, "the request was re-sent as a fresh message: {copies:?}");
    assert!(processor.refused_while_down.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(processor.charges_sent.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(rig.intents(&id).await.is_empty(), "nothing reached localstripe during the outage");
    let account = rig.store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, usd("14.99"));
    assert!(account.recharge_in_flight.is_some(), "the request is still the account's");

    // The processor is back: the next delivery settles the request, once.
    processor.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the request did not settle after the outage");
        let round = rig.lambda_round(&worker).await;
        if round.iter().any(|(_, _, failed)| !failed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let account = conformance::assert_consistent(&*rig.store, &id).await;
    assert_eq!(account.balance_usd, usd("50"), "topped back up to $50.00");
    assert_eq!(account.recharge_in_flight, None);
    assert_eq!(processor.charges_sent.load(std::sync::atomic::Ordering::SeqCst), 1);
    let intents = rig.intents(&id).await;
    assert_eq!(intents.len(), 1, "one charge: {intents:#?}");
    assert_eq!(intents[0]["amount"], 3501);
    assert_eq!(intents[0]["status"], "succeeded");
    assert!(rig.lambda_round(&worker).await.is_empty(), "nothing left on the recharge queue");
    assert_eq!(e2e::queue_depth(&rig.sqs, &rig.recharge_url).await, (0, 0));
    assert_eq!(e2e::queue_depth(&rig.sqs, &dlq).await, (0, 0), "nothing dead-lettered");
}
