//! What each notice says: a subject, a plain-text part and an HTML part.
//!
//! A template is a list of [`Block`]s rendered twice, once as wrapped plain text and once as
//! HTML. Every character of text that reaches the HTML part goes through [`escape_html`] (the
//! fixed wording as well as the values), so no value can inject markup. Money is shown to the
//! cent with [`ledger::display_usd`] (half-up); times are UTC.

use chrono::{DateTime, Utc};
use ledger::{display_usd, AccountId, Amount, BillingItem, Refusal};
use rust_decimal::Decimal;

use crate::notice::{CardFailure, Notice, NoticeKind, PaymentTrigger};

/// Plain-text lines are wrapped at this many characters.
pub const TEXT_WIDTH: usize = 72;

/// A notice rendered for email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Render a notice. Pure: the same notice always renders the same email.
pub fn render(notice: &Notice) -> Rendered {
    let (subject, blocks) = content(notice);
    let footer = format!(
        "This is an automatic message from ringledger billing about account {account}, sent \
         to the account's billing contacts. Reference: {id}.",
        account = notice.account_id.as_str(),
        id = notice.id,
    );
    Rendered {
        text: render_text(&blocks, &footer),
        html: render_html(&subject, &blocks, &footer),
        subject,
    }
}

/// The text message (SMS) a critical notice also sends to the critical phone: failed
/// recharges and plan charges, a paused account, numbers about to be released. `None` for
/// every other notice. `bounced`: no billing address took the email (said in the text).
pub fn critical_text(notice: &Notice, bounced: bool) -> Option<String> {
    let account = notice.account_id.as_str();
    let usd = |amount: Decimal| display_usd(amount);
    let what = match &notice.kind {
        NoticeKind::RechargeFailed { amount_usd, next_attempt_at, .. } => match next_attempt_at {
            Some(next) => format!(
                "auto-recharge of {} for account {account} failed: every card declined. We \
                 try again {}. Update your card in Billing settings.",
                usd(amount_usd.value()),
                datetime(*next)
            ),
            None => format!(
                "auto-recharge of {} for account {account} failed and is now off. Add funds or \
                 update your card in Billing settings before the balance runs out.",
                usd(amount_usd.value())
            ),
        },
        NoticeKind::PlanChargeFailed { plan, amount_usd, next_attempt_at, .. } => {
            match next_attempt_at {
                Some(next) => format!(
                    "the {} charge for the {plan} plan of account {account} failed on every \
                     card. We try again {}. Update your card in Billing settings.",
                    usd(amount_usd.value()),
                    datetime(*next)
                ),
                None => format!(
                    "the {} {plan} plan fee of account {account} could not be charged to a \
                     card and was taken from your balance.",
                    usd(amount_usd.value())
                ),
            }
        }
        NoticeKind::Suspended { balance_usd } => format!(
            "account {account} is out of funds (balance {}): outgoing calls, texts and number \
             purchases are paused. Add funds in Billing settings.",
            usd(*balance_usd)
        ),
        NoticeKind::InvoiceOverdueBlock { month, .. } => format!(
            "account {account} is blocked: its invoice for {} is overdue. Outgoing calls, texts \
             and number purchases are paused until it is paid. Pay it in Billing settings.",
            month_name(*month)
        ),
        NoticeKind::NumbersReleaseWarning { release_at, days_left, .. } => format!(
            "the phone numbers of account {account} will be released on {} ({days_left} days) \
             unless funds are added. Add funds in Billing settings.",
            datetime(*release_at)
        ),
        NoticeKind::NumbersReleaseDue { .. } => format!(
            "the phone numbers of account {account} are being released: the account stayed out \
             of funds. Add funds in Billing settings to keep service."
        ),
        _ => return None,
    };
    let bounced = if bounced {
        " Our emails to your billing address bounced: update it in Billing settings."
    } else {
        ""
    };
    // The opt-out line is never cut: the message before it is (long plan names and ids).
    let footer = format!("{bounced} Reply STOP to opt out.");
    let room = messaging::text::MAX_TEXT_CHARS.saturating_sub(footer.chars().count());
    let head = format!("ringledger billing: {what}");
    let head = if head.chars().count() > room {
        let mut cut: String = head.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        head
    };
    Some(format!("{head}{footer}"))
}

