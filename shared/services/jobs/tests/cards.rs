//! The daily card-expiry look: the primary card expiring within a month is noticed once per
//! card and expiry, to its manager first; nothing for a card far from expiry or already expired.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use documents::profile::{self, CardRole, Email, StoredCard};
use jobs::cards::{expiry_notice, ExpiryOutcome};
use ledger::memory::MemoryStore;
use ledger::{AccountId, LedgerStore, NewAccount};
use messaging::mail::{MailError, Mailer};

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

fn card(id: &str, role: CardRole, (month, year): (u8, u16)) -> StoredCard {
    StoredCard {
        kind: Default::default(),
        verified: true,
        id: id.into(),
        brand: "Visa".into(),
        last4: "4242".into(),
        exp_month: month,
        exp_year: year,
        role,
        card_manager_email: Email::try_from("cards@acme.example".to_string()).unwrap(),
        added_at: Utc::now(),
    }
}

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

#[tokio::test]
async fn a_primary_expiring_within_a_month_is_noticed_once_to_its_manager_and_contacts() {
    let store = MemoryStore::new();
    let id = AccountId::parse("acme").unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, Utc::now())
        .await
        .unwrap();
    profile::update(&store, &id, |p| {
        p.billing_emails = vec![Email::try_from("billing@acme.example".to_string()).unwrap()];
        p.cards = vec![
            card("pm_old", CardRole::Primary, (12, 2026)),
            card("pm_backup", CardRole::Backup, (6, 2028)),
        ];
        Ok(())
    })
    .await
    .unwrap();
    let mailer = RecordingMailer::default();
    let look = |today| expiry_notice(&store, &mailer, "billing@ringledger.example", &id, today);
    // 31 December is the card's last day: nothing on 29 November, a notice from 1 December.
    assert_eq!(look(day("2026-11-29")).await.unwrap(), ExpiryOutcome::NothingDue);
    assert_eq!(look(day("2026-12-01")).await.unwrap(), ExpiryOutcome::Noticed);
    assert_eq!(look(day("2026-12-02")).await.unwrap(), ExpiryOutcome::Noticed);
    assert_eq!(look(day("2026-12-31")).await.unwrap(), ExpiryOutcome::Noticed);
    assert_eq!(look(day("2027-01-01")).await.unwrap(), ExpiryOutcome::NothingDue, "expired");
    let sent = mailer.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "once per card and expiry, however often the sweep looks");
    assert_eq!(sent[0].to, ["cards@acme.example", "billing@acme.example"]);
    assert!(
        sent[0].subject.contains("Visa 4242 expires at the end of 12/2026"),
        "{}",
        sent[0].subject
    );
    let text = sent[0].text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("use your backup card, Visa 4242"), "{text}");
}

#[tokio::test]
async fn an_expired_primary_is_skipped_for_a_backup_that_has_not_expired() {
    let profile = profile::Profile {
        cards: vec![
            card("pm_old", CardRole::Primary, (10, 2026)),
            card("pm_gone", CardRole::Backup, (1, 2026)),
            card("pm_new", CardRole::Backup, (6, 2028)),
        ],
        ..Default::default()
    };
    assert_eq!(profile.payable_card(day("2026-10-31")).map(|c| c.id.as_str()), Some("pm_old"));
    assert_eq!(profile.payable_card(day("2026-11-01")).map(|c| c.id.as_str()), Some("pm_new"));
    assert_eq!(profile.payable_card(day("2028-07-01")), None);
}
