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
mod listen;
mod options;
mod respawn;
mod roll;
mod scoreboard;
mod self_test;
mod stop;
mod summary;
// Until prefork uses the whole supervisor (the next commit).
#[allow(dead_code)]
#[path = "../supervisor.rs"]
mod supervisor;
mod worker;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::child;
use proclab::narrate::event;
use proclab::{cli, narrate, signals};

use options::{Args, Command, Dispatch, Server};
use scoreboard::Scoreboard;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    if let Some(Command::Client(client)) = &args.command {
        return client::main(client);
    }
    options::require_self_test_for_load(&args.server);
    narrate::init(args.server.json, "master");
    cli::run_stoppable(|| run(&args.server))
}

fn run(server: &Server) -> anyhow::Result<()> {
    signals::catch_request(Signal::SIGHUP)?; // not a stop: "replace your workers"
    signals::catch(Signal::SIGCHLD)?; // a dead worker wakes the master's poll
    let (listener, port) = listen::listen_on(server.port, server.dispatch)?;
    listen::say_listening(server, port);
    let mut master = Master::new(server, listener, port)?;
    for slot in 0..master.slots.len() {
        master.spawn(slot)?;
    }
    master.supervise()?;
    master.summarize()
}

impl Master<'_> {
    // ANCHOR: spawn
    /// Forks the worker of `slot`.
    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let channel = dispatch::channel(self.server.dispatch)?;
        let not_mine = self.descriptors_not_for(Some(self.server.dispatch));
        let master = getpid();
        self.board.clear(slot);
        // A worker must never die of the group's Ctrl-C, even right after fork: the
        // signals stay pending until the worker has chosen what they mean to it.
        respawn::block_stop_signals(true)?;
        // SAFETY: single-threaded here; the child closes the master's descriptors, runs
        // the worker loop (which allocates) and calls _exit.
        let forked = unsafe { fork() };
        if !matches!(forked, Ok(ForkResult::Child)) {
            respawn::block_stop_signals(false)?;
        }
        match forked.context("fork")? {
            ForkResult::Child => child::run_then_exit(master, || {
                narrate::set_role("worker");
                close_all(&not_mine);
                if self.server.crash_at_start {
                    return Ok(3); // as a worker whose start-up fails
                }
                worker::start(slot, &self.board, channel, self.listener.as_ref())
            }),
            ForkResult::Parent { child } => {
                self.slots[slot] = Some(Worker {
                    pid: child,
                    channel: channel.map(|(master_end, _worker_end)| master_end),
                    retiring: false,
                });
                self.history.forked(slot, child);
                event("spawn")
                    .field("slot", slot)
                    .field("worker", child.as_raw())
                    .say(format!("fork() -> worker {child} in slot {slot}"));
                Ok(())
            }
        }
    }
    // ANCHOR_END: spawn

    // ANCHOR: supervise
    /// The master's loop. It never serves a request itself (except to pass a connection
    /// on): it reaps and replaces workers, follows the signals, prints the scoreboard.
    fn supervise(&mut self) -> anyhow::Result<()> {
        let mut next_board = Instant::now() + BOARD_EVERY;
        loop {
            self.follow_stop_signals(); // first: a stop signal means no replacements
            self.follow_hangups();
            self.reap()?;
            self.respawn_due()?;
            self.roll_on();
            self.once_all_ready()?;
            self.stop_when_served_long_enough();
            if let Some(stop) = &self.stop {
                if self.slots.iter().all(Option::is_none) && !self.self_test.running() {
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

    /// The master's descriptors a new child must close: every worker's channel (a worker
    /// holding another's would keep it from ever seeing end-of-file), the self-test
    /// client's result pipe, and the listening socket unless the child is a
    /// shared-accept worker.
    fn descriptors_not_for(&self, worker: Option<Dispatch>) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|w| w.channel.as_ref().map(AsRawFd::as_raw_fd))
            .collect();
        if let Some(reader) = self.self_test.result_pipe() {
            fds.push(reader.as_fd().as_raw_fd());
        }
        if worker != Some(Dispatch::SharedAccept)
            && let Some(listener) = &self.listener
        {
            fds.push(listener.as_raw_fd());
        }
        fds
    }

    /// How long the loop may sleep: until the next scoreboard, grace end or respawn;
    /// 10 ms while it watches for workers getting ready (a new worker is given
    /// connections only once it is) or leaving.
    fn next_wait(&self, next_board: Instant) -> Duration {
        let starting = (0..self.slots.len()).any(|s| self.slots[s].is_some() && !self.ready(s));
        let watching = starting
            || self.roll.under_way()
            || self.fds_after_start.is_none()
            || self.stop.is_some();
        let now = Instant::now();
        let grace_ends = self.stop.as_ref().map(|stop| stop.grace_ends);
        [Some(next_board), grace_ends, self.serve_until]
            .into_iter()
            .chain(self.respawn.due_times())
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

/// In a new child: closes the master's descriptors it must not hold.
fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// How often the master prints the scoreboard.
const BOARD_EVERY: Duration = Duration::from_secs(1);

/// The master's view of the worker in a slot.
struct Worker {
    pid: Pid,
    /// round-robin, least-loaded: the master's end of the worker's Unix socket.
    channel: Option<OwnedFd>,
    /// Told to finish and leave (SIGHUP's rolling restart).
    retiring: bool,
}

/// The master: the listening socket, the slots and their workers, and what each concern
/// keeps (in its own file).
struct Master<'a> {
    server: &'a Server,
    /// None once a stop has shut it down.
    listener: Option<OwnedFd>,
    port: u16,
    board: Scoreboard,
    slots: Vec<Option<Worker>>,
    respawn: respawn::Respawn,
    history: summary::History,
    roll: roll::Roll,
    handoff: dispatch::Handoff,
    stop: Option<stop::Stop>,
    /// --seconds: when to stop.
    serve_until: Option<Instant>,
    self_test: self_test::SelfTest,
    fds_after_start: Option<usize>,
    started: Instant,
}

impl<'a> Master<'a> {
    fn new(server: &'a Server, listener: OwnedFd, port: u16) -> anyhow::Result<Master<'a>> {
        let slots = server.workers as usize;
        Ok(Master {
            server,
            listener: Some(listener),
            port,
            board: Scoreboard::new(slots)?,
            slots: (0..slots).map(|_| None).collect(),
            respawn: respawn::Respawn::new(slots),
            history: summary::History::new(slots),
            roll: roll::Roll::default(),
            handoff: dispatch::Handoff::default(),
            stop: None,
            serve_until: None,
            self_test: self_test::SelfTest::default(),
            fds_after_start: None,
            started: Instant::now(),
        })
    }
}
