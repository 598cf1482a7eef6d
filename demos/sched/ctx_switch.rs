//! ctx_switch — what a context switch costs, measured the way lmbench does.
//!
//! Demonstrates: two processes passing a byte back and forth over two pipes take turns on
//! the CPU: each round trip on one CPU is two context switches (across two CPUs, the
//! waking of a sleeping CPU), as the kernel's own switch counters confirm.
//! Run:     cargo run --release --bin ctx_switch      (add --policy batch: every switch voluntary)
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

/// Each mode's round trips are timed this many times; the median is reported.
const REPETITIONS: u32 = 5;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: pair
fn run(args: &Args) -> anyhow::Result<()> {
    let cpus = measure::usable_cpus();
    let placements = placements(args.mode, &cpus)?;
    if args.policy == Policy::Batch {
        set_batch_policy()?;
    }
    let (syscall_us, rounds) = (pipe_syscall_us(cpus[0])?, args.rounds);
    event("method").field("pipe_syscall_us", syscall_us).say(format!(
        "method: {rounds} round trips of 1 byte over two pipes after a tenth as many, {REPETITIONS} \
         times, median; a write and a read on a pipe alone cost {syscall_us:.2} µs"
    ));
    let mut rows = Vec::new();
    for (mode, cpus) in placements {
        rows.push(ping_pong(mode, cpus, rounds, syscall_us)?);
    }
    event("summary")
        .field("modes", &rows)
        .field("pipe_syscall_us", syscall_us)
        .field("policy", args.policy)
        .say(table(&rows));
    Ok(())
}

/// Round trips between this thread, on `cpus[0]`, and a forked child or a thread on `cpus[1]`.
fn ping_pong(mode: Mode, cpus: [usize; 2], rounds: u64, syscall_us: f64) -> anyhow::Result<Timing> {
    let (b_reads, a_writes) = pipe().context("pipe")?; // A -> B: the timed side to its partner
    let (a_reads, b_writes) = pipe().context("pipe")?; // B -> A
    measure::pin_to_cpu(cpus[0]).context("sched_setaffinity")?;
    let partner: (Pid, Pid); // the other side's process and thread id
    let mut thread = None;
    if mode == Mode::Threads {
        let (tx, rx) = std::sync::mpsc::channel();
        thread = Some(std::thread::spawn(move || -> anyhow::Result<()> {
            measure::pin_to_cpu(cpus[1])?;
            tx.send(gettid()).ok();
            pong(&b_reads, &b_writes)
        }));
        partner = (getpid(), rx.recv().context("the thread started")?);
    } else {
        let parent = getpid();
        // SAFETY: single-threaded here (any thread of an earlier mode was joined); the
        // child drops two descriptors, pins itself, plays pong and calls _exit.
        let pid = match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                drop((a_writes, a_reads)); // the parent's ends: else no EOF ends pong
                measure::pin_to_cpu(cpus[1])?;
                pong(&b_reads, &b_writes)?;
                Ok(0)
            }),
            ForkResult::Parent { child } => child,
        };
        drop((b_reads, b_writes));
        partner = (pid, pid);
    }
    // ANCHOR_END: pair
    let me = (getpid(), gettid());
    let switches = |(pid, tid): (Pid, Pid)| inspect::thread_switches(pid.as_raw(), tid.as_raw());
    let timed = (|| {
        ping(&a_writes, &a_reads, (rounds / 10).max(10))?; // warm-up: a tenth as many
        let before = [switches(me)?, switches(partner)?];
        let samples = (0..REPETITIONS).map(|_| ping(&a_writes, &a_reads, rounds));
        let samples: Vec<f64> = samples.collect::<anyhow::Result<_>>()?;
        let after = [switches(me)?, switches(partner)?];
        anyhow::Ok((samples, before, after))
    })();
    drop((a_writes, a_reads)); // EOF: the partner's loop ends, even after an error
    match thread {
        Some(thread) => thread.join().expect("pong does not panic")?,
        None => drop(child::wait_or_kill(partner.0)?),
    }
    signals::bail_if_stopped()?; // a stop while the partner was being reaped
    let (samples, before, after) = timed?;
    let median = measure::median(&samples);
    let timing = Timing {
        mode: name(mode),
        rounds: rounds * u64::from(REPETITIONS),
        cpus,
        round_trip_us: median,
        min_us: measure::quantile(&samples, 0.0),
        max_us: measure::quantile(&samples, 1.0),
        switch_us: (median - 2.0 * syscall_us) / 2.0, // lmbench's estimate of one switch
        voluntary_switches: [0, 1].map(|side| after[side].0 - before[side].0),
        involuntary_switches: [0, 1].map(|side| after[side].1 - before[side].1),
    };
    let (name, [a, b], low, high) = (timing.mode, cpus, timing.min_us, timing.max_us);
    event("mode").fields(&timing).say(format!(
        "{name}, CPUs {a} and {b}: round trip {median:.2} µs (range {low:.2}-{high:.2})"
    ));
    Ok(timing)
}

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

