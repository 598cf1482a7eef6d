//! pipe — a one-way stream of bytes between related processes.
//!
//! Demonstrates: pipe() gives two descriptors, a read end and a write end, that a fork
//! shares; the reader sees EOF only when no write end is open anywhere; the kernel buffers
//! 64 KiB by default and a writer into a full pipe sleeps; writes of at most PIPE_BUF
//! (4096) bytes never interleave; a write with no reader raises SIGPIPE.
//! Run:     cargo run --bin pipe              (then --forget-close, --capacity, --atomic,
//!          --sigpipe, --bandwidth)
//! Observe: the records counted at EOF; a forgotten write end detected; 65536 bytes.
//! Book:    book/src/pipes/pipe.md

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe, pipe2, read, write};
use proclab::fdio::{read_exact, write_all};
use proclab::inspect::{fd_target, wait_for_state, wchan};
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger, Tag, Tally, encode};
use proclab::{child, cli, measure, narrate, signals};
use serde::{Deserialize, Serialize};

/// Send records through an anonymous pipe and watch EOF, capacity, atomicity, SIGPIPE.
///
/// By default the parent writes tagged records into a pipe and closes its write end; the
/// child reads until EOF and proves each record arrived exactly once. Each other mode
/// shows one property of pipes; pick at most one.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  pipe\n  pipe --forget-close\n  pipe --capacity --resize 1048576\n  \
                        pipe --atomic\n  pipe --sigpipe\n  pipe --bandwidth --chunk 4096"
)]
struct Args {
    /// Records to send (1-1000000; default 1000, or 100000 with --atomic, where it is
    /// rounded up to a multiple of the 4 writers).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: Option<u64>,

    /// The child keeps its copy of the write end open: EOF never comes. Detected, explained.
    #[arg(long, group = "mode")]
    forget_close: bool,

    /// Measure the pipe's capacity, resize it (F_SETPIPE_SZ), and block a writer on it.
    #[arg(long, group = "mode")]
    capacity: bool,

    /// Several writers at once, records of at most PIPE_BUF and larger: count torn ones.
    #[arg(long, group = "mode")]
    atomic: bool,

    /// Write into a pipe with no reader: EPIPE, or death by SIGPIPE.
    #[arg(long, group = "mode")]
    sigpipe: bool,

    /// Measure throughput on one CPU and across two.
    #[arg(long, group = "mode")]
    bandwidth: bool,

    /// With --capacity: the size to ask for with F_SETPIPE_SZ, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 262_144, requires = "capacity",
          value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    resize: u64,

    /// With --bandwidth: bytes per write (1-1048576).
    #[arg(long, value_name = "BYTES", default_value_t = 65_536, requires = "bandwidth",
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    chunk: u64,

    /// With --bandwidth: MiB sent per run (1-4096).
    #[arg(long, value_name = "MIB", default_value_t = 256, requires = "bandwidth",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    mebibytes: u64,

    /// With --bandwidth: the writer reads each chunk from /dev/zero before it writes it,
    /// as a producer gets its data from somewhere — and exactly as `dd if=/dev/zero`, the
    /// benchmark's reference, does.
    #[arg(long, requires = "bandwidth")]
    produce: bool,

    /// With --forget-close: how long the reader waits with neither data nor EOF before it
    /// calls it a hang (0.1-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = cli::seconds,
          requires = "forget_close")]
    timeout: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

/// The size of the records of the default mode.
const RECORD: usize = 64;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if args.capacity && args.resize > pipe_max_size() {
        let max = pipe_max_size();
        cli::usage_error(&format!(
            "--resize {} exceeds /proc/sys/fs/pipe-max-size ({max})",
            args.resize
        ));
    }
    if !(0.1..=60.0).contains(&args.timeout.as_secs_f64()) {
        cli::usage_error("--timeout must be between 0.1 and 60 seconds");
    }
    narrate::init(args.json, "parent");
    if let Err(error) = signals::catch_stop_signals() {
        return cli::exit_code(Err(error.into()));
    }
    cli::run_stoppable(|| {
        if args.capacity {
            capacity(args.resize)
        } else if args.atomic {
            atomic(args.records.unwrap_or(100_000))
        } else if args.sigpipe {
            sigpipe()
        } else if args.bandwidth {
            bandwidth(args.chunk as usize, args.mebibytes << 20, args.produce)
        } else {
            records(
                args.records.unwrap_or(1000),
                args.forget_close,
                args.timeout,
            )
        }
    })
}

