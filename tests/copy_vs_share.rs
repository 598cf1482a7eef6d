//! copy_vs_share: the child's sum is the parent's, through a pipe and through shared
//! memory; sizes that cannot fit are refused; nothing is left behind.

mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("copy_vs_share")
}

#[test]
fn both_ways_give_the_parents_sum() {
    for elements in ["1", "1000", "1000000"] {
        let events = run_json(demo(), &["--elements", elements]);
        let summary = summary(&events);
        assert_eq!(summary["sums_equal"], true, "{summary}");
        // The test's own sum of the same values, in the same order (so, bit for bit).
        let n: usize = elements.parse().expect("n");
        let expected: f64 = (0..n).map(|i| (i % 1000) as f64 * 0.5).sum();
        assert_eq!(summary["pipe_sum"].as_f64(), Some(expected), "{summary}");
        assert_eq!(summary["shared_sum"].as_f64(), Some(expected), "{summary}");
        for time in ["pipe_seconds", "shared_seconds"] {
            let seconds = summary[time].as_f64().expect("seconds");
            assert!(seconds > 0.0 && seconds.is_finite(), "{time}: {summary}");
        }
        assert_eq!(
            summary["bytes_copied"],
            8 * elements.parse::<u64>().expect("n")
        );
    }
}

#[test]
fn reading_shared_pages_faults_them_into_the_child() {
    // 1,000,000 f64 = 1953 pages. The child's pipe buffer is fresh memory: at least one
    // fault per page. The shared pages already exist: the kernel maps several per fault
    // (fault-around), but the child still takes some.
    let events = run_json(demo(), &["--elements", "1000000"]);
    let summary = summary(&events);
    assert!(
        summary["pipe_minor_faults"].as_u64().expect("faults") >= 1953,
        "{summary}"
    );
    let shared = summary["shared_minor_faults"].as_u64().expect("faults");
    assert!(shared > 0 && shared < 1953, "{summary}");
}

#[test]
fn sizes_that_cannot_fit_are_refused() {
    assert_usage_error(demo(), &["--elements", "0"]);
    assert_usage_error(demo(), &["--elements", "1000000000000"]);
    run(demo(), &["--elements", "1000000000000"])
        .code(2)
        .stderr(contains("MemAvailable"));
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_process_and_nothing_in_dev_shm() {
    let mut demo = Running::start(cargo_bin!("copy_vs_share"), &["--elements", "50000000"]);
    demo.wait_for("array");
    let child = demo.wait_for_children();
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &child);
    let left = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("proclab"))
        .count();
    assert_eq!(left, 0);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--elements"));
    assert_usage_error(demo(), &["--elements", "many"]);
    assert_usage_error(demo(), &["--bytes", "8"]);
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("copy_vs_share"),
        &[&["--elements", "1000"], &["--json", "--elements", "1000"]],
    );
}
