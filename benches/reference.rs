//! reference — the measuring demos beside the reference tools, on this machine, in one run.
//!
//! `just bench` (`cargo bench --bench reference`) runs, alternately and several times:
//! - `ctx_switch --mode same-cpu` against `taskset -c C perf bench sched pipe` (both sides
//!   on CPU C), and `--mode cross-cpu` against the same perf run with its two sides
//!   pinned to two CPUs (the bench moves perf's child right after perf forks it);
//! - `pipe --bandwidth --produce` against `dd if=/dev/zero | dd of=/dev/null`, pinned the
//!   same way (`--produce`: the demo's writer fills each chunk, as dd's does);
//! - `nice` (one session and separate sessions) and `proc_vs_thread`, for the figures.
//!
//! - `prefork --self-test` in each dispatch mode, and wrk against prefork and nginx, for
//!   the prefork chapter (see reference/prefork.rs).
//!
//! `cargo bench --bench reference -- sched` (or `-- prefork`) runs one part only.
//! It prints each ratio (demo / reference, target 0.9-1.1), writes everything to
//! `book/src/sched/bench.json` and draws the book's figures as SVG next to it. It exits 1
//! if a ratio is outside the target. Needs `perf` (Debian: `apt-get install linux-perf`);
//! without it the perf comparisons are skipped and said so.

#[path = "reference/prefork.rs"]
mod prefork;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::Pid;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use proclab::measure;
use serde_json::{Value, json};

/// How many times each pair (demo, reference) runs, alternating; medians are compared.
const ALTERNATIONS: usize = 7;
/// A demo's figure agrees with the reference's if their ratio is within this.
const TARGET: std::ops::RangeInclusive<f64> = 0.9..=1.1;

fn main() -> anyhow::Result<()> {
    // `cargo bench --bench reference -- prefork` runs one part (cargo adds `--bench`).
    let only: Option<String> = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src");
    match only.as_deref() {
        None => {
            sched(&book.join("sched"))?;
            prefork::run(&book.join("patterns"))
        }
        Some("sched") => sched(&book.join("sched")),
        Some("prefork") => prefork::run(&book.join("patterns")),
        Some(other) => bail!("no part called {other:?}: sched or prefork"),
    }
}

