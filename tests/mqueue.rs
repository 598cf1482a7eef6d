//! mqueue: every message exactly once for several producers and consumers, highest
//! priority first, a full queue blocks (or says EAGAIN) and still delivers everything,
//! the kernel's limits are named, and no queue is left behind.

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

/// A run long enough to interrupt: 300,000 messages through a queue of one.
const LONG_RUN: [&str; 6] = [
    "--max-messages",
    "1",
    "--consumers",
    "1",
    "--messages",
    "100000",
];

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
            assert_eq!(
                summary["order_ok"], true,
                "FIFO per producer and priority: {summary}"
            );
            assert_eq!(summary["priorities_kept"], true);
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
fn the_highest_priority_comes_out_first_fifo_within_one() {
    let events = run_json(demo(), &["--priorities"]);
    assert_eq!(summary(&events)["priority_order_ok"], true);
    assert_exactly_once(summary(&events), 10);
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
    assert_queue_gone(&events);
}

#[test]
fn a_full_queue_blocks_then_drains() {
    let events = run_json(
        demo(),
        &[
            "--max-messages",
            "1",
            "--consumers",
            "1",
            "--messages",
            "300",
        ],
    );
    let summary = summary(&events);
    assert!(
        summary["full_waits"].as_u64().expect("count") > 0,
        "{summary}"
    );
    assert_eq!(summary["eagain"], 0, "blocking sends never see EAGAIN");
    assert_exactly_once(summary, 900);
    assert!(events.iter().any(|e| e["event"] == "full"));
}

#[test]
fn nonblocking_sends_see_eagain_and_still_deliver_everything() {
    let events = run_json(
        demo(),
        &["--max-messages", "1", "--nonblocking", "--messages", "300"],
    );
    let summary = summary(&events);
    assert!(summary["eagain"].as_u64().expect("count") > 0, "{summary}");
    assert_exactly_once(summary, 900);
    assert_eq!(find(&events, "eagain")["role"], "producer");
    assert!(
        events.iter().all(|e| e["event"] != "full"),
        "a non-blocking send never waits"
    );
}

#[test]
fn asking_beyond_the_kernel_limits_names_the_limit() {
    for (args, file) in [
        (["--max-messages", "100000"], "/proc/sys/fs/mqueue/msg_max"),
        (
            ["--message-size", "1000000"],
            "/proc/sys/fs/mqueue/msgsize_max",
        ),
    ] {
        assert_usage_error(demo(), &args);
        run(demo(), &args).code(2).stderr(contains(file));
    }
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
fn comparing_with_a_pipe_reports_both_rates() {
    let events = run_json(demo(), &["--compare", "--messages", "300"]);
    let summary = summary(&events);
    assert_exactly_once(summary, 900);
    for rate in ["messages_per_s", "pipe_messages_per_s"] {
        let value = summary[rate].as_f64().expect("a rate");
        assert!(value.is_finite() && value > 0.0, "{rate}: {summary}");
    }
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
fn ctrl_c_while_the_queue_still_has_its_name_removes_it() {
    let mut demo = Running::start(cargo_bin!("mqueue"), &["--priorities", "--hold", "30"]);
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
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert_eq!(
        opened.err(),
        Some(Errno::ENOENT),
        "{name} removed on Ctrl-C"
    );
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--priorities"));
    for args in [
        &["--producers", "0"][..],
        &["--consumers", "17"],
        &["--message-size", "10"],
        &["--priorities", "--producers", "2"],
        &["--compare", "--consumers", "2"],
        &["--compare", "--message-size", "5000"],
        &["--hold", "3"], // only with --priorities
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("mqueue"), &[&[], &["--json", "--priorities"]]);
}
