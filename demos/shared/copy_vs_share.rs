//! copy_vs_share — moving a large array to a child: through a pipe, or not at all.
//!
//! Demonstrates: a pipe copies every byte twice (into the kernel, out of it); shared
//! memory copies nothing — the child maps the parent's pages and reads them in place,
//! paying one minor page fault per page on first touch. For large data that is a large
//! difference; for small messages it is none.
//! Run:     cargo run --release --bin copy_vs_share
//! Observe: both sums equal the parent's; the shared way is several times faster.
//! Book:    book/src/shared/copy_vs_share.md

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use nix::unistd::pipe;
use proclab::fdio::{f64_bytes, read_exact, write_all};
use proclab::narrate::event;
use proclab::shm::SharedArray;
use proclab::{child, cli, measure, narrate, signals};
use serde::{Deserialize, Serialize};

/// Move an array of f64 from parent to child through a pipe, then through shared memory,
/// and compare.
///
/// The child sums the array both times; the parent checks both sums against its own. The
/// demo reports the time of each way, the bytes copied, and the child's minor page faults.
/// Build with --release for meaningful times.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  copy_vs_share\n  copy_vs_share --elements 1000\n  copy_vs_share --elements 100000000"
)]
struct Args {
    /// Elements in the array (8 bytes each; at least 1, and it must fit in memory).
    #[arg(long, value_name = "N", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    elements: u64,

    /// Keep the child alive this long (0-3600 s) after it has read the shared array, to
    /// look at its mappings in /proc.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: std::time::Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

/// What the child reports each time.
#[derive(Serialize, Deserialize)]
struct ChildSum {
    sum: f64,
    minor_faults: u64,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    check_memory(args.elements);
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(args.elements as usize, args.hold))
}

/// The array lives up to three times (the parent's, the pipe child's buffer, the shared
/// copy): refuse a size that cannot fit, with the numbers, rather than die of it.
fn check_memory(elements: u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(u64::MAX / 1024);
    let needed_mib = elements.saturating_mul(8 * 3) >> 20;
    if needed_mib > available_kib / 1024 {
        cli::usage_error(&format!(
            "--elements {elements} needs about {needed_mib} MiB, more than the {} MiB available (MemAvailable in /proc/meminfo)",
            available_kib / 1024
        ));
    }
}

fn value(index: usize) -> f64 {
    (index % 1000) as f64 * 0.5
}

fn run(elements: usize, hold: std::time::Duration) -> anyhow::Result<()> {
    let bytes = elements * 8;
    let data: Vec<f64> = (0..elements).map(value).collect();
    let expected: f64 = data.iter().sum();
    event("array")
        .field("elements", elements)
        .field("bytes", bytes)
        .say(format!(
            "{elements} f64 = {:.1} MB; the parent's own sum: {expected}",
            bytes as f64 / 1e6
        ));

    let start = Instant::now();
    let piped = through_a_pipe(&data)?;
    let pipe_seconds = start.elapsed().as_secs_f64();
    event("pipe").field("seconds", pipe_seconds).field("minor_faults", piped.minor_faults).say(format!(
        "pipe: {:.1} MB written into the kernel and read out again; the child summed it: {} ({:.1} ms, {} minor faults in the child)",
        bytes as f64 / 1e6,
        piped.sum,
        pipe_seconds * 1e3,
        piped.minor_faults
    ));
    drop(data);
    signals::bail_if_stopped()?;

    let (shared, fill_faults) = fill_shared(elements)?;
    let start = Instant::now();
    let mapped = in_shared_memory(&shared, hold)?;
    let shared_seconds = start.elapsed().as_secs_f64();
    event("shared").field("seconds", shared_seconds).field("minor_faults", mapped.minor_faults).say(format!(
        "shared: nothing copied; the parent's filling faulted in {fill_faults} pages, the child's reading \
         mapped them into its own page table: {} minor faults; the child summed it: {} ({:.1} ms)",
        mapped.minor_faults,
        mapped.sum,
        shared_seconds * 1e3
    ));

    let sums_equal =
        piped.sum.to_bits() == expected.to_bits() && mapped.sum.to_bits() == expected.to_bits();
    let speedup = pipe_seconds / shared_seconds;
    event("summary")
        .field("elements", elements)
        .field("bytes_copied", bytes)
        .field("pipe_seconds", pipe_seconds)
        .field("shared_seconds", shared_seconds)
        .field("speedup", speedup)
        .field("pipe_minor_faults", piped.minor_faults)
        .field("shared_minor_faults", mapped.minor_faults)
        .field("sums_equal", sums_equal)
        .field("expected_sum", expected)
        .field("pipe_sum", piped.sum)
        .field("shared_sum", mapped.sum)
        .say(format!(
            "summary: pipe {:.1} ms, shared {:.1} ms: shared is {speedup:.1}x faster; sums equal: {sums_equal}",
            pipe_seconds * 1e3,
            shared_seconds * 1e3
        ));
    Ok(())
}

/// The parent writes the array's bytes into a pipe; the child reads them into its own
/// buffer and sums them.
// ANCHOR: pipe
fn through_a_pipe(data: &[f64]) -> anyhow::Result<ChildSum> {
    let (read_end, write_end) = pipe().context("pipe")?;
    // SAFETY: single-threaded here.
    let reader = unsafe {
        child::spawn("child", || {
            let faults = measure::minor_faults();
            let mut buffer = vec![0u8; data.len() * 8]; // the child's own copy
            if !read_exact(&read_end, &mut buffer)? {
                bail!("the pipe closed before the first byte");
            }
            let bytes = buffer.chunks_exact(8);
            let sum = bytes
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .sum();
            Ok(ChildSum {
                sum,
                minor_faults: measure::minor_faults() - faults,
            })
        })
    }?;
    drop(read_end);
    write_all(&write_end, f64_bytes(data))?; // 8 bytes per element, through the kernel
    drop(write_end);
    reader.collect(&[])
}
// ANCHOR_END: pipe

/// Makes the shared array and fills it (in the parent): returns it and the page faults
/// the filling took.
// ANCHOR: fill
fn fill_shared(elements: usize) -> anyhow::Result<(SharedArray<f64>, u64)> {
    let mut shared = SharedArray::<f64>::zeroed(elements).context("mmap")?;
    let faults = measure::minor_faults();
    for (index, slot) in shared.view().iter_mut().enumerate() {
        *slot = value(index); // first touch of each page: the kernel allocates it
    }
    Ok((shared, measure::minor_faults() - faults))
}
// ANCHOR_END: fill

/// The child sums the shared array where it lies.
// ANCHOR: shared
fn in_shared_memory(
    shared: &SharedArray<f64>,
    hold: std::time::Duration,
) -> anyhow::Result<ChildSum> {
    // SAFETY: single-threaded here.
    let reader = unsafe {
        child::spawn("child", || {
            let faults = measure::minor_faults();
            let sum = shared.as_slice().iter().sum(); // the parent's pages, read in place
            let minor_faults = measure::minor_faults() - faults;
            if !hold.is_zero() {
                event("hold")
                    .field("seconds", hold.as_secs_f64())
                    .say(format!(
                        "holding {hold:?}: look at /proc/{}/smaps (the mapping is rw-s)",
                        std::process::id()
                    ));
                std::thread::sleep(hold);
            }
            Ok(ChildSum { sum, minor_faults })
        })
    }?;
    reader.collect(&[])
}
// ANCHOR_END: shared
