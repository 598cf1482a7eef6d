//! self_test — prefork --self-test: the master forks its own client once it is ready.
//!
//! Demonstrates: the moment a pre-forked server is ready is when every worker has
//! written its pid into its scoreboard row; then the master forks a client process that
//! sends the load, reports over a pipe and ends, and the master stops gracefully.
//! Run:     cargo run --bin prefork -- --self-test
//! Observe: the client's `load` only after every slot's `ready`; `waitpid -> client`, then
//!          `stopping`.
//! Book:    book/src/patterns/prefork.md

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork, getpid};
use proclab::child::{self, ResultReader, ending};
use proclab::narrate::{self, event};
use proclab::signals;

use crate::client::{self, AccountAs};
use crate::master::close_all;
use crate::report::Report;
use crate::{Master, stop::stops_so_far};

impl Master<'_> {
    // ANCHOR: self_test
    /// Once every worker is ready, the first time: counts the master's descriptors, starts
    /// the clock of --seconds, and with --self-test forks the client.
    pub fn once_all_ready(&mut self) -> anyhow::Result<()> {
        if self.fds_after_start.is_some()
            || !(0..self.supervisor.slots.len()).all(|slot| self.ready(slot))
        {
            return Ok(());
        }
        self.fds_after_start = Some(count_fds());
        if let Some(seconds) = self.server.seconds {
            self.serve_until = Some(std::time::Instant::now() + seconds);
        }
        if !self.server.self_test {
            return Ok(());
        }
        let (reader, writer) = child::result_pipe()?;
        let mut not_mine = self.descriptors_not_for(None);
        not_mine.push(reader.as_fd().as_raw_fd());
        let (master, port, load) = (getpid(), self.port, &self.server.load);
        // SAFETY: single-threaded here (the client starts its threads after the fork);
        // the child closes the master's descriptors, runs the load client (threads that
        // allocate), sends its report and calls _exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => child::run_then_exit(master, || {
                narrate::set_role("client");
                close_all(&not_mine);
                writer.send(&client::run(load, port, AccountAs::LoadDone))?;
                Ok(0)
            }),
            ForkResult::Parent { child } => {
                drop(writer); // the master's copy: end-of-file once the client's is closed
                self.self_test.client = Some((child, reader));
                Ok(())
            }
        }
    }
    // ANCHOR_END: self_test

    /// The client has been reaped: take its report, and stop.
    pub fn client_done(&mut self, status: &WaitStatus) {
        let Some((pid, reader)) = self.self_test.client.take() else {
            return;
        };
        if signals::stop_requested().is_none() {
            self.self_test.report = reader.receive().ok();
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
}

/// How many descriptors this process has open (the entries of /proc/self/fd, less the
/// one that reading the directory opens).
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count().saturating_sub(1))
}

/// The self-test's client while it runs, and its report once it has sent it.
#[derive(Default)]
pub struct SelfTest {
    client: Option<(Pid, ResultReader)>,
    pub report: Option<Report>,
}

impl SelfTest {
    pub fn running(&self) -> bool {
        self.client.is_some()
    }

    pub fn is_client(&self, pid: Pid) -> bool {
        self.client
            .as_ref()
            .is_some_and(|(client, _)| *client == pid)
    }

    /// The pipe the client's report comes through: no worker may hold it.
    pub fn result_pipe(&self) -> Option<BorrowedFd<'_>> {
        self.client.as_ref().map(|(_, reader)| reader.as_fd())
    }

    /// The server is stopping: SIGTERM to the client, whose load is cut short.
    pub fn cut_short(&self) {
        if let Some((client, _)) = &self.client {
            let _ = kill(*client, Signal::SIGTERM);
        }
    }
}
