//! `ringledger ingest` counts refused number purchases in its summary (they are neither charged
//! nor failed, so they were visible only at warn level).

use std::path::Path;
use std::process::Command;

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

#[test]
fn the_ingest_summary_counts_a_refused_number_purchase() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ringledger.db");
    ringledger(&db, &["create-account", "acme"]);
    ringledger(&db, &["accept-terms", "acme", "--by", "admin@acme.example"]);
    // Occurring now, so the event is inside the worker's accepted window whenever this runs.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events = dir.path().join("events.jsonl");
    let purchase = format!(
        r#"{{"version": 1, "event_id": "evt-num-buy-1", "account_id": "acme", "occurred_at": "{now}", "type": "number_purchase", "data": {{"number": "+14155550100", "number_type": "local"}}}}"#
    );
    let sms = purchase
        .replace("evt-num-buy-1", "evt-sms-1")
        .replace("number_purchase", "sms_in")
        .replace(
            r#"{"number": "+14155550100", "number_type": "local"}"#,
            r#"{"from": "+14155550123", "to": "+14155550100", "segments": 1}"#,
        );
    std::fs::write(&events, format!("{purchase}\n{sms}\n")).unwrap();

    let printed = ringledger(&db, &["ingest", events.to_str().unwrap()]);
    assert!(
        printed.contains(
            "2 events: 2 charges applied, 0 already applied, 1 purchases refused (not charged), \
             0 failed"
        ),
        "{printed}"
    );
}
