//! `ringledger activity` prints the API's activity CSV (same header, same cells), over the UTC
//! range [from, to) of posting times, like `GET /v1/activity.csv`.

use std::path::Path;
use std::process::Command;

use ledger::store::all_entries;
use ledger::{AccountId, EntryQuery};
use store_sqlite::{Durability, SqliteStore};

/// Run the runner on `db` with nothing else from the environment; its standard output.
fn ringledger(db: &Path, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringledger"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("RINGLEDGER_")) {
        command.env_remove(name);
    }
    let output = command.args(args).env("RINGLEDGER_DB", db).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_activity_command_prints_the_apis_csv_over_from_included_to_excluded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ringledger.db");
    ringledger(&db, &["create-account", "acme"]);
    ringledger(&db, &["credit", "acme", "50", "--source", "pay-1", "--item", "funds_added"]);
    ringledger(&db, &["debit", "acme", "1.15", "--source", "=num,1", "--item", "phone_number"]);
    ringledger(&db, &["debit", "acme", "0.25", "--source", "sms-1", "--item", "outgoing_sms"]);

    let store = SqliteStore::open(&db, Durability::Normal).unwrap();
    let id = AccountId::parse("acme").unwrap();
    let entries = all_entries(&store, &id, EntryQuery::default()).await.unwrap();
    assert_eq!(entries.len(), 3);
    let csv = |entries: &[ledger::Entry]| {
        let rows: String = entries.iter().map(api::account::csv_row).collect();
        format!("{}{rows}", api::account::csv_header())
    };
    let printed = ringledger(&db, &["activity", "acme"]);
    assert_eq!(printed, csv(&entries));
    assert!(printed.starts_with(&api::account::CSV_COLUMNS.join(",")));
    // A source id that a spreadsheet would run as a formula is a quoted text cell.
    assert!(printed.contains(",\"'=num,1\","), "{printed}");

    let debits = ringledger(&db, &["activity", "acme", "--show", "debits"]);
    assert_eq!(debits, csv(&entries[1..]));
    // `from` is included and `to` excluded: the second entry alone.
    let (from, to) = (entries[1].posted_at.to_rfc3339(), entries[2].posted_at.to_rfc3339());
    let range = ringledger(&db, &["activity", "acme", "--from", &from, "--to", &to]);
    assert_eq!(range, csv(&entries[1..2]));
}
