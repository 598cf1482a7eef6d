//! pipe_bandwidth: every byte arrives, and the rates are positive and finite.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("pipe_bandwidth")
}

#[test]
fn bandwidth_is_positive_and_finite() {
    for produce in [false, true] {
        let mut args = vec!["--mebibytes", "4"];
        args.extend(produce.then_some("--produce"));
        let events = run_json(demo(), &args);
        let summary = summary(&events);
        assert_eq!(summary["produce"], produce);
        assert_eq!(summary["bytes"], 4 << 20); // checked by the demo: all of it arrived
        let rows = summary["rows"].as_array().expect("rows").clone();
        assert!(!rows.is_empty());
        for row in rows {
            let rate = row["mb_per_s"].as_f64().expect("a rate");
            assert!(rate.is_finite() && rate > 0.0, "{row}");
        }
    }
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_process() {
    let mut demo = Running::start(
        cargo_bin!("pipe_bandwidth"),
        &["--mebibytes", "4096", "--chunk", "1"],
    );
    demo.wait_for("method");
    let writers = demo.wait_for_children();
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &writers);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--produce"));
    for args in [
        &["--chunk", "0"][..],
        &["--mebibytes", "5000"],
        &["--bandwidth"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("pipe_bandwidth"), &[&["--mebibytes", "1"]]);
}

/// Issue 16 item 8: SIGTERM to the reading parent used to make the writer print "write:
/// EPIPE: Broken pipe".
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("pipe_bandwidth"),
        &["--mebibytes", "64"],
        "method",
        &[10, 50, 200],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--chunk", "4096"], &["--produce"]];
    examples::assert_help_examples(cargo_bin!("pipe_bandwidth"), examples);
    for (args, chunk, produce) in [
        (examples[0], 65536, false),
        (examples[1], 4096, false),
        (examples[2], 65536, true),
    ] {
        let events = run_json(demo(), args);
        let summary = summary(&events);
        assert_eq!(summary["chunk_bytes"], chunk, "{args:?}: {summary}");
        assert_eq!(summary["produce"], produce, "{args:?}: {summary}");
        assert_eq!(
            summary["rows"].as_array().map(Vec::len),
            Some(2),
            "{summary}"
        );
    }
}
