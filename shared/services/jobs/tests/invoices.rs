//! The monthly statement run invoices postpaid accounts: on the 1st it issues each postpaid
//! account's invoice for the month before and emails it (summary, print-ready page, every
//! entry as CSV), once; a redelivered job issues and sends nothing twice, and a prepaid account
//! gets no invoice.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use documents::invoice::{self, BillingMode};
use documents::profile::{self, Email};
use jobs::invoices::InvoiceOutcome;
use jobs::statements::{Cadence, StatementJob};
use ledger::memory::MemoryStore;
use ledger::{AccountId, Amount, BillingItem, LedgerStore, Month, NewAccount, Posting, SourceId};
use messaging::mail::{MailError, Mailer};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

#[derive(Default)]
struct RecordingMailer(Mutex<Vec<messaging::mail::Email>>);

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, email: &messaging::mail::Email) -> Result<String, MailError> {
        let mut sent = self.0.lock().unwrap();
        sent.push(email.clone());
        Ok(format!("m-{}", sent.len()))
    }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

async fn account(store: &MemoryStore, name: &str, mode: BillingMode) -> AccountId {
    let id = AccountId::parse(name).unwrap();
    let limit = Some(Amount::new(dec!(100)).unwrap());
    store
        .create_account(
            NewAccount { id: id.clone(), credit_limit_usd: limit },
            at("2026-10-20T00:00:00Z"),
        )
        .await
        .unwrap();
    let mut p = profile::Profile {
        billing_emails: vec![Email::try_from(format!("billing@{name}.example")).unwrap()],
        ..Default::default()
    };
    p.billing_mode = mode;
    profile::store(store, &id, &p).await.unwrap();
    for (n, (day, value)) in [
        ("2026-10-31T23:59:59Z", dec!(1)),
        ("2026-11-03T10:00:00Z", dec!(7.5)),
        ("2026-11-30T23:00:00Z", dec!(0.0025)),
    ]
    .into_iter()
    .enumerate()
    {
        let posting = Posting::usage(
            SourceId::parse(format!("use:e{n}#call")).unwrap(),
            BillingItem::PhoneCall,
            Amount::new(value).unwrap(),
            at(day),
        )
        .unwrap();
        store.post(&id, vec![posting], at(day)).await.unwrap();
    }
    id
}

#[tokio::test]
async fn the_first_of_the_month_invoices_postpaid_accounts_once_and_prepaid_ones_not_at_all() {
    let store = Arc::new(MemoryStore::new());
    let mailer = Arc::new(RecordingMailer::default());
    let job = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: mailer.clone(),
        from_address: "billing@ringledger.example".into(),
    };
    let postpaid = account(&store, "later", BillingMode::Postpaid).await;
    let prepaid = account(&store, "now", BillingMode::Prepaid).await;
    let run_at = at("2026-12-01T00:05:00Z");
    let (from, to) = Cadence::Monthly.previous_period(run_at.date_naive());
    assert_eq!(
        (from, to),
        (
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
        )
    );
    for _ in 0..2 {
        // The scheduled run, and its redelivery.
        job.scheduled(&postpaid, Cadence::Monthly, from, to, run_at).await.unwrap();
        job.scheduled(&prepaid, Cadence::Monthly, from, to, run_at).await.unwrap();
    }
    let november: Month = "2026-11".parse().unwrap();
    let (issued, _) = invoice::load(&*store, &postpaid, november).await.unwrap().unwrap();
    assert_eq!(issued.number.as_deref(), Some("RL-000001"));
    // October's last second is not November's; the sub-cent call is.
    assert_eq!(issued.opening_balance_usd, dec!(-1));
    assert_eq!(issued.charges_usd, dec!(7.5025));
    assert_eq!(issued.closing_balance_usd, dec!(-8.5025));
    assert_eq!(issued.amount_due_usd, dec!(8.50), "due to the cent");
    assert!(invoice::load(&*store, &prepaid, november).await.unwrap().is_none());

    let sent = mailer.0.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        1,
        "one invoice email, once: {:?}",
        sent.iter().map(|e| &e.subject).collect::<Vec<_>>()
    );
    let email = &sent[0];
    assert_eq!(email.notice_id, "invoice:2026-11");
    assert_eq!(email.to, vec!["billing@later.example".to_string()]);
    assert!(
        email.subject.contains("RL-000001") && email.subject.contains("$8.50"),
        "{}",
        email.subject
    );
    assert!(!email.text.contains("$0.00"), "no line shows $0.00:\n{}", email.text);
    let names: Vec<&str> = email.attachments.iter().map(|a| a.filename.as_str()).collect();
    assert_eq!(names, vec!["invoice-RL-000001.html", "invoice-RL-000001-entries.csv"]);
    let csv = String::from_utf8(email.attachments[1].data.clone()).unwrap();
    assert_eq!(csv.lines().count(), 3, "a header and November's two entries:\n{csv}");
    assert!(csv.contains("0.0025"), "the CSV has the exact amounts:\n{csv}");

    // Issued by hand afterwards (the operator's route uses the same job): nothing new.
    let again = job.invoice(&postpaid, november, run_at).await.unwrap();
    assert!(
        matches!(again, InvoiceOutcome::Issued { ref invoice, .. } if invoice.as_ref() == &issued)
    );
    assert_eq!(mailer.0.lock().unwrap().len(), 1);
    // A month that is not over is not invoiced.
    assert!(job.invoice(&postpaid, "2026-12".parse().unwrap(), run_at).await.is_err());
}

