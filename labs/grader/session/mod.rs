//! session — the sandbox one graded run lives in, and the promise that nothing outlives it.
//!
//! The grader makes itself the subreaper, so every process the program starts — even one
//! whose parent exits — stays its descendant and can be found, stopped and reaped. The
//! program runs in its own process group (or, for a lab that needs a terminal, as the
//! leader of its own session with the lab's pseudo-terminal as its controlling terminal:
//! the lab builds the `Command`, the session adds the group or the session). Every run is
//! bounded: past the lab's time limit, or above its process bound (a fork bomb), the
//! group and every descendant are killed. Dropping the session kills what is left, reaps
//! every child, unlinks the shared-memory regions and queues it named, and removes its
//! scratch directory — whether the run was graded, failed or panicked.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::observe;

mod teardown;

/// Why the session ended the run before the lab's driver was done.
#[derive(Clone, Debug, PartialEq)]
pub enum Cut {
    TimeLimit(f64),
    ForkBomb(usize),
}

pub struct Session {
    /// A directory only this run uses (FIFOs, sinks); removed at the end.
    pub scratch: PathBuf,
    /// `lab-child`: the children, stages and workers the labs ask programs to start.
    pub helper: PathBuf,
    started: Instant,
    time_limit: f64,
    max_processes: usize,
    last_census: Instant,
    ipc: Vec<String>,
    /// The program under test: pid (also its process group), and how it ended.
    pub program: Option<i32>,
    pub status: Option<WaitStatus>,
    pub cut: Option<Cut>,
}

impl Session {
    pub fn new(time_limit: f64, max_processes: usize) -> anyhow::Result<Session> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory.
        let made = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        anyhow::ensure!(
            made == 0,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
        let scratch = std::env::temp_dir().join(format!("proclab-lab-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("mkdir {}", scratch.display()))?;
        let exe = std::env::current_exe().context("the grader's own path")?;
        Ok(Session {
            scratch,
            helper: exe.with_file_name("lab-child"),
            started: Instant::now(),
            time_limit,
            max_processes,
            last_census: Instant::now(),
            ipc: Vec::new(),
            program: None,
            status: None,
            cut: None,
        })
    }

    /// A name for a POSIX shared-memory region or queue, unlinked when the session ends.
    pub fn ipc_name(&mut self, what: &str) -> String {
        let name = format!("/proclab-lab-{}-{what}", std::process::id());
        self.ipc.push(name.clone());
        name
    }

    /// Starts the program in its own process group. The caller built `command` (pipes,
    /// descriptors, environment) and keeps the returned `Child`'s pipes; the session waits
    /// for it with waitpid, never `Child::wait`.
    ///
    /// The program gets descriptors 0, 1, 2 and the `passed` ones the lab put at 3, 4, …
    /// (in its own `pre_exec`), nothing else: whatever the grader inherited is closed.
    pub fn spawn(&mut self, command: &mut Command, passed: u32) -> anyhow::Result<Child> {
        command.process_group(0);
        self.start(command, passed)
    }

    /// Starts the program as the leader of a new session whose controlling terminal is
    /// its standard input — a pseudo-terminal's slave the lab opened and passed as fd 0 —
    /// the way a terminal emulator starts a shell. Its pid is its process group and its
    /// session; otherwise as [`Session::spawn`].
    pub fn spawn_on_terminal(
        &mut self,
        command: &mut Command,
        passed: u32,
    ) -> anyhow::Result<Child> {
        // SAFETY: runs between fork and exec, after the lab's pre_exec put the terminal
        // on fd 0; setsid and ioctl are single system calls and allocate nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.start(command, passed)
    }

    fn start(&mut self, command: &mut Command, passed: u32) -> anyhow::Result<Child> {
        let first_closed = 3 + passed;
        // SAFETY: runs between fork and exec, after the lab's own pre_exec; close_range
        // is a single system call and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                libc::syscall(libc::SYS_close_range, first_closed, u32::MAX, 0);
                Ok(())
            });
        }
        let child = command.spawn().context("starting the program")?;
        self.program = Some(child.id() as i32);
        self.status = None;
        Ok(child)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Has the program not exited yet (and not been cut)?
    pub fn running(&self) -> bool {
        self.program.is_some() && self.status.is_none()
    }

    /// Called from every wait loop: notices the program's exit, enforces the time limit
    /// and the process bound. Returns whether the run may go on.
    pub fn tick(&mut self) -> bool {
        if let (Some(pid), None) = (self.program, self.status) {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    self.status = Some(status)
                }
                Ok(_) => {}
                Err(_) => self.status = Some(WaitStatus::Exited(Pid::from_raw(pid), -1)),
            }
        }
        if self.cut.is_some() {
            return false;
        }
        if self.elapsed().as_secs_f64() > self.time_limit {
            self.cut = Some(Cut::TimeLimit(self.time_limit));
        } else if self.last_census.elapsed() > Duration::from_millis(50) {
            self.last_census = Instant::now();
            let count = observe::descendants(std::process::id() as i32).len();
            if count > self.max_processes {
                self.cut = Some(Cut::ForkBomb(count));
            }
        }
        if self.cut.is_some() {
            self.kill_everything();
            return false;
        }
        true
    }

    /// Sleeps `duration`, ticking.
    pub fn sleep(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until && self.tick() {
            std::thread::sleep(Duration::from_millis(2).min(until - Instant::now()));
        }
    }

    /// Waits up to `timeout` for `done` to hold, checking every 2 ms.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Session) -> bool,
    ) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= until || !self.tick() {
                return done(self);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs the program's group and every descendant of the grader.
    pub fn kill_everything(&self) {
        if let Some(pid) = self.program {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for stat in observe::descendants(std::process::id() as i32) {
            let _ = kill(Pid::from_raw(stat.pid), Signal::SIGKILL);
        }
    }
}
