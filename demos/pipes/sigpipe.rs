//! sigpipe — writing into a pipe that nobody reads.
//!
//! Demonstrates: a write into a pipe with no read end open anywhere raises SIGPIPE; with
//! the signal ignored (as Rust programs start) the write fails with EPIPE and the program
//! goes on; with its default action the writer is killed, and a shell shows $? = 141.
//! Run:     cargo run --bin sigpipe
//! Observe: write() -> EPIPE, exit status 0; then killed by signal 13 (SIGPIPE).
//! Book:    book/src/pipes/pipe.md

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, getpid, pipe, write};
use proclab::narrate::event;
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(_args: &Args) -> anyhow::Result<()> {
    let ignored = write_with_no_reader(Sigpipe::Ignored)?;
    let default = write_with_no_reader(Sigpipe::Default)?;
    event("summary")
        .field("ignored", &ignored)
        .field("default", &default)
        .say(format!(
            "summary: SIGPIPE ignored -> {}; default action -> {}",
            ignored.status, default.status
        ));
    Ok(())
}

/// A child writes into a pipe whose only read end is closed; returns how it ended.
fn write_with_no_reader(action: Sigpipe) -> anyhow::Result<child::Ending> {
    let (read_end, write_end) = pipe().context("pipe")?;
    drop(read_end); // no reader anywhere: the child's write has nowhere to go
    let parent = getpid();
    // SAFETY: single-threaded here; the child may restore SIGPIPE's default action, writes
    // once, narrates the error it gets (if it lives) and calls _exit.
    let writer = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || {
            narrate::set_role("child");
            let how = match action {
                Sigpipe::Ignored => "SIGPIPE ignored (Rust)",
                Sigpipe::Default => {
                    // SAFETY: SIG_DFL runs no code of ours in signal context.
                    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }?; // now it kills
                    "SIGPIPE default"
                }
            };
            event("write").say(format!("{how}: write() into a pipe with no reader"));
            let error = write(&write_end, b"anyone?").expect_err("no reader: the write fails");
            event("write_failed")
                .field("errno", format!("{error:?}"))
                .say(format!(
                    "write() -> {error:?} ({}): the signal was ignored, the error is mine \
                     to handle",
                    error.desc()
                ));
            Ok(0)
        }),
        ForkResult::Parent { child } => child,
    };
    drop(write_end);
    let status = waitpid(writer, None).context("waitpid")?;
    let shell = match status {
        WaitStatus::Signaled(_, killer, _) => {
            format!("; a shell would show $? = {}", 128 + killer as i32)
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
    Ok(child::ending(&status))
}

/// What SIGPIPE does to the child that writes.
#[derive(Clone, Copy, PartialEq)]
enum Sigpipe {
    /// Ignored, as Rust's runtime sets it before `main`: the write fails with EPIPE.
    Ignored,
    /// The default action, as in a C program: the writer dies.
    Default,
}

/// Write into a pipe with no reader: EPIPE, or death by SIGPIPE.
///
/// A child writes into a pipe whose read end is closed everywhere, twice: first with
/// SIGPIPE ignored, as every Rust program starts, then with SIGPIPE's default action, as a
/// C program starts. The parent decodes how each child ended.
#[derive(Parser)]
#[command(after_help = "Example:\n  sigpipe")]
struct Args {
    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