#[tokio::test]
async fn an_overdue_invoice_is_reminded_of_at_fixed_steps_once_each_until_paid() {
    let store = Arc::new(MemoryStore::new());
    let mailer = Arc::new(RecordingMailer::default());
    let job = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: mailer.clone(),
        from_address: "billing@ringledger.example".into(),
    };
    let id = account(&store, "late", BillingMode::Postpaid).await;
    let november: Month = "2026-11".parse().unwrap();
    job.invoice(&id, november, at("2026-12-01T00:05:00Z")).await.unwrap();
    mailer.0.lock().unwrap().clear();
    let (issued, _) = invoice::load(&*store, &id, november).await.unwrap().unwrap();
    assert_eq!(issued.due_on, NaiveDate::from_ymd_opt(2026, 12, 16).unwrap());
    let remind = |days: i64| {
        let store = store.clone();
        let mailer = mailer.clone();
        let id = id.clone();
        async move {
            let today = issued.due_on + chrono::Duration::days(days);
            jobs::invoices::remind(&*store, &*mailer, "billing@ringledger.example", &id, today)
                .await
                .unwrap()
        }
    };
    // Not overdue yet; then the first step, once however often the sweep runs.
    assert_eq!(remind(0).await, 0);
    assert_eq!(remind(1).await, 1);
    assert_eq!(remind(1).await, 0);
    assert_eq!(remind(3).await, 0);
    // A sweep that missed days sends the latest step reached only.
    assert_eq!(remind(15).await, 1);
    assert_eq!(remind(20).await, 0);
    let subjects: Vec<String> =
        mailer.0.lock().unwrap().iter().map(|e| e.subject.clone()).collect();
    assert_eq!(subjects.len(), 2);
    assert!(subjects[0].contains("1 day overdue") && subjects[0].contains("$8.50"), "{subjects:?}");
    assert!(subjects[1].contains("15 days overdue"), "{subjects:?}");
    // Paid: no more reminders.
    invoice::apply_payment(&*store, &id, "man:paid", dec!(8.50), at("2027-01-02T00:00:00Z"))
        .await
        .unwrap();
    let (paid, _) = invoice::load(&*store, &id, november).await.unwrap().unwrap();
    assert!(paid.outstanding_usd().is_zero());
    mailer.0.lock().unwrap().clear();
    let today = paid.due_on + chrono::Duration::days(30);
    let sent = jobs::invoices::remind(&*store, &*mailer, "billing@ringledger.example", &id, today)
        .await
        .unwrap();
    assert_eq!(sent, 0);
    assert!(mailer.0.lock().unwrap().is_empty());
}

