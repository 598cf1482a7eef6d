//! pipe_bandwidth: every byte arrives, and the rates are positive and finite.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use std::time::Duration;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("pipe_bandwidth")
}

#[test]
fn bandwidth_is_positive_and_finite() {
    for like_dd in [false, true] {
        let mut args = vec!["--runs", "2"];
        args.extend(like_dd.then_some("--like-dd"));
        let events = run_json(demo(), &args);
        let summary = summary(&events);
        assert_eq!(summary["like_dd"], like_dd);
        assert_eq!(summary["runs"], 2);
        assert_eq!(summary["bytes"], 256 << 20); // checked by the demo: all of it arrived
        let rows = summary["rows"].as_array().expect("rows").clone();
        assert!(!rows.is_empty());
        for row in rows {
            let rate = row["mb_per_s"].as_f64().expect("a rate");
            assert!(rate.is_finite() && rate > 0.0, "{row}");
        }
    }
}

/// A counter of a process's own I/O (`rchar`, `wchar`: bytes read and written by any
/// means). Its thread's file, /proc/<pid>/task/<pid>/io: /proc/<pid>/io adds the counts
/// of the children it has reaped (wait_task_zombie), here every writer's.
fn io_count(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/io")).ok()?;
    let line = text.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `--like-dd` does per chunk what the two dd do, as the kernel counts it: the writer
/// reads every byte from /dev/zero before it writes it, and the reader writes every byte
/// it read to /dev/null. Without it the writer reads nothing and the reader writes only
/// its timeline.
#[test]
fn like_dd_reads_dev_zero_and_writes_dev_null_as_dd_does() {
    for like_dd in [false, true] {
        let mut args = vec!["--runs", "3", "--chunk", "4096"];
        args.extend(like_dd.then_some("--like-dd"));
        let mut demo = Running::start(cargo_bin!("pipe_bandwidth"), &args);
        demo.wait_for("method");
        // A writer that has written 64 MiB: what has it read? (Each run has its writer.)
        let mut writer_counts = None;
        assert!(eventually(Duration::from_secs(10), || {
            writer_counts = demo.children().into_iter().find_map(|writer| {
                let written = io_count(writer, "wchar").filter(|&n| n >= 64 << 20)?;
                Some((io_count(writer, "rchar")?, written))
            });
            writer_counts.is_some()
        }));
        let (read, written) = writer_counts.expect("counts");
        if like_dd {
            assert!(read >= written, "the writer read {read}, wrote {written}");
        } else {
            assert_eq!(read, 0, "the writer reads nothing");
        }
        // The first placement done: 4 runs of 256 MiB read by the demo itself.
        demo.wait_for("bandwidth");
        let reader_wrote = io_count(demo.pid(), "wchar").expect("the demo's io");
        if like_dd {
            assert!(reader_wrote >= 4 << 28, "the reader wrote {reader_wrote}");
        } else {
            assert!(reader_wrote < 1 << 20, "the reader wrote {reader_wrote}");
        }
        let writers = demo.children();
        demo.interrupt();
        let (status, _) = demo.finish();
        assert_interrupted_cleanly(status, &writers);
    }
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_process() {
    let mut demo = Running::start(
        cargo_bin!("pipe_bandwidth"),
        &["--runs", "99", "--chunk", "1"],
    );
    demo.wait_for("method");
    let writers = demo.wait_for_children();
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &writers);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--like-dd"));
    for args in [
        &["--chunk", "0"][..],
        &["--runs", "0"],
        &["--runs", "100"],
        &["--bandwidth"],
    ] {
        assert_usage_error(demo(), args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(cargo_bin!("pipe_bandwidth"), &[&["--runs", "1"]]);
}

/// Issue 16 item 8: SIGTERM to the reading parent used to make the writer print "write:
/// EPIPE: Broken pipe".
#[test]
fn sigterm_in_the_middle_is_quiet() {
    stops::assert_quiet_sigterm(
        cargo_bin!("pipe_bandwidth"),
        &["--runs", "3"],
        "method",
        &[10, 50, 200],
    );
}

/// Issue 16 item 9: every example of --help runs and shows what it promises.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--chunk", "4096"], &["--like-dd", "--runs", "9"]];
    examples::assert_help_examples(cargo_bin!("pipe_bandwidth"), examples);
    for (args, chunk, like_dd, runs) in [
        (examples[0], 65536, false, 5),
        (examples[1], 4096, false, 5),
        (examples[2], 65536, true, 9),
    ] {
        let events = run_json(demo(), args);
        let summary = summary(&events);
        assert_eq!(summary["chunk_bytes"], chunk, "{args:?}: {summary}");
        assert_eq!(summary["like_dd"], like_dd, "{args:?}: {summary}");
        assert_eq!(summary["runs"], runs, "{args:?}: {summary}");
        assert_eq!(
            summary["rows"].as_array().map(Vec::len),
            Some(2),
            "{summary}"
        );
    }
}
