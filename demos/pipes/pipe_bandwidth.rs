//! pipe_bandwidth — how fast bytes go through a pipe, on one CPU and across two.
//!
//! Demonstrates: a pipe copies every byte twice (into the kernel's buffer, out of it); on
//! one CPU writer and reader take turns cheaply, across two CPUs each wake-up of the other
//! side is an inter-processor interrupt and the pipe is slower.
//! Run:     cargo run --release --bin pipe_bandwidth   (add --produce, --chunk 4096)
//! Observe: MB/s per placement, median of 5 pinned runs.
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
    let (chunk, bytes) = (args.chunk as usize, args.mebibytes << 20);
    measure::pin_to_cpu(reader_cpu).context("sched_setaffinity")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child pins itself, allocates its chunk, opens
    // /dev/zero with --produce, writes and calls _exit.
    let writer: Pid = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            drop(read_end);
            measure::pin_to_cpu(writer_cpu)?;
            let mut data = vec![b'x'; chunk];
            let source = args.produce.then(|| std::fs::File::open("/dev/zero"));
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
    let mut buffer = vec![0u8; chunk.max(65_536)];
    let mut received = read(&read_end, &mut buffer).context("read")? as u64;
    let start = Instant::now(); // from the first byte: the fork is not the pipe's cost
    let mut timed = 0u64;
    loop {
        signals::bail_if_stopped()?;
        match read(&read_end, &mut buffer).context("read")? as u64 {
            0 => break, // EOF
            n => (received, timed) = (received + n, timed + n),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    waitpid(writer, None).context("waitpid")?;
    anyhow::ensure!(received == bytes, "received {received} of {bytes} bytes");
    Ok(timed as f64 / seconds / 1e6)
}
// ANCHOR_END: sample

const FROM_DEV_ZERO: &str = ", each chunk read from /dev/zero first";

fn run(args: &Args) -> anyhow::Result<()> {
    let cpus = measure::usable_cpus();
    let mut placements = vec![("one CPU", cpus[0], cpus[0])];
    if let Some(&second) = cpus.get(1) {
        placements.push(("two CPUs", cpus[0], second));
    }
    let produced = if args.produce { FROM_DEV_ZERO } else { "" };
    event("method").say(format!(
        "method: {} MiB in {}-byte writes{produced}, writer and reader pinned; MB/s from the \
         first byte read to EOF; 1 warm-up run, then the median of 5",
        args.mebibytes, args.chunk
    ));
    let mut rows = Vec::new();
    for (placement, writer_cpu, reader_cpu) in placements {
        let cpus = (writer_cpu, reader_cpu);
        sample(args, cpus)?; // warm-up
        let samples: Vec<f64> = (0..5)
            .map(|_| sample(args, cpus))
            .collect::<Result<_, _>>()?;
        rows.push(pipes::bandwidth_row(placement, cpus, &samples)); // narrated: median, range
    }
    event("summary")
        .field("chunk_bytes", args.chunk)
        .field("bytes", args.mebibytes << 20)
        .field("produce", args.produce)
        .field("rows", &rows)
        .say("summary: throughput through a pipe, median of 5 pinned runs per placement");
    Ok(())
}

/// Measure the throughput of an anonymous pipe, on one CPU and across two.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  pipe_bandwidth\n  pipe_bandwidth --chunk 4096\n  \
                        pipe_bandwidth --produce"
)]
struct Args {
    /// Bytes per write (1-1048576).
    #[arg(long, value_name = "BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    chunk: u64,

    /// MiB sent per run (1-4096).
    #[arg(long, value_name = "MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    mebibytes: u64,

    /// The writer reads each chunk from /dev/zero before it writes it, as `dd` does.
    #[arg(long)]
    produce: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
