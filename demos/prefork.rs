//! prefork — a TCP server whose workers are forked before the first client comes.
//!
//! Demonstrates: the architecture of Apache's prefork MPM, nginx's master and workers and
//! gunicorn's arbiter, small enough to read in one sitting. The master listens on
//! 127.0.0.1, forks W workers, and from then on only supervises: it reaps a dead worker
//! without blocking and forks its replacement in the same slot, prints the scoreboard the
//! workers keep in shared memory, stops gracefully on SIGTERM or Ctrl-C and replaces its
//! workers one at a time on SIGHUP.
//! Run:     cargo run --bin prefork -- --self-test     (a load from a client process)
//!          cargo run --bin prefork                    (then, in another terminal,
//!          cargo run --bin prefork -- client --port P, with the port it printed)
//! Observe: every request gets exactly one reply, naming the worker that answered; kill a
//!          worker with `kill -9` and a new one takes its slot at once.
//! Book:    book/src/patterns/prefork.md
//!
//! Connections reach the workers in one of three ways (`--dispatch`):
//! - `shared-accept`: every worker blocks in accept() on the listening socket it
//!   inherited; the kernel gives each new connection to one of them.
//! - `round-robin`, `least-loaded`: the master accepts, and passes the connection's file
//!   descriptor to a worker over that worker's Unix socket (SCM_RIGHTS), by turn or to the
//!   worker holding the fewest connections on the scoreboard.
//!
//! Signals, as gunicorn's arbiter reads them: SIGTERM or the first Ctrl-C — stop
//! accepting, let the requests in flight finish within --grace, then SIGKILL what is
//! left; a second Ctrl-C (or SIGTERM) — SIGKILL now; SIGHUP — replace the workers one at
//! a time, never refusing a connection. (So closing the terminal, which sends SIGHUP,
//! does not stop the server: stop it with Ctrl-C or SIGTERM.)
//!
//! Exit status: 0; 1 (runtime error: the port is in use, workers keep failing to start, a
//! self-test or client saw a wrong or missing reply); 2 (bad usage); after Ctrl-C or
//! SIGTERM the server dies by that signal once everything is cleaned up.

#[path = "prefork/client.rs"]
mod client;
#[path = "prefork/scoreboard.rs"]
mod scoreboard;
#[path = "prefork/worker.rs"]
mod worker;
// Until prefork uses the whole supervisor (its own split, issue 14).
#[allow(dead_code)]
#[path = "patterns/supervisor.rs"]
mod supervisor;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, Shutdown, SockFlag, SockType, setsockopt, shutdown, socketpair, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::child::{self, ResultReader, ending};
use proclab::narrate::event;
use proclab::{cli, narrate, signals};
use serde::Serialize;

use client::{Load, Report};
use scoreboard::Scoreboard;
use supervisor::StartBackoff;
use worker::Source;

/// A TCP server on 127.0.0.1 with pre-forked workers, a shared scoreboard, respawn,
/// graceful shutdown and rolling restart — and `prefork client`, its load generator.
///
/// The master binds the port, forks --workers W, and supervises them. One request per
/// connection, one line: `ECHO <tag>` (the reply names the worker), `SLOW <ms> <tag>`, or
/// `STATUS` (the scoreboard). SIGTERM or Ctrl-C: graceful stop within --grace; a second
/// Ctrl-C: stop now; SIGHUP: replace the workers one at a time.
#[derive(Parser)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  prefork --self-test\n  prefork --self-test --dispatch least-loaded \
                  --slow-ms 20 --slow-every 10\n  prefork --port 8080 --workers 4      \
                  (then: prefork client --port 8080; printf 'STATUS\\n' | nc 127.0.0.1 8080)\n  \
                  prefork client --port 8080 --connections 8 --requests 2000"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    server: Server,
}

#[derive(Subcommand)]
enum Command {
    /// Send tagged requests to a running prefork server from C connections at a time;
    /// report requests/s and latency, and check that every request got exactly one reply,
    /// its own. Exit status 1 if one did not.
    Client(ClientArgs),
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The server's port, as it printed it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,

