//! `ringledger demo-postpaid`: a postpaid (RingOffice) account played through its last two
//! months on the local runner. The account is set up through the in-process HTTP API (credit
//! limit, terms, a card, billing contacts, postpaid with a pre-authorized card), and gets a
//! monthly plan and a New York service address. Each month has calls with sub-cent carrier
//! surcharges. On each 1st, the monthly jobs run as the schedules would: the month before's
//! tax, the plan fee, the invoice (emailed as `.eml` with its page and CSV), and its charge to
//! the card. The months are played in the past (their postings dated in them), so the whole
//! story runs at once.

use axum::http::{Method, StatusCode};
use chrono::Duration;
use ledger::{display_usd, AccountId, Amount, BillingItem, LedgerStore, Month, Posting, SourceId};
use rust_decimal::Decimal;

use super::client::{AcceptTerms, AddCard, Api, Contacts, CreateAccount};
use super::{default_outbox, store_name, summary};
use crate::cli::{PostpaidDemoArgs, StoreArgs};
use crate::wiring::{CliResult, Local};

pub async fn run(store_args: &StoreArgs, args: PostpaidDemoArgs) -> CliResult {
    let PostpaidDemoArgs { account, outbox_dir, tax } = args;
    let outbox_dir = outbox_dir.unwrap_or_else(|| default_outbox(store_args));
    let local = Local::open(store_args, &outbox_dir).await?;
    let emails_before = summary::eml_files(&outbox_dir)?;
    let jobs = crate::jobs_local::workers(local.store.clone(), &outbox_dir, Some(&tax))
        .map_err(|e| e.to_string())?;
    let (Some(tax_job), Some(statements)) = (jobs.tax.clone(), jobs.statements.clone()) else {
        return Err("the job workers are missing".into());
    };
    let state = local.app_state(usage::worker::RateCards::standard_only(), None);
    let api = Api { app: api::app::local(state, local.jwt.clone()) };
    let operator = local.jwt.issue("ops@ringledger.example", None, api::auth::Role::Operator, 3600);
    let store = local.store.clone();
    let ledger: &dyn LedgerStore = &*store;

    println!("ringledger postpaid demo on {}", store_name(store_args));
    println!("\nsetup through the HTTP API (in process):");
    let name = match account {
        Some(id) => id.to_string(),
        None => format!("ringoffice-{}", chrono::Utc::now().timestamp()),
    };
    let id = AccountId::parse(&name)?;
    let admin_email = format!("admin@{id}.example");
    let admin = local.jwt.issue(&admin_email, Some(id.as_str()), api::auth::Role::Admin, 3600);
    let now = chrono::Utc::now();
    let last = Month::of(now).previous();
    let first = last.previous();
    api.step(
        (Method::POST, "/v1/operator/accounts"),
        &operator,
        &CreateAccount { account_id: &name },
        None,
        StatusCode::CREATED,
        |_| Ok(format!("an operator opens {name}")),
    )
    .await?;
    let path = format!("/v1/operator/accounts/{name}/credit-limit");
    let limit = serde_json::json!({ "credit_limit_usd": "500" });
    api.step((Method::PUT, &path), &operator, &limit, None, StatusCode::OK, |_| {
        Ok("a $500 credit limit".into())
    })
    .await?;
    api.step(
        (Method::POST, "/v1/terms"),
        &admin,
        &AcceptTerms { version: "2026-01" },
        None,
        StatusCode::OK,
        |_| Ok(format!("its admin accepts terms 2026-01 ({admin_email})")),
    )
    .await?;
    let contacts = Contacts {
        billing_emails: vec![format!("billing@{id}.example")],
        recharge_failure_email: format!("finance@{id}.example"),
        critical_phone: "+14155550100".into(),
    };
    api.step(
        (Method::PUT, "/v1/settings/contacts"),
        &admin,
        &contacts,
        None,
        StatusCode::OK,
        |_| Ok("billing contacts".into()),
    )
    .await?;
    let card = AddCard {
        payment_method_token: "pm_card_visa",
        card_manager_email: &admin_email,
        role: documents::profile::CardRole::Primary,
    };
    api.step((Method::POST, "/v1/cards"), &admin, &card, None, StatusCode::CREATED, |_| {
        Ok("a primary card (pm_card_visa)".into())
    })
    .await?;
    let path = format!("/v1/operator/accounts/{name}/billing-mode");
    let mode = serde_json::json!({ "mode": "postpaid", "pre_authorized_payment": true });
    api.step((Method::PUT, &path), &operator, &mode, None, StatusCode::OK, |_| {
        Ok("postpaid, the card pre-authorized for its invoices".into())
    })
    .await?;
    documents::profile::update(&*store, &id, |p| {
        p.service_address = Some(
            serde_json::from_value(serde_json::json!({
                "line1": "1 Broadway", "city": "New York", "region": "NY",
                "postal_code": "10004", "country": "US"
            }))
            .expect("an address"),
        );
        let terms = documents::plan::PlanTerms {
            name: "RingOffice Pro".into(),
            price_usd: "29".parse().expect("a price"),
            period: documents::plan::PlanPeriod::Monthly,
        };
        p.plan = Some(documents::plan::Plan::starting(terms, first.first_day()));
        Ok(())
    })
    .await?;
    println!("  a $29 monthly plan from {}, a New York service address", first.first_day());

    let ports = payment_flow::PaymentPorts {
        store: &*store,
        processor: &*local.processor,
        notices: Some(&*local.pipeline.notices),
    };
    for month in [first, last] {
        println!("\n{}:", month.first_day().format("%B %Y"));
        // The 1st: the month before's tax, then this month's plan fee.
        let opening = month.start() + Duration::minutes(1);
        let taxed = tax_job.run(&id, month.previous(), opening).await?;
        println!("  1st 00:01  tax of {}: {}", month.previous(), taxed.as_str());
        let fees = jobs::plans::renew_at(ledger, &*store, &id, month.first_day(), opening).await?;
        println!("  1st 00:01  plan fee: {fees} period charged");
        // Calls through the month, each with its carrier surcharge.
        let mut calls = 0;
        for day in [3, 9, 16, 23] {
            let at = month.start() + Duration::days(day) + Duration::hours(15);
            let postings = (0..25)
                .flat_map(|n| {
                    let call = format!("use:{month}-{day}-{n}");
                    let cents = Decimal::new(180 + (day * 7 + n) % 230, 4) * Decimal::from(10);
                    [
                        Posting::usage(
                            SourceId::parse(format!("{call}#call")).expect("an id"),
                            BillingItem::PhoneCall,
                            Amount::new(cents).expect("an amount"),
                            at,
                        ),
                        Posting::usage(
                            SourceId::parse(format!("{call}#surcharge")).expect("an id"),
                            BillingItem::CarrierSurcharge,
                            Amount::new(Decimal::new(25, 4)).expect("an amount"),
                            at,
                        ),
                    ]
                })
                .collect::<Result<Vec<_>, _>>()?;
            calls += postings.len() / 2;
            ledger.post(&id, postings, at).await?;
        }
        let balance = ledger.account(&id).await?.map(|a| a.balance_usd).unwrap_or_default();
        println!("  {calls} calls with their surcharges; balance {}", display_usd(balance));
        // The next 1st: the invoice, emailed, and its pre-authorized charge.
        let issue_at = month.next().start() + Duration::minutes(5);
        let outcome = statements.invoice(&id, month, issue_at).await?;
        let jobs::invoices::InvoiceOutcome::Issued { invoice, .. } = outcome else {
            return Err("the account is not postpaid".into());
        };
        println!(
            "  next 1st   invoice {} for {}: amount due {} (due {})",
            invoice.number.as_deref().unwrap_or(""),
            month,
            display_usd(invoice.amount_due_usd),
            invoice.due_on
        );
        for line in &invoice.lines {
            println!(
                "               {:<22} {:>5} × {:>10}",
                line.item.as_str(),
                line.count,
                display_usd(line.amount_usd)
            );
        }
        let key = documents::invoice::autopay_key(month);
        if ledger.account(&id).await?.is_some_and(|a| a.pending_payments.contains(&key)) {
            let charged = payment_flow::reconcile_pending_payment(
                &ports,
                &id,
                &key,
                issue_at + Duration::minutes(1),
            )
            .await?;
            let (paid, _) = documents::invoice::load(&*store, &id, month)
                .await?
                .ok_or("the invoice went away")?;
            println!(
                "  next 1st   pre-authorized card charged ({charged:?}): outstanding {}",
                display_usd(paid.outstanding_usd())
            );
        }
    }
    // The receipts and the invoices' emails, written by the workers.
    local.pipeline.run_once().await?;
    let emails = summary::eml_files(&outbox_dir)?;
    let mut new: Vec<_> = emails.keys().filter(|e| !emails_before.contains_key(*e)).collect();
    new.sort();
    println!("\n{} emails written to {}:", new.len(), outbox_dir.display());
    for email in new {
        println!("  {}", email.display());
    }
    let account = ledger.account(&id).await?.ok_or("the account went away")?;
    println!(
        "\n{id}: balance {} (this month's usage is on next month's invoice); see it with \
         `ringledger serve` and its billing link, or GET /v1/invoices",
        display_usd(account.balance_usd)
    );
    Ok(())
}
