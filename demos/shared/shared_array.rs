//! shared_array — one shared count, six ways: no lock, mutex, semaphore, atomic, partitioned.
//!
//! Demonstrates: `counter += 1` is a load, an add and a store, so processes adding to one
//! shared counter at once lose updates; a process-shared mutex, a semaphore or an atomic
//! instruction makes the count exact, each at its price; a counter per worker needs no lock
//! at all — if the counters do not share a cache line.
//! Run:     cargo run --bin shared_array            (--release for meaningful times)
//! Observe: `none` loses updates; every other strategy is exact; the costs differ.
//! Book:    book/src/shared/shared_array.md

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use nix::unistd::{ForkResult, fork, getpid};
use proclab::narrate::event;
use proclab::shm::{self, CountRow, ProcessLocks, ReapOnDrop, SharedArray, SharedValue};
use proclab::{child, cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// One run: W workers, one strategy. Returns the table row.
fn race(lock: Lock, args: &Args) -> Result<CountRow> {
    let (workers, iterations) = (args.workers, args.iterations);
    let stride = match lock {
        Lock::PartitionedNoPadding => 1, // side by side: eight slots share a cache line
        _ => 8,                          // one slot every 8 u64s = 64 bytes: a cache line each
    };
    // ANCHOR: race
    // SAFETY: all-zero bytes are valid atomics.
    let race: SharedValue<Race> = unsafe { SharedValue::zeroed()? };
    let slots = SharedArray::<AtomicU64>::zeroed(workers as usize * stride)?; // one per worker
    // SAFETY: every worker is reaped before the locks are destroyed: `_reaper`, declared
    // after them, is dropped before them on every way out of this function, and reaps.
    let locks = unsafe { ProcessLocks::new() }.context("initialise the mutex and semaphore")?;
    let _reaper = ReapOnDrop;
    let (parent, mut pids) = (getpid(), Vec::new());
    for worker in 0..workers as usize {
        // SAFETY: single-threaded here; the worker waits at the start line, adds with
        // `lock`, and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("worker");
                let own = &slots.as_slice()[worker * stride]; // this worker's slot
                work(lock, iterations, &race, &locks, own)
            }),
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    while race.ready.load(Ordering::Acquire) < workers {
        signals::bail_if_stopped()?;
        if let Some(status) = child::ended_already()? {
            anyhow::bail!("a worker {} before the start", child::describe(&status));
        }
        std::hint::spin_loop(); // wait until every worker stands at the start line
    }
    let start = std::time::Instant::now();
    race.go.store(1, Ordering::Release); // go: they all start adding at once
    shm::reap_workers(pids.len())?; // whichever ends first: a dead holder must not hang us
    let seconds = start.elapsed().as_secs_f64();
    let slot_values = Vec::from_iter(slots.as_slice().iter().step_by(stride).map(shm::load));
    let got = match lock {
        Lock::Partitioned | Lock::PartitionedNoPadding => slot_values.iter().sum(), // the parent sums
        _ => shm::load(&race.counter),
    };
    // ANCHOR_END: race
    let value = lock.to_possible_value().expect("no strategy is hidden");
    let (name, expected) = (value.get_name(), u64::from(workers) * iterations); // as on the command line
    let row = CountRow::new(name, (workers, iterations), expected, got, seconds);
    row.say_in_table();
    if matches!(lock, Lock::Partitioned | Lock::PartitionedNoPadding) && slots.len() <= 64 {
        let text = format!("the workers' slots, read through the array: {slot_values:?}");
        event("array").field("slots", &slot_values).say(text);
    }
    Ok(row)
}

// ANCHOR: work
/// A worker: stand at the start line, then add 1 `times` times with `lock`.
fn work(lock: Lock, times: u64, race: &Race, locks: &ProcessLocks, own: &AtomicU64) -> Result<i32> {
    race.ready.fetch_add(1, Ordering::AcqRel);
    while race.go.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop(); // until the parent says go
    }
    for _ in 0..times {
        match lock {
            Lock::None => load_add_store(&race.counter), // two workers may load the same value
            Lock::Mutex => {
                let _held = locks.lock()?; // held until `_held` is dropped, at the end of this arm
                load_add_store(&race.counter);
            }
            Lock::Semaphore => {
                locks.wait()?; // 1 -> 0: the others sleep in sem_wait
                load_add_store(&race.counter);
                locks.post()?; // 0 -> 1: one sleeper may pass
            }
            Lock::Atomic => _ = race.counter.fetch_add(1, Ordering::Relaxed), // one instruction
            _ => load_add_store(own), // this worker's own slot: nobody else writes it
        }
    }
    Ok(0)
}

/// `counter += 1` as the CPU does it: a plain load, an add in a register, a plain store.
fn load_add_store(counter: &AtomicU64) {
    let value = shm::load(counter); // 1. load
    shm::store(counter, value + 1); // 2. add, 3. store
}
// ANCHOR_END: work

/// Runs the strategies in turn: one row each, and the table in the summary.
fn run(args: &Args) -> Result<()> {
    let locks = match args.lock {
        Lock::All => &Lock::value_variants()[1..], // every strategy, in turn
        _ => std::slice::from_ref(&args.lock),
    };
    event("header").say(shm::TABLE_HEADER);
    let mut rows = Vec::new();
    for &lock in locks {
        rows.push(race(lock, args)?);
        signals::bail_if_stopped()?;
    }
    shm::say_table_summary(&rows); // how many exact, and what `none` lost
    Ok(())
}

/// The start line and the one counter, shared by all the workers of one run.
struct Race {
    ready: AtomicU32,
    go: AtomicU32,
    counter: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Lock {
    All,
    None,
    Mutex,
    Semaphore,
    Atomic,
    Partitioned,
    PartitionedNoPadding,
}

/// W worker processes add 1 to a shared counter I times each, with each kind of lock.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  shared_array\n  shared_array --lock none --iterations 5000000"
)]
struct Args {
    /// Worker processes (1-64).
    #[arg(long, value_name = "W", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,

    /// Additions per worker (1-100000000).
    #[arg(long, value_name = "I", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    iterations: u64,

    /// The strategy; `all` runs each in turn and prints one table.
    #[arg(long, value_enum, default_value_t = Lock::All)]
    lock: Lock,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
