//! The planner: one job per account, published in pages.

use futures::stream::{self, StreamExt, TryStreamExt};
use ledger::{AccountId, LedgerStore};

use crate::job::{BoxError, Job, JobSink};

/// Account ids read per registry query.
pub const IDS_PER_PAGE: u32 = 500;
/// Publishes in flight at once (each up to ten messages).
const PUBLISH_CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanReport {
    pub accounts: u64,
    pub published: u64,
}

/// Publish `make(account)` for every account (skipping `None`), calling `progress` with the
/// running count after each page.
pub async fn plan<F>(
    store: &dyn LedgerStore,
    sink: &dyn JobSink,
    make: F,
    mut progress: impl FnMut(u64),
) -> Result<PlanReport, BoxError>
where
    F: Fn(AccountId) -> Option<Job>,
{
    let mut report = PlanReport::default();
    let mut after: Option<AccountId> = None;
    loop {
        let ids = store.account_ids(after.as_ref(), IDS_PER_PAGE).await?;
        let Some(last) = ids.last().cloned() else { break };
        report.accounts += ids.len() as u64;
        let jobs: Vec<Job> = ids.into_iter().filter_map(&make).collect();
        stream::iter(jobs.chunks(10).map(Ok::<_, BoxError>))
            .try_for_each_concurrent(PUBLISH_CONCURRENCY, |chunk| sink.publish(chunk))
            .await?;
        report.published += jobs.len() as u64;
        progress(report.accounts);
        after = Some(last);
    }
    Ok(report)
}

/// How many accounts the store holds (walks the registry; for progress bars).
pub async fn count_accounts(store: &dyn LedgerStore) -> Result<u64, BoxError> {
    let mut count = 0;
    let mut after: Option<AccountId> = None;
    loop {
        let ids = store.account_ids(after.as_ref(), IDS_PER_PAGE).await?;
        let Some(last) = ids.last().cloned() else { return Ok(count) };
        count += ids.len() as u64;
        after = Some(last);
    }
}

/// Run `work` on every account, `concurrency` at a time, without a queue (the local runner and
/// the ops CLI): the same jobs a queue worker would do.
pub async fn for_each_account<F, Fut, T>(
    store: &dyn LedgerStore,
    concurrency: usize,
    work: F,
) -> Result<Vec<T>, BoxError>
where
    F: Fn(AccountId) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = Vec::new();
    let mut after: Option<AccountId> = None;
    loop {
        let ids = store.account_ids(after.as_ref(), IDS_PER_PAGE).await?;
        let Some(last) = ids.last().cloned() else { return Ok(out) };
        let results: Vec<T> =
            stream::iter(ids).map(&work).buffer_unordered(concurrency).collect().await;
        out.extend(results);
        after = Some(last);
    }
}