/// What the reading child reports to the parent.
#[derive(Serialize, Deserialize)]
struct ReaderReport {
    tally: Tally,
    eof_seen: bool,
    hang_detected: bool,
}

fn records(count: u64, forget_close: bool, timeout: Duration) -> anyhow::Result<()> {
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
    // SAFETY: single-threaded here; the child reads, reports and calls _exit.
    let reader = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("child");
            drop(results);
            let forgotten = if forget_close {
                Some(write_end) // the bug: this copy keeps the pipe writable
            } else {
                drop(write_end);
                event("close").say(format!("close({write_fd}): I only read"));
                None
            };
            result_writer.send(&read_until_eof(read_end, forgotten, timeout, count)?)?;
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    drop((read_end, result_writer));
    event("fork")
        .field("child", reader.as_raw())
        .say(format!("fork() -> child {reader}, the reader"));
    event("close").say(format!("close({read_fd}): I only write"));
    // ANCHOR_END: pipe

    // ANCHOR: write
    for seq in 0..count {
        signals::bail_if_stopped()?;
        let record = encode(Tag { writer: 0, seq }, RECORD);
        write_all(&write_end, &record)?;
    }
    event("wrote")
        .field("records", count)
        .say(format!("wrote {count} records of {RECORD} bytes"));
    drop(write_end);
    event("close").say(format!("close({write_fd}): the last write end I hold"));
    // ANCHOR_END: write

    let report: ReaderReport = results.receive()?;
    let status = waitpid(reader, None).context("waitpid")?;
    let tally = report.tally;
    let mut summary = event("summary")
        .fields(tally)
        .field("eof_seen", report.eof_seen);
    if forget_close {
        summary = summary.field("hang_detected", report.hang_detected);
    }
    summary
        .field("reader", child::describe(&status))
        .say(format!(
            "summary: sent {}, received {} (exactly once: {}), EOF seen: {}",
            tally.sent,
            tally.received,
            tally.exactly_once(),
            report.eof_seen
        ));
    Ok(())
}

/// Reads records until EOF. Waits in `poll` with a time limit, so that a pipe that will
/// never reach EOF is noticed instead of blocking for ever.
// ANCHOR: read
fn read_until_eof(
    read_end: OwnedFd,
    mut forgotten: Option<OwnedFd>,
    timeout: Duration,
    sent: u64,
) -> anyhow::Result<ReaderReport> {
    let (mut decoder, mut ledger, mut hang_detected) = (Decoder::default(), Ledger::new(), false);
    let mut buffer = vec![0u8; 65_536];
    let limit = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    loop {
        let ready = poll(
            &mut [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)],
            limit,
        );
        if ready == Ok(0) {
            let Some(write_end) = forgotten.take() else {
                bail!("no data and no EOF for {timeout:?}")
            };
            explain_the_hang(&read_end, &write_end, timeout);
            drop(write_end);
            event("close").say("close(the forgotten write end): now EOF can come");
            hang_detected = true;
            continue;
        }
        let n = read(&read_end, &mut buffer).context("read")?;
        if n == 0 {
            event("eof").say("read() -> 0: EOF, no write end is open anywhere");
            let tally = ledger.check(&[sent]); // the count was decided before the fork
            return Ok(ReaderReport {
                tally,
                eof_seen: true,
                hang_detected,
            });
        }
        decoder
            .feed(&buffer[..n])
            .iter()
            .for_each(|found| ledger.note(found));
    }
}
// ANCHOR_END: read

