//! mq_full: on a full queue a blocking producer sleeps in the kernel and every message
//! still arrives once; with O_NONBLOCK the producers see EAGAIN instead; asking beyond
//! msg_max names the limit; nothing is left behind.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, mq_open};
use nix::sys::stat::Mode;
use predicates::str::contains;
use std::time::{Duration, Instant};
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("mq_full")
}

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
fn a_full_queue_blocks_then_drains() {
    let events = run_json(demo(), &["--max-messages", "1"]);
    let summary = summary(&events);
    assert!(
        summary["full_waits"].as_u64().expect("count") > 0,
        "{summary}"
    );
    assert_eq!(summary["eagain"], 0, "blocking sends never see EAGAIN");
    assert_exactly_once(summary, 900);
    assert!(events.iter().any(|e| e["event"] == "full"));
    assert_queue_gone(&events);
}

#[test]
fn the_blocked_producer_sleeps_in_the_kernel() {
    let events = run_json(demo(), &[]);
    let state = find(&events, "producer_state");
    assert_eq!(state["state"], "S", "{state}");
    let wchan = state["wchan"].as_str().expect("wchan");
    assert!(
        !wchan.is_empty() && wchan != "0",
        "asleep somewhere: {state}"
    );
    let forked_producer = events
        .iter()
        .any(|e| e["role"] == "producer" && e["pid"] == state["producer"]);
    assert!(forked_producer, "the pid is one of the producers: {state}");
}

#[test]
fn nonblocking_sends_see_eagain_and_still_deliver_everything() {
    let events = run_json(demo(), &["--max-messages", "1", "--nonblocking"]);
    let summary = summary(&events);
    assert!(summary["eagain"].as_u64().expect("count") > 0, "{summary}");
    assert_exactly_once(summary, 900);
    assert_eq!(find(&events, "eagain")["role"], "producer");
    assert!(
        events.iter().all(|e| e["event"] != "full"),
        "a non-blocking send never waits"
    );
    let state = find(&events, "producer_state");
    assert_eq!(state["state"], "R", "it spins, never sleeps: {state}");
    assert_queue_gone(&events);
}

/// Issue 15: the nonblocking line said "R (running) (wchan 0)"; a running task waits in no
/// channel, so the line names one only for a sleeper (the blocking run's `wq_sleep`…).
#[test]
fn the_state_line_names_a_wait_channel_only_for_a_sleeping_producer() {
    for (args, sleeping) in [
        (&["--max-messages", "1", "--nonblocking"][..], false),
        (&[], true),
    ] {
        let output = run(demo(), args).success();
        let text = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
        let line = text.lines().find(|l| l.contains("kernel says producer"));
        let line = line.expect("a producer_state line");
        assert!(!line.contains("wchan 0"), "{line}");
        let asleep = line.contains(" is S (sleeping) (wchan ");
        let running = line.ends_with(" is R (running)");
        assert!(if sleeping { asleep } else { running }, "{line}");
    }
}

/// A limit as the test reads it from /proc/sys/fs/mqueue.
fn limit(file: &str) -> i64 {
    let path = format!("/proc/sys/fs/mqueue/{file}");
    let text = std::fs::read_to_string(&path).expect("the file exists");
    text.trim().parse().expect("a number")
}

#[test]
fn asking_beyond_the_kernel_limits_names_the_limit() {
    // One more than msg_max (10 by default; the demo takes at most 100 in any case).
    let beyond = (limit("msg_max") + 1).to_string();
    let args = ["--max-messages", beyond.as_str()];
    assert_usage_error(demo(), &args);
    run(demo(), &args)
        .code(2)
        .stderr(contains("/proc/sys/fs/mqueue/msg_max"));
}

#[test]
fn the_limits_are_read_from_proc() {
    let events = run_json(demo(), &[]);
    let limits = &find(&events, "mq_open")["limits"];
    for file in ["msg_max", "msgsize_max", "queues_max"] {
        assert_eq!(limits[file], limit(file), "{file}");
    }
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--nonblocking"))
        .stdout(contains("msg_max"));
    for args in [
        &["--max-messages", "0"][..],
        &["--max-messages", "101"], // at most 100: each producer alone overfills it
        &["--max-messages", "ten"],
        &["--message-size", "10"], // the old option: mq_vs_pipe has it now
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("mq_full"), &[&[], &["--json", "--nonblocking"]]);
}

/// Issue 16 item 8: a SIGTERM in the middle ends the demo and its children without one
/// error line.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(cargo_bin!("mq_full"), &[], "mq_open", &[0, 20, 100]);
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[
        &[],
        &["--max-messages", "1", "--nonblocking"],
        &["--max-messages", "11"],
    ];
    examples::assert_help_examples(cargo_bin!("mq_full"), examples);
    let events = run_json(demo(), &[]);
    assert_eq!(
        find(&events, "full")["role"],
        "producer",
        "a producer waits on the full queue"
    );
    let events = run_json(demo(), examples[1]);
    assert!(summary(&events)["eagain"].as_u64().expect("count") > 0);
    run(demo(), examples[2])
        .code(2)
        .stderr(contains("/proc/sys/fs/mqueue/msg_max is 10"));
}

/// Kills producer `which` (in fork order) while the parent is stopped, so that it cannot
/// have sent all its messages, lets the parent go on, and checks that the demo ends by
/// itself: exit 1, no summary, every producer gone, the queue gone.
fn kill_a_producer_mid_way(args: &[&str], which: usize) {
    let demo = Running::start(cargo_bin!("mq_full"), args);
    // Once the third is forked the parent looks at producer 0 for at least 20 ms before it
    // receives anything: stop it in that window.
    let deadline = Instant::now() + Duration::from_secs(10);
    while demo.children().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    send_signal(demo.pid(), libc::SIGSTOP); // the parent receives nothing meanwhile
    let producers = demo.children();
    assert_eq!(producers.len(), 3, "{producers:?}");
    send_signal(producers[which], libc::SIGKILL);
    send_signal(demo.pid(), libc::SIGCONT);
    let (status, events) = demo.finish();
    assert_eq!(
        status.code(),
        Some(1),
        "the demo reports the lost producer: {events:#?}"
    );
    assert!(
        events.iter().all(|event| event["event"] != "summary"),
        "{events:#?}"
    );
    for pid in producers {
        assert!(!running(pid), "producer {pid} is left");
    }
    assert_queue_gone(&events);
}

/// Regression (the fault grid, SIGKILL of a child): the parent, the only consumer, waited
/// for ever — for the state of a producer that was dead, or in mq_receive for messages a
/// dead producer would never send.
#[test]
fn a_killed_producer_ends_the_demo_instead_of_a_hang() {
    kill_a_producer_mid_way(&[], 0); // the one whose state the parent reports
    kill_a_producer_mid_way(&[], 2);
    kill_a_producer_mid_way(&["--nonblocking"], 2);
}
