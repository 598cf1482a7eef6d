//! duplex: every request over two pipes and over a socketpair is matched with its
//! response; both-sides-write-first is a deadlock that /proc shows and the watchdog ends.

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
fn the_deadlock_is_seen_in_proc_and_ended_by_the_watchdog() {
    let mut demo = Running::start(cargo_bin!("duplex"), &["--deadlock", "--watchdog", "3"]);
    demo.wait_for("watch");
    let mut sides = Vec::new();
    for side in ["left", "right"] {
        let write = demo.wait_for_where("write", |e| e["role"] == side);
        sides.push(pid_of(&write["pid"]));
    }
    // The test's own look: both asleep in the kernel's pipe write.
    for &pid in &sides {
        assert!(
            eventually(Duration::from_secs(2), || proc_state(pid) == Some('S')
                && proc_wchan(pid)
                    .is_some_and(|place| place.contains("pipe_write"))),
            "{pid}: {:?} in {:?}",
            proc_state(pid),
            proc_wchan(pid)
        );
    }
    let (status, events) = demo.finish();
    assert!(status.success(), "the demo ends by itself: {status:?}");
    let summary = summary(&events);
    assert_eq!(summary["deadlock_detected"], true);
    assert!(
        events.iter().all(|e| e["event"] != "read"),
        "no side ever got past its write"
    );
    for pid in sides {
        assert_eq!(proc_state(pid), None, "{pid} reaped");
    }
}

#[test]
fn ctrl_c_leaves_no_process() {
    let mut demo = Running::start(cargo_bin!("duplex"), &["--deadlock", "--watchdog", "30"]);
    demo.wait_for("watch");
    let left = pid_of(&demo.wait_for_where("write", |e| e["role"] == "left")["pid"]);
    let right = pid_of(&demo.wait_for_where("write", |e| e["role"] == "right")["pid"]);
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[left, right]);
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
        .stdout(contains("--deadlock"));
    for args in [
        &["--rounds", "0"][..],
        &["--transport", "carrier-pigeon"],
        &["--deadlock", "--message", "100"],
        &["--deadlock", "--watchdog", "61"],
        &["--message", "70000"], // only with --deadlock
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
