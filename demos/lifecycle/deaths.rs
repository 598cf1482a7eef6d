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
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::inspect::{inspect, wait_for_state};
use proclab::lifecycle::{self, count};
use proclab::narrate::event;
use proclab::{child, signals};

/// Without --simultaneous, the children's exits are spread over this time.
pub const SPREAD: Duration = Duration::from_secs(1);

/// Forks `how_many` children; child i sleeps (i + 1) × SPREAD / how_many (or not at all, if
/// `simultaneous`) and exits with i % 256. Narrates `forked`.
pub fn fork_children(how_many: u16, simultaneous: bool) -> anyhow::Result<Vec<i32>> {
    let (parent, total) = (getpid(), u32::from(how_many));
    let spread = if simultaneous { Duration::ZERO } else { SPREAD };
    let mut children = Vec::new();
    for index in 0..total {
        let delay = spread * (index + 1) / total;
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
    let text = match (simultaneous, children.len()) {
        (true, 1) => "forked 1 child; it exits at once".to_owned(),
        (true, n) => format!("forked {n} children; they exit all at once"),
        (false, 1) => format!("forked 1 child; it exits after {SPREAD:?}"),
        (false, n) => format!("forked {n} children; they exit over {SPREAD:?}"),
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
    let all = match children.len() {
        1 => "the child is a zombie".to_owned(),
        n => format!("all {n} children are zombies"),
    };
    let text =
        format!("kernel says {all}; SIGCHLD pending: {pending} (one signal, however many deaths)");
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

impl Reaped {
    /// What `reaper` did: `signals` received, `count` children reaped by the parent.
    pub fn new(reaper: &'static str, signals: u64, count: usize) -> Reaped {
        let (simultaneous, by) = (false, "parent");
        Reaped {
            reaper,
            simultaneous,
            signals,
            count,
            by,
        }
    }

    /// The same, with `--simultaneous`'s setting.
    pub fn simultaneous(self, simultaneous: bool) -> Reaped {
        Reaped {
            simultaneous,
            ..self
        }
    }
}

/// After the strategy: counts the zombies it left in /proc (the naive reaper's are kept
/// 2 s for `ps`), kills the children still running if a stop signal came, reaps whatever
/// is left, and writes the summary.
pub fn account(children: &[i32], reaped: Reaped) -> anyhow::Result<()> {
    let interrupted = signals::stop_requested();
    let zombies: Vec<i32> = children.iter().copied().filter(is_zombie).collect();
    let (n, naive) = (children.len(), reaped.reaper == "naive");
    if let Some(stop) = interrupted {
        for &pid in children {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let text = format!("interrupted by {stop}: killed the children still running");
        event("interrupted")
            .field("signal", stop.as_str())
            .say(text);
    }
    if !zombies.is_empty() {
        let why = match (interrupted, naive) {
            (Some(_), _) => "not reaped yet: the demo was interrupted".to_owned(),
            (None, true) => format!(
                "{} SIGCHLD for {}, and one waitpid per signal -- the bug",
                reaped.signals,
                count(n, "death", "deaths")
            ),
            (None, false) => format!("left by the {} strategy", reaped.reaper),
        };
        let left = count(
            zombies.len(),
            "child is still a zombie",
            "children are still zombies",
        );
        event("zombies_left")
            .field("pids", &zombies)
            .say(format!("kernel says {left}: {why}"));
        if naive && interrupted.is_none() {
            let look = format!("ps -o pid,ppid,stat,cmd --ppid {}", getpid());
            event("hold")
                .field("pids", &zombies)
                .field("seconds", HOLD.as_secs_f64())
                .say(format!("holding them {HOLD:?}; see them with:  {look}"));
            signals::sleep(HOLD);
        }
    }
    let cleaned = lifecycle::reap_every_child_left()?;
    if cleaned > 0 {
        event("cleanup")
            .field("reaped", cleaned)
            .say(format!("cleanup: reaped the {cleaned} left"));
    }
    let (signals, by) = (format!("{} SIGCHLD", reaped.signals), reaped.reaper);
    let text = match interrupted {
        // Not the strategy's fault: the stop came before every child had ended.
        Some(stop) => format!(
            "summary: {} of {n} children reaped by {by} ({signals}) before {stop}; \
             the cleanup reaped the rest",
            reaped.count
        ),
        None => format!(
            "summary: {}, {signals}, {} reaped, {} left by {by}",
            count(n, "child", "children"),
            reaped.count,
            count(zombies.len(), "zombie", "zombies")
        ),
    };
    event("summary")
        .field("reaper", reaped.reaper)
        .field("simultaneous", reaped.simultaneous)
        .field("children", n)
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