/// One piece of a message. Everything in it is plain text; the HTML renderer escapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    Heading(String),
    Paragraph(String),
    /// Label and value pairs (amount, card, date, ...).
    Facts(Vec<(&'static str, String)>),
    List(Vec<String>),
    /// Rows of figures (a statement's summary and line items).
    Table(Table),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// Empty titles on every column: no header row.
    pub title: &'static str,
    /// Right-aligned and never wrapped (amounts).
    pub numeric: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRow {
    pub cells: Vec<String>,
    /// A total: bold in HTML, set off by a rule in text.
    pub strong: bool,
    /// A part of the row above (indented first cell).
    pub indent: bool,
}

fn content(notice: &Notice) -> (String, Vec<Block>) {
    let account = &notice.account_id;
    match &notice.kind {
        NoticeKind::PaymentReceipt {
            payment_id,
            amount_usd,
            card_brand,
            card_last4,
            balance_after_usd,
            trigger,
            paid_at,
        } => payment_receipt(
            account,
            payment_id,
            *amount_usd,
            &card(card_brand, card_last4),
            *balance_after_usd,
            *trigger,
            *paid_at,
        ),
        NoticeKind::RefundReceipt {
            payment_id,
            refund_id,
            amount_usd,
            card_brand,
            card_last4,
            reason,
            returned,
            failure_reason,
            balance_after_usd,
            refunded_at,
        } => refund_receipt(
            account,
            RefundFacts {
                payment_id,
                refund_id,
                amount_usd: *amount_usd,
                card: card(card_brand, card_last4),
                reason,
                returned: *returned,
                failure_reason: failure_reason.as_deref(),
                balance_after_usd: *balance_after_usd,
                refunded_at: *refunded_at,
            },
        ),
        NoticeKind::PaymentFailed { payment_id, amount_usd, card_brand, card_last4, reason } => {
            payment_failed(
                account,
                notice.raised_at,
                payment_id,
                *amount_usd,
                &card(card_brand, card_last4),
                reason,
            )
        }
        NoticeKind::Dispute {
            payment_id,
            dispute_id,
            stage,
            amount_usd,
            fee_usd,
            card_brand,
            card_last4,
            balance_after_usd,
        } => dispute(
            account,
            notice.raised_at,
            payment_id,
            dispute_id,
            stage,
            (*amount_usd, *fee_usd),
            &card(card_brand, card_last4),
            *balance_after_usd,
        ),
        NoticeKind::RechargeFailed {
            request_id,
            attempt,
            amount_usd,
            failures,
            next_attempt_at,
        } => recharge_failed(
            account,
            notice.raised_at,
            request_id,
            *attempt,
            *amount_usd,
            failures,
            *next_attempt_at,
        ),
        NoticeKind::PlanChargeFailed {
            plan,
            period_from,
            amount_usd,
            attempt,
            failures,
            next_attempt_at,
        } => plan_charge_failed(
            account,
            notice.raised_at,
            (plan, *period_from),
            *attempt,
            *amount_usd,
            failures,
            *next_attempt_at,
        ),
        NoticeKind::InvoicePaymentFailed {
            number,
            month,
            amount_usd,
            attempt,
            failures,
            next_attempt_at,
        } => invoice_payment_failed(
            account,
            notice.raised_at,
            (number, *month),
            *attempt,
            *amount_usd,
            failures,
            *next_attempt_at,
        ),
        NoticeKind::RechargeDailyCapReached { day, cap_usd, spent_usd } => {
            recharge_daily_cap_reached(account, notice.raised_at, *day, *cap_usd, *spent_usd)
        }
        NoticeKind::RechargeCapReached { month, cap_usd, spent_usd } => {
            recharge_cap_reached(account, notice.raised_at, *month, *cap_usd, *spent_usd)
        }
        NoticeKind::LowBalance { balance_usd } => {
            low_balance(account, notice.raised_at, *balance_usd)
        }
        NoticeKind::Suspended { balance_usd } => suspended(account, notice.raised_at, *balance_usd),
        NoticeKind::Reactivated { balance_usd } => {
            reactivated(account, notice.raised_at, *balance_usd)
        }
        NoticeKind::InvoiceOverdueBlock { month, balance_usd } => {
            invoice_overdue_block(account, notice.raised_at, *month, *balance_usd)
        }
        NoticeKind::NumbersReleaseWarning { release_at, days_left, balance_usd } => {
            numbers_release(account, *release_at, Some(*days_left), *balance_usd)
        }
        NoticeKind::NumbersReleaseDue { release_at, balance_usd } => {
            numbers_release(account, *release_at, None, *balance_usd)
        }
        NoticeKind::CardExpiring {
            card_brand, card_last4, exp_month, exp_year, backup, ..
        } => card_expiring(account, card_brand, card_last4, (*exp_month, *exp_year), backup),
        NoticeKind::PurchaseRefused { item, amount_usd, refusal, number, balance_usd } => {
            purchase_refused(
                account,
                notice.raised_at,
                *item,
                *amount_usd,
                refusal,
                number.as_deref(),
                *balance_usd,
            )
        }
    }
}

fn card_expiring(
    account: &AccountId,
    brand: &str,
    last4: &str,
    (month, year): (u8, u16),
    backup: &Option<String>,
) -> (String, Vec<Block>) {
    let card = format!("{brand} {last4}");
    let expiry = format!("{month:02}/{year}");
    let subject = format!("Your {card} expires at the end of {expiry}");
    let after = match backup {
        Some(backup) => format!(
            "After that, payments and automatic recharges use your backup card, {backup}, \
             until you update the primary card."
        ),
        None => "After that, automatic recharges and Pay Now cannot charge it, and the \
                 account has no backup card: when the balance runs out, service stops."
            .to_string(),
    };
    let blocks = vec![
        Block::Heading("Your card is about to expire".into()),
        Block::Paragraph(format!(
            "The primary card of account {}, {card}, expires at the end of {expiry}. {after}",
            account.as_str()
        )),
        Block::Facts(vec![
            ("Card", card.clone()),
            ("Expires", expiry),
            ("Backup card", backup.clone().unwrap_or_else(|| "none".into())),
        ]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Add the renewed or a new card under Payment methods on the Billing page and make \
             it the primary."
                .into(),
            "If you have already done so, you can ignore this message.".into(),
        ]),
    ];
    (subject, blocks)
}

fn purchase_refused(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    item: BillingItem,
    amount_usd: Amount,
    refusal: &Refusal,
    number: Option<&str>,
    balance_usd: Decimal,
) -> (String, Vec<Block>) {
    let price = display_usd(amount_usd.value());
    let balance = display_usd(balance_usd);
    let what = match (item, number) {
        (BillingItem::PhoneNumber, Some(number)) => format!("phone number {number}"),
        (BillingItem::PhoneNumber, None) => "a phone number".to_string(),
        (other, _) => format!("a purchase ({})", other.as_str()),
    };
    let (subject_reason, why, next_step) = match refusal {
        Refusal::InsufficientBalance { .. } => (
            "balance too low",
            format!("it costs {price}, and the balance of {balance} does not cover it"),
            "Add funds with Pay Now on the Billing page, then buy it again.",
        ),
        Refusal::TermsNotAccepted => (
            "terms of service not accepted",
            "the account's administrator has not accepted the terms of service yet".to_string(),
            "Ask the account's administrator to accept the terms of service, then buy it again.",
        ),
        Refusal::InvoiceOverdue { month } => (
            "invoice overdue",
            format!("the account's invoice for {} is overdue", month_name(*month)),
            "Pay the overdue invoice on the Billing page, then buy it again.",
        ),
    };
    let subject = format!("Purchase refused on account {}: {subject_reason}", account.as_str());
    let blocks = vec![
        Block::Heading("A purchase was refused".into()),
        Block::Paragraph(format!(
            "We did not buy {what} for account {}: {why}. Nothing was charged{}.",
            account.as_str(),
            if item == BillingItem::PhoneNumber {
                ", and the number is not kept for you"
            } else {
                ""
            }
        )),
        Block::Facts(vec![("Price", price), ("Balance", balance), ("Date", datetime(raised_at))]),
        Block::Heading("What to do next".into()),
        Block::List(vec![next_step.into()]),
    ];
    (subject, blocks)
}

fn payment_receipt(
    account: &AccountId,
    payment_id: &str,
    amount_usd: Amount,
    card: &str,
    balance_after_usd: Decimal,
    trigger: PaymentTrigger,
    paid_at: DateTime<Utc>,
) -> (String, Vec<Block>) {
    let amount = display_usd(amount_usd.value());
    let (subject, heading, kind, opening) = match trigger {
        PaymentTrigger::Manual => (
            format!("Payment receipt: {amount} added to your balance"),
            "Payment received",
            "One-time payment (Pay Now)",
            format!("Thank you. We charged {amount} to your {card} and added it to the balance of account {}.", account.as_str()),
        ),
        PaymentTrigger::Auto => (
            format!("Auto-recharge receipt: {amount} added to your balance"),
            "Auto-recharge payment received",
            "Auto-recharge",
            format!("Your balance fell below your auto-recharge threshold, so we charged {amount} to your {card} and added it to the balance of account {}.", account.as_str()),
        ),
        PaymentTrigger::Plan => (
            format!("Plan receipt: {amount} charged to your card"),
            "Plan payment received",
            "Plan fee (charged to the card)",
            format!("We charged {amount} to your {card} for the plan of account {}. The plan fee was paid by the card: your prepaid balance did not change.", account.as_str()),
        ),
    };
    let blocks = vec![
        Block::Heading(heading.into()),
        Block::Paragraph(opening),
        Block::Facts(vec![
            ("Amount", amount),
            ("Card", card.into()),
            ("Payment type", kind.into()),
            ("Date", datetime(paid_at)),
            ("Payment ID", payment_id.into()),
            ("New balance", display_usd(balance_after_usd)),
        ]),
        Block::Paragraph(
            "Keep this email for your records. Every payment is listed in the payment history on \
             the Billing page."
                .into(),
        ),
    ];
    (subject, blocks)
}

#[allow(clippy::too_many_arguments)]
fn dispute(
    account: &AccountId,
    at: DateTime<Utc>,
    payment_id: &str,
    dispute_id: &str,
    stage: &str,
    (amount_usd, fee_usd): (Amount, Decimal),
    card: &str,
    balance_after_usd: Decimal,
) -> (String, Vec<Block>) {
    let amount = display_usd(amount_usd.value());
    let fee = display_usd(fee_usd);
    let (subject, opening) = match stage {
        "won" => (
            format!("Dispute won: {amount} and the {fee} fee are back in your balance"),
            format!("The dispute of your {card} payment was decided in your favour. The {amount} and the processor's {fee} fee taken for it are back in the balance of account {}.", account.as_str()),
        ),
        "lost" => (
            format!("Dispute lost: {amount} stays with the cardholder"),
            format!("The dispute of your {card} payment was decided for the cardholder: the {amount} and the processor's {fee} fee stay deducted from the balance of account {}.", account.as_str()),
        ),
        "funds_withdrawn" => (
            format!("Payment disputed: {amount} and a {fee} fee were deducted"),
            format!("The holder of your {card} disputed a payment (a chargeback). The card processor took the {amount} and its {fee} dispute fee back, so they are deducted from the balance of account {}. If the dispute is decided in your favour, both come back.", account.as_str()),
        ),
        _ => (
            format!("Payment disputed: {amount}"),
            format!("The holder of your {card} disputed a payment of {amount} (a chargeback). The card processor may take the amount and a {fee} fee back while the dispute is open; we will tell you when it moves."),
        ),
    };
    let blocks = vec![
        Block::Heading("Payment dispute".into()),
        Block::Paragraph(opening),
        Block::Facts(vec![
            ("Disputed amount", amount),
            ("Dispute fee", fee),
            ("Card", card.into()),
            ("Payment ID", payment_id.into()),
            ("Dispute ID", dispute_id.into()),
            ("Date", datetime(at)),
            ("Balance", display_usd(balance_after_usd)),
        ]),
        Block::Paragraph(
            "Questions about this dispute: reply to this email or contact support with the \
             dispute ID."
                .into(),
        ),
    ];
    (subject, blocks)
}

struct RefundFacts<'a> {
    payment_id: &'a str,
    refund_id: &'a str,
    amount_usd: Amount,
    card: String,
    reason: &'a str,
    returned: bool,
    failure_reason: Option<&'a str>,
    balance_after_usd: Decimal,
    refunded_at: DateTime<Utc>,
}

