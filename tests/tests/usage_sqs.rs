//! Usage events end to end: a real SQS queue on moto, consumed by a poller that behaves like
//! Lambda's SQS event source (batches of 10, successes deleted, failures left to come back, a
//! redrive policy to a DLQ), rated and posted to DynamoDB Local. Balances match hand-computed
//! totals; redelivery changes nothing; poison messages land in the DLQ; a threshold crossing
//! raises exactly one recharge request; an outbox event survives a crash before its send.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::{at, credit, open, usd};
use ledger::{Account, Amount, LedgerStore, RechargeMode, RechargeSettings};
use messaging::outbox::{sweep, EventSink, QueueEventSink};
use messaging::queue::Redelivery;
use sqs::{poll_once, SqsQueue};
use usage::worker::{process_batch_received, RateCards};

const FIXTURES: [&str; 8] = [
    include_str!("../fixtures/usage/call_outbound.json"),
    include_str!("../fixtures/usage/call_outbound_uk.json"),
    include_str!("../fixtures/usage/call_inbound_tollfree_transcribed.json"),
    include_str!("../fixtures/usage/call_unanswered_ring_through.json"),
    include_str!("../fixtures/usage/sms_out.json"),
    include_str!("../fixtures/usage/sms_in.json"),
    include_str!("../fixtures/usage/number_purchase.json"),
    include_str!("../fixtures/usage/number_renewal.json"),
];

const POISON: [&str; 3] = [
    include_str!("../fixtures/poison/malformed.json"),
    include_str!("../fixtures/poison/unknown_type.json"),
    include_str!("../fixtures/poison/unknown_account.json"),
];

/// When the worker receives the messages: after every event below, so the test does not age.
fn received_at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-04T13:00:00Z").unwrap().into()
}

struct Rig {
    sqs: aws_sdk_sqs::Client,
    store: Arc<dyn LedgerStore>,
    sink: Arc<QueueEventSink>,
    recharge_url: String,
    notifications_url: String,
    usage_url: String,
    dlq_url: String,
    cards: RateCards,
}

impl Rig {
    async fn new() -> Self {
        let sqs = e2e::sqs_client().await;
        let dlq_url = e2e::create_queue(&sqs, "usage-dlq", None).await;
        let usage_url = e2e::create_queue(&sqs, "usage", Some((&dlq_url, 2))).await;
        let recharge_url = e2e::create_queue(&sqs, "recharge", None).await;
        let notifications_url = e2e::create_queue(&sqs, "notifications", None).await;
        let sink = Arc::new(QueueEventSink {
            recharge: Arc::new(SqsQueue::new(sqs.clone(), &recharge_url)),
            notifications: Arc::new(SqsQueue::new(sqs.clone(), &notifications_url)),
        });
        let store: Arc<dyn LedgerStore> = Arc::new(e2e::fresh_dynamo_store().await);
        Rig {
            sqs,
            store,
            sink,
            recharge_url,
            notifications_url,
            usage_url,
            dlq_url,
            cards: RateCards::standard_only(),
        }
    }

