//! `ringledger demo`: the whole story through the real HTTP routes (in process, via
//! `tower::ServiceExt::oneshot`), the usage worker's real batch path and the real auto-recharge
//! and notification workers (`pipeline`), on the chosen store.

mod agency;
mod client;
pub mod postpaid;
mod summary;
mod traffic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, TimeZone, Utc};
use documents::payment::PaymentRecord;
use documents::profile::CardRole;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::store::all_entries;
use ledger::{
    display_usd, AccountId, Amount, EntryQuery, LedgerEventKind, LedgerStore, RechargeMode,
};
use rust_decimal::Decimal;

use crate::cli::{DemoArgs, StoreArgs, StoreKind};
use crate::pipeline::{Pipeline, Round};
use crate::wiring::{CliResult, Local};
use client::{
    AcceptTerms, AddCard, Api, AutoRecharge, CardAdded, Contacts, CreateAccount, DemoError,
    LowBalance, Overview, PayNow, PaymentAnswer, PaymentsPage,
};
use summary::{Recharge, OUTBOX_SCAN};

/// At most this many extra worker rounds after the day, while they still get work done
/// (a round relays at most `pipeline::ROUND_ITEMS` events, of every account).
const DRAIN_ROUNDS: usize = 20;
/// At most this many fresh account names are tried when the default one is taken.
const NAME_ATTEMPTS: usize = 20;
/// Payments per page of `GET /v1/payments` (the API's largest page).
const PAYMENTS_PAGE: u32 = 200;

/// The workers as `serve` runs them, one round after each batch; the demo notes its
/// account's recharge requests before a round acknowledges them.
struct Workers {
    pipeline: Pipeline,
    totals: Round,
    requests: Vec<Recharge>,
}

impl Workers {
    async fn relay(
        &mut self,
        ledger: &dyn LedgerStore,
        id: &AccountId,
    ) -> Result<Round, DemoError> {
        for event in ledger.pending_events(OUTBOX_SCAN).await? {
            let LedgerEventKind::RechargeRequested { request_id } = &event.kind else {
                continue;
            };
            if event.account_id == *id && !self.requests.iter().any(|r| r.request_id == *request_id)
            {
                self.requests.push(Recharge {
                    request_id: request_id.clone(),
                    raised_at_seq: event.seq,
                    balance_when_raised: event.balance_usd,
                });
            }
        }
        let round = self.pipeline.run_once().await?;
        self.totals.recharges_settled += round.recharges_settled;
        self.totals.notices_sent += round.notices_sent;
        Ok(round)
    }
}

/// Where the demo's emails go unless told: `outbox` beside the database file.
fn default_outbox(store: &StoreArgs) -> PathBuf {
    Path::new(&store.db).parent().unwrap_or(Path::new("")).join("outbox")
}

fn amount(value: &str) -> Amount {
    value.parse().expect("the demo's amounts are valid")
}

