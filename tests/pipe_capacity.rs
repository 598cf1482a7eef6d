//! pipe_capacity: the capacity is what F_GETPIPE_SZ says and changes after F_SETPIPE_SZ;
//! a writer into a full pipe sleeps in the kernel.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("pipe_capacity")
}

#[test]
fn capacity_is_f_getpipe_sz_and_changes_after_resizing() {
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(
        summary["capacity_bytes"], 65536,
        "Linux's default: 16 pages"
    );
    assert_eq!(summary["capacity_bytes"], summary["f_getpipe_sz"]);
    assert_eq!(summary["resized_bytes"], 262144);
    let sleeping = find(&events, "sleeping");
    assert_eq!(sleeping["state"], "S", "a writer into a full pipe sleeps");
    assert!(
        sleeping["wchan"].as_str().expect("wchan").contains("pipe"),
        "{sleeping}"
    );
    assert!(summary["writer_blocked_ms"].as_f64().expect("ms") >= 100.0);

    let events = run_json(demo(), &["--resize", "1048576"]);
    assert_eq!(util::summary(&events)["resized_bytes"], 1048576);
}

#[test]
fn a_resize_is_rounded_up_to_a_power_of_two_pages() {
    let events = run_json(demo(), &["--resize", "100000"]);
    let resized = find(&events, "resized");
    assert_eq!(resized["asked"], 100000);
    assert_eq!(resized["granted"], 131072, "32 pages: {resized}");
    assert_eq!(summary(&events)["resized_bytes"], 131072);
}

#[test]
fn a_resize_beyond_pipe_max_size_is_a_usage_error() {
    assert_usage_error(demo(), &["--resize", "1073741824"]);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--resize"));
    for args in [
        &["--resize", "100"][..],
        &["--resize", "lots"],
        &["--records", "5"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("pipe_capacity"), &[&[], &["--json"]]);
}

/// Issue 16 item 8: a SIGTERM in the middle ends the demo and its children without one
/// error line.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(cargo_bin!("pipe_capacity"), &[], "full", &[0, 50, 120]);
}

/// Issue 15: a run said the writer was "sleeping in 0" (wchan `0`: it was not blocked yet
/// when /proc was read). The parent now waits until the pipe holds its 65536 bytes and the
/// writer is S with a wchan; every run names the pipe function.
#[test]
fn the_writer_is_seen_asleep_in_the_pipe_every_time() {
    for run in 0..5 {
        let events = run_json(demo(), &[]);
        let sleeping = find(&events, "sleeping");
        let place = sleeping["wchan"].as_str().expect("wchan");
        assert!(place.contains("pipe"), "run {run}: {sleeping}");
        assert_eq!(sleeping["state"], "S", "run {run}: {sleeping}");
    }
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    examples::assert_help_examples(
        cargo_bin!("pipe_capacity"),
        &[&[], &["--resize", "1048576"]],
    );
    let events = run_json(demo(), &[]);
    assert_eq!(summary(&events)["capacity_bytes"], 65536);
    assert_eq!(find(&events, "sleeping")["state"], "S");
    let events = run_json(demo(), &["--resize", "1048576"]);
    assert_eq!(summary(&events)["resized_bytes"], 1048576);
}
