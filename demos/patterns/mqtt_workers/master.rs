//! mqtt_workers/master.rs — what the master knows: its workers, its desk, its ledger; and
//! what it does with each line the desk passes on.
//!
//! Demonstrates: the master hears its workers only through the broker — a heartbeat says
//! a worker is alive (its first: subscribed, ready), a result says a job is done — and
//! tells which worker spoke by the pid in the message, since a slot's pid changes.
//! Run:     cargo run -p mqtt_workers -- --json | grep '"ready"'
//! Observe: one `ready` per worker, each after its `spawn`; then `result` events.
//! Book:    book/src/patterns/mqtt_workers.md

use std::time::Instant;

use anyhow::Context;
use nix::unistd::Pid;
use proclab::narrate::event;
use serde_json::Value;

use crate::desk::Desk;
use crate::hosts::{Hosts, Network};
use crate::ledger::{Ledger, Verdict};
use crate::options::Args;
use crate::supervisor::{Supervised, Supervisor};
use crate::worker::Route;

/// The routes, one per slot: three members of the shared group, one alerts worker.
pub const ROUTES: [Route; 4] = [
    Route::SharedSensors,
    Route::SharedSensors,
    Route::SharedSensors,
    Route::Alerts,
];

/// What the demo did to a worker, so that its end is told for what it is.
#[derive(Clone, Copy, PartialEq)]
pub enum Fault {
    /// --kill-worker-after: SIGKILL.
    Killed,
    /// --freeze-worker-after: SIGSTOP, so that it stops answering.
    Frozen,
    /// Silent too long: the master killed it.
    Unresponsive,
}

/// A worker, as the master sees it.
pub struct Worker {
    pub pid: Pid,
    pub route: Route,
    /// Its first heartbeat came: it is subscribed.
    pub ready: bool,
    pub last_heard: Instant,
    pub fault: Option<Fault>,
}

impl Supervised for Worker {
    fn pid(&self) -> Pid {
        self.pid
    }
}

/// The master's state: single-threaded, with no MQTT client of its own.
pub struct Master<'a> {
    pub args: &'a Args,
    pub pool: Supervisor<Worker>,
    pub desk: Desk,
    pub broker: Option<Pid>,
    /// Where workers connect to.
    pub address: (String, u16),
    pub hosts: Option<Hosts>,
    pub ledger: Ledger,
    pub desk_connected: bool,
    /// The jobs are out: from now on a worker's subscription is told as it comes.
    pub publishing: bool,
    pub stopping: bool,
    pub fault_done: bool,
    pub respawns: u64,
    pub unresponsive: u64,
    pub last_result: Instant,
}

impl<'a> Master<'a> {
    /// The master before its first worker: a slot per route, every job still to publish.
    pub fn new(
        args: &'a Args,
        network: Network,
        broker: Option<Pid>,
        desk: Desk,
    ) -> anyhow::Result<Master<'a>> {
        Ok(Master {
            args,
            pool: Supervisor::new(ROUTES.len(), 5)?,
            desk,
            broker,
            address: network.workers_connect_to(),
            hosts: network.hosts,
            ledger: Ledger::new(args.jobs),
            desk_connected: false,
            publishing: false,
            stopping: false,
            fault_done: false,
            respawns: 0,
            unresponsive: 0,
            last_result: Instant::now(),
        })
    }

    // ANCHOR: hear
    /// Reads what the desk passed on and acts on it: `connected`, a heartbeat, a result.
    pub fn hear(&mut self) -> anyhow::Result<()> {
        let (lines, closed) = self.desk.lines()?;
        for line in lines {
            if line == "connected" {
                self.desk_connected = true;
                continue;
            }
            let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
            if topic == "error" {
                anyhow::bail!("the desk: {payload}");
            }
            let message: Value = serde_json::from_str(payload)
                .with_context(|| format!("a message on {topic}: {payload:?}"))?;
            let slot = message["slot"].as_i64().unwrap_or(-1);
            let pid = message["worker"].as_i64().unwrap_or(0);
            self.heard_from(slot, pid);
            if topic.starts_with("results/") {
                let job = message["job"].as_u64().context("a result names its job")?;
                self.result(job, slot, pid);
            }
        }
        if closed {
            anyhow::bail!("the desk ({}) closed its pipe: it ended", self.desk.pid);
        }
        Ok(())
    }
    // ANCHOR_END: hear

    /// A message from worker `pid` of `slot`: it is alive; its first message means ready.
    fn heard_from(&mut self, slot: i64, pid: i64) {
        let Some(worker) = usize::try_from(slot)
            .ok()
            .and_then(|s| self.pool.slots.get_mut(s)?.as_mut())
            .filter(|worker| i64::from(worker.pid.as_raw()) == pid)
        else {
            return; // a worker of another machine, or of a slot's earlier worker
        };
        worker.last_heard = Instant::now();
        if !worker.ready {
            worker.ready = true;
            self.pool.backoff.started(slot as usize);
            self.ledger.split.entry((slot, pid)).or_default(); // in the split, even with 0 jobs
            if self.publishing {
                self.tell_ready(slot as usize); // before: supervise() tells all, in slot order
            }
        }
    }

    /// Says that the worker of `slot` has subscribed (its first heartbeat came).
    pub fn tell_ready(&self, slot: usize) {
        if let Some(worker) = self.pool.slots[slot].as_ref().filter(|w| w.ready) {
            event("ready")
                .field("slot", slot)
                .field("worker", worker.pid.as_raw())
                .field("route", worker.route.name())
                .say(format!(
                    "worker {} in slot {slot} subscribed to {}",
                    worker.pid,
                    worker.route.filter()
                ));
        }
    }

    fn result(&mut self, job: u64, slot: i64, pid: i64) {
        match self.ledger.accept(job, slot, pid) {
            Verdict::First => {
                self.last_result = Instant::now();
                // A line per job only in --json; the text timeline has the split, at the end.
                if proclab::narrate::json() {
                    event("result")
                        .field("job", job)
                        .field("slot", slot)
                        .field("worker", pid)
                        .say(format!("job {job} done by worker {pid} (slot {slot})"));
                }
            }
            Verdict::Duplicate => {
                let what = if self.args.no_ledger {
                    "done twice"
                } else {
                    "dropped"
                };
                event("duplicate")
                    .field("job", job)
                    .field("slot", slot)
                    .field("worker", pid)
                    .say(format!("job {job} again, from worker {pid}: {what}"));
            }
            Verdict::Unknown => {}
        }
    }
}
