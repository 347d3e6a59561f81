//! Invoices and statements as people see them, in a real browser (issue 17): a busy month
//! (500 calls, each with a sub-cent carrier surcharge, and 500 texts) rendered as the
//! invoice's print-ready page and as the statement email, opened in headless Chromium over
//! WebDriver (`e2e::browser`: Debian's chromium and chromium-driver, which `scripts/stack.sh
//! install` installs) on a desktop and an emulated phone. Screenshots go to `target/screenshots/` for review. What the browser laid out is
//! checked: nothing wider than a phone's screen (no sideways scrolling), the amounts people
//! need are on screen, and no debit reads `$0.00`.
//!
//! Fails loudly when Chromium is missing: the check is the browser's.

use chrono::{DateTime, Duration, Utc};
use e2e::browser::{screenshots_dir, Browser, Screen, DESKTOP, PHONE};
use ledger::memory::MemoryStore;
use ledger::{AccountId, Amount, BillingItem, LedgerStore, Month, NewAccount, Posting, SourceId};
use rust_decimal::Decimal;

/// What the browser laid out: the page's full width, the viewport's, and the text it shows.
struct Layout {
    scroll_width: u64,
    inner_width: u64,
    text: String,
}

/// Open `html` on `screen`, screenshot it, measure it.
async fn open(html: &str, name: &str, screen: Screen, label: &str) -> Layout {
    let dir = screenshots_dir();
    let page = dir.join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();
    let browser = Browser::start(screen).await;
    browser.open_file(&page).await;
    let png = dir.join(format!("{name}-{label}.png"));
    let bytes = browser.screenshot(&png).await;
    assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    assert!(bytes.len() > 8_000, "{} looks blank ({} bytes)", png.display(), bytes.len());
    let measured = browser
        .eval(
            "return { sw: document.documentElement.scrollWidth, iw: window.innerWidth, \
             text: document.body.innerText };",
        )
        .await;
    browser.close().await;
    Layout {
        scroll_width: measured["sw"].as_u64().unwrap(),
        inner_width: measured["iw"].as_u64().unwrap(),
        text: measured["text"].as_str().unwrap().to_string(),
    }
}

/// Screenshots at both widths and the layout checks; the text shown on the phone.
async fn check_in_browser(html: &str, name: &str) -> String {
    let phone = open(html, name, PHONE, "phone").await;
    assert_eq!(phone.inner_width, 390, "the phone's viewport");
    assert!(
        phone.scroll_width <= phone.inner_width,
        "{name}: {} px wide on a {} px phone screen (sideways scrolling)",
        phone.scroll_width,
        phone.inner_width
    );
    let desktop = open(html, name, DESKTOP, "desktop").await;
    assert!(desktop.scroll_width <= desktop.inner_width, "{name} on a desktop");
    // No debit reads as nothing (a balance of $0.00 may).
    for shown in [phone.text.as_str(), desktop.text.as_str()] {
        let mut rest = shown;
        while let Some(at) = rest.find("-$0.00") {
            let after = rest[at + 6..].chars().next();
            assert!(
                after.is_some_and(|c| c.is_ascii_digit()),
                "{name} shows a debit of $0.00: …{}…",
                &rest[at.saturating_sub(60)..(at + 20).min(rest.len())]
            );
            rest = &rest[at + 6..];
        }
    }
    phone.text
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A postpaid account's busy November: 500 calls of 4.25 cents each with a $0.0025 carrier
/// surcharge, 500 texts, a number, the plan fee, October's tax and a payment.
async fn busy_month() -> (MemoryStore, AccountId, Month) {
    let store = MemoryStore::new();
    let id = AccountId::parse("ringoffice").unwrap();
    let limit = Some(Amount::new(Decimal::from(500)).unwrap());
    store
        .create_account(
            NewAccount { id: id.clone(), credit_limit_usd: limit },
            at("2026-10-01T00:00:00Z"),
        )
        .await
        .unwrap();
    let november: Month = "2026-11".parse().unwrap();
    let usd = |cents: i64, scale: u32| Amount::new(Decimal::new(cents, scale)).unwrap();
    let start = november.start();
    let opening = vec![
        Posting::usage(
            SourceId::parse("tax:2026-10").unwrap(),
            BillingItem::SalesTax,
            usd(412, 2),
            start,
        )
        .unwrap(),
        Posting::usage(
            SourceId::parse("plan:2026-11-01").unwrap(),
            BillingItem::PlanFee,
            usd(29, 0),
            start,
        )
        .unwrap(),
        Posting::usage(
            SourceId::parse("use:num-1").unwrap(),
            BillingItem::PhoneNumber,
            usd(115, 2),
            start,
        )
        .unwrap(),
    ];
    store.post(&id, opening, start).await.unwrap();
    for batch in 0..10 {
        let when = start + Duration::days(1 + batch * 2);
        let mut postings = Vec::new();
        for n in 0..100 {
            let call = format!("use:call-{batch}-{n}");
            postings.push(
                Posting::usage(
                    SourceId::parse(format!("{call}#call")).unwrap(),
                    BillingItem::PhoneCall,
                    usd(425, 4),
                    when,
                )
                .unwrap(),
            );
            postings.push(
                Posting::usage(
                    SourceId::parse(format!("{call}#surcharge")).unwrap(),
                    BillingItem::CarrierSurcharge,
                    usd(25, 4),
                    when,
                )
                .unwrap(),
            );
        }
        postings.truncate(100);
        store.post(&id, postings, when).await.unwrap();
        let texts = (0..50)
            .map(|n| {
                Posting::usage(
                    SourceId::parse(format!("use:sms-{batch}-{n}")).unwrap(),
                    BillingItem::OutgoingSms,
                    usd(79, 4),
                    when,
                )
                .unwrap()
            })
            .collect();
        store.post(&id, texts, when).await.unwrap();
    }
    let paid = at("2026-11-20T12:00:00Z");
    let payment = Posting::credit(
        SourceId::parse("man:cheque-1").unwrap(),
        BillingItem::FundsAdded,
        usd(20, 0),
        paid,
    )
    .unwrap();
    store.post(&id, vec![payment], paid).await.unwrap();
    (store, id, november)
}

#[tokio::test]
async fn the_invoice_page_and_the_statement_email_read_well_on_a_desktop_and_a_phone() {
    let (store, id, november) = busy_month().await;
    let mut invoice =
        jobs::invoices::draft(&store, &store, &id, november, at("2026-12-01T00:05:00Z"))
            .await
            .unwrap();
    invoice.number = Some("RL-000042".into());
    let page = notifications::invoice::render_invoice(&invoice);
    let text = check_in_browser(&page.html, "invoice-RL-000042").await;
    let due = ledger::display_usd(invoice.amount_due_usd);
    assert!(text.contains("Invoice RL-000042"), "{text}");
    assert!(text.contains(&due), "the amount due {due} is on screen: {text}");
    assert!(text.contains("Carrier surcharge"), "{text}");

    let last_day = november.next().first_day().pred_opt().unwrap();
    let statement = ledger::statement::statement_for(&store, &id, november.first_day(), last_day)
        .await
        .unwrap();
    assert!(statement.lines.len() > 1_000, "a busy month");
    let email = notifications::statement::render_statement(&statement, None);
    let text = check_in_browser(&email.html, "statement-2026-11").await;
    assert!(text.contains("Carrier surcharge"), "{text}");
    assert!(
        email.html.len() < 80_000,
        "the email body sums the month up ({} bytes); every line is in the CSV",
        email.html.len()
    );
}
