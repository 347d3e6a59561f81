//! `ringledger`: the local runner and ops CLI, on the embedded store by default.
//!
//! It carries the ledger's ops commands, the HTTP API (`serve`, with the auto-recharge and
//! notification workers in the background) and a `demo`. `cli` says what each command takes,
//! `wiring` opens what they work on, `commands` runs them.

mod cli;
mod commands;
mod demo;
mod jobs_local;
mod pipeline;
mod wiring;

use clap::Parser;

#[tokio::main]
async fn main() -> wiring::CliResult {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    commands::run(cli::Cli::parse()).await
}
