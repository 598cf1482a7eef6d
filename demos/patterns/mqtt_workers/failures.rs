//! mqtt_workers/failures.rs — a worker is forked, killed, frozen, silent or dead: what
//! the master does about it.
//!
//! Demonstrates: each worker is forked by a single-threaded master and makes its own MQTT
//! client after the fork; a worker silent for a second is killed; a dead worker is reaped
//! by slot and forked again — at once if it had subscribed, after the supervisor's
//! growing delay if it died before.
//! Run:     cargo run -p mqtt_workers -- --freeze-worker-after 10
//! Observe: `freeze`, `unresponsive` a second later, `reaped`, a new `spawn` and `ready`.
//! Book:    book/src/patterns/mqtt_workers.md

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use proclab::child::ending;
use proclab::narrate::event;

use crate::master::{Fault, Master, ROUTES, Worker};
use crate::supervisor::{self, Reaped};
use crate::worker::{HEARTBEAT_EVERY, work};

/// A worker not heard from for this long (ten heartbeats) is killed.
const SILENT_AFTER: Duration = Duration::from_millis(1000);

impl Master<'_> {
    // ANCHOR: spawn
    /// Forks the worker of `slot`. Its client — a tokio runtime, a socket — is made in
    /// the child, after the fork: the master never has one to copy into it.
    pub fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let route = ROUTES[slot];
        let address = self.address.clone();
        let hosts = self.hosts.clone();
        // The worker must not hold the master's ends of the desk's pipes.
        let mut others = vec![self.desk.replies.as_raw_fd()];
        others.extend(self.desk.commands.as_ref().map(AsRawFd::as_raw_fd));
        // SAFETY: single-threaded here; the child closes the master's descriptors, enters
        // its host's network namespace (--hosts), makes its MQTT client (which allocates
        // and makes a tokio runtime and a socket, in the child only), runs the worker
        // loop and calls _exit.
        let pid = unsafe {
            supervisor::fork_worker(slot, &[Signal::SIGINT, Signal::SIGTERM], || {
                for fd in others {
                    let _ = nix::unistd::close(fd);
                }
                if let Some(hosts) = hosts {
                    hosts.enter(slot)?;
                }
                work(slot, route, address)
            })
        }?;
        let now = Instant::now();
        let (ready, fault) = (false, None);
        self.pool.slots[slot] = Some(Worker {
            pid,
            route,
            ready,
            last_heard: now,
            fault,
        });
        Ok(())
    }
    // ANCHOR_END: spawn

    // ANCHOR: reap
    /// Reaps every child that has ended; a worker's slot gets a new worker: at once if
    /// the old one had subscribed, after a growing delay if it died before it could.
    pub fn reap(&mut self) -> anyhow::Result<()> {
        if !self.pool.sigchld_came() {
            return Ok(());
        }
        while let Some(Reaped { pid, slot, status }) = self.pool.reap_one()? {
            let ended = ending(&status);
            let Some(slot) = slot else {
                let who = if Some(pid) == self.broker {
                    "broker"
                } else {
                    "desk"
                };
                anyhow::bail!("the {who} ({pid}) ended: {}", ended.status);
            };
            let worker = self.pool.slots[slot]
                .take()
                .expect("the slot was found above");
            event("reaped")
                .field("slot", slot)
                .field("worker", pid.as_raw())
                .fields(&ended)
                .say(format!(
                    "waitpid -> worker {pid} (slot {slot}) {}",
                    ended.status
                ));
            if self.stopping {
                continue;
            }
            let delay = if worker.ready {
                Duration::ZERO
            } else {
                let what = "died before it subscribed";
                self.pool.backoff.failed(slot, what, &ended.status)?
            };
            self.pool.respawn_after(slot, delay);
        }
        Ok(())
    }
    // ANCHOR_END: reap

    pub fn respawn_due(&mut self) -> anyhow::Result<()> {
        while let Some(slot) = self.pool.due() {
            self.respawns += 1;
            self.spawn(slot)?;
        }
        Ok(())
    }

    // ANCHOR: watch
    /// Heartbeats: a worker that subscribed and then said nothing for a second (stuck,
    /// stopped, cut off from the broker) is killed; the reaper replaces it.
    pub fn watch(&mut self) {
        for worker in self.pool.slots.iter_mut().flatten() {
            if worker.ready
                && worker.fault != Some(Fault::Unresponsive)
                && worker.last_heard.elapsed() > SILENT_AFTER
            {
                worker.fault = Some(Fault::Unresponsive);
                self.unresponsive += 1;
                event("unresponsive")
                    .field("worker", worker.pid.as_raw())
                    .say(format!(
                        "worker {} sent no heartbeat for {SILENT_AFTER:?} (one is due every \
                     {HEARTBEAT_EVERY:?}): kill(SIGKILL)",
                        worker.pid
                    ));
                let _ = kill(worker.pid, Signal::SIGKILL);
            }
        }
    }
    // ANCHOR_END: watch

    /// --kill-worker-after / --freeze-worker-after: once that many results came, do it to
    /// the worker of slot 0, a member of the shared group.
    pub fn provoke(&mut self) {
        let (after, fault, signal) =
            match (self.args.kill_worker_after, self.args.freeze_worker_after) {
                (Some(after), _) => (after, Fault::Killed, Signal::SIGKILL),
                (None, Some(after)) => (after, Fault::Frozen, Signal::SIGSTOP),
                (None, None) => return,
            };
        if self.fault_done || self.ledger.done() < after {
            return;
        }
        let Some(victim) = self.pool.slots[0].as_mut().filter(|w| w.ready) else {
            return;
        };
        self.fault_done = true;
        victim.fault = Some(fault);
        let name = if fault == Fault::Killed {
            "kill"
        } else {
            "freeze"
        };
        event(name)
            .field("slot", 0)
            .field("worker", victim.pid.as_raw())
            .say(format!(
                "kill({}, {signal}): {after} results are in",
                victim.pid
            ));
        let _ = kill(victim.pid, signal);
    }
}
