//! mqtt_workers — workers that share an MQTT topic through a broker: the pool that
//! outgrows one machine.
//!
//! Demonstrates: the worker manager of RouteMQ. A master forks an MQTT broker (rumqttd)
//! first, then its own client in a process of its own, then the workers — each makes its
//! MQTT client after its fork, so nothing ever forks with threads. Three workers share
//! `sensors/+/data` as members of the shared subscription `$share/workers/...`: the
//! broker hands each job to one member, round robin. The master supervises them by their
//! heartbeats and replaces the dead; its ledger makes every job's effect happen exactly
//! once, since the broker loses the jobs a killed member held.
//! Run:     cargo run -p mqtt_workers          (then --kill-worker-after 10 --no-ledger)
//! Observe: the split, 20/20/20, in the summary; `lost` 0 with the ledger, > 0 without.
//! Book:    book/src/patterns/mqtt_workers.md

mod broker; // the embedded broker's process
mod desk; // the master's MQTT client, in a process of its own
mod failures; // fork, reap and respawn workers; heartbeats; the failures to provoke
mod hosts; // --hosts: network namespaces joined by a bridge
mod ledger; // every job's effect exactly once
mod master; // what the master knows, and what it hears
mod options; // the command line
mod stop; // the end of a run, and its summary
#[path = "../supervisor.rs"]
mod supervisor; // fork a slot's worker, reap by slot, respawn when due, back off
mod worker; // the worker's process

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe2};
use proclab::narrate::event;
use proclab::{child, cli, narrate, signals};

use desk::Desk;
use hosts::Network;
use options::Args;

fn main() -> ExitCode {
    let args: Args = cli::parse();
    narrate::init(args.json, "master");
    cli::run_stoppable(|| run(&args))
}

// ANCHOR: start
fn run(args: &Args) -> anyhow::Result<()> {
    let network = Network::new(args)?; // a free loopback port; --hosts: namespaces, bridge
    // The broker first: Broker::new starts threads, and a process with threads must not
    // fork. So they start in a child, and the master stays single-threaded.
    let broker = match args.broker {
        Some(_) => None,
        None => Some(start_broker(&network)?),
    };
    let desk = start_desk(&network)?;
    let mut master = master::Master::new(args, network, broker, desk)?;
    let result = master.supervise();
    master.stop()?; // workers, desk, broker: all ended and reaped, also after an error
    result?;
    master.summarize()
}

fn start_broker(network: &Network) -> anyhow::Result<Pid> {
    let master = getpid();
    let listen = network.listen;
    let hosts = network.hosts.clone();
    // SAFETY: single-threaded here (no thread was ever started); the child enters the
    // broker's network namespace (--hosts), runs rumqttd — which allocates and starts its
    // threads in the child only — and calls _exit if rumqttd ever returns.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(master, || {
            narrate::set_role("broker");
            if let Some(hosts) = hosts {
                hosts.enter_broker()?; // (the bridge is built: it listens on 10.77.0.1 too)
            }
            broker::serve(listen)
        }),
        ForkResult::Parent { child } => {
            event("broker")
                .field("broker", child.as_raw())
                .field("address", listen.to_string())
                .say(format!("fork() -> broker {child}: rumqttd on {listen}"));
            Ok(child)
        }
    }
}
// ANCHOR_END: start

// ANCHOR: desk
/// Forks the desk, the master's MQTT client, with a pipe each way.
fn start_desk(network: &Network) -> anyhow::Result<Desk> {
    let (commands_read, commands_write) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    let (replies_read, replies_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let master = getpid();
    let address = network.desk_connects_to();
    let hosts = network.hosts.clone();
    // SAFETY: single-threaded here; the child closes the master's pipe ends, enters the
    // broker's namespace (--hosts), starts an MQTT client and a thread (in the child
    // only), relays lines until EOF and calls _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => child::run_then_exit(master, move || {
            narrate::set_role("desk");
            drop((commands_write, replies_read)); // the master's ends: EOF works both ways
            let replies_write = blocking(replies_write)?;
            if let Some(hosts) = hosts {
                hosts.enter_broker()?;
            }
            desk::serve(address, commands_read, replies_write)
        }),
        ForkResult::Parent { child } => {
            drop((commands_read, replies_write)); // the desk's ends
            event("desk")
                .field("desk", child.as_raw())
                .say(format!("fork() -> desk {child}: the master's MQTT client"));
            Ok(Desk::new(child, commands_write, replies_read))
        }
    }
}
// ANCHOR_END: desk

impl master::Master<'_> {
    // ANCHOR: supervise
    /// Workers up, then the jobs out, then: hear, reap, respawn, watch, re-publish —
    /// until every job has a result (or, without the ledger, until results stop coming).
    fn supervise(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        self.wait_until(deadline, |master| master.desk_connected)?;
        for slot in 0..master::ROUTES.len() {
            self.spawn(slot)?;
        }
        self.wait_until(deadline, |master| master.pool.workers().all(|w| w.ready))?;
        for slot in 0..master::ROUTES.len() {
            self.tell_ready(slot); // in slot order: the SUBACKs come in any order
        }
        self.publishing = true;
        event("publish")
            .field("jobs", self.ledger.len())
            .say(format!("publishing {} jobs at QoS 1", self.ledger.len()));
        let every_job: Vec<usize> = (0..self.ledger.len() as usize).collect();
        self.ledger.publish(&self.desk, &every_job)?;
        self.last_result = Instant::now();
        let quiet = ledger::OVERDUE_AFTER * 2;
        self.wait_until(deadline, |master| {
            master.ledger.done() == master.ledger.len()
                || (master.args.no_ledger && master.last_result.elapsed() > quiet)
        })
    }
    // ANCHOR_END: supervise

    /// Runs the master's loop until `done` says so, a stop signal comes, or `deadline`.
    fn wait_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        while !done(self) {
            if signals::stop_requested().is_some() {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "no progress for 60 s: giving up");
            self.reap()?;
            self.respawn_due()?;
            self.watch();
            self.provoke();
            if !self.args.no_ledger && self.desk_connected {
                self.ledger.republish_overdue(&self.desk)?;
            }
            // Wakes on a line from the desk, a SIGCHLD (the self-pipe), or a due respawn.
            let respawn = self
                .pool
                .next_respawn()
                .map(|at| at - Instant::now().min(at));
            let wait = respawn
                .unwrap_or(Duration::MAX)
                .min(Duration::from_millis(20));
            signals::wait_readable(Some(self.desk.replies.as_fd()), wait);
            self.hear()?;
        }
        Ok(())
    }
}

/// The desk writes to the master with blocking writes: clears O_NONBLOCK on its end.
fn blocking(fd: std::os::fd::OwnedFd) -> nix::Result<std::os::fd::OwnedFd> {
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok(fd)
}
