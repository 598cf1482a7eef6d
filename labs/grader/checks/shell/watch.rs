//! watch — what the shell lab's grader has seen: the shell's children (the jobs, found by
//! the `--id N` in their command line) sampled every few ms from /proc, with their state
//! and groups; the terminal's foreground group (`tpgid`, field 8 of the shell's
//! /proc/<pid>/stat); and the prompts on the terminal. Also the zombie verdict.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;

use super::term::Term;
use crate::checks::Findings;
use crate::observe::{self, Groups};
use crate::session::Session;

pub const ZOMBIE_LIMIT: Duration = Duration::from_millis(200);

/// What the grader has seen of one process of the shell.
pub struct Seen {
    pub id: u32,
    pub zombie_since: Option<Instant>,
    pub gone: Option<Instant>,
}

pub struct Watch<'s> {
    pub session: &'s mut Session,
    pub findings: Findings,
    pub term: Term,
    pub shell: i32,
    pub helper: String,
    pub seen: BTreeMap<i32, Seen>,
}

impl Watch<'_> {
    /// One sample: the prompts, new processes, zombies, reaped processes.
    pub fn sample(&mut self) {
        self.term.pump();
        let now = Instant::now();
        let live = observe::children(self.shell);
        for stat in &live {
            let seen = self.seen.entry(stat.pid).or_insert(Seen {
                id: u32::MAX,
                zombie_since: None,
                gone: None,
            });
            if seen.id == u32::MAX && stat.state != 'Z' {
                // Between fork and exec the child still shows the shell's command line.
                seen.id = id_of(stat.pid);
            }
            if stat.state == 'Z' && seen.zombie_since.is_none() {
                seen.zombie_since = Some(now);
            }
        }
        for (pid, seen) in self.seen.iter_mut() {
            if seen.gone.is_none() && !live.iter().any(|stat| stat.pid == *pid) {
                seen.gone = Some(now);
            }
        }
    }

    /// Samples until `done` holds, `timeout` passes or the shell is gone; returns `done`.
    pub fn until(&mut self, timeout: Duration, mut done: impl FnMut(&Watch) -> bool) -> bool {
        let until = Instant::now() + timeout;
        loop {
            self.sample();
            if done(self) {
                return true;
            }
            let go_on = self.session.tick();
            if !go_on || !self.session.running() || Instant::now() >= until {
                self.sample();
                return done(self);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The helper `id`'s pid, once it has exec'ed.
    pub fn pid_of(&self, id: u32) -> Option<i32> {
        self.seen
            .iter()
            .find(|(_, seen)| seen.id == id)
            .map(|(pid, _)| *pid)
    }

    /// The groups of helper `id` while it lives (not reaped, not a zombie).
    pub fn alive(&self, id: u32) -> Option<Groups> {
        let pid = self.pid_of(id)?;
        if self.seen[&pid].gone.is_some() {
            return None;
        }
        observe::groups(pid).filter(|groups| groups.state != 'Z')
    }

    /// The terminal's foreground process group, as the kernel shows it in the shell's stat.
    pub fn tpgid(&self) -> i32 {
        observe::groups(self.shell).map_or(-1, |groups| groups.tpgid)
    }

    /// The command line the grader types for helper `id`.
    pub fn hold(&self, id: u32) -> String {
        format!("{} hold --id {id}", self.helper)
    }

    /// For a message: the shell's state when a check failed, and its last output.
    pub fn why(&self) -> String {
        let tail = self.term.tail(60, &self.helper);
        let ended = match self.session.status {
            None => return format!(" (the shell last printed \"{tail}\")"),
            Some(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
            Some(WaitStatus::Signaled(_, signal, _)) => format!("been killed by {signal:?}"),
            Some(status) => format!("ended: {status:?}"),
        };
        format!(" (the shell had {ended}; it last printed \"{tail}\")")
    }

    /// Each process that stayed a zombie longer than the limit fails `no-zombie`.
    pub fn check_zombies(&mut self) {
        let now = Instant::now();
        let mut worst: Option<(i32, Duration)> = None;
        for (pid, seen) in &self.seen {
            if let Some(since) = seen.zombie_since {
                let lasted = seen.gone.unwrap_or(now).duration_since(since);
                if lasted > ZOMBIE_LIMIT && worst.is_none_or(|(_, most)| lasted > most) {
                    worst = Some((*pid, lasted));
                }
            }
        }
        if let Some((pid, lasted)) = worst {
            self.findings.fail("no-zombie", format!("job process {pid} stayed a zombie for {} ms (limit {} ms): reap whenever SIGCHLD arrives, also while the shell waits at the prompt — a SIGCHLD handler that writes to a pipe, and poll() on the terminal and that pipe; then waitpid(-1, WNOHANG | WUNTRACED | WCONTINUED) until it returns 0", lasted.as_millis(), ZOMBIE_LIMIT.as_millis()));
        }
        self.findings.pass("no-zombie");
    }
}

pub fn id_of(pid: i32) -> u32 {
    let line = observe::cmdline(pid);
    line.split(" --id ")
        .nth(1)
        .and_then(|id| id.split(' ').next()?.parse().ok())
        .unwrap_or(u32::MAX)
}
