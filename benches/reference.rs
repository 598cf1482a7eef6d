//! reference — the measuring demos beside the reference tools, on this machine, in one run.
//!
//! `just bench` (`cargo bench --bench reference`) runs, alternately and several times:
//! - `ctx_switch --mode same-cpu` against `taskset -c C perf bench sched pipe` (both sides
//!   on CPU C), and `--mode cross-cpu` against the same perf run with its two sides
//!   pinned to two CPUs (the bench moves perf's child right after perf forks it);
//! - `pipe_bandwidth --like-dd --runs 1` against `dd if=/dev/zero | dd of=/dev/null`,
//!   pinned the same way (`--like-dd`: per chunk the demo does what the two dd do);
//! - `nice` (one session and separate sessions) and `proc_vs_thread`, for the figures.
//!
//! - `prefork --self-test` in each dispatch mode, and wrk against prefork and nginx, for
//!   the prefork chapter (see reference/prefork.rs).
//!
//! `cargo bench --bench reference -- sched` (or `-- prefork`) runs one part only.
//! It prints each ratio (demo / reference, target 0.95-1.05) and writes everything under
//! `target/bench/` (`sched/bench.json` and the figures beside it); with `--update-book`
//! it writes them into `book/src/` instead, where the chapters include them; `--redraw`
//! only draws the figures again from the `bench.json` and `prefork.json` already there
//! (with `--update-book`: the book's). It exits 1,
//! with one line per comparison, if a ratio is outside the target. Needs `perf` (Debian:
//! `apt-get install linux-perf`); without it the perf comparisons are skipped and said so.

#[path = "reference/prefork.rs"]
mod prefork;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::Pid;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use proclab::measure;
use serde_json::{Value, json};

/// How many times each pair (demo, reference) runs, alternating; medians are compared.
/// On this VM one cross-CPU run differs from the next by about 10% (the sd of the log of
/// the pair ratios, over six runs of the bench) and a same-CPU one by 5%: the median of
/// 31 pairs is then known to about ±2%, of 15 to about ±1.5% on one CPU.
const ALTERNATIONS: usize = 15;
const CROSS_CPU_ALTERNATIONS: usize = 31;
/// How many single runs of pipe_bandwidth are each set between two runs of dd. A run
/// across two CPUs differs from the next by about 19% on this VM (measured as above), so
/// it takes this many pairs to know their median to about ±2%.
const PIPE_PAIRS: usize = 121;
/// A demo's figure agrees with the reference's if their ratio is within this.
const TARGET: std::ops::RangeInclusive<f64> = 0.95..=1.05;
/// How long each of the bench's `nice` runs spins.
/// Figure text, in plotters' sizes (the SVG's font-size comes out 1/1.24 of them): the
/// smallest, 18, is 14.5 px, and a figure at most 740 px wide is shown unscaled in the
/// book's column, so the browser check's 14 px holds.
const LABEL: (&str, u32) = TITLE;
const AXIS_TITLE: (&str, u32) = ("sans-serif", 19);
const TITLE: (&str, u32) = ("sans-serif", 22);
const NICE_SECONDS: &str = "3"; // the default: the chapter's commands
/// How many times the bench runs each of the nice chapter's commands: the figure draws
/// the spread of the runs.
const NICE_RUNS: usize = 3;

fn main() -> ExitCode {
    // `cargo bench --bench reference -- prefork` runs one part (cargo adds `--bench`).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only = args.iter().find(|arg| !arg.starts_with("--"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A student's `just bench` leaves the tree clean: the book's copies change only when asked.
    let out = if args.iter().any(|arg| arg == "--update-book") {
        root.join("book/src")
    } else {
        root.join("target/bench")
    };
    let mut comparisons = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for part in ["sched", "patterns"] {
            std::fs::create_dir_all(out.join(part))
                .with_context(|| format!("create {}", out.join(part).display()))?;
        }
        if args.iter().any(|arg| arg == "--redraw") {
            return redraw(&out);
        }
        match only.map(String::as_str) {
            None => {
                comparisons = sched(&out.join("sched"))?;
                prefork::run(&out.join("patterns"))
            }
            Some("sched") => sched(&out.join("sched")).map(|rows| comparisons = rows),
            Some("prefork") => prefork::run(&out.join("patterns")),
            Some(other) => bail!("no part called {other:?}: sched or prefork"),
        }
    })();
    // One line per comparison, the failed ones marked: what a reader acts on, even when a
    // later part failed.
    let outside = comparisons.iter().any(|row| row["agrees"] != true);
    if outside {
        println!("\nbench: a ratio is outside {TARGET:?}:");
        for row in &comparisons {
            println!("  {}", verdict_line(row));
        }
    }
    if let Err(error) = &result {
        println!("bench: error: {error:#}");
    }
    if outside || result.is_err() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `--redraw`: the figures again, from the results files under `out` that exist.
