//! handler_unsafe — a handler that calls malloc hangs the process it interrupts.
//!
//! Demonstrates: glibc's malloc holds a lock that is not re-entrant; a handler that
//! allocates, run while the main flow is inside malloc, waits for ever for a lock its own
//! thread holds (the kernel shows it asleep on a futex, using no CPU, SIGUSR1 blocked). A
//! handler that only adds to an atomic, leaving the work to the main flow, survives.
//! Run:     cargo run --bin handler_unsafe
//! Observe: the first child stops counting, asleep in futex_wait; the second goes on.
//! Book:    book/src/signals/signals.md

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
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

/// Above the per-thread cache's sizes, below mmap's: malloc and free take the arena lock.
const BUFFER: usize = 64 * 1024;
/// How long each child loops (and the parent sends signals), unless it hangs.
const STORM: Duration = Duration::from_secs(1);

// ANCHOR: handlers
/// The bug: malloc in a handler. If the signal came while the main flow was inside
/// malloc or free, the arena's lock is held — by this thread, which now waits for it.
extern "C" fn allocate(_signo: libc::c_int) {
    black_box(vec![0u8; BUFFER]); // calloc, then free: both take the arena's lock
}

/// Requests counted by the safe handler, taken by the main flow.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// The fix: one atomic add, which is async-signal-safe; the main flow does the work.
extern "C" fn count(_signo: libc::c_int) {
    REQUESTS.fetch_add(1, SeqCst);
}
// ANCHOR_END: handlers

fn run(args: &Args) -> anyhow::Result<()> {
    let parent = getpid();
    let mut hung = Vec::new();
    for handler in [allocate as extern "C" fn(_), count] {
        // SAFETY: single-threaded here; the child starts and joins one thread, installs
        // a handler, allocates in a loop for a second, narrates, and calls _exit.
        let child = match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || allocate_in_loop(handler)),
            ForkResult::Parent { child } => child,
        };
        hung.push(storm(child, args.hold)?);
    }
    event("summary").field("hung", &hung).say(format!(
        "summary: the handler that allocates hung: {}; the one that counts: {}",
        hung[0], hung[1]
    ));
    Ok(())
}

// ANCHOR: child
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
        let requests = REQUESTS.swap(0, SeqCst);
        if requests > 0 {
            black_box(vec![0u8; BUFFER]); // the handler's work, done here, safely
            handled += requests;
        }
    }
    event("survived").field("handled", handled).say(format!(
        "survived {STORM:?} of signals; the main flow did the work of {handled}"
    ));
    Ok(0)
}
// ANCHOR_END: child

// ANCHOR: storm
/// Sends SIGUSR1 every 100 µs or so until the child ends, and every 50 signals looks at
/// it from outside. Returns whether it hung: no CPU time used, asleep on a futex.
fn storm(child: Pid, hold: Duration) -> anyhow::Result<bool> {
    let pid = child.as_raw();
    let caught =
        || sigstate::signal_sets(pid).is_ok_and(|s| sigstate::contains(s.caught, libc::SIGUSR1));
    sigstate::wait_until(caught, "the child has its handler")?; // SigCgt has SIGUSR1
    event("storm")
        .field("child", pid)
        .say(format!("kill({child}, SIGUSR1) every 100 µs"));
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
        let (state, wchan) = (inspect::inspect(pid)?.state, inspect::wchan(pid));
        let in_handler = sigstate::contains(sigstate::signal_sets(pid)?.blocked, libc::SIGUSR1);
        event("hung")
            .fields(json!({"state": state.to_string(), "wchan": wchan,
                "sigusr1_blocked": in_handler, "sent": sent}))
            .say(format!(
                "no progress after {sent} signals: kernel says {state} ({}) in {}, \
                 SIGUSR1 blocked: {in_handler}",
                inspect::state_word(state),
                wchan.unwrap_or_default()
            ));
        signals::sleep(hold); // time to look: cat /proc/<child>/wchan
        kill(child, Signal::SIGKILL).context("kill(SIGKILL)")?; // nothing else ends it
    }
    let ended = child::describe(&child::wait_or_kill(child)?);
    event("reaped")
        .field("status", &ended)
        .say(format!("waitpid({child}) -> {ended}"));
    anyhow::ensure!(hung || ended.ends_with("status 0"), "{child} {ended}");
    Ok(hung)
}
// ANCHOR_END: storm

/// Fork a child that allocates in a loop and send it SIGUSR1 as fast as possible, twice:
/// its handler allocates (it soon hangs: the parent sees it asleep on a futex, kills and
/// reaps it), then its handler only counts (it survives a second of signals).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  handler_unsafe\n  handler_unsafe --hold 10     \
                        # then: cat /proc/<child>/wchan"
)]
struct Args {
    /// How long the hung child is left hanging before it is killed (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0",
          value_parser = cli::seconds_up_to(60.0))]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
