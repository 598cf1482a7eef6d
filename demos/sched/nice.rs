//! nice — how the scheduler divides one CPU between busy processes of different nice.
//!
//! Demonstrates: the kernel gives each runnable task a weight from a fixed table (1024 for
//! nice 0, about 1.25× less per step up) and shares a CPU in proportion to weight; in
//! separate sessions (autogroups) nice changes nothing between them.
//! Run:     cargo run --release --bin nice            (add --sessions separate for autogroups)
//! Observe: measured shares within a fraction of a point of the weights' prediction.
//! Book:    book/src/sched/nice.md

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe, setsid};
use nix::{errno::Errno, sched::CpuSet, sched::sched_setaffinity, sys::signal::Signal};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::{child, cli, inspect, measure, narrate, signals};
use serde::Serialize;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: run
fn run(args: &Args) -> anyhow::Result<()> {
    if args.nice.len() > 16 {
        cli::usage_error("--nice takes 1-16 values");
    }
    let cpu = *measure::usable_cpus().last().expect("some CPU is usable");
    let own_nice = own_nice();
    let (autogroup, cpu_cgroup) = announce(args, cpu, own_nice);
    let (start_read, start_write) = pipe().context("pipe")?;
    let mut workers = Vec::new();
    for &nice in &args.nice {
        let worker = fork_worker(&start_read, args.sessions)?;
        workers.push(worker);
        pin_to_cpu(worker, cpu)?;
        set_nice(worker, nice, own_nice)?;
    }
    let rows = share_cpu(&workers, &start_write, cpu, args)?;
    report(args, autogroup, &cpu_cgroup, &rows);
    Ok(())
}

/// Gives a worker its nice value (libc: nix has no `setpriority`).
fn set_nice(worker: Pid, nice: i32, own_nice: i32) -> anyhow::Result<()> {
    // SAFETY: setpriority only reads its three integer arguments.
    let result = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,            // which: `who` is a process id...
            worker.as_raw() as libc::id_t, // who: ...this worker's
            nice,                          // prio: its new nice value, -20 to 19
        )
    };
    if result == -1 {
        let error = Errno::last();
        let hint = match error {
            Errno::EACCES | Errno::EPERM => format!(
                "; a worker starts at this process's nice ({own_nice}); lowering it needs the \
                 CAP_SYS_NICE capability, which this process lacks — try values of {own_nice} or more"
            ),
            _ => String::new(),
        };
        anyhow::bail!("setpriority(PRIO_PROCESS, {worker}, {nice}): {error}{hint}");
    }
    let weight = weight(nice);
    let said = format!("setpriority(PRIO_PROCESS, {worker}, {nice}) -> weight {weight}");
    let set = event("nice").field("worker", worker.as_raw());
    set.field("nice", nice).field("weight", weight).say(said);
    Ok(())
}

/// Pins a worker to `cpu`, so that all the workers compete for that one CPU.
fn pin_to_cpu(worker: Pid, cpu: usize) -> anyhow::Result<()> {
    let mut only_that_cpu = CpuSet::new();
    only_that_cpu.set(cpu)?;
    sched_setaffinity(
        worker,         // pid: the worker (0 would mean the calling thread)
        &only_that_cpu, // mask: the CPUs it may run on
    )
    .with_context(|| format!("sched_setaffinity({worker}, CPU {cpu})"))
}
// ANCHOR_END: run

/// A worker, in a session of its own if asked: it waits for the start, then spins.
// ANCHOR: worker
fn fork_worker(start: &OwnedFd, sessions: Sessions) -> anyhow::Result<Pid> {
    let parent = getpid();
    // SAFETY: single-threaded here; the child perhaps calls setsid, reads one byte and
    // spins until it is killed (it calls _exit only on an error).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            if sessions == Sessions::Separate {
                setsid().context("setsid")?; // a new session: a new autogroup
            }
            read_exact(start, &mut [0])?; // one byte each: everyone starts together
            loop {
                std::hint::spin_loop(); // busy: it never blocks, and never ends by itself
            }
        }),
        ForkResult::Parent { child } => Ok(child),
    }
}
// ANCHOR_END: worker

