//! Notices end to end: a real SQS queue on moto, consumed by the poller that behaves like
//! Lambda's SQS event source, the notification worker claiming each notice in DynamoDB Local,
//! and `SesMailer` sending through moto's SES v2 API. What SES received is read back from moto
//! (`GET /moto-api/data.json`, key `ses` → `Message`): subjects, recipients and bodies match,
//! a notice delivered twice is one email, a malformed message reaches the DLQ, an unverified
//! sender is retried and a refused address is recorded, not retried.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::profile::Email as ProfileEmail;
use chrono::Utc;
use ledger::docs::{DocKind, DocStore};
use ledger::{AccountId, Amount, LedgerEvent, LedgerEventKind};
use mailers::SesMailer;
use messaging::mail::Mailer;
use messaging::queue::Redelivery;
use notifications::notice::{CardFailure, Notice, NoticeKind, PaymentTrigger};
use notifications::worker::{delivery_record, process_batch, Delivery};
use rust_decimal::Decimal;
use sqs::{poll_once, SqsQueue};
use usage::worker::Message;

async fn ses_client() -> aws_sdk_sesv2::Client {
    e2e::ses_client().await
}

/// An email SES accepted, as moto reports it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    source: String,
    to: Vec<String>,
    subject: String,
    /// moto keeps the HTML part when there is one.
    body: String,
}

