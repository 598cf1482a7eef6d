//! The prefork part of the bench (`cargo bench --bench reference -- prefork`):
//! - `prefork --self-test` in each dispatch mode, requests/s and p99 latency, for the
//!   chapter's figures (`prefork_echo.svg`, `prefork_mixed.svg`);
//! - wrk against the demo (shared-accept) and against Debian's nginx, configured by this
//!   bench alone (its own config in a temp dir, the same number of workers, 127.0.0.1, a
//!   free port, `Connection: close`, a fixed-length body; never the system service), in
//!   the same run, alternating, as a paired ratio (`prefork_nginx.svg`). Target >= 0.8.
//!
//! Everything goes to `book/src/patterns/prefork.json`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plotters::prelude::*;
use proclab::{inspect, measure};
use serde_json::{Value, json};

/// Workloads for the self-test figures: (name, what it means, the self-test's load).
const LOADS: [(&str, &str, &[&str]); 2] = [
    ("echo", "every request instant", &["--requests", "20000"]),
    (
        "mixed",
        "every 10th request takes 20 ms",
        &[
            "--requests",
            "2000",
            "--slow-ms",
            "20",
            "--slow-every",
            "10",
        ],
    ),
];
const MODES: [&str; 3] = ["shared-accept", "round-robin", "least-loaded"];
const RUNS: usize = 5;
const WORKERS: &str = "4";
/// wrk's load: 2 threads, 8 connections, this long per run.
const WRK: [&str; 6] = ["-t", "2", "-c", "8", "-d", "3s"];
const TARGET: f64 = 0.8;

pub fn run(figures: &Path) -> anyhow::Result<()> {
    let mut results = serde_json::Map::new();
    let load_start = super::load_average();
    for (name, meaning, load) in LOADS {
        println!("== prefork --self-test, {meaning}: requests/s, p99 ms (median of {RUNS})");
        let mut runs: Vec<Vec<Value>> = vec![Vec::new(); MODES.len()];
        for _ in 0..RUNS {
            for (mode, samples) in MODES.iter().zip(&mut runs) {
                let args = [
                    &["--self-test", "--dispatch", mode, "--workers", WORKERS],
                    load,
                ];
                let summary = super::run_demo(env!("CARGO_BIN_EXE_prefork"), &args.concat())?;
                samples.push(summary["client"].clone());
            }
        }
        let mut rows = Vec::new();
        for (mode, samples) in MODES.iter().zip(&runs) {
            let field = |key: &str| -> Vec<f64> {
                samples
                    .iter()
                    .map(|c| c[key].as_f64().unwrap_or(f64::NAN))
                    .collect()
            };
            let (rps, p99) = (field("rps"), field("p99_ms"));
            let (rps_median, p99_median) = (measure::median(&rps), measure::median(&p99));
            println!("  {mode:<14} {rps_median:8.0} requests/s  p99 {p99_median:7.3} ms");
            rows.push(
                json!({ "dispatch": mode, "rps": rps_median, "p99_ms": p99_median,
                              "rps_samples": rps, "p99_ms_samples": p99 }),
            );
        }
        results.insert(
            name.into(),
            json!({ "load": load, "meaning": meaning, "modes": rows }),
        );
    }
    let against_nginx = against_nginx()?;
    results.insert("nginx".into(), against_nginx.clone());
    let machine = json!({ "cpus": measure::usable_cpus(), "kernel": super::kernel_release(),
                          "load_start": load_start, "load_end": super::load_average() });
    results.insert("machine".into(), machine);
    let results = Value::Object(results);
    self::figures(figures, &results)?;
    let json_path = figures.join("prefork.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    println!(
        "\nwrote {} and prefork_table.md, prefork_{{echo,mixed,nginx}}.svg beside it",
        json_path.display()
    );
    match against_nginx["ratio"].as_f64() {
        Some(ratio) if ratio < TARGET => bail!("prefork / nginx = {ratio:.2}, target >= {TARGET}"),
        _ => Ok(()),
    }
}

/// wrk against prefork and against nginx, alternating RUNS times; the paired ratio.
fn against_nginx() -> anyhow::Result<Value> {
    if !on_path("wrk") || !on_path("nginx") {
        println!("== prefork against nginx: skipped (apt-get install wrk nginx-light)");
        return Ok(json!({ "skipped": "wrk or nginx is not installed" }));
    }
    println!(
        "== wrk {} against prefork ({WORKERS} workers) and nginx",
        WRK.join(" ")
    );
    let (mut demo, mut nginx, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut demo_cpu, mut nginx_cpu) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let port = free_port()?;
        let server = Command::new(env!("CARGO_BIN_EXE_prefork"))
            .args(["--port", &port.to_string(), "--workers", WORKERS])
            .stdout(Stdio::null())
            .spawn()?;
        let (prefork_rps, prefork_us) = wrk_against(server, port, "/echo/x")?;
        let port = free_port()?;
        let (server, _dir) = start_nginx(port)?;
        let (nginx_rps, nginx_us) = wrk_against(server, port, "/echo/x")?;
        println!(
            "  prefork {prefork_rps:8.0}  nginx {nginx_rps:8.0}  ratio {:.2}   server CPU per \
             request: prefork {prefork_us:.1} µs, nginx {nginx_us:.1} µs",
            prefork_rps / nginx_rps
        );
        demo.push(prefork_rps);
        nginx.push(nginx_rps);
        demo_cpu.push(prefork_us);
        nginx_cpu.push(nginx_us);
        ratios.push(prefork_rps / nginx_rps);
    }
    let ratio = measure::median(&ratios);
    println!("  median ratio prefork / nginx: {ratio:.2} (target >= {TARGET})");
    Ok(
        json!({ "wrk": WRK, "workers": WORKERS, "prefork_rps": demo, "nginx_rps": nginx,
               "ratios": ratios, "ratio": ratio, "target": TARGET,
               "prefork_cpu_us_per_request": demo_cpu, "nginx_cpu_us_per_request": nginx_cpu }),
    )
}