pub async fn run(store_args: &StoreArgs, args: DemoArgs) -> CliResult {
    let DemoArgs { account, events, outbox_dir, rate_cards } = args;
    let outbox_dir = outbox_dir.unwrap_or_else(|| default_outbox(store_args));
    let cards = rate_cards.load()?;
    let local = Local::open(store_args, &outbox_dir).await?;
    let emails_before = summary::eml_files(&outbox_dir)?;
    let state = local.app_state(cards.clone(), None);
    let api = Api { app: api::app::local(state, local.jwt.clone()) };
    let Local { store, pipeline, jwt, .. } = local;
    let ledger: Arc<dyn LedgerStore> = store.clone();
    let mut workers = Workers { pipeline, totals: Round::default(), requests: Vec::new() };
    let operator = jwt.issue("ops@ringledger.example", None, api::auth::Role::Operator, 3600);

    // 1. The account and its setup, all through the routes.
    println!("ringledger demo on {}", store_name(store_args));
    println!("\nsetup through the HTTP API (in process):");
    let stamp = Utc::now().timestamp();
    let id = create_account(&api, &operator, account.as_ref(), stamp).await?;
    let admin_email = format!("admin@{id}.example");
    let admin = jwt.issue(&admin_email, Some(id.as_str()), api::auth::Role::Admin, 3600);
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
        |_| Ok("billing and recharge-failure emails, critical phone".into()),
    )
    .await?;
    for (token, role) in
        [("pm_card_visa", CardRole::Primary), ("pm_card_mastercard", CardRole::Backup)]
    {
        let body = AddCard { payment_method_token: token, card_manager_email: &admin_email, role };
        api.step((Method::POST, "/v1/cards"), &admin, &body, None, StatusCode::CREATED, |answer| {
            let CardAdded { card } = answer.json("/v1/cards")?;
            let role = match role {
                CardRole::Primary => "primary",
                CardRole::Backup => "backup",
            };
            Ok(format!("{role} card {} {} ({token})", card.brand, card.last4))
        })
        .await?;
    }
    let low_balance = LowBalance { level_usd: amount("20") };
    api.step(
        (Method::PUT, "/v1/settings/low-balance"),
        &admin,
        &low_balance,
        None,
        StatusCode::OK,
        |_| Ok("low-balance notice below $20.00".into()),
    )
    .await?;
    let auto_recharge = AutoRecharge {
        enabled: true,
        amount_usd: amount("50"),
        threshold_usd: amount("15"),
        mode: RechargeMode::TopUpTo,
    };
    api.step(
        (Method::PUT, "/v1/settings/auto-recharge"),
        &admin,
        &auto_recharge,
        None,
        StatusCode::OK,
        |_| Ok("auto-recharge on: below $15.00, top up to $50.00".into()),
    )
    .await?;
    // Enabling auto-recharge on an empty balance asks for a recharge at once; the
    // auto-recharge worker charges the primary card and credits it.
    workers.relay(&*ledger, &id).await?;
    let entries = all_entries(&*ledger, &id, EntryQuery::default()).await?;
    let payments = fetch_payments(&api, &admin).await?;
    for recharge in &workers.requests {
        let what = match summary::settlement(recharge, &entries, &payments) {
            Some((credit, payment)) => format!(
                "{} on {} settles {} (raised at once: the balance was {}); balance {}",
                display_usd(credit.amount_usd.value()),
                payment.map(summary::card_of).unwrap_or_else(|| "?".into()),
                recharge.request_id,
                display_usd(recharge.balance_when_raised),
                display_usd(credit.balance_after_usd),
            ),
            None => format!("{} is not settled yet", recharge.request_id),
        };
        println!("  {:<38} {what}", "auto-recharge worker");
    }
    let initial_key = format!("{id}-pay-now-1");
    let paid = api
        .step(
            (Method::POST, "/v1/payments"),
            &admin,
            &PayNow { amount_usd: amount("25") },
            Some(&initial_key),
            StatusCode::CREATED,
            |answer| {
                let PaymentAnswer { payment } = answer.json("/v1/payments")?;
                let balance = payment
                    .balance_after_usd
                    .as_deref()
                    .and_then(|b| b.parse::<Decimal>().ok())
                    .map_or_else(|| "?".into(), display_usd);
                Ok(format!("Pay Now $25.00 (Idempotency-Key {initial_key}); balance {balance}"))
            },
        )
        .await?;
    let initial_payment = paid.json::<PaymentAnswer>("/v1/payments")?.payment.payment_id;
    held_call(&ledger, &cards, &id, stamp).await?;
    let setup_seq = ledger.account(&id).await?.ok_or("the demo account vanished")?.last_seq;

    // 2. A day of traffic through the usage worker's batch path.
    let day = replayed_day(Utc::now());
    let bodies = traffic::day_of_traffic(&id, stamp, day, events);
    println!(
        "\nreplaying {} usage events of {} (UTC) in batches of {}:",
        bodies.len(),
        day.format("%Y-%m-%d"),
        usage::worker::MAX_EVENTS_PER_POST
    );
    let progress = ProgressBar::new(bodies.len() as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "  {spinner} [{bar:40.cyan/blue}] {pos:>5}/{len} events {msg}",
        )?
        .progress_chars("=> "),
    );
    let (mut applied, mut refused, mut failures) = (0, 0, Vec::new());
    for (batch, chunk) in bodies.chunks(usage::worker::MAX_EVENTS_PER_POST).enumerate() {
        let messages = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| usage::worker::Message {
                id: format!("demo-msg-{batch}-{i}"),
                body: body.clone(),
            })
            .collect();
        let report = usage::worker::process_batch(ledger.clone(), &cards, None, messages).await;
        applied += report.postings_applied;
        refused += report.postings_refused;
        failures.extend(report.failures);
        workers.relay(&*ledger, &id).await?;
        progress.inc(chunk.len() as u64);
        progress.set_message(format!(
            "auto-recharges: {}, notices: {}",
            workers.totals.recharges_settled, workers.totals.notices_sent
        ));
    }
    progress.finish_and_clear();
    // A round relays a bounded number of events of every account: finish what is left.
    for _ in 0..DRAIN_ROUNDS {
        let round = workers.relay(&*ledger, &id).await?;
        if round.recharges_settled + round.notices_sent == 0 {
            break;
        }
    }
    println!(
        "  {} events: {applied} charges posted, {refused} refused, {} failed",
        bodies.len(),
        failures.len()
    );
    for failure in &failures {
        println!("  failed {}: {}", failure.message_id, failure.reason);
    }

    // 3. The summary.
    let entries = all_entries(&*ledger, &id, EntryQuery::default()).await?;
    let account = ledger.account(&id).await?.ok_or("the demo account vanished")?;
    ledger::verify_chain(account.opening_balance_usd, &entries, account.balance_usd)?;
    let clock = summary::simulated_clock(&entries, day, setup_seq);
    summary::print_balance_over_day(&entries, &clock, day, setup_seq);
    summary::print_by_item(&entries);
    let payments = fetch_payments(&api, &admin).await?;
    let notes =
        summary::payment_notes(Some(initial_payment), &workers.requests, &entries, &payments);
    summary::print_payments(&payments, &notes);
    summary::print_recharges(&workers.requests, &entries, &clock, &payments, &account);
    summary::print_emails(&workers.pipeline.outbox_dir, &emails_before, &id)?;
    summary::print_still_pending(&*ledger, &id).await?;

    let overview: Overview = api.get("/v1/overview", &admin).await?;
    println!(
        "\nfinal balance of {id}: {} (exact {}), status {}; {} entries, chain verified \
         (balance = opening + credits - debits)",
        overview.balance_display,
        overview.balance_usd,
        overview.status,
        entries.len(),
    );
    agency::agency_with_two_clients(&api, &jwt, &operator, &workers.pipeline, stamp).await?;

    let db = match store_args.kind {
        StoreKind::Sqlite if store_args.db != "ringledger.db" => format!(" --db {}", store_args.db),
        _ => String::new(),
    };
    println!("\nlook further:");
    println!("  ringledger{db} activity {id}      every entry (CSV; --show, --from, --to)");
    println!("  ringledger{db} show {id}");
    println!(
        "  ringledger{db} serve              the API on http://127.0.0.1:8080 and the \
         workers, with"
    );
    println!("  ringledger{db} token --account {id} --role admin");
    println!("  ls {}    the emails (.eml: open one in a mail client)", outbox_dir.display());
    Ok(())
}

