//! The notification worker in process: the memory store as the document store, a mailer that
//! records what it is asked to send and fails on cue.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use ledger::docs::{DocKind, DocStore};
use ledger::memory::MemoryStore;
use ledger::{AccountId, Amount, LedgerEvent, LedgerEventKind};
use messaging::mail::{Email, MailError, Mailer};
use messaging::queue::Message;
use messaging::text::{TextMessage, TextSender};
use notifications::notice::{CardFailure, Notice, NoticeKind, NoticeSink, PaymentTrigger};
use notifications::worker::{
    delivery_record, process_batch, recipients, Contacts, Delivery, DirectSink, NoticeRecord,
    CLAIM_LEASE_SECONDS,
};
use rust_decimal_macros::dec;

const FROM: &str = "Ringledger Billing <billing@ringledger.example>";

enum Cue {
    Transient,
    Permanent,
    Panic,
}

#[derive(Default)]
struct RecordingMailer {
    sent: Mutex<Vec<Email>>,
    cues: Mutex<VecDeque<Cue>>,
}

impl RecordingMailer {
    fn cue(&self, cue: Cue) {
        self.cues.lock().unwrap().push_back(cue);
    }

    fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        let cue = self.cues.lock().unwrap().pop_front();
        match cue {
            Some(Cue::Transient) => {
                Err(MailError::Throttled { reason: "slow down".into(), source: None })
            }
            Some(Cue::Permanent) => {
                Err(MailError::Rejected { reason: "Missing final '@domain'".into(), source: None })
            }
            Some(Cue::Panic) => panic!("the mailer fell over"),
            None => {
                let mut sent = self.sent.lock().unwrap();
                sent.push(email.clone());
                Ok(format!("ses-{}", sent.len()))
            }
        }
    }
}

/// A text sender that records what it is asked to send and fails on cue.
#[derive(Default)]
struct RecordingTexts {
    sent: Mutex<Vec<TextMessage>>,
    cues: Mutex<VecDeque<Cue>>,
}

#[async_trait]
impl TextSender for RecordingTexts {
    async fn send_text(&self, message: &TextMessage) -> Result<String, MailError> {
        match self.cues.lock().unwrap().pop_front() {
            Some(Cue::Transient) => {
                Err(MailError::Unavailable { reason: "SNS is down".into(), source: None })
            }
            Some(_) => Err(MailError::Rejected { reason: "opted out".into(), source: None }),
            None => {
                let mut sent = self.sent.lock().unwrap();
                sent.push(message.clone());
                Ok(format!("sns-{}", sent.len()))
            }
        }
    }
}

struct Rig {
    store: Arc<MemoryStore>,
    mailer: Arc<RecordingMailer>,
    texts: Arc<RecordingTexts>,
    account: AccountId,
}

impl Rig {
    async fn new(profile: &str) -> Rig {
        let store = Arc::new(MemoryStore::new());
        let account = AccountId::parse("acme").unwrap();
        let profile: documents::profile::Profile = serde_json::from_str(profile).unwrap();
        documents::profile::store(&*store, &account, &profile).await.unwrap();
        Rig {
            store,
            mailer: Arc::new(RecordingMailer::default()),
            texts: Arc::new(RecordingTexts::default()),
            account,
        }
    }

    async fn with_contacts() -> Rig {
        Rig::new(
            r#"{"billing_emails": ["ops@acme.example", "CFO@acme.example"],
                "recharge_failure_email": "cards@acme.example",
                "tax_exempt": false, "cards": []}"#,
        )
        .await
    }

    async fn run(&self, bodies: &[&str]) -> Vec<messaging::queue::Failure> {
        let messages = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| Message { id: format!("m{i}"), body: body.to_string() })
            .collect();
        let texts: Arc<dyn TextSender> = self.texts.clone();
        process_batch(self.store.clone(), self.mailer.clone(), Some(texts), FROM, messages).await
    }

    fn texts(&self) -> Vec<TextMessage> {
        self.texts.sent.lock().unwrap().clone()
    }

    async fn profile(&self) -> documents::profile::Profile {
        documents::profile::load(&*self.store, &self.account).await.unwrap().0
    }

    async fn record(&self, notice_id: &str) -> Option<NoticeRecord> {
        delivery_record(&*self.store, &self.account, notice_id).await.unwrap()
    }
}

