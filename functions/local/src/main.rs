//! `ringledger`: the local runner and ops CLI, on the embedded store by default.
//!
//! It carries the ledger's ops commands, the HTTP API (`serve`, with the auto-recharge and
//! notification workers in the background) and a `demo`.

mod jobs_local;
mod pipeline;

/// The environment variables the runner reads, one constant each (the README lists them).
mod env_names {
    pub const STORE: &str = "RINGLEDGER_STORE";
    pub const DB: &str = "RINGLEDGER_DB";
    pub const DYNAMODB_ENDPOINT: &str = "RINGLEDGER_DYNAMODB_ENDPOINT";
    pub const TABLE: &str = "RINGLEDGER_TABLE";
    pub const ADDR: &str = "RINGLEDGER_ADDR";
    pub const PLATFORM_TOKEN: &str = "RINGLEDGER_PLATFORM_TOKEN";
    pub const RATE_CARDS: &str = "RINGLEDGER_RATE_CARDS";
    pub const JWT_SECRET: &str = "RINGLEDGER_JWT_SECRET";
    pub const OUTBOX_DIR: &str = "RINGLEDGER_OUTBOX_DIR";
    pub const TAX_TABLE: &str = "RINGLEDGER_TAX_TABLE";
    pub const TAXABILITY: &str = "RINGLEDGER_TAXABILITY";
}

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use ledger::store::all_entries;
use ledger::{
    display_usd, AccountId, Amount, BillingItem, EntryKind, EntryQuery, LedgerStore, NewAccount,
    Posting, PostingResult, PostingRule, Show, SourceId, StoreError, TermsAcceptance,
};
use store_dynamodb::{client_for_endpoint, create_table, DynamoStore};
use store_sqlite::{Durability, SqliteStore};

#[derive(Parser)]
#[command(name = "ringledger", version, about = "ringledger: prepaid telephony billing, locally")]
struct Cli {
    /// Which ledger store to use.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite, env = env_names::STORE, global = true)]
    store: StoreKind,
    /// The embedded store's database file.
    #[arg(long, default_value = "ringledger.db", env = env_names::DB, global = true)]
    db: String,
    /// DynamoDB endpoint (e.g. DynamoDB Local); omit for AWS.
    #[arg(long, env = env_names::DYNAMODB_ENDPOINT, global = true)]
    endpoint: Option<String>,
    /// DynamoDB table name.
    #[arg(long, default_value = "ringledger", env = env_names::TABLE, global = true)]
    table: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    Sqlite,
    Dynamodb,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (account routes, operator routes, the platform's authorization route)
    /// on the chosen store, with the simulated card processor.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080", env = env_names::ADDR)]
        addr: String,
        /// The platform's bearer token for `POST /v1/authorizations`.
        #[arg(long, env = env_names::PLATFORM_TOKEN, default_value = "dev-platform-token")]
        platform_token: String,
        #[command(flatten)]
        rate_cards: RateCardFile,
        /// Where the notification worker writes each email, as an `.eml` file.
        #[arg(long, env = env_names::OUTBOX_DIR, default_value = "outbox")]
        outbox_dir: std::path::PathBuf,
        /// The tables of the hourly tax catch-up.
        #[command(flatten)]
        tax: jobs_local::TaxFiles,
    },
    /// Issue a development token (HS256, signed with the local secret) for the API.
    Token {
        /// The account the token belongs to (not needed for operators).
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t = RoleArg::Admin)]
        role: RoleArg,
        #[arg(long, default_value = "dev@localhost")]
        user: String,
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
    },
    /// Play the whole story through the in-process HTTP API: an operator creates an account, its
    /// admin sets it up and pays, a day of telephony traffic is rated and posted, a summary follows.
    Demo {
        /// The account to create (default: a fresh `demo-<unix seconds>` per run).
        #[arg(long)]
        account: Option<String>,
        /// How many usage events the day holds.
        #[arg(long, default_value_t = 1500)]
        events: usize,
        /// Where the notification worker writes each email, as an `.eml` file (default:
        /// `outbox` beside the database file).
        #[arg(long, env = env_names::OUTBOX_DIR)]
        outbox_dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        rate_cards: RateCardFile,
    },
    /// Create an account (prepaid unless a credit limit is given).
    CreateAccount {
        account: String,
        #[arg(long)]
        credit_limit_usd: Option<String>,
    },
    /// Record the account's acceptance of the terms of service (purchases need it).
    AcceptTerms {
        account: String,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "2026-01")]
        terms_version: String,
    },
    /// Show an account.
    Show { account: String },
    /// Credit an account (funds added, refund or adjustment).
    Credit {
        account: String,
        amount_usd: String,
        /// The idempotency id: the same id twice applies once.
        #[arg(long)]
        source: String,
        #[arg(long, default_value = "adjustment")]
        item: String,
    },
    /// Debit an account for completed usage (always posts) or a purchase (`--purchase`).
    Debit {
        account: String,
        amount_usd: String,
        #[arg(long)]
        source: String,
        #[arg(long, default_value = "adjustment")]
        item: String,
        /// Refuse if it would take the balance below the floor.
        #[arg(long)]
        purchase: bool,
    },
    /// Rate and post telephony usage events (schema v1) from files: `.json` holds one event,
    /// `.jsonl` one per line. Prints what failed and why; redelivering a file changes nothing.
    Ingest {
        files: Vec<std::path::PathBuf>,
        #[command(flatten)]
        rate_cards: RateCardFile,
    },
    /// Tax every account's usage of a month (default: last month, UTC) by its service address's
    /// jurisdiction, with a progress bar. Re-running (a backfill, an overlap) posts nothing twice.
    Tax {
        /// `YYYY-MM`.
        #[arg(long)]
        month: Option<String>,
        #[command(flatten)]
        tax: jobs_local::TaxFiles,
    },
    /// A statement for a UTC date range: prints the summary; `--csv` writes the lines, `--send`
    /// emails it (HTML + CSV attachment) into the outbox folder.
    Statement {
        account: String,
        /// First UTC day (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last UTC day, included (YYYY-MM-DD).
        #[arg(long)]
        to: chrono::NaiveDate,
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
        #[arg(long)]
        send: bool,
        /// Send to these addresses instead of the billing contacts (repeatable).
        #[arg(long)]
        recipient: Vec<String>,
        #[arg(long, env = env_names::OUTBOX_DIR, default_value = "outbox")]
        outbox_dir: std::path::PathBuf,
    },
    /// Send every account that asks for them its scheduled statements for the previous period
    /// (monthly: last month; weekly: last Monday to Sunday), with a progress bar. Each period is
    /// sent once however often this runs.
    Statements {
        #[arg(long, value_enum)]
        cadence: CadenceArg,
        #[arg(long, env = env_names::OUTBOX_DIR, default_value = "outbox")]
        outbox_dir: std::path::PathBuf,
    },
    /// List entries as the API's activity CSV, oldest first, optionally by kind and by the UTC
    /// range [from, to) of their posting time (RFC 3339).
    Activity {
        account: String,
        /// Entries posted at or after this time.
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Entries posted before this time (excluded).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = ShowArg::All)]
        show: ShowArg,
    },
}

