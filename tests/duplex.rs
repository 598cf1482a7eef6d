//! duplex: every request over two pipes and over a socketpair is matched with its
//! response; SIGTERM stops the round trips and leaves no server behind. (Both sides writing
//! first is pipe_deadlock: tests/pipe_deadlock.rs.)

mod examples;
mod stops;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("duplex")
}

#[test]
fn every_request_is_matched_with_its_response() {
    let events = run_json(demo(), &["--rounds", "2000"]);
    let summary = summary(&events);
    assert_eq!(summary["all_matched"], true);
    let rows = summary["transports"].as_array().expect("rows");
    let names: Vec<&str> = rows
        .iter()
        .map(|row| row["transport"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["two pipes", "socketpair"]);
    for row in rows {
        assert_eq!(row["requests"], 2200, "2000 timed after 200 warm-up: {row}");
        assert_eq!(row["matched"], 2200, "{row}");
        assert_eq!(row["mismatched"], 0);
        let median = row["round_trip_us"]["median"].as_f64().expect("median");
        let p99 = row["round_trip_us"]["p99"].as_f64().expect("p99");
        assert!(median > 0.0 && median.is_finite() && p99 >= median, "{row}");
    }
}

#[test]
fn one_transport_at_a_time() {
    for (flag, name) in [("pipes", "two pipes"), ("socketpair", "socketpair")] {
        let events = run_json(demo(), &["--transport", flag, "--rounds", "100"]);
        let rows = summary(&events)["transports"]
            .as_array()
            .expect("rows")
            .clone();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["transport"], name);
        assert_eq!(rows[0]["matched"], rows[0]["requests"]);
    }
}

#[test]
fn sigterm_to_the_demo_alone_stops_the_round_trips() {
    let mut demo = Running::start(
        cargo_bin!("duplex"),
        &["--rounds", "1000000", "--transport", "pipes"],
    );
    let server = pid_of(&demo.wait_for("fork")["child"]);
    let start = std::time::Instant::now();
    demo.terminate();
    let (status, _) = demo.finish();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "stopped, not finished"
    );
    assert_stopped_cleanly(status, libc::SIGTERM, &[server]);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("pipe_deadlock"));
    for args in [
        &["--rounds", "0"][..],
        &["--transport", "carrier-pigeon"],
        // The deadlock is a program of its own now (pipe_deadlock): its options, and the
        // old "--message only with --deadlock" conflict, are unknown here.
        &["--deadlock"],
        &["--message", "70000"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("duplex"),
        &[&["--rounds", "100"], &["--json", "--rounds", "100"]],
    );
}

/// Issue 16 item 8: SIGTERM in the middle of the round trips is quiet (parent and server).
#[test]
fn sigterm_during_the_round_trips_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("duplex"),
        &["--rounds", "1000000"],
        "fork",
        &[0, 50, 300],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises: both
/// transports, every response matched; then the socketpair alone, 100000 timed rounds.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--transport", "socketpair", "--rounds", "100000"]];
    examples::assert_help_examples(cargo_bin!("duplex"), examples);
    let both = run_json(demo(), examples[0]);
    let rows = summary(&both)["transports"]
        .as_array()
        .expect("rows")
        .clone();
    let names: Vec<&str> = rows
        .iter()
        .map(|row| row["transport"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["two pipes", "socketpair"]);
    assert_eq!(summary(&both)["all_matched"], true);
    let one = run_json(demo(), examples[1]);
    let rows = summary(&one)["transports"]
        .as_array()
        .expect("rows")
        .clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["transport"], "socketpair");
    assert_eq!(
        rows[0]["requests"], 110_000,
        "100000 timed after 10000 warm-up"
    );
    assert_eq!(rows[0]["matched"], 110_000);
    let median = rows[0]["round_trip_us"]["median"].as_f64().expect("median");
    assert!(
        median > 0.0 && median < 1000.0,
        "a round trip of microseconds: {median}"
    );
}
