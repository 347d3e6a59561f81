//! Reports: `activity` (the API's activity CSV) and `statement` (a statement for a date range,
//! optionally as CSV and emailed).

use std::io::Write;

use chrono::{DateTime, Utc};
use ledger::store::all_entries;
use ledger::{display_usd, AccountId, Entry, EntryQuery, Show};

use crate::cli::{StatementArgs, StoreArgs};
use crate::jobs_local;
use crate::wiring::{open_store, CliResult};

pub async fn activity(
    args: &StoreArgs,
    id: &AccountId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    show: Show,
) -> CliResult {
    let store = open_store(args).await?;
    let query = EntryQuery { from, to, show, ..Default::default() };
    let entries = all_entries(&*store, id, query).await?;
    let mut out = std::io::stdout().lock();
    write_activity_csv(&mut out, &entries)?;
    out.flush()?;
    Ok(())
}

/// The API's CSV (`GET /v1/activity.csv`): the same columns and the same cells, written by the
/// API's own functions, so a source id a spreadsheet would run as a formula is a text cell.
pub fn write_activity_csv(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    out.write_all(api::account::csv_header().as_bytes())?;
    for entry in entries {
        out.write_all(api::account::csv_row(entry).as_bytes())?;
    }
    Ok(())
}

pub async fn statement(args: &StoreArgs, statement_args: StatementArgs) -> CliResult {
    let StatementArgs { account: id, from, to, csv, send, recipient, outbox_dir } = statement_args;
    let store = open_store(args).await?;
    let statement = ledger::statement::statement_for(&*store, &id, from, to).await?;
    println!("statement {} {from} to {to}", statement.account_id);
    println!("  opening balance   {}", display_usd(statement.opening_balance_usd));
    println!("  card payments     {}", display_usd(statement.card_payments_usd));
    println!("  other credits     {}", display_usd(statement.other_credits_usd));
    for (item, total) in &statement.usage_by_item {
        println!("  {:<17} {}", item.as_str(), display_usd(-*total));
    }
    println!("  taxes             {}", display_usd(-statement.taxes_usd));
    println!("  other debits      {}", display_usd(-statement.other_debits_usd));
    println!("  closing balance   {}", display_usd(statement.closing_balance_usd));
    println!("  lines             {}", statement.lines.len());
    if let Some(path) = csv {
        std::fs::write(&path, notifications::statement::statement_csv(&statement))?;
        println!("CSV written to {}", path.display());
    }
    if send {
        std::fs::create_dir_all(&outbox_dir)?;
        let workers =
            jobs_local::workers(store.clone(), &outbox_dir, None).map_err(|e| e.to_string())?;
        let request = notifications::statement::StatementRequest {
            id: format!("statement:cli:{from}:{to}:{}", Utc::now().timestamp_micros()),
            account_id: id,
            from,
            to,
            recipients: (!recipient.is_empty()).then_some(recipient),
            requested_at: Utc::now(),
        };
        let outcome =
            workers.handle(&jobs::Job::Statement(request)).await.map_err(|e| e.to_string())?;
        println!("email: {outcome} (outbox: {})", outbox_dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use ledger::memory::MemoryStore;
    use ledger::store::all_entries;
    use ledger::{
        AccountId, Amount, BillingItem, EntryQuery, LedgerStore, NewAccount, Posting, SourceId,
    };

    use super::write_activity_csv;

    #[tokio::test]
    async fn the_activity_csv_turns_source_ids_a_spreadsheet_would_run_into_text() {
        let store = MemoryStore::new();
        let id = AccountId::parse("acme").unwrap();
        let now = Utc::now();
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, now)
            .await
            .unwrap();
        let sources =
            ["=HYPERLINK(\"http://x.example\")", "+1-2", "-2+3", "@SUM(A1)", "plain-1", "-12.5"];
        let postings = sources
            .iter()
            .map(|source| {
                let source = SourceId::parse(*source).unwrap();
                let amount = "1".parse::<Amount>().unwrap();
                Posting::credit(source, BillingItem::Adjustment, amount, now).unwrap()
            })
            .collect();
        store.post(&id, postings, now).await.unwrap();
        let entries = all_entries(&store, &id, EntryQuery::default()).await.unwrap();

        let mut out = Vec::new();
        write_activity_csv(&mut out, &entries).unwrap();
        let csv = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], api::account::CSV_COLUMNS.join(","));
        assert_eq!(lines.len(), 1 + sources.len(), "{csv}");
        assert!(csv.contains(",\"'=HYPERLINK(\"\"http://x.example\"\")\","), "{csv}");
        for guarded in ["'+1-2", "'-2+3", "'@SUM(A1)"] {
            assert!(csv.contains(&format!(",{guarded},")), "{guarded} in {csv}");
        }
        assert!(csv.contains(",plain-1,"), "an ordinary id is left alone: {csv}");
        assert!(csv.contains(",-12.5,"), "a plain number is no formula: {csv}");
        for line in &lines[1..] {
            let bare = line
                .split(',')
                .find(|cell| cell.starts_with(['=', '+', '-', '@']) && *cell != "-12.5");
            assert_eq!(bare, None, "no cell starts a formula: {line}");
        }
    }
}
