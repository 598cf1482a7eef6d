//! worker_pool/tasks.rs — the queues: each idle worker gets one task; one result per task
//! is accepted.
//!
//! Demonstrates: a master that gives a worker its next task only once it has returned
//! the last one always knows the one task a dead worker held; results tagged with their
//! task's id, noted in a ledger, turn at-least-once delivery into exactly-once acceptance.
//! Run:     cargo run --bin worker_pool -- --task-cost uniform --kill-worker-every 50
//! Observe: "task N goes back to the queue", and every task exactly once in the summary.
//! Book:    book/src/patterns/worker_pool.md

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, bail};
use nix::errno::Errno;
use proclab::narrate::event;
use proclab::queues::counted;
use proclab::record::{Found, Tag};

use crate::master::Master;
use crate::options::Distribution;
use crate::worker::{HEARTBEAT, RECORD, send_id};

/// Task ids 0..tasks in their queues: one queue for dynamic distribution; for static,
/// one per slot, slot i holding the i-th block of tasks/slots.
pub fn queues(distribution: Distribution, tasks: u64, slots: usize) -> Vec<VecDeque<u64>> {
    match distribution {
        Distribution::Dynamic => vec![(0..tasks).collect()],
        Distribution::Static => (0..slots as u64)
            .map(|slot| (tasks * slot / slots as u64..tasks * (slot + 1) / slots as u64).collect())
            .collect(),
    }
}

impl Master<'_> {
    /// The queue that `slot`'s worker takes its tasks from.
    fn queue_of(&self, slot: usize) -> usize {
        match self.distribution {
            Distribution::Dynamic => 0,
            Distribution::Static => slot,
        }
    }

    // ANCHOR: hand_out
    /// Gives each idle worker its next task, one at a time: a worker holds at most one.
    pub fn hand_out(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.pool.slots.len() {
            let queue = self.queue_of(slot);
            let Some(worker) = self.pool.slots[slot].as_mut() else {
                continue;
            };
            if worker.held.is_some() {
                continue;
            }
            let Some(task) = self.queues[queue].pop_front() else {
                continue;
            };
            match send_id(&worker.task_pipe, task) {
                Ok(()) => {
                    worker.held = Some((task, Instant::now()));
                    (worker.last_heard, worker.silent) = (Instant::now(), false);
                }
                // The worker died and has not been reaped yet: the task waits for the
                // next worker; the reaper will notice.
                Err(Errno::EPIPE) => self.queues[queue].push_front(task),
                Err(error) => return Err(error).context("write(task pipe)"),
            }
        }
        Ok(())
    }
    // ANCHOR_END: hand_out

    // ANCHOR: collect
    /// Reads every result and heartbeat waiting in the result pipe; accepts one result
    /// per task, discards and counts duplicates.
    pub fn collect(&mut self) -> anyhow::Result<()> {
        let mut buffer = [0u8; 4096];
        loop {
            let read = match nix::unistd::read(&self.results_read, &mut buffer) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Ok(read) => read,
                Err(error) => return Err(error).context("read results"),
            };
            for found in self.decoder.feed(&buffer[..read]) {
                let Found::Record(Tag { writer, seq: task }, _) = found else {
                    bail!("a torn result record: writes of a record must be whole");
                };
                let Some(&slot) = self.serial_slot.get(writer as usize) else {
                    bail!("a result from worker #{writer}, which was never started");
                };
                let current = self.pool.slots[slot]
                    .as_mut()
                    .filter(|w| w.serial == writer);
                if task == HEARTBEAT {
                    self.heartbeats += 1;
                    if let Some(worker) = current {
                        (worker.last_heard, worker.silent) = (Instant::now(), false);
                    }
                    continue;
                }
                if let Some(worker) = current {
                    if worker.held.is_some_and(|(held, _)| held == task) {
                        worker.held = None;
                    }
                    worker.last_heard = Instant::now();
                    worker.done += 1;
                }
                let id = Tag {
                    writer: 0,
                    seq: task,
                };
                if self.ledger.copies(id) > 0 {
                    self.duplicates += 1; // at-least-once delivery; exactly-once acceptance
                } else {
                    self.completed += 1;
                    self.per_worker[slot] += 1;
                }
                self.ledger.note(&Found::Record(id, RECORD));
            }
        }
    }
    // ANCHOR_END: collect

    /// A lost task goes back to the front of its queue, unless it has used its retries.
    pub fn requeue(&mut self, slot: usize, task: u64, count_attempt: bool) {
        let queue = self.queue_of(slot);
        let attempts = &mut self.attempts[task as usize];
        *attempts += u32::from(count_attempt);
        if *attempts > self.args.retries {
            self.failed.push(task);
            event("failed")
                .field("task", task)
                .field("attempts", *attempts)
                .say(format!(
                    "task {task} failed: lost {}, retries exhausted",
                    counted(*attempts, "time")
                ));
            return;
        }
        self.retried += 1;
        self.queues[queue].push_front(task);
        event("requeued")
            .field("task", task)
            .field("attempt", *attempts)
            .say(format!("task {task} goes back to the queue"));
    }
}