/// The scheduling chapters: the demos against perf and dd, and their figures.
fn sched(figures: &Path) -> anyhow::Result<()> {
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
    let same = (cpus[0], cpus[0]);
    let mut ctx_rows = Vec::new();
    if perf {
        comparisons.push(compare("same-cpu round trip µs", || {
            Ok((
                ctx_switch_round_trip("same-cpu", 100_000)?,
                perf_pipe(same, 100_000)?,
            ))
        })?);
    }
    if let (true, Some(&second)) = (perf, cpus.get(1)) {
        comparisons.push(compare("cross-cpu round trip µs", || {
            Ok((
                ctx_switch_round_trip("cross-cpu", 5_000)?,
                perf_pipe((cpus[0], second), 5_000)?,
            ))
        })?);
    }
    let all = run_demo(env!("CARGO_BIN_EXE_ctx_switch"), &["--rounds", "20000"])?;
    for mode in all["modes"].as_array().context("modes")? {
        let name = mode["mode"].as_str().unwrap_or("?").to_owned();
        // Where the bench compared a mode with perf, the figure shows that comparison's
        // medians, both measured in the same alternation.
        let compared = comparisons.iter().find(|row: &&Value| {
            row["what"]
                .as_str()
                .is_some_and(|what| what.starts_with(&name))
        });
        let demo = compared.map_or(&mode["round_trip_us"], |row| &row["demo"]);
        let reference = compared.and_then(|row| row["reference"].as_f64());
        ctx_rows.push((name, demo.as_f64().unwrap_or(0.0), reference));
    }
    results.insert("ctx_switch".into(), all);

    println!("== pipe --bandwidth vs dd | dd (MB/s)");
    let mut placements = vec![("one CPU", (cpus[0], cpus[0]))];
    if let Some(&second) = cpus.get(1) {
        placements.push(("two CPUs", (cpus[0], second)));
    }
    let mut alternations = Vec::new();
    let dd_all = || -> anyhow::Result<Vec<f64>> {
        placements
            .iter()
            .map(|(_, cpus)| dd_mb_per_s(*cpus))
            .collect()
    };
    for _ in 0..ALTERNATIONS {
        // dd before and after the demo's run, averaged: the reference brackets the demo
        // in time, so a change of the host's load in between counts on both sides.
        let before = dd_all()?;
        let demo = run_demo(
            env!("CARGO_BIN_EXE_pipe_bandwidth"),
            &["--mebibytes", "1024", "--produce"],
        )?;
        let after = dd_all()?;
        let dd: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (b + a) / 2.0)
            .collect();
        alternations.push((demo, dd));
    }
    for (index, (placement, _)) in placements.iter().enumerate() {
        let demo: Vec<f64> = alternations
            .iter()
            .map(|(demo, _)| demo["rows"][index]["mb_per_s"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let dd: Vec<f64> = alternations.iter().map(|(_, dd)| dd[index]).collect();
        comparisons.push(verdict(
            &format!("pipe bandwidth MB/s, {placement}"),
            &demo,
            &dd,
        ));
    }

    println!("== nice: shares against the weights (5 s each)");
    let one = run_demo(env!("CARGO_BIN_EXE_nice"), &["--seconds", "5"])?;
    let separate = run_demo(
        env!("CARGO_BIN_EXE_nice"),
        &["--seconds", "5", "--sessions", "separate"],
    )?;
    print_nice(&one, "one session");
    print_nice(&separate, "separate sessions");
    nice_figure(&figures.join("nice.svg"), &one, &separate)?;
    results.insert("nice_one_session".into(), one);
    results.insert("nice_separate_sessions".into(), separate);

    println!("== proc_vs_thread: creation cost");
    let creation = run_demo(env!("CARGO_BIN_EXE_proc_vs_thread"), &["--count", "500"])?;
    let methods: Vec<(String, f64)> = creation["creation"]
        .as_array()
        .context("creation")?
        .iter()
        .map(|row| {
            (
                row["method"].as_str().unwrap_or("?").to_owned(),
                row["median_us"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    for (method, median) in &methods {
        println!("  {method:<10} {median:9.1} µs");
    }
    bar_figure(
        &figures.join("creation.svg"),
        "Create and finish, median of 500 (µs)",
        &methods
            .iter()
            .map(|(method, median)| (method.clone(), *median, None))
            .collect::<Vec<_>>(),
        None,
    )?;
    results.insert("proc_vs_thread".into(), creation);

    bar_figure(
        &figures.join("ctx_switch.svg"),
        "Pipe ping-pong round trip, median (µs)",
        &ctx_rows,
        Some("perf bench sched pipe"),
    )?;

    let failed: Vec<&Value> = comparisons
        .iter()
        .filter(|row| row["agrees"] == false)
        .collect();
    results.insert("comparisons".into(), Value::Array(comparisons.clone()));
    results.insert(
        "machine".into(),
        json!({ "cpus": cpus, "kernel": kernel_release() }),
    );
    let json_path = figures.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    println!(
        "\nwrote {} and the figures nice.svg, ctx_switch.svg, creation.svg beside it",
        json_path.display()
    );
    if !failed.is_empty() {
        bail!(
            "{} comparison(s) outside {TARGET:?}: {}",
            failed.len(),
            failed
                .iter()
                .map(|row| row["what"].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
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

/// Runs the pair `ALTERNATIONS` times, alternately, and compares them (see [`verdict`]).
fn compare(
    what: &str,
    mut pair: impl FnMut() -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<Value> {
    let (mut demo, mut reference) = (Vec::new(), Vec::new());
    for _ in 0..ALTERNATIONS {
        let (ours, theirs) = pair()?;
        demo.push(ours);
        reference.push(theirs);
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
    println!(
        "  {what:<32} demo {ours:9.2}  reference {theirs:9.2}  paired ratio {ratio:5.2}  {}",
        if agrees { "agrees" } else { "OUTSIDE 0.9-1.1" }
    );
    json!({ "what": what, "demo": ours, "reference": theirs, "ratio": ratio, "agrees": agrees,
            "demo_samples": demo, "reference_samples": reference })
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
/// CPUs the child is moved to `cpus.1` as soon as it appears (perf has no option for it). Returns perf's µs per round trip ("usecs/op").
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
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<i32> = std::fs::read_to_string(&children)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect();
            if let Some(&other_side) = pids.first() {
                measure::pin_task_to_cpu(Pid::from_raw(other_side), cpus.1)?;
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "perf's second process did not appear"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
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

/// MB/s of 1 GiB in 64 KiB blocks (enough that dd's start-up does not count) through
/// `dd if=/dev/zero | dd of=/dev/null`, writer on `cpus.0` and reader on `cpus.1`. dd's
/// writer fills each block (from /dev/zero) before writing it: the demo runs with
/// `--produce` to do the same work.
fn dd_mb_per_s((writer, reader): (usize, usize)) -> anyhow::Result<f64> {
    let seconds = dd_seconds(&format!(
        "taskset -c {writer} dd if=/dev/zero bs=64K count=16384 status=none \
         | taskset -c {reader} dd of=/dev/null bs=64K"
    ))?;
    Ok(f64::from(1u32 << 30) / seconds / 1e6)
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

fn nice_figure(path: &Path, one: &Value, separate: &Value) -> anyhow::Result<()> {
    let rows = one["rows"].as_array().context("rows")?;
    let share = |summary: &Value, index: usize, key: &str| {
        summary["rows"][index][key].as_f64().unwrap_or(0.0) * 100.0
    };
    let bars: Vec<(String, f64, Option<f64>)> = (0..rows.len())
        .map(|index| {
            (
                format!("nice {}", rows[index]["nice"]),
                share(one, index, "predicted_share"),
                Some(share(one, index, "measured_share")),
            )
        })
        .collect();
    let separate_points: Vec<f64> = (0..rows.len())
        .map(|index| share(separate, index, "measured_share"))
        .collect();
    draw(
        path,
        "CPU share (%): bars = weights' prediction",
        &bars,
        Some("measured, one session"),
        Some(("measured, separate sessions", &separate_points)),
    )
}

fn bar_figure(
    path: &Path,
    title: &str,
    bars: &[(String, f64, Option<f64>)],
    marker: Option<&str>,
) -> anyhow::Result<()> {
    draw(path, title, bars, marker, None)
}

/// One bar per label with its value written above it; optionally a marker per bar (a
/// reference or a measurement) and a second kind of marker.
fn draw(
    path: &Path,
    title: &str,
    bars: &[(String, f64, Option<f64>)],
    marker: Option<&str>,
    second: Option<(&str, &[f64])>,
) -> anyhow::Result<()> {
    let path: PathBuf = path.to_owned();
    let root = SVGBackend::new(&path, (640, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let top = bars
        .iter()
        .flat_map(|(_, value, mark)| [Some(*value), *mark])
        .flatten()
        .chain(second.iter().flat_map(|(_, points)| points.iter().copied()))
        .fold(0.0f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        // An integer range includes its end as a value: 0..n-1 gives the n segments.
        .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)
        .map_err(plot_error)?;
    let label = |value: &SegmentValue<usize>| match value {
        SegmentValue::CenterOf(index) => bars
            .get(*index)
            .map(|bar| bar.0.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label)
        .draw()
        .map_err(plot_error)?;
    let bar_color = RGBColor(120, 160, 210);
    chart
        .draw_series(bars.iter().enumerate().map(|(index, (_, value, _))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(index), 0.0),
                    (SegmentValue::Exact(index + 1), *value),
                ],
                bar_color.filled(),
            );
            bar.set_margin(0, 0, 20, 20);
            bar
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(index, (_, value, _))| {
            let above = ("sans-serif", 13)
                .into_font()
                .into_text_style(&root)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(
                format!("{value:.1}"),
                (SegmentValue::CenterOf(index), *value + top * 0.05),
                above,
            )
        }))
        .map_err(plot_error)?;
    if let Some(name) = marker {
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(index, (_, _, mark))| {
                Some(Circle::new(
                    (SegmentValue::CenterOf(index), (*mark)?),
                    5,
                    BLACK.filled(),
                ))
            }))
            .map_err(plot_error)?
            .label(name)
            .legend(|(x, y)| Circle::new((x, y), 5, BLACK.filled()));
    }
    if let Some((name, points)) = second {
        chart
            .draw_series(points.iter().enumerate().map(|(index, value)| {
                Cross::new(
                    (SegmentValue::CenterOf(index), *value),
                    6,
                    RED.stroke_width(2),
                )
            }))
            .map_err(plot_error)?
            .label(name)
            .legend(|(x, y)| Cross::new((x, y), 6, RED.stroke_width(2)));
    }
    if marker.is_some() || second.is_some() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a figure: {error}")
}
