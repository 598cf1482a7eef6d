//! sigchld: every reaping strategy reaps all children and leaves no zombie (checked in
//! /proc by the test), SIGCHLD signals merge, and the naive one-wait-per-signal reaper
//! leaves exactly N-1 zombies when N children die while SIGCHLD is blocked.

mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigchld")
}

const STRATEGIES: [&str; 5] = ["handler", "signalfd", "pidfd", "ignore", "naive"];

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
fn every_strategy_reaps_all_fifty_children() {
    for reaper in STRATEGIES {
        let summary = run_and_check_nothing_left(&[
            "--reaper",
            reaper,
            "--children",
            "50",
            "--spread",
            "0.25",
        ]);
        assert_eq!(summary["reaper"], reaper);
        assert_eq!(summary["children"], 50, "{summary}");
        let signals = summary["signals"].as_u64().expect("signals");
        assert!(
            signals <= 50,
            "{reaper}: no more signals than deaths: {summary}"
        );
        if reaper == "naive" {
            // Staggered deaths rarely merge, but may: what naive misses, cleanup reaps.
            let reaped = summary["reaped"].as_u64().expect("reaped");
            let left = summary["zombies_left"].as_u64().expect("zombies_left");
            assert_eq!(reaped + left, 50, "{summary}");
        } else {
            assert_eq!(summary["reaped"], 50, "{reaper}: {summary}");
            assert_eq!(summary["zombies_left"], 0, "{reaper}: {summary}");
        }
    }
}

#[test]
fn simultaneous_deaths_make_one_signal_and_all_are_still_reaped() {
    for reaper in ["handler", "signalfd"] {
        let summary =
            run_and_check_nothing_left(&["--reaper", reaper, "--children", "50", "--simultaneous"]);
        assert_eq!(
            summary["signals"], 1,
            "{reaper}: 50 deaths while blocked, one SIGCHLD: {summary}"
        );
        assert_eq!(summary["reaped"], 50, "{reaper}: {summary}");
        assert_eq!(summary["zombies_left"], 0);
    }
}

#[test]
fn the_naive_reaper_leaves_n_minus_one_zombies() {
    let mut demo = Running::start(
        cargo_bin!("sigchld"),
        &["--reaper", "naive", "--children", "50", "--simultaneous"],
    );
    let all = demo.wait_for("all_zombies");
    assert_eq!(all["pending"], true, "SIGCHLD is pending, blocked");
    let left = demo.wait_for("zombies_left");
    let (status, events) = demo.finish();
    assert!(status.success());
    let summary = summary(&events);
    assert_eq!(summary["signals"], 1);
    assert_eq!(summary["reaped"], 1);
    assert_eq!(summary["zombies_left"], 49);
    assert_eq!(pids_in(&left["pids"]).len(), 49);
    assert_eq!(find(&events, "cleanup")["reaped"], 49);
    for pid in pids_in(&find(&events, "forked")["pids"]) {
        assert_eq!(proc_state(pid), None, "cleanup reaped {pid}");
    }
}

#[test]
fn the_zombies_naive_leaves_are_in_proc() {
    let args = [
        "--reaper",
        "naive",
        "--children",
        "50",
        "--simultaneous",
        "--hold",
        "2",
    ];
    let mut demo = Running::start(cargo_bin!("sigchld"), &args);
    let children = pids_in(&demo.wait_for("forked")["pids"]);
    let held = pids_in(&demo.wait_for("hold")["pids"]);
    // The test's own look at the kernel, before the demo's cleanup.
    let zombies: Vec<i32> = children
        .iter()
        .copied()
        .filter(|&pid| proc_state(pid) == Some('Z'))
        .collect();
    assert_eq!(zombies.len(), 49, "one reaped, 49 zombies");
    assert_eq!(zombies, held);
    for &pid in &zombies {
        assert_eq!(proc_status(pid, "PPid"), Some(demo.pid().to_string()));
    }
    let (status, _) = demo.finish();
    assert!(status.success());
    for pid in children {
        assert_eq!(proc_state(pid), None, "cleanup reaped {pid}");
    }
}

#[test]
fn a_thousand_children_are_all_reaped_by_the_handler() {
    let summary = run_and_check_nothing_left(&[
        "--reaper",
        "handler",
        "--children",
        "1000",
        "--spread",
        "0.5",
    ]);
    assert_eq!(summary["reaped"], 1000);
    assert_eq!(summary["zombies_left"], 0);
    assert!(summary["signals"].as_u64().expect("signals") <= 1000);
}

#[test]
fn ignoring_sigchld_leaves_no_status_to_collect() {
    let events = run_json(
        demo(),
        &["--reaper", "ignore", "--children", "10", "--spread", "0.1"],
    );
    let wait = find(&events, "wait_ignored");
    assert_eq!(wait["errno"], "ECHILD");
    assert_eq!(wait["gone"], 10);
    assert_eq!(wait["zombies"], 0);
    assert_eq!(summary(&events)["reaped"], 10);
    assert_eq!(summary(&events)["reaped_by"], "kernel");
}

#[test]
fn ctrl_c_leaves_no_process_and_no_zombie() {
    for reaper in STRATEGIES {
        let mut demo = Running::start(
            cargo_bin!("sigchld"),
            &["--reaper", reaper, "--children", "20", "--spread", "30"],
        );
        let children = pids_in(&demo.wait_for("forked")["pids"]);
        demo.interrupt();
        let (status, events) = demo.finish();
        assert_interrupted_cleanly(status, &children);
        assert_eq!(find(&events, "interrupted")["signal"], "SIGINT", "{reaper}");
        assert_eq!(summary(&events)["interrupted"], "SIGINT");
        if let Some(left) = events.iter().find(|e| e["event"] == "zombies_left") {
            assert!(
                !left["text"].as_str().expect("text").contains("the bug"),
                "{reaper}: {left}"
            );
        }
    }
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("signalfd"));
    for args in [
        &["--reaper", "magic"][..],
        &["--children", "0"],
        &["--children", "1001"],
        &["--spread", "61"],
        &["--simultaneously"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("sigchld"),
        &[&[][..], &["--json", "--reaper", "naive", "--simultaneous"]],
    );
}
