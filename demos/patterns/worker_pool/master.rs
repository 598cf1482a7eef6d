//! worker_pool/master.rs — what the master knows: each slot's worker and the task it
//! holds, the queues, the result pipe, and what it has counted.
//!
//! Demonstrates: the master keeps, for every worker, the one task it holds and when it
//! was last heard from: all it needs to re-queue a dead worker's task and to see a hung
//! one.
//! Run:     cargo run --bin worker_pool -- --json   (the summary carries these counts)
//! Observe: `served`: every process that served in a slot, its tasks, how it ended.
//! Book:    book/src/patterns/worker_pool.md

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::Instant;

use anyhow::Context;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::{Pid, pipe2};
use proclab::child::Ending;
use proclab::record::{Decoder, Ledger};
use serde::Serialize;

use crate::compare;
use crate::options::{Args, Distribution};
use crate::supervisor::{Supervised, Supervisor};
use crate::tasks;
use crate::worker::MapReduce;

/// A slot whose worker dies this many times in a row right after its start: the pool
/// gives up rather than fork a storm of doomed workers.
const GIVE_UP_AFTER: u32 = 5;

/// The master's whole state.
pub struct Master<'a> {
    pub args: &'a Args,
    pub map_reduce: &'a MapReduce,
    pub distribution: Distribution,
    pub pool: Supervisor<Worker>,
    /// Dynamic: one queue, queues[0]. Static: one queue per slot.
    pub queues: Vec<VecDeque<u64>>,
    pub results_read: OwnedFd,
    pub results_write: OwnedFd,
    pub decoder: Decoder,
    pub ledger: Ledger,
    /// Per task: how many of its tries were lost for a reason it may be to blame for.
    pub attempts: Vec<u32>,
    pub completed: u64,
    pub failed: Vec<u64>,
    pub retried: u64,
    pub duplicates: u64,
    pub respawns: u64,
    pub heartbeats: u64,
    pub silences: u64,
    /// The serial number the next worker gets, and each serial's slot.
    pub next_serial: u32,
    pub serial_slot: Vec<usize>,
    pub per_worker: Vec<u64>,
    pub served: Vec<Served>,
    pub stopping: bool,
}

// ANCHOR: worker
/// What the master knows of one worker slot's current process.
pub struct Worker {
    pub serial: u32,
    pub pid: Pid,
    pub task_pipe: OwnedFd,
    pub started: Instant,
    pub held: Option<(u64, Instant)>,
    pub done: u64,
    pub last_heard: Instant,
    /// Said to be silent during its current task (said once per task).
    pub silent: bool,
    /// Why the master sent it SIGKILL, if it did: then its death is not a crash.
    pub killed: Option<Killed>,
}
// ANCHOR_END: worker

impl Worker {
    /// A worker just forked, holding no task yet.
    pub fn new(serial: u32, pid: Pid, task_pipe: OwnedFd) -> Worker {
        let now = Instant::now();
        Worker {
            serial,
            pid,
            task_pipe,
            started: now,
            held: None,
            done: 0,
            last_heard: now,
            silent: false,
            killed: None,
        }
    }
}

impl Supervised for Worker {
    fn pid(&self) -> Pid {
        self.pid
    }
}

/// Why the master killed a worker.
#[derive(Clone, Copy, PartialEq)]
pub enum Killed {
    /// --kill-worker-every: a demonstration; its task is not to blame and loses no retry.
    Demonstration,
    /// --timeout: it held one task too long; that task uses up one of its retries.
    Timeout,
}

/// One process that served in the pool, as the summary lists it.
#[derive(Serialize)]
pub struct Served {
    pub slot: usize,
    pub pid: i32,
    pub tasks: u64,
    #[serde(flatten)]
    pub ending: Ending,
}

/// How a run of the pool reports its account.
#[derive(Clone, Copy)]
pub enum Account {
    /// As a `run` event: --compare's runs before the last (their number, from 1).
    Run(usize),
    /// As the summary.
    Summary,
    /// As the summary of --compare's last (static) run: the dynamic runs' seconds and the
    /// static ones' before this one.
    Compared([f64; compare::RUNS], [f64; compare::RUNS - 1]),
}

impl<'a> Master<'a> {
    /// A master of `workers` empty slots, with its result pipe.
    pub fn new(
        args: &'a Args,
        map_reduce: &'a MapReduce,
        distribution: Distribution,
        workers: u32,
    ) -> anyhow::Result<Master<'a>> {
        // One pipe for every worker's results; the master never blocks reading it.
        let (results_read, results_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        fcntl(&results_read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("fcntl(O_NONBLOCK)")?;
        let slots = workers as usize;
        Ok(Master {
            args,
            map_reduce,
            distribution,
            pool: Supervisor::new(slots, GIVE_UP_AFTER)?,
            queues: tasks::queues(distribution, args.tasks, slots),
            results_read,
            results_write,
            decoder: Decoder::default(),
            ledger: Ledger::new(),
            attempts: vec![0; args.tasks as usize],
            completed: 0,
            failed: Vec::new(),
            retried: 0,
            duplicates: 0,
            respawns: 0,
            heartbeats: 0,
            silences: 0,
            next_serial: 0,
            serial_slot: Vec::new(),
            per_worker: vec![0; slots],
            served: Vec::new(),
            stopping: false,
        })
    }
}
