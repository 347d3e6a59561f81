//! The workers in one process, for the local runner: the outbox relay (`messaging::outbox::sweep`,
//! the same one the relay Lambda runs) publishes into an in-process sink that hands recharge
//! requests and pending payments to the auto-recharge worker and notices to the notification
//! worker, which writes each email as an `.eml` file in the outbox folder. In AWS the sink is
//! SQS and the same workers run as Lambdas behind it.
//!
//! Locally the outbox is the queue: an event is acknowledged only once its worker is done with
//! it. A recharge request that must wait for its backoff (or for the processor to answer) is
//! a failed publish, so it stays pending and the next round hands it over again; the worker
//! refuses to charge before the backoff ends. In AWS the same wait is the message's visibility
//! timeout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::state::Store;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger::LedgerEvent;
use mailers::FileMailer;
use messaging::mail::Mailer;
use messaging::outbox::{sweep, EventSink, RelayError, RelayReport};
use notifications::notice::{Notice, NoticeSink};
use payments::CardProcessor;
use recharge::{Outcome, RechargeWorker};
use usage::worker::Message;

pub const MAIL_FROM: &str = "billing@ringledger.local";

/// Outbox items one round looks at (of every account), and how many are read at once.
pub const ROUND_ITEMS: usize = 200;
const ROUND_PAGE: u32 = 100;

/// Sends each notice straight through the notification worker (no queue locally).
pub struct DirectNotices {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<dyn Mailer>,
    /// Critical texts, written beside the emails (`<id>.sms.txt`).
    pub texts: Arc<dyn messaging::text::TextSender>,
}

#[async_trait]
impl NoticeSink for DirectNotices {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let message = Message { id: notice.id.clone(), body: serde_json::to_string(notice)? };
        let failures = notifications::worker::process_batch(
            self.store.clone(),
            self.mailer.clone(),
            Some(self.texts.clone()),
            MAIL_FROM,
            vec![message],
        )
        .await;
        match failures.first() {
            None => Ok(()),
            Some(failure) => Err(failure.reason.clone().into()),
        }
    }
}

pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub notices: Arc<DirectNotices>,
    pub recharge: RechargeWorker,
    pub outbox_dir: PathBuf,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    pub recharges_settled: usize,
    /// Recharge requests (or pending payments) left pending until their time comes.
    pub recharges_waiting: usize,
    pub notices_sent: usize,
    /// The relay's own count: acknowledged, left pending, unreadable.
    pub relay: RelayReport,
}

/// A recharge request that is not due yet: not an error, but it must stay in the outbox.
#[derive(Debug)]
pub struct Waiting(pub DateTime<Utc>);

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the auto-recharge worker waits until {} (backoff, or a charge the processor has not answered)", self.0)
    }
}

impl std::error::Error for Waiting {}

/// The in-process [`EventSink`]: "published" means the worker is done with the event.
struct WorkerSink<'a> {
    pipeline: &'a Pipeline,
    round: Mutex<Round>,
}

