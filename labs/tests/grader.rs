//! CI's proof of the grader, run by `cargo test` (harness = false: this runner makes
//! itself the subreaper of every grader it starts, so anything a run leaves behind
//! becomes its child and is found).
//!
//! - every starter scores below full;
//! - every solution scores full with seeds 1–5;
//! - every mutant loses exactly the checks labs.toml names;
//! - the report formats, exit statuses, seeds and `--submission` builds;
//! - and after all of it, nothing is left: no process, no scratch dir, nothing in
//!   /dev/shm or /dev/mqueue.
//!
//! The grader runs as a subprocess, a few at a time (2 cores are enough).

mod util;

use util::{Failures, Run, grade, in_parallel};

fn main() {
    util::become_subreaper();
    let manifest = util::manifest();
    let mut runs: Vec<Run> = Vec::new();
    for (lab, entry) in &manifest.lab {
        runs.push(Run::program(lab, "starter", 1));
        for seed in 1..=5 {
            runs.push(Run::program(lab, "solution", seed));
        }
        for mutant in &entry.mutant {
            runs.push(Run::program(lab, &format!("mutant-{}", mutant.name), 2));
        }
    }
    let mut failures = Failures::default();
    let finished = in_parallel(runs, 3);
    for (run, result) in &finished {
        let entry = &manifest.lab[&run.lab];
        let lost = result.lost_checks();
        if run.bin == "starter" {
            failures.expect(
                result.score < result.max_score,
                run,
                "a starter must score below full",
                result,
            );
        } else if run.bin == "solution" {
            failures.expect(
                lost.is_empty() && result.exit == Some(0),
                run,
                "a solution must score full and exit 0",
                result,
            );
        } else {
            let mutant = entry
                .mutant
                .iter()
                .find(|mutant| run.bin == format!("mutant-{}", mutant.name))
                .expect("the run was made from the manifest");
            let mut named = mutant.loses.clone();
            named.sort();
            failures.expect(
                lost == named && result.exit == Some(1),
                run,
                &format!("must lose exactly {named:?}"),
                result,
            );
        }
        failures.expect(
            result.summary_last,
            run,
            "the JSON report must end with its summary",
            result,
        );
    }
    util::check_reports(&mut failures);
    util::check_usage(&mut failures);
    util::check_submissions(&mut failures);
    util::check_nothing_left(&mut failures, &finished);
    println!("labs: {} grader runs", finished.len());
    failures.finish();
    let _ = grade; // used by the util checks
}
