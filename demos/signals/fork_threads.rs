//! fork_threads — fork in a multithreaded program: a lock held by another thread stays held.
//!
//! Demonstrates: fork copies only the calling thread. A lock another thread held at that
//! moment (here Rust's stdout lock, which println! takes) is held in the child for ever,
//! by a thread that does not exist there: the child's println! sleeps on a futex, and
//! /proc says Threads: 1. The safe ways: exec at once (std::process::Command), or a child
//! that calls only async-signal-safe functions (write, _exit). This program breaks
//! proclab's rule "fork only from single-threaded code" on purpose, to show why it exists.
//! Run:     cargo run --bin fork_threads
//! Observe: the child asleep in futex_do_wait with 1 thread; Command and write+_exit work.
//! Book:    book/src/signals/signals.md

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, fork, getpid, pipe};
use proclab::narrate::event;
use proclab::{child, cli, inspect, narrate, signals};
use serde_json::json;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    // ANCHOR: holder
    let (holding, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let printer = std::thread::spawn(move || {
        let stdout = std::io::stdout().lock(); // what println! takes for every line
        let _ = holding.send(());
        let _ = released.recv(); // until the main thread is done (or gone)
        drop(stdout);
    });
    held.recv().context("the printer thread died")?;
    // ANCHOR_END: holder
    let parent = getpid();
    let threads = inspect::inspect(parent.as_raw())?.threads;
    let text = format!("{threads} threads; the second holds stdout's lock");
    event("holding").field("threads", threads).say(text);
    // ANCHOR: fork
    // SAFETY: NOT single-threaded: proclab's rule broken on purpose, the lesson. The child
    // runs proclab's child set-up (it allocates: glibc's fork leaves malloc usable) and
    // println!, which waits for ever for the printer thread's lock; the parent kills it.
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("child");
            event("println").say("println!(\"hello\")");
            println!("hello"); // stdout's lock: held by a thread that is not in this process
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    // ANCHOR_END: fork
    let pid = child.as_raw();
    let start = Instant::now();
    while start.elapsed() < args.deadline && inspect::running(pid) {
        signals::sleep(Duration::from_millis(10));
        signals::bail_if_stopped()?;
    }
    anyhow::ensure!(inspect::running(pid), "{child} ended before the deadline");
    let view = inspect::inspect(pid)?;
    let wchan = inspect::wchan(pid).unwrap_or_default();
    let fields = json!({"child": pid, "state": view.state.to_string(), "wchan": wchan,
        "child_threads": view.threads, "parent_threads": threads});
    event("stuck").fields(fields).say(format!(
        "after {:?}, kernel says {child} is {} in {wchan}, with {} thread \
         (the parent has {threads})",
        args.deadline,
        view.state_in_words(),
        view.threads
    ));
    kill(child, Signal::SIGKILL).context("kill(SIGKILL)")?; // nothing else ends it
    let ended = child::describe(&child::wait_or_kill(child)?);
    let text = format!("waitpid({child}) -> {ended}");
    event("reaped").field("status", &ended).say(text);
    // ANCHOR: safe
    let echo = Command::new("echo")
        .arg("hello")
        .output()
        .context("run echo")?;
    let printed = String::from_utf8_lossy(&echo.stdout).trim().to_owned();
    event("command")
        .fields(json!({"status": echo.status.code(), "printed": printed}))
        .say(format!(
            "Command::new(\"echo\") -> {}, printed {printed:?}",
            echo.status
        ));
    let (read_end, write_end) = pipe().context("pipe")?;
    // SAFETY: not single-threaded either (the rule broken again), but the child calls only
    // write(2) and _exit(2), which are async-signal-safe: it takes no lock.
    let writer = match unsafe { fork() }.context("fork")? {
        // SAFETY: write(2) of a static string, then _exit(2): async-signal-safe calls.
        ForkResult::Child => unsafe {
            libc::write(write_end.as_raw_fd(), b"hello".as_ptr().cast(), 5);
            libc::_exit(0)
        },
        ForkResult::Parent { child } => child,
    };
    // ANCHOR_END: safe
    drop(write_end); // ours: the read below ends when the child's copy closes
    let mut written = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut written)
        .context("read(pipe)")?;
    let ended = child::describe(&child::wait_or_kill(writer)?);
    event("safe_child")
        .fields(json!({"status": ended, "wrote": written}))
        .say(format!(
            "fork() -> {writer}: write(2) {written:?} and _exit(0); waitpid -> {ended}"
        ));
    drop(release);
    printer.join().expect("the printer thread only waits");
    event("summary")
        .fields(json!({"stuck_in": wchan, "command_printed": printed, "wrote": written}))
        .say("summary: println! hung in the child; exec and write+_exit did not");
    Ok(())
}

/// Hold stdout's lock in a second thread and fork: the child's println! waits for ever,
/// and the parent, after a deadline, shows it asleep with one thread, kills and reaps it;
/// then run echo with Command and fork a child that only calls write(2) and _exit(2).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  fork_threads\n  fork_threads --deadline 10     \
                        # then: grep Threads /proc/<child>/status"
)]
struct Args {
    /// How long the parent gives the child to print before it kills it (0-60 s).
    #[arg(long, value_name = "SECONDS", default_value = "0.5",
          value_parser = cli::seconds_up_to(60.0))]
    deadline: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