    #[command(flatten)]
    load: Load,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct Server {
    /// The TCP port to listen on, on 127.0.0.1 (0: any free port, printed at start).
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Worker processes (1-64).
    #[arg(long, value_name = "W", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: u64,

    /// How connections reach the workers.
    #[arg(long, value_enum, default_value_t = Dispatch::SharedAccept)]
    dispatch: Dispatch,

    /// After SIGTERM or Ctrl-C, how long requests in flight may take to finish (0-3600 s).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = cli::seconds)]
    grace: Duration,

    /// Serve for this long, then stop as SIGTERM would (default: until stopped).
    #[arg(long, value_name = "SECONDS", value_parser = cli::positive_seconds)]
    seconds: Option<Duration>,

    /// Once the workers are ready, fork a client that sends the load below, then stop
    /// gracefully and report both sides.
    #[arg(long, conflicts_with = "seconds")]
    self_test: bool,

    /// Workers exit with status 3 before they are ready (to show backoff, then giving up).
    #[arg(long)]
    crash_at_start: bool,

    /// Print the timeline as JSON Lines.
    #[arg(long)]
    json: bool,

    #[command(
        flatten,
        next_help_heading = "Load (with --self-test; or `prefork client`)"
    )]
    load: Load,
}

#[derive(Clone, Copy, PartialEq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Dispatch {
    /// Every worker calls accept() on the shared listening socket; the kernel picks one.
    SharedAccept,
    /// The master accepts and passes each connection to the next worker in turn.
    RoundRobin,
    /// The master accepts and passes each connection to the worker with the fewest.
    LeastLoaded,
}

/// How often the master prints the scoreboard.
const BOARD_EVERY: Duration = Duration::from_secs(1);
/// How often an idle worker wakes up to beat its heartbeat (SO_RCVTIMEO).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// A slot whose worker dies this many times in a row before it is ready: the master gives
/// up rather than fork a storm of doomed workers.
const GIVE_UP_AFTER: u32 = 5;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    match args.command {
        Some(Command::Client(client)) => {
            narrate::init(client.json, "client");
            let report = client::run(&client.load, client.port, true);
            cli::exit_code(check(&report))
        }
        None => {
            let server = args.server;
            if !server.self_test && load_options_given() {
                cli::usage_error(
                    "the load options need --self-test (or send the load with `prefork client`)",
                );
            }
            narrate::init(server.json, "master");
            cli::run_stoppable(|| serve(&server))
        }
    }
}

/// True if the command line sets a load option (--connections, --requests…).
fn load_options_given() -> bool {
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    let load = <Load as clap::Args>::augment_args(clap::Command::new("load"));
    load.get_arguments().any(|option| {
        matches.value_source(option.get_id().as_str())
            == Some(clap::parser::ValueSource::CommandLine)
    })
}

/// An error unless every request got exactly one reply, its own.
fn check(report: &Report) -> anyhow::Result<()> {
    if report.mismatched > 0 || report.failed > 0 {
        bail!(
            "{} of {} requests got a wrong reply and {} none at all",
            report.mismatched,
            report.requests,
            report.failed
        );
    }
    Ok(())
}

// ANCHOR: listen
/// Binds 127.0.0.1:`port` and listens — before any worker exists: every worker forked
/// afterwards inherits this one listening socket.
///
/// # References: socket(2), bind(2), listen(2) (all three in `TcpListener::bind`)
fn listen(port: u16, dispatch: Dispatch) -> anyhow::Result<(OwnedFd, u16)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!("port {port} is in use on 127.0.0.1 ({error}): choose another, or --port 0")
        } else {
            anyhow!(error).context(format!("bind 127.0.0.1:{port}"))
        }
    })?;
    let port = listener.local_addr()?.port(); // --port 0: the one the kernel chose
    let listener = OwnedFd::from(listener);
    match dispatch {
        // Workers block in accept(), but wake up every HEARTBEAT_EVERY to say they live.
        Dispatch::SharedAccept => setsockopt(&listener, sockopt::ReceiveTimeout, &heartbeat())?,
        // Only the master accepts, when poll() says a connection is waiting.
        _ => drop(fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?),
    }
    Ok((listener, port))
}
// ANCHOR_END: listen

