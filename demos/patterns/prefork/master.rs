//! master — what the prefork master keeps: the listening socket, the slots, each concern's.
//!
//! Demonstrates: the master makes everything its workers share before the first fork —
//! the listening socket, the scoreboard's shared mapping, the signal handlers — and
//! knows which of its descriptors each new child must close.
//! Run:     cargo run --bin prefork -- --workers 3 --port 8080
//! Observe: `ls -l /proc/<master>/fd`: the listening socket, and nothing a worker holds
//!          twice.
//! Book:    book/src/patterns/prefork.md

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proclab::signals;

use crate::options::{Dispatch, Server};
use crate::scoreboard::Scoreboard;
use crate::supervisor::{Supervised, Supervisor};
use crate::{dispatch, listen, roll, self_test, stop, summary};

/// A slot whose worker dies this many times in a row before it is ready: the master gives
/// up rather than fork a storm of doomed workers.
const GIVE_UP_AFTER: u32 = 5;

/// The master: the listening socket, the slots and their workers, and what each concern
/// keeps (in its own file).
pub struct Master<'a> {
    pub server: &'a Server,
    /// None once a stop has shut it down.
    pub listener: Option<OwnedFd>,
    pub port: u16,
    pub board: Scoreboard,
    pub supervisor: Supervisor<Worker>,
    pub history: summary::History,
    pub roll: roll::Roll,
    pub handoff: dispatch::Handoff,
    pub stop: Option<stop::Stop>,
    /// --seconds: when to stop.
    pub serve_until: Option<Instant>,
    pub self_test: self_test::SelfTest,
    pub fds_after_start: Option<usize>,
    pub started: Instant,
}

/// The master's view of the worker in a slot.
pub struct Worker {
    pub pid: Pid,
    /// round-robin, least-loaded: the master's end of the worker's Unix socket.
    pub channel: Option<OwnedFd>,
    /// Told to finish and leave (SIGHUP's rolling restart).
    pub retiring: bool,
}

impl Supervised for Worker {
    fn pid(&self) -> Pid {
        self.pid
    }
}

impl<'a> Master<'a> {
    /// Listens (see listen.rs) and sets up what the workers will share, before any fork.
    pub fn listen(server: &'a Server) -> anyhow::Result<Master<'a>> {
        signals::catch_request(Signal::SIGHUP)?; // not a stop: "replace your workers"
        let (listener, port) =
            listen::listen_on(server.port, server.dispatch, server.idle_defence())?;
        listen::say_listening(server, port);
        let slots = server.workers as usize;
        Ok(Master {
            server,
            listener: Some(listener),
            port,
            board: Scoreboard::new(slots)?,
            supervisor: Supervisor::new(slots, GIVE_UP_AFTER)?, // catches SIGCHLD
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

    /// True when `slot`'s worker is ready and may be given connections.
    pub fn ready(&self, slot: usize) -> bool {
        self.supervisor.slots[slot].as_ref().is_some_and(|worker| {
            !worker.retiring && self.board.ready_pid(slot) == worker.pid.as_raw() as u64
        })
    }

    // ANCHOR: not_mine
    /// The master's descriptors a new child must close: every worker's channel (a worker
    /// holding another's would keep it from ever seeing end-of-file), the self-test
    /// client's result pipe, and the listening socket unless the child is a
    /// shared-accept worker.
    pub fn descriptors_not_for(&self, worker: Option<Dispatch>) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self
            .supervisor
            .workers()
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
    // ANCHOR_END: not_mine
}

/// In a new child: closes the master's descriptors it must not hold.
pub fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        let _ = nix::unistd::close(fd);
    }
}
