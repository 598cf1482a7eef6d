//! sigchld: the handler-and-loop reaper reaps every child and leaves no zombie (checked in
//! /proc by the test), SIGCHLD signals merge, and the naive one-wait-per-signal reaper
//! leaves exactly N-1 zombies when N children die while SIGCHLD is blocked.

mod deaths;
mod examples;
mod stops;
mod util;

use examples::without_json;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigchld")
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
fn the_handler_reaps_all_fifty_children() {
    let summary = run_and_check_nothing_left(&["--children", "50"]);
    assert_eq!(summary["reaper"], "handler");
    assert_eq!(summary["children"], 50, "{summary}");
    let signals = summary["signals"].as_u64().expect("signals");
    assert!(signals <= 50, "no more signals than deaths: {summary}");
    assert_eq!(summary["reaped"], 50, "{summary}");
    assert_eq!(summary["reaped_by"], "parent");
    assert_eq!(summary["zombies_left"], 0, "{summary}");
}

#[test]
fn staggered_deaths_and_the_naive_reaper_still_leave_nothing_after_cleanup() {
    // Staggered deaths rarely merge, but may: what naive misses, cleanup reaps.
    let summary = run_and_check_nothing_left(&["--naive", "--children", "50"]);
    assert_eq!(summary["reaper"], "naive");
    assert!(
        summary["signals"].as_u64().expect("signals") <= 50,
        "{summary}"
    );
    let reaped = summary["reaped"].as_u64().expect("reaped");
    let left = summary["zombies_left"].as_u64().expect("zombies_left");
    assert_eq!(reaped + left, 50, "{summary}");
}

#[test]
fn simultaneous_deaths_make_one_signal_and_all_are_still_reaped() {
    let summary = run_and_check_nothing_left(&["--children", "50", "--simultaneous"]);
    assert_eq!(summary["simultaneous"], true);
    assert_eq!(
        summary["signals"], 1,
        "50 deaths while blocked, one SIGCHLD: {summary}"
    );
    assert_eq!(summary["reaped"], 50, "{summary}");
    assert_eq!(summary["zombies_left"], 0);
}

#[test]
fn the_naive_reaper_leaves_n_minus_one_zombies() {
    let mut demo = Running::start(
        cargo_bin!("sigchld"),
        &["--naive", "--children", "50", "--simultaneous"],
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
    assert!(
        left["text"].as_str().expect("text").contains("the bug"),
        "{left}"
    );
    assert_eq!(find(&events, "cleanup")["reaped"], 49);
    for pid in pids_in(&find(&events, "forked")["pids"]) {
        assert_eq!(proc_state(pid), None, "cleanup reaped {pid}");
    }
}

#[test]
fn the_zombies_naive_leaves_are_in_proc() {
    let args = ["--naive", "--children", "50", "--simultaneous"];
    let mut demo = Running::start(cargo_bin!("sigchld"), &args);
    let children = pids_in(&demo.wait_for("forked")["pids"]);
    let hold = demo.wait_for("hold");
    assert_eq!(hold["seconds"], 2.0);
    let held = pids_in(&hold["pids"]);
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
    let summary = run_and_check_nothing_left(&["--children", "1000"]);
    assert_eq!(summary["reaped"], 1000);
    assert_eq!(summary["zombies_left"], 0);
    assert!(summary["signals"].as_u64().expect("signals") <= 1000);
}

#[test]
fn a_stopped_and_continued_child_sends_no_sigchld_thanks_to_sa_nocldstop() {
    let mut demo = Running::start(cargo_bin!("sigchld"), &["--children", "3"]);
    let children = pids_in(&demo.wait_for("forked")["pids"]);
    let last = children[2]; // it exits a second after its fork
    let caught = proc_status(demo.pid(), "SigCgt").expect("SigCgt");
    let mask = u64::from_str_radix(&caught, 16).expect("a hex mask");
    assert_eq!(
        mask & (1 << 16),
        1 << 16,
        "SIGCHLD (bit 16) is caught: {caught}"
    );
    send_signal(last, libc::SIGSTOP);
    assert!(
        eventually(std::time::Duration::from_secs(5), || proc_state(last)
            == Some('T')),
        "{last} did not stop"
    );
    send_signal(last, libc::SIGCONT);
    let (status, events) = demo.finish();
    assert!(status.success());
    let summary = summary(&events);
    assert_eq!(summary["reaped"], 3, "{summary}");
    assert!(
        summary["signals"].as_u64().expect("signals") <= 3,
        "only deaths are signalled, not the stop or the continue: {summary}"
    );
}

#[test]
fn ctrl_c_leaves_no_process_and_no_zombie() {
    for args in [&["--children", "20"][..], &["--children", "20", "--naive"]] {
        let mut demo = Running::start(cargo_bin!("sigchld"), args);
        let children = pids_in(&demo.wait_for("forked")["pids"]);
        demo.interrupt();
        let (status, events) = demo.finish();
        assert_interrupted_cleanly(status, &children);
        assert_eq!(find(&events, "interrupted")["signal"], "SIGINT", "{args:?}");
        assert_eq!(summary(&events)["interrupted"], "SIGINT");
        if let Some(left) = events.iter().find(|e| e["event"] == "zombies_left") {
            assert!(
                !left["text"].as_str().expect("text").contains("the bug"),
                "{args:?}: {left}"
            );
        }
    }
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--naive"))
        .stdout(contains("--simultaneous"));
    for args in [
        &["--reaper", "naive"][..], // the strategies are programs of their own now
        &["--children", "0"],
        &["--children", "1001"],
        &["--spread", "0.5"], // the spread is fixed now
        &["--simultaneously"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("sigchld"),
        &[&[][..], &["--json", "--naive", "--simultaneous"]],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--simultaneous", "--naive"], &["--children", "1000"]];
    examples::assert_help_examples(cargo_bin!("sigchld"), examples);
    for args in examples {
        let events = run_json(demo(), &without_json(args));
        let summary = summary(&events);
        let children = if args.contains(&"--children") {
            args[args.len() - 1 - usize::from(args.last() == Some(&"--json"))]
        } else {
            "5"
        };
        assert_eq!(summary["children"].to_string(), children, "{args:?}");
        assert_eq!(
            summary["reaped"].as_u64().expect("reaped")
                + summary["zombies_left"].as_u64().expect("left"),
            summary["children"].as_u64().expect("children"),
            "{args:?}"
        );
        if args.contains(&"--naive") {
            assert_eq!(summary["signals"], 1, "one SIGCHLD for five deaths");
            assert_eq!(summary["zombies_left"], 4, "the bug: four zombies");
        } else {
            assert_eq!(summary["zombies_left"], 0, "{args:?}");
        }
    }
}

/// Issue 15: the summary after Ctrl-C blames the stop, not the strategy.
#[test]
fn an_interrupted_summary_blames_the_stop_not_the_strategy() {
    deaths::assert_an_interrupted_summary_blames_the_stop(cargo_bin!("sigchld"));
}

/// Issue 15: "1 children", "1 zombies": the count decides the noun.
#[test]
fn one_child_is_one_child() {
    deaths::assert_one_child_is_one_child(demo(), "handler");
}

/// Issue 16 item 8: SIGTERM while children run ends it, and them, without a word on stderr.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--children", "20"];
    stops::assert_quiet_sigterm(cargo_bin!("sigchld"), &args, "forked", &[100, 500]);
}
