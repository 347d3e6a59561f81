//! The demo's summary: the balance over the day, the entries by billing item, the payments,
//! the recharge requests and what became of them, and the emails written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Duration, Timelike, Utc};
use documents::payment::{PaymentRecord, PaymentStatus, Trigger};
use ledger::{display_usd, AccountId, BillingItem, Entry, EntryKind, LedgerEvent, LedgerStore};
use rust_decimal::Decimal;

use super::client::DemoError;

/// How many pending outbox events are read at once (the outbox holds every account's).
pub const OUTBOX_SCAN: u32 = 10_000;
/// At most this many emails are listed one by one in the summary.
const EMAILS_LISTED: usize = 40;
/// Hours of the (UTC) day per line of the balance chart.
const BUCKET_HOURS: u32 = 2;

/// When each entry happened in the replayed day: a usage entry when its event occurred; a
/// payment (posted at the real time of the run) right after the entry before it.
pub fn simulated_clock(
    entries: &[Entry],
    day: DateTime<Utc>,
    setup_seq: u64,
) -> Vec<DateTime<Utc>> {
    let end = day + Duration::days(1) - Duration::microseconds(1);
    let mut now = day;
    entries
        .iter()
        .map(|e| {
            // The setup (its held call included) happened today, before the replayed day.
            if e.item != BillingItem::FundsAdded && e.seq > setup_seq {
                now = e.occurred_at.clamp(day, end).max(now);
            }
            now
        })
        .collect()
}

pub fn print_balance_over_day(
    entries: &[Entry],
    clock: &[DateTime<Utc>],
    day: DateTime<Utc>,
    setup_seq: u64,
) {
    let buckets = (24 / BUCKET_HOURS) as usize;
    let mut end: Vec<Option<Decimal>> = vec![None; buckets];
    let mut low: Vec<Option<Decimal>> = vec![None; buckets];
    let mut carried = Decimal::ZERO;
    for (entry, at) in entries.iter().zip(clock) {
        if entry.seq <= setup_seq {
            carried = entry.balance_after_usd;
            continue;
        }
        let b = (at.hour() / BUCKET_HOURS) as usize;
        end[b] = Some(entry.balance_after_usd);
        low[b] = Some(low[b].map_or(entry.balance_after_usd, |l| l.min(entry.balance_after_usd)));
    }
    let top = end.iter().flatten().copied().max().unwrap_or(carried).max(carried);
    let top = top.max(Decimal::ONE);
    let bar = |balance: Decimal| {
        let width = (balance.max(Decimal::ZERO) * Decimal::from(40) / top).round();
        "#".repeat(width.to_string().parse::<usize>().unwrap_or(0))
    };
    println!(
        "\nbalance over {} (UTC), at the end of every {BUCKET_HOURS} hours (entries' balance_after):",
        day.format("%Y-%m-%d")
    );
    println!("  after setup {:>9}  {:<40}", display_usd(carried), bar(carried));
    for b in 0..buckets {
        let balance = end[b].unwrap_or(carried);
        carried = balance;
        let low = low[b].map(|l| format!("low {:>8}", display_usd(l))).unwrap_or_default();
        println!(
            "  {:02}:00-{:02}:00 {:>9}  {:<40}  {low}",
            b as u32 * BUCKET_HOURS,
            (b as u32 + 1) * BUCKET_HOURS,
            display_usd(balance),
            bar(balance),
        );
    }
}

pub fn print_by_item(entries: &[Entry]) {
    let mut by_item: BTreeMap<&str, (usize, Decimal)> = BTreeMap::new();
    for entry in entries {
        let slot = by_item.entry(entry.item.as_str()).or_default();
        slot.0 += 1;
        slot.1 += entry.signed_amount_usd();
    }
    println!("\nentries by billing item (debits negative):");
    println!("  {:<22} {:>7} {:>11}  exact", "item", "entries", "total");
    let (mut count, mut sum) = (0, Decimal::ZERO);
    for (item, (n, total)) in &by_item {
        count += n;
        sum += total;
        println!("  {item:<22} {n:>7} {:>11}  {}", display_usd(*total), total.normalize());
    }
    println!("  {:<22} {count:>7} {:>11}  {}", "net", display_usd(sum), sum.normalize());
}

