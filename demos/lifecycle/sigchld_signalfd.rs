//! sigchld_signalfd — SIGCHLD read as data from a file descriptor, with no handler.
//!
//! Demonstrates: with SIGCHLD blocked, the kernel keeps it pending and signalfd(2) hands
//! it over in a read(), in the program's own loop, beside pipes and sockets. Merging
//! still happens — one read per pending signal, however many deaths — so the reaping loop
//! is the same as with a handler: waitpid(-1, WNOHANG) until nothing is left.
//! Run:     cargo run --bin sigchld_signalfd -- --simultaneous
//! Observe: one read(signalfd) for N deaths, and N reaps after it.
//! Book:    book/src/lifecycle/sigchld.md

mod deaths; // plumbing: fork the children, count what is left after the reaping

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use proclab::narrate::event;
use proclab::{cli, lifecycle, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Everything that decides how SIGCHLD is received must be in place before the first
    // child can die.
    // ANCHOR: signalfd
    let sigchld = SigSet::from(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigchld), None)?; // never delivered: only pending
    let signal_fd = SignalFd::with_flags(
        &sigchld,                                       // the signals this descriptor reads
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC, // reads never block; not inherited by exec
    )
    .context("signalfd")?;
    // ANCHOR_END: signalfd

    let children = deaths::fork_children(args.children, args.simultaneous)?;
    if args.simultaneous {
        deaths::wait_all_zombies(&children)?; // still blocked: one pending signal
    }
    let (signals, count) = reap_from_signalfd(&children, &signal_fd)?;
    let reaped = deaths::Reaped::new("signalfd", signals, count);
    deaths::account(&children, reaped.simultaneous(args.simultaneous))
}

/// Reads SIGCHLD from the signalfd as it becomes readable, and after each read reaps
/// until nothing is left; returns the signals read and the children reaped.
// ANCHOR: read
fn reap_from_signalfd(children: &[i32], signal_fd: &SignalFd) -> anyhow::Result<(u64, usize)> {
    let (mut read, mut reaped) = (0, 0);
    while reaped < children.len() && signals::stop_requested().is_none() {
        signals::wait_readable(Some(signal_fd.as_fd()), Duration::from_millis(100));
        while let Some(info) = signal_fd.read_signal()? {
            read += 1; // one pending signal, which may stand for several deaths
            let text = format!(
                "read(signalfd) -> SIGCHLD #{read} (sent for {})",
                info.ssi_pid
            );
            event("signal").field("from", info.ssi_pid).say(text);
            while reap_one()? {
                reaped += 1;
            }
        }
    }
    Ok((read, reaped))
}
// ANCHOR_END: read

/// One `waitpid(-1, WNOHANG)`: reaps one child that has ended, if there is one.
fn reap_one() -> anyhow::Result<bool> {
    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => Ok(false), // none ended / none left
        Ok(status) => {
            lifecycle::say_reaped_any(&status); // its pid and how it ended
            Ok(true)
        }
        Err(Errno::EINTR) => Ok(false),
        Err(error) => Err(error).context("waitpid(-1, WNOHANG)"),
    }
}

/// Fork children that exit one after another over a second, block SIGCHLD and read it
/// from a signalfd; after each read, reap with waitpid(-1, WNOHANG) until none is left.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  sigchld_signalfd\n  sigchld_signalfd --simultaneous\n  \
                        sigchld_signalfd --children 1000"
)]
struct Args {
    /// How many children (1-1000).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    children: u16,

    /// Let every child exit (all zombies) before the first read: one signal, N deaths.
    #[arg(long)]
    simultaneous: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
