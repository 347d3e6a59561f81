//! The simulation over a fixed range of seeds: every run of the test suite searches the same
//! 2,000 worlds (`scripts/test.sh` adds a few hundred random ones, printing their start).

#[test]
fn two_thousand_seeded_worlds_keep_every_money_invariant() {
    let mut charges = 0;
    let mut store_faults = 0;
    let mut processor_faults = 0;
    let (mut holds, mut reports, mut releases) = (0, 0, 0);
    let (mut refund_calls, mut refunded) = (0, 0);
    let (mut disputes, mut withdrawn) = (0, 0);
    let (mut grants, mut expired, mut capped) = (0, 0, 0);
    let (mut denied, mut authenticated, mut dashboard, mut plan_fees) = (0, 0, 0, 0);
    let (mut plan_card_paid, mut plan_fallbacks, mut agency_charges) = (0, 0, 0);
    let (mut ach_settled, mut ach_returned) = (0, 0);
    let (mut invoices, mut credit_notes, mut paid_by_pay_now) = (0, 0, 0);
    for seed in 1..=2_000 {
        match sim::run_seed_blocking(seed, sim::Config::default()) {
            Ok(stats) => {
                charges += stats.charges_succeeded;
                store_faults += stats.store_faults;
                processor_faults += stats.processor_faults;
                holds += stats.holds_granted;
                reports += stats.hold_reports;
                releases += stats.release_steps;
                refund_calls += stats.refund_calls;
                refunded += stats.refunds_returned;
                disputes += stats.disputes;
                withdrawn += stats.disputes_withdrawn;
                grants += stats.grants_opened;
                expired += stats.grants_expired;
                capped += stats.daily_cap_stops;
                denied += stats.dispute_denials;
                authenticated += stats.authenticated;
                dashboard += stats.dashboard_refunds;
                plan_fees += stats.plan_fees;
                plan_card_paid += stats.plan_card_paid;
                plan_fallbacks += stats.plan_fallbacks;
                agency_charges += stats.agency_charges;
                ach_settled += stats.ach_settled;
                ach_returned += stats.ach_returned;
                invoices += stats.invoices;
                credit_notes += stats.credit_notes;
                paid_by_pay_now += stats.invoices_paid_by_pay_now;
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    // The search is only worth something if the faults and the money actually happened.
    assert!(charges > 10_000, "only {charges} charges");
    assert!(store_faults > 5_000, "only {store_faults} store faults");
    assert!(processor_faults > 5_000, "only {processor_faults} processor faults");
    assert!(holds > 5_000, "only {holds} holds granted");
    assert!(reports > 5_000, "only {reports} calls reported against holds");
    assert!(releases > 1_000, "only {releases} number-release steps");
    assert!(refund_calls > 5_000, "only {refund_calls} refund calls");
    assert!(refunded > 1_000, "only {refunded} payments refunded");
    assert!(disputes > 1_000, "only {disputes} disputes");
    assert!(withdrawn > 500, "only {withdrawn} disputes withdrew funds");
    assert!(grants > 3_000, "only {grants} credit grants opened");
    assert!(expired > 500, "only {expired} grants removed at expiry");
    assert!(capped > 100, "only {capped} daily-cap stops");
    assert!(denied > 100, "only {denied} calls refused for an open dispute");
    assert!(authenticated > 1_000, "only {authenticated} payments authenticated (3-D Secure)");
    assert!(dashboard > 1_000, "only {dashboard} refunds made in the processor's dashboard");
    assert!(plan_fees > 1_000, "only {plan_fees} plan periods charged");
    assert!(plan_card_paid > 400, "only {plan_card_paid} plan periods paid by card");
    assert!(plan_fallbacks > 50, "only {plan_fallbacks} plan periods taken from the balance");
    assert!(agency_charges > 1_000, "only {agency_charges} client payments on agencies' cards");
    assert!(ach_settled > 2_000, "only {ach_settled} bank-account debits settled");
    assert!(ach_returned > 2_000, "only {ach_returned} bank-account debits returned");
    assert!(invoices > 1_000, "only {invoices} postpaid invoices");
    assert!(credit_notes > 50, "only {credit_notes} credit notes");
    assert!(
        paid_by_pay_now > 30,
        "only {paid_by_pay_now} invoices paid by a Pay Now or a recharge"
    );
}

/// Longer worlds (500 steps): invoices go past their due dates, so accounts are blocked for
/// them (and some lifted), with every invariant kept.
#[test]
fn long_worlds_block_accounts_for_overdue_invoices() {
    let mut blocks = 0;
    for seed in 1..=150 {
        let config = sim::Config { steps: 500, ..sim::Config::default() };
        match sim::run_seed_blocking(seed, config) {
            Ok(stats) => blocks += stats.overdue_blocks,
            Err(violation) => panic!("{violation}"),
        }
    }
    assert!(blocks > 3, "only {blocks} accounts blocked for an overdue invoice");
}
