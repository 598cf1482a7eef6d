//! shared_mutex: W processes adding under one process-shared mutex lose nothing; the
//! workers really share the parent's MAP_SHARED page (their /proc maps say so); Ctrl-C
//! leaves no worker.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("shared_mutex")
}

#[test]
fn no_addition_is_lost_under_the_process_shared_mutex() {
    // 4 workers × 250,000. Broken on purpose on a 2-CPU VM: with PTHREAD_PROCESS_PRIVATE
    // the run hung in 2 of 3 tries (a waiter sleeps on a futex nobody wakes: the test's
    // time limit fails it); with MAP_PRIVATE memory the parent counted 0.
    for run in 0..10 {
        let events = run_json(demo(), &["--workers", "4", "--iterations", "250000"]);
        let summary = summary(&events);
        assert_eq!(summary["expected"], 1_000_000, "{summary}");
        assert_eq!(summary["got"], 1_000_000, "run {run}: {summary}");
        assert_eq!(summary["lost"], 0);
        assert!(summary["seconds"].as_f64().expect("seconds") > 0.0);
    }
}

/// The `rw-s` mappings of `/dev/zero (deleted)` (anonymous shared memory) in
/// `/proc/<pid>/maps`: their address ranges.
fn shared_anonymous_mappings(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" rw-s ") && line.contains("/dev/zero"))
        .map(|line| line.split_whitespace().next().expect("a range").to_owned())
        .collect()
}

#[test]
fn the_workers_map_the_parents_shared_page() {
    let mut demo = Running::start(cargo_bin!("shared_mutex"), &["--iterations", "100000000"]);
    demo.wait_for("mutex");
    let workers = demo.wait_for_children();
    let parents = shared_anonymous_mappings(demo.pid());
    assert_eq!(
        parents.len(),
        1,
        "one shared anonymous mapping: {parents:?}"
    );
    for &worker in &workers {
        // Inherited across fork at the same address: the very same pages, not a copy.
        assert_eq!(
            shared_anonymous_mappings(worker),
            parents,
            "worker {worker}"
        );
    }
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &workers);
    assert!(
        events.iter().all(|e| e["event"] != "summary"),
        "no count after Ctrl-C"
    );
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("PTHREAD_PROCESS_SHARED"));
    for args in [
        &["--workers", "0"][..],
        &["--workers", "65"],
        &["--iterations", "0"],
        &["--iterations", "many"],
        &["--lock", "mutex"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("shared_mutex"),
        &[
            &["--iterations", "1000"],
            &["--json", "--iterations", "1000"],
        ],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--workers", "8", "--iterations", "100000"]];
    examples::assert_help_examples(cargo_bin!("shared_mutex"), examples);
    for (args, expected) in examples.iter().zip([4_000_000, 800_000]) {
        let events = run_json(demo(), args);
        let summary = summary(&events);
        assert_eq!(summary["expected"], expected, "{args:?}");
        assert_eq!(summary["got"], expected, "{args:?}: {summary}");
    }
}

/// Issue 16 item 8: SIGTERM in the middle of the additions ends the demo and its workers
/// without an error line.
#[test]
fn a_normal_stop_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("shared_mutex"),
        &["--iterations", "100000000"],
        "mutex",
        &[50, 150, 300],
    );
}

/// One worker is "1 worker", and a bad count names the real range (the help's 1-64).
#[test]
fn one_worker_is_singular_and_errors_name_the_range() {
    run(demo(), &["--workers", "1", "--iterations", "10"])
        .success()
        .stdout(contains("summary: 1 worker × 10 additions"));
    run(demo(), &["--workers", "65"])
        .code(2)
        .stderr(contains("1..=64"));
}
