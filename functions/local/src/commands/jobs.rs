//! The scheduled jobs run by hand: `tax` (a month's sales tax for every account) and
//! `statements` (the scheduled statements of the previous period).

use std::path::Path;

use chrono::Utc;
use jobs::statements::Cadence;
use jobs::Job;
use ledger::Month;

use crate::cli::{StoreArgs, TaxFiles};
use crate::jobs_local;
use crate::wiring::{open_store, CliResult};

pub async fn tax(args: &StoreArgs, month: Option<Month>, files: &TaxFiles) -> CliResult {
    let this_month = Month::of(Utc::now());
    let month = month.unwrap_or_else(|| this_month.previous());
    if month >= this_month {
        return Err(
            format!("{month} is not over yet; a month is taxed once it has ended (UTC)").into()
        );
    }
    let store = open_store(args).await?;
    // The tax job sends no email: the outbox folder is never written.
    let workers = jobs_local::workers(store.clone(), Path::new("outbox"), Some(files))
        .map_err(|e| e.to_string())?;
    println!("taxing {month} for every account:");
    let make = |account_id| Job::Tax { account_id, month };
    let counts =
        jobs_local::run_all(&*store, &workers, make, true).await.map_err(|e| e.to_string())?;
    for (outcome, count) in &counts {
        println!("  {outcome:<20} {count}");
    }
    if counts.contains_key("failed") {
        return Err("some accounts failed (listed above); run again to retry them".into());
    }
    Ok(())
}

pub async fn statements(args: &StoreArgs, cadence: Cadence, outbox_dir: &Path) -> CliResult {
    let store = open_store(args).await?;
    std::fs::create_dir_all(outbox_dir)?;
    let workers =
        jobs_local::workers(store.clone(), outbox_dir, None).map_err(|e| e.to_string())?;
    let (from, to) = cadence.previous_period(Utc::now().date_naive());
    println!("{} statements for {from} to {to}:", cadence.as_str());
    let make = |account_id| Job::ScheduledStatement { account_id, cadence, from, to };
    let counts =
        jobs_local::run_all(&*store, &workers, make, true).await.map_err(|e| e.to_string())?;
    for (outcome, count) in &counts {
        println!("  {outcome:<20} {count}");
    }
    Ok(())
}
