//! One module per command group; [`run`] is the only place a command is matched.

mod accounts;
mod jobs;
mod reports;
mod serve;
mod usage;

use crate::cli::{Cli, Command};
use crate::wiring::CliResult;

pub async fn run(cli: Cli) -> CliResult {
    let Cli { store, command } = cli;
    match command {
        Command::Serve(args) => serve::serve(&store, args).await,
        Command::Token(args) => serve::token(&store, args),
        Command::Demo(args) => crate::demo::run(&store, args).await,
        Command::DemoPostpaid(args) => crate::demo::postpaid::run(&store, args).await,
        Command::CreateAccount { account, credit_limit_usd } => {
            accounts::create(&store, account, credit_limit_usd).await
        }
        Command::AcceptTerms { account, by, terms_version } => {
            accounts::accept_terms(&store, &account, by, terms_version).await
        }
        Command::Show { account } => accounts::show(&store, &account).await,
        Command::Credit(posting) => accounts::credit(&store, posting).await,
        Command::Debit { posting, purchase } => accounts::debit(&store, posting, purchase).await,
        Command::Ingest { files, rate_cards } => usage::ingest(&store, &files, &rate_cards).await,
        Command::Tax { month, tax } => jobs::tax(&store, month, &tax).await,
        Command::Statements { cadence, outbox_dir } => {
            jobs::statements(&store, cadence.into(), &outbox_dir).await
        }
        Command::Statement(args) => reports::statement(&store, args).await,
        Command::Activity { account, from, to, show } => {
            reports::activity(&store, &account, from, to, show.into()).await
        }
    }
}
