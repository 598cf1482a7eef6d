//! pipe: records arrive exactly once at EOF; a forgotten write end is detected; the
//! capacity is what F_GETPIPE_SZ says; records of at most PIPE_BUF never tear; SIGPIPE.

mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("pipe")
}

#[test]
fn records_arrive_exactly_once_at_eof() {
    for count in ["1000", "50000"] {
        let events = run_json(demo(), &["--records", count]);
        let summary = summary(&events);
        let count: u64 = count.parse().expect("a number");
        assert_eq!(summary["sent"], count);
        assert_eq!(summary["received"], count, "{summary}");
        assert_eq!(summary["duplicates"], 0);
        assert_eq!(summary["missing"], 0);
        assert_eq!(summary["torn"], 0);
        assert_eq!(
            summary["in_order"], true,
            "one writer, one pipe: order is kept"
        );
        assert_eq!(summary["eof_seen"], true);
        assert_eq!(find(&events, "eof")["role"], "child");
    }
}

#[test]
fn a_forgotten_write_end_is_detected_and_the_demo_ends_by_itself() {
    let events = run_json(demo(), &["--forget-close", "--timeout", "0.5"]);
    let hang = find(&events, "hang");
    assert!(
        hang["text"].as_str().expect("text").contains("pipe:["),
        "{hang}"
    );
    let summary = summary(&events);
    assert_eq!(summary["hang_detected"], true);
    assert_eq!(
        summary["eof_seen"], true,
        "EOF came once the forgotten end was closed"
    );
    assert_eq!(summary["received"], summary["sent"]);
}

#[test]
fn capacity_is_f_getpipe_sz_and_changes_after_resizing() {
    let events = run_json(demo(), &["--capacity"]);
    let summary = summary(&events);
    assert_eq!(
        summary["capacity_bytes"], 65536,
        "Linux's default: 16 pages"
    );
    assert_eq!(summary["capacity_bytes"], summary["f_getpipe_sz"]);
    assert_eq!(summary["resized_bytes"], 262144);
    let sleeping = find(&events, "sleeping");
    assert_eq!(sleeping["state"], "S", "a writer into a full pipe sleeps");
    assert!(
        sleeping["wchan"].as_str().expect("wchan").contains("pipe"),
        "{sleeping}"
    );
    assert!(summary["writer_blocked_ms"].as_f64().expect("ms") >= 100.0);

    let events = run_json(demo(), &["--capacity", "--resize", "1048576"]);
    assert_eq!(util::summary(&events)["resized_bytes"], 1048576);
}

#[test]
fn a_resize_beyond_pipe_max_size_is_a_usage_error() {
    assert_usage_error(demo(), &["--capacity", "--resize", "1073741824"]);
}

#[test]
fn no_record_of_at_most_pipe_buf_is_torn() {
    let events = run_json(demo(), &["--atomic", "--records", "110000"]);
    let summary = summary(&events);
    assert!(
        summary["small_sent"].as_u64().expect("count") >= 100_000,
        "{summary}"
    );
    assert_eq!(summary["small_torn"], 0, "{summary}");
    assert_eq!(summary["small_not_exactly_once"], 0, "{summary}");
    let received = summary["received"].as_u64().expect("received");
    let missing = summary["missing"].as_u64().expect("missing");
    assert_eq!(received + missing, summary["sent"].as_u64().expect("sent"));
    assert_eq!(summary["duplicates"], 0);
}

#[test]
fn both_sigpipe_behaviours_are_decoded() {
    let events = run_json(demo(), &["--sigpipe"]);
    assert_eq!(find(&events, "write_failed")["errno"], "EPIPE");
    let summary = summary(&events);
    assert_eq!(
        summary["ignored"]["code"], 0,
        "ignored: the write fails and the child goes on"
    );
    assert_eq!(summary["default"]["signal"], "SIGPIPE");
    assert_eq!(
        summary["default"]["status"],
        "killed by signal 13 (SIGPIPE)"
    );
    run(demo(), &["--sigpipe"])
        .success()
        .stdout(contains("$? = 141"));
}

#[test]
fn bandwidth_is_positive_and_finite() {
    for produce in [false, true] {
        let mut args = vec!["--bandwidth", "--mebibytes", "4"];
        args.extend(produce.then_some("--produce"));
        let events = run_json(demo(), &args);
        let summary = summary(&events);
        assert_eq!(summary["produce"], produce);
        assert_eq!(summary["bytes"], 4 << 20); // checked by the demo: all of it arrived
        let rows = summary["rows"].as_array().expect("rows").clone();
        assert!(!rows.is_empty());
        for row in rows {
            let rate = row["mb_per_s"].as_f64().expect("a rate");
            assert!(rate.is_finite() && rate > 0.0, "{row}");
        }
    }
    assert_usage_error(demo(), &["--produce"]); // only with --bandwidth
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_process() {
    let mut demo = Running::start(cargo_bin!("pipe"), &["--forget-close", "--timeout", "30"]);
    let reader = pid_of(&demo.wait_for("fork")["child"]);
    demo.wait_for("wrote");
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &[reader]); // reaped by the demo, not left to init
}

#[test]
fn sigterm_to_the_demo_alone_ends_it_promptly() {
    let mut demo = Running::start(cargo_bin!("pipe"), &["--forget-close", "--timeout", "30"]);
    let reader = pid_of(&demo.wait_for("fork")["child"]);
    demo.wait_for("wrote");
    let start = std::time::Instant::now();
    demo.terminate();
    let (status, _) = demo.finish();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "not the 30 s of the timeout"
    );
    assert_stopped_cleanly(status, libc::SIGTERM, &[reader]);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--forget-close"));
    for args in [
        &["--capacity", "--atomic"][..],
        &["--records", "0"],
        &["--chunk", "0"],
        &["--timeout", "0"],
        &["--mebibytes", "5000"],
        &["--resize", "100000"], // a flag of another mode
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("pipe"),
        &[&[], &["--json"], &["--sigpipe"], &["--capacity"]],
    );
}
