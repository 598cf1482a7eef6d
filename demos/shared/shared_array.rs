//! shared_array — counters in shared memory, with and without locks.
//!
//! Demonstrates: `counter += 1` is three steps (load, add, store), so processes adding to
//! one shared counter at once lose updates. A process-shared mutex, a semaphore or an
//! atomic instruction makes the count exact, each at its own price; giving each worker
//! its own counter (partitioning) needs no lock at all — if the counters do not share a
//! cache line. A robust mutex survives the death of the process that held it.
//! Run:     cargo run --release --bin shared_array
//! Observe: `none` loses updates; every other strategy is exact; the costs differ.
//! Book:    book/src/shared/shared_array.md

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::narrate::event;
use proclab::shm::{self, Locked, ProcessLocks, Shared, SharedArray};
use proclab::{child, cli, narrate, signals};
use serde_json::json;

/// Worker processes add 1 to shared counters, with each kind of lock, and count what is
/// lost.
///
/// W workers each add 1 to a counter in shared memory I times, all starting together (a
/// start barrier). `none` is a plain load-add-store; `mutex` a robust process-shared
/// pthread mutex; `semaphore` a process-shared POSIX semaphore; `atomic` a fetch_add;
/// `partitioned` gives each worker its own slot (padded to a cache line, or not with
/// --no-padding) and sums at the end. Build with --release for meaningful times.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  shared_array\n  shared_array --lock none --iterations 10000000\n  \
                        shared_array --lock partitioned --no-padding\n  shared_array --lock mutex --kill-holder"
)]
struct Args {
    /// Worker processes (1-64).
    #[arg(long, value_name = "W", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,

    /// Additions per worker (1-100000000).
    #[arg(long, value_name = "I", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    iterations: u64,

    /// The strategy; `all` runs each in turn and prints one table.
    #[arg(long, value_enum, default_value_t = Lock::All)]
    lock: Lock,

    /// With partitioned: put the workers' slots side by side, in one cache line.
    #[arg(long)]
    no_padding: bool,

    /// With --lock mutex: kill one worker while it holds the mutex; the next locker
    /// recovers it (EOWNERDEAD).
    #[arg(long)]
    kill_holder: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum)]
enum Lock {
    None,
    Mutex,
    Semaphore,
    Atomic,
    Partitioned,
    All,
}

/// u64s per slot when padded: 8 × 8 bytes = one 64-byte cache line.
const LINE: usize = 8;

/// The start line and the atomic counter, shared by all the workers of one run.
#[derive(Default)]
struct Race {
    ready: AtomicU32,
    go: AtomicU32,
    atomic: AtomicU64,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if args.kill_holder && args.lock != Lock::Mutex {
        cli::usage_error("--kill-holder goes with --lock mutex");
    }
    if args.no_padding && args.lock != Lock::Partitioned {
        cli::usage_error("--no-padding goes with --lock partitioned (`all` runs both layouts)");
    }
    if args.kill_holder && args.workers < 2 {
        cli::usage_error("--kill-holder needs at least 2 workers: one to die, one to recover");
    }
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let runs: Vec<(Lock, bool)> = match args.lock {
        Lock::All => vec![
            (Lock::None, true),
            (Lock::Mutex, true),
            (Lock::Semaphore, true),
            (Lock::Atomic, true),
            (Lock::Partitioned, true),
            (Lock::Partitioned, false),
        ],
        one => vec![(one, !args.no_padding)],
    };
    event("header").say(format!(
        "{:<24} {:>7} {:>10} {:>12} {:>12} {:>10} {:>8} {:>12}",
        "lock", "workers", "iterations", "expected", "got", "lost", "seconds", "ops/s"
    ));
    let mut rows = Vec::new();
    for (lock, padded) in runs {
        rows.push(race(lock, padded, args)?);
        signals::bail_if_stopped()?;
    }
    let exact = rows.iter().filter(|row| row["lost"] == 0).count();
    let none_ran = rows.iter().any(|row| row["lock"] == "none");
    let note = if none_ran {
        "; `none` loses what two workers add at the same moment"
    } else {
        ""
    };
    event("summary").field("strategies", &rows).say(format!(
        "summary: {exact} of {} strategies exact{note}",
        rows.len()
    ));
    Ok(())
}

fn name(lock: Lock, padded: bool) -> &'static str {
    match (lock, padded) {
        (Lock::None, _) => "none",
        (Lock::Mutex, _) => "mutex",
        (Lock::Semaphore, _) => "semaphore",
        (Lock::Atomic, _) => "atomic",
        (Lock::Partitioned, true) => "partitioned",
        (Lock::Partitioned, false) => "partitioned --no-padding",
        (Lock::All, _) => "all",
    }
}

