//! handler_unsafe — a handler that calls malloc hangs the process it interrupts.
//!
//! Demonstrates: a handler that allocates, run while the main flow is inside malloc, waits
//! for ever for the lock (glibc's arena mutex, not re-entrant) its own thread holds: the
//! kernel shows it asleep on a futex, SIGUSR1 blocked, no CPU used. A handler that only
//! adds to an atomic, leaving the work to the main flow, survives the same signals.
//! Run:     cargo run --bin handler_unsafe
//! Observe: the first child stops counting, asleep in futex_wait; the second goes on.
//! Book:    book/src/signals/signals.md

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use libc::SIGUSR1;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::narrate::event;
use proclab::{child, cli, inspect, narrate, signals, sigstate};
use serde_json::json;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let parent = getpid();
    let (mut hung, mut sent) = (Vec::new(), Vec::new());
    for (name, handler) in [("allocate", allocate as extern "C" fn(_)), ("count", count)] {
        // SAFETY: single-threaded here; the child starts and joins one thread, installs
        // a handler, allocates in a loop for a second, narrates, and calls _exit.
        let child = match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || allocate_in_loop(handler)),
            ForkResult::Parent { child } => child,
        };
        let (stuck, signals) = storm(child, name, args.hold)?;
        hung.push(stuck);
        sent.push(signals);
    }
    let [allocating, counting] = [hung[0], hung[1]];
    let text = format!("summary: hung with allocate: {allocating}; with count: {counting}");
    event("summary")
        .fields(json!({"hung": hung, "sent": sent}))
        .say(text);
    Ok(())
}

/// Above the per-thread cache's sizes, below mmap's: malloc and free take the arena lock.
const BUFFER: usize = 64 * 1024;
const STORM: Duration = Duration::from_secs(1); // how long each child loops, unless it hangs

// ANCHOR: child
/// The bug: malloc in a handler. If the signal came while the main flow was inside
/// malloc or free, the arena's lock is held — by this thread, which now waits for it.
extern "C" fn allocate(_signo: libc::c_int) {
    black_box(vec![0u8; BUFFER]); // calloc, then free: both take the arena's lock
}

static REQUESTS: AtomicU64 = AtomicU64::new(0); // counted by `count`, taken by the main flow

/// The fix: one atomic add, which is async-signal-safe; the main flow does the work.
extern "C" fn count(_signo: libc::c_int) {
    REQUESTS.fetch_add(1, SeqCst);
}

fn allocate_in_loop(handler: extern "C" fn(libc::c_int)) -> anyhow::Result<i32> {
    narrate::set_role("child");
    // glibc's malloc skips its lock while a process has only ever had one thread; after
    // a second thread (most real programs have one) it always locks.
    let _ = std::thread::spawn(|| ()).join();
    let action = SigAction::new(
        SigHandler::Handler(handler), // run it on each SIGUSR1
        SaFlags::SA_RESTART,          // (the loop makes no system call anyway)
        SigSet::empty(),              // block nothing more than SIGUSR1 while it runs
    );
    // SAFETY: `count` is async-signal-safe; `allocate` is not — that is the lesson, and
    // the parent kills this child when it hangs.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.context("sigaction(SIGUSR1)")?;
    let (deadline, mut handled) = (Instant::now() + STORM, 0);
    while Instant::now() < deadline {
        black_box(Vec::<u8>::with_capacity(BUFFER)); // malloc and free: the lock, often
        if REQUESTS.swap(0, SeqCst) > 0 {
            black_box(vec![0u8; BUFFER]); // the handler's work, done here, safely
            handled += 1;
        }
    }
    let text = format!("survived {STORM:?} of signals; did the handler's work {handled} times");
    event("survived").field("handled", handled).say(text);
    Ok(0)
}
// ANCHOR_END: child

// ANCHOR: storm
/// Sends SIGUSR1 every 100 µs or so until the child ends, and every 50 signals looks at
/// it from outside. Returns whether it hung (no CPU time used, asleep on a futex), and how
/// many signals the kernel took (kill returned 0).
fn storm(child: Pid, handler: &str, hold: Duration) -> anyhow::Result<(bool, u64)> {
    let pid = child.as_raw();
    let caught = || sigstate::signal_sets(pid).is_ok_and(|s| sigstate::contains(s.caught, SIGUSR1));
    sigstate::wait_until(|| caught() || !inspect::running(pid), "its handler")?; // in SigCgt
    let text = format!("child {child} (handler: {handler}): kill(SIGUSR1) every 100 µs");
    event("storm").field("child", pid).say(text);
    let (mut sent, mut cpu_ns) = (0u64, 0);
    let hung = loop {
        signals::bail_if_stopped()?;
        kill(child, Signal::SIGUSR1).context("kill(SIGUSR1)")?;
        sent += 1;
        std::thread::sleep(Duration::from_micros(100));
        if sent % 50 == 0 {
            let before = std::mem::replace(&mut cpu_ns, inspect::cpu_ns(pid).unwrap_or(0));
            let stuck = cpu_ns == before && sigstate::asleep_in(pid, "futex");
            if stuck || !inspect::running(pid) {
                break stuck;
            }
        }
    };
    if hung {
        let state = inspect::inspect(pid)?.state_in_words(); // "S (sleeping)"
        let wchan = inspect::wchan(pid).unwrap_or_default();
        let blocked = sigstate::contains(sigstate::signal_sets(pid)?.blocked, SIGUSR1);
        let text = format!("no progress after {sent} signals: kernel says {state} in {wchan}");
        event("hung")
            .fields(json!({"state": state, "wchan": wchan, "sigusr1_blocked": blocked}))
            .say(format!("{text}, SIGUSR1 blocked: {blocked}"));
        signals::sleep(hold); // time to look: cat /proc/<child>/wchan
        kill(child, Signal::SIGKILL).context("kill(SIGKILL)")?; // nothing else ends it
    }
    let ended = child::describe(&child::wait_or_kill(child)?);
    let text = format!("waitpid({child}) -> {ended}; {sent} x kill(SIGUSR1) sent to it");
    event("reaped")
        .fields(json!({"status": ended, "sent": sent}))
        .say(text);
    anyhow::ensure!(hung || ended.ends_with("status 0"), "{child} {ended}");
    Ok((hung, sent))
}
// ANCHOR_END: storm

/// Fork a child that allocates in a loop and send it SIGUSR1 as fast as possible, twice:
/// with a handler that allocates (it hangs; it is killed), then one that counts.
#[derive(Parser)]
#[command(after_help = "Examples:\n  handler_unsafe\n  handler_unsafe --hold 10  # look in /proc")]
struct Args {
    /// How long the hung child is left hanging before it is killed (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0",
          value_parser = cli::seconds_up_to(60.0))]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
