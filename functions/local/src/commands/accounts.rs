//! The ledger's ops commands: `create-account`, `accept-terms`, `show`, `credit`, `debit`.

use std::sync::Arc;

use chrono::Utc;
use ledger::{
    display_usd, AccountId, Amount, EntryKind, LedgerStore, NewAccount, Posting, PostingResult,
    PostingRule, TermsAcceptance,
};

use crate::cli::{PostingArgs, StoreArgs};
use crate::wiring::{open_store, CliResult};

pub async fn create(
    args: &StoreArgs,
    id: AccountId,
    credit_limit_usd: Option<Amount>,
) -> CliResult {
    let store = open_store(args).await?;
    store.create_account(NewAccount { id: id.clone(), credit_limit_usd }, Utc::now()).await?;
    print_account(&*store, &id).await
}

pub async fn accept_terms(
    args: &StoreArgs,
    id: &AccountId,
    by: String,
    version: String,
) -> CliResult {
    let store = open_store(args).await?;
    let now = Utc::now();
    let acceptance =
        TermsAcceptance { version: version.clone(), accepted_by: by.clone(), accepted_at: now };
    store
        .modify_account(
            id,
            Arc::new(move |account| {
                account.terms = Some(acceptance.clone());
                Ok(())
            }),
            now,
        )
        .await?;
    println!("terms {version} accepted by {by}");
    Ok(())
}

pub async fn show(args: &StoreArgs, id: &AccountId) -> CliResult {
    let store = open_store(args).await?;
    print_account(&*store, id).await
}

pub async fn credit(args: &StoreArgs, posting: PostingArgs) -> CliResult {
    let now = Utc::now();
    let PostingArgs { account, amount_usd, source, item } = posting;
    let posting = Posting::credit(source, item, amount_usd, now)?;
    post(args, &account, posting).await
}

/// Completed usage always posts; a purchase (`--purchase`) is refused below the floor.
pub async fn debit(args: &StoreArgs, posting: PostingArgs, purchase: bool) -> CliResult {
    let now = Utc::now();
    let PostingArgs { account, amount_usd, source, item } = posting;
    let rule = if purchase { PostingRule::RefuseBelowFloor } else { PostingRule::Always };
    let posting = Posting::new(source, EntryKind::Debit, item, amount_usd, rule, now)?;
    post(args, &account, posting).await
}

async fn post(args: &StoreArgs, id: &AccountId, posting: Posting) -> CliResult {
    let store = open_store(args).await?;
    let outcome = store.post(id, vec![posting], Utc::now()).await?;
    print_results(&outcome.results);
    Ok(())
}

async fn print_account(store: &dyn LedgerStore, id: &AccountId) -> CliResult {
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

fn print_results(results: &[PostingResult]) {
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