fn heartbeat() -> TimeVal {
    TimeVal::milliseconds(HEARTBEAT_EVERY.as_millis() as i64)
}

fn serve(server: &Server) -> anyhow::Result<()> {
    signals::catch_request(Signal::SIGHUP)?; // not a stop: "replace your workers"
    signals::catch(Signal::SIGCHLD)?; // a dead worker wakes the master's poll
    let (listener, port) = listen(server.port, server.dispatch)?;
    event("listening")
        .field("port", port)
        .field("workers", server.workers)
        .field("dispatch", server.dispatch)
        .say(format!(
            "listening on 127.0.0.1:{port}; {} workers, {} dispatch{}",
            server.workers,
            dispatch_name(server.dispatch),
            if server.self_test {
                String::new()
            } else {
                format!(
                    " -- try: prefork client --port {port} (Ctrl-C, SIGTERM: stop; SIGHUP: new workers)"
                )
            }
        ));
    let slots = server.workers as usize;
    let mut master = Master {
        server,
        listener: Some(listener),
        port,
        board: Scoreboard::new(slots)?,
        slots: (0..slots).map(|_| None).collect(),
        history: vec![SlotHistory::default(); slots],
        respawn_at: vec![None; slots],
        backoff: StartBackoff::new(slots, GIVE_UP_AFTER),
        spawns: 0,
        respawns: 0,
        rolled: 0,
        start_failures: 0,
        roll: VecDeque::new(),
        rolling: None,
        hangups_seen: 0,
        turn: 0,
        dropped: 0,
        sigchld_seen: signals::count(Signal::SIGCHLD),
        stop: None,
        client: None,
        client_report: None,
        fds_after_start: None,
        serve_until: None,
        started: Instant::now(),
    };
    master.supervise()?;
    master.summarize()
}

fn dispatch_name(dispatch: Dispatch) -> &'static str {
    match dispatch {
        Dispatch::SharedAccept => "shared-accept",
        Dispatch::RoundRobin => "round-robin",
        Dispatch::LeastLoaded => "least-loaded",
    }
}

/// The master's view of the worker in a slot.
struct Worker {
    pid: Pid,
    /// round-robin, least-loaded: the master's end of the worker's Unix socket.
    channel: Option<OwnedFd>,
    /// Told to finish and leave (SIGHUP's rolling restart).
    retiring: bool,
}

/// What a slot's processes did, all of them.
#[derive(Clone, Default, Serialize)]
struct SlotHistory {
    served: u64,
    processes: u64,
    last_pid: i32,
}

/// A stop under way.
struct Stop {
    reason: String,
    grace_ends: Instant,
    in_flight: u64,
    /// Stop signals already counted when it began: one more means "now".
    signals_at_start: u64,
    /// The remaining workers were sent SIGKILL.
    killed: bool,
    /// Connections they still held then: a stop is "forced" if it cut any off.
    cut_off: u64,
    fds_before: usize,
}

struct Master<'a> {
    server: &'a Server,
    listener: Option<OwnedFd>,
    port: u16,
    board: Scoreboard,
    slots: Vec<Option<Worker>>,
    history: Vec<SlotHistory>,
    respawn_at: Vec<Option<Instant>>,
    /// Per slot: workers in a row that died before they were ready.
    backoff: StartBackoff,
    spawns: u64,
    respawns: u64,
    rolled: u64,
    start_failures: u64,
    /// Slots still to replace in this rolling restart, and the one being replaced.
    roll: VecDeque<usize>,
    rolling: Option<usize>,
    hangups_seen: u64,
    /// Round-robin's next slot.
    turn: usize,
    /// Connections the master accepted but could pass to no worker.
    dropped: u64,
    sigchld_seen: u64,
    stop: Option<Stop>,
    client: Option<(Pid, ResultReader)>,
    client_report: Option<Report>,
    fds_after_start: Option<usize>,
    /// --seconds: when to stop.
    serve_until: Option<Instant>,
    started: Instant,
}

