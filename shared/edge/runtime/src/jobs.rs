//! The two scheduled-job functions. One function, two triggers each:
//!
//! - EventBridge Scheduler invokes it with a plan request: it publishes one job per account to
//!   its queue (`{"run": "plan"}` for the tax of the previous month, or with `"month":
//!   "2026-10"` to re-run a month; `{"run": "plan", "cadence": "monthly" | "weekly"}` for
//!   statements of the previous period, each sent only when the account's profile asks for
//!   that cadence);
//! - the queue's event source mapping invokes it with SQS batches: each job is worked once
//!   (`ReportBatchItemFailures`; a failed job comes back after a minute).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use jobs::job::QueueJobs;
use jobs::statements::{Cadence, StatementJob};
use jobs::tax::TaxJob;
use jobs::worker::{Workers, REDELIVERY};
use jobs::Job;
use lambda_runtime::{service_fn, LambdaEvent};
use serde::Deserialize;
use serde_json::{json, Value};
use sqs::LambdaBatch;

use crate::{env, telemetry, Aws, Error};

/// Which job a function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFunction {
    /// The monthly sales-tax run (the tax queue).
    Tax,
    /// Scheduled and on-demand statements (the statements queue).
    Statements,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    run: String,
    /// Tax: default the month before the current one (UTC).
    month: Option<ledger::Month>,
    /// Statements: `monthly` or `weekly`.
    cadence: Option<String>,
}

/// Why a scheduler payload is not a plan request this function runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not JSON of the request's shape (an unknown field, a month that is not `YYYY-MM`).
    #[error("expected {expected}: {reason}")]
    Unreadable { expected: &'static str, reason: String },
    #[error("unknown run {run:?}; expected {expected}")]
    UnknownRun { run: String, expected: &'static str },
    /// A field of the other job function, or a missing or unknown cadence.
    #[error("expected {expected}")]
    NotThisFunction { expected: &'static str },
}

/// What a plan request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Tax {
        month: ledger::Month,
    },
    Statements {
        cadence: Cadence,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    },
    /// The daily number-release sweep (the statements function's third schedule).
    ReleaseSweep,
}

