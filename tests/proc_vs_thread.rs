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
    // What each adds to the demo's own Pss: a thread (a stack, a kernel task) less than
    // a child (its own copies of the pages it wrote).
    let baseline = summary["baseline_pss_kib"].as_u64().expect("baseline");
    let pss = |kind: &str| memory_row(summary, kind)["pss_kib"].as_u64().expect("pss");
    let added = |kind: &str| pss(kind).saturating_sub(baseline);
    assert!(added("threads") < added("processes"), "{summary}");
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
    // The demo pinned itself to one CPU; children and threads inherit the pin.
    let pinned = proc_status(me, "Cpus_allowed_list").expect("the demo's CPUs");
    assert!(pinned.parse::<usize>().is_ok(), "one CPU: {pinned}");
    let parents_pipes = pipe_descriptors(me);
    let cmdline = |pid: i32| std::fs::read(format!("/proc/{pid}/cmdline")).ok();
    for &pid in &children {
        assert_eq!(proc_status(pid, "PPid"), Some(me.to_string()), "{pid}");
        assert_eq!(
            cmdline(pid),
            cmdline(me),
            "{pid} is a copy: it did not exec"
        );
        assert_eq!(proc_state(pid), Some('S'), "{pid} sleeps in read()");
        let wchan = proc_wchan(pid).unwrap_or_default();
        assert!(wchan.contains("pipe_read"), "{pid} sleeps in {wchan}");
        assert_eq!(proc_status(pid, "Cpus_allowed_list"), Some(pinned.clone()));
        // It closed its copy of the write end: of the pipe the demo holds at both ends
        // (the idle one), the child holds one descriptor, the read end.
        let held = pipe_descriptors(pid);
        let idle_pipe: Vec<&(i32, String)> = held
            .iter()
            .filter(|(_, pipe)| parents_pipes.iter().filter(|(_, p)| p == pipe).count() == 2)
            .collect();
        assert_eq!(
            idle_pipe.len(),
            1,
            "{pid}: {held:?}, the demo's {parents_pipes:?}"
        );
        let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", idle_pipe[0].0));
        let flags = flags.unwrap_or_default();
        let mode = flags.lines().find_map(|line| line.strip_prefix("flags:"));
        let mode = u32::from_str_radix(mode.expect("flags").trim(), 8).expect("octal flags");
        assert_eq!(mode & 0o3, 0o0, "O_RDONLY: the read end ({flags})");
        // Its page table is filled on demand for the parent's unwritten file pages, so its
        // resident set starts smaller than the parent's.
        let rss = |pid: i32| {
            proc_status(pid, "VmRSS").and_then(|kb| kb.split(' ').next()?.parse::<u64>().ok())
        };
        assert!(rss(pid) < rss(me), "{:?} {:?}", rss(pid), rss(me));
    }
    assert_eq!(proc_status(me, "Threads").as_deref(), Some("1"));

    let idle = demo.wait_for_where("idle", |event| event["kind"] == "threads");
    assert_eq!(proc_status(me, "Threads").as_deref(), Some("5"), "4 + main");
    for tid in pids_in(&idle["tids"]) {
        assert_eq!(proc_status(tid, "Tgid"), Some(me.to_string()), "{tid}");
        assert_eq!(proc_status(tid, "Cpus_allowed_list"), Some(pinned.clone()));
        assert_eq!(proc_state(tid), Some('S'), "{tid} sleeps in read()");
        assert!(std::path::Path::new(&format!("/proc/{me}/task/{tid}")).exists());
    }
    demo.terminate(); // while the threads are held: the demo joins them and dies
    let (status, events) = demo.finish();
    assert_stopped_cleanly(status, libc::SIGTERM, &children);
    assert!(events.iter().all(|event| event["event"] != "summary"));
}

/// The pipes `pid` has open: (descriptor, `pipe:[inode]`), from `/proc/<pid>/fd`.
fn pipe_descriptors(pid: i32) -> Vec<(i32, String)> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/<pid>/fd");
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            target.starts_with("pipe:").then_some((fd, target))
        })
        .collect()
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
    pids()
        .into_iter()
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

#[test]
fn strace_shows_the_clone_of_each_way() {
    // The chapter's strace: fork is clone without CLONE_VM, posix_spawn (Command) clone3
    // with CLONE_VM|CLONE_VFORK, a thread CLONE_THREAD; 10 warm-up rounds and 1 timed per
    // way, then one idle child and one idle thread.
    let scratch = Scratch::new("proc_vs_thread-strace");
    let trace = scratch.0.join("trace.txt");
    let mut strace = std::process::Command::new("strace");
    strace.args(["-f", "-qq", "-e", "trace=clone,clone3,execve", "-o"]);
    strace.arg(&trace).arg(cargo_bin!("proc_vs_thread"));
    strace.args(["--count", "1", "--idle", "1"]);
    match output_within(strace, TIME_LIMIT) {
        Some(_) if trace.exists() => {}
        _ => {
            eprintln!("skipped: strace is not installed or cannot trace here");
            return;
        }
    }
    let text = std::fs::read_to_string(&trace).expect("the trace");
    let clones: Vec<&str> = text
        .lines()
        .filter(|line| {
            (line.contains(" clone(") || line.contains(" clone3(")) && !line.contains("resumed")
        })
        .collect();
    let count = |test: &dyn Fn(&str) -> bool| clones.iter().filter(|line| test(line)).count();
    assert_eq!(
        count(&|line| !line.contains("CLONE_VM")),
        11 + 11 + 1,
        "forks: {text}"
    );
    assert_eq!(
        count(&|line| line.contains("CLONE_VM|CLONE_VFORK")),
        11,
        "posix_spawn: {text}"
    );
    assert_eq!(
        count(&|line| line.contains("CLONE_THREAD")),
        11 + 1,
        "threads: {text}"
    );
    assert_eq!(clones.len(), 23 + 11 + 12, "nothing else: {text}");
    let exec_true = text
        .lines()
        .filter(|line| line.contains("execve(\"/bin/true\""))
        .count();
    assert_eq!(exec_true, 22, "fork+exec and command: {text}");
}

#[test]
fn a_bin_true_that_fails_stops_the_demo_with_one_line() {
    // In a mount namespace of its own (as root), /bin/true is /bin/false for the demo only.
    let mut command = assert_cmd::Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command.arg(r#"mount --bind /bin/false /bin/true || exit 99; exec "$0" --count 1 --idle 1"#);
    let output = command
        .arg(cargo_bin!("proc_vs_thread"))
        .timeout(TIME_LIMIT)
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.starts_with("unshare:") || output.status.code() == Some(99) {
        eprintln!("skipped: no private mount namespace here: {stderr}");
        return;
    }
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("fork+exec: round 0: child"), "{stderr}");
    assert!(stderr.contains("exited with status 1"), "{stderr}");
}