impl Master<'_> {
    // ANCHOR: supervise
    /// The master's loop. It never serves a request itself (except to pass a connection
    /// on): it reaps and replaces workers, follows the signals, prints the scoreboard.
    fn supervise(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.slots.len() {
            self.spawn(slot)?;
        }
        let mut next_board = Instant::now() + BOARD_EVERY;
        loop {
            self.follow_signals(); // first: a stop signal means no replacements
            self.reap()?;
            self.respawn_due()?;
            self.roll_on();
            self.start_self_test()?;
            if self.stop.is_none() && self.serve_until.is_some_and(|at| Instant::now() >= at) {
                let seconds = self.server.seconds.unwrap_or_default().as_secs_f64();
                self.begin_stop(format!("served for {seconds}s"), stops_so_far());
            }
            if let Some(stop) = &self.stop {
                if self.slots.iter().all(Option::is_none) && self.client.is_none() {
                    return Ok(()); // every worker reaped
                }
                if Instant::now() >= stop.grace_ends && !stop.killed {
                    self.kill_all("the grace period is over");
                }
            }
            if Instant::now() >= next_board {
                self.print_board();
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

    // ANCHOR: spawn
    /// Forks the worker of `slot`.
    fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let channel = match self.server.dispatch {
            Dispatch::SharedAccept => None,
            _ => Some(socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket, // messages, and end-of-file when the master closes
                None,
                SockFlag::SOCK_CLOEXEC,
            )?),
        };
        let not_mine = self.descriptors_not_for(Some(self.server.dispatch));
        let master = getpid();
        self.board.clear(slot);
        // A worker must never die of the group's Ctrl-C, even right after fork: the
        // signals stay pending until the worker has chosen what they mean to it.
        block_stop_signals(true)?;
        // SAFETY: single-threaded here; the child runs the worker loop and calls _exit.
        let forked = unsafe { fork() };
        if !matches!(forked, Ok(ForkResult::Child)) {
            block_stop_signals(false)?;
        }
        match forked.context("fork")? {
            ForkResult::Child => child::run_then_exit(master, || {
                narrate::set_role("worker");
                close_all(&not_mine);
                if self.server.crash_at_start {
                    return Ok(3); // as a worker whose start-up fails
                }
                match (channel, &self.listener) {
                    (Some((master_end, worker_end)), _) => {
                        drop(master_end); // or it would never see end-of-file on its own
                        setsockopt(&worker_end, sockopt::ReceiveTimeout, &heartbeat())?;
                        worker::work(slot, &self.board, Source::Channel(&worker_end))
                    }
                    (None, Some(listener)) => {
                        worker::work(slot, &self.board, Source::Listener(listener))
                    }
                    (None, None) => Ok(0), // the server is stopping
                }
            }),
            ForkResult::Parent { child } => {
                self.slots[slot] = Some(Worker {
                    pid: child,
                    channel: channel.map(|(master_end, _worker_end)| master_end),
                    retiring: false,
                });
                self.spawns += 1;
                self.history[slot].processes += 1;
                self.history[slot].last_pid = child.as_raw();
                event("spawn")
                    .field("slot", slot)
                    .field("worker", child.as_raw())
                    .say(format!("fork() -> worker {child} in slot {slot}"));
                Ok(())
            }
        }
    }
    // ANCHOR_END: spawn

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
        if let Some((_, reader)) = &self.client {
            fds.push(reader.as_fd().as_raw_fd());
        }
        if worker != Some(Dispatch::SharedAccept)
            && let Some(listener) = &self.listener
        {
            fds.push(listener.as_raw_fd());
        }
        fds
    }

    // ANCHOR: reap
    /// Reaps every worker that has ended — `waitpid(-1, WNOHANG)` until none is left, as
    /// SIGCHLD signals merge — and starts its replacement in the same slot.
    fn reap(&mut self) -> anyhow::Result<()> {
        let sigchld = signals::count(Signal::SIGCHLD);
        if sigchld == self.sigchld_seen {
            return Ok(());
        }
        self.sigchld_seen = sigchld; // (a child dying during the loop counts for next time)
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(error).context("waitpid(-1, WNOHANG)"),
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            if self
                .client
                .as_ref()
                .is_some_and(|(client, _)| *client == pid)
            {
                self.client_done(&status);
                continue;
            }
            let Some(slot) = self
                .slots
                .iter()
                .position(|w| w.as_ref().is_some_and(|w| w.pid == pid))
            else {
                continue;
            };
            let retired = self.slots[slot]
                .take()
                .expect("the slot was found")
                .retiring;
            // (its channel is closed here: the replacement must not inherit it)
            let was_ready = self.board.ready_pid(slot) == pid.as_raw() as u64;
            self.history[slot].served += self.board.served(slot);
            self.board.clear(slot); // the row is the next worker's
            let ended = ending(&status);
            event("reaped")
                .field("slot", slot)
                .field("worker", pid.as_raw())
                .fields(&ended)
                .say(format!(
                    "waitpid -> worker {pid} (slot {slot}) {}",
                    ended.status
                ));
            self.replace(slot, retired, was_ready, &ended.status)?;
        }
    }
    // ANCHOR_END: reap

    // ANCHOR: replace
    /// A slot's worker has ended: replace it now — or, if it died before it was ready
    /// (and so will likely die again), after 100 ms, 200, 400… and give up after
    /// GIVE_UP_AFTER in a row. A stopping server replaces nobody.
    fn replace(
        &mut self,
        slot: usize,
        retired: bool,
        was_ready: bool,
        status: &str,
    ) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        if was_ready {
            self.backoff.started(slot);
        }
        if retired {
            self.rolled += 1;
            return self.spawn(slot);
        }
        if was_ready {
            self.respawns += 1;
            return self.spawn(slot);
        }
        self.start_failures += 1;
        let delay = self
            .backoff
            .failed(slot, "died before it was ready", status)?;
        self.respawn_at[slot] = Some(Instant::now() + delay);
        Ok(())
    }
    // ANCHOR_END: replace

    fn respawn_due(&mut self) -> anyhow::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        for slot in 0..self.slots.len() {
            if self.respawn_at[slot].is_some_and(|at| Instant::now() >= at) {
                self.respawn_at[slot] = None;
                self.respawns += 1;
                self.spawn(slot)?;
            }
        }
        Ok(())
    }

    /// True once a stop has begun, or a stop signal has come that the loop has not
    /// handled yet: no worker is replaced any more.
    fn stopping(&self) -> bool {
        self.stop.is_some() || signals::stop_requested().is_some()
    }

    /// True when `slot`'s worker is ready and may be given connections.
    fn ready(&self, slot: usize) -> bool {
        self.slots[slot].as_ref().is_some_and(|worker| {
            !worker.retiring && self.board.ready_pid(slot) == worker.pid.as_raw() as u64
        })
    }

    // ANCHOR: signals
    /// SIGTERM or Ctrl-C: a graceful stop; one more: stop now. SIGHUP: a rolling restart.
    fn follow_signals(&mut self) {
        let stops = stops_so_far();
        if stops > 0 && self.stop.is_none() {
            let signal = signals::stop_requested().expect("a stop signal was counted");
            self.begin_stop(format!("{signal}"), stops);
        }
        if let Some(stop) = &self.stop
            && stops > stop.signals_at_start
            && !stop.killed
        {
            self.kill_all("another stop signal: stop now");
        }
        let hangups = signals::count(Signal::SIGHUP);
        if hangups > self.hangups_seen && self.stop.is_none() {
            self.hangups_seen = hangups;
            self.roll = (0..self.slots.len()).collect();
            event("roll").say(format!(
                "SIGHUP: replacing the {} workers one at a time",
                self.slots.len()
            ));
        }
    }
    // ANCHOR_END: signals

    // ANCHOR: roll
    /// One step of a rolling restart: once the slot being replaced has a new worker ready,
    /// ask the next old worker to finish its request and leave. The others go on serving,
    /// and the listening socket stays open: no connection is refused.
    fn roll_on(&mut self) {
        if let Some(slot) = self.rolling {
            if !self.ready(slot) && self.stop.is_none() {
                return; // the old worker is finishing, or the new one is starting
            }
            self.rolling = None;
        }
        let Some(slot) = self.roll.pop_front() else {
            return;
        };
        let dispatch = self.server.dispatch;
        let Some(worker) = self.slots[slot].as_mut() else {
            return; // no worker now: the next one forked will be new anyway
        };
        worker.retiring = true;
        let pid = worker.pid;
        let how = match dispatch {
            Dispatch::SharedAccept => {
                let _ = kill(pid, Signal::SIGTERM);
                "kill(SIGTERM)"
            }
            _ => {
                worker.channel = None; // end-of-file once it has served what it was passed
                "close(its Unix socket)"
            }
        };
        event("retire")
            .field("slot", slot)
            .field("worker", pid.as_raw())
            .say(format!(
                "{how}: worker {pid} finishes its request and leaves"
            ));
        self.rolling = Some(slot);
    }
    // ANCHOR_END: roll

    // ANCHOR: dispatch
    /// round-robin and least-loaded: accepts every waiting connection and passes each to
    /// a worker; the master's own copy closes at the end of each turn of the loop.
    fn dispatch(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(listener) = &self.listener else {
                return Ok(());
            };
            let connection = match worker::accept(listener) {
                Ok(connection) => connection,
                Err(Errno::EAGAIN) => return Ok(()), // none left waiting
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(error) => return Err(error).context("accept"),
            };
            let mut passed = false;
            for slot in self.candidates() {
                let channel = self.slots[slot].as_ref().and_then(|w| w.channel.as_ref());
                let Some(channel) = channel else { continue };
                self.board.add_active(slot, 1); // before the worker can count it done
                if worker::pass_connection(channel, &connection).is_ok() {
                    self.turn = slot + 1;
                    passed = true;
                    break;
                }
                self.board.add_active(slot, -1); // its socket is full, or it just died
            }
            self.dropped += u64::from(!passed);
        }
    }

    /// The ready workers, in the order the dispatch mode prefers them: by turn from
    /// round-robin's next slot; least-loaded sorts that by connections held.
    fn candidates(&self) -> Vec<usize> {
        let slots = self.slots.len();
        let mut order: Vec<usize> = (0..slots)
            .map(|i| (self.turn + i) % slots)
            .filter(|&slot| self.ready(slot))
            .collect();
        if self.server.dispatch == Dispatch::LeastLoaded {
            order.sort_by_key(|&slot| self.board.active(slot)); // stable: ties by turn
        }
        order
    }
    // ANCHOR_END: dispatch

    /// The master accepts connections itself (to pass them on) only when dispatching,
    /// not stopping, and some worker is ready to take one.
    fn accepting(&self) -> bool {
        self.server.dispatch != Dispatch::SharedAccept
            && self.stop.is_none()
            && (0..self.slots.len()).any(|slot| self.ready(slot))
    }

    // ANCHOR: stop
    /// Stops accepting, and lets every worker finish what it holds, then leave.
    fn begin_stop(&mut self, reason: String, signals_at_start: u64) {
        let in_flight = (0..self.slots.len())
            .filter(|&slot| self.slots[slot].is_some())
            .map(|slot| self.board.active(slot))
            .sum();
        let fds_before = count_fds();
        // One shutdown() of the listening socket — the very socket all the workers share —
        // refuses new connections and wakes every worker blocked in accept() (EINVAL).
        // Closing the master's descriptor alone would do neither: the workers' keep the
        // socket open.
        if let Some(listener) = self.listener.take() {
            let _ = shutdown(listener.as_raw_fd(), Shutdown::Both);
        }
        for worker in self.slots.iter_mut().flatten() {
            worker.channel = None; // end-of-file after the connections already passed
        }
        if let Some((client, _)) = &self.client {
            let _ = kill(*client, Signal::SIGTERM); // the self-test's load is cut short
        }
        self.respawn_at.iter_mut().for_each(|at| *at = None);
        self.roll.clear();
        let grace = self.server.grace;
        event("stopping")
            .field("reason", &reason)
            .field("in_flight", in_flight)
            .field("grace_seconds", grace.as_secs_f64())
            .say(format!(
                "{reason}: no new connections; {in_flight} in flight may take {}s to finish",
                grace.as_secs_f64()
            ));
        self.print_board();
        self.stop = Some(Stop {
            reason,
            grace_ends: Instant::now() + grace,
            in_flight,
            signals_at_start,
            killed: false,
            cut_off: 0,
            fds_before,
        });
    }

    /// SIGKILL to every worker still running (the grace is over, or a second Ctrl-C).
    fn kill_all(&mut self, why: &str) {
        let mut killed = Vec::new();
        let mut cut_off = 0;
        for (slot, worker) in self.slots.iter().enumerate() {
            if let Some(worker) = worker {
                let _ = kill(worker.pid, Signal::SIGKILL);
                killed.push(worker.pid.as_raw());
                cut_off += self.board.active(slot);
            }
        }
        event("kill")
            .field("workers", &killed)
            .field("cut_off", cut_off)
            .say(format!(
                "{why}: kill(SIGKILL) to {killed:?}, cutting off {cut_off} connections"
            ));
        if let Some(stop) = self.stop.as_mut() {
            stop.killed = true;
            stop.cut_off += cut_off;
        }
    }
    // ANCHOR_END: stop

    /// --self-test: once every worker is ready, fork the client.
    fn start_self_test(&mut self) -> anyhow::Result<()> {
        if self.fds_after_start.is_some() || !(0..self.slots.len()).all(|slot| self.ready(slot)) {
            return Ok(());
        }
        self.fds_after_start = Some(count_fds());
        if let Some(seconds) = self.server.seconds {
            self.stop_after(seconds);
        }
        if !self.server.self_test {
            return Ok(());
        }
        let (reader, writer) = child::result_pipe()?;
        let mut not_mine = self.descriptors_not_for(None);
        not_mine.push(reader.as_fd().as_raw_fd());
        let (master, port, load) = (getpid(), self.port, &self.server.load);
        // SAFETY: single-threaded here (the client starts its threads after the fork);
        // the child sends its report and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(master, || {
                narrate::set_role("client");
                close_all(&not_mine);
                writer.send(&client::run(load, port, false))?;
                Ok(0)
            }),
            ForkResult::Parent { child } => {
                drop(writer);
                self.client = Some((child, reader));
                Ok(())
            }
        }
    }

    /// --seconds: the time to stop, counted from the moment every worker was ready.
    fn stop_after(&mut self, seconds: Duration) {
        self.serve_until = Some(Instant::now() + seconds);
    }

    fn client_done(&mut self, status: &WaitStatus) {
        let Some((pid, reader)) = self.client.take() else {
            return;
        };
        if signals::stop_requested().is_none() {
            self.client_report = reader.receive().ok();
        }
        let ended = ending(status);
        event("reaped")
            .field("client", pid.as_raw())
            .fields(&ended)
            .say(format!("waitpid -> client {pid} {}", ended.status));
        if self.stop.is_none() {
            self.begin_stop("the self-test's load is done".into(), stops_so_far());
        }
    }

    fn print_board(&self) {
        let rows = self.board.snapshot();
        event("scoreboard")
            .field("rows", &rows)
            .say(format!("scoreboard: {}", scoreboard::line(&rows)));
    }

    /// How long the loop may sleep: until the next scoreboard, grace end or respawn;
    /// 10 ms while it watches for workers getting ready (a new worker is given
    /// connections only once it is) or leaving.
    fn next_wait(&self, next_board: Instant) -> Duration {
        let starting = (0..self.slots.len()).any(|s| self.slots[s].is_some() && !self.ready(s));
        let watching = starting
            || self.rolling.is_some()
            || !self.roll.is_empty()
            || self.fds_after_start.is_none()
            || self.stop.is_some();
        let now = Instant::now();
        [
            Some(next_board),
            self.stop.as_ref().map(|stop| stop.grace_ends),
            self.serve_until,
        ]
        .into_iter()
        .chain(self.respawn_at.iter().copied())
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

    fn summarize(&self) -> anyhow::Result<()> {
        let stop = self.stop.as_ref().expect("the loop ends only once stopped");
        let per_worker: Vec<u64> = self.history.iter().map(|slot| slot.served).collect();
        let served: u64 = per_worker.iter().sum();
        let shutdown = if stop.cut_off > 0 {
            "forced"
        } else {
            "graceful"
        };
        let mut text = format!(
            "summary: {served} requests served by {} processes in {} slots ({} respawned, {} \
             replaced by SIGHUP); shutdown {shutdown} ({}), {} in flight, {} cut off\n  \
             slot  served  processes  last pid\n",
            self.spawns,
            self.slots.len(),
            self.respawns,
            self.rolled,
            stop.reason,
            stop.in_flight,
            stop.cut_off
        );
        for (slot, history) in self.history.iter().enumerate() {
            text += &format!(
                "  {slot:<4}  {:>6}  {:>9}  {}\n",
                history.served, history.processes, history.last_pid
            );
        }
        if let Some(report) = &self.client_report {
            text += &format!(
                "  client: {} requests, {} ok, {} errors, {} mismatched; {:.0} requests/s, \
                 p50 {:.3} ms, p99 {:.3} ms",
                report.requests,
                report.ok,
                report.errors,
                report.mismatched,
                report.rps,
                report.p50_ms,
                report.p99_ms
            );
        }
        event("summary")
            .field("workers", self.slots.len())
            .field("dispatch", self.server.dispatch)
            .field("port", self.port)
            .field("served", served)
            .field("per_worker", &per_worker)
            .field("slots", &self.history)
            .field("spawns", self.spawns)
            .field("respawns", self.respawns)
            .field("rolled", self.rolled)
            .field("start_failures", self.start_failures)
            .field("shutdown", shutdown)
            .field("stop_reason", &stop.reason)
            .field("in_flight_at_shutdown", stop.in_flight)
            .field("cut_off", stop.cut_off)
            .field("dropped", self.dropped)
            .field("fds_after_start", self.fds_after_start)
            .field("fds_before_stop", stop.fds_before)
            .field("seconds", self.started.elapsed().as_secs_f64())
            .field("client", &self.client_report)
            .field("interrupted", signals::stop_requested().map(Signal::as_str))
            .say(text.trim_end());
        match &self.client_report {
            Some(report) => check(report),
            None if self.server.self_test && signals::stop_requested().is_none() => {
                bail!("the self-test's client sent no report")
            }
            None => Ok(()),
        }
    }
}

/// How many SIGINT and SIGTERM have come so far.
fn stops_so_far() -> u64 {
    signals::count(Signal::SIGINT) + signals::count(Signal::SIGTERM)
}

/// Blocks (or unblocks) the signals a person sends to stop or reload the server.
fn block_stop_signals(block: bool) -> nix::Result<()> {
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals::set_blocked(signal, block)?;
    }
    Ok(())
}

/// In a new child: closes the master's descriptors it must not hold.
fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// How many descriptors this process has open (the entries of /proc/self/fd, less the
/// one that reading the directory opens).
fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count().saturating_sub(1))
}