impl WorkerSink<'_> {
    fn count(&self, add: impl FnOnce(&mut Round)) {
        // A poisoned counter only means another event's task panicked; the counts go on.
        add(&mut self.round.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
}

#[async_trait]
impl EventSink for WorkerSink<'_> {
    async fn publish(&self, event: &LedgerEvent) -> Result<(), RelayError> {
        match &event.kind {
            kind if kind.for_payments_worker() => {
                match self.pipeline.recharge.handle(event, Utc::now()).await {
                    Ok(Outcome::RetryAt(at) | Outcome::NotYet(at)) => {
                        self.count(|round| round.recharges_waiting += 1);
                        Err(RelayError::Publish(Box::new(Waiting(at))))
                    }
                    Ok(Outcome::Settled { .. }) => {
                        self.count(|round| round.recharges_settled += 1);
                        Ok(())
                    }
                    Ok(Outcome::NotNeeded(_) | Outcome::Stopped(_)) => Ok(()),
                    Err(error) => Err(RelayError::Publish(Box::new(error))),
                }
            }
            // Events without a notice (none today) are done once seen, as the notification
            // worker does with them in AWS.
            _ => match Notice::from_ledger_event(event) {
                Some(notice) => {
                    self.pipeline.notices.publish(&notice).await.map_err(RelayError::Publish)?;
                    self.count(|round| round.notices_sent += 1);
                    Ok(())
                }
                None => Ok(()),
            },
        }
    }
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        processor: Arc<dyn CardProcessor>,
        outbox_dir: PathBuf,
    ) -> Self {
        let mailer: Arc<dyn Mailer> = Arc::new(FileMailer::new(outbox_dir.clone()));
        let texts = Arc::new(mailers::FileTexts::new(outbox_dir.clone()));
        let notices = Arc::new(DirectNotices { store: store.clone(), mailer, texts });
        let recharge = RechargeWorker::new(store.clone(), processor, notices.clone());
        Pipeline { store, notices, recharge, outbox_dir }
    }

    /// Relay what is pending in the outbox once, at most [`ROUND_ITEMS`] items. Only failing
    /// to read the outbox is an error; an event its worker could not finish stays pending.
    pub async fn run_once(&self) -> Result<Round, RelayError> {
        let sink = WorkerSink { pipeline: self, round: Mutex::new(Round::default()) };
        let relay = sweep(&*self.store, &sink, ROUND_PAGE, ROUND_ITEMS).await?;
        let mut round = sink.round.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        round.relay = relay;
        Ok(round)
    }

    /// Run forever, every `every` (the `serve` command's background worker).
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            if let Err(error) = self.run_once().await {
                tracing::warn!(%error, "worker round failed");
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;

    use chrono::Utc;
    use documents::profile::{self, CardRole, Email, StoredCard};
    use ledger::memory::MemoryStore;
    use ledger::{
        Account, AccountId, Amount, BillingItem, LedgerEventKind, LedgerStore, NewAccount, Posting,
        RechargeMode, RechargeSettings, SourceId,
    };
    use payments::{CardProcessor, SimulatedProcessor};

    use super::Pipeline;

    fn amount(value: &str) -> Amount {
        Amount::from_str(value).unwrap()
    }

    /// An account whose only card is declined, with auto-recharge below $15, funded with $20
    /// and then used down to $14.99: one recharge request in the outbox.
    async fn declined_account(store: &MemoryStore, processor: &SimulatedProcessor) -> String {
        let id = AccountId::parse("acme").unwrap();
        let now = Utc::now();
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, now)
            .await
            .unwrap();
        let customer = processor.create_customer("acme", None).await.unwrap();
        let details = processor.attach_card(&customer, "pm_card_chargeDeclined").await.unwrap();
        let card = StoredCard {
            kind: Default::default(),
            verified: true,
            id: details.payment_method_id.clone(),
            brand: details.brand,
            last4: details.last4,
            exp_month: details.exp_month,
            exp_year: details.exp_year,
            role: CardRole::Primary,
            card_manager_email: Email::try_from("cards@acme.example".to_string()).unwrap(),
            added_at: now,
        };
        profile::update(store, &id, |p| {
            p.processor_customer_id = Some(customer.0.clone());
            p.cards.push(card.clone());
            p.billing_emails = vec![Email::try_from("billing@acme.example".to_string()).unwrap()];
            Ok(())
        })
        .await
        .unwrap();
        let funds = SourceId::parse("pay-1").unwrap();
        let credit = Posting::credit(funds, BillingItem::FundsAdded, amount("20"), now).unwrap();
        store.post(&id, vec![credit], now).await.unwrap();
        store
            .modify_account(
                &id,
                Arc::new(|a: &mut Account| {
                    let settings = RechargeSettings::new(
                        true,
                        amount("50"),
                        amount("15"),
                        RechargeMode::TopUpTo,
                    )?;
                    a.recharge = Some(settings);
                    Ok(())
                }),
                now,
            )
            .await
            .unwrap();
        let call = SourceId::parse("call-1").unwrap();
        let usage = Posting::usage(call, BillingItem::PhoneCall, amount("5.01"), now).unwrap();
        store.post(&id, vec![usage], now).await.unwrap();
        details.payment_method_id
    }

    #[tokio::test]
    async fn a_recharge_request_waiting_for_its_backoff_stays_in_the_outbox_and_is_not_charged_again(
    ) {
        let store = Arc::new(MemoryStore::new());
        let processor = Arc::new(SimulatedProcessor::new());
        let card = declined_account(&store, &processor).await;
        let dir = tempfile::tempdir().unwrap();
        let pipeline = Pipeline::new(store.clone(), processor.clone(), dir.path().to_path_buf());
        let is_request =
            |kind: &LedgerEventKind| matches!(kind, LedgerEventKind::RechargeRequested { .. });

        let first = pipeline.run_once().await.unwrap();
        assert_eq!((first.recharges_settled, first.recharges_waiting), (0, 1), "{first:?}");
        assert_eq!(first.relay.failed, 1, "the waiting request is not acknowledged: {first:?}");
        let pending = store.pending_events(100).await.unwrap();
        assert_eq!(pending.len(), 1, "everything else was relayed: {pending:?}");
        assert!(is_request(&pending[0].kind), "{pending:?}");
        assert_eq!(processor.charge_attempts(&card), 1);

        let second = pipeline.run_once().await.unwrap();
        assert_eq!(second.recharges_waiting, 1, "{second:?}");
        assert_eq!(processor.charge_attempts(&card), 1, "a declined card is never hammered");
        assert_eq!(store.pending_events(100).await.unwrap().len(), 1);
        let emails: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|file| std::fs::read_to_string(file.unwrap().path()).unwrap())
            .collect();
        let failures =
            emails.iter().filter(|e| e.contains("Subject: Action needed: auto-recharge"));
        assert_eq!(failures.count(), 1, "one recharge-failure email, sent once");
    }
}
