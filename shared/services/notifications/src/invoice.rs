//! Invoices by email (postpaid accounts, `documents::invoice`): the body sums the month up by
//! billing item and says what is due and by when; the attachments are the invoice as a
//! print-ready HTML page and the month's every entry as CSV (the statement's columns). Each
//! invoice is sent once, under the notice id `invoice:<YYYY-MM>`.

use documents::invoice::Invoice;
use ledger::docs::DocStore;
use ledger::statement::{item_label, Statement};
use ledger::{display_usd, EntryKind, LedgerStore};
use messaging::mail::{Attachment, Email, Mailer};
use rust_decimal::Decimal;
use tracing::{info, warn};

use crate::error::DeliveryError;
use crate::statement::statement_csv;
use crate::templates::{render_html, render_text, Block, Column, Rendered, Table, TableRow};
use crate::worker::{dedupe_addresses, deliver_once, Outcome};

/// The record kind of invoices in the delivery records (`DocKind::Notice`).
pub const INVOICE_KIND: &str = "invoice";
/// The record kind of overdue reminders.
pub const REMINDER_KIND: &str = "invoice_overdue";

/// Days past the due date on which an open invoice is reminded of (each once).
pub const REMINDER_DAYS: [i64; 3] = [1, 7, 14];

/// The notice id an invoice is sent under.
pub fn notice_id(invoice: &Invoice) -> String {
    format!("invoice:{}", invoice.month)
}

/// An amount as an invoice (and the billing page) shows it: to the cent, or exactly when that
/// would read `$0.00`.
pub fn shown_usd(value: Decimal) -> String {
    let shown = display_usd(value);
    if shown == "$0.00" && !value.is_zero() {
        format!("${}", value.abs().normalize())
    } else {
        shown
    }
}

/// Render an invoice. Pure: the same invoice always renders the same email.
pub fn render_invoice(invoice: &Invoice) -> Rendered {
    let number = invoice.number.as_deref().unwrap_or("(draft)");
    let month_words = invoice.month.first_day().format("%B %Y").to_string();
    let subject =
        format!("Invoice {number} for {month_words}: {} due", shown_usd(invoice.amount_due_usd));
    let facts = vec![
        ("Invoice", number.to_string()),
        ("Account", invoice.account_id.to_string()),
        ("Period", format!("{month_words} (UTC: the 1st 00:00 to the next 1st 00:00)")),
        ("Issued", invoice.issued_at.format("%-d %B %Y").to_string()),
        ("Due", invoice.due_on.format("%-d %B %Y").to_string()),
        ("Amount due", shown_usd(invoice.amount_due_usd)),
    ];
    let row = |label: String, amount: String, strong: bool, indent: bool| TableRow {
        cells: vec![label, amount],
        strong,
        indent,
    };
    let mut rows = vec![row(
        "Balance brought forward".into(),
        shown_usd(invoice.opening_balance_usd),
        true,
        false,
    )];
    for line in &invoice.lines {
        let sign = match line.kind {
            EntryKind::Debit => "-",
            EntryKind::Credit => "+",
        };
        let label = format!("{} ({})", item_label(line.item), line.count);
        rows.push(row(label, format!("{sign}{}", shown_usd(line.amount_usd)), false, true));
    }
    rows.push(row(
        "Balance at the end of the month".into(),
        shown_usd(invoice.closing_balance_usd),
        true,
        false,
    ));
    // Balance forward: what earlier invoices still ask for is part of the balance, not of
    // what this one asks for.
    if invoice.previous_unpaid_usd > rust_decimal::Decimal::ZERO {
        rows.push(row(
            "Still owed on earlier invoices (asked for there)".into(),
            shown_usd(invoice.previous_unpaid_usd),
            false,
            true,
        ));
        rows.push(row(
            "Amount due on this invoice".into(),
            shown_usd(invoice.amount_due_usd),
            true,
            false,
        ));
    }
    let summary = Table {
        columns: vec![Column { title: "", numeric: false }, Column { title: "", numeric: true }],
        rows,
    };
    let blocks = vec![
        Block::Heading(format!("Invoice {number}")),
        Block::Facts(facts),
        Block::Heading("Summary".into()),
        Block::Table(summary),
        Block::Paragraph(format!(
            "Please pay {} by {}. A pre-authorized card is charged on the issue date; payments \
             by e-transfer, EFT or cheque are applied to the oldest open invoice. Your balance \
             also moves with usage after the month ended, so it need not be zero once this \
             invoice is paid.",
            shown_usd(invoice.amount_due_usd),
            invoice.due_on.format("%-d %B %Y")
        )),
        Block::Paragraph(
            "Every entry of the month is in the attached CSV file, exactly; the attached HTML \
             page is this invoice ready to print."
                .into(),
        ),
    ];
    let footer = format!(
        "This is an automatic message from ringledger billing about account {}.",
        invoice.account_id
    );
    Rendered {
        text: render_text(&blocks, &footer),
        html: render_html(&subject, &blocks, &footer),
        subject,
    }
}

