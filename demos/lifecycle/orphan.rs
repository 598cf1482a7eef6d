//! orphan — a child whose parent exits first is adopted.
//!
//! Demonstrates: when a process exits, the kernel gives its living children a new parent:
//! the nearest ancestor that declared itself a child subreaper, or else PID 1 (init). The
//! orphan sees it as a change of getppid(); its new parent is the one that reaps it.
//! Run:     cargo run --bin orphan            (add -- --no-subreaper for the system's way)
//! Observe: the orphan's PPid in /proc changes from its parent's pid to the adopter's.
//! Book:    book/src/lifecycle/orphan.md

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe};
use proclab::inspect::inspect;
use proclab::lifecycle::{self, reap, until_ended};
use proclab::narrate::event;
use proclab::{child, cli, narrate};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "reaper");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let demo = getpid();
    // ANCHOR: subreaper
    if !args.no_subreaper {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes a flag and touches no memory of ours.
        let result = unsafe {
            libc::prctl(
                libc::PR_SET_CHILD_SUBREAPER, // the option: adopt the orphans below me
                1 as libc::c_ulong,           // its argument: 1 = on, 0 = off
            )
        };
        Errno::result(result).context("prctl(PR_SET_CHILD_SUBREAPER)")?;
        event("subreaper").say("prctl(PR_SET_CHILD_SUBREAPER, 1): orphans below me come to me");
    }
    // ANCHOR_END: subreaper

    let (from_parent, to_demo) = pipe().context("pipe")?; // the parent reports its child's pid
    let (release, release_orphan) = pipe().context("pipe")?; // EOF here lets the orphan end
    // SAFETY: single-threaded here; the child narrates (which allocates), forks once,
    // writes to a pipe and calls _exit.
    let parent = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(demo, || {
            drop(release_orphan); // only the demo may hold it: its close, or death, is the signal
            be_the_parent(to_demo, release)
        }),
        ForkResult::Parent { child } => child,
    };
    drop((to_demo, release));
    event("fork")
        .field("child", parent.as_raw())
        .say(format!("fork() -> parent {parent}"));
    let mut pid = [0u8; 4]; // the parent's report: its child's pid
    File::from(from_parent).read_exact(&mut pid)?;
    let orphan = Pid::from_raw(i32::from_ne_bytes(pid));
    let orphaned = format!("the parent is gone, its child {orphan} is an orphan");
    reap(parent, &orphaned)?;
    // ANCHOR: adopted
    let adopter = inspect(orphan.as_raw())?.ppid; // the kernel's answer: who is its parent now?
    let adopter_name = inspect(adopter).map(|view| view.comm).unwrap_or_default();
    lifecycle::say_adopted(orphan, adopter, &adopter_name, demo); // me, or not me?
    // ANCHOR_END: adopted
    let orphan_fd = child::pidfd_open(orphan).context("pidfd_open")?; // readable at its end
    if !args.hold.is_zero() {
        lifecycle::say_holding_orphan(orphan, args.hold); // and the ps command to look
        until_ended(orphan_fd.as_fd(), args.hold); // you may kill it to look: the hold ends with it
    }
    drop(release_orphan); // the orphan's read returns: it exits
    // ANCHOR: reap
    if adopter == demo.as_raw() {
        reap(orphan, "I adopted it, so I reap it")?; // my child now, like any other
    } else {
        // Not my child: waitpid would fail with ECHILD. Wait on its pidfd until it ends.
        while !until_ended(orphan_fd.as_fd(), Duration::from_secs(10)) {
            let _ = kill(orphan, Signal::SIGKILL); // Ctrl-C: it must not outlive us
        }
        event("ended").field("child", orphan.as_raw()).say(format!(
            "kernel says {orphan} has ended; reaping it is {adopter}'s job, not mine"
        ));
    }
    // ANCHOR_END: reap
    let subreaper = (!args.no_subreaper).then_some(demo.as_raw());
    lifecycle::say_orphan_summary(orphan, parent, adopter, &adopter_name, subreaper);
    Ok(())
}

/// The middle process: fork the orphan-to-be, let it see us, tell the demo its pid, exit.
// ANCHOR: parent
fn be_the_parent(to_demo: OwnedFd, release: OwnedFd) -> anyhow::Result<i32> {
    narrate::set_role("parent");
    let me = getpid();
    let (seen, saw_me) = pipe()?;
    // SAFETY: single-threaded here; the child narrates (which allocates), watches
    // getppid, waits on a pipe and calls _exit.
    let orphan = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_unbound_then_exit(|| be_the_orphan(me, saw_me, release)),
        ForkResult::Parent { child } => child,
    };
    drop((saw_me, release));
    event("fork")
        .field("child", orphan.as_raw())
        .say(format!("fork() -> child {orphan}"));
    File::from(seen).read_exact(&mut [0u8])?; // wait until the child has seen me
    File::from(to_demo).write_all(&orphan.as_raw().to_ne_bytes())?;
    event("exit").say(format!("_exit(0) without waiting for {orphan}"));
    Ok(0)
}
// ANCHOR_END: parent

/// The orphan: watch getppid() until it changes; live until the demo releases it.
// ANCHOR: orphan
fn be_the_orphan(parent: Pid, saw_parent: OwnedFd, release: OwnedFd) -> anyhow::Result<i32> {
    narrate::set_role("child");
    let before = getppid();
    event("started")
        .field("ppid", before.as_raw())
        .say(format!("getppid() -> {before}"));
    File::from(saw_parent).write_all(b"!")?; // now the parent may go
    while getppid() == parent {
        std::thread::sleep(Duration::from_millis(1)); // until the kernel gives me a new parent
    }
    let after = getppid();
    event("reparented")
        .field("ppid", after.as_raw())
        .field("was", before.as_raw())
        .say(format!(
            "getppid() -> {after}, was {before}: my parent exited and I was adopted"
        ));
    // No parent-death signal can bind an orphan to the demo; a pipe can. The read returns
    // when the demo closes its end, or dies.
    let _ = File::from(release).read(&mut [0u8]);
    event("exit").say("released: _exit(0)");
    Ok(0)
}
// ANCHOR_END: orphan

/// Make an orphan (a child whose parent exits) and watch who adopts it and reaps it.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  orphan\n  orphan --hold 3      # then run the ps command it prints\n  orphan --no-subreaper --json"
)]
struct Args {
    /// Let the system adopt the orphan instead of the demo.
    #[arg(long)]
    no_subreaper: bool,

    /// Keep the adopted orphan alive this long (0-3600 s), to look at it from outside.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = cli::seconds)]
    hold: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}
