//! Statements by email: the rendering (summary and line items, as text and HTML), the CSV
//! attachment with every line, and sending each requested statement once.
//!
//! A [`StatementRequest`] is a queue message with a stable id chosen by its caller
//! (`statement:<cadence>:<from>:<to>` for scheduled ones, one derived from the
//! `Idempotency-Key` for on-demand ones). [`send_statement`] sends it once per id with the same
//! claim-and-record protocol as notices ([`crate::worker::deliver_once`]).
//!
//! What [`send_statement`] returns, and what the caller (an SQS worker) does with it:
//!
//! - `Ok(Outcome::Sent | AlreadySent | AlreadyFailed | Rejected | NoRecipients)`: done, delete
//!   the message;
//! - `Ok(Outcome::Invalid { reason })`: the request can never be served (an unknown account, a
//!   bad period, too many entries for one statement, too many recipients): recorded as failed
//!   under the request id and not retried; an API caller maps it to a 4xx;
//! - `Err(reason)`: transient (the store or the mail service is unavailable, another delivery
//!   holds the claim) or a bug (a broken ledger chain): retry, and after `maxReceiveCount` the
//!   message reaches the DLQ, where an operator looks at it.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use ledger::docs::{check_doc_id, DocStore};
use ledger::statement::{item_label, period_bounds, statement_for, Statement};
use ledger::{display_usd, AccountId, LedgerStore};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::DeliveryError;
use crate::templates::{render_html, render_text, Block, Column, Rendered, Table, TableRow};
use crate::worker::{
    claim_state, dedupe_addresses, deliver_once, refuse_once, Claim, Contacts, Outcome,
};
use messaging::mail::{Attachment, Email, Mailer};

/// The most line items the email itself lists; a busier period is summarised by day in the
/// email (a busy day is thousands of entries), and the CSV attachment has every one.
pub const MAX_EMAIL_LINES: usize = 100;
/// The most recipients one statement goes to (SES takes 50 per message).
pub const MAX_STATEMENT_RECIPIENTS: usize = 50;
/// The record kind of statements in the delivery records (`DocKind::Notice`).
pub const STATEMENT_KIND: &str = "statement";
/// The columns of [`statement_csv`], in order.
pub const CSV_COLUMNS: [&str; 9] = [
    "seq",
    "posted_at",
    "occurred_at",
    "kind",
    "item",
    "description",
    "amount_usd",
    "balance_after_usd",
    "source_id",
];

/// A request to email one statement: a queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRequest {
    /// Stable across redeliveries and chosen by the caller; the statement is sent once per id.
    pub id: String,
    pub account_id: AccountId,
    /// First UTC day of the period.
    pub from: NaiveDate,
    /// Last UTC day of the period (included).
    pub to: NaiveDate,
    /// Where to send it; `None` sends it to the account's billing contacts.
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
    pub requested_at: DateTime<Utc>,
}

/// What a statement shows of the account besides its id (from the account's profile).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountInfo {
    pub service_address: Option<ServiceAddress>,
}

/// The service address: the profile's own type.
pub use documents::profile::Address as ServiceAddress;

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Render a statement for email. Pure: the same statement always renders the same email.
/// Money is shown to the cent (half-up, [`ledger::display_usd`]); the CSV attachment has the
/// exact amounts. Times are UTC.
pub fn render_statement(statement: &Statement, account: Option<&AccountInfo>) -> Rendered {
    let period = period_words(statement.from, statement.to);
    let subject = format!("Your ringledger statement, {period}");
    let account_id = statement.account_id.as_str();
    let mut facts = vec![
        ("Account", account_id.to_string()),
        (
            "Period",
            format!(
                "{} to {}, UTC",
                statement.from.format("%-d %B %Y"),
                statement.to.format("%-d %B %Y")
            ),
        ),
    ];
    if let Some(address) = account.and_then(|a| a.service_address.as_ref()) {
        facts.push(("Service address", address.one_line()));
    }
    let mut blocks = vec![
        Block::Heading(format!("Your statement for {period}")),
        Block::Facts(facts),
        Block::Heading("Summary".into()),
        Block::Table(summary_table(statement)),
        Block::Heading(
            if statement.lines.len() > MAX_EMAIL_LINES { "Activity by day" } else { "Line items" }
                .into(),
        ),
    ];
    let count = statement.lines.len();
    if count == 0 {
        blocks
            .push(Block::Paragraph("There was no activity on the account in this period.".into()));
    } else if count <= MAX_EMAIL_LINES {
        blocks.push(Block::Table(lines_table(statement)));
    } else {
        blocks.push(Block::Paragraph(format!(
            "The period has {count} entries: this email sums them up by day. The attached CSV \
             file lists every one."
        )));
        blocks.push(Block::Table(days_table(statement)));
    }
    blocks.push(Block::Paragraph(
        "Amounts are in US dollars: credits are shown with +, debits with -. They are rounded to \
         the cent here; the attached CSV file has them exactly."
            .into(),
    ));
    let footer = format!(
        "This is an automatic message from ringledger billing about account {account_id}. \
         Statements cover the UTC days of their period; entries are dated when they were posted \
         to the balance."
    );
    Rendered {
        text: render_text(&blocks, &footer),
        html: render_html(&subject, &blocks, &footer),
        subject,
    }
}

