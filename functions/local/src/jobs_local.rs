//! The scheduled jobs in one process: the ops CLI's `tax` and `statements` commands, the API's
//! statement emails, and `serve`'s hourly catch-up. The same job code the Lambdas run, with no
//! queue: accounts are walked from the store's registry and done a few at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::state::Store;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use jobs::job::BoxError;
use jobs::statements::{Cadence, StatementJob};
use jobs::tax::TaxJob;
use jobs::worker::Workers;
use jobs::{Job, JobSink};
use mailers::FileMailer;
use messaging::mail::Mailer;

use crate::cli::TaxFiles;
use crate::pipeline::MAIL_FROM;

/// Accounts done at once.
pub const CONCURRENCY: usize = 16;

/// The job workers: statements always, tax only with its tables (so a command that never
/// taxes cannot tax with the wrong ones).
pub fn workers(
    store: Arc<dyn Store>,
    outbox_dir: &Path,
    tax_files: Option<&TaxFiles>,
) -> Result<Workers, BoxError> {
    let tax = match tax_files {
        Some(files) => {
            let (table, taxability) = files.load()?;
            Some(TaxJob {
                ledger: store.clone(),
                docs: store.clone(),
                table: Arc::new(table),
                taxability: Arc::new(taxability),
            })
        }
        None => None,
    };
    let mailer: Arc<dyn Mailer> = Arc::new(FileMailer::new(PathBuf::from(outbox_dir)));
    Ok(Workers {
        tax,
        statements: Some(StatementJob {
            ledger: store.clone(),
            docs: store,
            mailer,
            from_address: MAIL_FROM.to_string(),
        }),
    })
}

/// Runs each job at once (the local stand-in for the statements queue).
pub struct DirectJobs(pub Workers);

#[async_trait]
impl JobSink for DirectJobs {
    async fn publish(&self, jobs: &[Job]) -> Result<(), BoxError> {
        for job in jobs {
            self.0.handle(job).await?;
        }
        Ok(())
    }
}

fn bar(total: u64, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "  {{spinner}} [{{bar:40.cyan/blue}}] {{pos:>6}}/{{len}} {what} {{msg}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Run `job` for every account (with a progress bar when `show`), counting outcomes.
pub async fn run_all(
    store: &dyn Store,
    workers: &Workers,
    job: impl Fn(ledger::AccountId) -> Job,
    show: bool,
) -> Result<BTreeMap<&'static str, u64>, BoxError> {
    // Counting walks the registry once more: only for a progress bar someone watches.
    let total = if show { jobs::plan::count_accounts(store).await? } else { 0 };
    let progress = bar(total, "accounts", show);
    let outcomes = jobs::plan::for_each_account(store, CONCURRENCY, |id| {
        let job = job(id);
        let progress = progress.clone();
        async move {
            let outcome = match workers.handle(&job).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    progress.println(format!("  {}: {error}", job.account_id()));
                    "failed"
                }
            };
            progress.inc(1);
            outcome
        }
    })
    .await?;
    progress.finish_and_clear();
    let mut counts = BTreeMap::new();
    for outcome in outcomes {
        *counts.entry(outcome).or_insert(0) += 1;
    }
    Ok(counts)
}

/// What `serve` does every hour: the previous month's tax, the previous month's and week's
/// scheduled statements, and the number-release sweep. Each is idempotent, so running them
/// again changes nothing.
pub async fn catch_up(store: &dyn Store, workers: &Workers, now: DateTime<Utc>) {
    let month = ledger::Month::of(now).previous();
    match run_all(store, workers, |account_id| Job::Tax { account_id, month }, false).await {
        Ok(counts) => tracing::info!(%month, ?counts, "tax catch-up"),
        Err(error) => tracing::warn!(%error, "tax catch-up failed; retried next hour"),
    }
    for cadence in [Cadence::Monthly, Cadence::Weekly] {
        let (from, to) = cadence.previous_period(now.date_naive());
        let make = |account_id| Job::ScheduledStatement { account_id, cadence, from, to };
        match run_all(store, workers, make, false).await {
            Ok(counts) => {
                tracing::info!(cadence = cadence.as_str(), ?counts, "statements catch-up")
            }
            Err(error) => tracing::warn!(%error, "statements catch-up failed; retried next hour"),
        }
    }
    match run_all(store, workers, |account_id| Job::ReleaseSweep { account_id }, false).await {
        Ok(counts) => tracing::info!(?counts, "number-release sweep"),
        Err(error) => tracing::warn!(%error, "number-release sweep failed; retried next hour"),
    }
}

/// The dispute reconciliation `serve` runs every hour: every dispute the processor has opened in
/// the lookback window, applied as it stands now (a lost processor event is caught up here).
pub async fn reconcile_disputes(
    store: &dyn Store,
    processor: &dyn payments::CardProcessor,
    notices: &dyn notifications::notice::NoticeSink,
    now: DateTime<Utc>,
) {
    use payment_flow::dispute::{reconcile_disputes, DISPUTE_LOOKBACK_DAYS};
    let ports = payment_flow::PaymentPorts { store, processor, notices: Some(notices) };
    let since = now - chrono::Duration::days(DISPUTE_LOOKBACK_DAYS);
    match reconcile_disputes(&ports, since, now).await {
        Ok(applied) => tracing::info!(applied, "dispute reconciliation"),
        Err(error) => tracing::warn!(%error, "dispute reconciliation failed; retried next hour"),
    }
    // Refunds made at the processor outside this system, on the same schedule.
    use payment_flow::refund::{reconcile_external_refunds, EXTERNAL_REFUND_LOOKBACK_DAYS};
    let since = now - chrono::Duration::days(EXTERNAL_REFUND_LOOKBACK_DAYS);
    match reconcile_external_refunds(&ports, since, now).await {
        Ok(changed) => tracing::info!(changed, "external refund reconciliation"),
        Err(error) => tracing::warn!(%error, "refund reconciliation failed; retried next hour"),
    }
}

/// Processor events applied in process, as the webhook receives them (in AWS the
/// processor-events queue's worker does this, with the same `api::webhooks::apply_event`).
pub struct DirectProcessorEvents {
    pub store: std::sync::Arc<dyn Store>,
    pub processor: std::sync::Arc<dyn payments::CardProcessor>,
    pub notices: std::sync::Arc<dyn notifications::notice::NoticeSink>,
}

#[async_trait::async_trait]
impl api::webhooks::ProcessorEventSink for DirectProcessorEvents {
    async fn publish(
        &self,
        event: &payments::stripe_events::ProcessorEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let ports = payment_flow::PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        };
        api::webhooks::apply_event(&ports, event, Utc::now()).await
    }
}
