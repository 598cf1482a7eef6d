//! mqtt_workers/stop.rs — the end of a run: every process ended and reaped, then the
//! split and the account of every job.
//!
//! Demonstrates: a graceful stop, in order — the workers get SIGTERM (each leaves the
//! group with an MQTT DISCONNECT), the desk gets EOF on its pipe, the broker SIGTERM,
//! the namespace holders SIGKILL — each reaped before the next; then the summary says
//! who did how many jobs and what was lost, duplicated or re-published.
//! Run:     cargo run -p mqtt_workers          (or Ctrl-C it: the same order, then SIGINT)
//! Observe: `reaped` for every worker, `stopped` for desk and broker, then the summary.
//! Book:    book/src/patterns/mqtt_workers.md

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proclab::child::{describe, wait_or_kill};
use proclab::narrate::event;
use serde_json::json;

use crate::master::{Master, ROUTES};

/// How long workers have to leave after SIGTERM before they get SIGKILL.
const WORKERS_GRACE: Duration = Duration::from_secs(2);

impl Master<'_> {
    // ANCHOR: stop
    /// Ends every child, in order, and reaps each: nothing is left, whatever happened.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.stopping = true;
        self.pool.cancel_respawns();
        for worker in self.pool.workers() {
            let _ = kill(worker.pid, Signal::SIGTERM); // it leaves the group, then exits
            let _ = kill(worker.pid, Signal::SIGCONT); // (a frozen one, too)
        }
        let grace_ends = Instant::now() + WORKERS_GRACE;
        while self.pool.workers().next().is_some() {
            if Instant::now() >= grace_ends {
                for worker in self.pool.workers() {
                    let _ = kill(worker.pid, Signal::SIGKILL);
                }
            }
            let _ = self.reap_on_stop();
            proclab::signals::sleep(Duration::from_millis(10));
        }
        drop(self.desk.commands.take()); // EOF: the desk disconnects and exits
        stopped("desk", self.desk.pid)?;
        if let Some(broker) = self.broker {
            let _ = kill(broker, Signal::SIGTERM);
            stopped("broker", broker)?;
        }
        for &holder in self.hosts.iter().flat_map(|hosts| hosts.holders()) {
            let _ = kill(holder, Signal::SIGKILL); // its namespace goes with it
            stopped("netns", holder)?;
        }
        Ok(())
    }
    // ANCHOR_END: stop

    /// Reaps the workers that have ended (and any other child, which stop() then skips).
    fn reap_on_stop(&mut self) -> anyhow::Result<()> {
        while let Some(reaped) = self.pool.reap_one()? {
            if let Some(slot) = reaped.slot {
                self.pool.slots[slot] = None;
                event("reaped")
                    .field("slot", slot)
                    .field("worker", reaped.pid.as_raw())
                    .fields(proclab::child::ending(&reaped.status))
                    .say(format!(
                        "waitpid -> worker {} (slot {slot}) {}",
                        reaped.pid,
                        describe(&reaped.status)
                    ));
            }
        }
        Ok(())
    }

    // ANCHOR: summary
    /// The split per worker, and the account: jobs done, lost, duplicated, re-published.
    pub fn summarize(&self) -> anyhow::Result<()> {
        let ledger = &self.ledger;
        let lost = ledger.lost();
        let split: Vec<_> = (ledger.split.iter())
            .map(|(&(slot, worker), &jobs)| {
                let route = usize::try_from(slot).ok().and_then(|s| ROUTES.get(s));
                let route = route.map_or("remote", |route| route.name());
                json!({"slot": slot, "route": route, "worker": worker, "jobs": jobs})
            })
            .collect();
        let mut table = String::from("slot  route            worker    jobs\n");
        for entry in &split {
            let (slot, route) = (
                entry["slot"].to_string(),
                entry["route"].as_str().unwrap_or(""),
            );
            let (worker, jobs) = (entry["worker"].to_string(), entry["jobs"].to_string());
            table += &format!("{slot:>4}  {route:<15}  {worker:>7}  {jobs:>6}\n");
        }
        let twice = if self.args.no_ledger {
            ledger.duplicates
        } else {
            0
        };
        event("summary")
            .field("jobs", ledger.len())
            .field("results", ledger.done())
            .field("lost", lost.len())
            .field("lost_jobs", &lost)
            .field("duplicates", ledger.duplicates)
            .field("done_twice", twice)
            .field("republished", ledger.republished)
            .field("exactly_once", lost.is_empty() && twice == 0)
            .field("ledger", !self.args.no_ledger)
            .field(
                "broker",
                if self.broker.is_some() {
                    "rumqttd"
                } else {
                    "external"
                },
            )
            .field("hosts", self.args.hosts.unwrap_or(0))
            .field("respawns", self.respawns)
            .field("unresponsive", self.unresponsive)
            .field("split", &split)
            .say(format!(
                "{} of {} jobs done, {} lost, {} {}, {} re-published\n{table}",
                ledger.done(),
                ledger.len(),
                lost.len(),
                ledger.duplicates,
                if self.args.no_ledger {
                    "done twice" // no ledger: a second result of a job counts as work
                } else {
                    "second results dropped"
                },
                ledger.republished
            ));
        Ok(())
    }
    // ANCHOR_END: summary
}

/// Waits for `pid` (SIGKILL if a stop signal interrupts) and says how it ended.
fn stopped(role: &str, pid: Pid) -> anyhow::Result<()> {
    let status = wait_or_kill(pid)?;
    event("stopped")
        .field("process", role)
        .field("child", pid.as_raw())
        .say(format!("waitpid -> {role} {pid} {}", describe(&status)));
    Ok(())
}