fn redraw(out: &Path) -> anyhow::Result<()> {
    let (sched_results, prefork_results) = (
        out.join("sched/bench.json"),
        out.join("patterns/prefork.json"),
    );
    for (results, part) in [(&sched_results, "sched"), (&prefork_results, "prefork")] {
        if !results.exists() {
            println!(
                "no {} (run `just bench {part}` first): its figures are not redrawn",
                results.display()
            );
        }
    }
    if sched_results.exists() {
        sched_figures(&out.join("sched"), &read_results(&sched_results)?)?;
    }
    if prefork_results.exists() {
        prefork::figures(&out.join("patterns"), &read_results(&prefork_results)?)?;
    }
    println!("redrew the figures beside {}", out.display());
    Ok(())
}

/// The scheduling chapters: the demos against perf and dd, and their figures. Returns the
/// comparisons, each with its verdict (`agrees`).
fn sched(figures: &Path) -> anyhow::Result<Vec<Value>> {
    let cpus = measure::usable_cpus();
    let perf = perf_works();
    if !perf {
        println!("perf is not installed or does not run: the perf comparisons are skipped");
        println!(
            "  (Debian: apt-get install linux-perf; perf also needs kernel.perf_event_paranoid <= 2 for some events, not for `bench`)"
        );
    }
    let mut comparisons = Vec::new();
    let mut results = serde_json::Map::new();

    println!("== ctx_switch vs perf bench sched pipe (µs per round trip)");
    // The demo times 5 repetitions of its --rounds and reports their median. On one CPU
    // perf runs 5 times with as many loops and the median is taken too: on a loaded
    // machine a mean counts every burst of preemption and a median does not. Across CPUs
    // perf runs once with 5 times the loops: each perf run starts with both sides on one
    // CPU until the watcher moves its child, and five short runs made perf 5-9% faster
    // than the demo in two of three quiet runs, where one long run agreed in every run.
    let same = (cpus[0], cpus[0]);
    if perf {
        comparisons.push(compare(
            "same-cpu round trip µs",
            ALTERNATIONS,
            || ctx_switch_round_trip("same-cpu", 20_000),
            || perf_pipe_median(same, 20_000),
        )?);
    }
    if let (true, Some(&second)) = (perf, cpus.get(1)) {
        comparisons.push(compare(
            "cross-cpu round trip µs",
            CROSS_CPU_ALTERNATIONS,
            || ctx_switch_round_trip("cross-cpu", 4_000),
            || perf_pipe((cpus[0], second), 20_000),
        )?);
    }
    let all = run_demo(env!("CARGO_BIN_EXE_ctx_switch"), &["--rounds", "20000"])?;
    results.insert("ctx_switch".into(), all);

    println!("== pipe --bandwidth vs dd | dd (MB/s)");
    let mut placements = vec![("one CPU", (cpus[0], cpus[0]))];
    if let Some(&second) = cpus.get(1) {
        placements.push(("two CPUs", (cpus[0], second)));
    }
    let dd_all = || -> anyhow::Result<Vec<f64>> {
        placements
            .iter()
            .map(|(_, cpus)| dd_mb_per_s(*cpus))
            .collect()
    };
    // dd, demo, dd, demo, …, dd: each single run of the demo is compared with the mean of
    // the dd runs just before and just after it, so that the host's load, which drifts
    // from second to second, weighs on both sides of a pair alike.
    let (mut demo_runs, mut dd_runs) = (Vec::new(), vec![dd_all()?]);
    for _ in 0..PIPE_PAIRS {
        let demo = run_demo(
            env!("CARGO_BIN_EXE_pipe_bandwidth"),
            &["--like-dd", "--runs", "1"],
        )?;
        demo_runs.push(demo);
        dd_runs.push(dd_all()?);
    }
    for (index, (placement, _)) in placements.iter().enumerate() {
        let demo: Vec<f64> = demo_runs
            .iter()
            .map(|demo| demo["rows"][index]["mb_per_s"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let dd: Vec<f64> = dd_runs
            .windows(2)
            .map(|around| (around[0][index] + around[1][index]) / 2.0)
            .collect();
        comparisons.push(verdict(
            &format!("pipe bandwidth MB/s, {placement}"),
            &demo,
            &dd,
        ));
    }

    println!("== nice: shares against the weights ({NICE_RUNS} runs of {NICE_SECONDS} s each)");
    for (key, label, sessions) in [
        ("nice_one_session", "one session", "one"),
        ("nice_separate_sessions", "separate sessions", "separate"),
    ] {
        let mut runs = Vec::new();
        for _ in 0..NICE_RUNS {
            let args = ["--seconds", NICE_SECONDS, "--sessions", sessions];
            let summary = run_demo(env!("CARGO_BIN_EXE_nice"), &args)?;
            print_nice(&summary, label);
            runs.push(summary);
        }
        results.insert(key.into(), Value::Array(runs));
    }

    println!("== proc_vs_thread: creation cost");
    // The chapter's command, `proc_vs_thread` with its default --count: the caption says it.
    let creation = run_demo(env!("CARGO_BIN_EXE_proc_vs_thread"), &[])?;
    results.insert("proc_vs_thread".into(), creation);

    results.insert("comparisons".into(), Value::Array(comparisons.clone()));
    results.insert(
        "machine".into(),
        json!({ "cpus": cpus, "kernel": kernel_release(), "load": load_average() }),
    );
    let results = Value::Object(results);
    sched_figures(figures, &results)?;
    let json_path = figures.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    println!(
        "\nwrote {} and comparisons.md, nice.svg, ctx_switch.svg, creation.svg beside it",
        json_path.display()
    );
    Ok(comparisons)
}

/// A results file an earlier run wrote (bench.json, prefork.json).
fn read_results(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Draws this part's figures from the bench's results (`bench.json`'s contents): after a
/// run, or alone with `--redraw` from the results a run wrote before.
fn sched_figures(figures: &Path, results: &Value) -> anyhow::Result<()> {
    let comparisons = results["comparisons"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    comparisons_table(figures, &comparisons, &results["machine"])?;
    let mut ctx_bars = Vec::new();
    for mode in results["ctx_switch"]["modes"].as_array().context("modes")? {
        let name = mode["mode"].as_str().unwrap_or("?").to_owned();
        // Where the bench compared a mode with perf, the figure shows that comparison's
        // runs (median and min-max) and perf's median, all from the same alternations.
        let compared = comparisons.iter().find(|row: &&Value| {
            row["what"]
                .as_str()
                .is_some_and(|what| what.starts_with(&name))
        });
        let number = |value: &Value| value.as_f64().unwrap_or(f64::NAN);
        ctx_bars.push(match compared {
            Some(row) => {
                let samples: Vec<f64> = row["demo_samples"]
                    .as_array()
                    .map(|samples| samples.iter().map(number).collect())
                    .unwrap_or_default();
                Bar {
                    label: name,
                    value: number(&row["demo"]),
                    spread: Some((
                        measure::quantile(&samples, 0.0),
                        measure::quantile(&samples, 1.0),
                    )),
                    reference: row["reference"].as_f64(),
                }
            }
            None => Bar {
                label: name,
                value: number(&mode["round_trip_us"]),
                spread: Some((number(&mode["min_us"]), number(&mode["max_us"]))),
                reference: None,
            },
        });
    }
    let figure = Figure {
        title: "Pipe ping-pong: ctx_switch against perf bench sched pipe",
        y_axis: "µs per round trip (log scale)",
        bars: "ctx_switch, median",
        reference: Some("perf bench sched pipe, median"),
        second: None,
    };
    sched_figure(&figures.join("ctx_switch.svg"), &figure, &ctx_bars)?;
    let count = results["proc_vs_thread"]["count"]
        .as_u64()
        .context("count")?;
    let methods: Vec<Bar> = results["proc_vs_thread"]["creation"]
        .as_array()
        .context("creation")?
        .iter()
        .map(|row| Bar {
            label: row["method"].as_str().unwrap_or("?").to_owned(),
            value: row["median_us"].as_f64().unwrap_or(f64::NAN),
            spread: Some((
                row["min_us"].as_f64().unwrap_or(f64::NAN),
                row["max_us"].as_f64().unwrap_or(f64::NAN),
            )),
            reference: None,
        })
        .collect();
    for bar in &methods {
        println!("  {:<10} {:9.1} µs", bar.label, bar.value);
    }
    let title = format!("Create and finish: proc_vs_thread, {count} rounds a way");
    let figure = Figure {
        title: &title,
        y_axis: "µs per round (log scale)",
        bars: &format!("median of {count}"),
        reference: None,
        second: None,
    };
    sched_figure(&figures.join("creation.svg"), &figure, &methods)?;
    nice_figure(
        &figures.join("nice.svg"),
        &results["nice_one_session"],
        &results["nice_separate_sessions"],
    )
}

/// Writes `comparisons.md`, the table the bench chapter includes: its numbers are never
/// typed by hand.
fn comparisons_table(figures: &Path, comparisons: &[Value], machine: &Value) -> anyhow::Result<()> {
    let mut table = String::from(
        "| comparison | demo | reference | paired ratio | within 0.95-1.05 |\n| --- | --- | --- | --- | --- |\n",
    );
    for row in comparisons {
        let number = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        let what = row["what"].as_str().unwrap_or("?");
        let agrees = if row["agrees"] == true { "yes" } else { "no" };
        let (demo, reference, ratio) = (number("demo"), number("reference"), number("ratio"));
        table += &format!("| {what} | {demo:.2} | {reference:.2} | {ratio:.2} | {agrees} |\n");
    }
    let load = machine["load"].as_str().unwrap_or("?");
    let kernel = machine["kernel"].as_str().unwrap_or("?");
    let cpus = &machine["cpus"];
    table +=
        &format!("\nCPUs {cpus}, Linux {kernel}; load average {load} at the end of the run.\n");
    std::fs::write(figures.join("comparisons.md"), table).context("write comparisons.md")?;
    Ok(())
}

/// Runs a demo (the release build cargo made for this bench) with `--json` and returns
/// its summary.
fn run_demo(path: &str, args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(path)
        .arg("--json")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {path}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{path} {args:?}: {}",
        output.status
    );
    let text = String::from_utf8(output.stdout)?;
    let last = text.lines().last().context("no output")?;
    Ok(serde_json::from_str(last)?)
}

fn ctx_switch_round_trip(mode: &str, rounds: u64) -> anyhow::Result<f64> {
    let summary = run_demo(
        env!("CARGO_BIN_EXE_ctx_switch"),
        &["--mode", mode, "--rounds", &rounds.to_string()],
    )?;
    summary["modes"][0]["round_trip_us"]
        .as_f64()
        .context("round_trip_us")
}

/// Runs the demo and the reference `alternations` times each, alternating which goes
/// first (demo, reference, reference, demo, …) so that a drift of the host's load within
/// a pair counts against each side equally; compares them (see [`verdict`]).
fn compare(
    what: &str,
    alternations: usize,
    mut demo_run: impl FnMut() -> anyhow::Result<f64>,
    mut reference_run: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<Value> {
    let (mut demo, mut reference) = (Vec::new(), Vec::new());
    for alternation in 0..alternations {
        if alternation % 2 == 0 {
            demo.push(demo_run()?);
            reference.push(reference_run()?);
        } else {
            reference.push(reference_run()?);
            demo.push(demo_run()?);
        }
    }
    Ok(verdict(what, &demo, &reference))
}

/// The ratio is the median of the ratios of runs made one right after the other: the
/// host's load changes from second to second (on a VM, cross-CPU wake-ups vary 2-5x), and
/// a pair of neighbouring runs sees the same load.
fn verdict(what: &str, demo: &[f64], reference: &[f64]) -> Value {
    let (ours, theirs) = (measure::median(demo), measure::median(reference));
    let pair_ratios: Vec<f64> = demo.iter().zip(reference).map(|(d, r)| d / r).collect();
    let ratio = measure::median(&pair_ratios);
    let agrees = TARGET.contains(&ratio);
    let row = json!({ "what": what, "demo": ours, "reference": theirs, "ratio": ratio,
                      "agrees": agrees, "demo_samples": demo, "reference_samples": reference });
    println!("  {}", verdict_line(&row));
    row
}

/// One comparison, on one line.
fn verdict_line(row: &Value) -> String {
    let number = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
    let (what, demo, reference, ratio) = (
        row["what"].as_str().unwrap_or("?"),
        number("demo"),
        number("reference"),
        number("ratio"),
    );
    let verdict = if row["agrees"] == true {
        "agrees"
    } else {
        "OUTSIDE 0.95-1.05"
    };
    format!(
        "{what:<32} demo {demo:9.2}  reference {reference:9.2}  paired ratio {ratio:5.2}  {verdict}"
    )
}

/// The median of five runs of [`perf_pipe`], as the demo's figure is the median of its
/// five repetitions.
fn perf_pipe_median(cpus: (usize, usize), loops: u64) -> anyhow::Result<f64> {
    let runs: Vec<f64> = (0..5)
        .map(|_| perf_pipe(cpus, loops))
        .collect::<Result<_, _>>()?;
    Ok(measure::median(&runs))
}

fn perf_works() -> bool {
    Command::new("perf")
        .args(["bench", "sched", "pipe", "-l", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `perf bench sched pipe -l loops` with its two sides pinned to `cpus`. perf itself is
/// one side and the child it forks the other: taskset pins both to `cpus.0`, then for two
/// CPUs the child is moved to `cpus.1` as soon as it appears (perf has no option for it).
/// Until it is moved, perf's round trips are same-CPU ones, several times cheaper: the
/// watcher is a thread of its own on `cpus.1` that reads `/proc/<perf>/task/<perf>/children`
/// without sleeping, so that it sees the child within microseconds (a watcher that slept
/// 200 µs between looks let ~50 of them through, which made perf look 1% faster at 5000
/// loops). Returns perf's µs per round trip ("usecs/op").
fn perf_pipe(cpus: (usize, usize), loops: u64) -> anyhow::Result<f64> {
    let mut perf = Command::new("taskset");
    perf.args([
        "-c",
        &cpus.0.to_string(),
        "perf",
        "bench",
        "sched",
        "pipe",
        "-l",
        &loops.to_string(),
    ])
    .stdout(Stdio::piped());
    let child = perf.spawn().context("run perf")?;
    if cpus.0 != cpus.1 {
        let perf_pid = child.id();
        let watcher = std::thread::spawn(move || -> anyhow::Result<()> {
            measure::pin_to_cpu(cpus.1)?; // off perf's CPU: it never delays perf's side
            let children = format!("/proc/{perf_pid}/task/{perf_pid}/children");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let text = std::fs::read_to_string(&children).unwrap_or_default();
                if let Some(other_side) = text.split_whitespace().find_map(|pid| pid.parse().ok()) {
                    return Ok(measure::pin_task_to_cpu(Pid::from_raw(other_side), cpus.1)?);
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "perf's second process did not appear"
                );
            }
        });
        watcher.join().expect("the watcher does not panic")?;
    }
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "perf bench sched pipe: {}",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|line| line.contains("usecs/op"))
        .and_then(|line| line.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no usecs/op in perf's output: {text}"))
}

/// MB/s of 256 MiB in 64 KiB blocks, as the demo sends per run, through
/// `dd if=/dev/zero | dd of=/dev/null`, writer on `cpus.0` and reader on `cpus.1`. The
/// demo runs with `--like-dd` to do the same work per block. The reader's clock starts
/// when it starts: it starts 50 ms after the writer, which by then has filled the pipe,
/// so that, like the demo's clock, it does not count the writer's start-up. Like the
/// demo's, the timed run follows a warm-up run on the same CPUs: here a run right after
/// one on the other placement came out about 2.5% slower than the next, on one CPU and
/// on two (the median of 25 such triples), which made the demo look faster than dd.
fn dd_mb_per_s((writer, reader): (usize, usize)) -> anyhow::Result<f64> {
    let pipeline = format!(
        "taskset -c {writer} dd if=/dev/zero bs=64K count=4096 status=none \
         | (sleep 0.05; exec taskset -c {reader} dd of=/dev/null bs=64K)"
    );
    dd_seconds(&pipeline)?; // the warm-up
    let seconds = dd_seconds(&pipeline)?;
    Ok(f64::from(256u32 << 20) / seconds / 1e6)
}

/// The seconds dd reports on its last line ("… copied, 0.0712 s, 3.8 GB/s").
fn dd_seconds(shell: &str) -> anyhow::Result<f64> {
    let output = Command::new("sh")
        .args(["-c", &format!("{shell} 2>&1")])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .last()
        .and_then(|line| {
            line.split(" copied, ")
                .nth(1)?
                .split(" s")
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no time in dd's output: {text}"))
}

/// The 1-minute load average (`/proc/loadavg`): how busy the machine was.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().next().unwrap_or("?").to_owned()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn print_nice(summary: &Value, label: &str) {
    let rows = summary["rows"].as_array().cloned().unwrap_or_default();
    let shares: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "nice {}: {:.1}% (weights {:.1}%)",
                row["nice"],
                row["measured_share"].as_f64().unwrap_or(0.0) * 100.0,
                row["predicted_share"].as_f64().unwrap_or(0.0) * 100.0
            )
        })
        .collect();
    println!("  {label:<18} {}", shares.join(", "));
}

/// The nice figure from the bench's runs of each command (`one`, `separate`: arrays of
/// summaries): bars for one session's measured shares (median, min-max of the runs), dots
/// for the weights' prediction, a cross per run of separate sessions.
fn nice_figure(path: &Path, one: &Value, separate: &Value) -> anyhow::Result<()> {
    // (A bench.json from before NICE_RUNS holds one summary, not an array.)
    let runs = |summaries: &Value| {
        summaries
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![summaries.clone()])
    };
    let (one, separate) = (runs(one), runs(separate));
    let rows = one.first().context("no nice run")?["rows"]
        .as_array()
        .context("rows")?
        .clone();
    let share = |summary: &Value, index: usize, key: &str| {
        summary["rows"][index][key].as_f64().unwrap_or(0.0) * 100.0
    };
    let bars: Vec<Bar> = (0..rows.len())
        .map(|index| {
            let measured: Vec<f64> = one
                .iter()
                .map(|run| share(run, index, "measured_share"))
                .collect();
            Bar {
                label: format!("nice {}", rows[index]["nice"]),
                value: measure::median(&measured),
                spread: Some((
                    measure::quantile(&measured, 0.0),
                    measure::quantile(&measured, 1.0),
                )),
                reference: Some(share(&one[0], index, "predicted_share")),
            }
        })
        .collect();
    let separate_points: Vec<(usize, f64)> = (0..rows.len())
        .flat_map(|index| separate.iter().map(move |run| (index, run)))
        .map(|(index, run)| (index, share(run, index, "measured_share")))
        .collect();
    let title = format!(
        "nice, and nice --sessions separate: {} runs each",
        one.len()
    );
    let figure = Figure {
        title: &title,
        y_axis: "share of one CPU (%)",
        bars: "one session, median",
        reference: Some("the weights' prediction"),
        second: Some(("separate sessions, each run", &separate_points)),
    };
    sched_figure(path, &figure, &bars)
}

/// A y axis tick: whole numbers from 10 up ("10000", not "10000.0", which runs into the
/// axis title).
fn tick_label(value: &f64) -> String {
    match *value {
        v if v >= 10.0 || v == 0.0 => format!("{v:.0}"),
        v => format!("{v}"),
    }
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a figure: {error}")
}

/// One bar of a scheduling figure: its label, value, spread (min, max) and reference.
struct Bar {
    label: String,
    value: f64,
    spread: Option<(f64, f64)>,
    reference: Option<f64>,
}

/// What a scheduling figure draws: the bars' series, the y axis, and the markers' series.
struct Figure<'a> {
    title: &'a str,
    y_axis: &'a str,
    bars: &'a str,
    reference: Option<&'a str>,
    second: Option<(&'a str, &'a [(usize, f64)])>, // (bar, value) points
}

/// The scheduling figures, readable at the book's width (640 px): text of 15-18 px, the
/// y axis titled with its unit, logarithmic when the values span more than 10x, the
/// spread of each bar as a min-max whisker, and a legend naming every series.
fn sched_figure(path: &Path, figure: &Figure, bars: &[Bar]) -> anyhow::Result<()> {
    let values: Vec<f64> = bars
        .iter()
        .flat_map(|bar| {
            let (low, high) = bar.spread.unwrap_or((bar.value, bar.value));
            [Some(bar.value), Some(low), Some(high), bar.reference]
        })
        .flatten()
        .chain(
            figure
                .second
                .iter()
                .flat_map(|(_, points)| points.iter().map(|(_, value)| *value)),
        )
        .filter(|value| *value > 0.0)
        .collect();
    let (low, high) = values.iter().fold((f64::MAX, 0.0f64), |(low, high), v| {
        (low.min(*v), high.max(*v))
    });
    if high / low > 10.0 {
        let range = (low / 2.0..high * 8.0).log_scale(); // room for the legend above
        sched_chart(path, figure, bars, range, low / 2.0)
    } else {
        sched_chart(path, figure, bars, 0.0..high * 1.6, 0.0)
    }
}

fn sched_chart<Y>(
    path: &Path,
    figure: &Figure,
    bars: &[Bar],
    y_range: Y,
    floor: f64,
) -> anyhow::Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    // The legend goes in the upper corner away from the tallest bar.
    let tallest = (0..bars.len()).max_by(|&a, &b| bars[a].value.total_cmp(&bars[b].value));
    let legend_corner = match tallest {
        Some(index) if index * 2 < bars.len() => SeriesLabelPosition::UpperRight,
        _ => SeriesLabelPosition::UpperLeft,
    };
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(figure.title, TITLE)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(84)
        .build_cartesian_2d((0..bars.len() - 1).into_segmented(), y_range)
        .map_err(plot_error)?;
    let label = |value: &SegmentValue<usize>| match value {
        SegmentValue::CenterOf(index) => bars.get(*index).map(|bar| bar.label.clone()),
        _ => None,
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|value| label(value).unwrap_or_default())
        .y_label_formatter(&tick_label)
        .label_style(LABEL)
        .axis_desc_style(AXIS_TITLE)
        .y_desc(figure.y_axis)
        .draw()
        .map_err(plot_error)?;
    let blue = RGBColor(120, 160, 210);
    chart
        .draw_series(bars.iter().enumerate().map(|(index, bar)| {
            let corners = [
                (SegmentValue::Exact(index), floor),
                (SegmentValue::Exact(index + 1), bar.value),
            ];
            let mut rectangle = Rectangle::new(corners, blue.filled());
            rectangle.set_margin(0, 0, 24, 24);
            rectangle
        }))
        .map_err(plot_error)?
        .label(figure.bars)
        .legend(move |(x, y)| Rectangle::new([(x - 6, y - 6), (x + 6, y + 6)], blue.filled()));
    let spreads: Vec<_> = bars
        .iter()
        .enumerate()
        .filter_map(|(index, bar)| {
            let (low, high) = bar.spread?;
            let at = SegmentValue::CenterOf(index);
            Some(PathElement::new(
                vec![(at.clone(), low), (at, high)],
                BLACK.stroke_width(2),
            ))
        })
        .collect();
    if !spreads.is_empty() {
        chart
            .draw_series(spreads)
            .map_err(plot_error)?
            .label("min-max of the runs")
            .legend(|(x, y)| PathElement::new(vec![(x, y - 7), (x, y + 7)], BLACK.stroke_width(2)));
    }
    // Each bar's value, inside it just under its top, beside the whisker.
    chart
        .draw_series(bars.iter().enumerate().map(|(index, bar)| {
            let style = LABEL
                .into_font()
                .into_text_style(&root)
                .pos(Pos::new(HPos::Left, VPos::Top));
            let text = match bar.value {
                value if value < 10.0 => format!("{value:.2}"),
                value if value < 100.0 => format!("{value:.1}"),
                value => format!("{value:.0}"),
            };
            EmptyElement::at((SegmentValue::CenterOf(index), bar.value))
                + Text::new(text, (8, 4), style)
        }))
        .map_err(plot_error)?;
    if let Some(name) = figure.reference {
        let marks = bars.iter().enumerate().filter_map(|(index, bar)| {
            Some(Circle::new(
                (SegmentValue::CenterOf(index), bar.reference?),
                6,
                RED.filled(),
            ))
        });
        chart
            .draw_series(marks)
            .map_err(plot_error)?
            .label(name)
            .legend(|(x, y)| Circle::new((x, y), 6, RED.filled()));
    }
    if let Some((name, points)) = figure.second {
        let crosses = points.iter().map(|(index, value)| {
            Cross::new(
                (SegmentValue::CenterOf(*index), *value),
                7,
                BLACK.stroke_width(3),
            )
        });
        chart
            .draw_series(crosses)
            .map_err(plot_error)?
            .label(name)
            .legend(|(x, y)| Cross::new((x, y), 7, BLACK.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .label_font(LABEL)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend_corner)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}
