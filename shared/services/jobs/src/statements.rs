//! Statements on a schedule (monthly for the previous month, weekly for the previous Monday to
//! Sunday) and on demand; each is sent once per statement id.

use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate};
use ledger::docs::DocStore;
use ledger::{AccountId, LedgerStore};
use messaging::mail::Mailer;
use notifications::statement::{send_statement, StatementRequest};
use notifications::worker::Outcome;
use serde::{Deserialize, Serialize};

use crate::tax::{load_profile, JobError};

/// How often an account wants statements: the profile's own type.
pub use documents::profile::StatementSchedule as Schedule;

/// The cadence a scheduled run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    Weekly,
    Monthly,
}

impl Cadence {
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::Weekly => "weekly",
            Cadence::Monthly => "monthly",
        }
    }

    pub fn parse(value: &str) -> Option<Cadence> {
        match value {
            "weekly" => Some(Cadence::Weekly),
            "monthly" => Some(Cadence::Monthly),
            _ => None,
        }
    }

    fn wanted_by(self, schedule: Schedule) -> bool {
        matches!(
            (self, schedule),
            (Cadence::Weekly, Schedule::Weekly) | (Cadence::Monthly, Schedule::Monthly)
        )
    }

    /// The last whole period before `today` (UTC): the previous calendar month, or the previous
    /// Monday-to-Sunday week. Both ends inclusive.
    pub fn previous_period(self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        match self {
            Cadence::Monthly => {
                let first_of_this = today.with_day(1).expect("day 1 exists");
                let last = first_of_this - Duration::days(1);
                (last.with_day(1).expect("day 1 exists"), last)
            }
            Cadence::Weekly => {
                let this_monday =
                    today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
                (this_monday - Duration::days(7), this_monday - Duration::days(1))
            }
        }
    }
}

/// The id of a scheduled statement: the same period is sent once, however often the run goes.
pub fn scheduled_statement_id(cadence: Cadence, from: NaiveDate, to: NaiveDate) -> String {
    format!("statement:{}:{from}:{to}", cadence.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementOutcome {
    /// The account's schedule is not this cadence: nothing to send.
    NotScheduled,
    Delivered(Outcome),
}

impl StatementOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            StatementOutcome::NotScheduled => "not_scheduled",
            StatementOutcome::Delivered(outcome) => outcome.as_str(),
        }
    }
}

/// Sends statements: the stores and the mailer.
#[derive(Clone)]
pub struct StatementJob {
    pub ledger: Arc<dyn LedgerStore>,
    pub docs: Arc<dyn DocStore>,
    pub mailer: Arc<dyn Mailer>,
    pub from_address: String,
}

impl StatementJob {
    /// A scheduled statement: sent when the account's profile asks for this cadence.
    #[tracing::instrument(skip(self), fields(account_id = %id), err)]
    pub async fn scheduled(
        &self,
        id: &AccountId,
        cadence: Cadence,
        from: NaiveDate,
        to: NaiveDate,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<StatementOutcome, JobError> {
        let profile = load_profile(&*self.docs, id).await?;
        let month = ledger::Month::of_date(from);
        let whole_month =
            from == month.first_day() && to.succ_opt() == Some(month.next().first_day());
        if whole_month && profile.billing_mode == documents::invoice::BillingMode::Postpaid {
            // A postpaid account's month ends in its invoice (and a statement if it asks).
            self.invoice(id, month, now).await?;
        }
        if !cadence.wanted_by(profile.statement_schedule) {
            return Ok(StatementOutcome::NotScheduled);
        }
        let request = StatementRequest {
            id: scheduled_statement_id(cadence, from, to),
            account_id: id.clone(),
            from,
            to,
            recipients: None,
            requested_at: now,
        };
        self.send(&request).await.map(StatementOutcome::Delivered)
    }

    /// Any statement request (on demand or scheduled), once per request id.
    pub async fn send(&self, request: &StatementRequest) -> Result<Outcome, JobError> {
        send_statement(&*self.docs, &*self.ledger, &*self.mailer, &self.from_address, request)
            .await
            .map_err(JobError::Delivery)
    }
}
