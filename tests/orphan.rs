//! orphan: when its parent exits, a child is adopted — by the demo when it is a child
//! subreaper, by the system otherwise — and the test reads the new PPid in /proc itself.

mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("orphan")
}

#[test]
fn orphan_is_adopted_by_the_subreaper() {
    let mut demo = Running::start(cargo_bin!("orphan"), &["--hold", "2"]);
    let hold = demo.wait_for("hold");
    let orphan = pid_of(&hold["child"]);
    // The test's own look: the orphan's parent is now the demo.
    assert_eq!(proc_status(orphan, "PPid"), Some(demo.pid().to_string()));
    assert!(running(orphan), "the orphan lives during the hold");
    let (status, events) = demo.finish();
    assert!(status.success());

    let summary = summary(&events);
    let parent = pid_of(&summary["parent_before"]);
    assert_eq!(pid_of(&summary["child"]), orphan);
    assert_eq!(pid_of(&summary["parent_after"]), demo_pid(&events));
    assert_eq!(summary["subreaper"], summary["parent_after"]);
    assert_ne!(parent, demo_pid(&events));
    // The orphan saw it too, through getppid().
    assert_eq!(pid_of(&find(&events, "started")["ppid"]), parent);
    assert_eq!(
        pid_of(&find(&events, "reparented")["ppid"]),
        demo_pid(&events)
    );
    // The subreaper reaped both: nothing is left, not even a zombie.
    assert_eq!(proc_state(orphan), None);
    assert_eq!(proc_state(parent), None);
}

fn demo_pid(events: &[serde_json::Value]) -> i32 {
    pid_of(&summary(events)["pid"])
}

#[test]
fn without_a_subreaper_the_system_adopts_and_the_orphan_still_ends() {
    let mut demo = Running::start(cargo_bin!("orphan"), &["--no-subreaper", "--hold", "1"]);
    let hold = demo.wait_for("hold");
    let orphan = pid_of(&hold["child"]);
    let adopted = demo.wait_for("adopted");
    let adopter = proc_status(orphan, "PPid").expect("the orphan is alive during the hold");
    assert_ne!(adopter, demo.pid().to_string(), "the demo is no subreaper");
    assert_eq!(adopted["ppid"].to_string(), adopter);
    let (status, events) = demo.finish();
    assert!(status.success());
    let summary = summary(&events);
    assert_eq!(summary["subreaper"], serde_json::Value::Null);
    assert_eq!(summary["parent_after"].to_string(), adopter);
    assert!(!running(orphan), "the orphan has ended when the demo exits");
}

#[test]
fn killing_the_demo_still_ends_the_orphan() {
    let mut demo = Running::start(cargo_bin!("orphan"), &["--no-subreaper", "--hold", "30"]);
    let orphan = pid_of(&demo.wait_for("hold")["child"]);
    demo.kill();
    assert!(
        eventually(Duration::from_secs(5), || !running(orphan)),
        "orphan {orphan} outlived the demo"
    );
}

#[test]
fn ctrl_c_during_the_hold_leaves_nothing() {
    let mut demo = Running::start(cargo_bin!("orphan"), &["--hold", "30"]);
    let orphan = pid_of(&demo.wait_for("hold")["child"]);
    let parent = pid_of(&demo.wait_for("fork")["child"]);
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[orphan, parent]);
}

#[test]
fn text_mode_names_the_adopter() {
    run(demo(), &[])
        .success()
        .stdout(contains("me, the subreaper"));
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--no-subreaper"));
    for args in [&["--hold", "-3"][..], &["--hold", "x"], &["--subreaper"]] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("orphan"),
        &[&[][..], &["--json", "--no-subreaper"]],
    );
}
