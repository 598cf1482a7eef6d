//! pipe_atomic — several writers share one pipe: which of their writes stay whole.
//!
//! Demonstrates: a write(2) of at most PIPE_BUF (4096) bytes into a pipe is atomic — its
//! bytes come out together, never mixed with another writer's; a larger write may be
//! split, and other writers' bytes land between its pieces.
//! Run:     cargo run --bin pipe_atomic       (add --records 10000)
//! Observe: 0 small records torn; most large records torn.
//! Book:    book/src/pipes/pipe.md

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, getpid, pipe, read, write};
use proclab::fdio::write_all;
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger, Tag, encode};
use proclab::{child, cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// Most records fit in PIPE_BUF; every hundredth does not.
const SMALL: usize = 512;
const LARGE: usize = 69_632; // 17 pages: more than the whole default pipe
const WRITERS: u32 = 4;

fn run(args: &Args) -> anyhow::Result<()> {
    let per_writer = args.records.div_ceil(u64::from(WRITERS));
    let s = if per_writer == 1 { "" } else { "s" }; // "1 record", "2 records"
    // ANCHOR: atomic
    let (read_end, write_end) = pipe().context("pipe")?;
    let parent = getpid();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        // SAFETY: single-threaded here; each writer encodes its records (allocating),
        // writes each with one write(2), and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                drop(read_end);
                for seq in 0..per_writer {
                    let record = encode(Tag { writer, seq }, record_size(seq));
                    let written = write(&write_end, &record).unwrap_or(0); // one write(2)
                    // Short or failed only if the reader is gone (the parent was stopped:
                    // the rest fails too, and this writer ends quietly) or if SIGSTOP cut
                    // a large write (the rest follows).
                    if write_all(&write_end, &record[written..]).is_err() {
                        return Ok(1);
                    }
                }
                Ok(0)
            }),
            ForkResult::Parent { child } => writers.push(child),
        }
    }
    drop(write_end); // EOF once the last writer ends
    event("writers")
        .field(
            "pids",
            writers.iter().map(|pid| pid.as_raw()).collect::<Vec<_>>(),
        )
        .say(format!(
            "{WRITERS} writers, {per_writer} record{s} each, one write(2) per record: \
             {SMALL}-byte records (<= PIPE_BUF = {}) and every 100th of {LARGE} bytes",
            libc::PIPE_BUF
        ));
    let (mut decoder, mut ledger) = (Decoder::default(), Ledger::new());
    let (mut small_torn, mut large_torn) = (0u64, 0u64);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        signals::bail_if_stopped()?;
        let n = read(&read_end, &mut buffer).context("read")?;
        if n == 0 {
            break;
        }
        for found in decoder.feed(&buffer[..n]) {
            if let Found::Torn(_, size) = found {
                if size <= libc::PIPE_BUF {
                    small_torn += 1; // never: POSIX promises it
                } else {
                    large_torn += 1;
                }
            }
            ledger.note(&found);
        }
    }
    // ANCHOR_END: atomic
    for writer in writers {
        waitpid(writer, None).context("waitpid")?;
    }
    let tally = ledger.check(&vec![per_writer; WRITERS as usize]);
    let all_tags =
        (0..WRITERS).flat_map(|writer| (0..per_writer).map(move |seq| Tag { writer, seq }));
    let (small, large): (Vec<Tag>, Vec<Tag>) =
        all_tags.partition(|tag| record_size(tag.seq) == SMALL);
    let small_missing = small.iter().filter(|&&tag| ledger.copies(tag) != 1).count();
    event("summary")
        .fields(tally)
        .field("small_sent", small.len())
        .field("small_torn", small_torn)
        .field("small_not_exactly_once", small_missing)
        .field("large_sent", large.len())
        .field("large_torn", large_torn)
        .say(format!(
            "summary: {} small records, {small_torn} torn, {small_missing} not exactly once; \
             {} large records, {large_torn} torn",
            small.len(),
            large.len()
        ));
    Ok(())
}

/// Every hundredth record is larger than PIPE_BUF.
fn record_size(seq: u64) -> usize {
    if seq % 100 == 99 { LARGE } else { SMALL }
}

/// Several writers share one pipe, with writes of at most PIPE_BUF and larger: count the
/// records that arrive torn.
///
/// Four children write tagged records into one pipe at once, one write(2) per record:
/// records of 512 bytes (at most PIPE_BUF) and, every hundredth, of 69632 bytes (more than
/// the whole pipe). The parent reads to EOF and counts the records whose checksum fails.
#[derive(Parser)]
#[command(after_help = "Examples:\n  pipe_atomic\n  pipe_atomic --records 10000")]
struct Args {
    /// Records to send in all (1-1000000), rounded up to a multiple of the 4 writers.
    #[arg(long, value_name = "K", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: u64,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
