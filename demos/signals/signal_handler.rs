//! signal_handler — a handler that only sets a flag, and what it does to a blocking read.
//!
//! Demonstrates: when a signal is caught while the process sleeps in read(2), the kernel
//! runs the handler and then either fails the read with EINTR (sigaction without
//! SA_RESTART) or restarts it transparently (with SA_RESTART); the handler itself only
//! sets an atomic flag.
//! Run:     cargo run --bin signal_handler
//! Observe: the same read, the same signal: EINTR the first time, a byte the second.
//! Book:    book/src/signals/signals.md

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe, read, write};
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals, sigstate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: handler
/// Set by the handler, read by the main flow.
static GOT_SIGUSR1: AtomicBool = AtomicBool::new(false);

/// The handler: one atomic store, which is async-signal-safe, and nothing else.
extern "C" fn on_sigusr1(_signal: libc::c_int) {
    GOT_SIGUSR1.store(true, Ordering::SeqCst);
}
// ANCHOR_END: handler

fn run(args: &Args) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    for flags in [SaFlags::empty(), SaFlags::SA_RESTART] {
        // ANCHOR: sigaction
        let action = SigAction::new(
            SigHandler::Handler(on_sigusr1), // run on_sigusr1 when SIGUSR1 is delivered
            flags,                           // SA_RESTART or not: the one difference
            SigSet::empty(),                 // block nothing more while it runs
        );
        // SAFETY: on_sigusr1 only stores into an atomic, which is async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.context("sigaction(SIGUSR1)")?;
        // ANCHOR_END: sigaction
        let restart = flags.contains(SaFlags::SA_RESTART);
        let name = if restart {
            "SA_RESTART"
        } else {
            "no SA_RESTART"
        };
        event("sigaction")
            .field("sa_restart", restart)
            .say(format!("sigaction(SIGUSR1, on_sigusr1, {name})"));
        outcomes.push(read_while_signalled(args.delay)?);
        GOT_SIGUSR1.store(false, Ordering::SeqCst);
    }
    event("summary")
        .field("without_restart", &outcomes[0])
        .field("with_restart", &outcomes[1])
        .say(format!(
            "summary: without SA_RESTART read -> {}; with SA_RESTART read -> {}",
            outcomes[0], outcomes[1]
        ));
    Ok(())
}

// ANCHOR: read
/// Reads one byte from a pipe while a child sends SIGUSR1 and, later, writes the byte;
/// returns what the first read returned ("EINTR" or "1 byte").
fn read_while_signalled(delay: Duration) -> anyhow::Result<String> {
    let (read_end, write_end) = pipe().context("pipe")?;
    let sender = fork_sender(write_end, delay)?;
    let mut byte = [0u8; 1];
    event("read").say("read(pipe) blocks: the pipe is empty");
    let first = match read(read_end.as_fd(), &mut byte) {
        Err(Errno::EINTR) => "EINTR".to_owned(), // the handler ran; read gave up
        Ok(count) => format!("{count} byte"),    // the handler ran; read went on
        Err(error) => return Err(error).context("read(pipe)"),
    };
    signals::bail_if_stopped()?; // that EINTR was Ctrl-C's, not SIGUSR1's
    let flag = GOT_SIGUSR1.load(Ordering::SeqCst);
    event("returned")
        .field("read", &first)
        .field("flag", flag)
        .say(format!("read -> {first}; the handler's flag is {flag}"));
    if first == "EINTR" {
        let count = read(read_end.as_fd(), &mut byte).context("read(pipe) again")?;
        event("read_again").say(format!("read again -> {count} byte: the data came later"));
    }
    child::wait_or_kill(sender)?;
    Ok(first)
}
// ANCHOR_END: read

/// Forks the child that waits until the parent sleeps in read (it reads /proc), sends
/// SIGUSR1, waits until the parent took it and sleeps in read again, then writes a byte.
fn fork_sender(write_end: OwnedFd, delay: Duration) -> anyhow::Result<Pid> {
    let parent = getpid();
    // SAFETY: single-threaded here; the child reads /proc (which allocates), narrates,
    // calls kill and write, and calls _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("child");
            let asleep_in_read = || sigstate::asleep_in(parent.as_raw(), "pipe_read");
            sigstate::wait_until(asleep_in_read, "the parent sleeps in read")?;
            std::thread::sleep(delay); // time to look: grep Sig /proc/<parent>/status
            kill(parent, Signal::SIGUSR1).context("kill(SIGUSR1)")?;
            event("kill").say(format!("parent asleep in read; kill({parent}, SIGUSR1)"));
            let taken = || !sigstate::pending(parent.as_raw(), libc::SIGUSR1) && asleep_in_read();
            sigstate::wait_until(taken, "the parent took SIGUSR1 and reads again")?;
            write(&write_end, b"x").context("write(pipe)")?;
            event("write").say("write(pipe, 1 byte)");
            Ok(0)
        }),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Block in read(2) on an empty pipe while a child sends SIGUSR1, twice: first with a
/// handler installed without SA_RESTART (read fails with EINTR), then with SA_RESTART
/// (read goes on and returns the byte the child writes afterwards).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  signal_handler\n  signal_handler --delay 10   # \
                        then: grep Sig /proc/<parent>/status"
)]
struct Args {
    /// How long the child waits, once the parent sleeps in read, before it signals (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0.1",
          value_parser = cli::seconds_up_to(60.0))]
    delay: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