/// One run: W workers, one strategy. Returns the table row.
fn race(lock: Lock, padded: bool, args: &Args) -> anyhow::Result<serde_json::Value> {
    let (workers, iterations) = (args.workers, args.iterations);
    let stride = if padded { LINE } else { 1 };
    // ANCHOR: memory
    // SAFETY: all-zero bytes are valid atomics.
    let race: Shared<Race> = unsafe { Shared::zeroed()? };
    let locks = ProcessLocks::new().context("initialise the mutex and the semaphore")?;
    let counter = SharedArray::<AtomicU64>::zeroed(1)?; // one counter for all
    let slots = SharedArray::<AtomicU64>::zeroed(workers as usize * stride)?; // one per worker
    // ANCHOR_END: memory
    let parent = getpid();
    let mut pids = Vec::new();
    for worker in 0..workers {
        let doomed = args.kill_holder && worker == 0;
        // SAFETY: single-threaded here; the worker adds, and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("worker");
                if doomed {
                    hold_the_mutex_and_wait(&race, &locks)
                } else {
                    let slot = worker as usize * stride;
                    work(lock, iterations, &race, &locks, &counter, &slots, slot)
                }
            }),
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    // ANCHOR: start
    while race.ready.load(Ordering::Acquire) < workers {
        signals::bail_if_stopped()?;
        std::hint::spin_loop(); // wait until every worker stands at the start line
    }
    let start = Instant::now();
    race.go.store(1, Ordering::Release); // go: they all start adding at once
    // ANCHOR_END: start
    if args.kill_holder {
        kill_the_holder(pids[0])?;
    }
    let mut failed = Vec::new();
    for (index, &pid) in pids.iter().enumerate() {
        let status = child::wait_or_kill(pid)?;
        let killed_on_purpose = args.kill_holder && index == 0;
        if !killed_on_purpose && status != WaitStatus::Exited(pid, 0) {
            failed.push(format!("worker {pid} {}", child::describe(&status)));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    signals::bail_if_stopped()?; // interrupted: the count means nothing, print no row
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    // ANCHOR: count
    let got = match lock {
        Lock::Atomic => race.atomic.load(Ordering::Acquire),
        Lock::Partitioned => slots.as_slice().iter().step_by(stride).map(shm::load).sum(), // the parent sums
        _ => shm::load(&counter.as_slice()[0]),
    };
    // ANCHOR_END: count
    let surviving = if args.kill_holder {
        workers - 1
    } else {
        workers
    };
    let expected = u64::from(surviving) * iterations;
    let lost = expected.saturating_sub(got);
    let ops_per_s = got as f64 / seconds;
    let name = name(lock, padded);
    event("result")
        .field("lock", name)
        .field("expected", expected)
        .field("got", got)
        .field("lost", lost)
        .say(format!(
            "{name:<24} {workers:>7} {iterations:>10} {expected:>12} {got:>12} {lost:>10} {seconds:>8.4} {ops_per_s:>12.3e}"
        ));
    if lock == Lock::Partitioned && slots.len() <= 64 {
        let array = slots
            .as_slice()
            .iter()
            .step_by(stride)
            .map(shm::load)
            .collect::<Vec<_>>();
        event("array").field("slots", &array).say(format!(
            "the workers' slots, read through the array: {array:?}"
        ));
    }
    Ok(json!({
        "lock": name, "workers": workers, "iterations": iterations, "expected": expected,
        "got": got, "lost": lost, "seconds": seconds, "ops_per_s": ops_per_s,
    }))
}

/// A worker: stand at the start line, then add 1 `iterations` times with `lock`.
// ANCHOR: work
fn work(
    lock: Lock,
    iterations: u64,
    race: &Race,
    locks: &ProcessLocks,
    counter: &SharedArray<AtomicU64>,
    slots: &SharedArray<AtomicU64>,
    slot: usize,
) -> anyhow::Result<i32> {
    let (counter, slots) = (counter.atomics(), slots.atomics()); // this process's views
    race.ready.fetch_add(1, Ordering::AcqRel);
    while race.go.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    for _ in 0..iterations {
        match lock {
            Lock::None => {
                let value = shm::load(&counter[0]); // 1. load
                shm::store(&counter[0], value + 1); // 2. add, 3. store
            }
            Lock::Mutex => {
                if locks.lock()? == Locked::OwnerDied {
                    event("owner_died").say(
                        "pthread_mutex_lock -> EOWNERDEAD: its holder died; made it consistent",
                    );
                }
                let value = shm::load(&counter[0]);
                shm::store(&counter[0], value + 1);
                locks.unlock()?;
            }
            Lock::Semaphore => {
                locks.wait()?;
                let value = shm::load(&counter[0]);
                shm::store(&counter[0], value + 1);
                locks.post()?;
            }
            Lock::Atomic => {
                race.atomic.fetch_add(1, Ordering::Relaxed); // one indivisible instruction
            }
            Lock::Partitioned | Lock::All => {
                let value = shm::load(&slots[slot]); // my own slot: nobody else writes it
                shm::store(&slots[slot], value + 1);
            }
        }
    }
    Ok(0)
}
// ANCHOR_END: work

/// `--kill-holder`: this worker takes the mutex before the start, and waits to be killed.
// ANCHOR: kill_holder
fn hold_the_mutex_and_wait(race: &Race, locks: &ProcessLocks) -> anyhow::Result<i32> {
    locks.lock()?;
    event("holding").say("I hold the mutex, and I am about to die with it");
    race.ready.fetch_add(1, Ordering::AcqRel);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn kill_the_holder(holder: Pid) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(50)); // the others are now waiting for the lock
    event("killed").field("child", holder.as_raw()).say(format!(
        "kill({holder}, SIGKILL) while it holds the mutex: a plain mutex would stay locked for ever"
    ));
    kill(holder, Signal::SIGKILL).context("kill")
}
// ANCHOR_END: kill_holder
