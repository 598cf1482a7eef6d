//! copy_vs_share: the child's sum is the parent's, through a pipe and through shared
//! memory; sizes that cannot fit are refused; nothing is left behind.

mod examples;
mod stops;
mod util;

use assert_cmd::cargo::{cargo_bin, cargo_bin_cmd};
use predicates::str::contains;
use util::*;

fn demo() -> assert_cmd::Command {
    cargo_bin_cmd!("copy_vs_share")
}

#[test]
fn both_ways_give_the_parents_sum() {
    for elements in ["1", "1000", "1000000"] {
        let events = run_json(demo(), &["--elements", elements]);
        let summary = summary(&events);
        assert_eq!(summary["sums_equal"], true, "{summary}");
        // The test's own sum of the same values, in the same order (so, bit for bit).
        let n: usize = elements.parse().expect("n");
        let expected: f64 = (0..n).map(|i| (i % 1000) as f64 * 0.5).sum();
        assert_eq!(summary["pipe_sum"].as_f64(), Some(expected), "{summary}");
        assert_eq!(summary["shared_sum"].as_f64(), Some(expected), "{summary}");
        for time in ["pipe_seconds", "shared_seconds"] {
            let seconds = summary[time].as_f64().expect("seconds");
            assert!(seconds > 0.0 && seconds.is_finite(), "{time}: {summary}");
        }
        assert_eq!(
            summary["bytes_copied"],
            8 * elements.parse::<u64>().expect("n")
        );
    }
}

#[test]
fn reading_shared_pages_faults_them_into_the_child() {
    // 1,000,000 f64 = 1953 pages. The child's pipe buffer is fresh memory: at least one
    // fault per page. The shared pages already exist: the kernel maps several per fault
    // (fault-around), but the child still takes some.
    let events = run_json(demo(), &["--elements", "1000000"]);
    let summary = summary(&events);
    assert!(
        summary["pipe_minor_faults"].as_u64().expect("faults") >= 1953,
        "{summary}"
    );
    let shared = summary["shared_minor_faults"].as_u64().expect("faults");
    // Fault-around maps up to 16 pages per fault: the chapter says "about one sixteenth".
    assert!(shared > 0 && shared < 1953 / 4, "{summary}");
    // The parent's filling: one fault per page, at least.
    let filled = summary["fill_minor_faults"].as_u64().expect("faults");
    assert!(filled >= 1953, "{summary}");
}

#[test]
fn sizes_that_cannot_fit_are_refused() {
    assert_usage_error(demo(), &["--elements", "0"]);
    assert_usage_error(demo(), &["--elements", "1000000000000"]);
    run(demo(), &["--elements", "1000000000000"])
        .code(2)
        .stderr(contains("MemAvailable"));
}

#[test]
fn ctrl_c_in_the_middle_leaves_no_process_and_nothing_in_dev_shm() {
    let mut demo = Running::start(cargo_bin!("copy_vs_share"), &["--elements", "50000000"]);
    demo.wait_for("array");
    let child = demo.wait_for_children();
    demo.interrupt();
    let (status, _) = demo.finish();
    assert_interrupted_cleanly(status, &child);
    let left = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("proclab"))
        .count();
    assert_eq!(left, 0);
}

#[test]
fn help_and_bad_arguments() {
    run(demo(), &["--help"])
        .success()
        .stdout(contains("--elements"));
    assert_usage_error(demo(), &["--elements", "many"]);
    assert_usage_error(demo(), &["--bytes", "8"]);
}

#[test]
fn a_closed_stdout_causes_no_panic() {
    assert_quiet_into_closed_pipe(
        cargo_bin!("copy_vs_share"),
        &[&["--elements", "1000"], &["--json", "--elements", "1000"]],
    );
}

/// The seconds of each round of `way` ("pipe" or "shared"), from its events.
fn round_seconds(events: &[serde_json::Value], way: &str) -> Vec<f64> {
    let rounds = events.iter().filter(|e| e["event"] == way);
    rounds
        .map(|e| e["seconds"].as_f64().expect("seconds"))
        .collect()
}

/// Whether the summary must call the two ways as fast: medians within 5%, or each median
/// within the other way's rounds (fastest to slowest).
fn as_fast(pipe: &[f64], shared: &[f64]) -> bool {
    let sorted = |of: &[f64]| {
        let mut sorted = of.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
    };
    let (pipe, shared) = (sorted(pipe), sorted(shared));
    let median = |of: &[f64]| of[(of.len() - 1) / 2];
    let within = |value: f64, of: &[f64]| of[0] <= value && value <= of[of.len() - 1];
    let ratio = median(&pipe) / median(&shared);
    (0.95..=1.05).contains(&ratio)
        || (within(median(&pipe), &shared) && within(median(&shared), &pipe))
}

