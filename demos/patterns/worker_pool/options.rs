//! worker_pool/options.rs — the command line: the pool's size, its tasks, the failures to
//! provoke.
//!
//! Demonstrates: every failure the pool survives can be provoked on demand — a worker
//! killed, a task that hangs, workers that crash at start — and a stop signal's grace.
//! Run:     cargo run --bin worker_pool -- --help
//! Observe: the examples at the end of --help, each showing one of them.
//! Book:    book/src/patterns/worker_pool.md

use std::time::Duration;

use clap::{Parser, ValueEnum};
use proclab::cli;
use serde::Serialize;

/// A master forks workers, hands them tasks, and proves every task was done exactly once.
///
/// Tasks go to each worker through its own pipe, one at a time; results come back through
/// one shared pipe, tagged with the task's id. The master reaps workers that die (SIGCHLD,
/// without blocking), starts replacements and re-queues the task the dead worker held.
/// A stop message per worker ends the run; Ctrl-C or SIGTERM stops handing out work, lets
/// running tasks finish within --grace, then kills what is left.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  worker_pool\n  worker_pool --workers 4 --tasks 1000\n  \
                        worker_pool --task-cost uniform --kill-worker-every 50\n  \
                        worker_pool --tasks 200 --task-cost uneven --compare\n  \
                        worker_pool --hang-task 7 --timeout 0.5 --retries 1\n  \
                        worker_pool --crash-at-start\n  \
                        worker_pool --map-reduce"
)]
pub struct Args {
    /// Worker processes (1-64; default: the number of CPUs).
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,

    /// Tasks to do (1-100000).
    #[arg(long, value_name = "T", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub tasks: u64,

    /// How tasks reach workers.
    #[arg(long, value_enum, default_value_t = Distribution::Dynamic)]
    pub distribution: Distribution,

    /// How long each task takes.
    #[arg(long, value_enum, default_value_t = Cost::None)]
    pub task_cost: Cost,

    /// Run dynamic then static, 3 times each, alternated, and compare their medians.
    #[arg(long, conflicts_with = "distribution")]
    pub compare: bool,

    /// Kill a random worker with SIGKILL every MS milliseconds (10-60000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub kill_worker_every: Option<u64>,

    /// Kill a worker that holds one task longer than this (more than 0, at most 3600 s)
    /// and retry the task.
    #[arg(long, value_name = "SECONDS", value_parser = cli::positive_seconds)]
    pub timeout: Option<Duration>,

    /// How many times a timed-out or lost task is retried before it is reported failed.
    #[arg(long, value_name = "R", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,

    /// The task with this id hangs for ever (to show --timeout and --retries).
    #[arg(long, value_name = "ID", requires = "timeout")]
    pub hang_task: Option<u64>,

    /// Workers exit with status 3 as soon as they start (to show backoff, then giving up).
    #[arg(long)]
    pub crash_at_start: bool,

    /// Each task sums one slice of an array of numbers the master shares with the workers
    /// (shared memory); the master adds the partial sums and checks the total.
    #[arg(long)]
    pub map_reduce: bool,

    /// After Ctrl-C or SIGTERM, how long running tasks may take to finish (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = cli::seconds)]
    pub grace: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Workers pull the next task when they are free.
    Dynamic,
    /// Tasks are split evenly up front: worker i gets the i-th block of T/W.
    Static,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Cost {
    /// Tasks are instant: the pool's own overhead.
    None,
    /// Every task takes 2 ms.
    Uniform,
    /// The first quarter of the tasks take 20 ms each, the rest 1 ms.
    Uneven,
}

impl Args {
    /// The one mistake clap cannot see: --hang-task must name a task (exit status 2).
    pub fn check(&self) {
        if self.hang_task.is_some_and(|task| task >= self.tasks) {
            cli::usage_error("--hang-task must be the id of a task: less than --tasks");
        }
    }

    /// --workers, or the number of CPUs.
    pub fn workers(&self) -> u32 {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(64) as u32)
        })
    }

    // ANCHOR: cost
    /// How long task `task` takes.
    pub fn cost(&self, task: u64) -> Duration {
        match self.task_cost {
            _ if self.hang_task == Some(task) => Duration::MAX,
            Cost::None => Duration::ZERO,
            Cost::Uniform => Duration::from_millis(2),
            Cost::Uneven if task < self.tasks.div_ceil(4) => Duration::from_millis(20),
            Cost::Uneven => Duration::from_millis(1),
        }
    }
    // ANCHOR_END: cost
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Dynamic => "dynamic",
            Distribution::Static => "static",
        }
    }
}
