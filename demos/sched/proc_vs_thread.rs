//! proc_vs_thread — what a process costs compared with a thread.
//!
//! Demonstrates: fork() copies the parent's page tables, fork+exec also loads a new
//! program, `std::process::Command` (posix_spawn: a vfork-like clone that shares the
//! parent's memory until exec) skips the copy, and a thread shares everything from the
//! start. In memory, idle children cost little because they share the parent's pages
//! copy-on-write: summed RSS counts each shared page once per process, PSS only once.
//! Run:     cargo run --release --bin proc_vs_thread      (add --hold 30 to look with ps)
//! Observe: a thread is several times cheaper than fork+exit; both exec'ing ways cost
//!          most (a new program is loaded); the children's summed PSS is a small
//!          fraction of their summed RSS.
//! Book:    book/src/sched/proc_vs_thread.md

use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode};
use std::thread::Builder;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execv, fork, getpid, pipe};
use proclab::fdio::read_exact;
use proclab::inspect::inspect;
use proclab::narrate::event;
use proclab::{child, cli, measure, narrate, signals};
use serde::Serialize;

/// Measure what it costs to create and finish a process, in three ways, and a thread;
/// then what idle processes and idle threads cost in memory.
///
/// Each way is timed --count times after a warm-up, pinned to one CPU: fork + _exit +
/// waitpid; fork + exec of /bin/true + waitpid; std::process::Command running /bin/true
/// (posix_spawn) + wait; thread spawn + join. Then --idle children, and --idle threads,
/// wait on a pipe while the demo sums their RSS and PSS from /proc/<pid>/smaps_rollup.
/// Build with --release for meaningful times.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  proc_vs_thread\n  proc_vs_thread --count 2000 --idle 200\n  \
                  proc_vs_thread --hold 30   (then: ps -o pid,ppid,nlwp,rss,cmd --ppid PID)"
)]
struct Args {
    /// Timed rounds per way of creating (1-100000).
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,

    /// Idle processes, then idle threads, to measure memory with (1-1000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    idle: u32,

    /// Keep the idle processes, then the idle threads, alive this long (0-3600 s) after
    /// measuring them, to look at them with ps and /proc.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

/// The tiny program the exec'ing ways run: it exits 0 at once.
const TRUE: &CStr = c"/bin/true";
/// Untimed rounds first: the first fork/exec of a session can take milliseconds.
const WARM_UP: u32 = 10;

/// One row of the creation table (and of the summary's `creation` array).
#[derive(Serialize)]
struct Creation {
    method: &'static str,
    median_us: f64,
    min_us: f64,
    max_us: f64,
}

/// One row of the memory table (and of the summary's `memory` array).
#[derive(Serialize)]
struct Memory {
    kind: &'static str,
    count: u32,
    rss_kib: u64,
    pss_kib: u64,
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let cpu = measure::usable_cpus()[0];
    measure::pin_to_cpu(cpu).context("sched_setaffinity")?; // children and threads inherit it
    event("pinned").field("cpu", cpu).say(format!(
        "pinned to CPU {cpu}; {} timed rounds per way, after {WARM_UP} warm-up rounds",
        args.count
    ));
    // Processes first: fork is only sound while this process has a single thread.
    let creation = vec![
        time("fork+exit", args.count, fork_exit)?,
        time("fork+exec", args.count, fork_exec)?,
        time("command", args.count, command)?,
        time("thread", args.count, thread)?,
    ];
    let (baseline_rss, baseline_pss) = rollup(std::process::id() as i32)?;
    event("baseline")
        .field("rss_kib", baseline_rss)
        .field("pss_kib", baseline_pss)
        .say(format!(
            "this process alone: Rss {baseline_rss} KiB, Pss {baseline_pss} KiB"
        ));
    let memory = vec![
        idle_processes(args.idle, args.hold, baseline_pss)?,
        idle_threads(args.idle, args.hold, baseline_pss)?,
    ];
    table(&creation, &memory);
    let ratio = creation[0].median_us / creation[3].median_us;
    event("summary")
        .field("cpu", cpu)
        .field("count", args.count)
        .field("creation", &creation)
        .field("memory", &memory)
        .field("baseline_rss_kib", baseline_rss)
        .field("baseline_pss_kib", baseline_pss)
        .say(format!(
            "summary: a thread is {ratio:.1}x cheaper to create than a fork; {} idle children \
             add {} KiB of Pss, {} idle threads {} KiB",
            args.idle,
            memory[0].pss_kib.saturating_sub(baseline_pss),
            args.idle,
            memory[1].pss_kib.saturating_sub(baseline_pss)
        ));
    Ok(())
}

/// Runs `once` WARM_UP times untimed, then `count` times timed; returns the row, in µs.
// ANCHOR: time
fn time(
    method: &'static str,
    count: u32,
    mut once: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Creation> {
    let mut samples = Vec::with_capacity(count as usize);
    for round in 0..WARM_UP + count {
        signals::bail_if_stopped()?;
        let start = Instant::now();
        once().with_context(|| format!("{method}, round {round}"))?;
        if round >= WARM_UP {
            samples.push(start.elapsed().as_nanos() as f64 / 1e3); // µs
        }
    }
    let row = Creation {
        method,
        median_us: measure::median(&samples),
        min_us: measure::quantile(&samples, 0.0),
        max_us: measure::quantile(&samples, 1.0),
    };
    event("creation")
        .fields(&row)
        .say(format!("{method}: median {:.1} µs", row.median_us));
    Ok(row)
}
// ANCHOR_END: time

// ANCHOR: ways
fn fork_exit() -> anyhow::Result<()> {
    // SAFETY: single-threaded here (threads come last); the child only calls _exit.
    match unsafe { fork() }.context("fork")? {
        // SAFETY: _exit ends the child at once, running none of the parent's code.
        ForkResult::Child => unsafe { libc::_exit(0) },
        ForkResult::Parent { child } => reap(child),
    }
}

fn fork_exec() -> anyhow::Result<()> {
    // SAFETY: single-threaded here; the child only calls execv, and _exit if it fails.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let _ = execv(TRUE, &[TRUE]); // returns only if it failed
            // SAFETY: _exit ends the child at once, running none of the parent's code.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => reap(child),
    }
}

fn command() -> anyhow::Result<()> {
    // std calls posix_spawn here: clone(CLONE_VM | CLONE_VFORK), then execve; then waitpid.
    let status = Command::new("/bin/true")
        .status()
        .context("spawn /bin/true")?;
    ensure!(status.success(), "/bin/true: {status}");
    Ok(())
}

fn thread() -> anyhow::Result<()> {
    let handle = Builder::new().spawn(|| ()).context("spawn a thread")?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("the thread panicked"))
}
// ANCHOR_END: ways

