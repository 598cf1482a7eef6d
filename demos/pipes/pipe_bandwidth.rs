//! pipe_bandwidth — how fast bytes go through a pipe, on one CPU and across two.
//!
//! Demonstrates: a pipe copies every byte twice (into the kernel's buffer, out of it); on
//! one CPU writer and reader take turns cheaply, across two CPUs each wake-up of the other
//! side is an inter-processor interrupt and the pipe is slower.
//! Run:     cargo run --release --bin pipe_bandwidth   (add --like-dd, --chunk 4096)
//! Observe: MB/s per placement, the median of 5 pinned runs (--runs).
//! Book:    book/src/pipes/pipe.md

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe, read};
use proclab::fdio::{read_exact, write_all};
use proclab::narrate::event;
use proclab::{child, cli, measure, narrate, pipes, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// One sample: MB/s from the first byte to EOF, writer and reader (this process) pinned.
// ANCHOR: sample
fn sample(args: &Args, (writer_cpu, reader_cpu): (usize, usize)) -> anyhow::Result<f64> {
    let (chunk, bytes) = (args.chunk as usize, BYTES_PER_RUN);
    measure::pin_to_cpu(reader_cpu).context("sched_setaffinity")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child pins itself, allocates its chunk, opens
    // /dev/zero with --like-dd, writes and calls _exit.
    let writer: Pid = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            drop(read_end);
            measure::pin_to_cpu(writer_cpu)?;
            let mut storage = vec![b'x'; chunk + 4096];
            let data = measure::page_aligned(&mut storage, chunk); // as dd's buffers are
            let source = args.like_dd.then(|| std::fs::File::open("/dev/zero"));
            let source = source.transpose()?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk as u64) as usize;
                if let Some(source) = &source {
                    read_exact(source, &mut data[..n])?; // as dd if=/dev/zero does
                }
                if write_all(&write_end, &data[..n]).is_err() {
                    return Ok(1); // the reader is gone (the parent was stopped): it reports
                }
                left -= n as u64;
            }
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    drop(write_end); // EOF when the writer is done
    let mut storage = vec![0u8; chunk.max(65_536) + 4096];
    let buffer = measure::page_aligned(&mut storage, chunk.max(65_536));
    let sink = args.like_dd.then(|| std::fs::File::create("/dev/null"));
    let sink = sink.transpose()?;
    let mut n = read(&read_end, buffer).context("read")?;
    let start = Instant::now(); // from the first byte: the fork is not the pipe's cost
    let (first, mut received) = (n as u64, n as u64);
    while n > 0 {
        if let Some(sink) = &sink {
            write_all(sink, &buffer[..n])?; // as dd of=/dev/null does
        }
        signals::bail_if_stopped()?;
        n = read(&read_end, buffer).context("read")?; // 0: EOF
        received += n as u64;
    }
    let (seconds, timed) = (start.elapsed().as_secs_f64(), received - first);
    waitpid(writer, None).context("waitpid")?;
    anyhow::ensure!(received == bytes, "received {received} of {bytes} bytes");
    Ok(timed as f64 / seconds / 1e6)
}
// ANCHOR_END: sample

/// 256 MiB: long enough that a run is not its start-up, short enough to take many.
const BYTES_PER_RUN: u64 = 256 << 20;
const LIKE_DD: &str = ", each read from /dev/zero first and written to /dev/null after, as dd | dd";

fn run(args: &Args) -> anyhow::Result<()> {
    let cpus = measure::usable_cpus();
    let mut placements = vec![("one CPU", cpus[0], cpus[0])];
    if let Some(&second) = cpus.get(1) {
        placements.push(("two CPUs", cpus[0], second));
    }
    let like_dd = if args.like_dd { LIKE_DD } else { "" };
    event("method").say(format!(
        "method: 256 MiB in {}-byte writes{like_dd}, writer and reader pinned; MB/s from the \
         first byte read to EOF; 1 warm-up run, then the median of {}",
        args.chunk, args.runs
    ));
    let mut rows = Vec::new();
    for (placement, writer_cpu, reader_cpu) in placements {
        let cpus = (writer_cpu, reader_cpu);
        sample(args, cpus)?; // warm-up
        let samples: Vec<f64> = (0..args.runs)
            .map(|_| sample(args, cpus))
            .collect::<Result<_, _>>()?;
        rows.push(pipes::bandwidth_row(placement, cpus, &samples)); // narrated: median, range
    }
    event("summary")
        .field("chunk_bytes", args.chunk)
        .field("bytes", BYTES_PER_RUN)
        .field("like_dd", args.like_dd)
        .field("runs", args.runs)
        .field("rows", &rows)
        .say(format!(
            "summary: throughput through a pipe, median of {} pinned {} per placement",
            args.runs,
            if args.runs == 1 { "run" } else { "runs" }
        ));
    Ok(())
}

/// Measure the throughput of an anonymous pipe, on one CPU and across two.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  pipe_bandwidth\n  pipe_bandwidth --chunk 4096\n  \
                        pipe_bandwidth --like-dd --runs 9"
)]
struct Args {
    /// Bytes per write (1-1048576).
    #[arg(long, value_name = "BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    chunk: u64,

    /// Timed runs per placement, after one warm-up (1-99); the median is reported.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,

    /// Do per chunk what `dd if=/dev/zero | dd of=/dev/null` does: the writer reads it
    /// from /dev/zero, the reader writes it to /dev/null.
    #[arg(long)]
    like_dd: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