impl Plan {
    /// Read a scheduler payload for `function` at `now`.
    pub fn parse(
        function: JobFunction,
        payload: Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Plan, PlanError> {
        let expected = match function {
            JobFunction::Tax => {
                r#"an SQS batch or {"run": "plan"} (optionally with "month": "YYYY-MM")"#
            }
            JobFunction::Statements => {
                r#"an SQS batch or {"run": "plan", "cadence": "monthly", "weekly" or "release"}"#
            }
        };
        let request: PlanRequest = serde_json::from_value(payload)
            .map_err(|e| PlanError::Unreadable { expected, reason: e.to_string() })?;
        if request.run != "plan" {
            return Err(PlanError::UnknownRun { run: request.run, expected });
        }
        match (function, request.month, request.cadence) {
            (JobFunction::Tax, month, None) => {
                let month = month.unwrap_or_else(|| ledger::Month::of(now).previous());
                Ok(Plan::Tax { month })
            }
            (JobFunction::Statements, None, Some(cadence)) if cadence == "release" => {
                Ok(Plan::ReleaseSweep)
            }
            (JobFunction::Statements, None, Some(cadence)) => {
                let cadence =
                    Cadence::parse(&cadence).ok_or(PlanError::NotThisFunction { expected })?;
                let (from, to) = cadence.previous_period(now.date_naive());
                Ok(Plan::Statements { cadence, from, to })
            }
            _ => Err(PlanError::NotThisFunction { expected }),
        }
    }

    /// The job of one account.
    fn job(&self, account_id: ledger::AccountId) -> Job {
        match self {
            Plan::Tax { month } => Job::Tax { account_id, month: *month },
            Plan::Statements { cadence, from, to } => {
                Job::ScheduledStatement { account_id, cadence: *cadence, from: *from, to: *to }
            }
            Plan::ReleaseSweep => Job::ReleaseSweep { account_id },
        }
    }

    fn summary(&self, accounts: u64, published: u64) -> Value {
        match self {
            Plan::Tax { month } => {
                json!({ "month": month, "accounts": accounts, "published": published })
            }
            Plan::Statements { cadence, from, to } => json!({
                "cadence": cadence.as_str(), "from": from, "to": to,
                "accounts": accounts, "published": published,
            }),
            Plan::ReleaseSweep => json!({
                "cadence": "release", "accounts": accounts, "published": published,
            }),
        }
    }
}

/// Serve a job function (see the module documentation).
pub async fn serve(function: JobFunction) -> Result<(), Error> {
    let aws = Aws::load().await;
    let store = aws.store().await?;
    let (queue, workers) = match function {
        JobFunction::Tax => (
            aws.queue(env::TAX_QUEUE_URL)?,
            Workers {
                tax: Some(TaxJob {
                    ledger: store.clone(),
                    docs: store.clone(),
                    table: Arc::new(tax::TaxTable::bundled()?),
                    taxability: Arc::new(tax::Taxability::bundled()?),
                }),
                statements: None,
            },
        ),
        JobFunction::Statements => {
            let (mailer, from_address) = aws.mailer()?;
            let statements =
                StatementJob { ledger: store.clone(), docs: store.clone(), mailer, from_address };
            (
                aws.queue(env::STATEMENTS_QUEUE_URL)?,
                Workers { tax: None, statements: Some(statements) },
            )
        }
    };
    let sink = QueueJobs(queue.clone());
    let (store, sink, workers, queue) = (&store, &sink, &workers, &queue);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let payload = event.payload;
        let answer = if payload.get("Records").is_some() {
            let batch = LambdaBatch::new(serde_json::from_value::<SqsEvent>(payload)?);
            let failures = workers.process_batch(batch.messages()).await;
            let verdicts = sqs::verdicts_of(&failures);
            let response = batch.settle(queue, &verdicts, REDELIVERY).await;
            serde_json::to_value(response)?
        } else {
            let plan = Plan::parse(function, payload, chrono::Utc::now())?;
            let report =
                jobs::plan::plan(&**store, sink, |account_id| Some(plan.job(account_id)), |_| {})
                    .await?;
            tracing::info!(plan = ?plan, accounts = report.accounts, published = report.published, "jobs planned");
            plan.summary(report.accounts, report.published)
        };
        telemetry::flush();
        Ok::<_, Error>(answer)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-12-01T00:05:00Z".parse().unwrap()
    }

    #[test]
    fn plan_requests_are_read_and_checked() {
        assert_eq!(
            Plan::parse(JobFunction::Tax, json!({"run": "plan"}), now()),
            Ok(Plan::Tax { month: "2026-11".parse().unwrap() })
        );
        assert_eq!(
            Plan::parse(JobFunction::Tax, json!({"run": "plan", "month": "2026-10"}), now()),
            Ok(Plan::Tax { month: "2026-10".parse().unwrap() })
        );
        assert!(Plan::parse(JobFunction::Tax, json!({"run": "plan", "month": "2026-13"}), now())
            .is_err());
        assert!(matches!(
            Plan::parse(JobFunction::Tax, json!({"run": "go"}), now()),
            Err(PlanError::UnknownRun { ref run, .. }) if run == "go"
        ));
        assert!(Plan::parse(JobFunction::Tax, json!({"run": "plan", "cadence": "weekly"}), now())
            .is_err());
        let Ok(Plan::Statements { cadence, from, to }) = Plan::parse(
            JobFunction::Statements,
            json!({"run": "plan", "cadence": "monthly"}),
            now(),
        ) else {
            panic!("a monthly statements plan")
        };
        assert_eq!(
            (cadence.as_str(), from.to_string(), to.to_string()),
            ("monthly", "2026-11-01".into(), "2026-11-30".into())
        );
        assert!(Plan::parse(JobFunction::Statements, json!({"run": "plan"}), now()).is_err());
        assert!(Plan::parse(
            JobFunction::Statements,
            json!({"run": "plan", "cadence": "daily"}),
            now()
        )
        .is_err());
        assert!(Plan::parse(
            JobFunction::Statements,
            json!({"run": "plan", "cadence": "weekly", "extra": 1}),
            now()
        )
        .is_err());
    }
}
