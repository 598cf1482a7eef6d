//! sigchld_signalfd: SIGCHLD read from a signalfd reaps every child (checked in /proc by
//! the test); deaths while it is pending make one read, and the loop still reaps them all.

mod deaths;
mod examples;
mod stops;
mod util;

use examples::without_json;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigchld_signalfd")
}

/// Runs the demo, then checks in /proc that none of its children is left.
fn run_and_check_nothing_left(args: &[&str]) -> serde_json::Value {
    let events = run_json(demo(), args);
    let children = pids_in(&find(&events, "forked")["pids"]);
    for pid in children {
        assert_eq!(proc_state(pid), None, "{args:?}: child {pid} left behind");
    }
    summary(&events).clone()
}

#[test]
fn the_signalfd_reaps_all_fifty_children() {
    let summary = run_and_check_nothing_left(&["--children", "50"]);
    assert_eq!(summary["reaper"], "signalfd");
    assert_eq!(summary["children"], 50, "{summary}");
    assert!(
        summary["signals"].as_u64().expect("signals") <= 50,
        "{summary}"
    );
    assert_eq!(summary["reaped"], 50, "{summary}");
    assert_eq!(summary["zombies_left"], 0, "{summary}");
}

#[test]
fn simultaneous_deaths_make_one_read_and_all_are_still_reaped() {
    let mut demo = Running::start(
        cargo_bin!("sigchld_signalfd"),
        &["--children", "50", "--simultaneous"],
    );
    let all = demo.wait_for("all_zombies");
    assert_eq!(all["pending"], true, "SIGCHLD is pending, blocked");
    let (status, events) = demo.finish();
    assert!(status.success());
    let summary = summary(&events);
    assert_eq!(summary["signals"], 1, "50 deaths, one SIGCHLD: {summary}");
    let reads: Vec<_> = events.iter().filter(|e| e["event"] == "signal").collect();
    assert_eq!(reads.len(), 1);
    let children = pids_in(&find(&events, "forked")["pids"]);
    assert!(
        children.contains(&pid_of(&reads[0]["from"])),
        "sent for one of ours"
    );
    assert_eq!(summary["reaped"], 50, "{summary}");
    assert_eq!(summary["zombies_left"], 0);
    for pid in children {
        assert_eq!(proc_state(pid), None, "{pid} left behind");
    }
}

#[test]
fn sigchld_is_blocked_and_never_caught() {
    let mut demo = Running::start(cargo_bin!("sigchld_signalfd"), &["--children", "3"]);
    demo.wait_for("forked");
    let bit = 1u64 << 16; // SIGCHLD is signal 17
    let mask = |field| u64::from_str_radix(&proc_status(demo.pid(), field).expect(field), 16);
    assert_eq!(
        mask("SigBlk").expect("hex") & bit,
        bit,
        "SIGCHLD is blocked"
    );
    assert_eq!(
        mask("SigCgt").expect("hex") & bit,
        0,
        "no handler for SIGCHLD"
    );
    let (status, _) = demo.finish();
    assert!(status.success());
}

#[test]
fn ctrl_c_leaves_no_process_and_no_zombie() {
    let mut demo = Running::start(cargo_bin!("sigchld_signalfd"), &["--children", "20"]);
    let children = pids_in(&demo.wait_for("forked")["pids"]);
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &children);
    assert_eq!(find(&events, "interrupted")["signal"], "SIGINT");
    assert_eq!(summary(&events)["interrupted"], "SIGINT");
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("signalfd"));
    for args in [
        &["--children", "0"][..],
        &["--children", "1001"],
        &["--naive"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("sigchld_signalfd"),
        &[&[][..], &["--json", "--simultaneous"]],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--simultaneous"], &["--children", "1000"]];
    examples::assert_help_examples(cargo_bin!("sigchld_signalfd"), examples);
    for args in examples {
        let events = run_json(demo(), &without_json(args));
        let summary = summary(&events);
        let children = if args.contains(&"--children") {
            args[args.len() - 1 - usize::from(args.last() == Some(&"--json"))]
        } else {
            "5"
        };
        assert_eq!(summary["children"].to_string(), children, "{args:?}");
        assert_eq!(summary["reaped"], summary["children"], "{args:?}");
        if args.contains(&"--simultaneous") {
            assert_eq!(summary["signals"], 1, "one read for five deaths");
        }
    }
}

/// Issue 15: the summary after Ctrl-C blames the stop, not the strategy.
#[test]
fn an_interrupted_summary_blames_the_stop_not_the_strategy() {
    deaths::assert_an_interrupted_summary_blames_the_stop(cargo_bin!("sigchld_signalfd"));
}

/// Issue 15: "1 children", "1 zombies": the count decides the noun.
#[test]
fn one_child_is_one_child() {
    deaths::assert_one_child_is_one_child(demo(), "signalfd");
}

/// Issue 16 item 8: SIGTERM while children run ends it, and them, without a word on stderr.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--children", "20"];
    stops::assert_quiet_sigterm(cargo_bin!("sigchld_signalfd"), &args, "forked", &[100, 500]);
}
