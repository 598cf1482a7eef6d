//! supervisor — the skeleton of a master that keeps one worker alive in each slot.
//!
//! Demonstrates: a supervisor forks each slot's worker with the stop signals blocked
//! across the fork, reaps ended workers by slot with waitpid(-1, WNOHANG) once SIGCHLD
//! says one ended, and forks replacements when they are due — backing off, then giving
//! up, when a slot's workers keep dying as they start (a respawn storm).
//! Run:     cargo run --bin worker_pool -- --crash-at-start   (prefork uses it too)
//! Observe: `spawn`, `reaped` and `backoff` events, then "giving up" after 5 in a row.
//! Book:    book/src/patterns/worker_pool.md

use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::narrate::event;
use proclab::{child, narrate, signals};

// ANCHOR: fork_worker
/// Forks the worker of `slot`: the child (role "worker") runs `body` and `_exit`s with
/// the status it returns. The `stop_signals` are blocked across the fork: the child
/// inherits the mask, so a Ctrl-C to the whole group stays pending in it until its body
/// has decided what the signal means to a worker; the master unblocks them at once.
///
/// # Safety
/// The caller must be single-threaded: fork(2) copies only the calling thread.
pub unsafe fn fork_worker(
    slot: usize,
    stop_signals: &[Signal],
    body: impl FnOnce() -> anyhow::Result<i32>,
) -> anyhow::Result<Pid> {
    let master = getpid();
    let stop_signals: SigSet = stop_signals.iter().copied().collect();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals), None)?; // pending, not delivered
    // SAFETY: the caller is single-threaded; the child runs `body` and calls _exit.
    let forked = unsafe { fork() };
    if !matches!(forked, Ok(ForkResult::Child)) {
        sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_signals), None)?; // a pending one: now
    }
    match forked.context("fork")? {
        ForkResult::Child => child::run_then_exit(master, || {
            narrate::set_role("worker");
            body()
        }),
        ForkResult::Parent { child } => {
            event("spawn")
                .field("slot", slot)
                .field("worker", child.as_raw())
                .say(format!("fork() -> worker {child} in slot {slot}"));
            Ok(child)
        }
    }
}
// ANCHOR_END: fork_worker

/// What the supervisor needs to know of a worker: its pid.
pub trait Supervised {
    fn pid(&self) -> Pid;
}

/// A child that ended, as `waitpid` said, and the slot it served in (None: no worker).
pub struct Reaped {
    pub pid: Pid,
    pub slot: Option<usize>,
    pub status: WaitStatus,
}

/// The slots and their workers, and when each empty slot is due its next fork.
pub struct Supervisor<W> {
    /// Per slot: its worker while it runs; None once reaped, until it is replaced.
    pub slots: Vec<Option<W>>,
    respawn_at: Vec<Option<Instant>>,
    /// Per slot: how many of its workers in a row died at their start.
    pub backoff: StartBackoff,
    sigchld_seen: u64,
}

impl<W: Supervised> Supervisor<W> {
    /// `slots` empty slots, and SIGCHLD caught.
    pub fn new(slots: usize, give_up_after: u32) -> nix::Result<Supervisor<W>> {
        signals::catch(Signal::SIGCHLD)?; // a dead worker wakes the master's poll
        Ok(Supervisor {
            slots: (0..slots).map(|_| None).collect(),
            respawn_at: vec![None; slots],
            backoff: StartBackoff::new(slots, give_up_after),
            sigchld_seen: signals::count(Signal::SIGCHLD),
        })
    }

    /// The workers running now.
    pub fn workers(&self) -> impl Iterator<Item = &W> {
        self.slots.iter().flatten()
    }

    // ANCHOR: reap
    /// True if a SIGCHLD came since the last call: only then can a worker have ended.
    pub fn sigchld_came(&mut self) -> bool {
        let count = signals::count(Signal::SIGCHLD);
        let came = count != self.sigchld_seen;
        self.sigchld_seen = count; // (a child dying while the caller reaps counts next time)
        came
    }

    /// Reaps one child that has ended, if any, and finds its slot: `waitpid(-1, WNOHANG)`.
    /// Call it until it returns None: SIGCHLD signals merge, so one signal may stand for
    /// several ended children. The worker stays in its slot for the caller to take.
    pub fn reap_one(&self) -> anyhow::Result<Option<Reaped>> {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(error).context("waitpid(-1, WNOHANG)"),
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue }; // (no pid: not an ending)
            let slot = self
                .slots
                .iter()
                .position(|w| w.as_ref().is_some_and(|w| w.pid() == pid));
            return Ok(Some(Reaped { pid, slot, status }));
        }
    }
    // ANCHOR_END: reap

    // ANCHOR: respawn
    /// Schedules the next fork of `slot`, whose worker has ended, in `delay` (or at once).
    pub fn respawn_after(&mut self, slot: usize, delay: Duration) {
        self.respawn_at[slot] = Some(Instant::now() + delay);
    }

    /// A slot whose next fork is due now, taken off the schedule: fork its worker.
    pub fn due(&mut self) -> Option<usize> {
        let now = Instant::now();
        let slot = self
            .respawn_at
            .iter()
            .position(|at| at.is_some_and(|at| now >= at))?;
        self.respawn_at[slot] = None;
        Some(slot)
    }
    // ANCHOR_END: respawn

    /// When the next fork is due, if one is scheduled: the master's poll must wake by then.
    pub fn next_respawn(&self) -> Option<Instant> {
        self.respawn_at.iter().flatten().min().copied()
    }

    /// Forks no more replacements: the master is stopping.
    pub fn cancel_respawns(&mut self) {
        self.respawn_at.iter_mut().for_each(|at| *at = None);
    }
}

// ANCHOR: backoff
/// A supervisor's defence against a *respawn storm*: per slot, it counts the children
/// that died before they were ready, in a row, and waits longer before each new fork —
/// 100 ms, 200, 400, 800 — until, after `give_up_after` in a row, it gives up.
pub struct StartBackoff {
    in_a_row: Vec<u32>,
    give_up_after: u32,
}

impl StartBackoff {
    /// No failure yet, in any of `slots` slots.
    pub fn new(slots: usize, give_up_after: u32) -> StartBackoff {
        StartBackoff {
            in_a_row: vec![0; slots],
            give_up_after,
        }
    }

    /// The slot's child got through its start: its next failure counts from one again.
    pub fn started(&mut self, slot: usize) {
        self.in_a_row[slot] = 0;
    }

    /// The slot's child died before it was ready (`what`, in words; `status`: how it
    /// ended): event `backoff`, and how long to wait before the next fork; or give up.
    pub fn failed(&mut self, slot: usize, what: &str, status: &str) -> anyhow::Result<Duration> {
        self.in_a_row[slot] += 1;
        let in_a_row = self.in_a_row[slot];
        if in_a_row >= self.give_up_after {
            anyhow::bail!(
                "giving up: the worker of slot {slot} {what} {in_a_row} times in a row \
                 (last: {status}); forking more would only repeat that"
            );
        }
        let delay = Duration::from_millis(100 << (in_a_row - 1));
        event("backoff")
            .field("slot", slot)
            .field("delay_seconds", delay.as_secs_f64())
            .say(format!(
                "slot {slot}: {what} ({in_a_row} in a row); next fork in {delay:?}"
            ));
        Ok(delay)
    }
}
// ANCHOR_END: backoff