/// Everything moto's SES holds that was sent to `address`.
async fn received_by(address: &str) -> Vec<Received> {
    let url = format!("{}/moto-api/data.json", e2e::moto_endpoint());
    let data: serde_json::Value =
        reqwest::get(&url).await.expect("moto data").json().await.expect("moto json");
    let messages = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .map(|m| Received {
            id: m["id"].as_str().unwrap_or_default().into(),
            source: m["source"].as_str().unwrap_or_default().into(),
            to: m["destinations"]["ToAddresses"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            subject: m["subject"].as_str().unwrap_or_default().into(),
            body: m["body"].as_str().unwrap_or_default().into(),
        })
        .filter(|m| m.to.iter().any(|to| to == address))
        .collect()
}

struct Rig {
    sqs: aws_sdk_sqs::Client,
    docs: Arc<dyn DocStore>,
    mailer: Arc<dyn Mailer>,
    texts: Arc<dyn messaging::text::TextSender>,
    queue_url: String,
    dlq_url: String,
    account: AccountId,
    /// A verified sender of this test's own.
    from: String,
    ops: String,
    cfo: String,
    cards: String,
}

impl Rig {
    async fn new() -> Rig {
        let sqs = e2e::sqs_client().await;
        let dlq_url = e2e::create_queue(&sqs, "notices-dlq", None).await;
        let queue_url = e2e::create_queue(&sqs, "notices", Some((&dlq_url, 2))).await;
        let docs: Arc<dyn DocStore> = Arc::new(e2e::fresh_dynamo_store().await);
        let account = AccountId::parse(e2e::unique_table("acme")).unwrap();
        let domain = format!("{}.example", account.as_str());
        let from = format!("billing-{}@ringledger-test.example", account.as_str());
        let ses = ses_client().await;
        ses.create_email_identity().email_identity(&from).send().await.expect("verify sender");
        Rig {
            sqs,
            docs,
            mailer: Arc::new(SesMailer::new(ses)),
            texts: Arc::new(mailers::SnsTexts::new(e2e::sns_client().await, None)),
            queue_url,
            dlq_url,
            account,
            from: format!("Ringledger Billing <{from}>"),
            ops: format!("ops@{domain}"),
            cfo: format!("cfo@{domain}"),
            cards: format!("cards@{domain}"),
        }
    }

    /// The contacts, written the way the settings API writes them.
    async fn write_contacts(&self) {
        let billing: Vec<ProfileEmail> = [&self.ops, &self.cfo]
            .iter()
            .map(|a| ProfileEmail::try_from(a.to_string()).unwrap())
            .collect();
        let cards = ProfileEmail::try_from(self.cards.clone()).unwrap();
        api::profile::update(&*self.docs, &self.account, |profile| {
            profile.billing_emails = billing.clone();
            profile.recharge_failure_email = Some(cards.clone());
            Ok(())
        })
        .await
        .expect("write the profile");
    }

    async fn send(&self, bodies: &[String]) {
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send()
                .await
                .expect("send");
        }
    }

    async fn depth(&self, url: &str) -> (u64, u64) {
        e2e::queue_depth(&self.sqs, url).await
    }

    /// Poll like Lambda until the queue is empty (in flight included) and the DLQ holds
    /// `dead_letters`. Returns how many messages the worker was handed.
    async fn run_until_drained(&self, dead_letters: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut handed = 0;
        while Instant::now() < deadline {
            let (docs, mailer, from) = (self.docs.clone(), self.mailer.clone(), self.from.clone());
            let texts = Some(self.texts.clone());
            let queue = SqsQueue::new(self.sqs.clone(), &self.queue_url);
            let stats = poll_once(&queue, 0, Redelivery::QUEUE_DEFAULT, |messages| async move {
                sqs::verdicts_of(&process_batch(docs, mailer, texts, &from, messages).await)
            })
            .await
            .expect("poll");
            handed += stats.received;
            if stats.received == 0 {
                let (visible, in_flight) = self.depth(&self.queue_url).await;
                let (dead, _) = self.depth(&self.dlq_url).await;
                if visible == 0 && in_flight == 0 && dead >= dead_letters {
                    return handed;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        panic!("the notifications queue did not drain in time");
    }

    fn receipt(&self) -> Notice {
        Notice {
            id: "receipt:pay_e2e_1".into(),
            account_id: self.account.clone(),
            raised_at: Utc::now(),
            kind: NoticeKind::PaymentReceipt {
                payment_id: "pay_e2e_1".into(),
                amount_usd: Amount::from_str("50").unwrap(),
                card_brand: "visa".into(),
                card_last4: "4242".into(),
                balance_after_usd: Decimal::from_str("64.8767").unwrap(),
                trigger: PaymentTrigger::Manual,
                paid_at: Utc::now(),
            },
        }
    }
}

fn json(notice: &Notice) -> String {
    serde_json::to_string(notice).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_from_sqs_reach_ses_once_each_with_their_content_and_recipients() {
    let rig = Rig::new().await;
    rig.write_contacts().await;
    let receipt = rig.receipt();
    let low_balance = LedgerEvent {
        id: format!("{}:low_balance:12", rig.account.as_str()),
        account_id: rig.account.clone(),
        kind: LedgerEventKind::LowBalance,
        seq: 12,
        version: 13,
        balance_usd: Decimal::from_str("4.1249").unwrap(),
        raised_at: Utc::now(),
    };
    let recharge_failed = Notice {
        id: "recharge_failed:rr-e2e:1".into(),
        account_id: rig.account.clone(),
        raised_at: Utc::now(),
        kind: NoticeKind::RechargeFailed {
            request_id: "rr-e2e".into(),
            attempt: 1,
            amount_usd: Amount::from_str("50").unwrap(),
            failures: vec![CardFailure {
                card_brand: "mastercard".into(),
                card_last4: "9995".into(),
                reason: "Your card has insufficient funds.".into(),
            }],
            next_attempt_at: Some(Utc::now() + chrono::Duration::hours(1)),
        },
    };
    let malformed = r#"{"id": "x", "account_id": "acme", "kind": {"type": "receipt"}}"#.to_string();
    // The receipt twice: a redelivery, a second publish of the same notice.
    rig.send(&[
        json(&receipt),
        serde_json::to_string(&low_balance).unwrap(),
        json(&receipt),
        json(&recharge_failed),
        malformed.clone(),
    ])
    .await;
    rig.run_until_drained(1).await;

    let mut received = received_by(&rig.ops).await;
    received.sort_by(|a, b| a.subject.cmp(&b.subject));
    let subjects: Vec<&str> = received.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "Action needed: auto-recharge of $50.00 failed".to_string(),
            format!("Low balance: $4.12 left on account {}", rig.account.as_str()),
            "Payment receipt: $50.00 added to your balance".to_string(),
        ],
        "one email per notice"
    );
    let (failed, low, paid) = (&received[0], &received[1], &received[2]);
    for message in &received {
        assert_eq!(message.source, rig.from);
    }
    assert_eq!(paid.to, [rig.ops.clone(), rig.cfo.clone()]);
    for expected in ["$50.00", "Visa ending in 4242", "pay_e2e_1", "$64.88", "One-time payment"] {
        assert!(paid.body.contains(expected), "{expected:?} missing from {}", paid.body);
    }
    assert!(paid.body.starts_with("<!DOCTYPE html>"), "SES got the HTML part");
    assert_eq!(low.to, [rig.ops.clone(), rig.cfo.clone()]);
    assert!(low.body.contains("$4.12"));
    assert_eq!(failed.to, [rig.cards.clone(), rig.ops.clone(), rig.cfo.clone()]);
    assert!(failed.body.contains("Mastercard ending in 9995: Your card has insufficient funds."));
    assert!(failed.body.contains("We will try again on"));

    // The record in DynamoDB names the message SES accepted.
    let record = delivery_record(&*rig.docs, &rig.account, &receipt.id).await.unwrap().unwrap();
    match record.delivery {
        Delivery::Sent { message_id, attempts, .. } => {
            assert_eq!(message_id, paid.id);
            assert_eq!(attempts, 1);
        }
        other => panic!("{other:?}"),
    }

    // Only the malformed message reached the DLQ.
    assert_eq!(e2e::drain(&rig.sqs, &rig.dlq_url).await, [malformed]);

    // Delivered once more, much later: still one email.
    rig.send(&[json(&receipt)]).await;
    assert_eq!(rig.run_until_drained(0).await, 1);
    assert_eq!(received_by(&rig.ops).await.len(), 3, "no second receipt");
    assert_eq!(received_by(&rig.cards).await.len(), 1, "receipts do not go to the failure address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_sender_is_retried_and_a_refused_address_is_recorded_not_retried() {
    let rig = Rig::new().await;
    rig.write_contacts().await;
    let receipt = rig.receipt();
    let batch = || vec![Message { id: "m1".into(), body: json(&receipt) }];

    // SES refuses an unverified sender: configuration, so the message goes back to the queue
    // and the claim is released for the retry.
    let unverified = format!("nobody-{}@ringledger-unverified.example", rig.account.as_str());
    let failures =
        process_batch(rig.docs.clone(), rig.mailer.clone(), None, &unverified, batch()).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].reason.contains("will retry: the mail service is unavailable"),
        "{failures:?}"
    );
    assert!(delivery_record(&*rig.docs, &rig.account, &receipt.id).await.unwrap().is_none());
    assert!(received_by(&rig.ops).await.is_empty());

    // An address SES refuses though it has an address's shape (a comma in the local part):
    // recorded as failed, and the message succeeds so it is not retried forever.
    rig.docs
        .put_doc(
            &rig.account,
            DocKind::Profile,
            "profile",
            r#"{"billing_emails": ["ops,billing@nowhere.example"]}"#,
            Some(1),
        )
        .await
        .expect("overwrite the profile");
    let failures =
        process_batch(rig.docs.clone(), rig.mailer.clone(), None, &rig.from, batch()).await;
    assert!(failures.is_empty(), "{failures:?}");
    let record = delivery_record(&*rig.docs, &rig.account, &receipt.id).await.unwrap().unwrap();
    assert_eq!(record.recipients, ["ops,billing@nowhere.example"]);
    let Delivery::Failed { reason, .. } = record.delivery else { panic!("{record:?}") };
    assert!(reason.starts_with("the email was rejected"), "{reason}");
    assert!(reason.contains("Missing domain"), "moto's reason is kept: {reason}");
    let failures =
        process_batch(rig.docs.clone(), rig.mailer.clone(), None, &rig.from, batch()).await;
    assert!(failures.is_empty(), "a refused notice is not tried again");
    assert!(received_by("ops,billing@nowhere.example").await.is_empty());
}

/// The texts moto's SNS sent to `phone` that mention `needle` (`data.json`, key `sns` → `SMS`).
async fn texts_to(phone: &str, needle: &str) -> Vec<String> {
    let url = format!("{}/moto-api/data.json", e2e::moto_endpoint());
    let data: serde_json::Value =
        reqwest::get(&url).await.expect("moto data").json().await.expect("moto json");
    data["sns"]["SMS"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| m["phone_number"] == phone)
        .filter_map(|m| m["message"].as_str().map(String::from))
        .filter(|m| m.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_notices_text_the_critical_phone_once_and_bounces_through_sns_mark_addresses() {
    let rig = Rig::new().await;
    rig.write_contacts().await;
    let phone = "+14155550123";
    api::profile::update(&*rig.docs, &rig.account, |profile| {
        profile.critical_phone = Some(phone.to_string().try_into().unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let suspended = Notice {
        id: format!("{}:suspended:e2e", rig.account.as_str()),
        account_id: rig.account.clone(),
        raised_at: Utc::now(),
        kind: NoticeKind::Suspended { balance_usd: Decimal::ZERO },
    };
    let body = serde_json::to_string(&suspended).unwrap();
    rig.send(&[body.clone(), body]).await;
    rig.run_until_drained(0).await;
    let texts = texts_to(phone, rig.account.as_str()).await;
    assert_eq!(texts.len(), 1, "one text for a notice delivered twice: {texts:?}");
    assert!(texts[0].contains("out of funds"), "{}", texts[0]);
    assert_eq!(received_by(&rig.ops).await.len(), 1, "and its email, once");

    // SES publishes a permanent bounce of the ops address to its feedback topic, which
    // delivers to the queue (SNS's envelope, as in AWS).
    let sns = e2e::sns_client().await;
    let topic = sns
        .create_topic()
        .name(format!("ses-feedback-{}", rig.account.as_str()))
        .send()
        .await
        .expect("topic")
        .topic_arn
        .expect("topic arn");
    let queue_arn = rig
        .sqs
        .get_queue_attributes()
        .queue_url(&rig.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(&queue_arn).send().await.unwrap();
    let bounce = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": rig.ops, "diagnosticCode": "smtp; 550 5.1.1"}],
        },
        "mail": {"timestamp": Utc::now().to_rfc3339(), "messageId": "x",
                 "tags": {"account_id": [rig.account.as_str()]}},
    });
    sns.publish().topic_arn(&topic).message(bounce.to_string()).send().await.unwrap();
    rig.run_until_drained(0).await;
    let (profile, _) = documents::profile::load(&*rig.docs, &rig.account).await.unwrap();
    let marked: Vec<&str> =
        profile.undeliverable_emails.iter().map(|u| u.address.as_str()).collect();
    assert_eq!(marked, [rig.ops.as_str()]);
    // The next notice skips the bounced address.
    rig.send(&[serde_json::to_string(&rig.receipt()).unwrap()]).await;
    rig.run_until_drained(0).await;
    assert_eq!(received_by(&rig.ops).await.len(), 1, "nothing more to the bounced address");
    assert_eq!(received_by(&rig.cfo).await.len(), 2);
}