fn explain_the_hang(read_end: &OwnedFd, write_end: &OwnedFd, timeout: Duration) {
    let me = getpid().as_raw();
    let read_target = fd_target(me, read_end.as_raw_fd()).unwrap_or_default();
    let write_target = fd_target(me, write_end.as_raw_fd()).unwrap_or_default();
    event("hang")
        .field("timeout_s", timeout.as_secs_f64())
        .say(format!(
            "no data and no EOF for {timeout:?}: some write end is still open. /proc/self/fd: \
         {} -> {read_target}, {} -> {write_target} -- it is mine, copied by fork and never closed",
            read_end.as_raw_fd(),
            write_end.as_raw_fd()
        ));
}

/// Fills a non-blocking pipe until write() says EAGAIN; returns the bytes it took.
// ANCHOR: fill
fn fill(write_end: &OwnedFd) -> anyhow::Result<usize> {
    let mut total = 0;
    for chunk in [4096, 1] {
        // 4096 bytes at a time, then byte by byte, to be sure not even one more byte fits.
        loop {
            match write(write_end, &vec![b'x'; chunk]) {
                Ok(n) => total += n,
                Err(Errno::EAGAIN) => break,
                Err(error) => return Err(error).context("write"),
            }
        }
    }
    Ok(total)
}
// ANCHOR_END: fill

fn pipe_max_size() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap_or_default();
    text.trim().parse().unwrap_or(1 << 20)
}

fn capacity(resize: u64) -> anyhow::Result<()> {
    // ANCHOR: capacity
    let (_read_end, write_end) = pipe2(OFlag::O_NONBLOCK).context("pipe2")?;
    let reported = fcntl(&write_end, FcntlArg::F_GETPIPE_SZ).context("F_GETPIPE_SZ")?;
    let filled = fill(&write_end)?;
    event("capacity")
        .field("bytes", filled)
        .field("f_getpipe_sz", reported)
        .say(format!(
            "wrote {filled} bytes before write() -> EAGAIN; fcntl(F_GETPIPE_SZ) -> {reported}"
        ));
    let max = pipe_max_size();
    let (_read_end, write_end) = pipe2(OFlag::O_NONBLOCK).context("pipe2")?;
    let granted =
        fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(resize as i32)).context("F_SETPIPE_SZ")?;
    let refilled = fill(&write_end)?;
    event("resized").field("asked", resize).field("granted", granted).field("bytes", refilled).say(format!(
        "fcntl(F_SETPIPE_SZ, {resize}) -> {granted} (limit for you: /proc/sys/fs/pipe-max-size = {max}); \
         a fresh pipe now takes {refilled} bytes"
    ));
    // ANCHOR_END: capacity
    let blocked_ms = blocked_writer(filled)?;
    event("summary")
        .field("capacity_bytes", filled)
        .field("f_getpipe_sz", reported)
        .field("resized_bytes", refilled)
        .field("pipe_max_size", max)
        .field("writer_blocked_ms", blocked_ms)
        .say(format!("summary: capacity {filled} bytes, {refilled} after resizing; a full pipe puts its writer to sleep"));
    Ok(())
}

/// A writer fills a blocking pipe and one byte more: it sleeps in the kernel until the
/// reader drains some. Returns how long the writer slept, in milliseconds.
// ANCHOR: blocked
fn blocked_writer(capacity: usize) -> anyhow::Result<f64> {
    let (read_end, write_end) = pipe().context("pipe")?;
    let (results, result_writer) = child::result_pipe()?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child writes, reports and calls _exit.
    let writer = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("writer");
            drop((read_end, results));
            write_all(&write_end, &vec![b'x'; capacity])?;
            event("full").say(format!(
                "wrote {capacity} bytes: the pipe is full; writing 1 more"
            ));
            let start = Instant::now();
            write_all(&write_end, b"!")?;
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
    let view = wait_for_state(writer.as_raw(), 'S', Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(100)); // let it sleep visibly
    let place = wchan(writer.as_raw()).unwrap_or_else(|| "?".into());
    event("sleeping")
        .field("child", writer.as_raw())
        .field("state", view.state.to_string())
        .field("wchan", &place)
        .say(format!(
            "kernel says writer {writer} is {} in {place}; reading 4096 bytes",
            view.state_in_words()
        ));
    read(&read_end, &mut [0u8; 4096]).context("read")?;
    let slept: f64 = drain_then(read_end, results)?;
    waitpid(writer, None).context("waitpid")?;
    Ok(slept)
}
// ANCHOR_END: blocked

