//! copy_vs_share — moving a large array to a child: through a pipe, or not at all.
//!
//! Demonstrates: a pipe copies every byte twice (into the kernel, out of it); shared
//! memory copies nothing — the child maps the parent's pages and reads them in place,
//! paying a minor page fault per page (or per 16 pages) on first touch.
//! Run:     cargo run --bin copy_vs_share            (--release for meaningful times)
//! Observe: both sums equal the parent's; the summary says which way was faster, and by
//!          how much, from the medians of 5 rounds (or that both were as fast).
//! Book:    book/src/shared/copy_vs_share.md

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::unistd::pipe;
use proclab::fdio::{f64_bytes, read_exact, write_all};
use proclab::measure::time_one_way;
use proclab::narrate::event;
use proclab::shm::{self, SharedArray};
use proclab::{child, cli, measure, narrate, signals};
use serde_json::json;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// Each way is timed this many times, alternately; the summary compares the medians.
const ROUNDS: usize = 5;

// ANCHOR: pipe
/// The parent writes the array's bytes into a pipe; the child reads them into its own
/// buffer and sums them. Returns the sum and the child's minor faults.
fn through_a_pipe(data: &[f64]) -> anyhow::Result<(f64, u64)> {
    let (read_end, write_end) = pipe().context("pipe")?;
    // SAFETY: single-threaded here; the child allocates a buffer, reads the pipe into it,
    // sums it, sends the sum back through a result pipe and calls _exit.
    let reader = unsafe {
        child::spawn("child", || {
            let faults = measure::minor_faults();
            let mut buffer = vec![0u8; data.len() * 8]; // the child's own copy
            anyhow::ensure!(read_exact(&read_end, &mut buffer)?, "the pipe closed early");
            let values = buffer
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8")));
            Ok((values.sum::<f64>(), measure::minor_faults() - faults))
        })
    }?;
    drop(read_end);
    write_all(&write_end, f64_bytes(data))?; // 8 bytes per element, through the kernel
    drop(write_end); // the child's read_exact has all it waits for
    reader.collect(&[])
}
// ANCHOR_END: pipe

// ANCHOR: shared
/// The child sums the shared array where it lies; it may then stay (`hold`) to be looked at.
fn in_shared_memory(shared: &SharedArray<f64>, hold: Duration) -> anyhow::Result<(f64, u64)> {
    // SAFETY: single-threaded here; the child sums the shared pages, may sleep (--hold),
    // sends the sum back through a result pipe and calls _exit.
    let reader = unsafe {
        child::spawn("child", || {
            let faults = measure::minor_faults();
            let sum: f64 = shared.as_slice().iter().sum(); // the parent's pages, read in place
            let minor_faults = measure::minor_faults() - faults;
            if !hold.is_zero() {
                let me = std::process::id();
                (event("hold").field("seconds", hold.as_secs_f64())).say(format!(
                    "holding {hold:?}: look at /proc/{me}/smaps (the mapping is rw-s)"
                ));
                std::thread::sleep(hold);
            }
            Ok((sum, minor_faults))
        })
    }?;
    reader.collect(&[])
}
// ANCHOR_END: shared

/// Moves the array both ways, ROUNDS times, and compares the medians.
fn run(args: &Args) -> anyhow::Result<()> {
    let elements = args.elements;
    let data: Vec<f64> = (0..elements).map(value).collect();
    let expected: f64 = data.iter().sum();
    let fields = json!({ "elements": elements, "bytes": elements * 8 });
    event("array").fields(fields).say(format!(
        "{elements} f64 = {:.1} MB; the parent's own sum: {expected}",
        elements as f64 * 8e-6
    ));
    // ANCHOR: fill
    let mut shared = SharedArray::<f64>::zeroed(elements).context("mmap")?;
    let faults = measure::minor_faults();
    for (index, slot) in shared.view().iter_mut().enumerate() {
        *slot = value(index); // first touch of each page: the kernel allocates it
    }
    let fill_faults = measure::minor_faults() - faults;
    // ANCHOR_END: fill
    event("filled")
        .field("minor_faults", fill_faults)
        .say(format!(
            "the parent filled the shared array: {fill_faults} minor faults, one per page"
        ));
    let (mut pipe, mut share) = (Vec::new(), Vec::new()); // (seconds, sum, faults) per round
    for round in 1..=ROUNDS {
        signals::bail_if_stopped()?;
        pipe.push(time_one_way(round, "pipe", || through_a_pipe(&data))?); // narrated
        share.push(time_one_way(round, "shared", || {
            in_shared_memory(&shared, Duration::ZERO)
        })?);
    }
    if !args.hold.is_zero() {
        in_shared_memory(&shared, args.hold)?; // once more, untimed, to be looked at
    }
    // The medians of the rounds, the faults, and whether every sum equals the parent's.
    measure::say_copy_vs_share(elements, fill_faults, expected, &pipe, &share);
    Ok(())
}

fn value(index: usize) -> f64 {
    (index % 1000) as f64 * 0.5
}

/// Move an array of f64 from parent to child through a pipe, then through shared memory.
#[derive(Parser)]
#[command(after_help = "Examples:\n  copy_vs_share\n  copy_vs_share --elements 1000000 --hold 3")]
struct Args {
    /// Elements in the array (8 bytes each; at least 1, and it must fit in memory 3 times).
    #[arg(long, value_name = "N", default_value = "10000000", value_parser = shm::elements_that_fit(8, 3))]
    elements: usize,

    /// Then share it once more with a child that stays this long (0-3600 s), to look in /proc.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds_up_to(3600.0))]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
