//! The command line: what each command takes, parsed at the edge. Ids, amounts, billing items
//! and months are checked by their value parsers, so a bad one is a clap usage error naming the
//! argument, before any store is opened.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use jobs::job::BoxError;
use ledger::{AccountId, Amount, BillingItem, SourceId};

/// The environment variables the runner reads, one constant each (the README lists them).
pub mod env_names {
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
    pub const STRIPE_WEBHOOK_SECRET: &str = "RINGLEDGER_STRIPE_WEBHOOK_SECRET";
}

#[derive(Parser)]
#[command(name = "ringledger", version, about = "ringledger: prepaid telephony billing, locally")]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Which store every command works on (global: accepted before or after the command).
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// Which ledger store to use.
    #[arg(long = "store", value_name = "STORE", value_enum, default_value_t = StoreKind::Sqlite, env = env_names::STORE, global = true)]
    pub kind: StoreKind,
    /// The embedded store's database file.
    #[arg(long, default_value = "ringledger.db", env = env_names::DB, global = true)]
    pub db: String,
    /// DynamoDB endpoint (e.g. DynamoDB Local); omit for AWS.
    #[arg(long, env = env_names::DYNAMODB_ENDPOINT, global = true)]
    pub endpoint: Option<String>,
    /// DynamoDB table name.
    #[arg(long, default_value = "ringledger", env = env_names::TABLE, global = true)]
    pub table: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Dynamodb,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API (account routes, operator routes, the platform's authorization route)
    /// on the chosen store, with the simulated card processor.
    Serve(ServeArgs),
    /// Issue a development token (HS256, signed with the local secret) for the API.
    Token(TokenArgs),
    /// Play the whole story through the in-process HTTP API: an operator creates an account, its
    /// admin sets it up and pays, a day of telephony traffic is rated and posted, a summary follows.
    Demo(DemoArgs),
    /// Play a postpaid account through its last two months: plan fee, usage, tax, an invoice on
    /// each 1st (emailed as .eml), charged to its pre-authorized card.
    DemoPostpaid(PostpaidDemoArgs),
    /// Create an account (prepaid unless a credit limit is given).
    CreateAccount {
        #[arg(value_parser = account_id)]
        account: AccountId,
        #[arg(long, value_parser = amount_usd, allow_negative_numbers = true)]
        credit_limit_usd: Option<Amount>,
    },
    /// Record the account's acceptance of the terms of service (purchases need it).
    AcceptTerms {
        #[arg(value_parser = account_id)]
        account: AccountId,
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "2026-01")]
        terms_version: String,
    },
    /// Show an account.
    Show {
        #[arg(value_parser = account_id)]
        account: AccountId,
    },
    /// Credit an account (funds added, refund or adjustment).
    Credit(PostingArgs),
    /// Debit an account for completed usage (always posts) or a purchase (`--purchase`).
    Debit {
        #[command(flatten)]
        posting: PostingArgs,
        /// Refuse if it would take the balance below the floor.
        #[arg(long)]
        purchase: bool,
    },
    /// Rate and post telephony usage events (schema v1) from files: `.json` holds one event,
    /// `.jsonl` one per line. Prints what failed and why; redelivering a file changes nothing.
    Ingest {
        files: Vec<PathBuf>,
        #[command(flatten)]
        rate_cards: RateCardFile,
    },
    /// Tax every account's usage of a month (default: last month, UTC) by its service address's
    /// jurisdiction, with a progress bar. Re-running (a backfill, an overlap) posts nothing twice.
    Tax {
        /// `YYYY-MM`.
        #[arg(long)]
        month: Option<ledger::Month>,
        #[command(flatten)]
        tax: TaxFiles,
    },
    /// A statement for a UTC date range: prints the summary; `--csv` writes the lines, `--send`
    /// emails it (HTML + CSV attachment) into the outbox folder.
    Statement(StatementArgs),
    /// Send every account that asks for them its scheduled statements for the previous period
    /// (monthly: last month; weekly: last Monday to Sunday), with a progress bar. Each period is
    /// sent once however often this runs.
    Statements {
        #[arg(long, value_enum)]
        cadence: CadenceArg,
        #[arg(long, env = env_names::OUTBOX_DIR, default_value = "outbox")]
        outbox_dir: PathBuf,
    },
    /// List entries as the API's activity CSV, oldest first, optionally by kind and by the UTC
    /// range [from, to) of their posting time (RFC 3339).
    Activity {
        #[arg(value_parser = account_id)]
        account: AccountId,
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

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080", env = env_names::ADDR)]
    pub addr: String,
    /// The platform's bearer token for `POST /v1/authorizations`.
    #[arg(long, env = env_names::PLATFORM_TOKEN, default_value = "dev-platform-token")]
    pub platform_token: String,
    #[command(flatten)]
    pub rate_cards: RateCardFile,
    /// Where the notification worker writes each email, as an `.eml` file.
    #[arg(long, env = env_names::OUTBOX_DIR, default_value = "outbox")]
    pub outbox_dir: PathBuf,
    /// The tables of the hourly tax catch-up.
    #[command(flatten)]
    pub tax: TaxFiles,
    /// The signing secret processor webhooks (`POST /v1/webhooks/stripe`) are checked with.
    #[arg(long, env = env_names::STRIPE_WEBHOOK_SECRET, default_value = "whsec_local_development")]
    pub stripe_webhook_secret: String,
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The account the token belongs to (not needed for operators).
    #[arg(long, value_parser = account_id)]
    pub account: Option<AccountId>,
    #[arg(long, value_enum, default_value_t = RoleArg::Admin)]
    pub role: RoleArg,
    #[arg(long, default_value = "dev@localhost")]
    pub user: String,
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: u64,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The account to create (default: a fresh `demo-<unix seconds>` per run).
    #[arg(long, value_parser = account_id)]
    pub account: Option<AccountId>,
    /// How many usage events the day holds.
    #[arg(long, default_value_t = 1500)]
    pub events: usize,
    /// Where the notification worker writes each email, as an `.eml` file (default:
    /// `outbox` beside the database file).
    #[arg(long, env = env_names::OUTBOX_DIR)]
    pub outbox_dir: Option<PathBuf>,
    #[command(flatten)]
    pub rate_cards: RateCardFile,
}

