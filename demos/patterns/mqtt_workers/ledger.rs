//! mqtt_workers/ledger.rs — the master's ledger: every job's effect exactly once, on top
//! of a broker that loses a dead member's messages.
//!
//! Demonstrates: QoS 1 and shared subscriptions do not give exactly once. A member
//! SIGKILLed with jobs in hand takes them with it (clean session: lost; a persistent one:
//! kept for a client that never comes back, or replayed twice). The ledger notes when
//! each job was published, re-publishes it when its result is overdue, accepts the first
//! result per job id and drops the others.
//! Run:     cargo run -p mqtt_workers -- --kill-worker-after 10   (then add --no-ledger)
//! Observe: `republish` events after the kill, then lost 0; with --no-ledger, lost > 0.
//! Book:    book/src/patterns/mqtt_workers.md

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proclab::narrate::event;
use serde_json::json;

use crate::desk::Desk;

/// A job whose result has not come this long after it was published is overdue. (Longer
/// than a worker's queue takes: J/3 jobs of 20 ms each.)
pub const OVERDUE_AFTER: Duration = Duration::from_millis(1500);

/// One job: where it goes, when it was last published, who did it, and how often.
struct Job {
    topic: String,
    published: Instant,
    attempts: u32,
    results: u32,
}

/// Every job, and what the results said about them.
pub struct Ledger {
    jobs: Vec<Job>,
    /// Per (slot, worker pid): the jobs whose accepted result it sent.
    pub split: BTreeMap<(i64, i64), u64>,
    pub duplicates: u64,
    pub republished: u64,
}

/// What a result meant to the ledger.
pub enum Verdict {
    First,
    Duplicate,
    Unknown,
}

impl Ledger {
    /// `sensor_jobs` jobs on `sensors/<n>/data`, then one alert per 10 on `alerts/<kind>`.
    pub fn new(sensor_jobs: u64) -> Ledger {
        let sensors = (0..sensor_jobs).map(|id| format!("sensors/{}/data", id % 4));
        let alerts =
            (0..sensor_jobs / 10).map(|n| format!("alerts/{}", ["fire", "flood"][n as usize % 2]));
        let now = Instant::now();
        let jobs = (sensors.chain(alerts))
            .map(|topic| Job {
                topic,
                published: now,
                attempts: 0,
                results: 0,
            })
            .collect();
        Ledger {
            jobs,
            split: BTreeMap::new(),
            duplicates: 0,
            republished: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.jobs.len() as u64
    }

    /// Publishes the jobs `ids` (again), through the desk, at QoS 1: one wave, noted at
    /// one instant, so that the jobs of a wave fall overdue together.
    pub fn publish(&mut self, desk: &Desk, ids: &[usize]) -> anyhow::Result<()> {
        let now = Instant::now();
        for &id in ids {
            let job = &mut self.jobs[id];
            job.attempts += 1;
            job.published = now;
            let message = json!({"job": id, "attempt": job.attempts});
            desk.publish(&job.topic, &message.to_string())?;
        }
        Ok(())
    }

    // ANCHOR: accept
    /// A result for job `id` from worker `pid` of `slot`: the first counts, a duplicate
    /// (the job was re-published, or the broker delivered it twice) is dropped.
    pub fn accept(&mut self, id: u64, slot: i64, pid: i64) -> Verdict {
        let Some(job) = self.jobs.get_mut(id as usize) else {
            return Verdict::Unknown;
        };
        job.results += 1;
        if job.results > 1 {
            self.duplicates += 1;
            return Verdict::Duplicate; // its effect already happened: not again
        }
        *self.split.entry((slot, pid)).or_default() += 1;
        Verdict::First
    }

    /// Re-publishes every job whose result is overdue: the broker will not do it.
    pub fn republish_overdue(&mut self, desk: &Desk) -> anyhow::Result<()> {
        let overdue: Vec<usize> = (0..self.jobs.len())
            .filter(|&id| self.jobs[id].results == 0)
            .filter(|&id| self.jobs[id].published.elapsed() > OVERDUE_AFTER)
            .collect();
        if overdue.is_empty() {
            return Ok(());
        }
        self.publish(desk, &overdue)?;
        self.republished += overdue.len() as u64;
        // --json: an event per job. The text: one line for the wave, the same from run to
        // run whatever the number of jobs the dead member held.
        if proclab::narrate::json() {
            for &id in &overdue {
                let attempt = self.jobs[id].attempts;
                event("republish")
                    .field("job", id)
                    .field("attempt", attempt)
                    .say(format!(
                        "job {id}: no result {OVERDUE_AFTER:?} after publishing: publish again \
                     (attempt {attempt})"
                    ));
            }
        } else {
            let jobs = if overdue.len() == 1 { "job" } else { "jobs" };
            event("republish").say(format!(
                "{} {jobs} with no result {OVERDUE_AFTER:?} after publishing: publish again",
                overdue.len()
            ));
        }
        Ok(())
    }
    // ANCHOR_END: accept

    /// Jobs with a result.
    pub fn done(&self) -> u64 {
        self.jobs.iter().filter(|job| job.results > 0).count() as u64
    }

    /// The ids of the jobs that never got a result.
    pub fn lost(&self) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&id| self.jobs[id].results == 0)
            .collect()
    }
}
