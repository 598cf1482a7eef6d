//! nice — how the scheduler divides one CPU between busy processes of different nice.
//!
//! Demonstrates: the kernel gives each runnable task a weight from a fixed table (1024
//! for nice 0, about 1.25× less per step up) and shares a CPU in proportion to weight.
//! Busy workers pinned to one CPU, in one session, get exactly the shares the weights
//! predict. In separate sessions (autogroup, outside a cpu cgroup), or each on its own
//! CPU, nice changes nothing.
//! Run:     cargo run --release --bin nice
//! Observe: measured shares within a fraction of a point of the weights' prediction.
//! Book:    book/src/sched/nice.md

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe, setsid};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::{child, cli, inspect, measure, narrate, signals};
use serde::Serialize;

/// Run one busy worker per nice value on one CPU and compare each one's share of the CPU
/// with what the kernel's weight table predicts.
///
/// The workers are forked, pinned to one CPU (sched_setaffinity), given their nice values
/// (setpriority), released together and left to spin for --seconds. Their CPU time comes
/// from /proc/<pid>/schedstat. --sessions separate puts each worker in its own session to
/// show autogroup at work; --no-pin lets the kernel spread them over the CPUs.
#[derive(Parser)]
#[command(after_help = "Examples:\n  nice\n  nice --nice 0,19 --seconds 5\n  \
                        nice --sessions separate\n  nice --nice 0,10 --no-pin")]
struct Args {
    /// Nice values, one busy worker each (-20 to 19, comma-separated, at most 16).
    /// Values below the demo's own nice value (normally 0) need CAP_SYS_NICE.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "0,5,10",
          allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: Vec<i32>,

    /// How long the workers spin (0.1 to 3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = cli::positive_seconds)]
    seconds: Duration,

    /// One session for all workers (they share one autogroup), or one session each.
    #[arg(long, value_enum, default_value_t = Sessions::One)]
    sessions: Sessions,

    /// Do not pin the workers to one CPU: let the kernel place them.
    #[arg(long)]
    no_pin: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Sessions {
    /// All workers in the demo's session.
    One,
    /// Each worker calls setsid() and so gets an autogroup of its own.
    Separate,
}

/// One worker's result: the summary's `rows`.
#[derive(Serialize)]
struct Row {
    pid: i32,
    nice: i32,
    /// The fraction of one CPU the worker had: its CPU time over the elapsed time.
    cpu_use: f64,
    weight: u32,
    predicted_share: f64,
    measured_share: f64,
    cpu_seconds: f64,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if args.nice.len() > 16 {
        cli::usage_error("--nice takes at most 16 values");
    }
    if args.seconds < Duration::from_millis(100) {
        cli::usage_error(
            "--seconds must be at least 0.1: shorter runs measure start-up, not sharing",
        );
    }
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// The kernel's table (kernel/sched/core.c, `sched_prio_to_weight`): the weight of a task
/// for each nice value from -20 to 19. Each step is about 1.25×, so that one nice step
/// up costs a task about 10% of the CPU against a neighbour one step below.
// ANCHOR: weights
const WEIGHTS: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, // -20 .. -16
    29154, 23254, 18705, 14949, 11916, // -15 .. -11
    9548, 7620, 6100, 4904, 3906, // -10 .. -6
    3121, 2501, 1991, 1586, 1277, // -5 .. -1
    1024, 820, 655, 526, 423, // 0 .. 4
    335, 272, 215, 172, 137, // 5 .. 9
    110, 87, 70, 56, 45, // 10 .. 14
    36, 29, 23, 18, 15, // 15 .. 19
];

fn weight(nice: i32) -> u32 {
    WEIGHTS[(nice + 20) as usize]
}
// ANCHOR_END: weights

fn run(args: &Args) -> anyhow::Result<()> {
    let cpus = measure::usable_cpus();
    let cpu = *cpus.last().expect("a process may run on at least one CPU");
    let autogroup_enabled = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .map(|text| text.trim() == "1")
        .unwrap_or(false);
    let cpu_cgroup = inspect::cpu_cgroup(); // autogroup works only outside such a group
    let autogroup = autogroup_enabled && cpu_cgroup.is_none();
    let own_nice = own_nice();
    let placement = if args.no_pin {
        format!("not pinned, {} CPUs usable", cpus.len())
    } else {
        format!("pinned to CPU {cpu}")
    };
    event("setup")
        .field("cpu", (!args.no_pin).then_some(cpu))
        .field("autogroup", autogroup)
        .field("cpu_cgroup", &cpu_cgroup)
        .field("own_nice", own_nice)
        .say(format!(
            "{} busy workers, {placement}, {}; autogroup is {}",
            args.nice.len(),
            match args.sessions {
                Sessions::One => "all in this session",
                Sessions::Separate => "each in a session of its own",
            },
            match (&cpu_cgroup, autogroup_enabled) {
                (_, false) => "off".to_owned(),
                (None, true) => "on".to_owned(),
                (Some(group), true) => format!(
                    "on, but bypassed: this process is in the cpu cgroup {group}, and autogroup \
                     applies only to the root one"
                ),
            }
        ));
    let (start_read, start_write) = pipe().context("pipe")?;
    let mut workers = Vec::new();
    for &nice in &args.nice {
        let worker = fork_worker((&start_read, &start_write), args.sessions)?;
        workers.push(worker);
        if !args.no_pin {
            measure::pin_task_to_cpu(worker, cpu)
                .with_context(|| format!("sched_setaffinity({worker}, CPU {cpu})"))?;
        }
        set_nice(worker, nice, own_nice)?;
    }
    let rows = measure_shares(&workers, &start_write, cpu, args)?;
    explain(args, autogroup, cpus.len(), &rows);
    event("summary")
        .field("rows", &rows)
        .field("pinned", !args.no_pin)
        .field("sessions", args.sessions)
        .field("autogroup", autogroup)
        .field("cpu_cgroup", &cpu_cgroup)
        .say(table(&rows));
    Ok(())
}

/// A worker: in its own session if asked, it waits for the start (a byte
/// on the pipe) and spins until killed.
// ANCHOR: worker
fn fork_worker(start: (&OwnedFd, &OwnedFd), sessions: Sessions) -> anyhow::Result<Pid> {
    let parent = getpid();
    // SAFETY: single-threaded here; the child spins and never returns (it is killed).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            // The parent's end: closed by number, as this copy's owner never runs again
            // (the child ends in _exit).
            nix::unistd::close(start.1.as_raw_fd()).context("close")?;
            if sessions == Sessions::Separate {
                setsid().context("setsid")?; // a new session: a new autogroup
            }
            read_exact(start.0, &mut [0])?; // one byte each: everyone starts together
            let mut spins = 0u64;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1)); // busy, never blocks
            }
        }),
        ForkResult::Parent { child } => Ok(child),
    }
}
// ANCHOR_END: worker

