//! worker_pool/stop.rs — the end of a run: the pool made whole, one stop message per
//! worker, a grace for running tasks after Ctrl-C, and the account.
//!
//! Demonstrates: a master stops its workers with a message, not a signal, so that none
//! dies in the middle of a task; after Ctrl-C or SIGTERM it hands out no more tasks, lets
//! the running ones finish within --grace, kills the rest, and reaps every worker.
//! Run:     cargo run --bin worker_pool -- --tasks 100000 --task-cost uniform   (Ctrl-C)
//! Observe: "no more tasks handed out", the stop messages, every worker exited with 0.
//! Book:    book/src/patterns/worker_pool.md

use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::{Signal, kill};
use proclab::inspect::running;
use proclab::narrate::event;
use proclab::shm::load;
use proclab::signals;

use crate::compare;
use crate::master::{Account, Master};
use crate::worker::{STOP, send_id};

impl Master<'_> {
    /// A stop signal came: no more tasks handed out and no new workers; the running
    /// tasks have until the returned instant to finish.
    pub fn begin_stopping(&mut self, stop: Signal) -> Instant {
        self.stopping = true;
        let held = self.pool.workers().filter(|w| w.held.is_some());
        event("stopping")
            .field("signal", stop.as_str())
            .field("running_tasks", held.count())
            .field("grace_seconds", self.args.grace.as_secs_f64())
            .say(format!(
                "{stop}: no more tasks handed out; running tasks have {}s to finish",
                self.args.grace.as_secs_f64()
            ));
        self.pool.cancel_respawns(); // no new workers
        Instant::now() + self.args.grace
    }

    /// After the work, before the stop messages: reap and respawn until every slot has a
    /// live worker again (a worker killed just before the last result is replaced too),
    /// for at most a second.
    pub fn settle(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && signals::stop_requested().is_none() {
            self.reap()?;
            self.respawn_due()?;
            let whole = self.pool.next_respawn().is_none()
                && self
                    .pool
                    .slots
                    .iter()
                    .all(|w| w.as_ref().is_some_and(|w| running(w.pid.as_raw())));
            if whole {
                break;
            }
            signals::wait_readable(None, Duration::from_millis(20)); // SIGCHLD wakes it
        }
        Ok(())
    }

    // ANCHOR: shut_down
    /// One stop message per worker; every worker reaped. Workers still busy when a stop
    /// signal's grace ran out are killed first.
    pub fn shut_down(&mut self) -> anyhow::Result<()> {
        self.stopping = true;
        self.pool.cancel_respawns();
        self.reap_ended()?; // workers already dead get no stop message and no SIGKILL
        let (mut stopped, mut killed) = (Vec::new(), Vec::new());
        for worker in self.pool.workers() {
            if worker.held.is_some() {
                let _ = kill(worker.pid, Signal::SIGKILL); // the grace is over
                killed.push(worker.pid.as_raw());
            } else {
                let _ = send_id(&worker.task_pipe, STOP); // EPIPE: it is dead already
                stopped.push(worker.pid.as_raw());
            }
        }
        let busy = if killed.is_empty() {
            String::new()
        } else {
            format!("; kill(SIGKILL) to the workers still busy: {killed:?}")
        };
        event("stop")
            .field("workers", &stopped)
            .field("killed", &killed)
            .say(format!(
                "sent one stop message per idle worker: {stopped:?}{busy}"
            ));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.reap()?;
            if self.pool.slots.iter().all(Option::is_none) {
                break;
            }
            if Instant::now() >= deadline {
                for worker in self.pool.workers() {
                    let _ = kill(worker.pid, Signal::SIGKILL);
                }
            }
            // Wakes on SIGCHLD (the self-pipe).
            signals::wait_readable(None, Duration::from_millis(50));
        }
        self.collect()
    }
    // ANCHOR_END: shut_down

    pub fn summarize(
        &self,
        workers: u32,
        seconds: f64,
        alive_at_end: usize,
        account: Account,
    ) -> anyhow::Result<()> {
        let tally = self.ledger.check(&[self.args.tasks]);
        // The ledger knows which ids came, not just how many: each completed task was
        // accepted once, for a task that exists; and with nothing failed or unfinished,
        // that is every task exactly once.
        let exactly_once =
            tally.received == self.completed && tally.duplicates == 0 && tally.unexpected == 0;
        let every_task_once = exactly_once && tally.received == self.args.tasks;
        let unfinished = self.args.tasks - self.completed - self.failed.len() as u64;
        let mut summary = event(match account {
            Account::Run(_) => "run",
            Account::Summary | Account::Compared(..) => "summary",
        })
        .field("tasks", self.args.tasks)
        .field("completed", self.completed)
        .field("failed", self.failed.len())
        .field("failed_tasks", &self.failed)
        .field("unfinished", unfinished)
        .field("retried", self.retried)
        .field("duplicates_discarded", self.duplicates)
        .field("duplicates_accepted", 0)
        .field("respawns", self.respawns)
        .field("per_worker", &self.per_worker)
        .field("seconds", seconds)
        .field("distribution", self.distribution)
        .field("workers", workers)
        .field("workers_alive_at_end", alive_at_end)
        .field("heartbeats", self.heartbeats)
        .field("silences", self.silences)
        .field("exactly_once", exactly_once)
        .field("every_task_once", every_task_once)
        .field("served", &self.served)
        .field("interrupted", signals::stop_requested().map(Signal::as_str));
        let mut text = match account {
            Account::Run(n) => format!("run {n} of {}: ", 2 * compare::RUNS),
            Account::Summary | Account::Compared(..) => "summary: ".to_owned(),
        };
        text += &format!(
            "{} of {} tasks completed, every task exactly once: {every_task_once}; failed {}, \
             unfinished {unfinished}, retried {}, duplicates discarded {}, respawns {}; \
             per worker {:?}; {seconds:.3}s ({})",
            self.completed,
            self.args.tasks,
            self.failed.len(),
            self.retried,
            self.duplicates,
            self.respawns,
            self.per_worker,
            self.distribution.name()
        );
        if self.args.map_reduce {
            let sums = self.map_reduce.partial_sums.atomics();
            let reduced: u64 = sums.iter().map(load).sum();
            let sequential: u64 = self.map_reduce.numbers.as_slice().iter().sum();
            summary = summary
                .field("map_reduce_sum", reduced)
                .field("sequential_sum", sequential)
                .field("map_reduce_ok", reduced == sequential);
            text += &format!("; map-reduce sum {reduced}, sequential {sequential}");
            if reduced != sequential && every_task_once {
                summary.say(text);
                bail!("map-reduce sum {reduced} differs from the sequential {sequential}");
            }
        }
        if let Account::Compared(dynamic, static_before) = account {
            let (fields, words) = compare::medians(dynamic, static_before, seconds);
            summary = summary.fields(fields);
            text += &words;
        }
        summary.say(text);
        Ok(())
    }
}
