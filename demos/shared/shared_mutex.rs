//! shared_mutex — one pthread mutex, used by several processes.
//!
//! Demonstrates: a mutex works across fork only if it lies in memory mapped MAP_SHARED
//! (private memory is copied, and each process would lock its own copy) and is
//! initialised PTHREAD_PROCESS_SHARED; then W processes that add to one plain counter
//! under it lose no addition, while the kernel puts the waiting ones to sleep (futex).
//! Run:     cargo run --bin shared_mutex            (--release for meaningful times)
//! Observe: got = expected: W × I additions, none lost.
//! Book:    book/src/shared/shared_array.md

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use nix::errno::Errno;
use nix::unistd::{ForkResult, fork, getpid};
use proclab::narrate::event;
use proclab::shm::{self, pthread_result};
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// What the processes share: the mutex and the plain counter it protects.
#[repr(C)]
struct Counter {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    value: UnsafeCell<u64>, // touched only by the process that holds the mutex
}

// ANCHOR: map
fn run(args: &Args) -> anyhow::Result<()> {
    // Before the fork: a mapping the children will share, not copy.
    // SAFETY: a new anonymous mapping; it replaces nothing (the kernel picks the address).
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),                   // any address
            size_of::<Counter>(),                   // room for the mutex and the counter
            libc::PROT_READ | libc::PROT_WRITE,     // readable and writable
            libc::MAP_SHARED | libc::MAP_ANONYMOUS, // shared with children; no file behind it
            -1,                                     // no file descriptor (anonymous)
            0,                                      // no offset
        )
    };
    if memory == libc::MAP_FAILED {
        bail!("mmap: {}", Errno::last());
    }
    // SAFETY: the mapping is page aligned, big enough, and zero-filled; a zeroed u64 is 0,
    // and the mutex is initialised below before any use.
    let counter: &Counter = unsafe { &*memory.cast::<Counter>() };
    // ANCHOR_END: map
    init_process_shared_mutex(counter)?;
    event("mutex").say("pthread_mutex_init(PTHREAD_PROCESS_SHARED) in a MAP_SHARED mapping");
    // ANCHOR: fork
    let (parent, start, mut pids) = (getpid(), Instant::now(), Vec::new());
    for _ in 0..args.workers {
        // SAFETY: single-threaded here; the worker locks, adds, unlocks I times; calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                child::run_then_exit(parent, || add_under_the_mutex(counter, args.iterations))
            }
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    // Every worker is reaped before the mutex is destroyed. (An early return destroys
    // nothing: the mapping goes with this process, and cli::run_stoppable reaps.)
    shm::reap_workers(pids.len())?; // whichever ends first; an error unless each exited 0
    let seconds = start.elapsed().as_secs_f64();
    // SAFETY: every worker is reaped: nobody else uses the counter or the mutex now.
    let got = unsafe { *counter.value.get() };
    // SAFETY: initialised, unlocked (every holder unlocked it), and no process waits on it.
    unsafe { libc::pthread_mutex_destroy(counter.mutex.get()) };
    // SAFETY: the mapping made above; `counter` is not used after this.
    unsafe { libc::munmap(memory, size_of::<Counter>()) };
    // ANCHOR_END: fork
    shm::say_mutex_summary(args.workers, args.iterations, got, seconds);
    Ok(())
}

// ANCHOR: init
/// Initialises the mutex in shared memory for use by several processes.
fn init_process_shared_mutex(counter: &Counter) -> anyhow::Result<()> {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is ours, on this stack; pthread_mutexattr_init fills it in.
    pthread_result(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })
        .context("pthread_mutexattr_init")?;
    // SAFETY: `attr` was initialised just above.
    let result = unsafe {
        libc::pthread_mutexattr_setpshared(
            attr.as_mut_ptr(),            // the attributes being prepared
            libc::PTHREAD_PROCESS_SHARED, // any process that maps the mutex may use it
        )
    };
    pthread_result(result).context("pthread_mutexattr_setpshared")?;
    // SAFETY: the mutex lies in the fresh mapping, which no child has yet (this runs before
    // the first fork), and is initialised once; `attr` is initialised.
    let result = unsafe {
        libc::pthread_mutex_init(
            counter.mutex.get(), // in the MAP_SHARED mapping: the children see this very mutex
            attr.as_ptr(),       // process-shared
        )
    };
    pthread_result(result).context("pthread_mutex_init")?;
    // SAFETY: `attr` is initialised; the mutex keeps no reference to it.
    unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
    Ok(())
}
// ANCHOR_END: init

// ANCHOR: add
/// A worker: `counter += 1`, `iterations` times, each time holding the mutex.
fn add_under_the_mutex(counter: &Counter, iterations: u64) -> anyhow::Result<i32> {
    narrate::set_role("worker");
    for _ in 0..iterations {
        // SAFETY: initialised before the fork; it lives until every worker is reaped.
        pthread_result(unsafe { libc::pthread_mutex_lock(counter.mutex.get()) })
            .context("pthread_mutex_lock")?;
        // SAFETY: this process holds the mutex: no other process touches the value now.
        unsafe { *counter.value.get() += 1 }; // load, add, store: safe only under the lock
        // SAFETY: this process holds the mutex (locked just above).
        pthread_result(unsafe { libc::pthread_mutex_unlock(counter.mutex.get()) })
            .context("pthread_mutex_unlock")?;
    }
    Ok(0)
}
// ANCHOR_END: add

/// W processes add 1 to one shared counter I times each, under a PTHREAD_PROCESS_SHARED mutex.
#[derive(Parser)]
#[command(after_help = "Examples:\n  shared_mutex\n  shared_mutex --workers 8 --iterations 100000")]
struct Args {
    /// Worker processes (1-64).
    #[arg(long, value_name = "W", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,

    /// Additions per worker (1-100000000).
    #[arg(long, value_name = "I", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    iterations: u64,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
