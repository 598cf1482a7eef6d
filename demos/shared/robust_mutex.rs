//! robust_mutex — a process dies holding a mutex; the next one to lock it is told.
//!
//! Demonstrates: a process killed inside its critical section would leave an ordinary
//! mutex locked for ever; the kernel releases a PTHREAD_MUTEX_ROBUST one (it walks the
//! dead thread's robust list), the next pthread_mutex_lock returns EOWNERDEAD with the
//! mutex held, and pthread_mutex_consistent makes it usable again.
//! Run:     cargo run --bin robust_mutex
//! Observe: one worker sees EOWNERDEAD; the survivors' additions are all counted.
//! Book:    book/src/shared/shared_array.md

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, fork, getpid};
use proclab::narrate::event;
use proclab::shm::{self, SharedValue, pthread_result};
use proclab::{child, cli, inspect, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// What the processes share: the mutex, the plain counter it protects, and a flag.
#[repr(C)]
struct Counter {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    value: UnsafeCell<u64>, // touched only by the process that holds the mutex
    held: AtomicU32,        // 1 once the doomed worker holds the mutex
}

// SAFETY: the mutex is used only through pthread calls, which synchronise the processes;
// `value` is touched only with the mutex held; `held` is atomic.
unsafe impl Sync for Counter {}

// ANCHOR: init
/// Initialises the mutex in shared memory: process-shared, as in shared_mutex, and robust.
fn init_robust_mutex(counter: &Counter) -> anyhow::Result<()> {
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    let attr = attr.as_mut_ptr();
    // SAFETY: `attr` points to our stack: init fills it in, the next two calls change it.
    // The mutex lies in the fresh shared mapping, which no child has yet, and is
    // initialised once; it keeps no reference to `attr`, destroyed after.
    unsafe {
        pthread_result(libc::pthread_mutexattr_init(attr)).context("pthread_mutexattr_init")?;
        pthread_result(libc::pthread_mutexattr_setpshared(
            attr,                         // the attributes being prepared
            libc::PTHREAD_PROCESS_SHARED, // any process that maps the mutex may use it
        ))
        .context("pthread_mutexattr_setpshared")?;
        pthread_result(libc::pthread_mutexattr_setrobust(
            attr,                       // the same attributes
            libc::PTHREAD_MUTEX_ROBUST, // if its owner dies, the next locker gets EOWNERDEAD
        ))
        .context("pthread_mutexattr_setrobust")?;
        pthread_result(libc::pthread_mutex_init(counter.mutex.get(), attr))
            .context("pthread_mutex_init")?;
        libc::pthread_mutexattr_destroy(attr);
    }
    Ok(())
}
// ANCHOR_END: init

fn run(args: &Args) -> anyhow::Result<()> {
    // SAFETY: all-zero bytes are a valid u64 and AtomicU32; the mutex is initialised next.
    let counter: SharedValue<Counter> = unsafe { SharedValue::zeroed() }.context("mmap")?;
    init_robust_mutex(&counter)?;
    let parent = getpid();
    let mut pids = Vec::new();
    for worker in 0..args.workers {
        // SAFETY: single-threaded here; worker 0 locks the mutex, says so and sleeps until it
        // is killed; the others lock (recovering the mutex if its holder died), add and
        // unlock I times, and call _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("worker");
                match worker {
                    0 => hold_the_mutex_and_wait(&counter),
                    _ => add_and_recover(&counter, args.iterations),
                }
            }),
            ForkResult::Parent { child } => pids.push(child),
        }
        while counter.held.load(Ordering::Acquire) == 0 {
            signals::bail_if_stopped()?; // (the others are forked once the holder holds it)
            anyhow::ensure!(inspect::running(pids[0].as_raw()), "the holder ended early");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (start, holder) = (Instant::now(), pids[0]);
    // ANCHOR: kill
    std::thread::sleep(Duration::from_millis(50)); // the others are now waiting for the lock
    event("killed").field("child", holder.as_raw()).say(format!(
        "kill({holder}, SIGKILL) while it holds the mutex: a plain mutex would stay locked for ever"
    ));
    kill(holder, Signal::SIGKILL).context("kill")?; // the kernel releases its robust mutexes
    // ANCHOR_END: kill
    for pid in pids {
        let status = child::wait_or_kill(pid)?;
        signals::bail_if_stopped()?; // interrupted: the count means nothing, print no row
        let killed = status == WaitStatus::Signaled(pid, Signal::SIGKILL, false);
        if !(pid == holder && killed) && status != WaitStatus::Exited(pid, 0) {
            bail!("worker {pid} {}", child::describe(&status));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // SAFETY: every worker is reaped: nobody else uses the counter or the mutex now.
    let got = unsafe { *counter.value.get() };
    // SAFETY: initialised, unlocked by its last holder, and no process waits for it.
    unsafe { libc::pthread_mutex_destroy(counter.mutex.get()) };
    shm::say_robust_summary(args.workers, args.iterations, got, seconds); // (W - 1) × I
    Ok(())
}

// ANCHOR: hold
/// The doomed worker: takes the mutex and never gives it back.
fn hold_the_mutex_and_wait(counter: &Counter) -> anyhow::Result<i32> {
    // SAFETY: initialised before the fork; it lives until every worker is reaped.
    pthread_result(unsafe { libc::pthread_mutex_lock(counter.mutex.get()) })
        .context("pthread_mutex_lock")?;
    event("holding").say("I hold the mutex, and I am about to die with it");
    counter.held.store(1, Ordering::Release);
    loop {
        std::thread::sleep(Duration::from_secs(1)); // inside the critical section, for ever
    }
}
// ANCHOR_END: hold

// ANCHOR: recover
/// A surviving worker: `counter += 1`, `iterations` times, under the mutex.
fn add_and_recover(counter: &Counter, iterations: u64) -> anyhow::Result<i32> {
    for _ in 0..iterations {
        // SAFETY: initialised before the fork; it lives until every worker is reaped.
        match unsafe { libc::pthread_mutex_lock(counter.mutex.get()) } {
            0 => {}
            libc::EOWNERDEAD => {
                // We hold the mutex, but its holder died in its critical section: what it
                // protects may be half-updated (here the holder never touched it). Unless
                // we say it is consistent, unlocking makes it unusable (ENOTRECOVERABLE).
                // SAFETY: EOWNERDEAD means this process now holds the mutex.
                let result = unsafe { libc::pthread_mutex_consistent(counter.mutex.get()) };
                pthread_result(result).context("pthread_mutex_consistent")?;
                event("owner_died")
                    .say("pthread_mutex_lock -> EOWNERDEAD: its holder died; made it consistent");
            }
            error => pthread_result(error).context("pthread_mutex_lock")?,
        }
        // SAFETY: this process holds the mutex: no other process touches the value now.
        unsafe { *counter.value.get() += 1 };
        // SAFETY: this process holds the mutex (locked just above).
        pthread_result(unsafe { libc::pthread_mutex_unlock(counter.mutex.get()) })
            .context("pthread_mutex_unlock")?;
    }
    Ok(0)
}
// ANCHOR_END: recover

/// A worker dies holding a robust mutex; the next to lock it gets EOWNERDEAD and recovers it.
#[derive(Parser)]
#[command(after_help = "Examples:\n  robust_mutex\n  robust_mutex --workers 2 --iterations 1000")]
struct Args {
    /// Worker processes, the one that dies included (2-64).
    #[arg(long, value_name = "W", default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    workers: u32,

    /// Additions per surviving worker (1-100000000).
    #[arg(long, value_name = "I", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    iterations: u64,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