/// Past the operator's days overdue the account is blocked as at its floor, whatever its
/// balance: status suspended, its own event, number purchases refused. A payment covering what
/// was overdue lifts it in the write that credits it; a partial one does not; re-runs change
/// nothing.
#[tokio::test]
async fn an_invoice_unpaid_past_the_limit_blocks_the_account_until_it_is_paid() {
    use jobs::invoices::{block_or_lift, BlockOutcome};
    use ledger::{AccountStatus, LedgerEventKind, PostingResult, Refusal};
    let store = Arc::new(MemoryStore::new());
    let mailer = Arc::new(RecordingMailer::default());
    let job = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: mailer.clone(),
        from_address: "billing@ringledger.example".into(),
    };
    let id = account(&store, "slow", BillingMode::Postpaid).await;
    let accept = Arc::new(|a: &mut ledger::Account| {
        a.terms = Some(ledger::TermsAcceptance {
            version: "2026-01".into(),
            accepted_by: "owner@slow.example".into(),
            accepted_at: at("2026-10-20T00:00:00Z"),
        });
        Ok(())
    });
    store.modify_account(&id, accept, at("2026-10-20T00:00:00Z")).await.unwrap();
    let november: Month = "2026-11".parse().unwrap();
    job.invoice(&id, november, at("2026-12-01T00:05:00Z")).await.unwrap();
    let (issued, _) = invoice::load(&*store, &id, november).await.unwrap().unwrap();
    let day = |days: i64| {
        (issued.due_on + chrono::Duration::days(days)).and_hms_opt(2, 0, 0).unwrap().and_utc()
    };
    let limit = i64::from(ledger::service::DEFAULT_BLOCK_AFTER_DAYS_OVERDUE);
    let before = store.account(&id).await.unwrap().unwrap();
    assert_eq!(before.status, AccountStatus::Active, "well above its credit limit");

    assert_eq!(
        block_or_lift(&*store, &*store, &id, day(limit - 1)).await.unwrap(),
        BlockOutcome::Unchanged
    );
    let outbox_before = store.pending_events(1_000).await.unwrap().len();
    assert_eq!(
        block_or_lift(&*store, &*store, &id, day(limit)).await.unwrap(),
        BlockOutcome::Blocked(november)
    );
    assert_eq!(
        block_or_lift(&*store, &*store, &id, day(limit)).await.unwrap(),
        BlockOutcome::Unchanged
    );
    let blocked = store.account(&id).await.unwrap().unwrap();
    assert_eq!(blocked.status, AccountStatus::Suspended);
    assert_eq!(blocked.balance_usd, before.balance_usd, "no money moved");
    let block = blocked.overdue_block.clone().unwrap();
    assert_eq!(block.until_paid_in_usd, dec!(8.50));
    let events = store.pending_events(1_000).await.unwrap();
    let kinds: Vec<&LedgerEventKind> = events[outbox_before..].iter().map(|e| &e.kind).collect();
    assert_eq!(
        kinds,
        [&LedgerEventKind::InvoiceOverdueBlock { month: november }],
        "not 'suspended'"
    );

    // A number purchase is refused, as at the floor.
    let purchase = Posting::purchase(
        SourceId::parse("use:buy-1#number").unwrap(),
        BillingItem::PhoneNumber,
        Amount::new(dec!(1.15)).unwrap(),
        day(limit),
    )
    .unwrap();
    let refused = store.post(&id, vec![purchase], day(limit)).await.unwrap();
    assert_eq!(
        refused.results,
        [PostingResult::Refused(Refusal::InvoiceOverdue { month: november })]
    );

    // Part of it paid: still blocked. The rest: lifted in the same write, service resumes.
    let pay = |key: &str, value| {
        Posting::credit(
            SourceId::parse(format!("man:{key}")).unwrap(),
            BillingItem::FundsAdded,
            Amount::new(value).unwrap(),
            day(limit + 1),
        )
        .unwrap()
    };
    let part = store.post(&id, vec![pay("a", dec!(5))], day(limit + 1)).await.unwrap();
    assert!(part.account.overdue_block.is_some());
    assert_eq!(part.account.status, AccountStatus::Suspended);
    let rest = store.post(&id, vec![pay("b", dec!(3.50))], day(limit + 1)).await.unwrap();
    assert_eq!(rest.account.overdue_block, None);
    assert_eq!(rest.account.status, AccountStatus::Active);
    assert!(
        rest.events.iter().any(|e| e.kind == LedgerEventKind::Reactivated),
        "{:?}",
        rest.events
    );

    // The invoice not yet applied: the sweep blocks again only for what is still owed (this
    // test applies nothing, so it would); applied, the sweep leaves it alone.
    invoice::apply_payment(&*store, &id, "man:a", dec!(5), day(limit + 1)).await.unwrap();
    invoice::apply_payment(&*store, &id, "man:b", dec!(3.50), day(limit + 1)).await.unwrap();
    assert_eq!(
        block_or_lift(&*store, &*store, &id, day(limit + 2)).await.unwrap(),
        BlockOutcome::Unchanged
    );
    assert!(store.account(&id).await.unwrap().unwrap().overdue_block.is_none());
}

