//! The workers in one process, for the local runner: the outbox relay hands recharge requests
//! to the auto-recharge worker and notices to the notification worker, which writes each email
//! as an `.eml` file in the outbox folder. In AWS the same workers run as Lambdas behind SQS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::state::Store;
use async_trait::async_trait;
use chrono::Utc;
use ledger::{LedgerEventKind, LedgerStore};
use mailers::FileMailer;
use messaging::mail::Mailer;
use notifications::notice::{Notice, NoticeSink};
use payments::CardProcessor;
use recharge::{Outcome, RechargeWorker};
use usage::worker::Message;

pub const MAIL_FROM: &str = "billing@ringledger.local";

/// Sends each notice straight through the notification worker (no queue locally).
pub struct DirectNotices {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<dyn Mailer>,
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

#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    pub recharges_settled: usize,
    pub recharges_waiting: usize,
    pub notices_sent: usize,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        processor: Arc<dyn CardProcessor>,
        outbox_dir: PathBuf,
    ) -> Self {
        let mailer: Arc<dyn Mailer> = Arc::new(FileMailer::new(outbox_dir.clone()));
        let notices = Arc::new(DirectNotices { store: store.clone(), mailer });
        let recharge = RechargeWorker::new(store.clone(), processor, notices.clone());
        Pipeline { store, notices, recharge, outbox_dir }
    }

    /// Relay what is pending in the outbox once. Recharge requests that must wait stay pending
    /// (the next round asks again; the worker refuses to charge before the backoff ends).
    pub async fn run_once(&self) -> Result<Round, Box<dyn std::error::Error>> {
        let mut round = Round::default();
        let store: &dyn LedgerStore = &*self.store;
        for event in store.pending_events(200).await? {
            match &event.kind {
                LedgerEventKind::RechargeRequested { .. }
                | LedgerEventKind::PaymentPending { .. } => {
                    match self.recharge.handle(&event, Utc::now()).await {
                        Ok(Outcome::RetryAt(_) | Outcome::NotYet(_)) => {
                            round.recharges_waiting += 1;
                            continue;
                        }
                        Ok(Outcome::Settled { .. }) => round.recharges_settled += 1,
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "recharge will be retried");
                            continue;
                        }
                    }
                }
                _ => {
                    if let Some(notice) = Notice::from_ledger_event(&event) {
                        if let Err(error) = self.notices.publish(&notice).await {
                            tracing::warn!(%error, "notice will be retried");
                            continue;
                        }
                        round.notices_sent += 1;
                    }
                }
            }
            store.ack_event(&event).await?;
        }
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
