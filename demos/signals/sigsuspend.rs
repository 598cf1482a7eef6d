//! sigsuspend — the lost wake-up between checking a flag and pause(), and its fix.
//!
//! Demonstrates: a signal that arrives after the program checked its flag but before it
//! called pause() is handled at once, and pause() then sleeps until some other signal
//! comes; blocking the signal across the check and waiting with sigsuspend(), which
//! unblocks and sleeps in one step, cannot lose it.
//! Run:     cargo run --bin sigsuspend
//! Observe: pause() wakes only when the alarm rings; sigsuspend() returns at once.
//! Book:    book/src/signals/signals.md

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signal::{kill, sigaction, sigprocmask};
use nix::unistd::{alarm, getpid, pause};
use proclab::narrate::event;
use proclab::{cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

static GOT_SIGUSR1: AtomicBool = AtomicBool::new(false);
static GOT_SIGALRM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signo: libc::c_int) {
    let flag = if signo == libc::SIGUSR1 {
        &GOT_SIGUSR1
    } else {
        &GOT_SIGALRM
    };
    flag.store(true, Ordering::SeqCst); // one atomic store: async-signal-safe
}

fn run(args: &Args) -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGUSR1, Signal::SIGALRM] {
        // SAFETY: on_signal only stores into atomics, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("sigaction({signal})"))?;
    }
    let lost = Instant::now();
    // ANCHOR: lost
    if !GOT_SIGUSR1.load(Ordering::SeqCst) {
        // The window: the signal we wait for arrives right here (we send it ourselves, to
        // make the race certain). Its handler runs now and sets the flag, too late.
        kill(getpid(), Signal::SIGUSR1).context("kill(SIGUSR1)")?;
        alarm::set(args.alarm); // without it, pause() would sleep for ever
        event("pause").say(format!(
            "flag was false; SIGUSR1 came in the window; pause() (alarm in {} s)",
            args.alarm
        ));
        pause(); // sleeps until the next signal: SIGALRM, or Ctrl-C
    }
    // ANCHOR_END: lost
    signals::bail_if_stopped()?;
    let paused = woke("pause()", lost);

    GOT_SIGUSR1.store(false, Ordering::SeqCst);
    GOT_SIGALRM.store(false, Ordering::SeqCst);
    let fixed = Instant::now();
    // ANCHOR: fixed
    let usr1 = SigSet::from(Signal::SIGUSR1);
    let mut before = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&usr1), Some(&mut before))?; // now it can only be pending
    if !GOT_SIGUSR1.load(Ordering::SeqCst) {
        kill(getpid(), Signal::SIGUSR1).context("kill(SIGUSR1)")?; // the same window: it waits, pending
        alarm::set(args.alarm);
        event("sigsuspend")
            .say("flag was false; SIGUSR1 came in the window, blocked; sigsuspend(old mask)");
        let _ = before.suspend(); // unblock and sleep in one step: the pending SIGUSR1 ends it
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&before), None)?;
    // ANCHOR_END: fixed
    alarm::cancel();
    signals::bail_if_stopped()?;
    let suspended = woke("sigsuspend()", fixed);
    event("summary")
        .field("pause", paused)
        .field("sigsuspend", suspended)
        .say(format!(
            "summary: pause() woke by {} after {:.3} s; sigsuspend() by {} after {:.3} s",
            paused.0, paused.1, suspended.0, suspended.1
        ));
    Ok(())
}

/// Which signal ended the wait that began at `since`, and after how many seconds.
fn woke(call: &str, since: Instant) -> (&'static str, f64) {
    let by = match GOT_SIGALRM.load(Ordering::SeqCst) {
        true => "SIGALRM",
        false => "SIGUSR1",
    };
    let seconds = since.elapsed().as_secs_f64();
    event("woke")
        .field("by", by)
        .field("seconds", seconds)
        .say(format!(
            "{call} returned: woken by {by} after {seconds:.3} s"
        ));
    (by, seconds)
}

/// Wait for SIGUSR1 twice, with a signal made to arrive between the check of the flag
/// and the wait: pause() misses it and sleeps until an alarm rings; sigsuspend(), with
/// the signal blocked across the check, returns at once.
#[derive(Parser)]
#[command(after_help = "Examples:\n  sigsuspend\n  sigsuspend --alarm 10     # \
                        then: cat /proc/<pid>/wchan during the pause")]
struct Args {
    /// How long the lost wake-up may sleep before an alarm ends it (1-60 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=60))]
    alarm: u32,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