/// Reads the pipe to EOF, then receives the child's result.
fn drain_then<T: serde::de::DeserializeOwned>(
    read_end: OwnedFd,
    results: child::ResultReader,
) -> anyhow::Result<T> {
    let mut buffer = vec![0u8; 65_536];
    while read(&read_end, &mut buffer).context("read")? > 0 {}
    results.receive()
}

/// Sizes for --atomic: most records fit in PIPE_BUF, every hundredth does not.
const SMALL: usize = 512;
const LARGE: usize = 69_632; // 17 pages: more than the whole default pipe
const WRITERS: u32 = 4;

fn atomic(total: u64) -> anyhow::Result<()> {
    let per_writer = total.div_ceil(u64::from(WRITERS));
    let size_of = |seq: u64| if seq % 100 == 99 { LARGE } else { SMALL };
    let (read_end, write_end) = pipe().context("pipe")?;
    let parent = getpid();
    let mut writers = Vec::new();
    // ANCHOR: atomic
    for writer in 0..WRITERS {
        // SAFETY: single-threaded here; each writer writes and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                drop(read_end);
                for seq in 0..per_writer {
                    let record = encode(Tag { writer, seq }, size_of(seq));
                    let written = write(&write_end, &record)?; // one write(2) per record
                    anyhow::ensure!(written == record.len(), "short write");
                }
                Ok(0)
            }),
            ForkResult::Parent { child } => writers.push(child),
        }
    }
    drop(write_end);
    event("writers")
        .field(
            "pids",
            writers.iter().map(|pid| pid.as_raw()).collect::<Vec<_>>(),
        )
        .say(format!(
            "{WRITERS} writers, {per_writer} records each, one write(2) per record: \
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
                *(if size <= libc::PIPE_BUF {
                    &mut small_torn
                } else {
                    &mut large_torn
                }) += 1;
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
    let (small, large): (Vec<Tag>, Vec<Tag>) = all_tags.partition(|tag| size_of(tag.seq) == SMALL);
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

fn sigpipe() -> anyhow::Result<()> {
    let mut statuses = Vec::new();
    for default_action in [false, true] {
        // ANCHOR: sigpipe
        let (read_end, write_end) = pipe().context("pipe")?;
        drop(read_end); // no reader anywhere: the child's write has nowhere to go
        let parent = getpid();
        // SAFETY: single-threaded here; the child writes once and calls _exit.
        let writer = match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("child");
                if default_action {
                    child::default_sigpipe()?; // as in a C program: SIGPIPE kills
                }
                let how = if default_action {
                    "SIGPIPE default"
                } else {
                    "SIGPIPE ignored (Rust)"
                };
                event("write").say(format!("{how}: write() into a pipe with no reader"));
                let error = write(&write_end, b"anyone?").expect_err("no reader: the write fails");
                event("write_failed").field("errno", format!("{error:?}")).say(format!(
                    "write() -> {error:?} ({}): the signal was ignored, the error is mine to handle",
                    error.desc()
                ));
                Ok(0)
            }),
            ForkResult::Parent { child } => child,
        };
        drop(write_end);
        let status = waitpid(writer, None).context("waitpid")?;
        // ANCHOR_END: sigpipe
        let shell = match status {
            WaitStatus::Signaled(_, signal, _) => {
                format!("; a shell would show $? = {}", 128 + signal as i32)
            }
            _ => String::new(),
        };
        event("wait")
            .field("child", writer.as_raw())
            .fields(child::ending(&status))
            .say(format!(
                "waitpid({writer}) -> {}{shell}",
                child::describe(&status)
            ));
        statuses.push(child::ending(&status));
    }
    event("summary")
        .field("ignored", &statuses[0])
        .field("default", &statuses[1])
        .say(format!(
            "summary: SIGPIPE ignored -> {}; default action -> {}",
            statuses[0].status, statuses[1].status
        ));
    Ok(())
}

