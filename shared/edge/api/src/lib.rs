//! HTTP routers. Each is an axum `Router`, served by `lambda_http` in its Lambda function and by
//! the local runner over TCP, so both speak exactly the same API.

pub mod account;
pub mod agency;
pub mod apigw;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authorization;
pub mod body;
pub mod error;
pub mod grants;
pub mod invoices;
pub mod limits;
pub mod openapi;
pub mod operator;
pub mod payments;
pub mod plans;
pub mod portal;
pub mod portal_sessions;
pub mod query;
pub mod refunds;
/// The billing profile lives in `documents`; re-exported for the routes.
pub use documents::profile;
pub mod state;
pub mod statements;
pub mod webhooks;
