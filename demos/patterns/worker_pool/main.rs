//! worker_pool — a master, its workers, a task queue: crashes survived, every task done
//! exactly once.
//!
//! Demonstrates: the master–worker pattern under multiprocessing.Pool, Celery's prefork
//! workers and gunicorn's arbiter. The master forks W workers and hands out T tasks;
//! results come back with the task's id, so the master accepts one result per task and
//! discards (and counts) any duplicate. It reaps a dead worker without blocking (SIGCHLD
//! wakes its poll), forks a replacement and hands the task the dead one held to another.
//! Run:     cargo run --bin worker_pool             (then --kill-worker-every 50,
//!          --task-cost uneven --distribution static, --map-reduce)
//! Observe: completed = tasks and no duplicate accepted, however many workers die.
//! Book:    book/src/patterns/worker_pool.md
//!
//! The IPC, and why (the chapter says it at length):
//! - Tasks: one pipe per worker, master → worker, 8-byte task ids (a stop message is the
//!   id `STOP`). A worker is given its next task only when it has returned the last one,
//!   so each worker holds at most one task and the master always knows which: when a
//!   worker dies, that one task goes back to the queue. A shared queue (mqueue's POSIX
//!   queue) would hand out tasks without the master knowing who took which.
//! - Results: one pipe shared by all workers, worker → master, fixed-size
//!   [`proclab::record`] records (tag = worker serial, task id). A record is far below
//!   PIPE_BUF, so each `write` lands whole, never torn by another worker's.
//! - Exactly once: the master notes every result in a [`proclab::record::Ledger`] keyed
//!   by task id, as mqueue does for its messages: delivery is at least once (a task may
//!   run again after its worker died), acceptance is exactly once.
//! - Reaping: SIGCHLD caught by [`proclab::signals::catch`] (count + self-pipe), then
//!   `waitpid(-1, WNOHANG)` until nothing is left, as in the sigchld demo.
//!
//! Exit status: 0, 1 (runtime error, or workers that keep crashing at start: the pool
//! gives up), 2 (bad usage); after Ctrl-C or SIGTERM the demo dies by that signal.

#[path = "../supervisor.rs"]
mod supervisor;

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, pipe2};
use proclab::child::{Ending, ending};
use proclab::fdio::{read_exact, write_all, write_message};
use proclab::inspect::running;
use proclab::narrate::event;
use proclab::record::{Decoder, Found, Ledger, Tag, encode};
use proclab::shm::{SharedArray, load, store};
use proclab::{cli, narrate, signals};
use serde::Serialize;
use supervisor::{Reaped, Supervised, Supervisor};

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
                        worker_pool --kill-worker-every 50\n  \
                        worker_pool --task-cost uneven --compare\n  \
                        worker_pool --hang-task 7 --timeout 0.5 --retries 2\n  \
                        worker_pool --map-reduce"
)]
struct Args {
    /// Worker processes (1-64; default: the number of CPUs).
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: Option<u32>,

    /// Tasks to do (1-100000).
    #[arg(long, value_name = "T", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    tasks: u64,

    /// How tasks reach workers.
    #[arg(long, value_enum, default_value_t = Distribution::Dynamic)]
    distribution: Distribution,

    /// How long each task takes.
    #[arg(long, value_enum, default_value_t = Cost::None)]
    task_cost: Cost,

    /// Run twice, dynamic then static, and show both times.
    #[arg(long, conflicts_with = "distribution")]
    compare: bool,

    /// Kill a random worker with SIGKILL every MS milliseconds (10-60000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    kill_worker_every: Option<u64>,

    /// Kill a worker that holds one task longer than this (more than 0, at most 3600 s)
    /// and retry the task.
    #[arg(long, value_name = "SECONDS", value_parser = cli::positive_seconds)]
    timeout: Option<Duration>,

    /// How many times a timed-out or lost task is retried before it is reported failed.
    #[arg(long, value_name = "R", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,

    /// The task with this id hangs for ever (to show --timeout and --retries).
    #[arg(long, value_name = "ID", requires = "timeout")]
    hang_task: Option<u64>,

    /// Workers exit with status 3 as soon as they start (to show backoff, then giving up).
    #[arg(long)]
    crash_at_start: bool,

