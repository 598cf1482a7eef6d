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
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid, fork, getpid, mkfifo};
use proclab::fifo::{OpenWatch, Watched};
use proclab::names::PrivateDir;
use proclab::narrate::event;
use proclab::{child, cli, fifo, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "demo");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    for side in ["fifo_reader", "fifo_writer"] {
        cli::sibling_program(side)?; // both exist before anything is made
    }
    // ANCHOR: mkfifo
    // SAFETY: single-threaded here; the guard waits on a pipe, removes the directory
    // (allocating) and calls _exit.
    let mut dir = unsafe { PrivateDir::guarded() }?; // mode 0700: nobody else gets in
    let path = dir.path().join("fifo");
    let shown = path.display();
    mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR).with_context(|| format!("mkfifo {shown}"))?;
    fifo::say_made(&path, &dir); // and the guard's pid
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
    let mut opens = OpenWatch::new(&path).context("inotify")?; // sees each open() complete
    let roles = match args.writer_first {
        false => ["reader", "writer"],
        true => ["writer", "reader"],
    };
    let mut started = vec![(roles[0], start(roles[0], &path, args.records)?)];
    // The second comes after --delay, unless the first is gone: its open() would never return.
    let mut seen = opens.wait(&[started[0].1], Some(args.delay))?;
    if seen == Watched::TimedOut {
        started.push((roles[1], start(roles[1], &path, args.records)?));
        seen = opens.wait(&[started[0].1, started[1].1], None)?; // both open, or one gone
    }
    // ANCHOR_END: start

    // ANCHOR: unlink
    if seen == Watched::Opened {
        dir.remove().context("remove the FIFO and its directory")?; // the pipe lives on
        event("unlinked").field("dir_gone", !path.exists()).say(
            "both ends are open: removed the FIFO and its directory; the open descriptors keep the pipe alive",
        );
    }
    // ANCHOR_END: unlink
    let early = fifo::ended_early(&started, seen); // narrated: whose open() would wait for ever
    let end_them = early.is_some() || signals::stop_requested().is_some();
    let reader_ok = fifo::reap_sides(&mut started, end_them)?; // the reader's exit 0: exactly once
    dir.remove().context("remove the FIFO and its directory")?;
    if let Some(role) = early {
        bail!("the {role} ended before the other side opened the FIFO: no rendezvous");
    }
    fifo::say_summary(&path, roles[0], args.records, reader_ok, seen, dir.path());
    Ok(())
}

/// Starts `fifo_reader` or `fifo_writer` (built beside this program): a new program, which
/// inherits nothing from the demo but stdout, stderr and the clock (`--t0`).
// ANCHOR: exec
fn start(role: &'static str, path: &Path, records: u64) -> anyhow::Result<Pid> {
    let mut command = fifo::command_for(role, path, records)?; // the path, --records, --t0
    let shown = Path::new(command.get_program()).display().to_string();
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

/// Move records through a named pipe between two unrelated programs (fifo_reader, fifo_writer).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  fifo\n  fifo --writer-first    # now the writer's open() waits"
)]
struct Args {
    /// Records the writer sends (1-1000000).
    #[arg(long, value_name = "K", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records: u64,

    /// Start the writer first: then it is the writer's open() that waits.
    #[arg(long)]
    writer_first: bool,

    /// How long the first side waits alone before the second is started (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0.3", value_parser = cli::seconds_up_to(60.0))]
    delay: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