fn refund_receipt(account: &AccountId, facts: RefundFacts<'_>) -> (String, Vec<Block>) {
    let amount = display_usd(facts.amount_usd.value());
    let card = facts.card;
    let (subject, heading, opening) = if facts.returned {
        (
            format!("Refund receipt: {amount} returned to your {card}"),
            "Refund issued",
            format!(
                "We refunded {amount} of payment {} to your {card} and took it from the balance \
                 of account {}. Card refunds usually reach the statement in 5 to 10 business days.",
                facts.payment_id,
                account.as_str()
            ),
        )
    } else {
        (
            format!("Refund of {amount} could not be sent to your {card}"),
            "Refund not sent",
            format!(
                "The card processor refused our refund of {amount} to your {card}{}. The amount \
                 is back in the balance of account {}; contact us to be refunded another way.",
                facts.failure_reason.map(|r| format!(" ({r})")).unwrap_or_default(),
                account.as_str()
            ),
        )
    };
    let blocks = vec![
        Block::Heading(heading.into()),
        Block::Paragraph(opening),
        Block::Facts(vec![
            ("Amount", amount),
            ("Card", card),
            ("Reason", facts.reason.into()),
            ("Date", datetime(facts.refunded_at)),
            ("Payment ID", facts.payment_id.into()),
            ("Refund ID", facts.refund_id.into()),
            ("New balance", display_usd(facts.balance_after_usd)),
        ]),
        Block::Paragraph(
            "Keep this email for your records. Refunds are listed with their payment in the \
             payment history on the Billing page."
                .into(),
        ),
    ];
    (subject, blocks)
}