/// `setpriority(PRIO_PROCESS, pid, nice)`: nix has no wrapper, so libc. A worker inherits
/// the demo's nice (normally 0); lowering it needs CAP_SYS_NICE (or RLIMIT_NICE).
// ANCHOR: set_nice
fn set_nice(pid: Pid, nice: i32, own_nice: i32) -> anyhow::Result<()> {
    // SAFETY: setpriority only reads its integer arguments.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid.as_raw() as libc::id_t, nice) };
    if result == -1 {
        let error = nix::errno::Errno::last();
        let hint = if matches!(error, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) {
            let (low, mid, high) = (own_nice, (own_nice + 5).min(19), (own_nice + 10).min(19));
            format!(
                "; a worker starts at this process's nice ({own_nice}), and lowering it needs the \
                 CAP_SYS_NICE capability, which this process lacks — try values of {own_nice} or \
                 more, such as --nice {low},{mid},{high}"
            )
        } else {
            String::new()
        };
        anyhow::bail!("setpriority(PRIO_PROCESS, {pid}, {nice}): {error}{hint}");
    }
    event("nice")
        .field("worker", pid.as_raw())
        .field("nice", nice)
        .field("weight", weight(nice))
        .say(format!(
            "setpriority(PRIO_PROCESS, {pid}, {nice}) -> weight {}",
            weight(nice)
        ));
    Ok(())
}
// ANCHOR_END: set_nice

/// This process's nice value: `getpriority` may return -1 as a value, so errno tells.
fn own_nice() -> i32 {
    nix::errno::Errno::clear();
    // SAFETY: getpriority only reads its integer arguments.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        0
    } else {
        nice
    }
}

