//! worker_pool/failures.rs — a worker dies, hangs or crashes at start: what the master
//! does about it.
//!
//! Demonstrates: the master reaps a dead worker without blocking, re-queues the task it
//! held and forks its replacement — at once, or after a growing delay if it died right
//! after its start; a busy worker silent too long is reported, and one that has held a
//! task past --timeout is killed.
//! Run:     cargo run --bin worker_pool -- --hang-task 7 --timeout 0.5 --retries 1
//! Observe: "no heartbeat for 300ms", then the kill at 0.5 s, the retry, "task 7 failed".
//! Book:    book/src/patterns/worker_pool.md

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use proclab::child::ending;
use proclab::narrate::event;

use crate::master::{Killed, Master, Served, Worker};
use crate::supervisor::Reaped;

/// A busy worker not heard from for this long is reported silent.
const SILENT_AFTER: Duration = Duration::from_millis(300);
/// A worker that dies sooner than this after its start, having done nothing, crashed at
/// start.
const EARLY: Duration = Duration::from_millis(500);

impl Master<'_> {
    // ANCHOR: reap
    /// Reaps every worker that has ended (waitpid(-1, WNOHANG) until none is left, as
    /// SIGCHLD signals merge), re-queues the task it held and schedules a replacement.
    pub fn reap(&mut self) -> anyhow::Result<()> {
        if !self.pool.sigchld_came() {
            return Ok(()); // no worker can have ended since the last look
        }
        self.reap_ended()
    }

    pub fn reap_ended(&mut self) -> anyhow::Result<()> {
        while let Some(Reaped { pid, slot, status }) = self.pool.reap_one()? {
            let Some(slot) = slot else { continue };
            // Its last results are in the pipe already: read them before deciding what
            // it still held.
            self.collect()?;
            let worker = self.pool.slots[slot]
                .take()
                .expect("the slot was found above");
            let ended = ending(&status);
            event("reaped")
                .field("slot", slot)
                .field("worker", pid.as_raw())
                .field("held", worker.held.map(|(task, _)| task))
                .fields(&ended)
                .say(format!(
                    "waitpid -> worker {pid} {}{}",
                    ended.status,
                    worker
                        .held
                        .map(|(task, _)| format!(", holding task {task}"))
                        .unwrap_or_default()
                ));
            self.served.push(Served {
                slot,
                pid: pid.as_raw(),
                tasks: worker.done,
                ending: ended,
            });
            // A worker that crashed at start, or that --kill-worker-every killed, is not
            // the task's fault: no attempt counted (the backoff bounds how often a crash at
            // start can happen).
            let crashed_at_start =
                worker.killed.is_none() && worker.done == 0 && worker.started.elapsed() < EARLY;
            let task_to_blame = !crashed_at_start && worker.killed != Some(Killed::Demonstration);
            // (Once the pool is stopping, a lost task stays undone: `unfinished`.)
            if let Some((task, _)) = worker.held
                && !self.stopping
            {
                self.requeue(slot, task, task_to_blame);
            }
            self.schedule_respawn(slot, crashed_at_start)?;
        }
        Ok(())
    }
    // ANCHOR_END: reap

    // ANCHOR: backoff
    /// A worker that died right after its start, having done nothing, will likely do it
    /// again: wait 100 ms, then 200, 400… before the next one; give up after a few.
    fn schedule_respawn(&mut self, slot: usize, crashed_at_start: bool) -> anyhow::Result<()> {
        if self.stopping {
            return Ok(());
        }
        let delay = if crashed_at_start {
            let last = self.served.last().map(|s| s.ending.status.clone());
            let last = last.unwrap_or_else(|| "?".into());
            (self.pool.backoff).failed(slot, "died right after its start", &last)?
        } else {
            self.pool.backoff.started(slot);
            Duration::ZERO
        };
        self.pool.respawn_after(slot, delay);
        Ok(())
    }
    // ANCHOR_END: backoff

    pub fn respawn_due(&mut self) -> anyhow::Result<()> {
        while let Some(slot) = self.pool.due() {
            self.respawns += 1;
            self.spawn(slot)?;
        }
        Ok(())
    }

    // ANCHOR: watch
    /// Heartbeats: a busy worker not heard from for a few heartbeat periods is said to be
    /// silent (stuck, or stopped: kill -STOP). --timeout: a worker that has held one task
    /// too long is killed; the reaper then re-queues the task or reports it failed.
    pub fn watch(&mut self) {
        for worker in self.pool.slots.iter_mut().flatten() {
            if let Some((task, _)) = worker.held
                && !worker.silent
                && worker.last_heard.elapsed() > SILENT_AFTER
            {
                worker.silent = true;
                self.silences += 1;
                event("silent")
                    .field("worker", worker.pid.as_raw())
                    .field("task", task)
                    .say(format!(
                        "worker {} holds task {task} and has sent no heartbeat for {SILENT_AFTER:?}",
                        worker.pid
                    ));
            }
        }
        let Some(limit) = self.args.timeout else {
            return;
        };
        for worker in self.pool.slots.iter_mut().flatten() {
            if let Some((task, since)) = worker.held
                && since.elapsed() > limit
                && worker.killed.is_none()
            {
                worker.killed = Some(Killed::Timeout);
                event("timeout")
                    .field("worker", worker.pid.as_raw())
                    .field("task", task)
                    .say(format!(
                        "worker {} has held task {task} for more than {limit:?}: kill(SIGKILL)",
                        worker.pid
                    ));
                let _ = kill(worker.pid, Signal::SIGKILL);
            }
        }
    }
    // ANCHOR_END: watch

    pub fn kill_random_worker(&mut self) {
        let mut alive: Vec<&mut Worker> = self
            .pool
            .slots
            .iter_mut()
            .flatten()
            .filter(|worker| worker.killed.is_none())
            .collect();
        if alive.is_empty() {
            return;
        }
        let count = alive.len();
        let victim = &mut alive[proclab::names::random() as usize % count];
        victim.killed = Some(Killed::Demonstration);
        event("kill")
            .field("worker", victim.pid.as_raw())
            .say(format!("kill({}, SIGKILL): a worker dies", victim.pid));
        let _ = kill(victim.pid, Signal::SIGKILL);
    }
}
