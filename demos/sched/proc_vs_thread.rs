//! proc_vs_thread — what a process costs compared with a thread.
//!
//! Demonstrates: fork() copies the parent's page tables, exec loads a new program, and a
//! thread shares everything from the start; idle children share the parent's pages
//! copy-on-write, so their summed RSS counts the same pages again and again, PSS once.
//! Run:     cargo run --release --bin proc_vs_thread      (add --hold 30 to look with ps)
//! Observe: a thread is several times cheaper than fork+exit, and idle children add little.
//! Book:    book/src/sched/proc_vs_thread.md

use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode};
use std::thread::Builder;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execv, fork, getpid, pipe};
use proclab::narrate::event;
use proclab::{child, cli, fdio, measure, narrate, signals};
use serde::Serialize;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: ways
fn run(args: &Args) -> anyhow::Result<()> {
    let (cpu, count) = (measure::usable_cpus()[0], args.count);
    measure::pin_to_cpu(cpu).context("sched_setaffinity")?; // children and threads inherit it
    let said = format!("pinned to CPU {cpu}; {count} timed rounds a way, after {WARM_UP} untimed");
    event("pinned").field("cpu", cpu).say(said);
    // Processes first: fork is only sound while this process has a single thread.
    let creation = [
        time("fork+exit", count, fork_exit)?,
        time("fork+exec", count, fork_exec)?,
        time("command", count, command)?,
        time("thread", count, thread)?,
    ];
    let baseline = baseline()?;
    let memory = [idle_processes(args)?, idle_threads(args)?];
    report(args, cpu, &creation, &memory, baseline);
    Ok(())
}

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
    let status = Command::new("/bin/true").status().context("/bin/true")?;
    ensure!(status.success(), "/bin/true: {status}");
    Ok(())
}

fn thread() -> anyhow::Result<()> {
    let handle = Builder::new().spawn(|| ()).context("spawn a thread")?;
    handle.join().expect("an empty thread cannot panic");
    Ok(())
}
// ANCHOR_END: ways

/// Times `once`, WARM_UP times untimed and `count` times timed; the row says it in µs.
// ANCHOR: time
fn time(method: &'static str, count: u32, once: Way) -> anyhow::Result<Creation> {
    let samples = measure::time_rounds(WARM_UP, count, once).context(method)?; // one by one
    let row = Creation {
        method,
        median_us: measure::median(&samples),
        min_us: measure::quantile(&samples, 0.0),
        max_us: measure::quantile(&samples, 1.0),
    };
    let said = format!("{method}: median {:.1} µs", row.median_us);
    event("creation").fields(&row).say(said);
    Ok(row)
}
// ANCHOR_END: time

/// Idle children asleep on a pipe nobody writes, measured; at EOF each exits.
// ANCHOR: idle_processes
fn idle_processes(args: &Args) -> anyhow::Result<Memory> {
    let (read_end, write_end) = pipe().context("pipe")?;
    let (parent, count) = (getpid(), args.idle);
    let mut children = Vec::new();
    for _ in 0..count {
        // SAFETY: single-threaded here; the child names itself, closes a descriptor,
        // sleeps in read() until EOF and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                narrate::set_role("idle");
                drop(write_end); // the parent's is then the last write end
                fdio::read_exact(&read_end, &mut [0])?; // sleeps until EOF: nobody writes
                Ok(0)
            }),
            ForkResult::Parent { child } => children.push(child.as_raw()),
        }
    }
    let measured = [&[parent.as_raw()], &children[..]].concat(); // the parent and every child
    let memory = observe("processes", &measured, &children, args);
    drop(write_end); // EOF: every child's read returns 0, and it exits
    for &pid in &children {
        child::wait_or_kill(Pid::from_raw(pid))?; // reaped, whatever happened above
    }
    signals::bail_if_stopped()?; // Ctrl-C killed them: no EOF to tell of
    let said = format!("closed the write end: {count} children read EOF, were reaped");
    event("released").field("kind", "processes").say(said);
    memory
}
// ANCHOR_END: idle_processes

/// Idle threads asleep on a pipe nobody writes, measured; at EOF each returns.
// ANCHOR: idle_threads
fn idle_threads(args: &Args) -> anyhow::Result<Memory> {
    let (read_end, write_end) = pipe().context("pipe")?;
    let (me, count) = (std::process::id() as i32, args.idle);
    let memory = std::thread::scope(|scope| {
        let _write_end: OwnedFd = write_end; // closed when this closure returns, `?` or not
        for _ in 0..count {
            Builder::new()
                .spawn_scoped(scope, || fdio::read_exact(&read_end, &mut [0])) // until EOF
                .context("spawn a thread")?;
        }
        let threads: Vec<i32> = std::fs::read_dir("/proc/self/task")?
            .filter_map(|task| task.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&tid| tid != me) // the main thread's id is the pid
            .collect();
        observe("threads", &[me], &threads, args)
    }); // the write end is closed: each thread reads EOF; scope() joins them all
    signals::bail_if_stopped()?; // a signal may have cut a thread's read short
    let said = format!("closed the write end: {count} threads read EOF, were joined");
    event("released").field("kind", "threads").say(said);
    memory
}
// ANCHOR_END: idle_threads