    /// Each task sums one slice of an array of numbers the master shares with the workers
    /// (shared memory); the master adds the partial sums and checks the total.
    #[arg(long)]
    map_reduce: bool,

    /// After Ctrl-C or SIGTERM, how long running tasks may take to finish (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = cli::seconds)]
    grace: Duration,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Distribution {
    /// Workers pull the next task when they are free.
    Dynamic,
    /// Tasks are split evenly up front: worker i gets the i-th block of T/W.
    Static,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Cost {
    /// Tasks are instant: the pool's own overhead.
    None,
    /// Every task takes 2 ms.
    Uniform,
    /// The first quarter of the tasks take 20 ms each, the rest 1 ms.
    Uneven,
}

/// The task id of the stop message.
const STOP: u64 = u64::MAX;
/// The task id of a heartbeat record.
const HEARTBEAT: u64 = u64::MAX - 1;
/// A result record's size: the smallest record; far below PIPE_BUF, so writes stay whole.
const RECORD: usize = proclab::record::MIN_SIZE;
/// How often a busy worker says it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// A busy worker not heard from for this long is reported silent.
const SILENT_AFTER: Duration = Duration::from_millis(300);
/// Numbers per task in --map-reduce.
const SLICE: usize = 100; // at most 100000 tasks × 100 × 8 bytes = 80 MB
/// A worker that dies sooner than this after its start, having done nothing, crashed at
/// start; this many such crashes in a row on one slot and the pool gives up.
const EARLY: Duration = Duration::from_millis(500);
const GIVE_UP_AFTER: u32 = 5;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if args.hang_task.is_some_and(|task| task >= args.tasks) {
        cli::usage_error("--hang-task must be the id of a task: less than --tasks");
    }
    narrate::init(args.json, "master");
    cli::run_stoppable(|| run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(64) as u32)
    });
    let mut data = SharedArray::<u64>::zeroed(if args.map_reduce {
        args.tasks as usize * SLICE
    } else {
        0
    })?;
    let partials = SharedArray::<AtomicU64>::zeroed(args.tasks as usize)?;
    if args.map_reduce {
        for (index, value) in data.view().iter_mut().enumerate() {
            *value = (index as u64 * 2_654_435_761) % 1000; // any numbers will do
        }
    }
    let shared = Shared {
        data: &data,
        partials: &partials,
    };
    if args.compare {
        // The first run's account is a `run` event; the second's is the summary, with
        // both times.
        let dynamic = pool(args, workers, Distribution::Dynamic, &shared, Account::Run)?;
        if signals::stop_requested().is_none() {
            let compared = Account::Compared(dynamic.seconds);
            pool(args, workers, Distribution::Static, &shared, compared)?;
        }
    } else {
        pool(args, workers, args.distribution, &shared, Account::Summary)?;
    }
    Ok(())
}

/// The shared memory of --map-reduce: the numbers, and one partial sum per task.
struct Shared<'a> {
    data: &'a SharedArray<u64>,
    partials: &'a SharedArray<AtomicU64>,
}

/// What the master knows of one worker slot's current process.
struct Worker {
    serial: u32,
    pid: Pid,
    task_pipe: OwnedFd,
    started: Instant,
    held: Option<(u64, Instant)>,
    done: u64,
    last_heard: Instant,
    /// Said to be silent during its current task (said once per task).
    silent: bool,
    /// Why the master sent it SIGKILL, if it did: then its death is not a crash.
    killed: Option<Killed>,
}

impl Supervised for Worker {
    fn pid(&self) -> Pid {
        self.pid
    }
}

/// Why the master killed a worker.
#[derive(Clone, Copy, PartialEq)]
enum Killed {
    /// --kill-worker-every: a demonstration; its task is not to blame and loses no retry.
    Demonstration,
    /// --timeout: it held one task too long; that task uses up one of its retries.
    Timeout,
}

/// One process that served in the pool, as the summary lists it.
#[derive(Serialize)]
struct Served {
    slot: usize,
    pid: i32,
    tasks: u64,
    #[serde(flatten)]
    ending: Ending,
}