/// waitpid(child, 0) for a child that ends by itself at once: EINTR (a signal) is retried,
/// and no pidfd or poll is added to the time being measured.
fn reap(child: Pid) -> anyhow::Result<()> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(status) => bail!("child {child} {}", child::describe(&status)),
            Err(Errno::EINTR) => {}
            Err(error) => return Err(error).with_context(|| format!("waitpid({child})")),
        }
    }
}

/// Forks `count` children that sleep reading a pipe nobody writes; measures them with
/// this process; then closes the write end, so that each reads EOF and exits.
// ANCHOR: idle_processes
fn idle_processes(count: u32, hold: Duration, baseline_pss: u64) -> anyhow::Result<Memory> {
    let (read_end, write_end) = pipe().context("pipe")?;
    let parent = getpid();
    let mut children = Vec::new();
    for _ in 0..count {
        // SAFETY: single-threaded here; the child reads, then leaves through _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("idle");
                drop(write_end); // the parent's is then the last write end
                read_exact(&read_end, &mut [0])?; // sleeps until EOF: nobody writes
                Ok(0)
            }),
            ForkResult::Parent { child } => children.push(child.as_raw()),
        }
    }
    let mut measured = vec![parent.as_raw()];
    measured.extend(&children); // the parent and every child, summed
    let memory = observe("processes", count, &measured, &children, hold, baseline_pss);
    drop(write_end); // EOF: every child's read returns 0, and it exits
    for &pid in &children {
        child::wait_or_kill(Pid::from_raw(pid))?; // reaped, whatever happened above
    }
    signals::bail_if_stopped()?; // Ctrl-C killed them: no EOF to tell of
    event("released").field("kind", "processes").say(format!(
        "closed the write end: {count} children read EOF, exited, and were reaped"
    ));
    memory
}
// ANCHOR_END: idle_processes