/// A block the payments did not lift (a credit note, a void) is lifted by the sweep once no
/// invoice is overdue that long.
#[tokio::test]
async fn the_sweep_lifts_a_block_once_nothing_is_overdue_that_long() {
    use jobs::invoices::{block_or_lift, lift_if_settled, BlockOutcome};
    let store = Arc::new(MemoryStore::new());
    let job = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: Arc::new(RecordingMailer::default()),
        from_address: "billing@ringledger.example".into(),
    };
    let id = account(&store, "voided", BillingMode::Postpaid).await;
    let november: Month = "2026-11".parse().unwrap();
    job.invoice(&id, november, at("2026-12-01T00:05:00Z")).await.unwrap();
    let (issued, _) = invoice::load(&*store, &id, november).await.unwrap().unwrap();
    let late = (issued.due_on + chrono::Duration::days(40)).and_hms_opt(2, 0, 0).unwrap().and_utc();
    assert!(!lift_if_settled(&*store, &*store, &id, late).await.unwrap(), "not blocked");
    assert_eq!(
        block_or_lift(&*store, &*store, &id, late).await.unwrap(),
        BlockOutcome::Blocked(november)
    );
    assert!(!lift_if_settled(&*store, &*store, &id, late).await.unwrap(), "still owed");
    // Settled outside the ledger's payments (as a credit note does).
    invoice::apply_payment(&*store, &id, "cn:RL-000001-CN-01", dec!(8.50), late).await.unwrap();
    assert!(lift_if_settled(&*store, &*store, &id, late).await.unwrap());
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.overdue_block, None);
    assert_eq!(account.status, ledger::AccountStatus::Active);
}

/// Invoices carry the balance forward: a month left unpaid is on the next invoice's balance
/// but not asked for again, and one payment of everything owed settles both.
#[tokio::test]
async fn a_month_left_unpaid_is_not_billed_again_by_the_next_invoice() {
    let store = Arc::new(MemoryStore::new());
    let job = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: Arc::new(RecordingMailer::default()),
        from_address: "billing@ringledger.example".into(),
    };
    let id = account(&store, "skipper", BillingMode::Postpaid).await;
    let (november, december): (Month, Month) =
        ("2026-11".parse().unwrap(), "2026-12".parse().unwrap());
    job.invoice(&id, november, at("2026-12-01T00:05:00Z")).await.unwrap();
    let call = Posting::usage(
        SourceId::parse("use:dec-1#call").unwrap(),
        BillingItem::PhoneCall,
        Amount::new(dec!(5)).unwrap(),
        at("2026-12-10T10:00:00Z"),
    )
    .unwrap();
    store.post(&id, vec![call], at("2026-12-10T10:00:00Z")).await.unwrap();
    // An older month cannot be invoiced after a later one (it would bill again).
    job.invoice(&id, december, at("2027-01-01T00:05:00Z")).await.unwrap();
    let older = job.invoice(&id, "2026-10".parse().unwrap(), at("2027-01-01T00:06:00Z")).await;
    assert!(matches!(older, Err(jobs::tax::JobError::LaterMonthInvoiced { .. })), "{older:?}");
    let (dec_invoice, _) = invoice::load(&*store, &id, december).await.unwrap().unwrap();
    assert_eq!(dec_invoice.closing_balance_usd, dec!(-13.5025));
    assert_eq!(dec_invoice.previous_unpaid_usd, dec!(8.50), "November asks for its part");
    assert_eq!(dec_invoice.amount_due_usd, dec!(5.00), "December's own charges only");
    // One payment of all that is owed pays both, oldest first, to the cent.
    let applied =
        invoice::apply_payment(&*store, &id, "man:all", dec!(13.50), at("2027-01-05T00:00:00Z"))
            .await
            .unwrap();
    assert_eq!(applied, vec![(november, dec!(8.50)), (december, dec!(5.00))]);
    for month in [november, december] {
        let (paid, _) = invoice::load(&*store, &id, month).await.unwrap().unwrap();
        assert!(paid.outstanding_usd().is_zero(), "{month}");
    }
}