/// Email `invoice` (issued: it has its number) with the month's entries as CSV, once.
pub async fn send_invoice(
    docs: &dyn DocStore,
    ledger: &dyn LedgerStore,
    mailer: &dyn Mailer,
    from_address: &str,
    invoice: &Invoice,
) -> Result<Outcome, DeliveryError> {
    let account = &invoice.account_id;
    let to = billing_recipients(docs, account).await?;
    if to.is_empty() {
        warn!(account_id = %account, "the account has no billing contact for its invoice");
        return Ok(Outcome::NoRecipients);
    }
    let month = invoice.month;
    let last_day = month.next().first_day().pred_opt().expect("a month has a last day");
    let statement: Statement =
        ledger::statement::statement_for(ledger, account, month.first_day(), last_day)
            .await
            .map_err(|source| DeliveryError::Statement { source })?;
    let rendered = render_invoice(invoice);
    let number = invoice.number.clone().unwrap_or_else(|| format!("draft-{month}"));
    let email = Email {
        notice_id: notice_id(invoice),
        account_id: Some(account.to_string()),
        from: from_address.to_string(),
        to,
        subject: rendered.subject.clone(),
        text: rendered.text,
        html: rendered.html.clone(),
        attachments: vec![
            Attachment {
                filename: format!("invoice-{number}.html"),
                content_type: "text/html; charset=utf-8".into(),
                data: rendered.html.into_bytes(),
            },
            Attachment {
                filename: format!("invoice-{number}-entries.csv"),
                content_type: "text/csv; charset=utf-8".into(),
                data: statement_csv(&statement).into_bytes(),
            },
        ],
    };
    let outcome = deliver_once(docs, mailer, account, INVOICE_KIND, email).await?;
    info!(account_id = %account, ?outcome, "invoice handled");
    Ok(outcome)
}

/// The overdue reminder step `days` past the due date reaches: the latest of
/// [`REMINDER_DAYS`] not after it (`None` before the first).
pub fn reminder_step(days_overdue: i64) -> Option<i64> {
    REMINDER_DAYS.iter().copied().filter(|step| *step <= days_overdue).max()
}

/// Render the reminder of an overdue invoice. Pure.
pub fn render_reminder(invoice: &Invoice, days_overdue: i64) -> Rendered {
    let number = invoice.number.as_deref().unwrap_or("(draft)");
    let owed = shown_usd(invoice.outstanding_usd());
    let days = if days_overdue == 1 { "1 day".to_string() } else { format!("{days_overdue} days") };
    let subject = format!("Reminder: invoice {number} is {days} overdue ({owed} due)");
    let blocks = vec![
        Block::Heading(format!("Invoice {number} is overdue")),
        Block::Facts(vec![
            ("Invoice", number.to_string()),
            ("Account", invoice.account_id.to_string()),
            ("Due", invoice.due_on.format("%-d %B %Y").to_string()),
            ("Days overdue", days_overdue.to_string()),
            ("Still owed", owed.clone()),
        ]),
        Block::Paragraph(format!(
            "We have not received the full payment of invoice {number}. Please pay {owed} by \
             e-transfer, EFT or cheque quoting {number}, or update your card on the Billing \
             page. If you paid in the last few days, thank you: please ignore this reminder."
        )),
    ];
    let footer = format!(
        "This is an automatic message from ringledger billing about account {}.",
        invoice.account_id
    );
    Rendered {
        text: render_text(&blocks, &footer),
        html: render_html(&subject, &blocks, &footer),
        subject,
    }
}

/// Email the reminder of `invoice` for the step `today` reaches, once per invoice and step;
/// `None` when it is not overdue, paid, void or before the first step.
pub async fn remind(
    docs: &dyn DocStore,
    mailer: &dyn Mailer,
    from_address: &str,
    invoice: &Invoice,
    today: chrono::NaiveDate,
) -> Result<Option<Outcome>, DeliveryError> {
    if invoice.number.is_none() || invoice.outstanding_usd().is_zero() {
        return Ok(None);
    }
    let days = (today - invoice.due_on).num_days();
    let Some(step) = reminder_step(days) else { return Ok(None) };
    let account = &invoice.account_id;
    let to = billing_recipients(docs, account).await?;
    if to.is_empty() {
        return Ok(Some(Outcome::NoRecipients));
    }
    let rendered = render_reminder(invoice, days);
    let email = Email {
        notice_id: format!("invoice_overdue:{}:{step}", invoice.month),
        account_id: Some(account.to_string()),
        from: from_address.to_string(),
        to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        attachments: Vec::new(),
    };
    deliver_once(docs, mailer, account, REMINDER_KIND, email).await.map(Some)
}

/// Where an invoice's emails go: the account's billing contacts (and its agency's).
async fn billing_recipients(
    docs: &dyn DocStore,
    account: &ledger::AccountId,
) -> Result<Vec<String>, DeliveryError> {
    let contacts = crate::worker::load_contacts(docs, account).await?;
    Ok(dedupe_addresses(contacts.billing_emails.iter().map(String::as_str)))
}
