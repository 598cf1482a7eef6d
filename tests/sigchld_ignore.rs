//! sigchld_ignore: with SIGCHLD set to SIG_IGN the kernel reaps the children itself —
//! no zombie in /proc, and no status for the parent: waitpid fails with ECHILD.

mod util;

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