/// Starts `count` threads that sleep reading a pipe nobody writes; measures this process;
/// then closes the write end, so that each reads EOF and returns, and joins them.
// ANCHOR: idle_threads
fn idle_threads(count: u32, hold: Duration, baseline_pss: u64) -> anyhow::Result<Memory> {
    let (read_end, write_end) = pipe().context("pipe")?;
    let me = std::process::id() as i32;
    let memory = std::thread::scope(|scope| {
        let _write_end: OwnedFd = write_end; // closed when this closure returns, `?` or not
        for _ in 0..count {
            Builder::new()
                .spawn_scoped(scope, || read_exact(&read_end, &mut [0])) // until EOF
                .context("spawn a thread")?;
        }
        let threads: Vec<i32> = std::fs::read_dir("/proc/self/task")?
            .filter_map(|task| task.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&tid| tid != me) // the main thread's id is the pid
            .collect();
        observe("threads", count, &[me], &threads, hold, baseline_pss)
    }); // the write end is closed: each thread reads EOF; scope() joins them all
    signals::bail_if_stopped()?; // a signal may have cut a thread's read short
    event("released").field("kind", "threads").say(format!(
        "closed the write end: {count} threads read EOF, returned, and were joined"
    ));
    memory
}
// ANCHOR_END: idle_threads

/// Once every one of `sleepers` sleeps, sums the Rss and Pss of `measured`, says it, and
/// holds for `hold`.
fn observe(
    kind: &'static str,
    count: u32,
    measured: &[i32],
    sleepers: &[i32],
    hold: Duration,
    baseline_pss: u64,
) -> anyhow::Result<Memory> {
    for &id in sleepers {
        loop {
            signals::bail_if_stopped()?;
            match inspect(id)?.state {
                'S' => break, // asleep in read(): it has touched all it will
                'Z' | 'X' => bail!("{id} ended before it went idle"),
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    let (mut rss_kib, mut pss_kib) = (0, 0);
    for &pid in measured {
        let (rss, pss) = rollup(pid)?;
        (rss_kib, pss_kib) = (rss_kib + rss, pss_kib + pss);
    }
    let per_one = pss_kib.saturating_sub(baseline_pss) as f64 / f64::from(count);
    let memory = Memory {
        kind,
        count,
        rss_kib,
        pss_kib,
    };
    let ids = if kind == "processes" { "pids" } else { "tids" };
    event("idle")
        .fields(&memory)
        .field(ids, sleepers)
        .say(format!(
            "{count} idle {kind}, all asleep: Rss {rss_kib} KiB, Pss {pss_kib} KiB over {} \
         {}: {per_one:.0} KiB of Pss each beyond the baseline",
            measured.len(),
            if measured.len() == 1 {
                "process"
            } else {
                "processes"
            }
        ));
    if !hold.is_zero() {
        let pid = measured[0];
        let look = match kind {
            "processes" => format!("ps -o pid,ppid,nlwp,rss,cmd --pid {pid} --ppid {pid}"),
            _ => format!("ls /proc/{pid}/task"),
        };
        event("hold")
            .field("seconds", hold.as_secs_f64())
            .say(format!("holding {hold:?}: try {look}"));
        signals::sleep(hold);
    }
    Ok(memory)
}

/// The `Rss:` and `Pss:` lines of /proc/<pid>/smaps_rollup, in KiB: the pages the process
/// has in memory, and the same with each page divided by the number of processes that
/// map it.
// ANCHOR: rollup
fn rollup(pid: i32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib = |name: &str| -> Option<u64> {
        let line = text.lines().find_map(|line| line.strip_prefix(name))?;
        line.trim().strip_suffix("kB")?.trim().parse().ok()
    };
    match (kib("Rss:"), kib("Pss:")) {
        (Some(rss), Some(pss)) => Ok((rss, pss)),
        _ => bail!("{path} has no Rss and Pss lines"),
    }
}
// ANCHOR_END: rollup

fn table(creation: &[Creation], memory: &[Memory]) {
    let line = |text: String| event("table").say(text);
    line(format!(
        "{:<10} {:>10} {:>10} {:>10}",
        "method", "median µs", "min µs", "max µs"
    ));
    for row in creation {
        let (median, min, max) = (row.median_us, row.min_us, row.max_us);
        line(format!(
            "{:<10} {median:>10.1} {min:>10.1} {max:>10.1}",
            row.method
        ));
    }
    line(format!(
        "{:<10} {:>10} {:>10} {:>10}",
        "kind", "count", "rss_kib", "pss_kib"
    ));
    for row in memory {
        let (count, rss, pss) = (row.count, row.rss_kib, row.pss_kib);
        line(format!("{:<10} {count:>10} {rss:>10} {pss:>10}", row.kind));
    }
}
