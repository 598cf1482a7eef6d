//! pipe_deadlock: both sides write more than a pipe holds before reading; /proc shows both
//! asleep in the kernel's pipe write, the watchdog kills and reaps them, and Ctrl-C leaves
//! no process.

mod examples;
mod stops;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("pipe_deadlock")
}

#[test]
fn the_deadlock_is_seen_in_proc_and_ended_by_the_watchdog() {
    let mut demo = Running::start(cargo_bin!("pipe_deadlock"), &["--watchdog", "3"]);
    demo.wait_for("watch");
    let mut sides = Vec::new();
    for side in ["left", "right"] {
        let write = demo.wait_for_where("write", |e| e["role"] == side);
        sides.push(pid_of(&write["pid"]));
    }
    // The test's own look: both asleep in the kernel's pipe write.
    for &pid in &sides {
        assert!(
            eventually(Duration::from_secs(2), || proc_state(pid) == Some('S')
                && proc_wchan(pid)
                    .is_some_and(|place| place.contains("pipe_write"))),
            "{pid}: {:?} in {:?}",
            proc_state(pid),
            proc_wchan(pid)
        );
    }
    let (status, events) = demo.finish();
    assert!(status.success(), "the demo ends by itself: {status:?}");
    let summary = summary(&events);
    assert_eq!(summary["deadlock_detected"], true);
    assert_eq!(summary["message_bytes"], 262_144);
    assert!(
        summary["wchan"]
            .as_str()
            .is_some_and(|place| place.contains("pipe_write")),
        "{summary}"
    );
    assert!(
        events.iter().all(|e| e["event"] != "read"),
        "no side ever got past its write"
    );
    for pid in sides {
        assert_eq!(proc_state(pid), None, "{pid} reaped");
    }
}

#[test]
fn ctrl_c_leaves_no_process() {
    let mut demo = Running::start(cargo_bin!("pipe_deadlock"), &["--watchdog", "30"]);
    demo.wait_for("watch");
    let left = pid_of(&demo.wait_for_where("write", |e| e["role"] == "left")["pid"]);
    let right = pid_of(&demo.wait_for_where("write", |e| e["role"] == "right")["pid"]);
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[left, right]);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--message"))
        .stdout(contains("--watchdog"));
    for args in [
        &["--message", "100"][..],
        &["--message", "65536"], // it fits in the pipe: no deadlock
        &["--watchdog", "61"],
        &["--watchdog", "soon"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("pipe_deadlock"),
        &[&["--watchdog", "0"], &["--json", "--watchdog", "0"]],
    );
}

/// Issue 16 item 8: the error names the real range.
#[test]
fn a_watchdog_out_of_range_names_the_range() {
    for value in ["61", "4000", "1e9"] {
        run(demo(), &["--watchdog", value])
            .code(2)
            .stderr(contains("between 0 and 60 seconds"));
    }
}

/// Issue 16 item 8: SIGTERM to the demo while both sides sleep is quiet.
#[test]
fn sigterm_during_the_deadlock_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("pipe_deadlock"),
        &["--watchdog", "30"],
        "watch",
        &[0, 200],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises: the default
/// run detects the deadlock; `--watchdog 30` leaves time to look — both sides are seen
/// asleep in the pipe write from outside, with the demo still waiting.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--watchdog", "30"]];
    examples::assert_help_examples(cargo_bin!("pipe_deadlock"), examples);
    let events = run_json(demo(), examples[0]);
    assert_eq!(summary(&events)["deadlock_detected"], true);
    let mut demo = Running::start(cargo_bin!("pipe_deadlock"), examples[1]);
    let sides: Vec<i32> = ["left", "right"]
        .iter()
        .map(|&side| pid_of(&demo.wait_for_where("write", |e| e["role"] == side)["pid"]))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    for pid in sides {
        let wchan = proc_wchan(pid).unwrap_or_default();
        assert!(wchan.contains("pipe_write"), "{pid} in {wchan:?}");
    }
    assert!(running(demo.pid()), "the demo still waits after 2 s of 30");
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &spawned_pids(&events));
    assert!(
        events.iter().all(|e| e["event"] != "deadlock"),
        "not yet called a deadlock"
    );
}

/// The fault grid: a side killed (here by `kill -9`) ends the watch at once — there is no
/// deadlock left to wait for — and the demo reaps both and ends, within seconds.
#[test]
fn a_side_killed_ends_the_watch_at_once() {
    let mut demo = Running::start(cargo_bin!("pipe_deadlock"), &["--watchdog", "30"]);
    let left = pid_of(&demo.wait_for_where("write", |e| e["role"] == "left")["pid"]);
    demo.wait_for_where("write", |e| e["role"] == "right");
    send_signal(left, libc::SIGKILL);
    let started = std::time::Instant::now();
    let (status, events) = demo.finish();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(summary(&events)["deadlock_detected"], false);
}