/// Waits until `server` answers on `port`, runs wrk against it, stops it; requests/s.
/// wrk against the server on `port`, then the server stopped: its requests/s, and the CPU
/// time (user + system) its processes spent per request.
fn wrk_against(mut server: Child, port: u16, path: &str) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server on {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // every worker ready
    let url = format!("http://127.0.0.1:{port}{path}");
    let cpu_before = server_cpu_seconds(server.id());
    let output = Command::new("wrk")
        .args(WRK)
        .args(["-H", "Connection: close", &url])
        .output()
        .context("run wrk")?;
    let cpu = server_cpu_seconds(server.id()) - cpu_before;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    server.wait()?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    let rps: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rps| rps.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    // "  31064 requests in 3.00s, 4.09MB read"
    let requests: f64 = text
        .lines()
        .find_map(|line| {
            line.split_once(" requests in ")
                .map(|(n, _)| n.trim().parse())
        })
        .and_then(Result::ok)
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    Ok((rps, cpu / requests * 1e6))
}

/// The CPU seconds (user + system, /proc/<pid>/stat) a server's master `pid` and its
/// children, the workers, have used so far.
fn server_cpu_seconds(pid: u32) -> f64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let master = pid.to_string();
    let pids = std::iter::once(master.as_str()).chain(children.split_whitespace());
    pids.filter_map(|pid| inspect::inspect(pid.parse().ok()?).ok())
        .map(|view| view.cpu_seconds)
        .sum()
}

