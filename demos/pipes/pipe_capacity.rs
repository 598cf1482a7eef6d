//! pipe_capacity — how much a pipe holds, and what happens to a writer when it is full.
//!
//! Demonstrates: the kernel buffers 64 KiB in a pipe by default (F_GETPIPE_SZ);
//! F_SETPIPE_SZ resizes it, up to /proc/sys/fs/pipe-max-size; on a full pipe a
//! non-blocking write fails with EAGAIN and a blocking one puts its writer to sleep in the
//! kernel (pipe_write) until the reader makes room.
//! Run:     cargo run --bin pipe_capacity     (add --resize 1048576)
//! Observe: 65536 bytes, as F_GETPIPE_SZ says; the writer in state S, in pipe_write.
//! Book:    book/src/pipes/pipe.md

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, getpid, pipe, pipe2, read, write};
use proclab::fdio::write_all;
use proclab::narrate::event;
use proclab::{child, cli, narrate, pipes};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    // ANCHOR: capacity
    // Non-blocking: on a full pipe, write() fails with EAGAIN instead of sleeping.
    let (_read_end, write_end) = pipe2(OFlag::O_NONBLOCK).context("pipe2")?;
    let reported = fcntl(&write_end, FcntlArg::F_GETPIPE_SZ).context("F_GETPIPE_SZ")?;
    let filled = fill(&write_end)?;
    event("capacity")
        .field("bytes", filled)
        .field("f_getpipe_sz", reported)
        .say(format!(
            "wrote {filled} bytes before write() -> EAGAIN; fcntl(F_GETPIPE_SZ) -> {reported}"
        ));
    let max = pipes::pipe_max_size();
    let (_read_end, write_end) = pipe2(OFlag::O_NONBLOCK).context("pipe2")?;
    let asked = args.resize;
    let granted = fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(asked as i32)) // rounded up
        .context("F_SETPIPE_SZ")?;
    let refilled = fill(&write_end)?;
    event("resized")
        .field("asked", asked)
        .field("granted", granted)
        .field("bytes", refilled)
        .say(format!(
            "fcntl(F_SETPIPE_SZ, {asked}) -> {granted} (limit for you: \
             /proc/sys/fs/pipe-max-size = {max}); a fresh pipe now takes {refilled} bytes"
        ));
    // ANCHOR_END: capacity
    let blocked_ms = blocked_writer(filled)?;
    pipes::say_capacity_summary(filled, reported, refilled, max, blocked_ms);
    Ok(())
}

/// Fills a non-blocking pipe until write() says EAGAIN; returns the bytes it took.
// ANCHOR: fill
fn fill(write_end: &OwnedFd) -> anyhow::Result<usize> {
    let mut total = 0;
    for chunk in [4096, 1] {
        // then byte by byte: not even one more fits
        loop {
            match write(write_end, &vec![b'x'; chunk]) {
                Ok(n) => total += n,
                Err(Errno::EAGAIN) => break, // full
                Err(error) => return Err(error).context("write"),
            }
        }
    }
    Ok(total)
}
// ANCHOR_END: fill

/// A writer fills a blocking pipe and one byte more: it sleeps until the reader drains some.
/// Returns how long the writer slept, in milliseconds.
// ANCHOR: blocked
fn blocked_writer(capacity: usize) -> anyhow::Result<f64> {
    let (read_end, write_end) = pipe().context("pipe")?; // blocking, this time
    let (results, result_writer) = child::result_pipe()?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child allocates a buffer of `capacity` bytes,
    // writes it and one byte more, sends how long the last write slept and calls _exit.
    let writer = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("writer");
            drop((read_end, results));
            write_all(&write_end, &vec![b'x'; capacity])?;
            event("full").say(format!(
                "wrote {capacity} bytes: the pipe is full; writing 1 more"
            ));
            let start = Instant::now();
            write_all(&write_end, b"!")?; // sleeps until the reader makes room
            let slept = start.elapsed().as_secs_f64() * 1000.0;
            event("unblocked").say(format!(
                "write() returned after {slept:.0} ms: the reader made room"
            ));
            result_writer.send(&slept)?;
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    drop((write_end, result_writer));
    let (view, place) = pipes::asleep_on_the_full_pipe(writer, &read_end, capacity)?;
    std::thread::sleep(Duration::from_millis(100)); // let it sleep visibly
    event("sleeping")
        .field("child", writer.as_raw())
        .field("state", view.state.to_string())
        .field("wchan", &place)
        .say(format!(
            "kernel says writer {writer} is {} in {place}; reading 4096 bytes",
            view.state_in_words()
        ));
    read(&read_end, &mut [0u8; 4096]).context("read")?; // room for the writer's byte
    let mut buffer = vec![0u8; 65_536];
    while read(&read_end, &mut buffer).context("read")? > 0 {} // the rest, to EOF
    let slept: f64 = results.receive()?;
    waitpid(writer, None).context("waitpid")?;
    Ok(slept)
}
// ANCHOR_END: blocked

/// Measure a pipe's capacity, resize it (F_SETPIPE_SZ), and block a writer on it.
#[derive(Parser)]
#[command(after_help = "Examples:\n  pipe_capacity\n  pipe_capacity --resize 1048576")]
struct Args {
    /// The size to ask for with F_SETPIPE_SZ, in bytes (4096 to pipe-max-size).
    #[arg(long, value_name = "BYTES", default_value_t = 262_144, value_parser = pipes::pipe_size)]
    resize: u64,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
