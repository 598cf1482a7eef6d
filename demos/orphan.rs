//! orphan — a child whose parent exits first is adopted.
//!
//! Demonstrates: when a process exits, the kernel gives its living children a new parent:
//! the nearest ancestor that declared itself a child subreaper, or else PID 1 (init). The
//! orphan sees it as a change of getppid(); its new parent is the one that reaps it.
//! Run:     cargo run --bin orphan            (add -- --no-subreaper for the system's way)
//! Observe: the orphan's PPid in /proc changes from its parent's pid to the adopter's.
//! Book:    book/src/lifecycle/orphan.md
//!
//! Three processes: the demo (role "reaper"), a parent it forks, and the orphan the parent
//! forks. Ctrl-C kills the orphan and reaps what is ours, then the demo dies by SIGINT.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe};
use proclab::inspect::{inspect, running};
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

/// Make an orphan and watch who adopts it.
///
/// The demo marks itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), forks a parent,
/// which forks a child and exits. The child watches getppid() change from its parent's
/// pid to the demo's; the demo, now its parent, reaps it. With --no-subreaper the system
/// adopts the orphan (PID 1, or a subreaper such as systemd --user): the demo names the
/// adopter and makes sure the orphan still ends.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  orphan\n  orphan --hold 30       (then: ps -o pid,ppid,stat,cmd -p PID)\n  \
                        orphan --no-subreaper --json"
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

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "reaper");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    signals::catch_stop_signals()?;
    let demo = getpid();
    // ANCHOR: subreaper
    if !args.no_subreaper {
        child::become_subreaper().context("prctl(PR_SET_CHILD_SUBREAPER)")?;
        event("subreaper").say("prctl(PR_SET_CHILD_SUBREAPER, 1): orphans below me come to me");
    }
    // ANCHOR_END: subreaper

    let (from_parent, to_demo) = pipe().context("pipe")?; // the parent reports its child's pid
    let (release, release_orphan) = pipe().context("pipe")?; // EOF here lets the orphan end
    // SAFETY: single-threaded here; the child narrates, forks once and calls _exit.
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
    let orphan = read_pid(from_parent).context("the parent did not report its child")?;
    let status = child::wait_or_kill(parent)?;
    event("reap")
        .field("child", parent.as_raw())
        .fields(child::ending(&status))
        .say(format!(
            "waitpid({parent}) -> {}: the parent is gone, its child {orphan} is an orphan",
            child::describe(&status)
        ));

    // ANCHOR: adopted
    let adopter = inspect(orphan.as_raw())?.ppid; // the kernel's answer: who is its parent now?
    let adopter_name = inspect(adopter).map(|view| view.comm).unwrap_or_default();
    let who = if adopter == demo.as_raw() {
        "me, the subreaper"
    } else {
        "not me"
    };
    event("adopted")
        .field("child", orphan.as_raw())
        .field("ppid", adopter)
        .field("comm", &adopter_name)
        .say(format!(
            "kernel says {orphan}'s parent is now {adopter} ({adopter_name}): {who}"
        ));
    // ANCHOR_END: adopted

    if !args.hold.is_zero() {
        let seconds = args.hold.as_secs_f64();
        event("hold").field("child", orphan.as_raw()).field("seconds", seconds).say(format!(
            "keeping the orphan alive {seconds}s; see it with:  ps -o pid,ppid,stat,cmd -p {orphan}"
        ));
        signals::sleep(args.hold);
    }
    drop(release_orphan);
    if adopter == demo.as_raw() {
        reap_adopted(orphan)?;
    } else {
        wait_for_the_end(orphan, adopter)?;
    }

    let subreaper = (!args.no_subreaper).then_some(demo.as_raw());
    event("summary")
        .field("child", orphan.as_raw())
        .field("parent_before", parent.as_raw())
        .field("parent_after", adopter)
        .field("adopter", &adopter_name)
        .field("subreaper", subreaper)
        .field("interrupted", signals::stop_requested().map(Signal::as_str))
        .say(format!(
            "summary: orphan {orphan} went from parent {parent} to {adopter} ({adopter_name})"
        ));
    Ok(())
}

/// The middle process: fork the orphan-to-be, wait until it has seen us as its parent,
/// report its pid to the demo, and exit.
// ANCHOR: parent
fn be_the_parent(to_demo: OwnedFd, release: OwnedFd) -> anyhow::Result<i32> {
    narrate::set_role("parent");
    let me = getpid();
    let (seen, child_saw_me) = pipe()?;
    // SAFETY: single-threaded here; the child watches getppid and calls _exit.
    let orphan = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            child::run_unbound_then_exit(|| be_the_orphan(me, child_saw_me, release))
        }
        ForkResult::Parent { child } => child,
    };
    drop((child_saw_me, release));
    event("fork")
        .field("child", orphan.as_raw())
        .say(format!("fork() -> child {orphan}"));
    File::from(seen).read_exact(&mut [0u8])?; // wait until the child has seen me
    File::from(to_demo).write_all(&orphan.as_raw().to_ne_bytes())?;
    event("exit").say(format!("_exit(0) without waiting for {orphan}"));
    Ok(0)
}
// ANCHOR_END: parent

/// The orphan: note its parent, then watch getppid() until it changes; live until the
/// demo releases it.
// ANCHOR: orphan
fn be_the_orphan(parent: Pid, saw_parent: OwnedFd, release: OwnedFd) -> anyhow::Result<i32> {
    narrate::set_role("child");
    let before = getppid();
    event("started")
        .field("ppid", before.as_raw())
        .say(format!("getppid() -> {before}"));
    File::from(saw_parent).write_all(b"!")?; // now the parent may go
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = getppid();
        if now != parent {
            break now;
        }
        if Instant::now() > deadline {
            bail!("parent {parent} did not exit");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
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

/// Subreaper mode: the orphan is our child now, so we wait for it like any child.
// ANCHOR: reap
fn reap_adopted(orphan: Pid) -> anyhow::Result<()> {
    let status = child::wait_or_kill(orphan)?; // waitpid(orphan, 0); Ctrl-C kills it first
    event("reap")
        .field("child", orphan.as_raw())
        .fields(child::ending(&status))
        .say(format!(
            "waitpid({orphan}) -> {}: I adopted it, so I reap it",
            child::describe(&status)
        ));
    Ok(())
}
// ANCHOR_END: reap

/// No-subreaper mode: the orphan is not our child, and waitpid would fail with ECHILD.
/// Watch /proc until it has ended; its adopter reaps it.
fn wait_for_the_end(orphan: Pid, adopter: i32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(orphan.as_raw()) {
        if signals::stop_requested().is_some() {
            let _ = kill(orphan, Signal::SIGKILL);
        }
        if Instant::now() > deadline {
            kill(orphan, Signal::SIGKILL).context("kill")?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    event("ended").field("child", orphan.as_raw()).say(format!(
        "kernel says {orphan} has ended; reaping it is {adopter}'s job, not mine"
    ));
    Ok(())
}

fn read_pid(from: OwnedFd) -> anyhow::Result<Pid> {
    let mut bytes = [0u8; 4];
    File::from(from).read_exact(&mut bytes)?;
    Ok(Pid::from_raw(i32::from_ne_bytes(bytes)))
}