fn receipt() -> Notice {
    Notice {
        id: "receipt:pay_1".into(),
        account_id: AccountId::parse("acme").unwrap(),
        raised_at: Utc::now(),
        kind: NoticeKind::PaymentReceipt {
            payment_id: "pay_1".into(),
            amount_usd: Amount::from_str("50").unwrap(),
            card_brand: "visa".into(),
            card_last4: "4242".into(),
            balance_after_usd: dec!(64.8767),
            trigger: PaymentTrigger::Manual,
            paid_at: Utc::now(),
        },
    }
}

fn recharge_failed() -> Notice {
    Notice {
        id: "recharge_failed:rr-1:1".into(),
        account_id: AccountId::parse("acme").unwrap(),
        raised_at: Utc::now(),
        kind: NoticeKind::RechargeFailed {
            request_id: "rr-1".into(),
            attempt: 1,
            amount_usd: Amount::from_str("50").unwrap(),
            failures: vec![CardFailure {
                card_brand: "visa".into(),
                card_last4: "0002".into(),
                reason: "Your card was declined.".into(),
            }],
            next_attempt_at: Some(Utc::now() + Duration::hours(1)),
        },
    }
}

fn json(notice: &Notice) -> String {
    serde_json::to_string(notice).unwrap()
}

#[tokio::test]
async fn receipts_go_to_the_billing_contacts_and_recharge_failures_also_to_the_failure_address() {
    let rig = Rig::with_contacts().await;
    let failures = rig.run(&[&json(&receipt()), &json(&recharge_failed())]).await;
    assert!(failures.is_empty(), "{failures:?}");
    let mut sent = rig.mailer.sent();
    sent.sort_by(|a, b| a.notice_id.cmp(&b.notice_id));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].notice_id, "receipt:pay_1");
    assert_eq!(sent[0].to, ["ops@acme.example", "CFO@acme.example"]);
    assert_eq!(sent[0].from, FROM);
    assert_eq!(sent[0].subject, "Payment receipt: $50.00 added to your balance");
    assert!(sent[0].text.contains("Visa ending in 4242") && sent[0].html.contains("$64.88"));
    assert_eq!(sent[1].notice_id, "recharge_failed:rr-1:1");
    assert_eq!(sent[1].to, ["cards@acme.example", "ops@acme.example", "CFO@acme.example"]);
    assert!(sent[1].text.contains("Your card was declined."));

    let record = rig.record("receipt:pay_1").await.unwrap();
    assert_eq!(record.notice_kind, "payment_receipt");
    assert_eq!(record.recipients, ["ops@acme.example", "CFO@acme.example"]);
    assert!(
        matches!(record.delivery, Delivery::Sent { ref message_id, attempts: 1, .. } if message_id.starts_with("ses-"))
    );
}

#[test]
fn recipients_are_deduplicated_without_case_and_blank_ones_dropped() {
    let contacts = Contacts {
        billing_emails: vec![
            "ops@acme.example".into(),
            " OPS@acme.example ".into(),
            "".into(),
            "cards@acme.example".into(),
        ],
        recharge_failure_email: Some("Cards@Acme.example".into()),
        ..Contacts::default()
    };
    assert_eq!(
        recipients(&recharge_failed().kind, &contacts),
        ["Cards@Acme.example", "ops@acme.example"]
    );
    assert_eq!(recipients(&receipt().kind, &contacts), ["ops@acme.example", "cards@acme.example"]);
    for kind in [
        NoticeKind::LowBalance { balance_usd: dec!(1) },
        NoticeKind::Suspended { balance_usd: dec!(0) },
        NoticeKind::Reactivated { balance_usd: dec!(5) },
        NoticeKind::RechargeCapReached {
            month: "2026-11".parse().unwrap(),
            cap_usd: Amount::from_str("500").unwrap(),
            spent_usd: dec!(500),
        },
    ] {
        assert_eq!(recipients(&kind, &contacts), ["ops@acme.example", "cards@acme.example"]);
    }
    let only_failure_address = Contacts {
        billing_emails: vec![],
        recharge_failure_email: Some("cards@acme.example".into()),
        ..Contacts::default()
    };
    assert!(recipients(&receipt().kind, &only_failure_address).is_empty());
}

