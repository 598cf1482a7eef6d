//! prefork — a TCP server whose workers are forked before the first client comes.
//!
//! Demonstrates: Apache's prefork MPM, nginx's master and gunicorn's arbiter in small: the
//! master listens, forks W workers that all inherit the listening socket, and from then
//! on only supervises — reaps and replaces workers, follows SIGTERM, Ctrl-C and SIGHUP.
//! Run:     cargo run --bin prefork -- --self-test     (or serve, and in another terminal:
//!          cargo run --bin prefork -- client --port P, with the port it printed)
//! Observe: every request gets exactly one reply, naming its worker; `kill -9` a worker
//!          and a new one takes its slot at once.
//! Book:    book/src/patterns/prefork.md
//!
//! Exit status: 0; 1 (the port is in use, workers keep failing to start, a self-test or
//! client saw a wrong or missing reply); 2 (bad usage); after Ctrl-C or SIGTERM the
//! server dies by that signal once everything is cleaned up.

mod client;
mod dispatch;
mod http;
mod idle;
mod listen;
mod master;
mod options;
mod report;
mod respawn;
mod roll;
mod scoreboard;
mod self_test;
mod stop;
mod summary;
#[path = "../supervisor.rs"]
mod supervisor;
mod worker;

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use proclab::{cli, narrate, signals};

use master::{Master, Worker};
use options::{Args, Command, Server};

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if let Some(Command::Client(client)) = &args.command {
        return client::main(client);
    }
    options::require_self_test_for_load(&args.server);
    narrate::init(args.server.json, "master");
    cli::run_stoppable(|| run(&args.server))
}

impl Master<'_> {
    // ANCHOR: spawn
    /// Forks the worker of `slot`: each slot's first at the start, then its replacements.
    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let mut channel = dispatch::channel(self.server.dispatch)?; // (master's end, worker's)
        let not_mine = self.descriptors_not_for(Some(self.server.dispatch));
        // Ctrl-C reaches the whole group: blocked across the fork, it stays pending in the
        // new worker until the worker has chosen what it means to it.
        // SAFETY: single-threaded here; the child closes the master's descriptors, runs
        // the worker loop (which allocates) and calls _exit.
        let pid = unsafe {
            supervisor::fork_worker(slot, &signals::STOP_SIGNALS, || {
                master::close_all(&not_mine);
                if self.server.crash_at_start {
                    return Ok(3); // as a worker whose start-up fails
                }
                let (board, listener) = (&self.board, self.listener.as_ref());
                worker::start(
                    slot,
                    board,
                    channel.take(),
                    listener,
                    self.server.deadlines(),
                )
            })
        }?;
        self.supervisor.slots[slot] = Some(Worker {
            pid,
            channel: channel.map(|(master_end, _worker_end)| master_end),
            retiring: false,
        });
        self.history.forked(slot, pid);
        Ok(())
    }
    // ANCHOR_END: spawn

    // ANCHOR: supervise
    /// The master's loop. It never serves a request itself (except to pass a connection
    /// on): it reaps and replaces workers, follows the signals, prints the scoreboard.
    fn supervise(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.supervisor.slots.len() {
            self.spawn(slot)?;
        }
        let mut next_board = Instant::now() + BOARD_EVERY;
        loop {
            self.follow_stop_signals(); // first: a stop signal means no replacements
            self.follow_hangups();
            self.reap()?;
            self.respawn_due()?;
            self.roll_on();
            self.once_all_ready()?;
            self.stop_when_served_long_enough();
            self.stop_when_stdout_closed();
            if let Some(stop) = &self.stop {
                if self.supervisor.workers().next().is_none() && !self.self_test.running() {
                    return Ok(()); // every worker reaped
                }
                if Instant::now() >= stop.grace_ends && !stop.killed {
                    self.kill_all("the grace period is over");
                }
            }
            if Instant::now() >= next_board {
                self.board.print();
                next_board = Instant::now() + BOARD_EVERY;
            }
            // Wait for a signal (SIGCHLD, SIGHUP, SIGTERM…), a connection to pass on, or
            // the next thing due.
            let accepting = self.accepting();
            let listener = self.listener.as_ref().filter(|_| accepting);
            let wait = self.next_wait(next_board);
            if signals::wait_readable(listener.map(AsFd::as_fd), wait) && accepting {
                self.dispatch()?;
            }
        }
    }
    // ANCHOR_END: supervise

    /// How long the loop may sleep: until the next scoreboard, grace end or respawn;
    /// 10 ms while it watches for workers getting ready (a new worker is given
    /// connections only once it is) or leaving.
    fn next_wait(&self, next_board: Instant) -> Duration {
        let starting = (0..self.supervisor.slots.len())
            .any(|s| self.supervisor.slots[s].is_some() && !self.ready(s));
        let watching = starting
            || self.roll.under_way()
            || self.fds_after_start.is_none()
            || self.stop.is_some();
        let now = Instant::now();
        let grace_ends = self.stop.as_ref().map(|stop| stop.grace_ends);
        [
            Some(next_board),
            grace_ends,
            self.serve_until,
            self.supervisor.next_respawn(),
        ]
        .into_iter()
        .flatten()
        .map(|at| at.saturating_duration_since(now))
        .fold(
            if watching {
                Duration::from_millis(10)
            } else {
                BOARD_EVERY
            },
            Duration::min,
        )
    }
}

/// The master's life: listen, fork a worker into each slot and supervise them, summarize.
fn run(server: &Server) -> anyhow::Result<()> {
    let mut master = Master::listen(server)?;
    master.supervise()?;
    master.summarize()
}

/// How often the master prints the scoreboard.
const BOARD_EVERY: Duration = Duration::from_secs(1);