/// Issue 15: the summary said "shared is 0.6x faster" (or 0.0x) when sharing was slower,
/// from one run; then "shared memory was 1.0x faster" when the two were within a few per
/// cent. It now compares the medians of 5 rounds and names the faster way, by a factor
/// above 1.05, or says both were as fast (within 5%, or within the rounds' spread). At
/// 1000 elements either may come out.
#[test]
fn the_summary_names_the_faster_way_from_the_medians_of_five_rounds() {
    for _ in 0..3 {
        let events = run_json(demo(), &["--elements", "1000"]);
        let summary = summary(&events);
        assert_eq!(summary["rounds"], 5);
        for (way, field) in [("pipe", "pipe_seconds"), ("shared", "shared_seconds")] {
            let mut seconds = round_seconds(&events, way);
            assert_eq!(seconds.len(), 5, "{way}: one event per round");
            seconds.sort_by(f64::total_cmp);
            assert_eq!(
                summary[field].as_f64(),
                Some(seconds[2]),
                "{field}: the median"
            );
        }
        let speedup = summary["speedup"].as_f64().expect("speedup");
        let (pipe, shared) = (
            round_seconds(&events, "pipe"),
            round_seconds(&events, "shared"),
        );
        let faster = match as_fast(&pipe, &shared) {
            true => "neither",
            false if speedup > 1.0 => "shared",
            false => "pipe",
        };
        assert_eq!(summary["faster"], faster, "{summary}");
    }
    for _ in 0..3 {
        let output = run(demo(), &["--elements", "1000"]).success();
        let text = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
        let line = text.lines().last().expect("a summary line");
        let (times, verdict) = line
            .split_once("summary: medians of 5 rounds: pipe ")
            .and_then(|(_, rest)| rest.split_once(" ms: "))
            .expect(line);
        let (pipe_ms, shared_ms) = times.split_once(" ms, shared ").expect(line);
        let (pipe_ms, shared_ms): (f64, f64) =
            (pipe_ms.parse().expect(line), shared_ms.parse().expect(line));
        if verdict.starts_with("both ways were as fast (") {
            continue; // the JSON runs above check when that is said
        }
        let (winner, factor) = verdict
            .split_once(" was ")
            .and_then(|(winner, rest)| Some((winner, rest.split_once("x faster")?.0)))
            .expect(line);
        let factor: f64 = factor.parse().expect(line);
        assert!(factor > 1.05, "{line}: within 5% is as fast");
        match winner {
            "shared memory" => assert!(shared_ms <= pipe_ms + 0.05, "{line}"),
            "the pipe" => assert!(pipe_ms <= shared_ms + 0.05, "{line}"),
            _ => panic!("{line}"),
        }
    }
}

/// Issue 16 item 9: every example of --help runs and shows what it promises; `--hold`
/// keeps a child alive with the shared mapping (`rw-s`) to look at, and the hold is not
/// counted in the times.
#[test]
fn every_help_example_shows_its_effect() {
    let examples: &[&[&str]] = &[&[], &["--elements", "1000000", "--hold", "3"]];
    examples::assert_help_examples(cargo_bin!("copy_vs_share"), examples);
    let events = run_json(demo(), examples[0]);
    let whole = summary(&events);
    assert_eq!(whole["sums_equal"], true, "{whole}");
    assert_eq!(whole["bytes_copied"], 80_000_000);
    let mut demo = Running::start(cargo_bin!("copy_vs_share"), examples[1]);
    let hold = demo.wait_for("hold");
    let child = pid_of(&hold["pid"]);
    let smaps = std::fs::read_to_string(format!("/proc/{child}/smaps")).expect("smaps");
    assert!(
        smaps
            .lines()
            .any(|l| l.contains(" rw-s ") && l.contains("/dev/zero")),
        "the held child maps the shared array: {smaps}"
    );
    let (status, events) = demo.finish();
    assert!(status.success(), "{status:?}");
    assert_eq!(proc_state(child), None, "the held child is reaped");
    let summary = summary(&events);
    assert!(
        summary["shared_seconds"].as_f64().expect("seconds") < 1.0,
        "{summary}"
    );
}

/// Issue 16 item 8: SIGTERM while the array moves ends the demo and its child without an
/// error line; a hold too long names the real range.
#[test]
fn a_normal_stop_is_quiet_and_errors_name_the_range() {
    stops::assert_quiet_sigterm(
        cargo_bin!("copy_vs_share"),
        &["--elements", "10000000"],
        "filled",
        &[50, 300],
    );
    run(demo(), &["--hold", "1e9"])
        .code(2)
        .stderr(contains("between 0 and 3600 seconds"));
}
