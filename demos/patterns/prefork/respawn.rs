//! respawn — how the prefork master reaps its workers and replaces them in their slots.
//!
//! Demonstrates: SIGCHLD only wakes the master; it reaps with waitpid(-1, WNOHANG) until
//! none is left (the signals merge), replaces a ready worker at once in the same slot,
//! and backs off, then gives up, when a slot's workers die before they are ready.
//! Run:     cargo run --bin prefork -- --workers 2 --crash-at-start
//! Observe: `reaped` and `backoff` events 100, 200, 400, 800 ms apart, then "giving up".
//! Book:    book/src/patterns/prefork.md

use std::time::Instant;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use proclab::child::ending;
use proclab::narrate::event;
use proclab::signals;

use crate::Master;
use crate::supervisor::StartBackoff;

/// A slot whose worker dies this many times in a row before it is ready: the master gives
/// up rather than fork a storm of doomed workers.
const GIVE_UP_AFTER: u32 = 5;

/// When each empty slot is due its next fork, and the backoff that decides it.
pub struct Respawn {
    respawn_at: Vec<Option<std::time::Instant>>,
    /// Per slot: workers in a row that died before they were ready.
    backoff: StartBackoff,
    sigchld_seen: u64,
}

impl Respawn {
    pub fn new(slots: usize) -> Respawn {
        Respawn {
            respawn_at: vec![None; slots],
            backoff: StartBackoff::new(slots, GIVE_UP_AFTER),
            sigchld_seen: signals::count(Signal::SIGCHLD),
        }
    }

    /// When the slots' next forks are due.
    pub fn due_times(&self) -> impl Iterator<Item = Option<Instant>> + '_ {
        self.respawn_at.iter().copied()
    }

    /// Forks no more replacements: the master is stopping.
    pub fn cancel(&mut self) {
        self.respawn_at.iter_mut().for_each(|at| *at = None);
    }
}

impl Master<'_> {
    // ANCHOR: reap
    /// Reaps every worker that has ended — `waitpid(-1, WNOHANG)` until none is left, as
    /// SIGCHLD signals merge — and starts its replacement in the same slot.
    pub fn reap(&mut self) -> anyhow::Result<()> {
        let sigchld = signals::count(Signal::SIGCHLD);
        if sigchld == self.respawn.sigchld_seen {
            return Ok(());
        }
        self.respawn.sigchld_seen = sigchld; // (a child dying during the loop counts for next time)
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(error).context("waitpid(-1, WNOHANG)"),
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if self.self_test.is_client(pid) {
                self.client_done(&status);
                continue;
            }
            let Some(slot) = self
                .slots
                .iter()
                .position(|w| w.as_ref().is_some_and(|w| w.pid == pid))
            else {
                continue;
            };
            let retired = self.slots[slot]
                .take()
                .expect("the slot was found")
                .retiring;
            // (its channel is closed here: the replacement must not inherit it)
            let was_ready = self.board.ready_pid(slot) == pid.as_raw() as u64;
            self.history.slots[slot].served += self.board.served(slot);
            self.board.clear(slot); // the row is the next worker's
            let ended = ending(&status);
            event("reaped")
                .field("slot", slot)
                .field("worker", pid.as_raw())
                .fields(&ended)
                .say(format!(
                    "waitpid -> worker {pid} (slot {slot}) {}",
                    ended.status
                ));
            self.replace(slot, retired, was_ready, &ended.status)?;
        }
    }
    // ANCHOR_END: reap

    // ANCHOR: replace
    /// A slot's worker has ended: replace it now — or, if it died before it was ready
    /// (and so will likely die again), after 100 ms, 200, 400… and give up after
    /// GIVE_UP_AFTER in a row. A stopping server replaces nobody.
    fn replace(
        &mut self,
        slot: usize,
        retired: bool,
        was_ready: bool,
        status: &str,
    ) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        if was_ready {
            self.respawn.backoff.started(slot);
        }
        if retired {
            self.history.rolled += 1;
            return self.spawn(slot);
        }
        if was_ready {
            self.history.respawns += 1;
            return self.spawn(slot);
        }
        self.history.start_failures += 1;
        let delay = self
            .respawn
            .backoff
            .failed(slot, "died before it was ready", status)?;
        self.respawn.respawn_at[slot] = Some(Instant::now() + delay);
        Ok(())
    }
    // ANCHOR_END: replace

    pub fn respawn_due(&mut self) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        for slot in 0..self.slots.len() {
            if self.respawn.respawn_at[slot].is_some_and(|at| Instant::now() >= at) {
                self.respawn.respawn_at[slot] = None;
                self.history.respawns += 1;
                self.spawn(slot)?;
            }
        }
        Ok(())
    }

    /// True once a stop has begun, or a stop signal has come that the loop has not
    /// handled yet: no worker is replaced any more.
    pub fn stopping(&self) -> bool {
        self.stop.is_some() || signals::stop_requested().is_some()
    }

    /// True when `slot`'s worker is ready and may be given connections.
    pub fn ready(&self, slot: usize) -> bool {
        self.slots[slot].as_ref().is_some_and(|worker| {
            !worker.retiring && self.board.ready_pid(slot) == worker.pid.as_raw() as u64
        })
    }
}

/// Blocks (or unblocks) the signals a person sends to stop or reload the server.
pub fn block_stop_signals(block: bool) -> nix::Result<()> {
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals::set_blocked(signal, block)?;
    }
    Ok(())
}
