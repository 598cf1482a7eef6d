//! sigchld_ignore — SIGCHLD set to SIG_IGN: the kernel reaps the children itself.
//!
//! Demonstrates: a parent that sets SIGCHLD's action to SIG_IGN (explicitly: the default
//! action also ignores the signal, but does not do this) tells the kernel it will never
//! wait. Its children leave no zombie — and no status: a blocking waitpid() waits until
//! they have all gone, then fails with ECHILD.
//! Run:     cargo run --bin sigchld_ignore
//! Observe: waitpid(-1) -> ECHILD; /proc shows every child gone, and no zombie.
//! Book:    book/src/lifecycle/sigchld.md

mod deaths; // plumbing: fork the children, count what is left after the reaping

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::waitpid;
use proclab::inspect::exists;
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    // ANCHOR: ignore
    let ignore = SigAction::new(
        SigHandler::SigIgn, // the kernel discards SIGCHLD, and reaps the children itself
        SaFlags::empty(),   // (SA_NOCLDWAIT would do the reaping part alone)
        SigSet::empty(),    // no signal to block: no handler ever runs
    );
    // SAFETY: SIG_IGN runs no code of ours.
    unsafe { sigaction(Signal::SIGCHLD, &ignore) }.context("sigaction(SIGCHLD, SIG_IGN)")?;
    // ANCHOR_END: ignore

    let children = deaths::fork_children(args.children, false)?;
    // ANCHOR: wait
    let result = loop {
        match waitpid(None, None) {
            Err(Errno::EINTR) if signals::stop_requested().is_none() => continue,
            other => break other, // ECHILD once every child is gone; or a stop signal
        }
    };
    let gone = children.iter().filter(|&&pid| !exists(pid)).count(); // reaped by the kernel
    let zombies = children
        .iter()
        .filter(|&pid| deaths::is_zombie(pid))
        .count();
    let answer = match result {
        Ok(status) => child::describe(&status),
        Err(errno) => format!("{errno:?} ({})", errno.desc()),
    };
    let n = children.len();
    event("wait_ignored")
        .field("errno", result.err().map(|errno| format!("{errno:?}")))
        .field("gone", gone)
        .field("zombies", zombies)
        .say(format!(
            "waitpid(-1) -> {answer}: no status to collect; \
             kernel says {gone} of {n} children are gone, {zombies} zombies"
        ));
    // ANCHOR_END: wait
    deaths::account(
        &children,
        deaths::Reaped {
            by: "kernel",
            ..deaths::Reaped::new("ignore", 0, gone)
        },
    )
}

/// Set SIGCHLD to SIG_IGN, fork children that exit one after another over a second, wait
/// for them, and see that the kernel has reaped them all and kept no status.
#[derive(Parser)]
#[command(after_help = "Examples:\n  sigchld_ignore\n  sigchld_ignore --children 100 --json")]
struct Args {
    /// How many children (1-1000).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    children: u16,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
