//! sigchld_ignore: with SIGCHLD set to SIG_IGN the kernel reaps the children itself —
//! no zombie in /proc, and no status for the parent: waitpid fails with ECHILD.

mod deaths;
mod examples;
mod stops;
mod util;

use examples::without_json;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigchld_ignore")
}

#[test]
fn ignoring_sigchld_leaves_no_status_to_collect() {
    let events = run_json(demo(), &["--children", "10"]);
    let wait = find(&events, "wait_ignored");
    assert_eq!(wait["errno"], "ECHILD");
    assert_eq!(wait["gone"], 10);
    assert_eq!(wait["zombies"], 0);
    assert_eq!(summary(&events)["reaped"], 10);
    assert_eq!(summary(&events)["reaped_by"], "kernel");
    assert_eq!(summary(&events)["reaper"], "ignore");
}

#[test]
fn fifty_children_leave_nothing_behind() {
    let events = run_json(demo(), &["--children", "50"]);
    for pid in pids_in(&find(&events, "forked")["pids"]) {
        assert_eq!(proc_state(pid), None, "child {pid} left behind");
    }
    let summary = summary(&events);
    assert_eq!(summary["children"], 50);
    assert_eq!(summary["signals"], 0);
    assert_eq!(summary["reaped"], 50, "{summary}");
    assert_eq!(summary["zombies_left"], 0, "{summary}");
}

#[test]
fn sigchld_is_ignored_while_the_demo_runs() {
    let mut demo = Running::start(cargo_bin!("sigchld_ignore"), &["--children", "3"]);
    demo.wait_for("forked");
    let ignored = proc_status(demo.pid(), "SigIgn").expect("SigIgn");
    let mask = u64::from_str_radix(&ignored, 16).expect("a hex mask");
    assert_eq!(
        mask & (1 << 16),
        1 << 16,
        "SIGCHLD (bit 16) is ignored: {ignored}"
    );
    let (status, _) = demo.finish();
    assert!(status.success());
}

#[test]
fn ctrl_c_leaves_no_process_and_no_zombie() {
    let mut demo = Running::start(cargo_bin!("sigchld_ignore"), &["--children", "20"]);
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
        .stdout(contains("SIG_IGN"));
    for args in [
        &["--children", "0"][..],
        &["--children", "1001"],
        &["--spread", "1"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("sigchld_ignore"), &[&[][..], &["--json"]]);
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--children", "100", "--json"]];
    examples::assert_help_examples(cargo_bin!("sigchld_ignore"), examples);
    for args in examples {
        let events = run_json(demo(), &without_json(args));
        let summary = summary(&events);
        let children = if args.contains(&"--children") {
            args[args.len() - 1 - usize::from(args.last() == Some(&"--json"))]
        } else {
            "5"
        };
        assert_eq!(summary["children"].to_string(), children, "{args:?}");
        assert_eq!(summary["reaped_by"], "kernel", "{args:?}");
        assert_eq!(find(&events, "wait_ignored")["errno"], "ECHILD");
        assert_eq!(summary["zombies_left"], 0);
    }
}

/// Issue 15: the summary after Ctrl-C blames the stop, not the strategy.
#[test]
fn an_interrupted_summary_blames_the_stop_not_the_strategy() {
    deaths::assert_an_interrupted_summary_blames_the_stop(cargo_bin!("sigchld_ignore"));
}

/// Issue 15: "1 children", "1 zombies": the count decides the noun.
#[test]
fn one_child_is_one_child() {
    deaths::assert_one_child_is_one_child(demo(), "ignore");
}

/// Issue 16 item 8: SIGTERM while children run ends it, and them, without a word on stderr.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--children", "20"];
    stops::assert_quiet_sigterm(cargo_bin!("sigchld_ignore"), &args, "forked", &[100, 500]);
}
