//! ctx_switch — what a context switch costs, measured the way lmbench does.
//!
//! Demonstrates: two processes passing one byte back and forth over two pipes must take
//! turns on the CPU: each round trip is two context switches. Pinned to one CPU, the
//! round trip measures the switches (plus four pipe system calls); across two CPUs it
//! measures waking a sleeping CPU; two threads switch a little more cheaply than two
//! processes. The kernel's own switch counters confirm the count.
//! Run:     cargo run --release --bin ctx_switch
//! Observe: a few microseconds per round trip on one CPU; more across two.
//! Book:    book/src/sched/ctx_switch.md

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use nix::unistd::{ForkResult, Pid, fork, getpid, gettid, pipe};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::{child, cli, inspect, measure, narrate, signals};
use serde::Serialize;

/// Ping-pong one byte between two processes (or threads) and time the round trips.
///
/// The method of lmbench's lat_ctx and `perf bench sched pipe`: two pipes, one byte each
/// way, --rounds round trips after a warm-up, repeated and reported as the median with
/// the spread. The cost of the pipe system calls alone, measured in one process, is
/// subtracted to estimate the cost of one switch. Build with --release.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  ctx_switch\n  ctx_switch --mode same-cpu --rounds 1000000\n  ctx_switch --mode cross-cpu"
)]
struct Args {
    /// Which pair to measure; `all` prints a table of the three.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,

    /// Round trips per repetition (1-10000000), after a warm-up of a tenth as many.
    #[arg(long, value_name = "N", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rounds: u64,

    /// Repetitions per mode (1-100); the median is reported.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    repetitions: u32,

    /// The scheduling policy of both sides. `batch` (SCHED_BATCH) turns off wake-up
    /// preemption: a woken side waits until the other blocks, so every switch is voluntary.
    #[arg(long, value_enum, default_value_t = Policy::Normal)]
    policy: Policy,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum)]
enum Mode {
    /// Two processes pinned to one CPU.
    SameCpu,
    /// Two processes pinned to two CPUs.
    CrossCpu,
    /// Two threads of one process pinned to one CPU.
    Threads,
    /// All three.
    All,
}

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum)]
enum Policy {
    /// SCHED_OTHER, as every process starts (and as `perf bench sched pipe` runs).
    Normal,
    /// SCHED_BATCH: no wake-up preemption.
    Batch,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let cpus = measure::usable_cpus();
    let modes = match args.mode {
        Mode::All => vec![Mode::SameCpu, Mode::CrossCpu, Mode::Threads],
        one => vec![one],
    };
    if args.policy == Policy::Batch {
        set_batch_policy()?;
    }
    if args.mode == Mode::CrossCpu && cpus.len() < 2 {
        anyhow::bail!(
            "cross-cpu needs two CPUs, and this process may use only CPU {}",
            cpus[0]
        );
    }
    let syscall_us = pipe_syscall_us(cpus[0])?;
    event("method").field("pipe_syscall_us", syscall_us).say(format!(
        "method: {} round trips of 1 byte over two pipes, after {} warm-up ones, {} repetitions, median; \
         one write + one read on a pipe in a single process costs {syscall_us:.2} µs (median of 3 × 100000); \
         expected: each side switched out once per round trip, 2 switches in all",
        args.rounds,
        warm_up(args.rounds),
        args.repetitions
    ));
    let mut rows = Vec::new();
    for mode in modes {
        let placement = match mode {
            Mode::CrossCpu => match cpus.get(1) {
                Some(&second) => (cpus[0], second),
                None => {
                    event("skipped").say("cross-cpu needs two CPUs; this process may use only one");
                    continue;
                }
            },
            _ => (cpus[0], cpus[0]),
        };
        rows.push(measure_mode(mode, placement, args, syscall_us)?);
        signals::bail_if_stopped()?;
    }
    event("summary")
        .field("modes", &rows)
        .field("pipe_syscall_us", syscall_us)
        .field(
            "policy",
            if args.policy == Policy::Batch {
                "batch"
            } else {
                "normal"
            },
        )
        .say(table(&rows));
    Ok(())
}

