//! The queue worker: one job message per account, for Lambda's SQS event source and the local
//! poller. Failures go back to the queue (and after `maxReceiveCount`, to the DLQ); permanent
//! ones are logged and dropped, because retrying cannot fix them.

use chrono::Utc;
use futures::stream::{self, StreamExt};
use messaging::queue::{Failure, Message, Redelivery};
use tracing::{error, info, warn};

use crate::job::Job;
use crate::statements::StatementJob;
use crate::tax::{JobError, TaxJob};

/// Messages handled at once in one batch.
const CONCURRENCY: usize = 10;

/// What a worker can do: the tax job, the statement job, or both (the local runner).
#[derive(Clone, Default)]
pub struct Workers {
    pub tax: Option<TaxJob>,
    pub statements: Option<StatementJob>,
}

impl Workers {
    /// Handle one job; `Ok` names what happened (done, or nothing to do), `Err` goes back to
    /// the queue unless it is permanent.
    pub async fn handle(&self, job: &Job) -> Result<&'static str, JobError> {
        let now = Utc::now();
        match (job, &self.tax, &self.statements) {
            (Job::Tax { account_id, month }, Some(tax), _) => {
                tax.run(account_id, *month, now).await.map(|o| o.as_str())
            }
            (Job::ScheduledStatement { account_id, cadence, from, to }, _, Some(statements)) => {
                statements
                    .scheduled(account_id, *cadence, *from, *to, now)
                    .await
                    .map(|o| o.as_str())
            }
            (Job::Statement(request), _, Some(statements)) => {
                statements.send(request).await.map(|o| o.as_str())
            }
            (Job::Invoice { account_id, month }, _, Some(statements)) => {
                statements.invoice(account_id, *month, now).await.map(|o| o.as_str())
            }
            // The statements function runs the daily sweep: it has the ledger and a schedule.
            // It removes expired credit grants first: a removal can suspend the account.
            (Job::ReleaseSweep { account_id }, _, Some(statements)) => {
                let ledger = &*statements.ledger;
                let expired = crate::release::expire_grants(ledger, account_id, now).await?;
                // Plan fees fall due before anything reads the balance. A renewal that fails
                // does not hold up the release sweep; its error retries the job after it.
                let renewed = crate::plans::renew_at(
                    ledger,
                    &*statements.docs,
                    account_id,
                    now.date_naive(),
                    now,
                )
                .await;
                let release = crate::release::sweep(ledger, account_id, now).await?;
                let card = crate::cards::expiry_notice(
                    &*statements.docs,
                    &*statements.mailer,
                    &statements.from_address,
                    account_id,
                    now.date_naive(),
                )
                .await?;
                // Overdue invoices are reminded of, and block the account past the operator's
                // limit (postpaid accounts; nothing to read for the others but their empty
                // invoice list).
                let (reminded, block) = crate::invoices::dun(
                    ledger,
                    &*statements.docs,
                    &*statements.mailer,
                    &statements.from_address,
                    account_id,
                    now,
                )
                .await?;
                let renewed = renewed?;
                Ok(match release {
                    crate::release::SweepOutcome::NothingDue
                        if matches!(block, crate::invoices::BlockOutcome::Blocked(_)) =>
                    {
                        "blocked for an overdue invoice"
                    }
                    crate::release::SweepOutcome::NothingDue
                        if block == crate::invoices::BlockOutcome::Lifted =>
                    {
                        "overdue block lifted"
                    }
                    crate::release::SweepOutcome::NothingDue if renewed > 0 => "plan renewed",
                    crate::release::SweepOutcome::NothingDue if reminded > 0 => "invoice reminded",
                    crate::release::SweepOutcome::NothingDue if expired => "credit grants expired",
                    crate::release::SweepOutcome::NothingDue
                        if card == crate::cards::ExpiryOutcome::Noticed =>
                    {
                        "card expiry noticed"
                    }
                    other => other.as_str(),
                })
            }
            _ => Err(JobError::NotThisWorker {
                kind: match job {
                    Job::Tax { .. } => "tax",
                    _ => "statement",
                },
            }),
        }
    }

    /// Process one batch of queue messages; returns the ones to retry.
    pub async fn process_batch(&self, messages: Vec<Message>) -> Vec<Failure> {
        let results: Vec<Option<Failure>> = stream::iter(messages)
            .map(|message| async move {
                let job = match Job::parse(&message.body) {
                    Ok(job) => job,
                    Err(reason) => {
                        error!(message_id = %message.id, %reason, "dropping a message that is not a job");
                        messaging::metrics::count(messaging::metrics::MESSAGES_DROPPED, 1);
                        return None;
                    }
                };
                // Each job in its own task: a panic (a bug) fails its own message only.
                let workers = self.clone();
                let task_job = job.clone();
                let result = match tokio::spawn(async move { workers.handle(&task_job).await }).await
                {
                    Ok(result) => result,
                    Err(panic) => Err(JobError::Panicked(panic)),
                };
                match result {
                    Ok(outcome) => {
                        info!(account_id = %job.account_id(), %outcome, "job done");
                        None
                    }
                    Err(error) if error.is_permanent() => {
                        error!(account_id = %job.account_id(), %error, "job failed for good; dropped");
                        messaging::metrics::count(messaging::metrics::MESSAGES_DROPPED, 1);
                        None
                    }
                    Err(error) => {
                        warn!(account_id = %job.account_id(), %error, "job failed; retried later");
                        Some(Failure { message_id: message.id, reason: error.to_string() })
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }
}

/// How long a failed job waits before it is tried again.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// A failed job's message comes back after [`RETRY_AFTER`] instead of the queue's visibility
/// timeout (six times the function's, which the planner's long timeout makes 90 minutes), and
/// reaches the DLQ after the queue's `maxReceiveCount`.
pub const REDELIVERY: Redelivery =
    Redelivery { retry_after: Some(RETRY_AFTER), requeue_after_receives: None };