fn summary_table(statement: &Statement) -> Table {
    let row = |label: String, amount: String| TableRow {
        cells: vec![label, amount],
        strong: false,
        indent: false,
    };
    let mut rows = vec![TableRow {
        strong: true,
        ..row(
            format!("Opening balance, {}", statement.from.format("%-d %b %Y")),
            display_usd(statement.opening_balance_usd),
        )
    }];
    rows.push(row("Card payments".into(), signed_usd(statement.card_payments_usd)));
    rows.push(row("Other credits".into(), signed_usd(statement.other_credits_usd)));
    rows.push(row("Usage".into(), signed_usd(-statement.usage_usd)));
    for (item, charge_usd) in &statement.usage_by_item {
        rows.push(TableRow {
            indent: true,
            ..row(item_label(*item).into(), signed_usd(-charge_usd))
        });
    }
    rows.push(row("Taxes".into(), signed_usd(-statement.taxes_usd)));
    rows.push(row("Other debits".into(), signed_usd(-statement.other_debits_usd)));
    rows.push(TableRow {
        strong: true,
        ..row(
            format!("Closing balance, {}", statement.to.format("%-d %b %Y")),
            display_usd(statement.closing_balance_usd),
        )
    });
    Table {
        columns: vec![Column { title: "", numeric: false }, Column { title: "", numeric: true }],
        rows,
    }
}

/// Each UTC day's entries: how many, their debits and credits, and the balance it ended on.
fn days_table(statement: &Statement) -> Table {
    let mut rows: Vec<TableRow> = Vec::new();
    type Day = (chrono::NaiveDate, usize, Decimal, Decimal, Decimal);
    let mut day: Option<Day> = None;
    let close = |rows: &mut Vec<TableRow>, (date, n, debits, credits, balance): Day| {
        rows.push(TableRow {
            cells: vec![
                date.format("%Y-%m-%d").to_string(),
                n.to_string(),
                signed_usd(debits),
                signed_usd(credits),
                display_usd(balance),
            ],
            strong: false,
            indent: false,
        })
    };
    for line in &statement.lines {
        let date = line.posted_at.date_naive();
        match day.as_mut() {
            Some(open) if open.0 == date => {
                open.1 += 1;
                if line.amount_usd.is_sign_negative() {
                    open.2 += line.amount_usd;
                } else {
                    open.3 += line.amount_usd;
                }
                open.4 = line.balance_after_usd;
            }
            _ => {
                if let Some(done) = day.take() {
                    close(&mut rows, done);
                }
                let (debit, credit) = if line.amount_usd.is_sign_negative() {
                    (line.amount_usd, Decimal::ZERO)
                } else {
                    (Decimal::ZERO, line.amount_usd)
                };
                day = Some((date, 1, debit, credit, line.balance_after_usd));
            }
        }
    }
    if let Some(done) = day {
        close(&mut rows, done);
    }
    Table {
        columns: vec![
            Column { title: "Date (UTC)", numeric: false },
            Column { title: "Entries", numeric: true },
            Column { title: "Debits", numeric: true },
            Column { title: "Credits", numeric: true },
            Column { title: "Balance", numeric: true },
        ],
        rows,
    }
}