/// How a run of the pool reports its account.
#[derive(Clone, Copy)]
enum Account {
    /// As a `run` event: --compare's first run.
    Run,
    /// As the summary.
    Summary,
    /// As the summary, with the dynamic run's time (seconds) beside this static one's.
    Compared(f64),
}

/// The pool's result.
struct Outcome {
    seconds: f64,
}

/// The master's whole state.
struct Master<'a> {
    args: &'a Args,
    shared: &'a Shared<'a>,
    distribution: Distribution,
    pool: Supervisor<Worker>,
    /// Dynamic: one queue, queues[0]. Static: one queue per slot.
    queues: Vec<VecDeque<u64>>,
    results_read: OwnedFd,
    results_write: OwnedFd,
    decoder: Decoder,
    ledger: Ledger,
    attempts: Vec<u32>,
    completed: u64,
    failed: Vec<u64>,
    retried: u64,
    duplicates: u64,
    respawns: u64,
    heartbeats: u64,
    silences: u64,
    next_serial: u32,
    serial_slot: Vec<usize>,
    per_worker: Vec<u64>,
    served: Vec<Served>,
    stopping: bool,
}

fn pool(
    args: &Args,
    workers: u32,
    distribution: Distribution,
    shared: &Shared,
    account: Account,
) -> anyhow::Result<Outcome> {
    let (results_read, results_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    fcntl(&results_read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("fcntl(O_NONBLOCK)")?;
    let slots = workers as usize;
    let queues = match distribution {
        Distribution::Dynamic => vec![(0..args.tasks).collect()],
        Distribution::Static => (0..slots as u64)
            .map(|slot| {
                let (start, end) = (
                    args.tasks * slot / slots as u64,
                    args.tasks * (slot + 1) / slots as u64,
                );
                (start..end).collect()
            })
            .collect(),
    };
    let mut master = Master {
        args,
        shared,
        distribution,
        pool: Supervisor::new(slots, GIVE_UP_AFTER)?,
        queues,
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
    };
    let start = Instant::now();
    event("start")
        .field("workers", workers)
        .field("tasks", args.tasks)
        .field("distribution", distribution)
        .say(format!(
            "{workers} workers, {} tasks, {} distribution",
            args.tasks,
            name(distribution)
        ));
    let result = master.supervise();
    let seconds = start.elapsed().as_secs_f64();
    let result = result.and_then(|()| master.settle());
    let alive_at_end = master
        .pool
        .slots
        .iter()
        .flatten()
        .filter(|worker| running(worker.pid.as_raw()))
        .count();
    master.shut_down()?;
    result?;
    master.summarize(workers, seconds, alive_at_end, account)?;
    Ok(Outcome { seconds })
}

fn name(distribution: Distribution) -> &'static str {
    match distribution {
        Distribution::Dynamic => "dynamic",
        Distribution::Static => "static",
    }
}

impl Master<'_> {
    // ANCHOR: supervise
    /// The master's loop: reap, respawn, hand out, collect — until every task is accounted
    /// for, or a stop signal's grace runs out.
    fn supervise(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.pool.slots.len() {
            self.spawn(slot)?;
        }
        let mut next_kill = self
            .args
            .kill_worker_every
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut grace_ends = None;
        while self.completed + (self.failed.len() as u64) < self.args.tasks {
            if let Some(stop) = signals::stop_requested()
                && grace_ends.is_none()
            {
                self.stopping = true;
                let held = self
                    .pool
                    .slots
                    .iter()
                    .flatten()
                    .filter(|w| w.held.is_some());
                event("stopping")
                    .field("signal", stop.as_str())
                    .field("running_tasks", held.count())
                    .field("grace_seconds", self.args.grace.as_secs_f64())
                    .say(format!(
                        "{stop}: no more tasks handed out; running tasks have {}s to finish",
                        self.args.grace.as_secs_f64()
                    ));
                grace_ends = Some(Instant::now() + self.args.grace);
                self.pool.cancel_respawns(); // no new workers
            }
            if self.stopping {
                let busy = self.pool.slots.iter().flatten().any(|w| w.held.is_some());
                if !busy || grace_ends.is_some_and(|end| Instant::now() >= end) {
                    return Ok(());
                }
            }
            self.reap()?;
            self.respawn_due()?;
            if !self.stopping {
                self.hand_out()?;
            }
            self.watch();
            if let Some(at) = next_kill
                && Instant::now() >= at
                && !self.stopping
            {
                self.kill_random_worker();
                next_kill = self
                    .args
                    .kill_worker_every
                    .map(|ms| Instant::now() + Duration::from_millis(ms));
            }
            let wait = self.next_wait([next_kill, grace_ends]);
            signals::wait_readable(Some(self.results_read.as_fd()), wait);
            self.collect()?;
        }
        Ok(())
    }
    // ANCHOR_END: supervise

    // ANCHOR: spawn
    /// Forks the worker of `slot`, with a new task pipe.
    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
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
                    self.shared,
                )
            })
        }?;
        drop(task_read);
        let now = Instant::now();
        self.pool.slots[slot] = Some(Worker {
            serial,
            pid,
            task_pipe: task_write,
            started: now,
            held: None,
            done: 0,
            last_heard: now,
            silent: false,
            killed: None,
        });
        self.next_serial += 1;
        self.serial_slot.push(slot);
        Ok(())
    }
    // ANCHOR_END: spawn

    /// Gives each idle worker its next task, one at a time: a worker holds at most one.
    fn hand_out(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.pool.slots.len() {
            let queue = match self.distribution {
                Distribution::Dynamic => 0,
                Distribution::Static => slot,
            };
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

    // ANCHOR: collect
    /// Reads every result and heartbeat waiting in the result pipe; accepts one result
    /// per task, discards and counts duplicates.
    fn collect(&mut self) -> anyhow::Result<()> {
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

    // ANCHOR: reap
    /// Reaps every worker that has ended (waitpid(-1, WNOHANG) until none is left, as
    /// SIGCHLD signals merge), re-queues the task it held and schedules a replacement.
    fn reap(&mut self) -> anyhow::Result<()> {
        if !self.pool.sigchld_came() {
            return Ok(()); // no worker can have ended since the last look
        }
        self.reap_ended()
    }

    fn reap_ended(&mut self) -> anyhow::Result<()> {
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

    /// A lost task goes back to the front of its queue, unless it has used its retries.
    fn requeue(&mut self, slot: usize, task: u64, count_attempt: bool) {
        let attempts = &mut self.attempts[task as usize];
        *attempts += u32::from(count_attempt);
        if *attempts > self.args.retries {
            self.failed.push(task);
            event("failed")
                .field("task", task)
                .field("attempts", *attempts)
                .say(format!(
                    "task {task} failed: lost {attempts} times, retries exhausted"
                ));
            return;
        }
        self.retried += 1;
        let queue = match self.distribution {
            Distribution::Dynamic => 0,
            Distribution::Static => slot,
        };
        self.queues[queue].push_front(task);
        event("requeued")
            .field("task", task)
            .field("attempt", *attempts)
            .say(format!("task {task} goes back to the queue"));
    }

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

    /// After the work, before the stop messages: reap and respawn until every slot has a
    /// live worker again (a worker killed just before the last result is replaced too),
    /// for at most a second.
    fn settle(&mut self) -> anyhow::Result<()> {
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

    /// How long the loop may wait for results: 20 ms at most, less if a timeout, a
    /// respawn or one of `deadlines` comes sooner, so that none fires late.
    fn next_wait(&self, deadlines: [Option<Instant>; 2]) -> Duration {
        let timeouts = self.pool.slots.iter().flatten().filter_map(|worker| {
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

    fn respawn_due(&mut self) -> anyhow::Result<()> {
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
    fn watch(&mut self) {
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

    fn kill_random_worker(&mut self) {
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

    // ANCHOR: shut_down
    /// One stop message per worker; every worker reaped. Workers still busy when a stop
    /// signal's grace ran out are killed first.
    fn shut_down(&mut self) -> anyhow::Result<()> {
        self.stopping = true;
        self.pool.cancel_respawns();
        self.reap_ended()?; // workers already dead get no stop message and no SIGKILL
        let (mut stopped, mut killed) = (Vec::new(), Vec::new());
        for worker in self.pool.slots.iter().flatten() {
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
                for worker in self.pool.slots.iter().flatten() {
                    let _ = kill(worker.pid, Signal::SIGKILL);
                }
            }
            // Wakes on SIGCHLD (the self-pipe).
            signals::wait_readable(None, Duration::from_millis(50));
        }
        self.collect()
    }
    // ANCHOR_END: shut_down

    fn summarize(
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
            Account::Run => "run",
            Account::Summary | Account::Compared(_) => "summary",
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
        let mut text = format!(
            "summary: {} of {} tasks completed, every task exactly once: {every_task_once}; failed {}, \
             unfinished {unfinished}, retried {}, duplicates discarded {}, respawns {}; \
             per worker {:?}; {seconds:.3}s ({})",
            self.completed,
            self.args.tasks,
            self.failed.len(),
            self.retried,
            self.duplicates,
            self.respawns,
            self.per_worker,
            name(self.distribution)
        );
        if self.args.map_reduce {
            let sums = self.shared.partials.atomics();
            let reduced: u64 = sums.iter().map(load).sum();
            let sequential: u64 = self.shared.data.as_slice().iter().sum();
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
        if let Account::Compared(dynamic) = account {
            summary = summary
                .field("dynamic_seconds", dynamic)
                .field("static_seconds", seconds);
            text += &format!(
                "; dynamic took {dynamic:.3}s, static {seconds:.3}s: {:.0}% of static's time",
                100.0 * dynamic / seconds
            );
        }
        summary.say(text);
        Ok(())
    }
}

// ANCHOR: work
/// A worker: read a task id, do it, send a result tagged with it; until a stop message.
fn work(
    args: &Args,
    serial: u32,
    tasks: &OwnedFd,
    results: &OwnedFd,
    shared: &Shared,
) -> anyhow::Result<i32> {
    if args.crash_at_start {
        return Ok(3);
    }
    // Only the master decides when the pool stops: Ctrl-C to the whole group must not
    // kill a worker in the middle of its task. (Killing the master kills the workers:
    // child::run set their parent-death signal.)
    signals::set_blocked(Signal::SIGINT, true)?;
    signals::set_blocked(Signal::SIGTERM, true)?;
    let heartbeat = encode(
        Tag {
            writer: serial,
            seq: HEARTBEAT,
        },
        RECORD,
    );
    let mut last_beat = Instant::now();
    let mut id = [0u8; 8];
    while read_exact(tasks, &mut id)? {
        let task = u64::from_le_bytes(id);
        if task == STOP {
            break;
        }
        let cost = if args.hang_task == Some(task) {
            Duration::MAX
        } else {
            cost(args.task_cost, task, args.tasks)
        };
        let started = Instant::now();
        while started.elapsed() < cost {
            std::thread::sleep(HEARTBEAT_EVERY.min(cost.saturating_sub(started.elapsed())));
            if args.hang_task != Some(task) && last_beat.elapsed() >= HEARTBEAT_EVERY {
                write_all(results, &heartbeat)?; // hung: silent, as a stuck loop would be
                last_beat = Instant::now();
            }
        }
        if args.map_reduce {
            let slice = &shared.data.as_slice()[task as usize * SLICE..][..SLICE];
            store(
                &shared.partials.atomics()[task as usize],
                slice.iter().sum(),
            );
        }
        let result = encode(
            Tag {
                writer: serial,
                seq: task,
            },
            RECORD,
        );
        write_all(results, &result)?; // one write, < PIPE_BUF: whole
    }
    Ok(0)
}
// ANCHOR_END: work

/// Sends one task id (or STOP) to a worker: 8 bytes in one write, which the pipe keeps
/// whole. The pipe holds at most one unread id, so it never blocks; and it is sent even
/// while stopping, since stop messages are what a stopping master must still send.
fn send_id(task_pipe: &OwnedFd, id: u64) -> nix::Result<()> {
    write_message(task_pipe, &id.to_le_bytes())
}

/// How long task `task` of `tasks` takes.
fn cost(cost: Cost, task: u64, tasks: u64) -> Duration {
    match cost {
        Cost::None => Duration::ZERO,
        Cost::Uniform => Duration::from_millis(2),
        Cost::Uneven if task < tasks.div_ceil(4) => Duration::from_millis(20),
        Cost::Uneven => Duration::from_millis(1),
    }
}
