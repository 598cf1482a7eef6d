//! worker_pool/compare.rs — --compare: dynamic and static runs in turn, and their medians
//! compared.
//!
//! Demonstrates: nothing of the kernel; how two ways are compared fairly: one run of each
//! says little (the machine's load changes from one moment to the next), so each
//! distribution runs RUNS times, alternating, and the summary compares the medians and
//! shows each one's fastest and slowest run.
//! Run:     cargo run --bin worker_pool -- --tasks 200 --task-cost uneven --compare
//! Observe: the last line: both medians, their ranges, which was faster and by how much.
//! Book:    book/src/patterns/worker_pool.md

use proclab::measure::{compared, median, quantile};
use proclab::signals;
use serde_json::{Value, json};

use crate::master::Account;
use crate::options::Distribution;

/// Runs of each distribution.
pub const RUNS: usize = 3;

// ANCHOR: compare
/// Runs the pool (`run_pool`) dynamic, static, dynamic… RUNS times each. Every run's
/// account is a `run` event but the last's: the summary, with the other runs' seconds. A
/// stop signal ends the series.
pub fn compare(
    mut run_pool: impl FnMut(Distribution, Account) -> anyhow::Result<f64>,
) -> anyhow::Result<()> {
    let (mut dynamic, mut fixed) = ([0.0; RUNS], [0.0; RUNS - 1]);
    for n in 0..RUNS {
        let stopped = || signals::stop_requested().is_some();
        if stopped() {
            break;
        }
        dynamic[n] = run_pool(Distribution::Dynamic, Account::Run(2 * n + 1))?;
        if stopped() {
            break;
        }
        match fixed.get_mut(n) {
            Some(seconds) => *seconds = run_pool(Distribution::Static, Account::Run(2 * n + 2))?,
            None => {
                return run_pool(Distribution::Static, Account::Compared(dynamic, fixed)).map(drop);
            }
        }
    }
    Ok(())
}

/// The summary's comparison, from the dynamic runs' seconds and the static ones' (the
/// earlier ones, then this last run's `seconds`): the JSON fields and the words.
pub fn medians(
    dynamic: [f64; RUNS],
    static_before: [f64; RUNS - 1],
    seconds: f64,
) -> (Value, String) {
    let fixed = [&static_before[..], &[seconds]].concat();
    let (dynamic_median, static_median) = (median(&dynamic), median(&fixed));
    let fields = json!({
        "dynamic_seconds": dynamic_median, "static_seconds": static_median,
        "dynamic_runs": dynamic, "static_runs": fixed,
    });
    let range = |of: &[f64]| format!("{:.3}–{:.3}", quantile(of, 0.0), quantile(of, 1.0));
    let words = format!(
        "; medians of {RUNS} runs each, in turn: dynamic {dynamic_median:.3}s ({}), \
         static {static_median:.3}s ({}): {}",
        range(&dynamic),
        range(&fixed),
        compared("dynamic", 1.0 / dynamic_median, 1.0 / static_median) // runs per second
    );
    (fields, words)
}
// ANCHOR_END: compare
