//! `ringledger serve` configured only through the environment, as the README promises: its
//! scheduled tax run uses the operator's tax table and taxability from `RINGLEDGER_TAX_TABLE`
//! and `RINGLEDGER_TAXABILITY`, not the bundled samples.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, Duration as Days, TimeZone, Utc};

use ledger::store::all_entries;
use ledger::{
    AccountId, Amount, BillingItem, EntryQuery, LedgerStore, NewAccount, Posting, SourceId,
};
use rust_decimal::Decimal;
use store_sqlite::{Durability, SqliteStore};

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An account in New York City with $10.00 of calls and a $5.00 number last month.
async fn account_with_last_months_usage(db: &Path) -> (AccountId, String) {
    let store = SqliteStore::open(db, Durability::Normal).unwrap();
    let first_of_this_month = Utc::now().date_naive().with_day(1).unwrap();
    let last_month = (first_of_this_month - Days::days(1)).with_day(1).unwrap();
    let at = Utc.from_utc_datetime(&last_month.and_hms_opt(9, 0, 0).unwrap());
    let id = AccountId::parse("nyc").unwrap();
    store.create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, at).await.unwrap();
    let profile = serde_json::json!({
        "service_address": {
            "line1": "1 Main St", "city": "New York", "region": "NY",
            "postal_code": "10001", "country": "US"
        }
    });
    let profile: documents::profile::Profile = serde_json::from_value(profile).unwrap();
    documents::profile::store(&store, &id, &profile).await.unwrap();
    let usage = |source: &str, item, amount: &str| {
        Posting::usage(
            SourceId::parse(source).unwrap(),
            item,
            amount.parse::<Amount>().unwrap(),
            at,
        )
        .unwrap()
    };
    let postings = vec![
        usage("call-1", BillingItem::PhoneCall, "10"),
        usage("num-1", BillingItem::PhoneNumber, "5"),
    ];
    store.post(&id, postings, at).await.unwrap();
    (id, last_month.format("%Y-%m").to_string())
}

#[tokio::test]
async fn serves_scheduled_tax_uses_the_tables_named_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ringledger.db");
    let (id, month) = account_with_last_months_usage(&db).await;

    // The bundled samples tax both items at New York City's 8.875% ($1.33). The operator's
    // files say 10% for New York and that numbers are not taxed: $10.00 x 10% = $1.00. Each
    // file that did not reach the run gives another amount ($1.50 or $0.89).
    let table = dir.path().join("jurisdictions.csv");
    std::fs::write(
        &table,
        "country,region,city,rate_percent,effective_from,name\nUS,NY,,10,2020-01-01,Test New York\n",
    )
    .unwrap();
    let bundled = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/domain/tax/data/taxability.csv"),
    )
    .unwrap();
    assert!(bundled.contains("\nphone_number,true\n"), "the sample taxes numbers");
    let taxability = dir.path().join("taxability.csv");
    std::fs::write(&taxability, bundled.replace("\nphone_number,true\n", "\nphone_number,false\n"))
        .unwrap();

    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringledger"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("RINGLEDGER_")) {
        command.env_remove(name);
    }
    let server = command
        .arg("serve")
        .env("RINGLEDGER_DB", &db)
        .env("RINGLEDGER_ADDR", "127.0.0.1:0")
        .env("RINGLEDGER_OUTBOX_DIR", dir.path().join("outbox"))
        .env("RINGLEDGER_JWT_SECRET", "serve-environment-test")
        .env("RINGLEDGER_TAX_TABLE", &table)
        .env("RINGLEDGER_TAXABILITY", &taxability)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut server = Server(server);

    // The catch-up runs at start; wait for its entry.
    let store = SqliteStore::open(&db, Durability::Normal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let tax = loop {
        let entries = all_entries(&store, &id, EntryQuery::default()).await.unwrap();
        if let Some(tax) = entries.into_iter().find(|e| e.item == BillingItem::SalesTax) {
            break tax;
        }
        let log = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("serve exited ({status}) before taxing; its log:\n{}", log());
        }
        assert!(Instant::now() < deadline, "no tax entry within 60 s; serve's log:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tax.source_id.as_str(), format!("tax:{month}"));
    assert_eq!(tax.amount_usd.value(), Decimal::new(100, 2), "the operator's tables: {tax:?}");
}