#[tokio::test]
async fn a_notice_delivered_again_and_again_is_sent_once() {
    let rig = Rig::with_contacts().await;
    let body = json(&receipt());
    assert!(rig.run(&[&body]).await.is_empty());
    assert!(rig.run(&[&body]).await.is_empty(), "a redelivery of a sent notice succeeds");
    // Twice in one batch: one sends, the other finds it sent or being sent (and is retried).
    let fresh = Notice { id: "receipt:pay_2".into(), ..receipt() };
    let failures = rig.run(&[&json(&fresh), &json(&fresh)]).await;
    assert!(failures.len() <= 1, "{failures:?}");
    assert!(rig.run(&[&json(&fresh)]).await.is_empty());
    let ids: Vec<String> = rig.mailer.sent().into_iter().map(|e| e.notice_id).collect();
    assert_eq!(ids, ["receipt:pay_1", "receipt:pay_2"]);
}

#[tokio::test]
async fn a_claim_left_by_a_crash_is_sent_again_after_the_lease_but_not_before() {
    let rig = Rig::with_contacts().await;
    let claim = |minutes_ago: i64| {
        serde_json::to_string(&NoticeRecord {
            notice_kind: "payment_receipt".into(),
            recipients: vec!["ops@acme.example".into()],
            delivery: Delivery::Sending {
                claimed_at: Utc::now() - Duration::minutes(minutes_ago),
                attempt: 1,
            },
        })
        .unwrap()
    };
    // A claim younger than the lease may still be sending in another worker: retry later.
    let young = Notice { id: "receipt:young".into(), ..receipt() };
    rig.store.put_doc(&rig.account, DocKind::Notice, &young.id, &claim(0), None).await.unwrap();
    let failures = rig.run(&[&json(&young)]).await;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].reason.contains("being sent by another delivery"), "{failures:?}");
    assert!(rig.mailer.sent().is_empty());

    // One older than the lease was left by a crash: taken over and sent (at least once).
    let stale_minutes = CLAIM_LEASE_SECONDS / 60 + 1;
    let crashed = Notice { id: "receipt:crashed".into(), ..receipt() };
    rig.store
        .put_doc(&rig.account, DocKind::Notice, &crashed.id, &claim(stale_minutes), None)
        .await
        .unwrap();
    assert!(rig.run(&[&json(&crashed)]).await.is_empty());
    assert_eq!(rig.mailer.sent().len(), 1);
    let record = rig.record(&crashed.id).await.unwrap();
    assert!(matches!(record.delivery, Delivery::Sent { attempts: 2, .. }), "{record:?}");
    assert!(rig.run(&[&json(&crashed)]).await.is_empty());
    assert_eq!(rig.mailer.sent().len(), 1, "sent once after the takeover");
}

#[tokio::test]
async fn a_transient_failure_releases_the_claim_and_the_retry_sends() {
    let rig = Rig::with_contacts().await;
    rig.mailer.cue(Cue::Transient);
    let failures = rig.run(&[&json(&receipt())]).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].message_id, "m0");
    assert!(failures[0].reason.contains("will retry"), "{failures:?}");
    assert_eq!(rig.record("receipt:pay_1").await, None, "the claim is released");
    assert!(rig.run(&[&json(&receipt())]).await.is_empty(), "the queue's retry sends it");
    assert_eq!(rig.mailer.sent().len(), 1);
}

#[tokio::test]
async fn a_permanent_failure_is_recorded_and_not_retried() {
    let rig = Rig::with_contacts().await;
    rig.mailer.cue(Cue::Permanent);
    assert!(rig.run(&[&json(&receipt())]).await.is_empty(), "not sent back to the queue");
    let record = rig.record("receipt:pay_1").await.unwrap();
    let Delivery::Failed { reason, attempts, .. } = record.delivery else { panic!("{record:?}") };
    assert!(reason.contains("Missing final '@domain'"), "{reason}");
    assert_eq!(attempts, 1);
    assert!(rig.run(&[&json(&receipt())]).await.is_empty());
    assert!(rig.mailer.sent().is_empty(), "a refused notice is not tried again");
}

