//! Invoices: issued once, numbered without gaps even across crashes and races, paid oldest
//! first, each payment applied once.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use documents::invoice::{self, Invoice, InvoiceStatus, Numbers, PendingNumber};
use ledger::docs::{DocKind, DocStore};
use ledger::memory::MemoryStore;
use ledger::{AccountId, Month};
use rust_decimal::Decimal;

fn id(name: &str) -> AccountId {
    AccountId::parse(name).unwrap()
}

fn usd(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-12-01T00:10:00Z".parse().unwrap()
}

/// A draft owing `due` (its month had no entries; the balance was `-due` all month).
fn draft(account: &str, of: &str, due: &str) -> Invoice {
    Invoice::compute(&id(account), month(of), -usd(due), &[], Decimal::ZERO, now())
}

#[tokio::test]
async fn issuing_is_idempotent_and_numbers_follow_each_other() {
    let store = MemoryStore::new();
    let a = invoice::issue(&store, "RL", draft("acme", "2026-11", "10")).await.unwrap();
    let b = invoice::issue(&store, "RL", draft("beta", "2026-11", "5")).await.unwrap();
    assert_eq!(a.number.as_deref(), Some("RL-000001"));
    assert_eq!(b.number.as_deref(), Some("RL-000002"));
    // A re-run issues nothing new: the stored invoice comes back, its number unchanged, even
    // when the re-run computed different content.
    let again = invoice::issue(&store, "RL", draft("acme", "2026-11", "99")).await.unwrap();
    assert_eq!(again, a);
    let c = invoice::issue(&store, "RL", draft("acme", "2026-12", "1")).await.unwrap();
    assert_eq!(c.number.as_deref(), Some("RL-000003"));
    // Another issuer has its own sequence.
    let other = invoice::issue(&store, "XY", draft("gamma", "2026-11", "1")).await.unwrap();
    assert_eq!(other.number.as_deref(), Some("XY-000001"));
}

#[tokio::test]
async fn an_assignment_left_half_done_by_a_crash_is_finished_before_the_next_number() {
    let store = MemoryStore::new();
    invoice::issue(&store, "RL", draft("acme", "2026-10", "1")).await.unwrap();
    // A crash after taking number 2 for beta's draft, before writing it into the invoice.
    let body = serde_json::to_string(&draft("beta", "2026-10", "2")).unwrap();
    store.put_doc(&id("beta"), DocKind::Invoice, "2026-10", &body, None).await.unwrap();
    let numbers_account = id(invoice::NUMBERS_ACCOUNT);
    let counter = store.get_doc(&numbers_account, DocKind::Invoice, "RL").await.unwrap().unwrap();
    let taken = Numbers {
        next: 3,
        pending: Some(PendingNumber { number: 2, account_id: id("beta"), month: month("2026-10") }),
    };
    let body = serde_json::to_string(&taken).unwrap();
    store
        .put_doc(&numbers_account, DocKind::Invoice, "RL", &body, Some(counter.version))
        .await
        .unwrap();

    let gamma = invoice::issue(&store, "RL", draft("gamma", "2026-10", "3")).await.unwrap();
    assert_eq!(gamma.number.as_deref(), Some("RL-000003"));
    let (beta, _) = invoice::load(&store, &id("beta"), month("2026-10")).await.unwrap().unwrap();
    assert_eq!(beta.number.as_deref(), Some("RL-000002"), "the crashed assignment was finished");
}

#[tokio::test]
async fn racing_issuers_number_every_invoice_once_and_leave_no_gap() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let accounts: Vec<String> = (0..24).map(|n| format!("acct{n:02}")).collect();
    // Each invoice is issued by two racing workers (a redelivered job).
    let runs = accounts.iter().flat_map(|a| [a.clone(), a.clone()]).map(|a| {
        let store = store.clone();
        tokio::spawn(async move {
            invoice::issue(&*store, "RL", draft(&a, "2026-11", "1")).await.unwrap()
        })
    });
    let issued: Vec<Invoice> =
        futures::future::join_all(runs).await.into_iter().map(|r| r.unwrap()).collect();
    let mut numbers: Vec<String> = Vec::new();
    for account in &accounts {
        let (stored, _) =
            invoice::load(&*store, &id(account), month("2026-11")).await.unwrap().unwrap();
        let mine: Vec<&Invoice> = issued.iter().filter(|i| i.account_id == id(account)).collect();
        assert!(mine.iter().all(|i| i.number == stored.number), "both racers saw one number");
        numbers.push(stored.number.unwrap());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=24).map(|n| invoice::format_number("RL", n)).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn a_payment_pays_the_oldest_open_invoices_first_and_is_applied_once() {
    let store = MemoryStore::new();
    let acme = id("acme");
    invoice::issue(&store, "RL", draft("acme", "2026-10", "30")).await.unwrap();
    invoice::issue(&store, "RL", draft("acme", "2026-11", "50")).await.unwrap();

    let applied =
        invoice::apply_payment(&store, &acme, "man:cheque:1001", usd("40"), now()).await.unwrap();
    assert_eq!(applied, vec![(month("2026-10"), usd("30")), (month("2026-11"), usd("10"))]);
    // A retry of the same payment applies nothing more.
    let again =
        invoice::apply_payment(&store, &acme, "man:cheque:1001", usd("40"), now()).await.unwrap();
    assert_eq!(again, applied);

    let today = now().date_naive();
    let invoices = invoice::list(&store, &acme).await.unwrap();
    assert_eq!(invoices[0].status(today), InvoiceStatus::Paid);
    assert_eq!(invoices[1].status(today), InvoiceStatus::Open);
    assert_eq!(invoices[1].outstanding_usd(), usd("40"));
    let late = invoices[1].due_on + chrono::Duration::days(1);
    assert_eq!(invoices[1].status(late), InvoiceStatus::Overdue);

    // More than is owed: the rest stays on the balance, nothing is over-applied.
    let applied =
        invoice::apply_payment(&store, &acme, "man:eft:77", usd("100"), now()).await.unwrap();
    assert_eq!(applied, vec![(month("2026-11"), usd("40"))]);
    let invoices = invoice::list(&store, &acme).await.unwrap();
    assert!(invoices.iter().all(|i| i.status(late) == InvoiceStatus::Paid));
}