fn warm_up(rounds: u64) -> u64 {
    (rounds / 10).max(10)
}

/// Makes this process SCHED_BATCH; children and threads inherit it. No privilege needed.
// ANCHOR: batch
fn set_batch_policy() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which only reads it.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == -1 {
        return Err(std::io::Error::last_os_error()).context("sched_setscheduler(SCHED_BATCH)");
    }
    event("policy")
        .say("sched_setscheduler(0, SCHED_BATCH): a woken task no longer preempts the running one");
    Ok(())
}
// ANCHOR_END: batch

/// lmbench's baseline: the same writes and reads, in one process, with no switch.
// ANCHOR: baseline
fn pipe_syscall_us(cpu: usize) -> anyhow::Result<f64> {
    measure::pin_to_cpu(cpu).context("sched_setaffinity")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    let mut byte = [0u8];
    let mut one_run = |rounds: u32| -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..rounds {
            write_all(&write_end, &byte)?;
            read_exact(&read_end, &mut byte)?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
    };
    one_run(10_000)?; // warm-up
    let samples = [one_run(100_000)?, one_run(100_000)?, one_run(100_000)?];
    Ok(measure::median(&samples))
}
// ANCHOR_END: baseline

/// One side of the ping-pong: `rounds` times, wait for the byte, send it back.
// ANCHOR: pong
fn pong(from: &OwnedFd, to: &OwnedFd) -> anyhow::Result<()> {
    let mut byte = [0u8];
    while read_exact(from, &mut byte)? {
        write_all(to, &byte)?;
    }
    Ok(()) // EOF: the other side is done
}
// ANCHOR_END: pong

/// The timed side: `rounds` round trips; returns µs per round trip.
// ANCHOR: ping
fn ping(to: &OwnedFd, from: &OwnedFd, rounds: u64) -> anyhow::Result<f64> {
    let mut byte = [1u8];
    let start = Instant::now();
    for _ in 0..rounds {
        write_all(to, &byte)?; // wakes the other side...
        if !read_exact(from, &mut byte)? {
            bail!("the other side went away"); // ...and sleeps until it answers
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / rounds as f64)
}
// ANCHOR_END: ping

fn name(mode: Mode) -> &'static str {
    match mode {
        Mode::SameCpu => "same-cpu",
        Mode::CrossCpu => "cross-cpu",
        Mode::Threads => "threads",
        Mode::All => "all",
    }
}

/// What one mode measured: an object of the summary's `modes`.
#[derive(Serialize)]
struct ModeResult {
    mode: &'static str,
    /// Round trips timed (all repetitions).
    rounds: u64,
    /// The CPUs of the timed side and of its partner.
    cpus: [usize; 2],
    round_trip_us: f64,
    min_us: f64,
    max_us: f64,
    switch_us: f64,
    /// Per side (timed side, partner), over the timed round trips, as the kernel counted.
    voluntary_switches: [u64; 2],
    involuntary_switches: [u64; 2],
}

