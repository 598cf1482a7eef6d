//! copy_vs_share — moving a large array to a child: through a pipe, or not at all.
//!
//! Demonstrates: a pipe copies every byte twice (into the kernel, out of it); shared
//! memory copies nothing — the child maps the parent's pages and reads them in place,
//! paying one minor page fault per page on first touch. For large data that is a large
//! difference; for small messages it is none.
//! Run:     cargo run --bin copy_vs_share            (--release for meaningful times)
//! Observe: both sums equal the parent's; the shared way is several times faster.
//! Book:    book/src/shared/copy_vs_share.md

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nix::unistd::pipe;
use proclab::fdio::{f64_bytes, read_exact, write_all};
use proclab::narrate::event;
use proclab::shm::SharedArray;
use proclab::{child, cli, measure, narrate, signals};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

/// The parent writes the array's bytes into a pipe; the child reads them into its own
/// buffer and sums them.
// ANCHOR: pipe
fn through_a_pipe(data: &[f64]) -> anyhow::Result<ChildSum> {
    let (read_end, write_end) = pipe().context("pipe")?;
    // SAFETY: single-threaded here; the child allocates a buffer, reads the pipe into it,
    // sums it, sends the sum back through a result pipe and calls _exit.
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
            let minor_faults = measure::minor_faults() - faults;
            Ok(ChildSum { sum, minor_faults })
        })
    }?;
    drop(read_end);
    write_all(&write_end, f64_bytes(data))?; // 8 bytes per element, through the kernel
    drop(write_end); // the child's read_exact has all it waits for
    reader.collect(&[])
}
// ANCHOR_END: pipe

/// The parent makes the shared array and fills it: returns it, and the page faults taken.
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
fn in_shared_memory(shared: &SharedArray<f64>, hold: Duration) -> anyhow::Result<ChildSum> {
    // SAFETY: single-threaded here; the child sums the shared pages, may sleep (--hold),
    // sends the sum back through a result pipe and calls _exit.
    let reader = unsafe {
        child::spawn("child", || {
            let faults = measure::minor_faults();
            let sum = shared.as_slice().iter().sum(); // the parent's pages, read in place
            let minor_faults = measure::minor_faults() - faults;
            if !hold.is_zero() {
                let me = std::process::id();
                (event("hold").field("seconds", hold.as_secs_f64())).say(format!(
                    "holding {hold:?}: look at /proc/{me}/smaps (the mapping is rw-s)"
                ));
                std::thread::sleep(hold);
            }
            Ok(ChildSum { sum, minor_faults })
        })
    }?;
    reader.collect(&[])
}
// ANCHOR_END: shared

/// Moves the array both ways and compares.
fn run(args: &Args) -> anyhow::Result<()> {
    let (elements, bytes) = (args.elements, args.elements * 8);
    let data: Vec<f64> = (0..elements).map(value).collect();
    let expected: f64 = data.iter().sum();
    let megabytes = bytes as f64 / 1e6;
    let fields = json!({ "elements": elements, "bytes": bytes });
    event("array").fields(fields).say(format!(
        "{elements} f64 = {megabytes:.1} MB; the parent's own sum: {expected}"
    ));
    let start = Instant::now();
    let piped = through_a_pipe(&data)?;
    let pipe_seconds = start.elapsed().as_secs_f64();
    let (pipe_ms, faults) = (pipe_seconds * 1e3, piped.minor_faults);
    let fields = json!({ "seconds": pipe_seconds, "minor_faults": faults });
    event("pipe").fields(fields).say(format!(
        "pipe: {megabytes:.1} MB written into the kernel and read out again; the child summed it: \
         {} ({pipe_ms:.1} ms, {faults} minor faults in the child)",
        piped.sum
    ));
    drop(data);
    signals::bail_if_stopped()?;
    let (shared, fill_faults) = fill_shared(elements)?;
    let start = Instant::now();
    let mapped = in_shared_memory(&shared, args.hold)?;
    let shared_seconds = start.elapsed().as_secs_f64();
    let (shared_ms, faults) = (shared_seconds * 1e3, mapped.minor_faults);
    let fields = json!({ "seconds": shared_seconds, "minor_faults": faults });
    event("shared").fields(fields).say(format!(
        "shared: nothing copied; the parent's filling faulted in {fill_faults} pages, the child's \
         reading mapped them into its own page table: {faults} minor faults; the child summed \
         it: {} ({shared_ms:.1} ms)",
        mapped.sum
    ));
    let same = |sum: f64| sum.to_bits() == expected.to_bits(); // the same additions, in order
    let sums_equal = same(piped.sum) && same(mapped.sum);
    let speedup = pipe_seconds / shared_seconds;
    let summary = json!({
        "elements": elements, "bytes_copied": bytes, "pipe_seconds": pipe_seconds,
        "shared_seconds": shared_seconds, "speedup": speedup,
        "pipe_minor_faults": piped.minor_faults, "shared_minor_faults": mapped.minor_faults,
        "sums_equal": sums_equal, "expected_sum": expected, "pipe_sum": piped.sum,
        "shared_sum": mapped.sum,
    });
    event("summary").fields(summary).say(format!(
        "summary: pipe {pipe_ms:.1} ms, shared {shared_ms:.1} ms: shared is {speedup:.1}x faster; \
         sums equal: {sums_equal}"
    ));
    Ok(())
}

fn value(index: usize) -> f64 {
    (index % 1000) as f64 * 0.5
}

/// What the child reports each time.
#[derive(Serialize, Deserialize)]
struct ChildSum {
    sum: f64,
    minor_faults: u64,
}

/// `--elements`: at least 1, and small enough that the array fits in memory three times
/// (the parent's, the pipe child's buffer, the shared copy) — refused with the numbers
/// rather than died of.
fn elements_that_fit(text: &str) -> Result<usize, String> {
    let elements = (text.trim().parse::<u64>().ok())
        .filter(|elements| (1..=1 << 40).contains(elements))
        .ok_or_else(|| format!("{text:?} is not a count from 1 to 2^40"))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_mib = (meminfo.lines())
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(u64::MAX, |kib| kib / 1024);
    let needed_mib = elements.saturating_mul(8 * 3) >> 20;
    if needed_mib > available_mib {
        return Err(format!(
            "{elements} elements need about {needed_mib} MiB, more than the {available_mib} MiB \
             available (MemAvailable in /proc/meminfo)"
        ));
    }
    Ok(elements as usize)
}

/// Move an array of f64 from parent to child through a pipe, then through shared memory,
/// and compare: the child sums it both times; the time of each way, the bytes copied and
/// the child's minor page faults. Build with --release for meaningful times.
#[derive(Parser)]
#[command(after_help = "Examples:\n  copy_vs_share\n  copy_vs_share --elements 1000 --hold 30")]
struct Args {
    /// Elements in the array (8 bytes each; at least 1, and it must fit in memory).
    #[arg(long, value_name = "N", default_value = "10000000", value_parser = elements_that_fit)]
    elements: usize,

    /// Keep the child alive this long (0-3600 s) after it has read the shared array, to
    /// look at its mappings in /proc.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
