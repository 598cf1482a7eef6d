//! summary — what prefork's slots and their processes did, for the run's last event.
//!
//! Demonstrates: the master's own accounting beside the workers' scoreboard: per slot the
//! requests served by all the processes that held it, how many there were, and every
//! fork — W at the start, plus respawns, plus those of a rolling restart.
//! Run:     cargo run --bin prefork -- --self-test --json | tail -1
//! Observe: `spawns` = W + `respawns` + `rolled`; `served` equals the client's `ok`.
//! Book:    book/src/patterns/prefork.md

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proclab::narrate::event;
use proclab::queues::counted;
use proclab::signals;
use serde::Serialize;

use crate::Master;
use crate::client::check;

// ANCHOR: history
/// Every fork of the run, and what each slot's processes did.
pub struct History {
    pub slots: Vec<SlotHistory>,
    pub spawns: u64,
    pub respawns: u64,
    pub rolled: u64,
    pub start_failures: u64,
}
// ANCHOR_END: history

/// What a slot's processes did, all of them.
#[derive(Clone, Default, Serialize)]
pub struct SlotHistory {
    pub served: u64,
    processes: u64,
    last_pid: i32,
}

impl History {
    pub fn new(slots: usize) -> History {
        History {
            slots: vec![SlotHistory::default(); slots],
            spawns: 0,
            respawns: 0,
            rolled: 0,
            start_failures: 0,
        }
    }

    /// `pid` was forked into `slot`.
    pub fn forked(&mut self, slot: usize, pid: Pid) {
        self.spawns += 1;
        self.slots[slot].processes += 1;
        self.slots[slot].last_pid = pid.as_raw();
    }
}

impl Master<'_> {
    /// The `summary` event (a table in text mode); an error if the self-test's client
    /// saw a wrong or missing reply, or sent no report.
    pub fn summarize(&self) -> anyhow::Result<()> {
        let stop = self.stop.as_ref().expect("the loop ends only once stopped");
        let history = &self.history;
        let per_worker: Vec<u64> = history.slots.iter().map(|slot| slot.served).collect();
        let served: u64 = per_worker.iter().sum();
        let shutdown = if stop.cut_off > 0 {
            "forced"
        } else {
            "graceful"
        };
        let mut text = format!(
            "summary: {} served by {} {} in {} ({} respawned, {} \
             replaced by SIGHUP); shutdown {shutdown} ({}), {} in flight, {} cut off\n  \
             slot  served  processes  last pid\n",
            counted(served, "request"),
            history.spawns,
            if history.spawns == 1 {
                "process"
            } else {
                "processes"
            },
            counted(self.supervisor.slots.len() as u64, "slot"),
            history.respawns,
            history.rolled,
            stop.reason,
            stop.in_flight,
            stop.cut_off
        );
        for (slot, processes) in history.slots.iter().enumerate() {
            text += &format!(
                "  {slot:<4}  {:>6}  {:>9}  {}\n",
                processes.served, processes.processes, processes.last_pid
            );
        }
        let report = &self.self_test.report;
        if let Some(report) = report {
            text += &format!(
                "  client: {}, {} ok, {}, {} mismatched; {}",
                counted(report.requests, "request"),
                report.ok,
                counted(report.errors, "error"),
                report.mismatched,
                crate::report::speed(report, "")
            );
        }
        event("summary")
            .field("workers", self.supervisor.slots.len())
            .field("dispatch", self.server.dispatch)
            .field("port", self.port)
            .field("served", served)
            .field("per_worker", &per_worker)
            .field("slots", &history.slots)
            .field("spawns", history.spawns)
            .field("respawns", history.respawns)
            .field("rolled", history.rolled)
            .field("start_failures", history.start_failures)
            .field("shutdown", shutdown)
            .field("stop_reason", &stop.reason)
            .field("in_flight_at_shutdown", stop.in_flight)
            .field("cut_off", stop.cut_off)
            .field("dropped", self.handoff.dropped)
            .field("fds_after_start", self.fds_after_start)
            .field("fds_before_stop", stop.fds_before)
            .field("seconds", self.started.elapsed().as_secs_f64())
            .field("client", report)
            .field("interrupted", signals::stop_requested().map(Signal::as_str))
            .say(text.trim_end());
        match report {
            // Nobody reads the timeline: a closed stdout cut the self-test short.
            _ if stop.reason == crate::stop::STDOUT_CLOSED => Ok(()),
            Some(report) => check(report),
            None if self.server.self_test && signals::stop_requested().is_none() => {
                anyhow::bail!("the self-test's client sent no report")
            }
            None => Ok(()),
        }
    }
}