fn recharge_failed(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    request_id: &str,
    attempt: u32,
    amount_usd: Amount,
    failures: &[CardFailure],
    next_attempt_at: Option<DateTime<Utc>>,
) -> (String, Vec<Block>) {
    let amount = display_usd(amount_usd.value());
    let subject = format!("Action needed: auto-recharge of {amount} failed");
    let mut blocks = vec![
        Block::Heading("Auto-recharge failed".into()),
        Block::Paragraph(format!(
            "We could not add {amount} to the balance of account {} on {}.",
            account.as_str(),
            datetime(raised_at)
        )),
    ];
    blocks.extend(declined_cards(failures));
    blocks.push(Block::Facts(vec![
        ("Amount", amount),
        ("Attempt", attempt.to_string()),
        ("Recharge request", request_id.into()),
    ]));
    blocks.push(Block::Heading("What to do next".into()));
    let mut steps = vec![
        "Check the card with your bank, or add or replace a card on the Billing page.".to_string(),
        "To add funds right away, use Pay Now on the Billing page.".to_string(),
    ];
    match next_attempt_at {
        Some(next) => steps.push(format!(
            "We will try again on {}. If that attempt succeeds, you will get a receipt.",
            datetime(next)
        )),
        None => steps.push(format!(
            "Auto-recharge has turned itself off after {attempt} failed {} in a row: it will \
             not charge your cards again until you turn it back on, by adding or updating a card, \
             making a payment with Pay Now, or saving your auto-recharge settings on the Billing \
             page. Add funds before your balance runs out, or your calls, text messages and \
             number purchases will stop.",
            if attempt == 1 { "attempt" } else { "attempts" }
        )),
    }
    blocks.push(Block::List(steps));
    (subject, blocks)
}

fn payment_failed(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    payment_id: &str,
    amount_usd: Amount,
    card: &str,
    reason: &str,
) -> (String, Vec<Block>) {
    let amount = display_usd(amount_usd.value());
    let subject = format!("Your payment of {amount} did not go through");
    let blocks = vec![
        Block::Heading("Payment failed".into()),
        Block::Paragraph(format!(
            "The payment of {amount} from your {card} to account {} was pending and has now \
             failed: {reason}. Nothing was added to your balance and nothing was charged.",
            account.as_str()
        )),
        Block::Facts(vec![
            ("Amount", amount),
            ("Paid with", card.into()),
            ("Payment", payment_id.into()),
            ("Decided", datetime(raised_at)),
        ]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Check the payment method with your bank, or add another on the Billing page.".into(),
            "Then pay again with Pay Now if you still want to add funds.".into(),
        ]),
    ];
    (subject, blocks)
}

/// The cards that declined, as the failure notices list them.
fn declined_cards(failures: &[CardFailure]) -> Vec<Block> {
    if failures.is_empty() {
        return vec![Block::Paragraph("There is no card on file that we could charge.".into())];
    }
    let tried = if failures.len() == 1 { "The card we tried" } else { "Every card we tried" };
    vec![
        Block::Paragraph(format!("{tried} was declined:")),
        Block::List(
            failures
                .iter()
                .map(|f| format!("{}: {}", card(&f.card_brand, &f.card_last4), f.reason))
                .collect(),
        ),
    ]
}

fn plan_charge_failed(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    (plan, period_from): (&str, chrono::NaiveDate),
    attempt: u32,
    amount_usd: Amount,
    failures: &[CardFailure],
    next_attempt_at: Option<DateTime<Utc>>,
) -> (String, Vec<Block>) {
    let amount = display_usd(amount_usd.value());
    let subject = match next_attempt_at {
        Some(_) => format!("Action needed: the {amount} charge for your plan failed"),
        None => {
            format!("Your plan's {amount} was taken from your balance: no card could be charged")
        }
    };
    let mut blocks = vec![
        Block::Heading("Plan payment failed".into()),
        Block::Paragraph(format!(
            "We could not charge {amount} to a card for the {plan} plan of account {} on {}.",
            account.as_str(),
            datetime(raised_at)
        )),
    ];
    blocks.extend(declined_cards(failures));
    blocks.push(Block::Facts(vec![
        ("Plan", plan.into()),
        ("Period from", period_from.format("%Y-%m-%d").to_string()),
        ("Amount", amount.clone()),
        ("Attempt", attempt.to_string()),
    ]));
    blocks.extend(card_retry_steps(
        next_attempt_at,
        format!(
            "After {attempt} failed attempts, the plan fee of {amount} was taken from your \
             prepaid balance instead, as plans without direct charge are. Add funds if your \
             balance is low, or your calls, text messages and number purchases will stop."
        ),
    ));
    (subject, blocks)
}

