//! sigchld_pidfd — one file descriptor per child, readable when that child ends.
//!
//! Demonstrates: pidfd_open(2) gives a descriptor that refers to one process (never to a
//! later process with the same pid); poll() reports it readable once the process has
//! ended, and waitid(P_PIDFD) reaps exactly that child. No signal is involved, nothing
//! merges, and no other part of the program's children can be reaped by mistake.
//! Run:     cargo run --bin sigchld_pidfd
//! Observe: "pidfd of N readable -> waitid(P_PIDFD)" once per child; 0 SIGCHLD counted.
//! Book:    book/src/lifecycle/sigchld.md

mod deaths; // plumbing: fork the children, count what is left after the reaping

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "parent");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let children = deaths::fork_children(args.children, false)?;
    let mut waiting = Vec::new(); // (pid, its pidfd), until it is reaped
    for &pid in &children {
        waiting.push((pid, pidfd_open(pid)?));
    }
    let count = reap_by_pidfd(waiting)?;
    deaths::account(&children, deaths::Reaped::new("pidfd", 0, count))
}

// ANCHOR: pidfd_open
/// A descriptor for process `pid`, which becomes readable when the process ends.
fn pidfd_open(pid: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours, and returns a
    // new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open, // no libc wrapper before glibc 2.36: the raw system call
            pid,                  // the process; if it is already gone: ESRCH
            0,                    // flags: none (PIDFD_NONBLOCK would make waitid not block)
        )
    };
    if fd < 0 {
        return Err(Errno::last()).with_context(|| format!("pidfd_open({pid})"));
    }
    // SAFETY: the kernel just made this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
// ANCHOR_END: pidfd_open

/// Polls every child's pidfd; reaps each child whose pidfd is readable with
/// waitid(P_PIDFD), which waits for that child alone. Returns how many it reaped.
// ANCHOR: reap
fn reap_by_pidfd(mut waiting: Vec<(i32, OwnedFd)>) -> anyhow::Result<usize> {
    let mut reaped = 0;
    while !waiting.is_empty() && signals::stop_requested().is_none() {
        let mut polled: Vec<PollFd> = waiting
            .iter()
            .map(|(_, pidfd)| PollFd::new(pidfd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut polled, 100u16) {
            Ok(_) | Err(Errno::EINTR) => {} // (a stop signal interrupts it: checked above)
            Err(error) => return Err(error).context("poll"),
        }
        let ended: Vec<bool> = polled.iter().map(|fd| fd.any().unwrap_or(false)).collect();
        let mut ended = ended.into_iter();
        for (pid, pidfd) in std::mem::take(&mut waiting) {
            if !ended.next().unwrap_or(false) {
                waiting.push((pid, pidfd)); // still running
                continue;
            }
            let status = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED)
                .with_context(|| format!("waitid(P_PIDFD) for {pid}"))?;
            let ending = child::ending(&status);
            let text = format!(
                "pidfd of {pid} readable -> waitid(P_PIDFD) -> {}",
                ending.status
            );
            event("reap").field("child", pid).fields(ending).say(text);
            reaped += 1;
        } // each reaped child's pidfd is closed here
    }
    Ok(reaped)
}
// ANCHOR_END: reap

/// Fork children that exit one after another over a second; open a pidfd for each, poll
/// them all, and reap each child with waitid(P_PIDFD) as its pidfd becomes readable.
#[derive(Parser)]
#[command(after_help = "Examples:\n  sigchld_pidfd\n  sigchld_pidfd --children 1000 --json")]
struct Args {
    /// How many children (1-1000).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    children: u16,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
