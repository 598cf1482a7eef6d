//! fifo — a named pipe: a pipe that unrelated programs find by its path.
//!
//! Demonstrates: mkfifo() puts a pipe in the file system; a non-blocking open for writing
//! with no reader fails with ENXIO; two programs with no common ancestor meet at the path,
//! each one's open() waiting for the other (a rendezvous); once both ends are open the
//! name can go: the pipe lives on.
//! Run:     cargo run --bin fifo            (it builds fifo_reader and fifo_writer if need be)
//! Observe: the first side's open() returns only when the second side opens.
//! Book:    book/src/pipes/fifo.md

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::fcntl::{OFlag, open};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork, getpid, mkfifo};
use proclab::inspect::running;
use proclab::names::PrivateDir;
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "demo");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.delay > Duration::from_secs(60) {
        cli::usage_error("--delay is at most 60 seconds");
    }
    for side in ["fifo_reader", "fifo_writer"] {
        cli::sibling_program(side)?; // both exist before anything is made
    }
    // ANCHOR: mkfifo
    let mut dir = PrivateDir::new().context("mkdtemp")?; // mode 0700: nobody else gets in
    let path = dir.path().join("fifo");
    let shown = path.display();
    mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR).with_context(|| format!("mkfifo {shown}"))?;
    event("mkfifo")
        .field("path", &path)
        .field("dir", dir.path())
        .say(format!(
            "mkfifo({shown}, 0600) in a private directory (0700)"
        ));
    // ANCHOR_END: mkfifo

    // ANCHOR: enxio
    let error = open(
        &path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, // write, and do not wait
        Mode::empty(),                                          // (no file is created)
    )
    .expect_err("no reader yet");
    event("enxio").field("errno", format!("{error:?}")).say(format!(
        "open(O_WRONLY | O_NONBLOCK) with no reader -> {error:?} ({}): a writer may not wait, and nobody reads",
        error.desc()
    ));
    // ANCHOR_END: enxio

    // ANCHOR: start
    let roles = match args.writer_first {
        false => ["reader", "writer"],
        true => ["writer", "reader"],
    };
    let mut started = vec![(roles[0], start(roles[0], &path, args.records)?)];
    if signals::sleep(args.delay) {
        // Its open() ends the first one's wait.
        started.push((roles[1], start(roles[1], &path, args.records)?));
    }
    // ANCHOR_END: start

    // ANCHOR: unlink
    let both_open = started.len() == 2 && wait_until_open(&started, &path);
    if both_open {
        dir.remove().context("remove the FIFO and its directory")?; // the pipe lives on
        event("unlinked").field("dir_gone", !path.exists()).say(
            "both ends are open: removed the FIFO and its directory; the open descriptors keep the pipe alive",
        );
    }
    // ANCHOR_END: unlink

    let mut reader_ok = false;
    for &(role, pid) in &started {
        let status = child::wait_or_kill(pid)?;
        let ended = child::describe(&status);
        event("wait")
            .field("of", role)
            .field("child", pid.as_raw())
            .fields(child::ending(&status))
            .say(format!("waitpid({pid}) -> the {role} {ended}"));
        // fifo_reader exits 0 only if every record arrived exactly once.
        reader_ok |= role == "reader" && matches!(status, WaitStatus::Exited(_, 0));
    }
    dir.remove().context("remove the FIFO and its directory")?;
    event("summary")
        .field("path", &path)
        .field("first", roles[0])
        .field("sent", args.records)
        .field("exactly_once", reader_ok)
        .field("removed_while_open", both_open)
        .field("dir_gone", !dir.path().exists())
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(match signals::stop_requested() {
            Some(stop) => format!("summary: interrupted by {stop}; both sides ended, the FIFO removed"),
            None => format!(
                "summary: {} records from writer to reader through {shown}; the reader counted each exactly once: {reader_ok}",
                args.records
            ),
        });
    Ok(())
}

/// Starts `fifo_reader` or `fifo_writer` (built beside this program): a new program, which
/// inherits nothing from the demo but stdout, stderr and the clock (`--t0`).
// ANCHOR: exec
fn start(role: &'static str, path: &Path, records: u64) -> anyhow::Result<Pid> {
    let program = cli::sibling_program(&format!("fifo_{role}"))?; // target/debug/fifo_reader
    let shown = program.display();
    let mut command = Command::new(&program);
    command.arg(path).args(["--records", &records.to_string()]);
    command.args(["--t0", &narrate::start_ns().to_string()]); // our clock
    if role == "writer" {
        command.arg("--linger"); // keep the FIFO open until its name is gone
    }
    command.args(narrate::json().then_some("--json"));
    let parent = getpid();
    // SAFETY: single-threaded here, so the child may allocate; it execs the program
    // (Command::exec calls execvp) or, if that fails, prints one line and calls _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            Err(command.exec()).context(format!("exec {shown}"))
        }),
        ForkResult::Parent { child } => {
            event("start")
                .field("of", role)
                .field("child", child.as_raw())
                .say(format!("started the {role}: {child}"));
            Ok(child)
        }
    }
}
// ANCHOR_END: exec

/// Waits until every started process has the FIFO open (or one has already ended), by
/// reading the links in its /proc/<pid>/fd.
fn wait_until_open(started: &[(&str, Pid)], path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let has_it_open = |pid: Pid| {
        let fd_dir = format!("/proc/{pid}/fd");
        let mut fds = std::fs::read_dir(fd_dir).into_iter().flatten().flatten();
        fds.any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to == path))
    };
    while Instant::now() < deadline && signals::stop_requested().is_none() {
        if started.iter().all(|&(_, pid)| has_it_open(pid)) {
            return true;
        }
        if started.iter().any(|&(_, pid)| !running(pid.as_raw())) {
            return false; // one side ended early (an error): no rendezvous
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Move records through a named pipe between two unrelated programs.
///
/// The demo makes a FIFO in a private directory, shows that a non-blocking open for
/// writing fails with ENXIO while nobody reads, then starts fifo_reader and fifo_writer,
/// two programs that share nothing but the path. Each side's open() blocks until the
/// other side arrives. Once both ends are open, the FIFO and its directory are removed.
#[derive(Parser)]
#[command(after_help = "Examples:\n  fifo\n  fifo --writer-first\n  \
                        mkfifo /tmp/f; fifo_reader /tmp/f    (and in another terminal: fifo_writer /tmp/f)")]
struct Args {
    /// Records the writer sends (1-1000000).
    #[arg(long, value_name = "K", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: u64,

    /// Start the writer first: then it is the writer's open() that waits.
    #[arg(long)]
    writer_first: bool,

    /// How long the first side waits alone before the second is started (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0.3", value_parser = cli::seconds)]
    delay: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
