//! Job messages and where they are published.

use async_trait::async_trait;
use chrono::NaiveDate;
use ledger::{AccountId, Month};
use notifications::statement::StatementRequest;
use serde::{Deserialize, Serialize};

use crate::statements::Cadence;

/// One account's share of a job run: the body of one queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Tax the account's usage of `month` (UTC; `YYYY-MM` in the message).
    Tax { account_id: AccountId, month: Month },
    /// Send the account its scheduled statement for `from..=to` if its profile asks for
    /// statements at this cadence.
    ScheduledStatement { account_id: AccountId, cadence: Cadence, from: NaiveDate, to: NaiveDate },
    /// Send a statement someone asked for (the API).
    Statement(StatementRequest),
    /// The daily sweep of one account: remove what is left of expired credit grants, move a
    /// suspended account's number release on (see [`crate::release`]), and tell the contacts of
    /// a primary card expiring within a month ([`crate::cards`]).
    ReleaseSweep { account_id: AccountId },
    /// Issue a postpaid account's invoice of `month` (if it is not issued yet) and email it
    /// once (an operator's "issue now"; the monthly statement run does the same).
    Invoice { account_id: AccountId, month: Month },
}

impl Job {
    pub fn account_id(&self) -> &AccountId {
        match self {
            Job::Tax { account_id, .. }
            | Job::ScheduledStatement { account_id, .. }
            | Job::ReleaseSweep { account_id }
            | Job::Invoice { account_id, .. } => account_id,
            Job::Statement(request) => &request.account_id,
        }
    }

    pub fn parse(body: &str) -> Result<Job, NotAJob> {
        serde_json::from_str(body).map_err(NotAJob)
    }
}

/// A queue message that is not a [`Job`] (its month not `YYYY-MM` included): dropped, never
/// retried.
#[derive(Debug, thiserror::Error)]
#[error("not a job message: {0}")]
pub struct NotAJob(#[source] pub serde_json::Error);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where planned jobs go: the job's SQS queue in AWS, a channel or a vector locally.
#[async_trait]
pub trait JobSink: Send + Sync {
    /// Publish every job or fail; a failed call may have published some (jobs are idempotent).
    async fn publish(&self, jobs: &[Job]) -> Result<(), BoxError>;
}

/// Collects jobs in memory (tests, the local runner).
#[derive(Default)]
pub struct MemorySink(pub std::sync::Mutex<Vec<Job>>);

impl MemorySink {
    pub fn take(&self) -> Vec<Job> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl JobSink for MemorySink {
    async fn publish(&self, jobs: &[Job]) -> Result<(), BoxError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(jobs);
        Ok(())
    }
}

/// Publishes to a queue (the job's SQS queue in AWS), ten messages per batch, sending again
/// the messages the queue refused.
pub struct QueueJobs(pub std::sync::Arc<dyn messaging::queue::QueueSender>);

/// How many times messages the queue refused are sent again before the publish fails.
const MAX_BATCH_RETRIES: u32 = 5;

#[async_trait]
impl JobSink for QueueJobs {
    async fn publish(&self, jobs: &[Job]) -> Result<(), BoxError> {
        use messaging::queue::{Outgoing, MAX_BATCH};
        for chunk in jobs.chunks(MAX_BATCH) {
            let mut pending: Vec<Outgoing> = chunk
                .iter()
                .map(|job| Ok(Outgoing::new(serde_json::to_string(job)?)))
                .collect::<Result<_, BoxError>>()?;
            for attempt in 0..=MAX_BATCH_RETRIES {
                let results = self.0.send_batch(&pending).await;
                let mut refused = Vec::new();
                let mut last_error = None;
                for (message, result) in pending.into_iter().zip(results) {
                    if let Err(error) = result {
                        refused.push(message);
                        last_error = Some(error);
                    }
                }
                let Some(error) = last_error else { break };
                if attempt == MAX_BATCH_RETRIES {
                    return Err(format!(
                        "the queue refused {} job messages: {error}",
                        refused.len()
                    )
                    .into());
                }
                pending = refused;
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }
}