#[tokio::test]
async fn malformed_messages_fail_alone_and_ledger_events_are_notices_too() {
    let rig = Rig::with_contacts().await;
    let low_balance = LedgerEvent {
        id: "acme:low_balance:42".into(),
        account_id: rig.account.clone(),
        kind: LedgerEventKind::LowBalance,
        seq: 42,
        version: 43,
        balance_usd: dec!(4.1249),
        raised_at: Utc::now(),
    };
    let recharge_request = LedgerEvent {
        id: "acme:recharge_requested:43:v44".into(),
        kind: LedgerEventKind::RechargeRequested { request_id: "rr-9".into() },
        ..low_balance.clone()
    };
    let bad_id = Notice { id: "has a space".into(), ..receipt() };
    let failures = rig
        .run(&[
            "{not json",
            r#"{"id": "x", "account_id": "acme", "raised_at": "2026-11-04T10:00:00Z", "kind": {"type": "bogus"}}"#,
            &serde_json::to_string(&low_balance).unwrap(),
            &serde_json::to_string(&recharge_request).unwrap(),
            &json(&bad_id),
        ])
        .await;
    let mut failed: Vec<&str> = failures.iter().map(|f| f.message_id.as_str()).collect();
    failed.sort();
    assert_eq!(failed, ["m0", "m1", "m4"], "{failures:?}");
    assert!(failures.iter().all(|f| f.reason.starts_with("malformed notice")), "{failures:?}");
    let sent = rig.mailer.sent();
    assert_eq!(sent.len(), 1, "only the low-balance event becomes an email");
    assert_eq!(sent[0].notice_id, "acme:low_balance:42");
    assert_eq!(sent[0].subject, "Low balance: $4.12 left on account acme");
}

#[tokio::test]
async fn a_refused_number_purchase_event_is_emailed_once_with_the_number() {
    let rig = Rig::with_contacts().await;
    let refused = LedgerEvent {
        id: "acme:purchase_refused:use:evt-num-buy-1".into(),
        account_id: rig.account.clone(),
        kind: LedgerEventKind::PurchaseRefused {
            source_id: ledger::SourceId::parse("use:evt-num-buy-1").unwrap(),
            item: ledger::BillingItem::PhoneNumber,
            amount_usd: ledger::Amount::new(dec!(1.15)).unwrap(),
            refusal: ledger::Refusal::InsufficientBalance {
                balance_usd: dec!(0.5),
                floor_usd: dec!(0),
            },
            details: serde_json::json!({ "event": "number_purchase", "number": "+14155550100" }),
        },
        seq: 3,
        version: 7,
        balance_usd: dec!(0.5),
        raised_at: Utc::now(),
    };
    let body = serde_json::to_string(&refused).unwrap();
    assert!(rig.run(&[&body, &body]).await.is_empty());
    let sent = rig.mailer.sent();
    assert_eq!(sent.len(), 1, "one email per event id: {sent:?}");
    assert_eq!(sent[0].notice_id, "acme:purchase_refused:use:evt-num-buy-1");
    assert_eq!(sent[0].subject, "Purchase refused on account acme: balance too low");
    assert!(sent[0].text.contains("phone number +14155550100"), "{}", sent[0].text);
}

#[tokio::test]
async fn an_account_without_contacts_has_nothing_to_send_and_succeeds() {
    let rig = Rig::new(r#"{"billing_emails": [], "tax_exempt": true}"#).await;
    let no_profile = Notice { account_id: AccountId::parse("ghost").unwrap(), ..receipt() };
    assert!(rig.run(&[&json(&receipt()), &json(&no_profile)]).await.is_empty());
    assert!(rig.mailer.sent().is_empty());
    assert_eq!(rig.record("receipt:pay_1").await, None);
}

#[tokio::test]
async fn a_panic_fails_only_its_own_message() {
    let rig = Rig::with_contacts().await;
    rig.mailer.cue(Cue::Panic);
    let first = rig.run(&[&json(&receipt())]).await;
    assert_eq!(first.len(), 1);
    assert!(first[0].reason.contains("panicked"), "{first:?}");
    // The next batch: the panicked claim is young, so that message waits; the other is sent.
    let failures = rig.run(&[&json(&receipt()), &json(&recharge_failed())]).await;
    assert_eq!(failures.iter().map(|f| f.message_id.as_str()).collect::<Vec<_>>(), ["m0"]);
    assert_eq!(rig.mailer.sent().len(), 1);
}

#[tokio::test]
async fn the_lambda_handler_reports_only_failed_records() {
    let rig = Rig::with_contacts().await;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(serde_json::json!({
        "Records": [
            {"messageId": "good", "body": json(&receipt())},
            {"messageId": "bad", "body": "{"},
        ]
    }))
    .unwrap();
    // What the notifications Lambda does (`runtime::run_sqs` around the worker).
    let batch = sqs::LambdaBatch::new(event);
    let failures = notifications::worker::process_batch(
        rig.store.clone(),
        rig.mailer.clone(),
        None,
        FROM,
        batch.messages(),
    )
    .await;
    let response = sqs::LambdaBatch::response(&failures);
    let failed: Vec<&str> =
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["bad"]);
    assert_eq!(rig.mailer.sent().len(), 1);
}

