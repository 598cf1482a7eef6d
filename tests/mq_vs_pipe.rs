//! mq_vs_pipe: the same messages through a queue and a pipe, each exactly once, and both
//! rates; a message size that a framed pipe write or the queue cannot take is refused;
//! Ctrl-C leaves nothing behind.

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
    cargo_bin_cmd!("mq_vs_pipe")
}

#[test]
fn comparing_with_a_pipe_reports_both_rates() {
    let events = run_json(demo(), &["--messages", "300"]);
    let summary = summary(&events);
    for (field, expected) in [
        ("sent", 900),
        ("received", 900),
        ("duplicates", 0),
        ("missing", 0),
        ("left_in_queue", 0),
    ] {
        assert_eq!(summary[field], expected, "{field}: {summary}");
    }
    for rate in ["messages_per_s", "pipe_messages_per_s"] {
        let value = summary[rate].as_f64().expect("a rate");
        assert!(value.is_finite() && value > 0.0, "{rate}: {summary}");
    }
    let pipe = find(&events, "pipe");
    assert_eq!(pipe["received"], 900, "the pipe too, every frame: {pipe}");
}

fn median_of(values: &serde_json::Value) -> f64 {
    let mut values: Vec<f64> = values
        .as_array()
        .expect("a list")
        .iter()
        .map(|value| value.as_f64().expect("a rate"))
        .collect();
    assert_eq!(values.len(), 3, "three rounds: {values:?}");
    values.sort_by(f64::total_cmp);
    values[1]
}

/// Issue 15: a summary that compares two runs says which was faster and by how much, from
/// more than one run: three rounds each way, the medians, and a verdict that matches them.
#[test]
fn the_summary_says_which_was_faster_from_the_medians_of_three_rounds() {
    let events = run_json(demo(), &["--messages", "300"]);
    let rounds: Vec<_> = events
        .iter()
        .filter(|event| event["event"] == "pipe")
        .collect();
    assert_eq!(rounds.len(), 3, "{events:#?}");
    let summary = summary(&events);
    assert_eq!(summary["rounds"], 3, "{summary}");
    assert_eq!(summary["every_round_exactly_once"], true, "{summary}");
    let queue = median_of(&summary["queue_rates"]);
    let pipe = median_of(&summary["pipe_rates"]);
    assert_eq!(summary["messages_per_s"].as_f64(), Some(queue), "{summary}");
    assert_eq!(
        summary["pipe_messages_per_s"].as_f64(),
        Some(pipe),
        "{summary}"
    );
    for (round, event) in rounds.iter().enumerate() {
        assert_eq!(event["round"], round + 1);
        assert_eq!(event["messages_per_s"], summary["pipe_rates"][round]);
        assert_eq!(event["queue_messages_per_s"], summary["queue_rates"][round]);
    }
    let ratio = queue / pipe;
    let text = summary["text"].as_str().expect("text");
    let expected = if (0.95..=1.05).contains(&ratio) {
        "the queue was as fast, within 5%".to_owned()
    } else if ratio < 1.0 {
        format!("the queue was {:.1}× slower", 1.0 / ratio)
    } else {
        format!("the queue was {ratio:.1}× faster")
    };
    assert!(
        text.ends_with(&expected),
        "{text:?} should end with {expected:?}"
    );
}

#[test]
fn the_largest_message_a_framed_pipe_write_keeps_whole_still_arrives() {
    let events = run_json(demo(), &["--messages", "100", "--message-size", "4092"]);
    let summary = summary(&events);
    assert_eq!(summary["received"], 300, "{summary}");
    assert_eq!(summary["torn"], 0, "{summary}");
    assert_eq!(find(&events, "pipe")["received"], 300);
}

#[test]
fn sizes_beyond_pipe_buf_or_msgsize_max_are_refused_by_name() {
    run(demo(), &["--message-size", "5000"])
        .code(2)
        .stderr(contains("PIPE_BUF"));
    run(demo(), &["--message-size", "1000000"])
        .code(2)
        .stderr(contains("/proc/sys/fs/mqueue/msgsize_max"));
    // Issue 16 item 8: every refusal names the real range, the small ones too.
    for size in ["10", "5000", "1000000"] {
        run(demo(), &["--message-size", size])
            .code(2)
            .stderr(contains(format!("{size} is not between 28 and 4092 bytes")));
    }
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_queue_and_no_process() {
    let mut demo = Running::start(cargo_bin!("mq_vs_pipe"), &["--messages", "100000"]);
    let name = demo.wait_for("mq_open")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let children = demo.wait_for_children();
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &children);
    let opened = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None);
    assert_eq!(opened.err(), Some(Errno::ENOENT));
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--message-size"));
    for args in [
        &["--producers", "0"][..],
        &["--message-size", "10"],
        &["--message-size", "5000"],
        &["--message-size", "1000000"],
        // The old `--compare --consumers 2` conflict is gone: the queue has one
        // consumer, as the pipe has one reader, and there is no --consumers to ask.
        &["--consumers", "2"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("mq_vs_pipe"), &[&[], &["--json"]]);
}

/// Issue 16 item 8: a SIGTERM in the middle ends the demo and its children without one
/// error line.
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("mq_vs_pipe"),
        &["--messages", "20000"],
        "mq_open",
        &[0, 20, 100],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--message-size", "4000"]];
    examples::assert_help_examples(cargo_bin!("mq_vs_pipe"), examples);
    for args in examples {
        let events = run_json(demo(), args);
        let summary = summary(&events);
        assert_eq!(summary["received"], 3000, "{args:?}: {summary}");
        assert_eq!(find(&events, "pipe")["received"], 3000, "{args:?}");
    }
}
