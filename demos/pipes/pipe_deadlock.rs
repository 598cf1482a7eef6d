//! pipe_deadlock — both sides write first: two processes asleep for ever in write().
//!
//! Demonstrates: a pipe holds 64 KiB; when two processes each write more than that to the
//! other before reading anything, each write() sleeps until the other reads, and neither
//! ever will. /proc shows both in state S, in the kernel's pipe write function.
//! Run:     cargo run --bin pipe_deadlock       (add --watchdog 30 to look with ps)
//! Observe: the watchdog sees both sides asleep in pipe_write, then kills and reaps them.
//! Book:    book/src/pipes/duplex.md

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, fork, getpid, pipe};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::{child, cli, narrate, pipes, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let size = args.message as usize;
    // ANCHOR: sides
    let (left_reads, right_writes) = pipe().context("pipe")?; // from right to left
    let (right_reads, left_writes) = pipe().context("pipe")?; // from left to right
    let demo = getpid();
    // SAFETY: single-threaded here, so the child may allocate; it prints a line, writes its
    // message into one pipe (it would then read the other) and calls _exit.
    let left = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(demo, || {
            drop((right_reads, right_writes)); // only my own ends
            write_then_read("left", "right", &left_writes, &left_reads, size)
        }),
        ForkResult::Parent { child } => child,
    };
    drop((left_reads, left_writes)); // the right side will not inherit them
    // SAFETY: single-threaded here, so the child may allocate; it prints a line, writes its
    // message into one pipe (it would then read the other) and calls _exit.
    let right = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(demo, || {
            write_then_read("right", "left", &right_writes, &right_reads, size)
        }),
        ForkResult::Parent { child } => child,
    };
    drop((right_reads, right_writes)); // the demo only watches
    // ANCHOR_END: sides
    // ANCHOR: watch
    let sides = [("left", left), ("right", right)];
    event("watch").say(format!(
        "watchdog: are both asleep in write() for {:?}?",
        args.watchdog
    ));
    let asleep = pipes::watch_for_deadlock(&sides, args.watchdog)?; // reads /proc
    // Stop both first: a side that saw the other die would wake with EPIPE and complain.
    for signal in [Signal::SIGSTOP, Signal::SIGKILL] {
        for &(_, pid) in &sides {
            let _ = kill(pid, signal); // SIGKILL: the only way out of this write
        }
    }
    // ANCHOR_END: watch
    for &(name, pid) in &sides {
        let status = child::wait_or_kill(pid)?;
        event("reap")
            .field("child", pid.as_raw())
            .fields(child::ending(&status))
            .say(format!("the {name} side: {}", child::describe(&status)));
    }
    event("summary")
        .field("deadlock_detected", asleep.is_some())
        .field("wchan", asleep.clone().unwrap_or_default())
        .field("message_bytes", size)
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(if asleep.is_some() {
            "summary: each side waited for the other to read: a deadlock. Avoid it with poll() and \
             non-blocking writes, a thread (or process) per direction, or a protocol that never has \
             both sides writing more than the pipe holds"
        } else {
            "summary: no deadlock was confirmed (interrupted, or a side got past its write)"
        });
    Ok(())
}

/// One side: write the whole message, then read the other's.
// ANCHOR: write_then_read
fn write_then_read(
    me: &'static str,
    other: &str,
    write_end: &OwnedFd,
    read_end: &OwnedFd,
    size: usize,
) -> anyhow::Result<i32> {
    narrate::set_role(me);
    event("write").say(format!("writing {size} bytes to {other}, then I will read"));
    write_all(write_end, &vec![b'x'; size])?; // sleeps once the pipe is full
    event("read").say("my write is done; reading"); // never reached
    read_exact(read_end, &mut vec![0u8; size])?;
    Ok(0)
}
// ANCHOR_END: write_then_read

/// Two processes, two pipes, and both write first: a deadlock, which a watchdog ends.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  pipe_deadlock\n  pipe_deadlock --watchdog 30    # \
                        then look: cat /proc/$(pgrep -n pipe_deadlock)/wchan"
)]
struct Args {
    /// The size of each side's message (65537-16777216 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u64).range(65_537..=16_777_216))]
    message: u64,

    /// How long both must sleep in write() to call it a deadlock (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = cli::seconds_up_to(60.0))]
    watchdog: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