fn measure_mode(
    mode: Mode,
    (cpu_a, cpu_b): (usize, usize),
    args: &Args,
    syscall_us: f64,
) -> anyhow::Result<ModeResult> {
    let (b_reads, a_writes) = pipe().context("pipe")?; // A -> B
    let (a_reads, b_writes) = pipe().context("pipe")?; // B -> A
    measure::pin_to_cpu(cpu_a).context("sched_setaffinity")?;
    // ANCHOR: partner
    let partner: (Pid, Pid); // the other side's process and thread id
    let mut thread = None;
    if mode == Mode::Threads {
        let (tx, rx) = std::sync::mpsc::channel();
        thread = Some(std::thread::spawn(move || -> anyhow::Result<()> {
            measure::pin_to_cpu(cpu_b)?;
            tx.send(gettid()).ok();
            pong(&b_reads, &b_writes)
        }));
        partner = (getpid(), rx.recv().context("the thread started")?);
    } else {
        let parent = getpid();
        // SAFETY: single-threaded here (any thread of an earlier mode was joined); the
        // child plays pong and calls _exit.
        let pid = match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                drop((a_writes, a_reads)); // the parent's ends: else no EOF ends pong
                measure::pin_to_cpu(cpu_b)?;
                pong(&b_reads, &b_writes)?;
                Ok(0)
            }),
            ForkResult::Parent { child } => child,
        };
        drop((b_reads, b_writes));
        partner = (pid, pid);
    }
    // ANCHOR_END: partner
    let me = (getpid(), gettid());
    let switches = |(pid, tid): (Pid, Pid)| inspect::thread_switches(pid.as_raw(), tid.as_raw());
    let timed = (|| {
        ping(&a_writes, &a_reads, warm_up(args.rounds))?;
        let before = [switches(me)?, switches(partner)?];
        let mut samples = Vec::new();
        for _ in 0..args.repetitions {
            samples.push(ping(&a_writes, &a_reads, args.rounds)?);
        }
        let after = [switches(me)?, switches(partner)?];
        anyhow::Ok((samples, before, after))
    })();
    drop((a_writes, a_reads)); // EOF: the partner's loop ends, even after an error
    if thread.is_none() {
        child::wait_or_kill(partner.0)?;
    }
    if let Some(thread) = thread {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the thread panicked"))??;
    }
    let (samples, before, after) = timed?;
    signals::bail_if_stopped()?; // a stop while the partner was being reaped
    let rounds = args.rounds * u64::from(args.repetitions);
    let result = ModeResult {
        mode: name(mode),
        rounds,
        cpus: [cpu_a, cpu_b],
        round_trip_us: measure::median(&samples),
        min_us: measure::quantile(&samples, 0.0),
        max_us: measure::quantile(&samples, 1.0),
        switch_us: (measure::median(&samples) - 2.0 * syscall_us) / 2.0,
        voluntary_switches: [0, 1].map(|side| after[side].0 - before[side].0),
        involuntary_switches: [0, 1].map(|side| after[side].1 - before[side].1),
    };
    let per_trip = |side: usize| {
        let voluntary = result.voluntary_switches[side] as f64 / rounds as f64;
        let involuntary = result.involuntary_switches[side] as f64 / rounds as f64;
        format!(
            "{:.2} ({voluntary:.2} voluntary + {involuntary:.2} involuntary)",
            voluntary + involuntary
        )
    };
    event("mode").fields(&result).say(format!(
        "{}, CPUs {cpu_a} and {cpu_b}: round trip {:.2} µs (range {:.2}-{:.2}), so {} ≈ {:.2} µs; \
         switches per round trip, as the kernel counted them: this side {}, the other {}",
        result.mode,
        result.round_trip_us,
        result.min_us,
        result.max_us,
        if cpu_a == cpu_b {
            "one switch"
        } else {
            "one wake-up of the other CPU"
        },
        result.switch_us,
        per_trip(0),
        per_trip(1)
    ));
    Ok(result)
}

fn table(rows: &[ModeResult]) -> String {
    let mut text = String::from(
        "summary:\n  mode       CPUs  round trip µs  switch (or wake-up) µs  switches per round trip (each side; expected 1)\n",
    );
    for row in rows {
        let per_side = |side: usize| {
            (row.voluntary_switches[side] + row.involuntary_switches[side]) as f64
                / row.rounds as f64
        };
        text += &format!(
            "  {:<9}  {},{}  {:>13.2}  {:>22.2}  {:.2} and {:.2}\n",
            row.mode,
            row.cpus[0],
            row.cpus[1],
            row.round_trip_us,
            row.switch_us,
            per_side(0),
            per_side(1)
        );
    }
    text.trim_end().to_owned()
}