#[derive(clap::Args)]
pub struct PostpaidDemoArgs {
    /// The account to create (default: a fresh `ringoffice-<unix seconds>` per run).
    #[arg(long, value_parser = account_id)]
    pub account: Option<AccountId>,
    /// Where the emails are written, as `.eml` files (default: `outbox` beside the database).
    #[arg(long, env = env_names::OUTBOX_DIR)]
    pub outbox_dir: Option<PathBuf>,
    /// The tax tables.
    #[command(flatten)]
    pub tax: TaxFiles,
}

/// One manual posting: `credit` and `debit` take the same arguments.
#[derive(clap::Args)]
pub struct PostingArgs {
    #[arg(value_parser = account_id)]
    pub account: AccountId,
    /// A negative amount reaches the parser, which says why it is refused (the direction is
    /// the command: `credit` or `debit`).
    #[arg(value_parser = amount_usd, allow_negative_numbers = true)]
    pub amount_usd: Amount,
    /// The idempotency id: the same id twice applies once.
    #[arg(long, value_parser = source_id)]
    pub source: SourceId,
    #[arg(long, value_parser = billing_item, default_value = "adjustment")]
    pub item: BillingItem,
}

#[derive(clap::Args)]
pub struct StatementArgs {
    #[arg(value_parser = account_id)]
    pub account: AccountId,
    /// First UTC day (YYYY-MM-DD).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last UTC day, included (YYYY-MM-DD).
    #[arg(long)]
    pub to: NaiveDate,
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[arg(long)]
    pub send: bool,
    /// Send to these addresses instead of the billing contacts (repeatable).
    #[arg(long)]
    pub recipient: Vec<String>,
    #[arg(long, env = env_names::OUTBOX_DIR, default_value = "outbox")]
    pub outbox_dir: PathBuf,
}

