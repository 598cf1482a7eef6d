//! sigpipe: a write with no reader fails with EPIPE while SIGPIPE is ignored, and kills the
//! writer by SIGPIPE under the default action.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigpipe")
}

#[test]
fn both_sigpipe_behaviours_are_decoded() {
    let events = run_json(demo(), &[]);
    assert_eq!(find(&events, "write_failed")["errno"], "EPIPE");
    let summary = summary(&events);
    assert_eq!(
        summary["ignored"]["code"], 0,
        "ignored: the write fails and the child goes on"
    );
    assert_eq!(summary["default"]["signal"], "SIGPIPE");
    assert_eq!(
        summary["default"]["status"],
        "killed by signal 13 (SIGPIPE)"
    );
    run(demo(), &[]).success().stdout(contains("$? = 141"));
}

#[test]
fn the_killed_writer_never_reports_an_error() {
    let events = run_json(demo(), &[]);
    let failures = events
        .iter()
        .filter(|event| event["event"] == "write_failed");
    assert_eq!(
        failures.count(),
        1,
        "only the writer that ignores SIGPIPE lives to see EPIPE"
    );
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("SIGPIPE"));
    assert_usage_error(demo(), &["--sigpipe"]);
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("sigpipe"), &[&[], &["--json"]]);
}

/// Issue 16 item 8: a SIGTERM in the middle ends the demo and its children without one
/// error line.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(cargo_bin!("sigpipe"), &[], "write", &[0, 1, 3]);
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    examples::assert_help_examples(cargo_bin!("sigpipe"), &[&[]]);
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(summary["ignored"]["code"], 0, "{summary}");
    assert_eq!(summary["default"]["signal"], "SIGPIPE", "{summary}");
}