/// A credit note corrects an issued invoice without changing it: it lowers what the invoice
/// asks for and credits the balance once (`cn:<number>`), numbered per invoice; the same
/// key answers the same note, and more than the invoice asked for is refused.
#[tokio::test]
async fn a_credit_note_lowers_the_invoice_and_credits_the_balance_once() {
    use documents::invoice::CreditNoteRequest;
    let store = Arc::new(MemoryStore::new());
    let job = StatementJob {
        ledger: store.clone(),
        docs: store.clone(),
        mailer: Arc::new(RecordingMailer::default()),
        from_address: "billing@ringledger.example".into(),
    };
    let id = account(&store, "credited", BillingMode::Postpaid).await;
    let november: Month = "2026-11".parse().unwrap();
    job.invoice(&id, november, at("2026-12-01T00:05:00Z")).await.unwrap();
    let request = |key: &str, amount| CreditNoteRequest {
        key: key.into(),
        amount_usd: amount,
        reason: "dropped calls on 3 November".into(),
        issued_by: "ops@ringledger.example".into(),
    };
    let now = at("2026-12-03T09:00:00Z");
    let before = store.account(&id).await.unwrap().unwrap().balance_usd;
    let (note, new) = jobs::invoices::credit_note(
        &*store,
        &*store,
        &id,
        november,
        &request("k1", dec!(2.50)),
        now,
    )
    .await
    .unwrap();
    assert!(new);
    assert_eq!(note.number, "RL-000001-CN-01");
    let (again, new) = jobs::invoices::credit_note(
        &*store,
        &*store,
        &id,
        november,
        &request("k1", dec!(2.50)),
        now,
    )
    .await
    .unwrap();
    assert!(!new, "the same key answers the same note");
    assert_eq!(again.number, note.number);
    let reused =
        jobs::invoices::credit_note(&*store, &*store, &id, november, &request("k1", dec!(3)), now)
            .await;
    assert!(reused.is_err(), "another amount under the key");
    let too_much = jobs::invoices::credit_note(
        &*store,
        &*store,
        &id,
        november,
        &request("k2", dec!(6.01)),
        now,
    )
    .await;
    assert!(too_much.is_err(), "8.50 due, 2.50 credited: 6.00 at most");
    // A note whose credit a failure left unposted (written, then a crash): the daily sweep
    // posts it, once.
    let (second, _) =
        invoice::add_credit_note(&*store, &id, november, &request("k3", dec!(6.00)), now)
            .await
            .unwrap();
    assert_eq!(second.number, "RL-000001-CN-02");
    assert!(!second.credited);
    let midway = store.account(&id).await.unwrap().unwrap();
    assert_eq!(midway.balance_usd, before + dec!(2.50));
    assert_eq!(jobs::invoices::credit_notes_due(&*store, &*store, &id, now).await.unwrap(), 1);
    assert_eq!(jobs::invoices::credit_notes_due(&*store, &*store, &id, now).await.unwrap(), 0);
    let (stored, _) = invoice::load(&*store, &id, november).await.unwrap().unwrap();
    assert_eq!(stored.amount_due_usd, dec!(8.50), "the invoice itself is unchanged");
    assert_eq!(stored.outstanding_usd(), Decimal::ZERO);
    assert!(stored.credit_notes.iter().all(|n| n.credited));
    let after = store.account(&id).await.unwrap().unwrap();
    assert_eq!(after.balance_usd, before + dec!(8.50), "each note credited once");
    assert_eq!(after.paid_in_usd, dec!(8.50), "credit notes pay what is owed");
}
