//! mqueue: every message exactly once for several producers and consumers, in order per
//! producer; a dead consumer or Ctrl-C ends the run with no queue and no process left; an
//! exhausted queue quota is named.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, mq_open};
use nix::sys::stat::Mode;
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("mqueue")
}

/// A run long enough to interrupt: 300,000 messages through a queue of 10, one consumer.
const LONG_RUN: [&str; 4] = ["--consumers", "1", "--messages", "100000"];

/// The test's own check that the demo's queue no longer exists: opening it by name fails.
fn assert_queue_gone(events: &[serde_json::Value]) {
    let name = find(events, "mq_open")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert_eq!(opened.err(), Some(Errno::ENOENT), "{name} is left behind");
}

fn assert_exactly_once(summary: &serde_json::Value, sent: u64) {
    assert_eq!(summary["sent"], sent, "{summary}");
    assert_eq!(summary["received"], sent, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["missing"], 0, "{summary}");
    assert_eq!(summary["left_in_queue"], 0, "{summary}");
}

#[test]
fn every_message_arrives_exactly_once_in_order() {
    for producers in ["1", "3"] {
        for consumers in ["1", "3"] {
            let events = run_json(
                demo(),
                &[
                    "--producers",
                    producers,
                    "--consumers",
                    consumers,
                    "--messages",
                    "500",
                ],
            );
            let summary = summary(&events);
            assert_exactly_once(summary, 500 * producers.parse::<u64>().expect("P"));
            assert_eq!(summary["order_ok"], true, "FIFO per producer: {summary}");
            let ends = events.iter().filter(|e| e["event"] == "end").count();
            assert_eq!(
                ends.to_string(),
                consumers,
                "each consumer stopped on one end-of-work message"
            );
            assert!(summary["messages_per_s"].as_f64().expect("rate") > 0.0);
            assert_queue_gone(&events);
        }
    }
}

#[test]
fn the_queue_lives_on_after_its_name_is_gone() {
    let mut demo = Running::start(cargo_bin!("mqueue"), &["--messages", "20000"]);
    let name = demo.wait_for("mq_open")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let consumers = pids_in(&demo.wait_for("forked")["consumers"]);
    demo.wait_for("unlinked");
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert_eq!(opened.err(), Some(Errno::ENOENT), "no name after mq_unlink");
    assert!(
        consumers.iter().all(|&pid| running(pid)),
        "the consumers are still receiving from the nameless queue"
    );
    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}");
    assert_exactly_once(summary(&events), 60_000);
}

#[test]
fn an_exhausted_queue_quota_is_a_clear_runtime_error() {
    let output = std::process::Command::new("prlimit")
        .arg("--msgqueue=100")
        .arg(cargo_bin!("mqueue"))
        .output()
        .expect("prlimit runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("EMFILE") && stderr.contains("RLIMIT_MSGQUEUE"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_queue_and_no_process() {
    let mut demo = Running::start(cargo_bin!("mqueue"), &LONG_RUN);
    let name = demo.wait_for("mq_open")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let forked = demo.wait_for("forked");
    let mut children = pids_in(&forked["producers"]);
    children.extend(pids_in(&forked["consumers"]));
    assert_eq!(children.len(), 4);
    demo.wait_for("unlinked");
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &children);
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert_eq!(opened.err(), Some(Errno::ENOENT));
}

#[test]
fn a_dead_consumer_ends_the_demo_instead_of_hanging_it() {
    let mut demo = Running::start(cargo_bin!("mqueue"), &LONG_RUN);
    let forked = demo.wait_for("forked");
    let consumer = pids_in(&forked["consumers"])[0];
    let producers = pids_in(&forked["producers"]);
    send_signal(consumer, libc::SIGKILL);
    let (status, _) = demo.finish();
    assert_eq!(status.code(), Some(1), "an error, not a hang: {status:?}");
    for pid in producers {
        assert_eq!(proc_state(pid), None, "producer {pid} reaped");
    }
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--consumers"))
        .stdout(contains("mq_priorities")); // where the old --priorities went
    for args in [
        &["--producers", "0"][..],
        &["--consumers", "17"],
        &["--messages", "0"],
        &["--priorities"], // now mq_priorities
        &["--hold", "3"],  // now mq_priorities --hold
        &["--compare"],    // now mq_vs_pipe
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("mqueue"), &[&[], &["--json"]]);
}

/// Issue 16 item 8: a SIGTERM in the middle ends the demo and its children without one
/// error line.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("mqueue"),
        &["--messages", "20000"],
        "unlinked",
        &[0, 20, 100],
    );
}

/// Issue 15 item 4: "1 consumers", "1 producers".
#[test]
fn one_of_each_is_said_in_the_singular() {
    let output = run(
        demo(),
        &["--producers", "1", "--consumers", "1", "--messages", "1"],
    )
    .success()
    .get_output()
    .stdout
    .clone();
    let text = String::from_utf8_lossy(&output);
    assert!(
        text.contains("forked 1 consumer and 1 producer\n"),
        "{text}"
    );
    assert!(text.contains("sending 1 end-of-work message at"), "{text}");
    assert!(text.contains("stopping after 1 message\n"), "{text}");
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--producers", "1", "--consumers", "3"]];
    examples::assert_help_examples(cargo_bin!("mqueue"), examples);
    for (args, producers, consumers) in [(examples[0], 3, 2), (examples[1], 1, 3)] {
        let events = run_json(demo(), args);
        let summary = summary(&events);
        assert_exactly_once(summary, 1000 * producers);
        assert_eq!(summary["consumers"], consumers, "{summary}");
        let ends = events.iter().filter(|e| e["event"] == "end").count();
        assert_eq!(
            ends, consumers as usize,
            "each consumer got its end-of-work message"
        );
    }
}
