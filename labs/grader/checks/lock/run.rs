//! run — one run of the lock lab's program against a fresh region: start it, sample the
//! probe and the mutex's owner while it runs, and see how it ends.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Plan;
use super::region::Region;
use crate::observe;
use crate::session::Session;

/// One run of the program against a fresh region.
pub struct Run {
    pub pid: i32,
    pub region: Region,
    /// The most workers the probe showed inside the section at once.
    pub most_inside: u32,
    /// Has the mutex's lock word ever named an owner?
    pub seen_owner: bool,
}

impl Run {
    pub fn start(
        session: &mut Session,
        program: &Path,
        plan: &Plan,
        what: &str,
    ) -> anyhow::Result<Run> {
        let region = Region::create(session, what)?;
        let mut command = Command::new(program);
        command
            .env("PROCLAB_SHM", &region.name)
            .env("PROCLAB_WORKERS", plan.workers.to_string())
            .env("PROCLAB_ADDS", plan.adds.to_string())
            .env("PROCLAB_HOLD_US", plan.hold_us.to_string());
        let child = session.spawn(&mut command, 0)?;
        Ok(Run {
            pid: child.id() as i32,
            region,
            most_inside: 0,
            seen_owner: false,
        })
    }

    fn sample(&mut self) {
        self.most_inside = self
            .most_inside
            .max(self.region.probe().load(Ordering::SeqCst));
        self.seen_owner |= self.region.owner().is_some();
    }

    /// The program's live children: its workers.
    pub fn workers(&self) -> Vec<i32> {
        observe::children(self.pid)
            .iter()
            .filter(|stat| stat.state != 'Z')
            .map(|stat| stat.pid)
            .collect()
    }

    /// Samples every 2 ms until `done` holds or `timeout` passes.
    pub fn watch(
        &mut self,
        session: &mut Session,
        timeout: Duration,
        mut done: impl FnMut(&Run) -> bool,
    ) -> bool {
        session.wait_for(timeout, |_| {
            self.sample();
            done(self)
        })
    }

    /// Waits for the program to exit; says what went wrong if it did not end well.
    pub fn finish(&mut self, session: &mut Session, timeout: Duration) -> Option<String> {
        let exited = session.wait_for(timeout, |session| {
            self.sample();
            !session.running()
        });
        let left = observe::children(std::process::id() as i32);
        let problem = if !exited {
            let states: Vec<String> = self.workers().iter().map(|pid| describe(*pid)).collect();
            Some(format!(
                "your program had not exited {} s after it started (workers: {}), with the counter at {}",
                timeout.as_secs(),
                if states.is_empty() {
                    "none".to_string()
                } else {
                    states.join(", ")
                },
                self.region.counter()
            ))
        } else if !left.is_empty() {
            let pids: Vec<i32> = left.iter().map(|stat| stat.pid).collect();
            Some(format!(
                "your program exited without reaping workers {pids:?} (the grader adopted them): waitpid every worker before you exit"
            ))
        } else {
            match session.status {
                Some(WaitStatus::Exited(_, 0)) | None => None,
                Some(WaitStatus::Exited(_, code)) => Some(format!(
                    "your program exited {code}: exit 0 once every worker is reaped"
                )),
                Some(status) => Some(format!("your program ended by {status:?}")),
            }
        };
        // Whatever happened, nothing of this run may reach the next one.
        if session.running() {
            session.kill_everything();
            session.wait_for(Duration::from_secs(1), |session| !session.running());
        }
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        problem
    }
}

/// "pid 4242 (R, CPU 212 ms)" or "pid 4242 (S in futex_wait_queue)".
pub fn describe(pid: i32) -> String {
    let state = observe::stat(pid).map_or('?', |stat| stat.state);
    let cpu = observe::cpu_ns(pid).unwrap_or(0) / 1_000_000;
    match state {
        'S' | 'D' => format!("pid {pid} ({state} in {})", observe::wchan(pid)),
        _ => format!("pid {pid} ({state}, CPU {cpu} ms)"),
    }
}
