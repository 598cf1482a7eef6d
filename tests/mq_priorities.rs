//! mq_priorities: the highest priority comes out first, FIFO within one priority; with
//! --hold the full queue keeps its name, and Ctrl-C removes it.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, mq_open};
use nix::sys::stat::Mode;
use predicates::str::contains;
use std::time::Duration;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("mq_priorities")
}

/// The test's own check that the demo's queue no longer exists: opening it by name fails.
fn assert_queue_gone(name: &str) {
    let opened = mq_open(name, MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert_eq!(opened.err(), Some(Errno::ENOENT), "{name} is left behind");
}

#[test]
fn the_highest_priority_comes_out_first_fifo_within_one() {
    let events = run_json(demo(), &[]);
    let summary = summary(&events);
    assert_eq!(summary["priority_order_ok"], true);
    assert_eq!(summary["priorities_kept"], true, "{summary}");
    for (field, expected) in [
        ("sent", 10),
        ("received", 10),
        ("duplicates", 0),
        ("missing", 0),
        ("left_in_queue", 0),
    ] {
        assert_eq!(summary[field], expected, "{field}: {summary}");
    }
    // The test's own reading of the order the consumer received.
    let received: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "receive")
        .map(|e| {
            (
                e["priority"].as_u64().expect("priority"),
                e["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    assert_eq!(received.len(), 10);
    for pair in received.windows(2) {
        let ((prio_a, seq_a), (prio_b, seq_b)) = (pair[0], pair[1]);
        assert!(
            prio_a > prio_b || (prio_a == prio_b && seq_a < seq_b),
            "{received:?}"
        );
    }
    assert_eq!(
        received[0],
        (3, 1),
        "priority 3 first; of those, the first sent"
    );
    let receiver = find(&events, "receive")["role"].clone();
    assert_eq!(receiver, "consumer", "a forked consumer receives");
    assert_queue_gone(find(&events, "mq_open")["name"].as_str().expect("name"));
}

#[test]
fn ctrl_c_while_the_queue_still_has_its_name_removes_it() {
    let mut demo = Running::start(cargo_bin!("mq_priorities"), &["--hold", "30"]);
    let name = demo.wait_for("hold")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert!(opened.is_ok(), "the name exists during --hold");
    drop(opened);
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[]);
    assert_queue_gone(&name);
}

/// Issue 16 item 2: kill -9 during the hold used to leave the queue. The guard the demo
/// forks before mq_open removes the name once the demo is gone, however it died.
#[test]
fn sigkill_during_the_hold_leaves_no_queue() {
    let mut demo = Running::start(cargo_bin!("mq_priorities"), &["--hold", "30"]);
    let name = demo.wait_for("hold")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let guard = pid_of(&demo.wait_for("guard")["guard"]);
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert!(opened.is_ok(), "the name exists during --hold");
    demo.kill();
    let gone = eventually(Duration::from_secs(5), || {
        mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None).err() == Some(Errno::ENOENT)
    });
    assert!(gone, "{name} is left behind after kill -9");
    assert!(
        eventually(Duration::from_secs(5), || !running(guard)),
        "the guard {guard} ends once its work is done"
    );
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--hold"));
    for args in [
        &["--hold", "-1"][..],
        &["--hold", "3601"],
        &["--hold", "soon"],
        // The old `--priorities --producers 2` conflict is gone: there are no producers
        // to choose here.
        &["--producers", "2"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("mq_priorities"), &[&[], &["--json"]]);
}

/// Issue 16 item 8: a SIGTERM in the middle ends the demo and its children without one
/// error line.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    let demo = cargo_bin!("mq_priorities");
    stops::assert_quiet_sigterm(demo, &[], "mq_open", &[0, 1]);
    stops::assert_quiet_sigterm(demo, &["--hold", "0.1"], "hold", &[0, 90, 110]);
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    examples::assert_help_examples(cargo_bin!("mq_priorities"), &[&[], &["--hold", "30"]]);
    let events = run_json(demo(), &[]);
    assert_eq!(summary(&events)["priority_order_ok"], true);
    // --hold 30: the full queue keeps its name while it is held (then Ctrl-C ends it).
    let mut demo = Running::start(cargo_bin!("mq_priorities"), &["--hold", "30"]);
    let name = demo.wait_for("hold")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert!(opened.is_ok(), "{name} can be opened during the hold");
    assert_eq!(demo.wait_for("filled")["messages"], 10);
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[]);
}
