//! pipe — a one-way stream of bytes from a parent to its child, read to end-of-file.
//!
//! Demonstrates: pipe() gives two descriptors, a read end and a write end, and fork copies
//! both; each side closes the end it does not use; the reader sees EOF only when no write
//! end is open anywhere — its own forgotten copy included.
//! Run:     cargo run --bin pipe              (then --forget-close)
//! Observe: every record counted at EOF; with --forget-close, the reader's own write end.
//! Book:    book/src/pipes/pipe.md

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, getpid, pipe, read};
use proclab::fdio::write_all;
use proclab::narrate::event;
use proclab::pipes::ReaderReport;
use proclab::queues::counted;
use proclab::record::{Decoder, Ledger, Tag, encode};
use proclab::{child, cli, narrate, pipes, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

const RECORD: usize = 64; // bytes per record

fn run(args: &Args) -> anyhow::Result<()> {
    // ANCHOR: pipe
    let (read_end, write_end) = pipe().context("pipe")?;
    let (read_fd, write_fd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    event("pipe")
        .field("read_fd", read_fd)
        .field("write_fd", write_fd)
        .say(format!(
            "pipe() -> read end fd {read_fd}, write end fd {write_fd}; fork will copy both"
        ));
    let (results, result_writer) = child::result_pipe()?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child closes or keeps its write end, reads to EOF
    // (allocating; and /proc/self/fd if it hangs), sends its report and calls _exit.
    let reader = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("child");
            drop(results);
            let forgotten = if args.forget_close {
                Some(write_end) // the bug: this copy keeps the pipe writable
            } else {
                drop(write_end); // one write end fewer: the parent's is now the last
                event("close").say(format!("close({write_fd}): I only read"));
                None
            };
            let report = read_until_eof(read_end, forgotten, args)?;
            let _ = result_writer.send(&report); // fails only if the parent was stopped
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    drop((read_end, result_writer)); // the parent only writes
    event("fork")
        .field("child", reader.as_raw())
        .say(format!("fork() -> child {reader}, the reader"));
    event("close").say(format!("close({read_fd}): I only write"));
    // ANCHOR_END: pipe

    // ANCHOR: write
    for seq in 0..args.records {
        signals::bail_if_stopped()?;
        write_all(&write_end, &encode(Tag { writer: 0, seq }, RECORD))?;
    }
    let records = counted(args.records, "record");
    event("wrote")
        .field("records", args.records)
        .say(format!("wrote {records} of {RECORD} bytes"));
    // Said before it is done: once it is, the reader's EOF line may come first.
    event("close").say(format!("close({write_fd}): the last write end I hold"));
    drop(write_end); // the reader sees EOF now, unless it kept a copy
    // ANCHOR_END: write

    let report: ReaderReport = results.receive()?;
    let status = waitpid(reader, None).context("waitpid")?;
    report.say_summary(&status, args.forget_close);
    Ok(())
}

/// Reads records until EOF; `poll` with a time limit notices a pipe that never reaches EOF.
// ANCHOR: read
fn read_until_eof(read_end: OwnedFd, forget: Option<OwnedFd>, args: &Args) -> Result<ReaderReport> {
    let (mut decoder, mut ledger, mut hang) = (Decoder::default(), Ledger::new(), false);
    let (mut buffer, sent) = (vec![0u8; 65_536], args.records);
    let (mut forgotten, timeout) = (forget, args.timeout);
    let limit = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    loop {
        let mut readable = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
        if poll(&mut readable, limit) == Ok(0) {
            let Some(write_end) = forgotten.take() else {
                bail!("no data and no EOF for {timeout:?}")
            };
            pipes::explain_the_hang(&read_end, &write_end, timeout);
            drop(write_end); // the last write end anywhere: EOF can come
            event("close").say("close(the forgotten write end): now EOF can come");
            hang = true;
            continue;
        }
        let n = read(&read_end, &mut buffer).context("read")?;
        if n == 0 {
            event("eof").say("read() -> 0: EOF, no write end is open anywhere");
            let (tally, eof) = (ledger.check(&[sent]), true); // sent: decided before the fork
            return Ok(ReaderReport { tally, eof, hang });
        }
        for found in decoder.feed(&buffer[..n]) {
            ledger.note(&found);
        }
    }
}
// ANCHOR_END: read

/// Send records through an anonymous pipe, from parent to child, and read them to EOF.
#[derive(Parser)]
#[command(after_help = "Examples:\n  pipe\n  pipe --records 50000\n  pipe --forget-close")]
struct Args {
    /// Records of 64 bytes to send (1-1000000).
    #[arg(long, value_name = "K", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: u64,

    /// The child keeps its copy of the write end open: EOF never comes.
    #[arg(long)]
    forget_close: bool,

    /// With --forget-close: how long without data or EOF is a hang (0.1-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = pipes::hang_timeout,
          requires = "forget_close")]
    timeout: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
