//! fifo_reader — the reading end of a FIFO, in a program of its own.
//!
//! Demonstrates: open(O_RDONLY) of a FIFO blocks until some other process — any program,
//! no relative needed — opens it for writing; read() then returns what that writer wrote,
//! and 0 (EOF) once the last writer has closed.
//! Run:     mkfifo /tmp/f; cargo run --bin fifo_reader -- /tmp/f  (then, in a second
//!          terminal: cargo run --bin fifo_writer -- /tmp/f; and rm /tmp/f)
//! Observe: open() returns only when the writer opens; every record arrives once.
//! Book:    book/src/pipes/fifo.md
//!
//! Exit codes: as every demo; 3 if the records did not arrive exactly once.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::read;
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger};
use proclab::{cli, fifo, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    match args.t0 {
        Some(start) => narrate::init_at(args.json, "reader", start), // the fifo demo's clock
        None => narrate::init(args.json, "reader"),
    }
    let mut exactly_once = true;
    let status = cli::run_stoppable(|| {
        exactly_once = read_to_eof(&args)?;
        Ok(())
    });
    if exactly_once {
        status
    } else {
        ExitCode::from(3)
    }
}

/// Opens the FIFO for reading and reads records until EOF; returns whether each arrived
/// exactly once.
fn read_to_eof(args: &Args) -> anyhow::Result<bool> {
    let shown = args.path.display();
    fifo::refuse_anything_but_a_fifo(&args.path)?; // a file, a link: no
    event("open").say(format!(
        "open({shown}, O_RDONLY): waits until the other end is opened too"
    ));
    let start = Instant::now();
    let fifo = open(
        &args.path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, // a symlink here: ELOOP
        Mode::empty(),                                          // (no file is created)
    )
    .with_context(|| format!("open {shown}"))?; // returns once a writer has opened it
    let waited = start.elapsed().as_secs_f64();
    event("opened")
        .field("fd", fifo.as_raw_fd())
        .field("waited_s", waited)
        .say(format!(
            "open() -> fd {} after {waited:.3} s: the other side is here",
            fifo.as_raw_fd()
        ));

    let (mut decoder, mut ledger) = (Decoder::default(), Ledger::new());
    let mut buffer = vec![0u8; 65_536];
    let mut highest = None;
    loop {
        let n = read(&fifo, &mut buffer).context("read")?;
        if n == 0 {
            break; // EOF: no writer has the FIFO open any more
        }
        for found in decoder.feed(&buffer[..n]) {
            if let Found::Record(tag, _) = found {
                highest = highest.max(Some(tag.seq));
            }
            ledger.note(&found);
        }
    }
    let sent = args.records.unwrap_or(highest.map_or(0, |seq| seq + 1));
    let tally = ledger.check(&[sent]);
    let alone = args.t0.is_none(); // started by hand: this is the whole run
    event(if alone { "summary" } else { "received" })
        .fields(tally)
        .say(format!(
            "EOF: {} records received, {} missing, {} duplicated, {} torn",
            tally.received, tally.missing, tally.duplicates, tally.torn
        ));
    Ok(tally.exactly_once() && tally.torn == 0 && decoder.leftover() == 0)
}

/// Open PATH (an existing FIFO) for reading and count records until EOF.
///
/// The open() waits until a writer opens the FIFO too: fifo_writer, or any program
/// (`echo hello > PATH`). The reader counts the records it receives — missing, duplicated
/// or torn — and exits 3 unless each arrived exactly once.
#[derive(Parser)]
#[command(after_help = "Examples:\n  fifo_reader /tmp/f    \
                        # after mkfifo /tmp/f; then, in another terminal: fifo_writer /tmp/f")]
struct Args {
    /// The FIFO.
    path: PathBuf,

    /// The records the writer sends, to check that each arrived (else: the reader expects a
    /// gapless run from 0).
    #[arg(long, value_name = "K")]
    records: Option<u64>,

    /// The fifo demo's clock, in CLOCK_MONOTONIC ns.
    #[arg(long, hide = true)]
    t0: Option<u64>,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