/// Releases the workers, lets them spin, and reads how much CPU each one got.
// ANCHOR: measure
fn measure_shares(
    workers: &[Pid],
    start: &OwnedFd,
    cpu: usize,
    args: &Args,
) -> anyhow::Result<Vec<Row>> {
    for worker in workers {
        // Asleep on the start pipe: its start-up is done and will not count.
        inspect::wait_for_state(worker.as_raw(), 'S', Duration::from_secs(5))?;
    }
    let cpu_ns = |pid: &Pid| inspect::cpu_ns(pid.as_raw());
    let before: Vec<u64> = workers.iter().map(cpu_ns).collect::<Result<_, _>>()?;
    let watched_cpu = (!args.no_pin).then_some(cpu); // the workers' CPU, or all of them
    let busy_before = inspect::busy_cpu_seconds(watched_cpu)?;
    let started = Instant::now();
    write_all(start, &vec![0; workers.len()])?; // all workers run from now
    event("start").say(format!("workers released for {:?}", args.seconds));
    signals::sleep(args.seconds);
    let after: Vec<u64> = workers.iter().map(cpu_ns).collect::<Result<_, _>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    let busy = inspect::busy_cpu_seconds(watched_cpu)? - busy_before;
    for &pid in workers {
        kill(pid, Signal::SIGKILL).context("kill")?;
        child::wait_or_kill(pid)?;
    }
    signals::bail_if_stopped()?;
    let used: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / 1e9)
        .collect();
    let (total_used, total_weight) = (
        used.iter().sum::<f64>(),
        args.nice
            .iter()
            .map(|&nice| f64::from(weight(nice)))
            .sum::<f64>(),
    );
    let others = (busy - total_used).max(0.0);
    event("measured")
        .field("elapsed_seconds", elapsed)
        .field("others_cpu_seconds", others)
        .say(format!(
            "workers used {total_used:.3} CPU-seconds in {elapsed:.3} s (/proc/<pid>/schedstat); \
             other processes about {others:.2} {where_} (/proc/stat)",
            where_ = if args.no_pin {
                "on all CPUs".to_owned()
            } else {
                format!("on CPU {cpu}")
            }
        ));
    Ok(workers
        .iter()
        .zip(&args.nice)
        .zip(used)
        .map(|((pid, &nice), cpu_seconds)| Row {
            pid: pid.as_raw(),
            nice,
            cpu_use: cpu_seconds / elapsed,
            weight: weight(nice),
            predicted_share: f64::from(weight(nice)) / total_weight,
            measured_share: cpu_seconds / total_used,
            cpu_seconds,
        })
        .collect())
}
// ANCHOR_END: measure

/// Says why the measured shares follow the weights, or why they do not.
fn explain(args: &Args, autogroup: bool, cpus: usize, rows: &[Row]) {
    let workers = args.nice.len();
    let each_had_a_cpu = rows.iter().all(|row| row.cpu_use > 0.9);
    let text = if args.no_pin && each_had_a_cpu {
        format!(
            "not pinned: {workers} workers on {cpus} CPUs, so each can have a CPU of its own and \
             nice decides nothing (it only divides a CPU that tasks share)"
        )
    } else if args.no_pin && workers <= cpus {
        format!(
            "not pinned: {workers} workers on {cpus} CPUs, yet they did not each get a whole CPU: \
             other processes kept the CPUs busy (see above), the workers had to share, and nice \
             divided what they shared. On an idle machine each gets a CPU of its own"
        )
    } else if args.no_pin {
        format!(
            "not pinned: {workers} workers on {cpus} CPUs; the kernel moves them between CPUs, and \
             nice only divides the CPU that workers share at each moment"
        )
    } else if args.sessions == Sessions::Separate && autogroup {
        "separate sessions with autogroup on: each session is a scheduling group, groups \
         compete as equals, and nice only orders tasks within a group — so each worker gets an \
         equal share. To make nice count again: run them in one session, set the group's \
         nice (echo 10 > /proc/<pid>/autogroup), or use cgroups (cpu.weight)"
            .to_owned()
    } else if args.sessions == Sessions::Separate {
        "separate sessions, but autogroup is off or bypassed by a cpu cgroup: sessions make no \
         scheduling groups here, so the weights still divide the CPU"
            .to_owned()
    } else {
        "one CPU shared by weight: each worker's share is its weight over the sum of weights"
            .to_owned()
    };
    event("explain").say(text);
}

fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "summary:\n  nice  weight  predicted  measured  difference  cpu-seconds  of a CPU\n",
    );
    for row in rows {
        text += &format!(
            "  {:>4}  {:>6}  {:>8.1}%  {:>7.1}%  {:>+7.1} pp  {:>11.3}  {:>7.0}%\n",
            row.nice,
            row.weight,
            row.predicted_share * 100.0,
            row.measured_share * 100.0,
            ((row.measured_share - row.predicted_share) * 1000.0).round() / 10.0 + 0.0, // no "-0.0"
            row.cpu_seconds,
            row.cpu_use * 100.0
        );
    }
    text.trim_end().to_owned()
}
