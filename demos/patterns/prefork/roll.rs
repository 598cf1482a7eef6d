//! roll — prefork's rolling restart on SIGHUP: new workers, one slot at a time.
//!
//! Demonstrates: a reload that never refuses a connection: the listening socket stays
//! open while each old worker is asked to finish its request and leave (SIGTERM, or the
//! end-of-file of its Unix socket), and the next one is asked only once its slot has a
//! new worker ready.
//! Run:     cargo run --bin prefork -- --workers 3     (then: kill -HUP <the master's pid>)
//! Observe: `retire`, `reaped`, `spawn`, `ready` for slot 0, then for slot 1, then slot 2.
//! Book:    book/src/patterns/prefork.md

use std::collections::VecDeque;

use nix::sys::signal::{Signal, kill};
use proclab::narrate::event;
use proclab::signals;

use crate::Master;
use crate::options::Dispatch;

impl Master<'_> {
    /// SIGHUP, unless the server is stopping: replace every worker, from slot 0.
    pub fn follow_hangups(&mut self) {
        let hangups = signals::count(Signal::SIGHUP);
        if hangups > self.roll.hangups_seen && self.stop.is_none() {
            self.roll.hangups_seen = hangups;
            self.roll.pending = (0..self.supervisor.slots.len()).collect();
            event("roll").say(match self.supervisor.slots.len() {
                1 => "SIGHUP: replacing the worker".to_owned(),
                workers => format!("SIGHUP: replacing the {workers} workers one at a time"),
            });
        }
    }

    // ANCHOR: roll
    /// One step of a rolling restart: once the slot being replaced has a new worker ready,
    /// ask the next old worker to finish its request and leave. The others go on serving,
    /// and the listening socket stays open: no connection is refused.
    pub fn roll_on(&mut self) {
        if let Some(slot) = self.roll.current {
            if !self.ready(slot) && self.stop.is_none() {
                return; // the old worker is finishing, or the new one is starting
            }
            self.roll.current = None;
        }
        let Some(slot) = self.roll.pending.pop_front() else {
            return;
        };
        let dispatch = self.server.dispatch;
        let Some(worker) = self.supervisor.slots[slot].as_mut() else {
            return; // no worker now: the next one forked will be new anyway
        };
        worker.retiring = true;
        let pid = worker.pid;
        let how = match dispatch {
            Dispatch::SharedAccept => {
                let _ = kill(pid, Signal::SIGTERM);
                "kill(SIGTERM)"
            }
            _ => {
                worker.channel = None; // end-of-file once it has served what it was passed
                "close(its Unix socket)"
            }
        };
        event("retire")
            .field("slot", slot)
            .field("worker", pid.as_raw())
            .say(format!(
                "{how}: worker {pid} finishes its request and leaves"
            ));
        self.roll.current = Some(slot);
    }
    // ANCHOR_END: roll
}

/// A rolling restart: the slots still to replace, and the one being replaced.
#[derive(Default)]
pub struct Roll {
    pending: VecDeque<usize>,
    current: Option<usize>,
    hangups_seen: u64,
}

impl Roll {
    /// True while a rolling restart is under way.
    pub fn under_way(&self) -> bool {
        self.current.is_some() || !self.pending.is_empty()
    }

    /// Replaces no more workers: the master is stopping.
    pub fn cancel(&mut self) {
        self.pending.clear();
    }
}