/// nginx with a config of its own in a temp dir (removed when the guard drops).
fn start_nginx(port: u16) -> anyhow::Result<(Child, TempDir)> {
    let dir = TempDir::new()?;
    let d = dir.0.display();
    // The body has the length of the demo's reply to /echo/x.
    let config = format!(
        "worker_processes {WORKERS};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  \
         keepalive_timeout 0;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{ default_type text/plain; \
         return 200 \"x worker 0 pid 123456\\n\"; }}\n  }}\n}}\n"
    );
    let path = dir.0.join("nginx.conf");
    std::fs::write(&path, config)?;
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .context("start nginx")?;
    Ok((child, dir))
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("proclab-bench-nginx.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A bar: its label, the median of the samples, and their min and max.
struct Bar {
    label: String,
    median: f64,
    min: f64,
    max: f64,
}

impl Bar {
    fn of(label: &str, samples: &[f64]) -> Bar {
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        Bar {
            label: label.into(),
            median: measure::median(samples),
            min,
            max,
        }
    }
}

/// The numbers of a JSON array (NaN for anything else).
fn numbers(value: &Value) -> Vec<f64> {
    let values = value.as_array().map(Vec::as_slice).unwrap_or_default();
    values
        .iter()
        .map(|n| n.as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Draws the chapter's three figures from the results (`prefork.json`'s contents): after
/// a run, or alone with `--redraw`.
pub fn figures(figures: &Path, results: &Value) -> anyhow::Result<()> {
    for (name, meaning, _) in LOADS {
        let modes = results[name]["modes"].as_array().context("modes")?;
        let bars = |key: &str| -> Vec<Bar> {
            let label = |mode: &Value| mode["dispatch"].as_str().unwrap_or("?").to_owned();
            modes
                .iter()
                .map(|mode| Bar::of(&label(mode), &numbers(&mode[key])))
                .collect()
        };
        let (rps, p99) = (bars("rps_samples"), bars("p99_ms_samples"));
        draw(
            &figures.join(format!("prefork_{name}.svg")),
            &format!("prefork --self-test: {meaning}"),
            &format!("dispatch ({WORKERS} workers, 8 connections)"),
            &[("requests/s", &rps[..]), ("p99 latency (ms)", &p99[..])],
        )?;
    }
    let nginx = &results["nginx"];
    if nginx.get("skipped").is_none() {
        let bars = [
            Bar::of("prefork shared-accept", &numbers(&nginx["prefork_rps"])),
            Bar::of("nginx", &numbers(&nginx["nginx_rps"])),
        ];
        let cpu = [
            Bar::of(
                "prefork shared-accept",
                &numbers(&nginx["prefork_cpu_us_per_request"]),
            ),
            Bar::of("nginx", &numbers(&nginx["nginx_cpu_us_per_request"])),
        ];
        let title = format!("wrk {}, Connection: close", WRK.join(" "));
        let server = format!("server ({WORKERS} workers each)");
        let mut panels = vec![("requests/s", &bars[..])];
        if cpu.iter().all(|bar| bar.median.is_finite()) {
            panels.push(("server CPU per request (µs)", &cpu[..])); // a prefork.json of before
        }
        draw(&figures.join("prefork_nginx.svg"), &title, &server, &panels)?;
    }
    summary_table(figures, results)
}

/// `prefork_table.md`, which the chapter includes: every number its prose discusses,
/// from the results, never typed.
fn summary_table(figures: &Path, results: &Value) -> anyhow::Result<()> {
    let spread = |samples: &[f64], digits: usize| {
        let (low, high) = (
            measure::quantile(samples, 0.0),
            measure::quantile(samples, 1.0),
        );
        let median = measure::median(samples);
        format!("{median:.digits$} ({low:.digits$}–{high:.digits$})")
    };
    let mut table = format!(
        "| load | dispatch | requests/s: median (min–max of {RUNS}) | p99 ms: median (min–max) |\n\
         | --- | --- | --- | --- |\n"
    );
    for (name, meaning, _) in LOADS {
        for mode in results[name]["modes"].as_array().context("modes")? {
            let dispatch = mode["dispatch"].as_str().unwrap_or("?");
            let (rps, p99) = (
                numbers(&mode["rps_samples"]),
                numbers(&mode["p99_ms_samples"]),
            );
            table += &format!(
                "| {meaning} | {dispatch} | {} | {} |\n",
                spread(&rps, 0),
                spread(&p99, 2)
            );
        }
    }
    let nginx = &results["nginx"];
    if nginx.get("skipped").is_none() {
        table += &format!(
            "\n| wrk {}, Connection: close | requests/s: median (min–max) | server CPU per request, µs |\n\
             | --- | --- | --- |\n",
            WRK.join(" ")
        );
        for (server, key) in [("prefork shared-accept", "prefork"), ("nginx", "nginx")] {
            let rps = numbers(&nginx[format!("{key}_rps")]);
            let cpu = numbers(&nginx[format!("{key}_cpu_us_per_request")]);
            let cpu = if cpu.is_empty() {
                "not measured".into()
            } else {
                spread(&cpu, 1)
            };
            table += &format!("| {server} | {} | {cpu} |\n", spread(&rps, 0));
        }
        let ratios = numbers(&nginx["ratios"]);
        table += &format!(
            "\nPaired ratio prefork / nginx: {} (median, min–max of {} pairs); target at least {TARGET}.\n",
            spread(&ratios, 2),
            ratios.len()
        );
    }
    let machine = &results["machine"];
    let load = |key: &str| machine[key].as_str().unwrap_or("?").to_owned();
    table += &format!(
        "\nCPUs {}, Linux {}; load average {} at the start of the run, {} at the end.\n",
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?"),
        load("load_start"),
        load("load_end")
    );
    std::fs::write(figures.join("prefork_table.md"), table).context("write prefork_table.md")
}

/// One panel per (axis title, bars), one above the other (so the figure stays 700 px
/// wide, unscaled in the book's column): each bar the median, a black line from the min
/// to the max of the runs; axis titles with units, a legend.
fn draw(path: &Path, title: &str, x_title: &str, panels: &[(&str, &[Bar])]) -> anyhow::Result<()> {
    let height = 40 + 360 * panels.len() as u32;
    let root = SVGBackend::new(path, (700, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root.titled(title, super::TITLE).map_err(plot_error)?;
    let areas = root.split_evenly((panels.len(), 1));
    let color = RGBColor(120, 160, 210);
    for ((y_title, bars), area) in panels.iter().zip(&areas) {
        let top = bars.iter().map(|bar| bar.max).fold(0.0, f64::max) * 1.5; // room for the legend
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)
            .map_err(plot_error)?;
        let label = |value: &SegmentValue<usize>| match value {
            SegmentValue::CenterOf(index) => bars
                .get(*index)
                .map(|b| b.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&label)
            .y_label_formatter(&super::tick_label)
            .y_desc(*y_title)
            .x_desc(x_title)
            .label_style(super::LABEL)
            .axis_desc_style(super::AXIS_TITLE)
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(index, bar)| {
                let mut rectangle = Rectangle::new(
                    [
                        (SegmentValue::Exact(index), 0.0),
                        (SegmentValue::Exact(index + 1), bar.median),
                    ],
                    color.filled(),
                );
                rectangle.set_margin(0, 0, 16, 16);
                rectangle
            }))
            .map_err(plot_error)?
            .label(format!("median of {RUNS} runs"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().enumerate().map(|(index, bar)| {
                let at = SegmentValue::CenterOf(index);
                PathElement::new(
                    vec![(at.clone(), bar.min), (at, bar.max)],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(plot_error)?
            .label("min to max")
            .legend(|(x, y)| {
                PathElement::new(vec![(x + 7, y - 7), (x + 7, y + 7)], BLACK.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .label_font(super::LABEL)
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
