//! HTTP routers. Each is an axum `Router`, served by `lambda_http` in its Lambda function and by
//! the local runner over TCP, so both speak exactly the same API.

pub mod authorization;
pub mod error;
