//! deaths — the children the sigchld programs reap, and the count of what is left.
//!
//! Demonstrates: nothing new — plumbing shared by sigchld, sigchld_signalfd, sigchld_pidfd
//! and sigchld_ignore: children forked to die one after another (or all at once), and,
//! after the reaping, the zombies left counted in /proc, the cleanup and the summary.
//! Run:     cargo run --bin sigchld            (a module of the four sigchld programs)
//! Observe: the events forked, all_zombies, zombies_left, cleanup and summary.
//! Book:    book/src/lifecycle/sigchld.md

#![allow(dead_code)] // each of the four programs uses its part

use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::inspect::{inspect, wait_for_state};
use proclab::narrate::event;
use proclab::{child, signals};

/// Without --simultaneous, the children's exits are spread over this time.
pub const SPREAD: Duration = Duration::from_secs(1);

/// Forks `count` children; child i sleeps (i + 1) × SPREAD / count (or not at all, if
/// `simultaneous`) and exits with i % 256. Narrates `forked`.
pub fn fork_children(count: u16, simultaneous: bool) -> anyhow::Result<Vec<i32>> {
    let (parent, count) = (getpid(), u32::from(count));
    let spread = if simultaneous { Duration::ZERO } else { SPREAD };
    let mut children = Vec::new();
    for index in 0..count {
        let delay = spread * (index + 1) / count;
        // SAFETY: single-threaded here; the child sleeps and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(parent, || {
                std::thread::sleep(delay);
                Ok((index % 256) as i32)
            }),
            ForkResult::Parent { child } => children.push(child.as_raw()),
        }
        if signals::stop_requested().is_some() {
            break; // Ctrl-C: fork no more
        }
    }
    let n = children.len();
    let text = match simultaneous {
        true => format!("forked {n} children; they exit all at once"),
        false => format!("forked {n} children; they exit over {SPREAD:?}"),
    };
    event("forked").field("pids", &children).say(text);
    Ok(children)
}

/// `--simultaneous`, with SIGCHLD blocked: waits until /proc shows every child a zombie,
/// and reads from /proc whether SIGCHLD is pending (one bit in ShdPnd, however many
/// deaths). Narrates `all_zombies`.
pub fn wait_all_zombies(children: &[i32]) -> anyhow::Result<()> {
    for &pid in children {
        wait_for_state(pid, 'Z', Duration::from_secs(10))?;
    }
    let status = procfs::process::Process::myself()?.status()?;
    let pending = status.shdpnd & (1 << (Signal::SIGCHLD as u64 - 1)) != 0;
    let text = format!(
        "kernel says all {} children are zombies; SIGCHLD pending: {pending} \
         (one signal, however many deaths)",
        children.len()
    );
    event("all_zombies").field("pending", pending).say(text);
    Ok(())
}

/// What a strategy did: its name (the summary's `reaper`), the SIGCHLD it received, how
/// many children it saw reaped, and by whom ("parent" or "kernel").
pub struct Reaped {
    pub reaper: &'static str,
    pub simultaneous: bool,
    pub signals: u64,
    pub count: usize,
    pub by: &'static str,
}

/// After the strategy: kills the children still running if a stop signal came, counts
/// the zombies left in /proc (the naive reaper's are kept 2 s for `ps`), reaps whatever
/// is left, and writes the summary.
pub fn account(children: &[i32], reaped: Reaped) -> anyhow::Result<()> {
    let interrupted = signals::stop_requested();
    if let Some(stop) = interrupted {
        for &pid in children {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let text = format!("interrupted by {stop}: killed the children still running");
        event("interrupted")
            .field("signal", stop.as_str())
            .say(text);
    }
    let zombies: Vec<i32> = children.iter().copied().filter(is_zombie).collect();
    let naive = reaped.reaper == "naive";
    if !zombies.is_empty() {
        let why = match (interrupted, naive) {
            (Some(_), _) => "not reaped yet: the demo was interrupted".to_owned(),
            (None, true) => format!(
                "{} SIGCHLD for {} deaths, and one waitpid per signal -- the bug",
                reaped.signals,
                children.len()
            ),
            (None, false) => format!("left by the {} strategy", reaped.reaper),
        };
        let text = format!(
            "kernel says {} children are still zombies: {why}",
            zombies.len()
        );
        event("zombies_left").field("pids", &zombies).say(text);
        if naive && interrupted.is_none() {
            let look = format!("ps -o pid,ppid,stat,cmd --ppid {}", getpid());
            event("hold")
                .field("pids", &zombies)
                .field("seconds", HOLD.as_secs_f64())
                .say(format!("holding them {HOLD:?}; see them with:  {look}"));
            signals::sleep(HOLD);
        }
    }
    let cleaned = reap_everything_left()?;
    if cleaned > 0 {
        let text = format!("cleanup: reaped the {cleaned} left");
        event("cleanup").field("reaped", cleaned).say(text);
    }
    let text = format!(
        "summary: {} children, {} SIGCHLD, {} reaped, {} zombies left by {}",
        children.len(),
        reaped.signals,
        reaped.count,
        zombies.len(),
        reaped.reaper
    );
    event("summary")
        .field("reaper", reaped.reaper)
        .field("simultaneous", reaped.simultaneous)
        .field("children", children.len())
        .field("signals", reaped.signals)
        .field("reaped", reaped.count)
        .field("reaped_by", reaped.by)
        .field("zombies_left", zombies.len())
        .field("interrupted", interrupted.map(Signal::as_str))
        .say(text);
    Ok(())
}

/// How long the naive reaper's zombies are kept for a look.
const HOLD: Duration = Duration::from_secs(2);

/// Whether /proc shows `pid` as a zombie.
pub fn is_zombie(pid: &i32) -> bool {
    inspect(*pid).is_ok_and(|view| view.state == 'Z')
}

/// Reaps every child left (they are dead or killed); returns how many.
fn reap_everything_left() -> anyhow::Result<usize> {
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => reaped += 1,
            Err(Errno::ECHILD) => return Ok(reaped),
            Err(Errno::EINTR) => {}
            Err(error) => return Err(error).context("waitpid(-1, WNOHANG)"),
        }
    }
}