/// A recharge request the ledger raised for the demo account; the auto-recharge worker
/// settles it (the summary finds its credit by the request id, the credit's source id).
pub struct Recharge {
    pub request_id: String,
    pub raised_at_seq: u64,
    pub balance_when_raised: Decimal,
}

/// The credit that settled a recharge request (its source id is the request id) and the
/// payment behind it.
pub fn settlement<'a>(
    recharge: &Recharge,
    entries: &'a [Entry],
    payments: &'a [PaymentRecord],
) -> Option<(&'a Entry, Option<&'a PaymentRecord>)> {
    let credit = entries
        .iter()
        .find(|e| e.kind == EntryKind::Credit && e.source_id.as_str() == recharge.request_id)?;
    let payment = payments.iter().find(|p| p.entry_seq == Some(credit.seq));
    Some((credit, payment))
}

pub fn card_of(payment: &PaymentRecord) -> String {
    format!("{} {}", payment.card_brand, payment.card_last4)
}

/// What each payment was for: the admin's Pay Now, and every attempt of the auto-recharge
/// worker (`<request id>:a<attempt>:<card>`, declined ones too) by its request.
pub fn payment_notes(
    initial_payment: Option<String>,
    requests: &[Recharge],
    entries: &[Entry],
    payments: &[PaymentRecord],
) -> HashMap<String, String> {
    let mut notes: HashMap<String, String> = HashMap::new();
    if let Some(payment) = initial_payment {
        notes.insert(payment, "Pay Now by the admin".into());
    }
    for recharge in requests {
        let attempts = format!("{}:a", recharge.request_id);
        for p in payments {
            if p.trigger == Trigger::Auto && p.payment_id.starts_with(&attempts) {
                notes.insert(p.payment_id.clone(), format!("for {}", recharge.request_id));
            }
        }
        if let Some((_, Some(payment))) = settlement(recharge, entries, payments) {
            notes.insert(payment.payment_id.clone(), format!("settles {}", recharge.request_id));
        }
    }
    notes
}

pub fn print_payments(payments: &[PaymentRecord], notes: &HashMap<String, String>) {
    println!(
        "\npayments (GET /v1/payments, by created_at; trigger auto: charged by the \
         auto-recharge worker, primary card first, backup on decline):"
    );
    for p in payments {
        println!(
            "  {:>9}  {:<10} {:<4}  {:<9}  trigger {:<6}  {}",
            display_usd(p.amount_usd.value()),
            p.card_brand,
            p.card_last4,
            status_name(p.status),
            trigger_name(p.trigger),
            notes.get(&p.payment_id).map(String::as_str).unwrap_or(""),
        );
    }
}

/// A payment's status as the API spells it.
fn status_name(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Pending => "pending",
        PaymentStatus::Succeeded => "succeeded",
        PaymentStatus::Failed => "failed",
    }
}

/// A payment's trigger as the API spells it.
fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::Auto => "auto",
        Trigger::Plan => "plan",
    }
}

pub fn print_recharges(
    requests: &[Recharge],
    entries: &[Entry],
    clock: &[DateTime<Utc>],
    payments: &[PaymentRecord],
    account: &ledger::Account,
) {
    let settled: Vec<_> =
        requests.iter().filter_map(|r| settlement(r, entries, payments)).collect();
    let total: Decimal = settled.iter().map(|(credit, _)| credit.amount_usd.value()).sum();
    println!(
        "\nrecharge requests raised by the ledger: {}; the auto-recharge worker settled {} \
         for {} (each credited once, under its request id)",
        requests.len(),
        settled.len(),
        display_usd(total),
    );
    for r in requests {
        let at = entries
            .iter()
            .position(|e| e.seq == r.raised_at_seq)
            .map(|i| clock[i].format("%H:%M").to_string())
            .unwrap_or_else(|| "setup".into());
        let outcome = match settlement(r, entries, payments) {
            Some((credit, payment)) => format!(
                "charged {:>7} on {} (balance {})",
                display_usd(credit.amount_usd.value()),
                payment.map(card_of).unwrap_or_else(|| "?".into()),
                display_usd(credit.balance_after_usd),
            ),
            None if account.recharge_in_flight.as_deref() == Some(r.request_id.as_str()) => {
                "not settled: the worker tries again after its backoff".into()
            }
            None => "not settled: no longer needed".into(),
        };
        println!(
            "  {:<28} at {at:<5}  balance {:>7} -> {outcome}",
            r.request_id,
            display_usd(r.balance_when_raised),
        );
    }
}

