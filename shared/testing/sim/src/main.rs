//! `ringledger-sim`: run the money-pipeline simulation over seeds.
//!
//! `ringledger-sim --seed N` replays one seed (printing its log on failure);
//! `ringledger-sim --seeds K [--from S]` runs K seeds from S (default: a random start);
//! `--steps N` and `--accounts N` change each seed's size.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seed: Option<u64> = None;
    let mut seeds: u64 = 1_000;
    let mut from: Option<u64> = None;
    let mut config = sim::Config::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--seed" => seed = Some(value("--seed")),
            "--seeds" => seeds = value("--seeds"),
            "--from" => from = Some(value("--from")),
            "--steps" => config.steps = value("--steps") as usize,
            "--accounts" => config.accounts = value("--accounts").max(1) as usize,
            "--full-log" => config.full_log = true,
            other => {
                eprintln!("unknown argument {other}; see the source's header for usage");
                std::process::exit(2)
            }
        }
    }
    let (start, count) = match seed {
        Some(seed) => (seed, 1),
        None => {
            let start = from.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
            (start, seeds)
        }
    };
    println!(
        "seeds {start}..{} ({} steps, {} accounts each)",
        start + count,
        config.steps,
        config.accounts
    );
    let began = Instant::now();
    let mut totals = sim::Stats::default();
    for seed in start..start + count {
        match sim::run_seed_blocking(seed, config.clone()) {
            Ok(stats) => {
                totals.steps += stats.steps;
                totals.charges_succeeded += stats.charges_succeeded;
                totals.store_faults += stats.store_faults;
                totals.processor_faults += stats.processor_faults;
                totals.deliveries += stats.deliveries;
                totals.holds_granted += stats.holds_granted;
                totals.hold_reports += stats.hold_reports;
                totals.release_steps += stats.release_steps;
                totals.refund_calls += stats.refund_calls;
                totals.refunds_returned += stats.refunds_returned;
                totals.disputes += stats.disputes;
                totals.disputes_withdrawn += stats.disputes_withdrawn;
                totals.grants_opened += stats.grants_opened;
                totals.grants_voided += stats.grants_voided;
                totals.grants_expired += stats.grants_expired;
                totals.daily_cap_stops += stats.daily_cap_stops;
                totals.dispute_denials += stats.dispute_denials;
                totals.authenticated += stats.authenticated;
                totals.dashboard_refunds += stats.dashboard_refunds;
                totals.plan_fees += stats.plan_fees;
                totals.plan_card_paid += stats.plan_card_paid;
                totals.plan_fallbacks += stats.plan_fallbacks;
                totals.agency_clients += stats.agency_clients;
                totals.agency_charges += stats.agency_charges;
                totals.ach_settled += stats.ach_settled;
                totals.ach_returned += stats.ach_returned;
                totals.invoices += stats.invoices;
                totals.invoices_card_paid += stats.invoices_card_paid;
                totals.invoices_autopay_exhausted += stats.invoices_autopay_exhausted;
                totals.overdue_blocks += stats.overdue_blocks;
                totals.overdue_blocks_lifted += stats.overdue_blocks_lifted;
                totals.invoices_paid_by_pay_now += stats.invoices_paid_by_pay_now;
                totals.credit_notes += stats.credit_notes;
            }
            Err(violation) => {
                eprintln!("{violation}");
                std::process::exit(1);
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{count} seeds passed in {seconds:.1} s ({:.0} seeds/s): {} steps, {} charges, {} store faults, {} processor faults, {} deliveries, {} holds granted, {} calls reported against holds, {} number-release steps, {} refund calls, {} payments refunded, {} disputes ({} withdrew funds), {} credit grants ({} voided, {} removed at expiry), {} daily-cap stops, {} calls refused for an open dispute, {} payments authenticated by their holder (3-D Secure), {} refunds made in the processor's dashboard, {} plan periods charged ({} paid by card, {} taken from the balance after every card declined), {} worlds with an agency's client ({} of its payments charged to the agency's cards), {} bank-account debits settled and {} returned, {} postpaid invoices ({} paid by the pre-authorized card, {} left for a payment by hand after three failed attempts), {} credit notes, {} invoices paid by a Pay Now or an auto-recharge, {} accounts blocked for an overdue invoice ({} lifted)",
        count as f64 / seconds.max(1e-9),
        totals.steps,
        totals.charges_succeeded,
        totals.store_faults,
        totals.processor_faults,
        totals.deliveries,
        totals.holds_granted,
        totals.hold_reports,
        totals.release_steps,
        totals.refund_calls,
        totals.refunds_returned,
        totals.disputes,
        totals.disputes_withdrawn,
        totals.grants_opened,
        totals.grants_voided,
        totals.grants_expired,
        totals.daily_cap_stops,
        totals.dispute_denials,
        totals.authenticated,
        totals.dashboard_refunds,
        totals.plan_fees,
        totals.plan_card_paid,
        totals.plan_fallbacks,
        totals.agency_clients,
        totals.agency_charges,
        totals.ach_settled,
        totals.ach_returned,
        totals.invoices,
        totals.invoices_card_paid,
        totals.invoices_autopay_exhausted,
        totals.credit_notes,
        totals.invoices_paid_by_pay_now,
        totals.overdue_blocks,
        totals.overdue_blocks_lifted
    );
}
