//! `ringledger`: the local runner and ops CLI, on the embedded store by default.
//!
//! This first cut carries the ledger's ops commands and a `demo`; the HTTP API (`serve`) and the
//! workers join it with their issues.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use rust_decimal::Decimal;

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
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite, env = "RINGLEDGER_STORE", global = true)]
    store: StoreKind,
    /// The embedded store's database file.
    #[arg(long, default_value = "ringledger.db", env = "RINGLEDGER_DB", global = true)]
    db: String,
    /// DynamoDB endpoint (e.g. DynamoDB Local); omit for AWS.
    #[arg(long, env = "RINGLEDGER_DYNAMODB_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// DynamoDB table name.
    #[arg(long, default_value = "ringledger", env = "RINGLEDGER_TABLE", global = true)]
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
        #[arg(long, default_value = "127.0.0.1:8080", env = "RINGLEDGER_ADDR")]
        addr: String,
        /// The platform's bearer token for `POST /v1/authorizations`.
        #[arg(long, env = "RINGLEDGER_PLATFORM_TOKEN", default_value = "dev-platform-token")]
        platform_token: String,
        /// Operator rate-card file (`{"standard": ..., "cards": {...}}`).
        #[arg(long, env = "RINGLEDGER_RATE_CARDS")]
        rate_cards: Option<std::path::PathBuf>,
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
    /// Seed an account, replay a small day of telephony usage and payments, print a summary.
    Demo {
        #[arg(long, default_value = "demo")]
        account: String,
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
        /// Operator rate-card file (`{"standard": ..., "cards": {...}}`).
        #[arg(long, env = "RINGLEDGER_RATE_CARDS")]
        rate_cards: Option<std::path::PathBuf>,
    },
    /// List entries, oldest first, optionally by UTC range (RFC 3339) and kind.
    Activity {
        account: String,
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = ShowArg::All)]
        show: ShowArg,
    },
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
    if let Ok(secret) = std::env::var("RINGLEDGER_JWT_SECRET") {
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
    rate_cards: Option<&std::path::Path>,
) -> CliResult {
    let store = open_full_store(cli).await?;
    let cards = match rate_cards {
        Some(path) => usage::worker::RateCards::from_json(&std::fs::read_to_string(path)?)?,
        None => usage::worker::RateCards::standard_only(),
    };
    let state = Arc::new(api::state::AppState {
        store: store.clone(),
        cards: cards.clone(),
        processor: Arc::new(payments::SimulatedProcessor::new()),
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
    axum::serve(listener, app).await?;
    Ok(())
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

async fn demo(store: &dyn LedgerStore, name: &str) -> CliResult {
    let id = AccountId::parse(name)?;
    let now = Utc::now();
    match store.create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, now).await {
        Ok(_) | Err(StoreError::AccountExists(_)) => {}
        Err(error) => return Err(error.into()),
    }
    accept_terms(store, &id, "demo@example.com", "2026-01").await?;
    let day = now.format("%Y%m%d").to_string();
    let source = |s: &str| SourceId::parse(format!("demo-{day}-{s}"));
    let mut postings = vec![Posting::credit(
        source("pay")?,
        BillingItem::FundsAdded,
        Amount::from_str("25")?,
        now,
    )?];
    for i in 0..40 {
        let (item, amount) = match i % 4 {
            0 => (BillingItem::PhoneCall, "0.0140"),
            1 => (BillingItem::OutgoingSms, "0.0079"),
            2 => (BillingItem::IncomingSms, "0.0079"),
            _ => (BillingItem::CarrierSurcharge, "0.0030"),
        };
        postings.push(Posting::usage(
            source(&format!("u{i}"))?,
            item,
            Amount::from_str(amount)?,
            now,
        )?);
    }
    postings.push(Posting::new(
        source("number")?,
        EntryKind::Debit,
        BillingItem::PhoneNumber,
        Amount::from_str("1.15")?,
        PostingRule::RefuseBelowFloor,
        now,
    )?);
    // The whole day is delivered twice, as a queue may: the second delivery changes nothing.
    let first = store.post(&id, postings.clone(), now).await?;
    let second = store.post(&id, postings, now).await?;
    let applied = first.results.iter().filter(|r| matches!(r, PostingResult::Applied { .. }));
    let duplicates = second.results.iter().filter(|r| matches!(r, PostingResult::Duplicate { .. }));
    println!("first delivery:  {} postings applied", applied.count());
    println!("second delivery: {} recognised as duplicates", duplicates.count());
    let entries = all_entries(store, &id, EntryQuery::default()).await?;
    let mut by_item: std::collections::BTreeMap<&str, Decimal> = Default::default();
    for entry in &entries {
        *by_item.entry(entry.item.as_str()).or_default() += entry.signed_amount_usd();
    }
    println!("\nby billing item:");
    for (item, total) in by_item {
        println!("  {item:<20} {:>10}  (exact {})", display_usd(total), total.normalize());
    }
    println!();
    show(store, &id).await
}

#[tokio::main]
async fn main() -> CliResult {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve { addr, platform_token, rate_cards } => {
            return serve(&cli, addr, platform_token, rate_cards.as_deref()).await;
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
        _ => {}
    }
    let store = open_store(&cli).await?;
    let now = Utc::now();
    match &cli.command {
        Command::Serve { .. } | Command::Token { .. } => unreachable!("handled above"),
        Command::Demo { account } => demo(&*store, account).await?,
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
            let cards = match rate_cards {
                Some(path) => usage::worker::RateCards::from_json(&std::fs::read_to_string(path)?)?,
                None => usage::worker::RateCards::standard_only(),
            };
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
            for chunk in messages.chunks(usage::worker::MAX_EVENTS_PER_POST) {
                let report =
                    usage::worker::process_batch(store.clone(), &cards, None, chunk.to_vec()).await;
                applied += report.postings_applied;
                duplicates += report.postings_duplicate;
                for failure in &report.failures {
                    failed += 1;
                    println!("failed {}: {}", failure.message_id, failure.reason);
                }
            }
            println!(
                "{} events: {applied} charges applied, {duplicates} already applied, {failed} failed",
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
            println!("seq,posted_at,kind,item,amount_usd,balance_after_usd,source_id");
            for e in all_entries(&*store, &id, query).await? {
                println!(
                    "{},{},{},{},{},{},{}",
                    e.seq,
                    e.posted_at.to_rfc3339(),
                    e.kind.as_str(),
                    e.item.as_str(),
                    e.amount_usd,
                    e.balance_after_usd,
                    e.source_id
                );
            }
        }
    }
    Ok(())
}
