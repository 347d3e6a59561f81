//! The scheduled jobs. A planner walks every account (the store's account registry, a few reads
//! per thousand accounts) and publishes one job message per account to a queue; workers take
//! the messages and do one account each. Every job is idempotent, so a re-run, an overlapping
//! run or a redelivered message changes nothing twice:
//!
//! - **Monthly sales tax** ([`tax`]): one tax entry per account and month, source id
//!   `tax:<YYYY-MM>`, from the month's totals by billing item (one or two reads), the service
//!   address's jurisdiction rate and the per-item taxability table.
//! - **Statements** ([`statements`]): scheduled (monthly or weekly, per the account's profile)
//!   and on demand; each is sent once per statement id.
//! - **Invoices** ([`invoices`]): on the monthly statement run, each postpaid account's
//!   invoice for the month before, numbered without gaps, issued and emailed once.
//! - **Number release** ([`release`]): daily, a suspended account's numbers move towards
//!   release, each step (notice 7 days before, 1 day before, due) raised once.

pub mod cards;
pub mod invoices;
pub mod job;
pub mod plan;
pub mod plans;
pub mod release;
pub mod statements;
pub mod tax;
pub mod worker;

pub use job::{Job, JobSink};