#[tokio::test]
async fn the_direct_sink_sends_in_process_once_per_id() {
    let rig = Rig::with_contacts().await;
    let sink = DirectSink {
        docs: rig.store.clone(),
        mailer: rig.mailer.clone(),
        texts: None,
        from: FROM.into(),
    };
    sink.publish(&receipt()).await.unwrap();
    sink.publish(&receipt()).await.unwrap();
    assert_eq!(rig.mailer.sent().len(), 1);
    rig.mailer.cue(Cue::Transient);
    assert!(sink.publish(&recharge_failed()).await.is_err());
}

async fn with_phone(opted_out: bool) -> Rig {
    Rig::new(&format!(
        r#"{{"billing_emails": ["ops@acme.example", "cfo@acme.example"],
            "recharge_failure_email": "cards@acme.example",
            "critical_phone": "+14155550100", "critical_sms_opt_out": {opted_out},
            "tax_exempt": false, "cards": []}}"#
    ))
    .await
}

fn suspended(id: &str) -> Notice {
    Notice {
        id: id.into(),
        account_id: AccountId::parse("acme").unwrap(),
        raised_at: Utc::now(),
        kind: NoticeKind::Suspended { balance_usd: dec!(0) },
    }
}

#[tokio::test]
async fn critical_notices_also_go_by_text_once_and_others_do_not() {
    let rig = with_phone(false).await;
    let critical = json(&suspended("acme:suspended:1"));
    assert!(rig.run(&[&critical, &critical, &json(&receipt())]).await.is_empty());
    assert!(rig.run(&[&critical]).await.is_empty());
    let texts = rig.texts();
    assert_eq!(texts.len(), 1, "one text per notice id: {texts:?}");
    assert_eq!(texts[0].to, "+14155550100");
    assert_eq!(texts[0].id, "sms:acme:suspended:1");
    assert!(texts[0].body.contains("out of funds") && texts[0].body.contains("STOP"));
    assert!(texts[0].body.chars().count() <= messaging::text::MAX_TEXT_CHARS);
    assert_eq!(rig.mailer.sent().len(), 2, "the email of each notice, once");
    let record = rig.record("sms:acme:suspended:1").await.unwrap();
    assert_eq!(record.notice_kind, "suspended_text");
    // A failed recharge is critical too; a holder who answered STOP gets no text.
    assert!(rig.run(&[&json(&recharge_failed())]).await.is_empty());
    assert_eq!(rig.texts().len(), 2);
    let quiet = with_phone(true).await;
    assert!(quiet.run(&[&critical, &json(&recharge_failed())]).await.is_empty());
    assert!(quiet.texts().is_empty());
    assert_eq!(quiet.mailer.sent().len(), 2);
}

#[tokio::test]
async fn a_text_that_fails_for_now_retries_the_message_without_a_second_email() {
    let rig = with_phone(false).await;
    rig.texts.cues.lock().unwrap().push_back(Cue::Transient);
    let critical = json(&suspended("acme:suspended:2"));
    assert_eq!(rig.run(&[&critical]).await.len(), 1, "retried for the text");
    assert_eq!(rig.mailer.sent().len(), 1);
    assert!(rig.texts().is_empty());
    assert!(rig.run(&[&critical]).await.is_empty());
    assert_eq!((rig.mailer.sent().len(), rig.texts().len()), (1, 1));
    // A number the service refuses for good is recorded, not retried.
    rig.texts.cues.lock().unwrap().push_back(Cue::Permanent);
    assert!(rig.run(&[&json(&suspended("acme:suspended:3"))]).await.is_empty());
    let record = rig.record("sms:acme:suspended:3").await.unwrap();
    assert!(matches!(record.delivery, Delivery::Failed { .. }));
}

/// An SES notification as SNS delivers it to the queue (not raw).
fn through_sns(notification: serde_json::Value) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "b1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ringledger-ses-feedback",
        "Message": notification.to_string(),
    })
    .to_string()
}

