//! `ingest`: telephony usage events from files through the usage worker's batch path.

use std::path::PathBuf;

use ledger::LedgerStore;
use usage::worker::{process_batch, Message, MAX_EVENTS_PER_POST};

use crate::cli::{RateCardFile, StoreArgs};
use crate::wiring::{open_store, CliResult};

/// Every event of `files` as a worker message: a `.json` file is one event, a `.jsonl` file one
/// per non-empty line; the message id (`<file>:<line>`) says where a failure came from.
fn messages(files: &[PathBuf]) -> std::io::Result<Vec<Message>> {
    let mut messages = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)?;
        let is_lines = file.extension().is_some_and(|e| e == "jsonl");
        let bodies: Vec<&str> = if is_lines {
            text.lines().filter(|l| !l.trim().is_empty()).collect()
        } else {
            vec![text.as_str()]
        };
        for (line, body) in bodies.into_iter().enumerate() {
            let id = format!("{}:{}", file.display(), line + 1);
            messages.push(Message { id, body: body.to_string() });
        }
    }
    Ok(messages)
}

pub async fn ingest(args: &StoreArgs, files: &[PathBuf], rate_cards: &RateCardFile) -> CliResult {
    let cards = rate_cards.load()?;
    let messages = messages(files)?;
    let store: std::sync::Arc<dyn LedgerStore> = open_store(args).await?;
    let (mut applied, mut duplicates, mut failed, mut refused) = (0, 0, 0, 0);
    for chunk in messages.chunks(MAX_EVENTS_PER_POST) {
        let report = process_batch(store.clone(), &cards, None, chunk.to_vec()).await;
        applied += report.postings_applied;
        duplicates += report.postings_duplicate;
        refused += report.postings_refused;
        for failure in &report.failures {
            failed += 1;
            println!("failed {}: {}", failure.message_id, failure.reason);
        }
    }
    println!(
        "{} events: {applied} charges applied, {duplicates} already applied, \
         {refused} purchases refused (not charged), {failed} failed",
        messages.len()
    );
    Ok(())
}
