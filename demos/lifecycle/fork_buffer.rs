//! fork_buffer — text printed before fork can come out twice.
//!
//! Demonstrates: fork copies the whole process, the program's unflushed stdout buffer
//! included. A child that leaves through std::process::exit flushes its copy, so a
//! partial line printed once comes out twice; a child that leaves through _exit drops its
//! copy, and the line comes out once.
//! Run:     cargo run --bin fork_buffer
//! Observe: "the text appears 2x" after std::process::exit, "1x" after _exit.
//! Book:    book/src/lifecycle/fork_exec_wait.md

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, dup, dup2_stdout, fork, getpid, pipe};
use proclab::narrate::event;
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: pitfall
fn print_then_fork(marker: &str, exit: ChildExit) -> anyhow::Result<()> {
    print!("{marker}"); // no newline: the text waits in Rust's stdout buffer
    let parent = getpid();
    // SAFETY: single-threaded here; the child does nothing but leave, through
    // std::process::exit (which flushes its copy of stdout) or through _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => match exit {
            ChildExit::Flushing => std::process::exit(0), // flushes its copy of the buffer
            ChildExit::Immediate => child::run_then_exit(parent, || Ok(0)), // _exit(0): dropped
        },
        ForkResult::Parent { child } => {
            waitpid(child, None).with_context(|| format!("waitpid({child})"))?;
        }
    }
    println!(); // the parent's own copy goes out with its newline
    Ok(std::io::stdout().flush()?)
}
// ANCHOR_END: pitfall

fn run(_args: &Args) -> anyhow::Result<()> {
    let mut copies = serde_json::Map::new();
    for exit in [ChildExit::Flushing, ChildExit::Immediate] {
        let marker = format!("[printed once by {}, before fork] ", getpid());
        let caught = catch_stdout(|| print_then_fork(&marker, exit))?;
        let count = caught.matches(&marker).count();
        let how = exit.name();
        event("pitfall")
            .field("exit_via", how)
            .field("copies", count)
            .field("caught", &caught)
            .say(format!(
                "child left through {how}: stdout got {caught:?} -- the text appears {count}x"
            ));
        copies.insert(how.into(), count.into());
    }
    event("summary")
        .field("mode", "buffer-pitfall")
        .field("copies", &copies)
        .say(
            "summary: a forked child shares nothing, but it copies everything -- \
             unflushed buffers included; leave a child with _exit",
        );
    Ok(())
}

/// How the child leaves.
#[derive(Clone, Copy)]
enum ChildExit {
    /// `std::process::exit`: runs Rust's exit code, which flushes stdout.
    Flushing,
    /// `_exit`: ends the process at once; buffers are dropped.
    Immediate,
}

impl ChildExit {
    fn name(self) -> &'static str {
        match self {
            ChildExit::Flushing => "std::process::exit(0)",
            ChildExit::Immediate => "_exit(0)",
        }
    }
}

/// Runs `experiment` with fd 1 pointing into a pipe, and returns what was written there.
fn catch_stdout(experiment: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<String> {
    let saved_stdout: OwnedFd = dup(std::io::stdout()).context("dup(1)")?;
    let (read_end, write_end) = pipe().context("pipe")?;
    dup2_stdout(&write_end).context("dup2")?;
    drop(write_end); // fd 1 is now the only write end in this process
    let result = experiment();
    dup2_stdout(&saved_stdout).context("dup2")?; // the last write end closes: EOF
    result?;
    let mut caught = String::new();
    std::fs::File::from(read_end)
        .read_to_string(&mut caught)
        .context("read pipe")?;
    Ok(caught)
}

/// Print a partial line, fork, and count how often it reaches stdout.
///
/// The experiment runs twice: once with the child leaving through std::process::exit
/// (which flushes Rust's stdout buffer, the child's copy included), once through _exit
/// (which does not). The bytes that reach stdout are caught in a pipe and counted.
#[derive(Parser)]
#[command(after_help = "Examples:\n  fork_buffer\n  fork_buffer --json")]
struct Args {
    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