/// Once all `tasks` sleep, sums the Rss and Pss of `pids` (the `idle` event), and holds.
fn observe(kind: &'static str, pids: &[i32], tasks: &[i32], args: &Args) -> anyhow::Result<Memory> {
    measure::wait_until_asleep(tasks)?; // in read(): each has touched all it will
    let ((rss_kib, pss_kib), count) = (measure::rss_pss_kib(pids)?, args.idle);
    let ids = if kind == "processes" { "pids" } else { "tids" };
    let memory = Memory {
        kind,
        count,
        rss_kib,
        pss_kib,
    };
    let (processes, plural) = (pids.len(), if pids.len() > 1 { "es" } else { "" });
    let said = format!(
        "{count} idle {kind}, all asleep: Rss {rss_kib} KiB, Pss {pss_kib} KiB over {processes} process{plural}"
    );
    event("idle").fields(&memory).field(ids, tasks).say(said);
    if !args.hold.is_zero() {
        let (hold, pid) = (args.hold, pids[0]);
        let said =
            format!("holding {hold:?}: try ps -o pid,ppid,nlwp,rss,cmd --pid {pid} --ppid {pid}");
        event("hold").field("seconds", hold.as_secs_f64()).say(said);
        signals::sleep(hold);
    }
    Ok(memory)
}

/// This process alone, before the idle ones are made: the `baseline` event.
fn baseline() -> anyhow::Result<(u64, u64)> {
    let (rss_kib, pss_kib) = measure::rss_pss_kib(&[std::process::id() as i32])?;
    let said = format!("this process alone: Rss {rss_kib} KiB, Pss {pss_kib} KiB");
    let baseline = event("baseline").field("rss_kib", rss_kib);
    baseline.field("pss_kib", pss_kib).say(said);
    Ok((rss_kib, pss_kib))
}

/// waitpid(child, 0), retried on EINTR: no pidfd or poll is added to the time measured.
fn reap(child: Pid) -> anyhow::Result<()> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(status) => bail!("child {child} {}", child::describe(&status)),
            Err(nix::errno::Errno::EINTR) => {}
            Err(error) => return Err(error).with_context(|| format!("waitpid({child})")),
        }
    }
}

/// The two tables (`table` events, a line each) and the summary.
fn report(args: &Args, cpu: usize, creation: &[Creation], memory: &[Memory], base: (u64, u64)) {
    let line = |text: String| event("table").say(text);
    line("method      median µs     min µs     max µs".to_owned());
    for row in creation {
        let (way, median, min, max) = (row.method, row.median_us, row.min_us, row.max_us);
        line(format!("{way:<10} {median:>10.1} {min:>10.1} {max:>10.1}"));
    }
    line("kind            count    rss_kib    pss_kib".to_owned());
    for row in memory {
        let (kind, count, rss, pss) = (row.kind, row.count, row.rss_kib, row.pss_kib);
        line(format!("{kind:<10} {count:>10} {rss:>10} {pss:>10}"));
    }
    let (ratio, idle) = (creation[0].median_us / creation[3].median_us, args.idle);
    let [processes, threads] = [0, 1].map(|row| memory[row].pss_kib.saturating_sub(base.1));
    let each = processes as f64 / f64::from(idle);
    event("summary")
        .field("cpu", cpu)
        .field("count", args.count)
        .field("creation", creation)
        .field("memory", memory)
        .field("baseline_rss_kib", base.0)
        .field("baseline_pss_kib", base.1)
        .say(format!(
            "summary: a thread is {ratio:.1}x cheaper to create than a fork; {idle} idle children \
             add {processes} KiB of Pss ({each:.0} each), {idle} idle threads {threads} KiB"
        ));
}

/// The tiny program the exec'ing ways run: it exits 0 at once.
const TRUE: &std::ffi::CStr = c"/bin/true";
/// Untimed rounds first: the first fork/exec of a session can take milliseconds.
const WARM_UP: u32 = 10;
/// A way of creating something that runs, and of waiting for its end.
type Way = fn() -> anyhow::Result<()>;

/// A row of the creation table and of the summary's `creation` array.
#[derive(Serialize)]
struct Creation {
    method: &'static str,
    median_us: f64,
    min_us: f64,
    max_us: f64,
}

/// A row of the memory table and of the summary's `memory` array.
#[derive(Serialize)]
struct Memory {
    kind: &'static str,
    count: u32,
    rss_kib: u64,
    pss_kib: u64,
}

/// Measure what it costs to create and finish a process, in three ways, and a thread;
/// then what idle processes and idle threads cost in memory (RSS and PSS).
#[derive(Parser)]
#[command(after_help = "Examples:\n  proc_vs_thread --idle 200\n  proc_vs_thread --hold 30")]
struct Args {
    /// Timed rounds per way of creating (1-100000), after 10 untimed ones.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,

    /// Idle processes, then idle threads, to measure memory with (1-1000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    idle: u32,

    /// Keep the idle processes, then the idle threads, this long (0-3600 s) to look at them.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
