//! orphan: when its parent exits, a child is adopted — by the demo when it is a child
//! subreaper, by the system otherwise — and the test reads the new PPid in /proc itself.

mod examples;
mod stops;
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

/// Issue 15: `orphan --no-subreaper --hold 30` went on for 30 s after the orphan was
/// killed; the hold now ends with the orphan, with or without the subreaper.
#[test]
fn killing_the_orphan_ends_the_hold() {
    for args in [&["--hold", "30"][..], &["--no-subreaper", "--hold", "30"]] {
        let mut demo = Running::start(cargo_bin!("orphan"), args);
        let orphan = pid_of(&demo.wait_for("hold")["child"]);
        let killed = std::time::Instant::now();
        send_signal(orphan, libc::SIGTERM);
        let (status, events) = demo.finish();
        assert!(status.success(), "{args:?}: {status:?}");
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(3),
            "{args:?}: the hold went on"
        );
        // PID 1 here may take a moment to reap what it adopted (up to ~2 s seen).
        let gone = eventually(std::time::Duration::from_secs(5), || {
            proc_state(orphan).is_none()
        });
        assert!(gone, "{args:?}: {orphan} left behind");
        if args.len() == 2 {
            let reaped = events
                .iter()
                .find(|e| e["event"] == "reap" && pid_of(&e["child"]) == orphan);
            assert_eq!(reaped.expect("the subreaper reaps it")["signal"], "SIGTERM");
        } else {
            assert_eq!(pid_of(&find(&events, "ended")["child"]), orphan);
        }
    }
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--hold", "3"], &["--no-subreaper", "--json"]];
    examples::assert_help_examples(cargo_bin!("orphan"), examples);
    let adopted = run_json(demo(), examples[0]);
    let demo_pid = pid_of(&find(&adopted, "subreaper")["pid"]);
    assert_eq!(summary(&adopted)["parent_after"], demo_pid);
    // --hold 3: the orphan lives, adopted, for the ps command the hold line prints.
    let mut held = Running::start(cargo_bin!("orphan"), examples[1]);
    let hold = held.wait_for("hold");
    let orphan = pid_of(&hold["child"]);
    assert_eq!(proc_status(orphan, "PPid"), Some(held.pid().to_string()));
    assert!(
        hold["text"]
            .as_str()
            .expect("text")
            .ends_with(&format!("-p {orphan}"))
    );
    assert!(held.finish().0.success());
    let system = run_json(demo(), &examples::without_json(examples[2]));
    assert_ne!(
        summary(&system)["parent_after"],
        summary(&system)["subreaper"]
    );
    assert_eq!(summary(&system)["subreaper"], serde_json::Value::Null);
}

/// Issue 16 item 8: SIGTERM during the hold ends the demo and the orphan quietly.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    for args in [&["--hold", "5"][..], &["--no-subreaper", "--hold", "5"]] {
        stops::assert_quiet_sigterm(cargo_bin!("orphan"), args, "hold", &[50, 300]);
    }
}
