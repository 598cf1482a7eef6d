//! pipe_atomic: records of at most PIPE_BUF never tear, however many writers share the pipe.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("pipe_atomic")
}

#[test]
fn no_record_of_at_most_pipe_buf_is_torn() {
    let events = run_json(demo(), &["--records", "110000"]);
    let summary = summary(&events);
    assert!(
        summary["small_sent"].as_u64().expect("count") >= 100_000,
        "{summary}"
    );
    assert_eq!(summary["small_torn"], 0, "{summary}");
    assert_eq!(summary["small_not_exactly_once"], 0, "{summary}");
    let received = summary["received"].as_u64().expect("received");
    let missing = summary["missing"].as_u64().expect("missing");
    assert_eq!(received + missing, summary["sent"].as_u64().expect("sent"));
    assert_eq!(summary["duplicates"], 0);
}

#[test]
fn records_larger_than_pipe_buf_are_torn_by_the_other_writers() {
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(summary["large_sent"], 1000, "{summary}");
    let torn = summary["large_torn"].as_u64().expect("count");
    assert!(
        torn > 0,
        "1000 writes of 17 pages, 3 other writers: {summary}"
    );
}

#[test]
fn the_records_are_shared_among_four_writers() {
    let events = run_json(demo(), &["--records", "10"]);
    assert_eq!(pids_in(&find(&events, "writers")["pids"]).len(), 4);
    let summary = summary(&events);
    assert_eq!(
        summary["sent"], 12,
        "10 rounded up to 3 records for each of 4"
    );
    assert_eq!(summary["received"], 12);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("PIPE_BUF"));
    for args in [
        &["--records", "0"][..],
        &["--records", "1000001"],
        &["--atomic"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("pipe_atomic"), &[&["--records", "1000"]]);
}

/// Issue 16 item 8: SIGTERM to the reading parent used to make its writers print "short
/// write" or "EPIPE": a writer whose reader is gone ends quietly, the parent reports.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(cargo_bin!("pipe_atomic"), &[], "writers", &[0, 20, 100]);
}

#[test]
fn one_record_each_is_said_in_the_singular() {
    run(demo(), &["--records", "4"])
        .success()
        .stdout(contains("4 writers, 1 record each,"));
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--records", "10000"]];
    examples::assert_help_examples(cargo_bin!("pipe_atomic"), examples);
    for args in examples {
        let events = run_json(demo(), args);
        let summary = summary(&events);
        assert_eq!(summary["small_torn"], 0, "{args:?}: {summary}");
        assert!(
            summary["large_torn"].as_u64().expect("count") > 0,
            "{args:?}: {summary}"
        );
    }
}
