//! One conformance suite for every ledger store. A store's test file calls
//! [`conformance_suite!`] with an async factory that returns a fresh, empty store, and
//! [`doc_conformance_suite!`] with one that returns a fresh, empty document store.

pub mod cases;
pub mod crash;
pub mod docs;
pub mod grants;
pub mod holds;
pub mod model;
pub mod plan_charges;
pub mod refunds;

pub use cases::*;

use std::future::Future;
use std::sync::Arc;

use ledger::LedgerStore;

/// The factory the suite is given: a fresh, isolated, empty store per call.
pub trait StoreFactory: Send + Sync + 'static {
    fn fresh(&self) -> impl Future<Output = Arc<dyn LedgerStore>> + Send;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Arc<dyn LedgerStore>> + Send,
{
    fn fresh(&self) -> impl Future<Output = Arc<dyn LedgerStore>> + Send {
        self()
    }
}

/// Generate one `#[tokio::test]` per conformance case for a store.
///
/// `$factory` is a path to `async fn() -> Arc<dyn LedgerStore>`; `$model_cases` is how many
/// random histories the model-based property test runs (fewer for slow stores).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path, model_cases = $model_cases:expr) => {
        $crate::conformance_suite!(@case $factory,
            posted_entries_read_back_exactly_with_an_unbroken_chain,
            a_redelivered_source_id_changes_nothing_and_says_so,
            duplicates_within_one_batch_apply_once,
            concurrent_posting_with_duplicates_applies_each_source_id_once,
            advance_purchases_are_refused_below_the_floor_and_usage_is_not,
            crossing_the_floor_suspends_and_a_credit_above_it_reactivates,
            postpaid_accounts_run_down_to_their_credit_limit,
            one_recharge_request_per_threshold_crossing,
            activity_filters_by_utc_range_and_kind_with_a_cursor,
            settings_changes_never_touch_the_balance,
            outbox_events_stay_pending_until_acknowledged,
            the_outbox_reads_in_pages_after_a_position_and_acknowledges_in_batches,
            unknown_accounts_and_duplicate_creation_are_typed_errors,
            bad_queries_are_rejected_and_change_nothing,
            interrupted_postings_leave_nothing_half_applied,
            accounts_are_isolated_from_each_other,
            plan_usage_changes_with_its_postings_exactly_once,
            month_totals_add_up_each_months_entries_and_close_once,
            account_ids_list_every_account_in_order,
        );
        $crate::conformance_suite!(@hold $factory,
            concurrent_authorizations_never_grant_more_than_the_available_balance,
            a_report_settles_its_hold_once_whatever_is_redelivered,
            an_unreported_hold_expires_and_a_late_report_still_debits_once,
            extensions_apply_once_in_order_and_stop_at_the_available_balance,
            a_hold_below_the_recharge_threshold_requests_a_recharge_and_a_message_holds_its_price,
            at_the_floor_outbound_stops_and_inbound_runs_on_its_grace_until_it_is_used_up,
            the_number_release_steps_once_each_and_a_top_up_cancels_it,
        );

        $crate::conformance_suite!(@grant $factory,
            debits_draw_on_grants_first_and_expiry_removes_what_is_left_once,
            a_grant_opens_once_and_a_void_removes_what_is_left_once,
        );

        #[test]
        fn random_histories_match_a_plain_model() {
            $crate::model::random_histories_match_a_plain_model(|| $factory(), $model_cases);
        }
    };
    (@hold $factory:path, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::holds::$name($factory().await).await;
            }
        )+
    };
    (@grant $factory:path, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::grants::$name($factory().await).await;
            }
        )+
    };
    (@case $factory:path, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::cases::$name($factory().await).await;
            }
        )+
    };
}