fn invoice_payment_failed(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    (number, month): (&str, ledger::Month),
    attempt: u32,
    amount_usd: Amount,
    failures: &[CardFailure],
    next_attempt_at: Option<DateTime<Utc>>,
) -> (String, Vec<Block>) {
    let amount = display_usd(amount_usd.value());
    let subject = format!("Action needed: the {amount} charge for invoice {number} failed");
    let mut blocks = vec![
        Block::Heading("Invoice payment failed".into()),
        Block::Paragraph(format!(
            "We could not charge {amount} for invoice {number} ({}) of account {} to a card on {}.",
            month.first_day().format("%B %Y"),
            account.as_str(),
            datetime(raised_at)
        )),
    ];
    blocks.extend(declined_cards(failures));
    blocks.push(Block::Facts(vec![
        ("Invoice", number.into()),
        ("Amount", amount.clone()),
        ("Attempt", attempt.to_string()),
    ]));
    blocks.extend(card_retry_steps(
        next_attempt_at,
        format!(
            "After {attempt} failed attempts we will not try the cards again for this invoice. \
             Please pay {amount} by e-transfer, EFT or cheque, quoting {number}, before it is \
             overdue."
        ),
    ));
    (subject, blocks)
}

/// "What to do next" after a failed card charge: check the card, then when it is tried again
/// or, with no attempt left, `out_of_attempts`.
fn card_retry_steps(next_attempt_at: Option<DateTime<Utc>>, out_of_attempts: String) -> [Block; 2] {
    let then = match next_attempt_at {
        Some(next) => format!(
            "We will try again on {}. If that attempt succeeds, you will get a receipt.",
            datetime(next)
        ),
        None => out_of_attempts,
    };
    [
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Check the card with your bank, or add or replace a card on the Billing page."
                .to_string(),
            then,
        ]),
    ]
}

fn recharge_daily_cap_reached(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    day: chrono::NaiveDate,
    cap_usd: Amount,
    spent_usd: Decimal,
) -> (String, Vec<Block>) {
    let cap = display_usd(cap_usd.value());
    let day_text = day.format("%B %-d, %Y").to_string();
    let subject = format!("Auto-recharge paused: daily limit of {cap} reached");
    let blocks = vec![
        Block::Heading("Auto-recharge paused for the day".into()),
        Block::Paragraph(format!(
            "Auto-recharge has added {} to the balance of account {} on {day_text} (UTC); \
             another recharge would go past your daily limit of {cap}. No more automatic \
             recharges will happen until 00:00 UTC. If you did not expect this much use in one \
             day, check your account for calls you do not recognise.",
            display_usd(spent_usd),
            account.as_str(),
        )),
        Block::Facts(vec![
            ("Day (UTC)", day_text),
            ("Daily limit", cap),
            ("Recharged today", display_usd(spent_usd)),
            ("Date", datetime(raised_at)),
        ]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "To keep your service running today, add funds with Pay Now on the Billing page."
                .into(),
            "To allow more automatic recharges per day, raise the daily limit in your \
             auto-recharge settings."
                .into(),
        ]),
    ];
    (subject, blocks)
}

fn recharge_cap_reached(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    month: ledger::Month,
    cap_usd: Amount,
    spent_usd: Decimal,
) -> (String, Vec<Block>) {
    let cap = display_usd(cap_usd.value());
    let month = month_name(month);
    let subject = format!("Auto-recharge paused: monthly limit of {cap} reached");
    let blocks = vec![
        Block::Heading("Auto-recharge paused for the month".into()),
        Block::Paragraph(format!(
            "Auto-recharge has added {} to the balance of account {} in {month}, which reaches \
             your monthly limit of {cap}. No more automatic recharges will happen until next \
             month.",
            display_usd(spent_usd),
            account.as_str(),
        )),
        Block::Facts(vec![
            ("Month", month),
            ("Monthly limit", cap),
            ("Recharged this month", display_usd(spent_usd)),
            ("Date", datetime(raised_at)),
        ]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "To keep your service running, add funds with Pay Now on the Billing page.".into(),
            "To allow more automatic recharges, raise the monthly limit in your auto-recharge \
             settings."
                .into(),
        ]),
    ];
    (subject, blocks)
}

fn low_balance(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    balance_usd: Decimal,
) -> (String, Vec<Block>) {
    let balance = display_usd(balance_usd);
    let subject = format!("Low balance: {balance} left on account {}", account.as_str());
    let blocks = vec![
        Block::Heading("Your balance is low".into()),
        Block::Paragraph(format!(
            "The balance of account {} is {balance}, below your low-balance alert level. Calls, \
             text messages and phone numbers are paid from this balance, and they stop when it \
             runs out.",
            account.as_str()
        )),
        Block::Facts(vec![("Balance", balance), ("Date", datetime(raised_at))]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Add funds with Pay Now on the Billing page.".into(),
            "Turn on auto-recharge so your balance is topped up automatically.".into(),
        ]),
    ];
    (subject, blocks)
}