/// The platform authorizes a call with an id (a hold for its first slice), the call ends, and
/// its usage event, carrying the same id, debits the call and settles the hold in one write.
async fn held_call(
    ledger: &Arc<dyn LedgerStore>,
    cards: &usage::worker::RateCards,
    id: &AccountId,
    stamp: i64,
) -> Result<(), DemoError> {
    const PLATFORM_TOKEN: &str = "demo-platform";
    let platform = Api {
        app: api::authorization::router(Arc::new(api::authorization::AuthorizationState {
            store: ledger.clone(),
            cards: cards.clone(),
            platform: api::authorization::PlatformAuth::Token(PLATFORM_TOKEN.into()),
            max_call_seconds: usage::authorize::DEFAULT_MAX_CALL_SECONDS,
        })),
    };
    let authorization = format!("demo-call-{stamp}");
    let request = serde_json::json!({
        "account_id": id.as_str(), "action": "call", "direction": "outbound",
        "to": "+447700900123", "authorization_id": authorization,
    });
    println!(
        "
a call with a hold (the platform's routes, then the usage worker):"
    );
    platform
        .step(
            (Method::POST, "/v1/authorizations"),
            PLATFORM_TOKEN,
            &request,
            None,
            StatusCode::OK,
            |answer| {
                let body: serde_json::Value = answer.json("/v1/authorizations")?;
                Ok(format!(
                    "call to +447700900123 granted {} s; {} held; available {}",
                    body["max_duration_seconds"],
                    body["hold"]["amount_usd"].as_str().unwrap_or("?"),
                    body["available_usd"].as_str().unwrap_or("?"),
                ))
            },
        )
        .await?;
    let report = serde_json::json!({
        "version": 1, "event_id": format!("demo-held-{stamp}"), "account_id": id.as_str(),
        "occurred_at": Utc::now().to_rfc3339(), "type": "call",
        "authorization_id": authorization,
        "data": {"direction": "outbound", "from": "+14155550100", "to": "+447700900123",
                 "answered": true, "duration_seconds": 185},
    });
    let messages =
        vec![usage::worker::Message { id: "demo-held".into(), body: report.to_string() }];
    let outcome = usage::worker::process_batch(ledger.clone(), cards, None, messages).await;
    if let Some(failure) = outcome.failures.first() {
        return Err(format!("the held call's report failed: {}", failure.reason).into());
    }
    let account = ledger.account(id).await?.ok_or("the demo account vanished")?;
    let now = Utc::now();
    let settled = account.hold(&authorization).is_none_or(|hold| hold.settled);
    if !settled || account.held_usd(now, None) != Decimal::ZERO {
        return Err(format!("the report of {authorization} left its hold active").into());
    }
    println!(
        "  {:<38} the 185 s call's usage event debits {} charges and settles the hold; \
         balance {}, nothing held",
        "usage worker",
        outcome.postings_applied,
        display_usd(account.balance_usd),
    );
    Ok(())
}

/// The operator creates the demo's account: `account` if given, else a fresh
/// `demo-<stamp>` (with a suffix when that is taken).
async fn create_account(
    api: &Api,
    operator: &str,
    account: Option<&AccountId>,
    stamp: i64,
) -> Result<AccountId, DemoError> {
    const ROUTE: &str = "/v1/operator/accounts";
    for attempt in 0..=NAME_ATTEMPTS {
        let name = match (account, attempt) {
            (Some(id), _) => id.to_string(),
            (None, 0) => format!("demo-{stamp}"),
            (None, n) => format!("demo-{stamp}-{n}"),
        };
        let body = CreateAccount { account_id: &name };
        let answer = api.call(Method::POST, ROUTE, operator, Some(&body), None).await?;
        match answer.status {
            StatusCode::CREATED => {
                let what = format!("the operator creates prepaid account {name}");
                client::say("POST", ROUTE, answer.status, &what);
                return Ok(AccountId::parse(name)?);
            }
            StatusCode::CONFLICT if account.is_none() => continue,
            StatusCode::CONFLICT => {
                return Err(format!(
                    "account {name} exists: the demo sets up a new account each run (the \
                     simulated card processor keeps no state between runs); omit --account \
                     or pick another id"
                )
                .into())
            }
            status => {
                return Err(format!("POST {ROUTE} answered {status}: {}", answer.text()).into())
            }
        }
    }
    Err(format!("every demo account name tried exists (demo-{stamp}-*); try again").into())
}

/// Every payment of the account (GET /v1/payments, every page), oldest first.
async fn fetch_payments(api: &Api, admin: &str) -> Result<Vec<PaymentRecord>, DemoError> {
    let mut payments = Vec::new();
    let mut path = format!("/v1/payments?limit={PAYMENTS_PAGE}");
    loop {
        let page: PaymentsPage = api.get(&path, admin).await?;
        payments.extend(page.payments);
        match page.next_cursor {
            Some(cursor) => path = format!("/v1/payments?limit={PAYMENTS_PAGE}&cursor={cursor}"),
            None => break,
        }
    }
    // The API lists Pay Now attempts newest first, but the worker's payment ids
    // (`<request id>:a<attempt>:<card>`) do not sort by time: order by creation.
    payments.sort_by_key(|p| p.created_at);
    Ok(payments)
}

/// The UTC day the demo replays: yesterday, over by now. The usage worker refuses an event
/// dated more than a few minutes after it arrives, so today's evening would fail.
fn replayed_day(now: DateTime<Utc>) -> DateTime<Utc> {
    let yesterday = now.date_naive() - Duration::days(1);
    Utc.from_utc_datetime(&yesterday.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn store_name(args: &StoreArgs) -> String {
    match args.kind {
        StoreKind::Sqlite => format!("the embedded store {}", args.db),
        StoreKind::Dynamodb => format!("DynamoDB table {}", args.table),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use ledger::AccountId;
    use usage::events::{UsageEvent, MAX_CLOCK_SKEW_SECONDS, MAX_EVENT_AGE_DAYS};

    #[test]
    fn the_replayed_day_is_over_so_the_usage_worker_takes_every_event() {
        let id = AccountId::parse("demo-1").unwrap();
        for now in [
            Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 1).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 2, 12, 42, 0).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 1, 23, 59, 59).unwrap(),
        ] {
            let day = super::replayed_day(now);
            for body in super::traffic::day_of_traffic(&id, 1, day, 300) {
                let event = UsageEvent::parse(&body).unwrap();
                let ahead = (event.occurred_at - now).num_seconds();
                let age = (now - event.occurred_at).num_days();
                assert!(ahead <= MAX_CLOCK_SKEW_SECONDS, "{event:?} is in the future of {now}");
                assert!(age <= MAX_EVENT_AGE_DAYS, "{event:?} is too old for {now}");
            }
        }
    }
}