    async fn send(&self, bodies: &[&str]) {
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(&self.usage_url)
                .message_body(*body)
                .send()
                .await
                .expect("send");
        }
    }

    async fn queue_depth(&self, url: &str) -> (u64, u64) {
        e2e::queue_depth(&self.sqs, url).await
    }

    /// Poll like Lambda until the usage queue is empty (in flight included) and the DLQ holds
    /// `dead_letters` messages. Returns how many messages the worker was handed.
    async fn run_until_drained(
        &self,
        sink: Option<Arc<dyn EventSink>>,
        dead_letters: u64,
    ) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut handed = 0;
        while Instant::now() < deadline {
            let store = self.store.clone();
            let cards = self.cards.clone();
            let sink = sink.clone();
            let queue = SqsQueue::new(self.sqs.clone(), &self.usage_url);
            let stats = poll_once(&queue, 0, Redelivery::QUEUE_DEFAULT, |messages| async move {
                let report =
                    process_batch_received(store, &cards, sink, messages, received_at()).await;
                sqs::verdicts_of(&report.failures)
            })
            .await
            .expect("poll");
            handed += stats.received;
            if stats.received == 0 {
                let (visible, in_flight) = self.queue_depth(&self.usage_url).await;
                let (dead, _) = self.queue_depth(&self.dlq_url).await;
                if visible == 0 && in_flight == 0 && dead >= dead_letters {
                    return handed;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        panic!("the usage queue did not drain in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_from_sqs_posts_once_poison_goes_to_the_dlq_and_crossings_raise_one_request() {
    let rig = Rig::new().await;
    let store = &*rig.store;
    let id = open(store, "acme", None).await;
    store.post(&id, vec![credit("pay-1", "20")], at(0)).await.unwrap();
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
    let sink: Arc<dyn EventSink> = rig.sink.clone();

    // A day of usage plus three poison messages.
    let mut bodies: Vec<&str> = FIXTURES.to_vec();
    bodies.extend(POISON);
    rig.send(&bodies).await;
    rig.run_until_drained(Some(sink.clone()), 3).await;

    // Hand-computed on the standard card:
    //   call 187 s at 60/6 -> 192 s x 0.014/60 = 0.0448, surcharge 0.0025
    //   UK call 61 s -> 66 s x 0.04/60 = 0.044, surcharge 0.0025
    //   toll-free inbound 30 s -> 60 s x 0.022/60 = 0.022, surcharge 0.0025, transcription 0.05
    //   unanswered, 2 ring-through attempts x 0.002 = 0.004
    //   sms out 2 segments x 0.0079 = 0.0158 + 0.003; sms in 0.0079 + 0.003
    //   local number purchase 1.15; toll-free renewal 2.15
    //   total 3.502; 20 - 3.502 = 16.498
    let account = conformance::assert_consistent(store, &id).await;
    assert_eq!(account.balance_usd, usd("16.498"));
    assert_eq!(account.last_seq, 15, "one credit and fourteen charges");

    let dead: BTreeSet<String> = e2e::drain(&rig.sqs, &rig.dlq_url).await.into_iter().collect();
    let poison: BTreeSet<String> = POISON.iter().map(|s| s.to_string()).collect();
    assert_eq!(dead, poison, "exactly the poison messages reached the DLQ");

    // The platform resends the whole day: every message is handled, nothing changes.
    rig.send(&FIXTURES).await;
    let handed = rig.run_until_drained(Some(sink.clone()), 0).await;
    assert_eq!(handed, FIXTURES.len());
    let again = conformance::assert_consistent(store, &id).await;
    assert_eq!((again.balance_usd, again.last_seq), (account.balance_usd, account.last_seq));
    assert!(e2e::drain(&rig.sqs, &rig.recharge_url).await.is_empty());

    // A 40-minute UK call crosses the $15 threshold: 0.04 x 40 + 0.0025 = 1.6025 -> 14.8955.
    let long_call = r#"{"version": 1, "event_id": "evt-uk-long", "account_id": "acme", "occurred_at": "2026-11-04T10:00:00Z", "type": "call", "data": {"direction": "outbound", "from": "+14155550100", "to": "+447700900123", "answered": true, "duration_seconds": 2400}}"#;
    let sms = r#"{"version": 1, "event_id": "evt-sms-late", "account_id": "acme", "occurred_at": "2026-11-04T10:05:00Z", "type": "sms_out", "data": {"from": "+14155550100", "to": "+14155550123", "segments": 2}}"#;
    rig.send(&[long_call]).await;
    rig.run_until_drained(Some(sink.clone()), 0).await;
    rig.send(&[sms, long_call]).await;
    rig.run_until_drained(Some(sink.clone()), 0).await;
    let crossed = conformance::assert_consistent(store, &id).await;
    assert_eq!(crossed.balance_usd, usd("14.8767"), "14.8955 - 0.0188 for the SMS");
    let requests = e2e::drain(&rig.sqs, &rig.recharge_url).await;
    assert_eq!(requests.len(), 1, "exactly one recharge request: {requests:?}");
    let request: serde_json::Value = serde_json::from_str(&requests[0]).unwrap();
    assert_eq!(request["kind"]["kind"], "recharge_requested");
    assert_eq!(
        request["kind"]["request_id"].as_str(),
        crossed.recharge_in_flight.as_deref(),
        "the request in the queue is the one in flight"
    );

    // Notices so far (the first credit's reactivation was posted outside the worker).
    sweep(store, &*sink, 100, 1_000).await.unwrap();
    e2e::drain(&rig.sqs, &rig.notifications_url).await;

    // The worker "dies" between the ledger write and the queue send (no sink): the suspension
    // notice waits in the outbox, and the sweeper sends it exactly once.
    let huge = r#"{"version": 1, "event_id": "evt-uk-day", "account_id": "acme", "occurred_at": "2026-11-04T12:00:00Z", "type": "call", "data": {"direction": "outbound", "from": "+14155550100", "to": "+447700900123", "answered": true, "duration_seconds": 86400}}"#;
    rig.send(&[huge]).await;
    rig.run_until_drained(None, 0).await;
    assert!(e2e::drain(&rig.sqs, &rig.notifications_url).await.is_empty());
    let pending = store.pending_events(100).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), vec!["suspended"]);
    assert_eq!(sweep(store, &*sink, 100, 1_000).await.unwrap().relayed, 1);
    assert_eq!(sweep(store, &*sink, 100, 1_000).await.unwrap().relayed, 0, "sent once");
    let notices = e2e::drain(&rig.sqs, &rig.notifications_url).await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].contains("\"suspended\""));
    let suspended = conformance::assert_consistent(store, &id).await;
    // 14.8767 - (0.04 x 1440 + 0.0025) = -42.7258
    assert_eq!(suspended.balance_usd, usd("-42.7258"));
    assert_eq!(suspended.status, ledger::AccountStatus::Suspended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sends_batches_to_each_queue_and_a_missing_queue_fails_only_its_events() {
    let rig = Rig::new().await;
    let store = &*rig.store;
    // 23 reactivations (notices) and one recharge request (auto-recharge turned on below its
    // threshold).
    for index in 0..23 {
        let id = open(store, &format!("acct-{index:02}"), None).await;
        store.post(&id, vec![credit("pay-1", "5")], at(index)).await.unwrap();
    }
    let recharging = open(store, "recharging", None).await;
    store.post(&recharging, vec![credit("pay-1", "5")], at(30)).await.unwrap();
    store
        .modify_account(
            &recharging,
            Arc::new(|a: &mut Account| {
                a.recharge = Some(RechargeSettings::new(
                    true,
                    Amount::from_str("50")?,
                    Amount::from_str("15")?,
                    RechargeMode::TopUpTo,
                )?);
                Ok(())
            }),
            at(31),
        )
        .await
        .unwrap();
    assert_eq!(store.pending_events(100).await.unwrap().len(), 25);

    // The recharge queue does not exist: its one event fails, every notice goes out.
    let broken = QueueEventSink {
        recharge: Arc::new(SqsQueue::new(rig.sqs.clone(), format!("{}-missing", rig.recharge_url))),
        notifications: Arc::new(SqsQueue::new(rig.sqs.clone(), &rig.notifications_url)),
    };
    let report = sweep(store, &broken, 100, 1_000).await.unwrap();
    assert_eq!((report.relayed, report.failed, report.unreadable), (24, 1, 0));
    let pending = store.pending_events(100).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["recharge_requested"]
    );
    let notices = e2e::drain(&rig.sqs, &rig.notifications_url).await;
    assert_eq!(notices.len(), 24, "23 reactivations and the recharging account's");

    let report = sweep(store, &*rig.sink, 100, 1_000).await.unwrap();
    assert_eq!((report.relayed, report.failed), (1, 0));
    let requests = e2e::drain(&rig.sqs, &rig.recharge_url).await;
    assert_eq!(requests.len(), 1);
    assert!(requests[0].contains("recharge_requested"));
}