/// Releases the workers once all sleep on the pipe, lets them spin, reads their CPU time.
// ANCHOR: measure
fn share_cpu(pids: &[Pid], start: &OwnedFd, cpu: usize, args: &Args) -> anyhow::Result<Vec<Row>> {
    for pid in pids {
        inspect::wait_for_state(pid.as_raw(), 'S', Duration::from_secs(5))?;
    }
    let cpu_ns = |pid: &Pid| inspect::cpu_ns(pid.as_raw()); // /proc/<pid>/schedstat
    let before: Vec<u64> = pids.iter().map(cpu_ns).collect::<Result<_, _>>()?;
    let busy_before = inspect::busy_cpu_seconds(Some(cpu))?; // /proc/stat
    let started = Instant::now();
    write_all(start, &vec![0; pids.len()])?; // all workers run from now
    event("start").say(format!("workers released for {:?}", args.seconds));
    signals::sleep(args.seconds);
    let after: Vec<u64> = pids.iter().map(cpu_ns).collect::<Result<_, _>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    let busy = inspect::busy_cpu_seconds(Some(cpu))? - busy_before;
    for &pid in pids {
        nix::sys::signal::kill(pid, Signal::SIGKILL).context("kill")?;
        child::wait_or_kill(pid)?;
    }
    signals::bail_if_stopped()?;
    let used = |index: usize| (after[index] - before[index]) as f64 / 1e9; // CPU-seconds
    let total_used: f64 = (0..pids.len()).map(used).sum();
    let total_weight: f64 = args.nice.iter().map(|&nice| f64::from(weight(nice))).sum();
    let others = (busy - total_used).max(0.0);
    let said = format!(
        "workers used {total_used:.3} CPU-seconds in {elapsed:.3} s; others {others:.2} on CPU {cpu}"
    );
    let measured = event("measured").field("elapsed_seconds", elapsed);
    measured.field("others_cpu_seconds", others).say(said);
    let row = |(index, (pid, &nice)): (usize, (&Pid, &i32))| Row {
        pid: pid.as_raw(),
        nice,
        cpu_use: used(index) / elapsed,
        weight: weight(nice),
        predicted_share: f64::from(weight(nice)) / total_weight,
        measured_share: used(index) / total_used,
        cpu_seconds: used(index),
    };
    let rows = pids.iter().zip(&args.nice).enumerate().map(row);
    Ok(rows.collect())
}
// ANCHOR_END: measure

/// The kernel's weight for each nice value, -20 to 19 (`sched_prio_to_weight`, core.c).
// ANCHOR: weights
const WEIGHTS: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, // -20 .. -11
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277, // -10 .. -1
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, // 0 .. 9
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15, // 10 .. 19
];
fn weight(nice: i32) -> u32 {
    WEIGHTS[(nice + 20) as usize]
}
// ANCHOR_END: weights

/// The `setup` event; returns whether autogroup applies, and the cpu cgroup bypassing it.
fn announce(args: &Args, cpu: usize, own_nice: i32) -> (bool, Option<String>) {
    let enabled = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|text| text.trim() == "1");
    let cpu_cgroup = inspect::cpu_cgroup(); // autogroup works only outside such a group
    let autogroup = enabled && cpu_cgroup.is_none();
    let sessions = match args.sessions {
        Sessions::One => "all in this session",
        Sessions::Separate => "each in a session of its own",
    };
    let state = match (enabled, &cpu_cgroup) {
        (true, Some(group)) => format!("on, but bypassed by the cpu cgroup {group}"),
        (on, _) => (if on { "on" } else { "off" }).to_owned(),
    };
    let (workers, s) = (args.nice.len(), if args.nice.len() == 1 { "" } else { "s" });
    let said =
        format!("{workers} busy worker{s}, pinned to CPU {cpu}, {sessions}; autogroup is {state}");
    let setup = event("setup").field("autogroup", autogroup);
    let setup = setup.field("cpu", cpu).field("cpu_cgroup", &cpu_cgroup);
    setup.field("own_nice", own_nice).say(said);
    (autogroup, cpu_cgroup)
}