fn suspended(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    balance_usd: Decimal,
) -> (String, Vec<Block>) {
    let balance = display_usd(balance_usd);
    let subject =
        format!("Service suspended on account {}: add funds to restore it", account.as_str());
    let blocks = vec![
        Block::Heading("Your service is suspended".into()),
        Block::Paragraph(format!(
            "Account {} has run out of funds: its balance is {balance}. Outgoing calls, text \
             messages and phone number purchases are blocked until funds are added.",
            account.as_str()
        )),
        Block::Facts(vec![("Balance", balance), ("Suspended on", datetime(raised_at))]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Add funds with Pay Now on the Billing page. Service resumes as soon as a payment \
             brings the balance back above zero (or above your credit limit, for accounts with \
             one)."
                .into(),
        ]),
    ];
    (subject, blocks)
}

/// "Your numbers will be released" (`days_left`) or "are being released" (`None`).
fn numbers_release(
    account: &AccountId,
    release_at: DateTime<Utc>,
    days_left: Option<u32>,
    balance_usd: Decimal,
) -> (String, Vec<Block>) {
    let balance = display_usd(balance_usd);
    let (subject, heading, paragraph) = match days_left {
        Some(days) => (
            format!(
                "Account {} is in jeopardy of losing its phone numbers: {} left to add funds",
                account.as_str(),
                if days == 1 { "1 day".to_string() } else { format!("{days} days") }
            ),
            "Your phone numbers will be released".to_string(),
            format!(
                "Account {} has been suspended since its balance ran out. Unless funds are \
                 added, its phone numbers will be released on {}, and may not be recoverable.",
                account.as_str(),
                datetime(release_at)
            ),
        ),
        None => (
            format!("Account {}: its phone numbers are being released", account.as_str()),
            "Your phone numbers are being released".to_string(),
            format!(
                "Account {} stayed suspended until {}: its phone numbers are being released.",
                account.as_str(),
                datetime(release_at)
            ),
        ),
    };
    let blocks = vec![
        Block::Heading(heading),
        Block::Paragraph(paragraph),
        Block::Facts(vec![("Balance", balance), ("Release date", datetime(release_at))]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Add funds with Pay Now on the Billing page: as soon as the balance is back above \
             zero (or above your credit limit), service resumes and the release is cancelled."
                .into(),
        ]),
    ];
    (subject, blocks)
}

fn reactivated(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    balance_usd: Decimal,
) -> (String, Vec<Block>) {
    let balance = display_usd(balance_usd);
    let subject = format!("Service restored on account {}", account.as_str());
    let blocks = vec![
        Block::Heading("Your service is active again".into()),
        Block::Paragraph(format!(
            "Funds were added to account {}: its balance is {balance}, and calls, text messages \
             and phone number purchases work again.",
            account.as_str()
        )),
        Block::Facts(vec![("Balance", balance), ("Restored on", datetime(raised_at))]),
    ];
    (subject, blocks)
}

fn invoice_overdue_block(
    account: &AccountId,
    raised_at: DateTime<Utc>,
    month: ledger::Month,
    balance_usd: Decimal,
) -> (String, Vec<Block>) {
    let balance = display_usd(balance_usd);
    let subject = format!(
        "Service suspended on account {}: the invoice for {} is overdue",
        account.as_str(),
        month_name(month)
    );
    let blocks = vec![
        Block::Heading("Your service is suspended".into()),
        Block::Paragraph(format!(
            "The invoice of account {} for {} is still unpaid, well past its due date. Outgoing \
             calls, text messages and phone number purchases are blocked until it is paid.",
            account.as_str(),
            month_name(month)
        )),
        Block::Facts(vec![
            ("Invoice", month_name(month)),
            ("Balance", balance),
            ("Suspended on", datetime(raised_at)),
        ]),
        Block::Heading("What to do next".into()),
        Block::List(vec![
            "Pay the invoice with Pay Now on the Billing page, or send the payment by \
             e-transfer, EFT or cheque. Service resumes as soon as the payment is recorded."
                .into(),
            "If your phone numbers stay blocked for too long they are released: pay before \
             then to keep them."
                .into(),
        ]),
    ];
    (subject, blocks)
}

/// "Visa ending in 4242". Card processors send brands as lowercase ids (`visa`, `amex`).
fn card(brand: &str, last4: &str) -> String {
    let brand = match brand.trim().to_ascii_lowercase().as_str() {
        "visa" => "Visa".to_string(),
        "mastercard" => "Mastercard".to_string(),
        "amex" | "american_express" => "American Express".to_string(),
        "discover" => "Discover".to_string(),
        "diners" | "diners_club" => "Diners Club".to_string(),
        "jcb" => "JCB".to_string(),
        "unionpay" => "UnionPay".to_string(),
        "" | "unknown" => "Card".to_string(),
        _ => brand.trim().to_string(),
    };
    format!("{brand} ending in {last4}")
}

/// "November 4, 2026, 10:00 UTC".
fn datetime(at: DateTime<Utc>) -> String {
    at.format("%B %-d, %Y, %H:%M UTC").to_string()
}

/// "2026-11" as "November 2026".
fn month_name(month: ledger::Month) -> String {
    month.first_day().format("%B %Y").to_string()
}

pub(crate) fn render_text(blocks: &[Block], footer: &str) -> String {
    let mut out = String::new();
    for block in blocks {
        if !out.is_empty() {
            out.push('\n');
        }
        match block {
            Block::Heading(heading) => {
                out.push_str(heading);
                out.push('\n');
                out.push_str(&"=".repeat(heading.chars().count()));
                out.push('\n');
            }
            Block::Paragraph(text) => wrap_into(&mut out, text, "", ""),
            Block::Facts(facts) => {
                let width = facts.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
                for (label, value) in facts {
                    let first =
                        format!("  {label}:{}", " ".repeat(width - label.chars().count() + 2));
                    let rest = " ".repeat(first.chars().count());
                    wrap_into(&mut out, value, &first, &rest);
                }
            }
            Block::List(items) => {
                for item in items {
                    wrap_into(&mut out, item, "  - ", "    ");
                }
            }
            Block::Table(table) => table_text(&mut out, table),
        }
    }
    out.push_str("\n--\n");
    wrap_into(&mut out, footer, "", "");
    out
}