/// The other side: wait for the byte, send it back, until EOF.
fn pong(from: &OwnedFd, to: &OwnedFd) -> anyhow::Result<()> {
    let mut byte = [0u8];
    while read_exact(from, &mut byte)? {
        write_all(to, &byte)?;
    }
    Ok(()) // EOF: the other side is done
}
// ANCHOR_END: ping

/// lmbench's baseline: the same writes and reads, in one process, with no switch.
// ANCHOR: baseline
fn pipe_syscall_us(cpu: usize) -> anyhow::Result<f64> {
    measure::pin_to_cpu(cpu).context("sched_setaffinity")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    let (mut byte, mut samples) = ([0u8], Vec::new());
    for rounds in [10_000, 100_000, 100_000, 100_000] {
        let start = Instant::now();
        for _ in 0..rounds {
            write_all(&write_end, &byte)?;
            read_exact(&read_end, &mut byte)?;
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds));
    }
    Ok(measure::median(&samples[1..])) // the first run was a warm-up
}
// ANCHOR_END: baseline

/// Makes this process SCHED_BATCH; children and threads inherit it. No privilege needed.
// ANCHOR: batch
fn set_batch_policy() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which only reads it.
    let result = unsafe {
        libc::sched_setscheduler(
            0,                 // pid: this process
            libc::SCHED_BATCH, // policy: no wake-up preemption
            &param,            // param: priority 0, the only one for the normal policies
        )
    };
    if result == -1 {
        return Err(std::io::Error::last_os_error()).context("sched_setscheduler(SCHED_BATCH)");
    }
    event("policy").say("sched_setscheduler(0, SCHED_BATCH): no wake-up preemption");
    Ok(())
}
// ANCHOR_END: batch

/// The modes `mode` stands for, with the CPUs of each one's timed side and partner.
fn placements(mode: Mode, cpus: &[usize]) -> anyhow::Result<Vec<(Mode, [usize; 2])>> {
    let modes = match mode {
        Mode::All => vec![Mode::SameCpu, Mode::CrossCpu, Mode::Threads],
        one => vec![one],
    };
    let mut placed = Vec::new();
    for each in modes {
        match (each, cpus.get(1)) {
            (Mode::CrossCpu, Some(&second)) => placed.push((each, [cpus[0], second])),
            (Mode::CrossCpu, None) if mode == each => {
                bail!("cross-cpu needs two CPUs, and this process may use one")
            }
            (Mode::CrossCpu, None) => event("skipped").say("cross-cpu needs two CPUs: skipped"),
            _ => placed.push((each, [cpus[0]; 2])),
        }
    }
    Ok(placed)
}

fn table(rows: &[Timing]) -> String {
    let mut text = String::from(
        "summary:\n  mode       CPUs  round trip µs  switch (or wake-up) µs  switches per round trip, voluntary + involuntary: this side, the other",
    );
    for row in rows {
        let (name, [a, b], trip, switch) = (row.mode, row.cpus, row.round_trip_us, row.switch_us);
        let per_trip = |counts: [u64; 2]| counts.map(|count| count as f64 / row.rounds as f64);
        let [[v0, v1], [i0, i1]] = [row.voluntary_switches, row.involuntary_switches].map(per_trip);
        text += &format!(
            "\n  {name:<9}  {a},{b}  {trip:>13.2}  {switch:>22.2}  {v0:.2} + {i0:.2}, {v1:.2} + {i1:.2}"
        );
    }
    text
}

/// One mode's `mode` event and object of the summary's `modes`; `[timed side, partner]`.
#[derive(Serialize)]
struct Timing {
    mode: &'static str,
    rounds: u64,
    cpus: [usize; 2],
    round_trip_us: f64,
    min_us: f64,
    max_us: f64,
    switch_us: f64,
    voluntary_switches: [u64; 2],
    involuntary_switches: [u64; 2],
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

fn name(mode: Mode) -> &'static str {
    ["same-cpu", "cross-cpu", "threads", "all"][mode as usize]
}

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Policy {
    /// SCHED_OTHER, as every process starts (and as `perf bench sched pipe` runs).
    Normal,
    /// SCHED_BATCH: no wake-up preemption.
    Batch,
}

/// Ping-pong one byte between two processes (or threads) and time the round trips, as
/// lmbench's lat_ctx and `perf bench sched pipe` do. Build with --release.
#[derive(Parser)]
#[command(after_help = "Examples:\n  ctx_switch\n  ctx_switch --mode same-cpu --policy batch")]
struct Args {
    /// Which pair to measure; `all` prints a table of the three.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,

    /// Round trips per repetition (1-10000000); 5 repetitions, after a tenth as many untimed.
    #[arg(long, value_name = "N", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rounds: u64,

    /// The policy of both sides: `batch` (no wake-up preemption) makes every switch voluntary.
    #[arg(long, value_enum, default_value_t = Policy::Normal)]
    policy: Policy,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
