//! sigchld_pidfd: one pidfd per child reaps every child (checked in /proc by the test),
//! with no SIGCHLD counted, and the pidfds are open while the children run.

mod deaths;
mod examples;
mod stops;
mod util;

use examples::without_json;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("sigchld_pidfd")
}

#[test]
fn the_pidfds_reap_all_fifty_children() {
    let events = run_json(demo(), &["--children", "50"]);
    let children = pids_in(&find(&events, "forked")["pids"]);
    for &pid in &children {
        assert_eq!(proc_state(pid), None, "child {pid} left behind");
    }
    let reaps: Vec<i32> = events
        .iter()
        .filter(|e| e["event"] == "reap")
        .map(|e| pid_of(&e["child"]))
        .collect();
    let mut sorted = reaps.clone();
    sorted.sort_unstable();
    let mut expected = children.clone();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "each child reaped once, by its own pidfd");
    let summary = summary(&events);
    assert_eq!(summary["reaper"], "pidfd");
    assert_eq!(summary["signals"], 0, "no signal is involved");
    assert_eq!(summary["reaped"], 50, "{summary}");
    assert_eq!(summary["zombies_left"], 0, "{summary}");
}

#[test]
fn each_child_has_a_pidfd_open_while_it_runs() {
    let mut demo = Running::start(cargo_bin!("sigchld_pidfd"), &["--children", "5"]);
    demo.wait_for("forked");
    let mut pidfds = 0;
    let found = eventually(std::time::Duration::from_secs(5), || {
        pidfds = std::fs::read_dir(format!("/proc/{}/fd", demo.pid()))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|target| target.to_string_lossy().contains("pidfd"))
                    .count()
            })
            .unwrap_or(0);
        pidfds == 5
    });
    assert!(found, "5 pidfds expected in /proc/PID/fd, saw {pidfds}");
    let (status, _) = demo.finish();
    assert!(status.success());
}

#[test]
fn ctrl_c_leaves_no_process_and_no_zombie() {
    let mut demo = Running::start(cargo_bin!("sigchld_pidfd"), &["--children", "20"]);
    let children = pids_in(&demo.wait_for("forked")["pids"]);
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &children);
    assert_eq!(find(&events, "interrupted")["signal"], "SIGINT");
    assert_eq!(summary(&events)["interrupted"], "SIGINT");
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"]).success().stdout(contains("pidfd"));
    for args in [
        &["--children", "0"][..],
        &["--children", "1001"],
        &["--simultaneous"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("sigchld_pidfd"), &[&[][..], &["--json"]]);
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--children", "1000", "--json"]];
    examples::assert_help_examples(cargo_bin!("sigchld_pidfd"), examples);
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
        assert_eq!(summary["signals"], 0);
    }
}

/// Issue 15: the summary after Ctrl-C blames the stop, not the strategy.
#[test]
fn an_interrupted_summary_blames_the_stop_not_the_strategy() {
    deaths::assert_an_interrupted_summary_blames_the_stop(cargo_bin!("sigchld_pidfd"));
}

/// Issue 15: "1 children", "1 zombies": the count decides the noun.
#[test]
fn one_child_is_one_child() {
    deaths::assert_one_child_is_one_child(demo(), "pidfd");
}

/// Issue 16 item 8: SIGTERM while children run ends it, and them, without a word on stderr.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let args = ["--children", "20"];
    stops::assert_quiet_sigterm(cargo_bin!("sigchld_pidfd"), &args, "forked", &[100, 500]);
}