/// Says why the shares follow the weights or do not, then the summary.
fn report(args: &Args, autogroup: bool, cpu_cgroup: &Option<String>, rows: &[Row]) {
    event("explain").say(match (args.sessions, autogroup) {
        (Sessions::One, _) => "one CPU shared by weight: each share is weight / sum of weights",
        (Sessions::Separate, true) => "separate sessions: their autogroups share the CPU equally",
        (Sessions::Separate, false) => "separate sessions, no autogroups: shared by weight still",
    });
    let mut table =
        "summary:\n  nice  weight  predicted  measured  measured/predicted  cpu-seconds  of a CPU"
            .to_owned();
    for row in rows {
        let (nice, weight, seconds) = (row.nice, row.weight, row.cpu_seconds);
        let [predicted, measured] = [row.predicted_share, row.measured_share].map(|x| x * 100.0);
        let ratio = measured / predicted; // no sign: the line keeps its shape from run to run
        table += &format!(
            "\n  {nice:>4}  {weight:>6}  {predicted:>8.1}%  {measured:>7.1}%  {ratio:>18.2}  {seconds:>11.3}  {:>7.0}%",
            row.cpu_use * 100.0
        );
    }
    let summary = event("summary").field("rows", rows);
    let summary = summary
        .field("pinned", true)
        .field("sessions", args.sessions);
    let summary = summary.field("autogroup", autogroup);
    summary.field("cpu_cgroup", cpu_cgroup).say(table);
}

/// This process's nice value: `getpriority` may return -1 as a value, so errno tells.
fn own_nice() -> i32 {
    Errno::clear();
    // SAFETY: getpriority only reads its integer arguments.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let failed = nice == -1 && Errno::last_raw() != 0;
    if failed { 0 } else { nice }
}

/// `--seconds`: 0.1 to 3600, and an error that says so (issue 16 item 8).
fn tenth_to_an_hour(text: &str) -> Result<Duration, String> {
    match cli::seconds_up_to(3600.0)(text) {
        Ok(seconds) if seconds >= Duration::from_millis(100) => Ok(seconds),
        Err(not_a_number) if not_a_number.contains("number") => Err(not_a_number),
        _ => Err(format!("{text} is not between 0.1 and 3600 seconds")),
    }
}

/// One worker's result: the summary's `rows` (`cpu_use`: the fraction of a CPU it had).
#[derive(Serialize)]
struct Row {
    pid: i32,
    nice: i32,
    cpu_use: f64,
    weight: u32,
    predicted_share: f64,
    measured_share: f64,
    cpu_seconds: f64,
}

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Sessions {
    /// All workers in the demo's session.
    One,
    /// Each worker calls setsid() and so gets an autogroup of its own.
    Separate,
}

/// Run one busy worker per nice value on one CPU and compare each one's share of the CPU
/// with what the kernel's weight table predicts.
#[derive(Parser)]
#[command(after_help = "Examples:\n  nice\n  nice --nice 0,19\n  \
                        nice --sessions separate")]
struct Args {
    /// Nice values, one busy worker each (-20 to 19, comma-separated, at most 16).
    /// Values below the demo's own nice value (normally 0) need CAP_SYS_NICE.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "0,5,10",
          allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: Vec<i32>,

    /// How long the workers spin (0.1 to 3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = tenth_to_an_hour)]
    seconds: Duration,

    /// One session for all workers (they share one autogroup), or one session each.
    #[arg(long, value_enum, default_value_t = Sessions::One)]
    sessions: Sessions,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
