//! sigchld — reaping children as they die, with a SIGCHLD handler and a loop.
//!
//! Demonstrates: the kernel sends SIGCHLD when a child ends, but signals of one kind do
//! not queue: several deaths while one SIGCHLD is pending make one signal. A parent that
//! reaps one child per signal leaves zombies; one that calls waitpid(-1, WNOHANG) until
//! nothing is left does not.
//! Run:     cargo run --bin sigchld -- --simultaneous --naive   (the bug, made certain)
//! Observe: one SIGCHLD for N deaths; the naive reaper leaves N-1 zombies in /proc.
//! Book:    book/src/lifecycle/sigchld.md

mod deaths; // plumbing: fork the children, count what is left after the reaping

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signal::{sigaction, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use proclab::inspect::running;
use proclab::narrate::event;
use proclab::{cli, lifecycle, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: handler
/// How many times the handler has run.
static SIGCHLD_CAUGHT: AtomicU64 = AtomicU64::new(0);

/// The handler: count the signal, wake the main loop — two async-signal-safe things, and
/// nothing else (no waitpid, no printing, no allocation: the loop does the work).
extern "C" fn on_sigchld(_signal: libc::c_int) {
    SIGCHLD_CAUGHT.fetch_add(1, Ordering::SeqCst);
    signals::wake_from_handler(); // one write(2) into the self-pipe; errno is kept
}
// ANCHOR_END: handler

fn run(args: &Args) -> anyhow::Result<()> {
    // Everything that decides how SIGCHLD is received must be in place before the first
    // child can die.
    // ANCHOR: sigaction
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld), // what runs when SIGCHLD is delivered
        SaFlags::SA_NOCLDSTOP,           // only for children that end, not stop; no SA_RESTART
        SigSet::empty(),                 // no other signal blocked while the handler runs
    );
    // SAFETY: on_sigchld does only async-signal-safe things (an atomic add, a write).
    unsafe { sigaction(Signal::SIGCHLD, &action) }.context("sigaction(SIGCHLD)")?;
    // ANCHOR_END: sigaction

    // ANCHOR: simultaneous
    let sigchld = SigSet::from(Signal::SIGCHLD);
    if args.simultaneous {
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigchld), None)?; // deaths only mark it pending
    }
    let children = deaths::fork_children(args.children, args.simultaneous)?;
    if args.simultaneous {
        deaths::wait_all_zombies(&children)?;
        sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&sigchld), None)?; // the handler runs once
        event("unblock").say("sigprocmask(SIG_UNBLOCK, SIGCHLD)");
    }
    // ANCHOR_END: simultaneous

    let (reaping, reaper) = match args.naive {
        false => (Reaping::UntilNoneLeft, "handler"),
        true => (Reaping::OnePerSignal, "naive"),
    };
    let (signals, count) = reap_on_signal(&children, reaping)?;
    let reaped = deaths::Reaped::new(reaper, signals, count).simultaneous(args.simultaneous);
    deaths::account(&children, reaped)
}

/// What the main loop does when the handler has counted new signals.
#[derive(Clone, Copy)]
enum Reaping {
    /// waitpid(-1, WNOHANG) until it says no child has ended: right.
    UntilNoneLeft,
    /// One waitpid per signal counted: the classic bug.
    OnePerSignal,
}

// ANCHOR: on_signal
/// Reaps at each wake-up until every child is reaped (naive: until all are dead); returns
/// the signals counted and the children reaped.
fn reap_on_signal(children: &[i32], reaping: Reaping) -> anyhow::Result<(u64, usize)> {
    let (mut counted, mut reaped) = (0, 0);
    loop {
        let caught = SIGCHLD_CAUGHT.load(Ordering::SeqCst);
        let new_signals = caught - counted;
        counted = caught;
        if new_signals > 0 {
            event("signal").field("count", caught).say(format!(
                "handler counted {new_signals} new SIGCHLD ({caught} so far); the loop wakes"
            ));
            let at_most = match reaping {
                Reaping::UntilNoneLeft => u64::MAX, // until waitpid says none has ended
                Reaping::OnePerSignal => new_signals, // the bug: one child per signal
            };
            for _ in 0..at_most {
                match reap_one()? {
                    true => reaped += 1,
                    false => break,
                }
            }
        }
        if reaped == children.len() || signals::stop_requested().is_some() {
            return Ok((counted, reaped));
        }
        if new_signals == 0 && !children.iter().any(|&pid| running(pid)) {
            return Ok((counted, reaped)); // all dead, some unreaped: no signal will come
        }
        signals::wait_readable(None, Duration::from_millis(100)); // until the handler wakes us
    }
}
// ANCHOR_END: on_signal

/// One `waitpid(-1, WNOHANG)`: reaps one child that has ended, if there is one.
// ANCHOR: reap_one
fn reap_one() -> anyhow::Result<bool> {
    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => Ok(false), // none ended / none left
        Ok(status) => {
            lifecycle::say_reaped_any(&status); // its pid and how it ended
            Ok(true)
        }
        Err(Errno::EINTR) => Ok(false),
        Err(error) => Err(error).context("waitpid(-1, WNOHANG)"),
    }
}
// ANCHOR_END: reap_one

/// Fork children that exit one after another, and reap them as SIGCHLD comes, in a loop.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  sigchld\n  sigchld --simultaneous --naive\n  \
                        sigchld --children 1000"
)]
struct Args {
    /// How many children (1-1000).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    children: u16,

    /// Block SIGCHLD, let every child exit (all zombies), then unblock: one signal, N deaths.
    #[arg(long)]
    simultaneous: bool,

    /// Reap one child per SIGCHLD (the bug), and keep the zombies it leaves 2 s to look.
    #[arg(long)]
    naive: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
