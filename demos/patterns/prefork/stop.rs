//! stop — prefork's graceful stop (SIGTERM, the first Ctrl-C, --seconds) and stop now.
//!
//! Demonstrates: one shutdown(2) of the listening socket that every worker shares
//! refuses new connections and wakes every worker blocked in accept() (EINVAL); requests
//! in flight finish within --grace, then SIGKILL cuts off the rest; a second stop
//! signal means now.
//! Run:     cargo run --bin prefork -- --grace 2     (then Ctrl-C, and Ctrl-C again)
//! Observe: `stopping`, the workers reaped as they finish, `kill` only if one is still busy.
//! Book:    book/src/patterns/prefork.md

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{Shutdown, shutdown};
use proclab::narrate::event;
use proclab::queues::counted;
use proclab::signals;

use crate::Master;

impl Master<'_> {
    // ANCHOR: signals
    /// SIGTERM or Ctrl-C: a graceful stop; one more: stop now. (SIGHUP: see roll.rs.)
    pub fn follow_stop_signals(&mut self) {
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
    }
    // ANCHOR_END: signals

    /// --seconds: stop as SIGTERM would, once the time has come.
    pub fn stop_when_served_long_enough(&mut self) {
        if self.stop.is_none() && self.serve_until.is_some_and(|at| Instant::now() >= at) {
            let seconds = self.server.seconds.unwrap_or_default().as_secs_f64();
            self.begin_stop(format!("served for {seconds}s"), stops_so_far());
        }
    }

    /// A closed stdout (`prefork | head -1`): nobody reads the timeline any more, so the
    /// server stops as SIGTERM would — gracefully, reaping every worker — and exits 0.
    pub fn stop_when_stdout_closed(&mut self) {
        if self.stop.is_none() && stdout_closed() {
            self.begin_stop(STDOUT_CLOSED.into(), stops_so_far());
        }
    }

    // ANCHOR: stop
    /// Stops accepting, and lets every worker finish what it holds, then leave.
    pub fn begin_stop(&mut self, reason: String, signals_at_start: u64) {
        let in_flight = (0..self.supervisor.slots.len())
            .filter(|&slot| self.supervisor.slots[slot].is_some())
            .map(|slot| self.board.active(slot))
            .sum();
        let fds_before = crate::self_test::count_fds();
        // One shutdown() of the listening socket — the very socket all the workers share —
        // refuses new connections and wakes every worker blocked in accept() (EINVAL).
        // Closing the master's descriptor alone would do neither: the workers' keep the
        // socket open.
        if let Some(listener) = self.listener.take() {
            let _ = shutdown(listener.as_raw_fd(), Shutdown::Both);
        }
        for worker in self.supervisor.slots.iter_mut().flatten() {
            worker.channel = None; // end-of-file after the connections already passed
        }
        self.self_test.cut_short(); // the self-test's load, if any, is cut short
        self.supervisor.cancel_respawns();
        self.roll.cancel();
        let grace = self.server.grace;
        event("stopping")
            .field("reason", &reason)
            .field("in_flight", in_flight)
            .field("grace_seconds", grace.as_secs_f64())
            .say(match in_flight {
                0 => format!("{reason}: no new connections; none in flight"),
                n => format!(
                    "{reason}: no new connections; {} in flight may take up to {}s to finish",
                    counted(n, "connection"),
                    grace.as_secs_f64()
                ),
            });
        self.board.print();
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
    pub fn kill_all(&mut self, why: &str) {
        let mut killed = Vec::new();
        let mut cut_off = 0;
        for (slot, worker) in self.supervisor.slots.iter().enumerate() {
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
                "{why}: kill(SIGKILL) to {killed:?}, cutting off {}",
                counted(cut_off, "connection")
            ));
        if let Some(stop) = self.stop.as_mut() {
            stop.killed = true;
            stop.cut_off += cut_off;
        }
    }
    // ANCHOR_END: stop
}

/// True once fd 1 is a pipe (or socket) whose reading end has gone: poll(2) reports
/// POLLERR (POLLHUP for a socket or a hung-up terminal) without anything being written.
///
/// # References: poll(2), pipe(7)
fn stdout_closed() -> bool {
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())]; // only errors, hang-ups
    let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|events| events.intersects(gone))
}

/// The reason of a stop because nobody reads stdout any more.
pub const STDOUT_CLOSED: &str = "stdout closed";

/// How many SIGINT and SIGTERM have come so far.
pub fn stops_so_far() -> u64 {
    signals::count(Signal::SIGINT) + signals::count(Signal::SIGTERM)
}

/// A stop under way.
pub struct Stop {
    pub reason: String,
    pub grace_ends: Instant,
    pub in_flight: u64,
    /// Stop signals already counted when it began: one more means "now".
    signals_at_start: u64,
    /// The remaining workers were sent SIGKILL.
    pub killed: bool,
    /// Connections they still held then: a stop is "forced" if it cut any off.
    pub cut_off: u64,
    pub fds_before: usize,
}
