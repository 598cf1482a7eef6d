//! fifo_writer — the writing end of a FIFO, in a program of its own.
//!
//! Demonstrates: open(O_WRONLY) of a FIFO blocks until some other process opens it for
//! reading; each write() of at most PIPE_BUF bytes then goes into the pipe whole, and the
//! close() of the last writer is what the reader sees as EOF.
//! Run:     mkfifo /tmp/f; cargo run --bin fifo_writer -- /tmp/f  (then, in a second
//!          terminal: cargo run --bin fifo_reader -- /tmp/f, or cat /tmp/f; and rm /tmp/f)
//! Observe: open() returns only when a reader opens; closing gives the reader its EOF.
//! Book:    book/src/pipes/fifo.md

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::write;
use proclab::narrate::event;
use proclab::record::{Tag, encode};
use proclab::{cli, fifo, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    match args.t0 {
        Some(start) => narrate::init_at(args.json, "writer", start), // the fifo demo's clock
        None => narrate::init(args.json, "writer"),
    }
    cli::run_stoppable(|| write_records(&args))
}

/// Opens the FIFO for writing, writes the records, closes it.
// ANCHOR: writer
fn write_records(args: &Args) -> anyhow::Result<()> {
    let shown = args.path.display();
    fifo::refuse_anything_but_a_fifo(&args.path)?; // a file, a link: no
    event("open").say(format!(
        "open({shown}, O_WRONLY): waits until the other end is opened too"
    ));
    let start = Instant::now();
    let fifo = open(
        &args.path,
        OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, // a symlink here: ELOOP
        Mode::empty(),                                          // (no file is created)
    )
    .with_context(|| format!("open {shown}"))?; // returns once a reader has opened it
    let waited = start.elapsed().as_secs_f64();
    event("opened")
        .field("fd", fifo.as_raw_fd())
        .field("waited_s", waited)
        .say(format!(
            "open() -> fd {} after {waited:.3} s: the other side is here",
            fifo.as_raw_fd()
        ));

    for seq in 0..args.records {
        let record = encode(Tag { writer: 0, seq }, RECORD);
        let written = write(&fifo, &record).context("write")?;
        anyhow::ensure!(written == RECORD, "short write"); // RECORD <= PIPE_BUF: all or nothing
    }
    // The fifo demo removes the name while both ends are open; --linger waits for that.
    let lingered = args.linger && fifo::wait_until_unlinked(&args.path, Duration::from_secs(10))?;
    signals::bail_if_stopped()?;
    drop(fifo); // closed: with no other writer left, the reader now sees EOF
    // ANCHOR_END: writer
    let alone = args.t0.is_none(); // started by hand: this is the whole run
    event(if alone { "summary" } else { "closed" })
        .field("records", args.records)
        .field("name_gone_before_close", lingered)
        .say(format!(
            "wrote {} records, closed: the reader will see EOF",
            args.records
        ));
    Ok(())
}

/// The size of a record: at most PIPE_BUF (4096), so that each write is all or nothing.
const RECORD: usize = 64;

/// Open PATH (an existing FIFO) for writing and send records.
///
/// The open() waits until a reader opens the FIFO too: fifo_reader, or any program
/// (`cat PATH`). The records are 64 bytes each, numbered and checksummed, so that
/// fifo_reader can prove each arrived exactly once.
#[derive(Parser)]
#[command(after_help = "Examples:\n  fifo_writer /tmp/f --records 5    \
                        # after mkfifo /tmp/f; then, in another terminal: fifo_reader /tmp/f")]
struct Args {
    /// The FIFO.
    path: PathBuf,

    /// Records to send (1-1000000).
    #[arg(long, value_name = "K", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: u64,

    /// Keep the FIFO open until its name is removed (the fifo demo asks for it).
    #[arg(long, hide = true)]
    linger: bool,

    /// The fifo demo's clock, in CLOCK_MONOTONIC ns.
    #[arg(long, hide = true)]
    t0: Option<u64>,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