/// A batch envelope of `events` (each a single-event message body).
fn envelope(events: &[String]) -> String {
    format!(r#"{{"version": 1, "batch": [{}]}}"#, events.join(", "))
}

fn sms_out(event_id: &str, account: &str, segments: u32) -> String {
    format!(
        r#"{{"version": 1, "event_id": "{event_id}", "account_id": "{account}", "occurred_at": "2026-11-04T10:00:00Z", "type": "sms_out", "data": {{"from": "+14155550100", "to": "+14155550123", "segments": {segments}}}}}"#
    )
}

fn call_187_s(event_id: &str, account: &str) -> String {
    format!(
        r#"{{"version": 1, "event_id": "{event_id}", "account_id": "{account}", "occurred_at": "2026-11-04T10:00:00Z", "type": "call", "data": {{"direction": "outbound", "from": "+14155550100", "to": "+14155550123", "answered": true, "duration_seconds": 187}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_envelopes_through_sqs_post_each_event_once_and_a_bad_envelope_reaches_the_dlq() {
    let rig = Rig::new().await;
    let store = &*rig.store;
    let mut ids = Vec::new();
    for name in ["acme", "globex", "initech"] {
        let id = open(store, name, None).await;
        store.post(&id, vec![credit("pay-1", "20")], at(0)).await.unwrap();
        ids.push(id);
    }
    // Standard card: a 187 s call 0.0448 + 0.0025 = 0.0473; an SMS 0.0079 per segment + 0.003.
    let three_accounts = envelope(&[
        call_187_s("evt-a1", "acme"),
        sms_out("evt-a2", "globex", 1),
        sms_out("evt-a3", "initech", 2),
    ]);
    // Good events around one of an unknown type: they post, the message fails and, after the
    // queue's two receives, waits in the DLQ (re-driving it later posts nothing twice).
    let fax = r#"{"version": 1, "event_id": "evt-fax", "account_id": "acme", "occurred_at": "2026-11-04T10:00:00Z", "type": "fax", "data": {"pages": 3}}"#;
    let with_poison = envelope(&[
        sms_out("evt-b1", "acme", 2),
        fax.to_string(),
        call_187_s("evt-b2", "globex"),
        sms_out("evt-a2", "globex", 1),
    ]);
    // Malformed as a whole (an unknown envelope field): nothing in it posts.
    let malformed = format!(
        r#"{{"version": 1, "batch": [{}], "sender": "pbx"}}"#,
        sms_out("evt-c1", "initech", 3)
    );
    let single = sms_out("evt-d1", "initech", 1);
    let bodies =
        [three_accounts.as_str(), with_poison.as_str(), malformed.as_str(), single.as_str()];
    rig.send(&bodies).await;
    rig.run_until_drained(None, 2).await;

    let balances = [usd("19.9339"), usd("19.9418"), usd("19.9703")];
    // acme 20 - 0.0473 - 0.0188; globex 20 - 0.0109 - 0.0473; initech 20 - 0.0188 - 0.0109.
    for (id, expected) in ids.iter().zip(&balances) {
        let account = conformance::assert_consistent(store, id).await;
        assert_eq!(&account.balance_usd, expected, "{id}");
    }
    let dead: BTreeSet<String> = e2e::drain(&rig.sqs, &rig.dlq_url).await.into_iter().collect();
    assert_eq!(dead, BTreeSet::from([with_poison.clone(), malformed.clone()]));

    // The platform resends everything, and the DLQ is re-driven: nothing is charged twice.
    rig.send(&bodies).await;
    rig.run_until_drained(None, 2).await;
    for (id, expected) in ids.iter().zip(&balances) {
        let account = conformance::assert_consistent(store, id).await;
        assert_eq!(&account.balance_usd, expected, "{id} after redelivery");
    }
    assert_eq!(e2e::drain(&rig.sqs, &rig.dlq_url).await.len(), 2);
}