fn lines_table(statement: &Statement) -> Table {
    let rows = statement
        .lines
        .iter()
        .map(|line| TableRow {
            cells: vec![
                line.posted_at.format("%Y-%m-%d %H:%M").to_string(),
                line.description.clone(),
                signed_usd(line.amount_usd),
                display_usd(line.balance_after_usd),
            ],
            strong: false,
            indent: false,
        })
        .collect();
    Table {
        columns: vec![
            Column { title: "Date (UTC)", numeric: false },
            Column { title: "Description", numeric: false },
            Column { title: "Amount", numeric: true },
            Column { title: "Balance", numeric: true },
        ],
        rows,
    }
}

/// An effect on the balance to the cent: "+$5.00", "-$1.20", "$0.00"; one that is not zero but
/// rounds to it is shown exactly ("-$0.0025"), so no debit ever reads as $0.00.
fn signed_usd(value: Decimal) -> String {
    let shown = display_usd(value);
    if shown == "$0.00" && !value.is_zero() {
        let sign = if value.is_sign_negative() { "-" } else { "+" };
        return format!("{sign}${}", value.abs().normalize());
    }
    if shown.starts_with('-') || shown == "$0.00" {
        shown
    } else {
        format!("+{shown}")
    }
}

/// "1–31 Oct 2026", "15 Sep – 14 Oct 2026", "15 Dec 2026 – 14 Jan 2027", "5 Oct 2026".
pub fn period_words(from: NaiveDate, to: NaiveDate) -> String {
    use chrono::Datelike;
    if from == to {
        from.format("%-d %b %Y").to_string()
    } else if (from.year(), from.month()) == (to.year(), to.month()) {
        format!("{}\u{2013}{}", from.format("%-d"), to.format("%-d %b %Y"))
    } else if from.year() == to.year() {
        format!("{} \u{2013} {}", from.format("%-d %b"), to.format("%-d %b %Y"))
    } else {
        format!("{} \u{2013} {}", from.format("%-d %b %Y"), to.format("%-d %b %Y"))
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// Every line of a statement as RFC 4180 CSV: a header row, CRLF line ends, fields quoted when
/// they hold a comma, a quote or a line break. Times are RFC 3339 UTC to the microsecond and
/// amounts exact decimals, as in the activity export; unlike it, `amount_usd` is signed
/// (credits positive, debits negative) so the column sums to the change of balance. A text
/// cell a spreadsheet would run as a formula is prefixed with `'`.
pub fn statement_csv(statement: &Statement) -> String {
    let mut csv = String::with_capacity(64 + statement.lines.len() * 160);
    csv.push_str(&CSV_COLUMNS.join(","));
    csv.push_str("\r\n");
    for line in &statement.lines {
        let fields = [
            line.seq.to_string(),
            line.posted_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            line.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            line.kind.as_str().to_string(),
            line.item.as_str().to_string(),
            line.description.clone(),
            line.amount_usd.normalize().to_string(),
            line.balance_after_usd.normalize().to_string(),
            line.source_id.clone(),
        ];
        let row: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        csv.push_str(&row.join(","));
        csv.push_str("\r\n");
    }
    csv
}

/// One CSV field: formula-safe, then quoted when RFC 4180 needs it.
///
/// A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula
/// by spreadsheets (CSV injection), unless it is a plain number such as `-1.2`; such a cell is
/// prefixed with `'`, which spreadsheets show as text.
pub fn csv_field(value: &str) -> String {
    let risky = value.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(value);
    let value = if risky { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// `-12.5`, `+3`, `0.0001`: an optional sign, digits, at most one point between digits.
fn is_plain_number(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// The attachment's file name: `statement-<account>-<from>-<to>.csv`.
pub fn csv_filename(statement: &Statement) -> String {
    format!("statement-{}-{}-{}.csv", statement.account_id.as_str(), statement.from, statement.to)
}

// ---------------------------------------------------------------------------------------------
// Sending once
// ---------------------------------------------------------------------------------------------

/// The billing contacts and the statement's account information, from one read of the profile.
async fn load_profile(
    docs: &dyn DocStore,
    account: &AccountId,
) -> Result<(Contacts, AccountInfo), DeliveryError> {
    let (contacts, profile) = crate::worker::load_contacts_and_profile(docs, account).await?;
    Ok((contacts, AccountInfo { service_address: profile.service_address }))
}

/// Build, render and email the statement of `request`, once per request id (see the module
/// documentation for what the result means).
#[tracing::instrument(
    skip_all,
    fields(statement_id = %request.id, account_id = %request.account_id, from = %request.from, to = %request.to),
    err
)]
pub async fn send_statement(
    docs: &dyn DocStore,
    ledger: &dyn LedgerStore,
    mailer: &dyn Mailer,
    from_address: &str,
    request: &StatementRequest,
) -> Result<Outcome, DeliveryError> {
    let account = &request.account_id;
    check_doc_id(&request.id)
        .map_err(|source| DeliveryError::BadStatementId { id: request.id.clone(), source })?;
    // A redelivered request that is done is answered from its record, without reading the
    // ledger; `deliver_once` checks the record again when it claims it.
    if let Claim::Done(outcome) = claim_state(docs, account, &request.id, Utc::now()).await? {
        return Ok(outcome);
    }
    let (contacts, info) = load_profile(docs, account).await?;
    let to = match &request.recipients {
        Some(recipients) => dedupe_addresses(recipients.iter().map(String::as_str)),
        None => dedupe_addresses(contacts.billing_emails.iter().map(String::as_str)),
    };
    let invalid = |reason: String| {
        warn!(%reason, "the statement request cannot be served; recorded, not retried");
        refuse_once(docs, account, &request.id, STATEMENT_KIND, to.clone(), reason)
    };
    if let Err(error) = period_bounds(request.from, request.to) {
        return invalid(error.to_string()).await;
    }
    if to.len() > MAX_STATEMENT_RECIPIENTS {
        return invalid(format!(
            "{} recipients; a statement goes to at most {MAX_STATEMENT_RECIPIENTS}",
            to.len()
        ))
        .await;
    }
    if to.is_empty() {
        warn!("the account has no billing contact for this statement; nothing to send");
        return Ok(Outcome::NoRecipients);
    }

    let statement = match statement_for(ledger, account, request.from, request.to).await {
        Ok(statement) => statement,
        Err(error) if error.is_bad_request() || error.is_not_found() => {
            return invalid(error.to_string()).await
        }
        Err(source) => return Err(DeliveryError::Statement { source }),
    };
    let rendered = render_statement(&statement, Some(&info));
    let email = Email {
        notice_id: request.id.clone(),
        account_id: Some(account.to_string()),
        from: from_address.to_string(),
        to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        attachments: vec![Attachment {
            filename: csv_filename(&statement),
            content_type: "text/csv; charset=utf-8".into(),
            data: statement_csv(&statement).into_bytes(),
        }],
    };
    let outcome = deliver_once(docs, mailer, account, STATEMENT_KIND, email).await?;
    info!(?outcome, lines = statement.lines.len(), "statement handled");
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formula_safe() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(csv_field("-1.2"), "-1.2");
        assert_eq!(csv_field("+3"), "+3");
        assert_eq!(csv_field("-0.0001"), "-0.0001");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1+1"), "'+1+1");
        assert_eq!(csv_field("-"), "'-");
        assert_eq!(csv_field("-1."), "'-1.");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("Refund: =1"), "Refund: =1");
    }

    #[test]
    fn periods_read_as_words() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(period_words(day("2026-10-01"), day("2026-10-31")), "1–31 Oct 2026");
        assert_eq!(period_words(day("2026-09-15"), day("2026-10-14")), "15 Sep – 14 Oct 2026");
        assert_eq!(period_words(day("2026-12-15"), day("2027-01-14")), "15 Dec 2026 – 14 Jan 2027");
        assert_eq!(period_words(day("2026-10-05"), day("2026-10-05")), "5 Oct 2026");
    }

    #[test]
    fn signed_amounts_show_their_direction() {
        assert_eq!(signed_usd(Decimal::new(5, 0)), "+$5.00");
        assert_eq!(signed_usd(Decimal::new(-12, 1)), "-$1.20");
        assert_eq!(signed_usd(Decimal::new(-4, 3)), "-$0.004");
        assert_eq!(signed_usd(Decimal::new(-25, 4)), "-$0.0025");
        assert_eq!(signed_usd(Decimal::new(3, 3)), "+$0.003");
        assert_eq!(signed_usd(Decimal::ZERO), "$0.00");
    }
}
