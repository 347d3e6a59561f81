//! Job messages and where they are published.

use async_trait::async_trait;
use chrono::NaiveDate;
use ledger::AccountId;
use notifications::statement::StatementRequest;
use serde::{Deserialize, Serialize};

use crate::statements::Cadence;

/// One account's share of a job run: the body of one queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Tax the account's usage of `month` (`YYYY-MM`, UTC).
    Tax { account_id: AccountId, month: String },
    /// Send the account its scheduled statement for `from..=to` if its profile asks for
    /// statements at this cadence.
    ScheduledStatement { account_id: AccountId, cadence: Cadence, from: NaiveDate, to: NaiveDate },
    /// Send a statement someone asked for (the API).
    Statement(StatementRequest),
}

impl Job {
    pub fn account_id(&self) -> &AccountId {
        match self {
            Job::Tax { account_id, .. } | Job::ScheduledStatement { account_id, .. } => account_id,
            Job::Statement(request) => &request.account_id,
        }
    }

    pub fn parse(body: &str) -> Result<Job, String> {
        serde_json::from_str(body).map_err(|e| format!("not a job message: {e}"))
    }
}

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

/// Publishes to an SQS queue, ten messages per `SendMessageBatch` (SQS's limit), retrying the
/// entries SQS reports as failed.
pub struct SqsJobSink {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// How many times entries SQS refused are sent again before the publish fails.
const MAX_BATCH_RETRIES: u32 = 5;

#[async_trait]
impl JobSink for SqsJobSink {
    async fn publish(&self, jobs: &[Job]) -> Result<(), BoxError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        for chunk in jobs.chunks(10) {
            let mut pending: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(index, job)| {
                    Ok(SendMessageBatchRequestEntry::builder()
                        .id(format!("j{index}"))
                        .message_body(serde_json::to_string(job)?)
                        .build()?)
                })
                .collect::<Result<_, BoxError>>()?;
            for attempt in 0..=MAX_BATCH_RETRIES {
                let output = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await?;
                let failed: Vec<&str> = output.failed().iter().map(|f| f.id()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == MAX_BATCH_RETRIES {
                    return Err(format!("SQS refused {} job messages", failed.len()).into());
                }
                pending.retain(|entry| failed.contains(&entry.id()));
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }
}