/// The operator's rate cards, for every command that rates usage (`serve`, `demo`, `ingest`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RateCardFile {
    /// Operator rate-card file (`{"standard": ..., "cards": {...}}`; default: the standard
    /// card only).
    #[arg(long, env = env_names::RATE_CARDS)]
    pub rate_cards: Option<PathBuf>,
}

impl RateCardFile {
    pub fn load(&self) -> Result<usage::worker::RateCards, Box<dyn std::error::Error>> {
        Ok(match &self.rate_cards {
            Some(path) => usage::worker::RateCards::from_json(&std::fs::read_to_string(path)?)?,
            None => usage::worker::RateCards::standard_only(),
        })
    }
}

/// The tax tables, for every command that taxes (`tax`, and `serve`'s hourly catch-up): the
/// operator's files, or the bundled samples.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TaxFiles {
    /// The jurisdiction table (default: the bundled `shared/domain/tax/data/jurisdictions.csv`).
    #[arg(long, env = env_names::TAX_TABLE)]
    pub tax_table: Option<PathBuf>,
    /// The taxability table (default: the bundled `shared/domain/tax/data/taxability.csv`).
    #[arg(long, env = env_names::TAXABILITY)]
    pub taxability: Option<PathBuf>,
}

impl TaxFiles {
    pub fn load(&self) -> Result<(tax::TaxTable, tax::Taxability), BoxError> {
        let table = match &self.tax_table {
            Some(path) => tax::TaxTable::load(path)?,
            None => tax::TaxTable::bundled()?,
        };
        let taxability = match &self.taxability {
            Some(path) => tax::Taxability::load(path)?,
            None => tax::Taxability::bundled()?,
        };
        Ok((table, taxability))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CadenceArg {
    Monthly,
    Weekly,
}

impl From<CadenceArg> for jobs::statements::Cadence {
    fn from(cadence: CadenceArg) -> Self {
        match cadence {
            CadenceArg::Monthly => jobs::statements::Cadence::Monthly,
            CadenceArg::Weekly => jobs::statements::Cadence::Weekly,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Admin,
    Operator,
    /// An agency's user: its own account and its clients' (named by `Ringledger-Account`).
    AgencyAdmin,
    AgencyViewer,
}

impl From<RoleArg> for api::auth::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Viewer => api::auth::Role::Viewer,
            RoleArg::Admin => api::auth::Role::Admin,
            RoleArg::Operator => api::auth::Role::Operator,
            RoleArg::AgencyAdmin => api::auth::Role::AgencyAdmin,
            RoleArg::AgencyViewer => api::auth::Role::AgencyViewer,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ShowArg {
    All,
    Debits,
    Credits,
}

impl From<ShowArg> for ledger::Show {
    fn from(show: ShowArg) -> Self {
        match show {
            ShowArg::All => ledger::Show::All,
            ShowArg::Debits => ledger::Show::Debits,
            ShowArg::Credits => ledger::Show::Credits,
        }
    }
}

/// An account id, by the ledger's rule (`[A-Za-z0-9_-]{1,64}`).
pub fn account_id(value: &str) -> Result<AccountId, ledger::IdError> {
    AccountId::parse(value)
}

/// A posting's idempotency id, by the ledger's rule.
pub fn source_id(value: &str) -> Result<SourceId, ledger::IdError> {
    SourceId::parse(value)
}

/// A USD amount as the API takes it: a decimal string, positive, at most 4 decimals, bounded.
pub fn amount_usd(value: &str) -> Result<Amount, ledger::AmountError> {
    value.parse()
}

/// A billing item by its name (`phone_call`, `funds_added`, ...).
pub fn billing_item(value: &str) -> Result<BillingItem, String> {
    BillingItem::parse(value).ok_or_else(|| {
        let names: Vec<&str> = BillingItem::ALL.iter().map(|item| item.as_str()).collect();
        format!("unknown billing item {value:?}; one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, Parser};

    use super::{env_names, Cli, Command};

    #[test]
    fn the_command_line_is_well_formed() {
        // Catches clashing argument names and bad defaults, which clap only reports at run time.
        Cli::command().debug_assert();
    }

    /// The usage error clap gives for `args`, as the user sees it.
    fn refused(args: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("ringledger").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
                error.to_string()
            }
        }
    }

    #[test]
    fn a_bad_account_id_is_refused_with_the_ledgers_rule() {
        let error = refused(&["show", "acme corp"]);
        assert!(error.contains("'acme corp'"), "{error}");
        assert!(error.contains("account id must be 1 to 64 characters"), "{error}");
        let error = refused(&["token", "--account", "a/b"]);
        assert!(error.contains("--account"), "{error}");
    }

    #[test]
    fn a_bad_amount_is_refused_before_the_store_is_opened() {
        for amount in ["ten", "-5", "0", "1.00001", "1e3"] {
            let error = refused(&["credit", "acme", amount, "--source", "s-1"]);
            assert!(error.contains(&format!("'{amount}'")), "{error}");
            assert!(error.contains("<AMOUNT_USD>"), "{error}");
        }
        let error = refused(&["credit", "acme", "-5", "--source", "s-1"]);
        assert!(error.contains("amount must be greater than zero"), "{error}");
        let error = refused(&["create-account", "acme", "--credit-limit-usd", "lots"]);
        assert!(error.contains("--credit-limit-usd"), "{error}");
        assert!(error.contains("amount is not a decimal number"), "{error}");
    }

    #[test]
    fn an_unknown_billing_item_is_refused_with_the_known_ones() {
        let error = refused(&["debit", "acme", "1", "--source", "s-1", "--item", "phone_cal"]);
        assert!(error.contains("unknown billing item \"phone_cal\""), "{error}");
        assert!(error.contains("phone_call"), "the known items are listed: {error}");
    }

    #[test]
    fn a_bad_source_id_or_month_is_refused() {
        let error = refused(&["credit", "acme", "1", "--source", "has space"]);
        assert!(error.contains("source id must be"), "{error}");
        let error = refused(&["tax", "--month", "2026-13"]);
        assert!(error.contains("'2026-13'"), "{error}");
    }

    #[test]
    fn good_arguments_arrive_typed() {
        let cli = Cli::try_parse_from([
            "ringledger",
            "debit",
            "acme",
            "1.15",
            "--source",
            "num-1",
            "--item",
            "phone_number",
            "--purchase",
            "--db",
            "x.db",
        ])
        .unwrap();
        assert_eq!(cli.store.db, "x.db", "store flags are global");
        let Command::Debit { posting, purchase } = cli.command else { panic!("not a debit") };
        assert_eq!(posting.account.as_str(), "acme");
        assert_eq!(posting.amount_usd.value(), rust_decimal::Decimal::new(115, 2));
        assert_eq!(posting.source.as_str(), "num-1");
        assert_eq!(posting.item, ledger::BillingItem::PhoneNumber);
        assert!(purchase);
    }

    /// Which commands read which variable. Global options (store, database, endpoint, table)
    /// reach every command; the JWT secret is read wherever a token is signed or checked.
    const USES: &[(&str, &[&str])] = &[
        (env_names::ADDR, &["serve"]),
        (env_names::PLATFORM_TOKEN, &["serve"]),
        (env_names::STRIPE_WEBHOOK_SECRET, &["serve"]),
        (env_names::RATE_CARDS, &["serve", "demo", "ingest"]),
        (env_names::OUTBOX_DIR, &["serve", "demo", "demo-postpaid", "statement", "statements"]),
        (env_names::TAX_TABLE, &["serve", "tax", "demo-postpaid"]),
        (env_names::TAXABILITY, &["serve", "tax", "demo-postpaid"]),
    ];

    const GLOBAL: &[&str] =
        &[env_names::STORE, env_names::DB, env_names::DYNAMODB_ENDPOINT, env_names::TABLE];

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
        let mut cli = Cli::command();
        cli.build();
        let mut declared: std::collections::BTreeSet<String> = env_of(&cli);
        declared.insert(env_names::JWT_SECRET.to_string());
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
