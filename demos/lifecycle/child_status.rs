//! child_status — how waitpid tells a parent the way its child ended.
//!
//! Demonstrates: the kernel keeps one int for the parent: the low 8 bits of an exit
//! status, or the number of the signal that killed the child and a core-dump bit; the
//! macros WIFEXITED/WEXITSTATUS and WIFSIGNALED/WTERMSIG/WCOREDUMP take it apart. A child
//! whose exec fails exits 127 (not found) or 126 (not runnable), as shells do.
//! Run:     cargo run --bin child_status           (then --exit-code 300? --signal SEGV, --exec nope)
//! Observe: the raw status word, and what the macros read in it.
//! Book:    book/src/lifecycle/fork_exec_wait.md

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::lifecycle::Fate;
use proclab::narrate::event;
use proclab::{child, cli, lifecycle, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let fate = Fate::chosen(args.signal, &args.exec, args.exit_code);
    let parent = getpid();
    // SAFETY: single-threaded here; the child reads its name from /proc and narrates
    // (both allocate), then exits, kills itself, or execs (and calls _exit if that fails).
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(parent, || in_child(&fate)),
        ForkResult::Parent { child } => child,
    };
    event("fork")
        .field("child", child.as_raw())
        .say(format!("fork() -> child {child}"));
    let status = wait_and_decode(child)?;
    let ending = child::ending(&status);
    lifecycle::say_waited(child, &ending); // and whether /proc/<child> is gone
    event("summary")
        .field("mode", fate.mode())
        .field("child", child.as_raw())
        .fields(&ending)
        .say(format!("summary: child {child} {}", ending.status));
    Ok(())
}

// ANCHOR: wait
/// The C call `waitpid(child, &status, 0)`; then waitpid(2)'s macros read the status word.
fn wait_and_decode(child: Pid) -> anyhow::Result<WaitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        if signals::stop_requested().is_some() {
            let _ = kill(child, Signal::SIGKILL); // Ctrl-C or SIGTERM: end the child, reap it
        }
        // SAFETY: waitpid writes one int into `status`, which lives until after the call.
        let result = unsafe {
            libc::waitpid(
                child.as_raw(), // this child (-1 would be: any child)
                &mut status,    // where the kernel writes how it ended
                0,              // no flags: block until it has ended
            )
        };
        match Errno::result(result) {
            Err(Errno::EINTR) => continue, // a stop signal (no SA_RESTART): check, wait again
            Err(error) => return Err(error).with_context(|| format!("waitpid({child})")),
            Ok(_) => break,
        }
    }
    let (decoded, macros);
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status); // bits 8-15: the low byte of _exit's argument
        macros = format!("WIFEXITED, WEXITSTATUS = {code}");
        decoded = WaitStatus::Exited(child, code);
    } else if libc::WIFSIGNALED(status) {
        let number = libc::WTERMSIG(status); // bits 0-6: the signal's number
        let core = libc::WCOREDUMP(status); // bit 7: the kernel wrote a core file
        macros = format!("WIFSIGNALED, WTERMSIG = {number}, WCOREDUMP = {core}");
        decoded = WaitStatus::Signaled(child, Signal::try_from(number)?, core);
    } else {
        bail!("waitpid({child}) gave {status:#x}: neither an exit nor a death by signal");
    }
    let text = format!("status word {status:#06x}: {macros}");
    event("raw_status")
        .field("child", child.as_raw())
        .field("raw", status)
        .say(text);
    Ok(decoded)
}
// ANCHOR_END: wait

/// The child's side: say who it is, then meet its fate (exit status: for `_exit`).
// ANCHOR: child
fn in_child(fate: &Fate) -> anyhow::Result<i32> {
    narrate::set_role("child");
    lifecycle::say_who_i_am()?; // pid, parent's pid, and the name /proc gives it
    let me = getpid();
    match fate {
        Fate::Exit(code) => {
            let text = format!("_exit({code})");
            event("exit").field("code", code).say(text);
            Ok(*code)
        }
        Fate::Signal(signal) => {
            let text = format!("kill({me}, {signal})");
            event("kill").field("signal", signal.as_str()).say(text);
            child::prepare_to_die_by(*signal)?; // default action, unblocked, no core file
            kill(me, *signal)?;
            bail!("{signal} did not kill the child") // not reached: the signal is fatal
        }
        Fate::Exec(argv) => lifecycle::exec(argv), // execvp, as fork_exec_wait writes it out
    }
}
// ANCHOR_END: child

/// fork() a child that ends one chosen way (by default _exit(7)), wait for it with the C
/// call waitpid(pid, &status, 0), and take the status word apart with its macros.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  child_status\n  child_status --signal SEGV\n  \
                  child_status --exec nope"
)]
struct Args {
    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,

    /// The child exits with status N (0-255; 7 if no other ending is chosen).
    #[arg(long, value_name = "N", conflicts_with_all = ["signal", "exec"])]
    exit_code: Option<u8>,

    /// The child is killed by this signal (KILL, TERM, SEGV, ABRT, 9…).
    #[arg(long, value_name = "NAME", value_parser = cli::fatal_signal, conflicts_with = "exec")]
    signal: Option<Signal>,

    /// The child execs this program and its arguments (last: it takes the rest of the line).
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    exec: Vec<String>,
}
