//! fork_buffer: a partial line printed before fork reaches stdout twice when the child
//! leaves through std::process::exit, once when it leaves through _exit.

mod examples;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("fork_buffer")
}

#[test]
fn buffered_text_is_duplicated_only_when_the_child_flushes_it() {
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(summary["mode"], "buffer-pitfall");
    let copies = &summary["copies"];
    assert_eq!(copies["std::process::exit(0)"], 2, "{copies}");
    assert_eq!(copies["_exit(0)"], 1, "{copies}");
}

#[test]
fn the_caught_bytes_are_the_marker_and_one_newline() {
    let events = run_json(demo(), &[]);
    let pitfalls: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "pitfall").collect();
    assert_eq!(pitfalls.len(), 2);
    let marker = format!(
        "[printed once by {}, before fork] ",
        summary(&events)["pid"]
    );
    assert_eq!(pitfalls[0]["caught"], format!("{marker}{marker}\n"));
    assert_eq!(pitfalls[1]["caught"], format!("{marker}\n"));
}

#[test]
fn text_mode_says_how_often_the_text_appears() {
    run(demo(), &[])
        .success()
        .stdout(contains("the text appears 2x"))
        .stdout(contains("the text appears 1x"));
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("Examples"));
    assert_usage_error(demo(), &["--buffer-pitfall"]);
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("fork_buffer"), &[&[][..], &["--json"]]);
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--json"]];
    examples::assert_help_examples(cargo_bin!("fork_buffer"), examples);
    run(demo(), examples[0])
        .success()
        .stdout(contains("the text appears 2x"))
        .stdout(contains("the text appears 1x"));
    let events = run_json(demo(), &[]);
    assert_eq!(summary(&events)["copies"]["std::process::exit(0)"], 2);
    assert_eq!(summary(&events)["copies"]["_exit(0)"], 1);
}
