//! worker_pool — a master, its workers, a task queue: crashes survived, every task done
//! exactly once.
//!
//! Demonstrates: the master–worker pattern under multiprocessing.Pool, Celery's prefork
//! workers and gunicorn's arbiter. The master forks W workers and hands out T tasks;
//! results come back with the task's id, so the master accepts one result per task and
//! discards (and counts) any duplicate. It reaps a dead worker without blocking (SIGCHLD
//! wakes its poll), forks a replacement and hands the task the dead one held to another.
//! Run:     cargo run --bin worker_pool   (add -- --task-cost uniform --kill-worker-every 50)
//! Observe: completed = tasks and no duplicate accepted, however many workers die.
//! Book:    book/src/patterns/worker_pool.md

mod compare; // --compare: dynamic and static runs in turn, their medians compared
mod failures; // a worker dies, hangs or crashes at start: reap, re-queue, respawn
mod master; // what the master knows of its workers and tasks
mod options; // the command line
mod stop; // the end of a run: stop messages, the grace after Ctrl-C, the summary
#[path = "../supervisor.rs"]
mod supervisor; // fork a slot's worker, reap by slot, respawn when due, back off
mod tasks; // hand out tasks one at a time, accept one result per task
mod worker; // the worker's loop

use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::pipe2;
use proclab::inspect::running;
use proclab::narrate::event;
use proclab::queues::counted;
use proclab::{cli, narrate, signals};

use master::{Account, Master, Worker};
use options::{Args, Distribution};
use worker::{MapReduce, work};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "master");
    cli::run_stoppable(|| run(&args))
}

impl Master<'_> {
    // ANCHOR: spawn
    /// Forks the worker of `slot`, with a new task pipe.
    pub fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let (task_read, task_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
        let serial = self.next_serial;
        // The new worker must not hold open the master's ends of the pipes: the other
        // workers' task pipes, its own task pipe's write end, the result pipe's read end.
        let mut others: Vec<i32> = self
            .pool
            .workers()
            .map(|w| w.task_pipe.as_raw_fd())
            .collect();
        others.extend([task_write.as_raw_fd(), self.results_read.as_raw_fd()]);
        // A worker must never die of the group's SIGINT, even right after fork.
        // SAFETY: single-threaded here; the child closes the descriptors that are not its
        // own, runs the worker loop (which allocates) and calls _exit.
        let pid = unsafe {
            supervisor::fork_worker(slot, &[Signal::SIGINT, Signal::SIGTERM], || {
                for fd in others {
                    let _ = nix::unistd::close(fd);
                }
                work(
                    self.args,
                    serial,
                    &task_read,
                    &self.results_write,
                    self.map_reduce,
                )
            })
        }?;
        drop(task_read);
        self.pool.slots[slot] = Some(Worker::new(serial, pid, task_write));
        self.next_serial += 1;
        self.serial_slot.push(slot);
        Ok(())
    }
    // ANCHOR_END: spawn

    // ANCHOR: supervise
    /// The master's loop: reap, respawn, hand out, collect — until every task is accounted
    /// for, or a stop signal's grace runs out.
    fn supervise(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.pool.slots.len() {
            self.spawn(slot)?;
        }
        let kill_every = self.args.kill_worker_every.map(Duration::from_millis);
        let mut next_kill = kill_every.map(|every| Instant::now() + every);
        let mut grace_ends = None;
        while self.completed + (self.failed.len() as u64) < self.args.tasks {
            if let Some(stop) = signals::stop_requested()
                && grace_ends.is_none()
            {
                grace_ends = Some(self.begin_stopping(stop)); // no more tasks, no new workers
            }
            if let Some(end) = grace_ends
                && (Instant::now() >= end || self.pool.workers().all(|w| w.held.is_none()))
            {
                return Ok(()); // the running tasks are done, or their grace is over
            }
            self.reap()?;
            self.respawn_due()?;
            if !self.stopping {
                self.hand_out()?;
            }
            self.watch();
            if next_kill.is_some_and(|at| Instant::now() >= at) && !self.stopping {
                self.kill_random_worker();
                next_kill = kill_every.map(|every| Instant::now() + every);
            }
            // Wakes on a result, a SIGCHLD (the self-pipe), or the next thing due.
            let wait = self.next_wait([next_kill, grace_ends]);
            signals::wait_readable(Some(self.results_read.as_fd()), wait);
            self.collect()?;
        }
        Ok(())
    }
    // ANCHOR_END: supervise

    /// How long the loop may wait for results: 20 ms at most, less if a timeout, a
    /// respawn or one of `deadlines` comes sooner, so that none fires late.
    fn next_wait(&self, deadlines: [Option<Instant>; 2]) -> Duration {
        let timeouts = self.pool.workers().filter_map(|worker| {
            let (_, since) = worker.held?;
            Some(since + self.args.timeout?)
        });
        let respawns = self.pool.next_respawn();
        let now = Instant::now();
        timeouts
            .chain(respawns)
            .chain(deadlines.into_iter().flatten())
            .map(|at| at.saturating_duration_since(now))
            .fold(Duration::from_millis(20), Duration::min)
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    args.check();
    let workers = args.workers();
    let map_reduce = MapReduce::new(args.map_reduce, args.tasks)?;
    let run_pool = |distribution, account| pool(args, workers, distribution, &map_reduce, account);
    if !args.compare {
        return run_pool(args.distribution, Account::Summary).map(drop);
    }
    compare::compare(run_pool) // dynamic, static, dynamic…: their medians compared
}

/// One run of the pool, from the first fork to the last worker reaped: its seconds.
fn pool(
    args: &Args,
    workers: u32,
    distribution: Distribution,
    map_reduce: &MapReduce,
    account: Account,
) -> anyhow::Result<f64> {
    let mut master = Master::new(args, map_reduce, distribution, workers)?;
    let start = Instant::now();
    event("start")
        .field("workers", workers)
        .field("tasks", args.tasks)
        .field("distribution", distribution)
        .say(format!(
            "{}, {}, {} distribution",
            counted(workers, "worker"),
            counted(args.tasks, "task"),
            distribution.name()
        ));
    let result = master.supervise();
    let seconds = start.elapsed().as_secs_f64();
    let result = result.and_then(|()| master.settle());
    let alive_at_end = master
        .pool
        .workers()
        .filter(|w| running(w.pid.as_raw()))
        .count();
    master.shut_down()?;
    result?;
    master.summarize(workers, seconds, alive_at_end, account)?;
    Ok(seconds)
}