/// The operator's rate cards, for every command that rates usage (`serve`, `demo`, `ingest`).
#[derive(clap::Args, Clone, Debug, Default)]
struct RateCardFile {
    /// Operator rate-card file (`{"standard": ..., "cards": {...}}`; default: the standard
    /// card only).
    #[arg(long, env = env_names::RATE_CARDS)]
    rate_cards: Option<std::path::PathBuf>,
}

impl RateCardFile {
    fn load(&self) -> Result<usage::worker::RateCards, Box<dyn std::error::Error>> {
        Ok(match &self.rate_cards {
            Some(path) => usage::worker::RateCards::from_json(&std::fs::read_to_string(path)?)?,
            None => usage::worker::RateCards::standard_only(),
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CadenceArg {
    Monthly,
    Weekly,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Viewer,
    Admin,
    Operator,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowArg {
    All,
    Debits,
    Credits,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// The local signing secret: `RINGLEDGER_JWT_SECRET`, else a random one kept beside the
/// database (`<db>.jwt-secret`, created on first use) so `token` and `serve` agree.
fn jwt_secret(cli: &Cli) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    if let Ok(secret) = std::env::var(env_names::JWT_SECRET) {
        return Ok(secret.into_bytes());
    }
    let path = format!("{}.jwt-secret", cli.db);
    if let Ok(secret) = std::fs::read(&path) {
        return Ok(secret);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut secret = String::new();
    for _ in 0..4 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos(),
        );
        secret.push_str(&format!("{:016x}", h.finish()));
    }
    std::fs::write(&path, &secret)?;
    Ok(secret.into_bytes())
}

async fn open_full_store(cli: &Cli) -> Result<Arc<dyn api::state::Store>, StoreError> {
    Ok(match cli.store {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&cli.db, Durability::Full)?),
        StoreKind::Dynamodb => {
            let client = client_for_endpoint(cli.endpoint.as_deref()).await;
            if cli.endpoint.is_some() {
                create_table(&client, &cli.table).await?;
            }
            Arc::new(DynamoStore::new(client, cli.table.clone()))
        }
    })
}

async fn serve(
    cli: &Cli,
    addr: &str,
    platform_token: &str,
    rate_cards: &RateCardFile,
    outbox_dir: &std::path::Path,
    tax: &jobs_local::TaxFiles,
) -> CliResult {
    let store = open_full_store(cli).await?;
    let cards = rate_cards.load()?;
    // One processor for the API and the workers: the cards registered through the API are the
    // ones auto-recharge charges.
    let processor = simulated_processor(cli)?;
    std::fs::create_dir_all(outbox_dir)?;
    let workers =
        pipeline::Pipeline::new(store.clone(), processor.clone(), outbox_dir.to_path_buf());
    let jobs = Arc::new(
        jobs_local::workers(store.clone(), outbox_dir, Some(tax)).map_err(|e| e.to_string())?,
    );
    let state = Arc::new(api::state::AppState {
        store: store.clone(),
        cards: cards.clone(),
        processor: processor.clone(),
        notices: Some(workers.notices.clone()),
        statements: Some(Arc::new(jobs_local::DirectJobs((*jobs).clone()))),
    });
    let jwt = api::auth::LocalJwt::new(jwt_secret(cli)?);
    let authorization =
        api::authorization::router(Arc::new(api::authorization::AuthorizationState {
            store: store.clone(),
            cards,
            platform: api::authorization::PlatformAuth::Token(platform_token.to_string()),
            max_call_seconds: usage::authorize::DEFAULT_MAX_CALL_SECONDS,
        }));
    let app = authorization.merge(api::app::local(state, jwt));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("ringledger API on http://{} (OpenAPI at /openapi.json)", listener.local_addr()?);
    eprintln!("issue a token: ringledger token --account <id> --role admin");
    eprintln!(
        "workers (auto-recharge, notifications) relay the outbox every second; emails are \
         written to {} as .eml files",
        outbox_dir.display()
    );
    tokio::spawn(Arc::new(workers).run(std::time::Duration::from_secs(1)));
    // The schedules: last month's tax and the scheduled statements, at start and every hour
    // (each idempotent, so catching up after downtime is just running them again).
    let scheduled_store = store.clone();
    tokio::spawn(async move {
        loop {
            jobs_local::catch_up(&*scheduled_store, &jobs, Utc::now()).await;
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// The simulated card processor, kept beside the embedded store (`<db>.processor.json`) so
/// that customers, cards and payments survive a restart as the ledger does.
fn simulated_processor(cli: &Cli) -> std::io::Result<Arc<payments::SimulatedProcessor>> {
    match cli.store {
        StoreKind::Sqlite => {
            Ok(Arc::new(payments::SimulatedProcessor::open(format!("{}.processor.json", cli.db))?))
        }
        _ => Ok(Arc::new(payments::SimulatedProcessor::new())),
    }
}

async fn open_store(cli: &Cli) -> Result<Arc<dyn LedgerStore>, StoreError> {
    Ok(match cli.store {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&cli.db, Durability::Full)?),
        StoreKind::Dynamodb => {
            let client = client_for_endpoint(cli.endpoint.as_deref()).await;
            if cli.endpoint.is_some() {
                create_table(&client, &cli.table).await?;
            }
            Arc::new(DynamoStore::new(client, cli.table.clone()))
        }
    })
}

fn item(name: &str) -> Result<BillingItem, String> {
    BillingItem::parse(name).ok_or_else(|| {
        let names: Vec<&str> = BillingItem::ALL.iter().map(|i| i.as_str()).collect();
        format!("unknown billing item {name:?}; one of {}", names.join(", "))
    })
}

async fn show(store: &dyn LedgerStore, id: &AccountId) -> CliResult {
    let account = store.account(id).await?.ok_or_else(|| format!("no account {id}"))?;
    println!("account   {}", account.id);
    println!(
        "balance   {} (exact {})",
        display_usd(account.balance_usd),
        account.balance_usd.normalize()
    );
    println!("status    {:?}", account.status);
    println!("floor     {}", display_usd(account.floor_usd()));
    println!("entries   {}", account.last_seq);
    Ok(())
}

fn report(results: &[PostingResult]) {
    for result in results {
        match result {
            PostingResult::Applied { seq, balance_after_usd } => {
                println!("applied as entry {seq}; balance {}", display_usd(*balance_after_usd))
            }
            PostingResult::Duplicate { seq } => {
                println!("already applied as entry {seq}; nothing changed")
            }
            PostingResult::SourceIdReused { seq, kind, item, amount_usd } => println!(
                "source id already used by entry {seq} ({} {} of {}); nothing changed",
                item.as_str(),
                kind.as_str(),
                display_usd(amount_usd.value())
            ),
            PostingResult::Refused(reason) => println!("refused: {reason:?}"),
        }
    }
}

async fn accept_terms(
    store: &dyn LedgerStore,
    id: &AccountId,
    by: &str,
    version: &str,
) -> Result<(), StoreError> {
    let (by, version) = (by.to_string(), version.to_string());
    let now = Utc::now();
    store
        .modify_account(
            id,
            Arc::new(move |account| {
                account.terms = Some(TermsAcceptance {
                    version: version.clone(),
                    accepted_by: by.clone(),
                    accepted_at: now,
                });
                Ok(())
            }),
            now,
        )
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> CliResult {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve { addr, platform_token, rate_cards, outbox_dir, tax } => {
            return serve(&cli, addr, platform_token, rate_cards, outbox_dir, tax).await;
        }
        Command::Demo { account, events, outbox_dir, rate_cards } => {
            let outbox_dir = outbox_dir.clone().unwrap_or_else(|| {
                let db = std::path::Path::new(&cli.db);
                db.parent().unwrap_or(std::path::Path::new("")).join("outbox")
            });
            let cards = rate_cards.load()?;
            return demo::run(&cli, account.as_deref(), *events, &outbox_dir, cards).await;
        }
        Command::Token { account, role, user, ttl_seconds } => {
            let role = match role {
                RoleArg::Viewer => api::auth::Role::Viewer,
                RoleArg::Admin => api::auth::Role::Admin,
                RoleArg::Operator => api::auth::Role::Operator,
            };
            let jwt = api::auth::LocalJwt::new(jwt_secret(&cli)?);
            println!("{}", jwt.issue(user, account.as_deref(), role, *ttl_seconds));
            return Ok(());
        }
        Command::Tax { month, tax } => {
            let store = open_full_store(&cli).await?;
            let month = month.clone().unwrap_or_else(|| tax::previous_month(Utc::now()));
            tax::parse_month(&month).map_err(|e| e.to_string())?;
            if month >= ledger::month_of(Utc::now()) {
                return Err(format!(
                    "{month} is not over yet; a month is taxed once it has ended (UTC)"
                )
                .into());
            }
            // The tax job sends no email: the outbox folder is never written.
            let workers =
                jobs_local::workers(store.clone(), std::path::Path::new("outbox"), Some(tax))
                    .map_err(|e| e.to_string())?;
            println!("taxing {month} for every account:");
            let make = |account_id| jobs::Job::Tax { account_id, month: month.clone() };
            let counts = jobs_local::run_all(&*store, &workers, make, true)
                .await
                .map_err(|e| e.to_string())?;
            for (outcome, count) in &counts {
                println!("  {outcome:<20} {count}");
            }
            if counts.contains_key("failed") {
                return Err("some accounts failed (listed above); run again to retry them".into());
            }
            return Ok(());
        }
        Command::Statement { account, from, to, csv, send, recipient, outbox_dir } => {
            let store = open_full_store(&cli).await?;
            let id = AccountId::parse(account.as_str())?;
            let statement = ledger::statement::statement_for(&*store, &id, *from, *to).await?;
            println!("statement {} {from} to {to}", statement.account_id);
            println!("  opening balance   {}", display_usd(statement.opening_balance_usd));
            println!("  card payments     {}", display_usd(statement.card_payments_usd));
            println!("  other credits     {}", display_usd(statement.other_credits_usd));
            for (item, total) in &statement.usage_by_item {
                println!("  {:<17} {}", item.as_str(), display_usd(-*total));
            }
            println!("  taxes             {}", display_usd(-statement.taxes_usd));
            println!("  other debits      {}", display_usd(-statement.other_debits_usd));
            println!("  closing balance   {}", display_usd(statement.closing_balance_usd));
            println!("  lines             {}", statement.lines.len());
            if let Some(path) = csv {
                std::fs::write(path, notifications::statement::statement_csv(&statement))?;
                println!("CSV written to {}", path.display());
            }
            if *send {
                std::fs::create_dir_all(outbox_dir)?;
                let workers = jobs_local::workers(store.clone(), outbox_dir, None)
                    .map_err(|e| e.to_string())?;
                let request = notifications::statement::StatementRequest {
                    id: format!("statement:cli:{from}:{to}:{}", Utc::now().timestamp_micros()),
                    account_id: id,
                    from: *from,
                    to: *to,
                    recipients: (!recipient.is_empty()).then(|| recipient.clone()),
                    requested_at: Utc::now(),
                };
                let outcome = workers
                    .handle(&jobs::Job::Statement(request))
                    .await
                    .map_err(|e| e.to_string())?;
                println!("email: {outcome} (outbox: {})", outbox_dir.display());
            }
            return Ok(());
        }
        Command::Statements { cadence, outbox_dir } => {
            let store = open_full_store(&cli).await?;
            std::fs::create_dir_all(outbox_dir)?;
            let workers =
                jobs_local::workers(store.clone(), outbox_dir, None).map_err(|e| e.to_string())?;
            let cadence = match cadence {
                CadenceArg::Monthly => jobs::statements::Cadence::Monthly,
                CadenceArg::Weekly => jobs::statements::Cadence::Weekly,
            };
            let (from, to) = cadence.previous_period(Utc::now().date_naive());
            println!("{} statements for {from} to {to}:", cadence.as_str());
            let make = |account_id| jobs::Job::ScheduledStatement { account_id, cadence, from, to };
            let counts = jobs_local::run_all(&*store, &workers, make, true)
                .await
                .map_err(|e| e.to_string())?;
            for (outcome, count) in &counts {
                println!("  {outcome:<20} {count}");
            }
            return Ok(());
        }
        _ => {}
    }
    let store = open_store(&cli).await?;
    let now = Utc::now();
    match &cli.command {
        Command::Serve { .. }
        | Command::Token { .. }
        | Command::Demo { .. }
        | Command::Tax { .. }
        | Command::Statement { .. }
        | Command::Statements { .. } => {
            unreachable!("handled above")
        }
        Command::CreateAccount { account, credit_limit_usd } => {
            let credit_limit_usd = credit_limit_usd.as_deref().map(Amount::from_str).transpose()?;
            let id = AccountId::parse(account.as_str())?;
            store.create_account(NewAccount { id: id.clone(), credit_limit_usd }, now).await?;
            show(&*store, &id).await?;
        }
        Command::AcceptTerms { account, by, terms_version } => {
            let id = AccountId::parse(account.as_str())?;
            accept_terms(&*store, &id, by, terms_version).await?;
            println!("terms {terms_version} accepted by {by}");
        }
        Command::Show { account } => show(&*store, &AccountId::parse(account.as_str())?).await?,
        Command::Credit { account, amount_usd, source, item: name } => {
            let posting = Posting::credit(
                SourceId::parse(source.as_str())?,
                item(name)?,
                Amount::from_str(amount_usd)?,
                now,
            )?;
            let id = AccountId::parse(account.as_str())?;
            report(&store.post(&id, vec![posting], now).await?.results);
        }
        Command::Debit { account, amount_usd, source, item: name, purchase } => {
            let rule = if *purchase { PostingRule::RefuseBelowFloor } else { PostingRule::Always };
            let posting = Posting::new(
                SourceId::parse(source.as_str())?,
                EntryKind::Debit,
                item(name)?,
                Amount::from_str(amount_usd)?,
                rule,
                now,
            )?;
            let id = AccountId::parse(account.as_str())?;
            report(&store.post(&id, vec![posting], now).await?.results);
        }
        Command::Ingest { files, rate_cards } => {
            let cards = rate_cards.load()?;
            let mut messages = Vec::new();
            for file in files {
                let text = std::fs::read_to_string(file)?;
                let is_lines = file.extension().is_some_and(|e| e == "jsonl");
                let bodies: Vec<&str> = if is_lines {
                    text.lines().filter(|l| !l.trim().is_empty()).collect()
                } else {
                    vec![text.as_str()]
                };
                for (line, body) in bodies.into_iter().enumerate() {
                    let id = format!("{}:{}", file.display(), line + 1);
                    messages.push(usage::worker::Message { id, body: body.to_string() });
                }
            }
            let mut applied = 0;
            let mut duplicates = 0;
            let mut failed = 0;
            let mut refused = 0;
            for chunk in messages.chunks(usage::worker::MAX_EVENTS_PER_POST) {
                let report =
                    usage::worker::process_batch(store.clone(), &cards, None, chunk.to_vec()).await;
                applied += report.postings_applied;
                duplicates += report.postings_duplicate;
                refused += report.postings_refused;
                for failure in &report.failures {
                    failed += 1;
                    println!("failed {}: {}", failure.message_id, failure.reason);
                }
            }
            println!(
                "{} events: {applied} charges applied, {duplicates} already applied, \
                 {refused} purchases refused (not charged), {failed} failed",
                messages.len()
            );
        }
        Command::Activity { account, from, to, show } => {
            let show = match show {
                ShowArg::All => Show::All,
                ShowArg::Debits => Show::Debits,
                ShowArg::Credits => Show::Credits,
            };
            let query = EntryQuery { from: *from, to: *to, show, ..Default::default() };
            let id = AccountId::parse(account.as_str())?;
            let entries = all_entries(&*store, &id, query).await?;
            // The API's CSV (`GET /v1/activity.csv`): the same columns, the same cells.
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, api::account::csv_header().as_bytes())?;
            for entry in &entries {
                std::io::Write::write_all(&mut out, api::account::csv_row(entry).as_bytes())?;
            }
        }
    }
    Ok(())
}

/// `ringledger demo`: the whole story through the real HTTP routes (in process, via
/// `tower::ServiceExt::oneshot`), the usage worker's real batch path and the real auto-recharge
/// and notification workers (`pipeline`), on the chosen store.
mod demo {
    use std::collections::{BTreeMap, HashMap};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::SystemTime;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
    use indicatif::{ProgressBar, ProgressStyle};
    use ledger::store::all_entries;
    use ledger::{
        display_usd, AccountId, BillingItem, Entry, EntryKind, EntryQuery, LedgerEvent,
        LedgerEventKind, LedgerStore,
    };
    use rust_decimal::Decimal;
    use serde_json::{json, Value};
    use store_dynamodb::{client_for_endpoint, create_table, DynamoStore};
    use store_sqlite::{Durability, SqliteStore};
    use tower::ServiceExt;

    use super::pipeline::{Pipeline, Round};
    use super::{jwt_secret, Cli, CliResult, StoreKind};

    type DemoError = Box<dyn std::error::Error>;

    /// How many pending outbox events are read at once (the outbox holds every account's).
    const OUTBOX_SCAN: u32 = 10_000;
    /// At most this many extra worker rounds after the day, while they still get work done
    /// (a round relays at most 200 events, of every account).
    const DRAIN_ROUNDS: usize = 20;
    /// At most this many emails are listed one by one in the summary.
    const EMAILS_LISTED: usize = 40;
    /// Hours of the (UTC) day per line of the balance chart.
    const BUCKET_HOURS: u32 = 2;

    /// The same store as two trait objects: the API's (ledger + documents) and the worker's.
    async fn open(
        cli: &Cli,
    ) -> Result<(Arc<dyn api::state::Store>, Arc<dyn LedgerStore>), DemoError> {
        Ok(match cli.store {
            StoreKind::Sqlite => {
                let store = Arc::new(SqliteStore::open(&cli.db, Durability::Full)?);
                (store.clone(), store)
            }
            StoreKind::Dynamodb => {
                let client = client_for_endpoint(cli.endpoint.as_deref()).await;
                if cli.endpoint.is_some() {
                    create_table(&client, &cli.table).await?;
                }
                let store = Arc::new(DynamoStore::new(client, cli.table.clone()));
                (store.clone(), store)
            }
        })
    }

    /// The in-process API, called as a client would call it.
    struct Api {
        app: axum::Router,
    }

    impl Api {
        async fn call(
            &self,
            method: &str,
            path: &str,
            token: &str,
            body: Option<Value>,
            idempotency_key: Option<&str>,
        ) -> Result<(StatusCode, Value), DemoError> {
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"));
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
            let response = self.app.clone().oneshot(request.body(body)?).await?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            let value =
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
            Ok((status, value))
        }

        /// Call, insist on the expected status, and print one line of the story.
        async fn step(
            &self,
            (method, path): (&str, &str),
            token: &str,
            body: Option<Value>,
            idempotency_key: Option<&str>,
            expected: StatusCode,
            what: impl FnOnce(&Value) -> String,
        ) -> Result<Value, DemoError> {
            let (status, value) = self.call(method, path, token, body, idempotency_key).await?;
            if status != expected {
                return Err(format!("{method} {path} answered {status}: {value}").into());
            }
            say(method, path, status, &what(&value));
            Ok(value)
        }
    }

    fn say(method: &str, path: &str, status: StatusCode, what: &str) {
        println!("  {method:<4} {path:<28} {:>3}  {what}", status.as_u16());
    }

    /// A decimal string of the API as dollars to the cent.
    fn usd(value: &Value) -> String {
        value
            .as_str()
            .and_then(|v| v.parse::<Decimal>().ok())
            .map_or_else(|| "?".into(), display_usd)
    }

    /// A recharge request the ledger raised for the demo account; the auto-recharge worker
    /// settles it (the summary finds its credit by the request id, the credit's source id).
    struct Recharge {
        request_id: String,
        raised_at_seq: u64,
        balance_when_raised: Decimal,
    }

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
                if event.account_id == *id
                    && !self.requests.iter().any(|r| r.request_id == *request_id)
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

    pub async fn run(
        cli: &Cli,
        account: Option<&str>,
        events: usize,
        outbox_dir: &Path,
        cards: usage::worker::RateCards,
    ) -> CliResult {
        let (store, ledger) = open(cli).await?;
        // One processor for the API and the workers: the cards registered through the API are
        // the ones auto-recharge charges.
        let processor = super::simulated_processor(cli)?;
        std::fs::create_dir_all(outbox_dir)?;
        let emails_before = eml_files(outbox_dir)?;
        let pipeline = Pipeline::new(store.clone(), processor.clone(), outbox_dir.to_path_buf());
        let state = Arc::new(api::state::AppState {
            store: store.clone(),
            cards: cards.clone(),
            processor: processor.clone(),
            notices: Some(pipeline.notices.clone()),
            statements: None,
        });
        let mut workers = Workers { pipeline, totals: Round::default(), requests: Vec::new() };
        let jwt = api::auth::LocalJwt::new(jwt_secret(cli)?);
        let api = Api { app: api::app::local(state, jwt.clone()) };
        let operator = jwt.issue("ops@ringledger.example", None, api::auth::Role::Operator, 3600);

        // 1. The account and its setup, all through the routes.
        println!("ringledger demo on {}", store_name(cli));
        println!("\nsetup through the HTTP API (in process):");
        let stamp = Utc::now().timestamp();
        let mut attempt = 0;
        let id = loop {
            let name = match (account, attempt) {
                (Some(name), _) => name.to_string(),
                (None, 0) => format!("demo-{stamp}"),
                (None, n) => format!("demo-{stamp}-{n}"),
            };
            let body = json!({ "account_id": name });
            let (status, value) =
                api.call("POST", "/v1/operator/accounts", &operator, Some(body), None).await?;
            match status {
                StatusCode::CREATED => {
                    let what = format!("the operator creates prepaid account {name}");
                    say("POST", "/v1/operator/accounts", status, &what);
                    break AccountId::parse(name)?;
                }
                StatusCode::CONFLICT if account.is_none() && attempt < 20 => attempt += 1,
                StatusCode::CONFLICT => {
                    return Err(format!(
                        "account {name} exists: the demo sets up a new account each run (the \
                         simulated card processor keeps no state between runs); omit --account \
                         or pick another id"
                    )
                    .into())
                }
                _ => {
                    return Err(
                        format!("POST /v1/operator/accounts answered {status}: {value}").into()
                    )
                }
            }
        };
        let admin_email = format!("admin@{id}.example");
        let admin = jwt.issue(&admin_email, Some(id.as_str()), api::auth::Role::Admin, 3600);
        api.step(
            ("POST", "/v1/terms"),
            &admin,
            Some(json!({ "version": "2026-01" })),
            None,
            StatusCode::OK,
            |_| format!("its admin accepts terms 2026-01 ({admin_email})"),
        )
        .await?;
        api.step(
            ("PUT", "/v1/settings/contacts"),
            &admin,
            Some(json!({
                "billing_emails": [format!("billing@{id}.example")],
                "recharge_failure_email": format!("finance@{id}.example"),
                "critical_phone": "+14155550100",
            })),
            None,
            StatusCode::OK,
            |_| "billing and recharge-failure emails, critical phone".into(),
        )
        .await?;
        for (token, role) in [("pm_card_visa", "primary"), ("pm_card_mastercard", "backup")] {
            let body = json!({
                "payment_method_token": token,
                "card_manager_email": admin_email,
                "role": role,
            });
            api.step(("POST", "/v1/cards"), &admin, Some(body), None, StatusCode::CREATED, |v| {
                let card = &v["card"];
                let (brand, last4) = (&card["brand"], &card["last4"]);
                format!(
                    "{role} card {} {} ({token})",
                    brand.as_str().unwrap_or("?"),
                    last4.as_str().unwrap_or("?")
                )
            })
            .await?;
        }
        api.step(
            ("PUT", "/v1/settings/low-balance"),
            &admin,
            Some(json!({ "level_usd": "20" })),
            None,
            StatusCode::OK,
            |_| "low-balance notice below $20.00".into(),
        )
        .await?;
        api.step(
            ("PUT", "/v1/settings/auto-recharge"),
            &admin,
            Some(json!({
                "enabled": true, "amount_usd": "50", "threshold_usd": "15", "mode": "top_up_to",
            })),
            None,
            StatusCode::OK,
            |_| "auto-recharge on: below $15.00, top up to $50.00".into(),
        )
        .await?;
        // Enabling auto-recharge on an empty balance asks for a recharge at once; the
        // auto-recharge worker charges the primary card and credits it.
        workers.relay(&*ledger, &id).await?;
        let entries = all_entries(&*ledger, &id, EntryQuery::default()).await?;
        let payments = fetch_payments(&api, &admin).await?;
        for recharge in &workers.requests {
            let what = match settlement(recharge, &entries, &payments) {
                Some((credit, payment)) => format!(
                    "{} on {} settles {} (raised at once: the balance was {}); balance {}",
                    display_usd(credit.amount_usd.value()),
                    payment.map(card_of).unwrap_or_else(|| "?".into()),
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
                ("POST", "/v1/payments"),
                &admin,
                Some(json!({ "amount_usd": "25" })),
                Some(&initial_key),
                StatusCode::CREATED,
                |v| {
                    let balance = usd(&v["payment"]["balance_after_usd"]);
                    format!("Pay Now $25.00 (Idempotency-Key {initial_key}); balance {balance}")
                },
            )
            .await?;
        let initial_payment = paid["payment"]["payment_id"].as_str().map(str::to_string);
        let setup_seq = ledger.account(&id).await?.ok_or("the demo account vanished")?.last_seq;

        // 2. A day of traffic through the usage worker's batch path.
        let day = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight exists");
        let day = Utc.from_utc_datetime(&day);
        let bodies = day_of_traffic(&id, stamp, day, events);
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
        // A round relays at most 200 events of every account: finish what is left.
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
        let entries: Vec<Entry> = all_entries(&*ledger, &id, EntryQuery::default()).await?;
        let account = ledger.account(&id).await?.ok_or("the demo account vanished")?;
        ledger::verify_chain(account.opening_balance_usd, &entries, account.balance_usd)?;
        let clock = simulated_clock(&entries, day);
        print_balance_over_day(&entries, &clock, day, setup_seq);
        print_by_item(&entries);
        let payments = fetch_payments(&api, &admin).await?;
        let mut notes: HashMap<String, String> = HashMap::new();
        if let Some(payment) = initial_payment {
            notes.insert(payment, "Pay Now by the admin".into());
        }
        for recharge in &workers.requests {
            // Every attempt of the worker (`<request id>:a<attempt>:<card>`), declined ones too.
            let attempts = format!("{}:a", recharge.request_id);
            for p in &payments {
                let payment_id = p["payment_id"].as_str().unwrap_or_default();
                if p["trigger"] == "auto" && payment_id.starts_with(&attempts) {
                    notes.insert(payment_id.into(), format!("for {}", recharge.request_id));
                }
            }
            if let Some((_, Some(payment))) = settlement(recharge, &entries, &payments) {
                if let Some(payment_id) = payment["payment_id"].as_str() {
                    notes.insert(payment_id.into(), format!("settles {}", recharge.request_id));
                }
            }
        }
        print_payments(&payments, &notes);
        print_recharges(&workers, &entries, &clock, &payments, &account);
        print_emails(&workers.pipeline.outbox_dir, &emails_before, &id)?;
        print_still_pending(&*ledger, &id).await?;

        let overview = api.call("GET", "/v1/overview", &admin, None, None).await?.1;
        println!(
            "\nfinal balance of {id}: {} (exact {}), status {}; {} entries, chain verified \
             (balance = opening + credits - debits)",
            overview["balance_display"].as_str().unwrap_or("?"),
            overview["balance_usd"].as_str().unwrap_or("?"),
            overview["status"].as_str().unwrap_or("?"),
            entries.len(),
        );
        let db = match cli.store {
            StoreKind::Sqlite if cli.db != "ringledger.db" => format!(" --db {}", cli.db),
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

    fn store_name(cli: &Cli) -> String {
        match cli.store {
            StoreKind::Sqlite => format!("the embedded store {}", cli.db),
            StoreKind::Dynamodb => format!("DynamoDB table {}", cli.table),
        }
    }

    /// A small deterministic generator (xorshift64*): the same day every run.
    struct Dice(u64);

    impl Dice {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn percent(&mut self) -> u64 {
            self.below(100)
        }
    }

    /// Calls per hour of the UTC day, relative: quiet nights, a business-day peak.
    const HOURLY_WEIGHT: [u64; 24] =
        [2, 1, 1, 1, 1, 2, 4, 8, 12, 15, 16, 15, 12, 13, 15, 15, 13, 10, 7, 5, 4, 3, 3, 2];

    /// `count` usage messages (schema v1) spread over `day`, in time order: mostly calls (local,
    /// long-distance, international, toll-free, unanswered with ring-through attempts, internal,
    /// some with premium services), SMS both ways, a number renewal and a number purchase.
    fn day_of_traffic(id: &AccountId, stamp: i64, day: DateTime<Utc>, count: usize) -> Vec<String> {
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        let total_weight: u64 = HOURLY_WEIGHT.iter().sum();
        let mut times: Vec<DateTime<Utc>> = (0..count)
            .map(|_| {
                let mut pick = dice.below(total_weight);
                let mut hour = 0;
                while pick >= HOURLY_WEIGHT[hour] {
                    pick -= HOURLY_WEIGHT[hour];
                    hour += 1;
                }
                let micros = dice.below(3_600_000_000) as i64;
                day + Duration::hours(hour as i64) + Duration::microseconds(micros)
            })
            .collect();
        times.sort();
        let ours = "+14155550100";
        let number = |dice: &mut Dice, prefix: &str| format!("{prefix}{:04}", dice.below(10_000));
        let areas = ["+1415555", "+1212555", "+1312555", "+1617555", "+1206555", "+1512555"];
        times
            .into_iter()
            .enumerate()
            .map(|(i, at)| {
                let (kind, data) = if i == 0 {
                    ("number_renewal", json!({ "number": "+18005550100", "number_type": "toll_free" }))
                } else if i == count / 3 {
                    ("number_purchase", json!({ "number": "+14155550142", "number_type": "local" }))
                } else {
                    let area = areas[dice.below(areas.len() as u64) as usize];
                    let short = 15 + dice.below(180);
                    let long = 300 + dice.below(1_500);
                    let duration = if dice.percent() < 15 { long } else { short };
                    match dice.percent() {
                        0..=33 => ("call", json!({
                            "direction": "outbound", "from": ours, "to": number(&mut dice, area),
                            "answered": true, "duration_seconds": duration,
                        })),
                        34..=41 => ("call", json!({
                            "direction": "outbound", "from": ours, "to": number(&mut dice, area),
                            "answered": false, "duration_seconds": 0,
                            "ring_through_attempts": 1 + dice.below(3),
                        })),
                        42..=45 => {
                            let to = if dice.percent() < 70 { "+447700900" } else { "+5255123" };
                            ("call", json!({
                                "direction": "outbound", "from": ours,
                                "to": format!("{to}{:03}", dice.below(1_000)),
                                "answered": true, "duration_seconds": 60 + dice.below(840),
                                "premium": if dice.percent() < 40 { json!(["call_recording"]) } else { json!([]) },
                            }))
                        }
                        46..=59 => ("call", json!({
                            "direction": "inbound", "from": number(&mut dice, area), "to": ours,
                            "answered": true, "duration_seconds": duration,
                            "premium": if dice.percent() < 10 { json!(["enhanced_caller_id"]) } else { json!([]) },
                        })),
                        60..=63 => ("call", json!({
                            "direction": "inbound", "from": number(&mut dice, area),
                            "to": "+18005550100", "answered": true,
                            "duration_seconds": 45 + dice.below(400), "premium": ["transcription"],
                        })),
                        64..=65 => ("call", json!({
                            "direction": "outbound", "from": ours, "to": "+14155550101",
                            "answered": true, "duration_seconds": duration, "internal": true,
                        })),
                        66..=84 => ("sms_out", json!({
                            "from": ours, "to": number(&mut dice, area),
                            "segments": if dice.percent() < 80 { 1 } else { 2 + dice.below(2) },
                        })),
                        _ => ("sms_in", json!({
                            "from": number(&mut dice, area), "to": ours,
                            "segments": if dice.percent() < 85 { 1 } else { 2 },
                        })),
                    }
                };
                json!({
                    "version": 1,
                    "event_id": format!("day-{stamp}-{i:05}"),
                    "account_id": id,
                    "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "type": kind,
                    "data": data,
                })
                .to_string()
            })
            .collect()
    }

    /// When each entry happened in the replayed day: a usage entry when its event occurred; a
    /// payment (posted at the real time of the run) right after the entry before it.
    fn simulated_clock(entries: &[Entry], day: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let end = day + Duration::days(1) - Duration::microseconds(1);
        let mut now = day;
        entries
            .iter()
            .map(|e| {
                if e.item != BillingItem::FundsAdded {
                    now = e.occurred_at.clamp(day, end).max(now);
                }
                now
            })
            .collect()
    }

    fn print_balance_over_day(
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
            low[b] =
                Some(low[b].map_or(entry.balance_after_usd, |l| l.min(entry.balance_after_usd)));
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

    fn print_by_item(entries: &[Entry]) {
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

    /// Every payment of the account (GET /v1/payments, every page), oldest first.
    async fn fetch_payments(api: &Api, admin: &str) -> Result<Vec<Value>, DemoError> {
        let mut payments = Vec::new();
        let mut path = "/v1/payments?limit=200".to_string();
        loop {
            let (status, page) = api.call("GET", &path, admin, None, None).await?;
            if status != StatusCode::OK {
                return Err(format!("GET {path} answered {status}: {page}").into());
            }
            payments.extend(page["payments"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/payments?limit=200&cursor={cursor}"),
                None => break,
            }
        }
        // The API lists Pay Now attempts newest first, but the worker's payment ids
        // (`<request id>:a<attempt>:<card>`) do not sort by time: order by creation.
        payments.sort_by_key(|p| {
            p["created_at"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok())
        });
        Ok(payments)
    }

    /// The credit that settled a recharge request (its source id is the request id) and the
    /// payment behind it.
    fn settlement<'a>(
        recharge: &Recharge,
        entries: &'a [Entry],
        payments: &'a [Value],
    ) -> Option<(&'a Entry, Option<&'a Value>)> {
        let credit = entries
            .iter()
            .find(|e| e.kind == EntryKind::Credit && e.source_id.as_str() == recharge.request_id)?;
        let payment = payments.iter().find(|p| p["entry_seq"].as_u64() == Some(credit.seq));
        Some((credit, payment))
    }

    fn card_of(payment: &Value) -> String {
        format!(
            "{} {}",
            payment["card_brand"].as_str().unwrap_or("?"),
            payment["card_last4"].as_str().unwrap_or("?")
        )
    }

    fn print_payments(payments: &[Value], notes: &HashMap<String, String>) {
        println!(
            "\npayments (GET /v1/payments, by created_at; trigger auto: charged by the \
             auto-recharge worker, primary card first, backup on decline):"
        );
        for p in payments {
            let id = p["payment_id"].as_str().unwrap_or("?");
            println!(
                "  {:>9}  {:<10} {:<4}  {:<9}  trigger {:<6}  {}",
                usd(&p["amount_usd"]),
                p["card_brand"].as_str().unwrap_or("?"),
                p["card_last4"].as_str().unwrap_or("?"),
                p["status"].as_str().unwrap_or("?"),
                p["trigger"].as_str().unwrap_or("?"),
                notes.get(id).map(String::as_str).unwrap_or(""),
            );
        }
    }

    fn print_recharges(
        workers: &Workers,
        entries: &[Entry],
        clock: &[DateTime<Utc>],
        payments: &[Value],
        account: &ledger::Account,
    ) {
        let settled: Vec<_> =
            workers.requests.iter().filter_map(|r| settlement(r, entries, payments)).collect();
        let total: Decimal = settled.iter().map(|(credit, _)| credit.amount_usd.value()).sum();
        println!(
            "\nrecharge requests raised by the ledger: {}; the auto-recharge worker settled {} \
             for {} (each credited once, under its request id)",
            workers.requests.len(),
            settled.len(),
            display_usd(total),
        );
        for r in &workers.requests {
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
    fn eml_files(dir: &Path) -> std::io::Result<HashMap<PathBuf, Option<SystemTime>>> {
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
    fn print_emails(
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
    async fn print_still_pending(
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        // Catches clashing argument names and bad defaults, which clap only reports at run time.
        super::Cli::command().debug_assert();
    }

    /// Which commands read which variable. Global options (store, database, endpoint, table)
    /// reach every command; the JWT secret is read wherever a token is signed or checked.
    const USES: &[(&str, &[&str])] = &[
        (super::env_names::ADDR, &["serve"]),
        (super::env_names::PLATFORM_TOKEN, &["serve"]),
        (super::env_names::RATE_CARDS, &["serve", "demo", "ingest"]),
        (super::env_names::OUTBOX_DIR, &["serve", "demo", "statement", "statements"]),
        (super::env_names::TAX_TABLE, &["serve", "tax"]),
        (super::env_names::TAXABILITY, &["serve", "tax"]),
    ];

    const GLOBAL: &[&str] = &[
        super::env_names::STORE,
        super::env_names::DB,
        super::env_names::DYNAMODB_ENDPOINT,
        super::env_names::TABLE,
    ];

    /// The variables the README promises, from its sentence "every flag can also come from the
    /// environment (`A`, `B`, ...)".
    fn readme_variables() -> std::collections::BTreeSet<String> {
        let readme = include_str!("../../../README.md");
        let start = readme.find("can also come from the environment").expect("the sentence");
        let list = &readme[start..];
        let list = &list[..list.find(')').expect("the list ends")];
        list.split('`').filter(|p| p.starts_with("RINGLEDGER_")).map(str::to_string).collect()
    }

    fn env_of(command: &clap::Command) -> std::collections::BTreeSet<String> {
        command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_variable_the_readme_names_reaches_every_command_that_uses_it() {
        use clap::CommandFactory;
        let mut cli = super::Cli::command();
        cli.build();
        let mut declared: std::collections::BTreeSet<String> = env_of(&cli);
        declared.insert(super::env_names::JWT_SECRET.to_string());
        for command in cli.get_subcommands().filter(|c| c.get_name() != "help") {
            let name = command.get_name();
            let env = env_of(command);
            for global in GLOBAL {
                assert!(env.contains(*global), "{name} does not read {global}");
            }
            for (variable, users) in USES {
                assert_eq!(
                    env.contains(*variable),
                    users.contains(&name),
                    "{name} and {variable}: every command that uses it must read it"
                );
            }
            for variable in &env {
                let known =
                    GLOBAL.contains(&variable.as_str()) || USES.iter().any(|(v, _)| v == variable);
                assert!(known, "{name} reads {variable}: add it to USES and the README");
            }
            declared.extend(env);
        }
        assert_eq!(readme_variables(), declared, "the README's list and the runner's variables");
    }
}