/// A table in columns two spaces apart, indented by two. When it is wider than [`TEXT_WIDTH`],
/// the widest text column is narrowed and its cells wrap onto more lines.
fn table_text(out: &mut String, table: &Table) {
    const INDENT: &str = "  ";
    const GAP: usize = 2;
    let count = table.columns.len();
    // An indented row's first cell is set in by the width of INDENT.
    let inset =
        |row: &TableRow, index: usize| if index == 0 && row.indent { INDENT.len() } else { 0 };
    let cell = |row: &TableRow, index: usize| -> String {
        row.cells.get(index).cloned().unwrap_or_default()
    };
    let mut widths: Vec<usize> =
        table.columns.iter().map(|column| column.title.chars().count()).collect();
    for row in &table.rows {
        for (index, width) in widths.iter_mut().enumerate() {
            *width = (*width).max(inset(row, index) + cell(row, index).chars().count());
        }
    }
    let line_width = INDENT.len() + widths.iter().sum::<usize>() + GAP * count.saturating_sub(1);
    if line_width > TEXT_WIDTH {
        let flexible = (0..count)
            .filter(|&index| !table.columns[index].numeric)
            .max_by_key(|&index| widths[index]);
        if let Some(index) = flexible {
            widths[index] = widths[index].saturating_sub(line_width - TEXT_WIDTH).max(12);
        }
    }
    let mut lines_of = |cells: Vec<String>, insets: Vec<usize>, rule_above: bool| {
        if rule_above {
            let width = widths.iter().sum::<usize>() + GAP * count.saturating_sub(1);
            out.push_str(INDENT);
            out.push_str(&"-".repeat(width));
            out.push('\n');
        }
        let wrapped: Vec<Vec<String>> = cells
            .iter()
            .enumerate()
            .map(|(index, value)| {
                if table.columns[index].numeric {
                    return vec![value.clone()];
                }
                let inset = " ".repeat(insets[index]);
                wrap_cell(value, widths[index].saturating_sub(insets[index]).max(1))
                    .into_iter()
                    .map(|line| format!("{inset}{line}"))
                    .collect()
            })
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            let mut text = INDENT.to_string();
            for (index, column) in table.columns.iter().enumerate() {
                let value = wrapped[index].get(line).map(String::as_str).unwrap_or_default();
                let pad = " ".repeat(widths[index].saturating_sub(value.chars().count()));
                if index > 0 {
                    text.push_str(&" ".repeat(GAP));
                }
                if column.numeric {
                    text.push_str(&pad);
                    text.push_str(value);
                } else {
                    text.push_str(value);
                    text.push_str(&pad);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
    };
    if table.columns.iter().any(|column| !column.title.is_empty()) {
        lines_of(
            table.columns.iter().map(|c| c.title.to_string()).collect(),
            vec![0; count],
            false,
        );
        lines_of(widths.iter().map(|&w| "-".repeat(w)).collect(), vec![0; count], false);
    }
    for (position, row) in table.rows.iter().enumerate() {
        let cells = (0..count).map(|index| cell(row, index)).collect();
        let insets = (0..count).map(|index| inset(row, index)).collect();
        lines_of(cells, insets, row.strong && position > 0);
    }
}

/// Word-wrap one table cell at `width`; a word longer than the width is cut.
fn wrap_cell(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        if word.is_empty() {
            continue;
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Word-wrap `text` at [`TEXT_WIDTH`] with a first-line and a continuation prefix. A word longer
/// than a line stays whole on a line of its own.
fn wrap_into(out: &mut String, text: &str, first_prefix: &str, rest_prefix: &str) {
    let mut line = first_prefix.to_string();
    let mut prefix_len = first_prefix.chars().count();
    let mut line_len = prefix_len;
    for word in text.split_whitespace() {
        let word_len = word.chars().count();
        if line_len > prefix_len && line_len + 1 + word_len > TEXT_WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest_prefix.to_string();
            prefix_len = rest_prefix.chars().count();
            line_len = prefix_len;
        }
        if line_len > prefix_len {
            line.push(' ');
            line_len += 1;
        }
        line.push_str(word);
        line_len += word_len;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

const STYLE_BODY: &str = "margin:0;padding:24px;background:#f4f5f7;\
    font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;color:#1f2933;";
const STYLE_CARD: &str = "max-width:600px;margin:0 auto;background:#ffffff;padding:24px;\
    border-radius:6px;";
const STYLE_H1: &str = "margin:0 0 16px;font-size:20px;";
const STYLE_H2: &str = "margin:24px 0 8px;font-size:16px;";
const STYLE_P: &str = "margin:0 0 16px;";
const STYLE_TABLE: &str = "border-collapse:collapse;margin:0 0 16px;";
const STYLE_TH: &str = "text-align:left;vertical-align:top;padding:4px 16px 4px 0;\
    font-weight:normal;color:#52606d;white-space:nowrap;";
const STYLE_TD: &str = "padding:4px 0;";
const STYLE_UL: &str = "margin:0 0 16px;padding-left:20px;";
const STYLE_FOOTER: &str = "margin:24px 0 0;font-size:12px;color:#7b8794;";
const STYLE_DATA_TABLE: &str =
    "border-collapse:collapse;margin:0 0 16px;width:100%;font-size:14px;";
const STYLE_COL_TH: &str = "text-align:left;padding:4px 8px 4px 0;font-weight:normal;\
    color:#52606d;border-bottom:1px solid #d9e2ec;";
const STYLE_COL_TH_NUMBER: &str = "text-align:right;padding:4px 0 4px 8px;font-weight:normal;\
    color:#52606d;border-bottom:1px solid #d9e2ec;white-space:nowrap;";
const STYLE_CELL: &str = "padding:4px 8px 4px 0;vertical-align:top;";
const STYLE_CELL_INDENT: &str = "padding:4px 8px 4px 16px;vertical-align:top;color:#52606d;";
const STYLE_CELL_NUMBER: &str = "padding:4px 0 4px 8px;vertical-align:top;text-align:right;\
    white-space:nowrap;";
const STYLE_RULE_ABOVE: &str = "border-top:1px solid #d9e2ec;";
const STYLE_CELL_STRONG: &str =
    "padding:4px 8px 4px 0;vertical-align:top;font-weight:bold;border-top:1px solid #d9e2ec;";
const STYLE_CELL_NUMBER_STRONG: &str = "padding:4px 0 4px 8px;vertical-align:top;\
    text-align:right;white-space:nowrap;font-weight:bold;border-top:1px solid #d9e2ec;";

fn table_html(out: &mut String, table: &Table) {
    out.push_str(&format!("<table style=\"{STYLE_DATA_TABLE}\">\n"));
    if table.columns.iter().any(|column| !column.title.is_empty()) {
        out.push_str("<tr>");
        for column in &table.columns {
            let style = if column.numeric { STYLE_COL_TH_NUMBER } else { STYLE_COL_TH };
            out.push_str(&format!(
                "<th scope=\"col\" style=\"{style}\">{}</th>",
                escape_html(column.title)
            ));
        }
        out.push_str("</tr>\n");
    }
    for (position, row) in table.rows.iter().enumerate() {
        out.push_str("<tr>");
        for (index, column) in table.columns.iter().enumerate() {
            let value = row.cells.get(index).map(String::as_str).unwrap_or_default();
            let style = match (column.numeric, row.strong) {
                (true, true) => STYLE_CELL_NUMBER_STRONG,
                (true, false) => STYLE_CELL_NUMBER,
                (false, true) => STYLE_CELL_STRONG,
                (false, false) if index == 0 && row.indent => STYLE_CELL_INDENT,
                (false, false) => STYLE_CELL,
            };
            // A total is set off from the rows above it; the first row has none.
            let style =
                if position == 0 { style.replace(STYLE_RULE_ABOVE, "") } else { style.to_string() };
            out.push_str(&format!("<td style=\"{style}\">{}</td>", escape_html(value)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

pub(crate) fn render_html(subject: &str, blocks: &[Block], footer: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!("<title>{}</title>\n</head>\n", escape_html(subject)));
    out.push_str(&format!("<body style=\"{STYLE_BODY}\">\n<div style=\"{STYLE_CARD}\">\n"));
    let mut first_heading = true;
    for block in blocks {
        match block {
            Block::Heading(heading) => {
                let (tag, style) = if first_heading { ("h1", STYLE_H1) } else { ("h2", STYLE_H2) };
                first_heading = false;
                out.push_str(&format!(
                    "<{tag} style=\"{style}\">{}</{tag}>\n",
                    escape_html(heading)
                ));
            }
            Block::Paragraph(text) => {
                out.push_str(&format!("<p style=\"{STYLE_P}\">{}</p>\n", escape_html(text)));
            }
            Block::Facts(facts) => {
                out.push_str(&format!("<table role=\"presentation\" style=\"{STYLE_TABLE}\">\n"));
                for (label, value) in facts {
                    out.push_str(&format!(
                        "<tr><th scope=\"row\" style=\"{STYLE_TH}\">{}</th><td style=\"{STYLE_TD}\">{}</td></tr>\n",
                        escape_html(label),
                        escape_html(value)
                    ));
                }
                out.push_str("</table>\n");
            }
            Block::List(items) => {
                out.push_str(&format!("<ul style=\"{STYLE_UL}\">\n"));
                for item in items {
                    out.push_str(&format!("<li>{}</li>\n", escape_html(item)));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(table) => table_html(&mut out, table),
        }
    }
    out.push_str(&format!("<p style=\"{STYLE_FOOTER}\">{}</p>\n", escape_html(footer)));
    out.push_str("</div>\n</body>\n</html>\n");
    out
}

/// Escape text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_html_escapes_the_five_special_characters() {
        assert_eq!(
            escape_html(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn text_wraps_at_the_width_with_hanging_indents() {
        let mut out = String::new();
        let long = "word ".repeat(40);
        wrap_into(&mut out, &long, "  - ", "    ");
        for line in out.lines() {
            assert!(line.chars().count() <= TEXT_WIDTH, "{line:?}");
        }
        assert!(out.starts_with("  - word"));
        assert!(out.lines().skip(1).all(|l| l.starts_with("    word")));
    }

    #[test]
    fn a_word_longer_than_a_line_stays_whole() {
        let mut out = String::new();
        let word = "x".repeat(100);
        wrap_into(&mut out, &format!("a {word} b"), "", "");
        assert_eq!(out, format!("a\n{word}\nb\n"));
    }

    #[test]
    fn months_and_cards_read_as_words() {
        assert_eq!(month_name("2026-11".parse().unwrap()), "November 2026");
        assert_eq!(month_name("2027-01".parse().unwrap()), "January 2027");
        assert_eq!(card("amex", "0005"), "American Express ending in 0005");
        assert_eq!(card("Elo", "1234"), "Elo ending in 1234");
    }
}
