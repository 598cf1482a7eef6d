//! proc_vs_thread: four ways of creating are timed (positive, finite figures: timings
//! themselves are not asserted, the machine is shared); idle children are the demo's own,
//! share its pages copy-on-write, and are gone afterwards; idle threads are tasks of the
//! one process; Ctrl-C and SIGTERM leave nothing behind.

mod examples;
mod util;

use std::time::Duration;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use serde_json::Value;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("proc_vs_thread")
}

/// Quick mode: few rounds, few idle processes and threads.
const QUICK: [&str; 4] = ["--count", "20", "--idle", "5"];

fn memory_row<'a>(summary: &'a Value, kind: &str) -> &'a Value {
    summary["memory"]
        .as_array()
        .expect("memory is an array")
        .iter()
        .find(|row| row["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} row: {summary}"))
}

fn idle_event<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|event| event["event"] == "idle" && event["kind"] == kind)
        .unwrap_or_else(|| panic!("no idle {kind} event"))
}

#[test]
fn four_ways_of_creating_are_timed_with_positive_finite_figures() {
    let events = run_json(demo(), &QUICK);
    let creation = summary(&events)["creation"]
        .as_array()
        .expect("creation is an array")
        .clone();
    let methods: Vec<&str> = creation
        .iter()
        .map(|row| row["method"].as_str().expect("method"))
        .collect();
    assert_eq!(methods, ["fork+exit", "fork+exec", "command", "thread"]);
    for row in &creation {
        let figure = |name: &str| row[name].as_f64().expect("a number");
        for name in ["median_us", "min_us", "max_us"] {
            assert!(
                figure(name) > 0.0 && figure(name).is_finite(),
                "{name}: {row}"
            );
        }
        assert!(figure("min_us") <= figure("median_us"), "{row}");
        assert!(figure("median_us") <= figure("max_us"), "{row}");
    }
}

#[test]
fn idle_children_share_pages_copy_on_write_and_are_reaped() {
    let events = run_json(demo(), &QUICK);
    let summary = summary(&events);
    for kind in ["processes", "threads"] {
        let row = memory_row(summary, kind);
        assert_eq!(row["count"], 5, "{row}");
        let (rss, pss) = (row["rss_kib"].as_u64(), row["pss_kib"].as_u64());
        assert!(rss > Some(0) && pss > Some(0), "{row}");
    }
    // Summed over 6 processes, each shared page counts 6 times in Rss, once in Pss.
    let processes = memory_row(summary, "processes");
    assert!(
        processes["rss_kib"].as_u64() > processes["pss_kib"].as_u64(),
        "{processes}"
    );
    let children = pids_in(&idle_event(&events, "processes")["pids"]);
    assert_eq!(children.len(), 5);
    for pid in children {
        assert_eq!(proc_state(pid), None, "{pid} is left behind");
    }
}

#[test]
fn the_kernel_sees_children_then_threads_and_sigterm_ends_both() {
    let mut demo = Running::start(
        cargo_bin!("proc_vs_thread"),
        &["--count", "5", "--idle", "4", "--hold", "2"],
    );
    let me = demo.pid();
    let idle = demo.wait_for_where("idle", |event| event["kind"] == "processes");
    let children = pids_in(&idle["pids"]);
    assert_eq!(children.len(), 4);
    for &pid in &children {
        assert_eq!(proc_status(pid, "PPid"), Some(me.to_string()), "{pid}");
        assert_eq!(proc_state(pid), Some('S'), "{pid} sleeps in read()");
    }
    assert_eq!(proc_status(me, "Threads").as_deref(), Some("1"));

    let idle = demo.wait_for_where("idle", |event| event["kind"] == "threads");
    assert_eq!(proc_status(me, "Threads").as_deref(), Some("5"), "4 + main");
    for tid in pids_in(&idle["tids"]) {
        assert_eq!(proc_status(tid, "Tgid"), Some(me.to_string()), "{tid}");
        assert!(std::path::Path::new(&format!("/proc/{me}/task/{tid}")).exists());
    }
    demo.terminate(); // while the threads are held: the demo joins them and dies
    let (status, events) = demo.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &children);
    assert!(events.iter().all(|event| event["event"] != "summary"));
}

#[test]
fn ctrl_c_while_children_are_idle_leaves_no_child() {
    let mut demo = Running::start(
        cargo_bin!("proc_vs_thread"),
        &["--count", "5", "--idle", "4", "--hold", "30"],
    );
    let idle = demo.wait_for_where("idle", |event| event["kind"] == "processes");
    let children = pids_in(&idle["pids"]);
    assert!(children.iter().all(|&pid| running(pid)));
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &children);
}

/// Processes whose command line is exactly `argv`: a forked child keeps its parent's.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let wanted: String = argv.iter().map(|arg| format!("{arg}\0")).collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.ends_with(wanted.as_bytes()) && running(*pid)
        })
        .collect()
}

#[test]
fn ctrl_c_while_timing_leaves_no_child() {
    // An argument list no other test uses, to find this run's forked children by.
    let args = ["--count", "99999", "--idle", "7"];
    let mut demo = Running::start(cargo_bin!("proc_vs_thread"), &args);
    demo.wait_for("pinned");
    std::thread::sleep(Duration::from_millis(100)); // in the middle of fork+exit
    let mut argv = vec!["--json"];
    argv.extend(args);
    assert!(
        processes_running(&argv).contains(&demo.pid()),
        "the search works"
    );
    demo.interrupt();
    let (status, events) = demo.finish();
    assert_interrupted_cleanly(status, &[]);
    assert!(events.iter().all(|event| event["event"] != "summary"));
    assert_eq!(processes_running(&argv), Vec::<i32>::new(), "left behind");
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--count"))
        .stdout(contains("Examples"));
    for args in [
        ["--count", "0"],
        ["--count", "abc"],
        ["--count", "100001"],
        ["--idle", "0"],
        ["--idle", "1001"],
    ] {
        assert_usage_error(demo(), &args);
    }
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("proc_vs_thread"),
        &[&QUICK, &["--json", "--count", "20", "--idle", "5"]],
    );
}

#[test]
fn each_help_example_shows_what_it_promises() {
    let examples: &[&[&str]] = &[&["--idle", "200"], &["--hold", "30"]];
    examples::assert_help_examples(cargo_bin!("proc_vs_thread"), examples);
    // `--idle 200` (with `--count 20`): 200 idle children, whose summed Rss counts the
    // shared pages 201 times and Pss once: Pss is well under Rss.
    let events = run_json(demo(), &["--idle", "200", "--count", "20"]);
    let processes = memory_row(summary(&events), "processes");
    assert_eq!(processes["count"], 200);
    let (rss, pss) = (processes["rss_kib"].as_u64(), processes["pss_kib"].as_u64());
    assert!(pss.expect("pss") * 2 < rss.expect("rss"), "{processes}");
    // `--hold 30` (with `--count 5 --idle 4`): during the hold the children are there to
    // look at with ps, asleep; Ctrl-C then ends the demo and leaves none.
    let mut demo = Running::start(
        cargo_bin!("proc_vs_thread"),
        &["--hold", "30", "--count", "5", "--idle", "4"],
    );
    let idle = demo.wait_for("idle");
    demo.wait_for("hold");
    let pids: Vec<i32> = idle["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .map(pid_of)
        .collect();
    assert_eq!(pids.len(), 4);
    assert!(
        pids.iter().all(|&pid| proc_state(pid) == Some('S')),
        "{pids:?}"
    );
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &pids);
}