/// One bandwidth sample: a writer pinned to `writer_cpu` sends `bytes` in `chunk`-byte
/// writes; this process, pinned to `reader_cpu`, reads them. MB/s from first byte to EOF.
fn bandwidth_sample(
    chunk: usize,
    bytes: u64,
    produce: bool,
    (writer_cpu, reader_cpu): (usize, usize),
) -> anyhow::Result<f64> {
    measure::pin_to_cpu(reader_cpu).context("sched_setaffinity")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    let parent = getpid();
    // SAFETY: single-threaded here; the child writes and calls _exit.
    let writer: Pid = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            drop(read_end);
            measure::pin_to_cpu(writer_cpu)?;
            let mut data = vec![b'x'; chunk];
            let source = produce
                .then(|| std::fs::File::open("/dev/zero"))
                .transpose()?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk as u64) as usize;
                if let Some(source) = &source {
                    read_exact(source, &mut data[..n])?; // as dd if=/dev/zero does
                }
                write_all(&write_end, &data[..n])?;
                left -= n as u64;
            }
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    drop(write_end);
    let mut buffer = vec![0u8; chunk.max(65_536)];
    let mut received = read(&read_end, &mut buffer).context("read")? as u64;
    let start = Instant::now();
    let mut timed = 0u64;
    loop {
        signals::bail_if_stopped()?;
        let n = read(&read_end, &mut buffer).context("read")? as u64;
        if n == 0 {
            break;
        }
        received += n;
        timed += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    waitpid(writer, None).context("waitpid")?;
    anyhow::ensure!(received == bytes, "received {received} of {bytes} bytes");
    Ok(timed as f64 / seconds / 1e6)
}

fn bandwidth(chunk: usize, bytes: u64, produce: bool) -> anyhow::Result<()> {
    let cpus = measure::usable_cpus();
    let mut placements = vec![("one CPU", cpus[0], cpus[0])];
    if let Some(&second) = cpus.get(1) {
        placements.push(("two CPUs", cpus[0], second));
    }
    event("method").say(format!(
        "method: {} MiB in {chunk}-byte writes{}, writer and reader pinned; MB/s from the first \
         byte read to EOF; 1 warm-up run, then the median of 5",
        bytes >> 20,
        if produce {
            ", each chunk read from /dev/zero first"
        } else {
            ""
        }
    ));
    let mut rows = Vec::new();
    for (placement, writer_cpu, reader_cpu) in placements {
        bandwidth_sample(chunk, bytes, produce, (writer_cpu, reader_cpu))?; // warm-up
        let samples: Vec<f64> = (0..5)
            .map(|_| bandwidth_sample(chunk, bytes, produce, (writer_cpu, reader_cpu)))
            .collect::<anyhow::Result<_>>()?;
        let (median, low, high) = (
            measure::median(&samples),
            measure::quantile(&samples, 0.0),
            measure::quantile(&samples, 1.0),
        );
        event("bandwidth")
            .field("placement", placement)
            .field("cpus", [writer_cpu, reader_cpu])
            .field("mb_per_s", median)
            .say(format!("{placement:<9} (CPU {writer_cpu} -> CPU {reader_cpu}): {median:8.0} MB/s  (range {low:.0}-{high:.0})"));
        rows.push(serde_json::json!({ "placement": placement, "cpus": [writer_cpu, reader_cpu], "mb_per_s": median, "min": low, "max": high }));
    }
    event("summary")
        .field("chunk_bytes", chunk)
        .field("bytes", bytes)
        .field("produce", produce)
        .field("rows", &rows)
        .say("summary: throughput through a pipe, median of 5 pinned runs per placement");
    Ok(())
}