fn bounce(kind: &str, addresses: &[&str], account: Option<&str>) -> String {
    let recipients: Vec<_> = addresses
        .iter()
        .map(|a| serde_json::json!({"emailAddress": a, "diagnosticCode": "smtp; 550 5.1.1 user unknown"}))
        .collect();
    let tags = match account {
        Some(id) => serde_json::json!({"account_id": [id]}),
        None => serde_json::json!({}),
    };
    through_sns(serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": kind, "bounceSubType": "General", "bouncedRecipients": recipients},
        "mail": {"timestamp": "2026-12-03T10:00:00.000Z", "messageId": "ses-1", "tags": tags},
    }))
}

#[tokio::test]
async fn bounces_and_complaints_mark_addresses_undeliverable_once() {
    let rig = with_phone(false).await;
    // A soft bounce, or one without our tag, changes nothing.
    let soft = bounce("Transient", &["ops@acme.example"], Some("acme"));
    let untagged = bounce("Permanent", &["ops@acme.example"], None);
    assert!(rig.run(&[&soft, &untagged]).await.is_empty());
    assert!(rig.profile().await.undeliverable_emails.is_empty());
    let hard = bounce("Permanent", &["OPS@acme.example"], Some("acme"));
    assert!(rig.run(&[&hard]).await.is_empty());
    assert!(rig.run(&[&hard]).await.is_empty());
    let marks = rig.profile().await.undeliverable_emails;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!((marks[0].kind.as_str(), marks[0].address.as_str()), ("bounce", "OPS@acme.example"));
    // The bounced address gets no more email.
    assert!(rig.run(&[&json(&receipt())]).await.is_empty());
    assert_eq!(rig.mailer.sent().last().unwrap().to, ["cfo@acme.example"]);
    let complaint = through_sns(serde_json::json!({
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "cfo@acme.example"}],
                      "complaintFeedbackType": "abuse"},
        "mail": {"timestamp": "2026-12-03T11:00:00Z", "tags": {"account_id": ["acme"]}},
    }));
    let recharge_bounce = bounce("Permanent", &["cards@acme.example"], Some("acme"));
    assert!(rig.run(&[&complaint, &recharge_bounce]).await.is_empty());
    assert_eq!(rig.profile().await.undeliverable_emails.len(), 3);
    // No address takes email now: a critical notice still reaches the phone, saying so.
    let sent_before = rig.mailer.sent().len();
    assert!(rig.run(&[&json(&suspended("acme:suspended:9"))]).await.is_empty());
    assert_eq!(rig.mailer.sent().len(), sent_before);
    let text = rig.texts().pop().unwrap();
    assert!(text.body.contains("bounced"), "{}", text.body);
    // Something that is neither a notice nor feedback still fails.
    assert_eq!(rig.run(&[r#"{"Type": "Notification", "Message": "{}"}"#]).await.len(), 1);
}

#[tokio::test]
async fn a_client_accounts_notices_also_reach_its_agencys_billing_emails() {
    let rig = Rig::new(
        r#"{"billing_emails": ["ops@acme.example"], "agency_id": "agency",
            "tax_exempt": false, "cards": []}"#,
    )
    .await;
    let agency = AccountId::parse("agency").unwrap();
    let agency_profile: documents::profile::Profile = serde_json::from_str(
        r#"{"billing_emails": ["billing@agency.example", "OPS@acme.example"],
            "agency_clients": ["acme"], "tax_exempt": false, "cards": []}"#,
    )
    .unwrap();
    documents::profile::store(&*rig.store, &agency, &agency_profile).await.unwrap();
    assert!(rig.run(&[&json(&receipt())]).await.is_empty());
    let sent = rig.mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, ["ops@acme.example", "billing@agency.example"]);
    // A bounce of the agency's address (tagged with the client, whose notice it was) is marked
    // where the address is listed: on the agency.
    let agency_bounce = bounce("Permanent", &["billing@agency.example"], Some("acme"));
    assert!(rig.run(&[&agency_bounce]).await.is_empty());
    assert!(rig.profile().await.undeliverable_emails.is_empty());
    let (agency_after, _) = documents::profile::load(&*rig.store, &agency).await.unwrap();
    assert_eq!(agency_after.undeliverable_emails[0].address, "billing@agency.example");
    assert!(rig.run(&[&json(&suspended("acme:suspended:agency"))]).await.is_empty());
    assert_eq!(rig.mailer.sent().last().unwrap().to, ["ops@acme.example"]);
}
