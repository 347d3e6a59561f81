//! Notices: what the billing system tells a customer by email (through the mailer port of
//! `messaging::mail`; the SES and `.eml` adapters are in `ringledger-mailers`).
//!
//! - [`notice`]: the notice type, with a stable id per notice;
//! - [`templates`]: subject, plain text and HTML for every kind of notice;
//! - [`worker`]: the queue worker that sends each notice once per id;
//! - [`statement`]: statements by email (summary, line items, CSV attachment), once per request;
//! - [`invoice`]: postpaid invoices by email (summary, print-ready page, CSV), once each;
//! - [`feedback`]: the mail service's bounces and complaints, marking addresses undeliverable;
//! - [`error`]: why a notice or statement could not be handled now (the queue retries it).
//!
//! Critical notices also go by text message to the critical phone (`messaging::text`).

pub mod error;
pub mod feedback;
pub mod invoice;
pub mod notice;
pub mod statement;
pub mod templates;
pub mod worker;