/// The `.eml` files of a folder and when each was last written.
pub fn eml_files(dir: &Path) -> std::io::Result<HashMap<PathBuf, Option<SystemTime>>> {
    let mut files = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "eml") {
            files.insert(path, entry.metadata().and_then(|m| m.modified()).ok());
        }
    }
    Ok(files)
}

/// One email of the outbox, from its headers.
struct Email {
    file: String,
    subject: String,
    notice_id: String,
    written: Option<SystemTime>,
}

fn read_email(path: &Path, written: Option<SystemTime>) -> std::io::Result<Email> {
    let text = std::fs::read_to_string(path)?;
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = |name: &str| {
        head.split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    Ok(Email {
        file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        subject: header("Subject"),
        notice_id: header("X-Ringledger-Notice-Id"),
        written,
    })
}

/// What an email is, from its subject (the notification templates' wording).
fn email_kind(subject: &str) -> &'static str {
    const KINDS: [(&str, &str); 7] = [
        ("Auto-recharge receipt", "auto-recharge receipt"),
        ("Payment receipt", "payment receipt"),
        ("Action needed: auto-recharge", "auto-recharge failed"),
        ("Auto-recharge paused", "auto-recharge cap reached"),
        ("Low balance", "low balance"),
        ("Service suspended", "service suspended"),
        ("Service restored", "service restored"),
    ];
    KINDS.iter().find(|(prefix, _)| subject.starts_with(prefix)).map_or("other", |k| k.1)
}

/// The emails this run wrote (new or rewritten `.eml` files in the outbox folder).
pub fn print_emails(
    dir: &Path,
    before: &HashMap<PathBuf, Option<SystemTime>>,
    id: &AccountId,
) -> Result<(), DemoError> {
    let mut ours = Vec::new();
    let mut others = 0;
    for (path, written) in eml_files(dir)? {
        if before.get(&path) == Some(&written) {
            continue;
        }
        let email = read_email(&path, written)?;
        // Notice ids hold the account id between colons (`<account>:low_balance:<seq>`,
        // `receipt:rch:<account>:<seq>:...`).
        if email.notice_id.split(':').any(|part| part == id.as_str()) {
            ours.push(email);
        } else {
            others += 1;
        }
    }
    ours.sort_by(|a, b| (a.written, &a.file).cmp(&(b.written, &b.file)));
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for email in &ours {
        *kinds.entry(email_kind(&email.subject)).or_default() += 1;
    }
    let listed: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "\nemails the notification worker wrote for {id} in {}: {}{}",
        dir.display(),
        ours.len(),
        if listed.is_empty() { String::new() } else { format!(" ({})", listed.join(", ")) },
    );
    if others > 0 {
        println!(
            "  and {others} for other accounts (notices still pending in this store's outbox)"
        );
    }
    for email in ours.iter().take(EMAILS_LISTED) {
        println!("  {:<58} {}", email.subject, email.file);
    }
    if ours.len() > EMAILS_LISTED {
        println!("  ... and {} more", ours.len() - EMAILS_LISTED);
    }
    Ok(())
}

/// What the workers left in the outbox for the account (a recharge waiting for its backoff).
pub async fn print_still_pending(
    ledger: &dyn LedgerStore,
    id: &AccountId,
) -> Result<(), DemoError> {
    let pending: Vec<LedgerEvent> = ledger
        .pending_events(OUTBOX_SCAN)
        .await?
        .into_iter()
        .filter(|e| e.account_id == *id)
        .collect();
    if pending.is_empty() {
        println!("  the outbox holds nothing more for {id}");
        return Ok(());
    }
    println!("  still pending in the outbox for {id}: {}", pending.len());
    for event in &pending {
        println!("  {:<40} balance {}", event.id, display_usd(event.balance_usd));
    }
    Ok(())
}
